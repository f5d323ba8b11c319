"""Resume, fine-tune and the run directory: what may change on --resume, the corpus a run
recorded, limits already reached, one writer at a time, and runs that end early."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from _cli_contract import DATA, TINY, assert_one_line_error, charlm_cmd, stderr_lines
from _cli_contract import subprocess_env as cli_env
from click.testing import CliRunner

from charlm.checkpoint import load_checkpoint
from charlm.cli import ProgressReporter, cli
from charlm.config import load_config
from charlm.runlock import RunLock
from charlm.train import Trainer

DINOS = DATA / "dinosaurs.txt"


def invoke(*args: Any) -> Any:
    return CliRunner().invoke(cli, [str(a) for a in args])


def records(run: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text("utf-8").splitlines()]


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    path = tmp_path / "corpus.txt"
    shutil.copy(DINOS, path)
    return path


@pytest.fixture
def run(tmp_path: Path, corpus: Path) -> Path:
    """A finished 2-step run (TINY) of a 2x8 LSTM on the copied corpus."""
    run = tmp_path / "run"
    result = invoke("train", corpus, *TINY, "--run-dir", run)
    assert result.exit_code == 0, result.output
    return run


def resume(run: Path, *args: Any) -> Any:
    return invoke("train", "--resume", "--run-dir", run, "--quiet", *args)


# --- what may change on resume ------------------------------------------------------------------


@pytest.mark.parametrize(
    "override",
    [
        "model.hidden_size=16",
        "model.cell=gru",
        "model.num_layers=3",
        "data.mode=lines",
        "train.batch_size=3",
        "train.seq_len=5",
        "train.optimizer=sgd",
    ],
)
def test_what_the_checkpoint_was_made_with_cannot_change_on_resume(run: Path, override: str):
    before = (run / "last.json").read_bytes(), (run / "config.yaml").read_bytes()
    result = resume(run, "--set", "train.max_steps=4", "--set", override)
    error = assert_one_line_error(result.stderr, result.exit_code)
    key = override.split("=")[0]
    assert f"{key} cannot change on resume" in error and "--init-from" in error
    assert ((run / "last.json").read_bytes(), (run / "config.yaml").read_bytes()) == before


def test_overrides_on_resume_are_recorded(run: Path):
    result = resume(run, "--set", "train.max_steps=4", "--set", "train.lr=0.01")
    assert result.exit_code == 0, result.output
    saved = yaml.safe_load((run / "config.yaml").read_text("utf-8"))
    assert saved["train"]["lr"] == 0.01 and saved["train"]["max_steps"] == 4
    assert load_checkpoint(run / "last.json").config.train.lr == 0.01
    (event,) = [r for r in records(run) if "event" in r]
    assert event == {
        "step": 2,
        "event": "resume",
        "changed": {"train.max_steps": [2, 4], "train.lr": [0.002, 0.01]},
    }


def test_init_from_trains_and_reports_the_checkpoints_model(tmp_path: Path, run: Path):
    result = invoke(
        "train",
        DINOS,
        "--init-from",
        run / "last.json",
        "--set",
        "train.max_steps=1",
        "--run-dir",
        tmp_path / "tuned",
    )
    assert result.exit_code == 0, result.output
    assert result.stderr.splitlines()[0].startswith("lstm 2x8, ")  # not the default 2x256
    assert "its model (lstm 2x8) is kept" in result.stderr
    assert load_checkpoint(tmp_path / "tuned" / "last.json").config.model.hidden_size == 8


# --- the corpus a run recorded ------------------------------------------------------------------


def test_resume_without_corpus_uses_the_recorded_one(run: Path, corpus: Path):
    meta = load_checkpoint(run / "last.json").meta
    assert meta["corpus"] == str(corpus.resolve()) and meta["corpus_size"] == corpus.stat().st_size
    result = resume(run, "--set", "train.max_steps=4")
    assert result.exit_code == 0, result.output
    assert load_checkpoint(run / "last.json").step == 4


def test_a_changed_corpus_is_refused_unless_allowed(run: Path, corpus: Path, tmp_path: Path):
    copy = tmp_path / "same.txt"
    shutil.copy(corpus, copy)  # the same text under another name is the same corpus
    assert (
        invoke(
            "train", copy, "--resume", "--run-dir", run, "--quiet", "--set", "train.max_steps=3"
        ).exit_code
        == 0
    )
    assert load_checkpoint(run / "last.json").meta["corpus"] == str(copy.resolve())
    copy.write_text(copy.read_text("utf-8") + "zebrasaurus\n", "utf-8")  # the recorded one
    result = resume(run, "--set", "train.max_steps=4")
    error = assert_one_line_error(result.stderr, result.exit_code)
    assert "corpus has changed" in error and "--allow-changed-corpus" in error
    assert load_checkpoint(run / "last.json").step == 3
    result = resume(run, "--set", "train.max_steps=4", "--allow-changed-corpus")
    assert result.exit_code == 0, result.output
    ckpt = load_checkpoint(run / "last.json")
    assert ckpt.step == 4 and ckpt.meta["corpus_size"] == copy.stat().st_size
    assert invoke("train", corpus, "--allow-changed-corpus").exit_code == 2  # only with --resume


def test_a_missing_recorded_corpus_asks_for_one(run: Path, corpus: Path):
    corpus.unlink()
    result = resume(run, "--set", "train.max_steps=4")
    assert "give CORPUS" in assert_one_line_error(result.stderr, result.exit_code)


# --- limits already reached ----------------------------------------------------------------------


def test_resuming_a_finished_run_says_how_to_go_on(run: Path):
    result = resume(run)
    error = assert_one_line_error(result.stderr, result.exit_code)
    assert "already finished: step 2 of 2" in error and "train.max_steps=STEPS" in error


@pytest.fixture
def timed_run(tmp_path: Path, corpus: Path) -> Path:
    """A run stopped by its 0.3 s time budget, never validated on the way."""
    run = tmp_path / "timed"
    limits = ["train.max_steps=0", "train.max_seconds=0.3", "train.eval_every=100000"]
    result = invoke("train", corpus, *TINY, *(f"--set={s}" for s in limits), "--run-dir", run)
    assert result.exit_code == 0, result.output
    return run


def test_resuming_a_run_out_of_time_says_how_to_go_on(timed_run: Path):
    step = load_checkpoint(timed_run / "last.json").step
    result = resume(timed_run)
    error = assert_one_line_error(result.stderr, result.exit_code)
    assert "time budget" in error and "train.max_seconds=SECONDS" in error
    result = resume(timed_run, "--set", "train.max_seconds=0", "--set",
                    f"train.max_steps={step + 2}")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert load_checkpoint(timed_run / "last.json").step == step + 2


def test_a_run_stopped_by_its_time_budget_is_validated(timed_run: Path):
    last = records(timed_run)[-1]
    ckpt = load_checkpoint(timed_run / "last.json")
    assert last["step"] == ckpt.step and np.isfinite(last["val_loss"])
    assert load_checkpoint(timed_run / "best.json").step == ckpt.step
    assert ckpt.meta["best_val_loss"] == last["val_loss"]


def test_the_progress_bar_ends_where_the_time_budget_runs_out():
    reporter = ProgressReporter(quiet=True, max_seconds=100.0)
    reporter.total = 10_000
    assert reporter.projected_total({"step": 10, "elapsed_s": 1.0}) == 10_000  # no pace yet
    # 10 steps/s from the first record on, 59 s left: 590 more steps
    assert reporter.projected_total({"step": 410, "elapsed_s": 41.0}) == 1000
    reporter.total = 500
    assert reporter.projected_total({"step": 410, "elapsed_s": 41.0}) == 500  # the step limit
    assert ProgressReporter(quiet=True).projected_total({"step": 1, "elapsed_s": 9.0}) is None


# --- one writer at a time -----------------------------------------------------------------------


def test_a_second_writer_is_refused_naming_the_first(run: Path, corpus: Path):
    holder = RunLock(run).acquire()
    try:
        for args in (
            ["train", "--resume", "--run-dir", run, "--set", "train.max_steps=4"],
            ["train", corpus, *TINY, "--run-dir", run, "--overwrite"],
        ):
            before = sorted(p.name for p in run.iterdir())
            result = invoke(*args)
            error = assert_one_line_error(result.stderr, result.exit_code)
            assert f"in use by another charlm process (PID {os.getpid()})" in error
            assert sorted(p.name for p in run.iterdir()) == before
        assert load_checkpoint(run / "last.json").step == 2
    finally:
        holder.release()
    assert resume(run, "--set", "train.max_steps=3").exit_code == 0  # released: free again


def test_the_lock_dies_with_its_process(run: Path):
    code = (
        "import sys, time; from charlm.runlock import RunLock; "
        f"lock = RunLock({str(run)!r}).acquire(); print('locked', flush=True); time.sleep(60)"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=cli_env()
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
        result = resume(run, "--set", "train.max_steps=3")
        assert f"PID {proc.pid}" in assert_one_line_error(result.stderr, result.exit_code)
    finally:
        proc.kill()
        proc.wait()
    assert resume(run, "--set", "train.max_steps=3").exit_code == 0


def test_two_training_processes_on_one_run(tmp_path: Path, corpus: Path):
    """Real processes: the second one exits at once with the first one's PID."""
    run = tmp_path / "run"
    args = [
        corpus,
        *TINY[:-1],
        "--set",
        "train.max_steps=0",
        "--set",
        "train.max_seconds=30",
        "--run-dir",
        run,
    ]
    first = subprocess.Popen(
        charlm_cmd("train", *args),
        env=cli_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = 30
        while not (run / "last.json").exists() and deadline > 0:
            subprocess.run(["sleep", "0.1"], check=True)
            deadline -= 0.1
        second = subprocess.run(
            charlm_cmd("train", "--resume", "--run-dir", run),
            env=cli_env(),
            capture_output=True,
            text=True,
            timeout=60,
        )
        error = assert_one_line_error(second.stderr, second.returncode)
        assert f"PID {first.pid}" in error
    finally:
        first.terminate()
        first.wait(timeout=60)
    assert len([r for r in records(run) if "event" in r]) == 0  # never written by the second


# --- runs that end early ------------------------------------------------------------------------


def test_a_finite_but_huge_loss_is_divergence(tmp_path: Path, corpus: Path):
    run = tmp_path / "run"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # not one NumPy RuntimeWarning on the way
        result = invoke(
            "train",
            corpus,
            *TINY,
            "--set",
            "train.lr=1e30",
            "--set",
            "train.clip=0",
            "--set",
            "train.max_steps=20",
            "--run-dir",
            run,
        )
    error = assert_one_line_error(result.stderr, result.exit_code)
    assert "training diverged" in error and "a new run will replace this one" in error
    assert "RuntimeWarning" not in result.output
    # Nothing to resume, and a new run in the same place needs no --overwrite.
    result = resume(run)
    assert "stopped before its first checkpoint" in assert_one_line_error(
        result.stderr, result.exit_code
    )
    result = invoke("train", corpus, *TINY[:-1], "--run-dir", run)
    assert result.exit_code == 0, result.output
    assert "replacing the files of a run" in result.stderr
    assert load_checkpoint(run / "last.json").step == 2


def test_a_directory_with_other_files_is_still_protected(tmp_path: Path, corpus: Path):
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "config.yaml").write_text("something: else\n", "utf-8")
    result = invoke("train", corpus, *TINY, "--run-dir", folder)
    assert "already holds a run" in assert_one_line_error(result.stderr, result.exit_code)
    assert (folder / "config.yaml").read_text("utf-8") == "something: else\n"


@pytest.mark.parametrize("content", [b"\0" * 5000, b"PK\x03\x04\0\0\0\0" * 300 + b"text" * 10])
def test_a_binary_file_is_not_a_corpus(tmp_path: Path, content: bytes):
    path = tmp_path / "blob.bin"
    path.write_bytes(content)
    result = invoke("train", path, *TINY, "--run-dir", tmp_path / "run")
    assert "looks like a binary file" in assert_one_line_error(result.stderr, result.exit_code)
    assert not (tmp_path / "run").exists()


# --- lines mode: a random split, no blank lines -------------------------------------------------


def test_lines_validate_on_random_lines_seeded_and_recorded(tmp_path: Path):
    words = tmp_path / "words.txt"
    words.write_text("".join(f"{a}{b}word\n" for a in "abcdefghij" for b in "abcdefghij"), "utf-8")
    config = load_config(
        None, ["data.mode=lines", "train.batch_size=2", "train.seq_len=4", "data.val_fraction=0.2"]
    )
    trainer = Trainer.create(str(words), config, tmp_path / "run")
    trainer.close()
    vocab = trainer.corpus.vocab
    val_lines = vocab.decode(trainer.corpus.val_ids).split("<EOS>")[1:-1]
    train_lines = vocab.decode(trainer.corpus.train_ids).split("<EOS>")[1:-1]
    assert len(val_lines) == 20 and len(train_lines) == 80
    assert sorted(val_lines + train_lines) == sorted(
        f"{a}{b}word" for a in "abcdefghij" for b in "abcdefghij"
    )
    assert {w[0] for w in val_lines} != {"j"}  # not the alphabetical tail
    assert val_lines == sorted(val_lines) and train_lines == sorted(train_lines)  # file order
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text("utf-8"))["data"]
    assert (saved["val_split"], saved["split_seed"]) == ("auto", 0)
    again = Trainer.create(str(words), config, tmp_path / "again")
    again.close()
    assert np.array_equal(again.corpus.val_ids, trainer.corpus.val_ids)
    tail = load_config(
        None,
        [
            "data.mode=lines",
            "data.val_split=tail",
            "data.val_fraction=0.2",
            "train.batch_size=2",
            "train.seq_len=4",
        ],
    )
    by_tail = Trainer.create(str(words), tail, tmp_path / "tail")
    by_tail.close()
    assert vocab.decode(by_tail.corpus.val_ids).lstrip("<EOS>").startswith("i")


def test_blank_lines_are_no_examples(tmp_path: Path):
    names = tmp_path / "names.txt"
    names.write_text("anna\n\nbob\n   \ncarla\n\n\n" * 40, "utf-8")
    config = load_config(None, ["data.mode=lines", "train.batch_size=2", "train.seq_len=4"])
    trainer = Trainer.create(str(names), config, tmp_path / "run")
    trainer.close()
    eos = trainer.corpus.vocab.eos_id
    for ids in (trainer.corpus.train_ids, trainer.corpus.val_ids):
        ends = ids == eos
        assert not (ends[1:] & ends[:-1]).any()  # no <EOS> <EOS>: no empty example
    assert (
        int(np.count_nonzero(trainer.corpus.train_ids == eos))
        + int(np.count_nonzero(trainer.corpus.val_ids == eos))
        == 120 + 2
    )  # three names 40 times, plus each part's start


# --- eval defaults --------------------------------------------------------------------------------


def test_eval_limit_in_lines_mode_counts_what_is_predicted(tmp_path: Path):
    run = tmp_path / "run"
    assert (
        invoke("train", DINOS, *TINY, "--set", "data.mode=lines", "--run-dir", run).exit_code == 0
    )
    for limit in (1, 7, 100, 1000):
        result = invoke("eval", DINOS, "--run", run, "--limit", limit, "--json")
        assert result.exit_code == 0, result.output
        assert 1 <= json.loads(result.stdout)["chars"] <= max(limit, 2)
    shown = invoke("eval", DINOS, "--run", run, "--limit", 100, "--show")
    assert shown.exit_code == 0, shown.output


def test_eval_reads_32_streams_by_default_and_one_with_show(tmp_path: Path):
    run = tmp_path / "run"
    assert invoke("train", DINOS, *TINY, "--run-dir", run).exit_code == 0
    text = tmp_path / "text.txt"
    text.write_text(DINOS.read_text("utf-8")[:3000], "utf-8")
    default = json.loads(invoke("eval", text, "--run", run, "--json").stdout)
    batched = json.loads(invoke("eval", text, "--run", run, "--json", "--batch-size", 32).stdout)
    single = json.loads(invoke("eval", text, "--run", run, "--json", "--batch-size", 1).stdout)
    assert default == batched and default["chars"] < single["chars"] == 2999
    result = invoke("eval", text, "--run", run, "--show", "--batch-size", 4)
    assert_one_line_error(result.stderr, result.exit_code)
    assert invoke("eval", text, "--run", run, "--show").exit_code == 0


def test_stderr_of_a_resume_names_the_changes(run: Path):
    result = invoke("train", "--resume", "--run-dir", run, "--set", "train.max_steps=3")
    assert result.exit_code == 0, result.output
    assert any(
        "resuming with train.max_steps 2 -> 3" in line for line in stderr_lines(result.stderr)
    )


def test_a_split_that_leaves_too_little_to_train_on_says_so(tmp_path: Path):
    result = invoke("train", DINOS, "--set", "data.val_fraction=0.99999", "--run-dir", tmp_path)
    error = assert_one_line_error(result.stderr, result.exit_code)
    assert "data.val_fraction (now 0.99999" in error and "train.batch_size" in error
