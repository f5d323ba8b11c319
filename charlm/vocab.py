"""The character vocabulary: ids for code points, plus the `<UNK>` and `<EOS>` specials.

Ids are stable and readable: 0 = `<UNK>`, 1 = `<EOS>`, then the kept characters in code-point
order. Building and encoding are vectorised over chunks of code points, so a large corpus is
never expanded into one big UTF-32 copy.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from charlm.device import to_numpy
from charlm.errors import VocabError
from charlm.fileio import read_bytes, write_atomic

UNK = "<UNK>"
EOS = "<EOS>"
FORMAT = "charlm-vocab"
FORMAT_VERSION = 1
MODES = ("stream", "lines")

# Characters per chunk: big enough to amortise the per-call overhead, small enough that the
# temporary copies (str slice, bytes, intp indices) stay at a few MB.
CHUNK_CHARS = 1 << 18
_NEWLINE = ord("\n")
_SURROGATES = (0xD800, 0xDFFF)  # lone surrogates cannot be written as UTF-8


def iter_code_points(text: str, chunk: int = CHUNK_CHARS) -> Iterator[np.ndarray]:
    """The code points of `text` as uint8 (ASCII chunks) or uint32 arrays, chunk by chunk."""
    for start in range(0, len(text), chunk):
        piece = text[start : start + chunk]
        if piece.isascii():  # O(1) flag check in CPython; a quarter of the UTF-32 bytes
            yield np.frombuffer(piece.encode("ascii"), dtype=np.uint8)
        else:
            yield np.frombuffer(piece.encode("utf-32-le", "surrogatepass"), dtype="<u4")


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


class Vocab:
    """An immutable mapping between tokens (single characters or specials) and integer ids."""

    def __init__(self, tokens: Sequence[str], mode: str, counts: Sequence[int] | None = None):
        if mode not in MODES:
            raise VocabError(f"unknown vocabulary mode {mode!r}; choose one of: {', '.join(MODES)}")
        tokens = () if isinstance(tokens, str) else tuple(tokens)  # also drains an iterator once
        if not tokens or not all(isinstance(t, str) for t in tokens):
            raise VocabError("vocabulary tokens must be a list of strings")
        seen: set[str] = set()
        for token in tokens:
            if token in seen:
                raise VocabError(f"duplicate vocabulary token {token!r}")
            seen.add(token)
        for special in (UNK, EOS):
            if special not in tokens:
                raise VocabError(f"vocabulary lacks the special token {special!r}")
        for token in tokens:
            if token in (UNK, EOS):
                continue
            if len(token) != 1:
                raise VocabError(f"vocabulary token {token!r} is not a single character")
            if _SURROGATES[0] <= ord(token) <= _SURROGATES[1]:
                raise VocabError(f"vocabulary token {token!r} is a lone surrogate")
        if mode == "lines" and "\n" in tokens:
            raise VocabError("a 'lines' vocabulary cannot contain '\\n' (lines end in <EOS>)")
        counts = (0,) * len(tokens) if counts is None else counts
        counts = tuple(counts)
        if not all(_is_int(c) for c in counts):
            raise VocabError("vocabulary counts must be a list of integers")
        if len(counts) != len(tokens):
            raise VocabError(f"vocabulary has {len(tokens)} tokens but {len(counts)} counts")
        if any(c < 0 for c in counts):
            raise VocabError("vocabulary counts must be non-negative")

        self.tokens: tuple[str, ...] = tokens
        self.mode: str = mode
        self.counts: tuple[int, ...] = tuple(int(c) for c in counts)
        self.unk_id: int = tokens.index(UNK)
        self.eos_id: int = tokens.index(EOS)
        self._table = self._lookup_table()

    def _lookup_table(self) -> np.ndarray:
        """Code point -> id; the last entry is <UNK> and catches every larger code point."""
        chars = [(ord(t), i) for i, t in enumerate(self.tokens) if t not in (UNK, EOS)]
        top = max([cp for cp, _ in chars] + [_NEWLINE])
        table = np.full(top + 2, self.unk_id, dtype=self.dtype)
        for cp, i in chars:
            table[cp] = i
        if self.mode == "lines":
            table[_NEWLINE] = self.eos_id
        return table

    def __len__(self) -> int:
        return len(self.tokens)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Vocab):
            return NotImplemented
        return self.tokens == other.tokens and self.mode == other.mode

    def __hash__(self) -> int:
        return hash((self.tokens, self.mode))

    def __repr__(self) -> str:
        return f"Vocab(mode={self.mode!r}, size={len(self)})"

    @property
    def dtype(self) -> np.dtype:
        """The smallest unsigned dtype that holds every id."""
        if len(self) <= 1 << 8:
            return np.dtype(np.uint8)
        if len(self) <= 1 << 16:
            return np.dtype(np.uint16)
        return np.dtype(np.uint32)

    @classmethod
    def build(
        cls, texts: Iterable[str], mode: str = "stream", min_count: int = 1, max_size: int = 0
    ) -> Vocab:
        """A vocabulary of the characters in `texts` (each text is a separate document).

        `min_count` and `max_size` are the config's data.min_count and data.max_size, taken as
        valid: `charlm.config.DataConfig` checks them. (A bad `mode` still fails, in the
        constructor, which also guards vocabularies read from files.)
        """
        if isinstance(texts, str):
            texts = [texts]  # a lone string is one document, not an iterable of characters
        totals = np.zeros(_NEWLINE + 1, dtype=np.int64)
        sequences = 0
        for text in texts:
            if not isinstance(text, str):
                raise VocabError(f"vocabulary texts must be strings, got {type(text).__name__}")
            for cps in iter_code_points(text):
                found = np.bincount(cps)
                if len(found) > len(totals):
                    totals = np.concatenate([totals, np.zeros(len(found) - len(totals), np.int64)])
                totals[: len(found)] += found
            if mode == "lines" and text:
                sequences += text.count("\n") + (not text.endswith("\n"))
        return cls.from_counts(totals, sequences, mode, min_count, max_size)

    @classmethod
    def from_counts(
        cls, totals: np.ndarray, sequences: int, mode: str, min_count: int = 1, max_size: int = 0
    ) -> Vocab:
        """The vocabulary `build` makes from `totals` (occurrences by code point, newlines
        included) and `sequences` (lines mode's <EOS> count); shared with `charlm.prepare`,
        which counts a corpus bigger than memory chunk by chunk."""
        totals = np.array(totals, dtype=np.int64)  # a copy: the newline count is zeroed below
        if len(totals) <= _NEWLINE:
            totals = np.concatenate([totals, np.zeros(_NEWLINE + 1 - len(totals), np.int64)])
        if mode == "lines":
            totals[_NEWLINE] = 0  # newlines are sequence ends, counted as <EOS>

        present = np.flatnonzero(totals)
        present_counts = totals[present]
        keep = (present_counts >= min_count) & (
            (present < _SURROGATES[0]) | (present > _SURROGATES[1])
        )
        kept, kept_counts = present[keep], present_counts[keep]
        if max_size and len(kept) > max_size - 2:
            # The most frequent characters win; ties go to the lower code point.
            order = np.lexsort((kept, -kept_counts))[: max_size - 2]
            order.sort()
            kept, kept_counts = kept[order], kept_counts[order]
        if len(kept) == 0:
            raise VocabError(
                f"no characters to build a vocabulary from (min_count={min_count})"
                if len(present)
                else "no characters to build a vocabulary from (the text is empty)"
            )
        unk_count = int(totals.sum() - kept_counts.sum())
        tokens = [UNK, EOS] + [chr(cp) for cp in kept.tolist()]
        counts = [unk_count, sequences] + kept_counts.tolist()
        return cls(tokens, mode, counts)

    def encode(self, text: str, *, out: np.ndarray | None = None) -> np.ndarray:
        """Ids of the characters of `text` (unknown -> <UNK>; "\\n" -> <EOS> in lines mode).

        `out`, if given, is a 1-D array of dtype `self.dtype` and length `len(text)` to fill.
        """
        if not isinstance(text, str):
            raise VocabError(f"can only encode a string, got {type(text).__name__}")
        if out is None:
            out = np.empty(len(text), dtype=self.dtype)
        elif out.shape != (len(text),) or out.dtype != self.dtype:
            raise ValueError(f"out must have shape ({len(text)},) and dtype {self.dtype}")
        pos = 0
        for cps in iter_code_points(text):
            # mode="clip" sends every code point above the table to its last entry, <UNK>.
            np.take(self._table, cps, out=out[pos : pos + len(cps)], mode="clip")
            pos += len(cps)
        return out

    def ids_of_code_points(self, cps: np.ndarray) -> np.ndarray:
        """The ids of code points `cps` as `encode` gives them (unknown -> <UNK>; in lines
        mode a newline -> <EOS>)."""
        return np.take(self._table, cps, mode="clip")

    def decode(self, ids: Any) -> str:
        """The text of `ids` (an int or array of ints); specials appear as "<UNK>", "<EOS>"."""
        arr = np.asarray(to_numpy(ids)).reshape(-1)
        if arr.size == 0:
            return ""
        if not np.issubdtype(arr.dtype, np.integer):
            raise VocabError(f"can only decode integer ids, got dtype {arr.dtype}")
        low, high = int(arr.min()), int(arr.max())
        if low < 0 or high >= len(self):
            bad = low if low < 0 else high
            raise VocabError(f"id {bad} is out of range for a vocabulary of {len(self)} tokens")
        return "".join(map(self.tokens.__getitem__, arr.tolist()))

    def coverage(self, text: str) -> float:
        """Fraction of the characters of `text` (newlines excluded in lines mode) not <UNK>."""
        ids = self.encode(text)
        chars = len(ids)
        if self.mode == "lines":
            chars -= int(np.count_nonzero(ids == self.eos_id))
        if chars == 0:
            return 1.0
        return 1.0 - int(np.count_nonzero(ids == self.unk_id)) / chars

    def stats(self) -> dict[str, Any]:
        """Size and the counts seen by `build`: characters, sequences, unk_rate, coverage."""
        chars = sum(self.counts) - self.counts[self.eos_id]
        unk_rate = self.counts[self.unk_id] / chars if chars else 0.0
        return {
            "mode": self.mode,
            "size": len(self),
            "characters": chars,
            "sequences": self.counts[self.eos_id],
            "unk_count": self.counts[self.unk_id],
            "unk_rate": unk_rate,
            "coverage": 1.0 - unk_rate,
        }

    def most_common(self, k: int | None = None) -> list[tuple[str, int]]:
        """The `k` most frequent non-special tokens (all if None), ties in id order."""
        pairs = [
            (t, c) for t, c in zip(self.tokens, self.counts, strict=True) if t not in (UNK, EOS)
        ]
        pairs.sort(key=lambda tc: -tc[1])  # stable: ties keep id order
        return pairs if k is None else pairs[: max(k, 0)]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict; list index = id."""
        return {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "mode": self.mode,
            "tokens": list(self.tokens),
            "counts": list(self.counts),
        }

    @classmethod
    def from_dict(cls, d: Any) -> Vocab:
        """The vocabulary of a `to_dict` dict, checked strictly ("counts" may be left out)."""
        if not isinstance(d, dict):
            raise VocabError(f"a vocabulary must be a JSON object, got {type(d).__name__}")
        if d.get("format") != FORMAT:
            found = d.get("format")
            raise VocabError(f"not a charlm vocabulary (format {found!r}, need {FORMAT!r})")
        version = d.get("version")
        if not _is_int(version) or version != FORMAT_VERSION:
            raise VocabError(
                f"unsupported vocabulary version {version!r} (this charlm reads {FORMAT_VERSION})"
            )
        unknown = sorted(set(d) - {"format", "version", "mode", "tokens", "counts"})
        if unknown:
            raise VocabError(f"unexpected vocabulary key(s): {', '.join(map(repr, unknown))}")
        if not isinstance(d.get("mode"), str):
            raise VocabError("vocabulary 'mode' must be a string")
        if not isinstance(d.get("tokens"), list):
            raise VocabError("vocabulary 'tokens' must be a list of strings")
        counts = d.get("counts")
        if counts is not None and not isinstance(counts, list):
            raise VocabError("vocabulary 'counts' must be a list of integers")
        return cls(d["tokens"], d["mode"], counts)

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the vocabulary as UTF-8 JSON, atomically (temp file + fsync + rename)."""
        text = json.dumps(self.to_dict(), ensure_ascii=False, indent=1) + "\n"
        try:
            write_atomic(path, text.encode("utf-8"))
        except OSError as exc:
            raise VocabError(f"cannot write vocabulary {path}: {exc.strerror or exc}") from None

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Vocab:
        """Read a vocabulary written by `save`; every problem is a one-line `VocabError`."""
        path = Path(path)
        raw = read_bytes(path, "vocabulary file", VocabError)
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise VocabError(f"{path}: invalid UTF-8 at byte offset {exc.start}") from None
        try:
            d = json.loads(text)
        except json.JSONDecodeError as exc:
            raise VocabError(
                f"{path}: invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"
            ) from None
        try:
            return cls.from_dict(d)
        except VocabError as exc:
            raise VocabError(f"{path}: {exc}") from None
