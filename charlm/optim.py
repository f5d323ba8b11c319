"""Optimizers, gradient clipping and learning-rate schedules, in place on the parameter dict.

Update rules follow the notes (plain SGD) and PyTorch's formulas for the adaptive ones, so a
run can be checked step for step against `torch.optim`:

    sgd      p <- p - lr g
    adam     m <- b1 m + (1-b1) g ;  v <- b2 v + (1-b2) g^2
             p <- p - (lr / (1-b1^t)) m / (sqrt(v) / sqrt(1-b2^t) + eps)
    adagrad  s <- s + g^2 ;                 p <- p - lr g / (sqrt(s) + eps)
    rmsprop  s <- b2 s + (1-b2) g^2 ;       p <- p - lr g / (sqrt(s) + eps)

Weight decay, when set, is decoupled (AdamW style): p <- p - lr wd p.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from charlm.backend import to_device, to_numpy, xp_of

Array = Any
OPTIMIZERS = ("sgd", "adam", "adagrad", "rmsprop")
SCHEDULES = ("constant", "step", "cosine")


def global_norm(grads: dict[str, Array]) -> float:
    """sqrt of the sum of squares of every gradient entry."""
    squares = []
    for g in grads.values():
        flat = g.reshape(-1)
        squares.append(xp_of(g).dot(flat, flat))
    return math.sqrt(sum(float(s) for s in squares))  # read once all are queued (GPU)


def clip_gradients(grads: dict[str, Array], clip: float, kind: str) -> float:
    """Clip in place; returns the global norm *before* clipping (for the log).

    kind 'value': each entry to [-clip, clip] (the notes' np.clip). kind 'norm': scale all
    gradients by clip / (norm + 1e-6) when that is below 1 (as torch's clip_grad_norm_).
    clip 0 means no clipping.
    """
    norm = global_norm(grads)
    if clip <= 0:
        return norm
    if kind == "value":
        for g in grads.values():
            xp_of(g).clip(g, -clip, clip, out=g)
    else:
        coef = clip / (norm + 1e-6)
        if coef < 1.0:
            for g in grads.values():
                g *= coef
    return norm


class Optimizer:
    """One of OPTIMIZERS; its moments are arrays keyed like the parameters."""

    def __init__(
        self,
        kind: str,
        params: dict[str, Array],
        beta1: float = 0.9,
        beta2: float = 0.999,
        eps: float = 1e-8,
        weight_decay: float = 0.0,
    ) -> None:
        if kind not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {kind!r}; choose one of {OPTIMIZERS}")
        self.kind, self.beta1, self.beta2 = kind, beta1, beta2
        self.eps, self.weight_decay = eps, weight_decay
        self.t = 0  # updates done (Adam's bias correction)
        names = {"sgd": (), "adam": ("m", "v"), "adagrad": ("s",), "rmsprop": ("s",)}[kind]
        self.moments: dict[str, dict[str, Array]] = {
            n: {k: xp_of(p).zeros_like(p) for k, p in params.items()} for n in names
        }
        self._tmp = {k: xp_of(p).empty_like(p) for k, p in params.items()} if names else {}

    def step(self, params: dict[str, Array], grads: dict[str, Array], lr: float) -> None:
        """One update of every parameter in place (grads may be overwritten)."""
        self.t += 1
        for k, p in params.items():
            g = grads[k]
            xp = xp_of(p)
            if self.weight_decay:
                p -= (lr * self.weight_decay) * p
            if self.kind == "sgd":
                p -= lr * g
                continue
            tmp = self._tmp[k]
            if self.kind == "adam":
                m, v = self.moments["m"][k], self.moments["v"][k]
                m *= self.beta1
                m += (1 - self.beta1) * g
                xp.multiply(g, g, out=tmp)
                tmp *= 1 - self.beta2
                v *= self.beta2
                v += tmp
                xp.sqrt(v, out=tmp)
                tmp *= 1.0 / math.sqrt(1 - self.beta2**self.t)
                tmp += self.eps
                xp.divide(m, tmp, out=tmp)
                tmp *= lr / (1 - self.beta1**self.t)
            else:
                s = self.moments["s"][k]
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

    def state_arrays(self) -> dict[str, Any]:
        """NumPy copies of the moments, keyed 'm/<param>' etc. (for checkpoints)."""
        return {
            f"{n}/{k}": np.array(to_numpy(a), copy=True)
            for n, d in self.moments.items()
            for k, a in d.items()
        }

    def load_state_arrays(self, arrays: dict[str, Any], t: int) -> None:
        """Restore moments saved by `state_arrays` (shapes must match) and the update count."""
        for n, d in self.moments.items():
            for k, a in d.items():
                saved = arrays[f"{n}/{k}"]
                if saved.shape != a.shape:
                    raise ValueError(f"optimizer state {n}/{k}: shape {saved.shape} != {a.shape}")
                d[k] = to_device(saved.astype(a.dtype), xp_of(a))
        self.t = t


def learning_rate(
    step: int,
    base: float,
    schedule: str,
    warmup: int = 0,
    decay: float = 0.5,
    decay_every: int = 1000,
    total: int = 0,
    min_lr: float = 0.0,
) -> float:
    """Learning rate for update number `step` (0-based).

    Linear warm-up over `warmup` updates, then: constant; step decay (times `decay` every
    `decay_every` updates); or cosine from `base` to `min_lr` at update `total`.
    """
    if step < warmup:
        return base * (step + 1) / warmup
    if schedule == "constant":
        return base
    if schedule == "step":
        return base * decay ** ((step - warmup) // decay_every)
    span = max(1, total - warmup)
    progress = min(1.0, (step - warmup) / span)
    return min_lr + 0.5 * (base - min_lr) * (1.0 + math.cos(math.pi * progress))
