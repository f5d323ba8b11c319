"""Corpus reading, encoding, the train/val split and the batch streams.

Training batches follow char-rnn / torch-rnn: the ids are cut into N parallel contiguous
streams and each stream into windows of T steps, so row n of batch k+1 continues row n of
batch k and the hidden state can be carried across batches.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from charlm.errors import CharlmError
from charlm.fileio import read_bytes
from charlm.vocab import Vocab

_BOM = b"\xef\xbb\xbf"


def read_text(path: str | os.PathLike[str]) -> str:
    """The text of a UTF-8 file, with CRLF and lone CR turned into "\\n" and any BOM dropped."""
    raw = read_bytes(path, "text file")
    skip = len(_BOM) if raw.startswith(_BOM) else 0
    try:
        # A memoryview slice drops the BOM without copying the whole file.
        text = str(memoryview(raw)[skip:], "utf-8")
    except UnicodeDecodeError as exc:
        raise CharlmError(f"{path}: invalid UTF-8 at byte offset {skip + exc.start}") from None
    del raw  # free the bytes before the (rare) newline rewrite below
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    if not text or text.isspace():
        raise CharlmError(f"{path} is empty (no non-whitespace text)")
    nuls = text.count("\0")
    if nuls > len(text) // 100:  # text has none; a stray one may be kept, a binary file may not
        raise CharlmError(
            f"{path} looks like a binary file, not text: {nuls:,} of its {len(text):,} "
            "characters are NUL bytes"
        )
    return text


_BLANK_LINE = re.compile(r"^[^\S\n]*(?:\n|\Z)", re.MULTILINE)


def drop_blank_lines(text: str) -> str:
    """`text` without its empty and whitespace-only lines (in lines mode they are no examples)."""
    return _BLANK_LINE.sub("", text)


def first_chars(text: str, mode: str, limit: int | None) -> str:
    """The text a model reads of `text`, cut at `limit` characters if given. In lines mode
    blank lines are left out and the cut keeps whole lines (a cut line would end in a false
    <EOS>); a first line longer than `limit` is cut one short, for its <EOS>."""
    if mode == "lines":
        text = drop_blank_lines(text)
    if limit is None or len(text) <= limit:
        return text
    if mode == "stream":
        return text[:limit]
    end = text.rfind("\n", 0, limit) + 1
    return text[:end] if end else text[: max(limit - 1, 1)]


def encode_text(text: str, vocab: Vocab) -> np.ndarray:
    """The ids of a corpus: `vocab.encode(text)` in stream mode; in lines mode

    <EOS> line1 <EOS> line2 <EOS> ... lineK <EOS>, the leading <EOS> being the start token
    the model reads first, exactly as sampling starts from <EOS>. Blank lines are left out.
    """
    if vocab.mode == "stream":
        return vocab.encode(text)
    # Lines mode: vocab.encode already maps "\n" to <EOS>; add the start and a final end.
    text = drop_blank_lines(text)
    tail = 0 if text.endswith("\n") or not text else 1
    ids = np.empty(1 + len(text) + tail, dtype=vocab.dtype)
    ids[0] = vocab.eos_id
    vocab.encode(text, out=ids[1 : 1 + len(text)])
    if tail:
        ids[-1] = vocab.eos_id
    return ids


def split_lines(
    ids: np.ndarray, val_fraction: float, eos_id: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """(train, val) of lines-mode ids (<EOS> line <EOS> line ... <EOS>): whole lines drawn at
    random (seeded) for validation, about `val_fraction` of them; each part keeps its lines in
    corpus order behind a leading <EOS>. A file sorted by anything (an alphabetical word list)
    would otherwise validate on its last letters only."""
    ends = np.flatnonzero(ids == eos_id)  # ends[0] == 0, the start token
    n_lines = len(ends) - 1
    n_val = n_lines - int(n_lines * (1.0 - val_fraction))
    val_line = np.zeros(n_lines, dtype=bool)
    val_line[np.random.default_rng(seed).permutation(n_lines)[:n_val]] = True
    in_val = np.repeat(val_line, np.diff(ends))  # per id after the start: its line's side
    body = ids[1 : ends[-1] + 1]
    start = ids[:1]
    return np.concatenate([start, body[~in_val]]), np.concatenate([start, body[in_val]])


def split_ids(ids: np.ndarray, val_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """(train, val) views: val is the contiguous tail, train the first int(n * (1 - f)) ids.

    `val_fraction` is the config's data.val_fraction, taken as valid (DataConfig checks it).
    """
    n_train = int(len(ids) * (1.0 - val_fraction))  # nanoGPT's rule: 1,003,854 on tinyshakespeare
    return ids[:n_train], ids[n_train:]


@dataclass(frozen=True)
class Batch:
    """One (N, T) window: inputs, next-character targets and optional state resets."""

    x: np.ndarray
    y: np.ndarray
    # True where the state must be zeroed BEFORE reading x[n, t]; None when nothing resets.
    resets: np.ndarray | None
    # (N,) True for the rows whose carried state restarts from zero before this window
    # (training streams only); None when every row carries its state on.
    restarts: np.ndarray | None = None
    # (N, T) True where the target counts (evaluation of padded streams); None: all count.
    scored: np.ndarray | None = None


def _check_ids(ids: np.ndarray) -> np.ndarray:
    """`ids` as a 1-D integer array, or a CharlmError. (batch_size and seq_len are the config's
    train.batch_size and train.seq_len, or eval's --batch-size: checked where they are read.)"""
    ids = np.asarray(ids)
    if ids.ndim != 1 or not np.issubdtype(ids.dtype, np.integer):
        raise CharlmError(f"ids must be a 1-D integer array, got {ids.ndim}-D {ids.dtype}")
    return ids


def _streams(ids: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Inputs and targets as (n, L) matrices, L = (len(ids) - 1) // n; views when contiguous."""
    length = (len(ids) - 1) // n
    x = ids[: n * length].reshape(n, length)
    y = ids[1 : n * length + 1].reshape(n, length)  # each row is x's row shifted by one
    return x, y


def _batch(x: np.ndarray, y: np.ndarray, reset_id: int | None) -> Batch:
    # int64 copies of the small window: cheap, contiguous and fast for np.take downstream.
    xb = x.astype(np.int64)
    return Batch(xb, y.astype(np.int64), None if reset_id is None else xb == reset_id)


class BatchStream:
    """N parallel contiguous streams cut into windows of T (char-rnn / torch-rnn): row n of
    batch k+1 continues row n of batch k, so the hidden state can be carried.

    Every row restarts from the zero state at an epoch's first window. With `restart_prob` p,
    each row also restarts at any other window with probability p (drawn from a generator
    seeded by `seed` and the position, so a resumed stream restarts where the first would
    have). Sampling and evaluation start from the zero state; without these restarts a model
    trained for less than a few epochs has almost never read text from it and can fall into
    states it never leaves (a cold-start sample of garbage).
    """

    def __init__(
        self,
        ids: np.ndarray,
        batch_size: int,
        seq_len: int,
        reset_id: int | None = None,
        position: int = 0,
        restart_prob: float = 0.0,
        seed: int = 0,
    ):
        ids = _check_ids(ids)
        if not isinstance(position, (int, np.integer)) or isinstance(position, bool):
            raise CharlmError(f"position must be an integer, got {position!r}")
        if position < 0:
            raise CharlmError(f"position must be >= 0, got {position}")
        length = max(len(ids) - 1, 0) // batch_size
        if length // seq_len < 1:
            need = batch_size * seq_len + 1
            raise CharlmError(
                f"corpus too short for one batch: {batch_size} streams x {seq_len} steps need "
                f"{batch_size}*{seq_len}+1 = {need} characters, have {len(ids)}; "
                "lower train.batch_size or train.seq_len"
            )
        self.batch_size = int(batch_size)
        self.seq_len = int(seq_len)
        self.reset_id = reset_id
        self.restart_prob = float(restart_prob)
        self.seed = int(seed)
        self.windows_per_epoch: int = length // seq_len
        self._x, self._y = _streams(ids, batch_size)
        self._position = int(position)

    @property
    def position(self) -> int:
        """Batches served so far (save it to resume exactly)."""
        return self._position

    @property
    def epoch(self) -> int:
        """Completed passes over the windows."""
        return self._position // self.windows_per_epoch

    def starts_epoch(self) -> bool:
        """True if the next batch is window 0 of an epoch (where carried state is zeroed)."""
        return self._position % self.windows_per_epoch == 0

    def restarts(self) -> np.ndarray | None:
        """(N,) rows whose state restarts from zero before the next batch; None if none do."""
        if self.starts_epoch():
            return np.ones(self.batch_size, dtype=bool)
        if self.restart_prob <= 0.0:
            return None
        rng = np.random.default_rng([self.seed, self._position])
        rows = rng.random(self.batch_size) < self.restart_prob
        return rows if rows.any() else None

    def next_batch(self) -> Batch:
        """The batch at `position`; then advance (wrapping to window 0 after the last)."""
        restarts = self.restarts()
        start = (self._position % self.windows_per_epoch) * self.seq_len
        window = slice(start, start + self.seq_len)
        self._position += 1
        batch = _batch(self._x[:, window], self._y[:, window], self.reset_id)
        return dataclasses.replace(batch, restarts=restarts)


def eval_batches(
    ids: np.ndarray, batch_size: int, seq_len: int, reset_id: int | None = None
) -> Iterator[Batch]:
    """Batches that cover every target of `ids` once, in stream order, for evaluation with
    carried state; the final window of each pass may be shorter. In stream mode the ids are
    cut into n equal streams (fewer than n leftovers are dropped). With `reset_id` (lines
    mode) the streams are cut at sequence starts and every target is scored, exactly as with
    one stream: a Batch's `scored` marks the positions that count."""
    ids = _check_ids(ids)
    if len(ids) < 2:
        raise CharlmError(
            f"need at least 2 ids to evaluate (an input and a target), have {len(ids)}"
        )
    n = max(1, min(batch_size, (len(ids) - 1) // seq_len))
    if reset_id is not None:
        for x, y, scored in _line_windows(ids, n, reset_id, seq_len):
            yield dataclasses.replace(_batch(x, y, reset_id), scored=scored)
        return
    x, y = _streams(ids, n)
    for start in range(0, x.shape[1], seq_len):
        window = slice(start, start + seq_len)
        yield _batch(x[:, window], y[:, window], reset_id)


def _line_windows(
    ids: np.ndarray, n: int, reset_id: int, seq_len: int
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Inputs, targets and `scored`, window by window, of about n streams that each begin at a
    sequence start (a `reset_id`) and are about equally long. A shorter stream is padded with
    `reset_id` inputs (the state restarts there: nothing carries over) and unscored targets;
    the state restarts at every sequence anyway, so each target is scored as in one stream.
    Each window is copied out of `ids` when it is reached: a memory-mapped corpus is never
    read into memory whole."""
    cuts = _line_cuts(ids, n, reset_id)
    ends = np.append(cuts[1:], len(ids) - 1)
    width = int((ends - cuts).max())
    for start in range(0, width, seq_len):
        shape = (len(cuts), min(seq_len, width - start))
        x, y = np.full(shape, reset_id, dtype=ids.dtype), np.zeros(shape, dtype=ids.dtype)
        scored = np.zeros(shape, dtype=bool)
        for row, (first, end) in enumerate(zip(cuts.tolist(), ends.tolist(), strict=True)):
            a, b = first + start, min(first + start + shape[1], end)
            if a < b:
                x[row, : b - a], y[row, : b - a] = ids[a:b], ids[a + 1 : b + 1]
                scored[row, : b - a] = True
        yield x, y, scored


def _line_cuts(ids: np.ndarray, n: int, reset_id: int, block: int = 1 << 20) -> np.ndarray:
    """Where the streams of `_line_windows` start: 0 and, for each of the n equal shares of
    the inputs ids[:-1], the first sequence start at or after its beginning (the last one if
    none follows). Found by scanning forward a block at a time, each id read at most once."""
    body = len(ids) - 1
    cuts, found = [0], None  # found: the first start at or after the last share's beginning
    for k in range(n):
        target = -(-k * body // n)  # ceil(k * body / n): the first position of share k
        if found is None or found < target:
            found = first_index(ids, reset_id, target, body, block)
        if found is None:  # no start after: the last one, and the same for every later share
            cuts.append(last_index(ids, reset_id, 0, body, block) or 0)
            break
        cuts.append(found)
    return np.unique(np.array(cuts, dtype=np.int64))


@dataclass
class Corpus:
    """A corpus encoded for training: vocabulary, train and validation ids."""

    path: str
    vocab: Vocab
    train_ids: np.ndarray
    val_ids: np.ndarray
    unknown: list[str]  # distinct characters outside a given vocabulary (they became <UNK>)
    unknown_count: int
    known_train_unk: int | None = None  # counted already (a prepared corpus' manifest)

    @functools.cached_property
    def train_unk_count(self) -> int:
        """<UNK> ids in the training split (none: sampling never draws <UNK> unless asked)."""
        if self.known_train_unk is not None:
            return self.known_train_unk
        return count_id(self.train_ids, self.vocab.unk_id)

    @property
    def reset_id(self) -> int | None:
        """<EOS> in lines mode (the state restarts there), None in stream mode."""
        return self.vocab.eos_id if self.vocab.mode == "lines" else None

    def batches(
        self,
        batch_size: int,
        seq_len: int,
        position: int = 0,
        restart_prob: float = 0.0,
        seed: int = 0,
    ) -> BatchStream:
        """The training batch stream, starting after `position` batches (see BatchStream)."""
        return BatchStream(
            self.train_ids, batch_size, seq_len, self.reset_id, position, restart_prob, seed
        )


def load_corpus(path: str | os.PathLike[str], data: Any, vocab: Vocab | None = None) -> Corpus:
    """Read, encode and split a training corpus as `data` (the config's data section) says.

    The vocabulary is `vocab` if given (a checkpoint's), else `data.vocab`'s file, else built
    from the corpus. Validation is `data.val_file` if set, else the `data.val_fraction` tail.
    A directory is a prepared corpus (`load_prepared`).
    """
    if Path(path).is_dir():
        from charlm.prepared import load_prepared  # noqa: PLC0415 - it imports this module

        return load_prepared(path, data, vocab)
    text = read_text(path)
    given = vocab is not None or bool(data.vocab)
    if vocab is None:
        vocab = (Vocab.load(data.vocab) if data.vocab else
                 Vocab.build(text, data.mode, data.min_count, data.max_size))  # fmt: skip
    if vocab.mode != data.mode:
        raise CharlmError(
            f"the vocabulary is for {vocab.mode} mode but data.mode is {data.mode}; "
            f"set --set data.mode={vocab.mode} or build a new vocabulary"
        )
    ids = encode_text(text, vocab)
    unknown_count = int(np.count_nonzero(ids == vocab.unk_id)) if given else 0
    unknown: list[str] = []
    if unknown_count:
        known = set(vocab.tokens) | {"\n"}
        unknown = sorted(set(text) - known)
        if unknown_count > 0.5 * len(text):
            raise CharlmError(
                f"the vocabulary does not match {path}: {unknown_count:,} of {len(text):,} "
                "characters are outside it"
            )
    del text
    train_ids, val_ids = split_corpus(ids, data, vocab)
    return Corpus(str(path), vocab, train_ids, val_ids, unknown, unknown_count)


def split_corpus(ids: np.ndarray, data: Any, vocab: Vocab) -> tuple[np.ndarray, np.ndarray]:
    """(train, validation) ids as training cuts them: with `data.val_file` all of `ids` trains
    and that file validates; otherwise `data.val_fraction` validates: random whole lines in
    lines mode (`data.val_split` auto or random), else the tail."""
    if data.val_file:
        return ids, encode_text(read_text(data.val_file), vocab)
    if vocab.mode == "lines" and data.val_split in ("auto", "random"):
        return split_lines(ids, data.val_fraction, vocab.eos_id, data.split_seed)
    return split_ids(ids, data.val_fraction)


def count_id(ids: np.ndarray, value: int, block: int = 1 << 24) -> int:
    """How often `value` occurs in `ids`, a block at a time (a memmap stays unloaded)."""
    return sum(
        int(np.count_nonzero(ids[i : i + block] == value)) for i in range(0, len(ids), block)
    )


def first_index(ids: np.ndarray, value: int, start: int, stop: int,
                block: int = 1 << 20) -> int | None:  # fmt: skip
    """The first position in [start, stop) where `ids` holds `value`, or None; read a block at
    a time (a memmap stays unloaded)."""
    for lo in range(start, stop, block):
        hits = np.flatnonzero(ids[lo : min(lo + block, stop)] == value)
        if len(hits):
            return lo + int(hits[0])
    return None


def last_index(ids: np.ndarray, value: int, start: int, stop: int,
               block: int = 1 << 20) -> int | None:  # fmt: skip
    """The last position in [start, stop) where `ids` holds `value`, or None; read a block at
    a time from the end."""
    for hi in range(stop, start, -block):
        lo = max(hi - block, start)
        hits = np.flatnonzero(ids[lo:hi] == value)
        if len(hits):
            return lo + int(hits[-1])
    return None
