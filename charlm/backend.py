"""The array-module handle: NumPy on the CPU, CuPy on an NVIDIA GPU.

The cells, model, ops and optimizer never import an array library for their math: they ask
`xp_of(array)` which module owns the arrays they were given (the `cupy.get_array_module`
idea), so one implementation serves both devices.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from types import ModuleType
from typing import Any

import numpy as np

from charlm.errors import CharlmError

DEVICES = ("cpu", "cuda")


def xp_of(array: Any) -> ModuleType:
    """The array module (numpy or cupy) that owns `array`."""
    if isinstance(array, np.ndarray) or np.isscalar(array):
        return np
    module = type(array).__module__
    if module.startswith("cupy"):
        import cupy  # noqa: PLC0415 - only reached with a CuPy array in hand

        return cupy
    return np


def array_module(device: str) -> ModuleType:
    """The array module for `device` ('cpu' or 'cuda'); a clear error if CUDA is unusable."""
    if device == "cpu":
        return np
    if device != "cuda":
        raise CharlmError(f"unknown device {device!r}; choose one of: {', '.join(DEVICES)}")
    try:
        import cupy  # noqa: PLC0415 - optional extra charlm[gpu]
    except ImportError:
        raise CharlmError(
            "device 'cuda' needs CuPy: pip install 'charlm[gpu]' (cupy-cuda13x)"
        ) from None
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:  # CuPy raises its own CUDA runtime errors here
        raise CharlmError(f"device 'cuda': no usable NVIDIA GPU ({exc})") from None
    if count < 1:
        raise CharlmError("device 'cuda': no NVIDIA GPU found")
    return cupy


def to_numpy(array: Any) -> np.ndarray:
    """A NumPy copy (or the array itself) of a NumPy or CuPy array, for saving and printing."""
    if isinstance(array, np.ndarray):
        return array
    get = getattr(array, "get", None)
    return np.asarray(get() if get is not None else array)


def to_device(array: np.ndarray, xp: ModuleType) -> Any:
    """`array` moved to the device of array module `xp`."""
    return array if xp is np else xp.asarray(array)


def take_columns(table: Any, ids: Any, out: Any) -> Any:
    """out[:, j] = table[:, ids[j]]: a column gather (the maths of table @ one_hot(ids)).

    NumPy's mode="clip" skips the bounds check (ids come from the vocabulary, so they are in
    range) and is markedly faster; CuPy's take has no mode and never checks.
    """
    if isinstance(table, np.ndarray):
        return np.take(table, ids, axis=1, out=out, mode="clip")
    return xp_of(table).take(table, ids, axis=1, out=out)


def keep_freed_memory() -> bool:
    """Ask glibc's malloc to reuse freed memory instead of handing it back to the OS.

    A training step allocates and frees the same few hundred MB of window buffers every time;
    by default glibc serves each large block with a fresh mmap, so every step pays the page
    faults (and zeroing) again. Serving them from the heap and never trimming it makes later
    steps reuse warm pages: measured 3-5% faster, and steadier, on LSTM H512. Peak memory is
    unchanged. A no-op (returns False) where the C library is not glibc.
    """
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):
        return False
    m_trim_threshold, m_mmap_max = -1, -4  # glibc's mallopt parameter numbers
    return bool(mallopt(m_mmap_max, 0)) and bool(mallopt(m_trim_threshold, 1 << 30))
