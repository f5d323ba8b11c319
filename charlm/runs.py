"""What the runs on disk hold: one summary per run directory, and a run's checkpoints.

Everything here only reads. A run directory is one that holds `last.json` or `metrics.jsonl`;
a damaged file (a JSON that does not parse, a metrics line cut short) makes that run show as
"damaged" with a note, never an error. Whether a live process is writing a run comes from its
lock (`charlm.runlock.lock_holder`); how a finished run ended, from its last checkpoint's
"status" (see `charlm.rundir`).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from charlm.config import Config, config_from_dict, load_config
from charlm.errors import CharlmError, CheckpointError
from charlm.launch import describe_model
from charlm.rundir import numbered_checkpoints
from charlm.runlock import lock_holder

LN2 = math.log(2.0)
ENDINGS = ("finished", "interrupted", "diverged", "failed")  # what the trainer records


@dataclass
class RunInfo:
    """One run: what it trains, how far it got, how well and how fast, and its status."""

    path: str
    corpus: str  # the corpus file's name ('' when the run does not record it)
    model: str  # 'lstm 2x256' ('' when unknown)
    steps: int
    best_val_loss: float | None
    best_val_bpc: float | None
    chars_per_s: float | None  # median of the logged training speeds
    status: str  # running, finished, interrupted, diverged, failed, killed, unknown, ...
    note: str  # what the status rests on: a PID, a reason, the damage found
    updated: float  # when its last.json or metrics.jsonl last changed (seconds since epoch)


@dataclass
class CheckpointInfo:
    """One checkpoint of a run: its name ('best', 'last', 'step-00001500'), step, the
    validation loss at that step (if one was measured there) and when it was saved."""

    name: str
    step: int | None  # None: its JSON is damaged
    val_loss: float | None
    saved_at: str
    path: str
    problem: str = ""


def is_run_dir(path: Path) -> bool:
    return (path / "last.json").is_file() or (path / "metrics.jsonl").is_file()


def find_runs(root: str | os.PathLike[str]) -> list[Path]:
    """The run directories under `root` (itself included), not looking inside a run or into
    hidden directories. A CharlmError if `root` is not a directory."""
    root = Path(root)
    if not root.exists():
        raise CharlmError(f"no directory {root}")
    if not root.is_dir():
        raise CharlmError(f"{root} is a file, not a directory of runs")
    found = []
    for here, dirs, _files in os.walk(root, onerror=None):
        path = Path(here)
        if is_run_dir(path):
            found.append(path)
            dirs.clear()  # a run's own folders are not runs
        else:
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
    return found


def list_runs(root: str | os.PathLike[str]) -> list[RunInfo]:
    """Every run under `root`, newest first; a CharlmError when there is none."""
    runs = [describe_run(path) for path in find_runs(root)]
    if not runs:
        raise CharlmError(f"no runs under {root} (a run directory holds last.json or "
                          "metrics.jsonl); train one first: charlm train CORPUS")  # fmt: skip
    return sorted(runs, key=lambda r: (-r.updated, r.path))


def _read_json(path: Path) -> tuple[dict[str, Any] | None, str]:
    """(the JSON object in `path`, '') or (None, what is wrong with it)."""
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
    except FileNotFoundError:
        return None, ""
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        return None, f"{path.name} does not read ({type(exc).__name__})"
    if not isinstance(data, dict):
        return None, f"{path.name} does not read (not a JSON object)"
    return data, ""


def read_records(run: Path, live: bool = False) -> tuple[list[dict[str, Any]], str]:
    """The records of `run`'s metrics.jsonl and what is damaged in it ('' if nothing). The
    line a live run is appending may be cut short: it is left out, not reported."""
    try:
        text = (run / "metrics.jsonl").read_bytes().decode("utf-8", errors="replace")
    except OSError:
        return [], ""
    records, problem = [], ""
    lines = text.split("\n")
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            record = None
        if not isinstance(record, dict) or not _number(record.get("step")):
            if live and number == len(lines):  # no line break yet: still being written
                continue
            problem = problem or f"metrics.jsonl line {number} does not read"
            continue
        records.append(record)
    return records, problem


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _run_config(run: Path, meta: dict[str, Any] | None) -> Config | None:
    """The run's configuration: its last checkpoint's, else its config.yaml (a run that has
    not saved yet); None if neither reads."""
    try:
        if meta is not None and isinstance(meta.get("config"), dict):
            return config_from_dict(meta["config"])
        if (run / "config.yaml").is_file():
            return load_config(run / "config.yaml")
    except CharlmError:
        pass
    return None


def describe_run(run: Path) -> RunInfo:
    """The summary of one run directory (see `RunInfo`); never raises for a damaged run."""
    holder = lock_holder(run)
    meta, problem = _read_json(run / "last.json")
    records, metrics_problem = read_records(run, live=holder is not None)
    problem = problem or metrics_problem
    config = _run_config(run, meta)
    step = meta.get("step") if meta is not None else None
    steps = [int(r["step"]) for r in records if "event" not in r]
    total = max([step if isinstance(step, int) else 0, *steps])
    val = [float(r["val_loss"]) for r in records if _number(r.get("val_loss"))]
    best = min(val) if val else None
    if best is None and meta is not None and _number(meta.get("best_val_loss")):
        best = float(meta["best_val_loss"])
    speeds = [float(r["chars_per_s"]) for r in records if _number(r.get("chars_per_s"))]
    corpus = meta.get("corpus") if meta is not None else None
    if not isinstance(corpus, str) or not corpus:
        corpus = config.data.corpus if config is not None else ""
    if holder is not None:
        status, note = "running", f"PID {holder}"
    elif problem:
        status, note = "damaged", problem
    else:
        status, note = _ending(meta, config, total)
    mtimes = []
    for path in (run / "last.json", run / "metrics.jsonl"):
        with contextlib.suppress(OSError):  # not there (yet)
            mtimes.append(path.stat().st_mtime)
    return RunInfo(
        path=str(run),
        corpus=Path(corpus).name,
        model=describe_model(config) if config is not None else "",
        steps=total,
        best_val_loss=best,
        best_val_bpc=None if best is None else best / LN2,
        chars_per_s=statistics.median(speeds) if speeds else None,
        status=status,
        note=note,
        updated=max(mtimes, default=0.0),
    )


def _ending(meta: dict[str, Any] | None, config: Config | None, steps: int) -> tuple[str, str]:
    """(status, note) of a run no process is writing."""
    if meta is None:
        return "no checkpoint", "stopped before its first checkpoint"
    status, note = meta.get("status"), meta.get("status_note")
    note = note if isinstance(note, str) else ""
    if status in ENDINGS:
        return str(status), note
    if status == "running":  # it never got to say how it ended
        return "killed", "its end was never recorded: killed or crashed"
    # Written before runs recorded how they ended: a run at its step limit finished.
    if config is not None and config.train.max_steps and steps >= config.train.max_steps:
        return "finished", "inferred: reached train.max_steps"
    return "unknown", "not recorded (an older run)"


def run_checkpoints(run: str | os.PathLike[str]) -> list[CheckpointInfo]:
    """`run`'s checkpoints: best, last, then the numbered ones by step. A CharlmError if
    `run` is not a run directory."""
    run = Path(run)
    if not run.is_dir() or not is_run_dir(run):
        raise CharlmError(f"{run} is not a run directory (it holds no last.json or metrics.jsonl)")
    records, _ = read_records(run)
    val_at = {int(r["step"]): float(r["val_loss"]) for r in records
              if "event" not in r and _number(r.get("val_loss"))}  # fmt: skip
    names = [n for n in ("best", "last") if (run / f"{n}.json").is_file()]
    names += [p.stem for p in numbered_checkpoints(run).values()]
    found = []
    for name in names:
        path = run / f"{name}.json"
        meta, problem = _read_json(path)
        step = meta.get("step") if meta is not None else None
        if not isinstance(step, int) or isinstance(step, bool):
            found.append(CheckpointInfo(name, None, None, "", str(path), problem or "no step"))
            continue
        loss = val_at.get(step)
        if loss is None and name == "best" and _number(meta.get("best_val_loss")):
            loss = float(meta["best_val_loss"])
        saved = meta.get("saved_at")
        found.append(CheckpointInfo(name, step, loss, saved if isinstance(saved, str) else "",
                                    str(path)))  # fmt: skip
    return found


def checkpoint_at_step(run: str | os.PathLike[str], step: int) -> Path:
    """The JSON of `run`'s checkpoint at `step` (a numbered one, else last or best, which hold
    the same weights when saved at one step); a CheckpointError listing the steps kept."""
    run = Path(run)
    if not run.is_dir():
        raise CheckpointError(f"{run}: not a run directory; --step picks among a run's checkpoints")
    found = [c for c in run_checkpoints(run) if c.step is not None]
    for info in sorted(found, key=lambda c: not c.name.startswith("step-")):
        if info.step == step:
            return Path(info.path)
    kept = ", ".join(str(s) for s in sorted({c.step for c in found if c.step is not None}))
    raise CheckpointError(
        f"{run}: no checkpoint at step {step}; steps kept: {kept or 'none'} (keep more with "
        "--set train.keep_checkpoints=N)"
    )
