"""The files passed to the python tool: checked when the tool is made, copied (or written,
for DataFrames) into a conversation's working folder when its interpreter starts."""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..errors import InvalidOptionError

_FRAME_SUFFIXES = (".csv", ".parquet", ".json")


def check_files(files: Mapping[str, Any]) -> dict[str, Any]:
    """The files to pass in, by their final names; raises for a bad name or source."""
    if not isinstance(files, Mapping):
        raise InvalidOptionError("PythonTool(files=...) takes a dict of name -> path, bytes "
                                 f"or DataFrame, not {type(files).__name__}")
    checked: dict[str, Any] = {}
    for name, source in files.items():
        parts = Path(name).parts if isinstance(name, str) else ()
        if not parts or Path(name).is_absolute() or ".." in parts:
            raise InvalidOptionError(f"PythonTool(files=...): {name!r} is not a name inside "
                                     "the working folder (use a relative name like 'data.csv')")
        if isinstance(source, (str, os.PathLike)):
            if not Path(source).exists():
                raise InvalidOptionError(f"PythonTool(files=...): {name!r} -> {source!s} does "
                                         "not exist")
        elif hasattr(source, "to_csv"):
            name = _frame_name(name)
        elif not isinstance(source, bytes):
            raise InvalidOptionError(f"PythonTool(files=...): {name!r} takes a path, bytes or "
                                     f"a DataFrame, not {type(source).__name__}")
        checked[name] = source
    return checked


def _has_parquet() -> bool:
    return any(importlib.util.find_spec(m) is not None for m in ("pyarrow", "fastparquet"))


def _frame_name(name: str) -> str:
    suffix = Path(name).suffix.lower()
    if suffix == ".parquet" and not _has_parquet():
        raise InvalidOptionError(f"PythonTool(files=...): writing {name!r} as parquet needs "
                                 "pyarrow (pip install pyarrow), or name it .csv")
    if suffix in _FRAME_SUFFIXES:
        return name
    return name + (".parquet" if _has_parquet() else ".csv")


def stage(files: Mapping[str, Any], folder: Path) -> None:
    """Copy (or write) the files into the working folder."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, source in files.items():
        target = folder / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(source, bytes):
            target.write_bytes(source)
        elif isinstance(source, (str, os.PathLike)):
            if Path(source).is_dir():
                shutil.copytree(source, target, dirs_exist_ok=True)
            else:
                shutil.copyfile(source, target)
        else:
            _write_frame(source, target)


def _write_frame(frame: Any, target: Path) -> None:
    if not hasattr(frame, "columns"):  # a Series
        frame = frame.to_frame()
    index = type(frame.index).__name__ != "RangeIndex"  # keep an index that means something
    suffix = target.suffix.lower()
    if suffix == ".parquet":
        frame.to_parquet(target, index=index)
    elif suffix == ".json":
        frame.to_json(target, orient="columns" if index else "records")
    else:
        frame.to_csv(target, index=index)


def digest(source: Any) -> str:
    """A short content hash of one file source (for cache keys)."""
    digest = hashlib.sha256()
    if isinstance(source, bytes):
        digest.update(source)
    elif isinstance(source, (str, os.PathLike)):
        path = Path(source)
        for item in sorted(path.rglob("*")) if path.is_dir() else [path]:
            if item.is_file():
                digest.update(str(item.relative_to(path) if item != path else "").encode())
                digest.update(item.read_bytes())
    else:
        import pandas as pd

        digest.update(pd.util.hash_pandas_object(source, index=True).to_numpy().tobytes())
        names = source.columns if hasattr(source, "columns") else [source.name]
        digest.update(repr(list(names)).encode())
    return digest.hexdigest()[:16]
