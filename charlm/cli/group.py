"""The `charlm` click group: its context settings and the error handling that turns library
errors into one `Error: ...` line, never a traceback."""

from __future__ import annotations

import contextlib
import os
import sys
from typing import Any

import click

from charlm.errors import CharlmError

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


class CharlmGroup(click.Group):
    """A Click group that turns library errors into one-line messages, never tracebacks."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except CharlmError as exc:
            raise click.ClickException(str(exc)) from None
        except BrokenPipeError:  # `charlm ... | head` stopped reading: nothing left to say
            with contextlib.suppress(OSError, ValueError):
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            sys.exit(0)
        except OSError as exc:  # a file the library did not anticipate (disk full, EACCES ...)
            raise click.ClickException(self.describe_os_error(exc)) from None
        except MemoryError:
            raise click.ClickException(
                "out of memory; try a smaller model, batch or corpus"
            ) from None

    # What the innermost of these functions on the traceback was doing, in plain words.
    OS_VERBS = {
        "mkdir": "create directory",
        "makedirs": "create directory",
        "mkstemp": "create a file in",
        "write_text": "write",
        "write_bytes": "write",
        "write_atomic": "write",
        "savefig": "write",
        "touch": "create",
        "replace": "move",
        "rename": "move",
        "unlink": "remove",
        "rmdir": "remove directory",
        "rmtree": "remove",
        "read_text": "read",
        "read_bytes": "read",
        "iterdir": "list directory",
        "scandir": "list directory",
        "listdir": "list directory",
    }

    @classmethod
    def describe_os_error(cls, exc: OSError) -> str:
        """'cannot VERB PATH: reason' for an OSError, e.g. 'cannot create directory /proc/x:
        No such file or directory'. An OSError carries the path and errno but not what was
        being done, so the verb comes from the innermost function on its traceback that names
        one (pathlib's mkdir, write_text, open with its mode ...); 'access' when none does."""
        import traceback  # noqa: PLC0415 - the error path only

        reason = exc.strerror or str(exc) or type(exc).__name__
        verb = None
        frames = [frame for frame, _ in traceback.walk_tb(exc.__traceback__)]
        for frame in reversed(frames):
            name = frame.f_code.co_name
            mode = frame.f_locals.get("mode") if name == "open" else None
            if isinstance(mode, str):  # pathlib's open(mode) (write_text goes through it)
                verb = "write" if set(mode) & set("wax+") else "read"
                break
            if name in cls.OS_VERBS:
                verb = cls.OS_VERBS[name]
                break
        path = exc.filename
        if path is None:
            return f"cannot {verb}: {reason}" if verb else reason
        if exc.filename2 is not None:
            return f"cannot {verb or 'move'} {path} to {exc.filename2}: {reason}"
        return f"cannot {verb or 'access'} {path}: {reason}"


@click.group(cls=CharlmGroup, context_settings=CONTEXT)
@click.version_option(package_name="charlm")
def cli() -> None:
    """Character-level RNN / GRU / LSTM language models in readable, fast NumPy.

    \b
    charlm vocab build corpus.txt    build the vocabulary (characters + <UNK>/<EOS>)
    charlm train corpus.txt          train, with progress and checkpoints
    charlm sample --max-len 50       sample from the latest run
    """
