"""Recurrent cells: each runs forward and backward over a whole window of T steps.

API (CS231n style, nothing kept between calls):
    forward(params, x, state, resets) -> (out (T, H, N), state, cache)
    backward(dout (T, H, N), cache)   -> (dx, dstate, grads)   grads has params' keys
    step(params, x, state)            -> (out (H, N), state)   one step, for sampling
x is ids (T, N) for the first layer or vectors (T, D, N); resets (T, N) bool or None marks the
steps before which the state is zeroed (sequence starts in lines mode).
"""

from __future__ import annotations

from charlm.cells.gru import GRU
from charlm.cells.lstm import LSTM
from charlm.cells.rnn import RNN

Cell = RNN | GRU | LSTM
CELLS = ("rnn", "gru", "lstm")


def make_cell(
    kind: str, hidden_size: int, activation: str = "tanh", gru_reset_after: bool = False
) -> Cell:
    """The cell named `kind` ('rnn', 'gru' or 'lstm') with its options."""
    if kind == "rnn":
        return RNN(hidden_size, activation)
    if kind == "gru":
        return GRU(hidden_size, gru_reset_after)
    if kind == "lstm":
        return LSTM(hidden_size)
    raise ValueError(f"unknown cell {kind!r}; choose one of {CELLS}")


__all__ = ["CELLS", "GRU", "LSTM", "RNN", "Cell", "make_cell"]
