"""One training step, the one place the maths of training happens:

    batch -> loss and gradients -> gradient sync -> clipping -> learning rate -> update

The parameters, their gradients and the optimizer's moments are flat buffers (`FlatParams`),
the window's buffers a `Workspace`, both allocated once for the run. Nothing is read back to
the host: a step returns `StepStats` holding the loss and gradient norm as device scalars, and
the trainer reads them (and checks they are finite) when it logs or saves. `grad_sync` is
where data-parallel training averages the gradients over processes: one call on one buffer.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from charlm.config import TrainConfig
from charlm.data import Batch
from charlm.model import CharModel, State
from charlm.optim import Optimizer, clip_gradients, learning_rate
from charlm.params import FlatParams
from charlm.workspace import Workspace

Array = Any


@dataclass(frozen=True)
class StepStats:
    """What one update did; `loss` and `grad_norm` are 0-d device arrays until read."""

    step: int  # the update's number, counting from 1
    loss: Array  # mean cross-entropy of the batch, nats/char
    grad_norm: Array  # global gradient norm before clipping
    lr: float
    chars: int  # characters predicted


def no_sync(flat_grads: Array) -> None:
    """The gradient sync of a single process: the gradients are already the whole batch's."""


class TrainStep:
    """Batch -> update, on buffers that live as long as the run. Holds the carried state."""

    def __init__(
        self,
        model: CharModel,
        params: FlatParams,
        optimizer: Optimizer,
        settings: TrainConfig,
        total_steps: int | None,
        dropout: Any = None,
        grad_sync: Callable[[Array], None] = no_sync,
    ) -> None:
        self.model, self.params, self.optimizer = model, params, optimizer
        self.settings, self.total_steps = settings, total_steps
        self.dropout = dropout  # where dropout masks draw uniforms (None: no dropout)
        self.grad_sync = grad_sync
        self.grads = params.zeros_like()
        self.workspace = Workspace(model.device.xp)
        self.state: State = model.initial_state(settings.batch_size, params.flat.dtype)

    @classmethod
    def create(
        cls,
        model: CharModel,
        initial: Mapping[str, Any],
        settings: TrainConfig,
        total_steps: int | None = None,
        dropout: Any = None,
    ) -> TrainStep:
        """A step for `model` starting from the parameters `initial` (NumPy arrays, copied into
        a flat buffer on the model's device in `settings.dtype`), with `settings`' optimizer."""
        xp, dtype, t = model.device.xp, np.dtype(settings.dtype), settings
        params = FlatParams.of(model.param_shapes(), initial, xp, dtype)
        optimizer = Optimizer(t.optimizer, params, t.beta1, t.beta2, t.eps, t.weight_decay,
                              model.device.adam_update)  # fmt: skip
        optimizer.scalars = model.device.step_scalars()  # None on the CPU
        return cls(model, params, optimizer, settings, total_steps, dropout)

    def __call__(self, batch: Batch, step: int) -> StepStats:
        """Update number `step` (0-based) on `batch`; the state carries on to the next call."""
        model, device, t = self.model, self.model.device, self.settings
        if batch.restarts is not None:
            self.state = model.restart_rows(self.state, batch.restarts)
        resets = None if batch.resets is None else device.send(batch.resets)
        loss, self.state = model.loss_and_grads(
            self.params, self.grads, device.send(batch.x), device.send(batch.y), self.state,
            resets, self.dropout, self.workspace,
        )  # fmt: skip
        self.grad_sync(self.grads.flat)
        norm = clip_gradients(self.grads, t.clip, t.clip_kind, self.optimizer.scalars)
        lr = learning_rate(step, t, self.total_steps)
        self.optimizer.step(self.params, self.grads, lr)
        return StepStats(step + 1, loss, norm, lr, batch.x.size)
