"""Tests for charlm.data: reading, encoding, splitting and the batch streams."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import charlm.data as data_module
from charlm.data import Batch, BatchStream, encode_text, eval_batches, read_text, split_ids
from charlm.errors import CharlmError
from charlm.vocab import Vocab

DATA = Path(__file__).resolve().parent.parent / "data"


# --- read_text ---------------------------------------------------------------------------------


def test_read_text_missing_and_directory(tmp_path: Path) -> None:
    with pytest.raises(CharlmError, match=r"not found: .*nope\.txt"):
        read_text(tmp_path / "nope.txt")
    with pytest.raises(CharlmError, match="is a directory"):
        read_text(tmp_path)


@pytest.mark.parametrize("content", [b"", b" \n\t\r\n  ", b"\xef\xbb\xbf", b"\xef\xbb\xbf\n"])
def test_read_text_empty_or_whitespace(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "blank.txt"
    path.write_bytes(content)
    with pytest.raises(CharlmError, match=r"blank\.txt is empty"):
        read_text(path)


@pytest.mark.parametrize(
    ("content", "offset"),
    [
        (b"hello\xffworld", 5),
        ("héllo".encode() + b"\xc3", 6),  # truncated 2-byte sequence at the end
        (b"\xef\xbb\xbfab\x80", 5),  # offset counts the BOM: it is a position in the file
        (("ok\n" * 500).encode() + b"\xed\xa0\x80", 1500),  # an encoded surrogate is invalid
    ],
)
def test_read_text_invalid_utf8_reports_byte_offset(
    tmp_path: Path, content: bytes, offset: int
) -> None:
    path = tmp_path / "bad.txt"
    path.write_bytes(content)
    with pytest.raises(CharlmError, match=rf"bad\.txt: invalid UTF-8 at byte offset {offset}$"):
        read_text(path)


def test_read_text_normalises_newlines_and_drops_bom(tmp_path: Path) -> None:
    path = tmp_path / "crlf.txt"
    path.write_bytes(b"\xef\xbb\xbfone\r\ntwo\rthree\n\r\nfour")
    assert read_text(path) == "one\ntwo\nthree\n\nfour"
    path.write_bytes("ünïcode 😀\n".encode())
    assert read_text(str(path)) == "ünïcode 😀\n"


# --- encode_text -------------------------------------------------------------------------------


def _lines_vocab() -> Vocab:
    return Vocab.build(["ab\nc\n"], mode="lines")


@pytest.mark.parametrize(
    ("text", "layout"),
    [
        ("ab\nc\n", "E ab E c E"),
        ("ab\nc", "E ab E c E"),  # a missing final newline still ends the last line
        ("ab\n\nc\n", "E ab E c E"),  # blank lines are no examples: left out
        ("ab\n \t\nc\n\n", "E ab E c E"),  # whitespace-only lines too
        ("\n", "E"),
        ("c", "E c E"),
    ],
)
def test_encode_text_lines_layout(text: str, layout: str) -> None:
    vocab = _lines_vocab()
    ids = encode_text(text, vocab)
    assert ids.dtype == vocab.dtype
    expected: list[int] = []
    for part in layout.split():  # "E" is <EOS>, anything else a run of characters
        expected += [vocab.eos_id] if part == "E" else [vocab.tokens.index(c) for c in part]
    assert ids.tolist() == expected


def test_encode_text_stream_is_plain_encode() -> None:
    vocab = Vocab.build(["ab\nc"])
    assert encode_text("ab\nc\n", vocab).tolist() == vocab.encode("ab\nc\n").tolist()
    assert encode_text("ab\nc\n", vocab)[-1] == vocab.tokens.index("\n")


def test_encode_names_file_counts_one_eos_per_name_plus_start() -> None:
    text = read_text(DATA / "names.txt")
    vocab = Vocab.build([text], mode="lines")
    ids = encode_text(text, vocab)
    assert vocab.counts[vocab.eos_id] == 32_033
    assert int(np.count_nonzero(ids == vocab.eos_id)) == 32_033 + 1
    assert ids[0] == vocab.eos_id and ids[-1] == vocab.eos_id
    assert vocab.decode(ids[:12]) == "<EOS>emma<EOS>olivia"


# --- split_ids ---------------------------------------------------------------------------------


def test_split_tinyshakespeare_matches_nanogpt() -> None:
    text = read_text(DATA / "tinyshakespeare.txt")
    ids = encode_text(text, Vocab.build([text]))
    train, val = split_ids(ids, 0.1)
    assert (len(train), len(val)) == (1_003_854, 111_540)
    assert np.shares_memory(train, ids) and np.shares_memory(val, ids)  # views, no copies
    assert train.base is not None and val.base is not None
    train0, val0 = split_ids(ids, 0.0)
    assert len(train0) == len(ids) and len(val0) == 0


# --- BatchStream -------------------------------------------------------------------------------


def test_batch_stream_rows_continue_and_y_is_shifted() -> None:
    ids = np.arange(1, 104, dtype=np.uint16)  # 103 ids: N=4 streams of L=25, T=6 -> 4 windows
    stream = BatchStream(ids, batch_size=4, seq_len=6)
    assert stream.windows_per_epoch == 4
    batches = [stream.next_batch() for _ in range(4)]
    for n in range(4):
        row = np.concatenate([b.x[n] for b in batches])
        assert row.tolist() == ids[n * 25 : n * 25 + 24].tolist()  # contiguous across batches
        targets = np.concatenate([b.y[n] for b in batches])
        assert targets.tolist() == ids[n * 25 + 1 : n * 25 + 25].tolist()
    for b in batches:
        assert b.x.shape == b.y.shape == (4, 6) and b.x.dtype == np.int64
        assert b.resets is None


def test_batch_stream_wraps_and_counts_epochs() -> None:
    stream = BatchStream(np.arange(50), batch_size=2, seq_len=8)  # L=24 -> 3 windows
    assert stream.starts_epoch() and stream.epoch == 0
    first = stream.next_batch()
    assert not stream.starts_epoch()
    stream.next_batch()
    stream.next_batch()
    assert stream.position == 3 and stream.epoch == 1 and stream.starts_epoch()
    again = stream.next_batch()
    assert np.array_equal(first.x, again.x) and np.array_equal(first.y, again.y)
    assert stream.position == 4 and stream.epoch == 1


@settings(max_examples=40, deadline=None)
@given(
    n_ids=st.integers(20, 400),
    batch_size=st.integers(1, 6),
    seq_len=st.integers(1, 9),
    position=st.integers(0, 30),
)
def test_batch_stream_resume_gives_identical_batches(
    n_ids: int, batch_size: int, seq_len: int, position: int
) -> None:
    ids = np.random.default_rng(n_ids).integers(0, 50, n_ids).astype(np.uint8)
    if (n_ids - 1) // batch_size < seq_len:
        with pytest.raises(CharlmError, match="corpus too short"):
            BatchStream(ids, batch_size, seq_len)
        return
    fresh = BatchStream(ids, batch_size, seq_len)
    for _ in range(position):
        fresh.next_batch()
    resumed = BatchStream(ids, batch_size, seq_len, position=position)
    assert resumed.epoch == fresh.epoch and resumed.starts_epoch() == fresh.starts_epoch()
    for _ in range(5):
        a, b = fresh.next_batch(), resumed.next_batch()
        assert np.array_equal(a.x, b.x) and np.array_equal(a.y, b.y)
        # every target is the id right after its input in the corpus
        assert np.array_equal(a.y[:, :-1], a.x[:, 1:])


def test_batch_stream_resets_in_lines_mode() -> None:
    text = read_text(DATA / "dinosaurs.txt")
    vocab = Vocab.build([text], mode="lines")
    ids = encode_text(text, vocab)
    stream = BatchStream(ids, batch_size=8, seq_len=32, reset_id=vocab.eos_id)
    for _ in range(5):
        batch = stream.next_batch()
        assert batch.resets is not None and batch.resets.dtype == np.bool_
        assert np.array_equal(batch.resets, batch.x == vocab.eos_id)
    assert bool(BatchStream(ids, 8, 32, reset_id=vocab.eos_id).next_batch().resets[0, 0])


def test_batch_stream_too_short_message() -> None:
    with pytest.raises(CharlmError) as info:
        BatchStream(np.arange(40), batch_size=4, seq_len=10)
    assert str(info.value) == (
        "corpus too short for one batch: 4 streams x 10 steps need 4*10+1 = 41 characters, "
        "have 40; lower train.batch_size or train.seq_len"
    )
    BatchStream(np.arange(41), batch_size=4, seq_len=10)  # exactly enough


@pytest.mark.parametrize("position", [-1, 2.5, True])
def test_batch_stream_rejects_a_bad_position(position: Any) -> None:
    # The position comes from a checkpoint; batch_size and seq_len are checked by the config.
    with pytest.raises(CharlmError, match="position"):
        BatchStream(np.arange(100), batch_size=2, seq_len=3, position=position)


# --- eval_batches ------------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(n_ids=st.integers(2, 300), batch_size=st.integers(1, 8), seq_len=st.integers(1, 12))
def test_eval_batches_cover_all_but_fewer_than_n_targets(
    n_ids: int, batch_size: int, seq_len: int
) -> None:
    ids = np.arange(n_ids, dtype=np.uint32)
    batches = list(eval_batches(ids, batch_size, seq_len))
    n = batches[0].x.shape[0]
    assert 1 <= n <= batch_size
    streams = [np.concatenate([b.x[r] for b in batches]) for r in range(n)]
    targets = np.concatenate([np.concatenate([b.y[r] for b in batches]) for r in range(n)])
    # in order per stream, and stream r + 1 picks up where stream r stopped
    assert np.concatenate(streams).tolist() == list(range(len(targets)))
    assert targets.tolist() == list(range(1, len(targets) + 1))
    assert 0 <= (n_ids - 1) - len(targets) < n
    assert all(b.x.shape[1] <= seq_len and b.resets is None for b in batches)
    assert all(b.x.shape[1] == seq_len for b in batches[:-1])


@settings(max_examples=80, deadline=None)
@given(
    lines=st.lists(st.lists(st.integers(2, 9), max_size=12), min_size=1, max_size=30),
    batch_size=st.integers(1, 8),
    seq_len=st.integers(1, 12),
)
def test_line_streams_score_every_target_once_from_a_line_start(
    lines: list[list[int]], batch_size: int, seq_len: int
) -> None:
    ids = np.array([1] + [i for line in lines for i in [*line, 1]], dtype=np.uint8)
    batches = list(eval_batches(ids, batch_size, seq_len, reset_id=1))
    n = batches[0].x.shape[0]
    rows = [
        [
            (x, y)
            for b in batches
            for x, y, s in zip(b.x[r], b.y[r], b.scored[r], strict=True)
            if s
        ]  # fmt: skip
        for r in range(n)
    ]
    assert all(row and row[0][0] == 1 for row in rows)  # each stream starts at a line start
    pairs = [pair for row in rows for pair in row]
    assert [int(x) for x, _ in pairs] == ids[:-1].tolist()  # all of them, in corpus order
    assert [int(y) for _, y in pairs] == ids[1:].tolist()
    for b in batches:  # unscored padding reads <EOS>: it cannot disturb a later scored step
        assert (b.x[~b.scored] == 1).all() and np.array_equal(b.resets, b.x == 1)


def test_eval_batches_resets_and_short_input() -> None:
    ids = np.array([1, 5, 6, 1, 7, 1], dtype=np.uint8)
    (batch,) = eval_batches(ids, batch_size=1, seq_len=10, reset_id=1)
    assert isinstance(batch, Batch)
    assert batch.x.tolist() == [[1, 5, 6, 1, 7]] and batch.y.tolist() == [[5, 6, 1, 7, 1]]
    assert batch.resets is not None and batch.resets.tolist() == [[True, False, False, True, False]]
    with pytest.raises(CharlmError, match="at least 2"):
        list(eval_batches(ids[:1], 4, 4))


@settings(max_examples=150, deadline=None)
@given(
    ids=st.lists(st.integers(0, 4), min_size=2, max_size=80),
    n=st.integers(1, 9),
    block=st.sampled_from([1, 2, 3, 1 << 20]),
)
def test_line_cuts_scanned_in_blocks_are_the_first_starts_of_each_share(
    ids: list[int], n: int, block: int
) -> None:
    """Each stream of a lines-mode evaluation starts at the first sequence start at or after
    k/n of the inputs (the last start if none follows), found without reading all the ids
    at once: the same cuts as searching a list of every start."""
    arr = np.array(ids, dtype=np.uint8)
    starts = np.flatnonzero(arr[:-1] == 1)
    body = len(arr) - 1
    expected = {0}
    for k in range(n):
        after = starts[starts >= k * body / n]
        expected.add(int(after[0]) if len(after) else int(starts[-1]) if len(starts) else 0)
    assert data_module._line_cuts(arr, n, 1, block).tolist() == sorted(expected)
