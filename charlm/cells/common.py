"""What every cell shares: initialisation, the carried-state reset, scratch buffers."""

from __future__ import annotations

from typing import Any

import numpy as np

from charlm.backend import xp_of
from charlm.ops import time_columns

Array = Any


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


def keep_mask(resets: Array | None, dtype: Any) -> Array | None:
    """(T, N) multiplier that zeroes the state before steps where a sequence starts."""
    if resets is None:
        return None
    xp = xp_of(resets)
    return xp.logical_not(resets).astype(dtype)


def effective_prev(prev: Array, t: int, keep: Array | None, store: Array | None) -> Array:
    """The state step t reads: `prev` (the state after step t-1), zeroed in the columns n where
    keep[t, n] is 0. `store` (T, H, N) receives the masked copy so backward reads the same
    value it used."""
    if keep is None:
        return prev
    return xp_of(prev).multiply(prev, keep[t], out=store[t])


def prev_columns(states: Array, masked: Array | None) -> Array:
    """(H, T*N): the state every step read, side by side, for the dWh = dA h_prev^T GEMM.

    `states` is (T+1, H, N) with the carried-in state first; `masked` the reset copies.
    """
    return time_columns(states[:-1] if masked is None else masked)


def masked_store(keep: Array | None, like: Array, H: int, T: int, N: int) -> Array | None:
    """Buffer (T, H, N) for the masked previous states (only needed when there are resets)."""
    return None if keep is None else xp_of(like).empty((T, H, N), dtype=like.dtype)


def state_sequence(first: Array, T: int) -> Array:
    """(T+1, H, N) buffer for a state over the window; block 0 holds the carried-in state."""
    xp = xp_of(first)
    out = xp.empty((T + 1, *first.shape), dtype=first.dtype)
    out[0] = first
    return out


def column_states(first: Array, T: int) -> Array:
    """(H, (T+1)*N) buffer for a state over the window in column layout: block t holds the
    state after step t (block 0 the carried-in one). Window GEMMs then read it without a copy."""
    xp = xp_of(first)
    H, N = first.shape
    out = xp.empty((H, (T + 1) * N), dtype=first.dtype)
    out[:, :N] = first
    return out
