"""LSTM cell over a window of T steps (the course notes' equations).

    Gamma_u = sigma(W_u [a<t-1>, x<t>] + b_u)          update (input) gate
    Gamma_f = sigma(W_f [a<t-1>, x<t>] + b_f)          forget gate
    Gamma_o = sigma(W_o [a<t-1>, x<t>] + b_o)          output gate
    c~<t>   = tanh(W_c [a<t-1>, x<t>] + b_c)           candidate
    c<t>    = Gamma_f * c<t-1> + Gamma_u * c~<t>
    a<t>    = Gamma_o * tanh(c<t>)

The four gates are fused: Wx (4H, D), Wh (4H, H), b (4H,), rows in the order u, f, o, c~ so the
three sigmoids are one contiguous block. Shapes: x ids (T, N) or vectors (T, D, N); states
a, c (H, N); output (T, H, N).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from charlm.backend import gemm, xp_of
from charlm.cells import common, fused
from charlm.ops import (
    column_sequence,
    project_inputs,
    project_inputs_backward,
    sigmoid,
    time_columns,
)

Array = Any


class LSTM:
    """Long short-term memory cell; see the module docstring for the equations."""

    name = "lstm"
    num_gates = 4
    state_names = ("h", "c")

    def __init__(self, hidden_size: int) -> None:
        self.H = hidden_size

    def init_params(
        self, D: int, rng: np.random.Generator, dtype: Any, one_hot: bool
    ) -> dict[str, Array]:
        """Gaussian input weights, orthogonal recurrent blocks, forget-gate bias 1."""
        H = self.H
        b = np.zeros(4 * H, dtype=dtype)
        b[H : 2 * H] = 1.0  # remember by default: gradients flow through c from the start
        return {
            "Wx": common.input_weights(rng, 4 * H, D, H, one_hot, dtype),
            "Wh": common.recurrent_weights(rng, 4, H, dtype),
            "b": b,
        }

    def _advance(self, a: Array, wh: Array, cprev: Array, c: Array, tc: Array, h: Array) -> None:
        """One step from a = Wx x<t> + b and wh = Wh a<t-1>, both (4H, N).

        Leaves the gate activations in a and writes c<t>, tanh(c<t>), a<t>; wh is scratch.
        """
        if fused.lstm_forward(a, wh, cprev, c, tc, h):  # one GPU kernel under CuPy
            return
        xp = xp_of(a)
        H = self.H
        a += wh
        sigmoid(a[: 3 * H], out=a[: 3 * H])  # u, f, o
        xp.tanh(a[3 * H :], out=a[3 * H :])  # c~
        u, f, o, g = a[:H], a[H : 2 * H], a[2 * H : 3 * H], a[3 * H :]
        xp.multiply(f, cprev, out=c)  # c = f * c_prev + u * c~
        xp.multiply(u, g, out=wh[:H])
        c += wh[:H]
        xp.tanh(c, out=tc)
        xp.multiply(o, tc, out=h)  # a = o * tanh(c)

    def _retreat(
        self,
        a: Array,
        tc: Array,
        cprev: Array,
        dout: Array,
        dh: Array,
        dc: Array,
        da: Array,
        scratch: Array,
    ) -> None:
        """Gate gradients of one step into da (4H, N); dc becomes dLoss/dc<t-1>.

        dh, dc arrive from step t+1, dout from the layer above; scratch is (7H, N). da may be a
        strided view (the step's columns of dA2): it is written once, by the last two products,
        which saves copying a contiguous result there.
        """
        xp = xp_of(a)
        H = self.H
        u, f, o, g = a[:H], a[H : 2 * H], a[2 * H : 3 * H], a[3 * H :]
        t1, s3, raw = scratch[:H], scratch[H : 4 * H], scratch[4 * H : 7 * H]
        dh += dout
        # dc += dh * o * (1 - tanh(c)^2): a<t> = o tanh(c<t>)
        xp.multiply(tc, tc, out=t1)
        xp.subtract(1, t1, out=t1)
        t1 *= o
        t1 *= dh
        dc += t1
        # raw gate gradients, then times sigma' = s (1 - s) for the three sigmoids at once
        xp.multiply(dc, g, out=raw[:H])  # d u = dc * c~
        xp.multiply(dc, cprev, out=raw[H : 2 * H])  # d f = dc * c<t-1>
        xp.multiply(dh, tc, out=raw[2 * H :])  # d o = da * tanh(c)
        xp.subtract(1, a[: 3 * H], out=s3)
        s3 *= a[: 3 * H]
        xp.multiply(raw, s3, out=da[: 3 * H])
        # d c~ = dc * u, times tanh' = 1 - c~^2
        xp.multiply(g, g, out=t1)
        xp.subtract(1, t1, out=t1)
        t1 *= u
        xp.multiply(dc, t1, out=da[3 * H :])
        dc *= f  # dc_prev = dc * f

    def forward(
        self, params: dict[str, Array], x: Array, state: tuple[Array, Array], resets: Array | None
    ) -> tuple[Array, tuple[Array, Array], dict[str, Any]]:
        """Run T steps. Returns (a (T, H, N), (a<T>, c<T>), cache).

        The a<t> are kept in column layout (H, (T+1)*N), so the next layer, the output layer
        and dWh read the window without a transposing copy; `a` is a view of it.
        """
        Wx, Wh, b = params["Wx"], params["Wh"], params["b"]
        xp = xp_of(Wh)
        H = self.H
        A = project_inputs(Wx, b, x)  # (T, 4H, N); becomes the gate activations
        T, _, N = A.shape
        hcols = common.column_states(state[0], T)
        cs = common.state_sequence(state[1], T)
        tcs = xp.empty((T, H, N), dtype=Wh.dtype)
        keep = common.keep_mask(resets, Wh.dtype)
        hp = common.masked_store(keep, Wh, H, T, N)
        cp = common.masked_store(keep, Wh, H, T, N)
        # On a GPU (and no resets) fused.py runs this loop at two launches a step.
        if keep is not None or not fused.lstm_forward_window(Wh, A, hcols, cs, tcs):
            tmp = xp.empty((4 * H, N), dtype=Wh.dtype)
            for t in range(T):
                hprev = common.effective_prev(hcols[:, t * N : (t + 1) * N], t, keep, hp)
                cprev = common.effective_prev(cs[t], t, keep, cp)
                gemm(Wh, hprev, tmp)
                h = hcols[:, (t + 1) * N : (t + 2) * N]
                self._advance(A[t], tmp, cprev, cs[t + 1], tcs[t], h)
        cache = {
            "x": x,
            "params": params,
            "A": A,
            "hcols": hcols,
            "cs": cs,
            "tcs": tcs,
            "keep": keep,
            "hp": hp,
            "cp": cp,
        }
        out = column_sequence(hcols[:, N:], T)
        return out, (hcols[:, T * N :].copy(), cs[T].copy()), cache

    def backward(
        self, dout: Array, cache: dict[str, Any]
    ) -> tuple[Array | None, tuple[Array, Array], dict[str, Array]]:
        """Back through the window. dout (T, H, N) -> (dx, (da<0>, dc<0>), grads)."""
        A, tcs, keep = cache["A"], cache["tcs"], cache["keep"]
        params = cache["params"]
        Wh = params["Wh"]
        xp = xp_of(Wh)
        H = self.H
        T, _, N = A.shape
        dA2 = xp.empty((4 * H, T * N), dtype=Wh.dtype)  # dA in column layout, for the GEMMs
        dh = xp.zeros((H, N), dtype=Wh.dtype)
        dc = xp.zeros((H, N), dtype=Wh.dtype)
        WhT = xp.ascontiguousarray(Wh.T)  # a plain (not transposed) GEMM operand is faster
        cs = cache["cs"]
        # On a GPU (and no resets) fused.py runs this loop at two launches a step.
        if keep is not None or not fused.lstm_backward_window(WhT, A, tcs, cs, dout, dh, dc, dA2):
            scratch = xp.empty((7 * H, N), dtype=Wh.dtype)
            for t in range(T - 1, -1, -1):
                cprev = cs[t] if keep is None else cache["cp"][t]
                column = dA2[:, t * N : (t + 1) * N]  # dA<t> goes straight to its columns
                if not fused.lstm_backward(A[t], tcs[t], cprev, dout[t], dh, dc, column):
                    self._retreat(A[t], tcs[t], cprev, dout[t], dh, dc, column, scratch)
                gemm(WhT, column, dh)  # da<t-1> = Wh^T dA
                if keep is not None:
                    dh *= keep[t]
                    dc *= keep[t]
        hp = cache["hp"]
        hprev = cache["hcols"][:, : T * N] if hp is None else time_columns(hp)
        dWh = dA2 @ hprev.T
        dx, dWx, db = project_inputs_backward(dA2, cache["x"], params["Wx"])
        return dx, (dh, dc), {"Wx": dWx, "Wh": dWh, "b": db}

    def step(
        self, params: dict[str, Array], x: Array, state: tuple[Array, Array]
    ) -> tuple[Array, tuple[Array, Array]]:
        """One step for sampling, no cache: x ids (N,) or (D, N) -> (a<t> (H, N), new state)."""
        Wh = params["Wh"]
        xp = xp_of(Wh)
        H = self.H
        a = project_inputs(params["Wx"], params["b"], x[None])
        a = a[0]
        N = a.shape[1]
        wh = xp.matmul(Wh, state[0])
        c = xp.empty((H, N), dtype=Wh.dtype)
        tc = xp.empty((H, N), dtype=Wh.dtype)
        h = xp.empty((H, N), dtype=Wh.dtype)
        self._advance(a, wh, state[1], c, tc, h)
        return h, (h, c)
