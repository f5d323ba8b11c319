"""How the CUDA kernels are launched: a `Backend` runs the kernels of `cuda_source` and a
column-major GEMM on raw pointers -- CuPy's RawModule and cuBLAS on a GPU (`CupyBackend`), the
g++-compiled kernels in the tests -- and the window loops address step t of an operand as a
pointer and a row stride (`Steps`), with cuBLAS reading each product's operands in place.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from typing import Any, Protocol

import numpy as np

from charlm.cells import cuda_source
from charlm.cublas import blas_arguments
from charlm.device import xp_of

Array = Any
BLOCK = 256  # threads per block
NULL = 0  # a null pointer: no reset mask, no masked-state store, no pending product


class Backend(Protocol):
    """Runs the kernels of one dtype and a column-major GEMM, both on raw pointers."""

    def kernel(self, name: str) -> Callable[..., None]:
        """kernel(threads, *arguments): the kernel over `threads` elements (pointers as ints)."""

    def gemm(self) -> Callable[..., None]:
        """gemm(*blas_arguments with device pointers): see `charlm.cublas.blas_arguments`."""


def pointer(x: Array) -> int:
    """The address of the first element of a NumPy or CuPy array."""
    data = x.data
    return int(data.ptr) if hasattr(data, "ptr") else int(x.ctypes.data)


class CupyBackend:
    """The kernels compiled by NVRTC through CuPy, and cuBLAS on the current stream."""

    def __init__(self, dtype_char: str) -> None:
        import cupy  # noqa: PLC0415 - only reached on a GPU

        from charlm.cublas import cublas_gemm  # noqa: PLC0415

        self.cupy = cupy
        self.dtype_char = dtype_char
        self.module = cupy.RawModule(code=cuda_source.specialise(cuda_source.SOURCE, dtype_char))
        self.blas = cublas_gemm(dtype_char)
        self.signatures = cuda_source.signatures()

    @cache  # noqa: B019 - one backend per dtype, kept for the process
    def kernel(self, name: str) -> Callable[..., None]:
        function = self.module.get_function(name)
        return launcher(function, self.signatures[name], self.dtype_char)

    def gemm(self) -> Callable[..., None]:
        self.blas.bind_stream()  # the current (possibly capturing) stream
        return self.blas


def launcher(function: Any, signature: list[tuple[str, str]], dtype_char: str) -> Callable:
    """kernel(threads, *args) for a CuPy RawKernel/function: each argument converted to the
    NumPy scalar of its C type (pointers as uint64)."""
    convert = [argument_type(ctype, dtype_char) for ctype, _ in signature]

    def run(threads: int, *args: Any) -> None:
        grid = ((threads + BLOCK - 1) // BLOCK,)
        function(grid, (BLOCK,), tuple(c(a) for c, a in zip(convert, args, strict=True)))

    return run


def argument_type(ctype: str, dtype_char: str) -> Any:
    """The NumPy scalar type a kernel argument of C type `ctype` is passed as."""
    if "*" in ctype:
        return np.uint64
    return {"I": np.int64, "T": np.dtype(dtype_char).type, "double": np.float64,
            "U": np.uint64}[ctype]  # fmt: skip


@cache
def cupy_backend(dtype_char: str) -> CupyBackend:
    return CupyBackend(dtype_char)


def check_operands(*arrays: Array) -> str:
    """The dtype char of `arrays`, which must share a float dtype and have unit column stride."""
    dtype = arrays[0].dtype
    for x in arrays:
        if x is None:
            continue
        if x.dtype != dtype or x.strides[-1] != x.itemsize or dtype.char not in "fd":
            raise ValueError(f"CUDA kernel: operand {x.dtype} {x.strides} not supported")
    return dtype.char


def row_stride(x: Array) -> int:
    """Row stride, in elements, of the (rows, N) operand `x` (its last two axes)."""
    return x.strides[-2] // x.itemsize


class Steps:
    """Step t of a window operand as (address, row stride): a (T, rows, N) array with unit
    stride along N, or (cols=N) an (rows, T*N) column-layout buffer whose block t is step t."""

    def __init__(self, x: Array | None, cols: int = 0) -> None:
        if x is None:
            self.base, self.step, self.ld = NULL, 0, 0
        elif cols:
            self.base, self.step, self.ld = pointer(x), cols * x.itemsize, row_stride(x)
        else:
            self.base, self.step, self.ld = pointer(x), x.strides[0], row_stride(x)

    def __getitem__(self, t: int) -> int:
        return NULL if self.base == NULL else self.base + t * self.step


class Gemm:
    """out_t = a @ b_t by cuBLAS for every step t, the step-0 views giving the layout."""

    def __init__(self, backend: Backend, a: Array, b0: Array, out0: Array) -> None:
        self.blas = backend.gemm()
        args = blas_arguments(a, b0, out0)
        if args is None:
            raise ValueError("CUDA window: an operand layout cuBLAS cannot read in place")
        self.args = [pointer(x) if hasattr(x, "strides") else x for x in args]

    def __call__(self, b: int, out: int) -> None:
        self.args[5], self.args[9] = b, out  # blas_arguments puts b at 5 and out at 9
        self.blas(*self.args)


def keep_rows(keep_mask: Array | None) -> Steps:
    return Steps(None if keep_mask is None else keep_mask[:, None, :])


def backend_empty(like: Array, shape: tuple[int, ...]) -> Array:
    """A scratch array on `like`'s device (freed when the window returns)."""
    return xp_of(like).empty(shape, dtype=like.dtype)
