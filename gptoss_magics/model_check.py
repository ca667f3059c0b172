"""Check a weights folder before loading it: fast, offline, without vLLM or torch.

Copying 14 to 65 GB of weights onto an air-gapped machine goes wrong in quiet ways: a
shard missing or cut short, the tokenizer left behind, the wrong folder. vLLM finds out
minutes into a load, with a traceback. :func:`check_model` reads only the folder's JSON
files and the safetensors headers, so it answers in a second::

    import gptoss_magics as gm
    gm.check_model("/models/gpt-oss-20b")        # or: python -m gptoss_magics check PATH

``load()`` runs the same check first and stops at the first problem with one line.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: the largest safetensors header we accept (real ones are well under 10 MB)
_MAX_HEADER = 100 * 2**20


@dataclass
class ModelCheck:
    """The outcome of :func:`check_model`: ``ok`` unless ``problems`` has entries."""

    path: Path
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    model_type: str | None = None
    quantization: str | None = None
    weight_files: int = 0
    weight_bytes: int = 0
    tensors: int = 0

    @property
    def ok(self) -> bool:
        """True when nothing stops the folder from loading."""
        return not self.problems

    def __repr__(self) -> str:
        head = (f"{self.path}: {'ok' if self.ok else 'NOT LOADABLE'} - {self.model_type or '?'}"
                f"{f' ({self.quantization})' if self.quantization else ''}, "
                f"{self.weight_files} weight file(s), {self.weight_bytes / 2**30:.2f} GiB, "
                f"{self.tensors:,} tensors")
        lines = [head] + [f"  problem: {p}" for p in self.problems] + \
            [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)


class _Bad(ValueError):
    """What is wrong with one file's content: one line, without the file's name."""


def _dict(value: Any, what: str = "") -> dict[str, Any]:
    """``value`` when it is a JSON object; else :class:`_Bad`: '<what> is not a JSON object'."""
    if not isinstance(value, dict):
        raise _Bad(f"{what + ' ' if what else ''}is not a JSON object (it is {_kind(value)})")
    return value


def _count(value: Any) -> bool:
    """True for a non-negative JSON integer (not a bool, not a float)."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _kind(value: Any) -> str:
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean",
             int: "a number", float: "a number", type(None): "null"}
    return names.get(type(value), type(value).__name__)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise _Bad(f"cannot be read ({exc.strerror or exc})") from None
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError
        raise _Bad(f"cannot be read: it is not valid JSON ({exc})") from None


#: bytes per element of the safetensors dtypes (sub-byte ones are not size-checked)
_DTYPE_BYTES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "F8_E8M0": 1,
                "I16": 2, "U16": 2, "F16": 2, "BF16": 2, "I32": 4, "U32": 4, "F32": 4,
                "I64": 8, "U64": 8, "F64": 8, "C64": 8}


def _tensor_end(name: str, entry: Any) -> int:
    """Where tensor ``name``'s data ends (after the header); _Bad if its entry is wrong."""
    entry = _dict(entry, f"has a header entry for {name!r} that")
    dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
    if not isinstance(dtype, str):
        raise _Bad(f"gives tensor {name!r} a dtype that is not a string ({dtype!r})")
    if not isinstance(shape, list) or not all(_count(n) for n in shape):
        raise _Bad(f"gives tensor {name!r} a shape that is not a list of non-negative "
                   f"integers ({shape!r})")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(map(_count, offsets))
            and offsets[0] <= offsets[1]):
        raise _Bad(f"gives tensor {name!r} data_offsets that are not [begin, end] with "
                   f"0 <= begin <= end ({offsets!r})")
    size = _DTYPE_BYTES.get(dtype)
    if size is not None:
        elements = 1
        for n in shape:
            elements *= n
        if elements * size != offsets[1] - offsets[0]:
            raise _Bad(f"gives tensor {name!r} {offsets[1] - offsets[0]:,} bytes, but shape "
                       f"{shape} of {dtype} needs {elements * size:,}")
    return int(offsets[1])


def _safetensors_header(path: Path) -> dict[str, Any]:
    """The JSON header of a safetensors file; raises _Bad or OSError saying what is wrong."""
    size = path.stat().st_size
    with path.open("rb") as fh:
        raw = fh.read(8)
        if len(raw) < 8:
            raise _Bad("is empty or cut short")
        (n,) = struct.unpack("<Q", raw)
        if n <= 0 or n > _MAX_HEADER or 8 + n > size:
            raise _Bad("is not a safetensors file, or was cut short")
        try:
            header = json.loads(fh.read(n))
        except ValueError:
            raise _Bad("has an unreadable header (not safetensors, or damaged)") from None
    header = _dict(header, "has a header that")
    if "__metadata__" in header:
        meta = header["__metadata__"]
        if not (isinstance(meta, dict) and all(isinstance(v, str) for v in meta.values())):
            raise _Bad("has a __metadata__ entry that is not an object of strings")
    end = max((_tensor_end(k, v) for k, v in header.items() if k != "__metadata__"), default=0)
    if 8 + n + end > size:
        missing = 8 + n + end - size
        raise _Bad(f"is cut short: {missing:,} bytes of tensor data are missing "
                   "(copy it again)")
    return header


def _read_config(folder: Path, check: ModelCheck) -> bool:
    """Read config.json into ``check``; False (with a problem) when it is unusable."""
    config_file = folder / "config.json"
    if not config_file.is_file():
        check.problems.append("config.json is missing: point at the folder that holds "
                              "config.json and the *.safetensors weights")
        return False
    try:
        config = _dict(_read_json(config_file))
    except _Bad as exc:
        check.problems.append(f"config.json {exc}")
        return False
    model_type = config.get("model_type")
    check.model_type = model_type if isinstance(model_type, str) else None
    quant = config.get("quantization_config")
    method = quant.get("quant_method") if isinstance(quant, dict) else None
    check.quantization = method if isinstance(method, str) else None
    if model_type != "gpt_oss":
        check.notes.append(f"model_type is {model_type!r}, not 'gpt_oss': it may load, "
                           "but prompts are rendered in gpt-oss's harmony format")
    return True


def _read_index(index_file: Path) -> dict[str, set[str]]:
    """File name -> tensor names, from model.safetensors.index.json; _Bad if unusable."""
    index = _dict(_read_json(index_file))
    if "weight_map" not in index:
        raise _Bad("has no weight_map")
    weight_map = _dict(index["weight_map"], "has a weight_map that")
    wanted: dict[str, set[str]] = {}
    for tensor, file in weight_map.items():
        if not isinstance(file, str) or not file:
            raise _Bad(f"maps tensor {tensor!r} to {file!r}, not to a file name")
        if Path(file).name != file or file in (".", ".."):
            raise _Bad(f"maps tensor {tensor!r} to {file!r}, outside the folder")
        wanted.setdefault(file, set()).add(tensor)
    return wanted


def _check_weights(check: ModelCheck, files: list[Path], wanted: dict[str, set[str]]) -> None:
    for file in files:
        if not file.is_file():
            listed = f" (the index lists {len(wanted[file.name])} tensors in it)" \
                if file.name in wanted else ""
            check.problems.append(f"{file.name} is missing{listed}")
            continue
        try:
            header = _safetensors_header(file)
            file_bytes = file.stat().st_size
        except OSError as exc:
            check.problems.append(f"{file.name} cannot be read ({exc.strerror or exc})")
            continue
        except _Bad as exc:
            check.problems.append(f"{file.name} {exc}")
            continue
        names = set(header) - {"__metadata__"}
        absent = wanted.get(file.name, set()) - names
        if absent:
            check.problems.append(f"{file.name} lacks {len(absent)} tensor(s) that the index "
                                  f"puts there, e.g. {sorted(absent)[0]}")
        check.weight_files += 1
        check.weight_bytes += file_bytes
        check.tensors += len(names)


def check_model(path: str | Path) -> ModelCheck:
    """Check that ``path`` holds a loadable gpt-oss checkpoint, reading headers only.

    Checks: the folder and its ``config.json``; the model type; every weight file listed
    in ``model.safetensors.index.json`` is there, readable and complete, and holds the
    tensors the index puts in it; without an index, every ``*.safetensors`` file; each
    header's entries (dtype, shape, data offsets); the tokenizer. Never raises for a bad
    folder, however malformed its files: the result lists the problems, one line each,
    naming the file.
    """
    folder = Path(path).expanduser()
    check = ModelCheck(folder)
    if not folder.is_dir():
        check.problems.append(f"{folder} is not a folder")
        return check
    if not _read_config(folder, check):
        return check
    index_file = folder / "model.safetensors.index.json"
    wanted: dict[str, set[str]] = {}
    if index_file.is_file():
        try:
            wanted = _read_index(index_file)
        except _Bad as exc:
            check.problems.append(f"{index_file.name} {exc}")
            return check
        files = [folder / name for name in sorted(wanted)]
    else:
        files = sorted(folder.glob("*.safetensors"))
        if not files:
            check.problems.append("no *.safetensors weights in the folder")
    _check_weights(check, files, wanted)
    if not (folder / "tokenizer.json").is_file():
        check.problems.append("tokenizer.json is missing: copy it with the weights")
    return check
