"""train.keep_checkpoints: numbered checkpoints besides best and last, pruned crash-safely, picked
with `sample --step` / `eval --step`, kept across a resume; old runs without them still work."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from _cli_contract import (
    DINOS,
    FIXTURE,
    SMALL,
    QuietReporter,
    assert_cli_outcome,
    assert_one_line_error,
    train_small,
)
from click.testing import CliRunner

from charlm import rundir as rundir_mod
from charlm.checkpoint import Checkpoint, load_checkpoint
from charlm.cli import cli
from charlm.config import load_config
from charlm.errors import CharlmError, ConfigError
from charlm.rundir import RunDir, numbered_checkpoints, numbered_name
from charlm.runs import checkpoint_at_step
from charlm.stopping import StopRequest
from charlm.train import Trainer


def saved_params(monkeypatch: pytest.MonkeyPatch) -> dict[int, dict[str, np.ndarray]]:
    """{step: parameters} of every `last` the trainer saves from now on."""
    saved: dict[int, dict[str, np.ndarray]] = {}
    real = RunDir.save

    def save(self: RunDir, name: str, ckpt: Checkpoint, *args: Any, **kw: Any) -> Path:
        if name == "last":
            saved[ckpt.step] = {k: v.copy() for k, v in ckpt.params.items()}
        return real(self, name, ckpt, *args, **kw)

    monkeypatch.setattr(RunDir, "save", save)
    return saved


def assert_run_consistent(run: Path) -> None:
    """Every checkpoint JSON loads (arrays present, hashes right) and no array file is left
    that no JSON names."""
    named = set()
    for path in run.glob("*.json"):
        if path.name == "vocab.json":
            continue
        load_checkpoint(path)
        named.add(json.loads(path.read_text("utf-8"))["arrays"])
    assert {p.name for p in run.glob("*.npz")} == named


def test_config_key() -> None:
    assert load_config(None, ["train.keep_checkpoints=3"]).train.keep_checkpoints == 3
    assert load_config(None).train.keep_checkpoints == 0
    with pytest.raises(ConfigError, match=r"train.keep_checkpoints: must be >= 0, got -1"):
        load_config(None, ["train.keep_checkpoints=-1"])
    with pytest.raises(ConfigError, match="expected int"):
        load_config(None, ["train.keep_checkpoints=two"])


def test_default_keeps_only_best_and_last(tmp_path: Path) -> None:
    run = tmp_path / "run"
    train_small(run, "train.max_steps=8")
    assert numbered_checkpoints(run) == {}
    assert sorted(p.name for p in run.glob("*.npz")) == ["best-00000008.npz", "last-00000008.npz"]


@pytest.mark.parametrize("keep", [1, 3])
def test_keeps_the_n_most_recent_all_loadable(tmp_path: Path, keep: int) -> None:
    run = tmp_path / "run"
    train_small(run, "train.max_steps=12", f"train.keep_checkpoints={keep}")
    steps = list(numbered_checkpoints(run))
    assert steps == [12, 10, 8][:keep][::-1]
    assert_run_consistent(run)
    for step in steps:
        assert load_checkpoint(run / f"{numbered_name(step)}.json").step == step
    # A numbered checkpoint shares the arrays of the `last` it was saved with: no copies.
    newest = json.loads((run / f"{numbered_name(12)}.json").read_text("utf-8"))
    assert newest["arrays"] == json.loads((run / "last.json").read_text("utf-8"))["arrays"]


def test_step_picks_the_weights_saved_at_that_step(tmp_path: Path, monkeypatch) -> None:
    saved = saved_params(monkeypatch)
    run = tmp_path / "run"
    train_small(run, "train.max_steps=12", "train.keep_checkpoints=3")
    monkeypatch.undo()
    assert set(saved) == {2, 4, 6, 8, 10, 12}
    for step in (8, 10, 12):
        ckpt = load_checkpoint(checkpoint_at_step(run, step))
        assert ckpt.step == step
        for key, value in saved[step].items():
            assert np.array_equal(ckpt.params[key], value), (step, key)
    assert any(not np.array_equal(saved[8][k], saved[12][k]) for k in saved[8])  # they differ

    def invoke(*args: str) -> Any:
        result = CliRunner().invoke(cli, list(args))
        assert_cli_outcome(result)
        return result

    # sample --step S draws what the checkpoint of step S draws, and differs from another step.
    draw = ["sample", "--run", str(run), "--seed", "3", "--max-len", "40", "--num", "2"]
    by_step = {s: invoke(*draw, "--step", str(s)).stdout for s in (8, 10)}
    direct = invoke("sample", "--checkpoint", str(run / "step-00000008.json"), *draw[3:]).stdout
    assert by_step[8] == direct and by_step[8] != by_step[10]
    # eval --step: the loss of those weights.
    scored = {s: invoke("eval", DINOS, "--run", str(run), "--step", str(s), "--json",
                        "--limit", "300").stdout for s in (8, 12)}  # fmt: skip
    losses = {s: json.loads(text)["loss"] for s, text in scored.items()}
    assert losses[8] != losses[12]
    # A step that is not kept: one line listing the steps kept.
    for command in (["sample", "--run", str(run)], ["eval", DINOS, "--run", str(run)]):
        result = CliRunner().invoke(cli, [*command, "--step", "6"])
        line = assert_one_line_error(result.stderr, result.exit_code)
        assert "no checkpoint at step 6; steps kept: 8, 10, 12" in line, line
    result = CliRunner().invoke(cli, ["sample", "--checkpoint", str(run / "last.json"),
                                      "--step", "8"])  # fmt: skip
    assert result.exit_code == 2 and "--step picks among a run's checkpoints" in result.stderr


def test_latest_run_with_step(tmp_path: Path, monkeypatch) -> None:
    runs = tmp_path / "runs"
    train_small(runs / "dinos", "train.max_steps=4", "train.keep_checkpoints=2")
    result = CliRunner().invoke(cli, ["sample", "--runs-dir", str(runs), "--step", "2",
                                      "--max-len", "5"])  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert "step-00000002.json (step 2)" in result.stderr


def test_resume_keeps_counting_and_matches_a_straight_run(tmp_path: Path) -> None:
    straight, split = tmp_path / "straight", tmp_path / "split"
    train_small(straight, "train.max_steps=14", "train.keep_checkpoints=3")
    stop = StopRequest()

    class StopAt8(QuietReporter):
        def update(self, record: dict[str, Any]) -> None:
            if record["step"] >= 8:
                stop.signal_name = "SIGINT"

    cfg = load_config(None, [*SMALL, "train.max_steps=14", "train.keep_checkpoints=2"])
    assert Trainer.create(DINOS, cfg, split).run(StopAt8(), stop).step == 8
    assert list(numbered_checkpoints(split)) == [6, 8]
    result = train_small(split, "train.keep_checkpoints=3", resume=True)
    assert result.step == 14
    assert list(numbered_checkpoints(split)) == [10, 12, 14] == list(numbered_checkpoints(straight))
    assert_run_consistent(split)
    for step in (10, 12, 14):  # resumed exactly: the same weights at every kept step
        a = load_checkpoint(straight / f"{numbered_name(step)}.json")
        b = load_checkpoint(split / f"{numbered_name(step)}.json")
        for key in a.params:
            assert np.array_equal(a.params[key], b.params[key]), (step, key)
    assert load_checkpoint(split / "last.json").step == 14  # resume went on from last


def test_saving_the_same_step_again_never_overwrites_named_arrays(tmp_path: Path) -> None:
    """A resume stopped before its first step saves `last` at the same step again: the arrays
    go to a new file, and the numbered checkpoint follows it with nothing orphaned."""
    run = tmp_path / "run"
    train_small(run, "train.max_steps=6", "train.keep_checkpoints=2")
    stop = StopRequest(signal_name="SIGTERM")  # stop before the first step
    result = train_small(run, "train.max_steps=20", resume=True, stop=stop)
    assert result.reason == "interrupted" and result.step == 6
    meta = json.loads((run / "last.json").read_text("utf-8"))
    assert meta["arrays"] == "last-00000006-1.npz"
    assert json.loads((run / "step-00000006.json").read_text("utf-8"))["arrays"] == meta["arrays"]
    assert_run_consistent(run)
    assert meta["status"] == "interrupted" and meta["status_note"] == "SIGTERM"


def test_a_resume_marks_the_run_running_again(tmp_path: Path) -> None:
    run = tmp_path / "run"
    train_small(run, "train.max_steps=4")
    assert json.loads((run / "last.json").read_text("utf-8"))["status"] == "finished"
    trainer = Trainer.create(DINOS, None, run, resume=True, overrides=("train.max_steps=8",))
    try:  # a process killed now must not leave the run saying "finished"
        assert json.loads((run / "last.json").read_text("utf-8"))["status"] == "running"
        load_checkpoint(run / "last.json")
    finally:
        trainer.close()


class Crash(BaseException):
    """A simulated power cut: nothing after it runs."""


@pytest.mark.parametrize("at", range(6))
def test_a_crash_at_any_file_operation_leaves_every_checkpoint_loadable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, at: int
) -> None:
    run = tmp_path / "run"
    train_small(run, "train.max_steps=6", "train.keep_checkpoints=2")  # numbered: 4, 6
    ckpt = load_checkpoint(run / "last.json")
    ckpt.step = 8
    ops = {"n": 0}

    def counted(real: Any) -> Any:
        def op(*args: Any, **kw: Any) -> Any:
            if ops["n"] == at:
                raise Crash
            ops["n"] += 1
            return real(*args, **kw)

        return op

    # Every rename and every removal the save makes (npz, last.json, the numbered link, the
    # pruning of step 4's JSON and then its arrays).
    monkeypatch.setattr(os, "replace", counted(os.replace))
    monkeypatch.setattr(Path, "unlink", counted(Path.unlink))
    try:
        RunDir(run).save("last", ckpt, keep=2)
        crashed = False
    except Crash:
        crashed = True
    monkeypatch.undo()
    for path in run.glob("*.json"):
        if path.name != "vocab.json":
            assert load_checkpoint(path).step in (4, 6, 8), path
    # Five operations: the npz and last.json renamed, step 8's JSON renamed, step 4's JSON
    # removed, then its arrays (no longer named by anything).
    assert crashed == (at < 5)
    if not crashed:
        assert list(numbered_checkpoints(run)) == [6, 8]
        assert_run_consistent(run)


def test_old_run_without_numbered_checkpoints(tmp_path: Path) -> None:
    run = tmp_path / "run-v1"
    shutil.copytree(FIXTURE, run)
    assert checkpoint_at_step(run, 4) == run / "last.json"
    with pytest.raises(CharlmError, match="no checkpoint at step 3; steps kept: 4"):
        checkpoint_at_step(run, 3)
    result = CliRunner().invoke(cli, ["sample", "--run", str(run), "--step", "4",
                                      "--max-len", "10", "--seed", "1"])  # fmt: skip
    assert result.exit_code == 0, result.stderr
    listing = CliRunner().invoke(cli, ["runs", str(run)])
    assert listing.exit_code == 0, listing.stderr
    assert "last" in listing.stdout and "step-" not in listing.stdout


def test_clear_run_removes_numbered_checkpoints(tmp_path: Path) -> None:
    run = tmp_path / "run"
    train_small(run, "train.max_steps=4", "train.keep_checkpoints=2")
    rundir_mod.clear_run(run)
    assert not list(run.glob("*.json")) and not list(run.glob("*.npz"))
