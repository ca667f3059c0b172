"""Where a model's weights are, and an honest fingerprint of them.

``resolve_model`` turns a name ("tiny", a folder, a Hugging Face id already in the
local cache) into a folder; it never downloads. ``fingerprint`` hashes every byte of
the weight and config files with SHA-256, so that cached answers are tied to the exact
weights that produced them::

    fp = fingerprint(folder)            # Fingerprint(value="sha256:...", kind="full-sha256")
    future = start_fingerprint(folder)  # the same, on a background thread (start it before
    ...                                 # the engine loads: hashing and loading overlap)
    fp = future.result()

``check_runnable`` refuses, before vLLM is imported, a checkpoint that this machine has
no kernel for (MXFP4 experts without a GPU or an AMX CPU), naming the command that
converts it to bf16 (``python -m gptoss_magics dequantize``), which runs anywhere.

A file's SHA-256 is computed once and remembered in the cache folder by device, inode,
size, modification and change time, so rewriting a file in place (even restoring its
mtime) is noticed. Files of a Hugging Face cache snapshot are not read at all: the hub
names each large blob by its SHA-256.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shlex
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import (
    CancelledError,
    ModelFolderError,
    ModelNotFoundError,
    UnsupportedHardwareError,
)
from .settings import settings

__all__ = ["Fingerprint", "FingerprintTask", "check_runnable", "dequantize_command",
           "file_sha256", "fingerprint", "hash_file", "mxfp4_kernel", "quant_method",
           "resolve_model", "start_fingerprint", "weights_fingerprint"]

KIND = "full-sha256"
BLOCK = 8 * 2**20  # bytes read per step; hashlib releases the GIL on buffers this large
MEMO_NAME = "fingerprints.json"
MEMO_VERSION = 2
MEMO_LIMIT = 20_000  # entries kept (the oldest are dropped)
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt")
CONFIG_NAMES = ("config.json", "generation_config.json", "tokenizer.json")
_HEX64 = re.compile(r"[0-9a-f]{64}")
_MEMO_LOCK = threading.Lock()


# ---------------------------------------------------------------------- resolution
def _has_gpu() -> bool:
    return os.path.exists("/dev/nvidia0") or shutil.which("nvidia-smi") is not None


def resolve_model(name: str) -> tuple[Path, bool]:
    """The local folder for ``name`` and whether it is the tiny model. Never downloads."""
    from .tiny import build_tiny, is_tiny, tiny_info

    if is_tiny(name):
        return build_tiny(name), True
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelNotFoundError(
                f"{path} has no config.json: point at the folder that holds config.json and "
                "the *.safetensors weights."
            )
        return path.resolve(), tiny_info(path) is not None
    if name.count("/") == 1 and not name.startswith((".", "/", "~")):
        try:
            from huggingface_hub import snapshot_download

            local = snapshot_download(name, local_files_only=True)
            return Path(local), False
        except Exception:
            pass
        hint = "" if _has_gpu() else (
            " This machine has no GPU either: try `tiny`, the embedded CPU test model."
        )
        raise ModelNotFoundError(
            f"{name} is not on this machine (not a folder, not in the local Hugging Face "
            "cache) and nothing is downloaded at run time: copy the weights here and load "
            f"the folder, e.g. load('/models/gpt-oss-20b').{hint}"
        )
    raise ModelNotFoundError(
        f"No model folder at {path}: give a folder with config.json and the weights, a "
        "Hugging Face id already in the local cache, or 'tiny'."
    )


# ---------------------------------------------------------------------- can it run here?
def quant_method(folder: str | os.PathLike[str]) -> str | None:
    """``quantization_config.quant_method`` in the folder's ``config.json`` (``"mxfp4"``
    for the published gpt-oss checkpoints), or None (bf16, or an unreadable config)."""
    try:
        quant = json.loads((Path(folder) / "config.json").read_text(encoding="utf-8")).get(
            "quantization_config")
    except (OSError, ValueError, AttributeError):
        return None
    method = quant.get("quant_method") if isinstance(quant, dict) else None
    return str(method) if method is not None else None


def _cpu_flags() -> set[str]:
    """The CPU's feature flags (``/proc/cpuinfo``), empty where there is no such file."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.partition(":")[2].split())
    return set()


def mxfp4_kernel() -> str | None:
    """Where vLLM 0.32 has an MXFP4 MoE kernel on this machine: ``"gpu"`` (CUDA),
    ``"cpu-amx"`` (its only CPU MXFP4 path needs AMX tiles: Intel Xeon 4th generation or
    newer), or None. Reads ``/proc/cpuinfo``; imports neither vLLM nor torch."""
    if _has_gpu():
        return "gpu"
    return "cpu-amx" if "amx_tile" in _cpu_flags() else None


def check_runnable(folder: str | os.PathLike[str], label: str | None = None) -> None:
    """Raise :class:`UnsupportedHardwareError` when vLLM cannot run the checkpoint in
    ``folder`` on this machine: MXFP4 experts with no GPU and no AMX CPU. Called by
    ``load()`` before vLLM is imported, instead of a vLLM error after a minute."""
    if quant_method(folder) != "mxfp4" or mxfp4_kernel() is not None:
        return
    command = dequantize_command(label or str(folder))
    raise UnsupportedHardwareError(
        f"{label or Path(folder).name} has MXFP4 expert weights, which vLLM runs only on a "
        "GPU or on a CPU with AMX (Intel Xeon 4th generation or newer), and this machine "
        f"has neither: to run it on this CPU, convert it to bf16 first (`{command}`, about "
        "3x the disk) and load that folder; or load it on such a machine, or a bf16 "
        "checkpoint such as 'tiny'")


def dequantize_command(name: str) -> str:
    """The command that writes a bf16 copy of the MXFP4 checkpoint ``name`` (a folder, a
    tiny model's name or a Hugging Face id): into ``FOLDER-bf16`` beside a folder, else
    into ``NAME-bf16`` in the current folder (for a Hugging Face cache snapshot, named
    after its repository, outside the cache)."""
    path = Path(name).expanduser()
    if path.parent.name == "snapshots":  # .../models--openai--gpt-oss-20b/snapshots/<rev>
        dst = path.parent.parent.name.rpartition("--")[2] + "-bf16"
    elif path.is_dir():
        dst = str(path) + "-bf16"
    else:
        dst = path.name + "-bf16"
    return f"python -m gptoss_magics dequantize {shlex.quote(name)} {shlex.quote(dst)}"


# ---------------------------------------------------------------------- the memo
class _Memo:
    """File SHA-256s remembered in the cache folder; every failure just means "recompute"."""

    def __init__(self) -> None:
        self.path: Path | None = None
        self.known: dict[str, str] = {}
        try:
            self.path = settings().cache_path(MEMO_NAME)
            self.known = self._read(self.path)
        except OSError:
            pass

    @staticmethod
    def _read(path: Path) -> dict[str, str]:
        try:
            data = json.loads(path.read_text())
            files = data["files"] if data.get("version") == MEMO_VERSION else {}
            return {str(k): str(v) for k, v in files.items() if _HEX64.fullmatch(str(v))}
        except (OSError, ValueError, TypeError, KeyError, AttributeError):
            return {}

    @staticmethod
    def key(real: str, st: os.stat_result) -> str:
        return json.dumps([real, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns,
                           st.st_ctime_ns])

    def put(self, key: str, sha: str) -> None:
        """Remember ``sha`` and write the memo (merged with what others wrote meanwhile)."""
        self.known[key] = sha
        if self.path is None:
            return
        with _MEMO_LOCK:
            merged = {**self._read(self.path), **self.known}
            kept = dict(list(merged.items())[-MEMO_LIMIT:])
            tmp = None
            try:
                fd, tmp = tempfile.mkstemp(prefix=".fingerprints-", dir=self.path.parent)
                with os.fdopen(fd, "w") as fh:  # mkstemp makes it 0600
                    json.dump({"version": MEMO_VERSION, "files": kept}, fh)
                os.replace(tmp, self.path)
                tmp = None
            except OSError:
                pass
            finally:
                if tmp is not None:
                    with contextlib.suppress(OSError):
                        os.unlink(tmp)


# ---------------------------------------------------------------------- one file
def _hf_blob_sha(path: Path) -> str | None:
    """The SHA-256 a Hugging Face cache snapshot names ``path`` by, or None.

    ``.../models--ORG--NAME/snapshots/REV/FILE`` links to ``../../blobs/<name>``; LFS
    blobs (the weights) are named by their SHA-256, small git files by a 40-hex sha1."""
    if not path.is_symlink() or path.parent.parent.name != "snapshots":
        return None
    target = path.resolve()
    repo = path.parent.parent.parent.resolve()
    if not repo.name.startswith(("models--", "datasets--")):
        return None
    if target.parent.name != "blobs" or target.parent.parent != repo:
        return None
    return target.name if _HEX64.fullmatch(target.name) else None


def _unreadable(path: Path, err: OSError) -> ModelFolderError:
    why = err.strerror or type(err).__name__
    return ModelFolderError(
        f"Cannot read {path} ({why}): make the weight files readable by this user "
        "(e.g. chmod a+r) or copy the folder somewhere you can read."
    )


def _hash(path: Path, stop: threading.Event | None,
          progress: Callable[[int], object] | None = None) -> tuple[str, int]:
    digest = hashlib.sha256()
    buf = bytearray(BLOCK)
    view = memoryview(buf)
    total = 0
    with path.open("rb", buffering=0) as fh:
        while n := fh.readinto(view):
            digest.update(view[:n])
            total += n
            if progress is not None:
                progress(n)
            if stop is not None and stop.is_set():
                raise CancelledError("The weights fingerprint was cancelled.")
    return digest.hexdigest(), total


def _file_sha(path: Path, memo: _Memo, stop: threading.Event | None = None, *,
              progress: Callable[[int], object] | None = None,
              trust_blob_names: bool = True) -> tuple[str, str, int, int]:
    """(sha256 hex, how it was obtained, bytes read, size) for one file; ``progress``
    hears of the bytes as they are read (all at once when they need not be)."""
    try:
        real = os.path.realpath(path)
        before = os.stat(real)
        blob = _hf_blob_sha(path) if trust_blob_names else None
        key = _Memo.key(real, before)
        known = blob or memo.known.get(key)
        if known is not None:
            if progress is not None:
                progress(before.st_size)
            return known, "hf-blob-name" if blob else "memo", 0, before.st_size
        sha, total = _hash(Path(real), stop) if progress is None else \
            _hash(Path(real), stop, progress)
        after = os.stat(real)
    except OSError as err:
        raise _unreadable(path, err) from None
    if _Memo.key(real, after) == key:  # not changed while we read it
        memo.put(key, sha)
    return sha, "hashed", total, before.st_size


def file_sha256(path: str | os.PathLike[str]) -> str:
    """The full SHA-256 (hex) of one file, remembered in the cache folder.

    Raises ``ModelFolderError`` when the file cannot be read."""
    return _file_sha(Path(path), _Memo())[0]


def hash_file(path: str | os.PathLike[str], *, progress: Callable[[int], object] | None = None,
              trust_blob_names: bool = True) -> tuple[str, str]:
    """(SHA-256 hex, how: "hashed", "memo" or "hf-blob-name") of one file, as
    :func:`file_sha256` finds it; ``progress(n)`` hears of the bytes read.
    ``trust_blob_names=False`` reads a Hugging Face snapshot's files instead of taking
    their blob names (to verify a copy). Raises ``ModelFolderError`` when unreadable."""
    sha, how, _, _ = _file_sha(Path(path), _Memo(), progress=progress,
                               trust_blob_names=trust_blob_names)
    return sha, how


# ---------------------------------------------------------------------- a folder
@dataclass(frozen=True)
class Fingerprint:
    """What identifies a model's weights: a SHA-256 over every config and weight file."""

    value: str  # "sha256:<hex>" over the sorted (name, size, file sha256) list
    kind: str = KIND
    files: dict[str, str] = field(default_factory=dict)  # file name -> sha256 hex
    sources: dict[str, str] = field(default_factory=dict)  # "hashed", "memo", "hf-blob-name"
    seconds: float = 0.0
    bytes_hashed: int = 0

    def to_provenance(self) -> dict[str, Any]:
        """The part written into caches and audit provenance."""
        return {"value": self.value, "kind": self.kind}


def fingerprinted_files(folder: Path) -> list[Path]:
    """The files a fingerprint covers: weights and configs at the top of ``folder``
    (``original/`` and ``metal/`` copies that vLLM does not load are left out)."""
    try:
        entries = list(folder.iterdir())
    except OSError as err:
        raise _unreadable(folder, err) from None
    return sorted(
        (p for p in entries
         if (p.suffix in WEIGHT_SUFFIXES or p.name in CONFIG_NAMES
             or p.name.endswith(".safetensors.index.json")) and p.is_file()),
        key=lambda p: p.name,
    )


def _fingerprint(folder: Path, stop: threading.Event | None = None) -> Fingerprint:
    start = time.perf_counter()
    memo = _Memo()
    rows: list[tuple[str, int, str]] = []
    files: dict[str, str] = {}
    sources: dict[str, str] = {}
    read = 0
    for p in fingerprinted_files(Path(folder)):
        sha, how, n, size = _file_sha(p, memo, stop)
        rows.append((p.name, size, sha))
        files[p.name], sources[p.name] = sha, how
        read += n
    value = "sha256:" + hashlib.sha256(json.dumps(rows).encode()).hexdigest()
    return Fingerprint(value, KIND, files, sources, time.perf_counter() - start, read)


def fingerprint(folder: str | os.PathLike[str]) -> Fingerprint:
    """The full-SHA-256 fingerprint of a weights folder (see the module docstring)."""
    return _fingerprint(Path(folder))


def weights_fingerprint(folder: str | os.PathLike[str]) -> str:
    """``fingerprint(folder).value`` (kept for older callers)."""
    return fingerprint(folder).value


class FingerprintTask(threading.Thread):
    """Computes ``fingerprint(folder)`` on a daemon thread into ``self.future``.

    ``stop()`` ends it early (the future then raises ``CancelledError``), e.g. when the
    engine failed to load and the fingerprint is no longer wanted."""

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        super().__init__(name=f"gptoss-fingerprint-{Path(folder).name}", daemon=True)
        self.folder = Path(folder)
        self.future: Future[Fingerprint] = Future()
        self._stop_event = threading.Event()

    def stop(self) -> None:
        """Ask the hashing to stop after the current block."""
        self._stop_event.set()
        self.future.cancel()  # only succeeds if it has not started

    def run(self) -> None:
        if not self.future.set_running_or_notify_cancel():
            return
        try:
            self.future.set_result(_fingerprint(self.folder, self._stop_event))
        except BaseException as err:  # handed to whoever calls .result()
            self.future.set_exception(err)


def start_fingerprint(folder: str | os.PathLike[str]) -> Future[Fingerprint]:
    """Start ``fingerprint(folder)`` on a background thread and return its future."""
    task = FingerprintTask(folder)
    task.start()
    return task.future
