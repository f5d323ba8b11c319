"""Tests for charlm.sample (filters, draws, generation) and the `charlm sample` command."""

from __future__ import annotations

import errno
import json
import math
import os
import time
from pathlib import Path

import numpy as np
import pytest
from _models import WORDS, trained_lines
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import charlm.sample as sample_module
from charlm.checkpoint import Checkpoint, load_run_checkpoint, save_checkpoint
from charlm.cli import cli
from charlm.config import SampleConfig, config_from_dict
from charlm.errors import CharlmError, CheckpointError, ConfigError
from charlm.model import CharModel
from charlm.sample import (
    UNIFORM_BLOCK,
    banned_ids,
    bans_unk,
    draw,
    filter_probs,
    generate,
    start_id,
    training_had_unk,
    unknown_chars,
)
from charlm.vocab import Vocab

STREAM_TEXT = "the cat sat on the mat.\nthe dog sat on the log.\n" * 10


def make_ckpt(
    text: str = STREAM_TEXT,
    mode: str = "stream",
    seed: int = 0,
    dtype: type = np.float32,
    sample: dict | None = None,
    meta: dict | None = None,
    **model,
) -> Checkpoint:
    """An untrained checkpoint for `text` (small LSTM unless `model` says otherwise)."""
    spec = {"cell": "lstm", "hidden_size": 16, "num_layers": 1, **model}
    config = config_from_dict({"model": spec, "data": {"mode": mode}, "sample": sample or {}})
    vocab = Vocab.build(text, mode)
    params = CharModel(config.model, len(vocab)).init_params(np.random.default_rng(seed), dtype)
    return Checkpoint(config, vocab, params, step=0, meta=dict(meta or {}))


def gen(
    ckpt: Checkpoint,
    *,
    stop: tuple[str, ...] | list[str] = (),
    train_unk_count: int | None = None,
    on_text=None,
    **settings_: object,
) -> list[str]:
    """`generate` with a SampleConfig made of `settings_` (seed 0 unless given)."""
    config = SampleConfig(**{"seed": 0, **settings_})
    return generate(ckpt.model(), ckpt.params, ckpt.vocab, config, stop=stop,
                    train_unk_count=train_unk_count, on_text=on_text)  # fmt: skip


def run_dir_with(tmp_path: Path, ckpt: Checkpoint, name: str = "run") -> Path:
    run = tmp_path / name
    run.mkdir(parents=True, exist_ok=True)
    save_checkpoint(run, "last", ckpt)
    return run


def invoke(*args: str) -> object:
    return CliRunner().invoke(cli, list(args))


def assert_one_line_error(result: object, code: tuple[int, ...] = (1,), match: str = "") -> None:
    assert result.exit_code in code, result.output
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    last = result.output.strip().splitlines()[-1]
    assert last.startswith("Error:"), result.output
    assert match.lower() in last.lower(), result.output


def as_printed(samples: list[str], stream: bool = True) -> str:
    """What `charlm sample` prints for `samples`: each ends with one line break (added when it
    has none), with a blank line between stream-mode samples."""
    ended = [s if s.endswith("\n") else s + "\n" for s in samples]
    return ("\n" if stream else "").join(ended)


def greedy_reference(ckpt: Checkpoint, max_len: int, prime: str = "") -> str:
    """Argmax decoding written out step by step with model.step (no batching, no filters)."""
    model, params, vocab = ckpt.model(), ckpt.params, ckpt.vocab
    state = model.initial_state(1)
    banned = banned_ids(vocab, no_unk=bans_unk(None, vocab))  # the default: auto
    out = []
    for i in [start_id(vocab), *vocab.encode(prime).tolist()]:
        if vocab.mode == "lines" and i == vocab.eos_id:
            state = model.initial_state(1)
        logits, state = model.step(params, np.array([i]), state)
    for _ in range(max_len):
        z = logits[:, 0].astype(np.float64)
        z[banned] = -np.inf
        i = int(z.argmax())
        if vocab.mode == "lines" and i == vocab.eos_id:
            break
        out.append(vocab.tokens[i])
        logits, state = model.step(params, np.array([i]), state)
    return "".join(out)


# --- filters and draws -----------------------------------------------------------------------

logit_arrays = arrays(
    np.float64,
    st.tuples(st.integers(2, 12), st.integers(1, 4)),
    elements=st.floats(-20, 20, allow_nan=False),
)


@settings(max_examples=150, deadline=None)
@given(logit_arrays, st.integers(1, 14), st.floats(0.2, 5.0))
def test_top_k_keeps_only_the_k_most_likely(logits: np.ndarray, k: int, temperature: float):
    probs = filter_probs(logits, temperature, top_k=k)
    V = logits.shape[0]
    np.testing.assert_allclose(probs.sum(axis=0), 1.0, rtol=1e-12)
    for col in range(logits.shape[1]):
        z, p = logits[:, col], probs[:, col]
        kept = p > 0
        kth = np.sort(z)[::-1][min(k, V) - 1]
        assert np.all(z[kept] >= kth)  # nothing below the k-th largest
        assert np.all(kept[z > kth])  # everything above it
        assert kept.sum() >= min(k, V)
        # Within the kept set the probabilities are the softmax of logits / temperature.
        ref = np.exp((z[kept] - z[kept].max()) / temperature)
        np.testing.assert_allclose(p[kept], ref / ref.sum(), rtol=1e-9)


@settings(max_examples=150, deadline=None)
@given(logit_arrays, st.floats(0.01, 1.0))
def test_top_p_keeps_exactly_the_nucleus(logits: np.ndarray, top_p: float):
    probs = filter_probs(logits, 1.0, top_p=top_p)
    q = np.exp(logits - logits.max(axis=0))
    q /= q.sum(axis=0)
    for col in range(logits.shape[1]):
        qc, kept = q[:, col], probs[:, col] > 0
        assert kept.any()
        if not kept.all():
            assert qc[kept].min() >= qc[~kept].max()  # the most probable ids
        mass = qc[kept].sum()
        assert mass >= top_p - 1e-9  # reaches p ...
        assert mass - qc[kept].min() < top_p + 1e-9  # ... and no smaller set of them would
        np.testing.assert_allclose(probs[kept, col], qc[kept] / mass, rtol=1e-9)


def test_banned_ids_get_no_probability_and_tiny_temperature_is_safe():
    logits = np.array([[50.0, 1.0], [2.0, 3.0], [1.0, 2.0]])
    probs = filter_probs(logits, 1e-300, banned=[0])
    assert np.all(probs[0] == 0)
    np.testing.assert_array_equal(probs, [[0, 0], [1, 1], [0, 0]])


def test_draw_matches_the_probabilities():
    # The notes' example: P = 0.1, 0.0, 0.7, 0.2; draws across many columns at once.
    p = np.array([0.1, 0.0, 0.7, 0.2])
    n = 100_000
    ids = draw(np.repeat(p[:, None], n, axis=1), np.random.default_rng(0).random(n))
    counts = np.bincount(ids, minlength=4)
    assert counts[1] == 0  # probability 0 is never drawn
    nz = p > 0
    chi2 = (((counts - n * p)[nz]) ** 2 / (n * p[nz])).sum()
    assert chi2 < 13.8  # chi-square, 2 degrees of freedom, p = 0.001


def test_filtered_softmax_draws_match_softmax():
    rng = np.random.default_rng(1)
    logits = rng.normal(size=10) * 2
    q = np.exp(logits - logits.max())
    q /= q.sum()
    n = 200_000
    probs = filter_probs(np.repeat(logits[:, None], n, axis=1))
    counts = np.bincount(draw(probs, rng.random(n)), minlength=10)
    chi2 = ((counts - n * q) ** 2 / (n * q)).sum()
    assert chi2 < 27.9  # 9 degrees of freedom, p = 0.001
    # A skewed draw would fail: the same counts against a uniform distribution.
    assert ((counts - n / 10) ** 2 / (n / 10)).sum() > 1000


def test_draw_never_picks_zero_probability_at_the_edges():
    edges = np.array([0.0, np.nextafter(1.0, 0.0)])  # u = 0 and u just below 1
    p = np.array([[0.0, 0.0], [0.5, 0.5], [0.5, 0.5], [0.0, 0.0]])
    assert draw(p, edges).tolist() == [1, 2]


# --- generation --------------------------------------------------------------------------------


def test_same_seed_same_text_and_different_seeds_differ():
    ckpt = make_ckpt()
    assert gen(ckpt, seed=5, num=3, max_len=40) == gen(ckpt, seed=5, num=3, max_len=40)
    assert gen(ckpt, seed=5, num=3, max_len=40) != gen(ckpt, seed=6, num=3, max_len=40)
    assert len(set(gen(ckpt, seed=5, num=3, max_len=40))) > 1  # not copies of each other
    # seed None: fresh entropy every call.
    assert gen(ckpt, seed=None, max_len=40) != gen(ckpt, seed=None, max_len=40)


# float64, so that the batched products of different widths cannot round a column differently.
CKPT64 = make_ckpt(dtype=np.float64, seed=4)


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**64),
    a=st.integers(1, 9),
    b=st.integers(1, 9),
    temperature=st.sampled_from([0.7, 1.0, 2.0]),
    top_k=st.sampled_from([0, 3]),
)
def test_same_seed_same_ith_sample_whatever_num(seed, a, b, temperature, top_k):
    # The old sampler drew every column from one generator: --num 1 and --num 2 differed.
    kw = {"seed": seed, "max_len": 30, "temperature": temperature, "top_k": top_k}
    first, second = gen(CKPT64, num=a, **kw), gen(CKPT64, num=b, **kw)
    n = min(a, b)
    assert first[:n] == second[:n]


def test_same_ith_sample_in_lines_mode_where_samples_end_at_different_steps():
    ckpt = trained_lines()
    for seed in range(5):
        many = gen(ckpt, seed=seed, num=12, max_len=20)
        assert [gen(ckpt, seed=seed, num=n, max_len=20)[-1] for n in (1, 5, 12)] == [
            many[0],
            many[4],
            many[11],
        ]


def test_uniforms_are_drawn_in_blocks_per_sample(monkeypatch: pytest.MonkeyPatch):
    calls: list[tuple[int, int]] = []
    real = sample_module.sample_generators

    class Counting:
        def __init__(self, index: int, rng: np.random.Generator) -> None:
            self.index, self.rng = index, rng

        def random(self, n: int) -> np.ndarray:
            calls.append((self.index, n))
            return self.rng.random(n)

    def counting(seed: int | None, num: int) -> list[Counting]:
        return [Counting(i, g) for i, g in enumerate(real(seed, num))]

    expected = gen(CKPT64, seed=3, num=4, max_len=600)
    monkeypatch.setattr(sample_module, "sample_generators", counting)
    assert gen(CKPT64, seed=3, num=4, max_len=600) == expected  # the block size is invisible
    blocks = math.ceil(600 / UNIFORM_BLOCK)
    assert sorted(calls) == [(i, UNIFORM_BLOCK) for i in range(4) for _ in range(blocks)]
    calls.clear()
    gen(CKPT64, seed=3, num=4, max_len=600, greedy=True)
    assert calls == []  # greedy draws nothing


def test_lines_model_stops_at_eos():
    samples = gen(trained_lines(), num=20, max_len=50)
    assert len(samples) == 20
    for text in samples:
        assert "\n" not in text and "<EOS>" not in text
        assert 0 < len(text) < 50  # ended by <EOS>, well before max_len
    assert sum(text in WORDS for text in samples) >= 16  # it learnt the words
    assert len(set(samples)) >= 3


def test_length_never_exceeds_max_len():
    ckpt = make_ckpt()
    for max_len in (1, 7, 60):
        samples = gen(ckpt, num=4, max_len=max_len, no_unk=True)
        # Stream mode never ends early; with no <UNK> each token is one character.
        assert [len(s) for s in samples] == [max_len] * 4
    samples = gen(trained_lines(), num=10, max_len=2)
    assert all(len(s) <= 2 for s in samples)
    assert any(len(s) == 2 for s in samples)  # cut at max_len, not only at <EOS>


def _first_end(text: str, stops: list[str], lines: int) -> int:
    """Where a sample of `text` ends: right after the earliest-ending first occurrence of a stop
    string, or after its `lines`-th line break, else at its end."""
    ends = [text.find(s) + len(s) for s in stops if s in text]
    breaks = [i + 1 for i, c in enumerate(text) if c == "\n"]
    if lines and len(breaks) >= lines:
        ends.append(breaks[lines - 1])
    return min(ends, default=len(text))


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**32),
    num=st.integers(1, 6),
    stops=st.lists(st.text(alphabet="the cao.\n", min_size=1, max_size=3), max_size=3),
    lines=st.integers(0, 3),
)
def test_stops_and_lines_end_samples_right_after_the_first_occurrence(seed, num, stops, lines):
    kw = {"seed": seed, "num": num, "max_len": 80, "no_unk": True, "temperature": 1.5}
    full = gen(CKPT64, **kw)  # one token = one character (no <UNK>)
    cut = gen(CKPT64, stop=stops, lines=lines, **kw)
    # Stopping only shortens: each sample is its unstopped self up to the stop, included.
    assert cut == [f[: _first_end(f, stops, lines)] for f in full]


def test_stop_is_searched_in_the_generated_text_only():
    ckpt = trained_lines()
    assert gen(ckpt, num=3, max_len=10, prime="fi") == ["sh"] * 3
    assert gen(ckpt, num=3, max_len=10, prime="fi", stop=["s"]) == ["s"] * 3
    # In the prime, or across prime and sample, a stop string does not count.
    assert gen(ckpt, num=3, max_len=10, prime="fi", stop=["f", "is"]) == ["sh"] * 3
    assert gen(ckpt, max_len=10, prime="fi", stop=["sh", "h"]) == ["sh"]  # the first ends it


def test_stop_inside_a_special_token_ends_after_it():
    ckpt = make_ckpt()
    ckpt.params["by"][ckpt.vocab.unk_id] = 50.0  # <UNK> nearly always
    (text,) = gen(ckpt, max_len=20, no_unk=False, stop=["NK"])
    assert text == "<UNK>"  # "NK" ends inside the token: the sample ends after the token


def test_stop_strings_must_not_be_empty():
    with pytest.raises(CharlmError, match="stop string"):
        gen(make_ckpt(), stop=["a", ""])


def test_lines_setting_has_no_effect_in_lines_mode():
    ckpt = trained_lines()
    assert gen(ckpt, num=6, max_len=20, lines=3) == gen(ckpt, num=6, max_len=20)


def test_finished_samples_leave_the_batch(monkeypatch: pytest.MonkeyPatch):
    widths: list[int] = []
    real = CharModel.stepper

    def recording(self: CharModel, params: dict) -> object:
        step = real(self, params)

        def record(ids: np.ndarray, state: list) -> object:
            widths.append(len(ids))
            return step(ids, state)

        return record

    monkeypatch.setattr(CharModel, "stepper", recording)
    samples = gen(CKPT64, num=16, max_len=200, no_unk=True, stop=["a"], temperature=1.5)
    assert all(s.endswith("a") for s in samples)  # 200 characters without an "a": unlikely
    assert widths == sorted(widths, reverse=True) and widths[-1] < 16
    # A sample of n tokens takes n - 1 steps after its first draw, and no more.
    assert sum(widths) == sum(len(s) - 1 for s in samples)


# A model that likes <UNK>: how often it is drawn shows whether it was banned.
def unk_lover() -> Checkpoint:
    ckpt = make_ckpt()
    ckpt.params["by"][ckpt.vocab.unk_id] = 3.0
    return ckpt


def test_no_unk_from_a_model_whose_training_text_had_none():
    ckpt = unk_lover()
    assert ckpt.vocab.counts[ckpt.vocab.unk_id] == 0
    hot = {"num": 64, "max_len": 50, "temperature": 5.0}
    for count in (None, 0):  # the vocabulary's count, or the checkpoint's
        assert not any("<UNK>" in s for s in gen(ckpt, train_unk_count=count, **hot))
    for no_unk in (None, True):
        assert not any("<UNK>" in s for s in gen(ckpt, no_unk=no_unk, **hot))
    assert sum(s.count("<UNK>") for s in gen(ckpt, no_unk=False, **hot)) > 100  # asked for
    # A training text that had <UNK>: allowed by default, banned on request.
    assert sum(s.count("<UNK>") for s in gen(ckpt, train_unk_count=5, **hot)) > 100
    assert not any("<UNK>" in s for s in gen(ckpt, train_unk_count=5, no_unk=True, **hot))


def test_no_unk_even_when_unk_dominates():
    ckpt = make_ckpt()
    ckpt.params["by"][ckpt.vocab.unk_id] = 50.0
    with_unk = gen(ckpt, num=2, max_len=20, no_unk=False)
    assert with_unk[0].count("<UNK>") >= 15  # it is what the model wants
    for no_unk in (True, None):
        clean = gen(ckpt, num=2, max_len=20, no_unk=no_unk)
        assert all("<UNK>" not in s and len(s) == 20 for s in clean)
        assert all("<UNK>" not in s for s in gen(ckpt, num=2, max_len=20, greedy=True))


def test_training_had_unk_from_the_checkpoint_else_the_vocabulary():
    clean = Vocab.build("aab", "stream")
    rare = Vocab.build("aab", "stream", min_count=2)  # "b" maps to <UNK>
    no_counts = Vocab(clean.tokens, "stream")  # a vocabulary saved without counts
    assert not training_had_unk(clean) and training_had_unk(rare)
    assert not training_had_unk(no_counts)  # unknown reads as none: <UNK> banned by default
    assert training_had_unk(clean, 1) and not training_had_unk(rare, 0)  # the checkpoint wins
    assert training_had_unk(clean, np.int64(2))
    assert bans_unk(None, clean) and not bans_unk(None, rare)
    assert bans_unk(True, rare) and not bans_unk(False, clean)
    for bad in (-1, 1.5, "3", True):
        with pytest.raises(CharlmError, match="train_unk_count"):
            training_had_unk(clean, bad)


def test_stream_mode_never_emits_eos():
    ckpt = make_ckpt()
    ckpt.params["by"][ckpt.vocab.eos_id] = 50.0
    samples = gen(ckpt, num=3, max_len=30)
    assert all("<EOS>" not in s and len(s) >= 30 for s in samples)


def test_greedy_is_deterministic_argmax_decoding():
    for ckpt, prime in ((make_ckpt(), "the "), (trained_lines(), "bi"), (trained_lines(), "")):
        a = gen(ckpt, seed=0, num=2, max_len=30, greedy=True, prime=prime)
        b = gen(ckpt, seed=99, max_len=30, greedy=True, prime=prime, temperature=0.3)
        assert a == [a[0], a[0]] and b == [a[0]]
        assert a[0] == greedy_reference(ckpt, 30, prime)
    assert greedy_reference(trained_lines(), 30, "bi") == "rd"


def test_top_k_one_is_greedy():
    ckpt = make_ckpt(seed=3)
    assert gen(ckpt, seed=1, num=2, max_len=25, top_k=1) == [greedy_reference(ckpt, 25)] * 2


def test_prime_warms_the_state_and_is_not_in_the_output():
    ckpt = trained_lines()
    # After "fi" the only word is "fish": every sample continues with "sh" and stops.
    assert gen(ckpt, num=8, max_len=10, prime="fi") == ["sh"] * 8
    # A newline in the prime starts a new line (the state is zeroed at <EOS>, as in training).
    assert gen(ckpt, max_len=10, prime="xyz\nfi") == ["sh"]


def test_on_text_streams_each_character():
    def streamed(ckpt: Checkpoint, **kw: object) -> tuple[list[str], str]:
        seen: list[str] = []
        (text,) = gen(ckpt, seed=2, max_len=25, on_text=seen.append, **kw)
        return seen, text

    seen, text = streamed(make_ckpt())
    assert len(seen) == 25 and "".join(seen) == text
    seen, word = streamed(trained_lines())
    assert "".join(seen) == word and word in WORDS  # the <EOS> is not streamed
    seen, text = streamed(make_ckpt(), stop=["a"])
    assert "".join(seen) == text and text.endswith("a")  # nothing after the stop


def test_start_input_and_unknown_chars():
    stream = Vocab.build("ab\nc", "stream")
    assert start_id(stream) == stream.tokens.index("\n")
    no_newline = Vocab.build("abc", "stream")
    assert start_id(no_newline) == no_newline.eos_id
    lines = Vocab.build("ab\nc", "lines")
    assert start_id(lines) == lines.eos_id
    assert unknown_chars(stream, "abxcyx\n") == ["x", "y"]
    assert unknown_chars(lines, "a\nz") == ["z"]  # newline ends a line, it is not unknown
    assert unknown_chars(stream, "") == []


@pytest.mark.parametrize(
    "spec",
    [
        {"cell": "lstm", "num_layers": 2},
        {"cell": "gru", "num_layers": 2, "embedding_size": 5},
        {"cell": "gru", "gru_reset_after": True},
        {"cell": "rnn", "rnn_activation": "relu", "num_layers": 2},
    ],
)
def test_stepper_equals_model_step(spec: dict):
    ckpt = make_ckpt(**spec)
    model, params = ckpt.model(), ckpt.params
    step = model.stepper(params)
    ids = np.array([3, 1, 4, 1, 5])
    s1 = s2 = model.initial_state(5)
    for _ in range(3):
        l1, s1 = model.step(params, ids, s1)
        l2, s2 = step(ids, s2)
        np.testing.assert_array_equal(l1, l2)
        ids = l1.argmax(axis=0)


def test_invalid_settings_are_refused_by_the_config():
    # The settings object is the one place that validates them (generate does not re-check).
    for bad in (
        {"num": 0},
        {"max_len": 0},
        {"lines": -1},
        {"temperature": 0.0},
        {"temperature": float("nan")},
        {"temperature": float("inf")},
        {"top_k": -1},
        {"top_p": 0.0},
        {"top_p": 1.5},
        {"no_unk": "yes"},
    ):
        (key,) = bad
        with pytest.raises(ConfigError, match=f"sample.{key}"):
            SampleConfig(**bad)
    assert SampleConfig().no_unk is None and SampleConfig().lines == 0  # auto, off
    tiny = Vocab(["<UNK>", "<EOS>"], "stream")
    with pytest.raises(CharlmError, match="no character left"):
        banned_ids(tiny, no_unk=True)


# --- the command -------------------------------------------------------------------------------


def test_cli_json_seed_and_settings(tmp_path: Path):
    run = run_dir_with(tmp_path, make_ckpt())
    args = ("sample", "--run", str(run), "--num", "3", "--max-len", "12", "--no-unk", "--json")
    first = invoke(*args, "--seed", "4")
    assert first.exit_code == 0, first.output
    samples = json.loads(first.stdout)
    assert isinstance(samples, list) and len(samples) == 3
    assert all(isinstance(s, str) and len(s) == 12 for s in samples)
    assert invoke(*args, "--seed", "4").stdout == first.stdout
    assert invoke(*args, "--seed", "5").stdout != first.stdout
    primed = json.loads(invoke(*args, "--seed", "4", "--prime", "the ").stdout)
    assert all(s.startswith("the ") and len(s) == 16 for s in primed)
    one = json.loads(invoke(*args[:3], "--num", "1", *args[5:], "--seed", "4").stdout)
    assert one == samples[:1]  # the same seed gives the same first sample whatever --num is


def test_cli_seed_and_max_len_from_config_else_random(tmp_path: Path):
    run = run_dir_with(tmp_path, make_ckpt(sample={"seed": 7, "max_len": 30}))
    outs = {invoke("sample", "--run", str(run), "--json").stdout for _ in range(2)}
    assert len(outs) == 1  # the config's seed
    (text,) = json.loads(outs.pop())
    assert len(text) == 30  # the config's max_len (no <UNK>: one character per token)
    streamed = invoke("sample", "--run", str(run)).stdout
    assert streamed == as_printed([text])
    run2 = run_dir_with(tmp_path, make_ckpt(), "unseeded")
    outs = {invoke("sample", "--run", str(run2), "--max-len", "40").stdout for _ in range(3)}
    assert len(outs) > 1


def test_cli_options_override_the_config_section(tmp_path: Path):
    config = {"seed": 7, "max_len": 30, "num": 3, "temperature": 0.5, "lines": 1}
    run = run_dir_with(tmp_path, make_ckpt(sample=config))
    _, saved, _ = load_run_checkpoint(run)
    for option, value, key in (("--lines", "0", "lines"), ("--num", "2", "num")):
        result = invoke("sample", "--run", str(run), "--json", option, value)
        assert json.loads(result.stdout) == gen(saved, **{**config, key: int(value)})
    assert json.loads(invoke("sample", "--run", str(run), "--json").stdout) == gen(saved, **config)


def test_cli_output_layout(tmp_path: Path):
    stream_run = run_dir_with(tmp_path, make_ckpt(), "s")
    args = ["sample", "--run", str(stream_run), "--num", "2", "--max-len", "5", "--seed", "1",
            "--no-unk", "--prime", "ab"]  # fmt: skip
    out = invoke(*args).stdout
    samples = json.loads(invoke(*args, "--json").stdout)
    assert out == samples[0] + "\n\n" + samples[1] + "\n"  # a blank line between samples
    lines_run = run_dir_with(tmp_path, trained_lines(), "l")
    out = invoke("sample", "--run", str(lines_run), "--num", "4", "--seed", "1").stdout
    assert len(out.splitlines()) == 4 and all(w in WORDS for w in out.splitlines())
    one = invoke("sample", "--run", str(lines_run), "--seed", "1", "--prime", "c").stdout
    assert one in ("cat\n", "cow\n")


def test_cli_stop_and_lines(tmp_path: Path):
    run = run_dir_with(tmp_path, make_ckpt())
    base = ["sample", "--run", str(run), "--seed", "3", "--max-len", "150"]
    for extra in (["--lines", "1"], ["--lines", "2"], ["--stop", "t", "--stop", "."]):
        for num in ("1", "4"):  # streamed, and printed at the end
            args = [*base, "--num", num, *extra]
            result = invoke(*args)
            samples = json.loads(invoke(*args, "--json").stdout)
            assert result.exit_code == 0, result.output
            # A sample that ends with its line break gets no second one.
            assert result.stdout == as_printed(samples)
            if extra[0] == "--lines":
                assert all(s.count("\n") == int(extra[1]) and s.endswith("\n") for s in samples)
            else:
                assert all(s.endswith(("t", ".")) for s in samples)
    assert_one_line_error(invoke(*base, "--stop", ""), match="stop string")


def test_cli_lines_is_a_usage_error_for_a_lines_model(tmp_path: Path):
    run = run_dir_with(tmp_path, trained_lines())
    result = invoke("sample", "--run", str(run), "--lines", "2")
    assert_one_line_error(result, code=(2,), match="--lines counts line breaks in stream mode")
    assert invoke("sample", "--run", str(run), "--lines", "0").exit_code == 0


def test_cli_output_file(tmp_path: Path):
    run = run_dir_with(tmp_path, make_ckpt())
    target = tmp_path / "samples.txt"
    for extra in ([], ["--num", "3"], ["--num", "3", "--json"], ["--lines", "1", "--num", "2"]):
        args = ["sample", "--run", str(run), "--seed", "2", "--max-len", "40", *extra]
        printed = invoke(*args).stdout
        result = invoke(*args, "--output", str(target))
        assert result.exit_code == 0, result.output
        assert result.stdout == ""  # the samples went to the file ...
        assert target.read_text("utf-8") == printed  # ... laid out as on stdout
        assert result.stderr.startswith("wrote ") and str(target) in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run", "samples.txt"]  # no temp files


def test_cli_output_errors_leave_nothing_half_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    run = run_dir_with(tmp_path, make_ckpt())
    base = ["sample", "--run", str(run), "--max-len", "10", "--output"]
    (tmp_path / "folder").mkdir()
    assert_one_line_error(invoke(*base, str(tmp_path / "folder")), match="is a directory")
    missing = tmp_path / "nowhere" / "out.txt"
    assert_one_line_error(invoke(*base, str(missing)), match=f"no directory {missing.parent}")
    target = tmp_path / "out.txt"
    target.write_text("old samples\n", encoding="utf-8")

    def disk_full(*_: object) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr("charlm.fileio.os.replace", disk_full)
    result = invoke(*base, str(target))
    assert_one_line_error(result, match=f"cannot write samples to {target}: No space left")
    assert target.read_text("utf-8") == "old samples\n"  # untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["folder", "out.txt", "run"]


def test_cli_no_unk_flags_and_default(tmp_path: Path):
    def sampled(name: str, *args: str, meta: dict | None = None, sample: dict | None = None) -> str:
        ckpt = make_ckpt(meta=meta, sample=sample)
        ckpt.params["by"][ckpt.vocab.unk_id] = 50.0  # the model wants <UNK>
        run = run_dir_with(tmp_path, ckpt, name)
        result = invoke("sample", "--run", str(run), "--max-len", "10", "--json", *args)
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout)[0]

    # The training text had no <UNK>: the checkpoint says so, or (older) its vocabulary does.
    for name, meta in (("recorded", {"train_unk_count": 0}), ("older", {})):
        assert "<UNK>" not in sampled(name, meta=meta)
        assert "<UNK>" not in sampled(name, "--no-unk", meta=meta)
        assert sampled(name, "--allow-unk", meta=meta).count("<UNK>") >= 5
    assert "<UNK>" in sampled("config", meta={"train_unk_count": 0}, sample={"no_unk": False})
    # It had some: allowed by default, banned with --no-unk.
    assert "<UNK>" in sampled("had", meta={"train_unk_count": 9})
    assert "<UNK>" not in sampled("had", "--no-unk", meta={"train_unk_count": 9})


def test_cli_uses_latest_run_and_best_over_last(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)
    result = invoke("sample")
    assert_one_line_error(result, match="no trained run under runs/; train one first")
    old = run_dir_with(tmp_path / "runs", make_ckpt(), "old")
    new = run_dir_with(tmp_path / "runs", trained_lines(), "new")
    past = time.time() - 100
    os.utime(old / "last.json", (past, past))
    result = invoke("sample", "--seed", "0")
    assert result.stdout.strip() in WORDS  # the lines model: the newer run
    # Which run and checkpoint it picked goes to stderr; stdout stays the sample.
    assert result.stderr == f"sampling from {Path('runs/new/last.json')} (step 300)\n"
    os.utime(new / "last.json", (past - 10, past - 10))
    out = invoke("sample", "--seed", "0", "--max-len", "30", "--json").stdout
    assert len(json.loads(out)[0]) == 30  # now the stream model
    # best.json wins over last.json inside a run.
    save_checkpoint(old, "best", trained_lines())
    result = invoke("sample", "--run", str(old), "--seed", "0")
    assert result.stdout.strip() in WORDS and result.stderr == ""  # chosen explicitly: quiet


def test_cli_prime_file_and_unknown_prime_warning(tmp_path: Path):
    run = run_dir_with(tmp_path, trained_lines())
    prime = tmp_path / "prime.txt"
    prime.write_text("fi", encoding="utf-8")
    result = invoke("sample", "--run", str(run), "--prime-file", str(prime), "--seed", "0")
    assert result.exit_code == 0 and result.stdout == "fish\n"
    result = invoke("sample", "--run", str(run), "--prime", "Zf", "--seed", "0")
    assert result.exit_code == 0
    assert "Warning:" in result.stderr and "'Z'" in result.stderr
    assert result.stdout.startswith("Zf")


def test_cli_prime_file_missing_or_a_directory_exit_1(tmp_path: Path):
    run = run_dir_with(tmp_path, trained_lines())
    for path, match in ((tmp_path / "nope.txt", "not found"), (tmp_path, "is a directory")):
        result = invoke("sample", "--run", str(run), "--prime-file", str(path))
        assert_one_line_error(result, code=(1,), match=match)
        assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (["--max-len", "0"], "--max-len"),
        (["--temperature", "0"], "--temperature"),
        (["--temperature", "-1"], "--temperature"),
        (["--top-p", "0"], "--top-p"),
        (["--top-p", "1.5"], "--top-p"),
        (["--top-k", "-1"], "--top-k"),
        (["--num", "0"], "--num"),
        (["--lines", "-1"], "--lines"),
        (["--temperature", "nan"], "temperature"),
        (["--prime", "a", "--prime-file", "PRIME"], "not both"),
        (["--prime-file", "EMPTY"], "empty"),
        (["--prime-file", "MISSING"], "not found"),
        (["--run", "RUN", "--checkpoint", "RUN"], "not both"),
    ],
)
def test_cli_option_errors(tmp_path: Path, args: list[str], match: str):
    run = run_dir_with(tmp_path, make_ckpt())
    (tmp_path / "empty.txt").write_text("", encoding="utf-8")
    (tmp_path / "prime.txt").write_text("ab", encoding="utf-8")
    subst = {
        "PRIME": tmp_path / "prime.txt",
        "EMPTY": tmp_path / "empty.txt",
        "MISSING": tmp_path / "nope.txt",
        "RUN": run,
    }
    args = [str(subst.get(a, a)) for a in args]
    if "--run" not in args:
        args += ["--run", str(run)]
    assert_one_line_error(invoke("sample", *args), code=(1, 2), match=match)


# --- damaged checkpoints -------------------------------------------------------------------------


def _rewrite_arrays(run: Path, edit) -> None:
    """Apply `edit` to the npz arrays of run/last.json, rewrite it and fix the JSON's sha256."""
    import hashlib  # noqa: PLC0415

    meta = json.loads((run / "last.json").read_text("utf-8"))
    npz = run / meta["arrays"]
    with np.load(npz, allow_pickle=True) as f:
        arrays = {k: f[k] for k in f.files}
    arrays = edit(arrays)
    np.savez(npz, **arrays)
    meta["sha256"] = hashlib.sha256(npz.read_bytes()).hexdigest()
    (run / "last.json").write_text(json.dumps(meta), encoding="utf-8")


def _truncate(run: Path) -> None:
    import hashlib  # noqa: PLC0415

    meta = json.loads((run / "last.json").read_text("utf-8"))
    npz = run / meta["arrays"]
    npz.write_bytes(npz.read_bytes()[: npz.stat().st_size // 2])
    meta["sha256"] = hashlib.sha256(npz.read_bytes()).hexdigest()
    (run / "last.json").write_text(json.dumps(meta), encoding="utf-8")


def _set_json(run: Path, **changes) -> None:
    meta = json.loads((run / "last.json").read_text("utf-8"))
    meta.update(changes)
    (run / "last.json").write_text(json.dumps(meta), encoding="utf-8")


def _drop_wy(arrays: dict) -> dict:
    del arrays["param/Wy"]
    return arrays


def _reshape_wy(arrays: dict) -> dict:
    arrays["param/Wy"] = arrays["param/Wy"][:, :-1]
    return arrays


def _object_array(arrays: dict) -> dict:
    arrays["param/by"] = np.array([{"evil": 1}, None], dtype=object)
    return arrays


@pytest.mark.parametrize(
    ("damage", "match"),
    [
        (lambda run: (run / "last.json").unlink(), "no checkpoint"),
        (lambda run: next(run.glob("*.npz")).unlink(), "missing"),
        (_truncate, "truncated or corrupt"),
        (lambda run: next(run.glob("*.npz")).write_bytes(b"garbage"), "do not match"),
        (lambda run: _set_json(run, version=99), "version 99"),
        (lambda run: _set_json(run, format="other"), "not a charlm checkpoint"),
        (lambda run: (run / "last.json").write_text("{not json", "utf-8"), "not a readable"),
        (lambda run: _rewrite_arrays(run, _drop_wy), "missing ['Wy']"),
        (lambda run: _rewrite_arrays(run, _reshape_wy), "parameter Wy has shape"),
        (lambda run: _rewrite_arrays(run, _object_array), "refused"),
    ],
)
def test_cli_damaged_checkpoints(tmp_path: Path, damage, match: str):
    run = run_dir_with(tmp_path, make_ckpt())
    damage(run)
    assert_one_line_error(invoke("sample", "--run", str(run)), match=match)


def test_cli_missing_checkpoint_or_run(tmp_path: Path):
    missing = tmp_path / "nope.json"
    assert_one_line_error(invoke("sample", "--checkpoint", str(missing)), match="not found")
    assert_one_line_error(invoke("sample", "--run", str(tmp_path / "norun")), match="not found")
    (tmp_path / "empty").mkdir()
    assert_one_line_error(invoke("sample", "--run", str(tmp_path / "empty")), match="no checkpoint")


# --- a damaged `best`: fall back to `last` -----------------------------------------------------


def _damage_best(how: str, run: Path) -> None:
    meta = json.loads((run / "best.json").read_text("utf-8"))
    npz = run / meta["arrays"]
    if how == "garbage npz":
        npz.write_bytes(b"garbage")
    elif how == "missing npz":
        npz.unlink()
    elif how == "truncated json":
        (run / "best.json").write_text(json.dumps(meta)[:40], "utf-8")
    else:
        (run / "best.json").write_text(json.dumps({**meta, "version": 99}), "utf-8")


def run_with_bad_best(tmp_path: Path, how: str) -> Path:
    """A run whose `last` is the stream model and whose `best` (the lines model) is damaged."""
    run = run_dir_with(tmp_path / "runs", make_ckpt(), "r")
    save_checkpoint(run, "best", trained_lines())
    _damage_best(how, run)
    return run


@pytest.mark.parametrize("how", ["garbage npz", "missing npz", "truncated json", "version"])
def test_damaged_best_falls_back_to_last_with_a_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, how: str
):
    run = run_with_bad_best(tmp_path, how)
    args = ["--max-len", "20", "--seed", "1", "--json"]
    expected = invoke("sample", "--checkpoint", str(run / "last.json"), *args).stdout
    result = invoke("sample", "--run", str(run), *args)
    assert result.exit_code == 0, result.output
    assert result.stdout == expected  # sampled from `last`
    (warning,) = result.stderr.splitlines()
    assert warning.startswith(f"Warning: {run / 'best'}")
    assert warning.endswith(f"; using {run / 'last.json'} (step 0)")
    # The latest run, picked implicitly: the same fallback, then which checkpoint it used.
    monkeypatch.chdir(tmp_path)
    result = invoke("sample", *args)
    assert result.stdout == expected
    warning, used = result.stderr.splitlines()
    assert warning.startswith("Warning: ") and used.startswith("sampling from runs/r/last.json")
    # eval shares the same opening.
    corpus = tmp_path / "text.txt"
    corpus.write_text(STREAM_TEXT, encoding="utf-8")
    result = invoke("eval", str(corpus), "--run", "runs/r", "--json")
    assert result.exit_code == 0, result.output
    assert result.stderr.startswith("Warning: ") and len(result.stderr.splitlines()) == 1


def test_explicit_damaged_checkpoint_or_nothing_left_is_an_error(tmp_path: Path):
    run = run_with_bad_best(tmp_path, "garbage npz")
    result = invoke("sample", "--checkpoint", str(run / "best.json"))
    assert_one_line_error(result, match="do not match")
    assert "Warning" not in result.output
    (run / "last.json").write_text("{", "utf-8")  # `last` is damaged too
    result = invoke("sample", "--run", str(run))
    assert_one_line_error(result, match="do not match the checkpoint (corrupt?); also")
    assert "last.json: not a readable checkpoint JSON" in result.output
    with pytest.raises(CheckpointError, match="no checkpoint in this run directory"):
        load_run_checkpoint(tmp_path)
