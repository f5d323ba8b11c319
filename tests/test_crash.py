"""Crashes and signals against a real `python -m charlm train` process.

SIGKILL at random moments -- some aimed at the instant a checkpoint temp file appears, so the
kill lands mid-write -- must always leave a loadable `last.json` whose step matches its npz,
and `--resume` must continue from exactly that step. SIGTERM / SIGINT stop cleanly (exit
143 / 130, a one-line resume hint, a checkpoint at the reported step) and the resumed run is
bit-identical to an uninterrupted one; a second signal aborts without corrupting anything.

Random delays come from a seed printed on failure; set CHARLM_KILL_SEED to replay a run.
"""

from __future__ import annotations

import json
import os
import random
import re
import shlex
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from _cli_contract import (
    CONFIGS,
    DATA,
    assert_same_run,
    charlm_cmd,
    stderr_lines,
    subprocess_env,
    temp_files,
)
from click.testing import CliRunner

from charlm.checkpoint import load_checkpoint
from charlm.cli import cli

SHAKESPEARE = DATA / "tinyshakespeare.txt"
SEED = int(os.environ.get("CHARLM_KILL_SEED", random.SystemRandom().randrange(1 << 30)))


def start(run: Path, *extra: str, resume: bool = False) -> subprocess.Popen:
    """`charlm train` on Tiny Shakespeare in the background (stderr to run/../NAME.err)."""
    if resume:
        args = ["--resume", "--run-dir", run, *extra]
    else:
        args = ["--config", CONFIGS / "tiny.yaml", "--set", "data.val_fraction=0.01",
                "--set", "train.log_every=1", "--run-dir", run, *extra]  # fmt: skip
    err = open(run.parent / f"{run.name}.err", "w")  # noqa: SIM115 - closed by finish()
    proc = subprocess.Popen(
        charlm_cmd("train", SHAKESPEARE, *args),
        stdout=subprocess.DEVNULL,
        stderr=err,
        env=subprocess_env(),
    )
    proc.err_file = err  # type: ignore[attr-defined]
    return proc


def finish(proc: subprocess.Popen, timeout: float = 60) -> tuple[int, str]:
    """Wait for `proc`; (exit status, its stderr)."""
    try:
        rc = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise
    err = proc.err_file  # type: ignore[attr-defined]
    err.close()
    return rc, Path(err.name).read_text("utf-8", errors="replace")


def wait_for(what: Callable[[], Any], timeout: float, poll: float = 0.005) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = what()
        if found:
            return found
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout}s waiting for {what.__doc__ or what}")


def committed_step(run: Path) -> int:
    """The step of `run`'s last.json, checked against the npz it names."""
    ckpt = load_checkpoint(run / "last.json")  # never corrupt, whatever moment the kill hit
    meta = json.loads((run / "last.json").read_text("utf-8"))
    assert meta["arrays"] == f"last-{ckpt.step:08d}.npz", (meta["arrays"], ckpt.step)
    assert (run / meta["arrays"]).is_file()
    assert all(np.isfinite(p).all() for p in ckpt.params.values())
    return ckpt.step


def metrics_steps(run: Path) -> list[int]:
    """The steps of the training records (a resume adds an event record at its step)."""
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text("utf-8").splitlines()]
    return [r["step"] for r in records if "event" not in r]


def resume_and_check(run: Path, step: int, extra_steps: int = 3) -> None:
    """--resume continues from exactly `step` and finishes at step + extra_steps."""
    proc = start(run, "--set", f"train.max_steps={step + extra_steps}", resume=True)
    rc, err = finish(proc, timeout=120)
    assert rc == 0, err
    assert "Traceback" not in err
    assert f"resuming at step {step}" in err, err[-500:]
    assert committed_step(run) == step + extra_steps
    steps = metrics_steps(run)
    assert steps == sorted(set(steps)), "duplicate or out-of-order metrics after the resume"
    assert steps[-extra_steps:] == list(range(step + 1, step + extra_steps + 1))
    meta = json.loads((run / "last.json").read_text("utf-8"))
    left = {p.name for p in run.glob("last-*.npz")}
    assert left == {meta["arrays"]}, f"orphaned checkpoint arrays left: {left}"


# --- SIGKILL -----------------------------------------------------------------------------------

KILL_MODES = ["delay", "npz-temp", "delay", "json-temp", "delay", "npz-temp", "delay", "npz-temp"]
TEMP_PATTERNS = {"npz-temp": re.compile(r"^\.last-\d{8}\.npz\..*\.tmp$"),
                 "json-temp": re.compile(r"^\.last\.json\..*\.tmp$")}  # fmt: skip


@pytest.mark.slow
def test_sigkill_at_random_moments_never_corrupts(tmp_path: Path) -> None:
    rng = random.Random(SEED)
    landed_mid_write = 0
    for i, mode in enumerate(KILL_MODES):
        run = tmp_path / f"run{i}"
        # hidden 256: each checkpoint is ~4 MB, so about half the wall time is spent saving.
        proc = start(run, "--set", "train.checkpoint_every=1", "--set", "train.max_steps=100000",
                     "--set", "model.hidden_size=256", "--set", "train.eval_every=7",
                     "--quiet")  # fmt: skip
        try:
            wait_for(lambda run=run: (run / "last.json").exists(), timeout=60)
            if mode == "delay":
                time.sleep(rng.uniform(0.0, 1.0))
            else:
                pattern = TEMP_PATTERNS[mode]
                rng_skip = rng.randrange(4)  # not always the first save after start-up

                def writing(run: Path = run, pattern: re.Pattern = pattern) -> bool:
                    return any(pattern.match(name) for name in os.listdir(run))

                for _ in range(rng_skip + 1):
                    wait_for(lambda: not writing(), timeout=30, poll=0.0005)
                    wait_for(writing, timeout=30, poll=0.0002)
        finally:
            proc.send_signal(signal.SIGKILL)
            rc, err = finish(proc)
        context = f"iteration {i} ({mode}), CHARLM_KILL_SEED={SEED}"
        assert rc == -signal.SIGKILL, f"{context}: exited {rc} before the kill: {err}"
        landed_mid_write += bool(temp_files(run))
        step = committed_step(run)
        assert step >= 1, context
        resume_and_check(run, step)
    print(f"\n{len(KILL_MODES)} SIGKILLs, {landed_mid_write} landed mid-write (temp file left)")
    assert landed_mid_write >= 1, "no kill landed during a checkpoint write; the test is blunt"


# --- SIGTERM / SIGINT --------------------------------------------------------------------------

INTERRUPTED = re.compile(
    r"^Interrupted \((SIG\w+)\) at step (\d+); saved (\S+)\. Resume with: (charlm train .+)$"
)


@pytest.mark.slow
@pytest.mark.parametrize(("sig", "status"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_sigterm_and_sigint_stop_cleanly_and_resume_exactly(
    sig: signal.Signals, status: int, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    # checkpoint_every=7: most stops land between checkpoints, so the stop itself must save.
    common = ["--set", "model.hidden_size=32", "--set", "model.dropout=0.2",
              "--set", "train.checkpoint_every=7", "--set", "train.eval_every=25"]  # fmt: skip
    proc = start(run, *common, "--set", "train.max_steps=100000", "--quiet")
    try:
        wait_for(lambda: (run / "last.json").exists(), timeout=60)
        time.sleep(random.Random(SEED + sig).uniform(0.0, 0.3))
    finally:
        proc.send_signal(sig)
        rc, err = finish(proc)
    assert rc == status, f"exit {rc}: {err}"
    assert "Traceback" not in err
    lines = stderr_lines(err)
    assert len(lines) == 1, lines  # --quiet: the resume hint is all that is printed
    match = INTERRUPTED.match(lines[-1])
    assert match, lines[-1]
    assert match.group(1) == sig.name
    step = int(match.group(2))
    assert Path(match.group(3)) == run / "last.json"
    assert committed_step(run) == step
    assert temp_files(run) == []
    assert metrics_steps(run)[-1] == step

    # The printed command works as given (plus a step limit), and continues exactly.
    hint = shlex.split(match.group(4))
    assert hint[:2] == ["charlm", "train"] and "--resume" in hint
    argv = charlm_cmd(*hint[1:], "--set", f"train.max_steps={step + 5}", "--quiet")
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120, env=subprocess_env())
    assert done.returncode == 0, done.stderr
    assert committed_step(run) == step + 5

    straight = tmp_path / "straight"
    proc = start(straight, *common, "--set", f"train.max_steps={step + 5}", "--quiet")
    rc, err = finish(proc, timeout=120)
    assert rc == 0, err
    assert_same_run(straight, run)


@pytest.mark.slow
def test_second_signal_waits_for_the_save_then_aborts(tmp_path: Path) -> None:
    run = tmp_path / "run"
    big = ["--set", "model.hidden_size=512", "--quiet"]  # a ~14 MB save: a wide target
    proc = start(run, *big, "--set", "train.max_steps=2")
    assert finish(proc)[0] == 0
    before = committed_step(run)
    # No scheduled saves from here on: the only save is the one the first SIGINT asks for.
    proc = start(run, "--set", "train.max_steps=100000", "--set", "train.checkpoint_every=100000",
                 "--set", "train.eval_every=100000", "--quiet", resume=True)  # fmt: skip
    try:
        wait_for(lambda: metrics_steps(run)[-1] >= before + 2, timeout=60)
        proc.send_signal(signal.SIGINT)

        def saving() -> bool:
            return any(name.endswith(".tmp") for name in os.listdir(run))

        wait_for(saving, timeout=30, poll=0.0002)
    finally:
        proc.send_signal(signal.SIGINT)  # the user presses Ctrl-C again: abort now
        rc, err = finish(proc)
    assert rc == 1, f"exit {rc}: {err}"
    lines = stderr_lines(err)
    assert lines == [f"Error: aborted; the last checkpoint in {run} is kept"], lines
    # The second Ctrl-C lets the save the first one asked for finish, then aborts: the work up
    # to the stop is kept, complete, and nothing half-written is left behind.
    after = committed_step(run)
    assert after >= before + 2, "the save the first Ctrl-C asked for was cut short"
    assert temp_files(run) == []
    resume_and_check(run, after)


# --- leftovers of a crash ----------------------------------------------------------------------


def test_resume_clears_temp_files_left_by_a_crash(tmp_path: Path) -> None:
    run = tmp_path / "run"
    args = ["--set", "model.hidden_size=8", "--set", "train.batch_size=2",
            "--set", "train.seq_len=4", "--quiet", "--run-dir", str(run)]  # fmt: skip
    corpus = str(DATA / "dinosaurs.txt")
    first = CliRunner().invoke(cli, ["train", corpus, *args, "--set", "train.max_steps=2"])
    assert first.exit_code == 0, first.output
    # What a SIGKILL mid-save leaves behind (file names as fileio.write_atomic makes them).
    (run / ".last-00000003.npz.k1ll3d0n.tmp").write_bytes(b"PK\x03\x04" + b"\0" * 4096)
    (run / ".last.json.k1ll3d0n.tmp").write_text('{"format": "charlm-checkpoint", "ver')
    resumed = CliRunner().invoke(cli, ["train", corpus, "--resume", *args[-3:],
                                       "--set", "train.max_steps=4"])  # fmt: skip
    assert resumed.exit_code == 0, resumed.output
    assert committed_step(run) == 4
    assert temp_files(run) == []


def test_interrupt_as_temp_file_is_created_leaves_nothing(tmp_path: Path, monkeypatch) -> None:
    from charlm import fileio  # noqa: PLC0415

    real_open = os.open

    def open_then_signal(*args: Any, **kwargs: Any) -> int:
        real_open(*args, **kwargs)
        raise KeyboardInterrupt  # the handler runs at the first bytecode after open() returns

    monkeypatch.setattr(fileio.os, "open", open_then_signal)
    with pytest.raises(KeyboardInterrupt):
        fileio.write_atomic(tmp_path / "last-00000005.npz", b"data")
    monkeypatch.undo()
    assert temp_files(tmp_path) == []
