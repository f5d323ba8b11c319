"""Sampling speed: `charlm.sample.generate` against PyTorch's step-by-step loop, each alone in a
fresh process.

The model is an LSTM, H=256, 2 layers, V=65 (random weights: speed does not depend on
training). PyTorch runs at its defaults, torch.no_grad, per generated character: one-hot ->
nn.LSTM on one step -> nn.Linear -> softmax -> torch.multinomial, the drawn ids fed back; its
figure each round is the faster of two processes, one at its defaults and one with
`torch.backends.mkldnn.enabled = False` (oneDNN is slow at batch 1). charlm samples with the
CPU kernels `train.kernels: auto` picks (compiled when numba is installed). Both produce `num`
samples of `max_len` characters; each process warms up once, then times one run. Rounds
alternate; prints each side's median chars/s and the median and range of the per-round ratios
ours / PyTorch; exits 1 when a case misses its target.

    python benchmarks/sample_speed.py [--rounds 5] [--only num1]

Every process runs in a user's environment: without this workplace's OpenBLAS overrides (see
blas_env.py; --keep-blas-env keeps them).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
from blas_env import openblas_kernel, user_environment

ROOT = Path(__file__).resolve().parent.parent  # the charlm tree timed
V, H, L = 65, 256, 2
CASES = {  # name: (samples in parallel, characters per sample, target ratio)
    "num1": (1, 500, 2.0),
    "num64": (64, 200, 1.5),
}
WORKERS = ("ours", "torch", "torch-no-mkldnn")


def ours(num: int, max_len: int) -> float:
    from charlm.config import SampleConfig  # noqa: PLC0415
    from charlm.device import get_device  # noqa: PLC0415
    from charlm.model import CharModel  # noqa: PLC0415
    from charlm.sample import generate  # noqa: PLC0415
    from charlm.vocab import Vocab  # noqa: PLC0415

    spec = SimpleNamespace(cell="lstm", hidden_size=H, num_layers=L, dropout=0.0, embedding_size=0,
                           gru_reset_after=False, rnn_activation="tanh")  # fmt: skip
    model = CharModel(spec, V, get_device("cpu", "auto"))
    params = model.init_params(np.random.default_rng(0), np.float32)
    chars = "\n" + "".join(chr(c) for c in range(33, 33 + V - 3))
    vocab = Vocab.build(chars)
    settings = SampleConfig(num=num, max_len=max_len, seed=0, no_unk=False)  # <UNK> drawable
    generate(model, params, vocab, settings)  # warm-up (and JIT)
    start = time.perf_counter()
    out = generate(model, params, vocab, settings)
    elapsed = time.perf_counter() - start
    assert len(out) == num
    return num * max_len / elapsed  # tokens: "<UNK>" is one token spelled with five


def torch_loop(num: int, max_len: int, mkldnn: bool) -> float:
    import torch  # noqa: PLC0415 - benchmark-only dependency

    torch.backends.mkldnn.enabled = mkldnn
    torch.manual_seed(0)
    rnn = torch.nn.LSTM(V, H, L)
    head = torch.nn.Linear(H, V)
    gen = torch.Generator().manual_seed(0)

    def run() -> float:
        start = time.perf_counter()
        with torch.no_grad():
            x = torch.zeros(num, dtype=torch.long)
            state = None
            for _ in range(max_len):
                out, state = rnn(torch.nn.functional.one_hot(x, V).float()[None], state)
                probs = torch.softmax(head(out[0]), dim=-1)
                x = torch.multinomial(probs, 1, generator=gen)[:, 0]
        return num * max_len / (time.perf_counter() - start)

    run()  # warm-up
    return run()


def worker(kind: str, num: int, max_len: int) -> float:
    """Run in this (fresh) process: one implementation, one timed run."""
    if kind == "ours":
        return ours(num, max_len)
    return torch_loop(num, max_len, mkldnn=kind == "torch")


def spawn(kind: str, num: int, max_len: int, env: dict[str, str]) -> float:
    argv = [sys.executable, __file__, "--worker", kind, "--num", str(num), "--len", str(max_len)]
    out = subprocess.run(argv, check=True, capture_output=True, text=True, env=env).stdout
    return json.loads(out.splitlines()[-1])["chars_per_s"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds (median)")
    parser.add_argument("--only", action="append", choices=sorted(CASES))
    parser.add_argument(
        "--keep-blas-env",
        action="store_true",
        help="keep this workplace's OPENBLAS_CORETYPE/OPENBLAS_L2_SIZE (see blas_env.py)",
    )
    parser.add_argument("--worker", choices=WORKERS, help=argparse.SUPPRESS)
    parser.add_argument("--num", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--len", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps({"chars_per_s": worker(args.worker, args.num, args.len)}))
        return 0
    print(f"LSTM H={H} L={L} V={V}; each side alone in a fresh process, PyTorch at its defaults")
    env = user_environment(args.keep_blas_env, PYTHONPATH=str(ROOT))
    print(f"NumPy's OpenBLAS runs its {openblas_kernel(env)} kernels")
    print(f"{'case':8} {'ours chars/s':>13} {'torch chars/s':>14} {'ratio (range)':>20} target")
    failed = 0
    for name, (num, max_len, target) in CASES.items():
        if args.only and name not in args.only:
            continue
        mine, theirs = [], []
        for _ in range(args.rounds):
            mine.append(spawn("ours", num, max_len, env))
            theirs.append(max(spawn("torch", num, max_len, env),
                              spawn("torch-no-mkldnn", num, max_len, env)))  # fmt: skip
        ratios = sorted(a / b for a, b in zip(mine, theirs, strict=True))
        ratio = statistics.median(ratios)
        ok = ratio >= target
        failed += not ok
        spread = f"{ratio:.2f} ({ratios[0]:.2f}-{ratios[-1]:.2f})"
        print(f"{name:8} {statistics.median(mine):13,.0f} {statistics.median(theirs):14,.0f} "
              f"{spread:>20} >={target} {'PASS' if ok else 'FAIL'}", flush=True)  # fmt: skip
    print("all targets met" if not failed else f"{failed} case(s) below target")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
