"""Training: truncated BPTT over the batch stream, checkpoints that survive anything.

The loop (`Trainer._train`) reads top to bottom: batch -> one `TrainStep` (loss, gradients,
clipping, update; nothing read back from the device) -> log / evaluate / checkpoint / sample.
The step's loss and gradient norm are read when they are logged or the parameters are saved,
and checked then: a NaN or a blow-up stops the run naming the step, and the checkpoint on
disk is the last good one. Everything a resume needs -- parameters, optimizer moments, step,
RNG state, data position, carried hidden state, elapsed time, the corpus fingerprint -- goes
into each checkpoint, so a resumed run continues exactly. How a run starts is `charlm.launch`;
what it writes goes through its `RunDir`. Nothing here prints: progress goes to a `Reporter`.
"""

from __future__ import annotations

import dataclasses
import math
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from charlm.checkpoint import Checkpoint
from charlm.config import Config, SampleConfig
from charlm.data import BatchStream, Corpus
from charlm.device import get_device
from charlm.distributed import FollowerRunDir, ShardedUniforms, World
from charlm.errors import CharlmError
from charlm.evaluate import LN2, EvalResult, evaluate_ids
from charlm.launch import RunPlan, plan_run, refuse_if_done, step_limit
from charlm.model import CharModel
from charlm.optim import Optimizer
from charlm.params import FlatParams
from charlm.rundir import CorpusFingerprint, RunDir
from charlm.snapshot import restore, snapshot
from charlm.step import StepStats, TrainStep
from charlm.stopping import StopRequest


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


def default_run_dir(corpus: str | Path, runs_dir: str | Path = "runs") -> Path:
    """runs/<corpus file name without extension>."""
    return Path(runs_dir) / Path(corpus).stem


@dataclass
class LogWindow:
    """Running sums of the steps between two log lines (read from the device)."""

    loss: float = 0.0
    steps: int = 0
    chars: int = 0
    seconds: float = 0.0  # training time only: logging, evaluation and saving are left out
    norm: float = 0.0  # the largest gradient norm
    lr: float = 0.0  # the last step's learning rate
    started: float = field(default_factory=time.perf_counter)


@dataclass
class Trainer:
    """A run in progress: config, data, model, parameters, training step and loop position."""

    config: Config
    rundir: RunDir
    corpus: Corpus
    model: CharModel
    rng: np.random.Generator
    train_step: TrainStep
    step: int = 0
    data_position: int = 0
    elapsed: float = 0.0
    best_val_loss: float | None = None
    evals_since_best: int = 0
    notes: list[str] = field(default_factory=list)
    fingerprint: CorpusFingerprint | None = None  # of the corpus file, recorded in checkpoints
    pending: list[StepStats] = field(default_factory=list)  # steps not yet read from the device
    window: LogWindow = field(default_factory=LogWindow)
    world: World = field(default_factory=World)  # the processes training this run together

    # ----------------------------------------------------------------------------- set-up
    @classmethod
    def create(
        cls,
        corpus_path: str | None,
        config: Config | None,
        run_dir: str | Path,
        resume: bool = False,
        init_from: str | None = None,
        overwrite: bool = False,
        allow_changed_corpus: bool = False,
        overrides: tuple[str, ...] = (),
        world: World | None = None,
    ) -> Trainer:
        """A new run in `run_dir`, or (resume) the run saved there, continued exactly (see
        `charlm.launch.plan_run`; `config` None on resume: the run's own, with `overrides`).

        The trainer holds the run directory's lock until `run` returns (or `close`). With a
        `world` of several processes each calls this; only rank 0 writes (or locks) the run
        directory, and an error on any rank is raised on all (`World.together`).
        """
        world = world or World()
        rundir = RunDir(run_dir) if world.master else FollowerRunDir(run_dir)
        try:
            with world.together():
                # Only rank 0 checks for a run to keep: the others would see it starting.
                plan = plan_run(rundir, corpus_path, config, resume=resume, overrides=overrides,
                                init_from=init_from, overwrite=overwrite or not world.master,
                                allow_changed_corpus=allow_changed_corpus)  # fmt: skip
                trainer = cls._build(plan, rundir, world)
                # Everything that can refuse the run is checked before the run directory is
                # written.
                total = step_limit(trainer.config.train, trainer.batch_stream().windows_per_epoch)
                trainer.train_step.total_steps = total
                if plan.resume_from is not None:
                    restore(trainer, plan.resume_from)
                    refuse_if_done(trainer.config.train, trainer.step, trainer.elapsed, total)
                    saved_by = plan.resume_from.meta.get("world_size", 1)
                    note = world.resharding_note(saved_by, trainer.config.train.batch_size)
                    plan.notes += [note] if note else []
            with world.together():
                # Set up once every rank got this far: NCCL's set-up waits for all of them.
                trainer.train_step.grad_sync = world.grad_sync(trainer.model.device)
                rundir.open()
                if plan.resume_from is not None:
                    rundir.resume(trainer.step, trainer.config, plan.changes)
                else:
                    note = rundir.start(trainer.config, trainer.corpus.vocab, overwrite)
                    plan.notes += [note] if note else []
        except BaseException:
            rundir.close()
            raise
        corpus = trainer.corpus
        if corpus.unknown:
            sample = "".join(corpus.unknown[:10])
            plan.notes.append(
                f"{corpus.unknown_count:,} characters are not in the vocabulary and become "
                f"<UNK> (e.g. {sample!r})"
            )
        trainer.notes = plan.notes
        return trainer

    @classmethod
    def _build(cls, plan: RunPlan, rundir: RunDir, world: World) -> Trainer:
        """The trainer's objects for `plan`, on the configured device (of several processes,
        each one's own share of the batch: see `charlm.distributed`)."""
        config, t = plan.config, plan.config.train
        device = get_device(t.device, t.kernels, t.dtype)
        world.pick_gpu(device)
        model = CharModel(config.model, len(plan.corpus.vocab), device)
        rng = np.random.default_rng(t.seed)  # the same on every rank: the same initial weights
        given = plan.resume_from or plan.init_from
        initial = given.params if given else model.init_params(rng, np.dtype(t.dtype))
        dropout = device.uniforms(rng, t.seed) if config.model.dropout > 0 else None
        if dropout is not None and world.size > 1:
            dropout = ShardedUniforms(dropout, world)
        local = dataclasses.replace(t, batch_size=world.local_batch_size(t.batch_size))
        device.set_tf32(t.tf32)
        # A graphed step replays only the single-process sync: several ranks run uncaptured.
        step_type = device.train_step_type(t.cuda_graphs and world.size == 1)
        step = step_type.create(model, initial, local, dropout=dropout)
        return cls(config, rundir, plan.corpus, model, rng, step, fingerprint=plan.fingerprint,
                   world=world)  # fmt: skip

    @property
    def params(self) -> FlatParams:
        return self.train_step.params

    @property
    def optimizer(self) -> Optimizer:
        return self.train_step.optimizer

    @property
    def run_dir(self) -> Path:
        return self.rundir.path

    def close(self) -> None:
        """Release the run directory to other processes."""
        self.rundir.close()

    # ----------------------------------------------------------------------------- the loop
    def run(self, reporter: Reporter, stop: StopRequest | None = None) -> TrainResult:
        """Train until a limit, a stop request, early stopping or divergence; how it ended goes
        into the last checkpoint (`RunDir.record_end`), whichever way that is."""
        status, note = "failed", ""
        try:
            with np.errstate(all="ignore"):  # every overflow is caught, with a message
                reason, saved_step, evaluated_step = self._train(reporter, stop)
                if reason != "interrupted" and evaluated_step != self.step and self._validates:
                    # The limit came during the last step's logging or saving: validate now.
                    record = {"step": self.step, **self._validate(stop)}
                    self.rundir.log(record)
                    reporter.update(record)
                    saved_step = -1  # `last` must hold the new best loss too
                # After a time budget `last` records all the time used: a resume then knows.
                if saved_step != self.step or reason == "time budget":
                    self._save("last", stop)
            status = "interrupted" if reason == "interrupted" else "finished"
            # Why it stopped, where "finished" alone does not say it (its limit is the rule).
            note = {"interrupted": stop.signal_name if stop else "", "finished": ""}.get(
                reason, reason
            )
        except DivergenceError as exc:
            status, note = "diverged", str(exc).split(";", 1)[0]
            raise
        except KeyboardInterrupt:  # a second Ctrl-C
            status, note = "interrupted", "aborted"
            raise
        except Exception as exc:
            note = str(exc)[:200]
            raise
        finally:
            end = {"status": status, "status_note": note, "ended_at_step": self.step,
                   "ended_at": time.strftime("%Y-%m-%dT%H:%M:%S")}  # fmt: skip
            self.rundir.record_end(end, stop)
            self.close()
        reporter.close()
        return TrainResult(
            reason,
            self.step,
            self.rundir.checkpoint_path("last"),
            self.best_val_loss,
            stop.signal_name if stop else "",
        )

    def _train(self, reporter: Reporter, stop: StopRequest | None) -> tuple[str, int, int]:
        """The loop: (why it stopped, the step `last` was saved at, the step last evaluated)."""
        t = self.config.train
        stream = self.batch_stream(self.data_position)
        total = step_limit(self.config.train, stream.windows_per_epoch)
        for note in self.notes:
            reporter.message(note)
        reporter.start(self.step, total)
        self.window = LogWindow()
        saved_step = evaluated_step = -1
        resumed_at, clock = self.elapsed, time.perf_counter()
        while True:
            stopping = self._tick(resumed_at, clock, stop)
            if self._limit_reached(total):
                reason = "time budget" if self._over_time() else "finished"
                return reason, saved_step, evaluated_step
            if stopping:
                return "interrupted", saved_step, evaluated_step
            batch = self.world.shard(stream.next_batch())
            self.pending.append(self.train_step(batch, self.step))
            self.step += 1
            self.data_position = stream.position
            self._tick(resumed_at, clock, stop)
            final = self._limit_reached(total)  # every run that reaches a limit is validated
            evaluate = (self.step % t.eval_every == 0 or final) and self._validates
            log = evaluate or self.step % t.log_every == 0 or final
            save = self.step % t.checkpoint_every == 0 or evaluate
            preview = bool(t.sample_every) and self.step % t.sample_every == 0
            if not (log or save or preview):
                continue
            self._read_steps()  # before anything reports or keeps the parameters
            if log:
                record = self._train_record(stream)
                self.window = LogWindow()
                if evaluate:
                    record.update(self._validate(stop))
                    evaluated_step = self.step
                self.rundir.log(record)
                reporter.update(record)
            if save:
                self._save("last", stop)
                saved_step = self.step
            if preview and self.world.master:
                reporter.message(self.preview())
            if t.patience and self.evals_since_best >= t.patience:
                return "early stopping", saved_step, evaluated_step
            self.window.started = time.perf_counter()

    def _tick(self, resumed_at: float, clock: float, stop: StopRequest | None) -> bool:
        """Update `elapsed`; whether a stop was asked. Several processes agree on both (each
        rank's clock and signals are its own, and all must stop at the same step)."""
        elapsed = resumed_at + time.perf_counter() - clock
        asked = signal.Signals[stop.signal_name].value if stop and stop.signal_name else 0
        self.elapsed, asked = self.world.agree(elapsed, asked)
        if asked and stop is not None and not stop.signal_name:  # another rank got it
            stop.signal_name = signal.Signals(asked).name
        return bool(asked)

    def _read_steps(self) -> None:
        """Read the pending steps' loss and norm from the device into the log window, checking
        each (a DivergenceError names the first bad step). The loss is the global batch's:
        the mean of the ranks' losses over their equal shares."""
        if not self.pending:
            return  # nothing since the last read: the time since then was not training
        window = self.window
        losses = self.world.average(np.array([float(s.loss) for s in self.pending]))
        for stats, loss in zip(self.pending, losses.tolist(), strict=True):
            norm = float(stats.grad_norm)
            self._check_diverged(loss, norm, stats.step)
            window.loss += loss
            window.steps += 1
            window.chars += stats.chars * self.world.size
            window.norm = max(window.norm, norm)
            window.lr = stats.lr
        self.pending.clear()
        now = time.perf_counter()
        window.seconds += now - window.started
        window.started = now

    @property
    def _validates(self) -> bool:
        return len(self.corpus.val_ids) > 1

    def _validate(self, stop: StopRequest | None) -> dict[str, float]:
        """Evaluate; a new best loss is saved as `best`."""
        result = self.evaluate()
        self._check_diverged(result["val_loss"], 0.0, self.step + 1, "validation loss")
        if self._improved(result["val_loss"]):
            self._save("best", stop)
        return result

    # ----------------------------------------------------------------------------- helpers
    def _save(self, name: str, stop: StopRequest | None) -> None:
        """Write checkpoint `name` (the pending steps checked first: only good parameters are
        saved); a second Ctrl-C waits for the write to finish. Each save of `last` is kept
        numbered too when train.keep_checkpoints asks for it. Several processes first check
        that their parameters are still the same."""
        self._read_steps()
        checkpoint = self.checkpoint()
        self.world.check_identical(checkpoint.params)
        self.rundir.save(name, checkpoint, stop, self.config.train.keep_checkpoints)

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

    def _over_time(self) -> bool:
        return bool(self.config.train.max_seconds) and self.elapsed >= self.config.train.max_seconds

    def _limit_reached(self, total: int | None) -> bool:
        return (total is not None and self.step >= total) or self._over_time()

    @property
    def loss_ceiling(self) -> float:
        """A loss above this (10x a uniform guess's ln V, at least 30 nats/char) has diverged."""
        return 10.0 * max(math.log(self.model.V), 3.0)

    def _check_diverged(self, loss: float, norm: float, step: int, what: str = "loss") -> None:
        """DivergenceError (naming update `step`) if the loss or the gradient norm is not
        finite, or the loss is above `loss_ceiling` (finite, but no model that learns gets
        there)."""
        if math.isfinite(loss) and math.isfinite(norm) and loss <= self.loss_ceiling:
            return
        if not math.isfinite(loss):
            bad = f"the {what} is {loss}"
        elif loss > self.loss_ceiling:
            bad = (f"the {what} is {loss:.4g} nats/char, more than 10x a uniform guess "
                   f"(ln {self.model.V} = {math.log(self.model.V):.2f})")  # fmt: skip
        else:
            bad = f"the gradient norm is {norm}"
        kept = self.rundir.checkpoint_path("last")
        keep = (f"the last good checkpoint {kept} is kept" if kept.exists() else
                "nothing was saved (a new run will replace this one)")  # fmt: skip
        hint = "lower train.lr" + ("" if self.config.train.clip else " or set train.clip (e.g. 5)")
        raise DivergenceError(f"training diverged at step {step}: {bad}; {keep}. Try to {hint}.")

    def _improved(self, val_loss: float) -> bool:
        if self.best_val_loss is None or val_loss < self.best_val_loss:
            self.best_val_loss = val_loss
            self.evals_since_best = 0
            return True
        self.evals_since_best += 1
        return False

    def _train_record(self, stream: BatchStream) -> dict[str, Any]:
        window = self.window
        record: dict[str, Any] = {
            "step": self.step,
            "epoch": round(stream.position / stream.windows_per_epoch, 4),
            "lr": window.lr,
            "elapsed_s": round(self.elapsed, 3),
        }
        if window.steps:
            loss = window.loss / window.steps
            record["train_loss"] = loss
            record["train_bpc"] = loss / LN2
            record["grad_norm"] = window.norm
            record["chars_per_s"] = round(window.chars / max(window.seconds, 1e-9), 1)
        return record

    def evaluate(self) -> dict[str, float]:
        """Loss over the whole validation split, with the state carried (several processes
        each take their share of its streams and add up the loss sums and counts)."""
        t = self.config.train
        mine = evaluate_ids(self.model, self.params, self.corpus.val_ids, t.batch_size,
                            t.seq_len, self.corpus.reset_id, shard=self.world.shard)  # fmt: skip
        total, count = self.world.allreduce(np.array([mine.loss_sum, mine.chars], np.float64))
        result = EvalResult(total / max(count, 1.0), int(count))
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
        return snapshot(self)
