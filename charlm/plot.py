"""Loss curves of a run from its `metrics.jsonl`: a PNG (matplotlib) or a text chart; several
runs overlaid on one chart, each with its own colour or letter and a legend.

Each line of metrics.jsonl is a JSON object with a "step"; log lines carry "train_loss",
evaluation lines also "val_loss" (and "val_bpc"). Points whose loss is not finite (a diverged
run) are left out of the curves.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from charlm.errors import CharlmError
from charlm.fileio import check_output_path, read_bytes

Points = list[tuple[float, float]]  # (step, loss)


@dataclass(frozen=True)
class Curves:
    """Training and validation loss against the step, in file order."""

    train: Points
    val: Points


def read_metrics(path: str | os.PathLike[str]) -> Curves:
    """The loss curves in `path`; a CharlmError if it is missing, empty or not JSON lines."""
    path = Path(path)
    try:
        text = read_bytes(path, "metrics file").decode("utf-8")
    except UnicodeDecodeError:
        raise CharlmError(f"{path}: not a text file (invalid UTF-8)") from None
    if not text.strip():
        raise CharlmError(f"{path}: empty metrics file (nothing logged yet?)")
    train: Points = []
    val: Points = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            raise CharlmError(f"{path}: line {number} is not valid JSON") from None
        step = record.get("step") if isinstance(record, dict) else None
        if not _is_number(step):
            raise CharlmError(f"{path}: line {number} has no numeric 'step'")
        for key, points in (("train_loss", train), ("val_loss", val)):
            value = record.get(key)
            if value is None:
                continue
            if not _is_number(value):
                raise CharlmError(f"{path}: line {number}: '{key}' is not a number")
            if math.isfinite(value):
                points.append((float(step), float(value)))
    if not train and not val:
        raise CharlmError(f"{path}: no loss values to plot (is the run empty?)")
    return Curves(train, val)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def text_chart(curves: Curves, width: int = 60, height: int = 15) -> str:
    """A width x height character chart: train as '.', val as 'o' (drawn on top), with the loss
    range on the left, the step range below and a legend."""
    legend = f"loss (nats/char): . train ({len(curves.train)} points)"
    legend += f"  o val ({len(curves.val)} points)"
    return _draw([(curves.train, "."), (curves.val, "o")], [legend], width, height)


MARKS = "abcdefghijklmnopqrstuvwxyz"


def overlay_chart(runs: Sequence[tuple[str, Curves]], width: int = 60, height: int = 15) -> str:
    """Several runs' curves on one text chart: run i's training loss in its lowercase letter
    (a, b, ...), its validation loss in the capital (drawn on top), a legend line per run."""
    if len(runs) > len(MARKS):
        raise CharlmError(f"a text chart tells {len(MARKS)} runs apart, not {len(runs)}; "
                          "install matplotlib for an image, or plot fewer runs")  # fmt: skip
    trains = [(c.train, MARKS[i]) for i, (_, c) in enumerate(runs)]
    vals = [(c.val, MARKS[i].upper()) for i, (_, c) in enumerate(runs)]
    legend = ["loss (nats/char); lowercase: train, capital: val"]
    legend += [f"  {MARKS[i]} {MARKS[i].upper()}  {label} ({len(c.train)} train / "
               f"{len(c.val)} val points)" for i, (label, c) in enumerate(runs)]  # fmt: skip
    return _draw(trains + vals, legend, width, height)


def _draw(layers: list[tuple[Points, str]], legend: list[str], width: int, height: int) -> str:
    """The chart of `layers` (points, mark), later layers drawn over earlier ones, with the
    loss range on the left, the step range below and the `legend` lines last."""
    width, height = max(width, 10), max(height, 3)
    points = [p for series, _ in layers for p in series]
    steps = [s for s, _ in points]
    losses = [v for _, v in points]
    s_lo, s_hi = min(steps), max(steps)
    v_lo, v_hi = min(losses), max(losses)
    grid = [[" "] * width for _ in range(height)]
    for series, mark in layers:
        for step, value in series:
            col = round((step - s_lo) / (s_hi - s_lo) * (width - 1)) if s_hi > s_lo else 0
            row = round((v_hi - value) / (v_hi - v_lo) * (height - 1)) if v_hi > v_lo else 0
            grid[row][col] = mark
    top, bottom = f"{v_hi:.4g}", f"{v_lo:.4g}"
    pad = max(len(top), len(bottom))
    lines = []
    for r, row in enumerate(grid):
        label = top if r == 0 else bottom if r == height - 1 else ""
        lines.append(f"{label:>{pad}} |{''.join(row)}".rstrip())
    lines.append(" " * pad + " +" + "-" * width)
    first, last = f"step {s_lo:g}", f"{s_hi:g}"
    lines.append(" " * (pad + 2) + first + last.rjust(width - len(first)))
    lines.extend(legend)
    return "\n".join(lines)


INSTALL_HINT = "pip install 'charlm[plot]'"


def image_formats() -> list[str]:
    """The file formats `save_image` can write, e.g. ['eps', ..., 'png', ...] (sorted).

    ImportError without matplotlib. What the Agg canvas saves, less pgf (it needs LaTeX).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: PLC0415

    return sorted(set(FigureCanvasAgg.get_supported_filetypes()) - {"pgf"})


def image_target(output: str | os.PathLike[str]) -> tuple[Path, str]:
    """(file to write, format) for a requested output path, checked before any work.

    No suffix: OUTPUT.png. A suffix matplotlib can write (any case): that format. Anything
    else, or no matplotlib, is a CharlmError naming what would work.
    """
    path = Path(output)
    try:
        formats = image_formats()
    except ImportError:
        raise CharlmError(
            f"cannot write {path}: plot files need matplotlib ({INSTALL_HINT}); "
            "without -o, plot prints a text chart"
        ) from None
    suffix = path.suffix.lower().lstrip(".")
    if suffix and suffix not in formats:
        raise CharlmError(
            f"cannot write {path}: unknown image format {path.suffix!r}; "
            f"use one of {', '.join('.' + f for f in formats)} (or no suffix for .png)"
        )
    check_output_path(path, f"cannot write {path}")
    if not suffix:  # `-o curves` (or `curves.`): a PNG, and the name says so
        return path.with_name(path.name.rstrip(".") + ".png"), "png"
    return path, suffix


def save_image(
    curves: Curves | Sequence[tuple[str, Curves]],
    path: str | os.PathLike[str],
    fmt: str = "png",
    title: str = "",
) -> None:
    """Write the curves to `path` in format `fmt` (one of `image_formats()`) with matplotlib
    (ImportError if it is not installed). Several runs, as (label, curves) pairs, share the
    axes: one colour per run, its training loss a line, its validation loss dots on a line."""
    import matplotlib  # noqa: PLC0415 - optional extra charlm[plot]

    matplotlib.use("Agg")  # files only: never needs a display
    import matplotlib.pyplot as plt  # noqa: PLC0415

    fig, ax = plt.subplots(figsize=(8, 4.5))
    try:
        if isinstance(curves, Curves):
            if curves.train:
                ax.plot(*zip(*curves.train, strict=True), label="train", linewidth=1)
            if curves.val:
                ax.plot(*zip(*curves.val, strict=True), "o-", label="validation", markersize=3)
        for i, (label, run) in enumerate([] if isinstance(curves, Curves) else curves):
            color = f"C{i % 10}"
            if run.train:
                ax.plot(*zip(*run.train, strict=True), color=color, linewidth=1,
                        label=f"{label} train")  # fmt: skip
            if run.val:
                ax.plot(*zip(*run.val, strict=True), "o--", color=color, markersize=3,
                        label=f"{label} validation")  # fmt: skip
        ax.set_xlabel("step")
        ax.set_ylabel("loss (nats/char)")
        if title:
            ax.set_title(title)
        # Opaque grid and legend: PostScript cannot draw transparency and would warn about it.
        ax.grid(color="0.85")
        ax.legend(framealpha=1.0)
        fig.tight_layout()
        try:
            fig.savefig(path, format=fmt, dpi=120)
        except OSError as exc:
            raise CharlmError(f"cannot write plot to {path}: {exc.strerror or exc}") from None
    finally:
        plt.close(fig)
