"""A text coloured character by character in the terminal: by each character's loss
(`charlm eval --show`) or by one unit's activation (`charlm viz`). Click drops the colours
when the output is not a terminal."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import click

# Per-character loss bins for `eval --show`: bit edges and the colour of each bin.
SHOW_EDGES = (1.0, 2.0, 4.0, 8.0)
SHOW_COLOURS = ("green", "cyan", "yellow", "magenta", "red")
# An activation's bins, as a fraction of its unit's colour range: strong and weak negative,
# near zero (plain), weak and strong positive.
UNIT_EDGES = (-0.6, -0.2, 0.2, 0.6)
UNIT_STYLES = ({"bg": "blue", "fg": "white"}, {"bg": "cyan", "fg": "black"}, None,
               {"bg": "yellow", "fg": "black"}, {"bg": "red", "fg": "white"})  # fmt: skip


def styled_runs(text: str, bins: Any, styles: Sequence[dict[str, str] | None]) -> str:
    """`text` with each stretch of characters in the same bin styled as `styles[bin]` (None:
    plain); a line break is left plain, so a style never runs across lines."""
    out, start = [], 0
    for j in range(1, len(text) + 1):  # one styled run per stretch of equal bin
        if j == len(text) or bins[j] != bins[start] or text[j] == "\n" or text[j - 1] == "\n":
            piece, style = text[start:j], styles[bins[start]]
            out.append(piece if piece == "\n" or style is None else click.style(piece, **style))
            start = j
    return "".join(out)


def show_unit(text: str, values: Any, colour_range: float, title: str) -> None:
    """`text` coloured by one unit's activation `values` (len(text),), then a legend: the
    strongest colours from +-0.6 `colour_range` on."""
    import numpy as np  # noqa: PLC0415

    bins = np.searchsorted(np.asarray(UNIT_EDGES) * colour_range, values, side="right")
    click.echo(styled_runs(text, bins, UNIT_STYLES), nl=not text.endswith("\n"))
    edges = [f"{e * colour_range:+.2f}" for e in UNIT_EDGES]
    middle = (f"{a}..{b}" for a, b in zip(edges, edges[1:], strict=False))
    names = [f"< {edges[0]}", *middle, f"> {edges[-1]}"]
    legend = "  ".join(name if style is None else click.style(name, **style)
                       for name, style in zip(names, UNIT_STYLES, strict=True))  # fmt: skip
    click.echo(f"{title}: {legend}")


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
    bins[np.isnan(bits)] = len(SHOW_COLOURS)  # not predicted: plain
    styles = [{"fg": colour} for colour in SHOW_COLOURS] + [None]
    click.echo(styled_runs(text, bins, styles), nl=not text.endswith("\n"))
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
