"""``df.gptoss`` and ``series.gptoss``: thin accessors over :class:`RowMapper`."""

from __future__ import annotations

from typing import Any

import pandas as pd
from typing_extensions import Unpack

from .. import template as tmpl
from ..errors import InvalidOptionError
from ..options import MAP_OPTIONS, MapOptions, with_options
from .job import MapJob
from .mapper import RowMapper
from .plan import MapPlan

_MAP_DOC = """Run gpt-oss on every row and return the answers aligned to the index.

    ``template`` is the prompt, with ``{column}`` fields (``{{``/``}}`` for literal
    braces). Rows go to the engine in one batch; identical prompts are generated once;
    every finished row is saved to the result cache, so an interrupt or a crash loses
    nothing and a rerun generates only the missing rows.

    Returns a Series of answers (categorical with ``choices``), or a DataFrame (with
    ``schema``: one typed column per field; with ``reasoning``, ``usage`` or
    ``confidence``: those columns too; then also ``truncated`` and ``error``).
    ``result.attrs["gptoss"]`` records the model fingerprint, vLLM version, settings,
    token totals and row counts, and the rows that were missing, truncated, cut or
    failed. With ``reasoning_budget`` every row gets an answer instead of hitting
    ``max_tokens``; ``confidence`` is the model's probability of each row's answer
    (with ``choices``, of the label among the choices). With
    ``cascade=gm.Cascade(levels=["low", "high"], calibrate_on=labelled)`` every row runs
    at the first level and only rows whose answer confidence is below the threshold
    learnt on the labelled rows run again at the next; ``attrs["gptoss"]["cascade"]``
    records the thresholds, rows and tokens per level and the estimated accuracy.
    With ``tools``, each row's conversation may call them before it answers (a row
    waiting for its tool holds no other row back; calls run 8 at a time); a row whose
    last call failed has that error; ``tool_calls=True`` adds each row's calls as a
    column (a list of dicts); a cached row replays its calls without running them."""


def _doc(text: str) -> Any:
    def set_doc(fn: Any) -> Any:
        fn.__doc__ = text
        return fn
    return set_doc


def _checked(cascade: Any) -> Any:
    """``cascade=`` must be a :class:`gptoss_magics.Cascade`."""
    from ..evaluation.cascade import Cascade

    if not isinstance(cascade, Cascade):
        raise InvalidOptionError("cascade must be a gptoss_magics.Cascade(levels=[...], "
                                 f"calibrate_on=...), not {type(cascade).__name__}")
    return cascade


@pd.api.extensions.register_dataframe_accessor("gptoss")
class DataFrameAccessor:
    """``df.gptoss``: run gpt-oss over the rows of a DataFrame."""

    def __init__(self, frame: pd.DataFrame) -> None:
        self._frame = frame

    def _prepared(self, template: str) -> tuple[pd.DataFrame, str]:
        """The frame and template the map runs (a Series names its values ``value``)."""
        return self._frame, template

    def _mapper(self, template: str, options: dict[str, Any]) -> RowMapper:
        return RowMapper.create(*self._prepared(template), **options)

    @with_options(MAP_OPTIONS)
    @_doc(_MAP_DOC)
    def map(self, template: str, **options: Unpack[MapOptions]) -> pd.Series | pd.DataFrame:
        given: dict[str, Any] = dict(options)
        cascade = given.pop("cascade", None)
        if cascade is not None:
            from ..evaluation.cascade_run import run_cascade

            return run_cascade(_checked(cascade), *self._prepared(template), given)
        return self._mapper(template, given).run()

    @with_options(MAP_OPTIONS)
    def submit(self, template: str, **options: Unpack[MapOptions]) -> MapJob:
        """Start ``map`` (same arguments) in the background and return its
        :class:`MapJob` at once: the notebook stays usable, and interactive requests made
        meanwhile go ahead of its rows. ``job.result()`` gives the column."""
        return MapJob(self._mapper(template, dict(options)))

    @with_options(MAP_OPTIONS)
    def plan(self, template: str, **options: Unpack[MapOptions]) -> MapPlan | Any:
        """What ``map`` with the same arguments would do, without generating: rows,
        distinct prompts, rows already in the cache, prompt token counts, prompts too
        long for the model's context, the most tokens it can generate, and the first
        prompt exactly as the model would receive it. With ``cascade=``: the cascade's
        :class:`~gptoss_magics.evaluation.CascadePlan` instead, estimated from its
        calibration rows (which it runs at every level; none of this frame's rows run)."""
        given: dict[str, Any] = dict(options)
        cascade = given.pop("cascade", None)
        if cascade is not None:
            return _checked(cascade).plan(*self._prepared(template), **given)
        return self._mapper(template, given).plan()


@pd.api.extensions.register_series_accessor("gptoss")
class SeriesAccessor(DataFrameAccessor):
    """``series.gptoss``: run gpt-oss over the values of a Series (``{}`` or ``{value}``)."""

    def __init__(self, series: pd.Series) -> None:
        super().__init__(pd.DataFrame({"value": series}))

    def _prepared(self, template: str) -> tuple[pd.DataFrame, str]:
        if not isinstance(template, str):
            raise InvalidOptionError("the template must be a string such as 'Summarise: {}'")
        rebuilt = []
        for literal, fld, spec, conv in tmpl.parse(template):
            rebuilt.append(literal.replace("{", "{{").replace("}", "}}"))
            if fld is not None:
                name = "value" if fld == "" else fld
                rebuilt.append("{" + name + (f"!{conv}" if conv else "") +
                               (f":{spec}" if spec else "") + "}")
        return self._frame, "".join(rebuilt)
