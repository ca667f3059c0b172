"""Map gpt-oss over DataFrame rows: ``df.gptoss.map(...)``, ``submit`` and ``plan``.

* ``accessors``: the pandas accessors (thin);
* ``mapper``: :class:`RowMapper`, the run itself (render, cache, assemble);
* ``generation``: one generation pass over the rows the cache could not serve;
* ``result``: a row's result and the Series/DataFrame built from the rows;
* ``cache``: the on-disk result cache; ``plan``: :class:`MapPlan`; ``job``: :class:`MapJob`.

Importing this package registers ``df.gptoss`` and ``series.gptoss``.
"""

from __future__ import annotations

from .accessors import DataFrameAccessor, SeriesAccessor
from .cache import ResultCache
from .job import MapJob
from .mapper import MapSpec, RowMapper, last_result
from .plan import MapPlan
from .result import MapSummary, RowResult

__all__ = ["DataFrameAccessor", "MapJob", "MapPlan", "MapSpec", "MapSummary", "ResultCache",
           "RowMapper", "RowResult", "SeriesAccessor", "last_result"]
