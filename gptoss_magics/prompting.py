"""Prompting the loaded model: render, generate, read the reply.

    import gptoss_magics as gm
    reply = gm.complete("Is 7 prime?", effort="high")
    replies = gm.complete_batch(["a", "b", "c"], effort="low")
    for piece in gm.stream("Explain duration risk."): ...
    reply = gm.complete("EUR/USD on 2026-03-31?", tools=[fx_rate])
    gm.reproduce(reply)

Every function takes the prompt options of :mod:`gptoss_magics.options`; unset ones
come from the settings. With ``tools``, each prompt is a conversation: the model may call
the tools (see :mod:`gptoss_magics.tools`) before it answers.
"""

from __future__ import annotations

import time
from collections.abc import Generator, Iterable, Iterator, Mapping, Sequence

from typing_extensions import Unpack

from . import audit, harmony
from .engine import Completion
from .errors import InvalidOptionError
from .options import Options, PromptOptions, with_options
from .reply import Reply
from .replying import (
    check_history,
    check_prompt,
    conversation_reply,
    make_reply,
    prompt_sha256,
)
from .reproduction import Reproduction, reproduce
from .session import current, record_speed
from .tools import Conversation, describe_call, run_conversations

__all__ = ["Reproduction", "StreamHandle", "complete", "complete_batch", "make_reply",
           "prompt_sha256", "reproduce", "stream"]


def _conversation(options: Options, prompt_ids: Sequence[int]) -> Conversation:
    return Conversation(prompt_ids, options.tools, max_rounds=options.max_tool_rounds,
                        timeout_s=options.tool_timeout_s)


@with_options()
def complete(prompt: str, *, history: Sequence[harmony.Turn] = (),
             **options: Unpack[PromptOptions]) -> Reply:
    """Prompt the loaded model once and return its parsed :class:`Reply`.

    ``history`` holds earlier turns of a chat (their reasoning is not sent again).
    ``reasoning_budget`` caps the reasoning tokens: when it runs out the model is made
    to answer at once. ``confidence=True`` fills ``reply.confidence``. ``choices``,
    ``regex`` or ``schema`` constrain the final answer (the reasoning stays free);
    ``reply.value`` holds it read back (the pydantic object, for a model). ``tools``
    (Python functions, or ``"python"``) may be called by the model before it answers;
    ``reply.tool_calls`` holds the trail, and a failing tool never raises here.
    """
    return complete_batch([check_prompt(prompt)], history=history, **options)[0]


@with_options()
def complete_batch(prompts: Iterable[str], *, history: Sequence[harmony.Turn] = (),
                   **options: Unpack[PromptOptions]) -> list[Reply]:
    """Prompt the model with many prompts in one engine batch; one Reply per prompt,
    in order. Options as for :func:`complete` (with tools, each round of every prompt
    goes to the engine in one batch, and the calls of a round run side by side)."""
    # any iterable of strings (a list, a Series, a generator), but not one string
    if isinstance(prompts, (str, bytes, Mapping)) or not isinstance(prompts, Iterable):
        raise InvalidOptionError("complete_batch takes a list of prompts; for one prompt use "
                                 "complete(prompt)")
    texts = [check_prompt(p) for p in prompts]
    turns = check_history(history)
    opts = Options.resolve(**options)
    audit.check_writable()
    session = current()
    sampling = opts.sampling()
    ids = [opts.render(p, turns, run_tools=True) for p in texts]
    if opts.tools:
        convs = [_conversation(opts, i) for i in ids]
        run_conversations(session.engine, convs, sampling)
        replies = [conversation_reply(session, opts, sampling, c, prompt=t, history=turns)
                   for c, t in zip(convs, texts, strict=True)]
    else:
        completions = session.engine.generate(ids, sampling)
        replies = [make_reply(session, opts, sampling, c, prompt_ids=i, prompt=t,
                              history=turns)
                   for c, i, t in zip(completions, ids, texts, strict=True)]
    if replies:
        record_speed(session, sum(r.completion_tokens for r in replies),
                     max(r.latency_s for r in replies))
    return replies


@with_options()
def stream(prompt: str, *, history: Sequence[harmony.Turn] = (),
           **options: Unpack[PromptOptions]) -> Iterator[tuple[str | None, str] | Reply]:
    """Stream one reply: yields ``(channel, text)`` deltas as they are generated,
    then the finished :class:`Reply`. With tools, every round streams, and each call
    shows between rounds as a ``("tool", "fx_rate({...}) → 1.08 (0.01 s)\\n")`` delta.
    Closing the iterator aborts the request and yields nothing more; see
    :class:`StreamHandle` for keeping the partial reply. Options as for :func:`complete`."""
    handle = StreamHandle(prompt, history=history, **options)
    finished = False
    try:
        yield from handle.deltas()
        finished = True
    finally:
        if not finished:  # closed early: let go of the request and the tools' sessions
            handle.close()
            handle.conversation.close()
    yield handle.reply()


class StreamHandle:
    """A streaming request whose partial Reply survives an interrupt.

    Iterate :meth:`deltas` for ``(channel, text)`` pieces (``channel`` is ``"tool"`` for a
    tool call's line); :meth:`reply` gives the Reply of what was generated, complete or
    not (``finish_reason='abort'`` when the stream was cut short), with the tool calls
    made so far.
    """

    def __init__(self, prompt: str, *, history: Sequence[harmony.Turn] = (),
                 **options: Unpack[PromptOptions]) -> None:
        self.prompt = check_prompt(prompt)
        self.history = check_history(history)
        self.options = Options.resolve(**options)
        audit.check_writable()
        self.session = current()
        self.sampling = self.options.sampling()
        self.prompt_ids = self.options.render(prompt, self.history, run_tools=True)
        self.conversation = _conversation(self.options, self.prompt_ids)
        self.t0 = time.perf_counter()
        self.first_token_s: float | None = None
        self._reply: Reply | None = None
        self._events: Generator[object, None, None] | None = None
        self._streaming = False
        self._new_round()

    def _new_round(self) -> None:
        self.decoder = harmony.StreamDecoder()
        self.token_ids: list[int] = []
        self.completion: Completion | None = None
        self._round_ids: list[int] = []
        self._round_t0 = time.perf_counter()

    def close(self) -> None:
        """Abort the request if it is still running (idempotent)."""
        if self._events is not None:
            self._events.close()

    def deltas(self) -> Generator[tuple[str | None, str], None, None]:
        """Yield text deltas as tokens arrive, round after round with tools."""
        conv = self.conversation
        while (ids := conv.next_prompt()) is not None:
            yield from self._round(ids)
            self._end_round()
            if conv.pending is not None:
                call = conv.run_pending()
                yield ("tool", describe_call(call) + "\n")

    def _round(self, ids: list[int]) -> Generator[tuple[str | None, str], None, None]:
        self._round_ids = ids
        self._round_t0 = time.perf_counter()
        self._streaming = True
        events = self._events = self.session.engine.stream(ids, self.sampling)
        for event in events:
            if event.new_token_ids:
                if self.first_token_s is None:
                    self.first_token_s = time.perf_counter() - self.t0
                self.token_ids.extend(event.new_token_ids)
                yield from self.decoder.feed(event.new_token_ids)
            if event.done is not None:
                self.completion = event.done

    def _end_round(self) -> None:
        """Give the round just streamed (finished or cut short) to the conversation."""
        comp = self.completion or Completion(
            0, list(self.token_ids), "abort", len(self._round_ids) or len(self.prompt_ids),
            time.perf_counter() - self._round_t0,
            self.first_token_s if not self.conversation.rounds else None)
        comp.token_ids = list(self.token_ids)
        self.conversation.feed(comp, self.decoder.finish(comp.finish_reason), run=False)
        self._streaming = False
        self._new_round()

    def partial(self, analysis: str, final: str) -> Reply:
        """A Reply of what has streamed so far (``finish_reason='running'``), for live
        displays, from the texts collected from :meth:`deltas`; it is not audited."""
        conv = self.conversation
        return Reply(final=final, analysis=analysis,
                     finish_reason="running", truncated=False,
                     prompt_tokens=len(self.prompt_ids) + conv.result_tokens,
                     completion_tokens=conv.completion_tokens + len(self.token_ids),
                     latency_s=time.perf_counter() - self.t0, effort=self.options.effort,
                     model=self.session.label,
                     analysis_tokens=conv.analysis_tokens + self.decoder.analysis_tokens,
                     notice=self.session.notice, tool_calls=tuple(conv.calls))

    def reply(self) -> Reply:
        """The Reply for what has been generated (complete, or cut short)."""
        if self._reply is not None:
            return self._reply
        conv = self.conversation
        if not conv.done:
            self.close()  # cut short: make sure the engine lets go of the request
            if self._streaming or not conv.rounds:
                self._end_round()
            conv.stop()
        conv.close()
        if self.options.tools:
            reply = conversation_reply(self.session, self.options, self.sampling, conv,
                                       prompt=self.prompt, history=self.history)
        else:
            last = conv.rounds[-1]
            reply = make_reply(self.session, self.options, self.sampling, last.completion,
                               parsed=last.parsed, prompt_ids=self.prompt_ids,
                               prompt=self.prompt, history=self.history)
        self._reply = reply
        record_speed(self.session, reply.completion_tokens, reply.latency_s)
        return reply
