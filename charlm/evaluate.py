"""Loss of a model over a whole id sequence, in order, with the hidden state carried."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from charlm.backend import to_numpy, xp_of
from charlm.data import eval_batches
from charlm.model import CharModel
from charlm.ops import softmax_cross_entropy

LN2 = math.log(2.0)


@dataclass(frozen=True)
class EvalResult:
    """Mean loss over `chars` predicted characters; per-position losses when asked for."""

    loss: float  # nats per character
    chars: int
    losses: np.ndarray | None = None  # (chars,) in corpus order of each stream, if kept

    @property
    def bpc(self) -> float:
        """Bits per character."""
        return self.loss / LN2

    @property
    def perplexity(self) -> float:
        return math.exp(min(self.loss, 700.0))


def evaluate_ids(
    model: CharModel,
    params: dict[str, Any],
    ids: np.ndarray,
    batch_size: int,
    seq_len: int,
    reset_id: int | None = None,
    keep_losses: bool = False,
) -> EvalResult:
    """Cross-entropy of predicting ids[i+1] from ids[..i], over `eval_batches` windows.

    With batch_size 1 every position is scored in corpus order; with more, the ids are cut into
    that many contiguous streams (each in order, state carried), dropping < batch_size ids.
    """
    xp = xp_of(params["Wy"])
    dtype = params["Wy"].dtype
    total, count, kept = 0.0, 0, []
    state = None
    for batch in eval_batches(ids, batch_size, seq_len, reset_id):
        N, T = batch.x.shape
        if state is None:
            state = model.initial_state(N, dtype, xp)
        x, y = xp.asarray(batch.x), xp.asarray(batch.y)
        resets = None if batch.resets is None else xp.asarray(batch.resets)
        logits, state, _ = model.forward(params, x, state, resets)
        loss, _, losses = softmax_cross_entropy(logits.reshape(model.V, T * N), y.T.reshape(-1))
        total += loss * T * N
        count += T * N
        if keep_losses:
            kept.append(to_numpy(losses).reshape(T, N))
    per_pos = None
    if keep_losses and kept:
        per_pos = np.concatenate(kept, axis=0).T.reshape(-1)  # stream by stream, in order
    return EvalResult(total / max(count, 1), count, per_pos)
