"""Training speed: our NumPy step against the equivalent PyTorch CPU model, side by side.

One process run, interleaved rounds, medians. Each step: forward + backward over a window,
gradient clipping (global norm 5), an Adam update, the hidden state carried (detached) to the
next window. PyTorch runs one-hot -> nn.LSTM/GRU/RNN -> nn.Linear -> cross-entropy with 2
threads. Prints characters/second for both and the ratio ours/PyTorch; exits 1 when a config
misses its target ratio.

    python benchmarks/train_speed.py [--rounds 7] [--steps 3] [--only lstm-h256-l2-n64-t100]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from types import SimpleNamespace

# PyTorch's OpenMP threads busy-wait after each op by default; on 2 cores that spinning steals
# the CPU from whatever runs next (our BLAS threads in the interleaved rounds). Passive
# waiting keeps the comparison about the two implementations, not about their thread pools.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
from sidebyside import compare, header  # noqa: E402

from charlm.config import TrainConfig  # noqa: E402
from charlm.data import Batch  # noqa: E402
from charlm.model import CharModel  # noqa: E402
from charlm.step import TrainStep  # noqa: E402

V = 65
CONFIGS = {  # name: (cell, H, layers, N, T, target ratio)
    "lstm-h128-l1-n32-t64": ("lstm", 128, 1, 32, 64, 1.0),
    "lstm-h256-l2-n64-t100": ("lstm", 256, 2, 64, 100, 1.0),
    "lstm-h512-l2-n64-t100": ("lstm", 512, 2, 64, 100, 1.0),
    "gru-h256-l2-n64-t100": ("gru", 256, 2, 64, 100, 1.2),
    "rnn-h256-l2-n64-t100": ("rnn", 256, 2, 64, 100, 1.2),
}


def batches(rng: np.random.Generator, N: int, T: int, count: int) -> list[np.ndarray]:
    """Random (N, T+1) id windows: input = [:, :-1], target = [:, 1:]."""
    return [rng.integers(0, V, size=(N, T + 1)) for _ in range(count)]


def ours(cell: str, H: int, L: int, N: int, T: int, data: list[np.ndarray]):
    spec = SimpleNamespace(
        cell=cell,
        hidden_size=H,
        num_layers=L,
        dropout=0.0,
        embedding_size=0,
        gru_reset_after=cell == "gru",
        rnn_activation="tanh",
    )
    model = CharModel(spec, V)
    settings = TrainConfig(batch_size=N, seq_len=T, lr=2e-3, clip=5.0, optimizer="adam")
    step = TrainStep.create(model, model.init_params(np.random.default_rng(0)), settings)
    batches = [Batch(w[:, :-1], w[:, 1:], None) for w in data]

    def run() -> float:
        start = time.perf_counter()
        for i, batch in enumerate(batches):
            step(batch, i)  # `charlm train`'s step: loss, gradients, clipping, Adam
        return len(data) * N * T / (time.perf_counter() - start)

    return run


def torch_equivalent(cell: str, H: int, L: int, N: int, T: int, data: list[np.ndarray]):
    import torch  # noqa: PLC0415 - benchmark-only dependency
    from torch_peer import peer_step  # noqa: PLC0415

    torch.set_num_threads(2)
    step = peer_step(cell, V, H, L, N)
    tensors = [torch.from_numpy(w) for w in data]

    def run() -> float:
        start = time.perf_counter()
        for w in tensors:
            step(w)
        return len(tensors) * N * T / (time.perf_counter() - start)

    return run


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7, help="interleaved rounds (median)")
    parser.add_argument("--steps", type=int, default=3, help="training steps per round")
    parser.add_argument("--only", action="append", help="run only these configs")
    args = parser.parse_args()
    unknown = sorted(set(args.only or ()) - set(CONFIGS))
    if unknown:  # a typo would otherwise run nothing and report every target met
        parser.error(f"unknown --only {unknown}; choose from {sorted(CONFIGS)}")
    rng = np.random.default_rng(0)
    header("config")
    failed = 0
    for name, (cell, H, L, N, T, target) in CONFIGS.items():
        if args.only and name not in args.only:
            continue
        data = batches(rng, N, T, args.steps)
        runners = {
            "ours": ours(cell, H, L, N, T, data),
            "torch": torch_equivalent(cell, H, L, N, T, data),
        }
        failed += not compare(name, runners, args.rounds, target)
    print("all targets met" if not failed else f"{failed} config(s) below target")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
