"""check_model: a weights folder checked offline, from headers only, before a load."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

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
