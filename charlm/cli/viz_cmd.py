"""`charlm viz`: inside a trained model -- units coloured over a text, the predictions, the
units that track features, gate saturation -- as an HTML page or in the terminal."""

from __future__ import annotations

from pathlib import Path

import click

from charlm.cli.group import cli
from charlm.cli.options import checkpoint_options, open_at_step
from charlm.errors import CharlmError

DEFAULT_LIMIT = 20_000


@cli.command("viz")
@click.argument("text_file", required=False, type=click.Path())
@checkpoint_options
@click.option("--text", "inline_text", default=None, help="Read this text instead of TEXT_FILE.")
@click.option("--html", "html_path", type=click.Path(dir_okay=False), default=None,
              help="Write the interactive page (one self-contained file, works offline) here "
                   "instead of colouring the text in the terminal.")  # fmt: skip
@click.option("--layer", type=click.IntRange(min=0), default=None,
              help="Layer of the unit shown (0 is the first). Default: the unit that tracks a "
                   "feature best.")  # fmt: skip
@click.option(
    "--unit",
    type=click.IntRange(min=0),
    default=None,
    help="Unit shown, 0 to hidden size - 1 (--layer defaults to 0 with it).",
)
@click.option(
    "--state",
    type=click.Choice(["h", "c"]),
    default=None,
    help="h: the hidden state a<t>; c: an LSTM's cell state (default h with --unit).",
)
@click.option("--limit", type=click.IntRange(min=1), default=DEFAULT_LIMIT, show_default=True,
              help="Read only the first N characters (in lines mode: the whole lines among "
                   "them).")  # fmt: skip
def viz(text_file: str | None, run_dir: str | None, checkpoint_path: str | None, runs_dir: str,
        step: int | None, inline_text: str | None, html_path: str | None, layer: int | None,
        unit: int | None, state: str | None, limit: int) -> None:  # fmt: skip
    """See inside a trained model as it reads TEXT_FILE (or --text): the text coloured by one
    unit's activation, and the units that best track simple features of the text (inside
    quotes, bracket depth, position in the line, just after a newline, inside a word).

    With --html, one self-contained page: pick any unit of any layer (an LSTM's cell state
    too), hover a character for the model's top-5 guesses at the next one and the surprisal
    of the one that came, and see how often each gate saturates (below 0.1, above 0.9), as in
    Karpathy, Johnson and Fei-Fei, "Visualizing and Understanding Recurrent Networks" (2015).
    Without it, the text is coloured in the terminal (plain text when not on a terminal).

    \b
    Example:
      charlm viz data/tinyshakespeare.txt --run runs/tinyshakespeare --limit 5000 --html viz.html
      charlm viz --text 'He said "yes" (twice).' --layer 1 --unit 7
    """
    from charlm.cli.show import show_unit  # noqa: PLC0415 - keep `charlm --help` fast
    from charlm.data import first_chars, read_text  # noqa: PLC0415
    from charlm.fileio import check_output_path, write_atomic  # noqa: PLC0415
    from charlm.viz.activations import collect  # noqa: PLC0415
    from charlm.viz.features import Unit, feature_search  # noqa: PLC0415
    from charlm.viz.page import colour_range, kept_units, page_data, render_page  # noqa: PLC0415

    if (text_file is None) == (inline_text is None):
        raise click.UsageError("give a TEXT_FILE or --text, one of them")
    if html_path is not None:  # refuse before any work is spent
        check_output_path(html_path, f"cannot write the page to {html_path}")
    json_path, ckpt = open_at_step(run_dir, checkpoint_path, runs_dir, step)
    spec = ckpt.config.model
    if layer is not None and layer >= spec.num_layers:
        raise CharlmError(f"--layer {layer}: the model's layers are 0 to {spec.num_layers - 1}")
    if unit is not None and unit >= spec.hidden_size:
        raise CharlmError(f"--unit {unit}: the model's units are 0 to {spec.hidden_size - 1}")
    if state == "c" and spec.cell != "lstm":
        raise CharlmError(f"--state c: only an LSTM has a cell state (this is a {spec.cell})")
    whole = inline_text if inline_text is not None else read_text(text_file)
    text = first_chars(whole, ckpt.vocab.mode, limit)
    cut = len(text) < len(first_chars(whole, ckpt.vocab.mode, None))
    note = f"the text is cut at {len(text):,} characters (--limit {limit:,})" if cut else ""
    acts = collect(ckpt.model(), ckpt.params, ckpt.vocab, text)
    matches = feature_search(acts)
    if unit is not None:
        chosen, why = Unit(layer or 0, state or "h", unit), ""
    else:  # the best tracker of any feature, within the layer and state asked for
        best = sorted((m for ms in matches.values() for m in ms
                       if layer in (None, m.unit.layer) and state in (None, m.unit.state)),
                      key=lambda m: -abs(m.r))  # fmt: skip
        chosen = best[0].unit if best else Unit(layer or 0, state or "h", 0)
        why = f" (tracks {best[0].feature}, r={best[0].r:+.2f})" if best else ""
    source = f"{json_path} (step {ckpt.step}, {spec.cell} {spec.num_layers}x{spec.hidden_size})"
    if note:
        click.echo(f"Note: {note}", err=True)
    if html_path is None:
        values = acts.states[chosen.layer][chosen.state][:, chosen.index]
        show_unit(text, values, colour_range(values), f"{chosen}{why}")
        click.echo("units that track a feature (correlation r, best first):")
        width = max(len(name) for name in matches)
        for name, found in matches.items():
            best3 = "   ".join(f"{m.unit} {m.r:+.2f}" for m in found[:3]) or "not in this text"
            click.echo(f"  {name:{width}}  {best3}")
        return
    units = kept_units(acts, matches, chosen=chosen)
    data = page_data(acts, matches, list(ckpt.vocab.tokens), ckpt.vocab.mode == "lines", units,
                     chosen, source, note)  # fmt: skip
    total = data["unitsTotal"]
    body = render_page(data, f"{Path(str(json_path)).parent.name} on {text_file or '--text'}")
    encoded = body.encode("utf-8")
    write_atomic(html_path, encoded)
    size = len(encoded) / 1e6
    click.echo(f"wrote {html_path}: {len(text):,} characters, {len(units):,} of {total:,} units, "
               f"{size:.1f} MB", err=True)  # fmt: skip
