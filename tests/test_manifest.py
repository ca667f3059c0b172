"""The weights manifest for the air gap: write it, copy, check the copy; every damaged,
missing or extra file is named; the command line's exit codes; Hugging Face blob names."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

import gptoss_magics as gm
from gptoss_magics.manifest import manifest_digest, read_manifest
from gptoss_magics.tiny._weights import Tensor, write_safetensors

SHARD = "model-00000-of-00001.safetensors"
BIG = 9 * 2**20  # larger than one 8 MiB read block: a hash of samples would miss the middle


@pytest.fixture
def weights(tmp_path: Path) -> Path:
    """A small weights folder in the published shape: a shard over 8 MiB, its index,
    configs, a tokenizer, and original/ and metal/ beside them."""
    folder = tmp_path / "gpt-oss-test"
    (folder / "original").mkdir(parents=True)
    (folder / "metal").mkdir()
    data = np.random.default_rng(0).integers(0, 256, size=BIG, dtype=np.uint8)
    write_safetensors(folder / SHARD, {"w": Tensor("U8", data)}, {"format": "pt"})
    (folder / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": BIG}, "weight_map": {"w": SHARD}}))
    (folder / "config.json").write_text('{"model_type": "gpt_oss"}\n')
    (folder / "tokenizer.json").write_text("{}\n")
    (folder / "original" / "model.safetensors").write_bytes(b"original weights")
    (folder / "metal" / "model.bin").write_bytes(b"metal weights")
    return folder


def _manifest(folder: Path, where: Path) -> Path:
    where.write_text(gm.write_manifest(folder))
    return where


def _copy(folder: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(folder, tmp_path / "copy"))


def _flip(path: Path, offset: int) -> None:
    with path.open("r+b") as fh:
        fh.seek(offset)
        byte = fh.read(1)
        fh.seek(offset)
        fh.write(bytes([byte[0] ^ 0xFF]))


def test_the_manifest_lists_every_file_in_sha256sum_format(weights: Path) -> None:
    text = gm.write_manifest(weights)
    files = sorted(p.relative_to(weights).as_posix() for p in weights.rglob("*") if p.is_file())
    expected = [f"{hashlib.sha256((weights / f).read_bytes()).hexdigest()}  {f}" for f in files]
    assert text.splitlines() == expected
    assert "original/model.safetensors" in text and "metal/model.bin" in text
    assert read_manifest(text) == {line[66:]: line[:64] for line in expected}
    assert manifest_digest(text) == "sha256:" + hashlib.sha256(text.encode()).hexdigest()
    if shutil.which("sha256sum"):  # the standard tool reads it too
        done = subprocess.run(["sha256sum", "--check", "--quiet", "-"], input=text, cwd=weights,
                              capture_output=True, text=True)
        assert done.returncode == 0, done.stdout + done.stderr


def test_a_clean_copy_passes(weights: Path, tmp_path: Path) -> None:
    manifest = _manifest(weights, tmp_path / "weights.sha256")
    result = gm.check_manifest(_copy(weights, tmp_path), manifest, progress=False)
    assert result.ok and result.problems == []
    assert [r.status for r in result.results] == ["ok"] * 6
    assert result.bytes_checked > BIG
    assert result.digest == manifest_digest(manifest.read_text())
    assert "matches" in repr(result)


def test_a_truncated_shard_is_named(weights: Path, tmp_path: Path) -> None:
    manifest = _manifest(weights, tmp_path / "weights.sha256")
    copy = _copy(weights, tmp_path)
    with (copy / SHARD).open("r+b") as fh:
        fh.truncate(BIG // 2)
    result = gm.check_manifest(copy, manifest, progress=False)
    assert not result.ok and result.changed == [SHARD]
    assert result.problems == [f"changed: {SHARD} (its SHA-256 differs from the manifest: "
                               "copy it again)"]


def test_one_changed_byte_in_the_middle_of_a_large_file_is_named(
        weights: Path, tmp_path: Path) -> None:
    manifest = _manifest(weights, tmp_path / "weights.sha256")
    copy = _copy(weights, tmp_path)
    gm.check_manifest(copy, manifest, progress=False)  # remembered as good ...
    _flip(copy / SHARD, (copy / SHARD).stat().st_size // 2)  # ... then changed in place
    result = gm.check_manifest(copy, manifest, progress=False)
    assert result.changed == [SHARD] and result.missing == [] and result.extra == []
    assert gm.check_model(copy).ok  # the headers alone cannot see it


def test_missing_and_extra_files_are_named(weights: Path, tmp_path: Path) -> None:
    manifest = _manifest(weights, tmp_path / "weights.sha256")
    copy = _copy(weights, tmp_path)
    (copy / "original" / "model.safetensors").unlink()
    (copy / "tokenizer.json").unlink()
    (copy / "notes.txt").write_text("left over\n")
    result = gm.check_manifest(copy, manifest, progress=False)
    assert result.missing == ["original/model.safetensors", "tokenizer.json"]
    assert result.extra == ["notes.txt"] and result.changed == []
    assert len(result.problems) == 3 and "DOES NOT MATCH" in repr(result)
    assert all(p in repr(result) for p in result.problems)


def test_a_manifest_inside_the_folder_is_not_its_own_extra(weights: Path) -> None:
    manifest = _manifest(weights, weights / "weights.sha256")
    assert "weights.sha256" not in manifest.read_text()  # written before it existed
    assert gm.check_manifest(weights, manifest, progress=False).ok


def test_a_bad_manifest_says_which_line(weights: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.sha256"
    bad.write_text(gm.write_manifest(weights) + "not a manifest line\n")
    with pytest.raises(gm.ModelFolderError, match="line 7 of the manifest"):
        gm.check_manifest(weights, bad, progress=False)
    with pytest.raises(gm.ModelFolderError, match="cannot read the manifest"):
        gm.check_manifest(weights, tmp_path / "none.sha256", progress=False)


def _main(capfd: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """The command line run in this process: exit status, standard output and error."""
    from gptoss_magics.__main__ import main

    status = main(list(args))
    out = capfd.readouterr()
    return status, out.out, out.err


def test_the_command_line_round_trip(weights: Path, tmp_path: Path,
                                     capfd: pytest.CaptureFixture[str]) -> None:
    from gptoss_magics.__main__ import main

    # standard output redirected into the folder it hashes, as `... > FOLDER/weights.sha256`
    # (the real process: test_model_check.py runs `python -m gptoss_magics check`)
    with (weights / "weights.sha256").open("w") as sink, contextlib.redirect_stdout(sink):
        assert main(["manifest", str(weights)]) == 0
    manifest = weights / "weights.sha256"
    assert manifest.read_text() == gm.write_manifest(weights, exclude=(manifest,))
    copy = _copy(weights, tmp_path)
    status, out, err = _main(capfd, "check", str(copy), "--manifest", str(manifest))
    assert status == 0, out + err
    assert "matches" in out

    _flip(copy / SHARD, BIG // 2 + 100)  # in the tensor data: the headers still read fine
    (copy / "metal" / "model.bin").unlink()
    (copy / "extra.bin").write_bytes(b"x")
    status, out, err = _main(capfd, "check", str(copy), "--manifest", str(manifest))
    assert status == 1
    lines = [line.strip() for line in out.splitlines()]
    assert any(line.startswith(f"changed: {SHARD}") for line in lines)
    assert any(line.startswith("missing: metal/model.bin") for line in lines)
    assert any(line.startswith("extra: extra.bin") for line in lines)
    assert "Traceback" not in out + err

    status, out, _ = _main(capfd, "check", str(copy), "--manifest",
                           str(tmp_path / "nowhere.sha256"))
    assert status == 1 and "cannot read the manifest" in out
    status, out, err = _main(capfd, "manifest", str(tmp_path / "nowhere"))
    assert status == 1 and not out and err.startswith("error: ")


def _hf_snapshot(root: Path, files: dict[str, tuple[bytes, str]]) -> Path:
    """A Hugging Face cache snapshot: each file a link to blobs/<name>."""
    repo = root / "models--openai--gpt-oss-test"
    snapshot = repo / "snapshots" / ("a" * 40)
    (repo / "blobs").mkdir(parents=True)
    for rel, (data, blob_name) in files.items():
        blob = repo / "blobs" / blob_name
        blob.write_bytes(data)
        link = snapshot / rel
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    return snapshot


def test_hugging_face_blob_names_are_used_when_writing_never_when_checking(
        tmp_path: Path) -> None:
    shard, config = b"s" * 1000, b'{"model_type": "gpt_oss"}'
    true_sha = hashlib.sha256(shard).hexdigest()
    named = "f" * 64  # not the content's hash: shows the name was taken without reading
    snapshot = _hf_snapshot(tmp_path, {
        SHARD: (shard, named),
        "original/model.safetensors": (b"o" * 10, hashlib.sha256(b"o" * 10).hexdigest()),
        "config.json": (config, "c" * 40),  # a small git file: named by its sha1
    })
    entries = read_manifest(gm.write_manifest(snapshot))
    assert entries == {SHARD: named, "config.json": hashlib.sha256(config).hexdigest(),
                       "original/model.safetensors": hashlib.sha256(b"o" * 10).hexdigest()}
    manifest = tmp_path / "weights.sha256"
    manifest.write_text(gm.write_manifest(snapshot))
    result = gm.check_manifest(snapshot, manifest, progress=False)  # reads every byte
    assert result.changed == [SHARD]
    assert next(r for r in result.results if r.path == SHARD).actual == true_sha
