"""Dequantize an MXFP4 gpt-oss checkpoint (as published) into bf16, for CPUs without AMX.

vLLM 0.32 runs the published MXFP4 expert weights only on a GPU or on a CPU with AMX
(Intel Xeon 4th generation or newer). Everywhere else it runs the same model from a bf16
checkpoint, which this module writes, with numpy alone, one tensor (one expert) at a
time, so a 13 GB gpt-oss-20b never needs more than a few hundred MB of memory::

    python -m gptoss_magics dequantize /models/gpt-oss-20b /models/gpt-oss-20b-bf16

    from gptoss_magics.dequantize import dequantize_mxfp4, plan_dequantize
    plan_dequantize(src, dst)        # what it reads and writes, and the disk space
    dequantize_mxfp4(src, dst)       # DequantizeResult; then gm.load(dst)

The decoding is exact: each MXFP4 block is 32 four-bit E2M1 codes (two a byte, the low
nibble first; values 0, 0.5, 1, 1.5, 2, 3, 4, 6, negated when the code's 0x8 bit is set)
and one E8M0 scale byte ``e`` (the factor ``2**(e - 127)``); every such value is a bf16
value. ``*_blocks`` ``[E, rows, cols/32, 16]`` and ``*_scales`` ``[E, rows, cols/32]`` of
``mlp.experts.gate_up_proj`` and ``mlp.experts.down_proj`` become the unquantized tensors
vLLM's gpt_oss loader reads, ``[E, cols, rows]`` bf16 (``gate_up_proj``
``[E, hidden, 2 * intermediate]``, its gate and up columns still interleaved as published;
``down_proj`` ``[E, intermediate, hidden]``). Every other tensor is copied byte for byte,
into shards of the same names; ``config.json`` loses its ``quantization_config``; the
tokenizer and generation files are copied; ``README.md`` records the source folder, its
weights fingerprint and, when given, the manifest it was verified against. The copy is
about 3 times the MXFP4 weights on disk, and vLLM holds it all in memory (2 bytes a
parameter: gpt-oss-20b 12.8 GiB in, 39.0 GiB out; gpt-oss-120b 60.8 GiB in, 217.6 out).
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import IO, Any

import numpy as np

from .errors import ModelFolderError, StorageError
from .model_check import check_model
from .models import FingerprintTask, quant_method, resolve_model
from .mxfp4 import BLOCK_BYTES, mxfp4_to_bf16
from .tiny import MARKER, tiny_info

__all__ = ["DequantizePlan", "DequantizeResult", "dequantize_mxfp4", "plan_dequantize"]

#: the MXFP4 tensors of the published checkpoints (each ``NAME_blocks`` + ``NAME_scales``)
EXPERT_TENSORS = ("mlp.experts.gate_up_proj", "mlp.experts.down_proj")
#: files of the source folder that are not copied (rewritten, converted, or about the source)
_NOT_COPIED = ("config.json", "model.safetensors.index.json", "README.md", MARKER)
_CHUNK = 64 * 2**20  # bytes copied per step
_SIZES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "F8_E8M0": 1, "I16": 2,
          "U16": 2, "F16": 2, "BF16": 2, "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8,
          "F64": 8}


# ---------------------------------------------------------------------- the plan
@dataclass(frozen=True)
class _Part:  # where one source tensor's bytes are
    path: Path
    offset: int  # from the start of the file
    dtype: str
    shape: tuple[int, ...]


@dataclass(frozen=True)
class _Out:  # a tensor of the bf16 copy: copied from ``copy`` or decoded from blocks, scales
    name: str
    dtype: str
    shape: tuple[int, ...]
    copy: _Part | None = None
    blocks: _Part | None = None
    scales: _Part | None = None

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * _SIZES[self.dtype]


@dataclass(frozen=True)
class DequantizePlan:
    """What :func:`dequantize_mxfp4` reads and writes, and the disk space it needs."""

    source: Path
    destination: Path
    shards: dict[str, list[_Out]] = field(repr=False)  # output file -> its tensors
    files: list[Path] = field(repr=False)  # copied as they are
    source_bytes: int
    needed_bytes: int
    free_bytes: int
    indexed: bool  # the source has model.safetensors.index.json (so will the copy)

    @property
    def tensors(self) -> int:
        return sum(len(outs) for outs in self.shards.values())

    @property
    def weight_bytes(self) -> int:
        return sum(o.nbytes for outs in self.shards.values() for o in outs)

    def __repr__(self) -> str:
        return (f"{self.source}: MXFP4, {len(self.shards)} weight file(s), "
                f"{self.source_bytes / 2**30:.2f} GiB -> {self.destination}: bf16, "
                f"{self.needed_bytes / 2**30:.2f} GiB needed, "
                f"{self.free_bytes / 2**30:.2f} GiB free there")


def _header(path: Path) -> tuple[dict[str, Any], int]:
    """A safetensors file's header (without ``__metadata__``) and where its data starts."""
    with path.open("rb") as fh:
        (length,) = struct.unpack("<Q", fh.read(8))
        header: dict[str, Any] = json.loads(fh.read(length))
    header.pop("__metadata__", None)
    return header, 8 + length


def _weight_files(folder: Path) -> list[str]:
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        return sorted(set(json.loads(index.read_text())["weight_map"].values()))
    return sorted(p.name for p in folder.glob("*.safetensors"))


def _outputs(folder: Path) -> dict[str, list[_Out]]:
    """The tensors of the bf16 checkpoint, by output file (named as the source's)."""
    parts: dict[str, tuple[str, _Part]] = {}
    for file in _weight_files(folder):
        header, start = _header(folder / file)
        for name, info in header.items():
            parts[name] = (file, _Part(folder / file, start + info["data_offsets"][0],
                                       info["dtype"], tuple(info["shape"])))
    shards: dict[str, list[_Out]] = {}
    for name, (file, part) in sorted(parts.items()):
        if name.endswith("_scales"):
            if name[:-len("_scales")] + "_blocks" not in parts:
                raise ModelFolderError(f"{folder}: {name} has no {name[:-7]}_blocks beside it")
            continue
        if not name.endswith("_blocks"):
            shards.setdefault(file, []).append(_Out(name, part.dtype, part.shape, copy=part))
            continue
        base = name[:-len("_blocks")]
        scales = parts.get(base + "_scales", (None, None))[1]
        if not base.endswith(EXPERT_TENSORS) or scales is None or part.dtype != "U8" \
                or scales.dtype != "U8" or len(part.shape) != 4 \
                or part.shape[-1] != BLOCK_BYTES or scales.shape != part.shape[:-1]:
            raise ModelFolderError(
                f"{folder}: {name} is not an MXFP4 expert tensor of the published gpt-oss "
                "layout (uint8 [E, rows, cols/32, 16] with its *_scales [E, rows, cols/32])")
        experts, rows, groups, _ = part.shape
        shards.setdefault(file, []).append(_Out(
            base, "BF16", (experts, groups * 2 * BLOCK_BYTES, rows), blocks=part, scales=scales))
    for outs in shards.values():  # the order of the safetensors library: widest dtype first
        outs.sort(key=lambda o: (-_SIZES[o.dtype], o.name))
    return shards


def _header_bytes(outs: list[_Out]) -> bytes:
    header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for o in outs:
        header[o.name] = {"dtype": o.dtype, "shape": list(o.shape),
                          "data_offsets": [offset, offset + o.nbytes]}
        offset += o.nbytes
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text


def _free_bytes(folder: Path) -> int:
    """Free bytes on the disk that holds ``folder`` (or its nearest existing parent)."""
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return shutil.disk_usage(folder).free


def _copied(folder: Path) -> list[Path]:
    """Files beside the weights that the copy keeps (tokenizer, generation config, licence);
    not the weights, the index, config.json, README.md or a manifest of the source."""
    return sorted(p for p in folder.iterdir() if p.is_file() and p.name not in _NOT_COPIED
                  and not p.name.endswith((".safetensors", ".sha256")))


def _empty_destination(dst: Path, src: Path) -> None:
    if dst.exists() and (not dst.is_dir() or any(dst.iterdir())):
        raise StorageError(f"{dst} is not empty: give a new or empty folder for the bf16 "
                           "copy (nothing is overwritten)")
    if dst == src or src in dst.parents:
        raise StorageError(f"{dst} is inside the source folder {src}: put the bf16 copy "
                           "beside it instead")


def plan_dequantize(src: str | os.PathLike[str], dst: str | os.PathLike[str]
                    ) -> DequantizePlan:
    """Check the MXFP4 checkpoint ``src`` (a folder, a name such as ``"tiny-mxfp4"``, or a
    Hugging Face id already in the cache) and the destination ``dst``, reading headers only,
    and return what the conversion will read and write. Raises :class:`ModelFolderError`
    for a folder that is not a complete MXFP4 checkpoint, :class:`StorageError` when
    ``dst`` is not empty or its disk has too little free space."""
    source, _ = resolve_model(os.fspath(src))
    if quant_method(source) != "mxfp4":
        raise ModelFolderError(f"{source} has no MXFP4 weights (its config.json names no "
                               "quantization_config with quant_method mxfp4): load it as it is")
    check = check_model(source)
    if not check.ok:
        raise ModelFolderError(f"{source} cannot be dequantized: {check.problems[0]}")
    destination = Path(dst).expanduser().absolute()
    _empty_destination(destination, source)
    shards = _outputs(source)
    files = _copied(source)
    needed = (sum(o.nbytes for outs in shards.values() for o in outs)
              + sum(len(_header_bytes(outs)) for outs in shards.values())
              + sum(p.stat().st_size for p in files) + 2**20)  # + configs, index, README
    plan = DequantizePlan(source, destination, shards, files, check.weight_bytes, needed,
                          _free_bytes(destination.parent),
                          (source / "model.safetensors.index.json").is_file())
    if plan.needed_bytes > plan.free_bytes:
        raise StorageError(
            f"{destination}: the bf16 copy needs {needed / 2**30:.2f} GiB and that disk has "
            f"{plan.free_bytes / 2**30:.2f} GiB free: free some space or give a folder on "
            "another disk")
    return plan


# ---------------------------------------------------------------------- the writing
def _read(files: Mapping[Path, IO[bytes]], part: _Part, offset: int, size: int) -> bytes:
    fh = files[part.path]
    fh.seek(part.offset + offset)
    data = fh.read(size)
    if len(data) != size:
        raise ModelFolderError(f"{part.path} was cut short while it was read: copy it again")
    return data


def _chunks(out: _Out, files: Mapping[Path, IO[bytes]]) -> Iterator[bytes]:
    """The bytes of ``out``: copied in chunks, or decoded one expert at a time."""
    if out.copy is not None:
        for start in range(0, out.nbytes, _CHUNK):
            yield _read(files, out.copy, start, min(_CHUNK, out.nbytes - start))
        return
    assert out.blocks is not None and out.scales is not None
    _, rows, groups, _ = out.blocks.shape
    per_blocks, per_scales = rows * groups * BLOCK_BYTES, rows * groups
    for e in range(out.shape[0]):
        blocks = np.frombuffer(_read(files, out.blocks, e * per_blocks, per_blocks), np.uint8)
        scales = np.frombuffer(_read(files, out.scales, e * per_scales, per_scales), np.uint8)
        bits = mxfp4_to_bf16(blocks.reshape(rows, groups, BLOCK_BYTES),
                             scales.reshape(rows, groups))
        yield bits.T.tobytes()  # [cols, rows]


def _write_shard(path: Path, outs: list[_Out], update: Callable[[int], object]) -> None:
    with ExitStack() as stack, path.open("wb") as fh:
        sources = {p.path for o in outs for p in (o.copy, o.blocks, o.scales) if p}
        files = {p: stack.enter_context(p.open("rb")) for p in sources}
        fh.write(_header_bytes(outs))
        for out in outs:
            for chunk in _chunks(out, files):
                fh.write(chunk)
                update(len(chunk))


def _bar(total: int, enabled: bool) -> Any:
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024,
                desc="dequantizing", leave=False)


@dataclass(frozen=True)
class DequantizeResult:
    """What :func:`dequantize_mxfp4` wrote: the plan, the time it took, and the source's
    weights fingerprint and verified manifest digest (None without a manifest)."""

    plan: DequantizePlan
    seconds: float
    source_fingerprint: str
    source_manifest: str | None = None

    @property
    def folder(self) -> Path:
        return self.plan.destination

    def __repr__(self) -> str:
        p = self.plan
        return (f"{p.destination}: bf16 checkpoint, {p.tensors} tensors in "
                f"{len(p.shards)} file(s), {p.weight_bytes / 2**30:.2f} GiB, written in "
                f"{self.seconds:.1f} s from {p.source} ({self.source_fingerprint[:19]}); "
                f"load it with gm.load({str(p.destination)!r})")


def _write_configs(plan: DequantizePlan, work: Path) -> None:
    config = json.loads((plan.source / "config.json").read_text(encoding="utf-8"))
    config.pop("quantization_config", None)
    if "dtype" not in config and "torch_dtype" not in config:
        config["dtype"] = "bfloat16"
    (work / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    if plan.indexed:
        weight_map = {o.name: file for file, outs in plan.shards.items() for o in outs}
        index = {"metadata": {"total_size": plan.weight_bytes},
                 "weight_map": dict(sorted(weight_map.items()))}
        (work / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")
    for path in plan.files:
        shutil.copyfile(path, work / path.name)
    if (plan.source / "README.md").is_file():
        shutil.copyfile(plan.source / "README.md", work / "README.source.md")
    info = tiny_info(plan.source)
    if info is not None:  # a toy stays marked as one: every display of its output says so
        info = {**info, "kind": f"{info.get('kind', 'tiny')}-bf16",
                "dequantized_from": str(plan.source)}
        (work / MARKER).write_text(json.dumps(info, indent=1, sort_keys=True) + "\n")


def _version() -> str:
    try:
        return metadata.version("gptoss-magics")
    except metadata.PackageNotFoundError:  # pragma: no cover - a source tree
        return "0.0.0"


def _readme(result: DequantizeResult) -> str:
    p = result.plan
    verified = (f"- verified first against a weights manifest, digest "
                f"`{result.source_manifest}`\n" if result.source_manifest else "")
    return (
        f"# {p.destination.name}: a bf16 copy of an MXFP4 gpt-oss checkpoint\n\n"
        f"Written by gptoss_magics {_version()} (`python -m gptoss_magics dequantize`) on "
        f"{time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}, in {result.seconds:.1f} s.\n\n"
        f"- source folder: `{p.source}`\n"
        f"- source weights fingerprint: `{result.source_fingerprint}` (full SHA-256 of its "
        "config and weight files, as an answer's provenance names it when the source "
        "is loaded)\n" + verified +
        f"- {p.tensors} tensors, {p.weight_bytes:,} bytes in {len(p.shards)} file(s)\n\n"
        "The MXFP4 expert weights (`*_blocks`, `*_scales`) were decoded exactly (E2M1 "
        "values times 2**(scale - 127); each is a bf16 value) into the unquantized layout "
        "vLLM's gpt_oss loader reads: `mlp.experts.gate_up_proj` [experts, hidden, "
        "2 x intermediate] (gate and up still interleaved) and `mlp.experts.down_proj` "
        "[experts, intermediate, hidden]. Every other tensor is the source's, byte for "
        "byte; config.json lost its quantization_config. The source's own README, if it "
        "had one, is README.source.md.\n")


def dequantize_mxfp4(src: str | os.PathLike[str], dst: str | os.PathLike[str], *,
                     manifest: str | os.PathLike[str] | None = None,
                     progress: bool = True) -> DequantizeResult:
    """Write a bf16 copy of the MXFP4 gpt-oss checkpoint ``src`` into the new (or empty)
    folder ``dst`` and return what was written; then ``gm.load(dst)`` runs it on any CPU.

    Checks first (:func:`plan_dequantize`: the source, an empty ``dst``, the disk space);
    with ``manifest``, verifies every file of ``src`` against it (as ``check --manifest``).
    Writes into a hidden folder beside ``dst`` and renames it at the end, so ``dst`` is
    either complete or absent (a process killed half way leaves a hidden
    ``.DST.partial-*`` folder beside it: delete it). ``progress``: a bar over the bytes.
    """
    from .manifest import verify_manifest

    plan = plan_dequantize(src, dst)
    digest = None if manifest is None else verify_manifest(plan.source, manifest, progress)
    start = time.perf_counter()
    task = FingerprintTask(plan.source)  # hashes the source while it is converted
    task.start()
    plan.destination.parent.mkdir(parents=True, exist_ok=True)
    work = plan.destination.with_name(f".{plan.destination.name}.partial-{os.getpid()}")
    shutil.rmtree(work, ignore_errors=True)  # left by a process of the same id
    work.mkdir()
    bar = _bar(plan.weight_bytes, progress)
    try:
        for file, outs in plan.shards.items():
            _write_shard(work / file, outs, bar.update if bar else (lambda n: None))
        _write_configs(plan, work)
        fingerprint = task.future.result().value
        result = DequantizeResult(plan, time.perf_counter() - start, fingerprint, digest)
        (work / "README.md").write_text(_readme(result))
        os.replace(work, plan.destination)  # replaces an empty folder, never a full one
    finally:
        task.stop()
        if bar is not None:
            bar.close()
        if work.exists():
            shutil.rmtree(work, ignore_errors=True)
    return result
