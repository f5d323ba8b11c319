"""`charlm runs`: the runs under a directory, or the checkpoints of one run."""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import click

from charlm.cli.group import cli


@cli.command()
@click.argument("directory", metavar="[DIR]", required=False, default="runs",
                type=click.Path())  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="Print the same as one JSON list.")
def runs(directory: str, as_json: bool) -> None:
    """List the runs under DIR (default: runs/, where `charlm train` writes), newest first.

    One line per run: corpus, model, steps, best validation loss and bits/char, training
    speed (median chars/s logged) and status -- running (a live process holds the run),
    finished, interrupted, diverged, failed, killed (stopped without recording why), unknown
    (an older run), no checkpoint or damaged (a file does not read). DIR that is itself a run
    lists its checkpoints instead: best, last and those kept with train.keep_checkpoints, each
    with its step and validation loss.

    \b
    Example:
      charlm runs
      charlm runs runs/tinyshakespeare --json
    """
    from charlm.runs import find_runs, is_run_dir, list_runs  # noqa: PLC0415 - keep --help fast

    path = Path(directory)
    if path.is_dir() and is_run_dir(path):
        _show_checkpoints(path, as_json)
        return
    find_runs(path)  # a missing DIR or a file: its one-line error before anything else
    found = list_runs(path)
    if as_json:
        click.echo(json.dumps([dataclasses.asdict(r) for r in found], indent=1))
        return
    rows = [("RUN", "CORPUS", "MODEL", "STEPS", "BEST VAL", "BPC", "CHARS/S", "UPDATED",
             "STATUS")]  # fmt: skip
    for r in found:
        rows.append((
            _relative(r.path, path), r.corpus or "?", r.model or "?", f"{r.steps:,}",
            _num(r.best_val_loss), _num(r.best_val_bpc),
            "-" if r.chars_per_s is None else f"{r.chars_per_s:,.0f}",
            time.strftime("%Y-%m-%d %H:%M", time.localtime(r.updated)) if r.updated else "-",
            f"{r.status} ({r.note})" if r.note else r.status,
        ))  # fmt: skip
    _table(rows, right=(3, 4, 5, 6))


def _show_checkpoints(run: Path, as_json: bool) -> None:
    from charlm.runs import describe_run, run_checkpoints  # noqa: PLC0415

    found = run_checkpoints(run)
    if as_json:
        click.echo(json.dumps([dataclasses.asdict(c) for c in found], indent=1))
        return
    info = describe_run(run)
    status = f"{info.status} ({info.note})" if info.note else info.status
    click.echo(f"{run}: {info.corpus or '?'}, {info.model or '?'}, {info.steps:,} steps, {status}")
    if not found:
        click.echo("no checkpoints")
        return
    rows = [("NAME", "STEP", "VAL LOSS", "SAVED")]
    for c in found:
        step = "?" if c.step is None else f"{c.step:,}"
        rows.append((c.name, step, _num(c.val_loss), c.problem or c.saved_at or "-"))
    _table(rows, right=(1, 2))


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def _relative(path: str, root: Path) -> str:
    """A run's path as found under `root` (`root` itself as '.')."""
    try:
        return str(Path(path).relative_to(root))
    except ValueError:
        return path


def _table(rows: list[tuple[str, ...]], right: tuple[int, ...]) -> None:
    """Print `rows` in aligned columns (those in `right` aligned right, numbers)."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        cells = [cell.rjust(w) if i in right else cell.ljust(w)
                 for i, (cell, w) in enumerate(zip(row, widths, strict=True))]  # fmt: skip
        click.echo("  ".join(cells).rstrip())
