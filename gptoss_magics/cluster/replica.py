"""The Ray Data actor of a cluster map: one replica of the model.

Ray Data makes ``replicas`` of these (``map_batches(Replica, compute=ActorPoolStrategy)``)
on the cluster's nodes. Each one checks that the weights folder it sees has the driver's
fingerprint, then starts this package's vLLM engine on it (the same engine as in-process,
so sampling, seeds, constraints and reasoning budgets behave identically), and turns each
batch of token prompts into completions: token ids, finish reason, token counts and
log-probabilities, plus which replica and host served them. Rendering and parsing stay on
the driver.
"""

from __future__ import annotations

import json
import os
import socket
from typing import Any

from ..engine.types import Completion, Sampling
from ..errors import ModelFolderError
from ..tools.loop import MAX_ROUNDS, TIMEOUT_S

#: begins the one line the driver shows when a replica's weights differ from its own
MISMATCH = "weights fingerprint mismatch:"


def sampling_from_json(text: str) -> Sampling:
    """The :class:`Sampling` that ``json.dumps(sampling.as_dict())`` wrote."""
    fields = json.loads(text)
    for name in ("stop_token_ids", "choice"):
        if fields.get(name) is not None:
            fields[name] = tuple(fields[name])
    return Sampling(**fields)


def check_fingerprint(path: str, expected: str, host: str) -> None:
    """Raise :class:`ModelFolderError` unless the weights in ``path`` are the driver's."""
    from ..models import fingerprint

    got = fingerprint(path).value
    if got != expected:
        raise ModelFolderError(
            f"{MISMATCH} the replica on {host} reads {path} as {got[:19]}..., the driver's "
            f"weights are {expected[:19]}...: give every node the same weights folder "
            "(shared storage), or point RayBackend(model_path_on_nodes=...) at it")


class Replica:
    """A Ray Data callable class: one vLLM engine serving batches of token prompts.

    With ``tools`` (a map with tools; Ray pickles them, functions by value) each prompt
    is a tool conversation that runs here to its end, interleaved on this replica's
    engine as in-process (:class:`~gptoss_magics.tools.interleave.Interleaver`): the
    function tools and the python tool's sandbox run on this replica's host."""

    def __init__(self, path: str, fingerprint: str, engine_args: dict[str, Any],
                 tools: tuple[Any, ...] = (), max_rounds: int = MAX_ROUNDS,
                 timeout_s: float = TIMEOUT_S) -> None:
        from ..engine import Engine

        self.host = socket.gethostname()
        check_fingerprint(path, fingerprint, self.host)
        self.tools, self.max_rounds, self.timeout_s = tuple(tools), max_rounds, timeout_s
        self.engine = Engine.start(path, **engine_args)
        actor, self.node = _ray_ids()
        self.name = f"{actor}/{os.getpid()}"

    def __call__(self, batch: Any) -> Any:
        """Generate the batch's prompts (a pandas DataFrame with ``index``, ``prompt``
        and ``sampling`` columns, JSON); returns ``index`` and ``completion`` (JSON)."""
        import pandas as pd

        prompts = [json.loads(p) for p in batch["prompt"]]
        samplings = [sampling_from_json(s) for s in batch["sampling"]]
        if self.tools:
            out = self._converse(prompts, samplings[0])
        else:
            out = [self._json(c) for c in self.engine.generate(prompts, samplings)]
        return pd.DataFrame({"index": list(batch["index"]), "completion": out})

    def _converse(self, prompts: list[list[int]], sampling: Sampling) -> list[str]:
        """Run each prompt's tool conversation to its end; each one's last round, with
        the conversation's record."""
        from ..tools import Conversation
        from ..tools.interleave import Interleaver

        convs = {i: Conversation(p, self.tools, max_rounds=self.max_rounds,
                                 timeout_s=self.timeout_s) for i, p in enumerate(prompts)}
        failures: dict[int, str | None] = {}
        Interleaver(self.engine, convs, sampling, failures.__setitem__).run()
        out = []
        for i, conv in convs.items():
            record = dict(conv.record(), failure=failures.get(i))
            last = conv.rounds[-1].completion
            out.append(self._json(last, conversation=record,
                                  tokens=conv.completion_tokens))
        return out

    def _json(self, c: Completion, conversation: dict[str, Any] | None = None,
              tokens: int | None = None) -> str:
        return json.dumps({
            "token_ids": c.token_ids, "finish_reason": c.finish_reason,
            "prompt_tokens": c.prompt_tokens, "latency_s": c.latency_s,
            "first_token_s": c.first_token_s, "error": c.error, "logprobs": c.logprobs,
            "conversation": conversation,
            "tokens": len(c.token_ids) if tokens is None else tokens,
            "replica": self.name, "node": self.node, "host": self.host,
            "vllm": self.engine.info.get("vllm")})

    def __del__(self) -> None:
        engine = getattr(self, "engine", None)
        if engine is not None:
            engine.close()


def _ray_ids() -> tuple[str, str]:
    """This actor's id and its node's id (shortened), or ``local`` outside Ray."""
    try:
        import ray

        context = ray.get_runtime_context()
        return str(context.get_actor_id())[:12], str(context.get_node_id())[:12]
    except Exception:  # not in a Ray actor (a direct call, in a test)
        return "local", "local"
