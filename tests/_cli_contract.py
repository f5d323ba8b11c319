"""Shared checks for the reliability tests: the CLI's error contract and run-directory hygiene.

The contract: a command either succeeds (exit 0) or ends in exactly one non-empty stderr line
`Error: ...` with exit status 1 (2 for usage errors) -- never a traceback, never a
half-written file (the atomic writers' `.NAME.XXXX.tmp` files must not survive).
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path
from typing import Any

import numpy as np

from charlm.checkpoint import load_checkpoint

REPO = Path(__file__).resolve().parent.parent
DATA = REPO / "data"
CONFIGS = REPO / "configs"
DINOS = str(DATA / "dinosaurs.txt")
FIXTURE = REPO / "tests" / "fixtures" / "run-v1"  # a run written by an older charlm
# A one-layer LSTM of 8 units saving every 2 steps and validating every 4, on the NumPy kernels.
SMALL = ["model.hidden_size=8", "model.num_layers=1", "train.batch_size=2", "train.seq_len=4",
         "train.eval_every=4", "train.checkpoint_every=2", "train.log_every=2",
         "train.kernels=numpy"]  # fmt: skip

# A model and schedule small enough that `train` takes well under a second in-process.
TINY = (
    "--set",
    "model.hidden_size=8",
    "--set",
    "train.max_steps=2",
    "--set",
    "train.batch_size=2",
    "--set",
    "train.seq_len=4",
    "--set",
    "train.eval_every=1",
    "--quiet",
)


def stderr_lines(text: str) -> list[str]:
    """The non-empty lines of a captured stderr."""
    return [line for line in text.splitlines() if line.strip()]


def assert_one_line_error(stderr: str, exit_code: int, output: str = "") -> str:
    """Exit status 1 or 2 and exactly one non-empty stderr line `Error: ...`; returns it."""
    assert exit_code in (1, 2), f"exit status {exit_code}, stderr: {stderr!r}"
    assert "Traceback" not in stderr + output, stderr + output
    lines = stderr_lines(stderr)
    if exit_code == 2:  # Click's usage errors print the usage line first, then one Error: line
        lines = [line for line in lines if not line.startswith(("Usage:", "Try "))]
    assert len(lines) == 1, f"expected one stderr line, got {lines!r}"
    assert lines[0].startswith("Error: "), lines[0]
    return lines[0]


def assert_cli_outcome(result: Any) -> bool:
    """A CliRunner result either succeeded or is a clean one-line error; True on success.

    Anything else -- an exception other than SystemExit escaping the command, a traceback in
    the output, a multi-line error -- fails the test.
    """
    exc = result.exception
    if exc is not None and not isinstance(exc, SystemExit):
        import traceback  # noqa: PLC0415

        detail = "".join(traceback.format_exception(*result.exc_info))
        raise AssertionError(f"uncaught {type(exc).__name__} (a traceback for the user):\n{detail}")
    assert "Traceback" not in result.output
    if result.exit_code == 0:
        return True
    assert_one_line_error(result.stderr, result.exit_code, result.output)
    return False


def temp_files(root: str | os.PathLike[str]) -> list[Path]:
    """Leftover temp files under `root`: the atomic writers' `.*.tmp` (and any `*.tmp`)."""
    return sorted(p for p in Path(root).rglob("*") if p.is_file() and p.name.endswith(".tmp"))


def charlm_cmd(*args: str | os.PathLike[str]) -> list[str]:
    """`python -m charlm ARGS` with this interpreter."""
    return [sys.executable, "-m", "charlm", *map(str, args)]


def subprocess_env() -> dict[str, str]:
    """The environment for charlm subprocesses: unbuffered, 1 BLAS thread (2-core CI)."""
    env = dict(os.environ)
    env.update(
        PYTHONUNBUFFERED="1",
        OMP_NUM_THREADS="1",
        OPENBLAS_NUM_THREADS="1",
        MKL_NUM_THREADS="1",
        PYTHONPATH=str(REPO) + os.pathsep + env.get("PYTHONPATH", ""),
    )
    return env


def vm_hwm_bytes(status_text: str) -> int:
    """VmHWM (peak resident set size) from the text of /proc/<pid>/status, in bytes."""
    match = re.search(r"^VmHWM:\s+(\d+)\s+kB", status_text, re.MULTILINE)
    assert match, "no VmHWM in /proc/self/status"
    return int(match.group(1)) * 1024


COMPARED = ("step", "epoch", "lr", "train_loss", "grad_norm", "val_loss")


def run_metrics(run: Path) -> list[dict[str, Any]]:
    """The deterministic fields of every training record in metrics.jsonl (timings and the
    event records a resume adds left out)."""
    lines = (run / "metrics.jsonl").read_text("utf-8").splitlines()
    records = [r for r in map(json.loads, lines) if "event" not in r]
    return [{k: r[k] for k in COMPARED if k in r} for r in records]


def assert_same_run(a: Path, b: Path) -> None:
    """Bit-identical parameters, optimizer moments, carried state and logged losses."""
    ca, cb = load_checkpoint(a / "last.json"), load_checkpoint(b / "last.json")
    assert ca.step == cb.step
    for group in ("params", "optimizer", "hidden"):
        ga, gb = getattr(ca, group), getattr(cb, group)
        assert ga.keys() == gb.keys()
        for key in ga:
            assert np.array_equal(ga[key], gb[key]), f"{group}[{key}] differs"
    assert ca.meta["rng"] == cb.meta["rng"] and ca.meta["data_position"] == cb.meta["data_position"]
    assert run_metrics(a) == run_metrics(b)


class QuietReporter:
    """A trainer reporter that shows nothing (tests that drive `Trainer.run` directly)."""

    def start(self, step: int, total: int | None) -> None: ...
    def update(self, record: dict[str, Any]) -> None: ...
    def message(self, text: str) -> None: ...
    def close(self) -> None: ...


def train_small(run: Path, *extra: str, config: Path | None = None, resume: bool = False,
                stop: Any = None) -> Any:  # fmt: skip
    """Train a SMALL model (with the `extra` settings, over `config`) on the dinosaur names in
    `run`, in-process and quietly; with `resume`, continue `run` with `extra` as --set."""
    from charlm.config import load_config  # noqa: PLC0415
    from charlm.train import Trainer  # noqa: PLC0415

    cfg = None if resume else load_config(config, [*SMALL, *extra])
    trainer = Trainer.create(DINOS, cfg, run, resume=resume, overrides=extra if resume else ())
    return trainer.run(QuietReporter(), stop)
