"""Tests for charlm.vocab: building, encoding, the file format and its errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from charlm.errors import CharlmError, VocabError
from charlm.vocab import CHUNK_CHARS, EOS, FORMAT_VERSION, UNK, Vocab, iter_code_points

DATA = Path(__file__).resolve().parent.parent / "data"

# Any Unicode text hypothesis can make (it leaves out lone surrogates by default).
texts = st.text(min_size=1, max_size=60)


def _with_unk(text: str, vocab: Vocab) -> str:
    """What decode(encode(text)) must give: unknown characters spelled "<UNK>"."""
    known = set(vocab.tokens)
    return "".join(c if c in known else UNK for c in text)


# --- round trips (property based) -------------------------------------------------------------


@settings(max_examples=150, deadline=None)
@given(base=texts, data=st.data())
def test_stream_round_trip_over_alphabet(base: str, data: st.DataObject) -> None:
    vocab = Vocab.build([base])
    assert vocab.tokens[2:] == tuple(sorted(set(base)))
    text = data.draw(st.text(alphabet=sorted(set(base)), max_size=80))
    ids = vocab.encode(text)
    assert ids.dtype == vocab.dtype and len(ids) == len(text)
    assert vocab.decode(ids) == text
    assert not np.any(ids == vocab.unk_id)


@settings(max_examples=150, deadline=None)
@given(base=texts.filter(lambda t: t.replace("\n", "")), data=st.data())
def test_lines_round_trip_over_alphabet(base: str, data: st.DataObject) -> None:
    vocab = Vocab.build([base], mode="lines")
    assert "\n" not in vocab.tokens
    alphabet = sorted(set(base) - {"\n"})
    text = data.draw(st.text(alphabet=alphabet, max_size=80))
    assert vocab.decode(vocab.encode(text)) == text


@settings(max_examples=150, deadline=None)
@given(base=texts, other=st.text(max_size=80))
def test_unknown_characters_become_unk(base: str, other: str) -> None:
    vocab = Vocab.build([base])
    assert vocab.decode(vocab.encode(other)) == _with_unk(other, vocab)


def test_lines_encode_maps_newline_to_eos() -> None:
    vocab = Vocab.build(["ab\nba\n"], mode="lines")
    ids = vocab.encode("ab\nc")
    assert ids.tolist() == [vocab.tokens.index("a"), vocab.tokens.index("b"), vocab.eos_id, 0]
    assert vocab.decode(ids) == "ab<EOS><UNK>"


def test_non_bmp_emoji_round_trip() -> None:
    text = "smile 😀, rocket 🚀, 𝄞 clef, 中文 and ascii\n"
    vocab = Vocab.build([text])
    assert "😀" in vocab.tokens and "𝄞" in vocab.tokens
    assert vocab.decode(vocab.encode(text)) == text
    # A code point above every table entry (and above the largest token) maps to <UNK>.
    assert vocab.decode(vocab.encode("😀\U0010fffd")) == "😀" + UNK


def test_chunk_boundaries_mixed_ascii_and_non_ascii() -> None:
    # Chunks alternate between the ASCII fast path and UTF-32; ids must line up across them.
    text = "a" * (CHUNK_CHARS - 1) + "é" + "b" * CHUNK_CHARS + "😀ü"
    chunks = list(iter_code_points(text))
    assert [c.dtype.itemsize for c in chunks] == [4, 1, 4]
    vocab = Vocab.build([text])
    ids = vocab.encode(text)
    assert vocab.decode(ids[CHUNK_CHARS - 3 : CHUNK_CHARS + 3]) == "aaébbb"
    assert vocab.decode(ids) == text


# --- build: counts, min_count, max_size -------------------------------------------------------


def test_build_counts_and_ids_in_code_point_order() -> None:
    vocab = Vocab.build(["banana", "cab"])
    assert vocab.tokens == (UNK, EOS, "a", "b", "c", "n")
    assert (vocab.unk_id, vocab.eos_id) == (0, 1)
    assert vocab.counts == (0, 0, 4, 2, 1, 2)
    assert vocab.stats()["characters"] == 9


def test_build_accepts_a_single_string_as_one_document() -> None:
    assert Vocab.build("ab\nc", mode="lines").counts[1] == 2


def test_min_count_drops_rare_characters_to_unk() -> None:
    vocab = Vocab.build(["aaabbc"], min_count=2)
    assert vocab.tokens == (UNK, EOS, "a", "b")
    assert vocab.counts[vocab.unk_id] == 1
    assert vocab.decode(vocab.encode("abc")) == "ab<UNK>"


def test_max_size_keeps_the_most_frequent_including_specials() -> None:
    vocab = Vocab.build(["zzzz yyy xx w"], max_size=5)  # 2 specials + 3 characters
    assert len(vocab) == 5
    assert vocab.tokens[2:] == (" ", "y", "z")  # ' ' (3) ties 'y' (3): both kept, 'x' (2) out
    assert vocab.counts[vocab.unk_id] == 3  # xx w
    tie = Vocab.build(["dcba"], max_size=4)  # all count 1: lower code points win
    assert tie.tokens[2:] == ("a", "b")


def test_lines_mode_excludes_newline_and_counts_sequences() -> None:
    assert Vocab.build(["ab\ncd"], mode="lines").counts[1] == 2  # no final newline
    vocab = Vocab.build(["ab\n\ncd\n", "x"], mode="lines")
    assert "\n" not in vocab.tokens
    assert vocab.counts[vocab.eos_id] == 4  # "ab", "", "cd" and "x"
    assert vocab.stats()["characters"] == 5
    stream = Vocab.build(["ab\ncd"])
    assert "\n" in stream.tokens and stream.counts[stream.eos_id] == 0


def test_build_rejects_bad_arguments() -> None:
    # min_count and max_size are config values, checked there (test_config); the mode is also
    # checked by the constructor, which guards vocabularies read from files.
    with pytest.raises(VocabError, match="mode"):
        Vocab.build(["a"], mode="words")
    with pytest.raises(VocabError, match="strings"):
        Vocab.build([b"abc"])  # type: ignore[list-item]
    with pytest.raises(VocabError, match="empty"):
        Vocab.build([""])
    with pytest.raises(VocabError, match="min_count=5"):
        Vocab.build(["abc"], min_count=5)


def test_lone_surrogates_map_to_unk_instead_of_crashing() -> None:
    vocab = Vocab.build(["a\ud800b"])
    assert vocab.tokens == (UNK, EOS, "a", "b")
    assert vocab.decode(vocab.encode("a\ud800")) == "a<UNK>"


# --- stats -------------------------------------------------------------------------------------


def test_stats_most_common_and_coverage() -> None:
    vocab = Vocab.build(["aaab", "bc d"], min_count=2)  # c, ' ', d -> UNK
    stats = vocab.stats()
    assert stats["size"] == 4 and stats["characters"] == 8
    assert stats["unk_rate"] == pytest.approx(3 / 8)
    assert stats["coverage"] == pytest.approx(5 / 8)
    assert vocab.most_common(1) == [("a", 3)]
    assert vocab.most_common() == [("a", 3), ("b", 2)]
    assert vocab.coverage("abxy") == pytest.approx(0.5)
    lines = Vocab.build(["ab\n"], mode="lines")
    assert lines.coverage("a\nz\n") == pytest.approx(0.5)  # newlines are not characters


def test_tinyshakespeare_has_65_characters_plus_specials() -> None:
    text = (DATA / "tinyshakespeare.txt").read_text(encoding="utf-8")
    vocab = Vocab.build([text])
    assert len(vocab) == 67 and vocab.dtype == np.uint8
    assert vocab.tokens[2:] == tuple(sorted(set(text)))
    assert sum(vocab.counts) == 1_115_394
    assert vocab.most_common(1) == [(" ", text.count(" "))]


# --- dtype -------------------------------------------------------------------------------------


def test_dtype_grows_with_the_vocabulary() -> None:
    assert Vocab.build(["".join(map(chr, range(33, 33 + 254)))]).dtype == np.uint8  # 256 ids
    assert Vocab.build(["".join(map(chr, range(33, 33 + 255)))]).dtype == np.uint16  # 257 ids
    cjk = "".join(chr(cp) for cp in range(0x4E00, 0x4E00 + 3000))
    vocab = Vocab.build([cjk * 2])
    assert len(vocab) == 3002 and vocab.dtype == np.uint16
    assert vocab.encode(cjk).dtype == np.uint16 and vocab.decode(vocab.encode(cjk)) == cjk
    huge = "".join(chr(cp) for cp in range(0x10000, 0x10000 + 70_000))
    big = Vocab.build([huge])
    assert big.dtype == np.uint32 and big.decode(big.encode(huge[-50:])) == huge[-50:]


# --- file format -------------------------------------------------------------------------------


def test_to_dict_layout() -> None:
    d = Vocab.build(["ba"], mode="lines").to_dict()
    assert d == {
        "format": "charlm-vocab",
        "version": FORMAT_VERSION,
        "mode": "lines",
        "tokens": [UNK, EOS, "a", "b"],
        "counts": [0, 1, 1, 1],
    }


def test_save_load_round_trip(tmp_path: Path) -> None:
    vocab = Vocab.build(["héllo wörld 😀\nsecond"], mode="lines", min_count=1)
    path = tmp_path / "vocab.json"
    vocab.save(path)
    assert "😀" in path.read_text(encoding="utf-8")  # ensure_ascii=False: readable JSON
    loaded = Vocab.load(path)
    assert loaded == vocab and loaded.counts == vocab.counts and loaded.mode == "lines"
    assert hash(loaded) == hash(vocab)
    assert loaded != Vocab(vocab.tokens, "stream")


def test_atomic_save_leaves_no_temp_file(tmp_path: Path) -> None:
    path = tmp_path / "v.json"
    path.write_text("old", encoding="utf-8")
    Vocab.build(["abc"]).save(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v.json"]
    assert Vocab.load(path).tokens[2:] == ("a", "b", "c")
    with pytest.raises(VocabError, match="cannot write"):
        Vocab.build(["abc"]).save(tmp_path / "missing" / "v.json")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v.json"]


def _valid() -> dict:
    return Vocab.build(["abc"]).to_dict()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"tokens": [UNK, EOS, "a", "a"], "counts": [0, 0, 1, 1]}, "duplicate"),
        ({"tokens": [EOS, "a", "b", "c"]}, "<UNK>"),
        ({"tokens": [UNK, "a", "b", "c"]}, "<EOS>"),
        ({"version": 2}, "version"),
        ({"version": "1"}, "version"),
        ({"version": True}, "version"),
        ({"format": "something-else"}, "format"),
        ({"mode": "words"}, "mode"),
        ({"mode": 1}, "mode"),
        ({"tokens": "abc"}, "tokens"),
        ({"tokens": [UNK, EOS, "a", 7]}, "strings"),
        ({"tokens": [UNK, EOS, "ab", "c"]}, "single character"),
        ({"tokens": [UNK, EOS, "", "c"]}, "single character"),
        ({"counts": [0, 0, 1.0, 1, 1]}, "integers"),
        ({"counts": [0, 0, 1, 1]}, "counts"),
        ({"counts": [0, 0, -1, 1, 1]}, "non-negative"),
        ({"counts": [0, 0, True, 1, 1]}, "integers"),
        ({"counts": "0"}, "counts"),
        ({"extra": 1}, "extra"),
    ],
)
def test_from_dict_rejects(change: dict, message: str) -> None:
    d = {**_valid(), **change}
    if "tokens" in change and "counts" not in change:
        d["counts"] = [0] * len(d["tokens"]) if isinstance(d["tokens"], list) else [0]
    with pytest.raises(VocabError, match=message):
        Vocab.from_dict(d)


def test_from_dict_rejects_newline_in_lines_mode_and_non_objects() -> None:
    with pytest.raises(VocabError, match="lines"):
        Vocab.from_dict({**_valid(), "mode": "lines", "tokens": [UNK, EOS, "\n", "a", "b"]})
    with pytest.raises(VocabError, match="JSON object"):
        Vocab.from_dict([UNK, EOS])
    # counts are optional in a hand-written file
    d = _valid()
    del d["counts"]
    assert Vocab.from_dict(d).counts == (0,) * 5


def test_load_errors_are_one_line_vocab_errors(tmp_path: Path) -> None:
    cases = {
        "missing.json": None,
        "bad.json": b'{"format": "charlm-vocab",',
        "latin1.json": b'{"format": "charlm-vocab\xe9"}',
        "v9.json": json.dumps({**_valid(), "version": 9}).encode(),
    }
    for name, content in cases.items():
        if content is not None:
            (tmp_path / name).write_bytes(content)
    expected = {
        "missing.json": "not found",
        "bad.json": "invalid JSON at line 1",
        "latin1.json": "invalid UTF-8 at byte offset 24",
        "v9.json": "v9.json: unsupported vocabulary version 9",
    }
    for name, message in expected.items():
        with pytest.raises(VocabError, match=message) as info:
            Vocab.load(tmp_path / name)
        assert "\n" not in str(info.value)
    with pytest.raises(VocabError, match="directory"):
        Vocab.load(tmp_path)
    assert issubclass(VocabError, CharlmError)


# --- misc --------------------------------------------------------------------------------------


def test_decode_accepts_lists_and_ints_and_rejects_bad_ids() -> None:
    vocab = Vocab.build(["ab"])
    assert vocab.decode([2, 3, 1, 0]) == "ab<EOS><UNK>"
    assert vocab.decode(3) == "b" and vocab.decode([]) == ""
    with pytest.raises(VocabError, match="out of range"):
        vocab.decode([4])
    with pytest.raises(VocabError, match="out of range"):
        vocab.decode(np.array([-1]))
    with pytest.raises(VocabError, match="integer"):
        vocab.decode(np.array([1.0]))


def test_constructor_accepts_specials_anywhere() -> None:
    vocab = Vocab(["a", EOS, "b", UNK], "stream")
    assert (vocab.unk_id, vocab.eos_id) == (3, 1)
    assert vocab.encode("abc").tolist() == [0, 2, 3]
