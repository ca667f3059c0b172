"""The settings object: traitlets config, validation, precedence."""

from __future__ import annotations

import datetime as dt

import pytest
from traitlets import TraitError
from traitlets.config import Config

from gptoss_magics.options import Options
from gptoss_magics.settings import GptOssSettings


def test_config_reaches_the_settings() -> None:
    c = Config()
    c.GptOssSettings.effort = "high"
    c.GptOssSettings.max_tokens = 77
    s = GptOssSettings(config=c)
    assert (s.effort, s.max_tokens) == ("high", 77)


def test_invalid_values_are_refused(fresh_settings: GptOssSettings) -> None:
    with pytest.raises(TraitError):
        fresh_settings.effort = "extreme"
    with pytest.raises(TraitError):
        fresh_settings.max_tokens = 0
    with pytest.raises(TraitError):
        fresh_settings.current_date = "yesterday"


def test_call_arguments_win_over_settings(fresh_settings: GptOssSettings) -> None:
    fresh_settings.effort = "low"
    fresh_settings.temperature = 0.3
    assert Options.resolve().effort == "low"
    opts = Options.resolve(effort="high", temperature=0.0, seed=None)
    assert (opts.effort, opts.temperature, opts.seed) == ("high", 0.0, None)
    assert Options.resolve().temperature == 0.3


def test_current_date(fresh_settings: GptOssSettings) -> None:
    fresh_settings.current_date = "today"
    assert fresh_settings.resolved_date() == dt.date.today().isoformat()
    fresh_settings.current_date = "2025-01-31"
    assert fresh_settings.resolved_date() == "2025-01-31"
    fresh_settings.current_date = ""
    assert fresh_settings.resolved_date() is None


def test_every_setting_is_documented() -> None:
    s = GptOssSettings()
    for name in s.trait_names(config=True):
        assert s.traits()[name].help, name
