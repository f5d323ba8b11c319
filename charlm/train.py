"""Training: truncated BPTT over the batch stream, checkpoints that survive anything.

The loop (`Trainer._train`) reads top to bottom: batch (some rows restarting from the zero
state) -> loss and gradients -> divergence check -> clip -> learning rate -> update -> log /
evaluate / checkpoint / sample. Everything a resume needs -- parameters, optimizer moments,
step, RNG state, data position, carried hidden state, elapsed time, the corpus fingerprint --
goes into each checkpoint, so a resumed run continues exactly. The run directory's policy
(its lock, what a resume may change) lives in `charlm.rundir`. Nothing here prints: progress
goes to a `Reporter` (the CLI's progress bar).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from charlm.backend import array_module, keep_freed_memory, to_device, to_numpy
from charlm.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from charlm.config import Config, SampleConfig, save_config
from charlm.data import BatchStream, Corpus, load_corpus
from charlm.errors import CharlmError
from charlm.evaluate import evaluate_ids
from charlm.model import CharModel, State
from charlm.optim import Optimizer, clip_gradients, learning_rate
from charlm.rundir import (
    CorpusFingerprint,
    RunLock,
    append_metrics,
    check_same_corpus,
    clear_run,
    describe_changes,
    holds_run,
    only_leftovers,
    resume_changes,
    truncate_metrics,
)


class DivergenceError(CharlmError):
    """The loss or gradient norm became NaN or infinite."""


class Reporter(Protocol):
    """Where the trainer sends progress (the CLI shows it; tests collect it)."""

    def start(self, step: int, total: int | None) -> None: ...
    def update(self, record: dict[str, Any]) -> None: ...
    def message(self, text: str) -> None: ...
    def close(self) -> None: ...


@dataclass
class TrainResult:
    """How a run ended: 'finished', 'interrupted', 'early stopping' or 'time budget'."""

    reason: str
    step: int
    last_checkpoint: Path
    best_val_loss: float | None
    signal_name: str = ""


@dataclass
class StopRequest:
    """Set by SIGINT/SIGTERM; the loop stops cleanly between steps. A second Ctrl-C aborts at
    once -- except during a checkpoint write, which it lets finish first."""

    signal_name: str = ""
    abort_pending: bool = False
    writing: bool = False

    def handle(self, signum: int, frame: Any) -> None:
        if not self.signal_name:
            self.signal_name = signal.Signals(signum).name
        elif self.writing:
            self.abort_pending = True
        else:  # asked twice: the user means it
            raise KeyboardInterrupt

    @contextlib.contextmanager
    def protect(self) -> Iterator[None]:
        """No KeyboardInterrupt from a second signal inside; it is raised right after."""
        self.writing = True
        try:
            yield
        finally:
            self.writing = False
        if self.abort_pending:
            raise KeyboardInterrupt


@contextlib.contextmanager
def graceful_stop() -> Iterator[StopRequest]:
    """Route SIGINT and SIGTERM to a StopRequest while training (main thread only)."""
    request = StopRequest()
    saved = {}
    with contextlib.suppress(ValueError):  # not the main thread: leave signals alone
        for sig in (signal.SIGINT, signal.SIGTERM):
            saved[sig] = signal.signal(sig, request.handle)
    try:
        yield request
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)


def default_run_dir(corpus: str | Path, runs_dir: str | Path = "runs") -> Path:
    """runs/<corpus file name without extension>."""
    return Path(runs_dir) / Path(corpus).stem


@dataclass
class Trainer:
    """A run in progress: config, data, model, parameters, optimizer and loop position."""

    config: Config
    run_dir: Path
    corpus: Corpus
    model: CharModel
    params: dict[str, Any]
    optimizer: Optimizer
    rng: np.random.Generator
    step: int = 0
    data_position: int = 0
    hidden: State | None = None
    elapsed: float = 0.0
    best_val_loss: float | None = None
    evals_since_best: int = 0
    notes: list[str] = field(default_factory=list)
    fingerprint: CorpusFingerprint | None = None  # of the corpus file, recorded in checkpoints
    lock: RunLock | None = None

    # ----------------------------------------------------------------------------- set-up
    @classmethod
    def create(
        cls,
        corpus_path: str | None,
        config: Config,
        run_dir: str | Path,
        resume: bool = False,
        init_from: str | None = None,
        overwrite: bool = False,
        allow_changed_corpus: bool = False,
    ) -> Trainer:
        """A new run in `run_dir`, or (resume) the run saved there, continued exactly.

        On resume `corpus_path` None means the corpus the run recorded, and a corpus whose
        contents changed is refused unless `allow_changed_corpus`. The trainer holds the run
        directory's lock until `run` returns (or `close`).
        """
        lock = RunLock(run_dir)
        try:
            return cls._create(
                corpus_path, config, Path(run_dir), lock, resume, init_from, overwrite,
                allow_changed_corpus,
            )  # fmt: skip
        except BaseException:
            lock.release()
            raise

    @classmethod
    def _create(
        cls,
        corpus_path: str | None,
        config: Config,
        run: Path,
        lock: RunLock,
        resume: bool,
        init_from: str | None,
        overwrite: bool,
        allow_changed_corpus: bool,
    ) -> Trainer:
        ckpt, notes, changes = None, [], {}
        if resume:
            if not (run / "last.json").is_file():
                hint = ("; the run stopped before its first checkpoint: start it again "
                        "without --resume") if only_leftovers(run) else ""  # fmt: skip
                raise CharlmError(f"nothing to resume: {run / 'last.json'} does not exist{hint}")
            lock.acquire()  # before reading: a live writer would make what we read stale
            ckpt = load_checkpoint(run / "last.json")
            changes = resume_changes(ckpt.config, config)
            if changes:
                notes.append(f"resuming with {describe_changes(changes)}")
            corpus_path = corpus_path or _recorded_corpus(ckpt)
        elif holds_run(run) and not overwrite:
            raise CharlmError(
                f"run directory {run} already holds a run; continue it with --resume, "
                "or choose another --run-dir (or --overwrite)"
            )
        if corpus_path is None:
            raise CharlmError("no corpus given (or set data.corpus in the config)")
        source = load_checkpoint(init_from) if init_from else None
        if source is not None:  # fine-tuning keeps the source checkpoint's architecture
            if source.config.model != config.model:
                notes.append(f"fine-tuning {init_from}: its model ({_describe(source.config)}) "
                             "is kept; the config's model settings are not used")  # fmt: skip
            config = dataclasses.replace(config, model=source.config.model)
        corpus = load_corpus(corpus_path, config.data, (ckpt or source).vocab if (ckpt or source)
                             else None)  # fmt: skip
        fingerprint = CorpusFingerprint.of(corpus_path)
        if ckpt is not None:
            recorded = CorpusFingerprint.from_meta(ckpt.meta)
            note = check_same_corpus(recorded, fingerprint, allow_changed_corpus)
            notes += [note] if note else []
        xp = array_module(config.train.device)
        dtype = np.dtype(config.train.dtype)
        model = CharModel(config.model, len(corpus.vocab))
        rng = np.random.default_rng(config.train.seed)
        params_np = (ckpt or source).params if (ckpt or source) else model.init_params(rng, dtype)
        params = {k: to_device(np.asarray(v, dtype=dtype), xp) for k, v in params_np.items()}
        t = config.train
        optimizer = Optimizer(t.optimizer, params, t.beta1, t.beta2, t.eps, t.weight_decay)
        trainer = cls(config, run, corpus, model, params, optimizer, rng, fingerprint=fingerprint)
        # Everything that can refuse the run is checked before the run directory is written.
        total = trainer.total_steps(trainer.batch_stream().windows_per_epoch)
        if ckpt is not None:
            trainer._restore(ckpt, xp, dtype)
            trainer._refuse_if_done(total)
        try:
            run.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise CharlmError(f"cannot create run directory {run}: {exc.strerror}") from None
        try:
            trainer.lock = lock.acquire()
        except OSError as exc:
            raise CharlmError(f"cannot write in run directory {run}: {exc.strerror}") from None
        if ckpt is not None:
            truncate_metrics(run, trainer.step)
            if changes:  # the run's config.yaml always says what it trains with now
                save_config(config, run / "config.yaml")
                changed = {key: list(values) for key, values in changes.items()}
                append_metrics(run, {"step": trainer.step, "event": "resume", "changed": changed})
        else:
            if holds_run(run) and not overwrite:  # another run started here meanwhile
                raise CharlmError(f"run directory {run} already holds a run")
            if only_leftovers(run) and not overwrite:
                notes.append(f"replacing the files of a run in {run} that stopped before its "
                             "first checkpoint")  # fmt: skip
            clear_run(run)
            save_config(config, run / "config.yaml")
            corpus.vocab.save(run / "vocab.json")
            (run / "metrics.jsonl").write_text("")
        if corpus.unknown:
            sample = "".join(corpus.unknown[:10])
            notes.append(
                f"{corpus.unknown_count:,} characters are not in the vocabulary and become "
                f"<UNK> (e.g. {sample!r})"
            )
        trainer.notes = notes
        return trainer

    def close(self) -> None:
        """Release the run directory to other processes."""
        if self.lock is not None:
            self.lock.release()

    def _refuse_if_done(self, total: int | None) -> None:
        """A resumed run that already reached its limit: say so, and how to go on."""
        t, how = self.config.train, "to train on, raise it: --resume --set"
        if self._over_time():
            raise CharlmError(
                f"the run already used its time budget at step {self.step} ({self.elapsed:.0f} s "
                f"of train.max_seconds={t.max_seconds:g}); {how} train.max_seconds=SECONDS "
                f"with SECONDS > {self.elapsed:.0f}"
            )
        if total is not None and self.step >= total:
            key = "train.max_steps" if total == t.max_steps else "train.max_epochs"
            value = t.max_steps if total == t.max_steps else t.max_epochs
            more = f"STEPS with STEPS > {self.step}" if key == "train.max_steps" else "EPOCHS"
            raise CharlmError(
                f"the run already finished: step {self.step} of {total} ({key}={value:g}); "
                f"{how} {key}={more}"
            )

    def _restore(self, ckpt: Checkpoint, xp: Any, dtype: np.dtype) -> None:
        """Continue from `ckpt` exactly: moments, step, RNG, data position, hidden state."""
        meta = ckpt.meta
        try:
            self.optimizer.load_state_arrays(ckpt.optimizer, _count(meta, "optimizer_t"))
            self.rng.bit_generator.state = meta["rng"]
            self.step = ckpt.step
            self.data_position = _count(meta, "data_position")
            self.elapsed = float(meta["elapsed_s"])
            best = meta.get("best_val_loss")
            if best is not None and (isinstance(best, bool) or not isinstance(best, (int, float))):
                raise ValueError(f"best_val_loss must be a number or null, got {best!r}")
            self.best_val_loss = best
            self.evals_since_best = _count(meta, "evals_since_best", 0)
            self.hidden = [
                tuple(to_device(ckpt.hidden[f"l{i}/{n}"].astype(dtype), xp) for n in c.state_names)
                for i, c in enumerate(self.model.cells)
            ]
        except (KeyError, TypeError, ValueError) as exc:
            raise CharlmError(f"cannot resume from {self.run_dir}/last.json: {exc}") from None

    # ----------------------------------------------------------------------------- the loop
    def run(self, reporter: Reporter, stop: StopRequest | None = None) -> TrainResult:
        """Train until a limit, a stop request, early stopping or divergence."""
        try:
            with np.errstate(all="ignore"):  # every overflow is caught, with a message
                reason, saved_step, evaluated_step = self._train(reporter, stop)
                if reason != "interrupted" and evaluated_step != self.step and self._validates:
                    # The limit came during the last step's logging or saving: validate now.
                    record = {"step": self.step, **self._validate(stop)}
                    self._log(record)
                    reporter.update(record)
                    saved_step = -1  # `last` must hold the new best loss too
                # After a time budget `last` records all the time used: a resume then knows.
                if saved_step != self.step or reason == "time budget":
                    self._save("last", stop)
        finally:
            self.close()
        reporter.close()
        return TrainResult(
            reason,
            self.step,
            self.run_dir / "last.json",
            self.best_val_loss,
            stop.signal_name if stop else "",
        )

    def _train(self, reporter: Reporter, stop: StopRequest | None) -> tuple[str, int, int]:
        """The loop: (why it stopped, the step `last` was saved at, the step last evaluated)."""
        cfg, t = self.config, self.config.train
        xp = array_module(t.device)
        keep_freed_memory()
        stream = self.batch_stream(self.data_position)
        total = self.total_steps(stream.windows_per_epoch)
        state = self.hidden or self.model.initial_state(t.batch_size, self.params["Wy"].dtype, xp)
        dropout_rng = self.rng if cfg.model.dropout > 0 else None
        for note in self.notes:
            reporter.message(note)
        reporter.start(self.step, total)
        window = _new_window()
        saved_step = evaluated_step = -1
        resumed_at, clock = self.elapsed, time.perf_counter()
        while True:
            self.elapsed = resumed_at + time.perf_counter() - clock
            if self._limit_reached(total):
                reason = "time budget" if self._over_time() else "finished"
                return reason, saved_step, evaluated_step
            if stop is not None and stop.signal_name:
                return "interrupted", saved_step, evaluated_step
            started = time.perf_counter()
            batch = stream.next_batch()
            if batch.restarts is not None:
                state = self.model.restart_rows(state, batch.restarts)
            resets = None if batch.resets is None else xp.asarray(batch.resets)
            loss, grads, state, _ = self.model.loss(
                self.params, xp.asarray(batch.x), xp.asarray(batch.y), state, resets, dropout_rng
            )
            norm = clip_gradients(grads, t.clip, t.clip_kind)
            self._check_diverged(loss, norm)
            lr = learning_rate(
                self.step,
                t.lr,
                t.lr_schedule,
                t.warmup_steps,
                t.lr_decay,
                t.lr_decay_every,
                total or 0,
                t.min_lr,
            )
            self.optimizer.step(self.params, grads, lr)
            self.step += 1
            self.data_position = stream.position
            self.hidden = state
            self.elapsed = resumed_at + time.perf_counter() - clock
            window["loss"] += loss
            window["steps"] += 1
            window["chars"] += batch.x.size
            window["time"] += time.perf_counter() - started
            window["norm"] = max(window["norm"], norm)
            final = self._limit_reached(total)  # every run that reaches a limit is validated
            evaluate = (self.step % t.eval_every == 0 or final) and self._validates
            if evaluate or self.step % t.log_every == 0 or final:
                record = self._train_record(window, lr, stream)
                window = _new_window()
                if evaluate:
                    record.update(self._validate(stop))
                    evaluated_step = self.step
                self._log(record)
                reporter.update(record)
            if self.step % t.checkpoint_every == 0 or evaluate:
                self._save("last", stop)
                saved_step = self.step
            if t.sample_every and self.step % t.sample_every == 0:
                reporter.message(self.preview())
            if t.patience and self.evals_since_best >= t.patience:
                return "early stopping", saved_step, evaluated_step

    @property
    def _validates(self) -> bool:
        return len(self.corpus.val_ids) > 1

    def _validate(self, stop: StopRequest | None) -> dict[str, float]:
        """Evaluate; a new best loss is saved as `best`."""
        result = self.evaluate()
        self._check_diverged(result["val_loss"], 0.0, "validation loss")
        if self._improved(result["val_loss"]):
            self._save("best", stop)
        return result

    # ----------------------------------------------------------------------------- helpers
    def _save(self, name: str, stop: StopRequest | None) -> None:
        """Write checkpoint `name`; a second Ctrl-C waits for the write to finish."""
        with stop.protect() if stop is not None else contextlib.nullcontext():
            save_checkpoint(self.run_dir, name, self.checkpoint())

    def batch_stream(self, position: int = 0) -> BatchStream:
        """The training batches from `position` on. Random restarts from the zero state only
        in stream mode: in lines mode every line already starts from it."""
        t, data = self.config.train, self.config.data
        restart = t.restart_prob if self.corpus.vocab.mode == "stream" else 0.0
        try:
            return self.corpus.batches(t.batch_size, t.seq_len, position, restart, t.seed)
        except CharlmError as exc:
            if data.val_file or not data.val_fraction:
                raise
            raise CharlmError(  # the split may be what left too little
                f"{exc}, or data.val_fraction (now {data.val_fraction:g}, so "
                f"{len(self.corpus.train_ids):,} ids are left to train on)"
            ) from None

    def total_steps(self, windows_per_epoch: int) -> int | None:
        """The step limit from max_steps and max_epochs (the smaller), None if only time."""
        t = self.config.train
        limits = [t.max_steps] if t.max_steps else []
        if t.max_epochs:
            limits.append(max(1, math.ceil(t.max_epochs * windows_per_epoch)))
        if t.lr_schedule == "cosine" and not limits:
            raise CharlmError(
                "train.lr_schedule cosine needs a length: set train.max_steps or train.max_epochs"
            )
        return min(limits) if limits else None

    def _over_time(self) -> bool:
        return bool(self.config.train.max_seconds) and self.elapsed >= self.config.train.max_seconds

    def _limit_reached(self, total: int | None) -> bool:
        return (total is not None and self.step >= total) or self._over_time()

    @property
    def loss_ceiling(self) -> float:
        """A loss above this (10x a uniform guess's ln V, at least 30 nats/char) has diverged."""
        return 10.0 * max(math.log(self.model.V), 3.0)

    def _check_diverged(self, loss: float, norm: float, what: str = "loss") -> None:
        """DivergenceError if the loss or the gradient norm is not finite, or the loss is
        above `loss_ceiling` (finite, but no model that learns gets there)."""
        if math.isfinite(loss) and math.isfinite(norm) and loss <= self.loss_ceiling:
            return
        if not math.isfinite(loss):
            bad = f"the {what} is {loss}"
        elif loss > self.loss_ceiling:
            bad = (f"the {what} is {loss:.4g} nats/char, more than 10x a uniform guess "
                   f"(ln {self.model.V} = {math.log(self.model.V):.2f})")  # fmt: skip
        else:
            bad = f"the gradient norm is {norm}"
        kept = self.run_dir / "last.json"
        keep = (f"the last good checkpoint {kept} is kept" if kept.exists() else
                "nothing was saved (a new run will replace this one)")  # fmt: skip
        hint = "lower train.lr" + ("" if self.config.train.clip else " or set train.clip (e.g. 5)")
        raise DivergenceError(
            f"training diverged at step {self.step + 1}: {bad}; {keep}. Try to {hint}."
        )

    def _improved(self, val_loss: float) -> bool:
        if self.best_val_loss is None or val_loss < self.best_val_loss:
            self.best_val_loss = val_loss
            self.evals_since_best = 0
            return True
        self.evals_since_best += 1
        return False

    def _train_record(self, window: dict[str, Any], lr: float, stream: Any) -> dict[str, Any]:
        record: dict[str, Any] = {
            "step": self.step,
            "epoch": round(stream.position / stream.windows_per_epoch, 4),
            "lr": lr,
            "elapsed_s": round(self.elapsed, 3),
        }
        if window["steps"]:
            loss = window["loss"] / window["steps"]
            record["train_loss"] = loss
            record["train_bpc"] = loss / math.log(2)
            record["grad_norm"] = window["norm"]
            record["chars_per_s"] = round(window["chars"] / max(window["time"], 1e-9), 1)
        return record

    def evaluate(self) -> dict[str, float]:
        """Loss over the whole validation split, with the state carried."""
        t = self.config.train
        result = evaluate_ids(
            self.model,
            self.params,
            self.corpus.val_ids,
            t.batch_size,
            t.seq_len,
            self.corpus.reset_id,
        )
        return {"val_loss": result.loss, "val_bpc": result.bpc, "val_ppl": result.perplexity}

    def preview(self) -> str:
        """A short sample, drawn with its own generator so training's RNG stream is untouched."""
        from charlm.sample import generate  # noqa: PLC0415 - only when previews are on

        t = self.config.train
        # Its own stream per (seed, step): training's RNG is untouched.
        settings = SampleConfig(max_len=t.sample_len, seed=t.seed * 2**32 + self.step)
        (text,) = generate(self.model, self.params, self.corpus.vocab, settings,
                           train_unk_count=self.corpus.train_unk_count)  # fmt: skip
        return f"--- sample at step {self.step} ---\n{text}"

    def checkpoint(self) -> Checkpoint:
        """Everything needed to sample, evaluate or resume exactly, as NumPy arrays."""
        hidden = {}
        for i, (cell, layer) in enumerate(zip(self.model.cells, self.hidden or [], strict=False)):
            hidden.update(
                {f"l{i}/{n}": to_numpy(s) for n, s in zip(cell.state_names, layer, strict=True)}
            )
        meta = {
            "optimizer_t": self.optimizer.t,
            "rng": self.rng.bit_generator.state,
            "data_position": self.data_position,
            "elapsed_s": self.elapsed,
            "best_val_loss": self.best_val_loss,
            "evals_since_best": self.evals_since_best,
            "corpus": str(self.corpus.path),
            **(self.fingerprint.to_meta() if self.fingerprint else {}),
            "train_unk_count": self.corpus.train_unk_count,
            "saved_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
        }
        params = {k: to_numpy(v) for k, v in self.params.items()}
        return Checkpoint(
            self.config,
            self.corpus.vocab,
            params,
            self.step,
            self.optimizer.state_arrays(),
            hidden,
            meta,
        )

    def _log(self, record: dict[str, Any]) -> None:
        append_metrics(self.run_dir, record)


def _count(meta: dict[str, Any], key: str, default: int | None = None) -> int:
    """A non-negative integer field of a checkpoint's metadata (ValueError otherwise)."""
    value = meta.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{key} must be an integer >= 0, got {value!r}")
    return value


def _new_window() -> dict[str, Any]:
    """Running sums between two log lines."""
    return {"loss": 0.0, "steps": 0, "chars": 0, "time": 0.0, "norm": 0.0}


def _recorded_corpus(ckpt: Checkpoint) -> str:
    """The corpus file a run recorded, for --resume without CORPUS."""
    recorded = ckpt.meta.get("corpus") or ckpt.config.data.corpus
    if not isinstance(recorded, str) or not recorded:
        raise CharlmError("the run does not record its corpus; give the CORPUS file")
    if not Path(recorded).is_file():
        raise CharlmError(f"the run's corpus {recorded} is not there any more; give CORPUS")
    return recorded


def _describe(config: Config) -> str:
    """'lstm 2x256'."""
    m = config.model
    return f"{m.cell} {m.num_layers}x{m.hidden_size}"
