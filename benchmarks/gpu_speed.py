"""GPU training speed: our step on CuPy against PyTorch's cuDNN nn.LSTM, side by side.

LSTM H512 L2 T100 at N64 and N256, vocabulary 65; forward + backward, norm clipping, Adam,
carried state. Interleaved rounds, medians, ratio ours/cuDNN (target >= 0.5 at N256; N64 is
reported for information). Exits 1 when the target is missed. Needs an NVIDIA GPU, CuPy
(charlm[gpu]) and a CUDA build of PyTorch; says so and exits 0 where they are missing (without
PyTorch CUDA it times ours alone and says that the target was not evaluated).

    python benchmarks/gpu_speed.py [--rounds 7] [--steps 10]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from types import SimpleNamespace

import numpy as np

from charlm.config import TrainConfig
from charlm.data import Batch
from charlm.device import Device, get_device
from charlm.errors import CharlmError
from charlm.model import CharModel
from charlm.step import TrainStep

V, H, L, T = 65, 512, 2, 100
TARGETS = {256: 0.5}  # batch size N: minimum ratio ours / cuDNN (chars/s)


def ours(N: int, data: list[np.ndarray], device: Device):
    spec = SimpleNamespace(
        cell="lstm",
        hidden_size=H,
        num_layers=L,
        dropout=0.0,
        embedding_size=0,
        gru_reset_after=False,
        rnn_activation="tanh",
    )
    model = CharModel(spec, V, device)
    settings = TrainConfig(batch_size=N, seq_len=T, lr=2e-3, clip=5.0, optimizer="adam")
    step = TrainStep.create(model, model.init_params(np.random.default_rng(0)), settings)
    batches = [Batch(w[:, :-1], w[:, 1:], None) for w in data]

    def run() -> float:
        device.sync()
        start = time.perf_counter()
        for i, batch in enumerate(batches):
            step(batch, i)  # `charlm train`'s step: loss, gradients, clipping, Adam
        device.sync()
        return len(batches) * N * T / (time.perf_counter() - start)

    return run


def cudnn(N: int, data: list[np.ndarray], torch: object):
    from torch_peer import peer_step  # noqa: PLC0415 - needs torch

    step = peer_step("lstm", V, H, L, N, "cuda")
    batches = [torch.from_numpy(w).to("cuda") for w in data]

    def run() -> float:
        torch.cuda.synchronize()
        start = time.perf_counter()
        for w in batches:
            step(w)
        torch.cuda.synchronize()
        return len(batches) * N * T / (time.perf_counter() - start)

    return run


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args()
    try:
        device = get_device("cuda")
    except CharlmError as exc:
        print(f"skipped: {exc}")
        return 0
    try:
        import torch  # noqa: PLC0415
    except ImportError:
        torch = None
    if torch is None or not torch.cuda.is_available():
        print("PyTorch with CUDA is not available: timing ours only", file=sys.stderr)
    print(f"{'config':22} {'ours chars/s':>13} {'cuDNN chars/s':>14} {'ratio':>6} target")
    failed = unevaluated = 0
    for N in (64, 256):
        data = [np.random.default_rng(i).integers(0, V, (N, T + 1)) for i in range(args.steps)]
        runners = {"ours": ours(N, data, device)}
        if torch is not None and torch.cuda.is_available():
            runners["cudnn"] = cudnn(N, data, torch)
        for run in runners.values():
            run()  # warm-up: kernel compilation, cuDNN plans
        speeds: dict[str, list[float]] = {k: [] for k in runners}
        for _ in range(args.rounds):
            for key, run in runners.items():
                speeds[key].append(run())
        o = statistics.median(speeds["ours"])
        c = statistics.median(speeds["cudnn"]) if "cudnn" in speeds else float("nan")
        ratio = o / c
        target = TARGETS.get(N)
        if target is None:
            verdict = "info"
        elif "cudnn" not in speeds:
            unevaluated += 1
            verdict = f">={target} not evaluated (no cuDNN)"
        else:
            ok = ratio >= target
            failed += not ok
            verdict = f">={target} {'PASS' if ok else 'FAIL'}"
        print(f"{f'lstm-h512-l2-n{N}-t100':22} {o:13,.0f} {c:14,.0f} {ratio:6.2f} {verdict}")
    if failed:
        print(f"{failed} config(s) below target")
    elif unevaluated:
        print("target not evaluated: needs a CUDA build of PyTorch")
    else:
        print("all targets met")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
