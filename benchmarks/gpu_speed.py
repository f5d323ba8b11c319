"""GPU training speed: charlm on CuPy against PyTorch's cuDNN RNNs, in two columns of equal
precision, and `charlm train` end to end.

Six configs (issue 14), T=100, vocabulary 65, random ids; forward + backward, norm clipping at 5,
Adam, carried state -- `benchmarks/torch_peer.py`'s model and step on both sides:

    LSTM H512 L2 N64, LSTM H512 L2 N256, LSTM H256 L2 N64, GRU H512 L2 N64, RNN H512 L2 N64,
    LSTM H1024 L3 N128

Column "tf32": charlm with `train.tf32` on against cuDNN at PyTorch's defaults (which allow
TF32 in cuDNN). Column "fp32": `train.tf32` off against cuDNN with
torch.backends.cudnn.allow_tf32 = False (torch.backends.cuda.matmul.allow_tf32 stays at its
default, False). Each round runs each implementation in a fresh process (all configs and both
precisions in it), the implementations alternating; a process times windows of steps after a
warm-up (kernel compilation, graph capture, cuDNN plans) and reports their median. Printed:
medians over rounds and the median and range of the per-round ratios charlm / cuDNN; target
>= 1.0 everywhere (exit 1 if missed).

Then `charlm train` itself (LSTM H512 L2 N64 T100, fp32, Tiny Shakespeare): its logged chars/s
(median of the log windows after the first) should be within 15% of the benchmark's figure.

    python benchmarks/gpu_speed.py [--rounds 5] [--quick] [--no-train] [--json OUT]

--quick: 2 rounds, fewer timed steps and a shorter training run (about 3 minutes in all on an
H200). Says so and exits 0 where CuPy, a GPU or a CUDA PyTorch is missing.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
V, T = 65, 100
CONFIGS = [  # (cell, H, L, N)
    ("lstm", 512, 2, 64),
    ("lstm", 512, 2, 256),
    ("lstm", 256, 2, 64),
    ("gru", 512, 2, 64),
    ("rnn", 512, 2, 64),
    ("lstm", 1024, 3, 128),
]
PRECISIONS = ("tf32", "fp32")
TARGET = 1.0
TRAIN_SHAPE = ("lstm", 512, 2, 64)
TRAIN_TOLERANCE = 0.15


def name(cell: str, H: int, L: int, N: int) -> str:
    return f"{cell.upper()} H{H} L{L} N{N}"


def timed(step: Any, batches: list, chars: int, sync: Any, warmup: int, windows: int) -> float:
    """Median chars/s over `windows` passes over `batches` (`chars` predicted a step), after
    `warmup` steps."""
    for i in range(warmup):
        step(batches[i % len(batches)], i)
    sync()
    speeds, count = [], warmup
    for _ in range(windows):
        start = time.perf_counter()
        for batch in batches:
            step(batch, count)
            count += 1
        sync()
        speeds.append(len(batches) * chars / (time.perf_counter() - start))
    return statistics.median(speeds)


def charlm_worker(args: argparse.Namespace) -> dict[str, float]:
    from charlm.config import TrainConfig  # noqa: PLC0415
    from charlm.data import Batch  # noqa: PLC0415
    from charlm.device import get_device  # noqa: PLC0415
    from charlm.model import CharModel  # noqa: PLC0415

    device = get_device(args.device)
    out = {}
    for precision in PRECISIONS:
        device.set_tf32(precision == "tf32")
        for cell, H, L, N in CONFIGS:
            spec = SimpleNamespace(cell=cell, hidden_size=H, num_layers=L, dropout=0.0,
                                   embedding_size=0, gru_reset_after=True,
                                   rnn_activation="tanh")  # fmt: skip
            model = CharModel(spec, V, device)
            settings = TrainConfig(batch_size=N, seq_len=T, lr=2e-3, clip=5.0, optimizer="adam")
            step = device.train_step_type(True).create(
                model, model.init_params(np.random.default_rng(0)), settings
            )
            rng = np.random.default_rng(1)
            windows = [rng.integers(0, V, (N, T + 1)) for _ in range(args.steps)]
            batches = [Batch(w[:, :-1], w[:, 1:], None) for w in windows]

            speed = timed(step, batches, N * T, device.sync, args.warmup, args.windows)
            out[f"{precision}/{name(cell, H, L, N)}"] = speed
            del step, model
            if args.device == "cuda":
                device.xp.get_default_memory_pool().free_all_blocks()
    device.set_tf32(False)
    return out


def torch_worker(args: argparse.Namespace) -> dict[str, float]:
    import torch  # noqa: PLC0415
    from torch_peer import peer_step  # noqa: PLC0415

    out = {}
    for precision in PRECISIONS:
        torch.backends.cudnn.allow_tf32 = precision == "tf32"  # PyTorch's default: True
        for cell, H, L, N in CONFIGS:
            step = peer_step(cell, V, H, L, N, args.device)
            rng = np.random.default_rng(1)
            windows = [torch.from_numpy(rng.integers(0, V, (N, T + 1))).to(args.device)
                       for _ in range(args.steps)]  # fmt: skip
            sync = torch.cuda.synchronize if args.device == "cuda" else lambda: None
            speed = timed(lambda w, i, step=step: step(w), windows, N * T, sync, args.warmup,
                          args.windows)  # fmt: skip
            out[f"{precision}/{name(cell, H, L, N)}"] = speed
            del step
            if args.device == "cuda":
                torch.cuda.empty_cache()
    return out


def run_worker(kind: str, args: argparse.Namespace) -> dict[str, float]:
    """One fresh process measuring every config with implementation `kind`."""
    command = [sys.executable, __file__, "--worker", kind, "--steps", str(args.steps),
               "--warmup", str(args.warmup), "--windows", str(args.windows)]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    if result.returncode != 0:
        raise RuntimeError(f"{kind} worker failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def train_end_to_end(args: argparse.Namespace) -> float:
    """`charlm train` at TRAIN_SHAPE, fp32: median logged chars/s after the first window."""
    cell, H, L, N = TRAIN_SHAPE
    with tempfile.TemporaryDirectory() as tmp:
        sets = {"model.cell": cell, "model.hidden_size": H, "model.num_layers": L,
                "model.dropout": 0.0, "train.batch_size": N, "train.seq_len": T,
                "train.device": args.device, "train.tf32": "false",
                "train.max_steps": args.train_steps, "train.log_every": 20,
                "train.eval_every": 100000, "train.checkpoint_every": 100000}  # fmt: skip
        command = [sys.executable, "-m", "charlm", "train", "data/tinyshakespeare.txt",
                   "--run-dir", f"{tmp}/run", "--quiet"]  # fmt: skip
        for key, value in sets.items():
            command += ["--set", f"{key}={value}"]
        result = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
        if result.returncode != 0:
            raise RuntimeError(f"charlm train failed:\n{result.stderr[-3000:]}")
        lines = Path(f"{tmp}/run/metrics.jsonl").read_text("utf-8").splitlines()
    speeds = [r["chars_per_s"] for r in map(json.loads, lines) if "chars_per_s" in r]
    return statistics.median(speeds[1:] or speeds)


def available() -> str | None:
    """Why the benchmark cannot run here, or None."""
    try:
        from charlm.device import get_device  # noqa: PLC0415
        from charlm.errors import CharlmError  # noqa: PLC0415

        get_device("cuda")
    except CharlmError as exc:
        return str(exc)
    try:
        import torch  # noqa: PLC0415
    except ImportError:
        return "PyTorch is not installed"
    return None if torch.cuda.is_available() else "PyTorch has no CUDA"


def report(rounds: list[dict[str, dict[str, float]]]) -> tuple[list[dict[str, Any]], int]:
    rows, failed = [], 0
    print(f"{'config':20} {'prec':5} {'charlm':>11} {'cuDNN':>11} {'ratio':>6} {'range':>13}")
    for precision in PRECISIONS:
        for config in CONFIGS:
            key = f"{precision}/{name(*config)}"
            ours = [r["charlm"][key] for r in rounds]
            peer = [r["torch"][key] for r in rounds]
            ratios = [o / p for o, p in zip(ours, peer, strict=True)]
            ratio = statistics.median(ratios)
            failed += ratio < TARGET
            row = {"config": name(*config), "precision": precision,
                   "charlm": statistics.median(ours), "cudnn": statistics.median(peer),
                   "ratio": ratio, "ratio_min": min(ratios), "ratio_max": max(ratios)}  # fmt: skip
            rows.append(row)
            print(f"{name(*config):20} {precision:5} {row['charlm']:11,.0f} {row['cudnn']:11,.0f} "
                  f"{ratio:6.2f} {min(ratios):5.2f} - {max(ratios):5.2f}"
                  f"{'' if ratio >= TARGET else '  below 1.0'}")  # fmt: skip
    return rows, failed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=10, help="steps per timed window")
    parser.add_argument("--windows", type=int, default=3, help="timed windows per process")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--train-steps", type=int, default=400)
    parser.add_argument("--quick", action="store_true", help="2 rounds, shorter everything")
    parser.add_argument("--no-train", action="store_true", help="skip the `charlm train` check")
    parser.add_argument("--json", help="also write the results to this file")
    parser.add_argument("--worker", choices=("charlm", "torch"), help=argparse.SUPPRESS)
    parser.add_argument("--device", default="cuda", help=argparse.SUPPRESS)  # cpu: smoke tests
    args = parser.parse_args()
    if args.worker:
        sys.path.insert(0, str(ROOT / "benchmarks"))
        result = charlm_worker(args) if args.worker == "charlm" else torch_worker(args)
        print(json.dumps(result))
        return 0
    if args.quick:
        args.rounds, args.windows, args.train_steps = 2, 2, 200
    missing = available()
    if missing:
        print(f"skipped: {missing}")
        return 0
    rounds = []
    for i in range(args.rounds):
        order = ("charlm", "torch") if i % 2 == 0 else ("torch", "charlm")
        rounds.append({kind: run_worker(kind, args) for kind in order})
        print(f"round {i + 1}/{args.rounds} done", file=sys.stderr, flush=True)
    rows, failed = report(rounds)
    results: dict[str, Any] = {"rows": rows, "rounds": rounds}
    if not args.no_train:
        bench = statistics.median(r["charlm"][f"fp32/{name(*TRAIN_SHAPE)}"] for r in rounds)
        trained = train_end_to_end(args)
        ratio = trained / bench
        ok = ratio >= 1 - TRAIN_TOLERANCE
        failed += not ok
        results["train"] = {"chars_per_s": trained, "benchmark": bench, "ratio": ratio}
        print(f"charlm train {name(*TRAIN_SHAPE)} fp32: {trained:,.0f} chars/s, "
              f"{ratio:.2f} of the benchmark's {bench:,.0f} "
              f"({'PASS' if ok else 'FAIL'}: within {TRAIN_TOLERANCE:.0%})")  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1), encoding="utf-8")
    print("all targets met" if not failed else f"{failed} target(s) missed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
