"""The package as a user gets it: a wheel, installed with runtime dependencies only.

The other subprocess tests run `python -m charlm` with PYTHONPATH pointing at the source tree,
so a wheel missing a subpackage (charlm.cells once was) passes them all. Here the wheel is built
from a copy of the repository, checked against the source's modules, installed into a fresh venv
without the test extras, and its `charlm` console script runs train, sample and gradcheck from a
directory outside the repository with no PYTHONPATH.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent
# What a checkout may hold besides its sources: build outputs, caches, venvs, runs.
NOT_SOURCE = shutil.ignore_patterns(
    ".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache",
    ".ruff_cache", ".hypothesis", "runs", "*.tmp",
)  # fmt: skip
CORPUS = (
    "It was the best of times, it was the worst of times, it was the age of wisdom,\n"
    "it was the age of foolishness, it was the epoch of belief, it was the epoch of\n"
    "incredulity, it was the season of Light, it was the season of Darkness, it was\n"
    "the spring of hope, it was the winter of despair, we had everything before us,\n"
    "we had nothing before us, we were all going direct to Heaven.\n"
)
SETTINGS = (
    "model.hidden_size=8", "model.num_layers=1", "train.max_steps=3", "train.batch_size=2",
    "train.seq_len=8", "train.eval_every=3",
)  # fmt: skip
TINY = [arg for setting in SETTINGS for arg in ("--set", setting)]


# Modules of an optional extra: (module, the dependency it needs).
NEEDS_AN_EXTRA = {"charlm.cells.compiled": "numba"}


def run(
    argv: list[str | Path], cwd: Path, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run a command; fail with its output (not just its status) when it fails or hangs."""
    argv = [str(a) for a in argv]
    shown = " ".join(argv)
    try:
        proc = subprocess.run(
            argv,
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(
            f"timed out after {timeout:.0f} s: {shown}\nstdout:\n{_tail(exc.stdout)}\n"
            f"stderr:\n{_tail(exc.stderr)}"
        )
    if proc.returncode != 0:
        pytest.fail(
            f"exit status {proc.returncode}: {shown}\nstdout:\n{_tail(proc.stdout)}\n"
            f"stderr:\n{_tail(proc.stderr)}"
        )
    return proc


def _tail(output: str | bytes | None) -> str:
    """The end of a captured stream (a timeout hands it over as bytes, or None)."""
    if isinstance(output, bytes):
        output = output.decode("utf-8", "replace")
    return (output or "")[-4000:]


def user_env(venv: Path) -> dict[str, str]:
    """A user's environment with the venv on PATH: nothing pointing Python at the source tree."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("PYTHON") and k not in ("VIRTUAL_ENV", "__PYVENV_LAUNCHER__")
    }
    env.update(PATH=str(venv / "bin") + os.pathsep + env.get("PATH", ""), VIRTUAL_ENV=str(venv))
    # 2-core CI: one BLAS thread, as the other subprocess tests use.
    env.update(OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
    return env


def dist_name(requirement: str) -> str:
    """The normalised distribution name of a Requires-Dist value ("PyYAML>=6" -> "pyyaml")."""
    match = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", requirement.strip())
    assert match, f"unparsable requirement {requirement!r}"
    return re.sub(r"[-_.]+", "-", match.group(0)).lower()


@dataclass
class Installed:
    src: Path  # the copy of the repository the wheel was built from
    wheel: Path
    venv: Path
    work: Path  # an empty directory outside the repository, the commands' cwd
    env: dict[str, str]


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    root = tmp_path_factory.mktemp("install")
    # Built from a copy: pip builds in the source directory, and build/ in the shared
    # checkout would race with other runs (and be stale input to the next build).
    src = root / "src"
    shutil.copytree(REPO, src, ignore=NOT_SOURCE)
    wheels = root / "wheels"
    run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--wheel-dir", wheels, src],
        cwd=root,
        timeout=300,
    )
    built = sorted(wheels.glob("charlm-*.whl"))
    assert len(built) == 1, f"expected one charlm wheel, got {built}"
    venv = root / "venv"
    run([sys.executable, "-m", "venv", venv], cwd=root, timeout=180)
    env = user_env(venv)
    # No extras: runtime dependencies only. Binary wheels keep a 2-core CI from compiling.
    run(
        [venv / "bin" / "python", "-m", "pip", "install", "--only-binary", ":all:", built[0]],
        cwd=root,
        env=env,
        timeout=600,
    )
    work = root / "work"
    work.mkdir()
    return Installed(src=src, wheel=built[0], venv=venv, work=work, env=env)


def source_modules(src: Path) -> list[str]:
    """charlm's modules in the source tree, as wheel paths ("charlm/cells/lstm.py")."""
    return sorted(p.relative_to(src).as_posix() for p in (src / "charlm").rglob("*.py"))


def package_data(src: Path) -> list[str]:
    """The other files charlm reads from its package (the viz page's template), as wheel paths."""
    files = (src / "charlm").rglob("*")
    return sorted(
        p.relative_to(src).as_posix() for p in files if p.suffix in {".html", ".css", ".js"}
    )


def test_wheel_holds_every_module(installed: Installed) -> None:
    modules = source_modules(installed.src)
    assert "charlm/cells/lstm.py" in modules  # the source scan itself works
    assert "charlm/viz/page.js" in package_data(installed.src)
    with zipfile.ZipFile(installed.wheel) as whl:
        names = set(whl.namelist())
        missing = [m for m in modules + package_data(installed.src) if m not in names]
        assert not missing, f"the wheel lacks {missing}"
        entry_points = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
        assert len(entry_points) == 1, sorted(names)
        assert "charlm = charlm.cli:cli" in whl.read(entry_points[0]).decode()


def test_venv_has_runtime_dependencies_only(installed: Installed) -> None:
    with zipfile.ZipFile(installed.wheel) as whl:
        meta = next(n for n in whl.namelist() if n.endswith(".dist-info/METADATA"))
        requires = [
            line.split(":", 1)[1]
            for line in whl.read(meta).decode().splitlines()
            if line.startswith("Requires-Dist:")
        ]
    runtime = {dist_name(r) for r in requires if not re.search(r";.*\bextra\s*==", r)}
    test_extra = {dist_name(r) for r in requires if re.search(r";.*\bextra\s*==\s*.test.", r)}
    assert {"numpy", "torch", "pytest"} <= runtime | test_extra, requires  # metadata was read
    listing = run(
        [installed.venv / "bin" / "python", "-m", "pip", "list", "--format=json"],
        cwd=installed.work,
        env=installed.env,
    )
    present = {dist_name(d["name"]) for d in json.loads(listing.stdout)}
    assert runtime | {"charlm"} <= present, f"missing: {sorted(runtime - present)}"
    extras = test_extra - runtime
    assert not extras & present, f"test extras in a runtime install: {sorted(extras & present)}"
    # Every module imports with runtime dependencies alone, from the venv, not the source tree;
    # the compiled kernel set needs its extra (charlm[fast]) and says which module is missing.
    names = [
        m[:-3].replace("/", ".").removesuffix(".__init__")
        for m in source_modules(installed.src)
        if not m.endswith("__main__.py") and m[:-3].replace("/", ".") not in NEEDS_AN_EXTRA
    ]
    code = f"import importlib, charlm\nfor m in {names!r}: importlib.import_module(m)\n"
    for module, missing in NEEDS_AN_EXTRA.items():
        code += (
            f"try:\n    importlib.import_module({module!r})\nexcept ModuleNotFoundError as e:"
            f"\n    assert e.name == {missing!r}, e\nelse:\n    raise SystemExit('imported')\n"
        )
    code += "print(charlm.__file__)"
    where = run(
        [installed.venv / "bin" / "python", "-c", code], cwd=installed.work, env=installed.env
    ).stdout.strip()
    assert Path(where).is_relative_to(installed.venv), f"charlm imported from {where}"


def test_console_script_trains_samples_and_gradchecks(installed: Installed) -> None:
    charlm = installed.venv / "bin" / "charlm"
    assert charlm.is_file(), "no charlm console script in the venv"
    work, env = installed.work, installed.env
    (work / "corpus.txt").write_text(CORPUS, "utf-8")

    run([charlm, "train", "corpus.txt", *TINY], cwd=work, env=env)
    run_dir = work / "runs" / "corpus"
    assert (run_dir / "last.json").is_file(), sorted(p.name for p in work.rglob("*"))
    steps = [
        json.loads(line)["step"]
        for line in (run_dir / "metrics.jsonl").read_text("utf-8").splitlines()
    ]
    assert steps and steps[-1] == 3, steps

    # The latest run under ./runs, found from the cwd as a user's `charlm sample` finds it.
    sample = run([charlm, "sample", "--max-len", "20", "--seed", "1"], cwd=work, env=env).stdout
    text = re.sub(r"<UNK>|<EOS>", "", sample).strip()
    assert text, f"sample printed no text: {sample!r}"
    assert set(text) <= set(CORPUS), f"characters outside the corpus: {sample!r}"

    check = run([charlm, "gradcheck"], cwd=work, env=env)
    assert "max relative error" in check.stdout, check.stdout + check.stderr

    # The viz page's template comes from the installed package.
    run([charlm, "viz", "corpus.txt", "--html", "viz.html"], cwd=work, env=env)
    assert "charlm viz" in (work / "viz.html").read_text("utf-8")
