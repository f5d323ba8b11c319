"""A stream-mode model read from a cold start (the zero state), as sampling and `charlm eval`
read it: training restarts random batch rows from the zero state (`train.restart_prob`), so the
start is one the model knows.

Without those restarts a model trained for less than a few epochs has read from the zero state
once per epoch and row; some first characters then send it into states it never leaves. The
module's model, trained with `train.restart_prob=0`, fails the sample and batch-size checks here
(a cold-start sample of garbage, 5% between batch sizes 1 and 32).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from _cli_contract import DATA, QuietReporter

from charlm.baselines import fit_baselines
from charlm.config import SampleConfig, load_config
from charlm.data import BatchStream
from charlm.evaluate import evaluate_text
from charlm.model import CharModel
from charlm.sample import generate
from charlm.train import Trainer

SHAKESPEARE = (DATA / "tinyshakespeare.txt").read_text("utf-8")
TRAIN_CHARS = 500_000
UNSEEN = SHAKESPEARE[TRAIN_CHARS : TRAIN_CHARS + 40_000]  # never trained or validated on


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Trainer:
    """A 1x64 LSTM after 400 steps of 32x32 characters (less than one epoch): ~1 s."""
    root = tmp_path_factory.mktemp("cold")
    corpus = root / "corpus.txt"
    corpus.write_text(SHAKESPEARE[:TRAIN_CHARS], "utf-8")
    config = load_config(None, ["model.hidden_size=64", "model.num_layers=1",
                                "train.batch_size=32", "train.seq_len=32", "train.max_steps=400",
                                "train.lr=0.005", "train.eval_every=1000", "train.log_every=1000",
                                "train.checkpoint_every=1000"])  # fmt: skip
    assert config.train.restart_prob > 0  # the default this module checks
    trainer = Trainer.create(str(corpus), config, root / "run")
    trainer.run(QuietReporter())
    assert trainer.step == 400 and trainer.data_position < trainer.batch_stream().windows_per_epoch
    return trainer


def loss(trainer: Trainer, text: str, batch_size: int = 1) -> float:
    return evaluate_text(trainer.model, trainer.params, trainer.corpus.vocab, text, batch_size).loss


@pytest.mark.parametrize("first", ["\n", " ", "a", "Z", "$", "&", "3", ":", "?", "é"])
def test_one_character_more_at_the_start_changes_little(trained: Trainer, first: str) -> None:
    text = UNSEEN[:3000]
    assert abs(loss(trained, first + text) - loss(trained, text)) < 0.05


def test_eval_agrees_across_batch_sizes_on_a_long_unseen_text(trained: Trainer) -> None:
    one, many = loss(trained, UNSEEN, 1), loss(trained, UNSEEN, 32)
    assert abs(one - many) / one < 0.02, (one, many)


def test_states_from_different_first_characters_converge(trained: Trainer) -> None:
    """The mechanism: the model forgets how it started instead of carrying it along."""
    model, params, vocab = trained.model, trained.params, trained.corpus.vocab

    def final_state(first: str) -> np.ndarray:
        """Every layer's hidden state h (what the predictions are made from; an LSTM's cell
        state c may hold counters of any size)."""
        ids = vocab.encode(first + UNSEEN[:300]).astype(np.int64)[None]
        _, state, _ = model.forward(params, ids, model.initial_state(1, params["Wy"].dtype))
        return np.concatenate([layer[0].ravel() for layer in state])

    reference = final_state("\n")
    for first in "aZ$3 ":
        assert np.abs(final_state(first) - reference).max() < 0.01


@pytest.mark.parametrize("prime", ["", "First Citizen:"])
def test_cold_start_samples_read_like_the_training_text(trained: Trainer, prime: str) -> None:
    """20 seeds: each sample's characters pair up about as in real text. A sample of garbage
    (rare capitals and symbols after each other) scores several nats worse under a bigram
    model of the training text than the text itself."""
    vocab = trained.corpus.vocab
    bigram = fit_baselines(trained.corpus.train_ids, len(vocab))[1]

    def pair_loss(text: str) -> float:
        ids = vocab.encode(text).astype(np.int64)
        return float(bigram.losses(ids[:-1], ids[1:]).mean())

    real = pair_loss(UNSEEN[:5000])
    for seed in range(20):
        settings = SampleConfig(max_len=200, seed=seed, prime=prime)
        (text,) = generate(trained.model, trained.params, vocab, settings,
                           train_unk_count=trained.corpus.train_unk_count)  # fmt: skip
        assert "<UNK>" not in text
        assert pair_loss(prime + text) < real + 1.0, (seed, text)


# --- where the restarts come from ---------------------------------------------------------------


def test_restarts_are_seeded_by_position_and_come_at_the_configured_rate() -> None:
    ids = np.arange(64 * 10 * 8 + 1) % 50
    stream = BatchStream(ids, 64, 8, restart_prob=0.1, seed=3)  # 10 windows an epoch
    drawn = [stream.next_batch().restarts for _ in range(40)]
    assert all(r is not None and r.all() for r in drawn[::10])  # every epoch starts cold
    inside = np.array([np.zeros(64, bool) if r is None else r for i, r in enumerate(drawn)
                       if i % 10])  # fmt: skip
    assert 0.05 < inside.mean() < 0.15
    resumed = BatchStream(ids, 64, 8, position=17, restart_prob=0.1, seed=3)
    again = [resumed.next_batch().restarts for _ in range(23)]
    for a, b in zip(drawn[17:], again, strict=True):
        assert (a is None and b is None) or np.array_equal(a, b)
    other = BatchStream(ids, 64, 8, restart_prob=0.1, seed=4)
    assert any(
        not np.array_equal(a, other.next_batch().restarts) for a in drawn[1:10] if a is not None
    )
    never = BatchStream(ids, 64, 8, restart_prob=0.0)
    assert [never.next_batch().restarts is None for _ in range(10)] == [False] + [True] * 9


def test_restart_rows_zeroes_exactly_those_sequences() -> None:
    spec = load_config(None, ["model.cell=lstm", "model.hidden_size=5"]).model
    model = CharModel(spec, 7)
    rng = np.random.default_rng(0)
    state = [tuple(rng.standard_normal((5, 4)) for _ in layer) for layer in model.initial_state(4)]
    rows = np.array([True, False, False, True])
    restarted = model.restart_rows(state, rows)
    for layer, new_layer in zip(state, restarted, strict=True):
        for old, new in zip(layer, new_layer, strict=True):
            assert np.array_equal(new[:, rows], np.zeros((5, 2)))
            assert np.array_equal(new[:, ~rows], old[:, ~rows])


def test_lines_mode_trains_without_random_restarts(tmp_path: Path) -> None:
    corpus = tmp_path / "names.txt"
    corpus.write_text("anna\nbob\ncarla\ndave\n" * 50, "utf-8")
    config = load_config(None, ["data.mode=lines", "train.batch_size=4", "train.seq_len=8",
                                "train.restart_prob=0.5"])  # fmt: skip
    trainer = Trainer.create(str(corpus), config, tmp_path / "run")
    trainer.close()
    stream = trainer.batch_stream(position=1)
    assert stream.restart_prob == 0.0  # every line starts from the zero state already
