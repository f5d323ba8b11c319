"""Tests for charlm.plot (metrics reading, the text chart) and the `charlm plot` command."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from charlm.cli import cli
from charlm.errors import CharlmError
from charlm.plot import Curves, read_metrics, text_chart


def write_metrics(run: Path, steps: int = 100, every_val: int = 20) -> Path:
    """A metrics.jsonl like the trainer's: a log line every 10 steps, evaluations on top."""
    run.mkdir(parents=True, exist_ok=True)
    lines = []
    for step in range(10, steps * 10 + 1, 10):
        record = {
            "step": step,
            "epoch": 0,
            "train_loss": 4.0 - step / 400,
            "lr": 0.002,
            "chars_per_s": 1e4,
            "elapsed_s": step / 100,
        }
        if step % (every_val * 10) == 0:
            record.update(val_loss=4.2 - step / 500, val_bpc=(4.2 - step / 500) / 0.693)
        lines.append(json.dumps(record))
    path = run / "metrics.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_read_metrics(tmp_path: Path):
    curves = read_metrics(write_metrics(tmp_path / "run"))
    assert len(curves.train) == 100 and len(curves.val) == 5
    assert curves.train[0] == (10.0, 4.0 - 10 / 400)
    assert curves.val[-1] == (1000.0, 4.2 - 1000 / 500)
    # Blank lines are fine; non-finite losses (a diverged run) are left out.
    path = tmp_path / "m.jsonl"
    path.write_text('{"step": 1, "train_loss": 2.0}\n\n{"step": 2, "train_loss": NaN}\n')
    assert read_metrics(path) == Curves([(1.0, 2.0)], [])


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (None, "not found"),
        ("", "empty"),
        ("\n  \n", "empty"),
        ('{"step": 1, "train_loss": 2.0}\n{"step": 2, "train_lo', "line 2 is not valid JSON"),
        ("[1, 2]\n", "line 1 has no numeric 'step'"),
        ('{"step": 1, "train_loss": "high"}\n', "'train_loss' is not a number"),
        ('{"step": 1, "lr": 0.1}\n', "no loss values"),
    ],
)
def test_read_metrics_errors(tmp_path: Path, content: str | None, match: str):
    path = tmp_path / "metrics.jsonl"
    if content is not None:
        path.write_text(content, encoding="utf-8")
    with pytest.raises(CharlmError, match=match):
        read_metrics(path)


def test_text_chart_layout():
    train = [(float(s), 3.0 - s / 100) for s in range(0, 101, 5)]  # 3.0 down to 2.0
    val = [(50.0, 2.9), (100.0, 2.6)]
    chart = text_chart(Curves(train, val), width=40, height=10).splitlines()
    assert len(chart) == 10 + 3  # rows, axis, step labels, legend
    rows = [line.split("|", 1)[1] for line in chart[:10]]
    assert all(len(r) <= 40 for r in rows)
    assert chart[0].startswith("3 |") and chart[9].startswith("2 |")  # max and min loss
    assert rows[0][0] == "." and rows[9].rstrip()[-1] == "."  # train from top-left down
    assert rows[9].rstrip().index(".") > 30  # ... to the bottom right
    # val points: step 100 at 2.6 -> last column, row round(0.4 * 9) = 4; step 50 at 2.9 -> 1.
    assert rows[4][39] == "o" and rows[1][20] == "o"
    assert sum(r.count("o") for r in rows) == 2
    assert chart[10].strip() == "+" + "-" * 40
    assert "step 0" in chart[11] and chart[11].rstrip().endswith("100")
    assert ". train" in chart[12] and "o val" in chart[12]


def test_text_chart_degenerate_ranges():
    chart = text_chart(Curves([(5.0, 1.5)], []))
    lines = chart.splitlines()
    assert len(lines) == 15 + 3 and "step 5" in lines[16]
    assert [line.split("|", 1)[1] for line in lines[:15]] == ["."] + [""] * 14


def _hide_matplotlib(monkeypatch: pytest.MonkeyPatch) -> None:
    """`import matplotlib` (and of any of its modules, even one already imported) now fails."""
    for name in [m for m in sys.modules if m.startswith("matplotlib.")] + ["matplotlib"]:
        monkeypatch.setitem(sys.modules, name, None)


def test_cli_text_chart_without_matplotlib(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    _hide_matplotlib(monkeypatch)
    run = tmp_path / "run"
    write_metrics(run)
    result = CliRunner().invoke(cli, ["plot", str(run)])
    assert result.exit_code == 0, result.output
    assert "install matplotlib for a PNG: pip install 'charlm[plot]'" in result.output
    assert result.output.count("|") == 15 and "o" in result.output
    assert not (run / "loss.png").exists()
    # The metrics file itself works as RUN too.
    same = CliRunner().invoke(cli, ["plot", str(run / "metrics.jsonl")])
    assert same.output == result.output


@pytest.mark.parametrize("content", [None, "", "garbage\n"])
def test_cli_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, content: str | None):
    _hide_matplotlib(monkeypatch)
    run = tmp_path / "run"
    run.mkdir()
    if content is not None:
        (run / "metrics.jsonl").write_text(content, encoding="utf-8")
    result = CliRunner().invoke(cli, ["plot", str(run)])
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    assert result.output.startswith("Error: ") and len(result.output.strip().splitlines()) == 1


def test_cli_png(tmp_path: Path):
    pytest.importorskip("matplotlib")
    run = tmp_path / "run"
    write_metrics(run)
    result = CliRunner().invoke(cli, ["plot", str(run)])
    assert result.exit_code == 0, result.output
    assert (run / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    out = tmp_path / "curves.png"
    assert CliRunner().invoke(cli, ["plot", str(run), "-o", str(out)]).exit_code == 0
    assert out.read_bytes()[:4] == b"\x89PNG"


def test_cli_output_without_suffix_is_a_png_and_says_so(tmp_path: Path):
    pytest.importorskip("matplotlib")
    run = tmp_path / "run"
    write_metrics(run)
    result = CliRunner().invoke(cli, ["plot", str(run), "-o", str(tmp_path / "curves")])
    assert result.exit_code == 0, result.output
    assert result.output == f"saved {tmp_path / 'curves.png'}\n"  # the file really written
    assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not (tmp_path / "curves").exists()


@pytest.mark.parametrize(
    ("name", "magic"),
    [("c.pdf", b"%PDF"), ("c.SVG", b"<?xml"), ("c.eps", b"%!PS-Adobe"), ("c.jpg", b"\xff\xd8")],
)
def test_cli_output_suffix_picks_the_format(tmp_path: Path, name: str, magic: bytes):
    pytest.importorskip("matplotlib")
    run = tmp_path / "run"
    write_metrics(run)
    result = CliRunner().invoke(cli, ["plot", str(run), "-o", str(tmp_path / name)])
    assert result.exit_code == 0, result.output
    assert result.stderr == "" and result.output == f"saved {tmp_path / name}\n"
    assert (tmp_path / name).read_bytes().startswith(magic)
    if name.endswith(".SVG"):
        assert b"<svg" in (tmp_path / name).read_bytes()[:1000]


@pytest.mark.parametrize("name", ["out.txt", "out.pgf", "curves.png.bak"])
def test_cli_unsupported_suffix_is_one_line_before_any_work(tmp_path: Path, name: str):
    pytest.importorskip("matplotlib")
    missing = tmp_path / "no-such-run"  # the format is checked before the metrics are read
    result = CliRunner().invoke(cli, ["plot", str(missing), "-o", str(tmp_path / name)])
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"Error: cannot write {tmp_path / name}: unknown image format")
    offered = line.split("use one of ")[1]
    assert ".png, " in offered and ".pdf, " in offered and ".svg, " in offered
    assert ".pgf" not in offered  # matplotlib lists it, but it needs LaTeX
    assert list(tmp_path.iterdir()) == []


def test_cli_output_in_a_missing_directory(tmp_path: Path):
    pytest.importorskip("matplotlib")
    run = tmp_path / "run"
    write_metrics(run)
    target = tmp_path / "nowhere" / "c.png"
    result = CliRunner().invoke(cli, ["plot", str(run), "-o", str(target)])
    assert result.exit_code == 1
    assert result.stderr == f"Error: cannot write {target}: no directory {target.parent}\n"


def test_cli_output_without_matplotlib_is_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _hide_matplotlib(monkeypatch)
    run = tmp_path / "run"
    write_metrics(run)
    result = CliRunner().invoke(cli, ["plot", str(run), "-o", str(tmp_path / "c.png")])
    assert result.exit_code == 1
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"Error: cannot write {tmp_path / 'c.png'}: plot files need matplotlib")
    assert "pip install 'charlm[plot]'" in line and not (tmp_path / "c.png").exists()
