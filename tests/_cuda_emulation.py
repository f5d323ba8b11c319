"""The CUDA kernels on the CPU: their source compiled with g++ through a shim, and a `Backend`
(see `charlm.cells.cuda_backend`) that runs the very loops the GPU runs on NumPy arrays.

The shim defines CUDA's qualifiers away and blockIdx/blockDim/threadIdx as plain variables; for
each kernel a generated `run_<name>(threads, ...)` runs the grid of 256-thread blocks as a loop
over blocks and threads, out-of-range threads included (they must return at once). That is
CUDA's semantics for kernels whose threads never wait on each other, which is how every charlm
kernel is written. Compiled once per dtype and process.
"""

from __future__ import annotations

import ctypes
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from charlm import cudaops
from charlm.cells import cuda, cuda_backend, cuda_source
from charlm.device import Device

SHIM = r"""
#include <cmath>
using std::exp; using std::tanh; using std::sqrt; using std::pow;
#define __global__
#define __device__ static inline
struct dim3_ { unsigned int x; };
static dim3_ blockIdx, blockDim, threadIdx;
"""

_CTYPES = {"I": ctypes.c_longlong, "double": ctypes.c_double, "U": ctypes.c_ulonglong}


def grid_wrapper(name: str, params: list[tuple[str, str]]) -> str:
    """C source of run_<name>(threads, params...): the grid as a loop."""
    decl = ", ".join(f"{t} {n}" for t, n in params)
    args = ", ".join(n for _, n in params)
    return f"""
extern "C" void run_{name}(long long threads, {decl}) {{
    blockDim.x = {cuda_backend.BLOCK};
    long long blocks = (threads + {cuda_backend.BLOCK} - 1) / {cuda_backend.BLOCK};
    for (long long b = 0; b < blocks; ++b)
        for (unsigned int t = 0; t < {cuda_backend.BLOCK}; ++t) {{
            blockIdx.x = (unsigned int)b; threadIdx.x = t;
            {name}({args});
        }}
}}
"""


def emulation_source(dtype_char: str, source: str = cuda_source.SOURCE) -> str:
    """The C++ translation unit: shim, kernels, grid loops."""
    wrappers = "".join(grid_wrapper(n, p) for n, p in cuda_source.signatures(source).items())
    return SHIM + cuda_source.specialise(source, dtype_char) + wrappers


def gxx_missing() -> str | None:
    """Why the emulation cannot run here, or None."""
    return None if shutil.which("g++") else "g++ is not on PATH"


@cache
def compile_library(dtype_char: str, source: str = cuda_source.SOURCE) -> ctypes.CDLL:
    """The kernels of `source` in `dtype_char`, compiled into a shared library and loaded."""
    build = Path(tempfile.mkdtemp(prefix="charlm-cuda-emu-"))
    cpp, lib = build / f"kernels_{dtype_char}.cpp", build / f"kernels_{dtype_char}.so"
    cpp.write_text(emulation_source(dtype_char, source))
    # No FMA contraction: the kernels' roundings then are NumPy's, operation for operation.
    subprocess.run(
        ["g++", "-O1", "-ffp-contract=off", "-shared", "-fPIC", "-o", str(lib), str(cpp)],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    return ctypes.CDLL(str(lib))


def column_major(ptr: int, rows: int, cols: int, ld: int, dtype: Any) -> np.ndarray:
    """The column-major (rows, cols) matrix with leading dimension ld at address ptr."""
    item = np.dtype(dtype).itemsize
    size = (cols - 1) * ld + rows if rows and cols else 0
    raw = (ctypes.c_char * (size * item)).from_address(ptr)
    flat = np.frombuffer(raw, dtype=dtype)
    return np.lib.stride_tricks.as_strided(flat, shape=(rows, cols), strides=(item, ld * item))


class EmulatedBackend:
    """`charlm.cells.cuda.Backend` on the CPU: the g++-compiled kernels and a NumPy GEMM that
    reads cuBLAS's column-major arguments from raw pointers."""

    def __init__(self, dtype_char: str, source: str = cuda_source.SOURCE) -> None:
        self.dtype = np.dtype(dtype_char)
        self.lib = compile_library(dtype_char, source)
        self.signatures = cuda_source.signatures(source)
        self.launches: list[str] = []  # kernel names in launch order (for tests)

    def kernel(self, name: str) -> Callable[..., None]:
        function = getattr(self.lib, f"run_{name}")
        scalar = ctypes.c_double if self.dtype.char == "d" else ctypes.c_float
        types = {**_CTYPES, "T": scalar}
        function.argtypes = [ctypes.c_longlong] + [
            ctypes.c_void_p if "*" in t else types[t] for t, _ in self.signatures[name]
        ]
        function.restype = None

        def run(threads: int, *args: Any) -> None:
            self.launches.append(name)
            function(threads, *args)

        return run

    def gemm(self) -> Callable[..., None]:
        dtype = self.dtype

        def gemm(op_x: int, op_y: int, m: int, n: int, k: int, X: int, ldx: int, Y: int,
                 ldy: int, C: int, ldc: int) -> None:  # fmt: skip
            x = column_major(X, *((m, k) if op_x == 0 else (k, m)), ldx, dtype)
            y = column_major(Y, *((k, n) if op_y == 0 else (n, k)), ldy, dtype)
            out = column_major(C, m, n, ldc, dtype)
            out[...] = (x if op_x == 0 else x.T) @ (y if op_y == 0 else y.T)

        return gemm


@cache
def emulated_backend(dtype_char: str) -> EmulatedBackend:
    return EmulatedBackend(dtype_char)


class EmulatedCudaDevice(Device):
    """The CPU with the CUDA kernel set run through the emulation: the cells run exactly the
    code paths (window loops, pointer arithmetic, resets) they run on a GPU, and the training
    step the fused clipping, Adam and dropout kernels."""

    name = "cpu"

    def __init__(self) -> None:
        super().__init__()
        self.cells = cuda.CudaCells(emulated_backend)

    def kernels(self, cell: str) -> Any:
        return self.cells.kernels(cell)

    def step_scalars(self) -> Any:
        return cudaops.StepScalars(np, emulated_backend)

    def uniforms(self, rng: np.random.Generator, seed: int) -> Any:
        return cudaops.DeviceDropout(np, seed, backends=emulated_backend)

    def __repr__(self) -> str:
        return "<device cuda-emulated>"


def nvcc_missing() -> str | None:
    return None if shutil.which("nvcc") else "nvcc is not on PATH"


def compile_ptx(dtype_char: str, out_dir: Path, arch: str = "sm_90") -> subprocess.CompletedProcess:
    """nvcc --ptx of the kernel source in `dtype_char` (what NVRTC compiles on a GPU)."""
    cu = out_dir / f"kernels_{dtype_char}.cu"
    cu.write_text(cuda_source.specialise(cuda_source.SOURCE, dtype_char))
    return subprocess.run(
        ["nvcc", "--ptx", f"-arch={arch}", "-x", "cu", str(cu), "-o", str(cu.with_suffix(".ptx"))],
        capture_output=True, text=True,
    )  # fmt: skip
