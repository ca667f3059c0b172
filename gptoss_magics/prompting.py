"""Prompting the loaded model: render, generate, read the reply.

    import gptoss_magics as gm
    reply = gm.complete("Is 7 prime?", effort="high")
    replies = gm.complete_batch(["a", "b", "c"], effort="low")
    for piece in gm.stream("Explain duration risk."): ...
    gm.reproduce(reply)

Every function takes the prompt options of :mod:`gptoss_magics.options`; unset ones
come from the settings.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Generator, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from typing_extensions import Unpack

from . import audit, harmony
from .constraint import Constraint
from .engine import Completion, Sampling
from .errors import InvalidOptionError
from .options import Options, PromptOptions, with_options
from .reply import Reply, read_completion
from .session import Session, current, record_speed


def prompt_sha256(ids: Sequence[int]) -> str:
    """The digest of a prompt's token ids, as provenance records it."""
    return hashlib.sha256(json.dumps(list(ids)).encode()).hexdigest()


def make_reply(session: Session, options: Options, sampling: Sampling, completion: Any, *,
               parsed: harmony.Parsed | None = None, prompt_ids: Sequence[int] | None = None,
               prompt: str = "", history: Sequence[harmony.Turn] = (),
               audit_it: bool = True) -> Reply:
    """The Reply for one engine Completion (appended to the audit log when it is on)."""
    reading = read_completion(completion, constraint=options.constraint,
                              reasoning_budget=sampling.reasoning_budget, parsed=parsed)
    p = reading.parsed
    provenance = session.provenance(options, sampling.as_dict())
    if prompt_ids is not None:
        provenance["prompt_sha256"] = prompt_sha256(prompt_ids)
    if history:
        provenance["history"] = [[t.user, t.final] for t in history]
    reply = Reply(
        final=p.final, analysis=p.analysis, finish_reason=reading.finish_reason,
        truncated=p.truncated, prompt_tokens=reading.prompt_tokens,
        completion_tokens=reading.completion_tokens, latency_s=round(completion.latency_s, 4),
        effort=options.effort, model=session.label, analysis_tokens=p.analysis_tokens,
        first_token_s=(None if completion.first_token_s is None
                       else round(completion.first_token_s, 4)),
        malformed=p.malformed, recovered=p.recovered, reasoning_cut=reading.reasoning_cut,
        confidence=reading.confidence, value=reading.value, value_error=reading.value_error,
        error=reading.error, notice=session.notice, prompt=prompt,
        token_ids=tuple(completion.token_ids), provenance=provenance)
    if audit_it:
        audit.log_reply(reply)
    return reply


def _check_history(history: Any) -> tuple[harmony.Turn, ...]:
    if not isinstance(history, (list, tuple)) or not all(
            isinstance(t, harmony.Turn) for t in history):
        raise InvalidOptionError("history must be a list of gptoss_magics.Turn(user, final) "
                                 f"(or a %%gptoss --chat), not {history!r:.60}")
    return tuple(history)


def _check_prompt(prompt: Any) -> str:
    if not isinstance(prompt, str):
        raise InvalidOptionError(f"the prompt must be a string, not {type(prompt).__name__}")
    return prompt


@with_options()
def complete(prompt: str, *, history: Sequence[harmony.Turn] = (),
             **options: Unpack[PromptOptions]) -> Reply:
    """Prompt the loaded model once and return its parsed :class:`Reply`.

    ``history`` holds earlier turns of a chat (their reasoning is not sent again).
    ``reasoning_budget`` caps the reasoning tokens: when it runs out the model is made
    to answer at once. ``confidence=True`` fills ``reply.confidence``. ``choices``,
    ``regex`` or ``schema`` constrain the final answer (the reasoning stays free);
    ``reply.value`` holds it read back (the pydantic object, for a model).
    """
    return complete_batch([_check_prompt(prompt)], history=history, **options)[0]


@with_options()
def complete_batch(prompts: Sequence[str], *, history: Sequence[harmony.Turn] = (),
                   **options: Unpack[PromptOptions]) -> list[Reply]:
    """Prompt the model with many prompts in one engine batch; one Reply per prompt,
    in order. Options as for :func:`complete`."""
    if isinstance(prompts, str) or not isinstance(prompts, Sequence):
        raise InvalidOptionError("complete_batch takes a list of prompts; for one prompt use "
                                 "complete(prompt)")
    texts = [_check_prompt(p) for p in prompts]
    turns = _check_history(history)
    opts = Options.resolve(**options)
    audit.check_writable()
    session = current()
    sampling = opts.sampling()
    ids = [opts.render(p, turns) for p in texts]
    completions = session.engine.generate(ids, sampling)
    replies = [make_reply(session, opts, sampling, c, prompt_ids=i, prompt=t, history=turns)
               for c, i, t in zip(completions, ids, texts, strict=True)]
    if replies:
        record_speed(session, sum(r.completion_tokens for r in replies),
                     max(r.latency_s for r in replies))
    return replies


@with_options()
def stream(prompt: str, *, history: Sequence[harmony.Turn] = (),
           **options: Unpack[PromptOptions]) -> Iterator[tuple[str | None, str] | Reply]:
    """Stream one reply: yields ``(channel, text)`` deltas as they are generated,
    then the finished :class:`Reply`. Closing the iterator aborts the request and
    yields nothing more; see :class:`StreamHandle` for keeping the partial reply.
    Options as for :func:`complete`."""
    handle = StreamHandle(prompt, history=history, **options)
    yield from handle.deltas()
    yield handle.reply()


class StreamHandle:
    """A streaming request whose partial Reply survives an interrupt.

    Iterate :meth:`deltas` for ``(channel, text)`` pieces; :meth:`reply` gives the
    Reply of what was generated, complete or not (``finish_reason='abort'`` when the
    stream was cut short).
    """

    def __init__(self, prompt: str, *, history: Sequence[harmony.Turn] = (),
                 **options: Unpack[PromptOptions]) -> None:
        self.prompt = _check_prompt(prompt)
        self.history = _check_history(history)
        self.options = Options.resolve(**options)
        audit.check_writable()
        self.session = current()
        self.sampling = self.options.sampling()
        self.prompt_ids = self.options.render(prompt, self.history)
        self.decoder = harmony.StreamDecoder()
        self.token_ids: list[int] = []
        self.completion: Completion | None = None
        self.t0 = time.perf_counter()
        self.first_token_s: float | None = None
        self._reply: Reply | None = None
        self._events: Generator[Any, None, None] | None = None

    def close(self) -> None:
        """Abort the request if it is still running (idempotent)."""
        if self._events is not None:
            self._events.close()

    def deltas(self) -> Generator[tuple[str | None, str], None, None]:
        """Yield text deltas as tokens arrive."""
        self._events = self.session.engine.stream(self.prompt_ids, self.sampling)
        for event in self._events:
            if event.new_token_ids:
                if self.first_token_s is None:
                    self.first_token_s = time.perf_counter() - self.t0
                self.token_ids.extend(event.new_token_ids)
                yield from self.decoder.feed(event.new_token_ids)
            if event.done is not None:
                self.completion = event.done

    def partial(self, analysis: str, final: str) -> Reply:
        """A Reply of what has streamed so far (``finish_reason='running'``), for live
        displays, from the texts collected from :meth:`deltas`; it is not audited."""
        return Reply(final=final, analysis=analysis,
                     finish_reason="running", truncated=False,
                     prompt_tokens=len(self.prompt_ids), completion_tokens=len(self.token_ids),
                     latency_s=time.perf_counter() - self.t0, effort=self.options.effort,
                     model=self.session.label, analysis_tokens=self.decoder.analysis_tokens,
                     notice=self.session.notice)

    def reply(self) -> Reply:
        """The Reply for what has been generated (complete, or cut short)."""
        if self._reply is not None:
            return self._reply
        if self.completion is None:
            self.close()  # cut short: make sure the engine lets go of the request
        comp = self.completion or Completion(
            0, list(self.token_ids), "abort", len(self.prompt_ids),
            time.perf_counter() - self.t0, self.first_token_s)
        comp.token_ids = list(self.token_ids)
        parsed = self.decoder.finish(comp.finish_reason)
        reply = make_reply(self.session, self.options, self.sampling, comp, parsed=parsed,
                           prompt_ids=self.prompt_ids, prompt=self.prompt, history=self.history)
        self._reply = reply
        record_speed(self.session, reply.completion_tokens, reply.latency_s)
        return reply


# ---------------------------------------------------------------------- reproduce
@dataclass(frozen=True)
class Reproduction:
    """The outcome of :func:`reproduce`."""

    original: Mapping[str, Any]
    again: Reply
    same_prompt: bool
    same_weights: bool
    identical: bool

    def __repr__(self) -> str:
        verdict = "identical" if self.identical else "DIFFERENT"
        notes = []
        if not self.same_weights:
            notes.append("different weights")
        if not self.same_prompt:
            notes.append("different prompt tokens")
        extra = f" ({', '.join(notes)})" if notes else ""
        return f"Reproduction: {verdict}{extra}; again: {self.again.final[:80]!r}"


def _recorded(data: Any) -> tuple[Options, Sampling, list[harmony.Turn]]:
    """The options, sampling and chat history a saved answer records; its values are
    checked like a call's (a received notebook may hold anything)."""
    if not isinstance(data, Mapping):
        raise InvalidOptionError("reproduce takes a Reply, reply.to_dict() or a saved reply's "
                                 f"JSON (a dict), not {type(data).__name__}")
    prov = data.get("provenance")
    if not isinstance(prov, Mapping) or not isinstance(data.get("prompt"), str) or \
            not isinstance(prov.get("sampling"), Mapping):
        raise InvalidOptionError("this answer carries no provenance or prompt to re-run it "
                                 "from")
    sampling_data = dict(prov["sampling"])
    unknown = set(sampling_data) - set(Sampling.__dataclass_fields__)
    if unknown:
        raise InvalidOptionError(f"the recorded sampling has unknown settings: "
                                 f"{', '.join(sorted(map(str, unknown)))}")
    options = Options.resolve(
        effort=prov.get("effort"), max_tokens=sampling_data.get("max_tokens", 1024),
        temperature=sampling_data.get("temperature", 1.0),
        top_p=sampling_data.get("top_p", 1.0), seed=sampling_data.get("seed"),
        instructions=prov.get("instructions") or "",
        reasoning_budget=sampling_data.get("reasoning_budget"))
    sampling_data.update(_recorded_constraint(sampling_data))
    for key in ("current_date", "knowledge_cutoff"):
        if not isinstance(prov.get(key), (str, type(None))):
            raise InvalidOptionError(f"the recorded {key} must be a string, not "
                                     f"{prov.get(key)!r:.40}")
    options = replace(options, current_date=prov.get("current_date"),
                      knowledge_cutoff=prov.get("knowledge_cutoff") or options.knowledge_cutoff)
    sampling_data.update(max_tokens=options.max_tokens, temperature=options.temperature,
                         top_p=options.top_p, seed=options.seed,
                         reasoning_budget=options.reasoning_budget)
    return options, Sampling(**sampling_data), _recorded_history(prov.get("history", []))


def _recorded_constraint(sampling: Mapping[str, Any]) -> dict[str, Any]:
    """The recorded stop tokens, log-probabilities and constraint, checked."""
    out: dict[str, Any] = {}
    stops = sampling.get("stop_token_ids", harmony.STOP_TOKEN_IDS)
    if isinstance(stops, (str, bytes)) or not isinstance(stops, Sequence) or not all(
            isinstance(t, int) and not isinstance(t, bool) and 0 <= t < 2**31 for t in stops):
        raise InvalidOptionError(f"the recorded stop_token_ids must be token ids, not "
                                 f"{stops!r:.60}")
    out["stop_token_ids"] = tuple(stops)
    if sampling.get("logprobs") not in (None, True, False):
        raise InvalidOptionError("the recorded logprobs must be true, false or null")
    schema = sampling.get("json_schema")
    if schema is not None:
        try:
            schema = json.loads(schema) if isinstance(schema, str) else None
        except ValueError:
            schema = None
        if schema is None:
            raise InvalidOptionError("the recorded json_schema is not JSON text")
    choice = sampling.get("choice")
    constraint = Constraint.make(choice, schema, sampling.get("regex"))
    if choice is not None:
        out["choice"] = constraint.choices
    return out


def _recorded_history(history: Any) -> list[harmony.Turn]:
    if isinstance(history, (str, bytes)) or not isinstance(history, Sequence) or not all(
            isinstance(t, Sequence) and not isinstance(t, (str, bytes)) and len(t) == 2
            and all(isinstance(x, str) for x in t) for t in history):
        raise InvalidOptionError("the recorded history must be a list of [question, answer] "
                                 f"pairs of strings, not {history!r:.60}")
    return [harmony.Turn(u, f) for u, f in history]


def reproduce(reply: Reply | Mapping[str, Any]) -> Reproduction:
    """Re-run a saved answer with the settings recorded in its provenance.

    ``reply`` is a :class:`Reply`, ``reply.to_dict()``, or the JSON of a saved notebook
    output (``application/vnd.gptoss.reply+json``). The answer counts as identical when
    the token ids match (when known) or else the answer and reasoning texts match.
    """
    data: Mapping[str, Any] = reply.to_dict() if isinstance(reply, Reply) else reply
    options, sampling, history = _recorded(data)
    audit.check_writable()
    session = current()
    ids = options.render(str(data["prompt"]), history)
    completion = session.engine.generate([ids], sampling)[0]
    again = make_reply(session, options, sampling, completion, prompt_ids=ids,
                       prompt=str(data["prompt"]), history=history, audit_it=False)
    prov = data.get("provenance") or {}
    same_prompt = prov.get("prompt_sha256") in (None, prompt_sha256(ids))
    same_weights = prov.get("weights_fingerprint") == session.fingerprint
    if data.get("token_ids"):
        identical = list(data["token_ids"]) == list(again.token_ids)
    else:
        identical = (data.get("final"), data.get("analysis")) == (again.final, again.analysis)
    audit.write({"kind": "reproduction", "identical": identical, "same_prompt": same_prompt,
                 "same_weights": same_weights, "prompt": data["prompt"],
                 "original_final": data.get("final"), "again_final": again.final,
                 "provenance": again.provenance})
    return Reproduction(data, again, same_prompt, same_weights, identical)
