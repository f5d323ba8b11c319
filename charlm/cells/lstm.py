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

The elementwise work of one step is a kernel (`LSTMKernels`): `step_forward` and `step_backward`
below are the NumPy reference, every faster set (CUDA in `charlm.cells.cuda`) computes exactly
their expressions, and a set may also run a whole window's loop.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from charlm.cells import base
from charlm.device import xp_of
from charlm.ops import (
    column_sequence,
    is_ids,
    project_inputs,
    project_inputs_backward,
    sigmoid,
    time_columns,
)
from charlm.workspace import Workspace

Array = Any


def step_forward(gates: Array, wh: Array, c_prev: Array, c: Array, tanh_c: Array, h: Array) -> None:
    """One step from gates = Wx x<t> + b and wh = Wh a<t-1>, both (4H, N).

    Leaves the gate activations in `gates` and writes c<t>, tanh(c<t>), a<t> (each (H, N));
    wh is scratch.
    """
    xp = xp_of(gates)
    H = c.shape[0]
    gates += wh
    sigmoid(gates[: 3 * H], out=gates[: 3 * H])  # u, f, o
    xp.tanh(gates[3 * H :], out=gates[3 * H :])  # c~
    u, f, o, g = gates[:H], gates[H : 2 * H], gates[2 * H : 3 * H], gates[3 * H :]
    xp.multiply(f, c_prev, out=c)  # c = f * c_prev + u * c~
    xp.multiply(u, g, out=wh[:H])
    c += wh[:H]
    xp.tanh(c, out=tanh_c)
    xp.multiply(o, tanh_c, out=h)  # a = o * tanh(c)


def step_backward(
    gates: Array,
    tanh_c: Array,
    c_prev: Array,
    dout: Array,
    dh: Array,
    dc: Array,
    dgates: Array,
    scratch: Array,
) -> None:
    """Gate gradients of one step into dgates (4H, N); dc becomes dLoss/dc<t-1>.

    dh, dc arrive from step t+1 (dh is updated to dh + dout), dout from the layer above;
    scratch is (7H, N). dgates may be a strided view (the step's columns of the window's
    gradient): it is written once, by the last two products, which saves copying a contiguous
    result there.
    """
    xp = xp_of(gates)
    H = tanh_c.shape[0]
    u, f, o, g = gates[:H], gates[H : 2 * H], gates[2 * H : 3 * H], gates[3 * H :]
    t1, s3, raw = scratch[:H], scratch[H : 4 * H], scratch[4 * H : 7 * H]
    dh += dout
    # dc += dh * o * (1 - tanh(c)^2): a<t> = o tanh(c<t>)
    xp.multiply(tanh_c, tanh_c, out=t1)
    xp.subtract(1, t1, out=t1)
    t1 *= o
    t1 *= dh
    dc += t1
    # raw gate gradients, then times sigma' = s (1 - s) for the three sigmoids at once
    xp.multiply(dc, g, out=raw[:H])  # d u = dc * c~
    xp.multiply(dc, c_prev, out=raw[H : 2 * H])  # d f = dc * c<t-1>
    xp.multiply(dh, tanh_c, out=raw[2 * H :])  # d o = da * tanh(c)
    xp.subtract(1, gates[: 3 * H], out=s3)
    s3 *= gates[: 3 * H]
    xp.multiply(raw, s3, out=dgates[: 3 * H])
    # d c~ = dc * u, times tanh' = 1 - c~^2
    xp.multiply(g, g, out=t1)
    xp.subtract(1, t1, out=t1)
    t1 *= u
    xp.multiply(dc, t1, out=dgates[3 * H :])
    dc *= f  # dc_prev = dc * f


@dataclass(frozen=True)
class LSTMKernels:
    """One device's LSTM step kernels (signatures of `step_forward`, `step_backward`).

    window_forward(Wh, gates (T, 4H, N), h_cols (H, (T+1)N), c (T+1, H, N), tanh_c (T, H, N))
    and window_backward(WhT, gates, tanh_c, c, dout (T, H, N), dh, dc, dgates_cols (4H, TN)),
    where a device has them, run the whole loop of a window without resets; with
    `window_resets` also with them, given keep_mask (T, N) and masked_h_prev (T, H, N) last
    (forward), keep_mask last (backward).
    """

    step_forward: Callable[..., None]
    step_backward: Callable[..., None]
    window_forward: Callable[..., None] | None = None
    window_backward: Callable[..., None] | None = None
    window_resets: bool = False


REFERENCE = LSTMKernels(step_forward, step_backward)


class LSTM(base.CellBase):
    """Long short-term memory cell; see the module docstring for the equations."""

    name = "lstm"
    num_gates = 4
    state_names = ("h", "c")

    def init_params(
        self, D: int, rng: np.random.Generator, dtype: Any, one_hot: bool
    ) -> dict[str, Array]:
        """Gaussian input weights, orthogonal recurrent blocks, forget-gate bias 1."""
        H = self.H
        b = np.zeros(4 * H, dtype=dtype)
        b[H : 2 * H] = 1.0  # remember by default: gradients flow through c from the start
        return {
            "Wx": base.input_weights(rng, 4 * H, D, H, one_hot, dtype),
            "Wh": base.recurrent_weights(rng, 4, H, dtype),
            "b": b,
        }

    def forward(
        self,
        params: dict[str, Array],
        x: Array,
        state: tuple[Array, Array],
        resets: Array | None,
        ws: Workspace | None = None,
    ) -> tuple[Array, tuple[Array, Array], dict[str, Any]]:
        """Run T steps. Returns (a (T, H, N), (a<T>, c<T>), cache).

        The a<t> are kept in column layout (H, (T+1)*N), so the next layer, the output layer
        and dWh read the window without a transposing copy; `a` is a view of it.
        """
        Wx, Wh, b = params["Wx"], params["Wh"], params["b"]
        ws = ws or Workspace.fresh(self.device.xp)
        H, dtype = self.H, Wh.dtype
        T, N = x.shape[0], x.shape[-1]
        gates = project_inputs(self.device, Wx, b, x, ws.empty("gates", (T, 4 * H, N), dtype))
        h_cols = base.column_states(state[0], T, ws, "h_cols")
        c = base.state_sequence(state[1], T, ws, "c")
        tanh_c = ws.empty("tanh_c", (T, H, N), dtype)
        keep_mask = base.keep_mask(resets, dtype, ws)
        masked_h_prev = base.masked_store(keep_mask, ws, "masked_h_prev", (T, H, N), dtype)
        masked_c_prev = base.masked_store(keep_mask, ws, "masked_c_prev", (T, H, N), dtype)
        kernels = self.kernels
        if kernels.window_forward is not None and (keep_mask is None or kernels.window_resets):
            masks = () if keep_mask is None else (keep_mask, masked_h_prev)
            kernels.window_forward(Wh, gates, h_cols, c, tanh_c, *masks)
        else:
            wh = ws.empty("wh", (4 * H, N), dtype)
            for t in range(T):
                h_prev = base.masked_prev(
                    h_cols[:, t * N : (t + 1) * N], t, keep_mask, masked_h_prev
                )
                c_prev = base.masked_prev(c[t], t, keep_mask, masked_c_prev)
                self.device.gemm(Wh, h_prev, wh)
                h = h_cols[:, (t + 1) * N : (t + 2) * N]
                kernels.step_forward(gates[t], wh, c_prev, c[t + 1], tanh_c[t], h)
        cache = {
            "x": x,
            "params": params,
            "gates": gates,
            "h_cols": h_cols,
            "c": c,
            "tanh_c": tanh_c,
            "keep_mask": keep_mask,
            "masked_h_prev": masked_h_prev,
            "masked_c_prev": masked_c_prev,
            "ws": ws,
        }
        out = column_sequence(h_cols[:, N:], T)
        return out, (h_cols[:, T * N :].copy(), c[T].copy()), cache

    def backward(
        self, dout: Array, cache: dict[str, Any], grads: dict[str, Array] | None = None
    ) -> tuple[Array | None, tuple[Array, Array], dict[str, Array]]:
        """Back through the window. dout (T, H, N) -> (dx, (da<0>, dc<0>), grads); the
        gradients are written into `grads` when given (views of the run's flat buffer)."""
        gates, tanh_c, keep_mask, c = (
            cache["gates"],
            cache["tanh_c"],
            cache["keep_mask"],
            cache["c"],
        )
        params, ws = cache["params"], cache["ws"]
        Wh = params["Wh"]
        xp = self.device.xp
        H, dtype = self.H, Wh.dtype
        T, _, N = gates.shape
        grads = grads if grads is not None else base.empty_grads(xp, params)
        tmp = ws.shared("backward")  # dead once this returns: one set for all layers
        dgates_cols = tmp.empty("dgates_cols", (4 * H, T * N), dtype)  # for the window GEMMs
        dh = tmp.zeros("dh", (H, N), dtype)
        dc = tmp.zeros("dc", (H, N), dtype)
        WhT = tmp.empty("WhT", Wh.shape[::-1], dtype)
        WhT[...] = Wh.T  # a plain (not transposed) GEMM operand is faster
        kernels = self.kernels
        if kernels.window_backward is not None and (keep_mask is None or kernels.window_resets):
            masks = () if keep_mask is None else (keep_mask,)
            kernels.window_backward(WhT, gates, tanh_c, c, dout, dh, dc, dgates_cols, *masks)
        else:
            scratch = tmp.empty("scratch", (7 * H, N), dtype)
            for t in range(T - 1, -1, -1):
                c_prev = c[t] if keep_mask is None else cache["masked_c_prev"][t]
                dgates = dgates_cols[:, t * N : (t + 1) * N]  # dA<t> goes straight to its columns
                kernels.step_backward(gates[t], tanh_c[t], c_prev, dout[t], dh, dc, dgates, scratch)
                self.device.gemm(WhT, dgates, dh)  # da<t-1> = Wh^T dA
                if keep_mask is not None:
                    dh *= keep_mask[t]
                    dc *= keep_mask[t]
        masked = cache["masked_h_prev"]
        h_prev = cache["h_cols"][:, : T * N] if masked is None else time_columns(masked, tmp)
        xp.matmul(dgates_cols, h_prev.T, out=grads["Wh"])
        dx = base.input_grad_buffer(ws, cache["x"], params["Wx"], T * N)
        dx = project_inputs_backward(self.device, dgates_cols, cache["x"], params["Wx"],
                                     grads["Wx"], grads["b"], dx, tmp)  # fmt: skip
        return dx, (dh.copy(), dc.copy()), grads

    def sampling_params(self, params: dict[str, Array]) -> dict[str, Array]:
        """Adds Wxh = [Wx Wh] (4H, D+H): for a vector input, `step` makes Wx x<t> + Wh a<t-1>
        one matrix-vector product, which BLAS splits over the cores where two half-size ones
        run on one (13 against 24 us at H256 on the 2-core machine here)."""
        return {**params, "Wxh": self.device.xp.concatenate([params["Wx"], params["Wh"]], axis=1)}

    def step(
        self, params: dict[str, Array], x: Array, state: tuple[Array, Array]
    ) -> tuple[Array, tuple[Array, Array]]:
        """One step for sampling, no cache: x ids (N,) or (D, N) -> (a<t> (H, N), new state).
        With `sampling_params`' Wxh, a vector input takes one product for both terms."""
        Wh = params["Wh"]
        xp = self.device.xp
        H, N = self.H, x.shape[-1]
        if "Wxh" in params and not is_ids(x):
            wh = xp.matmul(params["Wxh"], xp.concatenate([x, state[0]]))  # Wx x + Wh a<t-1>
            gates = xp.empty((4 * H, N), dtype=Wh.dtype)
            gates[...] = params["b"][:, None]
        else:
            gates = project_inputs(self.device, params["Wx"], params["b"], x[None],
                                   xp.empty((1, 4 * H, N), dtype=Wh.dtype))[0]  # fmt: skip
            wh = xp.matmul(Wh, state[0])
        c = xp.empty((H, N), dtype=Wh.dtype)
        tanh_c = xp.empty((H, N), dtype=Wh.dtype)
        h = xp.empty((H, N), dtype=Wh.dtype)
        self.kernels.step_forward(gates, wh, state[1], c, tanh_c, h)
        return h, (h, c)
