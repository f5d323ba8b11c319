"""What every cell shares: initialisation, the reset of carried state, window buffers.

Buffers come from a `Workspace` (persistent in training, fresh elsewhere), by name.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from charlm.device import CPU, Device, xp_of
from charlm.ops import time_columns
from charlm.workspace import Workspace

Array = Any


class CellBase:
    """A cell's size, the device it computes on, and that device's kernels for it."""

    name: str
    num_gates: int
    state_names: tuple[str, ...]

    def __init__(self, hidden_size: int, device: Device = CPU) -> None:
        self.H = hidden_size
        self.device = device
        self.kernels = device.kernels(self.name)

    def sampling_params(self, params: dict[str, Array]) -> dict[str, Array]:
        """The parameters as `step` reads them, arranged once per sampling run (a cell may add
        derived arrays); by default as they are."""
        return params

    def param_shapes(self, D: int) -> dict[str, tuple[int, ...]]:
        """Shape of each parameter for input width D."""
        G = self.num_gates * self.H
        return {"Wx": (G, D), "Wh": (G, self.H), "b": (G,)}


def orthogonal(rng: np.random.Generator, n: int, dtype: Any) -> np.ndarray:
    """A random (n, n) orthogonal matrix (keeps the recurrent signal's norm at the start)."""
    q, r = np.linalg.qr(rng.standard_normal((n, n)))
    return (q * np.sign(np.diag(r))).astype(dtype)


def input_weights(rng: np.random.Generator, rows: int, D: int, H: int, one_hot: bool, dtype: Any):
    """Input weights (rows, D), Gaussian.

    Dense input sums D terms, so std 1/sqrt(D) keeps the pre-activation near unit scale; one-hot
    input picks a single column, which then *is* the pre-activation: std 1/sqrt(H), the size of
    the recurrent term at the start.
    """
    scale = 1.0 / np.sqrt(H if one_hot else D)
    return (rng.standard_normal((rows, D)) * scale).astype(dtype)


def recurrent_weights(rng: np.random.Generator, gates: int, H: int, dtype: Any) -> np.ndarray:
    """(gates*H, H): one orthogonal block per gate, stacked."""
    return np.concatenate([orthogonal(rng, H, dtype) for _ in range(gates)], axis=0)


def keep_mask(resets: Array | None, dtype: Any, ws: Workspace) -> Array | None:
    """(T, N) multiplier that zeroes the state before steps where a sequence starts."""
    if resets is None:
        return None
    mask = ws.empty("keep_mask", resets.shape, dtype)
    mask[...] = ws.xp.logical_not(resets)
    return mask


def masked_prev(prev: Array, t: int, keep_mask: Array | None, store: Array | None) -> Array:
    """The state step t reads: `prev` (the state after step t-1), zeroed in the columns n where
    keep_mask[t, n] is 0. `store` (T, H, N) receives the masked copy so backward reads the same
    value it used."""
    if keep_mask is None:
        return prev
    return xp_of(prev).multiply(prev, keep_mask[t], out=store[t])


def prev_columns(states: Array, masked: Array | None, ws: Workspace) -> Array:
    """(H, T*N): the state every step read, side by side, for the dWh = dA h_prev^T GEMM.

    `states` is (T+1, H, N) with the carried-in state first; `masked` the reset copies.
    """
    return time_columns(states[:-1] if masked is None else masked, ws, "h_prev_cols")


def masked_store(
    keep_mask: Array | None, ws: Workspace, name: str, shape: tuple[int, ...], dtype: Any
):
    """Buffer (T, H, N) for the masked previous states (only needed when there are resets)."""
    return None if keep_mask is None else ws.empty(name, shape, dtype)


def state_sequence(first: Array, T: int, ws: Workspace, name: str) -> Array:
    """(T+1, H, N) buffer for a state over the window; block 0 holds the carried-in state."""
    out = ws.empty(name, (T + 1, *first.shape), first.dtype)
    out[0] = first
    return out


def column_states(first: Array, T: int, ws: Workspace, name: str) -> Array:
    """(H, (T+1)*N) buffer for a state over the window in column layout: block t holds the
    state after step t (block 0 the carried-in one). Window GEMMs then read it without a copy."""
    H, N = first.shape
    out = ws.empty(name, (H, (T + 1) * N), first.dtype)
    out[:, :N] = first
    return out


def empty_grads(xp: Any, params: dict[str, Array]) -> dict[str, Array]:
    """Fresh gradient arrays shaped like `params` (when no flat buffer is given)."""
    return {k: xp.empty_like(v) for k, v in params.items()}


def input_grad_buffer(ws: Workspace, x: Array, Wx: Array, columns: int) -> Array | None:
    """(D, T*N) buffer for dx when the input is vectors (another layer's output); None for ids."""
    if x.dtype.kind in "iu":
        return None
    return ws.empty("dx", (Wx.shape[1], columns), Wx.dtype)
