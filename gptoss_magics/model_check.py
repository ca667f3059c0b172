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


def _safetensors_header(path: Path) -> dict[str, Any]:
    """The JSON header of a safetensors file; raises ValueError saying what is wrong."""
    size = path.stat().st_size
    with path.open("rb") as fh:
        raw = fh.read(8)
        if len(raw) < 8:
            raise ValueError("is empty or cut short")
        (n,) = struct.unpack("<Q", raw)
        if n <= 0 or n > _MAX_HEADER or 8 + n > size:
            raise ValueError("is not a safetensors file, or was cut short")
        try:
            header = json.loads(fh.read(n))
        except ValueError:
            raise ValueError("has an unreadable header (not safetensors, or damaged)") from None
    if not isinstance(header, dict):
        raise ValueError("has an unreadable header")
    end = max((int(v["data_offsets"][1]) for k, v in header.items()
               if k != "__metadata__" and isinstance(v, dict) and "data_offsets" in v),
              default=0)
    if 8 + n + end > size:
        missing = 8 + n + end - size
        raise ValueError(f"is cut short: {missing:,} bytes of tensor data are missing "
                         "(copy it again)")
    return header


def check_model(path: str | Path) -> ModelCheck:
    """Check that ``path`` holds a loadable gpt-oss checkpoint, reading headers only.

    Checks: the folder and its ``config.json``; the model type; every weight file listed
    in ``model.safetensors.index.json`` is there, readable and complete, and holds the
    tensors the index puts in it; without an index, every ``*.safetensors`` file; the
    tokenizer. Never raises for a bad folder: the result lists the problems.
    """
    folder = Path(path).expanduser()
    check = ModelCheck(folder)
    if not folder.is_dir():
        check.problems.append(f"{folder} is not a folder")
        return check
    config_file = folder / "config.json"
    if not config_file.is_file():
        check.problems.append("config.json is missing: point at the folder that holds "
                              "config.json and the *.safetensors weights")
        return check
    try:
        config = json.loads(config_file.read_text())
    except (OSError, ValueError) as exc:
        check.problems.append(f"config.json cannot be read ({exc})")
        return check
    check.model_type = config.get("model_type")
    quant = config.get("quantization_config") or {}
    check.quantization = quant.get("quant_method") if isinstance(quant, dict) else None
    if check.model_type != "gpt_oss":
        check.notes.append(f"model_type is {check.model_type!r}, not 'gpt_oss': it may load, "
                           "but prompts are rendered in gpt-oss's harmony format")

    index_file = folder / "model.safetensors.index.json"
    wanted: dict[str, set[str]] = {}
    if index_file.is_file():
        try:
            weight_map = json.loads(index_file.read_text())["weight_map"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            check.problems.append(f"model.safetensors.index.json cannot be read ({exc})")
            return check
        for tensor, file in weight_map.items():
            wanted.setdefault(str(file), set()).add(str(tensor))
        files = [folder / name for name in sorted(wanted)]
    else:
        files = sorted(folder.glob("*.safetensors"))
        if not files:
            check.problems.append("no *.safetensors weights in the folder")
    for file in files:
        if not file.is_file():
            check.problems.append(f"{file.name} is missing (the index lists "
                                  f"{len(wanted.get(file.name, ()))} tensors in it)")
            continue
        try:
            header = _safetensors_header(file)
        except (OSError, ValueError) as exc:
            check.problems.append(f"{file.name} {exc}")
            continue
        names = set(header) - {"__metadata__"}
        absent = wanted.get(file.name, set()) - names
        if absent:
            check.problems.append(f"{file.name} lacks {len(absent)} tensor(s) that the index "
                                  f"puts there, e.g. {sorted(absent)[0]}")
        check.weight_files += 1
        check.weight_bytes += file.stat().st_size
        check.tensors += len(names)

    if not (folder / "tokenizer.json").is_file():
        check.problems.append("tokenizer.json is missing: copy it with the weights")
    return check
