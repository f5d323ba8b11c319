"""The one exception type the library raises for problems a user can fix.

The CLI turns a `CharlmError` into a one-line `Error: ...` message; anything else is a bug.
"""


class CharlmError(Exception):
    """A problem with the user's input, files or configuration (message is shown as is)."""


class ConfigError(CharlmError):
    """A configuration file or `--set` override is invalid."""


class VocabError(CharlmError):
    """A vocabulary file is invalid or does not match the data."""


class CheckpointError(CharlmError):
    """A checkpoint is missing, corrupt or of an unknown format."""
