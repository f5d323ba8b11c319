"""Options and look-ups that several commands share: --config/--set, and the checkpoint a
command reads (--run / --checkpoint / the latest run under --runs-dir)."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import click

from charlm.config import Config, load_config
from charlm.errors import CharlmError


def raw_config_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """Add --config FILE and repeatable --set section.key=value, passed as they are."""
    command = click.option(
        "--set",
        "overrides",
        multiple=True,
        metavar="SECTION.KEY=VALUE",
        help="Override one config value; repeatable, e.g. --set train.lr=0.01.",
    )(command)
    return click.option(
        "--config",
        "config_path",
        type=click.Path(dir_okay=False),
        default=None,
        help="YAML config file (defaults: configs/default.yaml's values).",
    )(command)


def config_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """Add --config FILE and repeatable --set section.key=value; pass the resolved `cfg`."""

    @raw_config_options
    @functools.wraps(command)
    def wrapper(config_path: str | None, overrides: tuple[str, ...], **kwargs: Any) -> Any:
        return command(cfg=load_config(config_path, overrides), **kwargs)

    return wrapper


def checkpoint_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """--run DIR | --checkpoint PATH, falling back to the latest run under --runs-dir; --step
    picks among the run's checkpoints (see `open_at_step`)."""
    command = click.option(
        "--step", type=click.IntRange(min=0), default=None,
        help="Use the run's checkpoint saved at this step (best, last, or one kept with "
             "train.keep_checkpoints); not with --checkpoint.",
    )(command)  # fmt: skip
    command = click.option(
        "--runs-dir", default="runs", show_default=True, type=click.Path(file_okay=False),
        help="Where to find the latest run when neither --run nor --checkpoint is given.",
    )(command)  # fmt: skip
    command = click.option(
        "--checkpoint", "checkpoint_path", type=click.Path(), default=None,
        help="A checkpoint: its .json (or .npz) file.",
    )(command)  # fmt: skip
    return click.option(
        "--run", "run_dir", type=click.Path(), default=None,
        help="A run directory (its best checkpoint, else its last). Default: the latest run.",
    )(command)  # fmt: skip


def latest_run(runs_dir: str) -> Path:
    """The run under `runs_dir` whose best.json or last.json was written most recently."""
    newest, found = -1.0, None
    root = Path(runs_dir)
    for run in sorted(root.iterdir()) if root.is_dir() else []:
        for name in ("best.json", "last.json"):
            try:
                mtime = (run / name).stat().st_mtime
            except OSError:  # not there, or `run` is a file
                continue
            if mtime > newest:
                newest, found = mtime, run
    if found is None:
        where = runs_dir.rstrip("/") or runs_dir
        raise CharlmError(f"no trained run under {where}/; train one first: charlm train CORPUS")
    return found


def open_checkpoint(run_dir: str | None, checkpoint_path: str | None, runs_dir: str) -> Any:
    """(checkpoint JSON path, loaded Checkpoint) from the --run / --checkpoint options.

    In a run directory (--run, or the latest run) a damaged `best` falls back to `last` with a
    warning; an explicit --checkpoint (or a --run naming a file) must load as it is.
    """
    from charlm.checkpoint import (  # noqa: PLC0415
        load_checkpoint,
        load_run_checkpoint,
        resolve_checkpoint,
    )

    if run_dir is not None and checkpoint_path is not None:
        raise click.UsageError("give --run or --checkpoint, not both")
    explicit = checkpoint_path if checkpoint_path is not None else run_dir
    run = Path(explicit) if explicit is not None else latest_run(runs_dir)
    if checkpoint_path is not None or not run.is_dir():  # a file (or nothing): no fallback
        json_path = resolve_checkpoint(run)
        return json_path, load_checkpoint(json_path)
    json_path, ckpt, skipped = load_run_checkpoint(run)
    if skipped is not None:
        click.echo(f"Warning: {skipped}; using {json_path} (step {ckpt.step})", err=True)
    return json_path, ckpt


def open_at_step(
    run_dir: str | None, checkpoint_path: str | None, runs_dir: str, step: int | None
) -> Any:
    """`open_checkpoint` for sample and eval, with their --step: the run's checkpoint saved at
    that step (of --run, else of the latest run under --runs-dir)."""
    from charlm.checkpoint import load_checkpoint  # noqa: PLC0415
    from charlm.runs import checkpoint_at_step  # noqa: PLC0415

    if step is None:
        return open_checkpoint(run_dir, checkpoint_path, runs_dir)
    if checkpoint_path is not None:
        raise click.UsageError(
            "--step picks among a run's checkpoints: give --run, not --checkpoint"
        )
    json_path = checkpoint_at_step(run_dir if run_dir is not None else latest_run(runs_dir), step)
    return json_path, load_checkpoint(json_path)


def vocab_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """--mode, --min-count and --max-size: how a vocabulary is built (`vocab build`, `data
    prepare`); None where not given (the config's data.* then)."""
    options = [
        click.option("--mode", type=click.Choice(["stream", "lines"]), default=None,
                     help="stream: one text, newline is a character; lines: one sequence per "
                     "line."),
        click.option("--min-count", type=click.IntRange(min=1), default=None,
                     help="Characters seen fewer times become <UNK>."),
        click.option("--max-size", type=click.IntRange(min=0), default=None,
                     help="Keep at most this many tokens (incl. the 2 specials); 0 = no limit."),
    ]  # fmt: skip
    for option in reversed(options):
        command = option(command)
    return command


def corpus_paths(given: Sequence[str], cfg: Config) -> list[str]:
    """The CORPUS arguments, else the config's data.corpus; a usage error when there is none."""
    paths = list(given) or ([cfg.data.corpus] if cfg.data.corpus else [])
    if not paths:
        raise click.UsageError("give a CORPUS file (or set data.corpus in the config)")
    return paths


def with_data_options(cfg: Config, **options: Any) -> Any:
    """The config's data section with the command-line `options` that were given (not None)."""
    given = {name: value for name, value in options.items() if value is not None}
    return dataclasses.replace(cfg.data, **given)  # validated as the config is
