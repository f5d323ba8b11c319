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
            where = f"{exc.filename}: " if getattr(exc, "filename", None) else ""
            raise click.ClickException(f"{where}{exc.strerror or exc}") from None
        except MemoryError:
            raise click.ClickException(
                "out of memory; try a smaller model, batch or corpus"
            ) from None


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
    """(checkpoint JSON path, loaded Checkpoint) from the --run / --checkpoint options."""
    from charlm.checkpoint import load_checkpoint, resolve_checkpoint  # noqa: PLC0415

    if run_dir is not None and checkpoint_path is not None:
        raise click.UsageError("give --run or --checkpoint, not both")
    json_path = resolve_checkpoint(checkpoint_path or run_dir or _latest_run(runs_dir))
    return json_path, load_checkpoint(json_path)


@cli.command()
@_checkpoint_options
@click.option(
    "--max-len",
    type=click.IntRange(min=1),
    default=None,
    help="Characters to generate per sample, the prime not counted [sample.max_len].",
)
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
@click.option(
    "--prime-file",
    type=click.Path(dir_okay=False),
    default=None,
    help="Read the prime from a file.",
)
@click.option(
    "--seed",
    type=click.IntRange(min=0),
    default=None,
    help="Random seed: the same seed gives the same text [sample.seed; none: random].",
)
@click.option(
    "--no-unk/--allow-unk",
    "no_unk",
    default=None,
    help="Never emit <UNK> (otherwise it appears as the text '<UNK>') [sample.no_unk].",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON array of the samples.")
def sample(run_dir: str | None, checkpoint_path: str | None, runs_dir: str,
           max_len: int | None, num: int | None, temperature: float | None, top_k: int | None,
           top_p: float | None, greedy: bool | None, prime: str | None, prime_file: str | None,
           seed: int | None, no_unk: bool | None, as_json: bool) -> None:  # fmt: skip
    """Generate text from a trained model.

    Settings come from the checkpoint's `sample` config section; options override them. A
    single sample streams to the terminal as it is generated.
    """
    import numpy as np  # noqa: PLC0415 - keep `charlm --help` fast

    from charlm.data import read_text  # noqa: PLC0415
    from charlm.sample import generate, unknown_chars  # noqa: PLC0415

    if prime is not None and prime_file is not None:
        raise click.UsageError("give --prime or --prime-file, not both")
    _, ckpt = _open_checkpoint(run_dir, checkpoint_path, runs_dir)
    s, vocab = ckpt.config.sample, ckpt.vocab
    if prime_file is not None:
        prime = read_text(prime_file)  # an empty file is an error
    prime = s.prime if prime is None else prime
    unknown = unknown_chars(vocab, prime)
    if unknown:
        click.echo(f"Warning: prime characters not in the vocabulary are read as <UNK>: "
                   f"{''.join(unknown)!r}", err=True)  # fmt: skip
    num = s.num if num is None else num
    seed = s.seed if seed is None else seed
    stream = num == 1 and not as_json

    def show(text: str) -> None:
        click.echo(text, nl=False)  # click.echo flushes: the text appears as it is drawn

    if stream:
        show(prime)
    samples = generate(
        ckpt.model(),
        ckpt.params,
        vocab,
        np.random.default_rng(seed),  # seed None: fresh entropy
        num=num,
        max_len=s.max_len if max_len is None else max_len,
        temperature=s.temperature if temperature is None else temperature,
        top_k=s.top_k if top_k is None else top_k,
        top_p=s.top_p if top_p is None else top_p,
        greedy=s.greedy if greedy is None else greedy,
        no_unk=s.no_unk if no_unk is None else no_unk,
        prime=prime,
        on_text=show if stream else None,
    )
    if as_json:
        click.echo(json.dumps([prime + text for text in samples], ensure_ascii=False))
    elif stream:
        click.echo()
    else:
        for i, text in enumerate(samples):
            if i and vocab.mode == "stream":
                click.echo()  # a blank line between samples that may span several lines
            click.echo(prime + text)


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
    help="Evaluate only the first N characters.",
)
@click.option("--batch-size", type=click.IntRange(min=1), default=1, show_default=True,
              help="1 reads the text in exact order. N > 1 is faster: the text is cut into N "
                   "contiguous streams, each read in order (the state restarts at each cut, and "
                   "fewer than N characters at the end are left out).")  # fmt: skip
def eval_command(corpus: str, run_dir: str | None, checkpoint_path: str | None,
                 runs_dir: str, as_json: bool, show: bool, limit: int | None,
                 batch_size: int) -> None:  # fmt: skip
    """Loss of a trained model on CORPUS, with unigram / bigram baselines.

    Reports nats and bits per character, perplexity and the <UNK> rate, over the whole text
    with the state carried. The baselines are add-one smoothed character n-gram models counted
    on the run's training split (when its corpus file is still there), scored on the same
    characters.
    """
    from charlm.data import read_text  # noqa: PLC0415 - keep `charlm --help` fast
    from charlm.evaluate import evaluate_text, fit_baselines, training_ids  # noqa: PLC0415

    if show and as_json:
        raise click.UsageError("--show and --json cannot be combined")
    if show and batch_size != 1:
        raise click.UsageError("--show reads the text in order: leave --batch-size at 1")
    json_path, ckpt = _open_checkpoint(run_dir, checkpoint_path, runs_dir)
    text = read_text(corpus)
    text = text if limit is None else text[:limit]
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
    help="PNG file to write [default: RUN/loss.png].",
)
def plot(run: str, output: str | None) -> None:
    """Training and validation loss curves of RUN (from its metrics.jsonl).

    Writes a PNG with matplotlib (pip install 'charlm[plot]'); without it, prints a text chart.
    """
    from charlm.plot import read_metrics, save_png, text_chart  # noqa: PLC0415

    path = Path(run)
    curves = read_metrics(path if path.is_file() else path / "metrics.jsonl")
    try:
        import matplotlib  # noqa: F401, PLC0415 - optional extra charlm[plot]
    except ImportError:
        click.echo(text_chart(curves))
        click.echo("install matplotlib for a PNG: pip install 'charlm[plot]'")
        return
    target = Path(output) if output else (path.parent if path.is_file() else path) / "loss.png"
    save_png(curves, target, title=str(path))
    click.echo(f"saved {target}")
