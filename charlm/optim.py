"""Optimizers, gradient clipping and learning-rate schedules, in place on the parameter dict.

Update rules follow the notes (plain SGD) and PyTorch's formulas for the adaptive ones, so a
run can be checked step for step against `torch.optim`:

    sgd      p <- p - lr g
    adam     m <- b1 m + (1-b1) g ;  v <- b2 v + (1-b2) g^2
             p <- p - (lr / (1-b1^t)) m / (sqrt(v) / sqrt(1-b2^t) + eps)
    adagrad  s <- s + g^2 ;                 p <- p - lr g / (sqrt(s) + eps)
    rmsprop  s <- b2 s + (1-b2) g^2 ;       p <- p - lr g / (sqrt(s) + eps)

Weight decay, when set, is decoupled (AdamW style): p <- p - lr wd p.

Given `FlatParams` (training), clipping and the update each make one pass over the flat
buffers; given plain dicts, one pass per tensor. Nothing here reads a device value back to the
host: the norm stays a 0-d device array until the trainer logs it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import numpy as np

from charlm.device import to_numpy, xp_of
from charlm.params import FlatParams, moment_name

Array = Any


def global_norm(grads: Mapping[str, Array]) -> Array:
    """sqrt of the sum of squares of every gradient entry, as a 0-d float64 device array.

    Each tensor's sum of squares, then their sum in float64, in tensor order (so the figure
    does not depend on whether the tensors share a flat buffer).
    """
    squares = []
    for g in grads.values():
        flat = g.reshape(-1)
        squares.append(xp_of(g).dot(flat, flat))
    xp = xp_of(squares[0])
    total = xp.cumsum(xp.stack(squares).astype(xp.float64))[-1]  # in order, like a running sum
    return xp.sqrt(total)


def clip_gradients(
    grads: Mapping[str, Array], clip: float, kind: str, scalars: Any = None
) -> Array:
    """Clip in place; returns the global norm *before* clipping (for the log), on the device.

    kind 'value': each entry to [-clip, clip] (the notes' np.clip). kind 'norm': scale all
    gradients by clip / (norm + 1e-6) when that is below 1 (as torch's clip_grad_norm_); the
    scale is min(that, 1), applied always, so no decision needs the norm on the host.
    clip 0 means no clipping. With the device's `scalars` (`Device.step_scalars`), a norm clip
    of a FlatParams is the fused kernels of `charlm.cudaops`.
    """
    if scalars is not None and kind == "norm" and isinstance(grads, FlatParams):
        from charlm.cudaops import clip_global_norm  # noqa: PLC0415 - only on a GPU

        return clip_global_norm(grads.flat, clip, scalars)
    norm = global_norm(grads)
    if clip <= 0:
        return norm
    buffers = _buffers(grads)
    xp = xp_of(norm)
    if kind == "value":
        for g in buffers:
            xp_of(g).clip(g, -clip, clip, out=g)
    else:
        coef = xp.minimum(clip / (norm + 1e-6), 1.0)
        for g in buffers:
            g *= coef.astype(g.dtype)  # rounded to the gradients' dtype, as a Python float is
    return norm


def _buffers(arrays: Mapping[str, Array]) -> list[Array]:
    """The arrays to update in place: the one flat buffer of a FlatParams, else each tensor."""
    return [arrays.flat] if isinstance(arrays, FlatParams) else list(arrays.values())


class Optimizer:
    """One of OPTIMIZERS; its moments have the parameters' layout (a FlatParams for FlatParams
    parameters, else a dict of arrays)."""

    MOMENTS = {"sgd": (), "adam": ("m", "v"), "adagrad": ("s",), "rmsprop": ("s",)}

    def __init__(
        self,
        kind: str,
        params: Mapping[str, Array],
        beta1: float = 0.9,
        beta2: float = 0.999,
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        fused_adam: Callable[..., None] | None = None,
    ) -> None:
        """`fused_adam`: a device's one-pass Adam update (`Device.adam_update`), else NumPy's."""
        self.kind, self.beta1, self.beta2 = kind, beta1, beta2
        self.fused_adam = fused_adam
        self.eps, self.weight_decay = eps, weight_decay
        self.t = 0  # updates done (Adam's bias correction)
        # `Device.step_scalars`: Adam as one kernel per buffer, with the rate and t on the device
        self.scalars: Any = None
        self.moments: dict[str, Mapping[str, Array]] = {
            n: _zeros_like(params, 2 + i) for i, n in enumerate(self.MOMENTS[kind])
        }
        self._tmp = [xp_of(p).empty_like(p) for p in _buffers(params)] if self.moments else []

    def step(self, params: Mapping[str, Array], grads: Mapping[str, Array], lr: float) -> None:
        """One update of every parameter in place (grads may be overwritten)."""
        self.t += 1
        moments = {n: _buffers(d) for n, d in self.moments.items()}
        if self.scalars is not None and self.kind == "adam":
            self._device_adam(params, grads, lr, moments)
            return
        for i, (p, g) in enumerate(zip(_buffers(params), _buffers(grads), strict=True)):
            xp = xp_of(p)
            if self.weight_decay:
                p -= (lr * self.weight_decay) * p
            if self.kind == "sgd":
                p -= lr * g
                continue
            tmp = self._tmp[i]
            v_scale = 1.0 / math.sqrt(1 - self.beta2**self.t)  # bias corrections
            step_scale = lr / (1 - self.beta1**self.t)
            if self.kind == "adam" and self.fused_adam is not None and p.ndim == 1:
                m, v = moments["m"][i], moments["v"][i]
                self.fused_adam(p, g, m, v, self.beta1, self.beta2, self.eps, v_scale, step_scale)
                continue
            if self.kind == "adam":
                m, v = moments["m"][i], moments["v"][i]
                m *= self.beta1
                m += (1 - self.beta1) * g
                xp.multiply(g, g, out=tmp)
                tmp *= 1 - self.beta2
                v *= self.beta2
                v += tmp
                xp.sqrt(v, out=tmp)
                tmp *= v_scale
                tmp += self.eps
                xp.divide(m, tmp, out=tmp)
                tmp *= step_scale
            else:
                s = moments["s"][i]
                xp.multiply(g, g, out=tmp)
                if self.kind == "rmsprop":
                    s *= self.beta2
                    tmp *= 1 - self.beta2
                s += tmp
                xp.sqrt(s, out=tmp)
                tmp += self.eps
                xp.divide(g, tmp, out=tmp)
                tmp *= lr
            p -= tmp

    def _device_adam(self, params: Mapping[str, Array], grads: Mapping[str, Array], lr: float,
                     moments: dict[str, list[Array]]) -> None:  # fmt: skip
        """Adam through `charlm.cudaops.adam` (weight decay included); t counts on the device."""
        from charlm.cudaops import adam  # noqa: PLC0415 - only on a GPU

        if self.scalars.host_lr:
            self.scalars.set_lr(lr)
        for i, (p, g) in enumerate(zip(_buffers(params), _buffers(grads), strict=True)):
            adam(p, g, moments["m"][i], moments["v"][i], self.scalars, self.beta1, self.beta2,
                 self.eps, self.weight_decay)  # fmt: skip

    def state_arrays(self) -> dict[str, Any]:
        """NumPy copies of the moments, keyed 'm/<param>' etc. (for checkpoints)."""
        return {
            moment_name(n, k): np.array(to_numpy(a), copy=True)
            for n, d in self.moments.items()
            for k, a in d.items()
        }

    def load_state_arrays(self, arrays: Mapping[str, Any], t: int) -> None:
        """Restore moments saved by `state_arrays` (shapes must match) and the update count."""
        for n, d in self.moments.items():
            for k, a in d.items():
                saved = arrays[moment_name(n, k)]
                if saved.shape != a.shape:
                    raise ValueError(f"optimizer state {n}/{k}: shape {saved.shape} != {a.shape}")
                a[...] = xp_of(a).asarray(saved.astype(a.dtype))
        self.t = t
        if self.scalars is not None:
            self.scalars.set_count(t)


def _zeros_like(params: Mapping[str, Array], index: int) -> Mapping[str, Array]:
    if isinstance(params, FlatParams):
        return params.zeros_like(index)
    return {k: xp_of(p).zeros_like(p) for k, p in params.items()}


class Schedule(Protocol):
    """The schedule's settings (charlm.config.TrainConfig)."""

    lr: float
    lr_schedule: str
    warmup_steps: int
    lr_decay: float
    lr_decay_every: int
    min_lr: float


def learning_rate(step: int, schedule: Schedule, total: int | None = None) -> float:
    """Learning rate for update number `step` (0-based).

    Linear warm-up over `warmup_steps` updates, then: constant; step decay (times `lr_decay`
    every `lr_decay_every` updates); or cosine from `lr` to `min_lr` at update `total`.
    """
    base, warmup = schedule.lr, schedule.warmup_steps
    if step < warmup:
        return base * (step + 1) / warmup
    if schedule.lr_schedule == "constant":
        return base
    if schedule.lr_schedule == "step":
        return base * schedule.lr_decay ** ((step - warmup) // schedule.lr_decay_every)
    span = max(1, (total or 0) - warmup)
    progress = min(1.0, (step - warmup) / span)
    min_lr = schedule.min_lr
    return min_lr + 0.5 * (base - min_lr) * (1.0 + math.cos(math.pi * progress))
