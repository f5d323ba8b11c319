"""GRU cell over a window of T steps: the course notes' "full GRU", or PyTorch's form.

Notes' form (default), the relevance gate applied to c<t-1> *before* the matrix product:

    Gamma_u = sigma(W_u [c<t-1>, x<t>] + b_u)
    Gamma_r = sigma(W_r [c<t-1>, x<t>] + b_r)
    c~<t>   = tanh(W_c [Gamma_r * c<t-1>, x<t>] + b_c)
    c<t>    = Gamma_u * c~<t> + (1 - Gamma_u) * c<t-1>        (a<t> = c<t>)

Reset-after form (`model.gru_reset_after`, PyTorch / cuDNN), the gate applied after it:

    c~<t>   = tanh(W_cx x<t> + b_c + Gamma_r * (W_cc c<t-1> + b_hn))

(PyTorch's z is 1 - Gamma_u.) Fused weights: Wx (3H, D), Wh (3H, H), b (3H,), rows in the order
u, r, c~; reset-after adds b_hn (H,). Shapes: x ids (T, N) or vectors (T, D, N); state c (H, N);
output (T, H, N).

The elementwise work between a step's GEMMs is in kernels (`GRUKernels`); the functions below
are the NumPy reference. The notes' form needs two GEMMs a step (W_ur c<t-1>, then
W_c (Gamma_r * c<t-1>)), so its step is two kernels each way; the reset-after form one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from charlm.cells import base
from charlm.device import CPU, Device, xp_of
from charlm.ops import project_inputs, project_inputs_backward, sigmoid, time_columns
from charlm.workspace import Workspace

Array = Any


# ------------------------------------------------------------------ forward, one step
def forward_gates(gates: Array, wh_ur: Array, h_prev: Array, rh: Array) -> None:
    """Notes' form, before the candidate's GEMM: Gamma_u, Gamma_r = sigma(gates[:2H] + W_ur
    c<t-1>) in place, and rh = Gamma_r * c<t-1> (what W_c multiplies)."""
    H = h_prev.shape[0]
    gates[: 2 * H] += wh_ur
    sigmoid(gates[: 2 * H], out=gates[: 2 * H])
    xp_of(gates).multiply(gates[H : 2 * H], h_prev, out=rh)


def forward_candidate(gates: Array, wc: Array, h_prev: Array, h: Array) -> None:
    """c~ = tanh(gates[2H:] + wc) in place, then c<t> = c<t-1> + Gamma_u (c~ - c<t-1>) into h."""
    xp = xp_of(gates)
    H = h_prev.shape[0]
    gates[2 * H :] += wc
    xp.tanh(gates[2 * H :], out=gates[2 * H :])
    xp.subtract(gates[2 * H :], h_prev, out=h)
    h *= gates[:H]
    h += h_prev


def forward_after(gates: Array, wh: Array, bhn: Array, h_prev: Array, rh: Array, h: Array) -> None:
    """Reset-after form, from wh = W_h c<t-1> (3H, N, then scratch): rh = W_cc c<t-1> + b_hn,
    the gates, c~ and c<t>."""
    xp = xp_of(gates)
    H = h_prev.shape[0]
    xp.add(wh[2 * H :], bhn[:, None], out=rh)
    gates[: 2 * H] += wh[: 2 * H]
    sigmoid(gates[: 2 * H], out=gates[: 2 * H])
    xp.multiply(gates[H : 2 * H], rh, out=wh[:H])  # Gamma_r * (W_cc c + b_hn)
    forward_candidate(gates, wh[:H], h_prev, h)


# ------------------------------------------------------------------ backward, one step
def backward_candidate(
    gates: Array, h_prev: Array, dout: Array, dh: Array, dgates: Array, dcand: Array, t1: Array
) -> None:
    """dh += dout; from c = c_prev + u (c~ - c_prev): d u = dh (c~ - c_prev) into dgates[:H]
    (before sigma'), and d pre-activation of c~ = dh u (1 - c~^2) into dcand."""
    xp = xp_of(gates)
    H = h_prev.shape[0]
    u, cand = gates[:H], gates[2 * H :]
    dh += dout
    xp.subtract(cand, h_prev, out=dgates[:H])
    dgates[:H] *= dh
    xp.multiply(cand, cand, out=t1)
    xp.subtract(1, t1, out=t1)
    t1 *= u
    xp.multiply(dh, t1, out=dcand)


def backward_gates(
    gates: Array, h_prev: Array, dh: Array, dgates: Array, d_rh: Array, t2: Array
) -> None:
    """Notes' form, from d_rh = W_c^T dcand = dLoss/d(Gamma_r * c_prev): d r into dgates[H:2H],
    sigma' on u and r, and dh <- dh (1 - u) + d_rh * r (d c_prev but for the W_ur^T term)."""
    xp = xp_of(gates)
    H = h_prev.shape[0]
    xp.multiply(d_rh, h_prev, out=dgates[H : 2 * H])  # d r
    d_rh *= gates[H : 2 * H]  # the part of d c_prev through r * c_prev
    _sigmoid_grads_and_carry(gates, dh, dgates, t2)
    dh += d_rh


def backward_after(
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
    """Reset-after form: dgates (3H, N) = d(W_h c_prev [+ b_hn]) rows u, r, c~; dcand the d
    pre-activation of c~; dh <- dh (1 - u) (the W_h^T term comes after)."""
    xp = xp_of(gates)
    H = h_prev.shape[0]
    backward_candidate(gates, h_prev, dout, dh, dgates, dcand, t1)
    # c~ = tanh(.. + r * rh):  d r = dA_c rh,  d rh = dA_c r
    xp.multiply(dcand, rh, out=dgates[H : 2 * H])
    xp.multiply(dcand, gates[H : 2 * H], out=dgates[2 * H :])
    _sigmoid_grads_and_carry(gates, dh, dgates, t2)


def _sigmoid_grads_and_carry(gates: Array, dh: Array, dgates: Array, t2: Array) -> None:
    """dgates[:2H] *= sigma' = s (1 - s) for u and r together; dh *= 1 - u."""
    xp = xp_of(gates)
    H = dh.shape[0]
    xp.subtract(1, gates[: 2 * H], out=t2)
    t2 *= gates[: 2 * H]
    dgates[: 2 * H] *= t2
    xp.subtract(1, gates[:H], out=t2[:H])
    dh *= t2[:H]


@dataclass(frozen=True)
class GRUKernels:
    """One device's GRU step kernels, with the signatures of the reference functions above.

    window_forward(Wh, bhn or None, gates (T, 3H, N), h (T+1, H, N), rh (T, H, N), keep_mask,
    masked_h_prev) and window_backward(WhT, gates, h, rh, dout, dh, dA, dWh_in or None,
    keep_mask), where a device has them, run a window's whole loop (resets included).
    """

    forward_gates: Callable[..., None]
    forward_candidate: Callable[..., None]
    forward_after: Callable[..., None]
    backward_candidate: Callable[..., None]
    backward_gates: Callable[..., None]
    backward_after: Callable[..., None]
    window_forward: Callable[..., None] | None = None
    window_backward: Callable[..., None] | None = None


REFERENCE = GRUKernels(
    forward_gates, forward_candidate, forward_after, backward_candidate, backward_gates,
    backward_after,
)  # fmt: skip


class GRU(base.CellBase):
    """Gated recurrent unit; see the module docstring for both forms."""

    name = "gru"
    num_gates = 3
    state_names = ("h",)

    def __init__(self, hidden_size: int, reset_after: bool = False, device: Device = CPU) -> None:
        super().__init__(hidden_size, device)
        self.reset_after = reset_after

    def param_shapes(self, D: int) -> dict[str, tuple[int, ...]]:
        shapes = super().param_shapes(D)
        if self.reset_after:
            shapes["bhn"] = (self.H,)
        return shapes

    def init_params(
        self, D: int, rng: np.random.Generator, dtype: Any, one_hot: bool
    ) -> dict[str, Array]:
        """Gaussian input weights, orthogonal recurrent blocks, zero biases."""
        H = self.H
        params = {
            "Wx": base.input_weights(rng, 3 * H, D, H, one_hot, dtype),
            "Wh": base.recurrent_weights(rng, 3, H, dtype),
            "b": np.zeros(3 * H, dtype=dtype),
        }
        if self.reset_after:
            params["bhn"] = np.zeros(H, dtype=dtype)
        return params

    def _step(self, params: dict[str, Array], gates: Array, h_prev: Array, h: Array, rh: Array,
              wh: Array) -> None:  # fmt: skip
        """One step: gates (3H, N) = Wx x<t> + b in, activations out; c<t> into h; rh gets what
        W_c multiplied: Gamma_r * c<t-1> (notes) or W_cc c<t-1> + b_hn (after)."""
        H, Wh, gemm, k = self.H, params["Wh"], self.device.gemm, self.kernels
        if self.reset_after:
            gemm(Wh, h_prev, wh)
            k.forward_after(gates, wh, params["bhn"], h_prev, rh, h)
        else:
            gemm(Wh[: 2 * H], h_prev, wh[: 2 * H])
            k.forward_gates(gates, wh[: 2 * H], h_prev, rh)
            gemm(Wh[2 * H :], rh, wh[:H])
            k.forward_candidate(gates, wh[:H], h_prev, h)

    def forward(
        self,
        params: dict[str, Array],
        x: Array,
        state: tuple[Array],
        resets: Array | None,
        ws: Workspace | None = None,
    ) -> tuple[Array, tuple[Array], dict[str, Any]]:
        """Run T steps. Returns (c (T, H, N), (c<T>,), cache)."""
        Wh = params["Wh"]
        ws = ws or Workspace.fresh(self.device.xp)
        H, dtype = self.H, Wh.dtype
        T, N = x.shape[0], x.shape[-1]
        gates = project_inputs(self.device, params["Wx"], params["b"], x,
                               ws.empty("gates", (T, 3 * H, N), dtype))  # fmt: skip
        hs = base.state_sequence(state[0], T, ws, "h")
        rhs = ws.empty("rh", (T, H, N), dtype)
        keep_mask = base.keep_mask(resets, dtype, ws)
        masked_h_prev = base.masked_store(keep_mask, ws, "masked_h_prev", (T, H, N), dtype)
        if self.kernels.window_forward is not None:
            bhn = params["bhn"] if self.reset_after else None
            self.kernels.window_forward(Wh, bhn, gates, hs, rhs, keep_mask, masked_h_prev)
        else:
            wh = ws.empty("wh", (3 * H, N), dtype)
            for t in range(T):
                h_prev = base.masked_prev(hs[t], t, keep_mask, masked_h_prev)
                self._step(params, gates[t], h_prev, hs[t + 1], rhs[t], wh)
        cache = {"x": x, "params": params, "gates": gates, "h": hs, "rh": rhs,
                 "keep_mask": keep_mask, "masked_h_prev": masked_h_prev, "ws": ws}  # fmt: skip
        return hs[1:], (hs[T].copy(),), cache

    def backward(
        self, dout: Array, cache: dict[str, Any], grads: dict[str, Array] | None = None
    ) -> tuple[Array | None, tuple[Array], dict[str, Array]]:
        """Back through the window. dout (T, H, N) -> (dx, (dc<0>,), grads); the gradients are
        written into `grads` when given."""
        gates, rhs, keep_mask, params, ws = (
            cache[k] for k in ("gates", "rh", "keep_mask", "params", "ws")
        )
        Wh = params["Wh"]
        xp, gemm, k = self.device.xp, self.device.gemm, self.kernels
        H, dtype = self.H, Wh.dtype
        T, _, N = gates.shape
        grads = grads if grads is not None else base.empty_grads(xp, params)
        h_prev_seq = cache["h"] if keep_mask is None else cache["masked_h_prev"]
        after = self.reset_after
        tmp = ws.shared("backward")  # dead once this returns: one set for all layers
        dA = tmp.empty("dA", gates.shape, dtype)  # d pre-activations of u, r, c~
        dWh_in = tmp.empty("dWh_in", gates.shape, dtype) if after else None  # d (Wh c_prev ..)
        dh = tmp.zeros("dh", (H, N), dtype)
        t1 = tmp.empty("t1", (H, N), dtype)
        t2 = tmp.empty("t2", (2 * H, N), dtype)
        WhT = tmp.empty("WhT", Wh.shape[::-1], dtype)
        WhT[...] = Wh.T  # a plain (not transposed) GEMM operand is faster
        Wur_T, Wc_T = WhT[:, : 2 * H], WhT[:, 2 * H :]
        window = k.window_backward
        if window is not None:
            window(WhT, gates, cache["h"], rhs, dout, dh, dA, dWh_in, keep_mask)
        else:
            for t in range(T - 1, -1, -1):
                da, h_prev = dA[t], h_prev_seq[t]
                if after:
                    k.backward_after(gates[t], h_prev, rhs[t], dout[t], dh, dWh_in[t], da[2 * H :],
                                     t1, t2)  # fmt: skip
                    gemm(WhT, dWh_in[t], t2[:H])
                else:
                    k.backward_candidate(gates[t], h_prev, dout[t], dh, da, da[2 * H :], t1)
                    gemm(Wc_T, da[2 * H :], t1)  # d (r * c_prev) = Wc^T dA_c
                    k.backward_gates(gates[t], h_prev, dh, da, t1, t2)
                    gemm(Wur_T, da[: 2 * H], t2[:H])
                dh += t2[:H]
                if keep_mask is not None:
                    dh *= keep_mask[t]
        h_prev_cols = base.prev_columns(cache["h"], cache["masked_h_prev"], tmp)
        if after:
            dA[:, : 2 * H] = dWh_in[:, : 2 * H]
            dA_cols = time_columns(dA, tmp, "dA_cols")
            dWh_in_cols = time_columns(dWh_in, tmp, "dWh_in_cols")
            xp.matmul(dWh_in_cols, h_prev_cols.T, out=grads["Wh"])
            xp.sum(dWh_in_cols[2 * H :], axis=1, out=grads["bhn"])
        else:
            dA_cols = time_columns(dA, tmp, "dA_cols")
            xp.matmul(dA_cols[: 2 * H], h_prev_cols.T, out=grads["Wh"][: 2 * H])
            rh_cols = time_columns(rhs, tmp, "rh_cols")
            xp.matmul(dA_cols[2 * H :], rh_cols.T, out=grads["Wh"][2 * H :])
        dx = base.input_grad_buffer(ws, cache["x"], params["Wx"], T * N)
        dx = project_inputs_backward(self.device, dA_cols, cache["x"], params["Wx"], grads["Wx"],
                                     grads["b"], dx, tmp)  # fmt: skip
        return dx, (dh.copy(),), grads

    def step(
        self, params: dict[str, Array], x: Array, state: tuple[Array]
    ) -> tuple[Array, tuple[Array]]:
        """One step for sampling, no cache: x ids (N,) or (D, N) -> (c<t> (H, N), new state)."""
        Wh = params["Wh"]
        xp = self.device.xp
        H, N = self.H, x.shape[-1]
        gates = project_inputs(self.device, params["Wx"], params["b"], x[None],
                               xp.empty((1, 3 * H, N), dtype=Wh.dtype))[0]  # fmt: skip
        h = xp.empty((H, N), dtype=Wh.dtype)
        rh = xp.empty((H, N), dtype=Wh.dtype)
        self._step(params, gates, state[0], h, rh, xp.empty((3 * H, N), dtype=Wh.dtype))
        return h, (h,)
