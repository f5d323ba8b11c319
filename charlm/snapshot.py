"""What a checkpoint holds of a run in progress, and putting it back exactly.

A snapshot is everything a resume needs: parameters, optimizer moments and update count, the
carried hidden state, the step and data position, the run's RNG state (and, on a GPU, how many
dropout draws were made), elapsed time, the best validation loss and the early-stopping count,
and which corpus the run reads (its path, size and SHA-256).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from charlm.checkpoint import Checkpoint
from charlm.device import to_numpy
from charlm.errors import CharlmError
from charlm.params import state_name

if TYPE_CHECKING:
    from charlm.train import Trainer


def snapshot(trainer: Trainer) -> Checkpoint:
    """Everything needed to sample, evaluate or resume `trainer` exactly, as NumPy arrays."""
    cells, state, world = trainer.model.cells, trainer.train_step.state, trainer.world
    hidden = {  # the whole batch's columns (H, N), from every process
        state_name(i, name): world.gather_columns(to_numpy(s))
        for i, (cell, layer) in enumerate(zip(cells, state, strict=True))
        for name, s in zip(cell.state_names, layer, strict=True)
    }
    meta: dict[str, Any] = {
        "optimizer_t": trainer.optimizer.t,
        "rng": trainer.rng.bit_generator.state,
        "data_position": trainer.data_position,
        "elapsed_s": trainer.elapsed,
        "best_val_loss": trainer.best_val_loss,
        "evals_since_best": trainer.evals_since_best,
        "corpus": str(trainer.corpus.path),
        **(trainer.fingerprint.to_meta() if trainer.fingerprint else {}),
        "train_unk_count": trainer.corpus.train_unk_count,
        "saved_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "world_size": world.size,  # processes that trained it (a resume may use another number)
        # Until the trainer notes how the run ended (`RunDir.record_end`): still training, or
        # killed if no process holds the run's lock.
        "status": "running",
    }
    draws = getattr(trainer.train_step.dropout, "draws", None)
    if draws is not None:  # uniforms drawn on the GPU: how many so far
        meta["dropout_draws"] = draws
    params = {k: to_numpy(v) for k, v in trainer.params.items()}
    return Checkpoint(trainer.config, trainer.corpus.vocab, params, trainer.step,
                      trainer.optimizer.state_arrays(), hidden, meta)  # fmt: skip


def restore(trainer: Trainer, ckpt: Checkpoint) -> None:
    """Continue `trainer` from `ckpt` exactly: moments, step, RNG, data position, hidden state
    (the parameters were loaded when it was built)."""
    meta, model, world = ckpt.meta, trainer.model, trainer.world
    xp, dtype = model.device.xp, trainer.params.flat.dtype
    try:
        trainer.optimizer.load_state_arrays(ckpt.optimizer, meta_count(meta, "optimizer_t"))
        trainer.rng.bit_generator.state = meta["rng"]
        dropout = trainer.train_step.dropout
        if hasattr(dropout, "draws"):
            dropout.draws = meta_count(meta, "dropout_draws", 0)
        trainer.step = ckpt.step
        trainer.data_position = meta_count(meta, "data_position")
        trainer.elapsed = float(meta["elapsed_s"])
        best = meta.get("best_val_loss")
        if best is not None and (isinstance(best, bool) or not isinstance(best, (int, float))):
            raise ValueError(f"best_val_loss must be a number or null, got {best!r}")
        trainer.best_val_loss = best
        trainer.evals_since_best = meta_count(meta, "evals_since_best", 0)
        columns = world.rows(trainer.config.train.batch_size)  # this process' share
        trainer.train_step.state = [
            tuple(xp.asarray(ckpt.hidden[state_name(i, n)][:, columns].astype(dtype))
                  for n in c.state_names)
            for i, c in enumerate(model.cells)
        ]  # fmt: skip
    except (KeyError, TypeError, ValueError) as exc:
        raise CharlmError(f"cannot resume from {trainer.run_dir}/last.json: {exc}") from None


def meta_count(meta: dict[str, Any], key: str, default: int | None = None) -> int:
    """A non-negative integer field of a checkpoint's metadata (ValueError otherwise)."""
    value = meta.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{key} must be an integer >= 0, got {value!r}")
    return value
