"""Replies made from what the engine returned: one completion, or a tool conversation."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from . import audit, harmony
from .engine import Sampling
from .errors import InvalidOptionError
from .options import Options
from .reply import Reply, read_completion
from .session import Session
from .tools import Conversation, trail_record


def prompt_sha256(ids: Sequence[int]) -> str:
    """The digest of a prompt's token ids, as provenance records it."""
    return hashlib.sha256(json.dumps(list(ids)).encode()).hexdigest()


def check_history(history: Any) -> tuple[harmony.Turn, ...]:
    """A chat history: a list of :class:`harmony.Turn`."""
    if not isinstance(history, (list, tuple)) or not all(
            isinstance(t, harmony.Turn) for t in history):
        raise InvalidOptionError("history must be a list of gptoss_magics.Turn(user, final) "
                                 f"(or a %%gptoss --chat), not {history!r:.60}")
    return tuple(history)


def check_prompt(prompt: Any) -> str:
    """A prompt: a string."""
    if not isinstance(prompt, str):
        raise InvalidOptionError(f"the prompt must be a string, not {type(prompt).__name__}")
    return prompt


def build_reply(session: Session, options: Options, sampling: Sampling, completion: Any, *,
                parsed: harmony.Parsed | None = None, prompt_ids: Sequence[int] | None = None,
                prompt: str = "", history: Sequence[harmony.Turn] = ()) -> Reply:
    """The Reply for one engine Completion (not audited)."""
    reading = read_completion(completion, constraint=options.constraint,
                              reasoning_budget=sampling.reasoning_budget, parsed=parsed)
    p = reading.parsed
    provenance = session.provenance(options, sampling.as_dict())
    if prompt_ids is not None:
        provenance["prompt_sha256"] = prompt_sha256(prompt_ids)
    if history:
        provenance["history"] = [[t.user, t.final] for t in history]
    return Reply(
        final=p.final, analysis=p.analysis, finish_reason=reading.finish_reason,
        truncated=p.truncated and reading.finish_reason != "error",
        prompt_tokens=reading.prompt_tokens,
        completion_tokens=reading.completion_tokens, latency_s=round(completion.latency_s, 4),
        effort=options.effort, model=session.label, analysis_tokens=p.analysis_tokens,
        first_token_s=(None if completion.first_token_s is None
                       else round(completion.first_token_s, 4)),
        malformed=p.malformed, recovered=p.recovered, reasoning_cut=reading.reasoning_cut,
        confidence=reading.confidence, value=reading.value, value_error=reading.value_error,
        error=reading.error, notice=session.notice, prompt=prompt,
        token_ids=tuple(completion.token_ids), provenance=provenance)


def make_reply(session: Session, options: Options, sampling: Sampling, completion: Any, *,
               parsed: harmony.Parsed | None = None, prompt_ids: Sequence[int] | None = None,
               prompt: str = "", history: Sequence[harmony.Turn] = (),
               audit_it: bool = True) -> Reply:
    """The Reply for one engine Completion (appended to the audit log when it is on)."""
    reply = build_reply(session, options, sampling, completion, parsed=parsed,
                        prompt_ids=prompt_ids, prompt=prompt, history=history)
    if audit_it:
        audit.log_reply(reply)
    return reply


def conversation_reply(session: Session, options: Options, sampling: Sampling,
                       conv: Conversation, *, prompt: str = "",
                       history: Sequence[harmony.Turn] = (), audit_it: bool = True) -> Reply:
    """The Reply of a tool conversation: the answer, flags and value from its last
    round; the reasoning, token counts and latency of the whole chain; the trail of
    calls. An interrupted conversation is marked ``finish_reason='abort'``."""
    last = conv.rounds[-1]
    reply = build_reply(session, options, sampling, last.completion, parsed=last.parsed,
                        prompt_ids=conv.prompt_ids, prompt=prompt, history=history)
    first = conv.rounds[0].completion.first_token_s
    reply.provenance["tool_calls"] = trail_record(conv.calls)
    reply = replace(
        reply, analysis=conv.analysis(), analysis_tokens=conv.analysis_tokens,
        prompt_tokens=len(conv.prompt_ids) + conv.result_tokens,
        completion_tokens=conv.completion_tokens, latency_s=round(conv.elapsed_s, 4),
        first_token_s=None if first is None else round(first, 4),
        token_ids=tuple(conv.transcript_ids), tool_calls=tuple(conv.calls),
        tool_limit_hit=conv.limit_hit)
    if conv.aborted and reply.finish_reason == "stop":
        reply = replace(reply, finish_reason="abort", truncated=True)
    if audit_it:
        audit.log_reply(reply)
    return reply
