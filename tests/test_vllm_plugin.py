"""The vLLM plugin shipped in the package: AMX permission and the reasoning parser."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from importlib.metadata import entry_points

import pytest

CHECK = textwrap.dedent("""
    import ctypes
    import torch
    libc = ctypes.CDLL(None, use_errno=True)

    def xtiledata():
        mask = ctypes.c_ulong(0)
        assert libc.syscall(158, 0x1022, ctypes.byref(mask)) == 0  # ARCH_GET_XCOMP_PERM
        return bool(mask.value & (1 << 18))

    print("AMX", torch.cpu._is_amx_tile_supported())
    print("BEFORE", xtiledata())
    from vllm.plugins import load_general_plugins
    load_general_plugins()
    print("AFTER", xtiledata())
    from vllm.reasoning import ReasoningParserManager
    cls = ReasoningParserManager.get_reasoning_parser("gptoss_final")
    print("PARSER", cls.__module__, cls.__name__)
""")


def test_entry_point_is_installed() -> None:
    values = [e.value for e in entry_points(group="vllm.general_plugins")]
    assert "gptoss_magics.engine._plugin:register" in values


def test_vllm_loads_the_plugin_in_a_fresh_process() -> None:
    proc = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert "PARSER gptoss_magics.engine._reasoning HarmonyFinalReasoningParser" in out
    if "AMX True" not in out:
        pytest.skip("this CPU has no AMX: nothing to request")
    # torch alone does not ask for the AMX tile permission; the plugin does, before any
    # vLLM kernel can run (otherwise bf16 attention can die with SIGILL)
    assert "BEFORE False" in out and "AFTER True" in out


def test_parser_ends_reasoning_only_at_the_final_channel() -> None:
    pytest.importorskip("vllm")
    from gptoss_magics import harmony as H
    from gptoss_magics.engine._reasoning import HarmonyFinalReasoningParser

    parser = HarmonyFinalReasoningParser.__new__(HarmonyFinalReasoningParser)
    prompt = H.render_prompt("q", history=[H.Turn("earlier", "an earlier final answer")])
    assert not parser.is_reasoning_end(prompt)  # a final in the history does not count
    assert parser.is_reasoning_end(prompt + H.final_header_ids())
    enc = H.encoding()
    out = list(enc.encode("<|channel|>analysis<|message|>think<|end|><|start|>assistant"
                          "<|channel|>final<|message|>", allowed_special="all"))
    # streaming one token at a time: reasoning ends exactly when the marker completes
    ended = [parser.is_reasoning_end_streaming(prompt + out[:n], out[n - 1:n])
             for n in range(1, len(out) + 1)]
    assert ended == [False] * (len(out) - 1) + [True]
    assert parser.extract_content_ids([*out, 42, 43]) == [42, 43]
