"""Vanilla RNN cell over a window of T steps (the course notes' basic unit).

    a<t> = g(W_aa a<t-1> + W_ax x<t> + b_a),   g = tanh (or relu)

Wx = W_ax (H, D), Wh = W_aa (H, H), b = b_a (H,). Shapes: x ids (T, N) or vectors (T, D, N);
state a (H, N); output (T, H, N). The elementwise work of a step is a kernel (`RNNKernels`);
`step_forward` and `step_backward` are the NumPy reference.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from charlm.cells import base
from charlm.device import CPU, Device
from charlm.ops import (
    activate,
    activate_backward,
    project_inputs,
    project_inputs_backward,
    time_columns,
)
from charlm.workspace import Workspace

Array = Any


def step_forward(activation: str, gates: Array, h: Array) -> None:
    """a<t> = g(gates + W_aa a<t-1>), with h holding W_aa a<t-1> in and a<t> out and gates =
    W_ax x<t> + b."""
    h += gates
    activate(activation, h, out=h)


def step_backward(activation: str, h: Array, dout: Array, dh: Array, dgates: Array) -> None:
    """dh += dout (from above); dgates = dh g'(pre-activation), read from the output h."""
    dh += dout
    activate_backward(activation, h, dh, out=dgates)


@dataclass(frozen=True)
class RNNKernels:
    """One device's RNN step kernels, with the signatures of the reference functions above.

    window_forward(Wh, gates (T, H, N), h (T+1, H, N), activation, keep_mask, masked_h_prev)
    and window_backward(WhT, h, dout, dh, dA (T, H, N), activation, keep_mask), where a device
    has them, run a window's whole loop (resets included).
    """

    step_forward: Callable[..., None]
    step_backward: Callable[..., None]
    window_forward: Callable[..., None] | None = None
    window_backward: Callable[..., None] | None = None


REFERENCE = RNNKernels(step_forward, step_backward)


class RNN(base.CellBase):
    """Elman RNN cell with tanh (default) or relu activation."""

    name = "rnn"
    num_gates = 1
    state_names = ("h",)

    def __init__(self, hidden_size: int, activation: str = "tanh", device: Device = CPU) -> None:
        super().__init__(hidden_size, device)
        self.activation = activation

    def init_params(
        self, D: int, rng: np.random.Generator, dtype: Any, one_hot: bool
    ) -> dict[str, Array]:
        """Gaussian input weights, orthogonal W_aa, zero bias."""
        H = self.H
        return {
            "Wx": base.input_weights(rng, H, D, H, one_hot, dtype),
            "Wh": base.recurrent_weights(rng, 1, H, dtype),
            "b": np.zeros(H, dtype=dtype),
        }

    def forward(
        self,
        params: dict[str, Array],
        x: Array,
        state: tuple[Array],
        resets: Array | None,
        ws: Workspace | None = None,
    ) -> tuple[Array, tuple[Array], dict[str, Any]]:
        """Run T steps. Returns (a (T, H, N), (a<T>,), cache)."""
        Wh = params["Wh"]
        ws = ws or Workspace.fresh(self.device.xp)
        H, dtype = self.H, Wh.dtype
        T, N = x.shape[0], x.shape[-1]
        gates = project_inputs(self.device, params["Wx"], params["b"], x,
                               ws.empty("gates", (T, H, N), dtype))  # fmt: skip
        hs = base.state_sequence(state[0], T, ws, "h")
        keep_mask = base.keep_mask(resets, dtype, ws)
        masked_h_prev = base.masked_store(keep_mask, ws, "masked_h_prev", (T, H, N), dtype)
        window = self.kernels.window_forward
        if window is not None:
            window(Wh, gates, hs, self.activation, keep_mask, masked_h_prev)
        else:
            for t in range(T):
                self.device.gemm(
                    Wh, base.masked_prev(hs[t], t, keep_mask, masked_h_prev), hs[t + 1]
                )
                self.kernels.step_forward(self.activation, gates[t], hs[t + 1])
        cache = {"x": x, "params": params, "h": hs, "keep_mask": keep_mask,
                 "masked_h_prev": masked_h_prev, "ws": ws}  # fmt: skip
        return hs[1:], (hs[T].copy(),), cache

    def backward(
        self, dout: Array, cache: dict[str, Any], grads: dict[str, Array] | None = None
    ) -> tuple[Array | None, tuple[Array], dict[str, Array]]:
        """Back through the window. dout (T, H, N) -> (dx, (da<0>,), grads); the gradients are
        written into `grads` when given."""
        hs, keep_mask, params, ws = cache["h"], cache["keep_mask"], cache["params"], cache["ws"]
        Wh = params["Wh"]
        xp = self.device.xp
        T1, H, N = hs.shape
        T = T1 - 1
        grads = grads if grads is not None else base.empty_grads(xp, params)
        tmp = ws.shared("backward")  # dead once this returns: one set for all layers
        dA = tmp.empty("dA", (T, H, N), Wh.dtype)
        dh = tmp.zeros("dh", (H, N), Wh.dtype)
        WhT = tmp.empty("WhT", Wh.shape[::-1], Wh.dtype)
        WhT[...] = Wh.T  # a plain (not transposed) GEMM operand is faster
        window = self.kernels.window_backward
        if window is not None:
            window(WhT, hs, dout, dh, dA, self.activation, keep_mask)
        else:
            for t in range(T - 1, -1, -1):
                self.kernels.step_backward(self.activation, hs[t + 1], dout[t], dh, dA[t])
                self.device.gemm(WhT, dA[t], dh)  # da<t-1> = W_aa^T dA
                if keep_mask is not None:
                    dh *= keep_mask[t]
        dA_cols = time_columns(dA, tmp, "dA_cols")  # (H, T*N), shared by both weight gradients
        h_prev_cols = base.prev_columns(hs, cache["masked_h_prev"], tmp)
        xp.matmul(dA_cols, h_prev_cols.T, out=grads["Wh"])
        dx = base.input_grad_buffer(ws, cache["x"], params["Wx"], T * N)
        dx = project_inputs_backward(self.device, dA_cols, cache["x"], params["Wx"], grads["Wx"],
                                     grads["b"], dx, tmp)  # fmt: skip
        return dx, (dh.copy(),), grads

    def step(
        self, params: dict[str, Array], x: Array, state: tuple[Array]
    ) -> tuple[Array, tuple[Array]]:
        """One step for sampling, no cache: x ids (N,) or (D, N) -> (a<t> (H, N), new state)."""
        Wh = params["Wh"]
        xp = self.device.xp
        N = x.shape[-1]
        gates = project_inputs(self.device, params["Wx"], params["b"], x[None],
                               xp.empty((1, self.H, N), dtype=Wh.dtype))[0]  # fmt: skip
        h = xp.empty((self.H, N), dtype=Wh.dtype)
        self.device.gemm(Wh, state[0], h)
        self.kernels.step_forward(self.activation, gates, h)
        return h, (h,)
