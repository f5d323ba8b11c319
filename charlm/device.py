"""The device a run computes on, chosen once: the CPU (NumPy) or an NVIDIA GPU (CuPy).

A `Device` owns everything that differs between the two -- the array module, moving arrays
there and back, the small per-step GEMMs of the recurrences, each cell's step kernels, the
generator dropout masks are drawn from, and waiting for queued work -- so the cells, model,
optimizer and training step are written once, against `device.xp`, and never test which
device they are on. (Chainer's `Device` idea.)

The model and everything built on it take their device from the model; the few functions
handed bare arrays (the optimizer, the shared maths in `charlm.ops`) ask `xp_of(array)`.
"""

from __future__ import annotations

from functools import cache
from types import ModuleType
from typing import Any

import numpy as np

from charlm.errors import CharlmError

Array = Any  # a numpy.ndarray or cupy.ndarray
DEVICES = ("cpu", "cuda")


class Device:
    """The CPU: NumPy arrays, NumPy's BLAS and the NumPy reference kernels."""

    name = "cpu"
    xp: ModuleType = np
    compiled = False  # whether the kernels are a compiled set (`CompiledDevice`)
    # Sampling's filter and draw in one kernel, for temperature and banned ids alone (see
    # `charlm.cells.compiled.draw_ids`); None: `sample.filter_probs` and `sample.draw` do it.
    draw_ids: Any = None
    # Adam's update of a flat buffer in one pass (`charlm.cells.compiled.adam_update`); None:
    # the optimizer's NumPy passes.
    adam_update: Any = None

    def send(self, array: np.ndarray) -> Array:
        """`array` on this device (the array itself on the CPU)."""
        return self.xp.asarray(array)

    def gemm(self, a: Array, b: Array, out: Array) -> Array:
        """out = a @ b for 2-D arrays (any of them may be a strided view)."""
        return np.matmul(a, b, out=out)

    def kernels(self, cell: str) -> Any:
        """The step kernels of `cell` ('rnn', 'gru', 'lstm') on this device."""
        from charlm.cells import reference_kernels  # noqa: PLC0415 - cells import this module

        return reference_kernels(cell)

    def take_columns(self, table: Array, ids: Array, out: Array) -> Array:
        """out[:, j] = table[:, ids[j]]: a column gather (the maths of table @ one_hot(ids)).

        mode="clip" skips NumPy's bounds check (ids come from the vocabulary, so they are in
        range) and is markedly faster.
        """
        return np.take(table, ids, axis=1, out=out, mode="clip")

    def gather_columns(self, table: Array, ids: Array, out: Array) -> Array:
        """out[t] = table[:, ids[t]] for ids (T, N) and out (T, G, N): one gather per step."""
        for t in range(ids.shape[0]):
            self.take_columns(table, ids[t], out[t])
        return out

    def scatter_columns(self, dcols: Array, ids: Array, out: Array, ws: Any = None) -> Array:
        """out[:, v] = sum of dcols[:, j] over the j with ids[j] == v: the gradient of the table
        in `take_columns`, dcols (G, M) @ one_hot(ids)^T (M, V) into out (G, V). A GEMM with
        the one-hot matrix (from the workspace `ws`) is much faster than NumPy's add.at."""
        from charlm.ops import one_hot_rows  # noqa: PLC0415 - ops imports this module

        onehot = one_hot_rows(ids, out.shape[1], dcols.dtype, ws)
        return self.xp.matmul(dcols, onehot, out=out)

    def uniforms(self, rng: np.random.Generator, seed: int) -> Any:
        """Where dropout masks draw their uniforms in [0, 1): `random(shape)`. On the CPU the
        run's generator `rng` itself, whose state every checkpoint saves."""
        return rng

    def step_scalars(self) -> Any:
        """Where the training step keeps its per-step scalars on the device, for the fused
        clipping and Adam kernels (`charlm.cudaops.StepScalars`); None: the NumPy passes."""
        return None

    def set_tf32(self, enabled: bool) -> None:
        """TF32 matrix products (`train.tf32`): only a GPU has them."""

    def train_step_type(self, cuda_graphs: bool) -> Any:
        """The training step class (`charlm.step.TrainStep` but on a GPU with graphs on)."""
        from charlm.step import TrainStep  # noqa: PLC0415 - step imports the model, cells

        return TrainStep

    def sync(self) -> None:
        """Wait for queued work (nothing is ever queued on the CPU)."""

    def __repr__(self) -> str:
        return f"<device {self.name}{' compiled' if self.compiled else ''}>"


class CompiledDevice(Device):
    """The CPU with the numba kernel set of `charlm.cells.compiled` (charlm[fast]): fused step
    kernels, and one compiled loop for each column gather and scatter."""

    compiled = True

    def kernels(self, cell: str) -> Any:
        from charlm.cells.compiled import COMPILED  # noqa: PLC0415 - optional numba

        return COMPILED[cell]

    @property
    def draw_ids(self) -> Any:
        from charlm.cells.compiled import draw_ids  # noqa: PLC0415

        return draw_ids

    @property
    def adam_update(self) -> Any:
        from charlm.cells.compiled import adam_update  # noqa: PLC0415

        return adam_update

    def gather_columns(self, table: Array, ids: Array, out: Array) -> Array:
        from charlm.cells.compiled import gather_columns  # noqa: PLC0415

        return gather_columns(table, ids, out)

    def scatter_columns(self, dcols: Array, ids: Array, out: Array, ws: Any = None) -> Array:
        from charlm.cells.compiled import scatter_columns  # noqa: PLC0415

        return scatter_columns(dcols, ids, out)


class CudaDevice(Device):
    """An NVIDIA GPU through CuPy: cuBLAS GEMMs on strided views, fused CUDA kernels."""

    name = "cuda"

    def __init__(self, cupy: ModuleType) -> None:
        super().__init__()
        self.xp = cupy

    def gemm(self, a: Array, b: Array, out: Array) -> Array:
        from charlm.cublas import gemm  # noqa: PLC0415

        return gemm(a, b, out)

    def kernels(self, cell: str) -> Any:
        from charlm.cells.cuda import cuda_kernels  # noqa: PLC0415

        return cuda_kernels(cell)

    def take_columns(self, table: Array, ids: Array, out: Array) -> Array:
        return self.xp.take(table, ids, axis=1, out=out)  # CuPy's take never checks bounds

    def gather_columns(self, table: Array, ids: Array, out: Array) -> Array:
        # One gather and one transposing copy beat T small launches.
        out[...] = self.xp.take(table, ids, axis=1).transpose(1, 0, 2)
        return out

    def uniforms(self, rng: np.random.Generator, seed: int) -> Any:
        """Masks drawn on the GPU by a counter-based hash, the counter on the device too, so
        they need no host copy and a CUDA graph replays them (`cudaops.DeviceDropout`)."""
        from charlm.cudaops import DeviceDropout  # noqa: PLC0415

        return DeviceDropout(self.xp, seed)

    def step_scalars(self) -> Any:
        from charlm.cudaops import StepScalars  # noqa: PLC0415

        return StepScalars(self.xp)

    def set_tf32(self, enabled: bool) -> None:
        from charlm.cublas import set_tf32  # noqa: PLC0415

        set_tf32(enabled)

    def train_step_type(self, cuda_graphs: bool) -> Any:
        if not cuda_graphs:
            return super().train_step_type(cuda_graphs)
        from charlm.cudagraph import GraphedTrainStep  # noqa: PLC0415

        return GraphedTrainStep

    def sync(self) -> None:
        self.xp.cuda.get_current_stream().synchronize()


CPU = Device()


@cache
def get_device(name: str, kernels: str = "numpy", dtype: str = "float32") -> Device:
    """The device called `name` ('cpu' or 'cuda'); a one-line error if CUDA is unusable.

    On the CPU `kernels` picks the step kernels: 'numpy' (the reference), 'compiled' (numba;
    an error without it) or 'auto': compiled for float32 when numba is installed, else numpy
    (in float64 NumPy's vectorised tanh beats numba's scalar libm call).
    """
    if name == "cpu":
        if kernels == "numpy" or (kernels == "auto" and (dtype != "float32" or not has_numba())):
            return CPU
        if not has_numba():
            raise CharlmError(
                "train.kernels=compiled needs numba: pip install 'charlm[fast]' (or set "
                "train.kernels=auto)"
            )
        return CompiledDevice()
    if name != "cuda":
        raise CharlmError(f"unknown device {name!r}; choose one of: {', '.join(DEVICES)}")
    try:
        import cupy  # noqa: PLC0415 - optional extra charlm[gpu]
    except ImportError:
        raise CharlmError(
            "device 'cuda' needs CuPy: pip install 'charlm[gpu]' (cupy-cuda13x)"
        ) from None
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:  # CuPy raises its own CUDA runtime errors here
        raise CharlmError(f"device 'cuda': no usable NVIDIA GPU ({exc})") from None
    if count < 1:
        raise CharlmError("device 'cuda': no NVIDIA GPU found")
    return CudaDevice(cupy)


@cache
def has_numba() -> bool:
    """Whether numba (the compiled CPU kernels' compiler) can be imported."""
    try:
        import numba  # noqa: F401, PLC0415 - optional extra charlm[fast]
    except ImportError:
        return False
    return True


def device_of(array: Array) -> Device:
    """The device that holds `array` (for functions handed arrays rather than a device)."""
    if isinstance(array, np.ndarray) or np.isscalar(array):
        return CPU
    return get_device("cuda")


def xp_of(array: Array) -> ModuleType:
    """The array module (numpy or cupy) that owns `array`."""
    return device_of(array).xp


def to_numpy(array: Array) -> np.ndarray:
    """A NumPy copy (or the array itself) of a NumPy or CuPy array, for saving and printing."""
    if isinstance(array, np.ndarray):
        return array
    get = getattr(array, "get", None)
    return np.asarray(get() if get is not None else array)
