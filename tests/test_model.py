"""Tests for charlm.model, charlm.gradcheck, softmax cross-entropy and charlm.optim."""

from __future__ import annotations

import json
import math
import warnings
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from charlm.cli import cli
from charlm.config import TrainConfig
from charlm.errors import ConfigError
from charlm.gradcheck import central_difference, gradcheck, relative_error
from charlm.model import CharModel
from charlm.ops import log_softmax, softmax_cross_entropy
from charlm.optim import Optimizer, clip_gradients, global_norm, learning_rate

V = 7

# (id, cell, gru_reset_after, rnn_activation)
CELLS = [
    ("rnn", "rnn", False, "tanh"),
    ("rnn-relu", "rnn", False, "relu"),
    ("gru-notes", "gru", False, "tanh"),
    ("gru-after", "gru", True, "tanh"),
    ("lstm", "lstm", False, "tanh"),
]
CELL_IDS = [c[0] for c in CELLS]


def make_spec(
    cell: str = "lstm",
    hidden_size: int = 5,
    num_layers: int = 2,
    dropout: float = 0.0,
    embedding_size: int = 0,
    gru_reset_after: bool = False,
    rnn_activation: str = "tanh",
) -> SimpleNamespace:
    return SimpleNamespace(
        cell=cell,
        hidden_size=hidden_size,
        num_layers=num_layers,
        dropout=dropout,
        embedding_size=embedding_size,
        gru_reset_after=gru_reset_after,
        rnn_activation=rnn_activation,
    )


def setup(spec: SimpleNamespace, N: int = 3, T: int = 5, seed: int = 0):
    """(model, params, x, y, random state) in float64, biases moved off zero."""
    rng = np.random.default_rng(seed)
    model = CharModel(spec, V)
    params = model.init_params(rng, np.float64)
    for value in params.values():
        value += 0.2 * rng.standard_normal(value.shape)
    x = rng.integers(0, V, size=(N, T))
    y = rng.integers(0, V, size=(N, T))
    state = [
        tuple(rng.standard_normal(s.shape) * 0.5 for s in layer)
        for layer in model.initial_state(N, np.float64)
    ]
    return model, params, x, y, state


# --- whole-model gradient check -----------------------------------------------------------------


@pytest.mark.parametrize(("case", "cell", "after", "act"), CELLS, ids=CELL_IDS)
@pytest.mark.parametrize(
    ("embedding_size", "dropout", "resets"),
    [(0, 0.0, False), (4, 0.0, False), (0, 0.3, True), (4, 0.4, True)],
    ids=["plain", "embed", "dropout-resets", "embed-dropout-resets"],
)
def test_gradcheck(case, cell, after, act, embedding_size, dropout, resets) -> None:
    spec = make_spec(cell, 5, 2, dropout, embedding_size, after, act)
    result = gradcheck(spec, vocab_size=V, batch_size=3, seq_len=5, resets=resets, samples=12)
    assert result.max_error < 1e-6, (result.worst, result.errors)
    names = set(result.errors)
    assert {"l0.Wx", "l1.Wh", "Wy", "by", "state.l0.h", "state.l1.h"} <= names
    assert ("embed" in names) == bool(embedding_size)
    assert ("l1.bhn" in names) == after
    assert ("state.l1.c" in names) == (cell == "lstm")


SMALL = ["--set", "model.hidden_size=6", "--set", "model.num_layers=3"]


def test_gradcheck_cli_passes_on_the_configured_model() -> None:
    result = CliRunner().invoke(cli, ["gradcheck", *SMALL, "--set", "model.embedding_size=4"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    # 3 layers x (Wx, Wh, b), Wy, by, embed, and 3 layers x (h, c) of carried-in state
    assert lines[0] == "lstm, 3 layers, H=6, E=4, T=5, numpy kernels: 18 tensors checked"
    error = float(lines[1].split()[3])
    assert lines[1].startswith("max relative error: ") and 0 < error < 1e-6
    # --hidden / --layers override the configured size; --json reports every tensor.
    result = CliRunner().invoke(
        cli, ["gradcheck", *SMALL, "--hidden", "3", "--layers", "1", "--seq-len", "2", "--json"]
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert set(report["errors"]) == {"l0.Wx", "l0.Wh", "l0.b", "Wy", "by", "state.l0.h",
                                     "state.l0.c"}  # fmt: skip
    assert report["max_relative_error"] == max(report["errors"].values()) < 1e-6


@pytest.mark.parametrize("as_json", [False, True])
def test_gradcheck_cli_fails_on_a_wrong_backward(
    monkeypatch: pytest.MonkeyPatch, as_json: bool
) -> None:
    """A GRU whose dWh is 1% too large: exit status 1 and one `Error:` line naming it."""
    from charlm.cells.gru import GRU  # noqa: PLC0415

    backward = GRU.backward

    def wrong_backward(self: GRU, dout: np.ndarray, cache: dict, grads: dict) -> tuple:
        dx, dstate, grads = backward(self, dout, cache, grads)
        grads["Wh"] *= 1.01  # the cell writes into the model's gradient buffers
        return dx, dstate, grads

    monkeypatch.setattr(GRU, "backward", wrong_backward)
    args = ["gradcheck", "--set", "model.cell=gru", "--hidden", "4", "--layers", "1"]
    result = CliRunner().invoke(cli, args + ["--json"] * as_json)
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    (line,) = [line for line in result.stderr.splitlines() if line.strip()]
    assert line.startswith("Error: gradient check failed: max relative error ")
    assert line.endswith("> 1e-6 (in l0.Wh)")
    assert 1e-3 < float(line.split()[7]) < 1e-2  # |0.01 g| / |2.01 g|, about 5e-3


def test_relative_error() -> None:
    assert relative_error(np.zeros(3), np.zeros(3)) == 0.0
    assert relative_error(np.ones(3), -np.ones(3)) == 1.0
    assert relative_error(np.ones(3), np.ones(3)) == 0.0


# --- softmax cross-entropy ----------------------------------------------------------------------


def explicit_ce(logits: np.ndarray, targets: np.ndarray) -> tuple[float, np.ndarray]:
    """Straight from the definition (moderate logits only)."""
    M = logits.shape[1]
    p = np.exp(logits) / np.exp(logits).sum(axis=0)
    losses = -np.log(p[targets, np.arange(M)])
    onehot = np.zeros_like(logits)
    onehot[targets, np.arange(M)] = 1.0
    return float(losses.mean()), (p - onehot) / M


def test_softmax_cross_entropy_formula_and_fd() -> None:
    rng = np.random.default_rng(0)
    z = rng.standard_normal((V, 11)) * 3
    y = rng.integers(0, V, size=11)
    loss, dz, losses = softmax_cross_entropy(z.copy(), y)
    want_loss, want_dz = explicit_ce(z, y)
    assert loss == pytest.approx(want_loss, rel=1e-13)
    np.testing.assert_allclose(dz, want_dz, atol=1e-15)
    np.testing.assert_allclose(losses, -log_softmax(z)[y, np.arange(11)], atol=1e-13)
    assert losses.mean() == pytest.approx(loss, rel=1e-14)
    flat = z.reshape(-1)  # a view: central_difference nudges z itself

    def f() -> float:
        return float(softmax_cross_entropy(z.copy(), y)[0])  # it overwrites its logits

    num = np.array([central_difference(f, flat, i, 1e-6) for i in range(flat.size)])
    np.testing.assert_allclose(num.reshape(z.shape), dz, atol=1e-9)
    np.testing.assert_allclose(dz.sum(axis=0), 0.0, atol=1e-15)


def test_softmax_cross_entropy_overwrites_logits() -> None:
    z = np.random.default_rng(1).standard_normal((V, 4))
    _, dz, _ = softmax_cross_entropy(z, np.zeros(4, dtype=int))
    assert dz is z or np.shares_memory(dz, z)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_softmax_cross_entropy_huge_logits(dtype) -> None:
    z = np.zeros((V, 4), dtype=dtype)
    z[0, :] = 1e4
    z[1, 3] = -1e4
    y = np.array([0, 1, 0, 1])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with np.errstate(over="raise", invalid="raise", divide="raise"):
            loss, dz, losses = softmax_cross_entropy(z, y)
    assert np.all(np.isfinite(dz))
    np.testing.assert_allclose(losses, [0.0, 1e4, 0.0, 2e4], rtol=1e-6, atol=1e-6)
    assert loss == pytest.approx(7.5e3, rel=1e-6)
    np.testing.assert_allclose(dz[:, 1] * 4, np.eye(V)[0] - np.eye(V)[1], atol=1e-6)


@settings(max_examples=50, deadline=None)
@given(
    hnp.arrays(np.float64, (4, 6), elements=st.floats(-500, 500, allow_nan=False)),
    hnp.arrays(np.int64, 6, elements=st.integers(0, 3)),
)
def test_softmax_cross_entropy_property(z: np.ndarray, y: np.ndarray) -> None:
    loss, dz, losses = softmax_cross_entropy(z.copy(), y)
    np.testing.assert_allclose(losses, -log_softmax(z)[y, np.arange(6)], rtol=1e-12, atol=1e-12)
    assert np.all(losses >= 0)
    np.testing.assert_allclose(dz.sum(axis=0), 0.0, atol=1e-15)


# --- model forward / loss / step ----------------------------------------------------------------


def test_param_shapes_match_init() -> None:
    for case in CELLS:
        for E in (0, 3):
            spec = make_spec(case[1], 5, 2, 0.0, E, case[2], case[3])
            model = CharModel(spec, V)
            params = model.init_params(np.random.default_rng(0), np.float32)
            assert list(model.param_shapes()) == list(params)
            assert {k: v.shape for k, v in params.items()} == model.param_shapes()
            assert all(v.dtype == np.float32 for v in params.values())


@pytest.mark.parametrize(("case", "cell", "after", "act"), CELLS, ids=CELL_IDS)
@pytest.mark.parametrize("embedding_size", [0, 3])
def test_loss_is_mean_negative_log_softmax(case, cell, after, act, embedding_size) -> None:
    model, params, x, y, state = setup(make_spec(cell, 5, 2, 0.0, embedding_size, after, act))
    N, T = x.shape
    resets = np.zeros((N, T), dtype=bool)
    resets[1, 2] = True
    logits, _, _ = model.forward(params, x, state, resets)
    assert logits.shape == (V, T, N)
    ls = log_softmax(logits.reshape(V, T * N)).reshape(V, T, N)
    want = -np.mean([ls[y[n, t], t, n] for n in range(N) for t in range(T)])
    loss, grads, new_state, dstate = model.loss(params, x, y, state, resets)
    assert loss == pytest.approx(want, rel=1e-13)
    assert list(grads) == list(params)
    assert all(grads[k].shape == params[k].shape for k in params)
    assert len(dstate) == len(state) == len(new_state)


@pytest.mark.parametrize(("case", "cell", "after", "act"), CELLS, ids=CELL_IDS)
@pytest.mark.parametrize("with_resets", [False, True], ids=["noreset", "resets"])
def test_carried_state_equals_one_long_window(case, cell, after, act, with_resets) -> None:
    T = 4
    model, params, x, y, state = setup(make_spec(cell, 5, 2, 0.0, 3, after, act), N=3, T=2 * T)
    resets = None
    if with_resets:
        resets = np.random.default_rng(4).random(x.shape) < 0.2
        resets[0, T] = True  # a reset exactly at the window boundary
    r1 = None if resets is None else resets[:, :T]
    r2 = None if resets is None else resets[:, T:]
    full_logits, full_state, _ = model.forward(params, x, state, resets)
    l1, s1, _ = model.forward(params, x[:, :T], state, r1)
    l2, s2, _ = model.forward(params, x[:, T:], s1, r2)
    np.testing.assert_allclose(np.concatenate([l1, l2], axis=1), full_logits, atol=1e-13)
    for a, b in zip(full_state, s2, strict=True):
        for u, v in zip(a, b, strict=True):
            np.testing.assert_allclose(u, v, atol=1e-13)
    loss_full = model.loss(params, x, y, state, resets)[0]
    loss1, _, st1, _ = model.loss(params, x[:, :T], y[:, :T], state, r1)
    loss2 = model.loss(params, x[:, T:], y[:, T:], st1, r2)[0]
    assert (loss1 + loss2) / 2 == pytest.approx(loss_full, rel=1e-13)


@pytest.mark.parametrize(("case", "cell", "after", "act"), CELLS, ids=CELL_IDS)
@pytest.mark.parametrize("embedding_size", [0, 3])
def test_step_equals_forward(case, cell, after, act, embedding_size) -> None:
    model, params, x, _, state = setup(make_spec(cell, 5, 2, 0.5, embedding_size, after, act))
    logits, final, _ = model.forward(params, x, state)  # no rng: no dropout
    st_ = state
    for t in range(x.shape[1]):
        step_logits, st_ = model.step(params, x[:, t], st_)
        np.testing.assert_allclose(step_logits, logits[:, t, :], atol=1e-13)
    for a, b in zip(final, st_, strict=True):
        for u, v in zip(a, b, strict=True):
            np.testing.assert_allclose(u, v, atol=1e-13)


def test_initial_state_shapes() -> None:
    model = CharModel(make_spec("lstm", 6, 3), V)
    state = model.initial_state(4, np.float32)
    assert len(state) == 3
    assert all(len(layer) == 2 for layer in state)
    assert all(s.shape == (6, 4) and s.dtype == np.float32 and not s.any() for s in state[0])
    assert all(len(layer) == 1 for layer in CharModel(make_spec("gru"), V).initial_state(2))


def test_loss_does_not_modify_inputs() -> None:
    model, params, x, y, state = setup(make_spec("gru", 5, 2, 0.3, 3, True))
    saved = {k: v.copy() for k, v in params.items()}
    saved_state = [tuple(s.copy() for s in layer) for layer in state]
    x0, y0 = x.copy(), y.copy()
    model.loss(params, x, y, state, None, np.random.default_rng(0))
    for k in params:
        np.testing.assert_array_equal(params[k], saved[k])
    for a, b in zip(state, saved_state, strict=True):
        for u, v in zip(a, b, strict=True):
            np.testing.assert_array_equal(u, v)
    np.testing.assert_array_equal(x, x0)
    np.testing.assert_array_equal(y, y0)


# --- dropout ------------------------------------------------------------------------------------


@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
def test_no_rng_means_no_dropout(cell: str) -> None:
    model, params, x, y, state = setup(make_spec(cell, 5, 2, 0.5, 3))
    plain = CharModel(make_spec(cell, 5, 2, 0.0, 3), V)
    a = model.forward(params, x, state)[0]
    b = model.forward(params, x, state)[0]
    c = plain.forward(params, x, state)[0]
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a, c)
    assert model.loss(params, x, y, state)[0] == plain.loss(params, x, y, state)[0]
    # with a generator the output changes, and the same seed gives the same mask
    d = model.forward(params, x, state, rng=np.random.default_rng(1))[0]
    e = model.forward(params, x, state, rng=np.random.default_rng(1))[0]
    assert np.abs(d - a).max() > 1e-3
    np.testing.assert_array_equal(d, e)


@pytest.mark.parametrize("p", [0.2, 0.5])
def test_dropout_preserves_expected_activation(p: float) -> None:
    """One layer: logits are linear in the dropped activations, so E[logits] is unchanged."""
    spec = make_spec("lstm", 16, 1, p)
    model = CharModel(spec, V)
    rng = np.random.default_rng(0)
    params = model.init_params(rng, np.float64)
    N, T = 4000, 3
    x = np.tile(rng.integers(0, V, size=(1, T)), (N, 1))  # every column the same sequence
    state = model.initial_state(N, np.float64)
    ref = model.forward(params, x, state)[0]  # (V, T, N), columns identical
    dropped, _, cache = model.forward(params, x, state, rng=np.random.default_rng(1))
    mean = dropped.mean(axis=2)
    sem = dropped.std(axis=2) / math.sqrt(N)
    assert np.all(np.abs(mean - ref[:, :, 0]) < 6 * sem + 1e-12)
    (mask,) = cache["masks"]
    assert set(np.unique(mask).tolist()) == {0.0, 1.0 / (1.0 - p)}
    assert abs(float((mask == 0).mean()) - p) < 0.02
    assert abs(float(mask.mean()) - 1.0) < 0.03


# --- gradient clipping --------------------------------------------------------------------------


grad_dicts = st.dictionaries(
    st.sampled_from(["a", "b", "c"]),
    hnp.arrays(
        np.float64,
        hnp.array_shapes(min_dims=1, max_dims=2, max_side=5),
        elements=st.floats(-1e6, 1e6, allow_nan=False),
    ),
    min_size=1,
)


@settings(max_examples=100, deadline=None)
@given(grad_dicts, st.floats(1e-3, 1e3))
def test_clip_value_bounds_every_entry(grads, clip) -> None:
    before = {k: v.copy() for k, v in grads.items()}
    norm = clip_gradients(grads, clip, "value")
    assert norm == pytest.approx(math.sqrt(sum(float((v**2).sum()) for v in before.values())))
    for k, g in grads.items():
        assert np.all(np.abs(g) <= clip)
        np.testing.assert_array_equal(g, np.clip(before[k], -clip, clip))


@settings(max_examples=100, deadline=None)
@given(grad_dicts, st.floats(1e-3, 1e3))
def test_clip_norm_bounds_global_norm(grads, clip) -> None:
    before = {k: v.copy() for k, v in grads.items()}
    want = math.sqrt(sum(float((v**2).sum()) for v in before.values()))
    norm = clip_gradients(grads, clip, "norm")
    assert norm == pytest.approx(want, rel=1e-12)
    after = global_norm(grads)
    assert after <= clip * (1 + 1e-12)
    if want + 1e-6 <= clip:  # no clipping needed: untouched
        for k in grads:
            np.testing.assert_array_equal(grads[k], before[k])
    else:  # one common scale, direction kept
        scale = clip / (want + 1e-6)
        for k in grads:
            np.testing.assert_allclose(grads[k], before[k] * scale, rtol=1e-12)


@pytest.mark.parametrize("kind", ["value", "norm"])
def test_clip_zero_is_no_change(kind: str) -> None:
    grads = {"a": np.array([1e3, -2e3]), "b": np.array([[5.0]])}
    norm = clip_gradients(grads, 0.0, kind)
    assert norm == pytest.approx(math.sqrt(1e6 + 4e6 + 25))
    np.testing.assert_array_equal(grads["a"], [1e3, -2e3])
    np.testing.assert_array_equal(grads["b"], [[5.0]])


# --- learning-rate schedules --------------------------------------------------------------------


def sched(lr: float, schedule: str, **settings: Any) -> TrainConfig:
    """The schedule settings of a TrainConfig (validated like any config)."""
    return TrainConfig(lr=lr, lr_schedule=schedule, **settings)


def test_learning_rate_warmup() -> None:
    for schedule in ("constant", "step", "cosine"):
        lrs = [learning_rate(s, sched(0.1, schedule, warmup_steps=4), 100) for s in range(4)]
        assert lrs == pytest.approx([0.025, 0.05, 0.075, 0.1])
        assert learning_rate(4, sched(0.1, schedule, warmup_steps=4), 100) == pytest.approx(0.1)
    assert learning_rate(10**6, sched(0.1, "constant")) == 0.1


def test_learning_rate_step() -> None:
    def lr(step: int) -> float:
        return learning_rate(
            step, sched(1.0, "step", warmup_steps=2, lr_decay=0.5, lr_decay_every=10)
        )

    assert lr(2) == 1.0
    assert lr(11) == 1.0
    assert lr(12) == 0.5
    assert lr(21) == 0.5
    assert lr(22) == 0.25
    assert lr(102) == pytest.approx(0.5**10)


def test_learning_rate_cosine() -> None:
    def lr(step: int) -> float:
        return learning_rate(step, sched(1.0, "cosine", warmup_steps=10, min_lr=0.1), 110)

    assert lr(10) == pytest.approx(1.0)
    assert lr(60) == pytest.approx(0.55)
    assert lr(110) == pytest.approx(0.1)
    assert lr(500) == pytest.approx(0.1)
    values = [lr(s) for s in range(10, 111)]
    assert all(a >= b for a, b in zip(values, values[1:], strict=False))
    assert learning_rate(0, sched(2.0, "cosine"), 50) == pytest.approx(2.0)
    assert learning_rate(50, sched(2.0, "cosine"), 50) == pytest.approx(0.0, abs=1e-15)


# --- optimizers ---------------------------------------------------------------------------------


def random_problem(seed: int = 0):
    rng = np.random.default_rng(seed)
    params = {"W": rng.standard_normal((4, 3)), "b": rng.standard_normal(5)}
    grads = [{k: rng.standard_normal(v.shape) for k, v in params.items()} for _ in range(3)]
    return params, grads


def torch_optimizer(torch, kind: str, tparams, lr: float, b1, b2, eps, wd):
    if kind == "sgd":
        return torch.optim.SGD(tparams, lr=lr, weight_decay=wd)  # == decoupled for plain SGD
    if kind == "adam":
        if wd:
            return torch.optim.AdamW(tparams, lr=lr, betas=(b1, b2), eps=eps, weight_decay=wd)
        return torch.optim.Adam(tparams, lr=lr, betas=(b1, b2), eps=eps)
    if kind == "adagrad":
        return torch.optim.Adagrad(tparams, lr=lr, lr_decay=0, eps=eps, initial_accumulator_value=0)
    return torch.optim.RMSprop(tparams, lr=lr, alpha=b2, eps=eps)


@pytest.mark.parametrize(
    ("kind", "wd"),
    [("sgd", 0.0), ("sgd", 0.1), ("adam", 0.0), ("adam", 0.05), ("adagrad", 0.0), ("rmsprop", 0.0)],
)
def test_optimizer_matches_torch(kind: str, wd: float) -> None:
    torch = pytest.importorskip("torch")
    params, grads = random_problem()
    b1, b2, eps = 0.8, 0.95, 1e-7
    tparams = [
        torch.tensor(v.copy(), dtype=torch.float64, requires_grad=True) for v in params.values()
    ]
    topt = torch_optimizer(torch, kind, tparams, 0.03, b1, b2, eps, wd)
    opt = Optimizer(kind, params, beta1=b1, beta2=b2, eps=eps, weight_decay=wd)
    for g in grads:
        for tp, gv in zip(tparams, g.values(), strict=True):
            tp.grad = torch.tensor(gv, dtype=torch.float64)
        topt.step()
        opt.step(params, {k: v.copy() for k, v in g.items()}, 0.03)
    assert opt.t == 3
    for tp, p in zip(tparams, params.values(), strict=True):
        np.testing.assert_allclose(p, tp.detach().numpy(), rtol=0, atol=1e-12)


def reference_updates(
    kind: str,
    p0: np.ndarray,
    grads: list[np.ndarray],
    lrs: list[float],
    b1: float,
    b2: float,
    eps: float,
    wd: float,
    coupled: bool = False,
) -> np.ndarray:
    """optim.py's documented rules, one element at a time in plain floats: decoupled decay
    p <- p - lr wd p, then the optimizer's own step from g (never from wd p). coupled=True is
    the L2 alternative (g <- g + wd p, as torch's Adagrad/RMSprop do), to show it differs."""
    out = np.empty_like(p0)
    for i, p in enumerate(p0.reshape(-1).tolist()):
        m = v = s = 0.0
        for t, (g_all, lr) in enumerate(zip(grads, lrs, strict=True), start=1):
            g = float(g_all.reshape(-1)[i])
            if coupled:
                g += wd * p
            else:
                p -= lr * wd * p
            if kind == "sgd":
                p -= lr * g
            elif kind == "adam":
                m = b1 * m + (1 - b1) * g
                v = b2 * v + (1 - b2) * g * g
                p -= (lr / (1 - b1**t)) * m / (math.sqrt(v) / math.sqrt(1 - b2**t) + eps)
            elif kind == "adagrad":
                s += g * g
                p -= lr * g / (math.sqrt(s) + eps)
            else:  # rmsprop
                s = b2 * s + (1 - b2) * g * g
                p -= lr * g / (math.sqrt(s) + eps)
        out.reshape(-1)[i] = p
    return out


@pytest.mark.parametrize("wd", [0.0, 0.3])
@pytest.mark.parametrize("kind", ["sgd", "adam", "adagrad", "rmsprop"])
def test_optimizer_matches_the_documented_rule(kind: str, wd: float) -> None:
    rng = np.random.default_rng(4)
    params = {"W": rng.standard_normal((3, 4)), "b": rng.standard_normal(5)}
    start = {k: v.copy() for k, v in params.items()}
    grads = [{k: rng.standard_normal(v.shape) for k, v in params.items()} for _ in range(6)]
    lrs = [0.05, 0.1, 0.02, 0.07, 0.03, 0.05]  # a schedule: the decay must use each step's lr
    b1, b2, eps = 0.8, 0.95, 1e-7
    opt = Optimizer(kind, params, beta1=b1, beta2=b2, eps=eps, weight_decay=wd)
    for g, lr in zip(grads, lrs, strict=True):
        opt.step(params, {k: v.copy() for k, v in g.items()}, lr)
    for k in params:
        gk = [g[k] for g in grads]
        want = reference_updates(kind, start[k], gk, lrs, b1, b2, eps, wd)
        np.testing.assert_allclose(params[k], want, rtol=1e-13, atol=1e-15, err_msg=k)
        if wd:  # the decay is on, and decoupled: L2 in the gradient gives another result
            plain = reference_updates(kind, start[k], gk, lrs, b1, b2, eps, 0.0)
            assert np.abs(params[k] - plain).max() > 1e-3
            if kind != "sgd":  # (for plain SGD the two are the same)
                l2 = reference_updates(kind, start[k], gk, lrs, b1, b2, eps, wd, coupled=True)
                assert np.abs(params[k] - l2).max() > 1e-3


@pytest.mark.parametrize("kind", ["adagrad", "rmsprop"])
def test_adagrad_rmsprop_decoupled_weight_decay_match_torch(kind: str) -> None:
    """torch's Adagrad/RMSprop weight_decay is L2 added to the gradient (coupled), not ours; so
    torch runs with weight_decay=0 and the decoupled p <- (1 - lr wd) p is applied to its
    parameters by hand before each step, as AdamW does inside its step."""
    torch = pytest.importorskip("torch")
    params, grads = random_problem(5)
    b1, b2, eps, wd = 0.8, 0.95, 1e-7, 0.2
    lrs = [0.03, 0.06, 0.01]
    tparams = [
        torch.tensor(v.copy(), dtype=torch.float64, requires_grad=True) for v in params.values()
    ]
    topt = torch_optimizer(torch, kind, tparams, lrs[0], b1, b2, eps, 0.0)
    opt = Optimizer(kind, params, beta1=b1, beta2=b2, eps=eps, weight_decay=wd)
    for g, lr in zip(grads, lrs, strict=True):
        for group in topt.param_groups:
            group["lr"] = lr
        with torch.no_grad():
            for tp in tparams:
                tp.mul_(1 - lr * wd)
        for tp, gv in zip(tparams, g.values(), strict=True):
            tp.grad = torch.tensor(gv, dtype=torch.float64)
        topt.step()
        opt.step(params, {k: v.copy() for k, v in g.items()}, lr)
    for tp, p in zip(tparams, params.values(), strict=True):
        np.testing.assert_allclose(p, tp.detach().numpy(), rtol=0, atol=1e-12)


def test_optimizer_unknown() -> None:
    # Validated once, by the config; the optimizer takes the name as valid.
    with pytest.raises(ConfigError, match="train.optimizer: must be one of"):
        TrainConfig(optimizer="lbfgs")


@pytest.mark.parametrize("kind", ["sgd", "adam", "adagrad", "rmsprop"])
def test_optimizer_state_round_trip(kind: str) -> None:
    params, grads = random_problem(1)
    more = random_problem(2)[1]
    opt = Optimizer(kind, params, weight_decay=0.01)
    for g in grads:
        opt.step(params, {k: v.copy() for k, v in g.items()}, 0.05)
    # a checkpoint: params and optimizer state, written out (copied) right away
    saved = {k: np.array(v, copy=True) for k, v in opt.state_arrays().items()}
    saved_params = {k: v.copy() for k, v in params.items()}
    for key in saved:
        name, pname = key.split("/")
        assert saved[key].shape == params[pname].shape
        assert name in {"m", "v", "s"}
    assert len(saved) == {"sgd": 0, "adam": 4, "adagrad": 2, "rmsprop": 2}[kind]
    restored = Optimizer(kind, saved_params, weight_decay=0.01)
    restored.load_state_arrays(saved, opt.t)
    for g in more:
        opt.step(params, {k: v.copy() for k, v in g.items()}, 0.05)
        restored.step(saved_params, {k: v.copy() for k, v in g.items()}, 0.05)
    for k in params:
        np.testing.assert_array_equal(params[k], saved_params[k])
    assert restored.t == opt.t == 6


def test_optimizer_state_arrays_are_snapshots() -> None:
    """state_arrays() promises copies: later updates must not change what was returned."""
    params, grads = random_problem(3)
    opt = Optimizer("adam", params)
    opt.step(params, grads[0], 0.01)
    snap = opt.state_arrays()
    frozen = {k: v.copy() for k, v in snap.items()}
    opt.step(params, grads[1], 0.01)
    for k in snap:
        np.testing.assert_array_equal(snap[k], frozen[k])


def test_optimizer_load_rejects_wrong_shape() -> None:
    params, _ = random_problem()
    opt = Optimizer("adam", params)
    bad = {k: np.zeros(3) for k in opt.state_arrays()}
    with pytest.raises(ValueError, match="shape"):
        opt.load_state_arrays(bad, 1)
