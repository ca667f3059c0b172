"""A :class:`Job`: the requests of one submission, shared by every engine.

The engine's thread writes to a job through :meth:`Job.record`, :meth:`Job.finish`,
:meth:`Job.restart` and :meth:`Job.fail`; the caller's thread reads its events with
:meth:`Job.iter_events` (or, watching several jobs at once, :meth:`Job.poll`) and may
:meth:`Job.abort` it.
"""

from __future__ import annotations

import itertools
import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence

from ..errors import CancelledError, EngineDeadError
from .types import Completion, Event

_job_counter = itertools.count()


class Job:
    """A group of requests submitted together; iterate over its events.

    ``prompt_tokens`` gives each request's prompt length; ``on_abort`` is how the job
    asks its engine to abort it (the engine does so between two steps)."""

    def __init__(self, prompt_tokens: Sequence[int], priority: int = 0, *,
                 on_abort: Callable[[Job], None]) -> None:
        self.id = f"j{next(_job_counter)}"
        self.n = len(prompt_tokens)
        self.priority = priority
        self.events: queue.Queue[Event | BaseException | None] = queue.Queue()
        #: each request's Completion, filled in as the caller reads the events
        self.completions: list[Completion | None] = [None] * self.n
        self.t0 = time.perf_counter()
        #: True once the engine has failed the job or been unloaded: nothing to abort
        self.ended = False
        self._on_abort = on_abort
        # written by the engine's thread only
        self._prompt_tokens = list(prompt_tokens)
        self._ids: list[list[int]] = [[] for _ in range(self.n)]
        self._first: list[float | None] = [None] * self.n
        self._lps: list[list[float] | None] = [None] * self.n
        self._sent: list[bool] = [False] * self.n  # tokens already went out in an event

    def request_id(self, index: int) -> str:
        """The engine's id for request ``index`` of this job."""
        return f"{self.id}-{index}"

    # ------------------------------------------------------------ engine thread
    def record(self, index: int, new_ids: Sequence[int],
               logprobs: Sequence[float] | None = None, *, send: bool = True) -> None:
        """Add request ``index``'s new tokens (and their log-probabilities); ``send``
        also reports them in an event (streaming)."""
        if not new_ids:
            return
        self._ids[index].extend(new_ids)
        if logprobs is not None:
            lps = self._lps[index]
            if lps is None:
                lps = self._lps[index] = []
            lps.extend(logprobs)
        if self._first[index] is None:
            self._first[index] = time.perf_counter() - self.t0
        if send:
            self._sent[index] = True
            self.events.put(Event(index, list(new_ids)))

    def finish(self, index: int, reason: str, *, new_ids: Sequence[int] = (),
               logprobs: Sequence[float] | None = None, error: str | None = None
               ) -> Completion:
        """End request ``index`` with ``reason``; its last ``new_ids`` and its
        :class:`Completion` go out in one event."""
        self.record(index, new_ids, logprobs, send=False)
        lps = self._lps[index]
        done = Completion(
            index=index, token_ids=list(self._ids[index]), finish_reason=reason,
            prompt_tokens=self._prompt_tokens[index],
            latency_s=time.perf_counter() - self.t0, first_token_s=self._first[index],
            error=error, logprobs=None if lps is None else list(lps))
        self.events.put(Event(index, list(new_ids), done))
        return done

    def restart(self, index: int) -> bool:
        """Forget request ``index``'s tokens so that it can run again from the start.
        False when tokens were already sent to the caller (a stream cannot restart)."""
        if self._sent[index]:
            return False
        self._ids[index] = []
        self._first[index] = None
        self._lps[index] = None
        return True

    def fail(self, error: BaseException | None) -> None:
        """The engine stopped: the caller's wait raises ``error`` (``None``: unloaded)."""
        self.events.put(error)

    # ------------------------------------------------------------ caller thread
    def abort(self, wait: float = 30.0) -> None:
        """Abort every request of this job that has not finished yet, and wait (up to
        ``wait`` seconds) until the engine has let go of them."""
        if self.ended:
            return  # the engine already let go of it (it failed the job or was unloaded)
        self._on_abort(self)
        deadline = time.monotonic() + wait
        while any(c is None for c in self.completions) and time.monotonic() < deadline:
            try:
                item = self.events.get(timeout=0.05)
            except queue.Empty:
                continue
            if item is None or isinstance(item, BaseException):
                self.ended = True
                break
            if item.done is not None:
                self.completions[item.index] = item.done

    def poll(self, timeout: float = 0.0) -> Event | None:
        """The next event, or None when none arrives within ``timeout`` seconds (0: do
        not wait); raises the engine's error as :meth:`iter_events` does. For callers
        that watch several jobs at once."""
        try:
            item = self.events.get(timeout=timeout) if timeout > 0 else \
                self.events.get_nowait()
        except queue.Empty:
            return None
        if item is None:
            self.ended = True
            raise EngineDeadError("The engine was unloaded while this request was running.")
        if isinstance(item, BaseException):
            self.ended = True
            raise item
        if item.done is not None:
            self.completions[item.index] = item.done
        return item

    @property
    def finished(self) -> bool:
        """True once every request of the job has its Completion (as read by the caller)."""
        return all(c is not None for c in self.completions)

    def iter_events(self, poll_s: float = 0.05,
                    cancel: threading.Event | None = None) -> Iterator[Event]:
        """Yield events until every request finished; raise the engine's error, if any.

        The wait wakes up every ``poll_s`` seconds so that KeyboardInterrupt is
        delivered promptly to the calling (main) thread, and ``cancel`` (when given and
        set) raises :class:`CancelledError`.
        """
        remaining = sum(c is None for c in self.completions)
        while remaining:
            if cancel is not None and cancel.is_set():
                raise CancelledError("cancelled")
            try:
                item = self.events.get(timeout=poll_s)
            except queue.Empty:
                continue
            if item is None:
                self.ended = True
                raise EngineDeadError("The engine was unloaded while this request was running.")
            if isinstance(item, BaseException):
                self.ended = True
                raise item
            if item.done is not None:
                self.completions[item.index] = item.done
                remaining -= 1
            yield item
