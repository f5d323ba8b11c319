"""`charlm plot`: a run's loss curves, as an image or a text chart."""

from __future__ import annotations

from pathlib import Path

import click

from charlm.cli.group import cli


@cli.command()
@click.argument("run", type=click.Path())
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False),
    default=None,
    help="Image file to write; its suffix picks the format (.png, .pdf, .svg, ...; none: "
    ".png added) [default: RUN/loss.png].",
)
def plot(run: str, output: str | None) -> None:
    """Training and validation loss curves of RUN (from its metrics.jsonl).

    Writes an image with matplotlib (pip install 'charlm[plot]'); without it, prints a text
    chart.
    """
    from charlm.plot import INSTALL_HINT, image_target, read_metrics, save_image, text_chart  # noqa: PLC0415

    # A bad -o fails before the metrics are read.
    target, fmt = image_target(output) if output is not None else (None, "png")
    path = Path(run)
    curves = read_metrics(path if path.is_file() else path / "metrics.jsonl")
    if target is None:
        try:
            import matplotlib  # noqa: F401, PLC0415 - optional extra charlm[plot]
        except ImportError:
            click.echo(text_chart(curves))
            click.echo(f"install matplotlib for a PNG: {INSTALL_HINT}")
            return
        target = (path.parent if path.is_file() else path) / "loss.png"
    save_image(curves, target, fmt, title=str(path))
    click.echo(f"saved {target}")
