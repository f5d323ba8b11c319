"""The `charlm` command: the only place that prints or exits.

Library code raises `CharlmError` for anything a user can fix; here it becomes one
`Error: ...` line and exit status 1 (Click's usage errors exit with 2).

`group` holds the click group and its error handling, `options` the options and checkpoint
lookup that several commands share, `progress` the training progress bar, `show` the
`eval --show` and `viz` colouring; each `*_cmd` module registers its command(s) on the group.
"""

from __future__ import annotations

# Importing the command modules registers their commands on `cli`.
from charlm.cli import (  # noqa: F401
    data_cmd,
    eval_cmd,
    gradcheck_cmd,
    plot_cmd,
    runs_cmd,
    sample_cmd,
    train_cmd,
    viz_cmd,
    vocab_cmd,
)
from charlm.cli.group import CharlmGroup, cli
from charlm.cli.progress import ProgressReporter

__all__ = ["CharlmGroup", "ProgressReporter", "cli"]
