"""Background maps: ``df.gptoss.submit(...)`` returns a :class:`MapJob` at once."""

from __future__ import annotations

import html
import threading
import time
import warnings

import pandas as pd

from .. import audit
from ..errors import CancelledError, GptOssWarning
from ..session import report_activity
from .mapper import RowMapper


class MapJob:
    """A map running in the background (``df.gptoss.submit``): the kernel stays free.

    Its rows go to the engine at a lower priority than interactive requests and never
    fill the engine: a reserve of slots stays free (``gm.load(...,
    background_reserve=N)``; by default 1/64 of vLLM's ``max_num_seqs``, at least 4), so
    ``%%gptoss`` cells, ``complete`` calls and evaluations made meanwhile start on the
    engine's next step instead of waiting for a wave of rows. Every finished row is
    saved to the result cache as it comes, as in a foreground map.

    ``job.result()`` waits and returns what ``map`` returns (or raises what it raised);
    ``job.cancel()`` stops it (finished rows stay in the cache, so a later map of the
    same rows generates only the rest); ``job.done``, ``job.rows_done`` and
    ``job.rows`` report progress, and the job displays as a progress line.
    """

    #: engine priority of background rows (interactive requests use 0: they go first)
    PRIORITY = 1

    def __init__(self, mapper: RowMapper) -> None:
        _ = mapper.session  # raises EngineNotLoadedError here, not in the thread
        audit.check_writable()  # and a bad audit log path, before anything is queued
        self._mapper = RowMapper(mapper.frame, mapper.template, mapper.options,
                                 _quiet(mapper.spec), session=mapper.session,
                                 priority=self.PRIORITY, cancel=threading.Event(), quiet=True)
        self._result: pd.Series | pd.DataFrame | None = None
        self._error: BaseException | None = None
        self._t0 = time.perf_counter()
        self._t1: float | None = None
        self._key = f"map-{self._mapper.run_id}"
        self._reported = 0.0
        self._mapper.progress.callback = self._report
        self._engine = mapper.session.engine
        self._served0 = self._engine.scheduling()["interactive_served"]
        self._report(force=True)
        self._thread = threading.Thread(target=self._run, name="gptoss-map", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self._result = self._mapper.run()
        except BaseException as exc:  # handed to the caller of result()
            self._error = exc
        finally:
            self._t1 = time.perf_counter()
            report_activity(self._key, None)

    def _report(self, force: bool = False) -> None:
        """Tell the session (and so the lab status bar) how far the job is, at most
        about once a second."""
        now = time.perf_counter()
        if not force and now - self._reported < 1.0:
            return
        self._reported = now
        report_activity(self._key, {
            "kind": "map", "rows": self.rows, "rows_done": self.rows_done,
            "tokens_per_s": round(self._mapper.progress.tokens_generated /
                                  max(self.seconds, 1e-9), 1)})

    @property
    def done(self) -> bool:
        """True once the map has finished, failed or been cancelled."""
        return not self._thread.is_alive()

    @property
    def rows(self) -> int:
        """Rows of the DataFrame."""
        return len(self._mapper.frame)

    @property
    def rows_done(self) -> int:
        """Rows finished so far (from the cache, generated, or missing values)."""
        return self._mapper.progress.rows_done

    @property
    def seconds(self) -> float:
        """Time since the job started (until it ended)."""
        return (self._t1 or time.perf_counter()) - self._t0

    def wait(self, timeout: float | None = None) -> bool:
        """Wait up to ``timeout`` seconds (None: until done); True when done."""
        self._thread.join(timeout)
        return self.done

    def cancel(self, wait: bool = True) -> None:
        """Stop the job: unfinished rows are aborted, finished ones stay in the cache."""
        assert self._mapper.cancel is not None
        self._mapper.cancel.set()
        if wait:
            self.wait(60)

    def result(self, timeout: float | None = None) -> pd.Series | pd.DataFrame:
        """Wait for the map and return its result, or raise its error
        (:class:`CancelledError` after :meth:`cancel`)."""
        if not self.wait(timeout):
            raise TimeoutError(f"the map is still running ({self._progress()}); wait longer, "
                               "or cancel() it")
        if self._error is not None:
            raise self._error
        assert self._result is not None
        if self._mapper.warning:
            warnings.warn(self._mapper.warning, GptOssWarning, stacklevel=2)
        return self._result

    @property
    def interactive_served(self) -> int:
        """Interactive requests (cells, ``complete``, evaluations) the engine answered
        while this job ran; the reserve kept slots free for them."""
        return self._engine.scheduling()["interactive_served"] - self._served0

    def _state(self) -> str:
        if not self.done:
            return "running"
        if isinstance(self._error, CancelledError):
            return "cancelled"
        return "failed" if self._error is not None else "done"

    def _progress(self) -> str:
        rows = max(self.rows, 1)
        speed = self._mapper.progress.tokens_generated / max(self.seconds, 1e-9)
        sched = self._engine.scheduling()
        served = sched["interactive_served"] - self._served0
        return (f"{self.rows_done:,} of {self.rows:,} rows ({100 * self.rows_done / rows:.0f}%), "
                f"{speed:,.0f} tok/s, {self.seconds:,.1f} s; {sched['reserve']} of "
                f"{sched['slots']} engine slots kept for the notebook, {served:,} "
                f"interactive request{'' if served == 1 else 's'} served meanwhile")

    def __repr__(self) -> str:
        tail = {"running": ".result() waits for it, .cancel() stops it",
                "done": ".result() has it", "cancelled": "finished rows are in the cache",
                "failed": f"{type(self._error).__name__}: {self._error}"}[self._state()]
        return f"MapJob {self._state()}: {self._progress()}; {tail}"

    def _repr_html_(self) -> str:
        return (f"<div class='gptoss-map-job'><progress value='{self.rows_done}' "
                f"max='{max(self.rows, 1)}'></progress> {html.escape(repr(self))}</div>")


def _quiet(spec):  # type: ignore[no-untyped-def]
    from dataclasses import replace

    return replace(spec, progress=False)
