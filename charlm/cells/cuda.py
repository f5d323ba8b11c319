"""The CUDA kernel set: each cell's elementwise step work fused into one GPU kernel (two for
the notes' GRU), and whole-window loops at one product and one kernel a step.

`cuda_kernels(cell)` is what `CudaDevice.kernels` hands a cell. The NumPy functions in
`lstm.py`, `gru.py` and `rnn.py` are the reference: the kernels (source in `cuda_source.py`)
compute exactly their expressions. On a GPU a window is bound by how fast Python issues its
hundreds of small launches (until a CUDA graph replays them, `charlm.cudagraph`), so the window
loops address step t's operands by pointer arithmetic on the window buffers rather than as
array views -- making a view costs about as much as a launch -- and call cuBLAS directly. They
handle lines-mode resets inside the kernels (see `cuda_source.py`), so every window takes them.

Everything here is written against a `Backend`: the kernels and the GEMM on raw pointers. On a
GPU that is CuPy's RawModule and cuBLAS (`CupyBackend`); the tests run the very same loops on
the CPU through the kernels compiled with g++ (`tests/_cuda_emulation.py`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from charlm.cells import gru, lstm, rnn
from charlm.cells.cuda_backend import (
    NULL,
    Backend,
    Gemm,
    Steps,
    backend_empty,
    check_operands,
    cupy_backend,
    keep_rows,
    pointer,
)
from charlm.cells.cuda_backend import (
    row_stride as ld,
)

Array = Any
ACTIVATIONS = {"tanh": 0, "relu": 1}


# ------------------------------------------------------------------ the kernel sets
class CudaCells:
    """Every cell's CUDA kernels on the backend `backend(dtype_char)` gives."""

    def __init__(self, backend: Callable[[str], Backend] = cupy_backend) -> None:
        self.backend = backend

    def _kernel(self, name: str, *arrays: Array) -> Callable[..., None]:
        return self.backend(check_operands(*arrays)).kernel(name)

    # ---------------------------------------------------------------- LSTM
    def lstm_step_forward(
        self, gates: Array, wh: Array, c_prev: Array, c: Array, tanh_c: Array, h: Array
    ) -> None:
        """`lstm.step_forward` in one kernel; any operand may be a strided view."""
        H, N = c.shape
        k = self._kernel("lstm_forward", gates, wh, c_prev, c, tanh_c, h)
        ops = (gates, wh, c_prev, c, tanh_c, h)
        k(H * N, *map(pointer, ops), NULL, NULL, NULL, H, N, *map(ld, ops), 0, 0)

    def lstm_step_backward(
        self,
        gates: Array,
        tanh_c: Array,
        c_prev: Array,
        dout: Array,
        dh: Array,
        dc: Array,
        dgates: Array,
        scratch: Array,
    ) -> None:
        """`lstm.step_backward` in one kernel (no scratch needed)."""
        H, N = tanh_c.shape
        ops = (gates, tanh_c, c_prev, dout, dh, dc, dgates)
        k = self._kernel("lstm_backward", *ops)
        k(H * N, *map(pointer, ops), NULL, NULL, H, N, *map(ld, ops))

    def lstm_window_forward(
        self,
        Wh: Array,
        gates: Array,
        h_cols: Array,
        c: Array,
        tanh_c: Array,
        keep_mask: Array | None = None,
        masked_h_prev: Array | None = None,
    ) -> None:
        """LSTM.forward's recurrence: for t = 0..T-1, wh = Wh a<t-1> (h_cols block t), then the
        gate kernel on gates[t], writing c<t> (c[t+1]), tanh(c<t>) (tanh_c[t]) and a<t> (h_cols
        block t+1); with resets, keep_mask (T, N) and the masked a<t-1> into masked_h_prev."""
        T, G, N = gates.shape
        H = G // 4
        backend = self.backend(check_operands(gates, h_cols, c, tanh_c, keep_mask, masked_h_prev))
        wh = backend_empty(gates, (G, N))
        gemm = Gemm(backend, Wh, h_cols[:, :N], wh)
        kernel = backend.kernel("lstm_forward")
        a, cs, tc, hc = Steps(gates), Steps(c), Steps(tanh_c), Steps(h_cols, N)
        keep, hm = keep_rows(keep_mask), Steps(masked_h_prev)
        sizes = (H, N, N, N, N, N, N, hc.ld, hc.ld, N)
        whp = pointer(wh)
        for t in range(T):
            gemm(hc[t], whp)
            kernel(H * N, a[t], whp, cs[t], cs[t + 1], tc[t], hc[t + 1], keep[t], hc[t], hm[t],
                   *sizes)  # fmt: skip

    def lstm_window_backward(
        self,
        WhT: Array,
        gates: Array,
        tanh_c: Array,
        c: Array,
        dout: Array,
        dh: Array,
        dc: Array,
        dgates_cols: Array,
        keep_mask: Array | None = None,
    ) -> None:
        """LSTM.backward's recurrence: for t = T-1..0, the gate kernel writes dA<t> into column
        block t of dgates_cols (4H, T*N) and updates dc, then dh = Wh^T dA<t>. dout (T, H, N)
        may be a strided view with unit stride along N."""
        T, G, N = gates.shape
        H = G // 4
        backend = self.backend(
            check_operands(gates, tanh_c, c, dout, dh, dc, dgates_cols, keep_mask)
        )
        gemm = Gemm(backend, WhT, dgates_cols[:, :N], dh)
        kernel = backend.kernel("lstm_backward")
        a, tc, cs, do = Steps(gates), Steps(tanh_c), Steps(c), Steps(dout)
        da, keep = Steps(dgates_cols, N), keep_rows(keep_mask)
        dhp, dcp = pointer(dh), pointer(dc)
        sizes = (H, N, N, N, N, do.ld, ld(dh), ld(dc), da.ld)
        for t in range(T - 1, -1, -1):
            keep_next = keep[t + 1] if t < T - 1 else NULL
            kernel(H * N, a[t], tc[t], cs[t], do[t], dhp, dcp, da[t], keep[t], keep_next, *sizes)
            gemm(da[t], dhp)
        _finish(backend, dh, NULL, keep[0])

    # ---------------------------------------------------------------- GRU
    def gru_forward_gates(self, gates: Array, wh_ur: Array, h_prev: Array, rh: Array) -> None:
        H, N = h_prev.shape
        ops = (gates, wh_ur, h_prev, rh)
        k = self._kernel("gru_gates", *ops)
        k(H * N, *map(pointer, ops), NULL, NULL, H, N, *map(ld, ops), 0)

    def gru_forward_candidate(self, gates: Array, wc: Array, h_prev: Array, h: Array) -> None:
        H, N = h_prev.shape
        ops = (gates, wc, h_prev, h)
        k = self._kernel("gru_candidate", *ops)
        k(H * N, *map(pointer, ops), NULL, H, N, *map(ld, ops))

    def gru_forward_after(
        self, gates: Array, wh: Array, bhn: Array, h_prev: Array, rh: Array, h: Array
    ) -> None:
        H, N = h_prev.shape
        k = self._kernel("gru_after", gates, wh, h_prev, rh, h)
        k(H * N, pointer(gates), pointer(wh), pointer(bhn), pointer(h_prev), pointer(rh),
          pointer(h), NULL, NULL, H, N, *map(ld, (gates, wh, h_prev, rh, h)), 0)  # fmt: skip

    def gru_backward_candidate(
        self,
        gates: Array,
        h_prev: Array,
        dout: Array,
        dh: Array,
        dgates: Array,
        dcand: Array,
        t1: Array,
    ) -> None:
        H, N = h_prev.shape
        k = self._kernel("gru_back_candidate", gates, h_prev, dout, dh, dgates, dcand)
        k(H * N, pointer(gates), pointer(h_prev), pointer(dout), pointer(dh), NULL,
          pointer(dgates), pointer(dcand), NULL, NULL, H, N, ld(gates), ld(h_prev),
          ld(dout), ld(dh), 0, ld(dgates), ld(dcand))  # fmt: skip

    def gru_backward_gates(
        self, gates: Array, h_prev: Array, dh: Array, dgates: Array, d_rh: Array, t2: Array
    ) -> None:
        H, N = h_prev.shape
        ops = (gates, h_prev, dh, dgates, d_rh)
        k = self._kernel("gru_back_gates", *ops)
        k(H * N, *map(pointer, ops), NULL, H, N, *map(ld, ops))

    def gru_backward_after(
        self,
        gates: Array,
        h_prev: Array,
        rh: Array,
        dout: Array,
        dh: Array,
        dgates: Array,
        dcand: Array,
        t1: Array,
        t2: Array,
    ) -> None:
        H, N = h_prev.shape
        k = self._kernel("gru_back_after", gates, h_prev, rh, dout, dh, dgates, dcand)
        k(H * N, pointer(gates), pointer(h_prev), pointer(rh), pointer(dout), pointer(dh),
          NULL, pointer(dgates), pointer(dcand), NULL, NULL, H, N, ld(gates), ld(h_prev),
          ld(rh), ld(dout), ld(dh), 0, ld(dgates), ld(dcand))  # fmt: skip

    def gru_window_forward(
        self,
        Wh: Array,
        bhn: Array | None,
        gates: Array,
        hs: Array,
        rhs: Array,
        keep_mask: Array | None = None,
        masked_h_prev: Array | None = None,
    ) -> None:
        """GRU.forward's recurrence over hs (T+1, H, N) (block 0 the carried-in state) and
        rhs (T, H, N); bhn given: the reset-after form (one product a step), else the notes'
        (two: W_ur c<t-1>, then W_c (r * c<t-1>))."""
        T, G, N = gates.shape
        H = G // 3
        backend = self.backend(check_operands(gates, hs, rhs, keep_mask, masked_h_prev))
        wh = backend_empty(gates, (G, N))
        whp = pointer(wh)
        a, h, rh = Steps(gates), Steps(hs), Steps(rhs)
        keep, hm = keep_rows(keep_mask), Steps(masked_h_prev)
        if bhn is not None:
            gemm = Gemm(backend, Wh, hs[0], wh)
            kernel = backend.kernel("gru_after")
            sizes = (H, N, N, N, N, N, N, N)
            for t in range(T):
                gemm(h[t], whp)
                kernel(H * N, a[t], whp, pointer(bhn), h[t], rh[t], h[t + 1], keep[t], hm[t],
                       *sizes)  # fmt: skip
            return
        gemm_ur = Gemm(backend, Wh[: 2 * H], hs[0], wh[: 2 * H])
        gemm_c = Gemm(backend, Wh[2 * H :], rhs[0], wh[:H])
        gates_k, cand_k = backend.kernel("gru_gates"), backend.kernel("gru_candidate")
        for t in range(T):
            gemm_ur(h[t], whp)
            gates_k(H * N, a[t], whp, h[t], rh[t], keep[t], hm[t], H, N, N, N, N, N, N)
            gemm_c(rh[t], whp)
            cand_k(H * N, a[t], whp, h[t], h[t + 1], keep[t], H, N, N, N, N, N)

    def gru_window_backward(
        self,
        WhT: Array,
        gates: Array,
        hs: Array,
        rhs: Array,
        dout: Array,
        dh: Array,
        dA: Array,
        dWh_in: Array | None,
        keep_mask: Array | None = None,
    ) -> None:
        """GRU.backward's recurrence: dA (T, 3H, N) gets the d pre-activations of u, r, c~
        (reset-after, dWh_in given: d(W_h c<t-1> + ..) rows u, r, c~ into dWh_in and the
        candidate's into dA[:, 2H:]); dh ends as dLoss/dc<0>. dh must start at zero."""
        T, G, N = gates.shape
        H = G // 3
        backend = self.backend(check_operands(gates, hs, rhs, dout, dh, dA, dWh_in, keep_mask))
        g = backend_empty(gates, (H, N))  # the W^T product of the last step
        gp, dhp = pointer(g), pointer(dh)
        a, h, rh, do, da = Steps(gates), Steps(hs), Steps(rhs), Steps(dout), Steps(dA)
        keep = keep_rows(keep_mask)
        ldd, lddh = do.ld, ld(dh)
        if dWh_in is not None:
            dw = Steps(dWh_in)
            gemm = Gemm(backend, WhT, dWh_in[0], g)
            kernel = backend.kernel("gru_back_after")
            for t in range(T - 1, -1, -1):
                last = t == T - 1
                kernel(H * N, a[t], h[t], rh[t], do[t], dhp, NULL if last else gp, dw[t],
                       da[t] + 2 * H * N * dA.itemsize, keep[t], NULL if last else keep[t + 1],
                       H, N, N, N, N, ldd, lddh, N, N, N)  # fmt: skip
                gemm(dw[t], gp)
        else:
            t1 = backend_empty(gates, (H, N))
            t1p = pointer(t1)
            gemm_c = Gemm(backend, WhT[:, 2 * H :], dA[0, 2 * H :], t1)
            gemm_ur = Gemm(backend, WhT[:, : 2 * H], dA[0, : 2 * H], g)
            cand_k = backend.kernel("gru_back_candidate")
            gates_k = backend.kernel("gru_back_gates")
            offset_c = 2 * H * N * dA.itemsize
            for t in range(T - 1, -1, -1):
                last = t == T - 1
                cand_k(H * N, a[t], h[t], do[t], dhp, NULL if last else gp, da[t],
                       da[t] + offset_c, keep[t], NULL if last else keep[t + 1],
                       H, N, N, N, ldd, lddh, N, N, N)  # fmt: skip
                gemm_c(da[t] + offset_c, t1p)
                gates_k(H * N, a[t], h[t], dhp, da[t], t1p, keep[t], H, N, N, N, lddh, N, N)
                gemm_ur(da[t], gp)
        _finish(backend, dh, gp, keep[0])

    # ---------------------------------------------------------------- RNN
    def rnn_step_forward(self, activation: str, gates: Array, h: Array) -> None:
        H, N = h.shape
        k = self._kernel("rnn_forward", gates, h)
        k(H * N, pointer(gates), pointer(h), NULL, NULL, NULL, ACTIVATIONS[activation], H, N,
          ld(gates), ld(h), 0, 0)  # fmt: skip

    def rnn_step_backward(
        self, activation: str, h: Array, dout: Array, dh: Array, dgates: Array
    ) -> None:
        H, N = h.shape
        ops = (h, dout, dh, dgates)
        k = self._kernel("rnn_backward", *ops)
        k(H * N, *map(pointer, ops), NULL, ACTIVATIONS[activation], H, N, *map(ld, ops))

    def rnn_window_forward(
        self,
        Wh: Array,
        gates: Array,
        hs: Array,
        activation: str,
        keep_mask: Array | None = None,
        masked_h_prev: Array | None = None,
    ) -> None:
        """RNN.forward's recurrence: for each t, hs[t+1] = Wh hs[t], then the kernel."""
        T, H, N = gates.shape
        backend = self.backend(check_operands(gates, hs, keep_mask, masked_h_prev))
        gemm = Gemm(backend, Wh, hs[0], hs[1])
        kernel = backend.kernel("rnn_forward")
        a, h, keep, hm = Steps(gates), Steps(hs), keep_rows(keep_mask), Steps(masked_h_prev)
        act = ACTIVATIONS[activation]
        for t in range(T):
            gemm(h[t], h[t + 1])
            kernel(H * N, a[t], h[t + 1], keep[t], h[t], hm[t], act, H, N, N, N, N, N)

    def rnn_window_backward(
        self,
        WhT: Array,
        hs: Array,
        dout: Array,
        dh: Array,
        dA: Array,
        activation: str,
        keep_mask: Array | None = None,
    ) -> None:
        """RNN.backward's recurrence: dA (T, H, N), dh ends as dLoss/da<0>."""
        T, H, N = dA.shape
        backend = self.backend(check_operands(hs, dout, dh, dA, keep_mask))
        gemm = Gemm(backend, WhT, dA[0], dh)
        kernel = backend.kernel("rnn_backward")
        h, do, da, keep = Steps(hs), Steps(dout), Steps(dA), keep_rows(keep_mask)
        dhp, act = pointer(dh), ACTIVATIONS[activation]
        for t in range(T - 1, -1, -1):
            keep_next = keep[t + 1] if t < T - 1 else NULL
            kernel(H * N, h[t + 1], do[t], dhp, da[t], keep_next, act, H, N, N, do.ld,
                   ld(dh), N)  # fmt: skip
            gemm(da[t], dhp)
        _finish(backend, dh, NULL, keep[0])

    # ---------------------------------------------------------------- the sets
    def kernels(self, cell: str) -> Any:
        """The kernel set of `cell`, with the signatures of its reference set."""
        if cell == "lstm":
            return lstm.LSTMKernels(
                self.lstm_step_forward, self.lstm_step_backward, self.lstm_window_forward,
                self.lstm_window_backward, window_resets=True,
            )  # fmt: skip
        if cell == "gru":
            return gru.GRUKernels(
                self.gru_forward_gates, self.gru_forward_candidate, self.gru_forward_after,
                self.gru_backward_candidate, self.gru_backward_gates, self.gru_backward_after,
                self.gru_window_forward, self.gru_window_backward,
            )  # fmt: skip
        return rnn.RNNKernels(self.rnn_step_forward, self.rnn_step_backward,
                              self.rnn_window_forward, self.rnn_window_backward)  # fmt: skip


def _finish(backend: Backend, dh: Array, g: int, keep: int) -> None:
    """dh <- (dh + g) keep after a backward window, where either is pending (else nothing)."""
    if g == NULL and keep == NULL:
        return
    H, N = dh.shape
    backend.kernel("finish_dh")(H * N, pointer(dh), g, keep, H, N, ld(dh), N)


_CUPY_CELLS = CudaCells()


def cuda_kernels(cell: str) -> Any:
    """The kernel set `CudaDevice` gives cell `cell`."""
    return _CUPY_CELLS.kernels(cell)
