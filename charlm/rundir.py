"""The run directory: what it holds, who may write it, and what a resume may change.

    RUN/config.yaml  vocab.json  metrics.jsonl  best.json  last.json  *-NNNNNNNN.npz  .lock
        step-NNNNNNNN.json  (train.keep_checkpoints > 0: the N most recent saves of `last`)

Every write goes through one `RunDir` (nanoGPT's `master_process` gate goes in front of it when
several processes train one run).

One process writes a run at a time: it holds the run's `RunLock` (`charlm.runlock`).

How a run ended goes into its last checkpoint's JSON (`RunDir.record_end`): "status" is
"running" in every checkpoint saved while training, and "finished", "interrupted", "diverged"
or "failed" once the trainer stops; a run that still says "running" with its lock free was
killed. Runs written before this have no "status".
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from charlm.checkpoint import (
    Checkpoint,
    link_checkpoint,
    remove_checkpoint,
    save_checkpoint,
    update_meta,
)
from charlm.config import Config, config_diff, save_config
from charlm.errors import CharlmError
from charlm.fileio import sha256_file, write_atomic
from charlm.prepared import manifest_digest
from charlm.runlock import RunLock
from charlm.stopping import StopRequest
from charlm.vocab import Vocab

RUN_FILES = ("config.yaml", "vocab.json", "metrics.jsonl", "best.json", "last.json")
CHECKPOINTS = ("best", "last")
NUMBERED = "step-"  # numbered checkpoints: step-00001500.json
# --- what a directory holds ---------------------------------------------------------------------


def has_checkpoint(run: Path) -> bool:
    return any((run / f"{name}.json").is_file() for name in CHECKPOINTS)


def holds_run(run: Path) -> bool:
    """Whether `run` holds files of a run worth keeping: a checkpoint, or run files that are not
    the leftovers of a run that stopped before its first checkpoint (see `only_leftovers`)."""
    if not run.is_dir():
        return False
    return has_checkpoint(run) or (
        any((run / f).exists() for f in RUN_FILES) and not only_leftovers(run)
    )


def only_leftovers(run: Path) -> bool:
    """A run that started (it has a metrics log) but never saved a checkpoint: it diverged or
    was killed within its first steps. Nothing in it can be resumed, so a new run replaces it."""
    return run.is_dir() and (run / "metrics.jsonl").is_file() and not has_checkpoint(run)


def clear_run(run: Path) -> None:
    """Delete a run's files (for --overwrite, or leftovers); other files are left alone."""
    for old in [*(run / f for f in RUN_FILES), *run.glob(f"{NUMBERED}*.json"),
                *(p for n in CHECKPOINTS for p in run.glob(f"{n}-*.npz"))]:  # fmt: skip
        old.unlink(missing_ok=True)


def numbered_name(step: int) -> str:
    """'step-00001500'."""
    return f"{NUMBERED}{step:08d}"


def numbered_checkpoints(run: Path) -> dict[int, Path]:
    """{step: JSON} of the numbered checkpoints in `run` (names that do not parse are not
    ours and are left out)."""
    found = {}
    for path in run.glob(f"{NUMBERED}*.json"):
        digits = path.stem[len(NUMBERED) :]
        if digits.isdigit() and path.is_file():
            found[int(digits)] = path
    return dict(sorted(found.items()))


# --- the corpus a run trains on ----------------------------------------------------------------


@dataclass(frozen=True)
class CorpusFingerprint:
    """Which text a run was trained on: its path (absolute), size in bytes and SHA-256. For a
    prepared corpus directory: the SHA-256 of its manifest (which holds its sources' and ids'
    SHA-256, so gigabytes are not hashed again on every resume) and its sources' bytes."""

    path: str
    size: int
    sha256: str

    @classmethod
    def of(cls, path: str | os.PathLike[str]) -> CorpusFingerprint:
        digest, size = manifest_digest(path) if Path(path).is_dir() else sha256_file(path)
        return cls(str(Path(path).resolve()), size, digest)

    @classmethod
    def from_meta(cls, meta: dict[str, Any]) -> CorpusFingerprint | None:
        """The fingerprint a checkpoint recorded (None for checkpoints older than it)."""
        size, digest = meta.get("corpus_size"), meta.get("corpus_sha256")
        if not isinstance(size, int) or not isinstance(digest, str):
            return None
        return cls(str(meta.get("corpus", "")), size, digest)

    def to_meta(self) -> dict[str, Any]:
        return {"corpus": self.path, "corpus_size": self.size, "corpus_sha256": self.sha256}


def check_same_corpus(
    recorded: CorpusFingerprint | None, current: CorpusFingerprint, allow_changed: bool
) -> str:
    """'' when resuming on the recorded text; otherwise a note (allowed) or a CharlmError."""
    if recorded is None or recorded.sha256 == current.sha256:
        return ""
    what = (
        f"the run was trained on {recorded.path} ({recorded.size:,} bytes, sha256 "
        f"{recorded.sha256[:12]}), not on {current.path} ({current.size:,} bytes, sha256 "
        f"{current.sha256[:12]})"
    )
    if not allow_changed:
        raise CharlmError(
            f"the corpus has changed: {what}; resume on it anyway with --allow-changed-corpus "
            "(the run keeps its vocabulary), or start a new run"
        )
    return f"resuming on a changed corpus: {what}"


# --- what a resume may change -------------------------------------------------------------------

# What the checkpoint's arrays, data position and splits were made for. Everything else (the
# learning rate, limits, logging, clipping, the device ...) may change on resume.
FIXED_ON_RESUME = ("model.", "data.", "train.batch_size", "train.seq_len", "train.optimizer")
MAY_CHANGE = ("data.corpus",)  # checked by its fingerprint instead


def resume_changes(saved: Config, wanted: Config) -> dict[str, tuple[Any, Any]]:
    """The settings `wanted` changes from the run's `saved` config; a CharlmError for any the
    run cannot continue with."""
    changes = config_diff(saved, wanted)
    for key, (old, new) in changes.items():
        if key.startswith(FIXED_ON_RESUME) and key not in MAY_CHANGE:
            raise CharlmError(
                f"{key} cannot change on resume ({old!r} -> {new!r}): the run's checkpoint "
                "was made with it; start a new run, or fine-tune with --init-from "
                "RUN/last.json"
            )
    return changes


def describe_changes(changes: dict[str, tuple[Any, Any]]) -> str:
    """'train.lr 0.002 -> 0.01, train.max_steps 500 -> 900'."""
    return ", ".join(f"{key} {old!r} -> {new!r}" for key, (old, new) in changes.items())


# --- the metrics log ----------------------------------------------------------------------------


def append_metrics(run: Path, record: dict[str, Any]) -> None:
    with open(run / "metrics.jsonl", "a", encoding="utf-8") as fh:
        fh.write(json.dumps(record) + "\n")


def truncate_metrics(run: Path, step: int) -> None:
    """Drop log lines written after the checkpoint being resumed (they will be redone)."""
    path = run / "metrics.jsonl"
    if not path.exists():
        return
    kept = []
    for line in path.read_text("utf-8").splitlines():
        with contextlib.suppress(ValueError, TypeError, AttributeError):
            if json.loads(line).get("step", 0) <= step:
                kept.append(line)
    write_atomic(path, "".join(line + "\n" for line in kept).encode("utf-8"))


# --- the one writer -------------------------------------------------------------------------------


class RunDir:
    """Everything a run writes: its files, its metrics log, its checkpoints, under its lock."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.lock = RunLock(self.path)

    def open(self) -> None:
        """Create the directory if needed and take its lock (a one-line error if impossible)."""
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise CharlmError(f"cannot create run directory {self.path}: {exc.strerror}") from None
        try:
            self.lock.acquire()
        except OSError as exc:
            raise CharlmError(
                f"cannot write in run directory {self.path}: {exc.strerror}"
            ) from None

    def close(self) -> None:
        """Release the directory to other processes."""
        self.lock.release()

    def start(self, config: Config, vocab: Vocab, overwrite: bool = False) -> str:
        """A new run: the files of any old one removed, the config, vocabulary, empty log.
        Returns a note when it replaces the leftovers of a run that never saved."""
        if holds_run(self.path) and not overwrite:  # another run started here meanwhile
            raise CharlmError(f"run directory {self.path} already holds a run")
        note = ""
        if only_leftovers(self.path) and not overwrite:
            note = (f"replacing the files of a run in {self.path} that stopped before its "
                    "first checkpoint")  # fmt: skip
        clear_run(self.path)
        save_config(config, self.path / "config.yaml")
        vocab.save(self.path / "vocab.json")
        (self.path / "metrics.jsonl").write_text("")
        return note

    def resume(self, step: int, config: Config, changes: dict[str, tuple[Any, Any]]) -> None:
        """Continue at checkpoint `step`: later log lines go (they will be redone), and changed
        settings go into config.yaml and, as an event, into the log."""
        truncate_metrics(self.path, step)
        # How the run ended before is history now: if this process dies without a word, the
        # run must show as killed, not as it ended last time.
        self.record_end({"status": "running", "status_note": ""})
        if changes:  # the run's config.yaml always says what it trains with now
            save_config(config, self.path / "config.yaml")
            changed = {key: list(values) for key, values in changes.items()}
            self.log({"step": step, "event": "resume", "changed": changed})

    def log(self, record: dict[str, Any]) -> None:
        """Append one record to metrics.jsonl."""
        append_metrics(self.path, record)

    def save(
        self, name: str, checkpoint: Checkpoint, stop: StopRequest | None = None, keep: int = 0
    ) -> Path:
        """Write checkpoint `name` atomically; a second Ctrl-C waits for the write to finish.

        With `keep` > 0 a save of `last` is also kept as numbered checkpoint step-NNNNNNNN,
        and the oldest numbered ones beyond `keep` go. The order keeps every listed checkpoint
        loadable whenever a crash comes: `last` is committed, then its numbered copy (which
        names the same arrays), and only then is an old one removed, its JSON before its
        arrays.
        """
        with stop.protect() if stop is not None else contextlib.nullcontext():
            path = save_checkpoint(self.path, name, checkpoint)
            if name == "last" and keep > 0:
                link_checkpoint(self.path, "last", numbered_name(checkpoint.step))
                for step in list(numbered_checkpoints(self.path))[:-keep]:
                    remove_checkpoint(self.path, numbered_name(step))
            return path

    def record_end(self, fields: dict[str, Any], stop: StopRequest | None = None) -> None:
        """Note how the run ended (`fields`: status, ...) in its last checkpoint's JSON. Best
        effort: a run that cannot write any more (disk full) ends with its error anyway."""
        if not (self.path / "last.json").is_file():
            return  # stopped before its first checkpoint: nothing to note it in
        with stop.protect() if stop is not None else contextlib.nullcontext():
            with contextlib.suppress(OSError, ValueError):
                update_meta(self.path, "last", fields)

    def checkpoint_path(self, name: str) -> Path:
        return self.path / f"{name}.json"
