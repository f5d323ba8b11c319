"""The PyTorch peer of `charlm train`, for the side-by-side benchmarks: one process, PyTorch's
defaults (no environment variable or setting changed), the same model and step.

One-hot -> nn.LSTM/GRU/RNN -> nn.Linear -> cross-entropy, Adam (lr 2e-3), global norm clipping
at 5, the hidden state carried (detached) from window to window, on random ids. Prints one JSON
line: {"chars_per_s": median over the timed windows of steps}.

    python benchmarks/torch_peer.py --cell lstm --hidden 256 --layers 2 --batch 64 --seq 100
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch


def peer_step(
    cell: str, V: int, H: int, L: int, N: int, device: str = "cpu"
) -> Callable[[torch.Tensor], None]:
    """One training step of the PyTorch model on a (N, T+1) id window (input = [:, :-1],
    target = [:, 1:]); the state is carried, detached, from call to call."""
    torch.manual_seed(0)
    rnn_cls = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU, "rnn": torch.nn.RNN}[cell]
    rnn = rnn_cls(V, H, L, batch_first=True).to(device)
    head = torch.nn.Linear(H, V).to(device)
    params = list(rnn.parameters()) + list(head.parameters())
    opt = torch.optim.Adam(params, lr=2e-3)
    zeros = torch.zeros(L, N, H, device=device)
    state: Any = (zeros, zeros.clone()) if cell == "lstm" else zeros

    def step(w: torch.Tensor) -> None:
        nonlocal state
        x = torch.nn.functional.one_hot(w[:, :-1], V).float()
        out, st = rnn(x, state)
        loss = torch.nn.functional.cross_entropy(head(out).reshape(-1, V), w[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 5.0)
        opt.step()
        state = tuple(s.detach() for s in st) if cell == "lstm" else st.detach()

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cell", choices=("rnn", "gru", "lstm"), default="lstm")
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--seq", type=int, default=100)
    parser.add_argument("--vocab", type=int, default=67)
    parser.add_argument("--steps", type=int, default=30, help="timed steps")
    parser.add_argument("--window", type=int, default=5, help="steps per timed window")
    args = parser.parse_args()
    V, N, T = args.vocab, args.batch, args.seq
    step = peer_step(args.cell, V, args.hidden, args.layers, N)
    windows = [torch.randint(0, V, (N, T + 1)) for _ in range(args.window)]
    for w in windows:  # warm-up, as charlm's first log window is left out
        step(w)
    speeds = []
    for _ in range(max(1, args.steps // args.window)):
        start = time.perf_counter()
        for w in windows:
            step(w)
        speeds.append(len(windows) * N * T / (time.perf_counter() - start))
    print(json.dumps({"chars_per_s": statistics.median(speeds)}))


if __name__ == "__main__":
    main()
