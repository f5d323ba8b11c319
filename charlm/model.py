"""The stacked character model (the notes' deep RNN): ids -> L recurrent layers -> softmax.

    x<t> (id) -> [embedding] -> layer 1 -> [dropout] -> ... -> layer L -> [dropout]
              -> y^<t> = softmax(W_y a<t> + b_y),   loss = mean_t -log y^<t>[y<t>]

The model holds the architecture and the device it computes on; parameters live in a mapping
passed to every call (names from `charlm.params`: `embed`, `l{i}.Wx`, `l{i}.Wh`, `l{i}.b`
[, `l{i}.bhn`], `Wy`, `by`) -- in training a `FlatParams`, whose gradients `loss_and_grads`
writes into a second one, with the window's buffers from a persistent `Workspace`. Batches come
in as (N, T) ids; inside, sequences are (T, H, N) as in `charlm.ops`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol

import numpy as np

from charlm.cells import Cell, make_cell
from charlm.cells.base import empty_grads
from charlm.device import CPU, Device
from charlm.ops import (
    column_sequence,
    softmax_cross_entropy,
    time_columns,
)
from charlm.params import layer_params, param_name
from charlm.workspace import Workspace

Array = Any
State = list[tuple[Array, ...]]  # per layer: (h,) or (h, c), each (H, N)


class ModelSpec(Protocol):
    """The `model` section of the config (charlm.config.ModelConfig)."""

    cell: str
    hidden_size: int
    num_layers: int
    dropout: float
    embedding_size: int
    gru_reset_after: bool
    rnn_activation: str


class CharModel:
    """Stacked RNN/GRU/LSTM character language model over a vocabulary of V tokens."""

    def __init__(self, spec: ModelSpec, vocab_size: int, device: Device = CPU) -> None:
        self.spec = spec
        self.V = vocab_size
        self.H = spec.hidden_size
        self.device = device
        self.cells: list[Cell] = [
            make_cell(
                spec.cell, spec.hidden_size, spec.rnn_activation, spec.gru_reset_after, device
            )  # fmt: skip
            for _ in range(spec.num_layers)
        ]

    def init_params(self, rng: np.random.Generator, dtype: Any = np.float32) -> dict[str, Array]:
        """Fresh parameters (NumPy arrays; `FlatParams.of` moves them to the device)."""
        params: dict[str, Array] = {}
        E = self.spec.embedding_size
        if E:
            params["embed"] = (rng.standard_normal((E, self.V)) * 0.1).astype(dtype)
        D, one_hot = (E, False) if E else (self.V, True)
        for i, cell in enumerate(self.cells):
            for key, value in cell.init_params(D, rng, dtype, one_hot).items():
                params[param_name(i, key)] = value
            D, one_hot = self.H, False
        params["Wy"] = (rng.standard_normal((self.V, self.H)) / np.sqrt(self.H)).astype(dtype)
        params["by"] = np.zeros(self.V, dtype=dtype)
        return params

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        """Expected shape of every parameter, in `init_params` order (to validate checkpoints)."""
        shapes: dict[str, tuple[int, ...]] = {}
        E, H = self.spec.embedding_size, self.H
        if E:
            shapes["embed"] = (E, self.V)
        D = E or self.V
        for i, cell in enumerate(self.cells):
            shapes.update({param_name(i, k): s for k, s in cell.param_shapes(D).items()})
            D = H
        shapes.update({"Wy": (self.V, H), "by": (self.V,)})
        return shapes

    def initial_state(self, N: int, dtype: Any = np.float32) -> State:
        """The zero state for N parallel sequences, on the model's device."""
        xp, H = self.device.xp, self.H
        return [tuple(xp.zeros((H, N), dtype=dtype) for _ in c.state_names) for c in self.cells]

    def restart_rows(self, state: State, rows: np.ndarray) -> State:
        """`state` with the sequences (columns) where `rows` (N,) is True set to zero."""
        keep = self.device.send(~rows).astype(state[0][0].dtype)  # (N,): scales every column
        return [tuple(s * keep for s in layer) for layer in state]

    def forward(
        self,
        params: Mapping[str, Array],
        x: Array,
        state: State,
        resets: Array | None = None,
        rng: Any = None,
        ws: Workspace | None = None,
    ) -> tuple[Array, State, dict[str, Any]]:
        """Logits (V, T, N) for ids x (N, T). Dropout is applied only when `rng` (anything with
        `random(shape)`: a NumPy generator, `Device.uniforms`) is given.

        resets (N, T) bool: zero the state before those steps (sequence starts). `ws`: where the
        window's buffers live (fresh arrays when None).
        """
        xp = self.device.xp
        ws = ws or Workspace.fresh(xp)
        ids = xp.ascontiguousarray(x.T)  # (T, N): time-major like every sequence inside
        T, N = ids.shape
        rs = None if resets is None else xp.ascontiguousarray(resets.T)
        inp: Array = ids
        if "embed" in params:
            embed = params["embed"]
            out = ws.empty("embedded", (T, embed.shape[0], N), embed.dtype)
            inp = self.device.gather_columns(embed, ids, out)  # (T, E, N)
        p_drop = self.spec.dropout if rng is not None else 0.0
        caches, masks, new_state = [], [], []
        for i, cell in enumerate(self.cells):
            out, st, cache = cell.forward(layer_params(params, i), inp, state[i], rs,
                                          ws.scope(f"l{i}"))  # fmt: skip
            caches.append(cache)
            new_state.append(st)
            if p_drop > 0:
                mask = dropout_mask(rng, out.shape, p_drop, out.dtype)
                out = out * mask  # inverted dropout: expected activation unchanged
                masks.append(mask)
            inp = out
        top = time_columns(inp, ws, "top")  # (H, T*N): the output layer is one GEMM
        Wy = params["Wy"]
        logits = xp.matmul(Wy, top, out=ws.empty("logits", (self.V, T * N), Wy.dtype))
        logits += params["by"][:, None]
        cache = {"ids": ids, "caches": caches, "masks": masks, "top": top, "params": params,
                 "ws": ws}  # fmt: skip
        return logits.reshape(self.V, T, N), new_state, cache

    def backward(
        self, dlogits: Array, cache: dict[str, Any], grads: Mapping[str, Array] | None = None
    ) -> tuple[State, Mapping[str, Array]]:
        """From dLoss/dlogits (V, T, N) to (dLoss/d initial state, parameter gradients). The
        gradients are written into `grads` when given (a FlatParams), else into fresh arrays."""
        params, ws, xp = cache["params"], cache["ws"], self.device.xp
        _, T, N = dlogits.shape
        if grads is None:
            grads = empty_grads(xp, params)
        d2 = dlogits.reshape(self.V, T * N)
        xp.matmul(d2, cache["top"].T, out=grads["Wy"])
        xp.sum(d2, axis=1, out=grads["by"])
        dtop = xp.matmul(params["Wy"].T, d2, out=ws.empty("dtop", (self.H, T * N), d2.dtype))
        dout = column_sequence(dtop, T)  # (T, H, N) view
        dstate: State = [()] * len(self.cells)
        for i in range(len(self.cells) - 1, -1, -1):
            if cache["masks"]:
                dout = dout * cache["masks"][i]
            dout, dstate[i], _ = self.cells[i].backward(dout, cache["caches"][i],
                                                        layer_params(grads, i))  # fmt: skip
        if "embed" in params:
            dembedded = time_columns(dout, ws, "dembedded")
            self.device.scatter_columns(dembedded, cache["ids"], grads["embed"], ws)
        return dstate, grads

    def loss(
        self,
        params: Mapping[str, Array],
        x: Array,
        y: Array,
        state: State,
        resets: Array | None = None,
        rng: Any = None,
    ) -> tuple[float, Mapping[str, Array], State, State]:
        """Mean cross-entropy (nats/char) of targets y (N, T) and its gradients, in fresh arrays.

        Returns (loss, grads, final state, dLoss/d initial state).
        """
        loss, dlogits, new_state, cache = self.forward_loss(params, x, y, state, resets, rng)
        dstate, grads = self.backward(dlogits, cache)
        return float(loss), grads, new_state, dstate  # read after backward is queued

    def loss_and_grads(
        self,
        params: Mapping[str, Array],
        grads: Mapping[str, Array],
        x: Array,
        y: Array,
        state: State,
        resets: Array | None,
        rng: Any,
        ws: Workspace,
    ) -> tuple[Array, State]:
        """The training step's half of `loss`: gradients written into `grads`, buffers from
        `ws`, and the loss left on the device as a 0-d array (nothing is read back)."""
        loss, dlogits, new_state, cache = self.forward_loss(params, x, y, state, resets, rng, ws)
        self.backward(dlogits, cache, grads)
        return loss, new_state

    def forward_loss(
        self,
        params: Mapping[str, Array],
        x: Array,
        y: Array,
        state: State,
        resets: Array | None = None,
        rng: Any = None,
        ws: Workspace | None = None,
    ) -> tuple[Array, Array, State, dict[str, Any]]:
        """The forward half of `loss`: (mean cross-entropy as a 0-d array, dLoss/dlogits
        (V, T, N), final state, cache for `backward`)."""
        logits, new_state, cache = self.forward(params, x, state, resets, rng, ws)
        _, T, N = logits.shape
        targets = self.device.xp.asarray(y.T.reshape(-1))
        loss, dlogits, _ = softmax_cross_entropy(logits.reshape(self.V, T * N), targets)
        return loss, dlogits.reshape(self.V, T, N), new_state, cache

    def stepper(self, params: dict[str, Array]) -> Callable[[Array, State], tuple[Array, State]]:
        """`step` for a fixed set of parameters, for sampling loops: the per-layer parameter
        dicts are split out (and arranged as each cell's `sampling_params` says) once, not on
        every character."""
        layers = [
            cell.sampling_params(layer_params(params, i)) for i, cell in enumerate(self.cells)
        ]
        embed, Wy, by = params.get("embed"), params["Wy"], params["by"][:, None]
        xp = self.device.xp

        def step(ids: Array, state: State) -> tuple[Array, State]:
            inp = ids if embed is None else xp.take(embed, ids, axis=1)  # (E, N)
            new_state = []
            for cell, layer, st in zip(self.cells, layers, state, strict=True):
                inp, st = cell.step(layer, inp, st)
                new_state.append(st)
            logits = Wy @ inp
            logits += by
            return logits, new_state

        return step

    def step(self, params: dict[str, Array], ids: Array, state: State) -> tuple[Array, State]:
        """One step for sampling: ids (N,) -> (logits (V, N), new state). No dropout, no cache."""
        return self.stepper(params)(ids, state)


def dropout_mask(rng: Any, shape: tuple[int, ...], p: float, dtype: Any) -> Array:
    """Inverted dropout's mask (u >= p) / (1 - p) for uniforms u from `rng`: drawn by the
    source's own `mask` where it has one (`cudaops.DeviceDropout`, one kernel on the GPU)."""
    if hasattr(rng, "mask"):
        return rng.mask(shape, p, dtype)
    return (rng.random(shape) >= p).astype(dtype) / (1.0 - p)
