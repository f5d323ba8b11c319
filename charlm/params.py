"""Parameters as one flat buffer with named views (char-rnn's combine_all_parameters), and the
one place that spells tensor names.

    embed  l{i}.Wx  l{i}.Wh  l{i}.b  [l{i}.bhn]  Wy  by       parameters (and their gradients)
    l{i}/h  l{i}/c                                           carried state, in checkpoints
    m/<parameter>  v/<parameter>  s/<parameter>              optimizer moments, in checkpoints

A `FlatParams` is a read-only mapping from those names to views of one contiguous array,
`flat`: the model and checkpoints see named tensors, while clipping, the optimizer and (later)
an all-reduce each make one pass over `flat`. Gradients and optimizer moments are FlatParams
with the same layout.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from types import ModuleType
from typing import Any

import numpy as np

from charlm.workspace import aligned_empty

Array = Any


def param_name(layer: int, tensor: str) -> str:
    """'l0.Wx': tensor `tensor` of recurrent layer `layer`."""
    return f"l{layer}.{tensor}"


def layer_params(params: Mapping[str, Array], layer: int) -> dict[str, Array]:
    """Layer `layer`'s tensors by their short names ('Wx', 'Wh', 'b', ...)."""
    prefix = param_name(layer, "")
    return {k[len(prefix) :]: v for k, v in params.items() if k.startswith(prefix)}


def state_name(layer: int, state: str) -> str:
    """'l0/h': the carried state `state` of layer `layer`, as checkpoints store it."""
    return f"l{layer}/{state}"


def moment_name(moment: str, param: str) -> str:
    """'m/l0.Wx': optimizer moment `moment` of parameter `param`, as checkpoints store it."""
    return f"{moment}/{param}"


class FlatParams(Mapping[str, Array]):
    """Named tensors that are views of one flat array `flat` (zero-filled at first)."""

    def __init__(
        self, shapes: Mapping[str, tuple[int, ...]], xp: ModuleType, dtype: Any, index: int = 0
    ) -> None:
        """`index` numbers the buffers of one layout (parameters 0, gradients 1, moments 2...):
        each then starts at its own offset within a page (see `aligned_empty`)."""
        self.shapes = dict(shapes)
        self.xp = xp
        total = sum(int(np.prod(shape)) for shape in self.shapes.values())
        self.flat = aligned_empty(xp, (total,), dtype, index)
        self.flat.fill(0)
        self._views: dict[str, Array] = {}
        offset = 0
        for name, shape in self.shapes.items():
            size = int(np.prod(shape))
            self._views[name] = self.flat[offset : offset + size].reshape(shape)
            offset += size

    @classmethod
    def of(
        cls, shapes: Mapping[str, tuple[int, ...]], arrays: Mapping[str, Any], xp: ModuleType,
        dtype: Any,
    ) -> FlatParams:  # fmt: skip
        """A FlatParams in `shapes`' order holding copies of `arrays` (NumPy or device arrays,
        cast to `dtype`)."""
        params = cls(shapes, xp, dtype)
        for name, view in params.items():
            view[...] = xp.asarray(arrays[name]).astype(dtype, copy=False)
        return params

    def zeros_like(self, index: int = 1) -> FlatParams:
        """Another buffer of the same layout, zeros (gradients, optimizer moments)."""
        return FlatParams(self.shapes, self.xp, self.flat.dtype, index)

    @property
    def size(self) -> int:
        """Entries over all tensors."""
        return int(self.flat.size)

    def __getitem__(self, name: str) -> Array:
        return self._views[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._views)

    def __len__(self) -> int:
        return len(self._views)
