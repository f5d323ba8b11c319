"""The text files a prepared corpus is made of: which files the arguments name, and each one's
text read a few MB at a time as `charlm.data.read_text` reads a whole file (UTF-8 checked with
the file and byte offset, BOM dropped, CRLF and CR as "\\n"), hashed on the way."""

from __future__ import annotations

import glob
import hashlib
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from charlm.errors import CharlmError
from charlm.fileio import open_binary

CHUNK_BYTES = 1 << 22  # 4 MiB read at a time: its str and UTF-32 copies stay at tens of MB
_BOM = b"\xef\xbb\xbf"
Progress = Callable[[int], None]  # hears of each block of bytes read


@dataclass
class Source:
    """One input file and what the first pass learnt of it."""

    path: Path
    size: int = 0
    sha256: str = ""
    chars: int = 0
    nuls: int = 0
    has_text: bool = False  # a character that is not whitespace
    ends_with_newline: bool = False


# --- which files --------------------------------------------------------------------------------


def find_sources(args: Sequence[str], exclude: Path | None = None) -> list[Path]:
    """The files named by `args`: files as they are, directories' `*.txt` files (recursively,
    hidden ones left out) and glob patterns, in order, each file once; none under `exclude`."""
    found: list[Path] = []
    for arg in args:
        path = Path(arg)
        if path.is_dir():
            files = _dir_files(path)
            if not files:
                raise CharlmError(f"{arg} is a directory with no text files (*.txt) in it")
        elif not path.exists() and glob.has_magic(arg):
            files = []
            for match in sorted(glob.glob(arg, recursive=True)):
                files += _dir_files(Path(match)) if Path(match).is_dir() else [Path(match)]
            if not files:
                raise CharlmError(f"no text files match {arg}")
        elif not path.exists():
            raise CharlmError(f"text file not found: {arg}")
        else:
            files = [path]
        found += files
    seen: set[Path] = set()
    out = exclude.resolve() if exclude is not None else None
    unique = []
    for path in found:
        real = path.resolve()
        if real in seen or (out is not None and real.is_relative_to(out)):
            continue
        seen.add(real)
        unique.append(path)
    if not unique:
        raise CharlmError("no text files to prepare")
    return unique


def _dir_files(folder: Path) -> list[Path]:
    return sorted(
        p for p in folder.rglob("*.txt")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )  # fmt: skip


# --- reading a file in pieces -------------------------------------------------------------------


def _safe_cut(data: bytes) -> int:
    """How much of `data` decodes now: not a trailing incomplete UTF-8 sequence (the next
    block completes it) nor a trailing CR (the next block may hold its LF)."""
    n = len(data)
    i = n - 1
    while i > n - 4 and i > 0 and data[i] & 0xC0 == 0x80:  # continuation bytes
        i -= 1
    lead = data[i]
    need = 1 if lead < 0xC0 else 2 if lead < 0xE0 else 3 if lead < 0xF0 else 4
    if i + need > n:
        return i
    return n - 1 if data[-1] == 0x0D else n


def read_pieces(src: Source, lines: bool, on_read: Progress | None = None) -> Iterator[str]:
    """The text of `src` as `read_text` makes it (BOM dropped, CRLF and CR as "\\n"), in pieces
    of about CHUNK_BYTES bytes; in lines mode each piece but the last ends at a line end. Invalid
    UTF-8 is a CharlmError naming the file and byte offset. Fills in its size and SHA-256;
    `on_read(bytes)` hears of each block read."""
    digest = hashlib.sha256()
    fh = open_binary(src.path, "text file")
    # SHA-256 lets go of the GIL: a thread hashes each block while the next is decoded.
    with fh, ThreadPoolExecutor(1) as hasher:
        try:
            head = fh.read(len(_BOM))
        except OSError as exc:
            raise CharlmError(f"cannot read text file {src.path}: {exc.strerror}") from None
        hashed = hasher.submit(digest.update, head)
        if on_read is not None:
            on_read(len(head))
        bom = head == _BOM
        # offset: the file position of pending[0]
        pending, offset, size, line = b"" if bom else head, len(head) if bom else 0, len(head), ""
        while True:
            try:
                block = fh.read(CHUNK_BYTES)  # read here: tests set it small
            except OSError as exc:
                raise CharlmError(f"cannot read text file {src.path}: {exc.strerror}") from None
            hashed.result()  # in order: the previous block first
            hashed = hasher.submit(digest.update, block)
            data = pending + block if pending else block
            size += len(block)
            if on_read is not None:
                on_read(len(block))
            cut = _safe_cut(data) if block and data else len(data)
            try:
                text = str(memoryview(data)[:cut], "utf-8")
            except UnicodeDecodeError as exc:
                raise CharlmError(
                    f"{src.path}: invalid UTF-8 at byte offset {offset + exc.start}"
                ) from None
            pending, offset = data[cut:], offset + cut
            if "\r" in text:
                text = text.replace("\r\n", "\n").replace("\r", "\n")
            if lines and block:  # hold a partial last line back: blank lines are judged whole
                text = line + text
                end = text.rfind("\n") + 1
                text, line = text[:end], text[end:]
            elif lines:
                text, line = line + text, ""
            if text:
                yield text
            if not block:
                break
        hashed.result()
    src.size, src.sha256 = size, digest.hexdigest()
