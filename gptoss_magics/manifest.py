"""A weights manifest for the air gap: SHA-256 of every file, in ``sha256sum`` format.

On the connected side, write it next to the download; inside, check the copy against it
(every byte is read, with a progress bar), and name every file that differs, is missing,
or was not in the manifest::

    python -m gptoss_magics manifest /models/gpt-oss-20b > weights.sha256
    python -m gptoss_magics check /models/gpt-oss-20b --manifest weights.sha256

    gm.write_manifest("/models/gpt-oss-20b")          # the text
    gm.check_manifest("/models/gpt-oss-20b", "weights.sha256")   # ManifestCheck
    gm.load("/models/gpt-oss-20b", manifest="weights.sha256")    # verify, then load

The manifest lists every file under the folder (``original/`` and ``metal/`` included),
sorted, one ``<sha256>  <relative path>`` line each; ``sha256sum -c`` reads it too. Files
of a Hugging Face cache snapshot are not read when writing it: the hub names each large
blob by its SHA-256. Hashes already computed for the weights fingerprint are reused
(:func:`gptoss_magics.models.hash_file`). ``manifest_digest`` (the SHA-256 of the
manifest's text) ties an answer's provenance to the exact files: a model loaded with
``load(..., manifest=FILE)`` is verified first (:func:`verify_manifest`), and every answer's
provenance then carries ``weights_manifest``.
"""

from __future__ import annotations

import hashlib
import os
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from .errors import ModelFolderError
from .models import hash_file

__all__ = ["FileResult", "ManifestCheck", "check_manifest", "manifest_digest",
           "manifest_files", "read_manifest", "verify_manifest", "write_manifest"]

#: download bookkeeping that ``huggingface-cli download --local-dir`` leaves in the folder
SKIPPED = (".cache/huggingface",)
_LINE = re.compile(r"^\\?([0-9a-fA-F]{64}) [ *](.+)$")


def manifest_files(folder: str | os.PathLike[str],
                   exclude: tuple[Path, ...] = ()) -> list[tuple[str, Path]]:
    """(relative posix path, path) of every file under ``folder``, sorted; symbolic links
    are followed (a Hugging Face snapshot is made of them), ``exclude`` left out."""
    root = Path(folder).expanduser()
    if not root.is_dir():
        raise ModelFolderError(f"{root} is not a folder: give the weights folder")
    skip = {_identity(p) for p in exclude if p.exists()}
    seen: set[tuple[int, int]] = set()  # folders already walked: no loop through links
    out = []
    for base, dirs, files in os.walk(root, followlinks=True):
        rel_base = Path(base).relative_to(root)
        seen.add(_identity(Path(base)))
        dirs[:] = sorted(d for d in dirs if (rel_base / d).as_posix() not in SKIPPED
                         and _identity(Path(base) / d) not in seen)
        for name in files:
            path = Path(base) / name
            if path.is_file() and _identity(path) not in skip:
                out.append(((rel_base / name).as_posix(), path))
    return sorted(out)


def _identity(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_dev, st.st_ino


@contextmanager
def _bar(total: int, enabled: bool, what: str) -> Iterator[Callable[[int], object]]:
    """A tqdm progress bar over ``total`` bytes (stderr), or a no-op."""
    if not enabled:
        yield lambda n: None
        return
    from tqdm.auto import tqdm

    with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=what,
              leave=False) as bar:
        yield bar.update


def write_manifest(folder: str | os.PathLike[str], *, progress: bool = True,
                   exclude: tuple[Path, ...] = ()) -> str:
    """The manifest of ``folder``: one ``<sha256>  <relative path>`` line per file, with
    a progress bar over the bytes it reads; ``exclude`` names files to leave out."""
    files = manifest_files(folder, exclude)
    lines = []
    with _bar(sum(p.stat().st_size for _, p in files), progress, "hashing") as update:
        for rel, path in files:
            sha, _ = hash_file(path, progress=update)
            lines.append(f"{sha}  {rel}\n")
    return "".join(lines)


def manifest_digest(text: str) -> str:
    """``"sha256:<hex>"`` of a manifest's text: names the exact set of files."""
    return "sha256:" + hashlib.sha256(text.encode("utf-8")).hexdigest()


def read_manifest(text: str) -> dict[str, str]:
    """Relative path -> sha256 hex from a manifest's text (``sha256sum`` format);
    raises :class:`ModelFolderError` naming the first line that is not one."""
    entries: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        match = _LINE.match(line)
        if match is None:
            raise ModelFolderError(f"line {number} of the manifest is not '<sha256>  <file>': "
                                   f"{line[:80]!r}")
        entries[match.group(2)] = match.group(1).lower()
    return entries


@dataclass(frozen=True)
class FileResult:
    """One file's outcome: ``ok``, ``changed``, ``missing``, ``extra`` or ``unreadable``."""

    path: str
    status: str
    expected: str | None = None
    actual: str | None = None

    def line(self) -> str:
        """What to say about it, one line."""
        why = {"changed": "its SHA-256 differs from the manifest: copy it again",
               "missing": "in the manifest, not in the folder: copy it",
               "extra": "not in the manifest: left over, or the manifest is older",
               "unreadable": "cannot be read: check its permissions",
               "ok": "matches"}[self.status]
        return f"{self.status}: {self.path} ({why})"


@dataclass
class ManifestCheck:
    """The outcome of :func:`check_manifest`: ``ok`` unless a file differs, is missing,
    unreadable, or is not in the manifest."""

    folder: Path
    manifest: str
    digest: str
    results: list[FileResult] = field(default_factory=list)
    bytes_checked: int = 0
    seconds: float = 0.0

    def _named(self, status: str) -> list[str]:
        return [r.path for r in self.results if r.status == status]

    @property
    def changed(self) -> list[str]:
        """Files whose content differs from the manifest."""
        return self._named("changed")

    @property
    def missing(self) -> list[str]:
        """Files the manifest lists that the folder lacks."""
        return self._named("missing")

    @property
    def extra(self) -> list[str]:
        """Files in the folder that the manifest does not list."""
        return self._named("extra")

    @property
    def problems(self) -> list[str]:
        """One line per file that is not ``ok``."""
        return [r.line() for r in self.results if r.status != "ok"]

    @property
    def ok(self) -> bool:
        """True when every file matches and nothing is missing or extra."""
        return not self.problems

    def __repr__(self) -> str:
        head = (f"{self.folder}: {'matches' if self.ok else 'DOES NOT MATCH'} "
                f"{self.manifest} ({len(self.results)} files, "
                f"{self.bytes_checked / 2**30:,.2f} GiB in {self.seconds:,.1f} s; "
                f"manifest {self.digest[:19]})")
        return "\n".join([head] + [f"  {p}" for p in self.problems])


def check_manifest(folder: str | os.PathLike[str], manifest_path: str | os.PathLike[str],
                   progress: bool = True) -> ManifestCheck:
    """Verify ``folder`` against the manifest at ``manifest_path``, reading every byte
    (hashes this machine already computed for unchanged files are reused; blob names
    are not trusted). A progress bar over the bytes shows while it reads. The manifest
    itself, or a copy of it that travelled inside the folder, is not an extra file."""
    start = time.perf_counter()
    manifest = Path(manifest_path).expanduser()
    try:
        text = manifest.read_text(encoding="utf-8")
    except OSError as exc:
        raise ModelFolderError(f"cannot read the manifest {manifest} "
                               f"({exc.strerror or exc})") from None
    expected = read_manifest(text)
    present = {rel: path for rel, path in manifest_files(folder, exclude=(manifest,))
               if rel in expected or not _is_copy_of(path, text)}  # it travelled along
    check = ManifestCheck(Path(folder), str(manifest), manifest_digest(text))
    todo = [rel for rel in sorted(expected) if rel in present]
    check.bytes_checked = sum(present[r].stat().st_size for r in todo)
    with _bar(check.bytes_checked, progress, "checking") as update:
        for rel in sorted(set(expected) | set(present)):
            if rel not in present:
                check.results.append(FileResult(rel, "missing", expected[rel]))
            elif rel not in expected:
                check.results.append(FileResult(rel, "extra"))
            else:
                check.results.append(_verify(rel, present[rel], expected[rel], update))
    check.seconds = time.perf_counter() - start
    return check


def _is_copy_of(path: Path, text: str) -> bool:
    data = text.encode("utf-8")
    return path.stat().st_size == len(data) and path.read_bytes() == data


def _verify(rel: str, path: Path, want: str, update: Callable[[int], object]) -> FileResult:
    try:
        sha, _ = hash_file(path, progress=update, trust_blob_names=False)
    except ModelFolderError:
        return FileResult(rel, "unreadable", want)
    return FileResult(rel, "ok" if sha == want else "changed", want, sha)


def verify_manifest(folder: str | os.PathLike[str], manifest_path: str | os.PathLike[str],
                    progress: bool = True) -> str:
    """:func:`check_manifest`, for a load: the manifest's digest when ``folder`` matches
    it; else raises :class:`ModelFolderError` naming the first file that does not."""
    result = check_manifest(folder, manifest_path, progress)
    if result.ok:
        return result.digest
    more = len(result.problems) - 1
    rest = (f" (and {more} more: `python -m gptoss_magics check {folder} --manifest "
            f"{manifest_path}` lists them)") if more else ""
    raise ModelFolderError(f"{folder} does not match the manifest {manifest_path}: "
                           f"{result.problems[0]}{rest}")
