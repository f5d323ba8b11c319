"""`charlm eval`: a trained model's loss on a text, against n-gram baselines."""

from __future__ import annotations

import json
import math
from pathlib import Path

import click

from charlm.cli.group import cli
from charlm.cli.options import checkpoint_options, open_at_step
from charlm.cli.show import show_losses
from charlm.errors import CharlmError


@cli.command("eval")
@click.argument("corpus", type=click.Path())
@checkpoint_options
@click.option("--json", "as_json", is_flag=True, help="Print the numbers as one JSON object.")
@click.option("--show", is_flag=True,
              help="Print the text coloured by each character's loss (use a short text or "
                   "--limit), and the most surprising characters.")  # fmt: skip
@click.option(
    "--limit",
    type=click.IntRange(min=1),
    default=None,
    help="Evaluate only the first N characters (in lines mode: the whole lines among them).",
)
@click.option("--batch-size", type=click.IntRange(min=1), default=None,
              help="Contiguous streams the text is cut into, each read in order with the state "
                   "carried (stream mode: fewer than N characters at the end are left out; "
                   "lines mode: cut at line starts, the same losses as 1). Default 32; 1 with "
                   "--show, which reads the text in exact order.")  # fmt: skip
def eval_command(corpus: str, run_dir: str | None, checkpoint_path: str | None,
                 runs_dir: str, step: int | None, as_json: bool, show: bool, limit: int | None,
                 batch_size: int | None) -> None:  # fmt: skip
    """Loss of a trained model on CORPUS, with unigram / bigram baselines.

    Reports nats and bits per character, perplexity and the <UNK> rate, with the state
    carried. A model trained from cold starts scores the same at any batch size (within a
    percent or so on a long text), so the default reads 32 streams at once. The baselines are
    add-one smoothed character n-gram models counted on the run's training split (when its
    corpus file is still there), scored on the same characters.

    \b
    Example:
      charlm eval data/tinyshakespeare.txt --run runs/tinyshakespeare
      charlm eval notes.txt --show --limit 400
    """
    from charlm.baselines import fit_baselines, training_ids  # noqa: PLC0415 - keep `--help` fast
    from charlm.data import first_chars, read_text  # noqa: PLC0415
    from charlm.evaluate import (  # noqa: PLC0415
        LN2,
        evaluate_encoded,
        evaluate_text,
        prepared_baselines,
        prepared_ids,
    )

    if show and as_json:
        raise click.UsageError("--show and --json cannot be combined")
    if show and batch_size not in (None, 1):
        raise click.UsageError("--show reads the text in order: leave --batch-size at 1")
    batch_size = batch_size or (1 if show else 32)
    json_path, ckpt = open_at_step(run_dir, checkpoint_path, runs_dir, step)
    prepared = Path(corpus).is_dir()  # a prepared corpus: ids memory-mapped, no text
    if prepared and show:
        raise click.UsageError("--show needs a text file, not a prepared corpus directory")
    text = "" if prepared else first_chars(read_text(corpus), ckpt.vocab.mode, limit)
    train_corpus = ckpt.meta.get("corpus") or ckpt.config.data.corpus
    baselines, note = None, ""
    if not isinstance(train_corpus, str) or not Path(train_corpus).exists():
        note = "baselines: training corpus not found"
    else:
        try:
            if Path(train_corpus).is_dir():
                baselines = prepared_baselines(train_corpus, ckpt.vocab)
            else:
                train = training_ids(train_corpus, ckpt.config.data, ckpt.vocab)
                baselines = fit_baselines(train, len(ckpt.vocab))
        except CharlmError as exc:
            note = f"baselines: skipped ({exc})"
    if prepared:
        ids, unk_rate = prepared_ids(corpus, ckpt.vocab, limit)
        result = evaluate_encoded(ckpt.model(), ckpt.params, ckpt.vocab, ids, batch_size,
                                  baselines=baselines, unk_rate=unk_rate)  # fmt: skip
    else:
        result = evaluate_text(ckpt.model(), ckpt.params, ckpt.vocab, text, batch_size,
                               baselines=baselines, keep_losses=show)  # fmt: skip
    if as_json:
        scores = None if result.baselines is None else {
            name: {"loss": loss, "bpc": loss / LN2} for name, loss in result.baselines.items()
        }  # fmt: skip
        click.echo(json.dumps({
            "chars": result.chars, "loss": result.loss, "bpc": result.bpc,
            "perplexity": result.perplexity, "unk_rate": result.unk_rate, "baselines": scores,
        }))  # fmt: skip
        return
    if show:
        show_losses(text, result.losses, ckpt.vocab.mode == "lines")
    ends = " (line ends included)" if ckpt.vocab.mode == "lines" else ""
    click.echo(f"{json_path} (step {ckpt.step}) on {corpus}: {result.chars:,} characters "
               f"predicted{ends}, <UNK> rate {result.unk_rate:.2%}")  # fmt: skip
    click.echo(f"{'':8} {'nats/char':>10} {'bits/char':>10} {'perplexity':>11}")
    rows = [("model", result.loss), *(result.baselines or {}).items()]
    for name, loss in rows:
        ppl = math.exp(min(loss, 700.0))
        click.echo(f"{name:8} {loss:10.4f} {loss / LN2:10.4f} {ppl:11.4g}")
    if note:
        click.echo(note)
