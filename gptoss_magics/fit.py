"""Will a gpt-oss model fit? Parameters, weights, KV cache and context, before loading.

Reads ``config.json`` and the safetensors headers only (no vLLM, no torch), so it answers
in a second for 65 GB of weights, or from a config alone before anything is downloaded::

    import gptoss_magics as gm
    gm.plan_fit("/models/gpt-oss-120b", gpu_memory_gib=80, max_model_len=32768)
    %gptoss_status --fit 80 --max-model-len 32768 /models/gpt-oss-120b

The memory model is vLLM's: it may use ``gpu_memory_utilization`` of the GPU; the weights,
an activation and CUDA-graph allowance (``overhead_gib``, an estimate) and the KV cache
share it. The KV cache holds, per sequence, every token in the full-attention layers and
at most the window in the sliding-window layers, where vLLM reserves the window plus the
tokens it may have in flight; the planner counts as vLLM does, in blocks, so its figures
match vLLM's own "Maximum concurrency" line.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import InvalidOptionError, ModelFolderError
from .views import html_table, text_table

__all__ = ["FitPlan", "count_parameters", "device_memory_gib", "load_warning", "plan_fit"]

GiB = 2**30
#: bits per expert weight in MXFP4: a 4-bit value, plus an 8-bit scale per 32 values
MXFP4_BITS = 4.25
#: bytes per value of the dtypes a config may name
DTYPE_BYTES = {"bfloat16": 2, "float16": 2, "float32": 4, "fp8": 1, "float8_e4m3fn": 1}
#: what vLLM's process needs beside the weights and the KV cache, by device (estimates:
#: activations, sampler, CUDA graphs; on CPU measured with gpt-oss-20b's shape)
OVERHEAD_GIB = {"gpu": 2.0, "cpu": 4.4}


def _config(source: str | os.PathLike[str] | dict[str, Any]) -> tuple[dict[str, Any], Path | None]:
    """The config and the folder it came from (None for a dict)."""
    if isinstance(source, dict):
        return source, None
    path = Path(source).expanduser()
    if not path.exists():  # a model name: "tiny", a Hugging Face id in the local cache
        from .models import resolve_model

        path = resolve_model(str(source))[0]
    file = path / "config.json" if path.is_dir() else path
    try:
        config = json.loads(file.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ModelFolderError(f"cannot read {file} ({exc.strerror or exc}): give a weights "
                               "folder, its config.json, or the config as a dict") from None
    except ValueError as exc:
        raise ModelFolderError(f"{file} is not valid JSON ({exc})") from None
    if not isinstance(config, dict):
        raise ModelFolderError(f"{file} is not a JSON object")
    return config, file.parent


@dataclass(frozen=True)
class Architecture:
    """The widths of a gpt-oss model, read from its config."""

    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    experts: int
    top_k: int
    vocab: int
    window: int | None
    sliding_layers: int
    max_position: int
    tied: bool
    mxfp4: bool
    dtype_bytes: int

    @classmethod
    def from_config(cls, c: dict[str, Any]) -> Architecture:
        """Raises :class:`ModelFolderError` when a width is missing."""
        try:
            layers, heads = int(c["num_hidden_layers"]), int(c["num_attention_heads"])
            types = c.get("layer_types") or ["full_attention"] * layers
            quant = c.get("quantization_config") or {}
            return cls(
                hidden=int(c["hidden_size"]), intermediate=int(c["intermediate_size"]),
                layers=layers, heads=heads, kv_heads=int(c.get("num_key_value_heads", heads)),
                head_dim=int(c.get("head_dim") or c["hidden_size"] // heads),
                experts=int(c.get("num_local_experts") or c.get("num_experts") or 1),
                top_k=int(c.get("num_experts_per_tok") or c.get("experts_per_token") or 1),
                vocab=int(c["vocab_size"]), window=c.get("sliding_window"),
                sliding_layers=sum(t == "sliding_attention" for t in types),
                max_position=int(c.get("max_position_embeddings") or 4096),
                tied=bool(c.get("tie_word_embeddings", False)),
                mxfp4=isinstance(quant, dict) and quant.get("quant_method") == "mxfp4",
                dtype_bytes=DTYPE_BYTES.get(str(c.get("torch_dtype") or c.get("dtype")), 2))
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelFolderError(f"the config lacks a usable {exc} to plan with: is it a "
                                   "gpt-oss config.json?") from None


def count_parameters(a: Architecture) -> tuple[int, int, int]:
    """(total, active per token, expert weight matrices) parameters of ``a``. Active
    counts the unembedding and ``top_k`` experts, not the embedding."""
    q, kv = a.heads * a.head_dim, a.kv_heads * a.head_dim
    attention = 2 * q * a.hidden + q + a.hidden + 2 * (kv * a.hidden + kv) + a.heads
    router = a.experts * a.hidden + a.experts
    expert_weights = 3 * a.hidden * a.intermediate  # gate and up (2x), down
    expert = expert_weights + 2 * a.intermediate + a.hidden  # with biases
    dense = attention + router + 2 * a.hidden  # and two norms
    embed = a.vocab * a.hidden
    head = 0 if a.tied else embed
    total = a.layers * (dense + a.experts * expert) + embed + head + a.hidden
    active = a.layers * (dense + a.top_k * expert) + (head or embed) + a.hidden
    return total, active, a.layers * a.experts * expert_weights


def estimate_weight_bytes(a: Architecture) -> int:
    """Checkpoint bytes from the architecture: expert matrices at 4.25 bits when the
    config says MXFP4, everything else at the config's dtype."""
    total, _, experts = count_parameters(a)
    if not a.mxfp4:
        return total * a.dtype_bytes
    return (total - experts) * a.dtype_bytes + int(experts * MXFP4_BITS / 8)


def _tensor_bytes(file: Path) -> int:
    """Bytes of tensor data a safetensors file declares (its header only)."""
    with file.open("rb") as fh:
        (n,) = struct.unpack("<Q", fh.read(8))
        header = json.loads(fh.read(n))
    return sum(v["data_offsets"][1] - v["data_offsets"][0]
               for k, v in header.items() if k != "__metadata__")


def _folder_weight_bytes(folder: Path) -> tuple[int, str] | None:
    """Weight bytes from the safetensors headers the index lists (or the top-level files
    without an index), else the index's total_size; None when neither is there."""
    index_file = folder / "model.safetensors.index.json"
    index: dict[str, Any] = {}
    if index_file.is_file():
        index = json.loads(index_file.read_text(encoding="utf-8"))
        files = sorted({folder / f for f in index.get("weight_map", {}).values()})
    else:
        files = sorted(folder.glob("*.safetensors"))
    try:
        if files and all(f.is_file() for f in files):
            return sum(_tensor_bytes(f) for f in files), \
                f"safetensors headers ({len(files)} files)"
    except (OSError, ValueError, KeyError, struct.error):
        pass
    total = index.get("metadata", {}).get("total_size")
    if isinstance(total, int):
        return total, "index total_size"
    return None


def _fmt_bytes(n: float) -> str:
    return f"{n / GiB:,.2f} GiB" if n >= GiB else \
        f"{n / 2**20:,.1f} MiB" if n >= 2**20 else f"{n / 1024:,.1f} KiB"


def _fmt_count(n: int) -> str:
    return f"{n / 1e9:,.2f}B" if n >= 1e9 else f"{n / 1e6:,.1f}M"


@dataclass
class FitPlan:
    """What :func:`plan_fit` found; shows as a table (text and HTML)."""

    source: str
    arch: Architecture
    params_total: int
    params_active: int
    weight_bytes: int
    weight_source: str
    gpu_memory_gib: float
    gpu_memory_utilization: float
    overhead_bytes: int
    max_model_len: int
    concurrency: int
    block_size: int
    in_flight_tokens: int
    kv_dtype_bytes: int
    notes: list[str] = field(default_factory=list)

    @property
    def kv_bytes_per_token_layer(self) -> int:
        """K and V of one token in one layer."""
        return 2 * self.arch.kv_heads * self.arch.head_dim * self.kv_dtype_bytes

    @property
    def full_layers(self) -> int:
        """Layers that keep every token (the others keep a sliding window)."""
        return self.arch.layers - (self.arch.sliding_layers if self.arch.window else 0)

    @property
    def kv_bytes_per_token(self) -> int:
        """KV bytes each token of context adds (in the full-attention layers)."""
        return self.full_layers * self.kv_bytes_per_token_layer

    def _full_bytes(self, n: int) -> int:
        b = self.block_size
        return self.full_layers * -(-n // b) * b * self.kv_bytes_per_token_layer

    def _window_bytes(self, n: int) -> int:
        if not (self.arch.window and self.arch.sliding_layers):
            return 0
        b = self.block_size
        held = min(self.arch.window - 1 + self.in_flight_tokens, n)
        return self.arch.sliding_layers * (-(-held // b) + 1) * b * self.kv_bytes_per_token_layer

    def kv_bytes_per_sequence(self, context: int | None = None) -> int:
        """KV bytes vLLM reserves for one sequence of ``context`` tokens (default:
        max_model_len), in whole blocks; sliding layers hold the window plus the tokens in
        flight."""
        n = context or self.max_model_len
        return self._full_bytes(n) + self._window_bytes(n)

    @property
    def budget_bytes(self) -> int:
        """What vLLM may use: the GPU's memory times the utilization share."""
        return int(self.gpu_memory_gib * GiB * self.gpu_memory_utilization)

    @property
    def kv_budget_bytes(self) -> int:
        """Room left for the KV cache beside the weights and the overhead (may be < 0)."""
        return self.budget_bytes - self.weight_bytes - self.overhead_bytes

    def concurrency_for(self, kv_bytes: int, context: int | None = None) -> float:
        """How many sequences of ``context`` tokens ``kv_bytes`` of KV cache hold (as
        vLLM's "Maximum concurrency")."""
        return max(kv_bytes, 0) / self.kv_bytes_per_sequence(context)

    @property
    def sequences_fit(self) -> int:
        """Whole sequences of max_model_len tokens that fit beside the weights."""
        return int(self.concurrency_for(self.kv_budget_bytes))

    @property
    def fits(self) -> bool:
        """True when ``concurrency`` sequences of max_model_len tokens fit."""
        return self.sequences_fit >= self.concurrency

    @property
    def largest_context(self) -> int:
        """The longest context (up to the model's limit) at which ``concurrency``
        sequences fit; 0 when not even one block does."""
        lo, hi = 0, self.arch.max_position
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if self.concurrency * self.kv_bytes_per_sequence(mid) <= self.kv_budget_bytes:
                lo = mid
            else:
                hi = mid - 1
        return lo

    def _rows(self) -> list[tuple[str, str]]:
        a = self.arch
        window = (f" + {_fmt_bytes(self._window_bytes(self.max_model_len))} per sequence in "
                  f"{a.sliding_layers} sliding-window layers (the window of {a.window} plus "
                  f"{self.in_flight_tokens:,} tokens in flight, as vLLM reserves)"
                  if a.window and a.sliding_layers else "")
        need = self.concurrency * self.kv_bytes_per_sequence()
        room = self.kv_budget_bytes
        if self.fits:
            verdict = f"yes: {self.sequences_fit:,} sequence(s) of {self.max_model_len:,} tokens"
        elif room <= 0:
            verdict = (f"NO: the weights and the overhead alone need "
                       f"{_fmt_bytes(self.weight_bytes + self.overhead_bytes)}")
        else:
            verdict = (f"NO: {self.concurrency} x {self.max_model_len:,} tokens need "
                       f"{_fmt_bytes(need)} of KV cache, {_fmt_bytes(room)} is left")
        largest = self.largest_context
        rows = [
            ("model", self.source),
            ("parameters", f"{_fmt_count(self.params_total)} total, "
                           f"{_fmt_count(self.params_active)} active per token"),
            ("weights", f"{_fmt_bytes(self.weight_bytes)} ({self.weight_source})"),
            ("KV cache", f"{_fmt_bytes(self.kv_bytes_per_token)} per token in "
                         f"{self.full_layers} full-attention layers{window}"),
            ("memory", f"{self.gpu_memory_gib:,.1f} GiB x {self.gpu_memory_utilization:.2f} = "
                       f"{_fmt_bytes(self.budget_bytes)}; overhead "
                       f"{_fmt_bytes(self.overhead_bytes)} (estimate)"),
            ("KV cache room", _fmt_bytes(room) if room > 0 else "none"),
            ("fits", verdict),
            ("largest context", f"{largest:,} tokens x {self.concurrency} sequence(s)"
                                if largest else "none"),
        ]
        return rows + [("note", n) for n in self.notes]

    def __repr__(self) -> str:
        return text_table(self._rows())

    def _repr_html_(self) -> str:
        return html_table(self._rows(), "gptoss-fit")


def plan_fit(folder_or_config: str | os.PathLike[str] | dict[str, Any],
             gpu_memory_gib: float = 80, max_model_len: int | None = None,
             concurrency: int = 1, gpu_memory_utilization: float = 0.9, *,
             overhead_gib: float | None = None, block_size: int = 16,
             in_flight_tokens: int | None = None, kv_cache_dtype_bytes: int = 2) -> FitPlan:
    """Plan whether a model fits a GPU of ``gpu_memory_gib`` before loading it.

    ``folder_or_config`` is a weights folder, its ``config.json``, or the config as a
    dict. The weight bytes come from the safetensors headers when the shards are there,
    else the index's ``total_size``, else the architecture (MXFP4 experts at 4.25 bits).
    ``max_model_len`` defaults to the model's limit; ``concurrency`` sequences of it must
    fit. ``overhead_gib`` (default 2 GiB on a GPU) covers activations and CUDA graphs;
    ``block_size`` is vLLM's KV block (16 on GPUs) and ``in_flight_tokens`` the tokens
    it may have scheduled at once (its ``max_in_flight_tokens``; by default
    ``max_num_batched_tokens``, 16,384 on GPUs of 70 GiB or more and 8,192 below, times 2
    for async scheduling, as vLLM 0.32 sets them).
    """
    if gpu_memory_gib <= 0 or not 0 < gpu_memory_utilization <= 1 or concurrency < 1:
        raise InvalidOptionError("plan_fit needs gpu_memory_gib > 0, 0 < "
                                 "gpu_memory_utilization <= 1 and concurrency >= 1")
    config, folder = _config(folder_or_config)
    arch = Architecture.from_config(config)
    total, active, _ = count_parameters(arch)
    estimate = estimate_weight_bytes(arch)
    found = _folder_weight_bytes(folder) if folder is not None else None
    weight_bytes, weight_source = found or (estimate, "config, estimated")
    plan = FitPlan(
        source=str(folder) if folder is not None else "config", arch=arch,
        params_total=total, params_active=active, weight_bytes=weight_bytes,
        weight_source=weight_source, gpu_memory_gib=float(gpu_memory_gib),
        gpu_memory_utilization=gpu_memory_utilization,
        overhead_bytes=int((OVERHEAD_GIB["gpu"] if overhead_gib is None else overhead_gib)
                           * GiB),
        max_model_len=int(max_model_len or arch.max_position), concurrency=int(concurrency),
        block_size=block_size,
        in_flight_tokens=in_flight_tokens or 2 * (16384 if gpu_memory_gib >= 70 else 8192),
        kv_dtype_bytes=kv_cache_dtype_bytes)
    if found and abs(found[0] - estimate) > 0.01 * estimate:
        plan.notes.append(f"the files hold {_fmt_bytes(found[0])}, the config suggests "
                          f"{_fmt_bytes(estimate)}: another quantization or extra tensors")
    if plan.max_model_len > arch.max_position:
        plan.notes.append(f"max_model_len is above the model's limit ({arch.max_position:,})")
    return plan


# ---------------------------------------------------------------------- before a load
def device_memory_gib() -> tuple[float, str]:
    """(memory in GiB, "gpu" or "cpu"): GPU 0's total memory from ``nvidia-smi`` where
    there is one, else the memory available to this machine now."""
    smi = shutil.which("nvidia-smi")
    if smi:
        try:
            out = subprocess.run([smi, "--query-gpu=memory.total", "--format=csv,noheader,"
                                  "nounits"], capture_output=True, text=True, timeout=10)
            return float(out.stdout.split()[0]) / 1024, "gpu"  # MiB
        except (OSError, ValueError, IndexError, subprocess.SubprocessError):
            pass
    import psutil

    return psutil.virtual_memory().available / GiB, "cpu"


def load_warning(model: str | os.PathLike[str], engine_args: dict[str, Any]) -> str | None:
    """One line saying why loading ``model`` (a folder or a model name) with
    ``engine_args`` will not fit this machine, or None (also when it cannot tell: it
    never stops a load)."""
    from .models import resolve_model

    try:
        folder, tiny = resolve_model(str(model))
        if tiny:  # the embedded test models fit anywhere
            return None
        memory, kind = device_memory_gib()
        gpus = int(engine_args.get("tensor_parallel_size") or 1)
        util = float(engine_args.get("gpu_memory_utilization") or (0.9 if kind == "gpu" else 1))
        plan = plan_fit(folder, memory * (gpus if kind == "gpu" else 1),
                        engine_args.get("max_model_len"), 1,
                        util if kind == "gpu" else 1.0, overhead_gib=OVERHEAD_GIB[kind])
        kv = engine_args.get("kv_cache_memory_bytes")
        need = plan.weight_bytes + plan.overhead_bytes + (
            int(kv) if kv else plan.kv_bytes_per_sequence())
    except Exception:  # the planner must never be why a load fails
        return None
    if need <= plan.budget_bytes:
        return None
    where = f"{gpus} GPU(s) of {memory:,.1f} GiB at {util:.2f}" if kind == "gpu" else \
        f"this machine's {memory:,.1f} GiB of available memory"
    return (f"{folder.name} will probably not fit {where}: it needs about "
            f"{need / GiB:,.1f} GiB ({plan.weight_bytes / GiB:,.1f} GiB of weights); lower "
            "--max-model-len, use more GPUs, or see gptoss_magics.plan_fit")
