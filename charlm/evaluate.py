"""Loss of a model over a whole id sequence, in order, with the hidden state carried; plus the
corpus-level evaluation of `charlm eval` (loss, unknown-character rate, and the n-gram
baselines of `charlm.baselines` scored on the same positions) and its per-character views."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from charlm.baselines import Baseline
from charlm.data import Batch, count_id, encode_text, eval_batches
from charlm.device import to_numpy
from charlm.errors import CharlmError
from charlm.model import CharModel
from charlm.ops import softmax_cross_entropy
from charlm.prepared import open_prepared
from charlm.vocab import Vocab
from charlm.workspace import Workspace

LN2 = math.log(2.0)


@dataclass(frozen=True)
class EvalResult:
    """Mean loss over `chars` predicted characters; per-position losses when asked for."""

    loss: float  # nats per character
    chars: int
    losses: np.ndarray | None = None  # (chars,) in corpus order of each stream, if kept
    loss_sum: float = 0.0  # summed over the chars (what processes add up to share a pass)

    @property
    def bpc(self) -> float:
        """Bits per character."""
        return self.loss / LN2

    @property
    def perplexity(self) -> float:
        """e^loss (capped so a diverged model does not overflow)."""
        return math.exp(min(self.loss, 700.0))


def evaluate_ids(
    model: CharModel,
    params: dict[str, Any],
    ids: np.ndarray,
    batch_size: int,
    seq_len: int,
    reset_id: int | None = None,
    keep_losses: bool = False,
    shard: Callable[[Batch], Batch] | None = None,
) -> EvalResult:
    """Cross-entropy of predicting ids[i+1] from ids[..i], over `eval_batches` windows.

    With batch_size 1 every position is scored in corpus order; with more, the ids are cut into
    that many contiguous streams (each in order, state carried), dropping < batch_size ids.
    `shard` keeps some of each window's streams (one process' share of a pass).
    """
    xp = model.device.xp
    dtype = params["Wy"].dtype
    ws = Workspace(xp)  # one set of window buffers for the whole pass
    total, count, kept, kept_scored = 0.0, 0, [], []
    state = None
    for window in eval_batches(ids, batch_size, seq_len, reset_id):
        batch = shard(window) if shard else window
        N, T = batch.x.shape
        if N == 0:  # more processes than streams: this one has none
            break
        if state is None:
            state = model.initial_state(N, dtype)
        x, y = xp.asarray(batch.x), xp.asarray(batch.y)
        resets = None if batch.resets is None else xp.asarray(batch.resets)
        logits, state, _ = model.forward(params, x, state, resets, ws=ws)
        loss, _, losses = softmax_cross_entropy(logits.reshape(model.V, T * N), y.T.reshape(-1))
        if batch.scored is None:
            total += float(loss) * T * N
            count += T * N
        else:  # padding at the end of shorter streams does not count
            scored = batch.scored.T.reshape(-1)
            total += float((losses * xp.asarray(scored)).sum())
            count += int(scored.sum())
        if keep_losses:
            kept.append(to_numpy(losses).reshape(T, N))
            kept_scored.append(np.ones((T, N), bool) if batch.scored is None else batch.scored.T)
    per_pos = None
    if keep_losses and kept:
        # stream by stream, each in order: the corpus order
        per_pos = np.concatenate(kept).T.reshape(-1)[np.concatenate(kept_scored).T.reshape(-1)]
    return EvalResult(total / max(count, 1), count, per_pos, total)


# --- whole-corpus evaluation for `charlm eval` -------------------------------------------------


@dataclass(frozen=True)
class CorpusEval(EvalResult):
    """The numbers `charlm eval` reports for one corpus (losses: batch size 1 only)."""

    unk_rate: float = 0.0  # fraction of the corpus' characters outside the vocabulary
    baselines: dict[str, float] | None = None  # name -> loss in nats, on the same positions


def evaluate_text(
    model: CharModel,
    params: dict[str, Any],
    vocab: Vocab,
    text: str,
    batch_size: int = 1,
    seq_len: int = 256,
    baselines: list[Baseline] | None = None,
    keep_losses: bool = False,
) -> CorpusEval:
    """Loss of `model` on `text`, in order with the state carried (see `evaluate_ids`).

    The ids are `encode_text(text)`: in lines mode every character and every line end is
    predicted (from the leading <EOS>), in stream mode all but the first character. With
    batch_size > 1 the text is cut into that many in-order streams (faster; a few ids at the
    end are dropped). Baselines are scored on exactly the same positions.
    """
    ids = encode_text(text, vocab)
    return evaluate_encoded(model, params, vocab, ids, batch_size, seq_len, baselines,
                            keep_losses, unk_rate=1.0 - vocab.coverage(text))  # fmt: skip


def evaluate_encoded(
    model: CharModel,
    params: dict[str, Any],
    vocab: Vocab,
    ids: np.ndarray,
    batch_size: int = 1,
    seq_len: int = 256,
    baselines: list[Baseline] | None = None,
    keep_losses: bool = False,
    unk_rate: float = 0.0,
) -> CorpusEval:
    """`evaluate_text` of ids already encoded with `vocab` (a prepared corpus' memmap)."""
    reset = vocab.eos_id if vocab.mode == "lines" else None
    result = evaluate_ids(model, params, ids, batch_size, seq_len, reset, keep_losses)
    scores = None
    if baselines is not None:
        totals = dict.fromkeys((b.name for b in baselines), 0.0)
        for batch in eval_batches(ids, batch_size, seq_len, reset):
            scored = np.ones(batch.x.shape, bool) if batch.scored is None else batch.scored
            for b in baselines:
                totals[b.name] += float(b.losses(batch.x, batch.y)[scored].sum())
        scores = {name: total / max(result.chars, 1) for name, total in totals.items()}
    return CorpusEval(
        loss=result.loss,
        chars=result.chars,
        unk_rate=unk_rate,
        baselines=scores,
        losses=result.losses,
    )


def prepared_ids(path: str, vocab: Vocab, limit: int | None = None) -> tuple[np.ndarray, float]:
    """(ids in `vocab`, <UNK> rate) of the prepared corpus in directory `path`, all of it or its
    first `limit` ids (lines mode: whole lines). Memory-mapped when the corpus was prepared with
    `vocab`; otherwise its ids are translated into `vocab`'s, in memory."""
    prep = open_prepared(path)
    if prep.vocab.mode != vocab.mode:
        raise CharlmError(f"the prepared corpus {path} is in {prep.vocab.mode} mode, the model "
                          f"in {vocab.mode} mode")  # fmt: skip
    ids: np.ndarray = prep.ids
    if limit is not None and limit < len(ids):
        end = limit
        if vocab.mode == "lines":  # whole lines: cut after the last <EOS> within the limit
            ends = np.flatnonzero(ids[1 : limit + 1] == vocab.eos_id)
            end = int(ends[-1]) + 2 if len(ends) else limit
        ids = ids[:end]
    if prep.vocab.tokens != vocab.tokens:
        # each of the corpus' tokens -> the model's id for it (<UNK> if it has none)
        index = {t: i for i, t in enumerate(vocab.tokens)}
        table = np.array([index.get(t, vocab.unk_id) for t in prep.vocab.tokens], vocab.dtype)
        ids = table[ids]
    chars = len(ids) - (count_id(ids, vocab.eos_id) if vocab.mode == "lines" else 0)
    return ids, count_id(ids, vocab.unk_id) / max(chars, 1)


def prepared_baselines(path: str, vocab: Vocab, block: int = 1 << 22) -> list[Baseline]:
    """`fit_baselines` on a prepared corpus' training split, counted a block at a time."""
    prep = open_prepared(path)
    if prep.vocab != vocab:
        raise CharlmError(f"the prepared corpus {path} has another vocabulary now")
    V, train = len(vocab), prep.train_ids
    if V * V > 1 << 24:
        raise CharlmError(f"a vocabulary of {V:,} tokens is too large to count bigrams of")
    uni, pairs = np.zeros(V), np.zeros(V * V)
    for start in range(0, max(len(train) - 1, 0), block):
        part = train[start : start + block + 1].astype(np.int64)
        uni += np.bincount(part[1:], minlength=V)
        pairs += np.bincount(part[:-1] * V + part[1:], minlength=V * V)
    pairs = pairs.reshape(V, V)
    # The same add-one estimates as `charlm.baselines.fit_baselines`.
    unigram = np.log(uni + 1.0) - np.log(uni.sum() + V)
    bigram = np.log(pairs + 1.0) - np.log(pairs.sum(axis=1, keepdims=True) + V)
    return [Baseline("unigram", unigram), Baseline("bigram", bigram)]


def loss_bins(bits: np.ndarray, edges: Sequence[float]) -> np.ndarray:
    """Bin index 0..len(edges) of each per-character loss in bits (edges ascending)."""
    return np.searchsorted(np.asarray(edges, dtype=np.float64), bits, side="right")


def most_surprising(bits: np.ndarray, k: int) -> np.ndarray:
    """Positions of the k largest losses, largest first (ties: earlier position first)."""
    order = np.argsort(-bits, kind="stable")
    return order[: max(k, 0)]
