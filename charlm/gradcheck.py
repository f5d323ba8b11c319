"""Finite-difference gradient check of a whole model, in float64.

For every parameter tensor and every carried-in state tensor, a sample of entries is nudged by
+-h and the centred difference (L(w+h) - L(w-h)) / 2h is compared with the analytic gradient.
The error of a tensor is the norm-wise relative error |num - ana| / (|num| + |ana|) over the
sampled entries; the check reports the largest over all tensors.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from charlm.device import CPU, Device
from charlm.model import CharModel, ModelSpec, State


@dataclass(frozen=True)
class GradcheckResult:
    """Worst relative error and the tensor it was found in, plus every tensor's error."""

    max_error: float
    worst: str
    errors: dict[str, float]


def relative_error(num: np.ndarray, ana: np.ndarray) -> float:
    """|num - ana| / (|num| + |ana|), 0 when both are 0."""
    denom = float(np.linalg.norm(num) + np.linalg.norm(ana))
    return 0.0 if denom == 0.0 else float(np.linalg.norm(num - ana)) / denom


def central_difference(f: Callable[[], float], flat: np.ndarray, i: int, h: float) -> float:
    """(f(x + h e_i) - f(x - h e_i)) / 2h, nudging entry i of `flat` in place (then restored)."""
    old = flat[i]
    flat[i] = old + h
    plus = f()
    flat[i] = old - h
    minus = f()
    flat[i] = old
    return (plus - minus) / (2 * h)


def gradcheck(
    spec: ModelSpec,
    vocab_size: int = 12,
    batch_size: int = 3,
    seq_len: int = 6,
    resets: bool = False,
    samples: int = 24,
    h: float = 1e-5,
    seed: int = 0,
    device: Device = CPU,
) -> GradcheckResult:
    """Check `spec`'s model on random ids, a random carried-in state and (optionally) resets.

    Dropout uses the same mask in every evaluation (a freshly seeded generator each time).
    At most `samples` entries of each tensor are checked.
    """
    rng = np.random.default_rng(seed)
    model = CharModel(spec, vocab_size, device)  # the device's kernels are what is checked
    params = model.init_params(rng, np.float64)
    for value in params.values():  # move off init symmetries (zero biases, exact orthogonality)
        value += 0.1 * rng.standard_normal(value.shape)
    N, T = batch_size, seq_len
    x = rng.integers(0, vocab_size, size=(N, T))
    y = rng.integers(0, vocab_size, size=(N, T))
    state: State = [
        tuple(rng.standard_normal(s.shape) * 0.5 for s in layer)
        for layer in model.initial_state(N, np.float64)
    ]
    mask = rng.random((N, T)) < 0.25 if resets else None

    def loss() -> float:
        # `model.loss` without its backward pass: the nudged evaluations need no gradients,
        # and skipping it makes checking a full-size model (2x256) about three times faster.
        dropout = np.random.default_rng(seed + 1)
        return float(model.forward_loss(params, x, y, state, mask, dropout)[0])

    _, grads, _, dstate = model.loss(params, x, y, state, mask, np.random.default_rng(seed + 1))
    tensors = [(k, params[k], grads[k]) for k in params]
    for i, (layer, dlayer) in enumerate(zip(state, dstate, strict=True)):
        for name, value, dvalue in zip(model.cells[i].state_names, layer, dlayer, strict=True):
            tensors.append((f"state.l{i}.{name}", value, dvalue))
    errors = {}
    for name, value, grad in tensors:
        flat, gflat = value.reshape(-1), grad.reshape(-1)
        picks = rng.choice(flat.size, size=min(samples, flat.size), replace=False)
        num = np.empty(picks.size)
        for j, idx in enumerate(picks):
            num[j] = central_difference(loss, flat, idx, h)
        errors[name] = relative_error(num, gflat[picks])
    worst = max(errors, key=errors.__getitem__)
    return GradcheckResult(errors[worst], worst, errors)
