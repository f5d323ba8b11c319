"""Data-parallel scaling on this machine: `charlm train` on one process against two under
`mpiexec -n 2` (charlm[mpi]), each in a fresh process, chars/s of all processes together.

Each round runs, one after another: one rank with one BLAS thread, one rank with two BLAS
threads (the other way to use two cores), and two ranks with one BLAS thread each. The figure
is the median chars/s of a run's log windows after the first (see train_speed.py). Prints
each setup's median and the median and range of the per-round ratios of two ranks to each
one-rank setup. The global batch is the same in all (train.batch_size: each of two ranks
takes half), so every setup computes the same updates. These machines are noisy: quote the
ratios, and do not read two ranks on a shared 2-core machine as a forecast for GPUs (see
docs/scaling.md for that).

    python benchmarks/scale.py [--rounds 5] [--only lstm-h256-l2-n64-t100]

Every process runs in a user's environment: without this workplace's OpenBLAS overrides (see
blas_env.py; --keep-blas-env keeps them).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

from blas_env import openblas_kernel, user_environment
from train_speed import CONFIGS, ROOT, charlm_speed

SCALED = ("lstm-h256-l2-n64-t100", "lstm-h512-l2-n64-t100")
# name: (processes, BLAS threads per process)
SETUPS = {"1 rank x 1 thread": (1, 1), "1 rank x 2 threads": (1, 2), "2 ranks x 1 thread": (2, 1)}


def mpiexec() -> str:
    found = Path(sys.executable).parent / "mpiexec"  # the mpich wheel's, beside this Python
    path = str(found) if found.exists() else shutil.which("mpiexec")
    if path is None:
        raise SystemExit("no mpiexec: pip install 'charlm[mpi]'")
    return path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--only", action="append", choices=SCALED)
    parser.add_argument(
        "--keep-blas-env",
        action="store_true",
        help="keep this workplace's OPENBLAS_CORETYPE/OPENBLAS_L2_SIZE (see blas_env.py)",
    )
    args = parser.parse_args()
    base = user_environment(args.keep_blas_env)
    print(f"NumPy's OpenBLAS runs its {openblas_kernel(base)} kernels")
    print(f"{'config':24} " + " ".join(f"{n:>20}" for n in SETUPS) + "   2 ranks / each")
    launch = mpiexec()
    with tempfile.TemporaryDirectory() as tmp:
        for name in SCALED:
            if args.only and name not in args.only:
                continue
            speeds: dict[str, list[float]] = {n: [] for n in SETUPS}
            for _ in range(args.rounds):
                for setup, (ranks, threads) in SETUPS.items():
                    count = str(threads)
                    env = {**base, "OPENBLAS_NUM_THREADS": count, "OMP_NUM_THREADS": count,
                           "NUMBA_NUM_THREADS": count}  # fmt: skip
                    launcher = (launch, "-n", str(ranks)) if ranks > 1 else ()
                    speed = charlm_speed(ROOT, "", CONFIGS[name], Path(tmp) / "run", env, launcher)
                    speeds[setup].append(speed)
            two = speeds["2 ranks x 1 thread"]
            ratios = []
            for setup in list(SETUPS)[:2]:
                per_round = sorted(a / b for a, b in zip(two, speeds[setup], strict=True))
                ratios.append(f"/ {setup}: {statistics.median(per_round):.2f} "
                              f"({per_round[0]:.2f}-{per_round[-1]:.2f})")  # fmt: skip
            medians = " ".join(f"{statistics.median(speeds[n]):20,.0f}" for n in SETUPS)
            print(f"{name:24} {medians}   {'; '.join(ratios)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
