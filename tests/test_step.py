"""The training step on its flat buffers and persistent workspace, against the plain path
(fresh arrays, per-tensor clipping and updates) it replaced."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from charlm.config import TrainConfig
from charlm.data import Batch
from charlm.model import CharModel
from charlm.optim import Optimizer, clip_gradients, learning_rate
from charlm.params import FlatParams
from charlm.step import TrainStep
from charlm.workspace import Workspace


def spec(cell: str, dropout: float = 0.0) -> SimpleNamespace:
    return SimpleNamespace(cell=cell, hidden_size=8, num_layers=2, dropout=dropout,
                           embedding_size=4 if cell == "gru" else 0, gru_reset_after=False,
                           rnn_activation="tanh")  # fmt: skip


def batches(V: int, N: int, T: int, count: int, resets: bool) -> list[Batch]:
    rng = np.random.default_rng(7)
    out = []
    for _ in range(count):
        w = rng.integers(0, V, (N, T + 1))
        mask = rng.random((N, T)) < 0.2 if resets else None
        out.append(Batch(w[:, :-1], w[:, 1:], mask, restarts=rng.random(N) < 0.3))
    return out


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize(("cell", "optimizer", "clip_kind"),
                         [("lstm", "adam", "norm"), ("gru", "rmsprop", "value"),
                          ("rnn", "sgd", "norm")])  # fmt: skip
def test_the_step_computes_what_the_plain_path_does(
    dtype: str, cell: str, optimizer: str, clip_kind: str
) -> None:
    """Four steps with resets, restarts, dropout, clipping that bites and weight decay: the
    same parameters, moments, state, losses and norms bit for bit."""
    V, N, T = 13, 4, 6
    settings = TrainConfig(batch_size=N, seq_len=T, optimizer=optimizer, clip=0.05,
                           clip_kind=clip_kind, weight_decay=0.01, lr=0.01, dtype=dtype,
                           lr_schedule="cosine", warmup_steps=2)  # fmt: skip
    model = CharModel(spec(cell, dropout=0.2), V)
    initial = model.init_params(np.random.default_rng(0), np.dtype(dtype))
    step = TrainStep.create(model, initial, settings, total_steps=10,
                            dropout=np.random.default_rng(1))  # fmt: skip
    params = {k: v.copy() for k, v in initial.items()}
    opt = Optimizer(optimizer, params, weight_decay=0.01)
    state, dropout = model.initial_state(N, np.dtype(dtype)), np.random.default_rng(1)
    for i, batch in enumerate(batches(V, N, T, 4, resets=True)):
        stats = step(batch, i)
        state = model.restart_rows(state, batch.restarts)
        loss, grads, state, _ = model.loss(params, batch.x, batch.y, state, batch.resets, dropout)
        norm = clip_gradients(grads, settings.clip, clip_kind)
        opt.step(params, grads, learning_rate(i, settings, 10))
        # Nothing was read back: the loss and norm are still the array module's (0-d arrays,
        # or NumPy's scalars), not Python floats made by reading them.
        assert type(stats.loss) is not float and hasattr(stats.loss, "dtype")
        assert type(stats.grad_norm) is not float and hasattr(stats.grad_norm, "dtype")
        assert stats.step == i + 1 and float(stats.loss) == loss and stats.grad_norm == norm
        assert stats.grad_norm > settings.clip  # the clipping changed the update
    for k in params:
        np.testing.assert_array_equal(step.params[k], params[k], err_msg=k)
    assert step.optimizer.state_arrays().keys() == opt.state_arrays().keys()
    for k, v in opt.state_arrays().items():
        np.testing.assert_array_equal(step.optimizer.state_arrays()[k], v, err_msg=k)
    for got, want in zip(step.state, state, strict=True):
        for g, w in zip(got, want, strict=True):
            np.testing.assert_array_equal(g, w)


def test_the_step_writes_into_the_same_buffers_every_time() -> None:
    """After the first step no buffer is allocated again: the workspace, the flat gradients
    and parameters keep their addresses (what a captured CUDA graph replays against)."""
    V, N, T = 11, 3, 5
    model = CharModel(spec("lstm"), V)
    settings = TrainConfig(batch_size=N, seq_len=T)
    step = TrainStep.create(model, model.init_params(np.random.default_rng(0)), settings)
    data = batches(V, N, T, 4, resets=False)
    step(data[0], 0)

    def addresses() -> dict[str, int]:
        found = {name: buf.ctypes.data for name, buf in step.workspace.buffers.items()}
        found.update(params=step.params.flat.ctypes.data, grads=step.grads.flat.ctypes.data)
        return found

    first, held = addresses(), step.workspace.nbytes
    assert held > 0 and len(first) > 10
    for i, batch in enumerate(data[1:], start=1):
        step(batch, i)
    assert addresses() == first and step.workspace.nbytes == held
    data_resets = batches(V, N, T, 1, resets=True)[0]  # resets add their mask buffers once
    step(data_resets, 4)
    assert {k: v for k, v in addresses().items() if k in first} == first


def test_flat_params_are_named_views_of_one_buffer() -> None:
    shapes = {"a": (2, 3), "b": (4,), "c": (1, 1)}
    arrays = {k: np.arange(np.prod(s), dtype=np.float64).reshape(s) + i
              for i, (k, s) in enumerate(shapes.items())}  # fmt: skip
    params = FlatParams.of(shapes, arrays, np, np.float32)
    assert list(params) == ["a", "b", "c"] and params.flat.shape == (11,)
    assert params.flat.dtype == np.float32
    for k, view in params.items():
        assert np.shares_memory(view, params.flat) and view.shape == shapes[k]
        np.testing.assert_array_equal(view, arrays[k])
    params.flat[:] = 0  # one pass over the buffer reaches every tensor
    assert not any(v.any() for v in params.values())
    grads = params.zeros_like()
    assert grads.shapes == params.shapes and not np.shares_memory(grads.flat, params.flat)


def test_a_fresh_workspace_allocates_and_a_kept_one_reuses() -> None:
    kept, fresh = Workspace(np), Workspace.fresh(np)
    a = kept.empty("x", (2, 3), np.float32)
    assert kept.empty("x", (2, 3), np.float32) is a
    assert kept.empty("x", (3, 3), np.float32) is not a  # another shape: a new buffer
    assert kept.scope("l0").empty("x", (2, 2), np.float64) is not kept.empty("x", (3, 3),
                                                                            np.float32)  # fmt: skip
    assert kept.scope("l0").shared("tmp").empty("y", (1,), np.float64) is kept.shared(
        "tmp").empty("y", (1,), np.float64)  # fmt: skip
    assert fresh.empty("x", (2, 3), np.float32) is not fresh.empty("x", (2, 3), np.float32)
    assert fresh.nbytes == 0 and not kept.zeros("z", (4,), np.float64).any()
