"""The `charlm` command: the only module that prints or exits.

Library code raises `CharlmError` for anything a user can fix; here it becomes one
`Error: ...` line and exit status 1 (Click's usage errors exit with 2).
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import os
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
        except BrokenPipeError:  # `charlm ... | head` stopped reading: nothing left to say
            with contextlib.suppress(OSError, ValueError):
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            sys.exit(0)
        except OSError as exc:  # a file the library did not anticipate (disk full, EACCES ...)
            raise click.ClickException(self.describe_os_error(exc)) from None
        except MemoryError:
            raise click.ClickException(
                "out of memory; try a smaller model, batch or corpus"
            ) from None

    # What the innermost of these functions on the traceback was doing, in plain words.
    OS_VERBS = {
        "mkdir": "create directory",
        "makedirs": "create directory",
        "mkstemp": "create a file in",
        "write_text": "write",
        "write_bytes": "write",
        "write_atomic": "write",
        "savefig": "write",
        "touch": "create",
        "replace": "move",
        "rename": "move",
        "unlink": "remove",
        "rmdir": "remove directory",
        "rmtree": "remove",
        "read_text": "read",
        "read_bytes": "read",
        "iterdir": "list directory",
        "scandir": "list directory",
        "listdir": "list directory",
    }

    @classmethod
    def describe_os_error(cls, exc: OSError) -> str:
        """'cannot VERB PATH: reason' for an OSError, e.g. 'cannot create directory /proc/x:
        No such file or directory'. An OSError carries the path and errno but not what was
        being done, so the verb comes from the innermost function on its traceback that names
        one (pathlib's mkdir, write_text, open with its mode ...); 'access' when none does."""
        import traceback  # noqa: PLC0415 - the error path only

        reason = exc.strerror or str(exc) or type(exc).__name__
        verb = None
        frames = [frame for frame, _ in traceback.walk_tb(exc.__traceback__)]
        for frame in reversed(frames):
            name = frame.f_code.co_name
            mode = frame.f_locals.get("mode") if name == "open" else None
            if isinstance(mode, str):  # pathlib's open(mode) (write_text goes through it)
                verb = "write" if set(mode) & set("wax+") else "read"
                break
            if name in cls.OS_VERBS:
                verb = cls.OS_VERBS[name]
                break
        path = exc.filename
        if path is None:
            return f"cannot {verb}: {reason}" if verb else reason
        if exc.filename2 is not None:
            return f"cannot {verb or 'move'} {path} to {exc.filename2}: {reason}"
        return f"cannot {verb or 'access'} {path}: {reason}"


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
@click.option(
    "-o",
    "--output",
    default="vocab.json",
    show_default=True,
    type=click.Path(dir_okay=False),
    help="The vocabulary JSON file to write.",
)
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
    from charlm.fileio import check_output_path  # noqa: PLC0415
    from charlm.vocab import Vocab  # noqa: PLC0415

    paths = list(corpus) or ([cfg.data.corpus] if cfg.data.corpus else [])
    if not paths:
        raise click.UsageError("give a CORPUS file (or set data.corpus in the config)")
    # checked before reading what may be a large corpus
    check_output_path(output, f"cannot write vocabulary to {output}")
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
    default=None,
    help="Check this many layers instead of model.num_layers (fewer is faster).",
)
@click.option(
    "--hidden",
    type=click.IntRange(min=1),
    default=None,
    help="Check this hidden size instead of model.hidden_size (e.g. 8 takes well under 1 s).",
)
@click.option(
    "--seq-len",
    type=click.IntRange(min=1),
    default=5,
    show_default=True,
    help="Time steps in the checked window (backpropagated through, with a carried-in state).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the per-tensor errors as JSON.")
@config_options
def gradcheck(
    cfg: Config, layers: int | None, hidden: int | None, seq_len: int, as_json: bool
) -> None:
    """Finite-difference gradient check (float64) of the configured model.

    Checks every parameter and the carried-in state of the configured model (cell, size,
    layers, embedding, dropout; a random 12-character vocabulary), a sample of entries per
    tensor; exit status 1 if the error exceeds 1e-6. The default 2x256 LSTM takes seconds;
    --hidden and --layers check a smaller model quickly.
    """
    import dataclasses  # noqa: PLC0415

    from charlm.gradcheck import gradcheck as check  # noqa: PLC0415

    layers = cfg.model.num_layers if layers is None else layers
    hidden = cfg.model.hidden_size if hidden is None else hidden
    spec = dataclasses.replace(cfg.model, num_layers=layers, hidden_size=hidden)
    result = check(spec, seq_len=seq_len, resets=cfg.data.mode == "lines")
    if as_json:
        click.echo(json.dumps({"max_relative_error": result.max_error, "errors": result.errors}))
    else:
        what = f"{cfg.model.cell}" + (" (reset-after)" if cfg.model.gru_reset_after else "")
        emb = f", E={spec.embedding_size}" if spec.embedding_size else ""
        click.echo(
            f"{what}, {layers} layers, H={hidden}{emb}, T={seq_len}: "
            f"{len(result.errors)} tensors checked"
        )
        click.echo(f"max relative error: {result.max_error:.3e} (in {result.worst})")
    if not result.max_error <= 1e-6:
        raise click.ClickException(
            f"gradient check failed: max relative error {result.max_error:.3e} > 1e-6 "
            f"(in {result.worst})"
        )


class ProgressReporter:
    """The trainer's progress as a tqdm bar (loss, bits/char, chars/s, ETA) on stderr."""

    def __init__(self, quiet: bool, max_seconds: float = 0.0) -> None:
        self.quiet = quiet
        self.max_seconds = max_seconds  # a time budget: the bar's end is where time runs out
        self.total: int | None = None
        self.first: tuple[int, float] | None = None  # (step, elapsed_s) of the first record
        self.bar: Any = None

    def start(self, step: int, total: int | None) -> None:
        if self.quiet:
            return
        from tqdm import tqdm  # noqa: PLC0415 - only the train command needs it

        self.total = total
        self.bar = tqdm(
            total=total,
            initial=step,
            unit="step",
            dynamic_ncols=True,
            file=sys.stderr,
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
        self.bar.total = self.projected_total(record)
        self.bar.update(record["step"] - self.bar.n)

    def projected_total(self, record: dict[str, Any]) -> int | None:
        """The step the run will end at: the step limit, or sooner where the time budget runs
        out at the pace since the first record."""
        if not self.max_seconds or "elapsed_s" not in record:
            return self.total
        step, elapsed = record["step"], record["elapsed_s"]
        self.first = self.first or (step, elapsed)
        if elapsed <= self.first[1]:
            return self.total
        rate = (step - self.first[0]) / (elapsed - self.first[1])
        by_time = step + round(max(self.max_seconds - elapsed, 0.0) * rate)
        return by_time if self.total is None else min(self.total, by_time)

    def message(self, text: str) -> None:
        if self.quiet:
            return
        if self.bar is not None:
            self.bar.write(text, file=sys.stderr)
        else:
            click.echo(text, err=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


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
def train(
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
    """Train a model on CORPUS (default: the config's data.corpus; on --resume, the run's).

    Writes runs/<corpus name>/: config.yaml, vocab.json, metrics.jsonl and the `best` and
    `last` checkpoints. Ctrl-C saves `last` and stops; --resume continues exactly, with any
    --set changes recorded in the run's config.yaml. One process trains a run at a time.

    \b
    Example:
      charlm train data/tinyshakespeare.txt --config configs/shakespeare-lstm.yaml
      charlm train --resume --run-dir runs/tinyshakespeare --set train.max_steps=9000
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
        if allow_changed_corpus:
            raise click.UsageError("--allow-changed-corpus goes with --resume")
        cfg = load_config(config_path, overrides)
        corpus = corpus or cfg.data.corpus
        if not corpus:
            raise click.UsageError("give a CORPUS file (or set data.corpus in the config)")
        run = Path(run_dir) if run_dir else default_run_dir(corpus)
    trainer = Trainer.create(
        corpus,
        cfg,
        run,
        resume=resume,
        init_from=init_from,
        overwrite=overwrite,
        allow_changed_corpus=allow_changed_corpus,
    )
    reporter = ProgressReporter(quiet, trainer.config.train.max_seconds)
    if not quiet:
        n_params = sum(int(p.size) for p in trainer.params.values())
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


# --- sample, eval, plot --------------------------------------------------------------------------


def _checkpoint_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """--run DIR | --checkpoint PATH, falling back to the latest run under --runs-dir."""
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


def _latest_run(runs_dir: str) -> Path:
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


def _open_checkpoint(run_dir: str | None, checkpoint_path: str | None, runs_dir: str) -> Any:
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
    run = Path(explicit) if explicit is not None else _latest_run(runs_dir)
    if checkpoint_path is not None or not run.is_dir():  # a file (or nothing): no fallback
        json_path = resolve_checkpoint(run)
        return json_path, load_checkpoint(json_path)
    json_path, ckpt, skipped = load_run_checkpoint(run)
    if skipped is not None:
        click.echo(f"Warning: {skipped}; using {json_path} (step {ckpt.step})", err=True)
    return json_path, ckpt


@cli.command()
@_checkpoint_options
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
def sample(run_dir: str | None, checkpoint_path: str | None, runs_dir: str,
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
    json_path, ckpt = _open_checkpoint(run_dir, checkpoint_path, runs_dir)
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


_LN2 = math.log(2.0)
# Per-character loss bins for `eval --show`: bit edges and the colour of each bin.
SHOW_EDGES = (1.0, 2.0, 4.0, 8.0)
SHOW_COLOURS = ("green", "cyan", "yellow", "magenta", "red")


@cli.command("eval")
@click.argument("corpus", type=click.Path())
@_checkpoint_options
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
                 runs_dir: str, as_json: bool, show: bool, limit: int | None,
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
    from charlm.data import first_chars, read_text  # noqa: PLC0415 - keep `--help` fast
    from charlm.evaluate import evaluate_text, fit_baselines, training_ids  # noqa: PLC0415

    if show and as_json:
        raise click.UsageError("--show and --json cannot be combined")
    if show and batch_size not in (None, 1):
        raise click.UsageError("--show reads the text in order: leave --batch-size at 1")
    batch_size = batch_size or (1 if show else 32)
    json_path, ckpt = _open_checkpoint(run_dir, checkpoint_path, runs_dir)
    text = first_chars(read_text(corpus), ckpt.vocab.mode, limit)
    train_corpus = ckpt.meta.get("corpus") or ckpt.config.data.corpus
    baselines, note = None, ""
    if not isinstance(train_corpus, str) or not Path(train_corpus).is_file():
        note = "baselines: training corpus not found"
    else:
        try:
            train = training_ids(train_corpus, ckpt.config.data, ckpt.vocab)
            baselines = fit_baselines(train, len(ckpt.vocab))
        except CharlmError as exc:
            note = f"baselines: skipped ({exc})"
    result = evaluate_text(ckpt.model(), ckpt.params, ckpt.vocab, text, batch_size,
                           baselines=baselines, keep_losses=show)  # fmt: skip
    if as_json:
        scores = None if result.baselines is None else {
            name: {"loss": loss, "bpc": loss / _LN2} for name, loss in result.baselines.items()
        }  # fmt: skip
        click.echo(json.dumps({
            "chars": result.chars, "loss": result.loss, "bpc": result.bpc,
            "perplexity": result.perplexity, "unk_rate": result.unk_rate, "baselines": scores,
        }))  # fmt: skip
        return
    if show:
        _show_losses(text, result.losses, ckpt.vocab.mode == "lines")
    ends = " (line ends included)" if ckpt.vocab.mode == "lines" else ""
    click.echo(f"{json_path} (step {ckpt.step}) on {corpus}: {result.chars:,} characters "
               f"predicted{ends}, <UNK> rate {result.unk_rate:.2%}")  # fmt: skip
    click.echo(f"{'':8} {'nats/char':>10} {'bits/char':>10} {'perplexity':>11}")
    rows = [("model", result.loss), *(result.baselines or {}).items()]
    for name, loss in rows:
        ppl = math.exp(min(loss, 700.0))
        click.echo(f"{name:8} {loss:10.4f} {loss / _LN2:10.4f} {ppl:11.4g}")
    if note:
        click.echo(note)


def _show_losses(text: str, losses: Any, lines: bool) -> None:
    """`text` coloured by per-character loss, a legend, and the most surprising characters."""
    import numpy as np  # noqa: PLC0415

    from charlm.evaluate import loss_bins, most_surprising  # noqa: PLC0415

    # losses[i] scores ids[i + 1]: in lines mode ids[0] is the start <EOS>, so character j is
    # losses[j]; in stream mode the first character is not predicted and j is losses[j - 1].
    bits = np.full(len(text), np.nan)
    offset = 0 if lines else 1
    scored = np.asarray(losses)[: len(text) - offset] / _LN2
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


@cli.command()
@click.argument("run", type=click.Path())
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False),
    default=None,
    help="Image file to write; its suffix picks the format (.png, .pdf, .svg, ...; none: "
    ".png added) [default: RUN/loss.png].",
)
def plot(run: str, output: str | None) -> None:
    """Training and validation loss curves of RUN (from its metrics.jsonl).

    Writes an image with matplotlib (pip install 'charlm[plot]'); without it, prints a text
    chart.
    """
    from charlm.plot import INSTALL_HINT, image_target, read_metrics, save_image, text_chart  # noqa: PLC0415

    # A bad -o fails before the metrics are read.
    target, fmt = image_target(output) if output is not None else (None, "png")
    path = Path(run)
    curves = read_metrics(path if path.is_file() else path / "metrics.jsonl")
    if target is None:
        try:
            import matplotlib  # noqa: F401, PLC0415 - optional extra charlm[plot]
        except ImportError:
            click.echo(text_chart(curves))
            click.echo(f"install matplotlib for a PNG: {INSTALL_HINT}")
            return
        target = (path.parent if path.is_file() else path) / "loss.png"
    save_image(curves, target, fmt, title=str(path))
    click.echo(f"saved {target}")
