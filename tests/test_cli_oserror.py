"""Unwritable and unreadable paths: one `Error:` line that says what could not be done to which
path and why (CharlmGroup's generic OSError wording, and the commands' own for their outputs)."""

from __future__ import annotations

import errno
import os
import re
from collections.abc import Callable
from pathlib import Path

import pytest
from _cli_contract import DATA, TINY, assert_one_line_error
from click.testing import CliRunner

from charlm import vocab
from charlm.cli import CharlmGroup, cli

DINOS = str(DATA / "dinosaurs.txt")


def raised(action: Callable[[], object]) -> OSError:
    with pytest.raises(OSError) as info:
        action()
    return info.value


def test_describe_os_error_names_operation_and_path(tmp_path: Path) -> None:
    file = tmp_path / "file"
    file.write_text("x")
    describe = CharlmGroup.describe_os_error
    under = file / "x"
    assert describe(raised(lambda: under.mkdir(parents=True))) == (
        f"cannot create directory {under}: Not a directory"
    )
    assert describe(raised(lambda: os.makedirs(under))) == (
        f"cannot create directory {under}: Not a directory"
    )
    assert describe(raised(lambda: under.write_text("x"))) == (
        f"cannot write {under}: Not a directory"
    )
    assert describe(raised(tmp_path.read_text)) == f"cannot read {tmp_path}: Is a directory"
    missing = tmp_path / "missing"
    assert describe(raised(lambda: os.replace(missing, tmp_path / "b"))) == (
        f"cannot move {missing} to {tmp_path / 'b'}: No such file or directory"
    )
    assert describe(raised(lambda: list(missing.iterdir()))) == (
        f"cannot list directory {missing}: No such file or directory"
    )
    # Nothing on the traceback says what was being done: 'access'; no path: the reason alone.
    assert describe(raised(lambda: os.stat(missing))) == (
        f"cannot access {missing}: No such file or directory"
    )
    assert describe(OSError(errno.ENOSPC, "No space left on device")) == "No space left on device"


def run_dir_error(run_dir: Path | str) -> str:
    result = CliRunner().invoke(cli, ["train", DINOS, *TINY, "--run-dir", str(run_dir)])
    return assert_one_line_error(result.stderr, result.exit_code, result.output)


def test_train_run_dir_that_cannot_be_created(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    run = tmp_path / "file" / "run"
    line = run_dir_error(run)
    assert re.fullmatch(rf"Error: cannot create run directory {re.escape(str(run))}: "
                        r"Not a directory", line), line  # fmt: skip


@pytest.mark.parametrize("where", ["/proc/x", "/sys/x"])
def test_train_run_dir_in_a_system_directory(where: str) -> None:
    if not Path(where).parent.is_dir() or Path(where).exists():
        pytest.skip(f"no {Path(where).parent} here")
    line = run_dir_error(where)
    assert re.match(rf"Error: cannot create run directory {where}: \S", line), line
    assert not Path(where).exists()


def test_vocab_build_output_in_a_missing_directory(tmp_path: Path) -> None:
    out = tmp_path / "nowhere" / "v.json"
    result = CliRunner().invoke(cli, ["vocab", "build", DINOS, "-o", str(out)])
    line = assert_one_line_error(result.stderr, result.exit_code, result.output)
    assert line == f"Error: cannot write vocabulary to {out}: no directory {out.parent}"
    assert result.stdout == ""  # refused before the corpus was read and summarised


def test_vocab_build_output_not_permitted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A read-only directory cannot stop root, so the write itself is refused.
    def refuse(path: str | os.PathLike[str], data: object) -> None:
        raise PermissionError(errno.EACCES, "Permission denied", str(path))

    monkeypatch.setattr(vocab, "write_atomic", refuse)
    out = tmp_path / "v.json"
    result = CliRunner().invoke(cli, ["vocab", "build", DINOS, "-o", str(out)])
    line = assert_one_line_error(result.stderr, result.exit_code, result.output)
    assert line.startswith("Error: cannot write vocabulary ") and str(out) in line
    assert line.endswith(": Permission denied")


def test_vocab_build_output_is_a_directory(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["vocab", "build", DINOS, "-o", str(tmp_path)])
    line = assert_one_line_error(result.stderr, result.exit_code, result.output)
    assert result.exit_code == 2 and "is a directory" in line
