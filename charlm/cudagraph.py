"""The training step as a CUDA graph: captured once per batch shape, replayed every step.

A step on a GPU is hundreds of small launches (two to four per time step and layer, each way),
and Python issuing them is what bounds it; a CUDA graph replays the whole step -- forward,
backward, clipping, Adam -- as one launch. `GraphedTrainStep` is `TrainStep` with its
`__call__` running that way (`train.cuda_graphs`, on by default on a GPU; off runs the same
kernels one launch at a time, for debugging):

- The first step of a shape runs normally, on a private memory pool and side stream: it
  compiles the kernels, sizes the workspace and fills the pool with every block the step
  allocates. The same step is then captured (not run) with CuPy's stream capture; the capture
  allocates the same blocks again from the pool, so the graph's temporaries never go back to the
  shared pool, where other work would reuse them under it.
- A graph reads its inputs from fixed addresses: each batch's ids (and resets) are copied into
  the graph's buffers first, the carried state lives in buffers updated in place, and the
  learning rate goes into the device scalars (`cudaops.StepScalars`) before each replay. Adam's
  step count and the dropout draw counter advance on the device, inside the graph.
- The graph runs on its own stream, ordered after and before the default stream's work by
  events (no host wait); the loss and norm are copied out after each replay.

Only Adam with the device scalars is graphed (another optimizer takes its rate as a host
number) and only with the single-process gradient sync; anything else runs uncaptured, as does
every step after a capture that failed (`graph_error` says why).
"""

from __future__ import annotations

import gc
from dataclasses import dataclass
from typing import Any

import numpy as np

from charlm.data import Batch
from charlm.optim import clip_gradients, learning_rate
from charlm.step import StepStats, TrainStep, no_sync

Array = Any


@dataclass
class _Captured:
    """One batch shape's graph and the fixed buffers it reads and writes."""

    graph: Any
    pool: Any  # the private memory pool: alive as long as the graph
    x: Array
    y: Array
    resets: Array | None
    loss: Array
    norm: Array


class GraphedTrainStep(TrainStep):
    """`TrainStep` replaying a captured CUDA graph per batch shape (see the module docstring)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.cupy = self.cuda_module()
        self.graph_error: str | None = None  # why capturing failed, if it did
        self.stream = self.cupy.cuda.Stream(non_blocking=True)
        self.graphs: dict[tuple, _Captured] = {}
        self.state_buffers: list[tuple[Array, ...]] | None = None

    def cuda_module(self) -> Any:
        """CuPy (the tests hand in a stand-in that replays by running the step again)."""
        import cupy  # noqa: PLC0415 - only made on a GPU

        return cupy

    @property
    def graphable(self) -> bool:
        optimizer = self.optimizer
        return (
            optimizer.scalars is not None
            and optimizer.kind == "adam"
            and self.grad_sync is no_sync
            and self.graph_error is None
        )

    def __call__(self, batch: Batch, step: int) -> StepStats:
        if not self.graphable:
            return super().__call__(batch, step)
        cupy, t = self.cupy, self.settings
        self._own_state()
        if batch.restarts is not None:  # in place: the graph reads these buffers
            keep = cupy.asarray(~batch.restarts).astype(self.params.flat.dtype)
            for layer in self.state:
                for s in layer:
                    s *= keep
        lr = learning_rate(step, t, self.total_steps)
        scalars = self.optimizer.scalars
        scalars.set_lr(lr)
        key = (batch.x.shape, batch.x.dtype.str, batch.y.dtype.str, batch.resets is None)
        captured = self.graphs.get(key)
        if captured is None:
            graph, loss, norm = self._warm_up_and_capture(batch)
            if graph is not None:
                self.graphs[key] = graph
            return StepStats(step + 1, loss, norm, lr, batch.x.size)
        upload(captured.x, batch.x)
        upload(captured.y, batch.y)
        if captured.resets is not None:
            upload(captured.resets, batch.resets)
        self._replay(captured)
        self.optimizer.t += 1
        return StepStats(step + 1, captured.loss.copy(), captured.norm.copy(), lr, batch.x.size)

    def _own_state(self) -> None:
        """Make `self.state` the buffers the graphs read, copying in a state set from outside
        (a resumed checkpoint, `restart_rows`)."""
        if self.state_buffers is None:
            self.state_buffers = [tuple(s.copy() for s in layer) for layer in self.state]
        elif self.state is not self.state_buffers:
            for buffers, layer in zip(self.state_buffers, self.state, strict=True):
                for buffer, s in zip(buffers, layer, strict=True):
                    if buffer is not s:
                        buffer[...] = s
        self.state = self.state_buffers

    def _compute(self, x: Array, y: Array, resets: Array | None) -> tuple[Array, Array]:
        """The step's device work on fixed buffers, the new state written over the old."""
        t, scalars = self.settings, self.optimizer.scalars
        loss, new_state = self.model.loss_and_grads(
            self.params, self.grads, x, y, self.state, resets, self.dropout, self.workspace
        )
        norm = clip_gradients(self.grads, t.clip, t.clip_kind, scalars)
        scalars.host_lr = False  # the rate is in the scalars already
        try:
            self.optimizer.step(self.params, self.grads, 0.0)
        finally:
            scalars.host_lr = True
        for buffers, layer in zip(self.state, new_state, strict=True):
            for buffer, s in zip(buffers, layer, strict=True):
                buffer[...] = s
        return loss, norm

    def _warm_up_and_capture(self, batch: Batch) -> tuple[_Captured | None, Array, Array]:
        """Run this step for real on a private pool, then capture it (see the docstring).
        Returns the graph (None if the capture failed: `graph_error` says why, and the steps
        run uncaptured from then on) and the step's loss and norm."""
        cupy = self.cupy
        pool = cupy.cuda.MemoryPool()
        default = cupy.cuda.get_current_stream()
        with cupy.cuda.using_allocator(pool.malloc):
            x, y = cupy.array(batch.x), cupy.array(batch.y)
            resets = None if batch.resets is None else cupy.array(batch.resets)
            self.stream.wait_event(default.record())
            with self.stream:
                loss, norm = self._compute(x, y, resets)  # the real step
                loss, norm = loss.copy(), norm.copy()
                self.stream.synchronize()  # every block the step takes is in the pool now
                count = self.optimizer.t
                try:
                    graph, (graph_loss, graph_norm) = self._capture(
                        lambda: self._compute(x, y, resets)
                    )
                except Exception as exc:  # CuPy's CUDA errors have no common base but this
                    self.graph_error = f"{type(exc).__name__}: {exc}"
                    graph = None
                self.optimizer.t = count  # the capture ran nothing
            default.wait_event(self.stream.record())
        if graph is None:
            return None, loss, norm
        return _Captured(graph, pool, x, y, resets, graph_loss, graph_norm), loss, norm

    def _capture(self, work: Any) -> tuple[Any, Any]:
        """(the CUDA graph of `work()` on this step's stream, what `work` returned)."""
        gc.disable()  # no finaliser may touch the device mid-capture
        self.stream.begin_capture()
        try:
            outputs = work()
        finally:
            graph = self.stream.end_capture()
            gc.enable()
        return graph, outputs

    def _replay(self, captured: _Captured) -> None:
        default = self.cupy.cuda.get_current_stream()
        self.stream.wait_event(default.record())
        captured.graph.launch(stream=self.stream)
        default.wait_event(self.stream.record())


def upload(buffer: Array, host: np.ndarray) -> None:
    """Copy `host` into the device buffer `buffer` (a graph's input) in place."""
    if hasattr(buffer, "set"):  # CuPy
        buffer.set(np.ascontiguousarray(host))
    else:
        buffer[...] = host
