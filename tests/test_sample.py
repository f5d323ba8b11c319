"""Tests for charlm.sample (filters, draws, generation) and the `charlm sample` command."""

from __future__ import annotations

import json
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

from charlm.checkpoint import Checkpoint, save_checkpoint
from charlm.cli import cli
from charlm.config import config_from_dict
from charlm.errors import CharlmError
from charlm.model import CharModel
from charlm.sample import (
    banned_ids,
    draw,
    filter_probs,
    generate,
    start_id,
    unknown_chars,
)
from charlm.vocab import Vocab

STREAM_TEXT = "the cat sat on the mat.\nthe dog sat on the log.\n" * 10


def make_ckpt(text: str = STREAM_TEXT, mode: str = "stream", seed: int = 0, **model) -> Checkpoint:
    """An untrained checkpoint for `text` (small LSTM unless `model` says otherwise)."""
    spec = {"cell": "lstm", "hidden_size": 16, "num_layers": 1, **model}
    config = config_from_dict({"model": spec, "data": {"mode": mode}})
    vocab = Vocab.build(text, mode)
    params = CharModel(config.model, len(vocab)).init_params(np.random.default_rng(seed))
    return Checkpoint(config, vocab, params, step=0)


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


def greedy_reference(ckpt: Checkpoint, max_len: int, prime: str = "") -> str:
    """Argmax decoding written out step by step with model.step (no batching, no filters)."""
    model, params, vocab = ckpt.model(), ckpt.params, ckpt.vocab
    state = model.initial_state(1)
    banned = banned_ids(vocab, no_unk=False)
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
    ids = draw(np.repeat(p[:, None], n, axis=1), np.random.default_rng(0))
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
    counts = np.bincount(draw(probs, rng), minlength=10)
    chi2 = ((counts - n * q) ** 2 / (n * q)).sum()
    assert chi2 < 27.9  # 9 degrees of freedom, p = 0.001
    # A skewed draw would fail: the same counts against a uniform distribution.
    assert ((counts - n / 10) ** 2 / (n / 10)).sum() > 1000


def test_draw_never_picks_zero_probability_at_the_edges():
    class Edge:  # u = 0 and u just below 1
        def random(self, n: int) -> np.ndarray:
            return np.array([0.0, np.nextafter(1.0, 0.0)] * (n // 2))

    p = np.array([[0.0, 0.0], [0.5, 0.5], [0.5, 0.5], [0.0, 0.0]])
    assert draw(p, Edge()).tolist() == [1, 2]


# --- generation --------------------------------------------------------------------------------


def test_same_seed_same_text_and_different_seeds_differ():
    ckpt = make_ckpt()
    model, params, vocab = ckpt.model(), ckpt.params, ckpt.vocab

    def run(seed: int) -> list[str]:
        return generate(model, params, vocab, np.random.default_rng(seed), num=3, max_len=40)

    assert run(5) == run(5)
    assert run(5) != run(6)
    assert len(set(run(5))) > 1  # the parallel samples are not copies of each other


def test_lines_model_stops_at_eos():
    ckpt = trained_lines()
    samples = generate(
        ckpt.model(), ckpt.params, ckpt.vocab, np.random.default_rng(0), num=20, max_len=50
    )
    assert len(samples) == 20
    for text in samples:
        assert "\n" not in text and "<EOS>" not in text
        assert 0 < len(text) < 50  # ended by <EOS>, well before max_len
    assert sum(text in WORDS for text in samples) >= 16  # it learnt the words
    assert len(set(samples)) >= 3


def test_length_never_exceeds_max_len():
    ckpt = make_ckpt()
    for max_len in (1, 7, 60):
        samples = generate(
            ckpt.model(),
            ckpt.params,
            ckpt.vocab,
            np.random.default_rng(0),
            num=4,
            max_len=max_len,
            no_unk=True,
        )
        # Stream mode never ends early; with no <UNK> each token is one character.
        assert [len(s) for s in samples] == [max_len] * 4
    lines = trained_lines()
    samples = generate(
        lines.model(), lines.params, lines.vocab, np.random.default_rng(0), num=10, max_len=2
    )
    assert all(len(s) <= 2 for s in samples)
    assert any(len(s) == 2 for s in samples)  # cut at max_len, not only at <EOS>


def test_no_unk_even_when_unk_dominates():
    ckpt = make_ckpt()
    ckpt.params["by"][ckpt.vocab.unk_id] = 50.0
    args = (ckpt.model(), ckpt.params, ckpt.vocab, np.random.default_rng(0))
    with_unk = generate(*args, num=2, max_len=20)
    assert with_unk[0].count("<UNK>") >= 15  # it is what the model wants
    clean = generate(*args, num=2, max_len=20, no_unk=True)
    assert all("<UNK>" not in s and len(s) == 20 for s in clean)
    assert all(
        "<UNK>" not in s for s in generate(*args, num=2, max_len=20, greedy=True, no_unk=True)
    )


def test_stream_mode_never_emits_eos():
    ckpt = make_ckpt()
    ckpt.params["by"][ckpt.vocab.eos_id] = 50.0
    samples = generate(
        ckpt.model(), ckpt.params, ckpt.vocab, np.random.default_rng(0), num=3, max_len=30
    )
    assert all("<EOS>" not in s and len(s) >= 30 for s in samples)


def test_greedy_is_deterministic_argmax_decoding():
    for ckpt, prime in ((make_ckpt(), "the "), (trained_lines(), "bi"), (trained_lines(), "")):
        model, params, vocab = ckpt.model(), ckpt.params, ckpt.vocab
        a = generate(
            model,
            params,
            vocab,
            np.random.default_rng(0),
            num=2,
            max_len=30,
            greedy=True,
            prime=prime,
        )
        b = generate(
            model,
            params,
            vocab,
            np.random.default_rng(99),
            max_len=30,
            greedy=True,
            prime=prime,
            temperature=0.3,
        )
        assert a == [a[0], a[0]] and b == [a[0]]
        assert a[0] == greedy_reference(ckpt, 30, prime)
    assert greedy_reference(trained_lines(), 30, "bi") == "rd"


def test_top_k_one_is_greedy():
    ckpt = make_ckpt(seed=3)
    args = (ckpt.model(), ckpt.params, ckpt.vocab)
    top1 = generate(*args, np.random.default_rng(1), num=2, max_len=25, top_k=1)
    assert top1 == [greedy_reference(ckpt, 25)] * 2


def test_prime_warms_the_state_and_is_not_in_the_output():
    ckpt = trained_lines()
    args = (ckpt.model(), ckpt.params, ckpt.vocab)
    # After "fi" the only word is "fish": every sample continues with "sh" and stops.
    out = generate(*args, np.random.default_rng(0), num=8, max_len=10, prime="fi")
    assert out == ["sh"] * 8
    # A newline in the prime starts a new line (the state is zeroed at <EOS>, as in training).
    assert generate(*args, np.random.default_rng(0), max_len=10, prime="xyz\nfi") == ["sh"]


def test_on_text_streams_each_character():
    def streamed(ckpt: Checkpoint) -> tuple[list[str], str]:
        seen: list[str] = []
        rng = np.random.default_rng(2)
        (text,) = generate(
            ckpt.model(), ckpt.params, ckpt.vocab, rng, max_len=25, on_text=seen.append
        )
        return seen, text

    seen, text = streamed(make_ckpt())
    assert len(seen) == 25 and "".join(seen) == text
    seen, word = streamed(trained_lines())
    assert "".join(seen) == word and word in WORDS  # the <EOS> is not streamed


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


def test_invalid_settings_raise():
    ckpt = make_ckpt()
    args = (ckpt.model(), ckpt.params, ckpt.vocab, np.random.default_rng(0))
    for bad in (
        {"num": 0},
        {"max_len": 0},
        {"temperature": 0.0},
        {"temperature": float("nan")},
        {"temperature": float("inf")},
        {"top_k": -1},
        {"top_p": 0.0},
        {"top_p": 1.5},
    ):
        with pytest.raises(CharlmError):
            generate(*args, **bad)
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


def test_cli_seed_from_config_else_random(tmp_path: Path):
    ckpt = make_ckpt()
    fixed = Checkpoint(
        config_from_dict({**_dict(ckpt), "sample": {"seed": 7, "max_len": 30}}),
        ckpt.vocab,
        ckpt.params,
    )
    run = run_dir_with(tmp_path, fixed)
    outs = {invoke("sample", "--run", str(run)).stdout for _ in range(2)}
    assert len(outs) == 1 and len(outs.pop()) >= 31  # config seed and max_len; one newline
    run2 = run_dir_with(tmp_path, ckpt, "unseeded")
    outs = {invoke("sample", "--run", str(run2), "--max-len", "40").stdout for _ in range(3)}
    assert len(outs) > 1


def _dict(ckpt: Checkpoint) -> dict:
    from charlm.config import config_to_dict  # noqa: PLC0415

    return config_to_dict(ckpt.config)


def test_cli_output_layout(tmp_path: Path):
    stream_run = run_dir_with(tmp_path, make_ckpt(), "s")
    args = [
        "sample",
        "--run",
        str(stream_run),
        "--num",
        "2",
        "--max-len",
        "5",
        "--seed",
        "1",
        "--no-unk",
        "--prime",
        "ab",
    ]
    out = invoke(*args).stdout
    samples = json.loads(invoke(*args, "--json").stdout)
    assert out == samples[0] + "\n\n" + samples[1] + "\n"  # a blank line between samples
    lines_run = run_dir_with(tmp_path, trained_lines(), "l")
    out = invoke("sample", "--run", str(lines_run), "--num", "4", "--seed", "1").stdout
    assert len(out.splitlines()) == 4 and all(w in WORDS for w in out.splitlines())
    one = invoke("sample", "--run", str(lines_run), "--seed", "1", "--prime", "c").stdout
    assert one in ("cat\n", "cow\n")


def test_cli_no_unk_flag(tmp_path: Path):
    ckpt = make_ckpt()
    ckpt.params["by"][ckpt.vocab.unk_id] = 50.0
    run = run_dir_with(tmp_path, ckpt)
    assert "<UNK>" in invoke("sample", "--run", str(run), "--max-len", "10").stdout
    clean = invoke("sample", "--run", str(run), "--max-len", "10", "--no-unk").stdout
    assert "<UNK>" not in clean and len(clean) == 11


def test_cli_uses_latest_run_and_best_over_last(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)
    result = invoke("sample")
    assert_one_line_error(result, match="no trained run under runs/; train one first")
    old = run_dir_with(tmp_path / "runs", make_ckpt(), "old")
    new = run_dir_with(tmp_path / "runs", trained_lines(), "new")
    past = time.time() - 100
    os.utime(old / "last.json", (past, past))
    out = invoke("sample", "--seed", "0").stdout
    assert out.strip() in WORDS  # the lines model: the newer run
    os.utime(new / "last.json", (past - 10, past - 10))
    out = invoke("sample", "--seed", "0", "--max-len", "30", "--no-unk").stdout
    assert len(out) == 31  # now the stream model
    # best.json wins over last.json inside a run.
    save_checkpoint(old, "best", trained_lines())
    assert invoke("sample", "--run", str(old), "--seed", "0").stdout.strip() in WORDS


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
