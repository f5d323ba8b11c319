"""cuBLAS's gemm called directly on CuPy arrays, each operand read in place by its row stride.

The recurrences make hundreds of small (4H, H) @ (H, N) products per window, on strided per-step
views of buffers in column layout. cupy.matmul would copy such views and costs tens of
microseconds of Python per call; this binding costs a few, and on a GPU that is what bounds a
window: the device finishes each product sooner than Python can issue the next.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from typing import Any

import numpy as np


def gemm(a: Any, b: Any, out: Any) -> Any:
    """out = a @ b for 2-D CuPy arrays, through cuBLAS with each operand read in place.

    An unusual layout or dtype (none of charlm's buffers has one) falls back to cupy.matmul,
    which copies.
    """
    blas = cublas_gemm(a.dtype)
    args = blas_arguments(a, b, out)
    if blas is None or args is None:
        import cupy  # noqa: PLC0415 - only reached with CuPy arrays

        return cupy.matmul(a, b, out=out)
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

    def bind_stream(self) -> None:
        """Issue on CuPy's current stream (our calls bypass CuPy, which sets it on each of its
        own): a CUDA graph captures only the work of the capturing stream."""
        from cupy.cuda import stream  # noqa: PLC0415

        self.cublas.setStream(self.handle(), stream.get_current_stream().ptr)

    def __call__(
        self, op_a: int, op_b: int, m: int, n: int, k: int,
        A: int, lda: int, B: int, ldb: int, C: int, ldc: int,
    ) -> None:  # fmt: skip
        """C = op(A) op(B), column-major, A/B/C device pointers."""
        handle = self.handle()
        self.cublas.setPointerMode(handle, self.cublas.CUBLAS_POINTER_MODE_HOST)
        self.function(handle, op_a, op_b, m, n, k, self.alpha, A, lda, B, ldb, self.beta, C, ldc)


CUBLAS_DEFAULT_MATH, CUBLAS_TF32_TENSOR_OP_MATH = 0, 3  # cublasMath_t


def set_tf32(enabled: bool) -> None:
    """TF32 tensor-core math for the float32 products of CuPy's cuBLAS handle (ours and
    cupy.matmul's): each product's inputs rounded to a 10-bit mantissa, accumulated in float32.
    float64 products are unaffected."""
    from cupy.cuda import device  # noqa: PLC0415 - only reached on a GPU
    from cupy_backends.cuda.libs import cublas  # noqa: PLC0415

    mode = CUBLAS_TF32_TENSOR_OP_MATH if enabled else CUBLAS_DEFAULT_MATH
    cublas.setMathMode(device.get_cublas_handle(), mode)
