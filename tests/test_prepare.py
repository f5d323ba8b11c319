"""`charlm data prepare`: prepared corpora on disk, read through a memmap by train and eval."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from _cli_contract import TINY, assert_one_line_error, assert_same_run, temp_files
from click.testing import CliRunner, Result
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import charlm.fileio as fileio
import charlm.prepare as prep_mod
import charlm.textfiles as textfiles
from charlm.cli import cli
from charlm.config import load_config
from charlm.data import encode_text, load_corpus, read_text
from charlm.errors import CharlmError
from charlm.prepare import Options, prepare
from charlm.prepared import MANIFEST, open_prepared
from charlm.rundir import CorpusFingerprint
from charlm.vocab import Vocab

ALPHABET = ["a", "b", " ", "\t", "\n", "\r", "é", "日", "😀", "\u3000", "Ω"]


def invoke(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args))


def assert_error(result: Result, words: str) -> None:
    line = assert_one_line_error(result.stderr, result.exit_code, result.output)
    assert words in line, line


def plain(text_file: Path, mode: str) -> tuple[np.ndarray, Vocab]:
    """What `charlm train FILE` encodes: read_text, Vocab.build, encode_text."""
    text = read_text(text_file)
    vocab = Vocab.build(text, mode)
    return encode_text(text, vocab), vocab


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    text=st.lists(st.sampled_from(ALPHABET), min_size=1, max_size=40).map("".join),
    bom=st.booleans(),
    mode=st.sampled_from(["stream", "lines"]),
    chunk=st.sampled_from([1, 2, 3, 5, 64]),
)
def test_prepared_ids_and_vocab_equal_the_plain_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str, bom: bool, mode: str, chunk: int
) -> None:
    monkeypatch.setattr(textfiles, "CHUNK_BYTES", chunk)  # pieces split CRLF and characters
    monkeypatch.setattr(prep_mod, "REWRITE_BYTES", 2 * chunk)  # ids rewritten in many blocks
    src = tmp_path / "a.txt"
    src.write_bytes(("\ufeff" if bom else "").encode() + text.encode("utf-8"))
    try:
        ids, vocab = plain(src, mode)
    except CharlmError as exc:  # empty or whitespace only: refused alike
        with pytest.raises(CharlmError, match="is empty"):
            prepare([str(src)], tmp_path / "out", Options(mode=mode), overwrite=True)
        assert "is empty" in str(exc)
        return
    prepare([str(src)], tmp_path / "out", Options(mode=mode, val_fraction=0.0), overwrite=True)
    got = open_prepared(tmp_path / "out")
    assert isinstance(got.ids, np.memmap)
    assert got.ids.dtype == vocab.dtype and np.array_equal(got.ids, ids)
    assert got.vocab == vocab and got.vocab.counts == vocab.counts


def test_progress_counts_every_byte_read_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`progress(done, total)` runs up to the files' total bytes, never backwards."""
    monkeypatch.setattr(textfiles, "CHUNK_BYTES", 7)
    for name, text in (("a.txt", "one\ntwo é\n" * 5), ("b.txt", "\ufeffthree\r\nfour")):
        (tmp_path / name).write_text(text, "utf-8")
    calls: list[tuple[int, int]] = []
    files = [str(tmp_path / "a.txt"), str(tmp_path / "b.txt")]
    prepare(files, tmp_path / "out", Options(val_fraction=0.0),
            progress=lambda done, total: calls.append((done, total)))  # fmt: skip
    total = sum((tmp_path / n).stat().st_size for n in ("a.txt", "b.txt"))
    dones = [done for done, _ in calls]
    assert calls[-1] == (total, total) and {t for _, t in calls} == {total}
    assert dones == sorted(dones) and len(calls) > 4


@pytest.mark.parametrize("mode", ["stream", "lines"])
def test_more_characters_than_the_provisional_ids_hold_start_again_wider(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mode: str
) -> None:
    """The first pass numbers characters in 16 bits; a text with more distinct characters is
    read again with 32-bit numbers (tried here with 8 bits and 300 characters)."""
    monkeypatch.setattr(prep_mod, "PROVISIONAL", (np.uint8, np.uint32))
    src = tmp_path / "many.txt"
    src.write_text("".join(chr(0x100 + i) + ("\n" if i % 17 == 0 else "") for i in range(300)) * 2,
                   "utf-8")  # fmt: skip
    ids, vocab = plain(src, mode)
    prepare([str(src)], tmp_path / "out", Options(mode=mode, val_fraction=0.0))
    got = open_prepared(tmp_path / "out")
    assert got.vocab == vocab and np.array_equal(got.ids, ids)


@pytest.mark.parametrize("mode", ["stream", "lines"])
def test_vocabulary_ids_wider_than_the_provisional_ones_go_to_a_new_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mode: str
) -> None:
    """The second pass rewrites the provisional ids in place, unless a given vocabulary's are
    wider: tried with 8-bit provisional ids and a 300-character (16-bit) vocabulary."""
    monkeypatch.setattr(prep_mod, "PROVISIONAL", (np.uint8, np.uint32))
    monkeypatch.setattr(prep_mod, "REWRITE_BYTES", 5)
    src = tmp_path / "few.txt"
    src.write_text("abc\nbca ab\n\nc\n" * 3, "utf-8")
    wide = "".join(chr(0x100 + i) for i in range(300)) + "abc \n"
    vocab = Vocab.build(wide, mode)
    assert vocab.dtype == np.uint16
    prepare([str(src)], tmp_path / "out", Options(vocab=vocab, val_fraction=0.0))
    got = open_prepared(tmp_path / "out")
    assert got.ids.dtype == np.uint16
    assert np.array_equal(got.ids, encode_text(read_text(src), vocab))
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(prep_mod.OUTPUTS)


@pytest.mark.parametrize("mode", ["stream", "lines"])
def test_files_dirs_and_globs_join_like_one_text(tmp_path: Path, mode: str) -> None:
    texts = ["one\ntwo", "\n  \nthree\n", "four é\n\n"]
    (tmp_path / "d" / "sub").mkdir(parents=True)
    (tmp_path / "d" / "a.txt").write_text(texts[0], "utf-8")
    (tmp_path / "d" / "sub" / "b.txt").write_text(texts[1], "utf-8")
    (tmp_path / "d" / "notes.md").write_text("not taken from a directory", "utf-8")
    (tmp_path / "d" / ".hidden.txt").write_text("nor this", "utf-8")
    (tmp_path / "c.text").write_text(texts[2], "utf-8")
    joined = tmp_path / "joined.txt"
    joined.write_text("\n".join(texts), "utf-8")
    ids, vocab = plain(joined, mode)
    for inputs in ([str(tmp_path / "d"), str(tmp_path / "c.text")],
                   [str(tmp_path / "d" / "*.txt"), str(tmp_path / "d" / "**" / "b.txt"),
                    str(tmp_path / "c.*")]):  # fmt: skip
        m = prepare(inputs, tmp_path / "out", Options(mode=mode, val_fraction=0.0))
        got = open_prepared(tmp_path / "out")
        assert np.array_equal(got.ids, ids) and got.vocab.tokens == vocab.tokens
        assert [Path(s["path"]).name for s in m["sources"]] == ["a.txt", "b.txt", "c.text"]


def test_lines_split_at_a_line_end(tmp_path: Path) -> None:
    src = tmp_path / "names.txt"
    src.write_text("".join(f"name{i}\n" for i in range(200)), "utf-8")
    m = prepare([str(src)], tmp_path / "out", Options(mode="lines", val_fraction=0.1))
    got = open_prepared(tmp_path / "out")
    eos = got.vocab.eos_id
    assert m["val_start"] == m["train_end"] - 1
    assert got.train_ids[-1] == eos and got.val_ids[0] == eos
    assert 15 <= np.count_nonzero(got.val_ids == eos) - 1 <= 25
    corpus = load_corpus(tmp_path / "out", load_config(None, ["data.mode=lines"]).data)
    assert isinstance(corpus.train_ids, np.memmap) and isinstance(corpus.val_ids, np.memmap)
    assert corpus.train_unk_count == 0


def test_cli_errors(tmp_path: Path) -> None:
    out = str(tmp_path / "out")
    assert_error(invoke("data", "prepare", str(tmp_path / "nope.txt"), "-o", out), "not found")
    (tmp_path / "empty.txt").write_text("  \n", "utf-8")
    assert_error(invoke("data", "prepare", str(tmp_path / "empty.txt"), "-o", out), "is empty")
    (tmp_path / "bad.txt").write_bytes(b"abc\ndef\xff")
    assert_error(
        invoke("data", "prepare", str(tmp_path / "bad.txt"), "-o", out),
        f"{tmp_path / 'bad.txt'}: invalid UTF-8 at byte offset 7",
    )
    (tmp_path / "nodir").mkdir()
    assert_error(invoke("data", "prepare", str(tmp_path / "nodir"), "-o", out), "no text files")
    assert_error(invoke("data", "prepare", str(tmp_path / "*.zip"), "-o", out), "no text files")
    good = tmp_path / "good.txt"
    good.write_text("hello world\n", "utf-8")
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "keep.txt").write_text("mine", "utf-8")
    assert_error(invoke("data", "prepare", str(good), "-o", str(busy)), "--overwrite")
    assert invoke("data", "prepare", str(good), "-o", str(busy), "--overwrite").exit_code == 0
    assert (busy / "keep.txt").read_text("utf-8") == "mine"  # other files are left alone
    assert invoke("data", "prepare", str(good), "-o", out).exit_code == 0
    assert invoke("data", "prepare", str(good), "-o", out).exit_code == 0  # its own output
    assert not temp_files(tmp_path)
    if os.geteuid() != 0:  # root reads anything
        locked = tmp_path / "locked.txt"
        locked.write_text("secret", "utf-8")
        locked.chmod(0)
        assert_error(invoke("data", "prepare", str(locked), "-o", out), "cannot read")
    help_text = invoke("data", "prepare", "--help").output
    assert "Example:" in help_text and "charlm data prepare" in help_text


def test_interrupted_prepare_leaves_no_output(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = tmp_path / "a.txt"
    src.write_text("some text\n" * 100, "utf-8")

    def interrupted(*args: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(prep_mod, "split_point", interrupted)
    with pytest.raises(KeyboardInterrupt):
        prepare([str(src)], tmp_path / "out", Options())
    assert not (tmp_path / "out" / MANIFEST).exists() and not temp_files(tmp_path)


def train(*args: str) -> Result:
    result = invoke("train", *args)
    assert result.exit_code == 0, result.output
    return result


def test_train_resume_and_eval_on_a_prepared_dir(tmp_path: Path) -> None:
    src = tmp_path / "text.txt"
    src.write_text("the quick brown fox jumps over the lazy dog\n" * 60, "utf-8")
    prep = tmp_path / "prep"
    assert (
        invoke("data", "prepare", str(src), "-o", str(prep), "--val-fraction", "0.2").exit_code == 0
    )
    small = [*TINY[:-1], "--set", "train.max_steps=4", "--set", "train.checkpoint_every=2"]
    straight, halves = tmp_path / "straight", tmp_path / "halves"
    result = train(str(prep), *small, "--run-dir", str(straight))
    assert "data.val_fraction=0.1 is not used" in result.stderr  # the prepared split wins
    train(str(prep), *small, "--set", "train.max_steps=2", "--run-dir", str(halves))
    train("--resume", "--run-dir", str(halves), "--set", "train.max_steps=4", "--quiet")
    assert_same_run(straight, halves)
    config = (straight / "config.yaml").read_text("utf-8")
    assert "val_fraction: 0.2" in config and "val_split: tail" in config
    fp = CorpusFingerprint.of(prep)
    assert fp.size == src.stat().st_size and fp.path == str(prep.resolve())
    result = invoke("eval", str(prep), "--run", str(straight), "--json")
    on_dir = json.loads(result.output)
    on_text = json.loads(invoke("eval", str(src), "--run", str(straight), "--json").output)
    assert on_dir["loss"] == pytest.approx(on_text["loss"]) and on_dir["baselines"]
    # A corpus prepared again from other text is a changed corpus for the run.
    src.write_text("other words entirely\n" * 60, "utf-8")
    assert invoke("data", "prepare", str(src), "-o", str(prep)).exit_code == 0
    result = invoke("train", "--resume", "--run-dir", str(halves), "--set", "train.max_steps=6")
    assert_error(result, "the corpus has changed")


def test_background_writer_keeps_order_and_raises_a_failed_write(tmp_path: Path) -> None:
    """Writes run in the order handed over; a write's error reaches the caller (at the next
    `put` or at the end), and nothing is written after it."""
    seen: list[int] = []

    def write(ids: np.ndarray, tag: int) -> None:
        if tag == 3:
            raise OSError(28, "No space left on device")
        seen.append(tag)

    with fileio.BackgroundWriter(write) as out:
        for tag in range(3):
            out.put(np.arange(tag + 1), tag)
    assert seen == [0, 1, 2] and out.written == 6 and out.puts == 3
    with pytest.raises(OSError, match="No space"), fileio.BackgroundWriter(write) as out:
        out.put(np.arange(2), 3)
    with pytest.raises(OSError, match="No space"), fileio.BackgroundWriter(write) as out:
        out.put(np.arange(2), 3)
        out.put(np.arange(2), 4)
    assert seen == [0, 1, 2]
    target = tmp_path / "f"
    target.write_bytes(b"0123456789")
    with open(target, "r+b") as fh:
        fileio.pwrite_all(fh.fileno(), memoryview(b"ab"), 4)
    assert target.read_bytes() == b"0123ab6789"


@settings(max_examples=150, deadline=None)
@given(
    lines=st.lists(st.integers(1, 6), min_size=1, max_size=12),
    val_fraction=st.sampled_from([0.0, 0.01, 0.1, 0.3, 0.9]),
)
def test_lines_split_is_the_last_line_end_at_or_before_the_cut(
    lines: list[int], val_fraction: float
) -> None:
    """The validation part starts at the <EOS> nearest below the cut (not the final one),
    else the first after it: a corpus of several lines always splits, even when the cut falls
    on its final <EOS> (it once said "one line" for a 1% split of a small corpus)."""
    ids = np.array([1] + [i for n in lines for i in [7] * n + [1]], dtype=np.uint8)
    n, cut = len(ids), int(len(ids) * (1.0 - val_fraction))
    ends = np.flatnonzero(ids[: n - 1] == 1)[1:]  # the line ends a split can take
    if cut >= n:
        assert prep_mod.split_point(ids, val_fraction, 1) == (cut, cut)
    elif not len(ends):
        with pytest.raises(CharlmError, match="one line"):
            prep_mod.split_point(ids, val_fraction, 1)
    else:
        below = ends[ends <= cut]
        pos = int(below[-1] if len(below) else ends[0])
        assert prep_mod.split_point(ids, val_fraction, 1) == (pos + 1, pos)
