"""Past one machine: ``df.gptoss.map(..., backend=gm.RayBackend(replicas=4))``.

* :class:`RayBackend` (:mod:`.backend`): where a map runs, a plain class of settings;
  importing it imports no Ray;
* :mod:`.driver`: :class:`RayEngine`, the engine seam on the driver; each submission
  becomes one Ray Data pipeline (``from_pandas`` then ``map_batches`` over an actor
  pool) whose rows come back as their batches finish;
* :mod:`.replica`: the Ray Data actor: checks the weights' fingerprint, then serves
  batches on this package's own vLLM engine.

Rendering, constraints, parsing, the result cache and the audit log stay on the driver
and are the in-process ones: only token ids travel.
"""

from __future__ import annotations

from .backend import RayBackend

__all__ = ["RayBackend"]
