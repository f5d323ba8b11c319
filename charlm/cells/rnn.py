"""Vanilla RNN cell over a window of T steps (the course notes' basic unit).

    a<t> = g(W_aa a<t-1> + W_ax x<t> + b_a),   g = tanh (or relu)

Wx = W_ax (H, D), Wh = W_aa (H, H), b = b_a (H,). Shapes: x ids (T, N) or vectors (T, D, N);
state a (H, N); output (T, H, N).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from charlm.backend import gemm, xp_of
from charlm.cells import common
from charlm.ops import (
    activate,
    activate_backward,
    project_inputs,
    project_inputs_backward,
    time_columns,
)

Array = Any


class RNN:
    """Elman RNN cell with tanh (default) or relu activation."""

    name = "rnn"
    num_gates = 1
    state_names = ("h",)

    def __init__(self, hidden_size: int, activation: str = "tanh") -> None:
        self.H = hidden_size
        self.activation = activation

    def init_params(
        self, D: int, rng: np.random.Generator, dtype: Any, one_hot: bool
    ) -> dict[str, Array]:
        """Gaussian input weights, orthogonal W_aa, zero bias."""
        H = self.H
        return {
            "Wx": common.input_weights(rng, H, D, H, one_hot, dtype),
            "Wh": common.recurrent_weights(rng, 1, H, dtype),
            "b": np.zeros(H, dtype=dtype),
        }

    def _advance(self, a: Array, hprev: Array, Wh: Array, h: Array) -> None:
        """h = g(a + Wh hprev), with a = Wx x<t> + b."""
        gemm(Wh, hprev, h)
        h += a
        activate(self.activation, h, out=h)

    def forward(
        self, params: dict[str, Array], x: Array, state: tuple[Array], resets: Array | None
    ) -> tuple[Array, tuple[Array], dict[str, Any]]:
        """Run T steps. Returns (a (T, H, N), (a<T>,), cache)."""
        Wh = params["Wh"]
        A = project_inputs(params["Wx"], params["b"], x)  # (T, H, N)
        T, H, N = A.shape
        hs = common.state_sequence(state[0], T)
        keep = common.keep_mask(resets, Wh.dtype)
        hp = common.masked_store(keep, Wh, H, T, N)
        for t in range(T):
            self._advance(A[t], common.effective_prev(hs[t], t, keep, hp), Wh, hs[t + 1])
        cache = {"x": x, "params": params, "hs": hs, "keep": keep, "hp": hp}
        return hs[1:], (hs[T].copy(),), cache

    def backward(
        self, dout: Array, cache: dict[str, Any]
    ) -> tuple[Array | None, tuple[Array], dict[str, Array]]:
        """Back through the window. dout (T, H, N) -> (dx, (da<0>,), grads)."""
        hs, keep, params = cache["hs"], cache["keep"], cache["params"]
        Wh = params["Wh"]
        xp = xp_of(Wh)
        T1, H, N = hs.shape
        T = T1 - 1
        dA = xp.empty((T, H, N), dtype=Wh.dtype)
        dh = xp.zeros((H, N), dtype=Wh.dtype)
        WhT = xp.ascontiguousarray(Wh.T)  # a plain (not transposed) GEMM operand is faster
        for t in range(T - 1, -1, -1):
            dh += dout[t]
            activate_backward(self.activation, hs[t + 1], dh, out=dA[t])  # dA = dh g'
            gemm(WhT, dA[t], dh)  # da<t-1> = W_aa^T dA
            if keep is not None:
                dh *= keep[t]
        dA2 = time_columns(dA)  # (H, T*N), shared by both weight gradients
        dWh = dA2 @ common.prev_columns(hs, cache["hp"]).T
        dx, dWx, db = project_inputs_backward(dA2, cache["x"], params["Wx"])
        return dx, (dh,), {"Wx": dWx, "Wh": dWh, "b": db}

    def step(
        self, params: dict[str, Array], x: Array, state: tuple[Array]
    ) -> tuple[Array, tuple[Array]]:
        """One step for sampling, no cache: x ids (N,) or (D, N) -> (a<t> (H, N), new state)."""
        Wh = params["Wh"]
        a = project_inputs(params["Wx"], params["b"], x[None])
        h = xp_of(Wh).empty_like(a[0])
        self._advance(a[0], state[0], Wh, h)
        return h, (h,)
