"""``RayBackend``: run a DataFrame map on a Ray cluster through Ray Data.

    import ray; ray.init(address="auto")        # or nothing: a local Ray on this machine
    df["label"] = df.gptoss.map("Classify: {text}", choices=labels,
                                backend=gm.RayBackend(replicas=4, gpus_per_replica=1))

A plain class of settings, checked when made; importing it imports no Ray. The map
renders, constrains, parses and caches exactly as in-process; only the generation moves
to ``replicas`` Ray Data actors, each holding this package's vLLM engine on the same
weights folder (its fingerprint checked against the driver's before it serves).
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..engine.memory import MemoryReport
from ..errors import InvalidOptionError, MissingDependencyError
from ..models import fingerprint, resolve_model
from ..session import Session, current, is_loaded
from ..settings import settings
from ..tiny import TINY_ENGINE_ARGS, tiny_info

#: how to get Ray Data, said by every error about it
INSTALL = "pip install 'gptoss-magics[ray]' (Ray Data, without replacing vLLM)"


def require_ray() -> Any:
    """The ``ray`` module with Ray Data, or :class:`MissingDependencyError` saying how
    to install it."""
    try:
        import ray
        import ray.data
    except ImportError as exc:
        raise MissingDependencyError(
            f"RayBackend needs Ray Data, which is not installed ({exc}): {INSTALL}") from None
    return ray


def _count(name: str, value: Any, low: float, *, whole: bool = True) -> Any:
    ok = isinstance(value, numbers.Integral) if whole else isinstance(value, numbers.Real)
    if isinstance(value, bool) or not ok or not value >= low:
        kind = "an integer" if whole else "a number"
        raise InvalidOptionError(f"RayBackend {name} must be {kind} >= {low:g}, not {value!r}")
    return value


class RayBackend:
    """Where a map's rows are generated: ``replicas`` copies of the model on a Ray
    cluster, fed through Ray Data (``map_batches`` over an actor pool).

    ``model``: the weights folder (or ``"tiny"``); by default the loaded model's, else
    ``settings().model``. Every node must see the same files (shared storage);
    ``model_path_on_nodes`` names the folder where the nodes mount it elsewhere.
    ``gpus_per_replica``: GPUs each replica asks Ray for (None: ``tensor_parallel_size``
    when the cluster has GPUs, else 0, a CPU replica); ``tensor_parallel_size``: vLLM's
    tensor parallelism inside one replica (one node). ``batch_size``: rows per Ray Data
    batch, the most a replica that dies can take with it (Ray runs them again).
    ``engine_args`` go to each replica's vLLM engine, over ``settings().engine_args``;
    ``env``: environment variables of the replicas (``{"VLLM_BATCH_INVARIANT": "1"}``).
    Before the map starts, a local Ray is started when none is (``ray.init()``)."""

    def __init__(self, replicas: int = 1, *, gpus_per_replica: float | None = None,
                 cpus_per_replica: float = 1, tensor_parallel_size: int = 1,
                 model: str | None = None, model_path_on_nodes: str | None = None,
                 batch_size: int = 16, engine_args: dict[str, Any] | None = None,
                 env: dict[str, str] | None = None) -> None:
        self.replicas = _count("replicas", replicas, 1)
        self.tensor_parallel_size = _count("tensor_parallel_size", tensor_parallel_size, 1)
        if gpus_per_replica is not None:
            _count("gpus_per_replica", gpus_per_replica, 0, whole=False)
            if 0 < gpus_per_replica < tensor_parallel_size:
                raise InvalidOptionError(
                    f"RayBackend gpus_per_replica ({gpus_per_replica:g}) must be at least "
                    f"tensor_parallel_size ({tensor_parallel_size}), or 0 for CPU replicas")
        self.gpus_per_replica = gpus_per_replica
        self.cpus_per_replica = _count("cpus_per_replica", cpus_per_replica, 0, whole=False)
        self.batch_size = _count("batch_size", batch_size, 1)
        if model is not None and not isinstance(model, str):
            raise InvalidOptionError(f"RayBackend model must be a folder or a model name, "
                                     f"not {type(model).__name__}")
        self.model = model
        self.model_path_on_nodes = model_path_on_nodes
        if engine_args is not None and not isinstance(engine_args, dict):
            raise InvalidOptionError("RayBackend engine_args must be a dict of vLLM engine "
                                     f"arguments, not {type(engine_args).__name__}")
        self.engine_args = dict(engine_args or {})
        if env is not None and not (isinstance(env, dict) and all(
                isinstance(k, str) and isinstance(v, str) for k, v in env.items())):
            raise InvalidOptionError("RayBackend env must be a dict of str to str (environment "
                                     "variables of the replicas)")
        self.env = dict(env or {})

    def __repr__(self) -> str:
        gpus = "auto" if self.gpus_per_replica is None else f"{self.gpus_per_replica:g}"
        return (f"RayBackend(replicas={self.replicas}, gpus_per_replica={gpus}, "
                f"tensor_parallel_size={self.tensor_parallel_size}, "
                f"batch_size={self.batch_size}, model={self.model!r})")

    # ------------------------------------------------------------------ for the map
    def _model(self) -> str:
        if self.model is not None:
            return self.model
        return str(current().path) if is_loaded() else settings().model

    def gpus(self, ray: Any) -> float:
        """GPUs each replica asks for (resolving ``None`` against the cluster)."""
        if self.gpus_per_replica is not None:
            return float(self.gpus_per_replica)
        has_gpus = float(ray.cluster_resources().get("GPU", 0)) > 0
        return float(self.tensor_parallel_size) if has_gpus else 0.0

    def open(self) -> Session:
        """A session whose engine is this cluster, for one map: the weights resolved and
        fingerprinted here (the replicas check theirs against it). Starts a local Ray
        when none is running."""
        ray = require_ray()
        path, tiny = resolve_model(self._model())
        fp = fingerprint(path)
        args: dict[str, Any] = dict(TINY_ENGINE_ARGS, use_tqdm_on_load=False) if tiny else {}
        args.update(settings().engine_args)
        args.update(self.engine_args)
        if self.tensor_parallel_size > 1:
            args["tensor_parallel_size"] = self.tensor_parallel_size
        args.pop("multiprocess", None)
        if not ray.is_initialized():
            ray.init(log_to_driver=False)
        from .driver import RayEngine  # Ray Data's pipeline: only once a map runs

        on_nodes = self.model_path_on_nodes or str(path)
        engine = RayEngine(self, on_nodes, fp.value, args, gpus=self.gpus(ray))
        label = (tiny_info(path) or {}).get("kind", "tiny") if tiny else self._model()
        now = MemoryReport.now()
        return Session(engine, label, Path(path), tiny, fp.value, now, now, fp.kind)


def check_tools(tools: Sequence[Any]) -> None:
    """Raise :class:`InvalidOptionError` for a tool that cannot travel to the replicas
    (Ray pickles them, a notebook's functions by value)."""
    ray = require_ray()
    for tool in tools:
        try:
            ray.cloudpickle.dumps(tool)
        except Exception as exc:
            name = getattr(tool, "recipient", type(tool).__name__)
            raise InvalidOptionError(
                f"the tool {name} cannot be sent to the Ray replicas ({type(exc).__name__}: "
                f"{str(exc)[:120]}): open connections and files inside the function, not "
                "around it") from None


def backend_session(backend: Any, tools: Sequence[Any] = ()) -> Session:
    """The session a map's ``backend=`` option stands for (checked, with the map's
    ``tools``)."""
    if not isinstance(backend, RayBackend):
        raise InvalidOptionError("backend must be a gptoss_magics.RayBackend(...) (or None: "
                                 f"the loaded model), not {type(backend).__name__}")
    if tools:
        check_tools(tools)
    return backend.open()
