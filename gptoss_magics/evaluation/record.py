"""The evaluation record: one self-contained JSON document a reviewer can file.

It holds the data (the template's fields and the expected value of every row, with their
SHA-256), the template, each setting's resolved options and worked examples, the metric,
every row's outcome, each setting's figures and the provenance (model, weights
fingerprint, vLLM version, device, seeds). :func:`setting_mapper` rebuilds, from a
record, the map that made a setting, so that it can be run again.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import pandas as pd

from .. import harmony
from .. import template as tmpl
from ..errors import InvalidOptionError, StorageError
from ..frame.mapper import MapSpec, RowMapper
from ..options import Options
from .stats import json_safe

KIND = "gptoss-evaluation"
FORMAT = 1


def options_record(opts: Options) -> dict[str, Any]:
    """The resolved prompt options as plain data (enough to resolve them again)."""
    c = opts.constraint
    return {"effort": opts.effort, "max_tokens": opts.max_tokens,
            "temperature": opts.temperature, "top_p": opts.top_p, "seed": opts.seed,
            "instructions": opts.instructions, "current_date": opts.current_date,
            "knowledge_cutoff": opts.knowledge_cutoff,
            "reasoning_budget": opts.reasoning_budget, "confidence": opts.confidence,
            "choices": list(c.choices) if c.choices else None, "regex": c.regex,
            "schema": c.schema}


def options_from_record(data: Any) -> Options:
    """The options a record holds, checked as a call's options are."""
    if not isinstance(data, Mapping):
        raise InvalidOptionError("the record's setting has no options to run it again with")
    keys = ("effort", "max_tokens", "temperature", "top_p", "seed", "instructions",
            "reasoning_budget", "confidence", "choices", "regex", "schema")
    opts = Options.resolve(**{k: data[k] for k in keys if k in data})
    for key in ("current_date", "knowledge_cutoff"):
        if not isinstance(data.get(key), (str, type(None))):
            raise InvalidOptionError(f"the recorded {key} must be a string, not "
                                     f"{data.get(key)!r:.40}")
    return replace(opts, current_date=data.get("current_date"),
                   knowledge_cutoff=data.get("knowledge_cutoff") or opts.knowledge_cutoff)


def data_block(frame: pd.DataFrame, fields: Sequence[str], expected: Sequence[Any]
               ) -> dict[str, Any]:
    """The rows as the record keeps them (label, field values, expected) and their hash."""
    rows = [{"row": json_safe(label), "values": {f: json_safe(v) for f, v in
                                                 zip(fields, values, strict=True)},
             "expected": json_safe(e)}
            for label, values, e in zip(frame.index,
                                        frame[list(fields)].itertuples(index=False, name=None),
                                        expected, strict=True)]
    return {"sha256": data_hash(rows), "fields": list(fields), "rows": rows}


def data_hash(rows: Any) -> str:
    """The SHA-256 of the rows' canonical JSON."""
    blob = json.dumps(rows, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return "sha256:" + hashlib.sha256(blob.encode()).hexdigest()


def frame_of(block: Any) -> tuple[pd.DataFrame, list[Any]]:
    """The rows of a record's data block as a DataFrame, and the expected values."""
    if not isinstance(block, Mapping) or not isinstance(block.get("rows"), list) or \
            not isinstance(block.get("fields"), list):
        raise InvalidOptionError("the evaluation record has no data rows to run again")
    rows = block["rows"]
    if any(not isinstance(r, Mapping) or not isinstance(r.get("values"), Mapping)
           for r in rows):
        raise InvalidOptionError("the evaluation record's data rows are damaged")
    # object columns: a whole number stays one next to a missing value
    frame = pd.DataFrame([dict(r["values"]) for r in rows], columns=block["fields"],
                         index=[r.get("row") for r in rows], dtype=object)
    return frame, [r.get("expected") for r in rows]


def questions_of(block: Mapping[str, Any], template: str) -> list[str]:
    """Each row's prompt, rendered from the record (for the judge)."""
    frame, _ = frame_of(block)
    out = []
    for values in frame.itertuples(index=False, name=None):
        row = dict(zip(frame.columns, values, strict=True))
        try:
            out.append(tmpl.render(template, tmpl.namespace_lookup(row)))
        except Exception:  # a row with missing values is not sent; the judge sees its data
            out.append(json.dumps(row, default=str))
    return out


def setting_mapper(record: Mapping[str, Any], setting: Mapping[str, Any]) -> RowMapper:
    """A map that makes ``setting`` of ``record`` again (cache off, no progress bar)."""
    frame, _ = frame_of(record.get("data"))
    template = record.get("template")
    if not isinstance(template, str):
        raise InvalidOptionError("the evaluation record has no template")
    examples = setting.get("examples") or []
    if not isinstance(examples, list) or not all(
            isinstance(t, list) and len(t) == 2 and all(isinstance(x, str) for x in t)
            for t in examples):
        raise InvalidOptionError("the recorded examples must be [question, answer] pairs")
    spec = MapSpec(examples=tuple(harmony.Turn(u, f) for u, f in examples), cache=False,
                   progress=False)
    mapper = RowMapper(frame, template, options_from_record(setting.get("options")), spec,
                       quiet=True)
    return mapper


def write(record: Mapping[str, Any], path: str | os.PathLike[str]) -> Path:
    """Write ``record`` as JSON to ``path`` (StorageError when it cannot be written)."""
    target = Path(path).expanduser()
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(target.name + ".tmp")
        tmp.write_text(json.dumps(record, indent=1, ensure_ascii=False, allow_nan=False,
                                  default=str) + "\n")
        tmp.replace(target)
    except OSError as exc:
        raise StorageError(f"cannot write the evaluation record to {target}: "
                           f"{exc.strerror or exc}") from None
    return target


def read(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The record saved at ``path`` (InvalidOptionError when it is not one)."""
    source = Path(path).expanduser()
    try:
        data = json.loads(source.read_text())
    except OSError as exc:
        raise InvalidOptionError(f"cannot read the evaluation record {source}: "
                                 f"{exc.strerror or exc}") from None
    except ValueError:
        raise InvalidOptionError(f"{source} is not JSON: not an evaluation record") from None
    check(data)
    return dict(data)


def check(data: Any) -> None:
    """Refuse what is not an evaluation record of a format this version reads."""
    if not isinstance(data, Mapping) or data.get("kind") != KIND:
        raise InvalidOptionError("this is not an evaluation record (result.save(path) writes "
                                 "one)")
    if data.get("format") != FORMAT:
        raise InvalidOptionError(f"evaluation record format {data.get('format')!r} is not "
                                 f"{FORMAT}: upgrade gptoss-magics to read it")
    if not isinstance(data.get("settings"), list) or not data["settings"]:
        raise InvalidOptionError("the evaluation record has no settings")
