"""Stopping cleanly: SIGINT/SIGTERM become a request the training loop sees between steps."""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any


@dataclass
class StopRequest:
    """Set by SIGINT/SIGTERM; the loop stops cleanly between steps. A second Ctrl-C aborts at
    once -- except during a checkpoint write, which it lets finish first."""

    signal_name: str = ""
    abort_pending: bool = False
    writing: bool = False

    def handle(self, signum: int, frame: Any) -> None:
        if not self.signal_name:
            self.signal_name = signal.Signals(signum).name
        elif self.writing:
            self.abort_pending = True
        else:  # asked twice: the user means it
            raise KeyboardInterrupt

    @contextlib.contextmanager
    def protect(self) -> Iterator[None]:
        """No KeyboardInterrupt from a second signal inside; it is raised right after."""
        self.writing = True
        try:
            yield
        finally:
            self.writing = False
        if self.abort_pending:
            raise KeyboardInterrupt


@contextlib.contextmanager
def graceful_stop() -> Iterator[StopRequest]:
    """Route SIGINT and SIGTERM to a StopRequest while training (main thread only)."""
    request = StopRequest()
    saved = {}
    with contextlib.suppress(ValueError):  # not the main thread: leave signals alone
        for sig in (signal.SIGINT, signal.SIGTERM):
            saved[sig] = signal.signal(sig, request.handle)
    try:
        yield request
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)
