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

from charlm.cells import reference_kernels
from charlm.device import CPU, Device, get_device, to_numpy
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
    if importlib.util.find_spec("cupy") is not None:
        try:
            found.append(pytest.param(get_device("cuda"), id="cuda"))
        except CharlmError:
            pass
    reason = "no kernel set but the NumPy reference on this machine (the CUDA set needs a GPU)"
    return found or [pytest.param(None, id="none", marks=pytest.mark.skip(reason=reason))]


@pytest.mark.parametrize("device", other_devices())
@pytest.mark.parametrize("resets", [False, True])
@pytest.mark.parametrize(("form", "options"), FORMS)
def test_every_kernel_set_matches_the_numpy_reference(
    device: Device, resets: bool, form: str, options: dict
) -> None:
    """float64: the loss, gradients and states through `device`'s kernels equal the CPU's
    reference kernels' to ~1e-12 (windows with resets take the step kernels, those without a
    device's window loops where it has them)."""
    reference = CharModel(spec(**options), 11)
    inputs = problem(reference, resets)
    want = run(reference, *inputs)
    got = run(CharModel(spec(**options), 11, device), *inputs)
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-10, atol=1e-12)


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
