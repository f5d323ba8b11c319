"""One writer per run directory: an OS file lock on `RUN/.lock` holding the writer's PID.

It is the kernel's lock (`flock`; `msvcrt.locking` on Windows), so it is released however its
process ends, even by SIGKILL, and the next run takes it over; the PID inside only names the
holder in the message. `lock_holder` tells a reader (`charlm runs`) whether a live process
holds it.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import IO

from charlm.errors import CharlmError

LOCK_NAME = ".lock"

try:
    import fcntl

    def _try_lock(fh: IO[str]) -> bool:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True

    def _lock_free(fh: IO[str]) -> bool:
        # A shared lock: two readers probing at once do not see each other as writers.
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
        return True

except ImportError:  # Windows
    import msvcrt

    def _try_lock(fh: IO[str]) -> bool:
        fh.seek(0)
        try:
            msvcrt.locking(fh.fileno(), msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True

    def _lock_free(fh: IO[str]) -> bool:
        fh.seek(0)
        try:
            msvcrt.locking(fh.fileno(), msvcrt.LK_NBRLCK, 1)
        except OSError:
            return False
        fh.seek(0)
        msvcrt.locking(fh.fileno(), msvcrt.LK_UNLCK, 1)
        return True


class RunLockedError(CharlmError):
    """Another live process is writing this run directory."""


class RunLock:
    """The exclusive right to write one run directory, until `release` or the process ends."""

    def __init__(self, run_dir: str | os.PathLike[str]) -> None:
        self.path = Path(run_dir) / LOCK_NAME
        self._fh: IO[str] | None = None

    def acquire(self) -> RunLock:
        """Take the lock, or raise RunLockedError naming the process that holds it."""
        if self._fh is not None:
            return self
        # "a+" creates the file without truncating it: the holder's PID stays readable.
        fh = open(self.path, "a+", encoding="utf-8")  # noqa: SIM115 - held open while locked
        if not _try_lock(fh):
            fh.seek(0)
            holder = fh.read().strip() or "unknown"
            fh.close()
            raise RunLockedError(
                f"run directory {self.path.parent} is in use by another charlm process "
                f"(PID {holder}); wait for it to finish or stop it, or choose another --run-dir"
            )
        fh.seek(0)
        fh.truncate()
        fh.write(f"{os.getpid()}\n")
        fh.flush()
        self._fh = fh
        return self

    @property
    def held(self) -> bool:
        return self._fh is not None

    def release(self) -> None:
        """Give the lock up (closing the file releases it); safe to call twice."""
        if self._fh is not None:
            with contextlib.suppress(OSError):
                self._fh.close()
            self._fh = None


def lock_holder(run_dir: str | os.PathLike[str]) -> str | None:
    """The PID (as its lock file records it, else 'unknown') of the live process writing
    `run_dir`, or None when none is. Probes the lock without waiting and lets go at once; it
    writes nothing, so the directory stays as it was (a `charlm train` starting within that
    instant is refused, as for any other holder)."""
    try:
        fh = open(Path(run_dir) / LOCK_NAME, encoding="utf-8")  # noqa: SIM115 - closed below
    except OSError:  # no lock file: nothing has trained here since locks were written
        return None
    try:
        if _lock_free(fh):
            return None
        fh.seek(0)
        return fh.read(32).strip() or "unknown"
    except (OSError, UnicodeDecodeError):
        return None
    finally:
        fh.close()
