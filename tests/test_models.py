"""models.py: the weights fingerprint is a full SHA-256, remembered honestly (issue 12)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from gptoss_magics import models
from gptoss_magics.errors import ModelFolderError, ModelNotFoundError
from gptoss_magics.models import (
    Fingerprint,
    file_sha256,
    fingerprint,
    resolve_model,
    start_fingerprint,
    weights_fingerprint,
)
from gptoss_magics.settings import settings

SHARDS = {
    "model-00001-of-00002.safetensors": b"\x01" * 5000 + b"first shard",
    "model-00002-of-00002.safetensors": b"\x02" * 7000 + b"second shard",
}


@pytest.fixture(autouse=True)
def own_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh cache folder per test, so that the memo starts empty."""
    cache = tmp_path / "cache"
    monkeypatch.setattr(settings(), "cache_dir", str(cache))
    return cache


def make_folder(path: Path) -> Path:
    """A fake model folder: configs, two shards, an index, and subfolders to ignore."""
    path.mkdir(parents=True)
    (path / "config.json").write_text('{"model_type": "gpt_oss"}')
    (path / "tokenizer.json").write_text("{}")
    (path / "README.md").write_text("not part of the fingerprint")
    for name, data in SHARDS.items():
        (path / name).write_bytes(data)
    (path / "model.safetensors.index.json").write_text(
        json.dumps({"weight_map": {"a": "model-00001-of-00002.safetensors"}}))
    for sub in ("original", "metal"):
        (path / sub).mkdir()
        (path / sub / "model.safetensors").write_bytes(b"other weights")
        (path / sub / "config.json").write_text("{}")
    return path


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    return make_folder(tmp_path / "model")


@pytest.fixture
def count_hashing(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """The files whose bytes are read for hashing."""
    calls: list[Path] = []
    original = models._hash

    def counting(path, stop):  # type: ignore[no-untyped-def]
        calls.append(path)
        return original(path, stop)

    monkeypatch.setattr(models, "_hash", counting)
    return calls


def test_full_sha256_of_the_top_level_files(folder: Path) -> None:
    fp = fingerprint(folder)
    assert isinstance(fp, Fingerprint) and fp.kind == "full-sha256"
    assert sorted(fp.files) == sorted(
        ["config.json", "tokenizer.json", "model.safetensors.index.json", *SHARDS])
    for name, data in SHARDS.items():
        assert fp.files[name] == hashlib.sha256(data).hexdigest()
    assert set(fp.sources.values()) == {"hashed"}
    assert fp.bytes_hashed == sum(p.stat().st_size for p in folder.iterdir() if p.is_file()
                                  and p.name != "README.md")
    rows = sorted((n, (folder / n).stat().st_size, s) for n, s in fp.files.items())
    assert fp.value == "sha256:" + hashlib.sha256(json.dumps(rows).encode()).hexdigest()
    assert fp.to_provenance() == {"value": fp.value, "kind": "full-sha256"}
    assert weights_fingerprint(folder) == fp.value


def test_the_memo_is_used_the_second_time(folder: Path, own_cache: Path,
                                          count_hashing: list[Path]) -> None:
    first = fingerprint(folder)
    assert len(count_hashing) == 5
    memo = own_cache / "fingerprints.json"
    assert memo.stat().st_mode & 0o777 == 0o600
    second = fingerprint(folder)
    assert second.value == first.value and second.files == first.files
    assert set(second.sources.values()) == {"memo"} and second.bytes_hashed == 0
    assert len(count_hashing) == 5  # nothing read again


def test_rewriting_in_place_with_the_same_size_and_mtime_is_noticed(
        folder: Path, count_hashing: list[Path]) -> None:
    """The bug in issue 12: same path, size and mtime, other bytes, same fingerprint."""
    before = fingerprint(folder)
    shard = folder / "model-00002-of-00002.safetensors"
    st = shard.stat()
    data = bytearray(shard.read_bytes())
    data[100] ^= 0xFF
    with shard.open("r+b") as fh:
        fh.write(data)
    os.utime(shard, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert shard.stat().st_size == st.st_size and shard.stat().st_mtime_ns == st.st_mtime_ns
    after = fingerprint(folder)
    assert after.value != before.value
    assert after.sources[shard.name] == "hashed"
    assert after.files[shard.name] == hashlib.sha256(bytes(data)).hexdigest()
    assert count_hashing[-1] == shard  # only the rewritten file was read again
    assert after.sources["model-00001-of-00002.safetensors"] == "memo"


def test_a_copy_under_another_name_has_the_same_value(folder: Path, tmp_path: Path) -> None:
    copy = tmp_path / "elsewhere" / "renamed-model"
    shutil.copytree(folder, copy)
    fp = fingerprint(copy)
    assert fp.value == fingerprint(folder).value
    assert set(fp.sources.values()) == {"hashed"}  # other inodes: read, not trusted


def test_subfolders_and_other_files_are_ignored(folder: Path) -> None:
    before = fingerprint(folder).value
    for sub in ("original", "metal"):
        (folder / sub / "model.safetensors").write_bytes(b"changed")
    (folder / "README.md").write_text("changed")
    assert fingerprint(folder).value == before
    (folder / "generation_config.json").write_text("{}")
    assert fingerprint(folder).value != before


def hf_snapshot(root: Path, files: dict[str, bytes],
                blob_name: Callable[[bytes], str] | None = None) -> Path:
    """A Hugging Face cache entry: blobs named by content hash, snapshot symlinks."""
    repo = root / "models--o--n"
    (repo / "blobs").mkdir(parents=True)
    snap = repo / "snapshots" / "0123abc"
    snap.mkdir(parents=True)
    for name, data in files.items():
        blob = (blob_name or (lambda d: hashlib.sha256(d).hexdigest()))(data)
        (repo / "blobs" / blob).write_bytes(data)
        (snap / name).symlink_to(Path("..", "..", "blobs", blob))
    return snap


def test_a_hugging_face_snapshot_is_named_by_its_blobs(tmp_path: Path) -> None:
    files = {"config.json": b"{}", **SHARDS}
    snap = hf_snapshot(tmp_path / "hub", files)
    fp = fingerprint(snap)
    assert set(fp.sources.values()) == {"hf-blob-name"} and fp.bytes_hashed == 0
    plain = tmp_path / "plain"
    plain.mkdir()
    for name, data in files.items():
        (plain / name).write_bytes(data)
    assert fp.value == fingerprint(plain).value
    assert file_sha256(snap / "config.json") == hashlib.sha256(b"{}").hexdigest()


def test_a_git_sha1_blob_is_hashed(tmp_path: Path) -> None:
    snap = hf_snapshot(tmp_path / "hub", {"config.json": b'{"a": 1}'},
                       blob_name=lambda d: hashlib.sha1(d).hexdigest())
    fp = fingerprint(snap)
    assert fp.sources == {"config.json": "hashed"}
    assert fp.files["config.json"] == hashlib.sha256(b'{"a": 1}').hexdigest()


def test_a_damaged_memo_is_ignored(folder: Path, own_cache: Path) -> None:
    expected = fingerprint(folder).value
    memo = own_cache / "fingerprints.json"
    for garbage in (b"\x00\xffnot json", b"[1, 2]", b'{"version": 2, "files": [1]}',
                    b'{"version": 2, "files": {"x": 5}}'):
        memo.write_bytes(garbage)
        fp = fingerprint(folder)
        assert fp.value == expected and set(fp.sources.values()) == {"hashed"}
    assert json.loads(memo.read_text())["version"] == 2  # rewritten whole


def test_a_forged_memo_entry_is_not_believed_after_a_change(folder: Path,
                                                            own_cache: Path) -> None:
    fingerprint(folder)
    memo = own_cache / "fingerprints.json"
    data = json.loads(memo.read_text())
    data["files"] = {k: "0" * 64 for k in data["files"]}
    memo.write_text(json.dumps(data))
    assert set(fingerprint(folder).files.values()) == {"0" * 64}  # the memo is trusted...
    (folder / "config.json").write_text('{"model_type": "gpt_oss"} ')
    assert fingerprint(folder).files["config.json"] != "0" * 64  # ...until the file changes


def test_a_read_only_cache_folder_does_not_raise(folder: Path, own_cache: Path) -> None:
    expected = fingerprint(folder).value
    shutil.rmtree(own_cache)
    own_cache.mkdir(mode=0o500)
    try:
        fp = fingerprint(folder)
        assert fp.value == expected
        assert file_sha256(folder / "config.json") == fp.files["config.json"]
    finally:
        own_cache.chmod(0o700)


def test_an_unwritable_memo_does_not_raise(folder: Path, own_cache: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """The same as above where permissions have no effect (as root)."""
    def refuse(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(models.tempfile, "mkstemp", refuse)
    assert fingerprint(folder).kind == "full-sha256"
    assert not (own_cache / "fingerprints.json").exists()


def test_an_unusable_cache_folder_does_not_raise(folder: Path, own_cache: Path) -> None:
    own_cache.parent.mkdir(exist_ok=True)
    own_cache.write_text("a file where the cache folder should be")
    assert fingerprint(folder).kind == "full-sha256"


def test_start_fingerprint_gives_the_same_value(folder: Path) -> None:
    future = start_fingerprint(folder)
    fp = future.result(timeout=60)
    assert fp.value == fingerprint(folder).value


def test_a_task_stopped_before_it_starts_is_cancelled(folder: Path) -> None:
    task = models.FingerprintTask(folder)
    assert task.daemon and task.name == "gptoss-fingerprint-model"
    task.stop()
    task.start()
    task.join(timeout=60)
    assert task.future.cancelled()


def test_a_task_stopped_while_hashing_stops(folder: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    from gptoss_magics.errors import CancelledError

    monkeypatch.setattr(models, "BLOCK", 1024)
    task = models.FingerprintTask(folder)
    original = models._hash

    def stop_then_hash(path, stop):  # type: ignore[no-untyped-def]
        task.stop()
        return original(path, stop)

    monkeypatch.setattr(models, "_hash", stop_then_hash)
    task.start()
    with pytest.raises(CancelledError, match="cancelled"):
        task.future.result(timeout=60)


def test_errors_reach_the_future(tmp_path: Path) -> None:
    future = start_fingerprint(tmp_path / "missing")
    with pytest.raises(ModelFolderError, match="missing"):
        future.result(timeout=60)


def test_an_unreadable_weight_file_raises(folder: Path) -> None:
    shard = folder / "model-00001-of-00002.safetensors"
    shard.chmod(0)
    try:
        if os.access(shard, os.R_OK):
            pytest.skip("running as root: file permissions have no effect")
        with pytest.raises(ModelFolderError) as info:
            fingerprint(folder)
        message = str(info.value)
        assert shard.name in message and "\n" not in message
    finally:
        shard.chmod(0o644)


def test_a_read_error_names_the_file(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The same as above where permissions have no effect (as root)."""
    def refuse(path, stop):  # type: ignore[no-untyped-def]
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(models, "_hash", refuse)
    with pytest.raises(ModelFolderError, match="Permission denied") as info:
        fingerprint(folder)
    assert "config.json" in str(info.value) and "\n" not in str(info.value)


def test_resolve_model(folder: Path, tmp_path: Path) -> None:
    assert resolve_model(str(folder)) == (folder.resolve(), False)
    with pytest.raises(ModelNotFoundError, match=r"has no config\.json"):
        resolve_model(str(tmp_path))
    with pytest.raises(ModelNotFoundError, match="No model folder"):
        resolve_model(str(tmp_path / "nothing-here"))


@pytest.mark.engine
def test_a_real_load_names_the_full_fingerprint_in_every_answer(engine: dict) -> None:
    """After a real load, an answer's provenance names the weights by the full SHA-256 of
    their files, and says which kind of fingerprint it is."""
    import gptoss_magics as gm

    reply = gm.complete("Uppercase the word: river", effort="low", max_tokens=8, temperature=0)
    provenance = reply.provenance
    assert provenance["fingerprint_kind"] == "full-sha256"
    assert provenance["weights_fingerprint"] == fingerprint(provenance["model_path"]).value
