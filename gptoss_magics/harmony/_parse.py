"""Parsing a completion: ids -> messages, answer, reasoning, flags. Never raises."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from ._format import (
    CALL,
    CHANNEL,
    CONSTRAIN,
    END,
    FIRST_SPECIAL,
    MESSAGE,
    RETURN,
    STOP_TOKEN_IDS,
    VOCAB_SIZE,
    decode,
    encoding,
    forced_final_ids,
)


@dataclass(frozen=True)
class Message:
    """One parsed harmony message."""

    channel: str | None
    text: str
    recipient: str | None = None
    complete: bool = True


@dataclass(frozen=True)
class Parsed:
    """What the model said, recovered from its completion ids.

    ``final`` is the answer; ``analysis`` the reasoning. ``truncated`` means the
    generation stopped before its end (max_tokens, or an abort). ``malformed`` means
    the ids did not follow the harmony format; ``recovered`` means ``final`` was taken
    from raw text because no final channel was found. ``error`` holds the parser's
    complaint, if any.
    """

    final: str
    analysis: str
    messages: tuple[Message, ...]
    truncated: bool
    malformed: bool
    recovered: bool
    error: str | None
    analysis_tokens: int
    final_tokens: int

    @property
    def has_final(self) -> bool:
        """True when the model wrote a final-channel message."""
        return any(m.channel == "final" for m in self.messages)


@dataclass
class StreamDecoder:
    """Incremental harmony parser: feed completion ids, get (channel, text) deltas.

    ``parse_completion`` uses it too, so streamed and batch replies are parsed by
    the same code.
    """

    _parser: object = field(init=False, repr=False)
    _ids: list[int] = field(default_factory=list, init=False, repr=False)
    _error: str | None = field(default=None, init=False)
    _bad_ids: int = field(default=0, init=False)
    _raw: list[int] = field(default_factory=list, init=False, repr=False)
    _in_header: bool = field(default=False, init=False, repr=False)
    _header_start: int = field(default=0, init=False, repr=False)
    _raw_sent: int = field(default=0, init=False, repr=False)
    _counts: dict[str, int] = field(default_factory=dict, init=False)
    _fed: list[int] = field(default_factory=list, init=False, repr=False)
    _pending: list[int] = field(default_factory=list, init=False, repr=False)

    def __post_init__(self) -> None:
        from openai_harmony import Role, StreamableParser

        self._parser = StreamableParser(encoding(), Role.ASSISTANT, strict=False)

    def feed(self, ids: Iterable[int]) -> list[tuple[str | None, str]]:
        """Consume ids; return the text deltas they add, tagged with their channel."""
        out: list[tuple[str | None, str]] = []
        for t in ids:
            self._ids.append(t)
            for u in self._unforce(t):
                self._process(u, out)
        if self._raw:
            # no harmony structure from here on: stream the raw text (held back while a
            # multi-byte character is incomplete)
            text = decode(i for i in self._raw if i < FIRST_SPECIAL).rstrip("\ufffd")
            if len(text) > self._raw_sent:
                out.append((None, text[self._raw_sent:]))
                self._raw_sent = len(text)
        return out

    def _unforce(self, t: int) -> list[int]:
        """Tokens to parse, after taking out what a reasoning budget wrote twice.

        When a budget runs out while the model is itself writing the end of its analysis
        (``<|end|><|start|>...``), the engine starts its forced
        ``<|end|><|start|>assistant<|channel|>final<|message|>`` over again after the
        model's partial one. Tokens that could begin that sequence are held back; a new
        ``<|end|>`` arriving before it is complete drops the partial copy. The held-back
        tokens are header tokens, so no text is delayed."""
        forced = forced_final_ids()
        if not self._pending and t != END:
            return [t]
        candidate = [*self._pending, t]
        if tuple(candidate) == forced[:len(candidate)]:
            if len(candidate) == len(forced):
                self._pending = []
                return candidate
            self._pending = candidate
            return []
        if t == END:  # a second <|end|>: the partial copy before it goes
            self._pending = [END]
            return []
        self._pending = []
        return candidate

    def _process(self, t: int, out: list[tuple[str | None, str]]) -> None:
        """Feed one token to the harmony parser and collect its text delta."""
        from openai_harmony import HarmonyError

        parser = self._parser
        self._fed.append(t)
        if self._error is not None:
            self._raw.append(t)
            return
        if not 0 <= t < VOCAB_SIZE:
            self._bad_ids += 1  # skipped; the rest still parses
            return
        if not self._in_header:
            self._header_start = len(self._fed) - 1
        try:
            parser.process(t)  # type: ignore[attr-defined]
        except HarmonyError as exc:
            self._go_raw(str(exc))
            return
        self._in_header = parser.state.value == "Header"  # type: ignore[attr-defined]
        if self._in_header and self._not_a_header(t):
            self._go_raw("the output has no harmony message header")
            return
        delta = parser.last_content_delta  # type: ignore[attr-defined]
        if delta:
            channel = parser.current_channel  # type: ignore[attr-defined]
            key = channel or "none"
            self._counts[key] = self._counts.get(key, 0) + 1
            if out and out[-1][0] == channel:
                out[-1] = (channel, out[-1][1] + delta)
            else:
                out.append((channel, delta))

    @property
    def analysis_tokens(self) -> int:
        """Reasoning (analysis and commentary) tokens seen so far."""
        return self._counts.get("analysis", 0) + self._counts.get("commentary", 0)

    def _not_a_header(self, t: int) -> bool:
        """True when the header being read cannot be a harmony header: it does not
        start with <|channel|> (or a recipient), or it runs on far too long."""
        first = self._fed[self._header_start]
        if len(self._fed) - self._header_start > 32:
            return True
        if self._header_start == 0 and t == first:
            return first not in (CHANNEL, MESSAGE, CONSTRAIN) and not decode([first]).startswith(
                " to")
        return False

    def _go_raw(self, why: str) -> None:
        self._error = why
        self._raw = list(self._fed[self._header_start:])

    def finish(self, finish_reason: str | None = None) -> Parsed:
        """Close the stream and return everything recovered.

        ``finish_reason`` is the engine's ('stop', 'length', 'abort'); without it a
        completion counts as truncated unless it ends with a stop token.
        """
        if self._pending:  # a stream that stopped inside a possible forced sequence
            held, self._pending = self._pending, []
            for t in held:
                self._process(t, [])
        messages, error = self._close_parser()
        ids = self._ids
        if error is None and self._bad_ids:
            error = f"{self._bad_ids} token id(s) outside the vocabulary were skipped"
        if finish_reason is None:
            truncated = not ids or ids[-1] not in STOP_TOKEN_IDS
        else:
            truncated = finish_reason not in ("stop",)
        if truncated and error is None and messages and ids and ids[-1] not in (END, RETURN, CALL):
            last = messages[-1]  # cut off mid-message
            messages[-1] = Message(last.channel, last.text, last.recipient, complete=False)
        analysis = "\n\n".join(m.text for m in messages if m.channel in ("analysis", "commentary"))
        final, recovered = self._final(messages)
        malformed = error is not None and not (truncated and _is_eos_complaint(error))
        return Parsed(
            final=final,
            analysis=analysis,
            messages=tuple(messages),
            truncated=truncated,
            malformed=malformed or recovered,
            recovered=recovered,
            error=error,
            analysis_tokens=self.analysis_tokens,
            final_tokens=self._counts.get("final", 0),
        )

    def _close_parser(self) -> tuple[list[Message], str | None]:
        """The parser's messages (with a partial last one after an error) and its error."""
        from openai_harmony import HarmonyError

        parser = self._parser
        error = self._error
        if error is None:
            try:
                parser.process_eos()  # type: ignore[attr-defined]
            except HarmonyError as exc:
                error = str(exc)
        messages = [
            Message(m.channel, "".join(c.text for c in m.content if hasattr(c, "text")),
                    m.recipient)
            for m in parser.messages  # type: ignore[attr-defined]
        ]
        partial = parser.current_content  # type: ignore[attr-defined]
        if error is not None and partial:
            messages.append(
                Message(parser.current_channel, partial,  # type: ignore[attr-defined]
                        parser.current_recipient, complete=False)  # type: ignore[attr-defined]
            )
        return messages, error

    def _final(self, messages: list[Message]) -> tuple[str, bool]:
        """The answer, and whether it had to be recovered from text outside harmony."""
        finals = [m.text for m in messages if m.channel == "final"]
        if finals:
            return finals[-1], False
        if self._raw:
            # no final channel, but text outside harmony structure: that is the answer
            return decode(t for t in self._raw if t < FIRST_SPECIAL), True
        if not messages and self._ids:
            return decode(t for t in self._ids if t < FIRST_SPECIAL), True
        if any(m.channel is None for m in messages):
            return "\n".join(m.text for m in messages if m.channel is None), True
        return "", False


def _is_eos_complaint(error: str) -> bool:
    # "Unexpected EOS while waiting for message header": the stream merely stopped early
    return "EOS" in error


def parse_completion(ids: Sequence[int], finish_reason: str | None = None) -> Parsed:
    """Parse the completion ids of one assistant turn. Never raises."""
    decoder = StreamDecoder()
    decoder.feed(ids)
    return decoder.finish(finish_reason)
