"""The MXFP4 format of the published gpt-oss expert weights, decoded exactly with numpy.

A block is 32 four-bit E2M1 codes, two a byte with the low nibble first, and one E8M0
scale byte ``e`` (the factor ``2**(e - 127)``; 127 is 1.0). Codes 0-7 are the values
:data:`E2M1`; codes 8-15 are the same with the sign bit (0x8) set. Every such value is
a bf16 value, so :func:`mxfp4_to_bf16` is exact. Used by :mod:`gptoss_magics.dequantize`.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np

from .tiny._weights import to_bf16

__all__ = ["BLOCK", "BLOCK_BYTES", "E2M1", "mxfp4_to_bf16"]

#: the values of the E2M1 codes 0-7; codes 8-15 are the same with the sign bit (0x8) set
E2M1 = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0)
BLOCK = 32  # values per block (one scale each)
BLOCK_BYTES = 16  # bytes per block: two codes a byte


@lru_cache(maxsize=1)
def _pair_table() -> np.ndarray[Any, Any]:
    """bf16 bits of both values of every (scale, byte): index ``scale << 8 | byte``, the
    low nibble's value in the low 16 bits (so a little-endian uint16 view lists it first)."""
    codes = np.array(E2M1 + tuple(-v for v in E2M1))
    scale = 2.0 ** (np.arange(256) - 127)
    with np.errstate(over="ignore"):  # only e = 255 overflows (6 * 2**128): inf, as ldexp
        values = to_bf16((scale[:, None] * codes[None, :]).astype(np.float32)).astype("<u4")
    byte = np.arange(256)
    return (values[:, byte & 0x0F] | (values[:, byte >> 4] << 16)).reshape(-1)


def mxfp4_to_bf16(blocks: np.ndarray[Any, Any], scales: np.ndarray[Any, Any]
                  ) -> np.ndarray[Any, Any]:
    """The bf16 bits (``uint16``) of MXFP4 ``blocks`` ``[..., G, 16]`` (uint8) with their
    E8M0 ``scales`` ``[..., G]`` (uint8): an array ``[..., G * 32]``, exact."""
    if blocks.shape[-1:] != (BLOCK_BYTES,) or scales.shape != blocks.shape[:-1]:
        raise ValueError(f"MXFP4 blocks {blocks.shape} do not match scales {scales.shape}")
    index = (scales.astype(np.uint16)[..., None] << 8) | blocks
    bits = _pair_table()[index].view("<u2")  # [..., G, 32]
    return bits.reshape(*blocks.shape[:-2], blocks.shape[-2] * BLOCK)
