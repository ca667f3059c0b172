"""The MXFP4 test model: the published gpt-oss layout, read right by check_model, the
fingerprint and the fit planner, loaded through the README's own path where vLLM has an
MXFP4 kernel (a GPU, or a CPU with AMX), and refused at once, before vLLM is imported,
where it has none."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import pytest

import gptoss_magics as gm
from gptoss_magics import models
from gptoss_magics.errors import UnsupportedHardwareError
from gptoss_magics.fit import Architecture, count_parameters, estimate_weight_bytes
from gptoss_magics.models import check_runnable, fingerprint, mxfp4_kernel, resolve_model
from gptoss_magics.tiny import build_tiny
from gptoss_magics.tiny._weights import read_header, read_safetensors
from gptoss_magics.tiny.mxfp4 import (
    MXFP4_ARCH,
    PUBLISHED_CONFIG,
    build_mxfp4,
    mxfp4_config,
    write_mxfp4_weights,
)

SHARDS = [f"model-0000{i}-of-00002.safetensors" for i in range(3)]
DATA = Path(__file__).resolve().parent / "data"


@pytest.fixture(scope="module")
def mxfp4(tiny_path: Path) -> Path:
    """The MXFP4 test model, built once (its tokenizer copied from the tiny model's)."""
    return build_mxfp4()


def _headers(folder: Path) -> dict[str, dict[str, Any]]:
    out = {}
    for name in SHARDS:
        header, _ = read_header((folder / name).read_bytes())
        header.pop("__metadata__")
        out.update(header)
    return out


def test_the_folder_has_the_published_layout(mxfp4: Path, tiny_path: Path) -> None:
    top = sorted(p.name for p in mxfp4.iterdir())
    assert set(SHARDS) | {"model.safetensors.index.json", "config.json",
                          "generation_config.json", "tokenizer.json", "original",
                          "metal"} <= set(top)
    assert sorted(p.name for p in (mxfp4 / "original").iterdir()) == \
        ["config.json", "dtypes.json", "model.safetensors"]
    assert [p.name for p in (mxfp4 / "metal").iterdir()] == ["model.bin"]
    assert sum(p.stat().st_size for p in mxfp4.rglob("*") if p.is_file()) < 100 * 2**20
    for name in ("tokenizer.json", "tokenizer_config.json"):  # the tiny models' tokenizer
        assert (mxfp4 / name).read_bytes() == (tiny_path / name).read_bytes()


def test_the_config_has_the_published_keys(mxfp4: Path) -> None:
    config = json.loads((mxfp4 / "config.json").read_text())
    published = json.loads((DATA / "gpt-oss-20b" / "config.json").read_text())
    assert set(config) == set(published)
    for key, value in PUBLISHED_CONFIG.items():
        assert config[key] == published[key] == value, key
    assert config["quantization_config"] == {
        "quant_method": "mxfp4", "modules_to_not_convert": [
            "model.layers.*.self_attn", "model.layers.*.mlp.router", "model.embed_tokens",
            "lm_head"]}
    assert config["layer_types"] == ["sliding_attention", "full_attention"]
    assert config["experts_per_token"] == config["num_experts_per_tok"] == 2
    assert config["rope_scaling"]["rope_type"] == "yarn" and config["sliding_window"] == 128
    assert config["swiglu_limit"] == 7.0 and config["attention_bias"] is True


def test_the_index_and_the_tensors(mxfp4: Path) -> None:
    index = json.loads((mxfp4 / "model.safetensors.index.json").read_text())
    headers = _headers(mxfp4)
    assert sorted(set(index["weight_map"].values())) == SHARDS
    assert set(index["weight_map"]) == set(headers)
    sizes = {k: v["data_offsets"][1] - v["data_offsets"][0] for k, v in headers.items()}
    assert index["metadata"]["total_size"] == sum(sizes.values())
    e, h, i = (MXFP4_ARCH[k] for k in ("num_local_experts", "hidden_size", "intermediate_size"))
    layer = "model.layers.0.mlp.experts."
    expected = {"gate_up_proj_blocks": ("U8", [e, 2 * i, h // 32, 16]),
                "gate_up_proj_scales": ("U8", [e, 2 * i, h // 32]),
                "gate_up_proj_bias": ("BF16", [e, 2 * i]),
                "down_proj_blocks": ("U8", [e, h, i // 32, 16]),
                "down_proj_scales": ("U8", [e, h, i // 32]),
                "down_proj_bias": ("BF16", [e, h])}
    for name, (dtype, shape) in expected.items():
        assert (headers[layer + name]["dtype"], headers[layer + name]["shape"]) == (dtype, shape)
    others = [k for k in headers if "_blocks" not in k and "_scales" not in k]
    assert {headers[k]["dtype"] for k in others} == {"BF16"}
    assert headers["model.layers.0.self_attn.sinks"]["shape"] == [4]
    tensors, meta = read_safetensors(mxfp4 / SHARDS[0])
    scales = tensors[layer + "down_proj_scales"].array
    assert meta == {"format": "pt"} and scales.min() >= 119 and scales.max() <= 121  # E8M0


def test_the_weights_are_deterministic(tmp_path: Path) -> None:
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        write_mxfp4_weights(tmp_path / name, MXFP4_ARCH, seed)
    same = [(tmp_path / n / SHARDS[0]).read_bytes() for n in "abc"]
    assert same[0] == same[1] != same[2]
    assert (tmp_path / "a" / "config.json").read_text() == \
        (tmp_path / "c" / "config.json").read_text()


def test_the_name_tiny_mxfp4_builds_it(mxfp4: Path) -> None:
    assert build_tiny("tiny-mxfp4") == mxfp4
    assert resolve_model("tiny-mxfp4") == (mxfp4, True)


def test_check_model_reads_it_and_ignores_original_and_metal(mxfp4: Path,
                                                              tmp_path: Path) -> None:
    result = gm.check_model(mxfp4)
    assert result.ok, result
    assert (result.quantization, result.weight_files) == ("mxfp4", 3)
    assert result.weight_bytes == sum((mxfp4 / s).stat().st_size for s in SHARDS)
    assert result.tensors == len(_headers(mxfp4))
    copy = Path(shutil.copytree(mxfp4, tmp_path / "copy"))
    (copy / "original" / "model.safetensors").write_bytes(b"not safetensors")
    (copy / "metal" / "model.bin").unlink()
    assert gm.check_model(copy).ok


def test_the_fingerprint_ignores_original_and_metal(mxfp4: Path, tmp_path: Path) -> None:
    copy = Path(shutil.copytree(mxfp4, tmp_path / "copy"))
    before = fingerprint(copy)
    assert not any("/" in name for name in before.files)
    assert set(SHARDS) | {"config.json", "model.safetensors.index.json"} <= set(before.files)
    (copy / "original" / "model.safetensors").write_bytes(b"changed")
    (copy / "metal" / "model.bin").write_bytes(b"changed")
    assert fingerprint(copy).value == before.value
    data = (copy / SHARDS[1]).read_bytes()
    (copy / SHARDS[1]).write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    assert fingerprint(copy).value != before.value


def test_the_fit_planner_reads_it(mxfp4: Path, tmp_path: Path) -> None:
    arch = Architecture.from_config(json.loads((mxfp4 / "config.json").read_text()))
    total = json.loads((mxfp4 / "model.safetensors.index.json").read_text())[
        "metadata"]["total_size"]
    plan = gm.plan_fit(mxfp4, gpu_memory_gib=4)
    assert (plan.weight_bytes, plan.weight_source) == (total, "safetensors headers (3 files)")
    assert estimate_weight_bytes(arch) == total  # 4.25 bits per expert weight, exactly
    assert (plan.params_total, plan.params_active) == count_parameters(arch)[:2]
    assert (arch.mxfp4, arch.experts, arch.top_k, arch.sliding_layers) == (True, 4, 2, 1)
    assert plan.notes == [] and plan.fits
    (tmp_path / "config.json").write_bytes((mxfp4 / "config.json").read_bytes())
    assert gm.plan_fit(tmp_path).weight_bytes == total  # from the config alone
    shutil.copy(mxfp4 / "model.safetensors.index.json", tmp_path)
    assert (gm.plan_fit(tmp_path).weight_source, gm.plan_fit(tmp_path).weight_bytes) == \
        ("index total_size", total)


# ---------------------------------------------------------------------- can it run here?
@pytest.fixture
def hardware(monkeypatch: pytest.MonkeyPatch) -> Any:
    """Set what the package's own probe sees: ``hardware(gpu=..., flags=...)``."""
    def set_(gpu: bool = False, flags: tuple[str, ...] = ("fpu", "avx512f")) -> None:
        monkeypatch.setattr(models, "_has_gpu", lambda: gpu)
        monkeypatch.setattr(models, "_cpu_flags", lambda: set(flags))
    return set_


def _folder(tmp_path: Path, config: dict[str, Any]) -> Path:
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "config.json").write_text(json.dumps(config))
    return tmp_path


def test_mxfp4_is_refused_only_where_vllm_has_no_kernel_for_it(
        tmp_path: Path, hardware: Any) -> None:
    mxfp4 = _folder(tmp_path / "gpt-oss-20b", mxfp4_config())
    bf16 = dict(mxfp4_config())
    del bf16["quantization_config"]
    plain = _folder(tmp_path / "bf16", bf16)
    hardware(gpu=False)
    assert (mxfp4_kernel(), models.quant_method(mxfp4), models.quant_method(plain)) == \
        (None, "mxfp4", None)
    with pytest.raises(UnsupportedHardwareError) as info:
        check_runnable(mxfp4)
    message = str(info.value)
    assert message.startswith("gpt-oss-20b has MXFP4 expert weights") and "\n" not in message
    assert all(word in message for word in ("GPU", "AMX", "bf16", "'tiny'"))
    assert isinstance(info.value, gm.EngineLoadError)
    check_runnable(plain)  # bf16 runs anywhere
    hardware(gpu=False, flags=("fpu", "amx_bf16", "amx_tile", "amx_int8"))
    assert mxfp4_kernel() == "cpu-amx"
    check_runnable(mxfp4)
    hardware(gpu=True)
    assert mxfp4_kernel() == "gpu"
    check_runnable(mxfp4)


def test_the_probe_reads_this_machines_cpu_flags() -> None:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        pytest.skip("no /proc/cpuinfo here")
    flags = models._cpu_flags()
    assert flags and flags <= set(text.split())
    assert ("amx_tile" in flags) == ("amx_tile" in text.split())


def test_load_refuses_it_before_the_loaded_model_is_touched(tmp_path: Path,
                                                             hardware: Any) -> None:
    from gptoss_magics.engine import ScriptedEngine
    from gptoss_magics.session import current, using

    folder = tmp_path / "gpt-oss-20b"
    write_mxfp4_weights(folder, MXFP4_ARCH, 0)
    (folder / "tokenizer.json").write_text("{}")  # enough for check_model
    assert gm.check_model(folder).ok
    hardware(gpu=False)
    engine = ScriptedEngine()
    with using(engine, "scripted") as session:
        with pytest.raises(UnsupportedHardwareError, match="has MXFP4 expert weights"):
            gm.load(str(folder))
        assert current() is session and engine.alive


#: what a fresh interpreter runs: load the MXFP4 test model by name, as a user would
_REFUSED = """
import sys
import gptoss_magics as gm
try:
    gm.load("tiny-mxfp4")
except gm.GptOssError as exc:
    print("ERROR", type(exc).__name__, exc)
print("HEAVY", sorted(m for m in ("vllm", "torch") if m in sys.modules))
print("LOADED", gm.is_loaded())
"""


@pytest.mark.skipif(mxfp4_kernel() is not None, reason=(
    "this machine has an MXFP4 kernel (a GPU or an AMX CPU): the real load below runs"))
def test_without_a_kernel_the_readme_path_is_refused_before_vllm_is_imported() -> None:
    done = subprocess.run([sys.executable, "-c", _REFUSED], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[-2:] == ["HEAVY []", "LOADED False"], done.stdout
    error = [line for line in lines if line.startswith("ERROR ")]
    assert error == [
        "ERROR UnsupportedHardwareError tiny-mxfp4 has MXFP4 expert weights, which vLLM runs "
        "only on a GPU or on a CPU with AMX (Intel Xeon 4th generation or newer), and this "
        "machine has neither: to run it on this CPU, convert it to bf16 first (`python -m "
        "gptoss_magics dequantize tiny-mxfp4 tiny-mxfp4-bf16`, about 3x the disk) and load "
        "that folder; or load it on such a machine, or a bf16 checkpoint such as 'tiny'"
    ], done.stdout
    assert "Traceback" not in done.stderr


# ---------------------------------------------------------------------- a real load
def _vllm_sizing(llm: Any) -> dict[str, Any]:
    config = llm.llm_engine.vllm_config
    cache = config.cache_config
    return {"block_size": cache.block_size, "kv_bytes": cache.kv_cache_memory_bytes,
            "concurrency": cache.kv_cache_max_concurrency,
            "in_flight": config.max_in_flight_tokens,
            "max_model_len": config.model_config.max_model_len}


@pytest.mark.engine
@pytest.mark.lifecycle
@pytest.mark.skipif(mxfp4_kernel() is None, reason=(
    "vLLM 0.32 has no MXFP4 MoE kernel here: on CPU it needs AMX (Intel Xeon 4th "
    "generation or newer), and this machine has neither AMX nor a GPU"))
def test_it_loads_generates_maps_and_unloads_through_the_readme_path(mxfp4: Path) -> None:
    import pandas as pd

    from gptoss_magics.session import current

    if gm.is_loaded():  # one model at a time: the shared engine goes (and is not reloaded)
        gm.unload()
    status = gm.load(str(mxfp4))  # as the README loads real weights
    try:
        assert status["state"] == "ready" and "random weights" in status["notice"]
        assert status["weights_fingerprint"] == fingerprint(mxfp4).value
        reply = gm.complete("hi", max_tokens=4, temperature=0)
        assert 0 < reply.completion_tokens <= 4
        frame = pd.DataFrame({"text": ["one", "two", "three"]})
        with warnings.catch_warnings():  # random weights: every row runs to max_tokens
            warnings.simplefilter("ignore", gm.GptOssWarning)
            out = frame.gptoss.map("Repeat: {text}", max_tokens=4, temperature=0,
                                   cache=False, progress=False)
        summary = out.attrs["gptoss"]["summary"]
        assert len(out) == 3 and summary["rows"] == 3 and summary["generated"] == 3
        vllm = current().engine.call(_vllm_sizing)
        plan = gm.plan_fit(mxfp4, max_model_len=vllm["max_model_len"],
                           block_size=vllm["block_size"],
                           in_flight_tokens=vllm["in_flight"])
        assert plan.concurrency_for(vllm["kv_bytes"]) == pytest.approx(vllm["concurrency"],
                                                                       rel=1e-9)
    finally:
        gm.unload()
    assert not gm.is_loaded()
