"""Train the embedded tiny gpt-oss on synthetic harmony transcripts (CPU, offline).

    .venv/bin/python tools/train_tiny.py [--steps 1300] [--seed 0]
        [--out gptoss_magics/data/tiny-harmony.safetensors]

The model is a real ``GptOssForCausalLM`` (``gptoss_magics.tiny.TRAINED_ARCH``) with
the exact o200k_harmony vocabulary of 201,088 ids, trained on the toy tasks of
``gptoss_magics.tiny.tasks`` so that it answers in harmony form (an analysis message,
then a final message ending in ``<|return|>``), reasons longer at higher effort and
gets its toy answers right. Some turns (``Hyper.cut_fraction``) have their reasoning cut
short the way the engine cuts it when a reasoning budget runs out (the analysis closed and
the final channel opened for the model); those teach the model to answer at once.

Only the ~1,000 token ids that occur in the training data ("used ids") get embedding
and unembedding rows; every other row is zero. Training therefore runs on a reduced
vocabulary, with a loss that equals the full 201,088-way cross-entropy under that
assumption: an unused id has logit exactly 0, so the unused ids together contribute
``log(201088 - n_used)`` to the log-partition function::

    loss = CE(concat(logits_used, log(201088 - n_used)), target)

The loss covers the completion tokens only (the prompt is context). Recipe: AdamW
(0.9, 0.98), lr 4e-3 with 30 warm-up steps and a cosine decay to 10%, gradient clip 1.0,
batches of 48 conversations (tasks sentiment:upper:add = 1:1:2) in fp32 on one thread.
Each batch runs as length-sorted micro-batches that share the forward pass of the
prompt's fixed opening tokens; the result is the same loss with less padding. Takes
about 7 CPU-minutes.

The artifact (``--out``) is a compact bf16 safetensors file: every non-vocabulary
weight, the used rows of ``model.embed_tokens.weight`` and ``lm_head.weight``, the
``used_ids`` (int32) and the architecture as one JSON metadata key (several metadata
keys are written in an unstable order, which would break byte-identical output).
``gptoss_magics.tiny.build_tiny("tiny")`` expands it into a full checkpoint. Training
information (loss, timings, sha256) goes next to it as ``<out stem>.json``.

Deterministic: one thread, a fixed seed and a fixed data order give byte-identical
artifacts for the same library versions.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import platform
import random
import re
import sys
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from gptoss_magics.harmony import VOCAB_SIZE
from gptoss_magics.tiny import (
    ARTIFACT_META_KEY,
    SPECIAL_IDS,
    TRAINED_ARCH,
    TRAINED_ARTIFACT,
)
from gptoss_magics.tiny import tasks as tiny_tasks

ARTIFACT_FORMAT = 1


@dataclass(frozen=True)
class Hyper:
    """Training hyper-parameters (the defaults are the shipped model's)."""

    steps: int = 1300
    batch: int = 48
    micro_batches: int = 4
    lr: float = 4e-3
    warmup: int = 30
    final_lr_fraction: float = 0.1
    betas: tuple[float, float] = (0.9, 0.98)
    clip: float = 1.0
    seed: int = 0
    cut_fraction: float = 0.08  # share of turns whose reasoning a budget cut short


def build_data(hyper: Hyper) -> tuple[list[tuple[list[int], list[int]]], list[int]]:
    """The training sequences as (prompt ids, completion ids), and the sorted used ids."""
    rng = random.Random(hyper.seed)
    cut_rng = random.Random(hyper.seed + 2)  # its own stream: the other draws stay the same
    seqs = []
    for _ in range(hyper.steps * hyper.batch):
        example = tiny_tasks.make_example(rng, "train")
        date = tiny_tasks.sample_current_date(rng)
        history, instructions = tiny_tasks.sample_context(rng)
        prompt = tiny_tasks.prompt_ids(example, date, history, instructions)
        if cut_rng.random() < hyper.cut_fraction:
            # a reasoning budget ran out: the engine closed the analysis and opened the
            # final channel; the model learns to answer at once (the forced part is context)
            keep = cut_rng.randrange(len(tiny_tasks.analysis_ids(example)))
            forced, answer = tiny_tasks.cut_completion(example, keep)
            seqs.append((prompt + forced, answer))
        else:
            seqs.append((prompt, tiny_tasks.completion_ids(example)))
    used: set[int] = set(SPECIAL_IDS.values())
    for prompt, completion in seqs:
        used.update(prompt)
        used.update(completion)
    return seqs, sorted(used)


def common_prefix_length(prompts: list[list[int]]) -> int:
    """How many leading tokens all prompts share (at least one token stays unshared)."""
    first = prompts[0]
    n = min(len(p) for p in prompts) - 1
    for p in prompts:
        while n and p[:n] != first[:n]:
            n -= 1
    return n


def make_model(n_used: int, seed: int) -> Any:
    """A fresh fp32 GptOss with ``n_used`` vocabulary rows, initialised from ``seed``."""
    from transformers import GptOssConfig, GptOssForCausalLM

    torch.manual_seed(seed)
    arch = dict(TRAINED_ARCH, vocab_size=n_used, bos_token_id=None, eos_token_id=None,
                pad_token_id=None)
    config = GptOssConfig(**arch)
    config._attn_implementation = "eager"
    config._experts_implementation = "eager"  # the others are slower on CPU
    return GptOssForCausalLM(config).float()


def batch_tensors(seqs: list[tuple[list[int], list[int]]], idx: list[int],
                  remap: dict[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded compact ids and the mask of positions whose next token is a
    completion token (the positions that are scored)."""
    length = max(len(seqs[i][0]) + len(seqs[i][1]) for i in idx)
    ids = torch.zeros(len(idx), length, dtype=torch.long)
    scored = torch.zeros(len(idx), length, dtype=torch.bool)
    for row, i in enumerate(idx):
        prompt, completion = seqs[i]
        full = [remap[t] for t in prompt + completion]
        ids[row, : len(full)] = torch.tensor(full)
        scored[row, len(prompt) - 1 : len(full) - 1] = True
    return ids, scored


def train(hyper: Hyper, log_every: int = 50) -> tuple[Any, list[int], dict[str, Any]]:
    """Train; return the model, the used ids and training information."""
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    t0, c0 = time.perf_counter(), time.process_time()
    seqs, used = build_data(hyper)
    remap = {t: i for i, t in enumerate(used)}
    n_used = len(used)
    n_prefix = common_prefix_length([p for p, _ in seqs])
    prefix = torch.tensor([[remap[t] for t in seqs[0][0][:n_prefix]]])
    data_s = time.perf_counter() - t0
    print(f"data: {len(seqs)} sequences, {n_used} used ids, longest "
          f"{max(len(p) + len(c) for p, c in seqs)} tokens, shared prefix {n_prefix} tokens, "
          f"{data_s:.1f}s", flush=True)

    model = make_model(n_used, hyper.seed)
    model.train()
    n_params = sum(p.numel() for p in model.parameters())
    opt = torch.optim.AdamW(model.parameters(), lr=hyper.lr, betas=hyper.betas, weight_decay=0.0)

    def lr_factor(step: int) -> float:
        warm = min(1.0, (step + 1) / hyper.warmup)
        cosine = 0.5 * (1 + math.cos(math.pi * min(step, hyper.steps) / hyper.steps))
        return warm * (hyper.final_lr_fraction + (1 - hyper.final_lr_fraction) * cosine)

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor)
    log_unused = math.log(VOCAB_SIZE - n_used)
    order = list(range(len(seqs)))
    random.Random(hyper.seed + 1).shuffle(order)
    losses: list[float] = []
    log: list[dict[str, float]] = []
    t1, c1 = time.perf_counter(), time.process_time()
    for step in range(hyper.steps):
        idx = sorted(order[step * hyper.batch:(step + 1) * hyper.batch],
                     key=lambda i: (len(seqs[i][0]) + len(seqs[i][1]), i))
        n_scored = sum(len(seqs[i][1]) for i in idx)
        size = -(-len(idx) // hyper.micro_batches)
        opt.zero_grad(set_to_none=True)
        total = 0.0
        for start in range(0, len(idx), size):
            # micro-batches of similar length waste less compute on padding; their
            # summed loss is the loss of the whole batch
            ids, scored = batch_tensors(seqs, idx[start:start + size], remap)
            # the system message opens with the same tokens in every prompt: run them
            # once and share their keys and values across the micro-batch
            cache = model.model(input_ids=prefix, use_cache=True).past_key_values
            cache.batch_repeat_interleave(ids.shape[0])
            hidden = model.model(input_ids=ids[:, n_prefix:], past_key_values=cache,
                                 use_cache=True).last_hidden_state
            logits = model.lm_head(hidden[scored[:, n_prefix:]])
            targets = ids[:, 1:][scored[:, :-1]]
            unused = torch.full((logits.shape[0], 1), log_unused)
            loss = F.cross_entropy(torch.cat([logits, unused], dim=1), targets,
                                   reduction="sum") / n_scored
            loss.backward()
            total += loss.item()
        torch.nn.utils.clip_grad_norm_(model.parameters(), hyper.clip)
        opt.step()
        sched.step()
        losses.append(total)
        if step % log_every == 0 or step == hyper.steps - 1:
            recent = losses[-log_every:]
            entry = {"step": step, "loss": round(losses[-1], 5),
                     "avg": round(sum(recent) / len(recent), 5),
                     "wall_s": round(time.perf_counter() - t1, 1),
                     "cpu_s": round(time.process_time() - c1, 1)}
            log.append(entry)
            print(" ".join(f"{k} {v}" for k, v in entry.items()), flush=True)
    last = losses[-50:]
    info = {
        "steps": hyper.steps,
        "batch": hyper.batch,
        "seed": hyper.seed,
        "lr": hyper.lr,
        "cut_fraction": hyper.cut_fraction,
        "examples": len(seqs),
        "n_used_ids": n_used,
        "params_compact": n_params,
        "final_loss": round(losses[-1], 6),
        "final_loss_avg50": round(sum(last) / len(last), 6),
        "data_seconds": round(data_s, 1),
        "train_seconds": round(time.perf_counter() - t1, 1),
        "train_cpu_seconds": round(time.process_time() - c1, 1),
        "total_seconds": round(time.perf_counter() - t0, 1),
        "total_cpu_seconds": round(time.process_time() - c0, 1),
        "loss_log": log,
    }
    return model, used, info


def export(model: Any, used: list[int], hyper: Hyper, out: Path) -> None:
    """Write the compact bf16 artifact (see the module docstring)."""
    from safetensors.torch import save_file

    tensors = {k: v.detach().to(torch.bfloat16).contiguous()
               for k, v in model.state_dict().items()}
    tensors["used_ids"] = torch.tensor(used, dtype=torch.int32)
    arch = {k: v for k, v in TRAINED_ARCH.items() if k != "vocab_size"}
    meta = {"format": ARTIFACT_FORMAT, "arch": arch, "vocab_size": VOCAB_SIZE,
            "steps": hyper.steps, "seed": hyper.seed, "tasks": list(tiny_tasks.TASKS)}
    out.parent.mkdir(parents=True, exist_ok=True)
    # one metadata key: safetensors writes several in an unstable order
    save_file(tensors, str(out), metadata={ARTIFACT_META_KEY: json.dumps(meta, sort_keys=True)})
    out.chmod(0o644)  # safetensors writes 0600; the artifact ships in the package


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=Hyper.steps)
    ap.add_argument("--seed", type=int, default=Hyper.seed)
    ap.add_argument("--batch", type=int, default=Hyper.batch)
    ap.add_argument("--out", type=Path, default=TRAINED_ARTIFACT,
                    help="artifact path (default: %(default)s); info goes to <stem>.json")
    ap.add_argument("--log-every", type=int, default=50)
    args = ap.parse_args(argv)
    hyper = Hyper(steps=args.steps, seed=args.seed, batch=args.batch)
    model, used, info = train(hyper, args.log_every)
    out: Path = args.out
    export(model, used, hyper, out)
    data = out.read_bytes()
    info.update(
        artifact=out.name,
        artifact_bytes=len(data),
        artifact_sha256=hashlib.sha256(data).hexdigest(),
        command=" ".join(["tools/train_tiny.py", *(argv if argv is not None else sys.argv[1:])]),
        versions={d: metadata.version(d) for d in ("torch", "transformers", "safetensors",
                                                    "oss-harmony")},
        python=platform.python_version(),
        torch_threads=torch.get_num_threads(),
    )
    info_path = out.with_suffix(".json")
    # one line per loss-log entry (and per other small object)
    text = re.sub(r"\{\s+([^{}\[\]]*?)\s+\}", lambda m: "{" + " ".join(m.group(1).split()) + "}",
                  json.dumps(info, indent=1))
    info_path.write_text(text + "\n")
    print(f"wrote {out} ({len(data)} bytes, sha256 {info['artifact_sha256']}) and {info_path}")
    print(f"train {info['train_seconds']}s wall, {info['train_cpu_seconds']}s CPU; "
          f"final loss {info['final_loss']} (last-50 avg {info['final_loss_avg50']})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
