"""Tests for charlm.cells and charlm.ops: the fused cells against a literal per-gate reference.

The reference below is written straight from the course notes' equations: plain loops over t
and over the batch columns, one weight matrix per gate sliced from the fused ones, products
W [a<t-1>, x<t>] with np.concatenate, one-hot vectors for ids. Everything runs in float64.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from charlm.cells import make_cell
from charlm.device import CPU
from charlm.gradcheck import central_difference
from charlm.ops import (
    activate,
    activate_backward,
    column_sequence,
    log_softmax,
    project_inputs,
    project_inputs_backward,
    sigmoid,
    time_columns,
)

H, T, N, D, V = 4, 4, 3, 3, 5

# (id, cell kind, options for make_cell)
CASES = [
    ("rnn-tanh", "rnn", {"activation": "tanh"}),
    ("rnn-relu", "rnn", {"activation": "relu"}),
    ("gru-notes", "gru", {"gru_reset_after": False}),
    ("gru-after", "gru", {"gru_reset_after": True}),
    ("lstm", "lstm", {}),
]
CASE_IDS = [c[0] for c in CASES]


# --- the reference ------------------------------------------------------------------------------


def ref_sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def one_hot_inputs(ids: np.ndarray, V: int) -> np.ndarray:
    """ids (T, N) -> one-hot vectors (T, V, N)."""
    T, N = ids.shape
    out = np.zeros((T, V, N))
    for t in range(T):
        for n in range(N):
            out[t, ids[t, n], n] = 1.0
    return out


def gate_weights(params: dict[str, np.ndarray], k: int) -> list[tuple[np.ndarray, ...]]:
    """Per gate (W_gate = [W_h | W_x] acting on [a_prev, x], W_h, W_x, b) from the fused arrays."""
    Whs = np.split(params["Wh"], k, axis=0)
    Wxs = np.split(params["Wx"], k, axis=0)
    bs = np.split(params["b"], k)
    return [
        (np.concatenate([Wh, Wx], axis=1), Wh, Wx, b)
        for Wh, Wx, b in zip(Whs, Wxs, bs, strict=True)
    ]


def reference(
    kind: str,
    opts: dict[str, Any],
    params: dict[str, np.ndarray],
    x: np.ndarray,
    state: tuple[np.ndarray, ...],
    resets: np.ndarray | None,
) -> tuple[np.ndarray, tuple[np.ndarray, ...]]:
    """The notes' equations, literally. Returns (outputs (T, H, N), final state)."""
    X = one_hot_inputs(x, params["Wx"].shape[1]) if x.dtype.kind in "iu" else x
    T, _, N = X.shape
    Hh = params["Wh"].shape[1]
    outs = np.zeros((T, Hh, N))
    finals = tuple(np.zeros((Hh, N)) for _ in state)
    for n in range(N):
        a = state[0][:, n].copy()
        c = state[1][:, n].copy() if kind == "lstm" else None
        for t in range(T):
            if resets is not None and resets[t, n]:
                a = np.zeros(Hh)
                c = None if c is None else np.zeros(Hh)
            xt = X[t, :, n]
            ax = np.concatenate([a, xt])
            if kind == "rnn":
                ((W_a, _, _, b_a),) = gate_weights(params, 1)
                z = W_a @ ax + b_a
                a = np.tanh(z) if opts["activation"] == "tanh" else np.maximum(z, 0.0)
            elif kind == "gru":
                (W_u, _, _, b_u), (W_r, _, _, b_r), (W_c, W_cc, W_cx, b_c) = gate_weights(params, 3)
                G_u = ref_sigmoid(W_u @ ax + b_u)
                G_r = ref_sigmoid(W_r @ ax + b_r)
                if opts["gru_reset_after"]:
                    c_tilde = np.tanh(W_cx @ xt + b_c + G_r * (W_cc @ a + params["bhn"]))
                else:
                    c_tilde = np.tanh(W_c @ np.concatenate([G_r * a, xt]) + b_c)
                a = G_u * c_tilde + (1.0 - G_u) * a
            else:
                gates = gate_weights(params, 4)
                (W_u, _, _, b_u), (W_f, _, _, b_f), (W_o, _, _, b_o), (W_c, _, _, b_c) = gates
                G_u = ref_sigmoid(W_u @ ax + b_u)
                G_f = ref_sigmoid(W_f @ ax + b_f)
                G_o = ref_sigmoid(W_o @ ax + b_o)
                c_tilde = np.tanh(W_c @ ax + b_c)
                c = G_f * c + G_u * c_tilde
                a = G_o * np.tanh(c)
            outs[t, :, n] = a
        finals[0][:, n] = a
        if c is not None:
            finals[1][:, n] = c
    return outs, finals


# --- set-up -------------------------------------------------------------------------------------


def setup(kind: str, opts: dict[str, Any], ids: bool, seed: int = 0, n: int = N, t: int = T):
    """(cell, params, x, state) with random, symmetry-free float64 values."""
    rng = np.random.default_rng(seed)
    cell = make_cell(kind, H, **opts)
    Din = V if ids else D
    params = cell.init_params(Din, rng, np.float64, one_hot=ids)
    for value in params.values():
        value += 0.3 * rng.standard_normal(value.shape)
    x = rng.integers(0, V, size=(t, n)) if ids else rng.standard_normal((t, D, n))
    state = tuple(rng.standard_normal((H, n)) for _ in cell.state_names)
    return cell, params, x, state


def make_resets(seed: int = 1, t: int = T, n: int = N) -> np.ndarray:
    """Random resets with a guaranteed reset at step 0 and one in the middle of the window."""
    r = np.random.default_rng(seed).random((t, n)) < 0.3
    r[0, 0] = True
    r[2, 1] = True
    r[:, n - 1] = False  # one column never resets
    return r


def numerical_gradient(f, arr: np.ndarray, h: float = 1e-6) -> np.ndarray:
    """Central differences of scalar f() w.r.t. every entry of `arr` (modified and restored)."""
    grad = np.zeros_like(arr)
    flat, gflat = arr.reshape(-1), grad.reshape(-1)
    for i in range(flat.size):
        gflat[i] = central_difference(f, flat, i, h)
    return grad


def rel_error(num: np.ndarray, ana: np.ndarray) -> float:
    denom = np.linalg.norm(num) + np.linalg.norm(ana)
    return 0.0 if denom == 0 else float(np.linalg.norm(num - ana) / denom)


# --- forward vs the reference -------------------------------------------------------------------


@pytest.mark.parametrize(("case", "kind", "opts"), CASES, ids=CASE_IDS)
@pytest.mark.parametrize("ids", [True, False], ids=["ids", "dense"])
@pytest.mark.parametrize("with_resets", [False, True], ids=["noreset", "resets"])
def test_forward_matches_reference(case, kind, opts, ids, with_resets) -> None:
    cell, params, x, state = setup(kind, opts, ids)
    resets = make_resets() if with_resets else None
    saved = {k: v.copy() for k, v in params.items()}
    saved_state = tuple(s.copy() for s in state)
    out, final, _ = cell.forward(params, x, state, resets)
    ref_out, ref_final = reference(kind, opts, params, x, state, resets)
    assert out.shape == (T, H, N)
    np.testing.assert_allclose(out, ref_out, rtol=0, atol=1e-12)
    assert len(final) == len(cell.state_names)
    for got, want in zip(final, ref_final, strict=True):
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)
    # the inputs are not touched
    for k in params:
        np.testing.assert_array_equal(params[k], saved[k])
    for s, s0 in zip(state, saved_state, strict=True):
        np.testing.assert_array_equal(s, s0)


def test_gru_forms_differ() -> None:
    """The notes' GRU and the reset-after GRU are different functions (both are really run)."""
    cell_a, params, x, state = setup("gru", {"gru_reset_after": False}, ids=False)
    cell_b = make_cell("gru", H, gru_reset_after=True)
    params_b = dict(params, bhn=np.zeros(H))
    out_a = cell_a.forward(params, x, state, None)[0]
    out_b = cell_b.forward(params_b, x, state, None)[0]
    assert np.abs(out_a - out_b).max() > 1e-3


def test_gru_reset_after_params_and_shapes() -> None:
    rng = np.random.default_rng(0)
    p_after = make_cell("gru", H, gru_reset_after=True).init_params(D, rng, np.float64, False)
    p_notes = make_cell("gru", H, gru_reset_after=False).init_params(D, rng, np.float64, False)
    assert set(p_after) == {"Wx", "Wh", "b", "bhn"}
    assert set(p_notes) == {"Wx", "Wh", "b"}
    assert p_after["bhn"].shape == (H,)
    for p in (p_after, p_notes):
        assert p["Wx"].shape == (3 * H, D)
        assert p["Wh"].shape == (3 * H, H)
        assert p["b"].shape == (3 * H,)


def test_lstm_forget_bias_init() -> None:
    p = make_cell("lstm", H).init_params(D, np.random.default_rng(0), np.float64, False)
    np.testing.assert_array_equal(p["b"][H : 2 * H], 1.0)
    np.testing.assert_array_equal(p["b"][:H], 0.0)
    np.testing.assert_array_equal(p["b"][2 * H :], 0.0)


@pytest.mark.parametrize("kind", ["rnn", "gru", "lstm"])
def test_recurrent_blocks_orthogonal(kind: str) -> None:
    cell = make_cell(kind, H)
    Wh = cell.init_params(D, np.random.default_rng(3), np.float64, False)["Wh"]
    for block in np.split(Wh, cell.num_gates, axis=0):
        np.testing.assert_allclose(block @ block.T, np.eye(H), atol=1e-12)


def test_make_cell_unknown() -> None:
    with pytest.raises(ValueError, match="unknown cell"):
        make_cell("transformer", H)


# --- gradients vs finite differences ------------------------------------------------------------


@pytest.mark.parametrize(("case", "kind", "opts"), CASES, ids=CASE_IDS)
@pytest.mark.parametrize("with_resets", [False, True], ids=["noreset", "resets"])
def test_backward_finite_differences_dense(case, kind, opts, with_resets) -> None:
    """Every parameter, the carried-in state and the dense input x, against central differences."""
    cell, params, x, state = setup(kind, opts, ids=False, seed=11)
    resets = make_resets() if with_resets else None
    R = np.random.default_rng(5).standard_normal((T, H, N))

    def loss() -> float:
        return float(np.sum(cell.forward(params, x, state, resets)[0] * R))

    _, _, cache = cell.forward(params, x, state, resets)
    dx, dstate, grads = cell.backward(R.copy(), cache)
    assert set(grads) == set(params)
    for k in params:
        assert grads[k].shape == params[k].shape
        err = rel_error(numerical_gradient(loss, params[k]), grads[k])
        assert err < 1e-7, (k, err)
    assert len(dstate) == len(state)
    for name, s, ds in zip(cell.state_names, state, dstate, strict=True):
        num = numerical_gradient(loss, s)
        assert rel_error(num, ds) < 1e-7, name
        if resets is not None:  # reset before step 0: the carried-in state has no influence
            np.testing.assert_array_equal(ds[:, 0], 0.0)
    assert dx.shape == x.shape
    assert rel_error(numerical_gradient(loss, x), dx) < 1e-7


@pytest.mark.parametrize(("case", "kind", "opts"), CASES, ids=CASE_IDS)
@pytest.mark.parametrize("with_resets", [False, True], ids=["noreset", "resets"])
def test_backward_finite_differences_ids(case, kind, opts, with_resets) -> None:
    """With ids the input weights' gradient is a one-hot scatter, and there is no dx."""
    cell, params, x, state = setup(kind, opts, ids=True, seed=12)
    resets = make_resets(seed=2) if with_resets else None
    R = np.random.default_rng(6).standard_normal((T, H, N))

    def loss() -> float:
        return float(np.sum(cell.forward(params, x, state, resets)[0] * R))

    _, _, cache = cell.forward(params, x, state, resets)
    dx, dstate, grads = cell.backward(R.copy(), cache)
    assert dx is None
    for k in params:
        assert rel_error(numerical_gradient(loss, params[k]), grads[k]) < 1e-7, k
    for s, ds in zip(state, dstate, strict=True):
        assert rel_error(numerical_gradient(loss, s), ds) < 1e-7
    unused = sorted(set(range(V)) - set(x.reshape(-1).tolist()))
    np.testing.assert_array_equal(grads["Wx"][:, unused], 0.0)


@pytest.mark.parametrize(("case", "kind", "opts"), CASES, ids=CASE_IDS)
def test_backward_is_repeatable(case, kind, opts) -> None:
    """backward does not corrupt the cache: running it twice gives the same gradients."""
    cell, params, x, state = setup(kind, opts, ids=False, seed=4)
    R = np.random.default_rng(7).standard_normal((T, H, N))
    _, _, cache = cell.forward(params, x, state, make_resets())
    dx1, ds1, g1 = cell.backward(R.copy(), cache)
    dx2, ds2, g2 = cell.backward(R.copy(), cache)
    np.testing.assert_array_equal(dx1, dx2)
    for a, b in zip(ds1, ds2, strict=True):
        np.testing.assert_array_equal(a, b)
    for k in g1:
        np.testing.assert_array_equal(g1[k], g2[k])


# --- step() and resets --------------------------------------------------------------------------


@pytest.mark.parametrize(("case", "kind", "opts"), CASES, ids=CASE_IDS)
@pytest.mark.parametrize("ids", [True, False], ids=["ids", "dense"])
def test_step_matches_forward(case, kind, opts, ids) -> None:
    cell, params, x, state = setup(kind, opts, ids, seed=8)
    out, final, _ = cell.forward(params, x, state, None)
    st_ = tuple(s.copy() for s in state)
    for t in range(T):
        h, st_ = cell.step(params, x[t], st_)
        np.testing.assert_allclose(h, out[t], rtol=0, atol=1e-13)
        np.testing.assert_allclose(st_[0], out[t], rtol=0, atol=1e-13)
    for got, want in zip(st_, final, strict=True):
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-13)


@pytest.mark.parametrize(("case", "kind", "opts"), CASES, ids=CASE_IDS)
@pytest.mark.parametrize("ids", [True, False], ids=["ids", "dense"])
def test_reset_equals_fresh_start(case, kind, opts, ids) -> None:
    """A column reset before step t continues exactly as that column run from zeros from t on."""
    Tl = 6
    cell, params, x, state = setup(kind, opts, ids, seed=9, t=Tl)
    resets = np.zeros((Tl, N), dtype=bool)
    resets[3, 0] = True
    resets[1, 1] = True
    resets[4, 1] = True
    out, final, _ = cell.forward(params, x, state, resets)
    for n, t0 in [(0, 3), (1, 4)]:
        xs = x[t0:, n : n + 1] if ids else x[t0:, :, n : n + 1]
        zero = tuple(np.zeros((H, 1)) for _ in state)
        fresh, fresh_final, _ = cell.forward(params, xs, zero, None)
        np.testing.assert_allclose(out[t0:, :, n], fresh[:, :, 0], rtol=0, atol=1e-13)
        for got, want in zip(final, fresh_final, strict=True):
            np.testing.assert_allclose(got[:, n], want[:, 0], rtol=0, atol=1e-13)
    # before the reset, column 0 is the plain run; the untouched column 2 matches a plain run
    plain, _, _ = cell.forward(params, x, state, None)
    np.testing.assert_allclose(out[:3, :, 0], plain[:3, :, 0], rtol=0, atol=1e-13)
    np.testing.assert_allclose(out[:, :, 2], plain[:, :, 2], rtol=0, atol=1e-13)
    # an all-False reset mask is the same as none
    none_out = cell.forward(params, x, state, np.zeros((Tl, N), dtype=bool))[0]
    np.testing.assert_allclose(none_out, plain, rtol=0, atol=0)


@pytest.mark.parametrize(("case", "kind", "opts"), CASES, ids=CASE_IDS)
def test_float32_runs_in_float32(case, kind, opts) -> None:
    cell, params, x, state = setup(kind, opts, ids=True, seed=10)
    p32 = {k: v.astype(np.float32) for k, v in params.items()}
    s32 = tuple(s.astype(np.float32) for s in state)
    out, final, cache = cell.forward(p32, x, s32, make_resets())
    assert out.dtype == np.float32
    assert all(f.dtype == np.float32 for f in final)
    ref = cell.forward(params, x, state, make_resets())[0]
    np.testing.assert_allclose(out, ref, atol=1e-5)
    _, dstate, grads = cell.backward(np.ones_like(out), cache)
    assert all(g.dtype == np.float32 for g in grads.values())
    assert all(d.dtype == np.float32 for d in dstate)


# --- ops ----------------------------------------------------------------------------------------


def stable_sigmoid(x: np.ndarray) -> np.ndarray:
    out = np.empty_like(x)
    pos = x >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-x[pos]))
    e = np.exp(x[~pos])
    out[~pos] = e / (1.0 + e)
    return out


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.floats(min_value=-1e300, max_value=1e300, allow_nan=False, allow_infinity=False),
        min_size=1,
        max_size=20,
    )
)
def test_sigmoid_matches_formula_without_overflow(values: list[float]) -> None:
    x = np.array(values, dtype=np.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with np.errstate(over="raise", invalid="raise", divide="raise"):
            got = sigmoid(x)  # (underflow of subnormal inputs to 0 is harmless)
    want = stable_sigmoid(x)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=2e-16)
    assert np.all((got >= 0) & (got <= 1))
    np.testing.assert_array_equal(x, np.array(values))  # input untouched without out=


@settings(max_examples=100, deadline=None)
@given(st.floats(min_value=-50, max_value=50, allow_nan=False))
def test_sigmoid_formula_moderate_range(v: float) -> None:
    x = np.array([v, -v])
    np.testing.assert_allclose(sigmoid(x), 1.0 / (1.0 + np.exp(-x)), rtol=1e-12, atol=1e-16)


def test_sigmoid_extremes_and_out() -> None:
    x = np.array([-np.inf, -1e308, -800.0, 0.0, 800.0, 1e308, np.inf])
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        y = sigmoid(x)
    np.testing.assert_array_equal(y, [0, 0, 0, 0.5, 1, 1, 1])
    x32 = np.linspace(-100, 100, 11, dtype=np.float32)
    buf = np.empty_like(x32)
    res = sigmoid(x32, out=buf)
    assert res is buf and res.dtype == np.float32


@pytest.mark.parametrize("kind", ["tanh", "relu"])
def test_activate_and_backward(kind: str) -> None:
    rng = np.random.default_rng(0)
    z = rng.standard_normal(50) * 2
    z[np.abs(z) < 1e-3] = 0.5  # stay off relu's kink
    y = activate(kind, z)
    np.testing.assert_allclose(y, np.tanh(z) if kind == "tanh" else np.maximum(z, 0))
    dy = rng.standard_normal(50)
    h = 1e-6
    num = (activate(kind, z + h) - activate(kind, z - h)) / (2 * h) * dy
    np.testing.assert_allclose(activate_backward(kind, y, dy), num, atol=1e-8)


def test_project_inputs_ids_equals_one_hot_product() -> None:
    rng = np.random.default_rng(0)
    Wx, b = rng.standard_normal((6, V)), rng.standard_normal(6)
    ids = rng.integers(0, V, size=(T, N))
    X = one_hot_inputs(ids, V)
    want = np.stack([Wx @ X[t] + b[:, None] for t in range(T)])
    np.testing.assert_allclose(project_inputs(CPU, Wx, b, ids, np.empty((T, 6, N))), want,
                               atol=1e-14)  # fmt: skip
    np.testing.assert_allclose(project_inputs(CPU, Wx, b, X, np.empty((T, 6, N))), want,
                               atol=1e-14)  # fmt: skip
    dA = rng.standard_normal((T, 6, N))
    dW_ids, db_ids = np.empty_like(Wx), np.empty_like(b)
    dx_ids = project_inputs_backward(CPU, time_columns(dA), ids, Wx, dW_ids, db_ids)
    dW, db = np.empty_like(Wx), np.empty_like(b)
    dx = project_inputs_backward(CPU, time_columns(dA), X, Wx, dW, db, np.empty((V, T * N)))
    assert dx_ids is None
    np.testing.assert_allclose(dW_ids, dW, atol=1e-13)
    np.testing.assert_allclose(db_ids, db, atol=1e-13)
    np.testing.assert_allclose(db, dA.sum(axis=(0, 2)), atol=1e-13)
    np.testing.assert_allclose(dx, np.einsum("gd,tgn->tdn", Wx, dA), atol=1e-13)


def test_time_columns_round_trip() -> None:
    a = np.arange(2 * 3 * 4, dtype=np.float64).reshape(2, 3, 4)
    cols = time_columns(a)
    assert cols.shape == (3, 8)
    np.testing.assert_array_equal(cols[:, 4:], a[1])
    np.testing.assert_array_equal(column_sequence(cols, 2), a)
    assert np.shares_memory(column_sequence(cols, 2), cols)  # a view, not a copy


def test_log_softmax_normalised() -> None:
    z = np.random.default_rng(0).standard_normal((7, 5)) * 30
    ls = log_softmax(z)
    np.testing.assert_allclose(np.exp(ls).sum(axis=0), 1.0, atol=1e-12)
    np.testing.assert_allclose(ls, z - np.log(np.exp(z).sum(axis=0)), atol=1e-10)
