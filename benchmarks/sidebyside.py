"""Shared by the speed benchmarks: ours and PyTorch measured side by side, interleaved.

These machines are noisy, so every round runs both (after a warm-up) and the figures quoted
are medians: of each side's throughput, and of the per-round ratio ours / PyTorch.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable


def compare(name: str, runners: dict[str, Callable[[], float]], rounds: int, target: float) -> bool:
    """Run 'ours' and 'torch' (each returns characters/second) `rounds` times, interleaved;
    print one table row and return whether the median ratio meets `target`."""
    for run in runners.values():
        run()  # warm-up: allocations, thread pools
    speeds: dict[str, list[float]] = {key: [] for key in runners}
    ratios = []
    for _ in range(rounds):
        for key, run in runners.items():
            speeds[key].append(run())
        ratios.append(speeds["ours"][-1] / speeds["torch"][-1])
    ours, torch = statistics.median(speeds["ours"]), statistics.median(speeds["torch"])
    ratio = statistics.median(ratios)
    ok = ratio >= target
    print(
        f"{name:24} {ours:13,.0f} {torch:14,.0f} {ratio:7.2f} >={target} {'PASS' if ok else 'FAIL'}"
    )
    return ok


def header(first: str) -> None:
    """The table header matching `compare`'s rows."""
    print(f"{first:24} {'ours chars/s':>13} {'torch chars/s':>14} {'ratio':>7} target")
