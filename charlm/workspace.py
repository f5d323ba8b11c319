"""Buffers that live as long as their owner, so a training window writes into the same memory
every step (torch-rnn sizes its buffers once).

Stable buffers spare the allocator hundreds of megabytes of fresh pages per step on the CPU,
and give a captured CUDA graph the fixed addresses it replays against. A `Workspace` hands out
buffers by name; asking again for a name with the same shape and dtype returns the same array.
`fresh` workspaces allocate on every request instead: what evaluation, sampling and the tests
use, where a call's arrays must outlive the next call.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import numpy as np

Array = Any
_LINE, _PAGE = 64, 4096  # cache line and page, in bytes
_STAGGER = 5 * _LINE  # between the starts of successive buffers (odd in lines: all differ)


class Workspace:
    """Named buffers on one array module (numpy or cupy)."""

    def __init__(self, xp: ModuleType, keep: bool = True) -> None:
        self.xp = xp
        self.keep = keep  # False: a fresh array for every request
        self.prefix = ""
        self.buffers: dict[str, Array] = {}

    @classmethod
    def fresh(cls, xp: ModuleType) -> Workspace:
        return cls(xp, keep=False)

    def empty(self, name: str, shape: tuple[int, ...], dtype: Any) -> Array:
        """The buffer `name` of `shape` and `dtype`, contents undefined."""
        if not self.keep:
            return self.xp.empty(shape, dtype=dtype)
        key = self.prefix + name
        buf = self.buffers.get(key)
        if buf is None or buf.shape != tuple(shape) or buf.dtype != dtype:
            buf = self.buffers[key] = aligned_empty(self.xp, shape, dtype, len(self.buffers))
        return buf

    def zeros(self, name: str, shape: tuple[int, ...], dtype: Any) -> Array:
        """The buffer `name`, filled with zeros."""
        buf = self.empty(name, shape, dtype)
        buf.fill(0)
        return buf

    def scope(self, prefix: str) -> Workspace:
        """This workspace with every name under `prefix/` (one scope per layer)."""
        return self._view(f"{self.prefix}{prefix}/")

    def shared(self, name: str) -> Workspace:
        """The scope `name/` of the whole workspace, whatever this one's prefix: where layers
        keep the buffers that are dead once their backward pass returns, so one set serves
        every layer."""
        return self._view(f"{name}/")

    def _view(self, prefix: str) -> Workspace:
        """The same buffers, seen with every name under `prefix`."""
        view = Workspace(self.xp, self.keep)
        view.prefix, view.buffers = prefix, self.buffers
        return view

    @property
    def nbytes(self) -> int:
        """Bytes held (0 for a fresh workspace)."""
        return sum(int(b.nbytes) for b in self.buffers.values())


def aligned_empty(xp: ModuleType, shape: tuple[int, ...], dtype: Any, index: int = 0) -> Array:
    """An empty array for a buffer that lives long. On the CPU it starts 64-byte aligned at an
    offset within a 4 KiB page that differs with `index`: large arrays otherwise all start 16
    bytes into a page, and the elementwise loops that stream several at once then collide in
    the same cache sets (measured 4% slower on an LSTM H128 training step)."""
    if xp is not np:
        return xp.empty(shape, dtype=dtype)
    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape)) * dtype.itemsize
    raw = np.empty(nbytes + _PAGE + _LINE, dtype=np.uint8)
    start = (-raw.ctypes.data) % _LINE + (index * _STAGGER) % _PAGE
    return raw[start : start + nbytes].view(dtype).reshape(shape)
