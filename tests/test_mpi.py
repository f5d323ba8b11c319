"""Data-parallel training under `mpiexec -n 2` (charlm.distributed): two processes with half
the batch each equal one with the whole batch, only rank 0 writes, resumes continue exactly
(re-sharded on another number of processes), and a rank that dies or fails alone ends the
job within seconds with the last checkpoint intact.

The MPI cases start real `mpiexec` processes (the `mpich` wheel's, from charlm[mpi]); they
skip, saying why, without mpi4py or an mpiexec.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from _cli_contract import DATA, REPO

from charlm.checkpoint import load_checkpoint
from charlm.data import Batch
from charlm.distributed import THREAD_VARS, ShardedUniforms, World
from charlm.errors import CharlmError

WORKER = REPO / "tests" / "_mpi_worker.py"
CORPUS = DATA / "dinosaurs.txt"
# A 2-layer LSTM in float64 without dropout, clipped hard (every step's norm is above 0.05),
# with random restarts (sharded like the rows); 5 Adam steps, validated and saved at the end.
EXACT = ["model.cell=lstm", "model.hidden_size=16", "model.num_layers=2", "model.dropout=0",
         "train.batch_size=8", "train.seq_len=8", "train.max_steps=5", "train.dtype=float64",
         "train.kernels=numpy", "train.optimizer=adam", "train.clip=0.05", "train.lr=0.01",
         "train.restart_prob=0.3", "train.log_every=1", "train.eval_every=5",
         "train.checkpoint_every=5", "train.sample_every=0"]  # fmt: skip


def find_mpiexec() -> str | None:
    beside = Path(sys.executable).parent / "mpiexec"  # the mpich wheel's, in this venv
    return str(beside) if beside.exists() else shutil.which("mpiexec")


def mpi_missing() -> str:
    try:
        import mpi4py  # noqa: F401, PLC0415
    except ImportError:
        return "mpi4py is not installed (pip install 'charlm[mpi]')"
    return "" if find_mpiexec() else "no mpiexec (pip install 'charlm[mpi]')"


needs_mpi = pytest.mark.skipif(bool(mpi_missing()), reason=mpi_missing() or "-")


def env() -> dict[str, str]:
    # One BLAS thread per process: two processes share the CI's two cores.
    return {**os.environ, "PYTHONPATH": str(REPO), "OPENBLAS_NUM_THREADS": "1",
            "OMP_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1"}  # fmt: skip


def train_args(run: Path, settings: list[str], *extra: str) -> list[str]:
    sets = [a for s in settings for a in ("--set", s)]
    return ["train", str(CORPUS), "--run-dir", str(run), "--quiet", *sets, *extra]


def launch(n: int, out: Path, mode: str, args: list[str]) -> list[str]:
    """The command running the worker in `n` processes (n 0: alone, not under mpiexec)."""
    out.mkdir(parents=True, exist_ok=True)
    worker = [sys.executable, str(WORKER), str(out), mode, "--", *args]
    return worker if n == 0 else [find_mpiexec() or "mpiexec", "-n", str(n), *worker]


def run_worker(n: int, out: Path, mode: str, args: list[str], timeout: float = 120) -> Any:
    return subprocess.run(launch(n, out, mode, args), env=env(), capture_output=True, text=True,
                          timeout=timeout, check=False)  # fmt: skip


def metrics(run: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


# --- the parts a single process can check -------------------------------------------------------


class Rank(World):
    """Rank `rank` of `size`, without MPI (for the functions that need no communication)."""

    def __init__(self, rank: int, size: int) -> None:
        self.rank, self.size = rank, size


@pytest.mark.parametrize(("n", "size"), [(8, 2), (7, 2), (5, 3), (2, 4), (64, 8)])
def test_rows_cover_every_row_once_in_order(n: int, size: int) -> None:
    taken = [i for r in range(size) for i in range(n)[Rank(r, size).rows(n)]]
    assert taken == list(range(n))


def test_batch_size_must_split_evenly() -> None:
    assert Rank(1, 4).local_batch_size(64) == 16
    with pytest.raises(CharlmError, match="multiple of 3"):
        Rank(0, 3).local_batch_size(64)


def test_shards_of_a_batch_make_it_up() -> None:
    rng = np.random.default_rng(0)
    batch = Batch(rng.integers(0, 9, (6, 4)), rng.integers(0, 9, (6, 4)), rng.random((6, 4)) > 0.5,
                  rng.random(6) > 0.5, rng.random((6, 4)) > 0.5)  # fmt: skip
    parts = [Rank(r, 3).shard(batch) for r in range(3)]
    for field in ("x", "y", "resets", "restarts", "scored"):
        joined = np.concatenate([getattr(p, field) for p in parts])
        np.testing.assert_array_equal(joined, getattr(batch, field))


def test_dropout_uniforms_are_the_whole_batchs_columns() -> None:
    whole = np.random.default_rng(3).random((2, 5, 6))
    parts = [ShardedUniforms(np.random.default_rng(3), Rank(r, 2)).random((2, 5, 3))
             for r in range(2)]  # fmt: skip
    np.testing.assert_array_equal(np.concatenate(parts, axis=-1), whole)


def test_evaluation_shares_add_up_to_the_whole_pass() -> None:
    from _models import LINES_TEXT, trained_lines  # noqa: PLC0415

    from charlm.data import encode_text  # noqa: PLC0415
    from charlm.evaluate import evaluate_ids  # noqa: PLC0415

    ckpt = trained_lines()
    model, ids, eos = ckpt.model(), encode_text(LINES_TEXT, ckpt.vocab), ckpt.vocab.eos_id
    whole = evaluate_ids(model, ckpt.params, ids, 5, 16, eos)
    parts = [evaluate_ids(model, ckpt.params, ids, 5, 16, eos, shard=Rank(r, 2).shard)
             for r in range(2)]  # fmt: skip
    assert sum(p.chars for p in parts) == whole.chars
    assert sum(p.loss_sum for p in parts) / whole.chars == pytest.approx(whole.loss, rel=1e-6)
    assert 0 < parts[1].chars < whole.chars


def test_a_world_of_one_changes_nothing() -> None:
    one = World()
    values = np.array([1.5, 2.0])
    assert one.master and one.allreduce(values) is values and one.average(values) is values
    assert one.agree(3.0, 2) == (3.0, 2)
    assert one.resharding_note(1, 64) == ""
    assert "re-sharded" in one.resharding_note(2, 64)


# --- under mpiexec -n 2 -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def one_and_two(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """EXACT trained by one process and by two (each with half of the 8 streams)."""
    if mpi_missing():
        pytest.skip(mpi_missing())
    base = tmp_path_factory.mktemp("mpi")
    for name, n in (("one", 0), ("two", 2)):
        done = run_worker(n, base / f"{name}-out", "record", train_args(base / name, EXACT))
        assert done.returncode == 0, done.stderr
    return {"base": base}


@needs_mpi
def test_two_processes_with_half_the_batch_equal_one_with_all_of_it(
    one_and_two: dict[str, Path],
) -> None:
    base = one_and_two["base"]
    one, two = np.load(base / "one-out/params-0.npy"), np.load(base / "two-out/params-0.npy")
    assert one.dtype == np.float64
    assert np.abs(one - two).max() <= 1e-10
    # every rank applied the same update: the parameters are identical, bit for bit
    np.testing.assert_array_equal(two, np.load(base / "two-out/params-1.npy"))
    a, b = metrics(base / "one"), metrics(base / "two")
    assert [r["step"] for r in a] == [r["step"] for r in b] == [1, 2, 3, 4, 5]
    assert all(r["grad_norm"] > 0.05 for r in a)  # clipping was at work on every step
    for ra, rb in zip(a, b, strict=True):
        assert rb["train_loss"] == pytest.approx(ra["train_loss"], rel=1e-12, abs=0)
        assert rb["grad_norm"] == pytest.approx(ra["grad_norm"], rel=1e-10, abs=0)
    assert b[-1]["val_loss"] == pytest.approx(a[-1]["val_loss"], rel=1e-12, abs=0)
    # the checkpoint holds the whole batch's carried state, gathered from both ranks
    ca, cb = load_checkpoint(base / "one/last.json"), load_checkpoint(base / "two/last.json")
    assert cb.meta["world_size"] == 2 and ca.meta["world_size"] == 1
    for name, state in ca.hidden.items():
        assert state.shape == cb.hidden[name].shape == (16, 8)
        assert np.abs(state - cb.hidden[name]).max() <= 1e-10


@needs_mpi
def test_with_dropout_too_two_processes_draw_the_masks_of_one(
    tmp_path: Path, one_and_two: dict[str, Path]
) -> None:
    dropped = [*EXACT, "model.dropout=0.3", "train.max_steps=3", "train.eval_every=3"]
    for name, n in (("one", 0), ("two", 2)):
        done = run_worker(
            n, tmp_path / name, "record", train_args(tmp_path / f"{name}-run", dropped)
        )
        assert done.returncode == 0, done.stderr
    one, two = np.load(tmp_path / "one/params-0.npy"), np.load(tmp_path / "two/params-0.npy")
    assert np.abs(one - two).max() <= 1e-10
    # the masks were drawn: the first step's loss is not the one without dropout
    undropped = metrics(one_and_two["base"] / "one")[0]["train_loss"]
    assert metrics(tmp_path / "one-run")[0]["train_loss"] != undropped


@needs_mpi
def test_only_rank_0_writes(one_and_two: dict[str, Path]) -> None:
    out = one_and_two["base"] / "two-out"
    written = json.loads((out / "writes-0.json").read_text())
    assert any(w.endswith("last.json") for w in written)  # the audit sees rank 0's writes
    assert json.loads((out / "writes-1.json").read_text()) == []


@needs_mpi
def test_resume_continues_exactly_and_reshards_on_another_count(tmp_path: Path) -> None:
    longer = [*EXACT, "train.max_steps=8", "train.eval_every=4", "train.checkpoint_every=4"]
    straight = run_worker(2, tmp_path / "straight", "record", train_args(tmp_path / "s", longer))
    assert straight.returncode == 0, straight.stderr
    expected = np.load(tmp_path / "straight/params-0.npy")
    for name, n in (("same", 2), ("other", 0)):
        run = tmp_path / name
        first = run_worker(2, tmp_path / f"{name}-a", "record", train_args(run, EXACT))
        assert first.returncode == 0, first.stderr
        sets = [*(f"--set={s}" for s in ("train.max_steps=8", "train.eval_every=4",
                                           "train.checkpoint_every=4"))]  # fmt: skip
        args = ["train", "--resume", "--run-dir", str(run), *sets]
        done = run_worker(n, tmp_path / f"{name}-b", "record", args)
        assert done.returncode == 0, done.stderr
        got = np.load(tmp_path / f"{name}-b/params-0.npy")
        if n == 2:  # the same processes, the same sums: bit for bit
            np.testing.assert_array_equal(got, expected)
            assert "re-sharded" not in done.stderr
        else:
            assert np.abs(got - expected).max() <= 1e-10
            assert "saved by 2" in done.stderr and "re-sharded" in done.stderr, done.stderr


def rank_pid(run: Path, rank: int) -> int | None:
    """The pid of `rank` of the job training `run` (from /proc: its environment)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            environ = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if str(run).encode() in cmdline and f"PMI_RANK={rank}".encode() in environ:
            if b"_mpi_worker" in cmdline:
                return int(entry.name)
    return None


@needs_mpi
@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="needs /proc")
def test_a_killed_rank_ends_the_job_within_seconds_and_the_checkpoint_loads(
    tmp_path: Path,
) -> None:
    run = tmp_path / "run"
    forever = [*EXACT, "train.max_steps=0", "train.max_seconds=600", "train.checkpoint_every=3",
               "train.eval_every=1000000"]  # fmt: skip
    command = launch(2, tmp_path / "out", "plain", train_args(run, forever))
    job = subprocess.Popen(command, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           text=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while not (run / "last.json").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        pid = rank_pid(run, 1)
        assert pid is not None and (run / "last.json").exists()
        os.kill(pid, signal.SIGKILL)
        killed = time.monotonic()
        stdout, stderr = job.communicate(timeout=30)
        took = time.monotonic() - killed
    finally:
        job.kill()
    assert job.returncode != 0
    assert took < 10, f"the job took {took:.1f} s to end"
    # MPICH's mpiexec (Hydra) kills the others at once and says which process died and how
    assert "Killed (signal 9)" in stdout + stderr, stdout + stderr
    ckpt = load_checkpoint(run / "last.json")
    assert ckpt.step >= 3 and ckpt.meta["world_size"] == 2


@needs_mpi
def test_a_rank_that_fails_alone_ends_the_job_with_its_error(tmp_path: Path) -> None:
    run = tmp_path / "run"
    settings = [*EXACT, "train.max_steps=50", "train.checkpoint_every=2"]
    start = time.monotonic()
    done = run_worker(2, tmp_path / "out", "raise", train_args(run, settings), timeout=60)
    assert time.monotonic() - start < 30
    assert done.returncode != 0
    assert "Error: process 1 of 2: RuntimeError: planted failure at step 3" in done.stderr
    assert "Traceback" not in done.stderr
    assert load_checkpoint(run / "last.json").step == 2


@needs_mpi
def test_ranks_whose_parameters_drift_apart_stop_at_the_next_save(tmp_path: Path) -> None:
    run = tmp_path / "run"
    settings = [*EXACT, "train.max_steps=8", "train.checkpoint_every=2", "train.eval_every=100"]
    done = run_worker(2, tmp_path / "out", "drift", train_args(run, settings), timeout=60)
    assert done.returncode == 1
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert lines == ["Error: the 2 processes' parameters differ; the last checkpoint is kept "
                     "(is every process running the same charlm and configuration?)"]  # fmt: skip
    assert load_checkpoint(run / "last.json").step == 2


@needs_mpi
def test_a_setup_error_on_one_rank_stops_all_with_one_line(tmp_path: Path) -> None:
    """MPMD: rank 1 is given a corpus that does not exist; rank 0 says so, nobody hangs."""
    good = train_args(tmp_path / "run", EXACT)
    bad = [*good[:1], str(tmp_path / "missing.txt"), *good[2:]]
    worker = [sys.executable, str(WORKER), str(tmp_path), "plain", "--"]
    cmd = [find_mpiexec() or "mpiexec", "-n", "1", *worker, *good, ":", "-n", "1", *worker, *bad]
    done = subprocess.run(cmd, env=env(), capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 1
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: process 1 of 2: "), done.stderr
    assert "missing.txt" in lines[0]
    assert not (tmp_path / "run" / "config.yaml").exists()  # nothing was started


def test_not_launched_by_mpi_is_one_process_without_importing_mpi(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from charlm.distributed import LAUNCHER_SIZE_VARS, current_world  # noqa: PLC0415

    for name in LAUNCHER_SIZE_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setitem(sys.modules, "mpi4py", None)  # importing it would fail
    assert type(current_world()) is World


def test_launched_by_mpi_without_mpi4py_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from charlm.distributed import current_world  # noqa: PLC0415

    monkeypatch.setenv("PMI_SIZE", "2")
    monkeypatch.setitem(sys.modules, "mpi4py", None)
    with pytest.raises(
        CharlmError, match=r"2 processes, but mpi4py is not installed.*charlm\[mpi\]"
    ):
        current_world()


def test_the_scaling_page_holds_the_models_tables() -> None:
    """docs/scaling.md quotes benchmarks/scaling_model.py's output: regenerate it when the
    model or the assumptions change."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        import scaling_model  # noqa: PLC0415
    finally:
        sys.path.remove(str(REPO / "benchmarks"))
    tables = scaling_model.tables()
    assert "| 1024 | 2 | 12,934,211 | 51.7 | 486 | 24.3 |" in tables  # the worked example
    assert tables in (REPO / "docs" / "scaling.md").read_text(encoding="utf-8")


@needs_mpi
def test_a_batch_that_does_not_split_evenly_is_one_line(tmp_path: Path) -> None:
    done = run_worker(
        2, tmp_path, "plain", train_args(tmp_path / "run", [*EXACT, "train.batch_size=5"])
    )
    assert done.returncode == 1
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert lines == ["Error: train.batch_size 5 is the global batch and must split evenly over the "
                     "2 processes; make it a multiple of 2"], done.stderr  # fmt: skip


@needs_mpi
@pytest.mark.parametrize("given", [None, "2"])
def test_ranks_share_the_cores_out_unless_the_user_set_a_thread_count(
    tmp_path: Path, given: str | None
) -> None:
    """Two ranks on this machine each get half its cores for BLAS (at least one thread); an
    OPENBLAS_NUM_THREADS the user set is kept."""
    settings = ["model.hidden_size=8", "model.num_layers=1", "train.batch_size=4",
                "train.max_steps=2", "train.eval_every=2"]  # fmt: skip
    environment = {k: v for k, v in env().items() if k not in THREAD_VARS}
    if given is not None:
        environment["OPENBLAS_NUM_THREADS"] = given
    cmd = launch(2, tmp_path / "out", "threads", train_args(tmp_path / "run", settings))
    done = subprocess.run(cmd, env=environment, capture_output=True, text=True, timeout=120,
                          check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr
    share = max(1, len(os.sched_getaffinity(0)) // 2)
    for rank in (0, 1):
        counts = json.loads((tmp_path / "out" / f"threads-{rank}.json").read_text())
        assert counts and set(counts) == {share if given is None else int(given)}
