"""Kernel sets: every device's kernels against the NumPy reference, and the cells computing
only through the kernel set their device hands them (so a faster set plugs in there alone)."""

from __future__ import annotations

import dataclasses
import importlib.util
from collections import Counter
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from charlm.cells import reference_kernels
from charlm.device import CPU, Device, get_device, has_numba, to_numpy
from charlm.errors import CharlmError
from charlm.model import CharModel

# (id, model options): every cell and form
FORMS = [
    ("rnn-tanh", {"cell": "rnn", "rnn_activation": "tanh"}),
    ("rnn-relu", {"cell": "rnn", "rnn_activation": "relu"}),
    ("gru-notes", {"cell": "gru", "gru_reset_after": False}),
    ("gru-after", {"cell": "gru", "gru_reset_after": True}),
    ("lstm", {"cell": "lstm"}),
]


def spec(**options: Any) -> SimpleNamespace:
    base = dict(cell="lstm", hidden_size=6, num_layers=2, dropout=0.0, embedding_size=0,
                gru_reset_after=False, rnn_activation="tanh")  # fmt: skip
    return SimpleNamespace(**{**base, **options})


def problem(model: CharModel, resets: bool, seed: int = 0) -> tuple[Any, ...]:
    """float64 parameters, ids, targets, a random carried-in state and (optionally) resets."""
    rng = np.random.default_rng(seed)
    params = model.init_params(rng, np.float64)
    for value in params.values():  # off the init's symmetries
        value += 0.1 * rng.standard_normal(value.shape)
    x, y = rng.integers(0, model.V, (3, 7)), rng.integers(0, model.V, (3, 7))
    state = [tuple(rng.standard_normal(s.shape) for s in layer)
             for layer in model.initial_state(3, np.float64)]  # fmt: skip
    mask = rng.random((3, 7)) < 0.3 if resets else None
    return params, x, y, state, mask


def run(model: CharModel, params: dict, x: Any, y: Any, state: list, mask: Any) -> list[Any]:
    """Loss, every gradient, the final state and the state gradient, as NumPy arrays."""
    send = model.device.send
    loss, grads, final, dstate = model.loss(
        {k: send(v) for k, v in params.items()}, send(x), send(y),
        [tuple(send(s) for s in layer) for layer in state],
        None if mask is None else send(mask),
    )  # fmt: skip
    arrays = [np.float64(loss), *(grads[k] for k in params)]
    arrays += [s for layer in [*final, *dstate] for s in layer]
    return [to_numpy(a) for a in arrays]


def other_devices() -> list[Any]:
    """The devices on this machine whose kernels are not the NumPy reference."""
    found = []
    if has_numba():
        found.append(pytest.param(get_device("cpu", "compiled"), id="compiled"))
    if importlib.util.find_spec("cupy") is not None:
        try:
            found.append(pytest.param(get_device("cuda"), id="cuda"))
        except CharlmError:
            pass
    reason = "no kernel set but the NumPy reference here (no numba, no CuPy and GPU)"
    return found or [pytest.param(None, id="none", marks=pytest.mark.skip(reason=reason))]


@pytest.mark.parametrize("device", other_devices())
@pytest.mark.parametrize("resets", [False, True])
@pytest.mark.parametrize(("form", "options"), FORMS)
def test_every_kernel_set_matches_the_numpy_reference(
    device: Device, resets: bool, form: str, options: dict
) -> None:
    """float64: the loss, gradients and states through `device`'s kernels equal the CPU's
    reference kernels' to 1e-12 (windows with resets take the step kernels, those without a
    device's window loops where it has them); float32 to 1e-5 relative (the compiled set uses
    a rational tanh there)."""
    reference = CharModel(spec(**options), 11)
    model = CharModel(spec(**options), 11, device)
    inputs = problem(reference, resets)
    for got, want in zip(run(model, *inputs), run(reference, *inputs), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
    params, *rest = inputs
    f32 = ({k: v.astype(np.float32) for k, v in params.items()}, *rest[:2],
           [tuple(s.astype(np.float32) for s in layer) for layer in rest[2]], rest[3])  # fmt: skip
    for got, want in zip(run(model, *f32), run(reference, *f32), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("device", other_devices())
@pytest.mark.parametrize("N", [1, 3])
@pytest.mark.parametrize(("form", "options"), FORMS)
def test_sampling_steps_match_the_numpy_reference(
    device: Device, N: int, form: str, options: dict
) -> None:
    """Sampling's one-step path (`CharModel.step`, no cache) through `device`'s kernels equals
    the reference's, for one sample (the compiled LSTM runs down the column then) and several,
    over a few steps so that each reads the state the last one wrote."""
    reference = CharModel(spec(**options), 11)
    model = CharModel(spec(**options), 11, device)
    params, x, _, state, _ = problem(reference, resets=False)
    for dtype, tol in ((np.float64, 1e-12), (np.float32, 1e-5)):
        p = {k: v.astype(dtype) for k, v in params.items()}
        want_state = [tuple(s[:, :N].astype(dtype) for s in layer) for layer in state]
        got_state = [tuple(device.send(s) for s in layer) for layer in want_state]
        step = model.stepper({k: device.send(v) for k, v in p.items()})
        want_step = reference.stepper(p)
        for t in range(x.shape[1]):
            ids = x[:N, t]
            got, got_state = step(device.send(ids), got_state)
            want, want_state = want_step(ids, want_state)
            np.testing.assert_allclose(to_numpy(got), want, rtol=tol, atol=tol)
        for got_layer, want_layer in zip(got_state, want_state, strict=True):
            for g, w in zip(got_layer, want_layer, strict=True):
                np.testing.assert_allclose(to_numpy(g), w, rtol=tol, atol=tol)


@pytest.mark.parametrize("device", other_devices())
@settings(max_examples=30, deadline=None)
@given(
    T=st.integers(1, 6), N=st.integers(1, 9), G=st.integers(1, 7), V=st.integers(1, 12),
    dtype=st.sampled_from([np.float64, np.float32]), seed=st.integers(0, 2**16),
)  # fmt: skip
def test_column_gather_and_scatter_match_the_reference(
    device: Device, T: int, N: int, G: int, V: int, dtype: Any, seed: int
) -> None:
    """A device's `gather_columns` equals the CPU's exactly (it only copies), and its
    `scatter_columns` (the gradient of the gather: the input weights' gradient for ids) the
    CPU's one-hot product up to the order of the additions. Repeated ids are the case to get
    right, so ids come from a small range."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, V, (T, N))
    table = rng.standard_normal((G, V)).astype(dtype)
    got = device.gather_columns(
        device.send(table), device.send(ids), device.xp.empty((T, G, N), dtype)
    )
    want = CPU.gather_columns(table, ids, np.empty((T, G, N), dtype))
    np.testing.assert_array_equal(to_numpy(got), want)
    dcols = rng.standard_normal((G, T * N)).astype(dtype)
    got = device.scatter_columns(
        device.send(dcols), device.send(ids), device.xp.empty((G, V), dtype)
    )
    want = CPU.scatter_columns(dcols, ids, np.empty((G, V), dtype))
    tol = 1e-12 if dtype == np.float64 else 1e-5
    np.testing.assert_allclose(to_numpy(got), want, rtol=tol, atol=tol)


@pytest.mark.skipif(not has_numba(), reason="the compiled kernels need numba (charlm[fast])")
@settings(max_examples=60, deadline=None)
@given(
    V=st.integers(2, 80), N=st.integers(1, 9), seed=st.integers(0, 2**16),
    temperature=st.sampled_from([1.0, 0.7, 1.5, 1e-3]),
    dtype=st.sampled_from([np.float32, np.float64]), edge=st.booleans(),
)  # fmt: skip
def test_compiled_draw_matches_filter_and_draw(
    V: int, N: int, seed: int, temperature: float, dtype: Any, edge: bool
) -> None:
    """The compiled one-pass draw picks the ids `filter_probs` + `draw` pick from the same
    uniforms (temperature and banned ids; uniforms just below 1 with `edge`), never a banned
    one."""
    from charlm.sample import draw, filter_probs  # noqa: PLC0415

    device = get_device("cpu", "compiled")
    rng = np.random.default_rng(seed)
    logits = (rng.standard_normal((V, N)) * 3).astype(dtype)
    banned = rng.choice(V, size=int(rng.integers(0, V)), replace=False)
    allowed = np.ones(V, dtype=bool)
    allowed[banned] = False
    uniforms = 1 - rng.random(N) * 1e-12 if edge else rng.random(N)
    want = draw(filter_probs(logits, temperature, banned=banned.tolist()), uniforms)
    got = device.draw_ids(logits, temperature, allowed, uniforms)
    np.testing.assert_array_equal(got, want)
    assert allowed[got].all()


@pytest.mark.skipif(not has_numba(), reason="the compiled kernels need numba (charlm[fast])")
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("weight_decay", [0.0, 0.01])
def test_compiled_adam_is_the_numpy_update_to_the_bit(dtype: Any, weight_decay: float) -> None:
    """Five Adam steps on flat buffers through the compiled one-pass update leave parameters
    and moments bit-identical to the optimizer's NumPy passes."""
    from charlm.optim import Optimizer  # noqa: PLC0415
    from charlm.params import FlatParams  # noqa: PLC0415

    rng = np.random.default_rng(3)
    shapes = {"a": (7, 5), "b": (3,)}
    initial = {k: rng.standard_normal(s) for k, s in shapes.items()}
    runs = []
    for fused in (None, get_device("cpu", "compiled").adam_update):
        params = FlatParams.of(shapes, initial, np, dtype)
        opt = Optimizer("adam", params, 0.8, 0.95, 1e-6, weight_decay, fused)
        grads = params.zeros_like()
        for step in range(5):
            grads.flat[...] = np.random.default_rng(step).standard_normal(grads.flat.shape)
            opt.step(params, grads, 3e-3)
        runs.append([params.flat, *(m.flat for m in opt.moments.values())])
    for fused_array, numpy_array in zip(*runs, strict=True):
        np.testing.assert_array_equal(fused_array, numpy_array)


class CountingDevice(Device):
    """The CPU with every reference kernel wrapped to count its calls."""

    name = "counting-cpu"

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()

    def kernels(self, cell: str) -> Any:
        kernels = reference_kernels(cell)
        wrapped = {f.name: self._count(f"{cell}.{f.name}", getattr(kernels, f.name))
                   for f in dataclasses.fields(kernels) if getattr(kernels, f.name)}  # fmt: skip
        return dataclasses.replace(kernels, **wrapped)

    def _count(self, name: str, kernel: Callable[..., None]) -> Callable[..., None]:
        def counted(*args: Any) -> None:
            self.calls[name] += 1
            kernel(*args)

        return counted


# Kernel calls per step and layer, forward + backward, for each form.
CALLS_PER_STEP = {
    "rnn-tanh": {"rnn.step_forward": 1, "rnn.step_backward": 1},
    "rnn-relu": {"rnn.step_forward": 1, "rnn.step_backward": 1},
    "gru-notes": {"gru.forward_gates": 1, "gru.forward_candidate": 1,
                  "gru.backward_candidate": 1, "gru.backward_gates": 1},
    "gru-after": {"gru.forward_after": 1, "gru.backward_after": 1},
    "lstm": {"lstm.step_forward": 1, "lstm.step_backward": 1},
}  # fmt: skip


@pytest.mark.parametrize("resets", [False, True])
@pytest.mark.parametrize(("form", "options"), FORMS)
def test_cells_compute_through_their_devices_kernels(
    resets: bool, form: str, options: dict
) -> None:
    """Every step's elementwise work goes through the kernel set the device hands the cell,
    and a cell on a device with the reference kernels computes bit for bit what the CPU does."""
    device = CountingDevice()
    model = CharModel(spec(**options), 11, device)
    inputs = problem(model, resets)
    got = run(model, *inputs)
    steps = 7 * 2  # T steps in each of the 2 layers
    assert device.calls == Counter({k: n * steps for k, n in CALLS_PER_STEP[form].items()})
    want = run(CharModel(spec(**options), 11, CPU), *inputs)
    for g, w in zip(got, want, strict=True):
        np.testing.assert_array_equal(g, w)


@pytest.mark.skipif(not has_numba(), reason="the compiled kernels need numba (charlm[fast])")
@pytest.mark.parametrize(
    "sets",
    [["model.cell=lstm", "data.mode=lines"], ["model.cell=gru", "model.gru_reset_after=true"],
     ["model.cell=gru"], ["model.cell=rnn", "model.rnn_activation=relu"]],
)  # fmt: skip
def test_gradcheck_passes_with_the_compiled_kernels(sets: list[str]) -> None:
    from click.testing import CliRunner  # noqa: PLC0415

    from charlm.cli import cli  # noqa: PLC0415

    args = ["gradcheck", "--hidden", "8", "--set", "train.kernels=compiled"]
    for setting in sets:
        args += ["--set", setting]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert "compiled kernels" in result.output and "max relative error" in result.output


def test_kernels_compiled_without_numba_is_one_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import charlm.device as device_module  # noqa: PLC0415

    monkeypatch.setattr(device_module, "has_numba", lambda: False)
    device_module.get_device.cache_clear()
    try:
        with pytest.raises(CharlmError, match=r"needs numba: pip install 'charlm\[fast\]'"):
            device_module.get_device("cpu", "compiled")
        assert device_module.get_device("cpu", "auto") is CPU  # auto falls back to NumPy
    finally:
        device_module.get_device.cache_clear()


@pytest.mark.skipif(not has_numba(), reason="the compiled kernels need numba (charlm[fast])")
@pytest.mark.parametrize(("form", "options"), FORMS)
def test_compiled_results_do_not_depend_on_where_buffers_start(form: str, options: dict) -> None:
    """The same numbers whatever the alignment of the arrays (N = 37 leaves a scalar tail
    after the vectorised loop): otherwise an evaluation or a resume, whose buffers land
    elsewhere, would differ in the last bits."""
    device = get_device("cpu", "compiled")
    model = CharModel(spec(**options), 11, device)
    params, x, y, state, mask = problem(model, resets=False)
    rng = np.random.default_rng(5)
    x, y = rng.integers(0, 11, (37, 5)), rng.integers(0, 11, (37, 5))
    state = [tuple(rng.standard_normal((6, 37)).astype(np.float32) for _ in layer)
             for layer in state]  # fmt: skip

    def shifted(a: np.ndarray, k: int) -> np.ndarray:  # a copy starting k elements further on
        raw = np.empty(a.size + 16, a.dtype)
        out = raw[k : k + a.size].reshape(a.shape)
        out[...] = a
        return out

    results = []
    for k in range(4):
        p32 = {name: shifted(v.astype(np.float32), k) for name, v in params.items()}
        st = [tuple(shifted(s, k) for s in layer) for layer in state]
        results.append(run(model, p32, x, y, st, None))
    for other in results[1:]:
        for a, b in zip(results[0], other, strict=True):
            np.testing.assert_array_equal(a, b)
