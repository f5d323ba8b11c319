"""`charlm plot`: loss curves of one run or several, as an image or a text chart."""

from __future__ import annotations

import os
from pathlib import Path

import click

from charlm.cli.group import cli


@cli.command()
@click.argument("runs", metavar="RUN...", nargs=-1, required=True, type=click.Path())
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False),
    default=None,
    help="Image file to write; its suffix picks the format (.png, .pdf, .svg, ...; none: "
    ".png added) [default: RUN/loss.png; several runs: loss.png in the folder that holds "
    "them all].",
)
def plot(runs: tuple[str, ...], output: str | None) -> None:
    """Training and validation loss curves of RUN (from its metrics.jsonl); several runs are
    overlaid, with a legend, to compare them.

    Writes an image with matplotlib (pip install 'charlm[plot]'); without it, prints a text
    chart (several runs: each run's letter, lowercase for train, capital for validation).

    \b
    Example:
      charlm plot runs/tinyshakespeare
      charlm plot runs/lstm runs/gru -o compare.svg
    """
    from charlm.plot import (  # noqa: PLC0415
        INSTALL_HINT,
        image_target,
        overlay_chart,
        read_metrics,
        save_image,
        text_chart,
    )

    # A bad -o fails before the metrics are read.
    target, fmt = image_target(output) if output is not None else (None, "png")
    paths = [Path(run) for run in runs]
    folders = [path.parent if path.is_file() else path for path in paths]
    series = [(run, read_metrics(p if p.is_file() else p / "metrics.jsonl"))
              for run, p in zip(runs, paths, strict=True)]  # fmt: skip
    curves = series[0][1] if len(series) == 1 else series
    if target is None:
        try:
            import matplotlib  # noqa: F401, PLC0415 - optional extra charlm[plot]
        except ImportError:
            click.echo(text_chart(series[0][1]) if len(series) == 1 else overlay_chart(series))
            click.echo(f"install matplotlib for a PNG: {INSTALL_HINT}")
            return
        if len(folders) == 1:
            target = folders[0] / "loss.png"
        else:  # beside the runs: runs/a runs/b -> runs/loss.png
            target = Path(os.path.commonpath([f.resolve() for f in folders])) / "loss.png"
    save_image(curves, target, fmt, title=str(paths[0]) if len(paths) == 1 else "")
    click.echo(f"saved {target}")
