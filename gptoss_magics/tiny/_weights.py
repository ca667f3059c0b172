"""The tiny models' checkpoints, written with numpy alone (no torch).

A safetensors file is an 8-byte little-endian header length, a JSON header (per tensor
its dtype, shape and byte range; plus ``__metadata__``) padded with spaces to a multiple
of 8 bytes, then the raw little-endian tensor bytes. bf16 tensors are held as their raw
bits in ``uint16`` arrays (numpy has no bf16). The writer lays tensors out the way the
``safetensors`` library does (widest dtype first, then by name), so its files match
byte for byte.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from importlib import metadata
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from ..errors import ModelFolderError, ModelNotFoundError
from ..harmony import VOCAB_SIZE
from ._spec import ARTIFACT_META_KEY, GENERATION_CONFIG, TOKEN_IDS, TRAINED_ARTIFACT

#: numpy dtypes (little-endian) of the safetensors dtypes read or written here.
DTYPES: dict[str, np.dtype[Any]] = {
    "BF16": np.dtype("<u2"),  # raw bits
    "F32": np.dtype("<f4"),
    "I32": np.dtype("<i4"),
    "I64": np.dtype("<i8"),
    "U8": np.dtype("u1"),  # MXFP4 blocks and scales
}
#: Rows of these matrices are per token id; the artifact stores only the used ones.
VOCAB_TENSORS = ("model.embed_tokens.weight", "lm_head.weight")
INIT_STD = 0.02
# GptOssConfig's defaults for the keys the architecture dicts leave out, as
# ``GptOssConfig(...).save_pretrained`` writes them (transformers 5.19)
CONFIG_DEFAULTS: dict[str, Any] = {
    "architectures": ["GptOssForCausalLM"],
    "attention_bias": True,
    "attention_dropout": 0.0,
    "dtype": "bfloat16",
    "hidden_act": "silu",
    "initializer_range": INIT_STD,
    "model_type": "gpt_oss",
    "output_router_logits": False,
    "rms_norm_eps": 1e-05,
    "router_aux_loss_coef": 0.001,
    "swiglu_alpha": 1.702,
    "swiglu_limit": 7.0,
    "use_cache": True,
}


class Tensor(NamedTuple):
    """One tensor: its safetensors dtype name and an array of its raw values."""

    dtype: str
    array: np.ndarray[Any, Any]


def read_header(data: bytes) -> tuple[dict[str, Any], int]:
    """The JSON header of safetensors ``data`` and where the tensor bytes start."""
    (length,) = struct.unpack("<Q", data[:8])
    header: dict[str, Any] = json.loads(data[8:8 + length])
    return header, 8 + length


def read_safetensors(path: str | os.PathLike[str]) -> tuple[dict[str, Tensor], dict[str, str]]:
    """The tensors of a safetensors file and its ``__metadata__``."""
    data = Path(path).read_bytes()
    header, start = read_header(data)
    metadata: dict[str, str] = header.pop("__metadata__", {})
    tensors = {}
    for name, info in header.items():
        dtype = DTYPES[info["dtype"]]
        begin, end = info["data_offsets"]
        array = np.frombuffer(data, dtype=dtype, count=(end - begin) // dtype.itemsize,
                              offset=start + begin)
        tensors[name] = Tensor(info["dtype"], array.reshape(info["shape"]))
    return tensors, metadata


def write_safetensors(path: str | os.PathLike[str], tensors: dict[str, Tensor],
                      metadata: dict[str, str] | None = None) -> None:
    """Write ``tensors`` as a safetensors file (the layout of the ``safetensors`` library)."""
    order = sorted(tensors, key=lambda n: (-DTYPES[tensors[n].dtype].itemsize, n))
    header: dict[str, Any] = {"__metadata__": metadata} if metadata else {}
    offset = 0
    for name in order:
        t = tensors[name]
        size = t.array.size * DTYPES[t.dtype].itemsize
        header[name] = {"dtype": t.dtype, "shape": list(t.array.shape),
                        "data_offsets": [offset, offset + size]}
        offset += size
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as fh:
        fh.write(struct.pack("<Q", len(text)) + text)
        for name in order:
            t = tensors[name]
            fh.write(np.ascontiguousarray(t.array, dtype=DTYPES[t.dtype]).tobytes())


def to_bf16(values: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """The bf16 bits of float values, rounded to nearest even (as torch rounds)."""
    bits = np.ascontiguousarray(values, dtype="<f4").view("<u4")
    rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16
    return rounded.astype("<u2")


def param_shapes(arch: dict[str, Any]) -> dict[str, tuple[int, ...]]:
    """The tensor names and shapes of ``GptOssForCausalLM`` for ``arch``."""
    h, inter, experts = arch["hidden_size"], arch["intermediate_size"], arch["num_local_experts"]
    q = arch["num_attention_heads"] * arch["head_dim"]
    kv = arch["num_key_value_heads"] * arch["head_dim"]
    shapes: dict[str, tuple[int, ...]] = {
        "model.embed_tokens.weight": (arch["vocab_size"], h),
        "lm_head.weight": (arch["vocab_size"], h),
        "model.norm.weight": (h,),
    }
    for i in range(arch["num_hidden_layers"]):
        p = f"model.layers.{i}."
        shapes.update({
            p + "input_layernorm.weight": (h,),
            p + "post_attention_layernorm.weight": (h,),
            p + "self_attn.q_proj.weight": (q, h),
            p + "self_attn.q_proj.bias": (q,),
            p + "self_attn.k_proj.weight": (kv, h),
            p + "self_attn.k_proj.bias": (kv,),
            p + "self_attn.v_proj.weight": (kv, h),
            p + "self_attn.v_proj.bias": (kv,),
            p + "self_attn.o_proj.weight": (h, q),
            p + "self_attn.o_proj.bias": (h,),
            p + "self_attn.sinks": (arch["num_attention_heads"],),
            p + "mlp.router.weight": (experts, h),
            p + "mlp.router.bias": (experts,),
            p + "mlp.experts.gate_up_proj": (experts, h, 2 * inter),
            p + "mlp.experts.gate_up_proj_bias": (experts, 2 * inter),
            p + "mlp.experts.down_proj": (experts, inter, h),
            p + "mlp.experts.down_proj_bias": (experts, h),
        })
    return shapes


def write_configs(folder: str | os.PathLike[str], arch: dict[str, Any]) -> None:
    """config.json and generation_config.json for ``arch``, as transformers writes them."""
    # transformers reads its version back: without one it takes the o200k tokenizer for a
    # Mistral one with a broken pattern and warns on every load
    stamp = {"transformers_version": metadata.version("transformers")}
    out = Path(folder)
    config = dict(CONFIG_DEFAULTS, **arch, **stamp)
    generation = dict(GENERATION_CONFIG, **stamp)
    for name, data in (("config.json", config), ("generation_config.json", generation)):
        (out / name).write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def write_random_weights(folder: str | os.PathLike[str], arch: dict[str, Any],
                         seed: int) -> None:
    """A random bf16 checkpoint for ``arch`` from ``seed``: norms are ones, the attention
    and expert biases zeros, everything else (sinks and router bias included) is drawn
    from normal(0, 0.02), as transformers initialises GptOss."""
    rng = np.random.default_rng(seed)
    tensors = {}
    for name, shape in sorted(param_shapes(arch).items()):
        if name.endswith("norm.weight"):
            values = np.ones(shape, dtype=np.float32)
        elif name.endswith("bias") and ".router." not in name:
            values = np.zeros(shape, dtype=np.float32)
        else:
            values = rng.normal(0.0, INIT_STD, size=shape).astype(np.float32)
        tensors[name] = Tensor("BF16", to_bf16(values))
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    write_safetensors(out / "model.safetensors", tensors, {"format": "pt"})
    write_configs(out, arch)


def read_artifact_meta(path: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """The metadata of the trained tiny artifact (architecture, seed, steps, tasks) and
    its ``sha256``; reads the header only."""
    artifact = Path(path) if path is not None else TRAINED_ARTIFACT
    try:
        data = artifact.read_bytes()
    except FileNotFoundError:
        raise ModelNotFoundError(
            f"the trained tiny model artifact {artifact} is missing from this installation; "
            "reinstall gptoss-magics, run tools/train_tiny.py, or load 'tiny-random'"
        ) from None
    header, _ = read_header(data)
    meta: dict[str, Any] = json.loads(header["__metadata__"][ARTIFACT_META_KEY])
    meta["sha256"] = hashlib.sha256(data).hexdigest()
    return meta


def trained_arch(meta: dict[str, Any]) -> dict[str, Any]:
    """The full architecture of the trained model described by artifact ``meta``."""
    return dict(meta["arch"], vocab_size=VOCAB_SIZE, **TOKEN_IDS)


def write_trained_weights(folder: str | os.PathLike[str],
                          artifact: str | os.PathLike[str] | None = None) -> None:
    """Expand the compact trained artifact into ``folder``: ``model.safetensors`` with
    full 201,088-row embedding and lm_head matrices (rows of unused ids are zero),
    ``config.json`` and ``generation_config.json``. Deterministic; takes about a second.
    """
    path = Path(artifact) if artifact is not None else TRAINED_ARTIFACT
    meta = read_artifact_meta(path)
    tensors, _ = read_safetensors(path)
    used = tensors.pop("used_ids").array.astype(np.int64)
    arch = trained_arch(meta)
    expected = dict(param_shapes(arch), **{k: (len(used), arch["hidden_size"])
                                           for k in VOCAB_TENSORS})
    found = {k: tuple(t.array.shape) for k, t in tensors.items()}
    if (meta.get("format") != 1 or meta.get("vocab_size") != VOCAB_SIZE or found != expected
            or any(t.dtype != "BF16" for t in tensors.values())):
        raise ModelFolderError(f"{path} is not a tiny artifact this version can expand; "
                               "reinstall gptoss-magics or rerun tools/train_tiny.py")
    for key in VOCAB_TENSORS:
        rows = tensors[key].array
        full = np.zeros((VOCAB_SIZE, rows.shape[1]), dtype=rows.dtype)
        full[used] = rows
        tensors[key] = Tensor("BF16", full)
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    write_safetensors(out / "model.safetensors", tensors, {"format": "pt"})
    write_configs(out, arch)
