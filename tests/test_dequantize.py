"""The CPU route for MXFP4 checkpoints: ``python -m gptoss_magics dequantize SRC DST``
decodes the published MXFP4 expert weights exactly into the bf16 layout vLLM's gpt_oss
loader reads (the tiny models' layout), streaming, without torch; refuses a non-empty
destination and a disk too small before writing anything; and the copy loads and maps
through ``gm.load`` on this CPU."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

import gptoss_magics as gm
from gptoss_magics import dequantize as dq
from gptoss_magics import models
from gptoss_magics.__main__ import main
from gptoss_magics.dequantize import dequantize_mxfp4, plan_dequantize
from gptoss_magics.errors import StorageError, UnsupportedHardwareError
from gptoss_magics.models import check_runnable, dequantize_command, fingerprint
from gptoss_magics.mxfp4 import E2M1, mxfp4_to_bf16
from gptoss_magics.tiny._weights import param_shapes, read_header, read_safetensors, to_bf16
from gptoss_magics.tiny.mxfp4 import MXFP4_ARCH, write_mxfp4_weights

SHARDS = [f"model-0000{i}-of-00002.safetensors" for i in range(3)]
EXPERTS = ("mlp.experts.gate_up_proj", "mlp.experts.down_proj")


# ---------------------------------------------------------------------- a reference
def _reference(blocks: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """The format's definition, element by element in float64: two codes a byte, the low
    nibble first; E2M1 value, negated when the code has 0x8; times 2**(scale - 127)."""
    codes = np.stack([blocks & 0x0F, blocks >> 4], axis=-1).reshape(*scales.shape, 32)
    magnitude = np.array(E2M1)[codes & 0x7]
    sign = np.where(codes & 0x8, -1.0, 1.0)
    values = sign * magnitude * 2.0 ** (scales.astype(np.float64)[..., None] - 127)
    return values.reshape(*scales.shape[:-1], -1)


def _floats(bits: np.ndarray) -> np.ndarray:
    """bf16 bits as float32 values."""
    return (bits.astype(np.uint32) << 16).view(np.float32)


def _quantize(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pack values that MXFP4 holds exactly (a code's value times its block's power of
    two) into blocks and scales, as the published checkpoints store them."""
    rows, cols = values.shape
    blocks_of = values.reshape(rows, cols // 32, 32)
    scale = np.log2(np.abs(blocks_of).max(axis=-1) / 6.0).astype(np.int64)  # 6 = E2M1 max
    scaled = blocks_of / 2.0 ** scale[..., None]
    table = np.array(E2M1)
    codes = np.abs(scaled)[..., None] == table
    assert codes.any(axis=-1).all(), "values that MXFP4 cannot hold exactly"
    code = codes.argmax(axis=-1) | np.where(np.signbit(scaled), 0x8, 0)
    packed = (code[..., 0::2] | (code[..., 1::2] << 4)).astype(np.uint8)
    return packed, (scale + 127).astype(np.uint8)


def test_the_decoding_follows_the_format() -> None:
    # one block by hand: byte 0x21 holds 0.5 (low nibble 1) then 1.0 (high nibble 2);
    # 0x9F holds -6 then -0.5; 0x00 two zeros; scale 128 doubles, 126 halves
    blocks = np.zeros((3, 1, 16), np.uint8)  # three rows of one block
    blocks[:, 0, 0], blocks[:, 0, 1] = 0x21, 0x9F
    scales = np.array([[127], [128], [126]], np.uint8)
    got = _floats(mxfp4_to_bf16(blocks, scales))
    assert got.shape == (3, 32)
    assert got[:, :4].tolist() == [[0.5, 1.0, -6.0, -0.5], [1.0, 2.0, -12.0, -1.0],
                                   [0.25, 0.5, -3.0, -0.25]]
    assert not got[:, 4:].any()
    # every byte at every scale, against the definition (bits: -0.0 stays -0.0)
    rng = np.random.default_rng(1)
    blocks = rng.integers(0, 256, size=(256, 4, 16), dtype=np.uint8)
    blocks[:, 0] = np.arange(256, dtype=np.uint8)[:, None]
    scales = (np.arange(256 * 4) % 256).astype(np.uint8).reshape(256, 4)  # 255: overflows
    with np.errstate(over="ignore"):
        expected = to_bf16(_reference(blocks, scales).astype(np.float32))
    assert np.array_equal(mxfp4_to_bf16(blocks, scales), expected)
    with pytest.raises(ValueError, match="do not match"):
        mxfp4_to_bf16(blocks, scales[:, :3])


def test_quantized_values_come_back_exactly() -> None:
    rng = np.random.default_rng(2)
    codes = rng.choice(np.array(E2M1 + tuple(-v for v in E2M1)), size=(6, 4, 32))
    codes[..., 0] = rng.choice([6.0, -6.0], size=(6, 4))  # each block reaches its scale
    values = (codes * 2.0 ** rng.integers(-12, 4, size=(6, 4, 1))).reshape(6, 128)
    blocks, scales = _quantize(values)
    assert np.array_equal(_floats(mxfp4_to_bf16(blocks, scales)), values.astype(np.float32))


# ---------------------------------------------------------------------- a checkpoint
@pytest.fixture
def source(tmp_path: Path) -> Path:
    """The MXFP4 test model's weights and configs (the builder's own code), a tokenizer
    stub, and the published repository's extras beside them."""
    folder = tmp_path / "gpt-oss-mini"
    write_mxfp4_weights(folder, MXFP4_ARCH, 0)
    (folder / "tokenizer.json").write_text('{"stub": true}\n')
    (folder / "LICENSE").write_text("Apache-2.0\n")
    (folder / "README.md").write_text("# the source's own README\n")
    (folder / "original").mkdir()
    (folder / "original" / "model.safetensors").write_bytes(b"not loaded")
    return folder


def _tensors(folder: Path, files: list[str]) -> dict[str, Any]:
    out = {}
    for name in files:
        tensors, _ = read_safetensors(folder / name)
        out.update(tensors)
    return out


def test_the_copy_has_the_bf16_layout_and_the_exact_values(source: Path,
                                                           tmp_path: Path) -> None:
    dst = tmp_path / "bf16"
    result = dequantize_mxfp4(source, dst, progress=False)
    assert result.folder == dst and repr(result).startswith(f"{dst}: bf16 checkpoint, 37 ")
    before, after = _tensors(source, SHARDS), _tensors(dst, SHARDS)
    # exactly the names and shapes the bf16 tiny models have, which vLLM's loader reads
    assert {k: tuple(t.array.shape) for k, t in after.items()} == param_shapes(MXFP4_ARCH)
    assert {t.dtype for t in after.values()} == {"BF16"}
    for name, tensor in after.items():
        if name.endswith(EXPERTS):
            blocks, scales = before[name + "_blocks"].array, before[name + "_scales"].array
            want = to_bf16(_reference(blocks, scales).astype(np.float32)).swapaxes(1, 2)
            assert np.array_equal(tensor.array, want), name  # [E, cols, rows]
            assert tensor.array.any()
        else:
            assert tensor.array.tobytes() == before[name].array.tobytes(), name
    index = json.loads((dst / "model.safetensors.index.json").read_text())
    assert index["metadata"]["total_size"] == sum(t.array.nbytes for t in after.values())
    assert sorted(index["weight_map"]) == sorted(after)
    for name, file in index["weight_map"].items():
        assert name in read_safetensors(dst / file)[0]


def test_the_files_are_safetensors_with_bf16_entries(source: Path, tmp_path: Path) -> None:
    dequantize_mxfp4(source, tmp_path / "bf16", progress=False)
    for name in SHARDS:
        data = (tmp_path / "bf16" / name).read_bytes()
        (length,) = struct.unpack("<Q", data[:8])
        assert length % 8 == 0
        header, start = read_header(data)
        assert start == 8 + length and header.pop("__metadata__") == {"format": "pt"}
        end = 0
        for entry in sorted(header.values(), key=lambda e: e["data_offsets"]):
            assert entry["dtype"] == "BF16" and entry["data_offsets"][0] == end
            end = entry["data_offsets"][1]
            assert end - entry["data_offsets"][0] == 2 * int(np.prod(entry["shape"]))
        assert len(data) == start + end


def test_configs_and_files_beside_the_weights(source: Path, tmp_path: Path) -> None:
    dst = tmp_path / "bf16"
    dst.mkdir()  # an empty folder is fine
    dequantize_mxfp4(source, dst, progress=False)
    config = json.loads((dst / "config.json").read_text())
    original = json.loads((source / "config.json").read_text())
    assert "quantization_config" not in config and config.pop("dtype") == "bfloat16"
    del original["quantization_config"]
    assert config == original
    assert models.quant_method(dst) is None and gm.check_model(dst).ok
    for name in ("tokenizer.json", "generation_config.json", "LICENSE"):
        assert (dst / name).read_bytes() == (source / name).read_bytes()
    assert (dst / "README.source.md").read_text() == "# the source's own README\n"
    assert not (dst / "original").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no partial left
    readme = (dst / "README.md").read_text()
    assert f"source folder: `{source}`" in readme
    assert f"source weights fingerprint: `{fingerprint(source).value}`" in readme
    check_runnable(dst)  # bf16: runs on any machine


def test_a_manifest_is_verified_first_and_named(source: Path, tmp_path: Path) -> None:
    manifest = tmp_path / "weights.sha256"
    manifest.write_text(gm.write_manifest(source, progress=False))
    result = dequantize_mxfp4(source, tmp_path / "bf16", manifest=manifest, progress=False)
    digest = gm.check_manifest(source, manifest, progress=False).digest
    assert result.source_manifest == digest
    assert f"weights manifest, digest `{digest}`" in (tmp_path / "bf16" / "README.md").read_text()
    (source / "LICENSE").write_text("changed\n")
    with pytest.raises(gm.ModelFolderError, match="changed: LICENSE"):
        dequantize_mxfp4(source, tmp_path / "again", manifest=manifest, progress=False)
    assert not (tmp_path / "again").exists()


# ---------------------------------------------------------------------- refusals
def test_a_non_empty_destination_is_never_overwritten(source: Path, tmp_path: Path) -> None:
    dst = tmp_path / "bf16"
    dst.mkdir()
    (dst / "notes.txt").write_text("mine\n")
    with pytest.raises(StorageError, match=r"bf16 is not empty: give a new or empty folder"):
        dequantize_mxfp4(source, dst, progress=False)
    assert [p.name for p in dst.iterdir()] == ["notes.txt"]
    with pytest.raises(StorageError, match="is inside the source folder"):
        plan_dequantize(source, source / "bf16")
    file = tmp_path / "a-file"
    file.write_text("x")
    with pytest.raises(StorageError, match="is not empty"):
        plan_dequantize(source, file)


def test_the_disk_space_is_checked_before_anything_is_written(
        source: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    plan = plan_dequantize(source, tmp_path / "bf16")
    weights = sum(2 * int(np.prod(shape)) for shape in param_shapes(MXFP4_ARCH).values())
    assert plan.weight_bytes == weights and plan.needed_bytes > weights
    assert plan.free_bytes > 0 and not (tmp_path / "bf16").exists()
    assert repr(plan) == (
        f"{source}: MXFP4, 3 weight file(s), {plan.source_bytes / 2**30:.2f} GiB -> "
        f"{tmp_path / 'bf16'}: bf16, {plan.needed_bytes / 2**30:.2f} GiB needed, "
        f"{plan.free_bytes / 2**30:.2f} GiB free there")
    monkeypatch.setattr(dq, "_free_bytes", lambda folder: plan.needed_bytes - 1)
    with pytest.raises(StorageError) as info:
        dequantize_mxfp4(source, tmp_path / "bf16", progress=False)
    assert str(info.value) == (
        f"{tmp_path / 'bf16'}: the bf16 copy needs {plan.needed_bytes / 2**30:.2f} GiB and "
        f"that disk has {(plan.needed_bytes - 1) / 2**30:.2f} GiB free: free some space or "
        "give a folder on another disk")
    assert sorted(p.name for p in tmp_path.iterdir()) == [source.name]
    assert main(["dequantize", str(source), str(tmp_path / "bf16")]) == 1
    out, err = capsys.readouterr()
    assert out == "" and err.startswith("error: ") and "GiB free" in err


def test_only_a_complete_mxfp4_checkpoint_is_converted(source: Path, tmp_path: Path) -> None:
    config = json.loads((source / "config.json").read_text())
    shard = source / SHARDS[2]
    shard.write_bytes(shard.read_bytes()[:-10])
    with pytest.raises(gm.ModelFolderError, match=f"cannot be dequantized: {SHARDS[2]} is cut"):
        plan_dequantize(source, tmp_path / "bf16")
    del config["quantization_config"]
    (source / "config.json").write_text(json.dumps(config))
    with pytest.raises(gm.ModelFolderError, match="has no MXFP4 weights"):
        plan_dequantize(source, tmp_path / "bf16")


def test_a_failure_half_way_leaves_nothing(source: Path, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(plan: Any, work: Path) -> None:
        raise OSError("disk went away")

    monkeypatch.setattr(dq, "_write_configs", broken)
    with pytest.raises(OSError, match="disk went away"):
        dequantize_mxfp4(source, tmp_path / "bf16", progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == [source.name]


def test_the_refusal_on_this_cpu_names_the_command(source: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(models, "mxfp4_kernel", lambda: None)
    with pytest.raises(UnsupportedHardwareError) as info:
        check_runnable(source)
    message = str(info.value)
    assert f"(`python -m gptoss_magics dequantize {source} {source}-bf16`, about 3x the " \
        "disk) and load that folder" in message and "\n" not in message
    with pytest.raises(UnsupportedHardwareError, match=r"^tiny-mxfp4 has MXFP4 .*\(`python "
                       r"-m gptoss_magics dequantize tiny-mxfp4 tiny-mxfp4-bf16`, about 3x"):
        check_runnable(source, "tiny-mxfp4")  # by name: the copy goes to the current folder
    command = "python -m gptoss_magics dequantize "
    snapshot = "/hub/models--openai--gpt-oss-20b/snapshots/abc123"
    assert dequantize_command(snapshot) == f"{command}{snapshot} gpt-oss-20b-bf16"
    spaced = source.rename(source.with_name("my models"))
    assert dequantize_command(str(spaced)) == f"{command}'{spaced}' '{spaced}-bf16'"


def test_the_command_prints_the_plan_then_what_it_wrote(
        source: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["dequantize", str(source), str(tmp_path / "bf16")]) == 0
    plan, done = capsys.readouterr().out.splitlines()
    assert plan.startswith(f"{source}: MXFP4, 3 weight file(s), ") and "GiB free there" in plan
    assert done.startswith(f"{tmp_path / 'bf16'}: bf16 checkpoint, 37 tensors in 3 file(s)")
    assert done.endswith(f"load it with gm.load({str(tmp_path / 'bf16')!r})")


# ---------------------------------------------------------------------- against transformers
@pytest.mark.slow
def test_the_decoding_matches_transformers(source: Path, tmp_path: Path) -> None:
    """transformers' own MXFP4 dequantization (what it runs on a CPU) gives the same
    bf16 expert tensors, in the same [E, cols, rows] layout."""
    torch = pytest.importorskip("torch")
    mxfp4 = pytest.importorskip("transformers.integrations.mxfp4")
    dequantize_mxfp4(source, tmp_path / "bf16", progress=False)
    before, after = _tensors(source, SHARDS), _tensors(tmp_path / "bf16", SHARDS)
    for name in (f"model.layers.{i}.{e}" for i in range(2) for e in EXPERTS):
        theirs = mxfp4.convert_moe_packed_tensors(
            torch.from_numpy(before[name + "_blocks"].array.copy()),
            torch.from_numpy(before[name + "_scales"].array.copy()), dtype=torch.bfloat16)
        ours = torch.from_numpy(after[name].array.astype(np.int16)).view(torch.bfloat16)
        assert torch.equal(theirs, ours), name


# ---------------------------------------------------------------------- the real engine
@pytest.mark.engine
@pytest.mark.lifecycle
def test_the_readme_path_on_this_cpu(tiny_path: Path, tmp_path: Path) -> None:
    """Build tiny-mxfp4, dequantize it with the command, load the copy, map a frame;
    then the shared engine's model is loaded again for the tests after this one."""
    from gptoss_magics.tiny.mxfp4 import build_mxfp4

    source, dst = build_mxfp4(), tmp_path / "tiny-mxfp4-bf16"
    done = subprocess.run([sys.executable, "-m", "gptoss_magics", "dequantize", str(source),
                           str(dst)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1].startswith(f"{dst}: bf16 checkpoint, 37 tensors")
    if gm.is_loaded():  # one model at a time
        gm.unload()
    try:
        status = gm.load(str(dst), progress=False)
        assert status["state"] == "ready" and status["model"] == "tiny-mxfp4-bf16"
        assert "noise" in (status.get("notice") or "")  # still a toy, and says so
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", gm.GptOssWarning)  # noise runs to max_tokens
            out = pd.DataFrame({"w": ["stone", "tiger", "river", "cloud"]}).gptoss.map(
                "Uppercase the word: {w}", max_tokens=8, cache=False, progress=False)
        attrs = out.attrs["gptoss"]
        assert len(out) == 4 and list(out.index) == [0, 1, 2, 3]
        assert attrs["summary"]["rows"] == 4 and attrs["summary"]["completion_tokens"] > 0
        assert attrs["model_path"] == str(dst) and attrs["model"] == "tiny-mxfp4-bf16"
        assert attrs["dtype"] in ("bfloat16", "torch.bfloat16")
    finally:
        if gm.is_loaded():
            gm.unload()
        gm.load(os.environ.get("GPTOSS_TEST_MODEL", "tiny"), progress=False)
