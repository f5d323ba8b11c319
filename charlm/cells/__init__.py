"""Recurrent cells: each runs forward and backward over a whole window of T steps.

API (CS231n style, nothing kept between calls but the buffers of an optional workspace):
    forward(params, x, state, resets, ws) -> (out (T, H, N), state, cache)
    backward(dout (T, H, N), cache, grads) -> (dx, dstate, grads)   grads has params' keys
    step(params, x, state)                 -> (out (H, N), state)   one step, for sampling
x is ids (T, N) for the first layer or vectors (T, D, N); resets (T, N) bool or None marks the
steps before which the state is zeroed (sequence starts in lines mode).

A cell computes on the device it was made for, with that device's kernels for its elementwise
step work; each cell module holds the NumPy reference kernels next to its equations.
"""

from __future__ import annotations

from typing import Any

from charlm.cells import gru, lstm, rnn
from charlm.cells.gru import GRU
from charlm.cells.lstm import LSTM
from charlm.cells.rnn import RNN
from charlm.device import CPU, Device

Cell = RNN | GRU | LSTM
CELLS = ("rnn", "gru", "lstm")


def make_cell(
    kind: str,
    hidden_size: int,
    activation: str = "tanh",
    gru_reset_after: bool = False,
    device: Device = CPU,
) -> Cell:
    """The cell named `kind` ('rnn', 'gru' or 'lstm') with its options, on `device`."""
    if kind == "rnn":
        return RNN(hidden_size, activation, device)
    if kind == "gru":
        return GRU(hidden_size, gru_reset_after, device)
    if kind == "lstm":
        return LSTM(hidden_size, device)
    raise ValueError(f"unknown cell {kind!r}; choose one of {CELLS}")


def reference_kernels(kind: str) -> Any:
    """The NumPy reference kernels of cell `kind` (they also run on CuPy arrays)."""
    return {"rnn": rnn.REFERENCE, "gru": gru.REFERENCE, "lstm": lstm.REFERENCE}[kind]


__all__ = ["CELLS", "GRU", "LSTM", "RNN", "Cell", "make_cell", "reference_kernels"]
