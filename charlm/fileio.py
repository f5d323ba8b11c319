"""Atomic file writes: readers (and a crash) see the old file or the new one, never half. And
writing big files in a background thread."""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from charlm.errors import CharlmError


def open_binary(
    path: str | os.PathLike[str], what: str, error: type[CharlmError] = CharlmError
) -> BinaryIO:
    """`path` opened to read bytes. A missing file, a directory or an unreadable file is a
    one-line `error` that names `what` the file should be ("vocabulary file") and the path."""
    try:
        return open(path, "rb")  # noqa: SIM115 - the caller closes it
    except FileNotFoundError:
        raise error(f"{what} not found: {path}") from None
    except IsADirectoryError:
        raise error(f"{path} is a directory, not a {what}") from None
    except OSError as exc:
        raise error(f"cannot read {what} {path}: {exc.strerror or exc}") from None


def read_bytes(
    path: str | os.PathLike[str], what: str, error: type[CharlmError] = CharlmError
) -> bytes:
    """The bytes of `path`; every problem is a one-line `error` as in `open_binary`."""
    with open_binary(path, what, error) as fh:
        try:
            return fh.read()
        except OSError as exc:
            raise error(f"cannot read {what} {path}: {exc.strerror or exc}") from None


def check_output_path(path: str | os.PathLike[str], what: str) -> None:
    """Refuse, before any work is spent, an output `path` that cannot be written: a directory,
    a file in a missing directory, or in one this process may not write. `what` opens the
    one-line error, e.g. "cannot write samples to out.txt"."""
    path = Path(path)
    folder = path.parent
    if path.is_dir():
        raise CharlmError(f"{what}: it is a directory")
    if not folder.is_dir():
        raise CharlmError(f"{what}: no directory {folder}")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise CharlmError(f"{what}: {folder} is not writable")


def sha256_file(path: str | os.PathLike[str]) -> tuple[str, int]:
    """(hex SHA-256, size in bytes) of a file, read in 1 MiB blocks."""
    digest, size = hashlib.sha256(), 0
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
            size += len(block)
    return digest.hexdigest(), size


def write_atomic(path: str | os.PathLike[str], data: bytes | Callable[[BinaryIO], object]) -> None:
    """Write `data` (bytes, or a function writing to a binary file) to `path` atomically.

    A temp file beside `path` is written, flushed and fsynced, then renamed over `path` with
    `os.replace`; on any failure the temp file is removed and `path` is untouched. OSError
    propagates for the caller to word.
    """
    path = Path(path)
    # The name is chosen before the file exists, so an interrupt at any moment (a second
    # Ctrl-C) still knows what to clean up.
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        with os.fdopen(fd, "wb") as fh:
            if isinstance(data, bytes):
                fh.write(data)
            else:
                data(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """Make renames in directory `path` durable (best effort: not every OS allows it)."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


class BackgroundWriter:
    """Calls `write(ids, *args)` in a thread, one call at a time, while the caller makes the
    next array. For `charlm data prepare`: a new file's pages cost the kernel ~3 ms a MB on ext4
    here, as much as decoding the text, and writing and hashing let go of the GIL, so another
    core does them. Errors surface at the next `put` or on leaving the `with` block."""

    def __init__(self, write: Callable[..., object]) -> None:
        self.write = write
        self.puts = self.written = 0  # calls, elements
        self._pool = ThreadPoolExecutor(1)
        self._pending: Future[object] | None = None

    def put(self, ids: np.ndarray, *args: Any) -> None:
        """Hand over `ids`, which must stay unchanged until the next `put` returns."""
        self._wait()  # one call in flight: memory stays bounded
        self._pending = self._pool.submit(self.write, ids, *args)
        self.puts += 1
        self.written += len(ids)

    def _wait(self) -> None:
        if self._pending is not None:
            pending, self._pending = self._pending, None
            pending.result()

    def __enter__(self) -> BackgroundWriter:
        return self

    def __exit__(self, kind: type[BaseException] | None, *_: object) -> None:
        try:
            if kind is None:
                self._wait()
        finally:
            self._pool.shutdown(wait=True)  # never a write after the caller closes the file


def pwrite_all(fd: int, data: memoryview, offset: int) -> None:
    """Write all of `data` at `offset` of file `fd` (`os.pwrite` may write part of it)."""
    while data:
        done = os.pwrite(fd, data, offset)
        data, offset = data[done:], offset + done
