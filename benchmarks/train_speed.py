"""Training speed of `charlm train` itself against PyTorch, each alone in a fresh process.

Every round runs, one after another, `charlm train` from each code tree given (--tree, e.g. the
current checkout and an older one, to measure a change; --kernels to compare kernel sets) and
the PyTorch peer (`torch_peer.py`, at PyTorch's defaults; --no-torch leaves it out). charlm's
figure is the median chars/s of its log windows after the first (the warm-up), from
metrics.jsonl; the peer's likewise. Prints each side's median and the median and range of the
per-round ratios to the first implementation, and exits 1 when the first misses its target
against PyTorch. These machines are noisy: quote the ratios.

    python benchmarks/train_speed.py [--rounds 5] [--only lstm-h256-l2-n64-t100]
    python benchmarks/train_speed.py --tree . --tree /tmp/base --no-torch
    python benchmarks/train_speed.py --kernels compiled --kernels numpy

Every process runs in a user's environment: without this workplace's OpenBLAS overrides (see
blas_env.py; --keep-blas-env keeps them).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from blas_env import openblas_kernel, user_environment

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "data" / "tinyshakespeare.txt"  # 65 characters + 2 specials: V = 67
CONFIGS = {  # name: (cell, H, layers, N, T, steps)
    "lstm-h128-l1-n32-t64": ("lstm", 128, 1, 32, 64, 60),
    "lstm-h256-l2-n64-t100": ("lstm", 256, 2, 64, 100, 30),
    "lstm-h512-l2-n64-t100": ("lstm", 512, 2, 64, 100, 15),
    "gru-h256-l2-n64-t100": ("gru", 256, 2, 64, 100, 30),
    "rnn-h256-l2-n64-t100": ("rnn", 256, 2, 64, 100, 40),
}
# The first implementation / PyTorch must reach these (PyTorch runs near the sgemm peak at H512).
TARGETS = {name: 1.0 if name.startswith("lstm-h512") else 1.1 for name in CONFIGS}


def charlm_speed(
    tree: Path,
    kernels: str,
    config: tuple,
    run_dir: Path,
    env: dict[str, str],
    launcher: tuple[str, ...] = (),
) -> float:
    """Median chars/s of one `charlm train` run with the code in `tree` and `kernels` (a
    train.kernels value; '' leaves the tree's default), started by `launcher` if given (e.g.
    `mpiexec -n 2`: the figure is then all processes' together)."""
    cell, H, L, N, T, steps = config
    log_every = max(1, steps // 6)
    sets = {
        "model.cell": cell, "model.hidden_size": H, "model.num_layers": L,
        "model.gru_reset_after": "true" if cell == "gru" else "false",
        "train.batch_size": N, "train.seq_len": T, "train.max_steps": steps,
        "train.log_every": log_every, "train.eval_every": 10**6,
        "train.checkpoint_every": 10**6, "data.val_fraction": 0.0,
    }  # fmt: skip
    argv = [*launcher, sys.executable, "-m", "charlm", "train", str(CORPUS), "--quiet",
            "--overwrite", "--run-dir", str(run_dir)]  # fmt: skip
    if kernels:
        sets["train.kernels"] = kernels
    for key, value in sets.items():
        argv += ["--set", f"{key}={value}"]
    env = {**env, "PYTHONPATH": str(tree)}
    subprocess.run(argv, check=True, env=env, cwd=tempfile.gettempdir())
    lines = (run_dir / "metrics.jsonl").read_text("utf-8").splitlines()
    records = [json.loads(line) for line in lines]
    speeds = [r["chars_per_s"] for r in records if "chars_per_s" in r]
    return statistics.median(speeds[1:] or speeds)


def torch_speed(config: tuple, env: dict[str, str]) -> float:
    cell, H, L, N, T, steps = config
    argv = [sys.executable, str(ROOT / "benchmarks" / "torch_peer.py"), "--cell", cell,
            "--hidden", str(H), "--layers", str(L), "--batch", str(N), "--seq", str(T),
            "--steps", str(steps), "--window", str(max(1, steps // 6))]  # fmt: skip
    out = subprocess.run(argv, check=True, capture_output=True, text=True, env=env).stdout
    return json.loads(out.splitlines()[-1])["chars_per_s"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tree", action="append", type=Path, help="a checkout to time")
    parser.add_argument(
        "--kernels",
        action="append",
        choices=("numpy", "compiled", "auto"),
        help="time each tree with these train.kernels (default: its default)",
    )
    parser.add_argument(
        "--no-torch",
        dest="torch",
        action="store_false",
        help="leave the PyTorch peer out (to compare trees or kernel sets)",
    )
    parser.add_argument(
        "--keep-blas-env",
        action="store_true",
        help="keep this workplace's OPENBLAS_CORETYPE/OPENBLAS_L2_SIZE (see blas_env.py)",
    )
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--only", action="append", choices=sorted(CONFIGS))
    args = parser.parse_args()
    ours = [(t.resolve(), k) for t in (args.tree or [ROOT]) for k in (args.kernels or [""])]
    names = [f"charlm@{t.name or t}" + (f"[{k}]" if k else "") for t, k in ours]
    names += ["torch"] if args.torch else []
    env = user_environment(args.keep_blas_env)
    print(f"NumPy's OpenBLAS runs its {openblas_kernel(env)} kernels")
    print(f"{'config':24} " + " ".join(f"{n:>22}" for n in names) + "   ratios to the first")
    failed = 0
    with tempfile.TemporaryDirectory() as tmp:
        for name, config in CONFIGS.items():
            if args.only and name not in args.only:
                continue
            speeds: dict[str, list[float]] = {n: [] for n in names}
            for _ in range(args.rounds):
                for (tree, kernels), n in zip(ours, names, strict=False):
                    speeds[n].append(charlm_speed(tree, kernels, config, Path(tmp) / "run", env))
                if args.torch:
                    speeds["torch"].append(torch_speed(config, env))
            first = speeds[names[0]]
            ratios = []
            for n in names[1:]:
                per_round = sorted(a / b for a, b in zip(first, speeds[n], strict=True))
                ratios.append(f"{n}: {statistics.median(per_round):.2f} "
                              f"({per_round[0]:.2f}-{per_round[-1]:.2f})")  # fmt: skip
            medians = " ".join(f"{statistics.median(speeds[n]):22,.0f}" for n in names)
            verdict = ""
            if args.torch:
                ratio = statistics.median(
                    a / b for a, b in zip(first, speeds["torch"], strict=True)
                )
                ok = ratio >= TARGETS[name]
                failed += not ok
                verdict = f"   vs torch >={TARGETS[name]} {'PASS' if ok else 'FAIL'}"
            print(f"{name:24} {medians}   {'; '.join(ratios)}{verdict}", flush=True)
    if args.torch:
        print("all targets met" if not failed else f"{failed} config(s) below target")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
