"""Starting a run: a new one, a resumed one or a fine-tuning one, decided before anything is
written.

`plan_run` settles what the trainer starts from -- the configuration (a resumed run's comes
from its own last checkpoint, with the --set changes applied: one source of truth), the corpus
and its fingerprint, the checkpoint to continue or fine-tune from, and the notes to show --
and refuses, with one line, anything that cannot go on. `charlm.train.Trainer.create` builds
the trainer from the plan.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from charlm.checkpoint import Checkpoint, load_checkpoint
from charlm.config import Config, TrainConfig, with_overrides
from charlm.data import Corpus, load_corpus
from charlm.errors import CharlmError
from charlm.prepared import is_prepared, open_prepared
from charlm.rundir import (
    CorpusFingerprint,
    RunDir,
    check_same_corpus,
    describe_changes,
    holds_run,
    only_leftovers,
    resume_changes,
)


@dataclass
class RunPlan:
    """What a run starts from (see `plan_run`)."""

    config: Config
    corpus: Corpus
    fingerprint: CorpusFingerprint
    resume_from: Checkpoint | None = None  # the run's own last checkpoint
    init_from: Checkpoint | None = None  # fine-tuning: weights and vocabulary from here
    changes: dict[str, tuple[Any, Any]] = field(default_factory=dict)  # resumed with --set
    notes: list[str] = field(default_factory=list)


def plan_run(
    rundir: RunDir,
    corpus_path: str | None,
    config: Config | None,
    *,
    resume: bool = False,
    overrides: Sequence[str] = (),
    init_from: str | None = None,
    overwrite: bool = False,
    allow_changed_corpus: bool = False,
) -> RunPlan:
    """Plan a new run (`config` given) or a resumed one (`resume`: the configuration saved in
    the run's last checkpoint, with `overrides`; a `config` given instead is compared with it).

    On resume `corpus_path` None means the corpus the run recorded, and a corpus whose contents
    changed is refused unless `allow_changed_corpus`. Takes the run directory's lock before
    reading a checkpoint to resume (a live writer would make what is read stale).
    """
    run, ckpt, notes, changes = rundir.path, None, [], {}
    if resume:
        if not (run / "last.json").is_file():
            hint = ("; the run stopped before its first checkpoint: start it again "
                    "without --resume") if only_leftovers(run) else ""  # fmt: skip
            raise CharlmError(f"nothing to resume: {run / 'last.json'} does not exist{hint}")
        rundir.lock.acquire()
        ckpt = load_checkpoint(run / "last.json")
        config = with_overrides(ckpt.config, overrides) if config is None else config
        changes = resume_changes(ckpt.config, config)
        if changes:
            notes.append(f"resuming with {describe_changes(changes)}")
        corpus_path = corpus_path or recorded_corpus(ckpt)
    elif holds_run(run) and not overwrite:
        raise CharlmError(
            f"run directory {run} already holds a run; continue it with --resume, "
            "or choose another --run-dir (or --overwrite)"
        )
    if config is None:
        raise CharlmError("no configuration for a new run")
    if corpus_path is None:
        raise CharlmError("no corpus given (or set data.corpus in the config)")
    source = load_checkpoint(init_from) if init_from else None
    if source is not None:  # fine-tuning keeps the source checkpoint's architecture
        if source.config.model != config.model:
            notes.append(f"fine-tuning {init_from}: its model ({describe_model(source.config)}) "
                         "is kept; the config's model settings are not used")  # fmt: skip
        config = dataclasses.replace(config, model=source.config.model)
    given = ckpt or source
    prepared = is_prepared(corpus_path)
    if prepared:
        config, note = prepared_config(corpus_path, config)
        notes += [note] if note else []
    # A prepared corpus is compared first: a changed one may no longer fit the run's vocabulary
    # (a text file is read first, for its clearer errors about a missing or bad file).
    corpus = None if prepared else load_corpus(corpus_path, config.data, None if given is None
                                               else given.vocab)  # fmt: skip
    fingerprint = CorpusFingerprint.of(corpus_path)
    if ckpt is not None:
        recorded = CorpusFingerprint.from_meta(ckpt.meta)
        note = check_same_corpus(recorded, fingerprint, allow_changed_corpus)
        notes += [note] if note else []
    if corpus is None:
        corpus = load_corpus(corpus_path, config.data, given.vocab if given else None)
    return RunPlan(config, corpus, fingerprint, ckpt, source, changes, notes)


def recorded_corpus(ckpt: Checkpoint) -> str:
    """The corpus (a file, or a prepared directory) a run recorded, for --resume without
    CORPUS."""
    recorded = ckpt.meta.get("corpus") or ckpt.config.data.corpus
    if not isinstance(recorded, str) or not recorded:
        raise CharlmError("the run does not record its corpus; give the CORPUS file")
    if not Path(recorded).is_file() and not is_prepared(recorded):
        raise CharlmError(f"the run's corpus {recorded} is not there any more; give CORPUS")
    return recorded


def prepared_config(path: str, config: Config) -> tuple[Config, str]:
    """`config` with the data settings a prepared corpus was made with, and a note naming
    any the config asked otherwise. The prepared corpus wins: its ids, vocabulary and split
    are fixed on disk, and the run's config.yaml then says what it really trained on."""
    m = open_prepared(path).manifest
    data = config.data
    made = {"mode": m["mode"], "val_fraction": m["val_fraction"], "min_count": m["min_count"],
            "max_size": m["max_size"]}  # fmt: skip
    differ = [f"data.{k}={getattr(data, k)!r}" for k, v in made.items() if getattr(data, k) != v]
    if not data.val_file:  # a prepared corpus validates on its tail
        made["val_split"] = "tail"
        if data.val_split == "random" or (data.val_split == "auto" and data.mode == "lines"):
            differ.append(f"data.val_split={data.val_split!r} (random lines)")
    data = dataclasses.replace(data, **made)
    note = ""
    if differ:
        verb = "is" if len(differ) == 1 else "are"
        note = (
            f"the prepared corpus {path} fixes its vocabulary and split, so {', '.join(differ)} "
            f"{verb} not used: it was prepared with --mode {m['mode']} --val-fraction "
            f"{m['val_fraction']:g} "
            f"--min-count {m['min_count']} --max-size {m['max_size']} (validation is its "
            "tail); prepare it again to change them"
        )
    return dataclasses.replace(config, data=data), note


def describe_model(config: Config) -> str:
    """'lstm 2x256'."""
    m = config.model
    return f"{m.cell} {m.num_layers}x{m.hidden_size}"


def step_limit(train: TrainConfig, windows_per_epoch: int) -> int | None:
    """The step limit from max_steps and max_epochs (the smaller), None if only time."""
    limits = [train.max_steps] if train.max_steps else []
    if train.max_epochs:
        limits.append(max(1, math.ceil(train.max_epochs * windows_per_epoch)))
    if train.lr_schedule == "cosine" and not limits:
        raise CharlmError(
            "train.lr_schedule cosine needs a length: set train.max_steps or train.max_epochs"
        )
    return min(limits) if limits else None


def refuse_if_done(train: TrainConfig, step: int, elapsed: float, total: int | None) -> None:
    """A resumed run that already reached its limit: say so, and how to go on."""
    how = "to train on, raise it: --resume --set"
    if train.max_seconds and elapsed >= train.max_seconds:
        raise CharlmError(
            f"the run already used its time budget at step {step} ({elapsed:.0f} s "
            f"of train.max_seconds={train.max_seconds:g}); {how} train.max_seconds=SECONDS "
            f"with SECONDS > {elapsed:.0f}"
        )
    if total is not None and step >= total:
        key = "train.max_steps" if total == train.max_steps else "train.max_epochs"
        value = train.max_steps if total == train.max_steps else train.max_epochs
        more = f"STEPS with STEPS > {step}" if key == "train.max_steps" else "EPOCHS"
        raise CharlmError(
            f"the run already finished: step {step} of {total} ({key}={value:g}); "
            f"{how} {key}={more}"
        )
