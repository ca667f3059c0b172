"""Loading with a weights manifest: the folder is verified before vLLM starts (a copy
that differs is refused, naming the file), and every answer's provenance (replies, maps,
the audit log, the notebook's metadata) names the manifest's digest, which ``reproduce``
checks against the loaded model's."""

from __future__ import annotations

import json
import shutil
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell

import gptoss_magics as gm
from gptoss_magics.display import metadata
from gptoss_magics.engine import ScriptedEngine
from gptoss_magics.manifest import manifest_digest, verify_manifest
from gptoss_magics.session import current, using
from gptoss_magics.settings import GptOssSettings
from gptoss_magics.tiny._weights import Tensor, write_safetensors

SHARD = "model-00000-of-00001.safetensors"
DIGEST = "sha256:" + "ab" * 32


@pytest.fixture
def weights(tmp_path: Path) -> Path:
    """A small weights folder that passes check_model, and its manifest beside it."""
    folder = tmp_path / "gpt-oss-test"
    folder.mkdir()
    data = np.random.default_rng(0).integers(0, 256, size=4096, dtype=np.uint8)
    write_safetensors(folder / SHARD, {"w": Tensor("U8", data)}, {"format": "pt"})
    (folder / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": 4096}, "weight_map": {"w": SHARD}}))
    (folder / "config.json").write_text('{"model_type": "gpt_oss"}\n')
    (folder / "tokenizer.json").write_text("{}\n")
    (tmp_path / "weights.sha256").write_text(gm.write_manifest(folder, progress=False))
    return folder


@pytest.fixture
def served(fresh_settings: GptOssSettings, tmp_path: Path) -> Iterator[ScriptedEngine]:
    """A scripted engine served as a model verified against the manifest ``DIGEST``,
    with an audit log of its own."""
    fresh_settings.cache_dir = str(tmp_path / "cache")
    fresh_settings.audit_log = str(tmp_path / "audit.jsonl")
    engine = ScriptedEngine()
    try:
        with using(engine, "scripted", manifest=DIGEST):
            yield engine
    finally:
        engine.close()


def _audit(tmp_path: Path) -> list[dict]:
    lines = (tmp_path / "audit.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


# ---------------------------------------------------------------------- verified first
def test_a_matching_folder_gives_the_manifests_digest(weights: Path) -> None:
    manifest = weights.parent / "weights.sha256"
    assert verify_manifest(weights, manifest, progress=False) == \
        manifest_digest(manifest.read_text())


def test_load_refuses_a_copy_that_differs_from_its_manifest(weights: Path) -> None:
    manifest = weights.parent / "weights.sha256"
    (weights / "tokenizer.json").write_text('{"changed": true}\n')
    (weights / "notes.txt").write_text("left over\n")
    engine = ScriptedEngine()
    with using(engine, "scripted") as session:
        with pytest.raises(gm.ModelFolderError) as info:
            gm.load(str(weights), manifest=manifest)
        assert current() is session and engine.alive  # the loaded model is untouched
    message = str(info.value)
    assert message.startswith(f"{weights} does not match the manifest {manifest}: ")
    assert "extra: notes.txt" in message and "(and 1 more: `python -m gptoss_magics " \
        f"check {weights} --manifest {manifest}` lists them)" in message
    assert "\n" not in message
    with pytest.raises(gm.ModelFolderError, match="cannot read the manifest"):
        gm.load(str(weights), manifest=weights.parent / "nowhere.sha256")


def test_a_verified_copy_goes_on_to_load(weights: Path, tmp_path: Path) -> None:
    copy = Path(shutil.copytree(weights, tmp_path / "copy"))
    engine = ScriptedEngine()
    # the check passes: the next refusal is the loaded model's
    with using(engine, "scripted"), pytest.raises(gm.EngineAlreadyLoadedError):
        gm.load(str(copy), manifest=weights.parent / "weights.sha256")


def test_the_load_magic_takes_a_manifest(weights: Path, ip: InteractiveShell) -> None:
    (weights / SHARD).write_bytes((weights / SHARD).read_bytes()[:-1] + b"\0")
    with using(ScriptedEngine(), "scripted"), pytest.raises(UsageError) as info:
        ip.run_line_magic("gptoss_load", f"{weights} --manifest "
                                         f"{weights.parent / 'weights.sha256'}")
    assert f"changed: {SHARD} (its SHA-256 differs from the manifest" in str(info.value)


# ---------------------------------------------------------------------- provenance
def test_every_answer_names_the_manifest(served: ScriptedEngine, tmp_path: Path) -> None:
    assert gm.status()["weights_manifest"] == DIGEST
    reply = gm.complete("What is 2 + 2?", max_tokens=32)
    assert reply.provenance["weights_manifest"] == DIGEST
    assert metadata(reply)["gptoss"]["weights_manifest"] == DIGEST  # saved in the notebook
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", gm.GptOssWarning)
        out = pd.DataFrame({"q": ["one", "two"]}).gptoss.map("{q}", progress=False)
    assert out.attrs["gptoss"]["weights_manifest"] == DIGEST
    records = {r["kind"]: r for r in _audit(tmp_path)}
    assert records["reply"]["provenance"]["weights_manifest"] == DIGEST
    assert records["map"]["weights_manifest"] == DIGEST


def test_without_a_manifest_provenance_says_so(scripted: ScriptedEngine) -> None:
    assert gm.status()["weights_manifest"] is None
    assert gm.complete("What is 2 + 2?").provenance["weights_manifest"] is None


def test_reproduce_checks_the_manifest(served: ScriptedEngine, tmp_path: Path) -> None:
    saved = gm.complete("What is 2 + 2?", max_tokens=32).to_dict()
    again = gm.reproduce(saved)
    assert again.identical and again.same_manifest is True
    assert "manifest" not in repr(again)
    assert _audit(tmp_path)[-1]["same_manifest"] is True
    with using(ScriptedEngine(), "scripted"):  # the same weights, loaded unverified
        again = gm.reproduce(saved)
    assert again.identical and again.same_weights and again.same_manifest is False
    assert f"weights not verified against manifest {DIGEST[:19]}" in repr(again)
    with using(ScriptedEngine(), "scripted", manifest="sha256:" + "cd" * 32):
        assert gm.reproduce(saved).same_manifest is False
    saved["provenance"]["weights_manifest"] = None  # an answer from an unverified load
    assert gm.reproduce(saved).same_manifest is None


# ---------------------------------------------------------------------- the real engine
@pytest.mark.engine
@pytest.mark.lifecycle
def test_a_real_load_with_a_manifest(tiny_path: Path, tmp_path: Path,
                                     fresh_settings: GptOssSettings) -> None:
    fresh_settings.cache_dir = str(tmp_path / "cache")
    manifest = tmp_path / "tiny.sha256"
    manifest.write_text(gm.write_manifest(tiny_path, progress=False))
    digest = manifest_digest(manifest.read_text())
    if gm.is_loaded():  # one model at a time; it stays loaded for the tests after this one
        gm.unload()
    status = gm.load(str(tiny_path), manifest=str(manifest), progress=False)
    assert status["state"] == "ready" and status["weights_manifest"] == digest
    trained = status["model"] == "tiny"  # else GPTOSS_TEST_MODEL=tiny-random: noise
    kw = {"effort": "low", "temperature": 0, "max_tokens": 64}
    reply = gm.complete("Uppercase the word: river", **kw)  # type: ignore[arg-type]
    assert reply.provenance["weights_manifest"] == digest
    assert reply.final == "RIVER" or not trained
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", gm.GptOssWarning)
        out = pd.DataFrame({"w": ["stone", "tiger"]}).gptoss.map(
            "Uppercase the word: {w}", cache=False, progress=False, **kw)
    assert list(out) == ["STONE", "TIGER"] or not trained
    assert out.attrs["gptoss"]["weights_manifest"] == digest
    again = gm.reproduce(reply)
    assert again.identical and again.same_weights and again.same_manifest is True
