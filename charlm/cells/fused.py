"""Fused per-step LSTM gate arithmetic for CuPy: one GPU kernel instead of ~10 (forward) and
~20 (backward) small ones per step.

The NumPy code in `lstm.py` is the reference: these kernels compute exactly its expressions
(the tests compare them on the GPU), and `lstm_forward`/`lstm_backward` return False on NumPy
so the cell runs its plain array code there. They are raw kernels that take each (rows, N)
operand as a pointer and its row stride, so a step reads and writes the strided per-step
views of a window in column layout in place, and a launch costs little Python: on a GPU the
recurrence is bound by how fast Python issues the hundreds of small launches of a window.
Compiled on first use, once per dtype.
"""

from __future__ import annotations

from functools import cache
from typing import Any

import numpy as np

Array = Any

# Each thread owns one (row r, column n) of the (H, N) state; gate k of a (4H, N) block is rows
# k*H..(k+1)*H, so its element is H*ld further on. Gate order as in lstm.py: u, f, o, c~.
_SOURCE = r"""
typedef DTYPE T;
typedef long long I;

__device__ T sigm(T x) { return 1 / (1 + exp(-x)); }

// a (4H, N): input term Wx x + b in, gate activations out; wh (4H, N): Wh a<t-1>.
extern "C" __global__ void lstm_forward(
    T* a, const T* wh, const T* cprev, T* c, T* tc, T* h,
    I H, I N, I lda, I ldwh, I ldcprev, I ldc, I ldtc, I ldh)
{
    I i = (I)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= H * N) return;
    I r = i / N, n = i % N, ga = H * lda, gw = H * ldwh;
    T* ar = a + r * lda + n;
    const T* wr = wh + r * ldwh + n;
    T u = sigm(ar[0] + wr[0]);
    T f = sigm(ar[ga] + wr[gw]);
    T o = sigm(ar[2 * ga] + wr[2 * gw]);
    T g = tanh(ar[3 * ga] + wr[3 * gw]);
    ar[0] = u; ar[ga] = f; ar[2 * ga] = o; ar[3 * ga] = g;
    T cn = f * cprev[r * ldcprev + n] + u * g;   // c = f * c_prev + u * c~
    T t = tanh(cn);
    c[r * ldc + n] = cn;
    tc[r * ldtc + n] = t;
    h[r * ldh + n] = o * t;                      // a = o * tanh(c)
}

// dh, dc arrive from step t+1, dout from above; da (4H, N) gets the gate gradients (before
// the activations' inputs), dc becomes dLoss/dc<t-1> (before the reset mask).
extern "C" __global__ void lstm_backward(
    const T* a, const T* tc, const T* cprev, const T* dout, const T* dh, T* dc, T* da,
    I H, I N, I lda, I ldtc, I ldcprev, I lddout, I lddh, I lddc, I ldda)
{
    I i = (I)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= H * N) return;
    I r = i / N, n = i % N, ga = H * lda, gd = H * ldda;
    const T* ar = a + r * lda + n;
    T u = ar[0], f = ar[ga], o = ar[2 * ga], g = ar[3 * ga];
    T t = tc[r * ldtc + n];
    T dht = dh[r * lddh + n] + dout[r * lddout + n];
    T dct = dc[r * lddc + n] + dht * o * (1 - t * t);
    T* dr = da + r * ldda + n;
    dr[0] = dct * g * u * (1 - u);
    dr[gd] = dct * cprev[r * ldcprev + n] * f * (1 - f);
    dr[2 * gd] = dht * t * o * (1 - o);
    dr[3 * gd] = dct * u * (1 - g * g);
    dc[r * lddc + n] = dct * f;
}
"""

_BLOCK = 256


@cache
def _kernels(dtype_char: str) -> tuple[Any, Any]:
    import cupy  # noqa: PLC0415 - only reached with CuPy arrays

    source = _SOURCE.replace("DTYPE", "float" if dtype_char == "f" else "double")
    return (
        cupy.RawKernel(source, "lstm_forward"),
        cupy.RawKernel(source, "lstm_backward"),
    )


def _launch(kernel_index: int, arrays: tuple[Array, ...], H: int, N: int) -> bool:
    """Run a kernel over the (H, N) elements; False (nothing run) when an operand's rows are
    not contiguous or the dtype is not float32/float64, so the caller takes its array code."""
    dtype = arrays[0].dtype
    if dtype.char not in "fd":
        return False
    strides = []
    for x in arrays:
        if x.dtype != dtype or x.strides[1] != x.itemsize:
            return False
        strides.append(np.int64(x.strides[0] // x.itemsize))
    blocks = (H * N + _BLOCK - 1) // _BLOCK
    kernel = _kernels(dtype.char)[kernel_index]
    kernel((blocks,), (_BLOCK,), (*arrays, np.int64(H), np.int64(N), *strides))
    return True


def lstm_forward(a: Array, wh: Array, cprev: Array, c: Array, tc: Array, h: Array) -> bool:
    """On CuPy: gates from a = Wx x + b and wh = Wh h_prev (both (4H, N)), written into a;
    then c, tanh(c), h. Any operand may be a strided view. Returns False (doing nothing) on
    NumPy."""
    if isinstance(a, np.ndarray):
        return False
    H, N = c.shape
    return _launch(0, (a, wh, cprev, c, tc, h), H, N)


def lstm_backward(
    a: Array, tc: Array, cprev: Array, dout: Array, dh: Array, dc: Array, da: Array
) -> bool:
    """On CuPy: gate gradients into da (4H, N) and dc <- dc_prev (before the reset mask), from
    dh, dc (gradients arriving from step t+1) and dout (from above); dh is only read. Any
    operand may be a strided view. False on NumPy."""
    if isinstance(a, np.ndarray):
        return False
    H, N = tc.shape
    return _launch(1, (a, tc, cprev, dout, dh, dc, da), H, N)
