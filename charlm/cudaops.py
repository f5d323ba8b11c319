"""The training step's work besides the cells, in a few CUDA kernels over the flat buffers:
global-norm clipping, Adam, and dropout masks drawn on the device.

Nothing here reads a value back to the host, and nothing a step needs comes from the host as a
kernel argument that changes from step to step: the learning rate, Adam's step count, the norm
and the clip scale live in a small device buffer (`StepScalars`), the dropout draw counter in
another (`DeviceDropout`), so a captured CUDA graph (`charlm.cudagraph`) replays a step as it
ran. The kernels (source in `charlm.cells.cuda_source`) compute exactly the NumPy expressions of
`optim.clip_gradients`, `optim.Optimizer.step` (Adam) and the model's dropout mask; the norm is
summed in float64 in one order (the NumPy path sums each tensor in its dtype first).

Each takes `backends`, dtype char -> `Backend` (CuPy's by default; the tests pass the
g++-compiled one), and NumPy or CuPy arrays.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from charlm.cells.cuda_backend import Backend, cupy_backend, pointer

Array = Any
# Partial sums of the norm: enough threads to stream the buffer at full bandwidth, then one
# pass of SECOND threads over them, and one thread over those.
FIRST, SECOND = 65536, 256
LR, COUNT, NORM, COEF, STEP_SCALE, V_SCALE = range(6)  # StepScalars.buffer's entries


class StepScalars:
    """float64 (8,) on the device: the learning rate (written before each step), Adam's update
    count t, the last gradient norm and clip scale, Adam's bias corrections."""

    def __init__(self, xp: Any, backends: Callable[[str], Backend] = cupy_backend) -> None:
        self.buffer = xp.zeros(8, dtype=np.float64)
        self.partials = xp.zeros(FIRST + SECOND, dtype=np.float64)
        self.backends = backends
        self.host_lr = True  # False while a CUDA graph runs the step (it sets the rate itself)

    def set_lr(self, lr: float) -> None:
        self.buffer[LR : LR + 1].fill(lr)

    def set_count(self, t: int) -> None:
        self.buffer[COUNT : COUNT + 1].fill(t)


def clip_global_norm(flat: Array, clip: float, scalars: StepScalars) -> Array:
    """`optim.clip_gradients(kind='norm')` on one flat buffer: the global norm before clipping
    (a fresh 0-d float64 device array) and flat *= min(clip / (norm + 1e-6), 1) unless clip is
    0. Four launches, no host read."""
    b = scalars.backends(flat.dtype.char)
    n = flat.size
    first, part = pointer(scalars.partials), pointer(scalars.partials) + 8 * FIRST
    b.kernel("sum_squares")(FIRST, pointer(flat), n, first, FIRST)
    b.kernel("sum_partials")(SECOND, first, FIRST, part, SECOND)
    b.kernel("clip_coefficient")(1, part, SECOND, float(clip), pointer(scalars.buffer))
    if clip > 0:
        b.kernel("scale")(n, pointer(flat), n, pointer(scalars.buffer))
    return scalars.buffer[NORM].copy()


def adam(p: Array, g: Array, m: Array, v: Array, scalars: StepScalars, beta1: float,
         beta2: float, eps: float, weight_decay: float) -> None:  # fmt: skip
    """One Adam update of flat buffers in place (t += 1 on the device, the rate read there)."""
    b = scalars.backends(p.dtype.char)
    s = pointer(scalars.buffer)
    b.kernel("adam_schedule")(1, s, float(beta1), float(beta2))
    b.kernel("adam")(p.size, pointer(p), pointer(g), pointer(m), pointer(v), p.size, s,
                     float(beta1), float(beta2), float(eps), float(weight_decay))  # fmt: skip


class DeviceDropout:
    """Dropout masks drawn on the device: element i of draw k is a hash of (seed, k, i), so
    a seed gives the same masks on any device count or order, and resuming needs only the draw
    counter, which lives on the device (advanced by a kernel, so a graph replays it) and is
    saved with each checkpoint as `draws`."""

    def __init__(self, xp: Any, seed: int, draws: int = 0,
                 backends: Callable[[str], Backend] = cupy_backend) -> None:  # fmt: skip
        self.xp, self.seed, self.backends = xp, seed, backends
        self.counter = xp.zeros(1, dtype=np.uint64)
        self.draws = draws

    @property
    def draws(self) -> int:
        """Draws made so far (reads the device: for checkpoints, not every step)."""
        from charlm.device import to_numpy  # noqa: PLC0415

        return int(to_numpy(self.counter)[0])

    @draws.setter
    def draws(self, value: int) -> None:
        self.counter[...] = value

    def _draw(self, kernel: str, out: Array, *extra: Any) -> Array:
        b = self.backends(out.dtype.char)
        b.kernel(kernel)(out.size, pointer(out), out.size, self.seed, pointer(self.counter), *extra)
        b.kernel("count_draw")(1, pointer(self.counter))
        return out

    def random(self, shape: tuple[int, ...]) -> Array:
        """Uniforms in [0, 1) (float64), the next draw."""
        return self._draw("uniforms", self.xp.empty(shape, dtype=np.float64))

    def mask(self, shape: tuple[int, ...], p: float, dtype: Any) -> Array:
        """The inverted-dropout mask (u >= p) / (1 - p) in `dtype`, the next draw."""
        return self._draw("dropout_mask", self.xp.empty(shape, dtype=dtype), float(p))


def reference_uniforms(seed: int, draw: int, n: int) -> np.ndarray:
    """What the `uniforms` kernel computes, in NumPy (for the tests and for reading the hash)."""
    mask = np.uint64(0xFFFFFFFFFFFFFFFF)

    def mix64(z: np.ndarray) -> np.ndarray:
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return (z ^ (z >> np.uint64(31))) & mask

    golden, other = np.uint64(0x9E3779B97F4A7C15), np.uint64(0xD1B54A32D192ED03)
    with np.errstate(over="ignore"):
        key = mix64(mix64(np.uint64(seed) + golden) + np.uint64(draw) * golden)
        bits = mix64(key + np.arange(n, dtype=np.uint64) * other)
    return (bits >> np.uint64(11)).astype(np.float64) / 2.0**53
