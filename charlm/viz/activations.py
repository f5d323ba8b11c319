"""A model's activations over a text, read from its own forward pass.

`collect` runs `CharModel.forward` over the text's ids in one stream (windows of `seq_len`,
the state carried, zeroed before each <EOS> in lines mode: as `charlm eval --show` reads a
text) and copies out what the cells cached for their backward pass -- every layer's states and
gate activations -- and the output layer's logits. Nothing is recomputed here, so what the page
shows is what the model computed.

Position j of every array is the moment just after the model read text[j]: the states then,
and the predictions it made then for the character after it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from charlm.data import encode_text
from charlm.device import to_numpy
from charlm.errors import CharlmError
from charlm.evaluate import LN2
from charlm.model import CharModel
from charlm.ops import log_softmax
from charlm.vocab import Vocab

Array = Any

# The sigmoid gates at the top of each cell's fused `gates` cache, H rows each, in the cells'
# row order (LSTM: u, f, o, then c~; GRU: u, r, then c~); forward leaves their activations
# there for backward. The RNN has none.
GATES = {"lstm": ("input", "forget", "output"), "gru": ("update", "reset"), "rnn": ()}
# A gate below the first or above the second is left- or right-saturated (the paper's).
SATURATION = (0.1, 0.9)


@dataclass(frozen=True)
class Activations:
    """What the model computed while reading `text`, n = len(text) positions."""

    text: str
    cell: str  # "rnn", "gru" or "lstm"
    # per layer: "h" (the layer's output a<t>) and for an LSTM "c" (its cell state) -> (n, H)
    states: list[dict[str, np.ndarray]]
    # per layer: gate name -> (2, H): the fraction of positions each unit's gate spent below
    # SATURATION[0] (row 0) and above SATURATION[1] (row 1); empty for the RNN
    saturation: list[dict[str, np.ndarray]]
    top_ids: np.ndarray  # (n, k) the k likeliest next tokens, likeliest first
    top_probs: np.ndarray  # (n, k) their probabilities
    next_ids: np.ndarray  # (n,) the token that came next; -1 after the last character
    next_bits: np.ndarray  # (n,) its surprisal -log2 p in bits; nan after the last character

    @property
    def layers(self) -> int:
        return len(self.states)


def cached_states(cache: dict[str, Any]) -> dict[str, Array]:
    """A cell's states over one window, each (T, H), from its forward cache (one stream, N=1).

    The LSTM keeps a<t> in column layout (`h_cols`, (H, (T+1) N)) and c<t> in `c` ((T+1, H,
    N)); the RNN and GRU keep a<t> in `h` ((T+1, H, N)). Block 0 is the carried-in state."""
    if "h_cols" in cache:
        return {"h": cache["h_cols"][:, 1:].T, "c": cache["c"][1:, :, 0]}
    return {"h": cache["h"][1:, :, 0]}


def cached_gates(cell: str, cache: dict[str, Any]) -> dict[str, Array]:
    """A cell's gate activations over one window, each (T, H), from its forward cache."""
    gates = cache.get("gates")
    if gates is None:
        return {}
    H = gates.shape[1] // (len(GATES[cell]) + 1)  # the gates, then the candidate c~
    return {name: gates[:, k * H : (k + 1) * H, 0] for k, name in enumerate(GATES[cell])}


def collect(
    model: CharModel,
    params: dict[str, Array],
    vocab: Vocab,
    text: str,
    seq_len: int = 256,
    top_k: int = 5,
) -> Activations:
    """Run `model` over `text` (as `first_chars` returns it for the vocabulary's mode) and keep
    its states, gate saturation and predictions at every character."""
    if not text:
        raise CharlmError("the text is empty: nothing to show")
    ids = encode_text(text, vocab)
    # in lines mode ids[0] is the start <EOS> and text[j] is ids[j + 1] ("\n" being <EOS>)
    first = 1 if vocab.mode == "lines" else 0
    n, xp = len(text), model.device.xp
    shown = slice(first, first + n)
    dtype = params["Wy"].dtype
    k = min(top_k, model.V)
    states = [{name: np.empty((len(ids), model.H), np.float32) for name in c.state_names}
              for c in model.cells]  # fmt: skip
    below = [dict.fromkeys(GATES[model.spec.cell], 0) for _ in model.cells]
    above = [dict.fromkeys(GATES[model.spec.cell], 0) for _ in model.cells]
    top_ids = np.empty((len(ids), k), np.int64)
    top_probs = np.empty((len(ids), k), np.float32)
    logp_next = np.full(len(ids), np.nan)
    state = model.initial_state(1, dtype)
    for start in range(0, len(ids), seq_len):
        end = min(start + seq_len, len(ids))
        x = ids[None, start:end].astype(np.int64)
        resets = None if vocab.mode == "stream" else xp.asarray(x == vocab.eos_id)
        logits, state, cache = model.forward(params, xp.asarray(x), state, resets)
        for i, layer in enumerate(cache["caches"]):
            for name, value in cached_states(layer).items():
                states[i][name][start:end] = to_numpy(value)
            # only the shown positions count (not lines mode's start <EOS>)
            rows = slice(max(shown.start - start, 0), max(min(shown.stop, end) - start, 0))
            for name, value in cached_gates(model.spec.cell, layer).items():
                gate = to_numpy(value[rows])
                below[i][name] += (gate < SATURATION[0]).sum(axis=0)
                above[i][name] += (gate > SATURATION[1]).sum(axis=0)
        logp = to_numpy(log_softmax(logits[:, :, 0].astype(np.float64))).T  # (T, V)
        best = np.argsort(-logp, axis=1, kind="stable")[:, :k]
        top_ids[start:end] = best
        top_probs[start:end] = np.exp(np.take_along_axis(logp, best, axis=1))
        following = ids[start + 1 : end + 1].astype(np.int64)  # what came next, where known
        logp_next[start : start + len(following)] = logp[np.arange(len(following)), following]
    next_ids = np.full(len(ids), -1, np.int64)
    next_ids[:-1] = ids[1:]
    return Activations(
        text=text,
        cell=model.spec.cell,
        states=[{name: s[shown] for name, s in layer.items()} for layer in states],
        saturation=[
            {name: np.stack([below[i][name], above[i][name]]) / n for name in below[i]}
            for i in range(len(model.cells))
        ],  # fmt: skip
        top_ids=top_ids[shown],
        top_probs=top_probs[shown],
        next_ids=next_ids[shown],
        next_bits=-logp_next[shown] / LN2,
    )
