"""Checkpoints: arrays in `.npz` (read with allow_pickle=False) plus a JSON sidecar.

A checkpoint named `last` in a run directory is two files:

    last-00000500.npz   parameters, optimizer moments, carried hidden state
    last.json           format version, config, vocabulary, step, RNG and data position,
                        metrics, and the name and SHA-256 of the .npz it belongs to

Both are written to temporary files, flushed and fsynced, then renamed with `os.replace`;
the JSON goes last, so it is the commit point: whatever moment a crash hits, `last.json`
names a complete `.npz`. Superseded `.npz` files are removed after the commit, and an `.npz`
is never overwritten in place (saving the same step again picks a new name), so every JSON
names the very bytes it hashed. Several JSONs may name one `.npz` (a numbered checkpoint
shares `last`'s, see `link_checkpoint`): a file goes only when no JSON names it. A checkpoint
is self-contained: sampling and evaluation need nothing else. No pickle anywhere.
"""

from __future__ import annotations

import contextlib
import json
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from charlm.config import Config, config_from_dict, config_to_dict
from charlm.device import get_device
from charlm.errors import CharlmError, CheckpointError
from charlm.fileio import fsync_dir, sha256_file, write_atomic
from charlm.model import CharModel
from charlm.vocab import Vocab

FORMAT = "charlm-checkpoint"
VERSION = 1
NAMES = ("best", "last")


@dataclass
class Checkpoint:
    """Everything a run needs to sample, evaluate or resume exactly."""

    config: Config
    vocab: Vocab
    params: dict[str, np.ndarray]
    step: int = 0
    optimizer: dict[str, np.ndarray] = field(default_factory=dict)  # 'm/<param>' -> moment
    hidden: dict[str, np.ndarray] = field(default_factory=dict)  # 'l0/h' -> carried state
    meta: dict[str, Any] = field(default_factory=dict)  # rng, data position, metrics, ...

    def model(self) -> CharModel:
        """The architecture this checkpoint's parameters belong to, on the CPU with the step
        kernels its config asks for (`train.kernels`) at its parameters' precision."""
        dtype = next(iter(self.params.values())).dtype.name if self.params else "float32"
        device = get_device("cpu", self.config.train.kernels, dtype)
        return CharModel(self.config.model, len(self.vocab), device)


def save_checkpoint(run_dir: str | os.PathLike[str], name: str, ckpt: Checkpoint) -> Path:
    """Write checkpoint `name` ('last', 'best', ...) into `run_dir` atomically; returns the JSON.

    On failure (disk full, permissions) the previous checkpoint of that name is untouched and
    a CheckpointError says so.
    """
    run = Path(run_dir)
    json_path = run / f"{name}.json"
    npz_path = _fresh_npz_path(run, name, ckpt.step)
    arrays = {f"param/{k}": v for k, v in ckpt.params.items()}
    arrays.update({f"optim/{k}": v for k, v in ckpt.optimizer.items()})
    arrays.update({f"hidden/{k}": v for k, v in ckpt.hidden.items()})
    try:
        write_atomic(npz_path, lambda fh: np.savez(fh, **arrays))
        meta = {
            "format": FORMAT,
            "version": VERSION,
            "step": ckpt.step,
            "arrays": npz_path.name,
            "sha256": sha256_file(npz_path)[0],
            "config": config_to_dict(ckpt.config),
            "vocab": ckpt.vocab.to_dict(),
            **{k: v for k, v in ckpt.meta.items() if k not in _RESERVED},
        }
        text = json.dumps(meta, indent=1, ensure_ascii=False).encode("utf-8")
        write_atomic(json_path, lambda fh: fh.write(text))
        fsync_dir(run)
    except OSError as exc:
        with contextlib.suppress(OSError):
            if not _referenced(run, npz_path.name):
                npz_path.unlink()
        raise CheckpointError(
            f"could not save checkpoint {json_path} ({exc.strerror or exc}); "
            "the previous checkpoint is intact"
        ) from None
    _remove_orphans(run, name)
    return json_path


_RESERVED = ("format", "version", "step", "arrays", "sha256", "config", "vocab")


def _fresh_npz_path(run: Path, name: str, step: int) -> Path:
    """`name-STEP.npz`, or `name-STEP-K.npz` when that file is there already: a JSON (another
    checkpoint's, or this one's until the commit) may name it, so it is never replaced."""
    path = run / f"{name}-{step:08d}.npz"
    k = 0
    while path.exists():
        k += 1
        path = run / f"{name}-{step:08d}-{k}.npz"
    return path


def link_checkpoint(run_dir: str | os.PathLike[str], source: str, target: str) -> Path:
    """Checkpoint `target` as a copy of `source`'s JSON, naming the same `.npz` (no arrays are
    written twice); returns its JSON. A CheckpointError if `source` cannot be read or the copy
    cannot be written (`target` is then as it was)."""
    run = Path(run_dir)
    src, dst = run / f"{source}.json", run / f"{target}.json"
    replaced = _arrays_of(dst)  # `target` saved at this step before (a resume that stopped)
    try:
        text = src.read_bytes()
        write_atomic(dst, text)
        fsync_dir(run)
    except OSError as exc:
        raise CheckpointError(f"could not write checkpoint {dst} ({exc.strerror or exc})") from None
    _remove_unreferenced(run, replaced)
    return dst


def remove_checkpoint(run_dir: str | os.PathLike[str], name: str) -> None:
    """Delete checkpoint `name`: its JSON first (a crash never leaves a JSON without its
    arrays), then its `.npz` unless another checkpoint names it too. Best effort: a file that
    cannot be removed stays (and its checkpoint with it)."""
    run = Path(run_dir)
    json_path = run / f"{name}.json"
    arrays = _arrays_of(json_path)
    try:
        json_path.unlink(missing_ok=True)
    except OSError:
        return
    fsync_dir(run)
    _remove_unreferenced(run, arrays)


def _arrays_of(json_path: Path) -> str | None:
    """The `.npz` file name a checkpoint JSON names (None if unreadable or not there)."""
    with contextlib.suppress(OSError, ValueError, AttributeError):
        arrays = json.loads(json_path.read_text("utf-8")).get("arrays")
        if isinstance(arrays, str):
            return Path(arrays).name
    return None


def _remove_unreferenced(run: Path, npz_name: str | None) -> None:
    # Only array files: a hand-edited JSON must not make this delete anything else.
    if npz_name and npz_name.endswith(".npz") and not _referenced(run, npz_name):
        with contextlib.suppress(OSError):
            (run / npz_name).unlink()


def update_meta(run_dir: str | os.PathLike[str], name: str, fields: dict[str, Any]) -> None:
    """Add `fields` to checkpoint `name`'s JSON (its arrays untouched), atomically. OSError or
    ValueError if it cannot be read or written; the checkpoint is then as it was."""
    json_path = Path(run_dir) / f"{name}.json"
    meta = json.loads(json_path.read_bytes().decode("utf-8"))
    if not isinstance(meta, dict):
        raise ValueError(f"{json_path}: not a checkpoint JSON object")
    meta.update({k: v for k, v in fields.items() if k not in _RESERVED})
    write_atomic(json_path, json.dumps(meta, indent=1, ensure_ascii=False).encode("utf-8"))


def _referenced(run: Path, npz_name: str) -> bool:
    """Whether any committed JSON in `run` names `npz_name`."""
    for json_path in run.glob("*.json"):
        with contextlib.suppress(OSError, ValueError, AttributeError):
            if json.loads(json_path.read_text("utf-8")).get("arrays") == npz_name:
                return True
    return False


def _remove_orphans(run: Path, name: str) -> None:
    """Delete `name-*.npz` files no JSON points at (superseded, or left by a crash), and the
    temp files of writes a crash cut short."""
    leftovers = [*run.glob(f".{name}-*.npz.*.tmp"), *run.glob(f".{name}.json.*.tmp")]
    for npz in run.glob(f"{name}-*.npz"):
        if not _referenced(run, npz.name):
            leftovers.append(npz)
    for path in leftovers:
        with contextlib.suppress(OSError):
            path.unlink()


def _require(meta: dict[str, Any], key: str, kind: type | tuple[type, ...]) -> Any:
    value = meta.get(key)
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        raise CheckpointError(f"field '{key}' is missing or has the wrong type")
    return value


def resolve_checkpoint(path: str | os.PathLike[str]) -> Path:
    """The checkpoint JSON for `path`: a .json file, an .npz (its JSON), or a run directory
    (its `best`, else `last`)."""
    p = Path(path)
    if p.is_dir():
        for name in NAMES:
            if (p / f"{name}.json").is_file():
                return p / f"{name}.json"
        raise CheckpointError(f"{p}: no checkpoint in this run directory (best.json, last.json)")
    if p.suffix == ".npz":
        for json_path in p.parent.glob("*.json"):
            with contextlib.suppress(OSError, ValueError, AttributeError):
                if json.loads(json_path.read_text("utf-8")).get("arrays") == p.name:
                    return json_path
        raise CheckpointError(f"{p}: no checkpoint JSON next to it names this file")
    if not p.exists():
        raise CheckpointError(f"{p}: checkpoint not found")
    if not p.is_file():
        raise CheckpointError(f"{p}: not a checkpoint file")
    return p


def load_checkpoint(path: str | os.PathLike[str], verify: bool = True) -> Checkpoint:
    """Read and validate a checkpoint (see `resolve_checkpoint` for what `path` may be).

    Every problem -- unreadable or truncated files, another format or version, a hash that
    does not match, object arrays, missing or mis-shaped parameters -- is a CheckpointError.
    """
    json_path = resolve_checkpoint(path)
    where = str(json_path)
    try:
        meta = json.loads(json_path.read_bytes().decode("utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise CheckpointError(f"{where}: not a readable checkpoint JSON ({exc})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{where}: not a charlm checkpoint (format != {FORMAT!r})")
    version = meta.get("version")
    if version != VERSION:
        raise CheckpointError(
            f"{where}: checkpoint format version {version!r} is not supported (expected {VERSION})"
        )
    try:
        step = _require(meta, "step", int)
        if step < 0:
            raise CheckpointError(f"field 'step' must be >= 0, got {step}")
        arrays_name = _require(meta, "arrays", str)
        digest = _require(meta, "sha256", str)
        config = config_from_dict(_require(meta, "config", dict))
        vocab = Vocab.from_dict(_require(meta, "vocab", dict))
    except CharlmError as exc:
        raise CheckpointError(f"{where}: {exc}") from None
    npz_path = json_path.parent / Path(arrays_name).name  # never follow a path out of the run
    if not npz_path.is_file():
        raise CheckpointError(f"{where}: its array file {npz_path.name} is missing")
    if verify and sha256_file(npz_path)[0] != digest:
        raise CheckpointError(f"{npz_path}: contents do not match the checkpoint (corrupt?)")
    groups: dict[str, dict[str, np.ndarray]] = {"param": {}, "optim": {}, "hidden": {}}
    try:
        with np.load(npz_path, allow_pickle=False) as npz:
            for key in npz.files:
                group, _, name = key.partition("/")
                if group not in groups or not name:
                    raise CheckpointError(f"{npz_path}: unexpected array {key!r}")
                groups[group][name] = npz[key]
    except CheckpointError:
        raise
    except ValueError as exc:  # object arrays need pickle: refused, nothing is executed
        raise CheckpointError(f"{npz_path}: refused, holds non-numeric arrays ({exc})") from None
    except (OSError, zipfile.BadZipFile, EOFError, KeyError) as exc:
        raise CheckpointError(f"{npz_path}: truncated or corrupt ({exc})") from None
    ckpt = Checkpoint(
        config,
        vocab,
        groups["param"],
        step,
        groups["optim"],
        groups["hidden"],
        {k: v for k, v in meta.items() if k not in _RESERVED},
    )
    _check_params(ckpt, where)
    return ckpt


def load_run_checkpoint(
    run_dir: str | os.PathLike[str],
) -> tuple[Path, Checkpoint, CheckpointError | None]:
    """The best usable checkpoint of a run directory: (its JSON, the checkpoint, skipped).

    `best` is tried first, then `last` (`NAMES` order). When `best` exists but cannot be
    loaded (corrupt, truncated, another version) and `last` loads, `skipped` is best's error,
    for the caller to show as a warning. When none loads, the first one's error is raised.
    """
    run = Path(run_dir)
    errors: list[CheckpointError] = []
    for name in NAMES:
        json_path = run / f"{name}.json"
        if not json_path.is_file():
            continue
        try:
            return json_path, load_checkpoint(json_path), errors[0] if errors else None
        except CheckpointError as exc:
            errors.append(exc)
    if errors:
        also = "".join(f"; also {exc}" for exc in errors[1:])
        raise CheckpointError(f"{errors[0]}{also}")
    json_path = resolve_checkpoint(run)  # neither file is there: its one-line error
    return json_path, load_checkpoint(json_path), None


def _check_params(ckpt: Checkpoint, where: str) -> None:
    """Parameters must be exactly the model's, float arrays of the right shapes."""
    expected = ckpt.model().param_shapes()
    missing = sorted(set(expected) - set(ckpt.params))
    extra = sorted(set(ckpt.params) - set(expected))
    if missing or extra:
        raise CheckpointError(f"{where}: parameters missing {missing} / unexpected {extra}")
    for key, shape in expected.items():
        arr = ckpt.params[key]
        if arr.shape != shape or arr.dtype.kind != "f":
            raise CheckpointError(
                f"{where}: parameter {key} has shape {arr.shape} {arr.dtype}, expected {shape}"
            )
    for key, arr in [*ckpt.optimizer.items(), *ckpt.hidden.items()]:
        if arr.dtype.kind != "f":
            raise CheckpointError(f"{where}: array {key} is {arr.dtype}, expected floats")
