"""The audit log and re-running saved answers, on the real tiny engine."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

import gptoss_magics as gm
from gptoss_magics import display

pytestmark = pytest.mark.engine


def lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_every_reply_and_row_is_logged(engine: dict, fresh_settings: Any,
                                       tmp_path: Path) -> None:
    log = tmp_path / "audit.jsonl"
    fresh_settings.audit_log = str(log)
    reply = gm.complete("What is 17 + 25?", effort="high", max_tokens=200, temperature=0)
    df = pd.DataFrame({"text": ["the food was great", "the room was awful", "the food was great"]})
    df.gptoss.map("What is the sentiment of: {text}", cache=False, progress=False,
                  choices=["positive", "negative", "neutral"])
    assert stat.S_IMODE(os.stat(log).st_mode) == 0o600
    records = lines(log)
    kinds = [r["kind"] for r in records]
    assert kinds == ["reply", "map_row", "map_row", "map"]
    first = records[0]
    assert first["prompt"] == "What is 17 + 25?" and first["final"] == reply.final
    assert first["analysis"] == reply.analysis and first["effort"] == "high"
    assert first["provenance"]["weights_fingerprint"] == engine["weights_fingerprint"]
    rows = [r for r in records if r["kind"] == "map_row"]
    assert {r["prompt"] for r in rows} == {"What is the sentiment of: the food was great",
                                           "What is the sentiment of: the room was awful"}
    assert records[-1]["summary"]["unique_prompts"] == 2
    assert records[-1]["run"] == rows[0]["run"]


def test_nothing_is_logged_when_off(engine: dict, fresh_settings: Any, tmp_path: Path) -> None:
    fresh_settings.audit_log = ""
    gm.complete("What is 2 + 2?", max_tokens=8)
    assert list(tmp_path.iterdir()) == []


def test_a_sampled_answer_reproduces_token_for_token(engine: dict) -> None:
    reply = gm.complete("What is 38 + 47?", effort="medium", max_tokens=120,
                        temperature=1.0, seed=11, instructions="Be brief.")
    again = gm.reproduce(reply)
    assert again.identical and again.same_prompt and again.same_weights
    assert again.again.token_ids == reply.token_ids
    assert "identical" in repr(again)
    # from plain data, e.g. reply.to_dict() kept in a log
    assert gm.reproduce(json.loads(json.dumps(reply.to_dict()))).identical


def test_a_saved_notebook_output_reproduces(engine: dict) -> None:
    reply = gm.complete("Uppercase the word: river", effort="low", max_tokens=120,
                        temperature=0)
    saved = json.loads(json.dumps(display.to_json(reply)))  # what the .ipynb keeps
    assert gm.reproduce(saved).identical
    saved["final"] = "GARDEN"  # a tampered answer does not reproduce
    result = gm.reproduce(saved)
    assert not result.identical and "DIFFERENT" in repr(result)


def test_a_chat_turn_reproduces_with_its_history(engine: dict) -> None:
    history = [gm.Turn("Uppercase the word: river", "RIVER")]
    reply = gm.complete("Convert to uppercase: garden", history=history, max_tokens=120,
                        temperature=0)
    assert reply.provenance["history"] == [["Uppercase the word: river", "RIVER"]]
    assert gm.reproduce(reply).identical


def test_reproduce_needs_provenance(engine: dict) -> None:
    with pytest.raises(ValueError, match="provenance"):
        gm.reproduce({"final": "x"})
