"""Training: truncated BPTT over the batch stream, checkpoints that survive anything.

The loop (`Trainer.run`) reads top to bottom: batch -> loss and gradients -> NaN check ->
clip -> learning rate -> update -> log / evaluate / checkpoint / sample. Everything a resume
needs -- parameters, optimizer moments, step, RNG state, data position, carried hidden
state, elapsed time -- goes into each checkpoint, so a resumed run continues exactly.
Nothing here prints: progress goes to a `Reporter` (the CLI's progress bar).
"""

from __future__ import annotations

import contextlib
import json
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
from charlm.config import Config, save_config
from charlm.data import Corpus, load_corpus
from charlm.errors import CharlmError
from charlm.evaluate import evaluate_ids
from charlm.model import CharModel, State
from charlm.optim import Optimizer, clip_gradients, learning_rate

RUN_FILES = ("config.yaml", "vocab.json", "metrics.jsonl", "best.json", "last.json")


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

    # ----------------------------------------------------------------------------- set-up
    @classmethod
    def create(
        cls,
        corpus_path: str,
        config: Config,
        run_dir: str | Path,
        resume: bool = False,
        init_from: str | None = None,
        overwrite: bool = False,
    ) -> Trainer:
        """A new run in `run_dir`, or (resume) the run saved there, continued exactly."""
        run = Path(run_dir)
        ckpt = None
        holds_run = run.is_dir() and any((run / f).exists() for f in RUN_FILES)
        if resume:
            if not (run / "last.json").is_file():
                raise CharlmError(f"nothing to resume: {run / 'last.json'} does not exist")
            ckpt = load_checkpoint(run / "last.json")
        elif holds_run and not overwrite:
            raise CharlmError(
                f"run directory {run} already holds a run; continue it with --resume, "
                "or choose another --run-dir (or --overwrite)"
            )
        source = load_checkpoint(init_from) if init_from else None
        vocab = (ckpt or source).vocab if (ckpt or source) else None
        corpus = load_corpus(corpus_path, config.data, vocab)
        xp = array_module(config.train.device)
        dtype = np.dtype(config.train.dtype)
        model = CharModel(config.model, len(corpus.vocab))
        rng = np.random.default_rng(config.train.seed)
        if source is not None and source.config.model != config.model:
            config = _with_model(config, source)
            model = CharModel(config.model, len(corpus.vocab))
        params_np = (ckpt or source).params if (ckpt or source) else model.init_params(rng, dtype)
        params = {k: to_device(np.asarray(v, dtype=dtype), xp) for k, v in params_np.items()}
        t = config.train
        optimizer = Optimizer(t.optimizer, params, t.beta1, t.beta2, t.eps, t.weight_decay)
        trainer = cls(config, run, corpus, model, params, optimizer, rng)
        # Everything that can refuse the run is checked before the run directory is touched.
        trainer.total_steps(corpus.batches(t.batch_size, t.seq_len).windows_per_epoch)
        run.mkdir(parents=True, exist_ok=True)
        if holds_run and ckpt is None:  # --overwrite
            for old in [*(run / f for f in RUN_FILES), *run.glob("*.npz")]:
                old.unlink(missing_ok=True)
        if ckpt is not None:
            trainer._restore(ckpt, xp, dtype)
        else:
            save_config(config, run / "config.yaml")
            corpus.vocab.save(run / "vocab.json")
            (run / "metrics.jsonl").write_text("")
        if corpus.unknown:
            sample = "".join(corpus.unknown[:10])
            trainer.notes.append(
                f"{corpus.unknown_count:,} characters are not in the vocabulary and become "
                f"<UNK> (e.g. {sample!r})"
            )
        return trainer

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
        _truncate_metrics(self.run_dir / "metrics.jsonl", self.step)

    # ----------------------------------------------------------------------------- the loop
    def run(self, reporter: Reporter, stop: StopRequest | None = None) -> TrainResult:
        """Train until a limit, a stop request, early stopping or divergence."""
        cfg, t = self.config, self.config.train
        xp = array_module(t.device)
        keep_freed_memory()
        stream = self.corpus.batches(t.batch_size, t.seq_len, self.data_position)
        total = self.total_steps(stream.windows_per_epoch)
        state = self.hidden or self.model.initial_state(t.batch_size, self.params["Wy"].dtype, xp)
        dropout_rng = self.rng if cfg.model.dropout > 0 else None
        for note in self.notes:
            reporter.message(note)
        reporter.start(self.step, total)
        window = _new_window()
        reason, saved_step = "finished", -1
        resumed_at, clock = self.elapsed, time.perf_counter()
        while True:
            self.elapsed = resumed_at + time.perf_counter() - clock
            if self._limit_reached(total):
                reason = "time budget" if self._over_time() else "finished"
                break
            if stop is not None and stop.signal_name:
                reason = "interrupted"
                break
            started = time.perf_counter()
            if stream.starts_epoch():
                state = self.model.initial_state(t.batch_size, self.params["Wy"].dtype, xp)
            batch = stream.next_batch()
            resets = None if batch.resets is None else xp.asarray(batch.resets)
            with np.errstate(all="ignore"):  # overflow is caught just below, with a message
                loss, grads, state, _ = self.model.loss(
                    self.params,
                    xp.asarray(batch.x),
                    xp.asarray(batch.y),
                    state,
                    resets,
                    dropout_rng,
                )
                norm = clip_gradients(grads, t.clip, t.clip_kind)
            if not (math.isfinite(loss) and math.isfinite(norm)):
                raise DivergenceError(self._divergence_message(loss, norm))
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
            evaluate = self.step % t.eval_every == 0 and len(self.corpus.val_ids) > 1
            if evaluate or self.step % t.log_every == 0 or self.step == total:
                record = self._train_record(window, lr, stream)
                window = _new_window()
                if evaluate:
                    record.update(self.evaluate())
                    if self._improved(record["val_loss"]):
                        self._save("best", stop)
                self._log(record)
                reporter.update(record)
            if self.step % t.checkpoint_every == 0 or evaluate:
                self._save("last", stop)
                saved_step = self.step
            if t.sample_every and self.step % t.sample_every == 0:
                reporter.message(self.preview())
            if t.patience and self.evals_since_best >= t.patience:
                reason = "early stopping"
                break
        if saved_step != self.step:
            self._save("last", stop)
        reporter.close()
        return TrainResult(
            reason,
            self.step,
            self.run_dir / "last.json",
            self.best_val_loss,
            stop.signal_name if stop else "",
        )

    # ----------------------------------------------------------------------------- helpers
    def _save(self, name: str, stop: StopRequest | None) -> None:
        """Write checkpoint `name`; a second Ctrl-C waits for the write to finish."""
        with stop.protect() if stop is not None else contextlib.nullcontext():
            save_checkpoint(self.run_dir, name, self.checkpoint())

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

    def _divergence_message(self, loss: float, norm: float) -> str:
        what = "loss" if not math.isfinite(loss) else "gradient norm"
        value = loss if not math.isfinite(loss) else norm
        kept = self.run_dir / "last.json"
        keep = f"the last good checkpoint {kept} is kept" if kept.exists() else "nothing saved"
        hint = "lower train.lr" + ("" if self.config.train.clip else " or set train.clip (e.g. 5)")
        return (
            f"training diverged at step {self.step + 1}: the {what} is {value}; {keep}. "
            f"Try to {hint}."
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

        rng = np.random.default_rng([self.config.train.seed, self.step])
        t = self.config.train
        (text,) = generate(self.model, self.params, self.corpus.vocab, rng, max_len=t.sample_len)
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
        with open(self.run_dir / "metrics.jsonl", "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record) + "\n")


def _count(meta: dict[str, Any], key: str, default: int | None = None) -> int:
    """A non-negative integer field of a checkpoint's metadata (ValueError otherwise)."""
    value = meta.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{key} must be an integer >= 0, got {value!r}")
    return value


def _new_window() -> dict[str, Any]:
    """Running sums between two log lines."""
    return {"loss": 0.0, "steps": 0, "chars": 0, "time": 0.0, "norm": 0.0}


def _truncate_metrics(path: Path, step: int) -> None:
    """Drop log lines written after the checkpoint being resumed (they will be redone)."""
    if not path.exists():
        return
    kept = []
    for line in path.read_text("utf-8").splitlines():
        with contextlib.suppress(ValueError, TypeError, AttributeError):
            if json.loads(line).get("step", 0) <= step:
                kept.append(line)
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(line + "\n" for line in kept), "utf-8")
    tmp.replace(path)


def _with_model(config: Config, source: Checkpoint) -> Config:
    """Fine-tuning keeps the source checkpoint's architecture."""
    import dataclasses  # noqa: PLC0415

    return dataclasses.replace(config, model=source.config.model)
