"""The embedded tiny model: deterministic, exact tokenizer, built once, without torch."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from gptoss_magics import harmony as H
from gptoss_magics.tiny import MARKER, TRAINED_ARTIFACT, build_tiny, tiny_info
from gptoss_magics.tiny._weights import read_safetensors, write_trained_weights


def _expected_shapes(h: int, i: int) -> dict[str, tuple[int, ...]]:
    """GptOssForCausalLM's tensors for hidden size ``h`` and intermediate size ``i``
    (4 query and 2 key/value heads of 32, 4 experts, 2 layers)."""
    layer = {
        "input_layernorm.weight": (h,),
        "post_attention_layernorm.weight": (h,),
        "self_attn.q_proj.weight": (128, h),
        "self_attn.q_proj.bias": (128,),
        "self_attn.k_proj.weight": (64, h),
        "self_attn.k_proj.bias": (64,),
        "self_attn.v_proj.weight": (64, h),
        "self_attn.v_proj.bias": (64,),
        "self_attn.o_proj.weight": (h, 128),
        "self_attn.o_proj.bias": (h,),
        "self_attn.sinks": (4,),
        "mlp.router.weight": (4, h),
        "mlp.router.bias": (4,),
        "mlp.experts.gate_up_proj": (4, h, 2 * i),
        "mlp.experts.gate_up_proj_bias": (4, 2 * i),
        "mlp.experts.down_proj": (4, i, h),
        "mlp.experts.down_proj_bias": (4, h),
    }
    shapes = {"model.embed_tokens.weight": (H.VOCAB_SIZE, h),
              "lm_head.weight": (H.VOCAB_SIZE, h), "model.norm.weight": (h,)}
    for n in range(2):
        shapes.update({f"model.layers.{n}.{name}": shape for name, shape in layer.items()})
    return shapes


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
    assert config["transformers_version"]  # else transformers warns about the tokenizer
    assert tiny_info(tiny_path.parent) is None


def test_expanded_weights_have_full_vocabulary_rows_and_zero_unused_ones(
        tmp_path: Path) -> None:
    from safetensors import safe_open

    # what build_tiny("tiny") writes as the weights, without the tokenizer (which takes
    # most of a build's time; test_tokenizer_matches_harmony checks it)
    folder = tmp_path / "tiny"
    write_trained_weights(folder)
    assert json.loads((folder / "config.json").read_text())["vocab_size"] == H.VOCAB_SIZE
    tensors, meta = read_safetensors(folder / "model.safetensors")
    assert meta == {"format": "pt"}
    assert {k: t.array.shape for k, t in tensors.items()} == _expected_shapes(128, 128)
    assert {t.dtype for t in tensors.values()} == {"BF16"}
    with safe_open(str(folder / "model.safetensors"), "numpy") as fh:  # the real library
        assert set(fh.keys()) == set(tensors) and fh.metadata() == {"format": "pt"}
    used = read_safetensors(TRAINED_ARTIFACT)[0]["used_ids"].array
    unused = np.ones(H.VOCAB_SIZE, dtype=bool)
    unused[used] = False
    assert 500 < len(used) < 5000 and H.RETURN in used
    for key in ("model.embed_tokens.weight", "lm_head.weight"):
        rows = tensors[key].array
        assert not rows[unused].any()
        assert rows[used].any(axis=1).all()


@pytest.mark.slow
def test_building_needs_neither_torch_nor_vllm(tmp_path: Path) -> None:
    code = ("import sys; from gptoss_magics.tiny import build_tiny; "
            f"build_tiny('tiny', {str(tmp_path)!r}); build_tiny('tiny-random', {str(tmp_path)!r}); "
            "print('torch' in sys.modules, 'vllm' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                         text=True, timeout=300)
    assert out.stdout.split() == ["False", "False"], out.stderr[-2000:]
    (random_folder,) = (tmp_path / "models").glob("tiny-random-*")
    tensors, _ = read_safetensors(random_folder / "model.safetensors")
    assert {k: t.array.shape for k, t in tensors.items()} == _expected_shapes(64, 128)
    values = {k: t.array.astype(np.uint32) << 16 for k, t in tensors.items()}  # bf16 -> f32
    floats = {k: v.view(np.float32) for k, v in values.items()}
    for name, x in floats.items():
        if name.endswith("norm.weight"):
            assert (x == 1).all(), name
        elif name.endswith("bias") and ".router." not in name:
            assert not x.any(), name
        elif x.size > 1000:
            assert 0.015 < x.std() < 0.025 and abs(x.mean()) < 0.005, name
    config = json.loads((random_folder / "config.json").read_text())
    assert config["hidden_size"] == 64 and config["vocab_size"] == H.VOCAB_SIZE


def test_a_missing_or_damaged_artifact_says_what_to_do(tmp_path: Path) -> None:
    from gptoss_magics.errors import ModelFolderError, ModelNotFoundError
    from gptoss_magics.tiny import write_trained_weights
    from gptoss_magics.tiny._weights import write_safetensors

    with pytest.raises(ModelNotFoundError, match="reinstall gptoss-magics"):
        write_trained_weights(tmp_path / "out", tmp_path / "missing.safetensors")
    tensors, meta = read_safetensors(TRAINED_ARTIFACT)
    del tensors["model.norm.weight"]
    write_safetensors(tmp_path / "damaged.safetensors", tensors, meta)
    with pytest.raises(ModelFolderError, match="rerun tools/train_tiny"):
        write_trained_weights(tmp_path / "out", tmp_path / "damaged.safetensors")
