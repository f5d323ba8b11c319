"""`charlm sample`: generate text from a trained model."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from charlm.cli.group import cli
from charlm.cli.options import checkpoint_options, open_at_step


@cli.command()
@checkpoint_options
@click.option(
    "--max-len",
    type=click.IntRange(min=1),
    default=None,
    help="Characters to generate per sample, the prime not counted [sample.max_len].",
)
@click.option("--stop", multiple=True, metavar="STRING",
              help="End a sample right after it first produces STRING, which stays in the "
                   "text (the prime is not searched); repeatable: the first to appear ends "
                   "it.")  # fmt: skip
@click.option("--lines", type=click.IntRange(min=0), default=None,
              help="End a sample right after its N-th generated line break, which stays in the "
                   "text; 0 = off. Stream mode only: in lines mode every sample is one line "
                   "[sample.lines].")  # fmt: skip
@click.option(
    "--num",
    type=click.IntRange(min=1),
    default=None,
    help="Number of samples, drawn in parallel [sample.num].",
)
@click.option(
    "--temperature",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Softmax temperature; lower is more conservative [sample.temperature].",
)
@click.option(
    "--top-k",
    type=click.IntRange(min=0),
    default=None,
    help="Draw only among the k most likely characters; 0 = off [sample.top_k].",
)
@click.option("--top-p", type=click.FloatRange(min=0, max=1, min_open=True), default=None,
              help="Nucleus: the most likely characters holding this much probability; "
                   "1 = off [sample.top_p].")  # fmt: skip
@click.option(
    "--greedy/--no-greedy",
    default=None,
    help="Always take the most likely character (deterministic) [sample.greedy].",
)
@click.option("--prime", default=None, help="Text to start from (printed before the sample).")
@click.option("--prime-file", type=click.Path(), default=None, help="Read the prime from a file.")
@click.option("--seed", type=click.IntRange(min=0), default=None,
              help="Random seed: the same seed gives the same i-th sample, whatever --num is "
                   "[sample.seed; none: random].")  # fmt: skip
@click.option("--no-unk/--allow-unk", "no_unk", default=None,
              help="Never / freely emit <UNK> (shown as the text '<UNK>'). Default: banned when "
                   "the model's training text had none [sample.no_unk].")  # fmt: skip
@click.option("-o", "--output", type=click.Path(), default=None,
              help="Write the samples to FILE instead of stdout, laid out the same; written "
                   "atomically (the whole file or nothing).")  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="Print one JSON array of the samples.")
def sample(run_dir: str | None, checkpoint_path: str | None, runs_dir: str, step: int | None,
           prime_file: str | None, stop: tuple[str, ...], output: str | None, as_json: bool,
           **options: Any) -> None:  # fmt: skip
    """Generate text from a trained model.

    Settings come from the checkpoint's `sample` config section; options override them. A
    single sample streams to the terminal as it is generated. Every sample ends with a line
    break (added when it has none); stream-mode samples are separated by a blank line.
    """
    import dataclasses  # noqa: PLC0415

    from charlm.data import read_text  # noqa: PLC0415 - keep `charlm --help` fast
    from charlm.fileio import check_output_path, write_atomic  # noqa: PLC0415
    from charlm.sample import generate, unknown_chars  # noqa: PLC0415

    if options["prime"] is not None and prime_file is not None:
        raise click.UsageError("give --prime or --prime-file, not both")
    target = None if output is None else Path(output)
    if target is not None:  # refuse before any sampling time is spent
        check_output_path(target, f"cannot write samples to {output}")
    json_path, ckpt = open_at_step(run_dir, checkpoint_path, runs_dir, step)
    if run_dir is None and checkpoint_path is None:  # say which run the default picked
        click.echo(f"sampling from {json_path} (step {ckpt.step})", err=True)
    vocab = ckpt.vocab
    if options["lines"] and vocab.mode == "lines":
        raise click.UsageError(
            "--lines counts line breaks in stream mode; this is a lines-mode model, whose "
            "samples are one line each (use --num for more lines)"
        )
    if prime_file is not None:
        options["prime"] = read_text(prime_file)  # an empty file or a directory is an error
    given = {name: value for name, value in options.items() if value is not None}
    settings = dataclasses.replace(ckpt.config.sample, **given)  # validated by the config
    unknown = unknown_chars(vocab, settings.prime)
    if unknown:
        click.echo(f"Warning: prime characters not in the vocabulary are read as <UNK>: "
                   f"{''.join(unknown)!r}", err=True)  # fmt: skip
    stream = settings.num == 1 and not as_json and target is None

    def show(text: str) -> None:
        click.echo(text, nl=False)  # click.echo flushes: the text appears as it is drawn

    if stream:
        show(settings.prime)
    samples = generate(ckpt.model(), ckpt.params, vocab, settings, stop=stop,
                       train_unk_count=ckpt.meta.get("train_unk_count"),
                       on_text=show if stream else None)  # fmt: skip
    texts = [settings.prime + text for text in samples]
    if stream:
        click.echo(nl=not texts[0].endswith("\n"))
        return
    if as_json:
        body = json.dumps(texts, ensure_ascii=False) + "\n"
    else:
        ended = [text if text.endswith("\n") else text + "\n" for text in texts]
        # A blank line between stream-mode samples, which may span several lines.
        body = ("\n" if vocab.mode == "stream" else "").join(ended)
    if target is None:
        click.echo(body, nl=False)
        return
    try:
        write_atomic(target, body.encode("utf-8"))
    except OSError as exc:
        raise click.ClickException(
            f"cannot write samples to {output}: {exc.strerror or exc}"
        ) from None
    click.echo(f"wrote {len(texts)} sample{'s' * (len(texts) > 1)} to {output}", err=True)
