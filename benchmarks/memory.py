"""Training memory stays flat: peak RSS at step 100 and at step 1000 of one run.

A child process trains the tiny config on Tiny Shakespeare (evaluations and checkpoints on,
as a real run has them) and reads its own peak resident set size, VmHWM in /proc/self/status,
when the trainer reports steps 100 and 1000. The parent prints both figures and their ratio;
a leak (metrics, checkpoints, carried state or autograd buffers kept per step) shows up as a
ratio well above 1. Target: the peak at the last step is within 10% + 4 MiB of the peak at
step 100 (the slack absorbs allocator noise); exits 1 when it is not.

    python benchmarks/memory.py [--steps 1000] [--config configs/tiny.yaml] [--set KEY=VALUE ...]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
MARKS = (100, 1000)
MAX_GROWTH_FRACTION = 0.10  # of the step-100 peak
MAX_GROWTH_KIB = 4 * 1024  # allocator and page-cache noise on a small model


def vm_kib(field: str = "VmHWM") -> int:
    """A memory field of /proc/self/status in KiB (VmHWM: peak RSS, VmRSS: current)."""
    with open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status (Linux only)")


class MemoryReporter:
    """A trainer Reporter that notes peak and current RSS when a marked step is logged."""

    def __init__(self, marks: tuple[int, ...]) -> None:
        self.marks = set(marks)
        self.seen: dict[int, dict[str, int]] = {}

    def start(self, step: int, total: int | None) -> None:
        self.seen[0] = {"peak_kib": vm_kib(), "rss_kib": vm_kib("VmRSS")}

    def update(self, record: dict[str, Any]) -> None:
        if record["step"] in self.marks:
            self.seen[record["step"]] = {"peak_kib": vm_kib(), "rss_kib": vm_kib("VmRSS")}

    def message(self, text: str) -> None: ...

    def close(self) -> None: ...


def child(args: argparse.Namespace) -> None:
    from charlm.config import load_config  # noqa: PLC0415
    from charlm.train import Trainer  # noqa: PLC0415

    overrides = [
        f"train.max_steps={args.steps}",
        "train.log_every=10",
        "train.eval_every=250",
        "train.checkpoint_every=100",
        *args.set,
    ]
    cfg = load_config(args.config, overrides)
    with tempfile.TemporaryDirectory(prefix="charlm-memory-") as run:
        trainer = Trainer.create(args.corpus, cfg, run)
        reporter = MemoryReporter((100, args.steps))
        trainer.run(reporter)
    print(json.dumps({str(k): v for k, v in reporter.seen.items()}))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=MARKS[1])
    parser.add_argument("--config", default=str(ROOT / "configs" / "tiny.yaml"))
    parser.add_argument("--corpus", default=str(ROOT / "data" / "tinyshakespeare.txt"))
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return 0
    if args.steps <= MARKS[0]:
        parser.error(f"--steps must be above {MARKS[0]}")
    argv = [sys.executable, __file__, "--child", "--steps", str(args.steps),
            "--config", args.config, "--corpus", args.corpus]  # fmt: skip
    for item in args.set:
        argv += ["--set", item]
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, check=False)
    if proc.returncode != 0:
        sys.exit(f"training child failed ({proc.returncode}):\n{proc.stderr}")
    seen = {int(k): v for k, v in json.loads(proc.stdout.strip().splitlines()[-1]).items()}
    first, last = seen[MARKS[0]], seen[args.steps]
    print(f"config {Path(args.config).name}, corpus {Path(args.corpus).name}, {args.steps} steps")
    print(f"{'':14} {'peak RSS (VmHWM)':>18} {'current RSS':>14}")
    for step in (0, MARKS[0], args.steps):
        row = seen[step]
        label = "start" if step == 0 else f"step {step}"
        print(f"{label:14} {row['peak_kib'] / 1024:15.1f} MiB {row['rss_kib'] / 1024:11.1f} MiB")
    ratio = last["peak_kib"] / first["peak_kib"]
    print(f"peak RSS ratio step {args.steps} / step {MARKS[0]}: {ratio:.3f}")
    growth = last["peak_kib"] - first["peak_kib"]
    allowed = int(first["peak_kib"] * MAX_GROWTH_FRACTION) + MAX_GROWTH_KIB
    ok = growth <= allowed
    print(f"peak growth: {growth:+,d} KiB over steps {MARKS[0]}..{args.steps} "
          f"(target <= {allowed:,d} KiB: {MAX_GROWTH_FRACTION:.0%} + {MAX_GROWTH_KIB // 1024} MiB) "
          f"{'PASS' if ok else 'FAIL'}")  # fmt: skip
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
