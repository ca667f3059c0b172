"""The exact o200k_harmony tokenizer of the tiny models, written offline.

The vocabulary comes from the installed ``openai_harmony`` (which embeds it), the
conversion from ``transformers``' tiktoken converter; no download and no torch.
"""

from __future__ import annotations

import base64
import os
import tempfile
from pathlib import Path

from ..harmony import VOCAB_SIZE, encoding
from ._spec import BOS_TOKEN, EOS_TOKEN, N_RANKS, PAD_TOKEN, SPECIAL_IDS

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


def token_bytes(token: int) -> bytes:
    """The exact bytes of one token.

    ``decode`` would replace a partial UTF-8 sequence; with ``errors="surrogateescape"``
    every invalid byte becomes a lone surrogate that encodes back to the same byte, so the
    round trip is lossless through the public API (checked on all 201,088 ids).
    """
    text = encoding().decode([token], errors="surrogateescape")
    return text.encode("utf-8", errors="surrogateescape")


def vocab_ranks() -> tuple[dict[bytes, int], list[str]]:
    """Ordinary token bytes by rank, and special token names in id order."""
    ranks = {token_bytes(i): i for i in range(N_RANKS)}
    specials = [token_bytes(i).decode() for i in range(N_RANKS, VOCAB_SIZE)]
    for tok, i in SPECIAL_IDS.items():
        if specials[i - N_RANKS] != tok:
            raise RuntimeError(f"unexpected vocabulary in openai_harmony: id {i} is not {tok}")
    return ranks, specials


def write_tokenizer(folder: str | os.PathLike[str]) -> None:
    """Write tokenizer.json and friends for o200k_harmony into ``folder``."""
    from transformers import PreTrainedTokenizerFast
    from transformers.convert_slow_tokenizer import TikTokenConverter

    ranks, specials = vocab_ranks()
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
        tokenizer_object=fast, bos_token=BOS_TOKEN, eos_token=EOS_TOKEN, pad_token=PAD_TOKEN
    )
    tok.chat_template = CHAT_TEMPLATE
    for text, i in SPECIAL_IDS.items():
        got = tok.convert_tokens_to_ids(text)
        if got != i:
            raise RuntimeError(f"tokenizer build failed: {text} -> {got}, expected {i}")
    tok.save_pretrained(str(Path(folder)))
