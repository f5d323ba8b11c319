"""Pure shared math: activations, the input projection, softmax cross-entropy.

Sequences are stored time-major with each step feature-major, as in the course notes' `(n_a, m)`
shapes: a hidden sequence is `(T, H, N)`, so each step's `(H, N)` block is contiguous for the
elementwise gate work, and whole-window weight gradients are single GEMMs over `(H, T*N)`.
Every function takes its array module from its arguments (`xp_of`), never imports one for math.
"""

from __future__ import annotations

from typing import Any

from charlm.device import Device, xp_of
from charlm.workspace import Workspace

Array = Any  # a numpy.ndarray or cupy.ndarray


def sigmoid(x: Array, out: Array | None = None) -> Array:
    """sigma(x) = 1 / (1 + e^-x), computed as 0.5 * tanh(0.5 x) + 0.5 (no overflow, one ufunc).

    d sigma / dx = sigma (1 - sigma).
    """
    xp = xp_of(x)
    out = xp.multiply(x, 0.5, out=out)
    xp.tanh(out, out=out)
    out *= 0.5
    out += 0.5
    return out


def activate(kind: str, x: Array, out: Array | None = None) -> Array:
    """tanh(x) or relu(x) = max(x, 0), written into `out`."""
    xp = xp_of(x)
    if kind == "tanh":
        return xp.tanh(x, out=out)
    return xp.maximum(x, 0, out=out)


def activate_backward(kind: str, y: Array, dy: Array, out: Array | None = None) -> Array:
    """d/dx from the activation's output y: tanh' = 1 - y^2, relu' = [y > 0]; times dy."""
    xp = xp_of(y)
    if kind == "tanh":
        out = xp.multiply(y, y, out=out)
        xp.subtract(1, out, out=out)
        out *= dy
        return out
    return xp.multiply(dy, y > 0, out=out)


def is_ids(x: Array) -> bool:
    """Whether `x` holds token ids (integers) rather than input vectors."""
    return x.dtype.kind in "iu"


def time_columns(a: Array, ws: Workspace | None = None, name: str = "columns") -> Array:
    """(T, K, N) -> (K, T*N): every step's columns side by side, for one big GEMM.

    A view when `a` already is one (a `column_sequence`), else a transposing copy, into the
    buffer `name` of `ws` when one is given.
    """
    T, K, N = a.shape
    cols = a.transpose(1, 0, 2)
    item = a.itemsize
    if ws is None or (cols.strides[1] == N * item and cols.strides[2] == item):
        return cols.reshape(K, T * N)  # a view (rows may be strided: BLAS reads them in place)
    out = ws.empty(name, (K, T * N), a.dtype)
    out.reshape(K, T, N)[...] = cols
    return out


def column_sequence(cols: Array, T: int) -> Array:
    """Inverse of `time_columns`, as a view: (K, T*N) -> (T, K, N), step t = cols' block t."""
    K = cols.shape[0]
    return cols.reshape(K, T, -1).transpose(1, 0, 2)


def project_inputs(device: Device, Wx: Array, b: Array, x: Array, out: Array) -> Array:
    """The input term of every gate for all T steps before the recurrence: Wx x<t> + b.

    Wx: (G, D) fused gate weights, b: (G,).
    x: ids (T, N) -- then Wx one_hot(x) is a gather of Wx's columns -- or vectors (T, D, N).
    Writes out (T, G, N), contiguous: each step's gates are one block for the elementwise work.
    """
    if is_ids(x):
        if x.size < Wx.shape[1]:  # fewer positions than table columns (sampling): gather first
            device.gather_columns(Wx, x, out)
            out += b[:, None]
            return out
        # Fold the bias into the (small) table so the big (T, G, N) array is written once.
        return device.gather_columns(Wx + b[:, None], x, out)
    device.xp.matmul(Wx, x, out=out)  # one GEMM per step, (G, D) @ (D, N)
    out += b[:, None]
    return out


def one_hot_rows(ids: Array, V: int, dtype: Any, ws: Workspace | None = None) -> Array:
    """(T*N, V) matrix whose row t*N+n is the one-hot vector of ids[t, n]."""
    xp = xp_of(ids)
    flat = ids.reshape(-1)
    ws = ws or Workspace.fresh(xp)
    out = ws.zeros("one_hot", (flat.shape[0], V), dtype)
    out[xp.arange(flat.shape[0]), flat] = 1
    return out


def project_inputs_backward(
    device: Device,
    dgates_cols: Array,
    x: Array,
    Wx: Array,
    dWx: Array,
    db: Array,
    dx: Array | None = None,
    ws: Workspace | None = None,
) -> Array | None:
    """Backward of `project_inputs`: dWx and db (written into them) and dx (returned) from
    dgates_cols = dLoss/d(Wx x + b) as columns (G, T*N) (`time_columns` of the (T, G, N) gradient).

    dWx = sum_t dA<t> x<t>^T and db = sum_t dA<t> 1: one GEMM and one reduction over the window;
    dx = Wx^T dA, one GEMM into `dx` (D, T*N), returned as a (T, D, N) view of its columns. For
    ids, x^T is a one-hot matrix: the device's `scatter_columns`, and dx is None. `ws` holds the
    one-hot or column copy of x.
    """
    xp = device.xp
    xp.sum(dgates_cols, axis=1, out=db)
    if is_ids(x):
        device.scatter_columns(dgates_cols, x, dWx, ws)
        return None
    xp.matmul(dgates_cols, time_columns(x, ws, "x_cols").T, out=dWx)
    xp.matmul(Wx.T, dgates_cols, out=dx)
    return column_sequence(dx, x.shape[0])


def softmax_cross_entropy(logits: Array, targets: Array) -> tuple[Array, Array, Array]:
    """Mean cross-entropy  L = -(1/M) sum_m log softmax(z_m)[y_m]  and its gradient.

    logits: (V, M) -- one column per position; targets: (M,) ids.
    Returns (loss in nats per position as a 0-d array, dlogits (V, M) = (softmax(z) -
    one_hot(y)) / M, per-position losses (M,)). `logits` is overwritten (it becomes dlogits)
    to save memory. The loss stays an array so that on a GPU reading it (float()) can wait
    until the backward pass is queued too: each read waits for the device to catch up.
    """
    xp = xp_of(logits)
    V, M = logits.shape
    cols = xp.arange(M)
    logits -= logits.max(axis=0)  # shift for stability; softmax is unchanged
    picked = logits[targets, cols]  # z_y - max
    xp.exp(logits, out=logits)
    total = logits.sum(axis=0)
    losses = xp.log(total) - picked  # -log p_y = log sum e^z - z_y
    logits *= 1.0 / total  # probabilities
    logits[targets, cols] -= 1.0
    logits *= 1.0 / M
    return losses.mean(), logits, losses


def log_softmax(logits: Array) -> Array:
    """log softmax over axis 0 of (V, M) logits (a new array)."""
    xp = xp_of(logits)
    shifted = logits - logits.max(axis=0)
    return shifted - xp.log(xp.exp(shifted).sum(axis=0))
