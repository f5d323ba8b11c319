"""`charlm runs`: listing runs (status, ordering, --json, damaged files), a run's checkpoints,
live-run detection with a real `charlm train` process, and `charlm plot` of several runs."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from _cli_contract import (
    CONFIGS,
    DINOS,
    FIXTURE,
    SMALL,
    QuietReporter,
    assert_cli_outcome,
    assert_one_line_error,
    charlm_cmd,
    subprocess_env,
    train_small,
)
from click.testing import CliRunner

from charlm.checkpoint import update_meta
from charlm.cli import cli
from charlm.config import load_config
from charlm.errors import CharlmError
from charlm.rundir import RunDir
from charlm.runlock import RunLock
from charlm.runs import RunInfo, describe_run, list_runs, run_checkpoints
from charlm.stopping import StopRequest
from charlm.train import DivergenceError, Trainer


def invoke(*args: str | os.PathLike[str]) -> Any:
    result = CliRunner().invoke(cli, [str(a) for a in args])
    assert_cli_outcome(result)
    return result


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("finished") / "run"
    train_small(run, "train.max_steps=8", "train.keep_checkpoints=2")
    return run


def copy(run: Path, to: Path) -> Path:
    shutil.copytree(run, to)
    return to


# --- status ------------------------------------------------------------------------------------


def test_finished_run_summary(finished: Path) -> None:
    info = describe_run(finished)
    assert (info.status, info.note) == ("finished", "")
    assert (info.corpus, info.model, info.steps) == ("dinosaurs.txt", "lstm 1x8", 8)
    records = [json.loads(line) for line in (finished / "metrics.jsonl").read_text().splitlines()]
    best = min(r["val_loss"] for r in records if "val_loss" in r)
    assert info.best_val_loss == best
    assert info.best_val_bpc == pytest.approx(best / math.log(2))
    speeds = sorted(r["chars_per_s"] for r in records)
    assert speeds[0] <= info.chars_per_s <= speeds[-1]
    meta = json.loads((finished / "last.json").read_text("utf-8"))
    assert meta["status"] == "finished" and meta["ended_at_step"] == 8


def test_interrupted_diverged_failed_and_killed(tmp_path: Path, finished: Path, monkeypatch):
    run = tmp_path / "interrupted"
    stop = StopRequest()

    class StopAt4(QuietReporter):
        def update(self, record: dict[str, Any]) -> None:
            stop.signal_name = "SIGINT" if record["step"] >= 4 else ""

    Trainer.create(DINOS, load_config(None, [*SMALL, "train.max_steps=50"]), run).run(
        StopAt4(), stop
    )
    assert (describe_run(run).status, describe_run(run).note) == ("interrupted", "SIGINT")

    run = tmp_path / "diverged"  # the reliability tests' recipe: rnn/relu, lr 10, no clipping
    with pytest.raises(DivergenceError):
        train_small(run, "model.cell=rnn", "model.rnn_activation=relu", "model.hidden_size=32",
              "train.lr=10", "train.clip=0", "train.optimizer=sgd", "train.max_steps=48",
              "train.checkpoint_every=1", "train.batch_size=16", "train.seq_len=32",
              config=CONFIGS / "tiny.yaml")  # fmt: skip
    info = describe_run(run)
    assert info.status == "diverged" and info.note.startswith("training diverged at step")

    run = tmp_path / "failed"
    real = RunDir.save

    def save(self: RunDir, name: str, ckpt: Any, *args: Any, **kw: Any) -> Path:
        if ckpt.step >= 4:
            raise CharlmError("disk on fire")
        return real(self, name, ckpt, *args, **kw)

    monkeypatch.setattr(RunDir, "save", save)
    with pytest.raises(CharlmError):
        train_small(run, "train.max_steps=8")
    monkeypatch.undo()
    assert (describe_run(run).status, describe_run(run).note) == ("failed", "disk on fire")

    killed = copy(finished, tmp_path / "killed")  # saved while training, never said how it ended
    update_meta(killed, "last", {"status": "running"})
    assert describe_run(killed).status == "killed"


def test_older_runs_show_a_sensible_status(tmp_path: Path) -> None:
    run = copy(FIXTURE, tmp_path / "v1")
    info = describe_run(run)  # step 4 of max_steps 4, no status recorded
    assert (info.status, info.note) == ("finished", "inferred: reached train.max_steps")
    assert (info.model, info.steps) == ("lstm 2x8", 4) and info.best_val_loss is not None
    meta = json.loads((run / "last.json").read_text("utf-8"))
    meta["config"]["train"]["max_steps"] = 10
    (run / "last.json").write_text(json.dumps(meta), "utf-8")
    assert describe_run(run).status == "unknown"
    only_log = tmp_path / "no-ckpt"
    only_log.mkdir()
    (only_log / "metrics.jsonl").write_text('{"step": 2, "train_loss": 4.1}\n')
    assert describe_run(only_log).status == "no checkpoint"


def test_damaged_files_show_as_damaged(tmp_path: Path, finished: Path) -> None:
    bad_json = copy(finished, tmp_path / "runs" / "bad-json")
    (bad_json / "last.json").write_text('{"format": "charlm-checkpoint", "st')
    bad_line = copy(finished, tmp_path / "runs" / "bad-line")
    with open(bad_line / "metrics.jsonl", "a", encoding="utf-8") as fh:
        fh.write('{"step": 9, "train_lo\n{"step": 10}\n')
    found = {Path(r.path).name: r for r in list_runs(tmp_path / "runs")}
    assert found["bad-json"].status == "damaged" and "last.json" in found["bad-json"].note
    assert found["bad-line"].status == "damaged" and "line 5" in found["bad-line"].note
    result = invoke("runs", tmp_path / "runs")
    assert result.stdout.count("damaged") == 2
    assert "damaged" in invoke("runs", bad_json).stdout  # its checkpoints, the broken one flagged


def test_a_held_lock_is_running(finished: Path, tmp_path: Path) -> None:
    run = copy(finished, tmp_path / "run")
    assert describe_run(run).status == "finished"
    lock = RunLock(run).acquire()
    try:
        info = describe_run(run)
        assert (info.status, info.note) == ("running", f"PID {os.getpid()}")
        RunDir(run)  # the probe left the lock with its holder
        assert lock.held
    finally:
        lock.release()
    assert describe_run(run).status == "finished"


def _train_in_background(run: Path) -> subprocess.Popen:
    argv = charlm_cmd("train", DINOS, *[a for s in SMALL for a in ("--set", s)],
                      "--set", "train.max_steps=1000000", "--set", "train.checkpoint_every=1",
                      "--quiet", "--run-dir", run)  # fmt: skip
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env=subprocess_env())  # fmt: skip


def _wait_for(what: Any, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not what():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL and SIGTERM semantics")
def test_a_live_charlm_train_is_running_then_interrupted_or_killed(tmp_path: Path) -> None:
    for how, expected in ((signal.SIGTERM, "interrupted"), (signal.SIGKILL, "killed")):
        run = tmp_path / expected
        proc = _train_in_background(run)
        try:
            _wait_for(lambda run=run: (run / "last.json").is_file())
            info = describe_run(run)
            assert (info.status, info.note) == ("running", f"PID {proc.pid}"), info
            listing = invoke("runs", tmp_path)
            assert f"running (PID {proc.pid})" in listing.stdout
        finally:
            proc.send_signal(how)
            _, err = proc.communicate(timeout=60)
        assert proc.returncode == (143 if how == signal.SIGTERM else -signal.SIGKILL), err
        info = describe_run(run)
        assert info.status == expected, info
        if how == signal.SIGTERM:
            assert info.note == "SIGTERM"


# --- the listing -------------------------------------------------------------------------------


def test_newest_first_and_json_round_trip(tmp_path: Path, finished: Path) -> None:
    root = tmp_path / "runs"
    names = ["b-middle", "a-newest", "c-oldest"]
    for age, name in zip((200, 100, 300), names, strict=True):
        run = copy(finished, root / "group" / name if name == "c-oldest" else root / name)
        for f in ("last.json", "metrics.jsonl"):
            stamp = time.time() - age
            os.utime(run / f, (stamp, stamp))
    (root / ".hidden").mkdir()
    (root / "not-a-run").mkdir()
    found = list_runs(root)
    assert [Path(r.path).name for r in found] == ["a-newest", "b-middle", "c-oldest"]
    text = invoke("runs", root).stdout.splitlines()
    assert text[0].split()[:3] == ["RUN", "CORPUS", "MODEL"]
    assert [line.split()[0] for line in text[1:]] == ["a-newest", "b-middle", "group/c-oldest"]
    assert all("finished" in line and "lstm 1x8" in line for line in text[1:])
    listed = json.loads(invoke("runs", root, "--json").stdout)
    assert listed == [dataclasses.asdict(r) for r in found]
    assert [RunInfo(**item) for item in listed] == found


def test_default_dir_is_runs(tmp_path: Path, finished: Path, monkeypatch) -> None:
    copy(finished, tmp_path / "runs" / "dinosaurs")
    monkeypatch.chdir(tmp_path)
    assert "dinosaurs" in invoke("runs").stdout


def test_one_run_lists_its_checkpoints(finished: Path) -> None:
    found = run_checkpoints(finished)
    assert [(c.name, c.step) for c in found] == [
        ("best", 8),
        ("last", 8),
        ("step-00000006", 6),
        ("step-00000008", 8),
    ]
    records = [json.loads(line) for line in (finished / "metrics.jsonl").read_text().splitlines()]
    val = {r["step"]: r["val_loss"] for r in records if "val_loss" in r}
    assert [c.val_loss for c in found] == [val[8], val[8], None, val[8]]
    result = invoke("runs", finished)
    assert "finished" in result.stdout.splitlines()[0]
    assert [line.split()[0] for line in result.stdout.splitlines()[2:]] == [
        "best",
        "last",
        "step-00000006",
        "step-00000008",
    ]
    as_json = json.loads(invoke("runs", finished, "--json").stdout)
    assert as_json == [dataclasses.asdict(c) for c in found]


@pytest.mark.parametrize(
    ("make", "words"),
    [
        (lambda p: p / "missing", "no directory"),
        (lambda p: (p / "file.txt").write_text("x") and p / "file.txt", "is a file"),
        (lambda p: (p / "empty").mkdir() or p / "empty", "no runs under"),
    ],
)
def test_errors_are_one_line(tmp_path: Path, make: Any, words: str) -> None:
    result = CliRunner().invoke(cli, ["runs", str(make(tmp_path))])
    line = assert_one_line_error(result.stderr, result.exit_code)
    assert words in line, line


def test_help_has_an_example() -> None:
    for command in (["runs"], ["plot"]):
        text = invoke(*command, "--help").stdout
        assert "Example:" in text and f"charlm {command[0]} " in text


# --- plot of several runs ----------------------------------------------------------------------


def _hide_matplotlib(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [m for m in sys.modules if m.startswith("matplotlib.")] + ["matplotlib"]:
        monkeypatch.setitem(sys.modules, name, None)


def _metrics(run: Path, scale: float) -> Path:
    run.mkdir(parents=True)
    lines = [json.dumps({"step": s, "train_loss": scale * (4 - s / 100),
                         **({"val_loss": scale * (4.2 - s / 100)} if s % 50 == 0 else {})})
             for s in range(10, 201, 10)]  # fmt: skip
    (run / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    return run


def test_plot_two_runs_as_text(tmp_path: Path, monkeypatch) -> None:
    _hide_matplotlib(monkeypatch)
    a, b = _metrics(tmp_path / "runs" / "a", 1.0), _metrics(tmp_path / "runs" / "b", 0.5)
    out = invoke("plot", a, b).stdout
    rows = [line.split("|", 1)[1] for line in out.splitlines() if "|" in line]
    assert len(rows) == 15
    chart = "".join(rows)
    for mark in "aAbB":
        assert mark in chart, mark
    assert rows[0][0] == "a"  # run a's first training loss is the highest (top left)
    assert rows[-1].rstrip()[-1] in "bB"  # run b's last the lowest (bottom right)
    assert f"a A  {a} (20 train / 4 val points)" in out
    assert f"b B  {b} (20 train / 4 val points)" in out
    single = invoke("plot", a).stdout  # one run: the chart as before
    assert ". train (20 points)  o val (4 points)" in single


def test_plot_two_runs_as_images(tmp_path: Path, monkeypatch) -> None:
    matplotlib = pytest.importorskip("matplotlib")
    monkeypatch.setitem(matplotlib.rcParams, "svg.fonttype", "none")  # text stays text
    a, b = _metrics(tmp_path / "runs" / "a", 1.0), _metrics(tmp_path / "runs" / "b", 0.5)
    svg = tmp_path / "compare.svg"
    assert invoke("plot", a, b, "-o", svg).stdout == f"saved {svg}\n"
    text = svg.read_text("utf-8")
    for label in (f"{a} train", f"{a} validation", f"{b} train", f"{b} validation"):
        assert label in text, label
    result = invoke("plot", a, b)  # default: beside the runs
    target = (tmp_path / "runs" / "loss.png").resolve()
    assert result.stdout == f"saved {target}\n"
    assert target.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    bad = CliRunner().invoke(cli, ["plot", str(a), str(tmp_path / "missing")])
    assert "not found" in assert_one_line_error(bad.stderr, bad.exit_code)
