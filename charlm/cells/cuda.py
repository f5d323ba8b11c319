"""The CUDA kernel set: fused per-step LSTM gate arithmetic for CuPy, one GPU kernel instead of
~10 (forward) and ~20 (backward) small ones per step, and whole-window loops.

`cuda_kernels(cell)` is what `CudaDevice.kernels` hands a cell. The NumPy functions in
`lstm.py` are the reference: these kernels compute exactly their expressions (the tests compare
them on the GPU). They are raw kernels that take each (rows, N) operand as a pointer and its row
stride, so a step reads and writes the strided per-step views of a window in column layout in
place, and a launch costs little Python: on a GPU the recurrence is bound by how fast Python
issues the hundreds of small launches of a window. For the same reason the window functions run
a whole window's loop (without resets) at two launches a step, the recurrent product and the
gate kernel. GRU and RNN have no CUDA kernels yet: their NumPy reference runs on CuPy arrays.
Compiled on first use, once per dtype.
"""

from __future__ import annotations

from functools import cache
from typing import Any

import numpy as np

from charlm.cells import gru, lstm, rnn
from charlm.cublas import blas_arguments, cublas_gemm, device_pointers

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


def _launch(kernel_index: int, arrays: tuple[Array, ...], H: int, N: int) -> None:
    """Run a kernel over the (H, N) elements. Every operand is a float32/float64 array of one
    dtype whose rows are contiguous (the cells' buffers always are)."""
    dtype = arrays[0].dtype
    strides = []
    for x in arrays:
        if x.dtype != dtype or x.strides[1] != x.itemsize or dtype.char not in "fd":
            raise ValueError(f"CUDA LSTM kernel: operand {x.dtype} {x.strides} not supported")
        strides.append(np.int64(x.strides[0] // x.itemsize))
    _kernels(dtype.char)[kernel_index](*_grid(H, N), (*arrays, np.int64(H), np.int64(N), *strides))


def lstm_step_forward(
    gates: Array, wh: Array, c_prev: Array, c: Array, tanh_c: Array, h: Array
) -> None:
    """`lstm.step_forward` in one kernel; any operand may be a strided view."""
    H, N = c.shape
    _launch(0, (gates, wh, c_prev, c, tanh_c, h), H, N)


def lstm_step_backward(
    gates: Array, tanh_c: Array, c_prev: Array, dout: Array, dh: Array, dc: Array,
    dgates: Array, scratch: Array,
) -> None:  # fmt: skip
    """`lstm.step_backward` in one kernel (no scratch needed). Unlike the reference, dh is only
    read (the kernel adds dout itself) -- the caller overwrites dh with Wh^T dgates next."""
    H, N = tanh_c.shape
    _launch(1, (gates, tanh_c, c_prev, dout, dh, dc, dgates), H, N)


# ------------------------------------------------------------------ whole windows
# The loops of LSTM.forward/backward (windows without resets) at two launches a step: the
# recurrent product through cuBLAS and one gate kernel. Step t's operands are addressed by
# pointer arithmetic on the window buffers, not as array views: the GPU finishes a step sooner
# than Python can issue it, and making a view costs about as much as a launch.


def _ints(*values: int) -> list[np.int64]:
    return [np.int64(v) for v in values]


def lstm_window_forward(Wh: Array, gates: Array, h_cols: Array, c: Array, tanh_c: Array) -> None:
    """LSTM.forward's recurrence: for t = 0..T-1, tmp = Wh a<t-1> (h_cols block t), then the
    gate kernel on gates[t], writing c<t> (c[t+1]), tanh(c<t>) (tanh_c[t]) and a<t> (h_cols block
    t+1). All contiguous (workspace buffers): gates (T, 4H, N), c (T+1, H, N), tanh_c (T, H, N),
    h_cols (H, (T+1)*N)."""
    blas = cublas_gemm(gates.dtype)
    T, G, N = gates.shape
    H = G // 4
    import cupy  # noqa: PLC0415 - only reached on a GPU

    tmp = cupy.empty((G, N), dtype=gates.dtype)
    args = device_pointers(blas_arguments(Wh, h_cols[:, :N], tmp))  # step 0's product
    item = gates.itemsize
    a0, c0, tc0, h0, wh = gates.data.ptr, c.data.ptr, tanh_c.data.ptr, h_cols.data.ptr, tmp.data.ptr
    da, ds, dcol = G * N * item, H * N * item, N * item  # bytes per step in gates, c/tanh_c, h_cols
    sizes = _ints(H, N, N, N, N, N, N, h_cols.shape[1])  # H, N, then each operand's row stride
    kernel, grid = _kernels(gates.dtype.char)[0], _grid(H, N)
    for t in range(T):
        args[5] = h0 + t * dcol  # the product reads a<t-1>, block t of h_cols
        blas(*args)
        ptrs = (a0 + t * da, wh, c0 + t * ds, c0 + (t + 1) * ds, tc0 + t * ds, h0 + (t + 1) * dcol)
        kernel(*grid, (*(np.uint64(p) for p in ptrs), *sizes))


def lstm_window_backward(
    WhT: Array,
    gates: Array,
    tanh_c: Array,
    c: Array,
    dout: Array,
    dh: Array,
    dc: Array,
    dgates_cols: Array,
) -> None:
    """LSTM.backward's recurrence: for t = T-1..0, the gate kernel writes dA<t> into column
    block t of dgates_cols (4H, T*N) and updates dc, then dh = Wh^T dA<t>. dout (T, H, N) may be a
    strided view with unit stride along N; the rest are contiguous workspace buffers."""
    if dout.dtype != gates.dtype or dout.strides[2] != gates.itemsize or min(dout.strides) <= 0:
        raise ValueError(f"CUDA LSTM window: dout layout {dout.strides} not supported")
    blas = cublas_gemm(gates.dtype)
    T, G, N = gates.shape
    H = G // 4
    args = device_pointers(blas_arguments(WhT, dgates_cols[:, :N], dh))  # step 0's product
    item = gates.itemsize
    a0, tc0, c0, do0, col0 = (
        gates.data.ptr,
        tanh_c.data.ptr,
        c.data.ptr,
        dout.data.ptr,
        dgates_cols.data.ptr,
    )
    dh_ptr, dc_ptr = dh.data.ptr, dc.data.ptr
    da, ds, dcol, dd = G * N * item, H * N * item, N * item, dout.strides[0]
    lds = (
        N,
        N,
        N,
        dout.strides[1] // item,
        N,
        N,
        dgates_cols.shape[1],
    )  # gates, tc, c, dout, dh, dc, dgates_cols
    sizes = _ints(H, N, *lds)
    kernel, grid = _kernels(gates.dtype.char)[1], _grid(H, N)
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


def cuda_kernels(cell: str) -> Any:
    """The kernel set `CudaDevice` gives cell `cell`."""
    if cell == "lstm":
        return lstm.LSTMKernels(
            lstm_step_forward, lstm_step_backward, lstm_window_forward, lstm_window_backward
        )
    return {"gru": gru.REFERENCE, "rnn": rnn.REFERENCE}[cell]
