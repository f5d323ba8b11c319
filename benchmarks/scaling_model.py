"""The arithmetic of docs/scaling.md: bytes all-reduced and FLOPs per step of charlm's LSTM,
and the data-parallel efficiency they imply on K GPUs (NCCL ring all-reduce). It prints the
markdown tables the document holds (tests/test_mpi.py checks they agree).

    python benchmarks/scaling_model.py

Parameters are counted from charlm's own `CharModel.param_shapes`. FLOPs count the GEMMs: a
weight matrix of P entries costs 2P FLOPs per character forward and 4P backward (its input
and its own gradient), so 6P per character. The first layer's Wx is no GEMM with one-hot
input (a column gather forward, a scatter-add backward) and is left out; so are the O(H)
element-wise gate operations (about 1-3% more).
"""

from __future__ import annotations

import sys

from charlm.config import config_from_dict
from charlm.model import CharModel
from charlm.params import param_name

V = 67  # tinyshakespeare: 65 characters + <UNK> and <EOS>
SIZES = (256, 512, 1024, 2048)
LAYERS = (1, 2, 3, 4)
N_RANK, T = 64, 100  # sequences per GPU and BPTT length: n*T characters per GPU per step
BYTES = 4  # float32 gradients
ACHIEVED = 20e12  # FLOP/s a GPU sustains on the recurrent GEMMs (an assumption, see the doc)
# name: (bytes/s per GPU per direction, latency per ring hop in s)
LINKS = {
    "NVLink 450 GB/s": (450e9, 2e-6),
    "400 Gb/s": (400e9 / 8, 10e-6),
    "100 Gb/s": (100e9 / 8, 10e-6),
}
SETUPS = (  # (GPUs, link)
    (8, "NVLink 450 GB/s"),
    (8, "400 Gb/s"),
    (8, "100 Gb/s"),
    (64, "400 Gb/s"),
    (64, "100 Gb/s"),
)


def counts(H: int, L: int) -> tuple[int, int]:
    """(all parameters, parameters in GEMMs) of a one-hot LSTM of L layers of H units."""
    config = config_from_dict({"model": {"cell": "lstm", "hidden_size": H, "num_layers": L}})
    shapes = CharModel(config.model, V).param_shapes()
    total = sum(_size(s) for s in shapes.values())
    gemm = sum(_size(s) for k, s in shapes.items() if len(s) == 2 and k != param_name(0, "Wx"))
    return total, gemm


def _size(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def allreduce_seconds(nbytes: float, K: int, link: str) -> float:
    """NCCL ring all-reduce: 2(K-1)/K of the bytes over each GPU's link, 2(K-1) hops."""
    bandwidth, hop = LINKS[link]
    return 2 * (K - 1) / K * nbytes / bandwidth + 2 * (K - 1) * hop


def compute_seconds(gemm: int, n: int = N_RANK, t: int = T) -> float:
    return 6 * gemm * n * t / ACHIEVED


def efficiency(compute: float, comm: float) -> float:
    """Step time on one GPU over step time on K (the same per-GPU work), no overlap."""
    return compute / (compute + comm)


def tables() -> str:
    out = ["| H | layers | parameters | MB all-reduced | GFLOP per GPU | compute ms |",
           "|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
    for H in SIZES:
        for L in LAYERS:
            total, gemm = counts(H, L)
            flop = 6 * gemm * N_RANK * T
            out.append(f"| {H} | {L} | {total:,} | {total * BYTES / 1e6:.1f} | "
                       f"{flop / 1e9:,.0f} | {compute_seconds(gemm) * 1e3:.1f} |")  # fmt: skip
    out += ["", "| H | layers | " + " | ".join(f"K={k}, {link}" for k, link in SETUPS) + " |",
            "|---:|---:|" + "---:|" * len(SETUPS)]  # fmt: skip
    for H in SIZES:
        for L in (1, 4):
            total, gemm = counts(H, L)
            cells = []
            for K, link in SETUPS:
                comm = allreduce_seconds(total * BYTES, K, link)
                cells.append(f"{comm * 1e3:.1f} ms, {efficiency(compute_seconds(gemm), comm):.0%}")
            out.append(f"| {H} | {L} | " + " | ".join(cells) + " |")
    H, L = 1024, 2
    total, gemm = counts(H, L)
    out += ["", "| sequences per GPU | accumulated steps | " +
            " | ".join(f"K={k}, {link}" for k, link in SETUPS) + " |",
            "|---:|---:|" + "---:|" * len(SETUPS)]  # fmt: skip
    for n, accumulate in ((8, 1), (16, 1), (64, 1), (256, 1), (16, 4), (64, 4)):
        compute = compute_seconds(gemm, n) * accumulate
        cells = [f"{efficiency(compute, allreduce_seconds(total * BYTES, K, link)):.0%}"
                 for K, link in SETUPS]  # fmt: skip
        out.append(f"| {n} | {accumulate} | " + " | ".join(cells) + " |")
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    sys.stdout.write(tables())
