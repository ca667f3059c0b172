"""``RayEngine``: the engine seam on the driver, served by a Ray Data pipeline.

Each :meth:`RayEngine.submit` makes one Ray Data pipeline: the token prompts go in with
``ray.data.from_pandas`` (one block per ``batch_size`` rows), ``map_batches`` runs them on
a pool of :class:`~.replica.Replica` actors (each this package's vLLM engine), and a thread
here reads the blocks as they finish and ends each request of the :class:`Job` with its
:class:`Completion`. The map above cannot tell it from the in-process engine: it renders,
parses, caches and audits every row exactly as it does there.

Ray Data retries a task whose actor died (it restarts the actor, which loads its engine
again): a replica that dies costs only the rows of its batch in flight. Aborting a job
(an interrupt, a cancel) ends its unfinished requests at once; the pipeline stops when
its next block arrives.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Generator, Sequence
from typing import TYPE_CHECKING, Any

from ..engine.job import Job
from ..engine.types import Completion, Event, Sampling
from ..errors import EngineDeadError, EngineLoadError, InvalidOptionError, ModelFolderError
from .replica import MISMATCH, Replica

if TYPE_CHECKING:
    from .backend import RayBackend


class RayEngine:
    """The engine of a map on a Ray cluster (see the module docstring)."""

    def __init__(self, backend: RayBackend, path_on_nodes: str, fingerprint: str,
                 engine_args: dict[str, Any], *, gpus: float) -> None:
        self.backend = backend
        self.path = path_on_nodes
        self.fingerprint = fingerprint
        self.engine_args = engine_args
        self.gpus = gpus
        self._tokens = 0
        self._lock = threading.Lock()
        #: rows served per replica ("actor-id/pid") and per Ray node, over this engine's jobs
        self.by_replica: dict[str, int] = {}
        self.by_node: dict[str, int] = {}
        self.hosts: set[str] = set()
        self.info: dict[str, Any] = {
            "model": path_on_nodes, "vllm": None, "dtype": engine_args.get("dtype"),
            "device": f"ray: {backend.replicas} replica(s) x {gpus:g} GPU",
            "max_model_len": engine_args.get("max_model_len"), "multiprocess": False,
            "load_s": None, "reasoning_budget": True, "priority": False,
            "progress_label": f"gpt-oss on Ray x{backend.replicas}",
            "backend": self._provenance()}

    def _provenance(self) -> dict[str, Any]:
        b = self.backend
        return {"kind": "ray", "replicas": b.replicas, "gpus_per_replica": self.gpus,
                "tensor_parallel_size": b.tensor_parallel_size, "batch_size": b.batch_size,
                "model_path_on_nodes": self.path,
                "rows_by_replica": dict(self.by_replica), "rows_by_node": dict(self.by_node),
                "hosts": sorted(self.hosts)}

    # ------------------------------------------------------------------ EngineProtocol
    @property
    def alive(self) -> bool:
        """Always True: each job starts its own replicas."""
        return True

    @property
    def tokens_generated(self) -> int:
        """Tokens the replicas generated for this engine's jobs."""
        return self._tokens

    def scheduling(self) -> dict[str, int]:
        """No reserve: the cluster serves only this map."""
        return {"slots": 0, "reserve": 0, "background_held": 0, "background_in_flight": 0,
                "interactive_served": 0}

    def close(self, timeout: float = 120.0) -> None:
        """Nothing to free: each job's actors end with its pipeline."""

    def stream(self, prompt: Sequence[int], sampling: Sampling
               ) -> Generator[Event, None, None]:
        """Not on a cluster: a RayBackend serves DataFrame maps."""
        raise InvalidOptionError("a RayBackend serves df.gptoss.map and submit only; stream "
                                 "and complete run on the model loaded in the notebook")

    def generate(self, prompts: Sequence[Sequence[int]],
                 sampling: Sampling | Sequence[Sampling], *,
                 on_done: Callable[[Completion], None] | None = None,
                 priority: int = 0, cancel: threading.Event | None = None
                 ) -> list[Completion]:
        """Generate every prompt on the cluster; Completions in prompt order."""
        job = self.submit(prompts, sampling)
        try:
            for event in job.iter_events(cancel=cancel):
                if event.done is not None and on_done is not None:
                    on_done(event.done)
        except BaseException:
            job.abort()
            raise
        return [c for c in job.completions if c is not None]

    def submit(self, prompts: Sequence[Sequence[int]],
               sampling: Sampling | Sequence[Sampling], *, stream: bool = False,
               priority: int = 0) -> Job:
        """Start a Ray Data pipeline over ``prompts``; the :class:`Job` reports each
        request as its batch comes back."""
        if stream:
            raise InvalidOptionError("a RayBackend cannot stream: it serves maps")
        samplings = [sampling] * len(prompts) if isinstance(sampling, Sampling) \
            else list(sampling)
        return self._start(_Run(self, [list(p) for p in prompts], samplings))

    def submit_conversations(self, prompts: Sequence[Sequence[int]], sampling: Sampling, *,
                             tools: Sequence[Any], max_rounds: int, timeout_s: float) -> Job:
        """Start a pipeline whose replicas run each prompt's tool conversation to its end
        (the tools travel to them, pickled by Ray); each request's Completion is the
        conversation's last round, with the whole conversation's record
        (``Completion.conversation``)."""
        run = _Run(self, [list(p) for p in prompts], [sampling] * len(prompts),
                   {"tools": tuple(tools), "max_rounds": max_rounds, "timeout_s": timeout_s})
        return self._start(run)

    def _start(self, run: _Run) -> Job:
        job = Job([len(p) for p in run.prompts], on_abort=lambda _job: run.abort())
        run.job = job
        threading.Thread(target=run.serve, name="gptoss-ray-map", daemon=True).start()
        return job

    # ------------------------------------------------------------------ the pipeline
    def dataset(self, prompts: list[list[int]], samplings: list[Sampling],
                tools: dict[str, Any] | None = None) -> Any:
        """The Ray Data pipeline: blocks of ``batch_size`` rows through the replicas
        (``tools``: the replicas run tool conversations, see :class:`Replica`)."""
        import pandas as pd
        import ray

        b = self.backend
        size = b.batch_size
        rows = pd.DataFrame({"index": range(len(prompts)),
                             "prompt": [json.dumps(p) for p in prompts],
                             "sampling": [json.dumps(s.as_dict()) for s in samplings]})
        blocks = [rows.iloc[i:i + size] for i in range(0, len(rows), size)] or [rows]
        ds = ray.data.from_pandas(blocks)
        env = {"VLLM_CPU_OMP_THREADS_BIND": "nobind"} if self.gpus == 0 else {}
        env.update(b.env)
        return ds.map_batches(
            Replica, batch_size=None, batch_format="pandas",
            fn_constructor_kwargs={"path": self.path, "fingerprint": self.fingerprint,
                                   "engine_args": self.engine_args, **(tools or {})},
            compute=ray.data.ActorPoolStrategy(size=b.replicas,
                                               max_tasks_in_flight_per_actor=1),
            num_cpus=b.cpus_per_replica, num_gpus=self.gpus,
            runtime_env={"env_vars": env} if env else None)

    def record(self, out: dict[str, Any]) -> None:
        """Count one row served by the replica ``out`` names."""
        self._tokens += int(out.get("tokens", len(out["token_ids"])))
        self.by_replica[out["replica"]] = self.by_replica.get(out["replica"], 0) + 1
        self.by_node[out["node"]] = self.by_node.get(out["node"], 0) + 1
        self.hosts.add(out["host"])
        if out["vllm"]:
            self.info["vllm"] = out["vllm"]
        self.info["backend"] = self._provenance()


class _Run:
    """One job's pipeline, read on its own thread."""

    def __init__(self, engine: RayEngine, prompts: list[list[int]],
                 samplings: list[Sampling], tools: dict[str, Any] | None = None) -> None:
        self.engine, self.prompts, self.samplings = engine, prompts, samplings
        self.tools = tools
        self.job: Job | None = None
        self.lock = threading.Lock()
        self.left = set(range(len(prompts)))
        self.stopped = False

    def abort(self) -> None:
        """End every unfinished request now (``abort``); the pipeline stops at its next
        block."""
        with self.lock:
            self.stopped = True
            self._end_rest("abort")

    def _end_rest(self, reason: str, error: str | None = None) -> None:
        assert self.job is not None
        for i in sorted(self.left):
            self.job.finish(i, reason, error=error)
        self.left.clear()

    def serve(self) -> None:
        """Read the pipeline's blocks and finish each request they carry."""
        assert self.job is not None
        batches: Any = None
        try:
            batches = self.engine.dataset(self.prompts, self.samplings,
                                          self.tools).iter_batches(
                batch_size=None, batch_format="pandas", prefetch_batches=0)
            for batch in batches:
                with self.lock:
                    if self.stopped:
                        break
                    for index, text in zip(batch["index"], batch["completion"], strict=True):
                        self._finish(int(index), json.loads(text))
        except Exception as exc:
            with self.lock:
                if not self.stopped:
                    self.stopped = True
                    self.job.ended = True
                    self.job.fail(_clear(exc))
            return
        finally:
            if hasattr(batches, "close"):  # stops the pipeline (and its actors) now
                batches.close()
        with self.lock:  # a pipeline that ended short: nothing may wait forever
            self._end_rest("error", "the Ray pipeline ended without this row: run the map "
                                    "again (finished rows come from the cache)")

    def _finish(self, index: int, out: dict[str, Any]) -> None:
        assert self.job is not None
        if index not in self.left:
            return  # a retried batch's second answer
        self.left.discard(index)
        self.engine.record(out)
        done = Completion(index=index, token_ids=list(out["token_ids"]),
                          finish_reason=out["finish_reason"],
                          prompt_tokens=out["prompt_tokens"], latency_s=out["latency_s"],
                          first_token_s=out["first_token_s"], error=out["error"],
                          logprobs=out["logprobs"], conversation=out.get("conversation"))
        self.job.events.put(Event(index, [], done))


def _clear(exc: BaseException) -> BaseException:
    """One line for what stopped the pipeline: a fingerprint mismatch, an engine that
    would not load, or Ray's own error (an error of this module stays as it is: a bug)."""
    text = str(exc)
    if not type(exc).__module__.startswith("ray") and MISMATCH not in text:
        return exc
    for line in text.splitlines():
        if MISMATCH in line:
            return ModelFolderError(line[line.index(MISMATCH):].strip())
    if "vLLM could not load" in text:
        line = next(ln for ln in text.splitlines() if "vLLM could not load" in ln)
        return EngineLoadError("a Ray replica could not start its engine: " +
                               line[line.index("vLLM could not load"):].strip())
    first = next((ln.strip() for ln in text.splitlines() if ln.strip()), type(exc).__name__)
    return EngineDeadError(f"the Ray map stopped ({type(exc).__name__}: {first[:300]})")

