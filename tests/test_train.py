"""The trainer and checkpoints: resume exactness, atomic saves, stops, divergence, the CLI."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

from charlm import checkpoint as ckpt_mod
from charlm.checkpoint import load_checkpoint
from charlm.cli import cli
from charlm.config import load_config
from charlm.errors import CharlmError, CheckpointError
from charlm.stopping import StopRequest
from charlm.train import DivergenceError, Trainer

ROOT = Path(__file__).resolve().parent.parent
SHAKESPEARE = str(ROOT / "data" / "tinyshakespeare.txt")
DINOS = str(ROOT / "data" / "dinosaurs.txt")
TINY = [
    "model.hidden_size=16",
    "model.num_layers=2",
    "train.batch_size=4",
    "train.seq_len=16",
    "train.eval_every=10",
    "train.checkpoint_every=5",
    "train.log_every=5",
]


class Recorder:
    """A reporter that keeps what the trainer sends; can request a stop after N updates."""

    def __init__(self, stop: StopRequest | None = None, stop_at: int = 0) -> None:
        self.records: list[dict[str, Any]] = []
        self.messages: list[str] = []
        self.stop, self.stop_at = stop, stop_at

    def start(self, step: int, total: int | None) -> None:
        self.begin = (step, total)

    def update(self, record: dict[str, Any]) -> None:
        self.records.append(record)
        if self.stop is not None and record["step"] >= self.stop_at:
            self.stop.signal_name = "SIGINT"

    def message(self, text: str) -> None:
        self.messages.append(text)

    def close(self) -> None:
        pass


def make_trainer(tmp_path: Path, *extra: str, corpus: str = SHAKESPEARE, **kw: Any) -> Trainer:
    cfg = load_config(None, [*TINY, *extra])
    return Trainer.create(corpus, cfg, tmp_path / kw.pop("name", "run"), **kw)


def losses(run_dir: Path) -> list[float]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line)["train_loss"] for line in lines]


def test_resume_is_exact(tmp_path: Path) -> None:
    """2 x 20 steps with a resume in between == 40 straight: losses and weights bit for bit.

    Dropout (RNG state), a cosine schedule (step) and Adam (moments) must all be restored.
    """
    extra = ["model.dropout=0.3", "train.lr_schedule=cosine", "train.warmup_steps=5"]
    straight = make_trainer(tmp_path, *extra, "train.max_steps=40", name="straight")
    straight.run(Recorder())
    stop = StopRequest()
    first = make_trainer(tmp_path, *extra, "train.max_steps=40", name="split")
    assert first.run(Recorder(stop, stop_at=20), stop).step == 20
    cfg = load_config(tmp_path / "split" / "config.yaml")
    resumed = Trainer.create(SHAKESPEARE, cfg, tmp_path / "split", resume=True)
    assert resumed.step == 20
    resumed.run(Recorder())
    a, b = load_checkpoint(tmp_path / "straight"), load_checkpoint(tmp_path / "split" / "last.json")
    assert a.step == b.step == 40
    for key in a.params:
        np.testing.assert_array_equal(a.params[key], b.params[key])
    for key in a.optimizer:
        np.testing.assert_array_equal(a.optimizer[key], b.optimizer[key])
    assert losses(tmp_path / "straight") == losses(tmp_path / "split")


def test_same_seed_same_metrics_other_seed_differs(tmp_path: Path) -> None:
    runs = []
    for name, seed in (("a", 1), ("b", 1), ("c", 2)):
        make_trainer(tmp_path, "train.max_steps=10", f"train.seed={seed}", name=name).run(
            Recorder()
        )
        runs.append(losses(tmp_path / name))
    assert runs[0] == runs[1]
    assert runs[0] != runs[2]


def test_run_directory_contents_and_metrics(tmp_path: Path) -> None:
    trainer = make_trainer(tmp_path, "train.max_steps=20")
    result = trainer.run(Recorder())
    run = tmp_path / "run"
    assert result.reason == "finished" and result.step == 20
    for name in ("config.yaml", "vocab.json", "metrics.jsonl", "last.json", "best.json"):
        assert (run / name).is_file(), name
    assert load_config(run / "config.yaml") == trainer.config
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [5, 10, 15, 20]
    for r in records:
        assert {"step", "epoch", "train_loss", "lr", "chars_per_s", "elapsed_s"} <= set(r)
    evals = [r for r in records if "val_loss" in r]
    assert [r["step"] for r in evals] == [10, 20]
    assert all(abs(r["val_bpc"] - r["val_loss"] / np.log(2)) < 1e-12 for r in evals)
    best = load_checkpoint(run / "best.json")
    assert best.meta["best_val_loss"] == min(r["val_loss"] for r in evals)
    # only the checkpoints' own arrays remain: superseded .npz files are removed
    assert sorted(p.name for p in run.glob("*.npz")) == sorted(
        {json.loads((run / f"{n}.json").read_text())["arrays"] for n in ("best", "last")}
    )


def test_crash_mid_save_keeps_previous_checkpoint(tmp_path: Path, monkeypatch) -> None:
    trainer = make_trainer(tmp_path, "train.max_steps=5")
    trainer.run(Recorder())
    before = load_checkpoint(tmp_path / "run" / "last.json")
    real_replace = os.replace

    def crash_on_json(src: str, dst: str) -> None:
        if str(dst).endswith("last.json"):
            raise OSError(28, "No space left on device")
        real_replace(src, dst)

    monkeypatch.setattr(ckpt_mod.os, "replace", crash_on_json)
    monkeypatch.setattr("charlm.fileio.os.replace", crash_on_json)
    trainer.step += 1
    with pytest.raises(CheckpointError, match="previous checkpoint is intact"):
        ckpt_mod.save_checkpoint(tmp_path / "run", "last", trainer.checkpoint())
    monkeypatch.undo()
    after = load_checkpoint(tmp_path / "run" / "last.json")
    assert after.step == before.step == 5
    for key in before.params:
        np.testing.assert_array_equal(before.params[key], after.params[key])
    assert not list((tmp_path / "run").glob(".*.tmp"))
    assert not (tmp_path / "run" / "last-00000006.npz").exists()


def test_truncated_npz_is_refused(tmp_path: Path) -> None:
    make_trainer(tmp_path, "train.max_steps=5").run(Recorder())
    meta = json.loads((tmp_path / "run" / "last.json").read_text())
    npz = tmp_path / "run" / meta["arrays"]
    npz.write_bytes(npz.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="do not match"):
        load_checkpoint(tmp_path / "run" / "last.json")
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_checkpoint(tmp_path / "run" / "last.json", verify=False)


def test_stop_request_saves_and_resumes(tmp_path: Path) -> None:
    stop = StopRequest()
    trainer = make_trainer(tmp_path, "train.max_steps=100")
    result = trainer.run(Recorder(stop, stop_at=10), stop)
    assert result.reason == "interrupted" and result.step == 10
    saved = load_checkpoint(tmp_path / "run" / "last.json")
    assert saved.step == 10
    cfg = load_config(tmp_path / "run" / "config.yaml", ["train.max_steps=15"])
    again = Trainer.create(SHAKESPEARE, cfg, tmp_path / "run", resume=True)
    assert again.run(Recorder()).step == 15


def test_nan_stops_and_keeps_last_good_checkpoint(tmp_path: Path) -> None:
    trainer = make_trainer(tmp_path, "train.max_steps=50", "train.checkpoint_every=1")
    real_loss = trainer.model.loss_and_grads
    calls = {"n": 0}

    def poisoned(*args: Any, **kw: Any) -> Any:
        calls["n"] += 1
        out = real_loss(*args, **kw)
        return (np.float64("nan"), *out[1:]) if calls["n"] == 8 else out

    trainer.model.loss_and_grads = poisoned  # type: ignore[method-assign]
    with pytest.raises(DivergenceError, match="diverged at step 8.*last good checkpoint"):
        trainer.run(Recorder())
    kept = load_checkpoint(tmp_path / "run" / "last.json")
    assert kept.step == 7
    assert all(np.isfinite(v).all() for v in kept.params.values())


def test_lines_mode_trains_with_resets(tmp_path: Path) -> None:
    trainer = make_trainer(tmp_path, "data.mode=lines", "train.max_steps=10", corpus=DINOS)
    assert trainer.corpus.reset_id == trainer.corpus.vocab.eos_id
    assert trainer.corpus.train_ids[0] == trainer.corpus.vocab.eos_id
    result = trainer.run(Recorder())
    assert result.step == 10
    assert load_checkpoint(tmp_path / "run").vocab.mode == "lines"


def test_early_stopping_and_epoch_limit(tmp_path: Path) -> None:
    # A validation loss that never improves after the first evaluation: patience 2 stops after
    # 3 evaluations. (A tiny learning rate is not enough: zero-initialised biases still move by
    # it, and the loss then wanders in its last bits, either way.)
    trainer = make_trainer(tmp_path, "train.max_steps=1000", "train.patience=2", name="patience")
    flat = {"val_loss": 4.0, "val_bpc": 4.0 / math.log(2), "val_ppl": math.exp(4.0)}
    trainer.evaluate = lambda: dict(flat)  # type: ignore[method-assign]
    stopped = trainer.run(Recorder())
    assert stopped.reason == "early stopping" and stopped.step == 30
    epochs = make_trainer(
        tmp_path,
        "train.max_steps=0",
        "train.max_epochs=1",
        "train.seq_len=64",
        "train.batch_size=64",
        "train.eval_every=1000",
        corpus=DINOS,
        name="epochs",
    )
    windows = (len(epochs.corpus.train_ids) - 1) // 64 // 64
    assert epochs.run(Recorder()).step == windows


def test_cosine_without_length_is_refused_before_writing(tmp_path: Path) -> None:
    with pytest.raises(CharlmError, match="cosine needs a length"):
        make_trainer(
            tmp_path, "train.max_steps=0", "train.max_seconds=5", "train.lr_schedule=cosine"
        )
    assert not (tmp_path / "run").exists()


def test_init_from_keeps_vocab_and_reports_unknown(tmp_path: Path) -> None:
    make_trainer(tmp_path, "train.max_steps=5", name="base", corpus=DINOS).run(Recorder())
    other = tmp_path / "other.txt"
    other.write_text("Tyrannosaurus 123 rex!\n" * 50)
    tuned = make_trainer(
        tmp_path,
        "train.max_steps=5",
        "train.batch_size=2",
        name="tuned",
        corpus=str(other),
        init_from=str(tmp_path / "base"),
    )
    base = load_checkpoint(tmp_path / "base")
    assert tuned.corpus.vocab == base.vocab
    (note,) = [n for n in tuned.notes if "not in the vocabulary" in n]
    assert all(ch in note for ch in " !123") and "300 characters" in note  # 6 a line
    recorder = Recorder()
    tuned.run(recorder)
    assert any("<UNK>" in m for m in recorder.messages)
    np.testing.assert_array_equal(tuned.corpus.train_ids[:1], base.vocab.encode("T"))


def run_cli(*args: str) -> Any:
    return CliRunner().invoke(cli, list(args))


def test_cli_train_then_refuses_to_overwrite(tmp_path: Path) -> None:
    run = str(tmp_path / "run")
    sets = [a for kv in TINY for a in ("--set", kv)]
    ok = run_cli("train", DINOS, "--set", "train.max_steps=5", *sets, "--run-dir", run, "--quiet")
    assert ok.exit_code == 0, ok.output
    again = run_cli("train", DINOS, "--set", "train.max_steps=5", *sets, "--run-dir", run)
    assert again.exit_code == 1
    assert "already holds a run" in again.output and "Traceback" not in again.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--set", "train.lr=-1"], "train.lr"),
        (["--set", "model.cell=transformer"], "model.cell"),
        (["--set", "train.bogus=1"], "train.bogus"),
        (["--set", "train.batch_size=100000"], "too short for one batch"),
        (["--resume"], "nothing to resume"),
    ],
)
def test_cli_train_bad_input_is_one_line(tmp_path: Path, args: list[str], message: str) -> None:
    result = run_cli("train", DINOS, "--run-dir", str(tmp_path / "r"), "--quiet", *args)
    assert result.exit_code in (1, 2)
    assert message in result.output
    assert "Traceback" not in result.output
    assert len([line for line in result.output.splitlines() if line.strip()]) == 1
