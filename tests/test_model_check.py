"""check_model: a weights folder checked offline, from headers only, before a load."""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import gptoss_magics as gm
from gptoss_magics.model_check import check_model


@pytest.fixture
def folder(tiny_path: Path, tmp_path: Path) -> Path:
    """A copy of the tiny checkpoint, split into two shards with an index, as real
    gpt-oss folders are."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    out = tmp_path / "model"
    out.mkdir()
    for f in tiny_path.iterdir():
        if f.name != "model.safetensors":
            shutil.copy(f, out / f.name)
    with safe_open(str(tiny_path / "model.safetensors"), "pt") as fh:
        names = sorted(fh.keys())
        tensors = {n: fh.get_tensor(n) for n in names}
    half = len(names) // 2
    weight_map = {}
    for i, part in enumerate((names[:half], names[half:]), 1):
        shard = f"model-0000{i}-of-00002.safetensors"
        save_file({n: tensors[n] for n in part}, str(out / shard))
        weight_map.update({n: shard for n in part})
    (out / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    return out


def test_a_good_folder_passes(folder: Path, tiny_path: Path) -> None:
    check = check_model(folder)
    assert check.ok and check.problems == [] and check.model_type == "gpt_oss"
    assert check.weight_files == 2 and check.tensors > 10 and check.weight_bytes > 10**7
    assert "ok" in repr(check) and check_model(tiny_path).ok


def test_a_missing_shard(folder: Path) -> None:
    (folder / "model-00002-of-00002.safetensors").unlink()
    check = check_model(folder)
    assert not check.ok
    assert check.problems[0].startswith("model-00002-of-00002.safetensors is missing")


def test_a_shard_cut_short(folder: Path) -> None:
    shard = folder / "model-00001-of-00002.safetensors"
    data = shard.read_bytes()
    shard.write_bytes(data[:-1000])
    assert "is cut short: 1,000 bytes of tensor data are missing" in check_model(
        folder).problems[0]
    shard.write_bytes(b"")
    assert "is empty or cut short" in check_model(folder).problems[0]
    shard.write_bytes(b"<html>proxy error</html>" * 10)
    assert "not a safetensors file" in check_model(folder).problems[0]


def test_an_index_that_does_not_match(folder: Path) -> None:
    index = folder / "model.safetensors.index.json"
    data = json.loads(index.read_text())
    data["weight_map"]["model.layers.9.mlp.router.weight"] = "model-00001-of-00002.safetensors"
    index.write_text(json.dumps(data))
    problem = check_model(folder).problems[0]
    assert "lacks 1 tensor(s) that the index puts there" in problem
    index.write_text("{not json")
    assert "index.json cannot be read" in check_model(folder).problems[0]


def test_tokenizer_config_and_type(folder: Path, tmp_path: Path) -> None:
    (folder / "tokenizer.json").unlink()
    assert check_model(folder).problems == ["tokenizer.json is missing: copy it with the weights"]
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "model_type": "llama"}))
    assert "not 'gpt_oss'" in check_model(folder).notes[0]
    assert check_model(tmp_path / "nowhere").problems == [f"{tmp_path / 'nowhere'} is not a folder"]


def test_load_stops_at_a_bad_folder_with_one_line(folder: Path, engine: dict) -> None:
    (folder / "model-00002-of-00002.safetensors").unlink()
    (folder / "tokenizer.json").unlink()
    with pytest.raises(gm.ModelFolderError) as info:  # checked before anything else
        gm.load(str(folder))
    message = str(info.value)
    assert "\n" not in message and "model-00002-of-00002.safetensors is missing" in message
    assert "(and 1 more problem: gptoss_magics.check_model(" in message
    assert gm.status()["state"] == "ready"  # the loaded engine is untouched
    code = (f"import sys, gptoss_magics as gm\ntry:\n    gm.load({str(folder)!r})\n"
            "except gm.ModelFolderError as e:\n    print('refused:', e)\n"
            "print('vllm' in sys.modules, 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert "refused:" in out.stdout and out.stdout.strip().endswith("False False"), out.stderr


def test_the_command_line(folder: Path) -> None:
    ok = subprocess.run([sys.executable, "-m", "gptoss_magics", "check", str(folder)],
                        capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0 and ": ok - gpt_oss" in ok.stdout
    (folder / "model-00001-of-00002.safetensors").unlink()
    bad = subprocess.run([sys.executable, "-m", "gptoss_magics", "check", str(folder)],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 1 and "NOT LOADABLE" in bad.stdout
    assert "problem: model-00001-of-00002.safetensors is missing" in bad.stdout


# -- malformed folders: one problem line naming the file, never an exception -------------

ST = "model.safetensors"
INDEX = "model.safetensors.index.json"
GOOD_HEADER: dict[str, Any] = {"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                               "__metadata__": {"format": "pt"}}


def write_safetensors(path: Path, header: Any, data: int = 8, raw: bytes | None = None) -> None:
    """A safetensors file by hand: 8-byte little-endian header length, header, data."""
    body = raw if raw is not None else json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(body)) + body + b"\0" * data)


@pytest.fixture
def fake(tmp_path: Path) -> Path:
    """A small folder that passes the check: config, tokenizer, one 2-float shard."""
    out = tmp_path / "fake"
    out.mkdir()
    (out / "config.json").write_text(json.dumps({"model_type": "gpt_oss"}))
    (out / "tokenizer.json").write_text("{}")
    write_safetensors(out / ST, GOOD_HEADER)
    return out


def entry(**change: Any) -> Callable[[Path], None]:
    """Replace fields of tensor w's header entry (None deletes the field)."""
    def mutate(folder: Path) -> None:
        w = {**GOOD_HEADER["w"], **change}
        write_safetensors(folder / ST, {"w": {k: v for k, v in w.items() if v is not None}})
    return mutate


def header(value: Any = None, raw: bytes | None = None) -> Callable[[Path], None]:
    return lambda folder: write_safetensors(folder / ST, value, raw=raw)


def text(name: str, content: str) -> Callable[[Path], None]:
    return lambda folder: (folder / name).write_text(content)


def index(content: Any) -> Callable[[Path], None]:
    return text(INDEX, content if isinstance(content, str) else json.dumps(content))


BROKEN: list[tuple[str, Callable[[Path], None], str]] = [
    ("config-list", text("config.json", "[]"), "config.json is not a JSON object (it is a list)"),
    ("config-null", text("config.json", "null"), "config.json is not a JSON object (it is null)"),
    ("config-string", text("config.json", '"gpt_oss"'), "config.json is not a JSON object"),
    ("config-not-json", text("config.json", "{model_type"), "config.json cannot be read: it is "
                                                              "not valid JSON"),
    ("config-not-utf8", lambda f: (f / "config.json").write_bytes(b"\xff\xfe{"),
     "config.json cannot be read"),
    ("index-not-json", index("{not json"), f"{INDEX} cannot be read: it is not valid JSON"),
    ("index-list", index([]), f"{INDEX} is not a JSON object (it is a list)"),
    ("index-null", index(None), f"{INDEX} is not a JSON object (it is null)"),
    ("index-no-map", index({"metadata": {}}), f"{INDEX} has no weight_map"),
    ("index-map-list", index({"weight_map": [ST]}),
     f"{INDEX} has a weight_map that is not a JSON object (it is a list)"),
    ("index-map-null", index({"weight_map": None}), f"{INDEX} has a weight_map that is not"),
    ("index-file-number", index({"weight_map": {"w": 5}}),
     f"{INDEX} maps tensor 'w' to 5, not to a file name"),
    ("index-file-outside", index({"weight_map": {"w": "../other/x.safetensors"}}),
     f"{INDEX} maps tensor 'w' to '../other/x.safetensors', outside the folder"),
    ("header-list", header([]), f"{ST} has a header that is not a JSON object (it is a list)"),
    ("header-number", header(7), f"{ST} has a header that is not a JSON object"),
    ("header-not-json", header(raw=b"{\"w\": [0,"), f"{ST} has an unreadable header"),
    ("header-not-utf8", header(raw=b"\xff\xfe\xfd\xfc"), f"{ST} has an unreadable header"),
    ("header-too-long", lambda f: (f / ST).write_bytes(struct.pack("<Q", 10**6) + b"{}"),
     f"{ST} is not a safetensors file, or was cut short"),
    ("entry-number", header({"w": 5}),
     f"{ST} has a header entry for 'w' that is not a JSON object (it is a number)"),
    ("metadata-list", header({**GOOD_HEADER, "__metadata__": []}),
     f"{ST} has a __metadata__ entry that is not an object of strings"),
    ("offsets-empty", entry(data_offsets=[]), f"{ST} gives tensor 'w' data_offsets that are not"),
    ("offsets-null", entry(data_offsets=None), f"{ST} gives tensor 'w' data_offsets that are "),
    ("offsets-strings", entry(data_offsets=["0", "8"]), "data_offsets that are not [begin, end]"),
    ("offsets-reversed", entry(data_offsets=[8, 0]), "with 0 <= begin <= end ([8, 0])"),
    ("offsets-negative", entry(data_offsets=[-8, 0]), "data_offsets that are not"),
    ("offsets-beyond", entry(data_offsets=[0, 16], shape=[4]),
     f"{ST} is cut short: 8 bytes of tensor data are missing"),
    ("dtype-number", entry(dtype=32), f"{ST} gives tensor 'w' a dtype that is not a string (32)"),
    ("dtype-missing", entry(dtype=None), "a dtype that is not a string (None)"),
    ("shape-negative", entry(shape=[-2]), f"{ST} gives tensor 'w' a shape that is not a list of "
                                           "non-negative integers ([-2])"),
    ("shape-float", entry(shape=[2.0]), "a shape that is not a list of non-negative integers"),
    ("shape-bool", entry(shape=[True, 2]), "a shape that is not a list"),
    ("shape-string", entry(shape="2"), "a shape that is not a list"),
    ("shape-size", entry(shape=[3]), f"{ST} gives tensor 'w' 8 bytes, but shape [3] of F32 "
                                      "needs 12"),
]


def test_the_fake_folder_passes(fake: Path) -> None:
    check = check_model(fake)
    assert check.ok and check.tensors == 1 and check.weight_files == 1, check


@pytest.mark.parametrize("mutate, expected", [(m, e) for _, m, e in BROKEN],
                         ids=[name for name, _, _ in BROKEN])
def test_a_malformed_folder_is_one_problem(fake: Path, mutate: Callable[[Path], None],
                                           expected: str) -> None:
    mutate(fake)
    check = check_model(fake)
    assert not check.ok
    assert len(check.problems) == 1 and expected in check.problems[0], check.problems
    assert "\n" not in check.problems[0]
    if expected.startswith(("config.json", INDEX, ST)):
        assert check.problems[0].startswith(expected.split()[0])


@pytest.mark.parametrize("mutate, expected", [(m, e) for _, m, e in BROKEN],
                         ids=[name for name, _, _ in BROKEN])
def test_the_check_command_reports_it(fake: Path, mutate: Callable[[Path], None],
                                      expected: str, capsys: pytest.CaptureFixture[str]) -> None:
    from gptoss_magics.__main__ import main

    mutate(fake)
    assert main(["check", str(fake)]) == 1  # never raises
    out, err = capsys.readouterr()
    problems = [line for line in out.splitlines() if line.strip().startswith("problem:")]
    assert len(problems) == 1 and "NOT LOADABLE" in out
    assert "Traceback" not in err and "Error" not in err, err


def test_the_command_line_never_prints_a_traceback(fake: Path) -> None:
    """One real process (every malformed folder runs through ``main`` in this process
    above): nothing but the problem line, and exit status 1."""
    (mutate,) = [m for n, m, _ in BROKEN if n == "offsets-null"]
    mutate(fake)
    run = subprocess.run([sys.executable, "-m", "gptoss_magics", "check", str(fake)],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 1, run.stderr
    assert "Traceback" not in run.stderr and "Error" not in run.stderr, run.stderr
    problems = [line for line in run.stdout.splitlines() if line.strip().startswith("problem:")]
    assert len(problems) == 1, run.stdout
