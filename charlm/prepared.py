"""A prepared corpus on disk, as `charlm data prepare` writes it and training reads it:

    DIR/manifest.json  what it was made of and how it splits (written last: its presence
                       marks a complete prepare)
    DIR/vocab.json     the vocabulary (the corpus' ids are in it)
    DIR/ids.bin        the ids, one flat array of the smallest unsigned type that holds them

The ids are read through a read-only `np.memmap`: a corpus bigger than memory is never loaded,
the pages a batch touches are read on demand.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from charlm.data import Corpus, encode_text, read_text
from charlm.errors import CharlmError
from charlm.fileio import read_bytes
from charlm.vocab import Vocab

FORMAT = "charlm-prepared"
FORMAT_VERSION = 1
MANIFEST, VOCAB, IDS = "manifest.json", "vocab.json", "ids.bin"
OUTPUTS = (MANIFEST, VOCAB, IDS)
DTYPES = ("uint8", "uint16", "uint32")
_KEYS = {
    "format", "version", "mode", "min_count", "max_size", "vocab_given", "val_fraction",
    "dtype", "total_ids", "ids_sha256", "train_end", "val_start", "unk_ids", "train_unk_ids",
    "unknown", "unknown_count", "characters", "sources",
}  # fmt: skip


def is_prepared(path: str | os.PathLike[str]) -> bool:
    """Whether `path` is a directory that holds a complete prepared corpus."""
    return Path(path).is_dir() and (Path(path) / MANIFEST).is_file()


def manifest_digest(path: str | os.PathLike[str]) -> tuple[str, int]:
    """(SHA-256 of the manifest, bytes of source text): a prepared corpus' fingerprint. The
    manifest holds the sources' and the ids' SHA-256, so hashing it (not gigabytes of ids)
    tells whether the corpus changed."""
    raw = read_bytes(Path(path) / MANIFEST, "prepared corpus manifest")
    try:
        size = sum(int(s["size"]) for s in json.loads(raw)["sources"])
    except (ValueError, KeyError, TypeError):
        raise CharlmError(f"{path}: {MANIFEST} is damaged; prepare the corpus again") from None
    return hashlib.sha256(raw).hexdigest(), size


@dataclass(frozen=True)
class PreparedCorpus:
    """An opened prepared corpus: its manifest, vocabulary and memory-mapped ids."""

    path: Path
    manifest: dict[str, Any]
    vocab: Vocab
    ids: np.memmap

    @property
    def train_ids(self) -> np.memmap:
        return self.ids[: self.manifest["train_end"]]

    @property
    def val_ids(self) -> np.memmap:
        return self.ids[self.manifest["val_start"] :]


def open_prepared(path: str | os.PathLike[str]) -> PreparedCorpus:
    """Open the prepared corpus in directory `path`; every problem is a one-line CharlmError."""
    path = Path(path)
    if not (path / MANIFEST).is_file():
        hint = ("; an interrupted `charlm data prepare`? run it again" if (path / IDS).exists()
                else f"; make one with: charlm data prepare TEXT... -o {path}")  # fmt: skip
        raise CharlmError(f"{path} is a directory but not a prepared corpus (no {MANIFEST}){hint}")
    raw = read_bytes(path / MANIFEST, "prepared corpus manifest")
    try:
        manifest = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise CharlmError(
            f"{path / MANIFEST} is not valid JSON; prepare the corpus again"
        ) from None
    _check_manifest(path, manifest)
    vocab = Vocab.load(path / VOCAB)
    if vocab.mode != manifest["mode"] or vocab.dtype != np.dtype(manifest["dtype"]):
        raise CharlmError(f"{path}: {VOCAB} does not belong to its manifest; prepare again")
    total, dtype = manifest["total_ids"], np.dtype(manifest["dtype"])
    try:
        size = (path / IDS).stat().st_size
    except OSError as exc:
        raise CharlmError(f"cannot read {path / IDS}: {exc.strerror or exc}") from None
    if size != total * dtype.itemsize:
        raise CharlmError(
            f"{path / IDS} holds {size:,} bytes, its manifest says {total:,} {dtype} ids "
            f"({total * dtype.itemsize:,} bytes); prepare the corpus again"
        )
    ids = np.memmap(path / IDS, dtype=dtype, mode="r", shape=(total,))
    return PreparedCorpus(path, manifest, vocab, ids)


def _check_manifest(path: Path, m: Any) -> None:
    """A manifest this charlm can read, with consistent numbers, or a CharlmError."""
    where = path / MANIFEST
    if not isinstance(m, dict) or m.get("format") != FORMAT:
        raise CharlmError(f"{where} is not a charlm prepared-corpus manifest")
    if m.get("version") != FORMAT_VERSION:
        raise CharlmError(
            f"{where}: unsupported version {m.get('version')!r} (this charlm reads "
            f"{FORMAT_VERSION}); prepare the corpus again"
        )
    missing = sorted(_KEYS - set(m))
    if missing:
        raise CharlmError(f"{where} lacks {', '.join(missing)}; prepare the corpus again")
    ints = ("total_ids", "train_end", "val_start")
    ok = all(isinstance(m[k], int) and not isinstance(m[k], bool) for k in ints)
    ok = ok and m["dtype"] in DTYPES and 0 < m["total_ids"]
    ok = ok and 0 <= m["val_start"] <= m["train_end"] <= m["total_ids"]
    if not ok:
        raise CharlmError(f"{where} is damaged (inconsistent sizes); prepare the corpus again")


def load_prepared(path: str | os.PathLike[str], data: Any, vocab: Vocab | None = None) -> Corpus:
    """A prepared corpus (`charlm data prepare`) as a Corpus whose ids are read-only memmaps.

    Its vocabulary is the corpus' own: a different `vocab` (a checkpoint's) or `data.vocab` is
    an error, and so is another `data.mode`. It splits where the manifest says (prepared with
    --val-fraction; `charlm.launch` notes a differing data.val_fraction), unless
    `data.val_file` is set: then all of it trains.
    """
    prep = open_prepared(path)
    m = prep.manifest
    fix = "prepare it again with --vocab FILE, or train on the text file"
    if vocab is not None and vocab != prep.vocab:
        raise CharlmError(
            f"the prepared corpus {path} has its own vocabulary ({len(prep.vocab)} tokens), not "
            f"the checkpoint's ({len(vocab)} tokens); {fix}"
        )
    if data.vocab and Vocab.load(data.vocab) != prep.vocab:
        raise CharlmError(f"data.vocab {data.vocab} is not the prepared corpus {path}'s "
                          f"vocabulary; leave data.vocab unset, or {fix}")  # fmt: skip
    if prep.vocab.mode != data.mode:
        raise CharlmError(
            f"the prepared corpus {path} is in {prep.vocab.mode} mode but data.mode is "
            f"{data.mode}; set --set data.mode={prep.vocab.mode} or prepare it again"
        )
    if data.val_file:
        train, train_unk = prep.ids, m["unk_ids"]
        val = encode_text(read_text(data.val_file), prep.vocab)
    else:
        train, val, train_unk = prep.train_ids, prep.val_ids, m["train_unk_ids"]
    unknown = list(m["unknown"])
    return Corpus(str(path), prep.vocab, train, val, unknown, m["unknown_count"], train_unk)
