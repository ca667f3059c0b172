"""Slots kept free for the notebook while background work runs.

vLLM runs at most ``max_num_seqs`` requests at once, and its priority scheduling does not
preempt a running request for a waiting one of higher priority when every slot is taken:
in vLLM 0.32's ``vllm/v1/core/sched/scheduler.py`` (``Scheduler.schedule``) a waiting
request is admitted only while ``len(self.running) < max_num_active_reqs``; preemption
happens only when the KV cache has no room for a running request's next tokens. A
background map that put all its rows into vLLM at once would fill every slot, and a
``%%gptoss`` cell asked meanwhile would wait for a whole wave of rows to finish.

So the engines hold background requests (priority above 0) here and feed them in only
while the engine holds fewer than ``slots - reserve`` requests: the last ``reserve`` slots
are always free for interactive requests (priority 0), which enter at once and are
scheduled on the engine's next step. Interactive requests beyond the reserve (an
``evaluate`` launched while a job runs) enter too and take the slots of background rows as
they finish, since background rows are not fed while the engine is full. Two background
jobs are fed in turn, one request each, so neither starves.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from typing import Any, Generic, Protocol, TypeVar


class _Held(Protocol):
    job: Any


R = TypeVar("R", bound=_Held)


def default_reserve(slots: int) -> int:
    """Slots kept free by default: 1/64 of the engine's (so a background job keeps at
    least 98% of its throughput), at least 4, and always at least one for the job."""
    return max(0, min(max(4, slots // 64), slots - 1))


class Reserve(Generic[R]):
    """Background requests waiting to enter the engine, and what was served meanwhile.

    Used on the engine's own thread only (no locking); :meth:`stats` is read from other
    threads and copies plain integers.
    """

    def __init__(self, slots: int, reserve: int | None = None) -> None:
        self.slots = max(1, int(slots))
        self.reserve = default_reserve(self.slots) if reserve is None else \
            max(0, min(int(reserve), self.slots - 1))
        self._held: OrderedDict[int, deque[R]] = OrderedDict()
        self.background_in_flight = 0
        #: interactive requests finished while background work was held or running
        self.interactive_served = 0

    @staticmethod
    def background(request: R) -> bool:
        """True for a background request (priority above 0)."""
        return int(request.job.priority) > 0

    @property
    def holding(self) -> int:
        """Background requests not yet in the engine."""
        return sum(len(q) for q in self._held.values())

    @property
    def busy(self) -> bool:
        """True while background work is held or running."""
        return bool(self._held) or self.background_in_flight > 0

    def hold(self, request: R) -> None:
        """Keep a background request until there is room for it."""
        self._held.setdefault(request.job.id, deque()).append(request)

    def take(self, in_engine: int) -> list[R]:
        """The held requests to put into the engine now, which holds ``in_engine``
        requests: one per job in turn, while fewer than ``slots - reserve`` would run."""
        room = self.slots - self.reserve - in_engine
        taken: list[R] = []
        while room > 0 and self._held:
            key, q = next(iter(self._held.items()))
            taken.append(q.popleft())
            room -= 1
            self._held.move_to_end(key)
            if not q:
                del self._held[key]
        return taken

    def entered(self, request: R) -> None:
        """A request went into the engine."""
        if self.background(request):
            self.background_in_flight += 1

    def finished(self, request: R) -> None:
        """A request that was in the engine ended (any way)."""
        if self.background(request):
            self.background_in_flight = max(0, self.background_in_flight - 1)
        elif self.busy:
            self.interactive_served += 1

    def drop(self, job: Any) -> list[R]:
        """Forget the held requests of ``job`` (aborted) and return them."""
        return list(self._held.pop(job.id, ()))

    def drain(self) -> list[R]:
        """Forget every held request (the engine stops) and return them."""
        out = [r for q in self._held.values() for r in q]
        self._held.clear()
        self.background_in_flight = 0
        return out

    def stats(self) -> dict[str, int]:
        """``slots``, ``reserve``, ``background_held``, ``background_in_flight`` and
        ``interactive_served``."""
        return {"slots": self.slots, "reserve": self.reserve,
                "background_held": self.holding,
                "background_in_flight": self.background_in_flight,
                "interactive_served": self.interactive_served}
