"""The embedded tiny model: deterministic, exact tokenizer, built once."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from gptoss_magics import harmony as H
from gptoss_magics.tiny import MARKER, build_tiny, tiny_info


def _digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.iterdir()) if p.is_file()}


def test_same_seed_gives_identical_files(tmp_path: Path, tiny_path: Path) -> None:
    again = build_tiny("tiny", cache_dir=tmp_path)
    assert again != tiny_path
    assert _digests(again) == _digests(tiny_path)
    assert {"config.json", "model.safetensors", "tokenizer.json", MARKER} <= set(_digests(again))


def test_build_is_cached(tiny_path: Path) -> None:
    stamp = (tiny_path / "model.safetensors").stat().st_mtime_ns
    assert build_tiny("tiny") == tiny_path
    assert (tiny_path / "model.safetensors").stat().st_mtime_ns == stamp


def test_tokenizer_matches_harmony(tiny_path: Path) -> None:
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tiny_path / "tokenizer.json"))
    text = ("Summarise the risks in the 10-K: revenue fell 12% (¥3.4bn); naïve café, "
            "emoji 🤖 and code `x = {a: 1}`\n\n  indented")
    assert tok.encode(text, add_special_tokens=False).ids == H.encoding().encode(text)
    special = "<|start|>assistant<|channel|>final<|message|>"
    assert tok.encode(special, add_special_tokens=False).ids == H.final_header_ids()


def test_marker_says_it_is_a_toy(tiny_path: Path) -> None:
    info = tiny_info(tiny_path)
    assert info is not None and info["kind"] in ("tiny", "tiny-random")
    assert "not a language model" in (tiny_path / "README.md").read_text()
    config = json.loads((tiny_path / "config.json").read_text())
    assert config["architectures"] == ["GptOssForCausalLM"] and config["head_dim"] >= 32
    assert tiny_info(tiny_path.parent) is None
