"""`charlm train`: train a model (new, resumed or fine-tuned) with a progress bar."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click

from charlm.cli.group import CharlmGroup, cli
from charlm.cli.options import corpus_paths, raw_config_options
from charlm.cli.progress import ProgressReporter
from charlm.config import load_config
from charlm.distributed import SharedError, World, current_world
from charlm.errors import CharlmError


@cli.command()
@click.argument("corpus", required=False, type=click.Path())
@raw_config_options
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
@click.option(
    "--allow-changed-corpus",
    is_flag=True,
    help="With --resume: go on although the corpus differs from the one the run recorded.",
)
@click.option("--quiet", is_flag=True, help="No progress bar or messages.")
def train(**options: Any) -> None:
    """Train a model on CORPUS, a text file or a directory made by `charlm data prepare`
    (default: the config's data.corpus; on --resume, the run's).

    Writes runs/<corpus name>/: config.yaml, vocab.json, metrics.jsonl and the `best` and
    `last` checkpoints (and the train.keep_checkpoints most recent ones). Ctrl-C saves `last`
    and stops; --resume continues exactly, with any --set changes recorded in the run's
    config.yaml. One process trains a run at a time -- or, started by `mpiexec -n K`, K
    processes together (data-parallel: the train.batch_size streams are split over them;
    needs charlm[mpi]).

    \b
    Example:
      charlm train data/tinyshakespeare.txt --config configs/shakespeare-lstm.yaml
      charlm train --resume --run-dir runs/tinyshakespeare --set train.max_steps=9000
      mpiexec -n 2 charlm train data/tinyshakespeare.txt --set train.batch_size=64
    """
    world = current_world()
    with ending_together(world):  # only rank 0 shows progress
        _train(world, **{**options, "quiet": options["quiet"] or not world.master})


@contextlib.contextmanager
def ending_together(world: World) -> Iterator[None]:
    """Of several processes, one that fails alone says why and ends the whole job at once (the
    others wait for it in the next collective call, and would wait forever); errors that
    every process raises together (usage, set-up, divergence) end them normally, rank 0
    saying why."""
    from charlm.train import DivergenceError  # noqa: PLC0415

    if world.size == 1:
        yield
        return
    try:
        yield
    except (SharedError, DivergenceError, click.UsageError):
        if world.master:
            raise
        sys.exit(1)
    except SystemExit:
        raise
    except BaseException as exc:
        if isinstance(exc, click.ClickException):
            why = exc.format_message()
        elif isinstance(exc, OSError):
            why = CharlmGroup.describe_os_error(exc)
        elif isinstance(exc, MemoryError):
            why = "out of memory"
        elif isinstance(exc, CharlmError):
            why = str(exc)
        else:
            why = f"{type(exc).__name__}: {exc}"
        click.echo(f"Error: process {world.rank} of {world.size}: {why}", err=True)
        sys.stderr.flush()
        world.abort(1)


def _train(
    world: World,
    corpus: str | None,
    config_path: str | None,
    overrides: tuple[str, ...],
    run_dir: str | None,
    resume: bool,
    init_from: str | None,
    overwrite: bool,
    allow_changed_corpus: bool,
    quiet: bool,
) -> None:
    from charlm.stopping import graceful_stop  # noqa: PLC0415
    from charlm.train import Trainer, default_run_dir  # noqa: PLC0415

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
        cfg = None  # the run's own, from its last checkpoint, with the --set changes
    else:
        if allow_changed_corpus:
            raise click.UsageError("--allow-changed-corpus goes with --resume")
        cfg = load_config(config_path, overrides)
        corpus = corpus_paths([corpus] if corpus else [], cfg)[0]
        run = Path(run_dir) if run_dir else default_run_dir(corpus)
    trainer = Trainer.create(
        corpus,
        cfg,
        run,
        resume=resume,
        init_from=init_from,
        overwrite=overwrite,
        allow_changed_corpus=allow_changed_corpus,
        overrides=overrides,
        world=world,
    )
    reporter = ProgressReporter(quiet, trainer.config.train.max_seconds)
    if not quiet:
        n_params = trainer.params.size
        m = trainer.config.model
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
        finally:
            trainer.close()
    how = f"charlm train --resume --run-dir {run}"
    best = "" if result.best_val_loss is None else f"; best val loss {result.best_val_loss:.4f}"
    if result.reason == "interrupted":
        if world.master:
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
