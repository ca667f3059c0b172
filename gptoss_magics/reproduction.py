"""``reproduce``: re-run a saved answer with the settings its provenance records.

With tools, the recorded tool results are replayed instead of calling the tools again
(they may not exist any more, or answer differently today), and the reproduction says
whether the model asked for the same calls.

When the answer's provenance names a weights manifest (the model was loaded with
``load(..., manifest=FILE)``), ``same_manifest`` says whether the loaded model was verified
against the same one.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from . import audit, harmony
from .constraint import Constraint
from .engine import Sampling
from .errors import InvalidOptionError
from .options import Options
from .reply import Reply
from .replying import conversation_reply, make_reply, prompt_sha256
from .session import current
from .tools import Conversation, ToolCall, recorded_tools, run_conversations


@dataclass(frozen=True)
class Reproduction:
    """The outcome of :func:`reproduce`. ``same_calls``: the model asked for the same
    tool calls, with the same arguments, in the same order (True without tools).
    ``same_manifest``: the loaded weights were verified against the manifest the answer
    records (None when it records none)."""

    original: Mapping[str, Any]
    again: Reply
    same_prompt: bool
    same_weights: bool
    identical: bool
    same_calls: bool = True
    same_manifest: bool | None = None

    def __repr__(self) -> str:
        verdict = "identical" if self.identical else "DIFFERENT"
        notes = []
        if not self.same_weights:
            notes.append("different weights")
        if not self.same_prompt:
            notes.append("different prompt tokens")
        if not self.same_calls:
            notes.append("different tool calls")
        if self.same_manifest is False:
            recorded = str(self.original["provenance"]["weights_manifest"])
            notes.append(f"weights not verified against manifest {recorded[:19]}")
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
        reasoning_budget=sampling_data.get("reasoning_budget"), **_recorded_tools(prov))
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


def _recorded_tools(prov: Mapping[str, Any]) -> dict[str, Any]:
    """The recorded tools (re-made: they declare themselves, they do not run) and limits."""
    if not prov.get("tools"):
        return {}
    out: dict[str, Any] = {"tools": recorded_tools(prov["tools"])}
    for key in ("max_tool_rounds", "tool_timeout_s"):
        if key in prov:
            out[key] = prov[key]
    return out


def _recorded_calls(data: Mapping[str, Any]) -> list[ToolCall]:
    """The recorded trail (``tool_calls`` of a saved reply), checked."""
    calls = data.get("tool_calls") or []
    if isinstance(calls, (str, bytes, Mapping)) or not isinstance(calls, Sequence):
        raise InvalidOptionError(f"the recorded tool_calls must be a list, not {calls!r:.60}")
    out = []
    for call in calls:
        if not isinstance(call, Mapping) or not isinstance(call.get("name"), str) or \
                not isinstance(call.get("output", ""), str) or \
                not isinstance(call.get("error"), (str, type(None))):
            raise InvalidOptionError(f"a recorded tool call must have a name, an output text "
                                     f"and an error (or null), not {call!r:.80}")
        out.append(ToolCall.from_dict(call, latency=False))
    return out


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
    the token ids match (when known) or else the answer and reasoning texts match. With
    tools, no tool is called: the recorded results are replayed, and ``same_calls``
    says whether the model asked for the same calls. ``same_manifest`` checks the
    recorded weights manifest (``weights_manifest``) against the loaded model's.
    """
    data: Mapping[str, Any] = reply.to_dict() if isinstance(reply, Reply) else reply
    options, sampling, history = _recorded(data)
    recorded_calls = _recorded_calls(data)
    audit.check_writable()
    session = current()
    prompt = str(data["prompt"])
    ids = options.render(prompt, history, run_tools=True)
    if options.tools:
        conv = Conversation(ids, options.tools, max_rounds=options.max_tool_rounds,
                            timeout_s=options.tool_timeout_s, replay=recorded_calls)
        run_conversations(session.engine, [conv], sampling)
        again = conversation_reply(session, options, sampling, conv, prompt=prompt,
                                   history=history, audit_it=False)
    else:
        completion = session.engine.generate([ids], sampling)[0]
        again = make_reply(session, options, sampling, completion, prompt_ids=ids,
                           prompt=prompt, history=history, audit_it=False)
    same_calls = [(c.name, c.arguments) for c in recorded_calls] == \
        [(c.name, c.arguments) for c in again.tool_calls]
    return _report(data, again, prompt_sha256(ids), session.fingerprint, same_calls,
                   session.manifest)


def _report(data: Mapping[str, Any], again: Reply, sha: str, fingerprint: str,
            same_calls: bool, manifest: str | None) -> Reproduction:
    prov = data.get("provenance") or {}
    same_prompt = prov.get("prompt_sha256") in (None, sha)
    same_weights = prov.get("weights_fingerprint") == fingerprint
    recorded = prov.get("weights_manifest")
    same_manifest = None if recorded is None else recorded == manifest
    if data.get("token_ids"):
        identical = list(data["token_ids"]) == list(again.token_ids)
    else:
        identical = (data.get("final"), data.get("analysis")) == (again.final, again.analysis)
    identical = identical and same_calls
    audit.write({"kind": "reproduction", "identical": identical, "same_prompt": same_prompt,
                 "same_weights": same_weights, "same_calls": same_calls,
                 "same_manifest": same_manifest,
                 "prompt": data["prompt"], "original_final": data.get("final"),
                 "again_final": again.final, "provenance": again.provenance})
    return Reproduction(data, again, same_prompt, same_weights, identical, same_calls,
                        same_manifest)
