"""Tests for corpus evaluation (charlm.evaluate), the n-gram baselines (charlm.baselines) and
the `charlm eval` command."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from _models import LINES_TEXT, trained_lines
from click.testing import CliRunner

from charlm.baselines import fit_baselines, training_ids
from charlm.checkpoint import Checkpoint, save_checkpoint
from charlm.cli import cli
from charlm.config import config_from_dict
from charlm.data import encode_text, load_corpus
from charlm.evaluate import evaluate_ids, evaluate_text, loss_bins, most_surprising
from charlm.model import CharModel
from charlm.vocab import Vocab


def make_ckpt(text: str, mode: str, corpus: str = "", seed: int = 0, **data) -> Checkpoint:
    config = config_from_dict(
        {
            "model": {"cell": "gru", "hidden_size": 12, "num_layers": 2},
            "data": {"mode": mode, "corpus": corpus, **data},
        }
    )
    vocab = Vocab.build(text, mode)
    params = CharModel(config.model, len(vocab)).init_params(np.random.default_rng(seed))
    return Checkpoint(config, vocab, params)


def direct_loss(ckpt: Checkpoint, text: str) -> tuple[float, int]:
    """Mean -log p of each next id, one model.step at a time (state zeroed before an <EOS>)."""
    model, params, vocab = ckpt.model(), ckpt.params, ckpt.vocab
    ids = encode_text(text, vocab)
    lines = vocab.mode == "lines"
    state = model.initial_state(1)
    total = 0.0
    for i in range(len(ids) - 1):
        if lines and ids[i] == vocab.eos_id:
            state = model.initial_state(1)
        logits, state = model.step(params, ids[i : i + 1].astype(np.int64), state)
        z = logits[:, 0].astype(np.float64)
        log_p = z - z.max() - np.log(np.exp(z - z.max()).sum())
        total -= log_p[ids[i + 1]]
    return total / (len(ids) - 1), len(ids) - 1


def invoke(*args: str, color: bool = False):
    return CliRunner().invoke(cli, list(args), color=color)


def one_line_error(result, match: str, codes: tuple[int, ...] = (1,)) -> None:
    assert result.exit_code in codes, result.output
    assert "Traceback" not in result.output
    last = result.output.strip().splitlines()[-1]
    assert last.startswith("Error:") and match in last, result.output


# --- library -----------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["stream", "lines"])
def test_loss_equals_direct_computation(mode: str):
    text = "the cat sat.\nthe dog ran!\nthe end\n"
    ckpt = make_ckpt(text, mode)
    expected, count = direct_loss(ckpt, text)
    for batch_size, seq_len in ((1, 256), (1, 5)):
        result = evaluate_text(ckpt.model(), ckpt.params, ckpt.vocab, text, batch_size, seq_len)
        assert result.chars == count
        assert result.loss == pytest.approx(expected, rel=1e-5)
        assert result.bpc == pytest.approx(result.loss / math.log(2), rel=1e-12)
        assert result.perplexity == pytest.approx(math.exp(result.loss), rel=1e-12)
    assert count == (len(text) if mode == "lines" else len(text) - 1)


@pytest.mark.parametrize(("batch_size", "seq_len"), [(2, 16), (4, 16), (7, 5), (64, 3)])
def test_batched_lines_evaluation_scores_every_line_exactly_as_one_stream(
    batch_size: int, seq_len: int
):
    """Lines-mode streams are cut at line starts (the state restarts there anyway) and the
    shorter ones padded without scoring the padding: the same per-character losses."""
    text = LINES_TEXT
    ckpt = trained_lines("")
    model, params, vocab = ckpt.model(), ckpt.params, ckpt.vocab
    one = evaluate_text(model, params, vocab, text, 1, keep_losses=True)
    many = evaluate_text(model, params, vocab, text, batch_size, seq_len, keep_losses=True)
    assert many.chars == one.chars == len(encode_text(text, vocab)) - 1
    assert many.loss == pytest.approx(one.loss, rel=1e-6)
    assert np.allclose(many.losses, one.losses, rtol=1e-5, atol=1e-6)  # in corpus order


def test_batched_stream_evaluation_drops_a_short_tail():
    text = "the cat sat on the mat. " * 20
    ckpt = make_ckpt(text, "stream")
    result = evaluate_text(ckpt.model(), ckpt.params, ckpt.vocab, text, 4, 16)
    assert len(text) - 1 - result.chars in range(4)


def test_per_position_losses_and_unk_rate():
    ckpt = make_ckpt("abc\nabd\n", "lines")
    text = "abz\nzz\n"  # 3 of the 5 characters (newlines excluded) are unknown
    result = evaluate_text(ckpt.model(), ckpt.params, ckpt.vocab, text, keep_losses=True)
    assert result.unk_rate == pytest.approx(3 / 5)
    assert result.losses.shape == (len(text),)
    assert result.losses.mean() == pytest.approx(result.loss, rel=1e-6)
    ids = encode_text(text, ckpt.vocab)
    ref = evaluate_ids(ckpt.model(), ckpt.params, ids, 1, 3, ckpt.vocab.eos_id, True)
    np.testing.assert_allclose(result.losses, ref.losses, rtol=1e-6)


def test_baselines_add_one_smoothing_exact():
    V = 4
    train = np.array([2, 3, 2, 2, 3])  # pairs: (2,3) (3,2) (2,2) (2,3); next ids 3,2,2,3
    unigram, bigram = fit_baselines(train, V)
    assert unigram.name == "unigram" and bigram.name == "bigram"
    np.testing.assert_allclose(np.exp(unigram.logp), [1 / 8, 1 / 8, 3 / 8, 3 / 8])
    np.testing.assert_allclose(np.exp(bigram.logp[2]), [1 / 7, 1 / 7, 2 / 7, 3 / 7])
    np.testing.assert_allclose(np.exp(bigram.logp[0]), [1 / 4] * 4)  # never seen: uniform
    x, y = np.array([[2, 3]]), np.array([[3, 0]])
    np.testing.assert_allclose(bigram.losses(x, y), -np.log([[3 / 7, 1 / 5]]))
    np.testing.assert_allclose(unigram.losses(x, y), -np.log([[3 / 8, 1 / 8]]))


def test_bigram_beats_unigram_on_structured_text():
    text = "abcd" * 200
    vocab = Vocab.build(text)
    ckpt = make_ckpt(text, "stream")
    baselines = fit_baselines(vocab.encode(text), len(vocab))
    result = evaluate_text(
        ckpt.model(), ckpt.params, ckpt.vocab, "abcdabcdab", 1, baselines=baselines
    )
    assert result.baselines["bigram"] < 0.1 < math.log(4) - 0.1 < result.baselines["unigram"]


def test_training_ids_match_the_trainers_split(tmp_path: Path):
    corpus = tmp_path / "c.txt"
    corpus.write_text("one\ntwo\nthree\nfour\nfive\n" * 3, encoding="utf-8")
    val = tmp_path / "v.txt"
    val.write_text("six\n", encoding="utf-8")
    for data in ({"val_fraction": 0.3}, {"val_fraction": 0.0}, {"val_file": str(val)}):
        ckpt = make_ckpt(corpus.read_text("utf-8"), "lines", str(corpus), **data)
        expected = load_corpus(corpus, ckpt.config.data, ckpt.vocab).train_ids
        got = training_ids(str(corpus), ckpt.config.data, ckpt.vocab)
        np.testing.assert_array_equal(got, expected)
    assert len(got) > len(
        training_ids(str(corpus), make_ckpt("a", "lines").config.data, ckpt.vocab)
    )


def test_loss_bins_and_most_surprising():
    bits = np.array([0.5, 1.0, 3.0, 9.0, 5.0, 9.0])
    assert loss_bins(bits, (1, 2, 4, 8)).tolist() == [0, 1, 2, 4, 3, 4]
    assert most_surprising(bits, 3).tolist() == [3, 5, 4]


# --- the command -------------------------------------------------------------------------------


@pytest.fixture
def words_run(tmp_path: Path) -> tuple[Path, Path]:
    """(run dir of the trained lines model, its training corpus file)."""
    corpus = tmp_path / "words.txt"
    corpus.write_text(LINES_TEXT, encoding="utf-8")
    run = tmp_path / "runs" / "words"
    run.mkdir(parents=True)
    save_checkpoint(run, "last", trained_lines(str(corpus)))
    return run, corpus


def test_cli_json(words_run: tuple[Path, Path], tmp_path: Path):
    run, _ = words_run
    text = tmp_path / "t.txt"
    text.write_text("cat\ndog\nfixh\n", encoding="utf-8")
    result = invoke("eval", str(text), "--run", str(run), "--json")
    assert result.exit_code == 0, result.output
    got = json.loads(result.stdout)
    assert set(got) == {"chars", "loss", "bpc", "perplexity", "unk_rate", "baselines"}
    ckpt = trained_lines(str(words_run[1]))
    loss, count = direct_loss(ckpt, text.read_text("utf-8"))
    assert got["chars"] == count == 13
    assert got["loss"] == pytest.approx(loss, rel=1e-5)
    assert got["bpc"] == pytest.approx(loss / math.log(2), rel=1e-5)
    assert got["perplexity"] == pytest.approx(math.exp(loss), rel=1e-5)
    assert got["unk_rate"] == pytest.approx(1 / 10)  # 'x'
    assert set(got["baselines"]) == {"unigram", "bigram"}
    uni, bi = got["baselines"]["unigram"], got["baselines"]["bigram"]
    assert uni["bpc"] == pytest.approx(uni["loss"] / math.log(2))
    assert bi["loss"] < uni["loss"] and got["loss"] < uni["loss"]


def test_cli_table_and_missing_training_corpus(words_run: tuple[Path, Path]):
    run, corpus = words_run
    result = invoke("eval", str(corpus), "--run", str(run))
    assert result.exit_code == 0, result.output
    for word in ("model", "unigram", "bigram", "bits/char", "perplexity", "<UNK> rate"):
        assert word in result.output
    corpus_copy = corpus.with_name("copy.txt")
    corpus_copy.write_text(corpus.read_text("utf-8"), encoding="utf-8")
    corpus.unlink()
    result = invoke("eval", str(corpus_copy), "--run", str(run))
    assert result.exit_code == 0, result.output
    assert "baselines: training corpus not found" in result.output
    assert "unigram" not in result.output
    got = json.loads(invoke("eval", str(corpus_copy), "--run", str(run), "--json").stdout)
    assert got["baselines"] is None


def test_cli_limit_and_batch_size(words_run: tuple[Path, Path]):
    run, corpus = words_run
    limited = json.loads(
        invoke("eval", str(corpus), "--run", str(run), "--json", "--limit", "5").stdout
    )
    assert limited["chars"] == 4  # whole lines of the first 5 characters: <EOS> c a t <EOS>
    full = json.loads(invoke("eval", str(corpus), "--run", str(run), "--json").stdout)
    fast = json.loads(
        invoke("eval", str(corpus), "--run", str(run), "--json", "--batch-size", "8").stdout
    )
    assert full["chars"] == fast["chars"] == len(LINES_TEXT)  # lines: no tail left out
    assert fast["loss"] == pytest.approx(full["loss"], rel=1e-6)


def test_cli_show_plain_and_coloured(words_run: tuple[Path, Path], tmp_path: Path):
    run, _ = words_run
    text = tmp_path / "t.txt"
    text.write_text("cat\nfixh\n", encoding="utf-8")
    plain = invoke("eval", str(text), "--run", str(run), "--show")
    assert plain.exit_code == 0, plain.output
    assert plain.stdout.startswith("cat\nfixh\n")  # the text itself, no colour codes
    assert "\x1b[" not in plain.stdout
    assert "bits per character" in plain.stdout
    table = plain.stdout.split("most surprising characters:")[1].splitlines()
    assert "'x'" in table[2]  # the unknown character is the biggest surprise
    coloured = invoke("eval", str(text), "--run", str(run), "--show", color=True)
    assert "\x1b[31m" in coloured.stdout  # red: the very surprising 'x'
    assert "\x1b[32m" in coloured.stdout  # green: the predictable rest


def test_cli_errors(words_run: tuple[Path, Path], tmp_path: Path):
    run, corpus = words_run
    one_line_error(invoke("eval", str(tmp_path / "nope.txt"), "--run", str(run)), "not found")
    empty = tmp_path / "empty.txt"
    empty.write_text("\n", encoding="utf-8")
    one_line_error(invoke("eval", str(empty), "--run", str(run)), "empty")
    one_line_error(
        invoke("eval", str(corpus), "--run", str(run), "--show", "--json"),
        "cannot be combined",
        (2,),
    )
    one_line_error(
        invoke("eval", str(corpus), "--run", str(run), "--show", "--batch-size", "2"),
        "--batch-size",
        (2,),
    )
    one_line_error(invoke("eval", str(corpus), "--run", str(run), "--limit", "0"), "--limit", (2,))
    one_line_error(
        invoke("eval", str(corpus), "--checkpoint", str(tmp_path / "x.json")), "not found"
    )
    meta = json.loads((run / "last.json").read_text("utf-8"))
    (run / "last.json").write_text(json.dumps({**meta, "version": 2}), encoding="utf-8")
    one_line_error(invoke("eval", str(corpus), "--run", str(run)), "version 2")


def test_cli_uses_latest_run(words_run: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch):
    run, corpus = words_run
    monkeypatch.chdir(run.parent.parent)
    result = invoke("eval", str(corpus), "--json")
    assert result.exit_code == 0 and json.loads(result.stdout)["chars"] == len(LINES_TEXT)
    one_line_error(
        invoke("eval", str(corpus), "--runs-dir", "elsewhere"), "no trained run under elsewhere/"
    )
