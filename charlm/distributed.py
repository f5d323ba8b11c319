"""Data-parallel training over MPI: `mpiexec -n K charlm train ...`.

Every process (rank) holds the whole model and trains on its share of the batch: the
`train.batch_size` streams (the global batch) are cut into K equal blocks of rows, rank r
taking block r. Each rank computes the mean loss gradient of its rows; one Allreduce on the
flat gradient buffer averages them (`World.grad_sync`), which is the gradient of the global
batch. Every rank then clips and updates identically, so the parameters stay identical. The
ranks split the validation streams the same way and add up the loss sums and counts.

Only rank 0 (`World.master`, nanoGPT's `master_process`) writes the run directory: the others
plan with a `FollowerRunDir`, whose writes go nowhere. Decisions that depend on a clock or a
signal (time budget, Ctrl-C) are agreed on every step (`World.agree`), so all ranks take the
same collective calls in the same order.

mpi4py is optional (`pip install 'charlm[mpi]'`): a process not started by an MPI launcher is
a `World` of one, and nothing here imports MPI. No pickle: only NumPy buffers travel.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from charlm.data import Batch
from charlm.errors import CharlmError
from charlm.rundir import RunDir
from charlm.step import no_sync

Array = Any
# Environment variables MPI launchers set in every process they start: Hydra (MPICH, Intel
# MPI), Open MPI, PMIx, Slurm's srun with PMI.
LAUNCHER_SIZE_VARS = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "PMIX_SIZE", "MPI_LOCALNRANKS")
# A thread count the user gave for BLAS: then each rank keeps it (see `share_cores`).
THREAD_VARS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
MESSAGE_BYTES = 1024  # an error message shared with the other ranks is cut to this
NCCL_UNIQUE_ID_BYTES = 128  # nccl.h's ncclUniqueId


class World:
    """The processes that train one run together; this plain one is a single process, whose
    collective operations are the identity. `MPIWorld` is several."""

    size = 1
    rank = 0
    local_rank = 0  # the rank among the processes on this machine: which GPU it uses

    @property
    def master(self) -> bool:
        """Whether this process writes the run directory, metrics and checkpoints."""
        return self.rank == 0

    def allreduce(self, values: np.ndarray, op: str = "sum") -> np.ndarray:
        """`values` (float64) summed ('sum') or maximised ('max') over the ranks."""
        return values

    def gather_columns(self, array: np.ndarray) -> np.ndarray:
        """The ranks' (..., n) arrays side by side, (..., K*n), in rank order (on every rank)."""
        return array

    def share_error(self, message: str) -> str:
        """Collective: '' if every rank passed '', else the first failing rank's message,
        naming it ('process 1 of 2: ...')."""
        return message

    def check_identical(self, arrays: dict[str, np.ndarray]) -> None:
        """Collective: a SharedError unless every rank holds the same `arrays`, bit for bit
        (every rank applies the same averaged update; a rank that drifted must not go on)."""
        if self.size == 1:
            return
        digest = hashlib.sha256()
        for name in sorted(arrays):
            digest.update(np.ascontiguousarray(arrays[name]).tobytes())
        mine = float(int.from_bytes(digest.digest()[:6], "little"))  # exact in a float64
        high, minus_low = self.allreduce(np.array([mine, -mine]), "max")
        if high != -minus_low:
            raise SharedError(
                f"the {self.size} processes' parameters differ; the last checkpoint is kept "
                "(is every process running the same charlm and configuration?)"
            )

    def abort(self, code: int) -> None:
        """End every process of the job at once (a rank that fails alone cannot wait for the
        others, which wait for it in the next collective call)."""
        raise SystemExit(code)

    def grad_sync(self, device: Any) -> Callable[[Array], None]:
        """The step's gradient sync: averages the flat gradient buffer over the ranks."""
        return no_sync

    def pick_gpu(self, device: Any) -> None:
        """One rank per GPU: on `device` 'cuda' the local rank picks this machine's GPU
        (before anything is allocated on it)."""

    # ----------------------------------------------------------------- derived, for every world
    def rows(self, n: int) -> slice:
        """This rank's block of `n` rows (blocks of n // K; the last K - n % K ranks get one
        row fewer when K does not divide n: only evaluation cuts such n)."""
        base, extra = divmod(n, self.size)
        start = self.rank * base + min(self.rank, extra)
        return slice(start, start + base + (self.rank < extra))

    def local_batch_size(self, batch_size: int) -> int:
        """This rank's share of the global train.batch_size (it must divide evenly)."""
        if batch_size % self.size:
            raise CharlmError(
                f"train.batch_size {batch_size} is the global batch and must split evenly "
                f"over the {self.size} processes; make it a multiple of {self.size}"
            )
        return batch_size // self.size

    def shard(self, batch: Batch) -> Batch:
        """This rank's rows of a global training batch."""
        if self.size == 1:
            return batch
        rows = self.rows(batch.x.shape[0])
        return Batch(batch.x[rows], batch.y[rows], _rows(batch.resets, rows),
                     _rows(batch.restarts, rows), _rows(batch.scored, rows))  # fmt: skip

    def agree(self, elapsed: float, signal_number: int) -> tuple[float, int]:
        """(the largest elapsed time, the largest signal number) over the ranks: a time budget
        or a Ctrl-C stops every rank at the same step."""
        if self.size == 1:
            return elapsed, signal_number
        out = self.allreduce(np.array([elapsed, signal_number], dtype=np.float64), "max")
        return float(out[0]), int(out[1])

    def average(self, values: np.ndarray) -> np.ndarray:
        """The mean over the ranks of `values` (each rank's loss over its equal share)."""
        if self.size == 1:
            return values
        return self.allreduce(np.asarray(values, dtype=np.float64)) / self.size

    @contextlib.contextmanager
    def together(self) -> Iterator[None]:
        """Run a block on every rank; if it fails on any, it fails on all: the failing rank
        raises its own error, the others a `SharedError` naming it (no rank is left waiting)."""
        if self.size == 1:
            yield
            return
        try:
            yield
        except BaseException as exc:
            self.share_error(str(exc) or type(exc).__name__)
            raise SharedError(str(exc) or type(exc).__name__) from exc
        failed = self.share_error("")
        if failed:
            raise SharedError(failed)

    def resharding_note(self, saved_size: int, batch_size: int) -> str:
        """A note when a run saved by `saved_size` processes resumes on another number."""
        if saved_size == self.size:
            return ""
        return (
            f"resuming on {self.size} process{'es' if self.size > 1 else ''} (the checkpoint "
            f"was saved by {saved_size}): the data positions are re-sharded, the "
            f"{batch_size} batch streams now {batch_size // self.size} per process"
        )


def _rows(array: np.ndarray | None, rows: slice) -> np.ndarray | None:
    return None if array is None else array[rows]


class SharedError(CharlmError):
    """An error every rank raises together (see `World.together`): each exits normally."""


def share_cores(ranks_here: int) -> int | None:
    """Give each of the `ranks_here` processes on this machine its share of the cores for BLAS;
    the threads each now has, or None if left alone. Each BLAS otherwise starts a thread per
    core, and the ranks' threads fight: two ranks on two cores trained 7x slower than with a
    thread each. A thread count the user set (`THREAD_VARS`) is kept."""
    if ranks_here < 2 or any(os.environ.get(name) for name in THREAD_VARS):
        return None
    from threadpoolctl import threadpool_limits  # noqa: PLC0415 - charlm[mpi]

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    threads = max(1, (cores or 1) // ranks_here)
    threadpool_limits(threads, user_api="blas")
    return threads


class MPIWorld(World):
    """K processes started by an MPI launcher, on mpi4py's COMM_WORLD."""

    def __init__(self, MPI: Any) -> None:
        self.MPI, self.comm = MPI, MPI.COMM_WORLD
        self.size, self.rank = self.comm.Get_size(), self.comm.Get_rank()
        node = self.comm.Split_type(MPI.COMM_TYPE_SHARED, key=self.rank)
        self.local_rank = node.Get_rank()
        share_cores(node.Get_size())
        node.Free()

    def allreduce(self, values: np.ndarray, op: str = "sum") -> np.ndarray:
        out = np.empty_like(values)
        self.comm.Allreduce(values, out, op=self.MPI.SUM if op == "sum" else self.MPI.MAX)
        return out

    def gather_columns(self, array: np.ndarray) -> np.ndarray:
        # Allgather fills rank blocks along the first axis: gather the transpose.
        parts = np.empty((self.size, *array.T.shape), dtype=array.dtype)
        self.comm.Allgather(np.ascontiguousarray(array.T), parts)
        return np.concatenate(list(parts), axis=0).T.copy()

    def share_error(self, message: str) -> str:
        raw = message.encode("utf-8")[:MESSAGE_BYTES]
        mine = np.zeros(MESSAGE_BYTES + 1, dtype=np.uint8)
        mine[0], mine[1 : 1 + len(raw)] = bool(message), np.frombuffer(raw, np.uint8)
        every = np.empty((self.size, MESSAGE_BYTES + 1), dtype=np.uint8)
        self.comm.Allgather(mine, every)
        for rank, row in enumerate(every):
            if row[0]:
                text = row[1:].tobytes().rstrip(b"\0").decode("utf-8", "replace")
                return f"process {rank} of {self.size}: {text}"
        return ""

    def abort(self, code: int) -> None:
        self.comm.Abort(code)

    def grad_sync(self, device: Any) -> Callable[[Array], None]:
        if device.name == "cuda":
            return gpu_grad_sync(self, device.xp)
        return self._host_sync

    def _host_sync(self, flat_grads: np.ndarray) -> None:
        self.comm.Allreduce(self.MPI.IN_PLACE, flat_grads, op=self.MPI.SUM)
        flat_grads *= 1.0 / self.size

    def pick_gpu(self, device: Any) -> None:
        if device.name == "cuda":
            cupy = device.xp
            cupy.cuda.Device(self.local_rank % cupy.cuda.runtime.getDeviceCount()).use()


def gpu_grad_sync(world: MPIWorld, cupy: Any) -> Callable[[Array], None]:
    """Gradient averaging on GPU buffers: NCCL (through CuPy) when CuPy has it, else through
    host memory and MPI (one device->host and one host->device copy per step)."""
    try:
        from cupy.cuda import nccl  # noqa: PLC0415 - optional
    except ImportError:
        nccl = None
    if nccl is None or not getattr(nccl, "available", True):

        def host_staged(flat_grads: Array) -> None:
            host = cupy.asnumpy(flat_grads)
            world._host_sync(host)
            flat_grads.set(host)

        return host_staged
    # NCCL's unique id travels from rank 0 as bytes (no pickle).
    uid = np.zeros(NCCL_UNIQUE_ID_BYTES, dtype=np.int8)  # C chars: -128..127
    if world.master:
        uid[:] = nccl.get_unique_id()
    world.comm.Bcast(uid, root=0)
    comm = nccl.NcclCommunicator(world.size, tuple(int(b) for b in uid), world.rank)
    kinds = {np.dtype(np.float32): nccl.NCCL_FLOAT32, np.dtype(np.float64): nccl.NCCL_FLOAT64}

    def nccl_sync(flat_grads: Array) -> None:
        stream = cupy.cuda.get_current_stream().ptr
        ptr = flat_grads.data.ptr
        comm.allReduce(ptr, ptr, flat_grads.size, kinds[flat_grads.dtype], nccl.NCCL_SUM, stream)
        flat_grads *= 1.0 / world.size

    return nccl_sync


def launched_processes() -> int:
    """How many processes an MPI launcher started with this one (1: not launched by one)."""
    for name in LAUNCHER_SIZE_VARS:
        value = os.environ.get(name, "")
        if value.isdigit():
            return int(value)
    return 1


def current_world() -> World:
    """This process' world: an `MPIWorld` when an MPI launcher started more than one process,
    else a `World` of one (mpi4py is then never imported)."""
    launched = launched_processes()
    if launched <= 1:
        return World()
    try:
        from mpi4py import MPI  # noqa: PLC0415 - optional extra charlm[mpi]
    except ImportError:
        raise CharlmError(
            f"started by an MPI launcher with {launched} processes, but mpi4py is not "
            "installed: pip install 'charlm[mpi]'"
        ) from None
    world = MPIWorld(MPI)
    return world if world.size > 1 else World()


class FollowerRunDir(RunDir):
    """The run directory as ranks other than 0 see it: read (to resume), never written."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        super().__init__(path)
        self.lock = _NoLock()  # type: ignore[assignment]

    def open(self) -> None:
        pass

    def close(self) -> None:
        pass

    def start(self, config: Any, vocab: Any, overwrite: bool = False) -> str:
        return ""

    def resume(self, step: int, config: Any, changes: dict[str, tuple[Any, Any]]) -> None:
        pass

    def log(self, record: dict[str, Any]) -> None:
        pass

    def save(self, name: str, checkpoint: Any, stop: Any = None, keep: int = 0) -> Any:
        return self.checkpoint_path(name)

    def record_end(self, fields: dict[str, Any], stop: Any = None) -> None:
        pass


class _NoLock:
    def acquire(self) -> None:
        pass

    def release(self) -> None:
        pass


class ShardedUniforms:
    """Dropout uniforms for this rank's columns of the global batch: every rank draws the
    global batch's uniforms from the shared generator and keeps its own columns, so masks
    (and the run) are those of one process with the whole batch."""

    def __init__(self, source: Any, world: World) -> None:
        self.source, self.world = source, world

    @property
    def draws(self) -> int:  # CudaUniforms counts its draws (checkpointed)
        return self.source.draws

    @draws.setter
    def draws(self, value: int) -> None:
        self.source.draws = value

    def random(self, shape: tuple[int, ...]) -> Array:
        *lead, n = shape
        whole = self.source.random((*lead, n * self.world.size))
        return whole[..., self.world.rows(n * self.world.size)]
