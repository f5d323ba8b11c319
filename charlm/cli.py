"""The `charlm` command: the only module that prints or exits.

Library code raises `CharlmError` for anything a user can fix; here it becomes one
`Error: ...` line and exit status 1 (Click's usage errors exit with 2).
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from charlm.config import Config, load_config
from charlm.errors import CharlmError

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


class CharlmGroup(click.Group):
    """A Click group that turns library errors into one-line messages, never tracebacks."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except CharlmError as exc:
            raise click.ClickException(str(exc)) from None
        except OSError as exc:  # a file the library did not anticipate (disk full, EACCES ...)
            where = f"{exc.filename}: " if getattr(exc, "filename", None) else ""
            raise click.ClickException(f"{where}{exc.strerror or exc}") from None
        except MemoryError:
            raise click.ClickException(
                "out of memory; try a smaller model, batch or corpus"
            ) from None


def config_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """Add --config FILE and repeatable --set section.key=value; pass the resolved `cfg`."""

    @click.option(
        "--config",
        "config_path",
        type=click.Path(dir_okay=False),
        default=None,
        help="YAML config file (defaults: configs/default.yaml's values).",
    )
    @click.option(
        "--set",
        "overrides",
        multiple=True,
        metavar="SECTION.KEY=VALUE",
        help="Override one config value; repeatable, e.g. --set train.lr=0.01.",
    )
    @functools.wraps(command)
    def wrapper(config_path: str | None, overrides: tuple[str, ...], **kwargs: Any) -> Any:
        return command(cfg=load_config(config_path, overrides), **kwargs)

    return wrapper


@click.group(cls=CharlmGroup, context_settings=CONTEXT)
@click.version_option(package_name="charlm")
def cli() -> None:
    """Character-level RNN / GRU / LSTM language models in readable, fast NumPy.

    \b
    charlm vocab build corpus.txt    build the vocabulary (characters + <UNK>/<EOS>)
    charlm train corpus.txt          train, with progress and checkpoints
    charlm sample --max-len 50       sample from the latest run
    """


@cli.group()
def vocab() -> None:
    """Build and inspect vocabularies."""


@vocab.command("build")
@click.argument("corpus", nargs=-1, type=click.Path())
@click.option("-o", "--output", default="vocab.json", show_default=True, type=click.Path())
@click.option(
    "--mode",
    type=click.Choice(["stream", "lines"]),
    default=None,
    help="stream: one text, newline is a character; lines: one sequence per line.",
)
@click.option(
    "--min-count",
    type=click.IntRange(min=1),
    default=None,
    help="Characters seen fewer times become <UNK>.",
)
@click.option(
    "--max-size",
    type=click.IntRange(min=0),
    default=None,
    help="Keep at most this many tokens (incl. the 2 specials); 0 = no limit.",
)
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
    from charlm.vocab import Vocab  # noqa: PLC0415

    paths = list(corpus) or ([cfg.data.corpus] if cfg.data.corpus else [])
    if not paths:
        raise click.UsageError("give a CORPUS file (or set data.corpus in the config)")
    texts = [read_text(p) for p in paths]
    built = Vocab.build(
        texts,
        mode=mode or cfg.data.mode,
        min_count=cfg.data.min_count if min_count is None else min_count,
        max_size=cfg.data.max_size if max_size is None else max_size,
    )
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


@cli.command()
@click.option(
    "--layers",
    type=click.IntRange(min=1),
    default=2,
    show_default=True,
    help="Layers to check (a few are enough; the configured count is not needed).",
)
@click.option(
    "--hidden",
    type=click.IntRange(min=1),
    default=8,
    show_default=True,
    help="Hidden size to check with (small keeps it fast).",
)
@click.option("--seq-len", type=click.IntRange(min=1), default=5, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the per-tensor errors as JSON.")
@config_options
def gradcheck(cfg: Config, layers: int, hidden: int, seq_len: int, as_json: bool) -> None:
    """Finite-difference gradient check (float64) of the configured model.

    Checks every parameter and the carried-in state of a small model with the configured cell,
    options, embedding and dropout; exit status 1 if the error exceeds 1e-6.
    """
    import dataclasses  # noqa: PLC0415

    from charlm.gradcheck import gradcheck as check  # noqa: PLC0415

    spec = dataclasses.replace(cfg.model, num_layers=layers, hidden_size=hidden)
    emb = cfg.model.embedding_size and min(cfg.model.embedding_size, 6)
    spec = dataclasses.replace(spec, embedding_size=emb)
    result = check(spec, seq_len=seq_len, resets=cfg.data.mode == "lines")
    if as_json:
        click.echo(json.dumps({"max_relative_error": result.max_error, "errors": result.errors}))
    else:
        what = f"{cfg.model.cell}" + (" (reset-after)" if cfg.model.gru_reset_after else "")
        click.echo(
            f"{what}, {layers} layers, H={hidden}, T={seq_len}: "
            f"{len(result.errors)} tensors checked"
        )
        click.echo(f"max relative error: {result.max_error:.3e} (in {result.worst})")
    if not result.max_error <= 1e-6:
        raise click.ClickException(f"gradient check failed: {result.max_error:.3e} > 1e-6")


class ProgressReporter:
    """The trainer's progress as a tqdm bar (loss, bits/char, chars/s, ETA) on stderr."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.bar: Any = None

    def start(self, step: int, total: int | None) -> None:
        if self.quiet:
            return
        from tqdm import tqdm  # noqa: PLC0415 - only the train command needs it

        self.bar = tqdm(
            total=total,
            initial=step,
            unit="step",
            dynamic_ncols=True,
            file=click.get_text_stream("stderr"),
        )

    def update(self, record: dict[str, Any]) -> None:
        if self.bar is None:
            return
        shown = {}
        if "train_loss" in record:
            shown["loss"] = f"{record['train_loss']:.3f}"
            shown["bpc"] = f"{record['train_bpc']:.3f}"
            shown["chars/s"] = f"{record['chars_per_s']:,.0f}"
        if "val_loss" in record:
            shown["val"] = f"{record['val_loss']:.3f}"
            self.message(
                f"step {record['step']}: val loss {record['val_loss']:.4f} nats/char, "
                f"{record['val_bpc']:.4f} bpc, perplexity {record['val_ppl']:.2f}"
            )
        self.bar.set_postfix(shown, refresh=False)
        self.bar.update(record["step"] - self.bar.n)

    def message(self, text: str) -> None:
        if self.quiet:
            return
        if self.bar is not None:
            self.bar.write(text, file=click.get_text_stream("stderr"))
        else:
            click.echo(text, err=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


@cli.command()
@click.argument("corpus", required=False, type=click.Path())
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="YAML config file (defaults: configs/default.yaml's values).",
)
@click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="SECTION.KEY=VALUE",
    help="Override one config value; repeatable, e.g. --set train.lr=0.01.",
)
@click.option(
    "--run-dir",
    type=click.Path(file_okay=False),
    default=None,
    help="Where the run is written (default: runs/<corpus name>).",
)
@click.option(
    "--resume",
    is_flag=True,
    help="Continue the run in --run-dir exactly where its last checkpoint left off.",
)
@click.option(
    "--init-from",
    type=click.Path(),
    default=None,
    help="Start from this checkpoint's weights and vocabulary (fine-tuning).",
)
@click.option("--overwrite", is_flag=True, help="Replace a run already in --run-dir.")
@click.option("--quiet", is_flag=True, help="No progress bar or messages.")
def train(
    corpus: str | None,
    config_path: str | None,
    overrides: tuple[str, ...],
    run_dir: str | None,
    resume: bool,
    init_from: str | None,
    overwrite: bool,
    quiet: bool,
) -> None:
    """Train a model on CORPUS (default: the config's data.corpus).

    Writes runs/<corpus name>/: config.yaml, vocab.json, metrics.jsonl and the `best` and
    `last` checkpoints. Ctrl-C saves `last` and stops; --resume continues exactly.
    """
    from charlm.train import Trainer, default_run_dir, graceful_stop  # noqa: PLC0415

    if resume and init_from:
        raise click.UsageError("--resume and --init-from cannot be combined")
    if resume and overwrite:
        raise click.UsageError("--resume and --overwrite cannot be combined")
    if resume:
        if config_path:
            raise click.UsageError("--resume uses the run's saved config; change it with --set")
        if run_dir is None and corpus is None:
            raise click.UsageError("--resume needs --run-dir (or the CORPUS of the run)")
        run = Path(run_dir) if run_dir else default_run_dir(corpus or "")
        saved = run / "config.yaml"
        if not saved.is_file():
            raise click.ClickException(f"nothing to resume in {run}: no config.yaml")
        cfg = load_config(saved, overrides)
    else:
        cfg = load_config(config_path, overrides)
    corpus = corpus or cfg.data.corpus
    if not corpus:
        raise click.UsageError("give a CORPUS file (or set data.corpus in the config)")
    run = Path(run_dir) if run_dir else default_run_dir(corpus)
    trainer = Trainer.create(
        corpus, cfg, run, resume=resume, init_from=init_from, overwrite=overwrite
    )
    reporter = ProgressReporter(quiet)
    if not quiet:
        n_params = sum(int(p.size) for p in trainer.params.values())
        m = cfg.model
        click.echo(
            f"{m.cell} {m.num_layers}x{m.hidden_size}, {n_params:,} parameters, "
            f"vocabulary {len(trainer.corpus.vocab)}; "
            f"{len(trainer.corpus.train_ids):,} train / {len(trainer.corpus.val_ids):,} "
            f"val characters; run directory {run}"
            + (f"; resuming at step {trainer.step}" if resume else ""),
            err=True,
        )
    with graceful_stop() as stop:
        try:
            result = trainer.run(reporter, stop)
        except KeyboardInterrupt:
            reporter.close()
            raise click.ClickException(f"aborted; the last checkpoint in {run} is kept") from None
        except CharlmError:
            reporter.close()
            raise
    how = f"charlm train {corpus} --resume --run-dir {run}"
    best = f"; best val loss {result.best_val_loss:.4f}" if result.best_val_loss else ""
    if result.reason == "interrupted":
        click.echo(
            f"Interrupted ({result.signal_name}) at step {result.step}; saved "
            f"{result.last_checkpoint}. Resume with: {how}",
            err=True,
        )
        sys.exit(130 if result.signal_name == "SIGINT" else 143)
    if not quiet:
        click.echo(
            f"{result.reason} at step {result.step}{best}; saved {result.last_checkpoint}", err=True
        )
