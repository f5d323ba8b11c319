"""The array-module handle: NumPy on the CPU, CuPy on an NVIDIA GPU.

The cells, model, ops and optimizer never import an array library for their math: they ask
`xp_of(array)` which module owns the arrays they were given (the `cupy.get_array_module`
idea), so one implementation serves both devices.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from collections.abc import Callable
from functools import cache
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


def on_cpu(array: Any) -> bool:
    """Whether `array` is a NumPy array (for the few places that pick a layout per device)."""
    return isinstance(array, np.ndarray)


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


def gemm(a: Any, b: Any, out: Any) -> Any:
    """out = a @ b for 2-D arrays: the small per-step products of the recurrences.

    On CuPy this calls cuBLAS directly, passing each operand's row stride, so the strided
    per-step views of a window in column layout need no copy, and a call costs a few
    microseconds of Python instead of cupy.matmul's tens: a window makes hundreds of these
    products, and the GPU finishes each sooner than Python can issue the next.
    """
    if isinstance(a, np.ndarray):
        return np.matmul(a, b, out=out)
    blas = cublas_gemm(a.dtype)
    args = blas_arguments(a, b, out)
    if blas is None or args is None:
        return xp_of(a).matmul(a, b, out=out)  # an unusual layout or dtype: CuPy copies
    blas(*device_pointers(args))
    return out


def device_pointers(args: tuple[Any, ...]) -> list[Any]:
    """`args` with each CuPy array replaced by the address of its first element."""
    return [x.data.ptr if hasattr(x, "data") and hasattr(x.data, "ptr") else x for x in args]


def cublas_gemm(dtype: Any) -> Callable[..., None] | None:
    """cuBLAS's column-major gemm for float32/float64 taking device pointers: call it with the
    `device_pointers` of `blas_arguments`. None for other dtypes or without CuPy's binding."""
    return _CuBlasGemm.for_dtype(np.dtype(dtype).char)


def blas_arguments(a: Any, b: Any, out: Any) -> tuple[Any, ...] | None:
    """The column-major gemm(op_x, op_y, m, n, k, X, ldx, Y, ldy, C, ldc) computing C = op(X)
    op(Y) that is row-major out = a @ b, all read in place; None if a layout does not allow it.

    cuBLAS is column-major, where the row-major out reads as out^T = b^T a^T.
    """
    layouts = [_blas_layout(m) for m in (a, b, out)]
    if None in layouts or layouts[2][0] != _NOTRANS or not (a.dtype == b.dtype == out.dtype):
        return None
    (op_a, ld_a), (op_b, ld_b), (_, ld_out) = layouts
    return (op_b, op_a, out.shape[1], a.shape[0], a.shape[1], b, ld_b, a, ld_a, out, ld_out)


_NOTRANS, _TRANS = 0, 1  # cublasOperation_t


def _blas_layout(m: Any) -> tuple[int, int] | None:
    """(operation, leading dimension) that lets cuBLAS read row-major `m` in place, or None."""
    item = m.itemsize
    s0, s1 = m.strides
    rows, cols = m.shape
    if s1 == item and s0 % item == 0 and s0 // item >= max(1, cols):
        return _NOTRANS, s0 // item  # rows contiguous: column-major m^T
    if s0 == item and s1 % item == 0 and s1 // item >= max(1, rows):
        return _TRANS, s1 // item  # a transposed view: column-major m itself
    return None


class _CuBlasGemm:
    """cuBLAS sgemm/dgemm through CuPy's low-level binding, with host scalars alpha=1, beta=0."""

    def __init__(self, dtype_char: str) -> None:
        from cupy.cuda import device  # noqa: PLC0415 - optional extra charlm[gpu]
        from cupy_backends.cuda.libs import cublas  # noqa: PLC0415

        self.cublas = cublas
        self.function = cublas.sgemm if dtype_char == "f" else cublas.dgemm
        self.handle = device.get_cublas_handle
        self.scalars = np.array([1, 0], dtype=dtype_char)  # alpha, beta; kept alive here
        self.alpha = self.scalars.ctypes.data
        self.beta = self.alpha + self.scalars.itemsize

    @staticmethod
    @cache
    def for_dtype(dtype_char: str) -> _CuBlasGemm | None:
        """The gemm for float32 ('f') or float64 ('d'); None for other dtypes or where the
        binding is missing (gemm falls back to cupy.matmul)."""
        if dtype_char not in "fd":
            return None
        try:
            return _CuBlasGemm(dtype_char)
        except (ImportError, AttributeError):
            return None

    def __call__(
        self, op_a: int, op_b: int, m: int, n: int, k: int,
        A: int, lda: int, B: int, ldb: int, C: int, ldc: int,
    ) -> None:  # fmt: skip
        """C = op(A) op(B), column-major, A/B/C device pointers."""
        handle = self.handle()
        self.cublas.setPointerMode(handle, self.cublas.CUBLAS_POINTER_MODE_HOST)
        self.function(handle, op_a, op_b, m, n, k, self.alpha, A, lda, B, ldb, self.beta, C, ldc)


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
