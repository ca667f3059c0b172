"""What the tiny models are: their special token ids, architectures and trained artifact.

Constants only, shared by the tokenizer writer, the weight writers and
``tools/train_tiny.py``. The raw ids come from :mod:`gptoss_magics.harmony` or from
:data:`SPECIAL_IDS`, never written out again.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .. import harmony as H
from ..harmony import FIRST_SPECIAL, VOCAB_SIZE

#: o200k_base ordinary tokens are ids 0 .. N_RANKS - 1; the special tokens follow.
N_RANKS = FIRST_SPECIAL
#: The special tokens the tiny models use, by text (checked against openai_harmony).
SPECIAL_IDS: dict[str, int] = {
    "<|startoftext|>": FIRST_SPECIAL,
    "<|endoftext|>": FIRST_SPECIAL + 1,
    "<|return|>": H.RETURN,
    "<|constrain|>": H.CONSTRAIN,
    "<|channel|>": H.CHANNEL,
    "<|start|>": H.START,
    "<|end|>": H.END,
    "<|message|>": H.MESSAGE,
    "<|call|>": H.CALL,
}
BOS_TOKEN = "<|startoftext|>"
EOS_TOKEN = "<|return|>"
PAD_TOKEN = "<|endoftext|>"
#: The token ids written into config.json (``*_token_id``).
TOKEN_IDS: dict[str, int] = {
    "bos_token_id": SPECIAL_IDS[BOS_TOKEN],
    "eos_token_id": SPECIAL_IDS[EOS_TOKEN],
    "pad_token_id": SPECIAL_IDS[PAD_TOKEN],
}
#: generation_config.json: generation also stops at <|endoftext|> and <|call|>.
GENERATION_CONFIG: dict[str, Any] = {
    "bos_token_id": SPECIAL_IDS[BOS_TOKEN],
    "eos_token_id": [SPECIAL_IDS[EOS_TOKEN], SPECIAL_IDS[PAD_TOKEN], SPECIAL_IDS["<|call|>"]],
    "pad_token_id": SPECIAL_IDS[PAD_TOKEN],
}

#: The random tiny model ("tiny-random"), in ``GptOssConfig`` terms.
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
    **TOKEN_IDS,
    tie_word_embeddings=False,
)

#: The trained tiny model ("tiny"): wider than the random one so it can learn its tasks;
#: the sliding window is longer than any training conversation (a tool round included).
TRAINED_ARCH: dict[str, Any] = dict(ARCH, hidden_size=128, intermediate_size=128,
                                    sliding_window=512)
#: The compact trained artifact shipped in the package (made by tools/train_tiny.py).
TRAINED_ARTIFACT = Path(__file__).resolve().parent.parent / "data" / "tiny-harmony.safetensors"
#: The one safetensors metadata key of the artifact (its JSON description).
ARTIFACT_META_KEY = "gptoss_magics_tiny"
