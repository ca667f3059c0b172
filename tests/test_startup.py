"""Fast to start, clean to stop, quiet in the cell: native stderr chatter filtered at the fd
level, the one-parse tokenizer mode (structured outputs keep working), load progress, the
unload memory report and the effort panel's labels. Timings live in benchmarks/."""

from __future__ import annotations

import json
import mmap
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import gptoss_magics as gm
from gptoss_magics.engine.load_watch import LoadProgress, LoadWatch, weight_files
from gptoss_magics.engine.native_stderr import filtered_stderr, is_noise
from gptoss_magics.load_progress import LoadDisplay, describe

NUMA_LINE = (b"[W1201 00:36:53.001305474 utils.cpp:68] Warning: NUMA binding: Using MEMBIND "
             b"policy for memory allocation on the NUMA nodes (0). (function "
             b"init_cpu_memory_env)\n")


# ---------------------------------------------------------------------- stderr filter
def test_filter_drops_known_noise_and_forwards_the_rest_in_order(
        capfd: pytest.CaptureFixture[str]) -> None:
    with filtered_stderr() as dropped:
        os.write(2, NUMA_LINE)
        os.write(2, b"a real native warning\n")
        os.write(2, b"tcmalloc: large alloc 1073741824 bytes == 0x55d0 @ \n")
        os.write(2, b"  @ 0x7f00 0x7f01\n")
        # one write: print() writes the text and its newline apart, and a line the filter
        # forwards meanwhile can land between them
        sys.stderr.write("a Python warning\n")
        os.write(2, b"written just before a crash, no newline")
    os.write(2, b"|after\n")
    err = capfd.readouterr().err
    assert "a Python warning\n" in err  # (pytest captures sys.stderr apart from fd 2)
    assert err.replace("a Python warning\n", "") == (
        "a real native warning\nwritten just before a crash, no newline|after\n")
    assert [is_noise(line) for line in dropped] == [True, True, True]
    assert len(dropped) == 3


def test_filter_off_passes_everything(capfd: pytest.CaptureFixture[str]) -> None:
    with filtered_stderr(enabled=False) as dropped:
        os.write(2, NUMA_LINE)
    assert "NUMA binding" in capfd.readouterr().err and dropped == []


LOAD_WITH_NOISE = textwrap.dedent("""
    import os, sys, threading, time
    import gptoss_magics as gm

    original = os.readlink("/proc/self/fd/2")

    def write_during_load():
        # once the engine has pointed fd 2 at its filter, write as a native library would
        while os.readlink("/proc/self/fd/2") == original:
            time.sleep(0.005)
        os.write(2, NOISE)
        os.write(2, b"REAL-WARNING from a native library\\n")

    NOISE = bytes.fromhex(sys.argv[1])
    writer = threading.Thread(target=write_during_load, daemon=True)
    writer.start()
    gm.load("tiny", progress=False)
    writer.join(60)
    assert not writer.is_alive(), "the filter was never on during the load"
    reply = gm.complete("Is this review positive? I love it.", choices=["yes", "no"],
                        max_tokens=128, temperature=0)
    print("ANSWER", reply.value)
    gm.unload()
    os.write(2, b"AFTER-UNLOAD\\n")
""")


@pytest.mark.vllm
def test_a_load_keeps_native_noise_out_of_stderr_and_real_warnings_in(
        tiny_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "VLLM_LOGGING_LEVEL"}
    done = subprocess.run([sys.executable, "-c", LOAD_WITH_NOISE, NUMA_LINE.hex()],
                          capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "ANSWER yes" in done.stdout or "ANSWER no" in done.stdout
    # vLLM's own NUMA warning (this CPU build prints one at each load) and the injected
    # copy are both gone; the real warning and what comes after the load are not
    assert "NUMA binding" not in done.stderr, done.stderr
    assert "REAL-WARNING from a native library" in done.stderr
    assert "AFTER-UNLOAD" in done.stderr


# ---------------------------------------------------------------------- tokenizer mode
def test_the_engine_runs_the_one_parse_tokenizer_and_constraints_still_apply(
        engine: dict) -> None:
    from gptoss_magics.session import current

    assert current().engine.info["tokenizer_mode"] == "gptoss_magics"
    choice = gm.complete("Is this review positive? I love it.", choices=["yes", "no"],
                         max_tokens=128, temperature=0)
    assert choice.value in ("yes", "no")
    schema = {"type": "object", "properties": {"n": {"type": "integer"}},
              "required": ["n"], "additionalProperties": False}
    shaped = gm.complete("What is 2 + 3? Answer as JSON.", schema=schema,
                         max_tokens=256, temperature=0)
    assert set(json.loads(shaped.final)) == {"n"} and shaped.value_error is None
    pattern = gm.complete("What is 17 + 25?", regex=r"[0-9]{1,3}", max_tokens=160,
                          temperature=0)
    assert pattern.final.isdigit() and pattern.value == pattern.final


@pytest.mark.vllm
def test_the_one_parse_tokenizer_equals_autotokenizer(tiny_path: Path) -> None:
    from transformers import AutoTokenizer

    from gptoss_magics.engine._tokenizer import GptOssTokenizer

    ours = GptOssTokenizer.from_pretrained(tiny_path, truncation_side="left")
    theirs = AutoTokenizer.from_pretrained(tiny_path, truncation_side="left")
    assert type(ours).__name__.startswith("ThreadSafe")
    assert ours.get_vocab() == theirs.get_vocab() and len(ours) == len(theirs)
    for name in ("all_special_ids", "all_special_tokens", "eos_token_id", "bos_token_id",
                 "pad_token_id", "truncation_side", "chat_template"):
        assert getattr(ours, name) == getattr(theirs, name), name
    text = "<|start|>user<|message|>Héllo wörld 123 ☃\n\n  x<|end|><|return|>"
    assert ours.encode(text) == theirs.encode(text)
    assert ours.decode(ours.encode(text)) == theirs.decode(theirs.encode(text))
    import copy

    assert type(copy.copy(ours)) is type(ours)  # vLLM's renderer copies it


def test_a_folder_that_is_not_a_plain_fast_tokenizer_takes_vllms_path(tmp_path: Path) -> None:
    from gptoss_magics.engine._tokenizer import fast_tokenizer_config

    assert fast_tokenizer_config(tmp_path) is None  # no files
    (tmp_path / "tokenizer.json").write_text("{}")
    (tmp_path / "tokenizer_config.json").write_text(
        json.dumps({"tokenizer_class": "LlamaTokenizer"}))
    assert fast_tokenizer_config(tmp_path) is None
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(
        {"tokenizer_class": "PreTrainedTokenizerFast", "auto_map": {"AutoTokenizer": "x.Y"}}))
    assert fast_tokenizer_config(tmp_path) is None
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(
        {"tokenizer_class": "PreTrainedTokenizerFast", "eos_token": "<|return|>",
         "added_tokens_decoder": {"200002": {"content": "<|return|>"}}}))
    (tmp_path / "chat_template.jinja").write_text("{{ messages }}")
    assert fast_tokenizer_config(tmp_path) == {"eos_token": "<|return|>",
                                               "chat_template": "{{ messages }}"}


# ---------------------------------------------------------------------- load progress
def _shards(folder: Path, sizes: list[int]) -> list[Path]:
    paths = []
    for i, size in enumerate(sizes, 1):
        p = folder / f"model-{i:05d}-of-{len(sizes):05d}.safetensors"
        p.write_bytes(b"\0" * size)
        paths.append(p)
    (folder / "model.safetensors.index.json").write_text(json.dumps(
        {"weight_map": {f"w{i}": p.name for i, p in enumerate(paths)}}))
    (folder / "original").mkdir()
    (folder / "original" / "model.safetensors").write_bytes(b"\0" * 10)  # not read by vLLM
    return paths


def test_the_watch_sees_which_shard_is_read_and_how_far(tmp_path: Path) -> None:
    first, second = _shards(tmp_path, [1 << 20, 16 << 20])
    assert weight_files(tmp_path) == [first, second]
    watch = LoadWatch(tmp_path)
    if not watch.enabled:
        pytest.skip("no /proc here")
    assert watch.poll().stage == "starting"
    with open(second, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as m:
        assert m[: 1 << 20].count(b"\1") == 0  # read the start of the second shard
        p = watch.poll()
    assert (p.stage, p.shards_done, p.shards_total) == ("weights", 1, 2)
    assert p.bytes_total == 17 << 20
    # the first shard and what was read of the second (the kernel maps a little ahead)
    assert (2 << 20) <= p.bytes_done <= (5 << 20)
    assert watch.poll().stage == "engine"  # both read, nothing open: the engine's turn
    done = watch.poll(ready=True)
    assert (done.stage, done.shards_done, done.bytes_done) == ("ready", 2, 17 << 20)


def test_the_progress_line_says_shards_bytes_and_time() -> None:
    p = LoadProgress(41.2, "weights", 1, 3, int(8.1 * 2**30), int(12.8 * 2**30))
    assert describe("gpt-oss-20b", p) == ("Loading gpt-oss-20b: reading weights, shard 2/3, "
                                          "8.1 GiB of 12.8 GiB (63%), 41 s")
    later = LoadProgress(83, "engine", 3, 3, 3, 3)
    assert describe("m", later) == ("Loading m: preparing the engine (KV cache, warm-up), "
                                    "3 shards, 3 B read, 1:23")


def test_no_progress_line_where_nobody_watches(capfd: pytest.CaptureFixture[str]) -> None:
    display = LoadDisplay("tiny")  # under pytest: stderr is no terminal, no kernel
    assert not display.enabled
    display(LoadProgress(5.0, "weights", 0, 1, 1, 2))
    display.close()
    assert capfd.readouterr() == ("", "") and display.lines == []


# ---------------------------------------------------------------------- widgets
def test_the_effort_panel_labels_have_room(fresh_settings: object) -> None:
    from gptoss_magics.widgets import EffortPanel

    panel = EffortPanel()
    try:
        sliders = [panel.effort, panel.temperature, panel.max_tokens, panel.budget]
        widths = {s.style.description_width for s in sliders}
        assert widths == {"7.5em"}  # one column, wider than ipywidgets' 80 px default
        assert {s.description for s in sliders} == {"effort", "temperature", "max tokens",
                                                    "budget"}
    finally:
        panel.close()


# ---------------------------------------------------------------------- lifecycle
@pytest.mark.lifecycle
def test_unload_reports_what_the_engine_took_and_gave_back(engine: dict) -> None:
    if not gm.is_loaded():  # an earlier lifecycle test may have left none loaded
        gm.load("tiny")
    mem = gm.unload()
    assert mem["rss_after_import"] >= mem["rss_before_load"]
    assert mem["engine_rss_bytes"] == mem["rss_loaded"] - mem["rss_after_import"]
    assert mem["returned_share"] == round(
        (mem["rss_loaded"] - mem["rss_after_unload"]) / mem["engine_rss_bytes"], 4)
    assert mem["unload_s"] >= 0
    gm.load("tiny")
    assert gm.status()["state"] == "ready"


@pytest.mark.lifecycle
def test_an_interactive_load_shows_progress_then_clears_it(
        engine: dict, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    import gptoss_magics.load_progress as lp

    monkeypatch.setattr(lp, "SHOW_AFTER_S", 0.0)  # the tiny model loads fast
    if gm.is_loaded():
        gm.unload()
    capsys.readouterr()
    gm.load("tiny", progress=True)
    err = capsys.readouterr().err
    assert "Loading tiny: " in err
    assert err.endswith("\r\033[K")  # the line is cleared once loaded
    assert gm.status()["state"] == "ready"
