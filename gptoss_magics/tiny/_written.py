"""How the tiny model is trained to write a reply's text as token ids: o200k's tokens, with
the numbers an :class:`~gptoss_magics.tiny._example.Example` lists in ``split`` written as
two tokens.

Pure Python: the standard library and :mod:`gptoss_magics.harmony`.
"""

from __future__ import annotations

import functools

from .. import harmony
from ._example import Example


def written_ids(example: Example, text: str, special: bool = True) -> list[int]:
    """``text`` of ``example``'s reply encoded as the model is trained to write it: the
    o200k tokens, with each number of ``example.split`` as two tokens (all digits but the
    last, then the last)."""
    enc = harmony.encoding()
    # plain text is encoded with no check for special tokens (it has none), which is
    # faster than allowed_special=set(): that builds a regex of every special token per call
    ids = list(enc.encode(text, allowed_special="all") if special
               else enc.encode(text, disallowed_special=()))
    if not example.split:
        return ids
    pieces = dict(_split_number(number) for number in example.split)
    return [piece for i in ids for piece in pieces.get(i, (i,))]


@functools.lru_cache(maxsize=4096)
def _split_number(number: str) -> tuple[int, tuple[int, ...]]:
    """(the one o200k id of ``number``, its two ids when written split)."""
    enc = harmony.encoding()
    whole = list(enc.encode(number, disallowed_special=()))
    if len(whole) != 1 or len(number) < 2:
        raise ValueError(f"{number!r} is not one token of two digits or more")
    return whole[0], (*enc.encode(number[:-1], disallowed_special=()),
                      *enc.encode(number[-1], disallowed_special=()))
