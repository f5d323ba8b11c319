"""N-gram baselines for `charlm eval`: how far a model beats counting characters.

`training_ids` recovers a run's training split exactly as training cut it; `fit_baselines`
counts add-one smoothed unigram and bigram models of the next id on it. `Baseline.losses`
scores them per position, so `charlm.evaluate.evaluate_text` can put them on exactly the
positions the model is scored on.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from charlm.data import encode_text, read_text, split_corpus
from charlm.vocab import Vocab


class DataSpec(Protocol):
    """What `training_ids` reads of the `data` section (charlm.config.DataConfig)."""

    val_fraction: float
    val_file: str
    val_split: str
    split_seed: int


def training_ids(corpus: str, data: DataSpec, vocab: Vocab) -> np.ndarray:
    """The training split of a run's corpus, exactly as training cut it (`data.load_corpus`).

    `corpus` is read and encoded (`encode_text`), then split by `split_corpus`: with
    `data.val_file` set all of it was training data, otherwise what `data.val_fraction` left
    (whole lines drawn at random in lines mode unless `data.val_split` is tail, else the head
    before the validation tail). A missing or unreadable file is a CharlmError.
    """
    return split_corpus(encode_text(read_text(corpus), vocab), data, vocab)[0]


@dataclass(frozen=True)
class Baseline:
    """Add-one (Laplace) smoothed n-gram character model: log-probabilities of next ids."""

    name: str
    logp: np.ndarray  # (V,) for a unigram, (V, V) indexed [previous, next] for a bigram

    def losses(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """-log P(y | x) in nats at each position (x is ignored by the unigram)."""
        return -(self.logp[y] if self.logp.ndim == 1 else self.logp[x, y])


def fit_baselines(train: np.ndarray, V: int) -> list[Baseline]:
    """Unigram and bigram models of the next id, counted on `train`, add-one smoothed over V."""
    prev = train[:-1].astype(np.int64)
    nxt = train[1:].astype(np.int64)
    uni = np.bincount(nxt, minlength=V).astype(np.float64)
    unigram = np.log(uni + 1.0) - np.log(uni.sum() + V)
    if V * V <= 1 << 24:
        pairs = np.bincount(prev * V + nxt, minlength=V * V).reshape(V, V).astype(np.float64)
    else:  # a huge vocabulary: count only the pairs that occur
        codes, counts = np.unique(prev * V + nxt, return_counts=True)
        pairs = np.zeros((V, V), dtype=np.float64)
        pairs.flat[codes] = counts
    bigram = np.log(pairs + 1.0) - np.log(pairs.sum(axis=1, keepdims=True) + V)
    return [Baseline("unigram", unigram), Baseline("bigram", bigram)]
