"""Small checkpoints shared by the sampling and evaluation tests, and random training batches."""

from __future__ import annotations

import functools

import numpy as np

from charlm.checkpoint import Checkpoint
from charlm.config import config_from_dict
from charlm.data import Batch, BatchStream, encode_text
from charlm.model import CharModel
from charlm.optim import Optimizer
from charlm.vocab import Vocab

WORDS = ("cat", "dog", "bird", "fish", "cow")
LINES_TEXT = "\n".join(WORDS * 40) + "\n"
TRAINED_SPEC = {"cell": "lstm", "hidden_size": 32, "num_layers": 1}


@functools.cache
def _trained() -> tuple[Vocab, dict[str, np.ndarray]]:
    """Vocabulary and parameters after 300 Adam steps on LINES_TEXT (about a second)."""
    vocab = Vocab.build(LINES_TEXT, "lines")
    model = CharModel(config_from_dict({"model": TRAINED_SPEC}).model, len(vocab))
    params = model.init_params(np.random.default_rng(0))
    opt = Optimizer("adam", params)
    stream = BatchStream(encode_text(LINES_TEXT, vocab), 8, 16, vocab.eos_id)
    state = model.initial_state(8)
    for _ in range(300):
        batch = stream.next_batch()
        _, grads, state, _ = model.loss(params, batch.x, batch.y, state, batch.resets)
        opt.step(params, grads, 1e-2)
    return vocab, params


def trained_lines(corpus: str = "") -> Checkpoint:
    """An LSTM that has learnt the five words of LINES_TEXT, one per line (lines mode), whose
    config names `corpus` as its training file."""
    config = config_from_dict({"model": TRAINED_SPEC, "data": {"mode": "lines", "corpus": corpus}})
    vocab, params = _trained()
    return Checkpoint(config, vocab, dict(params), step=300)


def random_batches(rng: np.random.Generator, V: int, N: int, T: int, count: int, lines: bool,
                   reset_p: float, restart_p: float) -> list[Batch]:  # fmt: skip
    """`count` batches of random ids (N, T) in [0, V): with resets at a rate `reset_p` in lines
    mode, else with restarts at a rate `restart_p` in every second batch."""
    batches = []
    for i in range(count):
        x, y = rng.integers(0, V, (N, T)), rng.integers(0, V, (N, T))
        resets = rng.random((N, T)) < reset_p if lines else None
        restarts = rng.random(N) < restart_p if (not lines and i % 2) else None
        batches.append(Batch(x, y, resets, restarts))
    return batches
