"""Fused per-step LSTM gate arithmetic for CuPy: one GPU kernel instead of ~10 (forward) and
~20 (backward) small ones per step.

The NumPy code in `lstm.py` is the reference: these kernels compute exactly its expressions
(the tests compare them on the GPU), and `lstm_forward`/`lstm_backward` return False on NumPy
so the cell runs its plain array code there. They are raw kernels that take each (rows, N)
operand as a pointer and its row stride, so a step reads and writes the strided per-step
views of a window in column layout in place, and a launch costs little Python: on a GPU the
recurrence is bound by how fast Python issues the hundreds of small launches of a window.
For the same reason `lstm_forward_window`/`lstm_backward_window` run a whole window's loop
(without resets) at two launches a step, the recurrent product and the gate kernel.
Compiled on first use, once per dtype.
"""

from __future__ import annotations

from functools import cache
from typing import Any

import numpy as np

from charlm.backend import blas_arguments, cublas_gemm, device_pointers, on_cpu, xp_of

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


def _grid(H: int, N: int) -> tuple[tuple[int], tuple[int]]:
    """CUDA grid and block sizes for one thread per element of an (H, N) state."""
    return ((H * N + _BLOCK - 1) // _BLOCK,), (_BLOCK,)


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
    _kernels(dtype.char)[kernel_index](*_grid(H, N), (*arrays, np.int64(H), np.int64(N), *strides))
    return True


def lstm_forward(a: Array, wh: Array, cprev: Array, c: Array, tc: Array, h: Array) -> bool:
    """On CuPy: gates from a = Wx x + b and wh = Wh h_prev (both (4H, N)), written into a;
    then c, tanh(c), h. Any operand may be a strided view. Returns False (doing nothing) on
    NumPy."""
    if on_cpu(a):
        return False
    H, N = c.shape
    return _launch(0, (a, wh, cprev, c, tc, h), H, N)


def lstm_backward(
    a: Array, tc: Array, cprev: Array, dout: Array, dh: Array, dc: Array, da: Array
) -> bool:
    """On CuPy: gate gradients into da (4H, N) and dc <- dc_prev (before the reset mask), from
    dh, dc (gradients arriving from step t+1) and dout (from above); dh is only read. Any
    operand may be a strided view. False on NumPy."""
    if on_cpu(a):
        return False
    H, N = tc.shape
    return _launch(1, (a, tc, cprev, dout, dh, dc, da), H, N)


# ------------------------------------------------------------------ whole windows, on CuPy
# The loops of LSTM.forward/backward (windows without resets) at two launches a step: the
# recurrent product through cuBLAS and one gate kernel. Step t's operands are addressed by
# pointer arithmetic on the window buffers, not as array views: the GPU finishes a step sooner
# than Python can issue it, and making a view costs about as much as a launch.


def _contiguous_floats(*arrays: Array) -> bool:
    """Whether the window buffers are C-contiguous CuPy arrays of one float dtype, as the
    pointer arithmetic below assumes."""
    dtype = arrays[0].dtype
    return (
        not on_cpu(arrays[0])
        and dtype.char in "fd"
        and all(x.dtype == dtype and x.flags.c_contiguous for x in arrays)
    )


def _ints(*values: int) -> list[np.int64]:
    return [np.int64(v) for v in values]


def lstm_forward_window(Wh: Array, A: Array, hcols: Array, cs: Array, tcs: Array) -> bool:
    """LSTM.forward's recurrence on CuPy: for t = 0..T-1, tmp = Wh a<t-1> (hcols block t),
    then the gate kernel on A[t], writing c<t> (cs[t+1]), tanh(c<t>) (tcs[t]) and a<t> (hcols
    block t+1). All contiguous: A (T, 4H, N), cs (T+1, H, N), tcs (T, H, N), hcols (H, (T+1)*N).
    False (nothing done) where this does not apply; the cell then runs its step loop."""
    blas = cublas_gemm(A.dtype) if _contiguous_floats(A, hcols, cs, tcs, Wh) else None
    if blas is None:
        return False
    T, G, N = A.shape
    H = G // 4
    tmp = xp_of(A).empty((G, N), dtype=A.dtype)
    args = device_pointers(blas_arguments(Wh, hcols[:, :N], tmp))  # step 0's product
    item = A.itemsize
    a0, c0, tc0, h0, wh = A.data.ptr, cs.data.ptr, tcs.data.ptr, hcols.data.ptr, tmp.data.ptr
    da, ds, dcol = G * N * item, H * N * item, N * item  # bytes per step in A, cs/tcs, hcols
    sizes = _ints(H, N, N, N, N, N, N, hcols.shape[1])  # H, N, then each operand's row stride
    kernel, grid = _kernels(A.dtype.char)[0], _grid(H, N)
    for t in range(T):
        args[5] = h0 + t * dcol  # the product reads a<t-1>, block t of hcols
        blas(*args)
        ptrs = (a0 + t * da, wh, c0 + t * ds, c0 + (t + 1) * ds, tc0 + t * ds, h0 + (t + 1) * dcol)
        kernel(*grid, (*(np.uint64(p) for p in ptrs), *sizes))
    return True


def lstm_backward_window(
    WhT: Array, A: Array, tcs: Array, cs: Array, dout: Array, dh: Array, dc: Array, dA2: Array
) -> bool:
    """LSTM.backward's recurrence on CuPy: for t = T-1..0, the gate kernel writes dA<t> into
    column block t of dA2 (4H, T*N) and updates dc, then dh = Wh^T dA<t>. dout (T, H, N) may
    be a strided view (unit stride along N); the rest are contiguous. False (nothing done)
    where this does not apply."""
    strided_ok = dout.dtype == A.dtype and dout.strides[2] == A.itemsize and min(dout.strides) > 0
    contiguous = _contiguous_floats(A, tcs, cs, dh, dc, dA2, WhT)
    blas = cublas_gemm(A.dtype) if contiguous and strided_ok else None
    if blas is None:
        return False
    T, G, N = A.shape
    H = G // 4
    args = device_pointers(blas_arguments(WhT, dA2[:, :N], dh))  # step 0's product
    item = A.itemsize
    a0, tc0, c0, do0, col0 = A.data.ptr, tcs.data.ptr, cs.data.ptr, dout.data.ptr, dA2.data.ptr
    dh_ptr, dc_ptr = dh.data.ptr, dc.data.ptr
    da, ds, dcol, dd = G * N * item, H * N * item, N * item, dout.strides[0]
    lds = (N, N, N, dout.strides[1] // item, N, N, dA2.shape[1])  # A, tc, c, dout, dh, dc, dA2
    sizes = _ints(H, N, *lds)
    kernel, grid = _kernels(A.dtype.char)[1], _grid(H, N)
    for t in range(T - 1, -1, -1):
        ptrs = (
            a0 + t * da,
            tc0 + t * ds,
            c0 + t * ds,
            do0 + t * dd,
            dh_ptr,
            dc_ptr,
            col0 + t * dcol,
        )
        kernel(*grid, (*(np.uint64(p) for p in ptrs), *sizes))
        args[5] = col0 + t * dcol  # dh = Wh^T dA<t>, read from its column block
        blas(*args)
    return True
