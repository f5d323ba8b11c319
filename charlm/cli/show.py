"""`charlm eval --show`: a text coloured by each character's loss."""

from __future__ import annotations

from typing import Any

import click

# Per-character loss bins for `eval --show`: bit edges and the colour of each bin.
SHOW_EDGES = (1.0, 2.0, 4.0, 8.0)
SHOW_COLOURS = ("green", "cyan", "yellow", "magenta", "red")


def show_losses(text: str, losses: Any, lines: bool) -> None:
    """`text` coloured by per-character loss, a legend, and the most surprising characters."""
    import numpy as np  # noqa: PLC0415

    from charlm.evaluate import LN2, loss_bins, most_surprising  # noqa: PLC0415

    # losses[i] scores ids[i + 1]: in lines mode ids[0] is the start <EOS>, so character j is
    # losses[j]; in stream mode the first character is not predicted and j is losses[j - 1].
    bits = np.full(len(text), np.nan)
    offset = 0 if lines else 1
    scored = np.asarray(losses)[: len(text) - offset] / LN2
    bits[offset : offset + len(scored)] = scored
    bins = loss_bins(np.nan_to_num(bits, nan=0.0), SHOW_EDGES)
    out, start = [], 0
    for j in range(1, len(text) + 1):  # one styled run per stretch of equal colour
        if j == len(text) or bins[j] != bins[start] or text[j] == "\n" or text[j - 1] == "\n":
            piece = text[start:j]
            out.append(piece if piece == "\n" or np.isnan(bits[start])
                       else click.style(piece, fg=SHOW_COLOURS[bins[start]]))  # fmt: skip
            start = j
    click.echo("".join(out), nl=not text.endswith("\n"))
    edges = ["0", *(f"{e:g}" for e in SHOW_EDGES), "inf"]
    legend = "  ".join(
        click.style(f"{edges[i]}-{edges[i + 1]}", fg=colour)
        for i, colour in enumerate(SHOW_COLOURS)
    )
    click.echo(f"bits per character: {legend}")
    top = [j for j in most_surprising(np.nan_to_num(bits, nan=-1.0), 10) if not np.isnan(bits[j])]
    click.echo("most surprising characters:")
    click.echo(f"  {'position':>8}  {'char':6}  {'bits':>6}  after")
    for j in top:
        context = text[max(0, j - 20) : j]
        click.echo(f"  {j:8d}  {text[j]!r:6}  {bits[j]:6.2f}  {context!r}")
