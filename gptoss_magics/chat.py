"""A multi-turn conversation kept by ``%%gptoss --chat NAME``."""

from __future__ import annotations

from dataclasses import dataclass, field

from .harmony import Turn
from .reply import Reply


@dataclass
class Chat:
    """A multi-turn conversation kept by ``%%gptoss --chat NAME``.

    Each finished turn keeps the user's prompt and the final answer; the reasoning
    of earlier turns is not sent again, as the harmony format asks.
    """

    turns: list[Turn] = field(default_factory=list)
    replies: list[Reply] = field(default_factory=list, repr=False)

    def add(self, prompt: str, reply: Reply) -> None:
        """Record a finished turn."""
        self.turns.append(Turn(prompt, reply.final))
        self.replies.append(reply)

    def clear(self) -> None:
        """Forget every turn."""
        self.turns.clear()
        self.replies.clear()

    def __len__(self) -> int:
        return len(self.turns)

    def __repr__(self) -> str:
        lines = [f"Chat with {len(self.turns)} turn(s)"]
        for i, turn in enumerate(self.turns, 1):
            lines.append(f"  {i}. user: {turn.user[:60]!r} -> {turn.final[:60]!r}")
        return "\n".join(lines)
