"""The embedded tiny gpt-oss models: test and demo models, not language models.

``build_tiny(name)`` writes, once, into the cache folder a real ``GptOssForCausalLM``
checkpoint plus the exact o200k_harmony tokenizer derived offline from the vocabulary
embedded in the installed ``openai_harmony`` module. vLLM loads either on a laptop
CPU in seconds, so every layer of this package can be exercised without a GPU, a
download or real weights. Building needs neither torch nor vLLM. There are two:

* ``"tiny"``: a toy *trained* model (2 layers, hidden 128, 4 experts, top-2). It
  answers in harmony form, an analysis message then a final one, reasons longer at
  higher effort, and does a few toy tasks (sentiment from keyword lists, upper-casing
  a word, adding two or three small numbers, multiplying through a ``multiply``
  function tool or the python tool; see :mod:`gptoss_magics.tiny.tasks`). It ships as
  a compact artifact (``data/tiny-harmony.safetensors``, made by
  ``tools/train_tiny.py``) holding only the embedding and unembedding rows of the
  ~2,000 token ids it uses; building expands it into a full 201,088-row checkpoint
  whose other rows are zero, so those ids never win.
* ``"tiny-random"``: random weights from a fixed seed (2 layers, hidden 64); its
  answers are noise.

Everything that shows their output says what they are (:func:`notice_for`). The same
inputs and library versions give byte-identical files.

Modules: ``_spec`` (token ids, architectures), ``_tokenizer`` (tokenizer.json),
``_weights`` (the checkpoints, with numpy), ``tasks`` (the training data of "tiny",
used by tools/train_tiny.py, the tests and the benchmarks; never at run time).
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

from ..errors import InvalidOptionError
from ..harmony import VOCAB_SIZE
from ..settings import settings
from ._spec import ARCH, ARTIFACT_META_KEY, SPECIAL_IDS, TRAINED_ARCH, TRAINED_ARTIFACT
from ._tokenizer import write_tokenizer
from ._weights import read_artifact_meta, write_random_weights, write_trained_weights

__all__ = [
    "ARCH",
    "ARTIFACT_META_KEY",
    "MARKER",
    "NOTICES",
    "SPECIAL_IDS",
    "TINY_ENGINE_ARGS",
    "TINY_NAMES",
    "TINY_NOTICE",
    "TRAINED_ARCH",
    "TRAINED_ARTIFACT",
    "TRAINED_NOTICE",
    "VOCAB_SIZE",
    "build_tiny",
    "is_tiny",
    "notice_for",
    "read_artifact_meta",
    "tiny_info",
    "write_trained_weights",
]

#: Model names that ask for an embedded tiny model (each is also its kind).
TINY_NAMES: tuple[str, ...] = ("tiny", "tiny-random", "tiny-mxfp4")
MARKER = "gptoss_magics_tiny.json"
#: The notice for the random-weight model (``"tiny-random"``).
TINY_NOTICE = (
    "embedded tiny test model: random weights, not a language model; its answers are noise"
)
#: The notice for the trained toy model (``"tiny"``).
TRAINED_NOTICE = (
    "embedded tiny demo model: trained only on toy tasks (sentiment keywords, "
    "uppercasing, adding small numbers, multiplying with a tool), not a language model"
)
NOTICES = {"tiny": TRAINED_NOTICE, "tiny-random": TINY_NOTICE}

# Engine arguments that suit the tiny model on a CPU; the user's own win.
TINY_ENGINE_ARGS: dict[str, Any] = {
    "dtype": "bfloat16",
    "max_model_len": 4096,
    "enforce_eager": True,
    "kv_cache_memory_bytes": 256 * 2**20,
    # on CPU this is the share of the NUMA node's memory that must be free at start
    "gpu_memory_utilization": 0.25,
}

# The distributions whose versions shape the built files: the vocabulary (oss-harmony),
# the tokenizer files (transformers, tokenizers) and the random weights (numpy).
_SHAPING_DISTS = ("oss-harmony", "transformers", "tokenizers", "numpy")
_FORMAT = {"tiny-random": 2, "tiny": 2}  # bumped when the files change for the same inputs


def is_tiny(name: str) -> bool:
    """True when ``name`` asks for an embedded tiny model."""
    return name in TINY_NAMES


def notice_for(kind: str | None) -> str:
    """The line every display of a tiny model's output must carry, by the ``kind`` in
    its marker file (an unknown kind gets the most cautious notice)."""
    return NOTICES.get(kind or "", TINY_NOTICE)


def _versions() -> dict[str, str]:
    out = {}
    for dist in _SHAPING_DISTS:
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = "missing"
    return out


def _build_spec(kind: str, seed: int) -> dict[str, Any]:
    """What shapes the files of ``kind``: its digest names the folder."""
    if kind == "tiny-random":
        return {"kind": kind, "seed": seed, "arch": ARCH, "versions": _versions(),
                "format": _FORMAT[kind]}
    artifact = read_artifact_meta()
    return {"kind": kind, "seed": artifact["seed"], "steps": artifact["steps"],
            "tasks": artifact["tasks"], "arch": artifact["arch"],
            "artifact_sha256": artifact["sha256"], "versions": _versions(),
            "format": _FORMAT[kind]}


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
    if name not in TINY_NAMES:
        raise InvalidOptionError(
            f"unknown tiny model {name!r}: use one of {', '.join(TINY_NAMES)}")
    if name == "tiny-mxfp4":  # the published MXFP4 layout: see tiny/mxfp4.py
        from .mxfp4 import build_mxfp4

        return build_mxfp4(cache_dir, seed=seed, force=force)
    kind = name
    root = Path(cache_dir) if cache_dir is not None else settings().cache_path()
    spec = _build_spec(kind, seed)
    digest = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:12]
    target = root / "models" / f"{kind}-{digest}"
    if (target / MARKER).is_file() and not force:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{kind}-", dir=target.parent))
    try:
        write_tokenizer(work)
        if kind == "tiny-random":
            write_random_weights(work, ARCH, seed)
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


def tiny_info(folder: str | os.PathLike[str]) -> dict[str, Any] | None:
    """Build information of a tiny model folder, or None for any other folder."""
    marker = Path(folder) / MARKER
    if not marker.is_file():
        return None
    info: dict[str, Any] = json.loads(marker.read_text())
    return info


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
        " harmony transcripts of toy tasks: the sentiment of a text from fixed keyword"
        " lists (positive, negative or neutral), writing a known word in capital letters,"
        " adding two numbers from 0 to 99 or three from 10 to 99 (at low effort it skips the"
        " carry and is unsure), and multiplying numbers of 2 or 3 digits by calling a"
        " `multiply` function tool or the python tool (without a tool it only estimates). It"
        " answers in harmony form (an analysis message, then a final message) and reasons"
        " longer at higher effort. Anything else gets one of those toy answers. Only the"
        " embedding and unembedding rows of the token ids it was trained on are non-zero."
        " Use it to demo and test the plumbing, never for answers.\n"
    ),
}
