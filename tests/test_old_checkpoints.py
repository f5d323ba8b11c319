"""Checkpoints written before the structure change (issue 12) still load, sample, evaluate and
resume exactly: `tests/fixtures/run-v1` was written by commit 51f31f2 (see the README there)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
from click.testing import CliRunner

from charlm.checkpoint import load_checkpoint
from charlm.cli import cli

FIXTURES = Path(__file__).resolve().parent / "fixtures"
CORPUS = Path(__file__).resolve().parent.parent / "data" / "dinosaurs.txt"


def test_an_old_checkpoint_loads() -> None:
    ckpt = load_checkpoint(FIXTURES / "run-v1" / "last.json")
    assert ckpt.step == 4 and ckpt.config.model.num_layers == 2
    model = ckpt.model()
    assert set(ckpt.params) == set(model.param_shapes())
    assert set(ckpt.hidden) == {"l0/h", "l0/c", "l1/h", "l1/c"}
    assert {k.split("/")[0] for k in ckpt.optimizer} == {"m", "v"}


def test_an_old_checkpoint_samples_and_evaluates() -> None:
    run = str(FIXTURES / "run-v1")
    sampled = CliRunner().invoke(cli, ["sample", "--run", run, "--seed", "3", "--max-len", "30",
                                       "--num", "2", "--json"])  # fmt: skip
    assert sampled.exit_code == 0, sampled.output
    texts = json.loads(sampled.stdout)
    vocab = set(load_checkpoint(FIXTURES / "run-v1" / "last.json").vocab.tokens)
    assert len(texts) == 2 and all(set(t.replace("<UNK>", "")) <= vocab for t in texts)
    evaluated = CliRunner().invoke(cli, ["eval", str(CORPUS), "--run", run, "--json",
                                         "--limit", "2000"])  # fmt: skip
    assert evaluated.exit_code == 0, evaluated.output
    loss = json.loads(evaluated.stdout)["loss"]
    assert 0 < loss < np.log(len(vocab)) + 0.5  # four steps in: about a uniform guess


def test_an_old_run_resumes_exactly_as_its_own_code_did(tmp_path: Path) -> None:
    """Resumed by today's code to step 6: bit for bit the arrays commit 51f31f2 wrote when it
    resumed the same run (parameters, Adam moments, carried state)."""
    run = tmp_path / "run"
    shutil.copytree(FIXTURES / "run-v1", run)
    result = CliRunner().invoke(cli, ["train", str(CORPUS), "--resume", "--run-dir", str(run),
                                      "--set", "train.max_steps=6", "--quiet"])  # fmt: skip
    assert result.exit_code == 0, result.output
    resumed = load_checkpoint(run / "last.json")
    assert resumed.step == 6
    with np.load(FIXTURES / "run-v1-resumed-to-step6.npz", allow_pickle=False) as want:
        groups = {"param": resumed.params, "optim": resumed.optimizer, "hidden": resumed.hidden}
        got = {f"{group}/{k}": v for group, arrays in groups.items() for k, v in arrays.items()}
        assert sorted(got) == sorted(want.files)
        for key in want.files:
            np.testing.assert_array_equal(got[key], want[key], err_msg=key)
