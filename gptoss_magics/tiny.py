"""The embedded tiny gpt-oss: a test and demo model, not a language model.

``build_tiny()`` writes, once, into the cache folder a real ``GptOssForCausalLM``
checkpoint (2 layers, hidden 64, 4 experts, top-2, head_dim 32) whose weights come
from a fixed seed, plus the exact o200k_harmony tokenizer derived offline from
the vocabulary embedded in the installed ``openai_harmony`` module. vLLM loads it
on a laptop CPU in seconds, so every layer of this package can be exercised
without a GPU, a download or real weights. Its answers are noise: everything that
shows it says so.

Same seed and same library versions give byte-identical files.
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

TINY_NAMES = {"tiny": "tiny-random", "tiny-random": "tiny-random"}
MARKER = "gptoss_magics_tiny.json"
TINY_NOTICE = (
    "embedded tiny test model: random weights, not a language model; its answers are noise"
)

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
    """True when ``name`` asks for the embedded tiny model."""
    return name in TINY_NAMES


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
    """Build (once) the embedded tiny model and return its folder.

    The folder lives in ``<cache_dir>/models/`` under a name that includes a digest
    of the seed and the versions of the libraries that shape the files, so an
    upgrade builds a fresh copy instead of reusing a stale one.
    """
    from .settings import settings

    kind = TINY_NAMES[name]
    root = Path(cache_dir) if cache_dir is not None else settings().cache_path()
    spec = {"kind": kind, "seed": seed, "arch": ARCH, "versions": _versions(), "format": 1}
    digest = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:12]
    target = root / "models" / f"{kind}-{digest}"
    if (target / MARKER).is_file() and not force:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{kind}-", dir=target.parent))
    try:
        write_tokenizer(work)
        _write_random_weights(work, seed)
        (work / "README.md").write_text(
            f"# {kind}\n\nBuilt by gptoss_magics: {TINY_NOTICE}.\n"
            "Real GptOss architecture and the exact o200k_harmony tokenizer, so vLLM runs it like"
            " gpt-oss; use it to test plumbing, never for answers.\n"
        )
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
