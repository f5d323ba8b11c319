"""The compiled CPU kernel set: each cell's step fused into one pass with numba.

The NumPy kernels in `lstm.py`, `gru.py` and `rnn.py` are the reference: every function here
computes exactly their expressions, element by element in one loop over the (H, N) state, where
NumPy makes ten to twenty passes over memory (the tests compare them, float64 to 1e-12). Inner
loops run along N over 1-D row slices, which LLVM vectorises when the operands are contiguous
arrays; a per-step column view of a window is strided to numba, hence the whole-window LSTM
loops (below).

Two details make the loops fast: `error_model="numpy"` (no Python division checks, which block
vectorisation) and, in float32 only, a rational tanh (Eigen's, max error a few float32 ulps)
instead of libm's scalar `tanhf`: pip's llvmlite has no vector math library, so `math.tanh` in a
loop is a scalar call per element, ten times slower than NumPy's SIMD passes. float64 keeps
`math.tanh` (the reference precision; speed matters less there).

Compiled on first use (a few seconds) and cached on disk next to this file.
"""

from __future__ import annotations

import math
from typing import Any

import numba
import numpy as np
from numba import types
from numba.extending import overload

from charlm.cells import gru, lstm, rnn

Array = Any
# No `fastmath` beyond what keeps results independent of memory alignment: with approximate
# reciprocals (`arcp`) or FMA contraction the vectorised loop body and its scalar remainder
# round differently, so a number would depend on where a buffer happens to start.
_FAST = {"nnan", "ninf", "nsz"}
_JIT = {"nopython": True, "fastmath": _FAST, "error_model": "numpy", "cache": True}

# Eigen's generic_fast_tanh_float: tanh(x) = x P(x^2) / Q(x^2) on [-c, c], +-1 beyond.
_CLAMP = 7.90531110763549805
_ALPHA = (-2.76076847742355e-16, 2.00018790482477e-13, -8.60467152213735e-11,
          5.12229709037114e-08, 1.48572235717979e-05, 6.37261928875436e-04,
          4.89352455891786e-03)  # fmt: skip
_BETA = (1.19825839466702e-06, 1.18534705686654e-04, 2.26843463243900e-03,
         4.89352518554385e-03)  # fmt: skip


def fast_tanh(x):  # noqa: ANN001, ANN201 - numba matches the overload's signature exactly
    """tanh for the kernels (see the module docstring)."""
    return math.tanh(x)


@overload(fast_tanh, jit_options={"fastmath": _FAST}, inline="always")
def _fast_tanh(x):  # noqa: ANN001, ANN202
    if isinstance(x, types.Float) and x.bitwidth == 32:
        a13, a11, a9, a7, a5, a3, a1 = (numba.float32(v) for v in _ALPHA)
        b6, b4, b2, b0 = (numba.float32(v) for v in _BETA)
        clamp = numba.float32(_CLAMP)

        def tanh32(x):  # noqa: ANN001, ANN202
            x = min(max(x, -clamp), clamp)
            x2 = x * x
            p = x2 * a13 + a11
            p = x2 * p + a9
            p = x2 * p + a7
            p = x2 * p + a5
            p = x2 * p + a3
            p = x2 * p + a1
            q = x2 * b6 + b4
            q = x2 * q + b2
            q = x2 * q + b0
            return x * p / q

        return tanh32
    return lambda x: math.tanh(x)


@numba.jit(**_JIT, inline="always")
def _sigmoid(x, half):  # noqa: ANN001, ANN202
    return half * fast_tanh(half * x) + half  # as the reference: sigma(x) = 0.5 tanh(x/2) + 0.5


# Every loop below runs along one row of N columns, on 1-D row slices: LLVM vectorises a loop
# over contiguous rows, but not one that indexes a 2-D array whose row stride it cannot see, nor
# one over a strided (per-step column view) operand -- so the window functions, which see whole
# C-contiguous window buffers, are the fast path, and the step kernels are fast only where the
# cell hands them contiguous steps.


# ------------------------------------------------------------------ LSTM (gates u, f, o, c~)
@numba.jit(**_JIT, inline="always")
def _lstm_forward_row(gu, gf, go, gg, wu, wf, wo, wg, c_prev, c, tanh_c, h, half):  # noqa: ANN001, ANN202
    for n in range(c.shape[0]):
        u = _sigmoid(gu[n] + wu[n], half)
        f = _sigmoid(gf[n] + wf[n], half)
        o = _sigmoid(go[n] + wo[n], half)
        g = fast_tanh(gg[n] + wg[n])
        gu[n], gf[n], go[n], gg[n] = u, f, o, g
        cn = f * c_prev[n] + u * g
        t = fast_tanh(cn)
        c[n], tanh_c[n], h[n] = cn, t, o * t


@numba.jit(**_JIT, inline="always")
def _lstm_backward_row(gu, gf, go, gg, tanh_c, c_prev, dout, dh, dc, du, df, do, dg, one):  # noqa: ANN001, ANN202
    for n in range(dh.shape[0]):
        u, f, o, g, t = gu[n], gf[n], go[n], gg[n], tanh_c[n]
        dht = dh[n] + dout[n]
        dct = dc[n] + dht * o * (one - t * t)
        du[n] = dct * g * (u * (one - u))
        df[n] = dct * c_prev[n] * (f * (one - f))
        do[n] = dht * t * (o * (one - o))
        dg[n] = dct * (u * (one - g * g))
        dh[n], dc[n] = dht, dct * f


@numba.jit(**_JIT)
def _lstm_step_forward(gates, wh, c_prev, c, tanh_c, h, one):  # noqa: ANN001, ANN202
    H = c.shape[0]
    half = one / (one + one)
    for r in range(H):
        _lstm_forward_row(gates[r], gates[H + r], gates[2 * H + r], gates[3 * H + r], wh[r],
                          wh[H + r], wh[2 * H + r], wh[3 * H + r], c_prev[r], c[r], tanh_c[r],
                          h[r], half)  # fmt: skip


@numba.jit(**_JIT)
def _lstm_step_backward(gates, tanh_c, c_prev, dout, dh, dc, dgates, scratch, one):  # noqa: ANN001, ANN202
    H = tanh_c.shape[0]
    for r in range(H):
        _lstm_backward_row(gates[r], gates[H + r], gates[2 * H + r], gates[3 * H + r],
                           tanh_c[r], c_prev[r], dout[r], dh[r], dc[r], dgates[r],
                           dgates[H + r], dgates[2 * H + r], dgates[3 * H + r], one)  # fmt: skip


@numba.jit(**_JIT)
def _lstm_column_forward(gates, wh, c_prev, c, tanh_c, h, one):  # noqa: ANN001, ANN202
    """`_lstm_step_forward` for N = 1 on the 1-D columns: one loop down all H rows, which
    vectorises, where H loops of one element do not (sampling one sample)."""
    H = c.shape[0]
    _lstm_forward_row(gates[:H], gates[H : 2 * H], gates[2 * H : 3 * H], gates[3 * H :], wh[:H],
                      wh[H : 2 * H], wh[2 * H : 3 * H], wh[3 * H :], c_prev, c, tanh_c, h,
                      one / (one + one))  # fmt: skip


@numba.jit(**_JIT)
def _lstm_forward_at(gates, wh, c, tanh_c, h_cols, t, one):  # noqa: ANN001, ANN202
    """Step t of a window, on the whole window buffers (see `lstm_window_forward`)."""
    _, H, N = c.shape
    half = one / (one + one)
    g, cols = gates[t], slice((t + 1) * N, (t + 2) * N)
    for r in range(H):
        _lstm_forward_row(g[r], g[H + r], g[2 * H + r], g[3 * H + r], wh[r], wh[H + r],
                          wh[2 * H + r], wh[3 * H + r], c[t, r], c[t + 1, r], tanh_c[t, r],
                          h_cols[r, cols], half)  # fmt: skip


@numba.jit(**_JIT)
def _lstm_backward_at(gates, tanh_c, c, dout_cols, dh, dc, dgates_cols, t, one):  # noqa: ANN001, ANN202
    """Step t of a window, backwards (see `lstm_window_backward`)."""
    _, H, N = c.shape
    g, cols = gates[t], slice(t * N, (t + 1) * N)
    for r in range(H):
        _lstm_backward_row(g[r], g[H + r], g[2 * H + r], g[3 * H + r], tanh_c[t, r], c[t, r],
                           dout_cols[r, cols], dh[r], dc[r], dgates_cols[r, cols],
                           dgates_cols[H + r, cols], dgates_cols[2 * H + r, cols],
                           dgates_cols[3 * H + r, cols], one)  # fmt: skip


# ------------------------------------------------------------------ GRU (gates u, r, c~)
@numba.jit(**_JIT)
def _gru_forward_gates(gates, wh_ur, h_prev, rh, one):  # noqa: ANN001, ANN202
    H, N = h_prev.shape
    half = one / (one + one)
    for r in range(H):
        gu, gr, wu, wr, hp, rhr = gates[r], gates[H + r], wh_ur[r], wh_ur[H + r], h_prev[r], rh[r]
        for n in range(N):
            u = _sigmoid(gu[n] + wu[n], half)
            reset = _sigmoid(gr[n] + wr[n], half)
            gu[n], gr[n] = u, reset
            rhr[n] = reset * hp[n]


@numba.jit(**_JIT)
def _gru_forward_candidate(gates, wc, h_prev, h, one):  # noqa: ANN001, ANN202
    H, N = h_prev.shape
    for r in range(H):
        gu, gc, wcr, hp, hr = gates[r], gates[2 * H + r], wc[r], h_prev[r], h[r]
        for n in range(N):
            cand = fast_tanh(gc[n] + wcr[n])
            gc[n] = cand
            hr[n] = (cand - hp[n]) * gu[n] + hp[n]


@numba.jit(**_JIT)
def _gru_forward_after(gates, wh, bhn, h_prev, rh, h, one):  # noqa: ANN001, ANN202
    H, N = h_prev.shape
    half = one / (one + one)
    for r in range(H):
        gu, gr, gc = gates[r], gates[H + r], gates[2 * H + r]
        wu, wr, wc, hp, rhr, hr, b = wh[r], wh[H + r], wh[2 * H + r], h_prev[r], rh[r], h[r], bhn[r]
        for n in range(N):
            rhv = wc[n] + b
            u = _sigmoid(gu[n] + wu[n], half)
            reset = _sigmoid(gr[n] + wr[n], half)
            cand = fast_tanh(gc[n] + reset * rhv)
            gu[n], gr[n], gc[n], rhr[n] = u, reset, cand, rhv
            hr[n] = (cand - hp[n]) * u + hp[n]


@numba.jit(**_JIT)
def _gru_backward_candidate(gates, h_prev, dout, dh, dgates, dcand, t1, one):  # noqa: ANN001, ANN202
    H, N = h_prev.shape
    for r in range(H):
        gu, gc, hp, do, dhr, dgu, dc = (gates[r], gates[2 * H + r], h_prev[r], dout[r], dh[r],
                                        dgates[r], dcand[r])  # fmt: skip
        for n in range(N):
            u, cand = gu[n], gc[n]
            d = dhr[n] + do[n]
            dhr[n] = d
            dgu[n] = (cand - hp[n]) * d
            dc[n] = d * ((one - cand * cand) * u)


@numba.jit(**_JIT)
def _gru_backward_gates(gates, h_prev, dh, dgates, d_rh, t2, one):  # noqa: ANN001, ANN202
    H, N = h_prev.shape
    for r in range(H):
        gu, gr, hp, dhr, dgu, dgr, drh = (gates[r], gates[H + r], h_prev[r], dh[r], dgates[r],
                                          dgates[H + r], d_rh[r])  # fmt: skip
        for n in range(N):
            u, reset = gu[n], gr[n]
            dgr[n] = drh[n] * hp[n] * ((one - reset) * reset)
            dgu[n] *= (one - u) * u
            dhr[n] = dhr[n] * (one - u) + drh[n] * reset


@numba.jit(**_JIT)
def _gru_backward_after(gates, h_prev, rh, dout, dh, dgates, dcand, t1, t2, one):  # noqa: ANN001, ANN202
    H, N = h_prev.shape
    for r in range(H):
        gu, gr, gc, hp, rhr = gates[r], gates[H + r], gates[2 * H + r], h_prev[r], rh[r]
        do, dhr, dgu, dgr, dgc, dcr = (dout[r], dh[r], dgates[r], dgates[H + r],
                                       dgates[2 * H + r], dcand[r])  # fmt: skip
        for n in range(N):
            u, reset, cand = gu[n], gr[n], gc[n]
            d = dhr[n] + do[n]
            dc = d * ((one - cand * cand) * u)
            dcr[n] = dc
            dgu[n] = (cand - hp[n]) * d * ((one - u) * u)
            dgr[n] = dc * rhr[n] * ((one - reset) * reset)
            dgc[n] = dc * reset
            dhr[n] = d * (one - u)


# ------------------------------------------------------------------ RNN
@numba.jit(**_JIT)
def _rnn_forward_tanh(gates, h, one):  # noqa: ANN001, ANN202
    H, N = h.shape
    for r in range(H):
        g, hr = gates[r], h[r]
        for n in range(N):
            hr[n] = fast_tanh(hr[n] + g[n])


@numba.jit(**_JIT)
def _rnn_forward_relu(gates, h, one):  # noqa: ANN001, ANN202
    H, N = h.shape
    zero = one - one
    for r in range(H):
        g, hr = gates[r], h[r]
        for n in range(N):
            hr[n] = max(hr[n] + g[n], zero)


@numba.jit(**_JIT)
def _rnn_backward_tanh(h, dout, dh, dgates, one):  # noqa: ANN001, ANN202
    H, N = h.shape
    for r in range(H):
        hr, do, dhr, dg = h[r], dout[r], dh[r], dgates[r]
        for n in range(N):
            d = dhr[n] + do[n]
            dhr[n] = d
            dg[n] = (one - hr[n] * hr[n]) * d


@numba.jit(**_JIT)
def _rnn_backward_relu(h, dout, dh, dgates, one):  # noqa: ANN001, ANN202
    H, N = h.shape
    zero = one - one
    for r in range(H):
        hr, do, dhr, dg = h[r], dout[r], dh[r], dgates[r]
        for n in range(N):
            d = dhr[n] + do[n]
            dhr[n] = d
            dg[n] = d if hr[n] > zero else zero


# ------------------------------------------------------------------ column gather and scatter
@numba.jit(**_JIT)
def _gather_columns(table, ids, out):  # noqa: ANN001, ANN202
    T, G, N = out.shape
    for t in range(T):
        step_ids = ids[t]
        for g in range(G):
            row, dest = table[g], out[t, g]
            for n in range(N):
                dest[n] = row[step_ids[n]]


@numba.jit(**_JIT)
def _scatter_columns(dcols, ids, out):  # noqa: ANN001, ANN202
    G, M = dcols.shape
    # Four partial sums per id, so that a run of equal ids does not chain every addition
    # through one memory cell (each would wait for the last to be stored).
    partial = np.empty((4, out.shape[1]), dtype=out.dtype)
    tail = M - M % 4
    for g in range(G):
        row = dcols[g]
        partial[...] = 0
        for m in range(0, tail, 4):
            partial[0, ids[m]] += row[m]
            partial[1, ids[m + 1]] += row[m + 1]
            partial[2, ids[m + 2]] += row[m + 2]
            partial[3, ids[m + 3]] += row[m + 3]
        for m in range(tail, M):
            partial[0, ids[m]] += row[m]
        dest = out[g]
        for v in range(out.shape[1]):
            dest[v] = (partial[0, v] + partial[1, v]) + (partial[2, v] + partial[3, v])


def gather_columns(table: Array, ids: Array, out: Array) -> Array:
    """`Device.gather_columns` (out[t] = table[:, ids[t]]) in one loop, not T NumPy calls."""
    _gather_columns(table, ids, out)
    return out


def scatter_columns(dcols: Array, ids: Array, out: Array) -> Array:
    """`Device.scatter_columns` (out[:, v] = sum of dcols[:, j] where ids[j] == v) by adding
    each column where it belongs: M additions per row, where the reference's GEMM with a
    one-hot matrix makes M * V."""
    _scatter_columns(dcols, ids.reshape(-1), out)
    return out


# ------------------------------------------------------------------ sampling
@numba.jit(**_JIT)
def _draw_ids(logits, inv_temperature, allowed, uniforms, ids):  # noqa: ANN001, ANN202
    V, N = logits.shape
    e = np.empty(V)  # float64, as the reference's probabilities
    for j in range(N):
        top = -np.inf
        for i in range(V):
            if allowed[i] and logits[i, j] > top:
                top = logits[i, j]
        total = 0.0
        for i in range(V):
            z = (np.float64(logits[i, j]) - top) * inv_temperature
            e[i] = math.exp(z) if allowed[i] else 0.0
            total += e[i]
        scale, cdf = 1.0 / total, 0.0
        for i in range(V):  # e becomes the cumulative distribution
            cdf += e[i] * scale
            e[i] = cdf
        target = min(uniforms[j] * cdf, np.nextafter(cdf, 0.0))
        drawn = 0
        while e[drawn] <= target:
            drawn += 1
        ids[j] = drawn


def draw_ids(logits: Array, temperature: float, allowed: Array, uniforms: Array) -> Array:
    """`sample.filter_probs` (temperature and banned ids only: no top-k, no top-p) and
    `sample.draw` in one pass over each column of logits (V, N): softmax(logits / temperature)
    over the `allowed` (V,) ids, then the first id whose cumulative probability exceeds
    uniforms[j] times the total. Returns the ids (N,)."""
    ids = np.empty(logits.shape[1], dtype=np.int64)
    _draw_ids(logits, 1.0 / temperature, allowed, np.asarray(uniforms, dtype=np.float64), ids)
    return ids


# ------------------------------------------------------------------ Adam
@numba.jit(**_JIT)
def _adam_update(p, g, m, v, beta1, c1, beta2, c2, eps, v_scale, step_scale):  # noqa: ANN001, ANN202
    for i in range(p.shape[0]):
        gi = g[i]
        mi = m[i] * beta1 + c1 * gi
        vi = v[i] * beta2 + gi * gi * c2
        m[i], v[i] = mi, vi
        p[i] -= mi / (np.sqrt(vi) * v_scale + eps) * step_scale


def adam_update(p: Array, g: Array, m: Array, v: Array, beta1: float, beta2: float, eps: float,
                v_scale: float, step_scale: float) -> None:  # fmt: skip
    """`Optimizer.step`'s Adam update of flat buffers in one pass instead of thirteen, with
    its operations in its order and each scalar rounded to the buffers' dtype as NumPy rounds
    a Python float, so that the result is the same to the bit:
    m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2;  p -= m / (sqrt(v) v_scale + eps) step_scale.
    """
    t = p.dtype.type
    _adam_update(p, g, m, v, t(beta1), t(1 - beta1), t(beta2), t(1 - beta2), t(eps),
                 t(v_scale), t(step_scale))  # fmt: skip


# ------------------------------------------------------------------ the kernel set
# The reference signatures, with the one constant of the operands' dtype the loops compute in
# (a Python literal would promote float32 arithmetic to float64).
def _one(a: Array) -> Any:
    return a.dtype.type(1)


def lstm_step_forward(gates: Array, wh: Array, c_prev: Array, c: Array, tanh_c: Array,
                      h: Array) -> None:  # fmt: skip
    """`lstm.step_forward` in one pass (wh is only read)."""
    operands = (gates, wh, c_prev, c, tanh_c, h)
    if gates.shape[1] == 1 and all(a.flags.c_contiguous for a in operands):
        _lstm_column_forward(*(a.reshape(-1) for a in operands), _one(gates))
    else:
        _lstm_step_forward(gates, wh, c_prev, c, tanh_c, h, _one(gates))


def lstm_step_backward(gates: Array, tanh_c: Array, c_prev: Array, dout: Array, dh: Array,
                       dc: Array, dgates: Array, scratch: Array) -> None:  # fmt: skip
    """`lstm.step_backward` in one pass (no scratch needed)."""
    _lstm_step_backward(gates, tanh_c, c_prev, dout, dh, dc, dgates, scratch, _one(gates))


def lstm_window_forward(Wh: Array, gates: Array, h_cols: Array, c: Array, tanh_c: Array) -> None:
    """`LSTM.forward`'s loop over a window without resets (see `lstm.LSTMKernels`)."""
    T, G, N = gates.shape
    wh, one = np.empty((G, N), dtype=gates.dtype), _one(gates)
    for t in range(T):
        np.matmul(Wh, h_cols[:, t * N : (t + 1) * N], out=wh)
        _lstm_forward_at(gates, wh, c, tanh_c, h_cols, t, one)


def lstm_window_backward(WhT: Array, gates: Array, tanh_c: Array, c: Array, dout: Array,
                         dh: Array, dc: Array, dgates_cols: Array) -> None:  # fmt: skip
    """`LSTM.backward`'s loop over a window without resets (see `lstm.LSTMKernels`)."""
    T, _, N = gates.shape
    dout_cols = dout.transpose(1, 0, 2)  # (H, T, N): a view when dout is a column sequence
    if not dout_cols.flags.c_contiguous:
        dout_cols = np.ascontiguousarray(dout_cols)
    dout_cols, one = dout_cols.reshape(dout_cols.shape[0], T * N), _one(gates)
    for t in range(T - 1, -1, -1):
        _lstm_backward_at(gates, tanh_c, c, dout_cols, dh, dc, dgates_cols, t, one)
        np.matmul(WhT, dgates_cols[:, t * N : (t + 1) * N], out=dh)


def gru_forward_gates(gates: Array, wh_ur: Array, h_prev: Array, rh: Array) -> None:
    _gru_forward_gates(gates, wh_ur, h_prev, rh, _one(gates))


def gru_forward_candidate(gates: Array, wc: Array, h_prev: Array, h: Array) -> None:
    _gru_forward_candidate(gates, wc, h_prev, h, _one(gates))


def gru_forward_after(gates: Array, wh: Array, bhn: Array, h_prev: Array, rh: Array,
                      h: Array) -> None:  # fmt: skip
    _gru_forward_after(gates, wh, bhn, h_prev, rh, h, _one(gates))


def gru_backward_candidate(gates: Array, h_prev: Array, dout: Array, dh: Array, dgates: Array,
                           dcand: Array, t1: Array) -> None:  # fmt: skip
    _gru_backward_candidate(gates, h_prev, dout, dh, dgates, dcand, t1, _one(gates))


def gru_backward_gates(gates: Array, h_prev: Array, dh: Array, dgates: Array, d_rh: Array,
                       t2: Array) -> None:  # fmt: skip
    _gru_backward_gates(gates, h_prev, dh, dgates, d_rh, t2, _one(gates))


def gru_backward_after(gates: Array, h_prev: Array, rh: Array, dout: Array, dh: Array,
                       dgates: Array, dcand: Array, t1: Array, t2: Array) -> None:  # fmt: skip
    _gru_backward_after(gates, h_prev, rh, dout, dh, dgates, dcand, t1, t2, _one(gates))


def rnn_step_forward(activation: str, gates: Array, h: Array) -> None:
    """`rnn.step_forward` in one pass."""
    kernel = _rnn_forward_tanh if activation == "tanh" else _rnn_forward_relu
    kernel(gates, h, _one(h))


def rnn_step_backward(activation: str, h: Array, dout: Array, dh: Array, dgates: Array) -> None:
    """`rnn.step_backward` in one pass."""
    kernel = _rnn_backward_tanh if activation == "tanh" else _rnn_backward_relu
    kernel(h, dout, dh, dgates, _one(h))


COMPILED = {
    "lstm": lstm.LSTMKernels(
        lstm_step_forward, lstm_step_backward, lstm_window_forward, lstm_window_backward
    ),
    "gru": gru.GRUKernels(
        gru_forward_gates,
        gru_forward_candidate,
        gru_forward_after,
        gru_backward_candidate,
        gru_backward_gates,
        gru_backward_after,
    ),  # fmt: skip
    "rnn": rnn.RNNKernels(rnn_step_forward, rnn_step_backward),
}
