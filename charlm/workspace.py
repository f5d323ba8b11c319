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

Array = Any


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
            buf = self.buffers[key] = self.xp.empty(shape, dtype=dtype)
        return buf

    def zeros(self, name: str, shape: tuple[int, ...], dtype: Any) -> Array:
        """The buffer `name`, filled with zeros."""
        buf = self.empty(name, shape, dtype)
        buf.fill(0)
        return buf

    def scope(self, prefix: str) -> Workspace:
        """This workspace with every name under `prefix/` (one scope per layer)."""
        child = Workspace(self.xp, self.keep)
        child.prefix, child.buffers = f"{self.prefix}{prefix}/", self.buffers
        return child

    def shared(self, name: str) -> Workspace:
        """The scope `name/` of the whole workspace, whatever this one's prefix: where layers
        keep the buffers that are dead once their backward pass returns, so one set serves
        every layer."""
        child = Workspace(self.xp, self.keep)
        child.prefix, child.buffers = f"{name}/", self.buffers
        return child

    @property
    def nbytes(self) -> int:
        """Bytes held (0 for a fresh workspace)."""
        return sum(int(b.nbytes) for b in self.buffers.values())
