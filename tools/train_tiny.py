"""Train the embedded tiny gpt-oss on synthetic harmony transcripts (CPU, offline).

    .venv/bin/python tools/train_tiny.py [--steps 1150] [--batch 44] [--seed 4]
        [--polish-steps 0] [--out gptoss_magics/data/tiny-harmony.safetensors]

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

The loss covers the completion tokens only (the prompt is context). Recipe: AdamW (0.9,
0.98), lr 4e-3 with 30 warm-up steps and a cosine decay to 10%, gradient clip 1.0, 1150
batches of 44 conversations (``tiny_tasks.TRAIN_MIX``, seed 4) in fp32 on one thread. The default
command writes the shipped artifact byte for byte. ``--polish-steps N`` adds a polishing
phase from that model's bf16 artifact, on fresh data (seed + 1): lr 1e-3, same schedule,
N batches of 48 (the model shipped before had 300; it took 16.1 CPU-minutes in all and was
no better on the tasks' targets).
Each batch runs as length-sorted micro-batches that share the forward pass of the
prompt's fixed opening tokens; the result is the same loss with less padding. Starts
from the first trained model (``tools/candidates/tiny-base.safetensors``, three toy tasks);
takes 14.6 CPU-minutes in all (the record's ``total_cpu_seconds``: 877 s, 838 s of them
training, on a 2-core machine with a second training on the other core).

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
from dataclasses import dataclass, replace
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from gptoss_magics import harmony
from gptoss_magics.harmony import VOCAB_SIZE
from gptoss_magics.tiny import (
    ARTIFACT_META_KEY,
    SPECIAL_IDS,
    TRAINED_ARCH,
    TRAINED_ARTIFACT,
    read_artifact_meta,
)
from gptoss_magics.tiny import tasks as tiny_tasks

ARTIFACT_FORMAT = 1
VOCAB_KEYS = ("model.embed_tokens.weight", "lm_head.weight")
#: The model this one is trained from: the first trained tiny model (three toy tasks), the
#: package's artifact up to commit 5be8ac0. It is read from git history (so the repository
#: does not carry a second copy of weights) into tools/candidates/, checked by its sha256.
BASE_ARTIFACT = Path(__file__).resolve().parent / "candidates" / "tiny-base.safetensors"
BASE_GIT = "5be8ac0:gptoss_magics/data/tiny-harmony.safetensors"
BASE_SHA256 = "824288bb82473886d44e7b32a047dfb97803fe0919f4826f1827aba368746a79"
#: The optional polishing phase after the first (0 steps: none, as for the shipped model).
POLISH: dict[str, Any] = {"steps": 0, "batch": 48, "lr": 1e-3}


@dataclass(frozen=True)
class Hyper:
    """Training hyper-parameters (the defaults are the shipped model's)."""

    steps: int = 1150
    batch: int = 44
    micro_batches: int = 8
    lr: float = 4e-3
    warmup: int = 30
    final_lr_fraction: float = 0.1
    betas: tuple[float, float] = (0.9, 0.98)
    clip: float = 1.0
    seed: int = 4
    cut_fraction: float = 0.08  # share of turns whose reasoning a budget cut short
    base: Path | None = BASE_ARTIFACT  # the artifact to start from; None: from scratch


Sequence = tuple[list[int], list[tuple[int, int]]]  # ids, and the [start, end) spans scored


def _sequence(spans: list[tuple[list[int], bool]]) -> Sequence:
    ids: list[int] = []
    scored = []
    for part, written in spans:
        if written:
            scored.append((len(ids), len(ids) + len(part)))
        ids.extend(part)
    return ids, scored


class PromptRenderer:
    """``tiny_tasks.prompt_ids``, fast: the system and developer messages are rendered once
    per (effort, date or none, tools, instructions) with a stand-in date whose tokens are
    swapped for the real date's, and the chat and user messages are encoded as text
    after them (special tokens between messages keep the pieces' tokens independent).
    Every ``check_every``-th prompt is compared with ``render_prompt``'s."""

    STAND_IN_DATE = "2000-01-01"

    def __init__(self, check_every: int = 16) -> None:
        self.enc = harmony.encoding()
        self.check_every = check_every
        self.heads: dict[tuple[Any, ...], tuple[list[int], int]] = {}
        self.stand_in = list(self.enc.encode(self.STAND_IN_DATE, allowed_special="all"))
        self.count = 0

    def _head(self, example: Any, dated: bool, instructions: str | None
              ) -> tuple[list[int], int]:
        key = (example.effort, dated, example.tools, instructions)
        if key not in self.heads:
            date = self.STAND_IN_DATE if dated else None
            ids = tiny_tasks.prompt_ids(replace(example, user="x"), date, (), instructions)
            tail = list(self.enc.encode("<|start|>user<|message|>x<|end|><|start|>assistant",
                                        allowed_special="all"))
            assert ids[-len(tail):] == tail
            head = ids[:-len(tail)]
            at = next((i for i in range(len(head)) if head[i:i + len(self.stand_in)]
                       == self.stand_in), -1) if dated else -1
            self.heads[key] = (head, at)
        return self.heads[key]

    def __call__(self, example: Any, date: str | None, history: tuple[Any, ...],
                 instructions: str | None) -> list[int]:
        head, at = self._head(example, date is not None, instructions)
        if date is not None:
            n = len(self.stand_in)
            head = head[:at] + list(self.enc.encode(date, allowed_special="all")) + head[at + n:]
        text = "".join(f"<|start|>user<|message|>{t.user}<|end|><|start|>assistant"
                       f"<|channel|>final<|message|>{t.final}<|end|>" for t in history)
        text += f"<|start|>user<|message|>{example.user}<|end|><|start|>assistant"
        ids = head + list(self.enc.encode(text, allowed_special="all"))
        self.count += 1
        if self.count % self.check_every == 0:
            expected = tiny_tasks.prompt_ids(example, date, history, instructions)
            if ids != expected:
                raise SystemExit(f"fast prompt rendering differs from render_prompt for "
                                 f"{example.user!r} ({date}, {example.tools}): fix PromptRenderer")
        return ids


def build_data(hyper: Hyper) -> tuple[list[Sequence], list[int]]:
    """The training sequences (ids, and the spans the model writes), and the sorted used
    ids."""
    rng = random.Random(hyper.seed)
    cut_rng = random.Random(hyper.seed + 2)  # its own stream: the other draws stay the same
    render = PromptRenderer()
    seqs = []
    for _ in range(hyper.steps * hyper.batch):
        example = tiny_tasks.training_example(rng)
        date = tiny_tasks.sample_current_date(rng)
        history, instructions = tiny_tasks.sample_context(rng)
        prompt = render(example, date, history, instructions)
        if example.call is None and cut_rng.random() < hyper.cut_fraction:
            # a reasoning budget ran out: the engine closed the analysis and opened the
            # final channel; the model learns to answer at once (the forced part is context)
            keep = cut_rng.randrange(len(tiny_tasks.analysis_ids(example)))
            forced, answer = tiny_tasks.cut_completion(example, keep)
            seqs.append(_sequence([(prompt + forced, False), (answer, True)]))
        else:
            spans = tiny_tasks.transcript(example, date, history, instructions, prompt=prompt)
            seqs.append(_sequence(spans))
    used: set[int] = set(SPECIAL_IDS.values())
    for ids, _ in seqs:
        used.update(ids)
    return seqs, sorted(used)


def common_prefix_length(seqs: list[Sequence]) -> int:
    """How many leading tokens all sequences share before their first scored token."""
    first = seqs[0][0]
    n = min(scored[0][0] for _, scored in seqs)
    for ids, _ in seqs:
        while n and ids[:n] != first[:n]:
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


def warm_start(model: Any, used: list[int], base: Path | None, seed: int) -> torch.Tensor:
    """Load the ``base`` artifact's weights into ``model`` (its rows for the ids it used);
    return the mask of the vocabulary rows that are new (all of them without a base).

    A new row is tied: its output row is its input row (see :func:`output_weight`), so
    that copying a token from the prompt (a number, a tool's result) works for every new
    token, however rarely it was a target. New rows start in random directions around
    the base's rows of their kind (numbers, other tokens)."""
    new = torch.ones(len(used), dtype=torch.bool)
    if base is None:
        return new
    from safetensors.torch import load_file

    meta = read_artifact_meta(base)
    shapes = {k: v for k, v in meta["arch"].items() if k != "sliding_window"}
    if shapes != {k: v for k, v in TRAINED_ARCH.items()
                  if k not in ("sliding_window", "vocab_size")}:
        raise SystemExit(f"{base} has another architecture than TRAINED_ARCH: train from "
                         "scratch (--base none)")
    tensors = load_file(str(base))
    base_rows = {t: i for i, t in enumerate(tensors.pop("used_ids").tolist())}
    missing = set(base_rows) - set(used)
    if missing:
        raise SystemExit(f"{len(missing)} ids of the base are missing from the vocabulary")
    state = model.state_dict()
    with torch.no_grad():
        for name, value in tensors.items():
            if name in VOCAB_KEYS:
                continue
            state[name].copy_(value.float())
        old = torch.tensor([i for i, t in enumerate(used) if t in base_rows])
        rows = torch.tensor([base_rows[used[i]] for i in old.tolist()])
        new[old] = False
        embed = state["model.embed_tokens.weight"]
        embed[old] = tensors["model.embed_tokens.weight"][rows].float()
        state["lm_head.weight"][old] = tensors["lm_head.weight"][rows].float()
        # a new number (a product's digits, a 3-digit operand) starts at the base's mean
        # number plus a random part as long as the base numbers' own: it looks like a
        # number to attention from the first step, and is still told apart from others
        enc = harmony.encoding()
        digits = torch.tensor([enc.decode([t]).isdigit() for t in used])
        gen = torch.Generator().manual_seed(seed + 3)
        for kind in (digits, ~digits):
            base_kind, new_kind = old[kind[old]], new & kind
            centre = embed[base_kind].mean(dim=0) if kind is digits else torch.zeros(
                embed.shape[1])
            spread = (embed[base_kind] - centre).norm(dim=1).median()
            fresh = torch.randn(int(new_kind.sum()), embed.shape[1], generator=gen)
            embed[new_kind] = centre + fresh / fresh.norm(dim=1, keepdim=True) * spread
    return new


def ensure_base(base: Path) -> None:
    """Write the default base artifact from git history when it is not there yet."""
    if base != BASE_ARTIFACT or base.exists():
        return
    import subprocess

    try:
        data = subprocess.run(["git", "show", BASE_GIT], cwd=base.parent.parent, check=True,
                              capture_output=True).stdout
    except (OSError, subprocess.CalledProcessError) as exc:
        raise SystemExit(f"the base model comes from git history ({BASE_GIT}); run this in a "
                         f"clone of the repository with its history, or pass --base ({exc})"
                         ) from exc
    if hashlib.sha256(data).hexdigest() != BASE_SHA256:
        raise SystemExit(f"{BASE_GIT} is not the expected base model (sha256 {BASE_SHA256})")
    base.parent.mkdir(parents=True, exist_ok=True)
    base.write_bytes(data)


def read_used_ids(artifact: Path) -> list[int]:
    """The token ids that have rows in ``artifact``."""
    from safetensors import safe_open

    with safe_open(str(artifact), "pt") as fh:
        ids: list[int] = fh.get_tensor("used_ids").tolist()
    return ids


def output_weight(model: Any, new: torch.Tensor) -> torch.Tensor:
    """The unembedding matrix: the base's output rows, and the input rows of new ids."""
    return torch.where(new[:, None], model.model.embed_tokens.weight, model.lm_head.weight)


def batch_tensors(seqs: list[Sequence], idx: list[int],
                  remap: dict[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded compact ids and the mask of positions whose next token is one the
    model writes (the positions that are scored)."""
    length = max(len(seqs[i][0]) for i in idx)
    ids = torch.zeros(len(idx), length, dtype=torch.long)
    scored = torch.zeros(len(idx), length, dtype=torch.bool)
    for row, i in enumerate(idx):
        full, spans = seqs[i]
        ids[row, : len(full)] = torch.tensor([remap[t] for t in full])
        for start, end in spans:
            scored[row, start - 1 : end - 1] = True
    return ids, scored


def train(hyper: Hyper, log_every: int = 50, snapshots: dict[int, Path] | None = None
          ) -> tuple[Any, list[int], torch.Tensor, dict[str, Any]]:
    """Train; return the model, the used ids and training information. ``snapshots``:
    artifacts to write after those steps (to study a run; they do not change it)."""
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    t0, c0 = time.perf_counter(), time.process_time()
    if hyper.base is not None:
        ensure_base(hyper.base)
    seqs, used = build_data(hyper)
    if hyper.base is not None:  # the base's rows stay, even for ids no longer used
        used = sorted(set(used) | set(read_used_ids(hyper.base)))
    remap = {t: i for i, t in enumerate(used)}
    n_used = len(used)
    n_prefix = common_prefix_length(seqs)
    prefix = torch.tensor([[remap[t] for t in seqs[0][0][:n_prefix]]])
    data_s = time.perf_counter() - t0
    longest = max(len(ids) for ids, _ in seqs)
    if longest > TRAINED_ARCH["sliding_window"]:
        raise SystemExit(f"a training sequence has {longest} tokens, more than the sliding "
                         f"window ({TRAINED_ARCH['sliding_window']}): raise it in TRAINED_ARCH")
    print(f"data: {len(seqs)} sequences, {n_used} used ids, longest {longest} tokens, mean "
          f"{sum(len(ids) for ids, _ in seqs) / len(seqs):.1f}, shared prefix {n_prefix} "
          f"tokens, {data_s:.1f}s", flush=True)

    model = make_model(n_used, hyper.seed)
    new_rows = warm_start(model, used, hyper.base, hyper.seed)
    print(f"{int(new_rows.sum())} new vocabulary rows (tied)"
          + (f", the others from {hyper.base.name}" if hyper.base else ""), flush=True)
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
                     key=lambda i: (len(seqs[i][0]), i))
        n_scored = sum(end - start for i in idx for start, end in seqs[i][1])
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
            logits = hidden[scored[:, n_prefix:]] @ output_weight(model, new_rows).T
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
        if snapshots and step + 1 in snapshots:
            export(model, used, new_rows, hyper, snapshots[step + 1])
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
        "base": hyper.base.name if hyper.base else None,
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
    return model, used, new_rows, info


def export(model: Any, used: list[int], new_rows: torch.Tensor, hyper: Hyper,
           out: Path) -> None:
    """Write the compact bf16 artifact (see the module docstring)."""
    from safetensors.torch import save_file

    state = dict(model.state_dict(), **{"lm_head.weight": output_weight(model, new_rows)})
    tensors = {k: v.detach().to(torch.bfloat16).contiguous() for k, v in state.items()}
    tensors["used_ids"] = torch.tensor(used, dtype=torch.int32)
    arch = {k: v for k, v in TRAINED_ARCH.items() if k != "vocab_size"}
    meta = {"format": ARTIFACT_FORMAT, "arch": arch, "vocab_size": VOCAB_SIZE,
            "steps": hyper.steps, "seed": hyper.seed, "tasks": list(tiny_tasks.ALL_TASKS)}
    out.parent.mkdir(parents=True, exist_ok=True)
    # one metadata key: safetensors writes several in an unstable order
    save_file(tensors, str(out), metadata={ARTIFACT_META_KEY: json.dumps(meta, sort_keys=True)})
    out.chmod(0o644)  # safetensors writes 0600; the artifact ships in the package


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=Hyper.steps)
    ap.add_argument("--seed", type=int, default=Hyper.seed)
    ap.add_argument("--batch", type=int, default=Hyper.batch)
    ap.add_argument("--lr", type=float, default=Hyper.lr)
    ap.add_argument("--polish-steps", type=int, default=POLISH["steps"],
                    help="steps of the polishing phase (0: none; default: %(default)s)")
    ap.add_argument("--polish-batch", type=int, default=POLISH["batch"])
    ap.add_argument("--polish-lr", type=float, default=POLISH["lr"])
    ap.add_argument("--base", default=str(BASE_ARTIFACT),
                    help="artifact to start from, or 'none' to train from scratch "
                         "(default: %(default)s)")
    ap.add_argument("--out", type=Path, default=TRAINED_ARTIFACT,
                    help="artifact path (default: %(default)s); info goes to <stem>.json")
    ap.add_argument("--log-every", type=int, default=50)
    ap.add_argument("--snapshots", default="",
                    help="comma-separated steps after which to also write <stem>-stepN")
    args = ap.parse_args(argv)
    c0 = time.process_time()
    hyper = Hyper(steps=args.steps, seed=args.seed, batch=args.batch, lr=args.lr,
                  base=None if args.base == "none" else Path(args.base))
    out: Path = args.out
    snapshots = {int(n): out.with_name(f"{out.stem}-step{n}{out.suffix}")
                 for n in args.snapshots.split(",") if n}
    model, used, new_rows, info = train(hyper, args.log_every, snapshots)
    export(model, used, new_rows, hyper, out)
    phases = [info]
    if args.polish_steps > 0:
        # the polishing phase starts from the first phase's artifact, exactly as a second
        # command given --base would, on fresh data (the next seed)
        first = out.with_name(f"{out.stem}-phase1{out.suffix}")
        out.replace(first)
        polish = replace(hyper, steps=args.polish_steps, batch=args.polish_batch,
                         lr=args.polish_lr, seed=args.seed + 1, base=first)
        del model
        model, used, new_rows, second = train(polish, args.log_every)
        export(model, used, new_rows, polish, out)
        first.unlink()
        phases.append(second)
    data = out.read_bytes()
    record: dict[str, Any] = {
        "phases": phases,
        "train_cpu_seconds": round(sum(p["train_cpu_seconds"] for p in phases), 1),
        "train_seconds": round(sum(p["train_seconds"] for p in phases), 1),
        "total_cpu_seconds": round(time.process_time() - c0, 1),
        "artifact": out.name,
        "artifact_bytes": len(data),
        "artifact_sha256": hashlib.sha256(data).hexdigest(),
        "command": " ".join(["tools/train_tiny.py", *(argv if argv is not None else sys.argv[1:])]),
        "versions": {d: metadata.version(d) for d in ("torch", "transformers", "safetensors",
                                                      "oss-harmony")},
        "python": platform.python_version(),
        "torch_threads": torch.get_num_threads(),
    }
    info_path = out.with_suffix(".json")
    # one line per loss-log entry (and per other small object)
    text = re.sub(r"\{\s+([^{}\[\]]*?)\s+\}", lambda m: "{" + " ".join(m.group(1).split()) + "}",
                  json.dumps(record, indent=1))
    info_path.write_text(text + "\n")
    print(f"wrote {out} ({len(data)} bytes, sha256 {record['artifact_sha256']}) and {info_path}")
    print(f"train {record['train_seconds']}s wall, {record['train_cpu_seconds']}s CPU "
          f"({record['total_cpu_seconds']}s CPU in all); final loss {phases[-1]['final_loss']} "
          f"(last-50 avg {phases[-1]['final_loss_avg50']})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
