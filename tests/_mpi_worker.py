"""What tests/test_mpi.py runs in each process under `mpiexec` (or alone, as the one-process
reference): `charlm train ARGS...`, with test instruments around it.

    python tests/_mpi_worker.py OUT MODE -- train ARGS...

MODE `record`: every rank records the files it opens for writing (or renames, removes) under
the run directory (a Python audit hook) and, after training, its parameters, in
OUT/writes-RANK.json and OUT/params-RANK.npy. MODE `raise`: rank 1 raises at step 3, alone.
MODE `drift`: rank 1 changes a parameter of its own before step 4. MODE `threads`: every rank
records its BLAS thread count after training in OUT/threads-RANK.json.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

from charlm.cli import cli
from charlm.distributed import launched_processes
from charlm.step import TrainStep
from charlm.train import Trainer

WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND


def rank() -> int:
    return int(os.environ.get("PMI_RANK", "0")) if launched_processes() > 1 else 0


def record_writes(run: Path, writes: list[str]) -> None:
    """Note every write-like operation on a path under `run` (the lock file included)."""
    root = str(run.resolve())

    def under(path: Any) -> bool:
        if not isinstance(path, (str, os.PathLike)):
            return False
        full = os.path.abspath(path)
        return full == root or full.startswith(root + os.sep)

    def hook(event: str, args: tuple[Any, ...]) -> None:
        if event == "open" and under(args[0]):
            mode, flags = args[1], args[2]
            writing = set(mode or "") & set("wax+") if mode else flags & WRITE_FLAGS
            if writing:
                writes.append(f"open {args[0]}")
        elif event in ("os.rename", "os.remove", "os.mkdir", "os.link") and under(args[0]):
            writes.append(f"{event} {args[0]}")

    sys.addaudithook(hook)


def main() -> None:
    out, mode, args = Path(sys.argv[1]), sys.argv[2], sys.argv[4:]
    me = rank()
    if mode == "record":
        writes: list[str] = []
        record_writes(Path(args[args.index("--run-dir") + 1]), writes)
        train = Trainer.run

        def run_and_keep(self: Trainer, *a: Any, **k: Any) -> Any:
            result = train(self, *a, **k)
            np.save(out / f"params-{me}.npy", self.params.flat)
            (out / f"writes-{me}.json").write_text(json.dumps(writes))
            return result

        Trainer.run = run_and_keep  # type: ignore[method-assign]
    elif mode == "threads":
        from threadpoolctl import threadpool_info  # noqa: PLC0415

        train = Trainer.run

        def run_and_count(self: Trainer, *a: Any, **k: Any) -> Any:
            result = train(self, *a, **k)
            pools = [pool for pool in threadpool_info() if pool["user_api"] == "blas"]
            counts = [pool["num_threads"] for pool in pools]
            (out / f"threads-{me}.json").write_text(json.dumps(counts))
            return result

        Trainer.run = run_and_count  # type: ignore[method-assign]
    elif mode == "drift" and me == 1:
        update = TrainStep.__call__

        def drifting_step(self: TrainStep, batch: Any, n: int) -> Any:
            if n == 3:
                self.params.flat[0] += 1e-6
            return update(self, batch, n)

        TrainStep.__call__ = drifting_step  # type: ignore[method-assign]
    elif mode == "raise" and me == 1:
        step = TrainStep.__call__

        def failing_step(self: TrainStep, batch: Any, n: int) -> Any:
            if n == 3:
                raise RuntimeError("planted failure at step 3")
            return step(self, batch, n)

        TrainStep.__call__ = failing_step  # type: ignore[method-assign]
    cli.main(args, prog_name="charlm")


if __name__ == "__main__":
    main()
