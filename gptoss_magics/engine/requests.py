"""A request as the vLLM engine's thread knows it, and a group of them waiting together
while a failed step is isolated (:meth:`.vllm.VllmEngine._isolate`)."""

from __future__ import annotations

from dataclasses import dataclass, field

from .job import Job
from .types import Sampling


@dataclass
class Request:
    """One request of a job, as the engine thread knows it (enough to run it again)."""

    job: Job
    index: int
    prompt: list[int]
    sampling: Sampling
    stream: bool
    attempt: int = 0

    @property
    def rid(self) -> str:
        base = self.job.request_id(self.index)
        return base if not self.attempt else f"{base}-r{self.attempt}"


@dataclass
class Group:
    """Requests waiting to enter the engine together, while a failure is isolated."""

    priority: int
    order: int
    suspect: bool  # part of a failed step: runs alone in the engine
    requests: list[Request] = field(default_factory=list)
