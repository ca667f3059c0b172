"""The harmony chat format, as pure functions over token ids.

``render_prompt`` turns a conversation (system message with the reasoning effort,
developer instructions, earlier turns, the user's message) into the prompt token
ids that gpt-oss expects (:class:`PromptRenderer` renders many prompts that differ only in
the user's message, token for token the same, with the rest rendered once);
``parse_completion`` turns the ids the model produced
into a :class:`Parsed` (final answer, reasoning, flags). Parsing never raises:
truncated, malformed or channel-less output degrades to the best text that can be
recovered, and the result says so.

Uses ``openai_harmony`` (from the ``oss-harmony`` distribution, which carries the
o200k vocabulary), so nothing is downloaded.
"""

from ._format import *  # noqa: F403
from ._format import __all__ as _format_all
from ._parse import Message, Parsed, StreamDecoder, parse_completion

__all__ = [*_format_all, "Message", "Parsed", "StreamDecoder", "parse_completion"]
