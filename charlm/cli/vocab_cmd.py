"""`charlm vocab build`: build a vocabulary from corpus files."""

from __future__ import annotations

import click

from charlm.cli.group import cli
from charlm.cli.options import config_options, corpus_paths, vocab_options, with_data_options
from charlm.config import Config


@cli.group()
def vocab() -> None:
    """Build and inspect vocabularies."""


@vocab.command("build")
@click.argument("corpus", nargs=-1, type=click.Path())
@click.option(
    "-o",
    "--output",
    default="vocab.json",
    show_default=True,
    type=click.Path(dir_okay=False),
    help="The vocabulary JSON file to write.",
)
@vocab_options
@config_options
def vocab_build(
    cfg: Config,
    corpus: tuple[str, ...],
    output: str,
    mode: str | None,
    min_count: int | None,
    max_size: int | None,
) -> None:
    """Build a vocabulary from CORPUS files (default: the config's data.corpus)."""
    from charlm.data import read_text  # noqa: PLC0415 - keep `charlm --help` fast
    from charlm.fileio import check_output_path  # noqa: PLC0415
    from charlm.vocab import Vocab  # noqa: PLC0415

    paths = corpus_paths(corpus, cfg)
    data = with_data_options(cfg, mode=mode, min_count=min_count, max_size=max_size)
    # checked before reading what may be a large corpus
    check_output_path(output, f"cannot write vocabulary to {output}")
    texts = [read_text(p) for p in paths]
    built = Vocab.build(texts, mode=data.mode, min_count=data.min_count, max_size=data.max_size)
    built.save(output)
    stats = built.stats()
    chars = len(built) - 2
    click.echo(f"vocabulary: {chars} characters + 2 specials (<UNK>, <EOS>) = {len(built)} tokens")
    click.echo(
        f"mode: {built.mode}; {stats['characters']:,} characters"
        + (f" in {stats['sequences']:,} sequences" if built.mode == "lines" else "")
    )
    click.echo(f"coverage: {stats['coverage']:.4%}   <UNK> rate: {stats['unk_rate']:.4%}")
    top = "  ".join(f"{t!r}:{c:,}" for t, c in built.most_common(10))
    click.echo(f"most frequent: {top}")
    click.echo(f"saved {output}")
