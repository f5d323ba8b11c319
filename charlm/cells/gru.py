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
"""

from __future__ import annotations

from typing import Any

import numpy as np

from charlm.backend import gemm, xp_of
from charlm.cells import common
from charlm.ops import project_inputs, project_inputs_backward, sigmoid, time_columns

Array = Any


class GRU:
    """Gated recurrent unit; see the module docstring for both forms."""

    name = "gru"
    num_gates = 3
    state_names = ("h",)

    def __init__(self, hidden_size: int, reset_after: bool = False) -> None:
        self.H = hidden_size
        self.reset_after = reset_after

    def init_params(
        self, D: int, rng: np.random.Generator, dtype: Any, one_hot: bool
    ) -> dict[str, Array]:
        """Gaussian input weights, orthogonal recurrent blocks, zero biases."""
        H = self.H
        params = {
            "Wx": common.input_weights(rng, 3 * H, D, H, one_hot, dtype),
            "Wh": common.recurrent_weights(rng, 3, H, dtype),
            "b": np.zeros(3 * H, dtype=dtype),
        }
        if self.reset_after:
            params["bhn"] = np.zeros(H, dtype=dtype)
        return params

    def _advance(
        self, params: dict[str, Array], a: Array, hprev: Array, h: Array, rh: Array, tmp: Array
    ) -> None:
        """One step. a (3H, N): Wx x<t> + b in, gate activations out; writes c<t> into h.

        rh receives what W_c multiplied: Gamma_r * c<t-1> (notes) or W_cc c<t-1> + b_hn (after).
        """
        xp = xp_of(a)
        H = self.H
        Wh = params["Wh"]
        if self.reset_after:
            gemm(Wh, hprev, tmp)
            xp.add(tmp[2 * H :], params["bhn"][:, None], out=rh)
            a[: 2 * H] += tmp[: 2 * H]
            sigmoid(a[: 2 * H], out=a[: 2 * H])
            xp.multiply(a[H : 2 * H], rh, out=tmp[:H])  # Gamma_r * (W_cc c + b_hn)
            a[2 * H :] += tmp[:H]
        else:
            gemm(Wh[: 2 * H], hprev, tmp[: 2 * H])
            a[: 2 * H] += tmp[: 2 * H]
            sigmoid(a[: 2 * H], out=a[: 2 * H])
            xp.multiply(a[H : 2 * H], hprev, out=rh)  # Gamma_r * c<t-1>
            gemm(Wh[2 * H :], rh, tmp[:H])
            a[2 * H :] += tmp[:H]
        xp.tanh(a[2 * H :], out=a[2 * H :])
        # c = c_prev + Gamma_u (c~ - c_prev)
        xp.subtract(a[2 * H :], hprev, out=h)
        h *= a[:H]
        h += hprev

    def forward(
        self, params: dict[str, Array], x: Array, state: tuple[Array], resets: Array | None
    ) -> tuple[Array, tuple[Array], dict[str, Any]]:
        """Run T steps. Returns (c (T, H, N), (c<T>,), cache)."""
        Wh = params["Wh"]
        xp = xp_of(Wh)
        A = project_inputs(params["Wx"], params["b"], x)  # (T, 3H, N)
        H = self.H
        T, _, N = A.shape
        hs = common.state_sequence(state[0], T)
        rhs = xp.empty((T, H, N), dtype=Wh.dtype)
        keep = common.keep_mask(resets, Wh.dtype)
        hp = common.masked_store(keep, Wh, H, T, N)
        tmp = xp.empty((3 * H, N), dtype=Wh.dtype)
        for t in range(T):
            hprev = common.effective_prev(hs[t], t, keep, hp)
            self._advance(params, A[t], hprev, hs[t + 1], rhs[t], tmp)
        cache = {"x": x, "params": params, "A": A, "hs": hs, "rhs": rhs, "keep": keep, "hp": hp}
        return hs[1:], (hs[T].copy(),), cache

    def backward(
        self, dout: Array, cache: dict[str, Any]
    ) -> tuple[Array | None, tuple[Array], dict[str, Array]]:
        """Back through the window. dout (T, H, N) -> (dx, (dc<0>,), grads)."""
        A, rhs, keep, params = cache["A"], cache["rhs"], cache["keep"], cache["params"]
        Wh = params["Wh"]
        xp = xp_of(Wh)
        H = self.H
        T, _, N = A.shape
        hprev_seq = cache["hs"] if keep is None else cache["hp"]
        after = self.reset_after
        dA = xp.empty_like(A)  # d pre-activations of u, r, c~
        dHh = xp.empty_like(A) if after else None  # d (Wh c_prev [+ b_hn]) rows u, r, c~
        dh = xp.zeros((H, N), dtype=Wh.dtype)
        t1 = xp.empty((H, N), dtype=Wh.dtype)
        t2 = xp.empty((2 * H, N), dtype=Wh.dtype)
        WhT = xp.ascontiguousarray(Wh.T)  # a plain (not transposed) GEMM operand is faster
        WurT, WcT = WhT[:, : 2 * H], WhT[:, 2 * H :]
        for t in range(T - 1, -1, -1):
            a, da = A[t], dA[t]
            u, r, ct = a[:H], a[H : 2 * H], a[2 * H :]
            hprev, rh = hprev_seq[t], rhs[t]
            dh += dout[t]
            dgates = dHh[t] if after else da
            # c = c_prev + u (c~ - c_prev):  d u = dh (c~ - c_prev), d c~ = dh u
            xp.subtract(ct, hprev, out=dgates[:H])
            dgates[:H] *= dh
            xp.multiply(ct, ct, out=t1)
            xp.subtract(1, t1, out=t1)
            t1 *= u
            xp.multiply(dh, t1, out=da[2 * H :])  # d pre-activation of c~
            if after:
                # c~ = tanh(.. + r * rh):  d r = dA_c rh,  d rh = dA_c r
                xp.multiply(da[2 * H :], rh, out=dgates[H : 2 * H])
                xp.multiply(da[2 * H :], r, out=dgates[2 * H :])
            else:
                # c~ = tanh(Wc (r * c_prev) + ..):  d(r c_prev) = Wc^T dA_c
                gemm(WcT, da[2 * H :], t1)
                xp.multiply(t1, hprev, out=dgates[H : 2 * H])  # d r
                t1 *= r  # the part of d c_prev through r * c_prev
            xp.subtract(1, a[: 2 * H], out=t2)  # sigma' = s (1 - s) for u and r together
            t2 *= a[: 2 * H]
            dgates[: 2 * H] *= t2
            # d c_prev = dh (1 - u) + [t1] + W^T (gate grads)
            xp.subtract(1, u, out=t2[:H])
            dh *= t2[:H]
            if after:
                gemm(WhT, dgates, t2[:H])
            else:
                dh += t1
                gemm(WurT, dgates[: 2 * H], t2[:H])
            dh += t2[:H]
            if keep is not None:
                dh *= keep[t]
        hprev2 = common.prev_columns(cache["hs"], cache["hp"])
        grads: dict[str, Array] = {}
        if after:
            dA[:, : 2 * H] = dHh[:, : 2 * H]
            dA2 = time_columns(dA)
            dH2 = time_columns(dHh)
            grads["Wh"] = dH2 @ hprev2.T
            grads["bhn"] = dH2[2 * H :].sum(axis=1)
        else:
            dA2 = time_columns(dA)
            grads["Wh"] = xp.concatenate(
                [dA2[: 2 * H] @ hprev2.T, dA2[2 * H :] @ time_columns(rhs).T]
            )
        dx, grads["Wx"], grads["b"] = project_inputs_backward(dA2, cache["x"], params["Wx"])
        return dx, (dh,), grads

    def step(
        self, params: dict[str, Array], x: Array, state: tuple[Array]
    ) -> tuple[Array, tuple[Array]]:
        """One step for sampling, no cache: x ids (N,) or (D, N) -> (c<t> (H, N), new state)."""
        Wh = params["Wh"]
        xp = xp_of(Wh)
        a = project_inputs(params["Wx"], params["b"], x[None])
        a = a[0]
        H, N = self.H, a.shape[1]
        h = xp.empty((H, N), dtype=Wh.dtype)
        rh = xp.empty((H, N), dtype=Wh.dtype)
        self._advance(params, a, state[0], h, rh, xp.empty((3 * H, N), dtype=Wh.dtype))
        return h, (h,)
