"""`charlm data prepare`: encode text files once into a prepared corpus directory."""

from __future__ import annotations

import sys

import click

from charlm.cli.group import cli
from charlm.cli.options import config_options, corpus_paths, vocab_options, with_data_options
from charlm.config import Config


@cli.group("data")
def data_group() -> None:
    """Prepare corpora bigger than memory."""


@data_group.command("prepare")
@click.argument("corpus", nargs=-1, type=click.Path())
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(file_okay=False),
    help="The directory to write (manifest.json, vocab.json, ids.bin).",
)
@vocab_options
@click.option(
    "--val-fraction",
    type=click.FloatRange(min=0.0, max=1.0, max_open=True),
    default=None,
    help="The tail held out for validation (lines mode: cut at a line end). "
    "Default: the config's data.val_fraction.",
)
@click.option(
    "--vocab",
    "vocab_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="Encode with this vocabulary JSON (e.g. a run's, to fine-tune) instead of building one.",
)
@click.option(
    "--overwrite",
    is_flag=True,
    help="Write into an output directory that holds other files (they are left alone).",
)
@config_options
def data_prepare(
    cfg: Config,
    corpus: tuple[str, ...],
    output: str,
    mode: str | None,
    min_count: int | None,
    max_size: int | None,
    val_fraction: float | None,
    vocab_path: str | None,
    overwrite: bool,
) -> None:
    """Encode CORPUS files, directories (their *.txt files) or globs into directory OUTPUT,
    read by `charlm train OUTPUT` without loading it into memory.

    The files are read once, a few MB at a time: the vocabulary is built as `charlm vocab
    build` builds it (--mode, --min-count, --max-size; defaults from the config's data.* keys),
    then the ids are written. Files are joined by a newline (stream mode) or a line end,
    <EOS> (lines mode). The last --val-fraction validates when training on OUTPUT.

    \b
    Example:
      charlm data prepare books/ 'extra/*.txt' -o prepared/books --val-fraction 0.01
      charlm train prepared/books --set train.max_steps=20000
    """
    from tqdm import tqdm  # noqa: PLC0415 - keep `--help` fast

    from charlm.prepare import Options, prepare  # noqa: PLC0415
    from charlm.vocab import Vocab  # noqa: PLC0415

    paths = corpus_paths(corpus, cfg)
    data = with_data_options(cfg, mode=mode, min_count=min_count, max_size=max_size,
                             val_fraction=val_fraction)  # fmt: skip
    vocab_file = vocab_path if vocab_path is not None else data.vocab
    vocab = Vocab.load(vocab_file) if vocab_file else None
    if vocab is not None and mode is not None and vocab.mode != mode:
        raise click.UsageError(f"--mode {mode}, but the vocabulary {vocab_file} is {vocab.mode}")
    opts = Options(data.mode, data.min_count, data.max_size, data.val_fraction, vocab)
    # Bytes read in the first pass, which is most of the time; no bar when stderr is no TTY.
    with tqdm(total=0, unit="B", unit_scale=True, file=sys.stderr, disable=None,
              desc="reading", dynamic_ncols=True) as bar:  # fmt: skip

        def show(done: int, total: int) -> None:
            bar.total = total
            bar.update(done - bar.n)

        m = prepare(paths, output, opts, overwrite=overwrite, progress=show)
    v = m["total_ids"] - m["val_start"]
    click.echo(
        f"{len(m['sources'])} file(s), {sum(s['size'] for s in m['sources']):,} bytes, "
        f"{m['characters']:,} characters -> {m['total_ids']:,} {m['dtype']} ids "
        f"({m['mode']} mode): {m['train_end']:,} train / {v:,} validation"
    )
    if m["unknown_count"]:
        click.echo(f"{m['unknown_count']:,} characters outside the vocabulary became <UNK>")
    click.echo(f"saved {output}")
