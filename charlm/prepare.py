"""`charlm data prepare`: encode text files of any size once, into a prepared corpus directory
(see `charlm.prepared`), in bounded memory.

Two passes, the files read once a few MB at a time: the first checks every file (UTF-8, not
empty, not binary), hashes it, counts its characters into a dense code-point table, from which
the vocabulary is built exactly as `Vocab.build` builds it, and writes the text as provisional
ids (code points numbered by first appearance, 16 bits each) into the ids file; the second
maps those to the vocabulary's ids with one small table, over them in place, so the text is
decoded once and the ids file written once. The
result is the ids the plain-text path makes of the files joined by "\\n", so one file prepares
to exactly what `charlm train FILE` trains on: the files are separated by a newline in stream
mode and by <EOS> (a line end) in lines mode.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from charlm.data import count_id, drop_blank_lines, first_index, last_index
from charlm.errors import CharlmError
from charlm.fileio import BackgroundWriter, fsync_dir, pwrite_all, write_atomic
from charlm.prepared import FORMAT, FORMAT_VERSION, IDS, MANIFEST, OUTPUTS, VOCAB
from charlm.textfiles import Progress, Source, find_sources, read_pieces
from charlm.vocab import Vocab, iter_code_points

_CODE_POINTS = 0x110000
_NEWLINE = ord("\n")
PROVISIONAL = (np.uint16, np.uint32)  # provisional id types, tried in order
_WHOLE = 1 << 30  # code points of a whole piece at once (a piece is a few MB)
REWRITE_BYTES = 1 << 22  # provisional ids the second pass reads at a time


# --- the two passes -----------------------------------------------------------------------------


class _TooManyCharsError(Exception):
    """More distinct characters than the provisional dtype numbers: start again wider."""


class Numbering:
    """Code points numbered in order of first appearance: the first pass writes the text as
    these provisional ids, so the second maps them to vocabulary ids with one small table and
    never decodes the text again."""

    def __init__(self, dtype: Any) -> None:
        self.dtype = np.dtype(dtype)
        self.unseen = np.iinfo(self.dtype).max  # so at most `unseen` distinct characters
        self.of_cp = np.full(_CODE_POINTS, self.unseen, dtype=self.dtype)
        self.cps: list[int] = []

    def ids(self, cps: np.ndarray, found: np.ndarray | None = None) -> np.ndarray:
        """Provisional ids of `cps`; `found` (its bincount) if already counted."""
        if found is None:
            found = np.bincount(cps)
        new = np.flatnonzero((found > 0) & (self.of_cp[: len(found)] == self.unseen))
        if len(new):
            if len(self.cps) + len(new) > self.unseen:
                raise _TooManyCharsError
            self.of_cp[new] = np.arange(len(self.cps), len(self.cps) + len(new))
            self.cps += new.tolist()
        return np.take(self.of_cp, cps)


def first_pass(sources: list[Source], mode: str, numbering: Numbering, fh: Any,
               on_read: Progress | None = None) -> tuple[np.ndarray, int, int]:  # fmt: skip
    """Read every file once: check it, hash it, count its characters (as `Vocab.build` counts
    the joined text) and write its text as provisional ids to `fh`, joined as the plain-text
    path joins files and with blank lines dropped in lines mode, behind a newline standing for
    the start <EOS> of lines mode. Returns (occurrences by code point, lines mode's sequences,
    ids written)."""
    lines = mode == "lines"
    totals = np.zeros(_CODE_POINTS, dtype=np.int64)
    newline = numbering.ids(np.array([_NEWLINE], dtype=np.uint32))  # separator, line end
    with BackgroundWriter(lambda ids: fh.write(memoryview(ids))) as out:
        if lines:
            out.put(newline)  # in the start <EOS>'s place: the second pass maps it to <EOS>
        for i, src in enumerate(sources):
            ends = True  # whether the text written so far ends a line (lines mode)
            for piece in read_pieces(src, lines, on_read):
                src.chars += len(piece)
                src.nuls += piece.count("\0")
                src.has_text = src.has_text or not piece.isspace()
                src.ends_with_newline = piece.endswith("\n")
                kept = drop_blank_lines(piece) if lines else piece
                for cps in iter_code_points(piece, _WHOLE):
                    found = np.bincount(cps)
                    totals[: len(found)] += found
                    if not lines:
                        out.put(numbering.ids(cps, found))
                if lines and kept:
                    for cps in iter_code_points(kept, _WHOLE):
                        out.put(numbering.ids(cps))
                    ends = kept.endswith("\n")
            check_text(src)
            if (lines and not ends) or (not lines and i + 1 < len(sources)):
                out.put(newline)  # its last line's end; the separator between files
            totals[_NEWLINE] += i + 1 < len(sources)  # the separator after it, as joined
    sequences = int(totals[_NEWLINE]) + (not sources[-1].ends_with_newline)
    return totals, sequences if lines else 0, out.written


def check_text(src: Source) -> None:
    """Refuse a file the first pass found empty or binary."""
    if not src.has_text:
        raise CharlmError(f"{src.path} is empty (no non-whitespace text)")
    if src.nuls > src.chars // 100:
        raise CharlmError(
            f"{src.path} looks like a binary file, not text: {src.nuls:,} of its "
            f"{src.chars:,} characters are NUL bytes"
        )


def second_pass(path: Path, numbering: Numbering, vocab: Vocab, may_unk: bool,
                wide_path: Path) -> tuple[int, int, str]:  # fmt: skip
    """Replace the provisional ids in file `path` by the vocabulary's, a block at a time:
    (ids written, <UNK> ids (counted only if the text `may_unk` holds some), SHA-256 of the
    ids). They overwrite the provisional ones in place (rewriting pages the first pass left in
    the cache runs at GB/s; a new file's pages cost ~3 ms a MB on ext4 here), unless they are
    wider (a given vocabulary of more tokens than the provisional type numbers): then they are
    written to `wide_path`, which replaces `path`. Never a memmap: its pages would count in the
    process' memory as it went."""
    to_vocab = vocab.ids_of_code_points(np.array(numbering.cps, dtype=np.uint32))
    read_item, write_item = numbering.dtype.itemsize, vocab.dtype.itemsize
    in_place = write_item <= read_item  # then writing never overtakes reading
    buffer = np.empty(max(REWRITE_BYTES // read_item, 1), numbering.dtype)
    outs = [np.empty(len(buffer), vocab.dtype) for _ in range(2)]  # one written, one made
    digest, total, unk = hashlib.sha256(), 0, 0
    with (
        open(path, "r+b", buffering=0) as src,
        contextlib.nullcontext(src) if in_place else open(wide_path, "wb") as dst,
    ):

        def store(ids: np.ndarray, offset: int) -> None:
            digest.update(ids)
            pwrite_all(dst.fileno(), memoryview(ids).cast("B"), offset)

        with BackgroundWriter(store) as out:
            while count := src.readinto(memoryview(buffer).cast("B")) // read_item:
                ids = np.take(to_vocab, buffer[:count], out=outs[out.puts % 2][:count])
                out.put(ids, total * write_item)
                total += count
                if may_unk:
                    unk += int(np.count_nonzero(ids == vocab.unk_id))
        dst.truncate(total * write_item)
        os.fsync(dst.fileno())
    if not in_place:
        os.replace(wide_path, path)
    return total, unk, digest.hexdigest()


def split_point(ids: np.ndarray, val_fraction: float, eos_id: int | None) -> tuple[int, int]:
    """(train_end, val_start): train is ids[:train_end], validation ids[val_start:]. Stream
    mode: the tail `split_ids` takes. Lines mode: cut at the <EOS> closest below the same
    point, which ends the training part and starts the validation part."""
    n = len(ids)
    cut = int(n * (1.0 - val_fraction))
    if eos_id is None or cut >= n:
        return cut, cut
    # the last <EOS> at or below the cut that is not the final one, else the first after it
    pos = last_index(ids, eos_id, 1, min(cut + 1, n - 1))
    pos = first_index(ids, eos_id, cut + 1, n - 1) if pos is None else pos
    if pos is not None:
        return pos + 1, pos
    raise CharlmError(
        "the corpus has one line: nothing to hold out for validation; give more lines, "
        "or --val-fraction 0"
    )


# --- the output directory -----------------------------------------------------------------------


def check_output_dir(out: Path, overwrite: bool) -> None:
    """Refuse, before any work, an output that is a file, or a non-empty directory holding
    anything but an earlier prepare's files (unless `overwrite`)."""
    if out.exists() and not out.is_dir():
        raise CharlmError(f"cannot write the prepared corpus to {out}: it is a file")
    if not out.is_dir() or overwrite:
        return
    others = sorted(
        p.name for p in out.iterdir()
        if p.name not in OUTPUTS and not (p.name.startswith(f".{IDS}.") and p.name.endswith(".tmp"))
    )  # fmt: skip
    if others:
        shown = ", ".join(others[:3]) + (", ..." if len(others) > 3 else "")
        raise CharlmError(
            f"output directory {out} already holds other files ({shown}); choose another "
            "-o (or --overwrite: the prepared files are written beside them)"
        )


@dataclass(frozen=True)
class Options:
    """What `charlm data prepare` was asked for (the config's data.* names)."""

    mode: str = "stream"
    min_count: int = 1
    max_size: int = 0
    val_fraction: float = 0.1
    vocab: Vocab | None = None  # a given vocabulary instead of one built from the text


def prepare(inputs: Sequence[str], out: str | os.PathLike[str], opts: Options,
            overwrite: bool = False,
            progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:  # fmt: skip
    """Prepare the files `inputs` name into directory `out`; returns the manifest.
    `progress(done, total)`: bytes of text read so far, of all the files' bytes."""
    out = Path(out)
    check_output_dir(out, overwrite)
    sources = [Source(p) for p in find_sources(inputs, exclude=out)]
    mode = opts.vocab.mode if opts.vocab is not None else opts.mode
    created = not out.exists()
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CharlmError(f"cannot create directory {out}: {exc.strerror or exc}") from None
    tmp = out / f".{IDS}.{secrets.token_hex(6)}.tmp"
    wide_tmp = out / f".{IDS}.{secrets.token_hex(6)}.wide.tmp"
    try:
        on_read = None if progress is None else _counting(progress, sources)
        numbering, totals, sequences, _ = _first_pass_into(sources, mode, tmp, on_read)
        vocab = opts.vocab or Vocab.from_counts(totals, sequences, mode, opts.min_count,
                                                opts.max_size)  # fmt: skip
        unknown, unknown_count = _unknown(totals, vocab) if opts.vocab else ([], 0)
        chars = sum(s.chars for s in sources)
        if unknown_count > 0.5 * chars:
            raise CharlmError(f"the vocabulary does not match the text: {unknown_count:,} of "
                              f"{chars:,} characters are outside it")  # fmt: skip
        may_unk = (unknown_count if opts.vocab else vocab.counts[vocab.unk_id]) > 0
        total, unk, ids_sha = second_pass(tmp, numbering, vocab, may_unk, wide_tmp)
        ids = np.memmap(tmp, dtype=vocab.dtype, mode="r", shape=(total,))
        eos = vocab.eos_id if mode == "lines" else None
        train_end, val_start = split_point(ids, opts.val_fraction, eos)
        train_unk = count_id(ids[:train_end], vocab.unk_id) if unk else 0
        del ids
        manifest = {
            "format": FORMAT, "version": FORMAT_VERSION, "mode": mode,
            "min_count": opts.min_count, "max_size": opts.max_size,
            "vocab_given": opts.vocab is not None, "val_fraction": opts.val_fraction,
            "dtype": vocab.dtype.name, "total_ids": total, "ids_sha256": ids_sha,
            "train_end": train_end, "val_start": val_start, "unk_ids": unk,
            "train_unk_ids": train_unk, "unknown": unknown[:100], "unknown_count": unknown_count,
            "characters": chars,
            "sources": [{"path": str(s.path.resolve()), "size": s.size, "sha256": s.sha256}
                        for s in sources],
        }  # fmt: skip
        # Without a manifest the directory reads as unfinished: never an old manifest over
        # new ids, whenever this stops.
        (out / MANIFEST).unlink(missing_ok=True)
        os.replace(tmp, out / IDS)
    except BaseException:
        for leftover in (tmp, wide_tmp):
            with contextlib.suppress(OSError):
                leftover.unlink()
        if created:  # bad input leaves nothing behind, not even the directory
            with contextlib.suppress(OSError):
                out.rmdir()
        raise
    vocab.save(out / VOCAB)
    text = json.dumps(manifest, ensure_ascii=False, indent=1) + "\n"
    write_atomic(out / MANIFEST, text.encode("utf-8"))  # last: the corpus is complete
    fsync_dir(out)
    return manifest


def _counting(progress: Callable[[int, int], None], sources: list[Source]) -> Progress:
    """A `Progress` that tells `progress` the bytes read so far and the files' total."""
    total, done = sum(_size(s.path) for s in sources), 0

    def on_read(n: int) -> None:
        nonlocal done
        done += n  # past the total only if a wider first pass reads again
        progress(min(done, total), total)

    return on_read


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:  # the first pass words the error
        return 0


def _first_pass_into(
    sources: list[Source], mode: str, path: Path, on_read: Progress | None
) -> tuple[Numbering, np.ndarray, int, int]:
    """`first_pass` into the file `path`: 16-bit provisional ids, or 32-bit for a text of more
    than 65,535 distinct characters (found out on the way: then it reads the files again)."""
    for dtype in PROVISIONAL:
        numbering = Numbering(dtype)
        for src in sources:
            src.chars, src.nuls, src.has_text = 0, 0, False
        try:
            with open(path, "wb") as fh:
                totals, sequences, count = first_pass(sources, mode, numbering, fh, on_read)
            return numbering, totals, sequences, count
        except _TooManyCharsError:
            continue
    raise AssertionError("32-bit provisional ids number every code point")  # pragma: no cover


def _unknown(totals: np.ndarray, vocab: Vocab) -> tuple[list[str], int]:
    """The distinct characters of the text outside a given `vocab`, and how often they occur."""
    present = np.flatnonzero(totals)
    known = {ord(t) for t in vocab.tokens if len(t) == 1}
    known |= {_NEWLINE} if vocab.mode == "lines" else set()  # a line end, <EOS>
    missing = [int(cp) for cp in present.tolist() if cp not in known]
    return [chr(cp) for cp in missing], int(totals[missing].sum()) if missing else 0
