"""Quality against wall time: validation loss of configs/shakespeare-lstm.yaml on tinyshakespeare.

Trains the shipped config (90/10 split) and prints the validation loss at each evaluation
with the wall time spent so far (training and evaluation both count), then the best loss
reached within 3 and within 15 minutes against the targets (<= 1.65 and <= 1.45 nats/char);
exits 1 when either is missed.

    python benchmarks/quality.py [--config configs/shakespeare-lstm.yaml] [--set k=v ...]
    python benchmarks/quality.py --config configs/shakespeare-gpu.yaml --target 180:1.45

It runs in a user's environment: when this workplace's OpenBLAS overrides are set (see
blas_env.py), it starts itself again without them (--keep-blas-env keeps them).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from typing import Any

from blas_env import WORKPLACE_VARS, user_environment

if "--keep-blas-env" not in sys.argv and any(v in os.environ for v in WORKPLACE_VARS):
    # Before NumPy loads OpenBLAS, which reads them once: start again without them.
    os.execve(sys.executable, [sys.executable, *sys.argv], user_environment())

from charlm.config import load_config  # noqa: E402 - after the environment is settled
from charlm.train import Trainer  # noqa: E402

TARGETS = ((180.0, 1.65), (900.0, 1.45))  # (seconds, val loss in nats/char)


class Collect:
    """A trainer reporter that prints each evaluation and keeps the curve."""

    def __init__(self) -> None:
        self.curve: list[tuple[float, int, float]] = []

    def start(self, step: int, total: int | None) -> None:
        print(f"{'wall s':>8} {'step':>6} {'train':>7} {'val':>7} {'val bpc':>8}", flush=True)

    def update(self, record: dict[str, Any]) -> None:
        if "val_loss" in record:
            self.curve.append((record["elapsed_s"], record["step"], record["val_loss"]))
            print(f"{record['elapsed_s']:8.1f} {record['step']:6d} "
                  f"{record.get('train_loss', float('nan')):7.4f} {record['val_loss']:7.4f} "
                  f"{record['val_bpc']:8.4f}", flush=True)  # fmt: skip

    def message(self, text: str) -> None:
        print(text, flush=True)

    def close(self) -> None:
        pass


def parse_targets(texts: list[str]) -> list[tuple[float, float]]:
    """'180:1.45' -> [(180.0, 1.45)]; a usage error for anything else."""
    try:
        return [(float(t.split(":")[0]), float(t.split(":")[1])) for t in texts]
    except (ValueError, IndexError):
        raise SystemExit(f"error: --target takes SECONDS:LOSS, got {texts}") from None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/shakespeare-lstm.yaml")
    parser.add_argument("--corpus", default="data/tinyshakespeare.txt")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--run-dir", help="keep the run here (default: a temporary directory)")
    parser.add_argument(
        "--target",
        dest="targets",
        action="append",
        help="SECONDS:LOSS, best val loss within that wall time (repeatable; default "
        + " and ".join(f"{s:.0f}:{v}" for s, v in TARGETS)
        + ")",
    )
    parser.add_argument(
        "--keep-blas-env",
        action="store_true",
        help="keep this workplace's OPENBLAS_CORETYPE/OPENBLAS_L2_SIZE (see blas_env.py)",
    )
    args = parser.parse_args()
    cfg = load_config(args.config, args.overrides)
    reporter = Collect()
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer.create(args.corpus, cfg, args.run_dir or tmp)
        result = trainer.run(reporter)
    print(f"stopped: {result.reason} at step {result.step}")
    failed = 0
    for seconds, target in parse_targets(args.targets) if args.targets else TARGETS:
        losses = [loss for wall, _, loss in reporter.curve if wall <= seconds]
        best = min(losses) if losses else float("nan")
        ok = best <= target  # a NaN (no evaluation in time) fails too
        failed += not ok
        verdict = "PASS" if ok else "FAIL"
        minutes = f"{seconds / 60:.0f} min"
        print(f"best val loss within {minutes}: {best:.4f} (target <= {target}) {verdict}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
