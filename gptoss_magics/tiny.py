"""The embedded tiny gpt-oss models: test and demo models, not language models.

``build_tiny(name)`` writes, once, into the cache folder a real ``GptOssForCausalLM``
checkpoint plus the exact o200k_harmony tokenizer derived offline from the vocabulary
embedded in the installed ``openai_harmony`` module. vLLM loads either on a laptop
CPU in seconds, so every layer of this package can be exercised without a GPU, a
download or real weights. There are two:

* ``"tiny"``: a toy *trained* model (2 layers, hidden 128, 4 experts, top-2). It
  answers in harmony form, an analysis message then a final one, reasons longer at
  higher effort, and does three toy tasks (sentiment from keyword lists, upper-casing
  a word, adding two numbers below 100; see :mod:`gptoss_magics.tiny_tasks`). It
  ships as a compact artifact (``data/tiny-harmony.safetensors``, made by
  ``tools/train_tiny.py``) holding only the embedding and unembedding rows of the
  ~1,000 token ids it uses; building expands it into a full 201,088-row checkpoint
  whose other rows are zero, so those ids never win.
* ``"tiny-random"``: random weights from a fixed seed (2 layers, hidden 64); its
  answers are noise.

Everything that shows their output says what they are (:func:`notice_for`). The same
inputs and library versions give byte-identical files.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any

#: Model names that ask for an embedded tiny model, and the kind each builds.
TINY_NAMES = {"tiny": "tiny", "tiny-random": "tiny-random"}
MARKER = "gptoss_magics_tiny.json"
#: The notice for the random-weight model (``"tiny-random"``).
TINY_NOTICE = (
    "embedded tiny test model: random weights, not a language model; its answers are noise"
)
#: The notice for the trained toy model (``"tiny"``).
TRAINED_NOTICE = (
    "embedded tiny demo model: trained only on three toy tasks (sentiment keywords, "
    "uppercasing, adding small numbers), not a language model"
)
NOTICES = {"tiny": TRAINED_NOTICE, "tiny-random": TINY_NOTICE}

VOCAB_SIZE = 201088
N_RANKS = 199998  # o200k_base ordinary tokens 0..199997; 199998.. are special tokens
SPECIAL_IDS = {
    "<|startoftext|>": 199998,
    "<|endoftext|>": 199999,
    "<|return|>": 200002,
    "<|constrain|>": 200003,
    "<|channel|>": 200005,
    "<|start|>": 200006,
    "<|end|>": 200007,
    "<|message|>": 200008,
    "<|call|>": 200012,
}

# o200k pre-tokenisation pattern (the same as tiktoken's o200k_base)
O200K_PATTERN = "|".join(
    [
        r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
        r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
        r"""\p{N}{1,3}""",
        r""" ?[^\s\p{L}\p{N}]+[\r\n/]*""",
        r"""\s*[\r\n]+""",
        r"""\s+(?!\S)""",
        r"""\s+""",
    ]
)

# A minimal harmony chat template so that tools reading tokenizer_config.json work.
# gptoss_magics itself never uses it: it renders prompts with openai_harmony.
CHAT_TEMPLATE = (
    "{% for m in messages %}<|start|>{{ m['role'] }}<|message|>{{ m['content'] }}<|end|>"
    "{% endfor %}{% if add_generation_prompt %}<|start|>assistant{% endif %}"
)

ARCH: dict[str, Any] = dict(
    vocab_size=VOCAB_SIZE,
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=32,  # vLLM's CPU attention needs head_dim >= 32
    num_local_experts=4,
    num_experts_per_tok=2,
    sliding_window=128,
    layer_types=["sliding_attention", "full_attention"],
    max_position_embeddings=4096,
    rope_parameters={
        "rope_type": "yarn",
        "rope_theta": 150000.0,
        "factor": 32.0,
        "beta_fast": 32.0,
        "beta_slow": 1.0,
        "original_max_position_embeddings": 4096,
        "truncate": False,
    },
    bos_token_id=199998,
    eos_token_id=200002,
    pad_token_id=199999,
    tie_word_embeddings=False,
)

# The trained tiny model ("tiny"): wider than the random one so it can learn its tasks;
# the sliding window is longer than any toy conversation.
TRAINED_ARCH: dict[str, Any] = dict(ARCH, hidden_size=128, intermediate_size=128,
                                    sliding_window=256)
TRAINED_ARTIFACT = Path(__file__).resolve().parent / "data" / "tiny-harmony.safetensors"
ARTIFACT_META_KEY = "gptoss_magics_tiny"

# Engine arguments that suit the tiny model on a CPU; the user's own win.
TINY_ENGINE_ARGS: dict[str, Any] = {
    "dtype": "bfloat16",
    "max_model_len": 4096,
    "enforce_eager": True,
    "kv_cache_memory_bytes": 256 * 2**20,
    # on CPU this is the share of the NUMA node's memory that must be free at start
    "gpu_memory_utilization": 0.25,
}


def is_tiny(name: str) -> bool:
    """True when ``name`` asks for an embedded tiny model."""
    return name in TINY_NAMES


def notice_for(kind: str | None) -> str:
    """The line every display of a tiny model's output must carry, by the ``kind`` in
    its marker file (an unknown kind gets the most cautious notice)."""
    return NOTICES.get(kind or "", TINY_NOTICE)


def _versions() -> dict[str, str]:
    out = {}
    for dist in ("oss-harmony", "transformers", "tokenizers", "torch", "safetensors"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = "missing"
    return out


def build_tiny(name: str = "tiny", cache_dir: str | os.PathLike[str] | None = None, *,
               seed: int = 0, force: bool = False) -> Path:
    """Build (once) the embedded tiny model ``name`` and return its folder.

    ``"tiny"`` expands the trained artifact shipped in the package; ``"tiny-random"``
    draws random weights from ``seed`` (which ``"tiny"`` ignores: its marker records
    the seed it was trained with). The folder lives in ``<cache_dir>/models/`` under a
    name that includes a digest of what shapes the files (the artifact's sha256 or the
    seed, and the library versions), so an upgrade builds a fresh copy instead of
    reusing a stale one.
    """
    from .settings import settings

    if name not in TINY_NAMES:
        raise ValueError(f"unknown tiny model {name!r}: use one of {', '.join(TINY_NAMES)}")
    kind = TINY_NAMES[name]
    root = Path(cache_dir) if cache_dir is not None else settings().cache_path()
    spec: dict[str, Any]
    if kind == "tiny-random":
        spec = {"kind": kind, "seed": seed, "arch": ARCH, "versions": _versions(), "format": 1}
    else:
        artifact = read_artifact_meta()
        spec = {"kind": kind, "seed": artifact["seed"], "steps": artifact["steps"],
                "tasks": artifact["tasks"], "arch": artifact["arch"],
                "artifact_sha256": artifact["sha256"], "versions": _versions(), "format": 2}
    digest = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:12]
    target = root / "models" / f"{kind}-{digest}"
    if (target / MARKER).is_file() and not force:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{kind}-", dir=target.parent))
    try:
        write_tokenizer(work)
        if kind == "tiny-random":
            _write_random_weights(work, seed)
        else:
            write_trained_weights(work)
        (work / "README.md").write_text(_README[kind])
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


_README = {
    "tiny-random": (
        f"# tiny-random\n\nBuilt by gptoss_magics: {TINY_NOTICE}.\n"
        "Real GptOss architecture and the exact o200k_harmony tokenizer, so vLLM runs it like"
        " gpt-oss; use it to test plumbing, never for answers.\n"
    ),
    "tiny": (
        f"# tiny\n\nBuilt by gptoss_magics: {TRAINED_NOTICE}.\n\n"
        "A toy trained model: real GptOss architecture (2 layers, hidden 128, 4 experts) and"
        " the exact o200k_harmony tokenizer, trained on CPU by tools/train_tiny.py on synthetic"
        " harmony transcripts of three toy tasks: the sentiment of a text from fixed keyword"
        " lists (positive, negative or neutral), writing a known word in capital letters, and"
        " adding two numbers from 0 to 99. It answers in harmony form (an analysis message,"
        " then a final message) and reasons longer at higher effort. Anything else gets one of"
        " those toy answers. Only the embedding and unembedding rows of the token ids it was"
        " trained on are non-zero. Use it to demo and test the plumbing, never for answers.\n"
    ),
}


def read_artifact_meta(path: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """The metadata of the trained tiny artifact (architecture, seed, steps, tasks) and
    its ``sha256``; reads the safetensors header only (no torch)."""
    import struct

    artifact = Path(path) if path is not None else TRAINED_ARTIFACT
    try:
        data = artifact.read_bytes()
    except FileNotFoundError:
        raise FileNotFoundError(
            f"the trained tiny model artifact {artifact} is missing from this installation; "
            "reinstall gptoss-magics, run tools/train_tiny.py, or load 'tiny-random'"
        ) from None
    (header_len,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + header_len])
    meta: dict[str, Any] = json.loads(header["__metadata__"][ARTIFACT_META_KEY])
    meta["sha256"] = hashlib.sha256(data).hexdigest()
    return meta


def write_trained_weights(folder: str | os.PathLike[str],
                          artifact: str | os.PathLike[str] | None = None) -> None:
    """Expand the compact trained artifact into ``folder``: ``model.safetensors`` with
    full 201,088-row embedding and lm_head matrices (rows of unused ids are zero),
    ``config.json`` and ``generation_config.json``. Deterministic; takes about a second.
    """
    import torch
    from safetensors.torch import load_file, save_file
    from transformers import GenerationConfig, GptOssConfig

    path = Path(artifact) if artifact is not None else TRAINED_ARTIFACT
    meta = read_artifact_meta(path)
    if meta.get("format") != 1 or meta.get("vocab_size") != VOCAB_SIZE:
        raise RuntimeError(f"{path} is not a tiny artifact this version can expand")
    tensors = load_file(str(path))
    used = tensors.pop("used_ids").long()
    for key in ("model.embed_tokens.weight", "lm_head.weight"):
        rows = tensors[key]
        full = torch.zeros(VOCAB_SIZE, rows.shape[1], dtype=rows.dtype)
        full[used] = rows
        tensors[key] = full
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})
    arch = dict(meta["arch"], vocab_size=VOCAB_SIZE, bos_token_id=199998,
                eos_token_id=200002, pad_token_id=199999)
    config = GptOssConfig(**arch, architectures=["GptOssForCausalLM"], dtype="bfloat16")
    config.save_pretrained(str(out))
    GenerationConfig(
        bos_token_id=199998, eos_token_id=[200002, 199999, 200012], pad_token_id=199999
    ).save_pretrained(str(out))


def _vocab_ranks() -> tuple[dict[bytes, int], list[str]]:
    """Ordinary token bytes by rank, and special token names in id order, from openai_harmony."""
    from .harmony import encoding

    enc = encoding()
    # exact bytes per token; the public decode() would replace partial UTF-8 sequences
    decode_bytes = getattr(enc, "decode_bytes", None) or enc._inner.decode_bytes
    ranks: dict[bytes, int] = {}
    for i in range(N_RANKS):
        ranks[bytes(decode_bytes([i]))] = i
    specials = []
    for i in range(N_RANKS, VOCAB_SIZE):
        specials.append(bytes(decode_bytes([i])).decode())
    for tok, i in SPECIAL_IDS.items():
        if specials[i - N_RANKS] != tok:
            raise RuntimeError(f"unexpected vocabulary in openai_harmony: id {i} is not {tok}")
    return ranks, specials


def write_tokenizer(folder: Path) -> None:
    """Write tokenizer.json and friends for o200k_harmony into ``folder``."""
    import base64

    from transformers import PreTrainedTokenizerFast
    from transformers.convert_slow_tokenizer import TikTokenConverter

    ranks, specials = _vocab_ranks()
    with tempfile.TemporaryDirectory() as tmp:
        vocab_file = os.path.join(tmp, "o200k_base.tiktoken")
        with open(vocab_file, "wb") as fh:
            for token, rank in ranks.items():
                fh.write(base64.b64encode(token) + b" %d\n" % rank)
        converter = TikTokenConverter(
            vocab_file=vocab_file, pattern=O200K_PATTERN, extra_special_tokens=specials
        )
        fast = converter.converted()
    tok = PreTrainedTokenizerFast(
        tokenizer_object=fast,
        bos_token="<|startoftext|>",
        eos_token="<|return|>",
        pad_token="<|endoftext|>",
    )
    tok.chat_template = CHAT_TEMPLATE
    for text, i in SPECIAL_IDS.items():
        got = tok.convert_tokens_to_ids(text)
        if got != i:
            raise RuntimeError(f"tokenizer build failed: {text} -> {got}, expected {i}")
    tok.save_pretrained(str(folder))


def _write_random_weights(folder: Path, seed: int) -> None:
    import torch
    from transformers import GenerationConfig, GptOssConfig, GptOssForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # "Writing model shards" would land in the cell
    torch.manual_seed(seed)
    config = GptOssConfig(**ARCH)
    model = GptOssForCausalLM(config).to(dtype=torch.bfloat16)  # type: ignore[call-arg]
    model.save_pretrained(str(folder))
    GenerationConfig(
        bos_token_id=199998, eos_token_id=[200002, 199999, 200012], pad_token_id=199999
    ).save_pretrained(str(folder))


def tiny_info(folder: str | os.PathLike[str]) -> dict[str, Any] | None:
    """Build information of a tiny model folder, or None for any other folder."""
    marker = Path(folder) / MARKER
    if not marker.is_file():
        return None
    info: dict[str, Any] = json.loads(marker.read_text())
    return info
