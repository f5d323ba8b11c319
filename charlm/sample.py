"""Sampling novel text from a trained model (the notes' procedure), N samples at a time.

    zero state; feed the start input (and the prime, if any) to warm the state
    repeat: logits -> / temperature -> [ban <UNK>] -> top-k -> top-p -> draw (or argmax)
            feed the drawn character back; a sample ends at <EOS> or after max_len characters

The start input is `<EOS>` in lines mode: the training ids there are "<EOS> line <EOS> line ..."
with the state zeroed at every <EOS>, so the model has learnt what follows a fresh <EOS>. In
stream mode the model never saw <EOS>; it starts from "\\n" when that is in the vocabulary (the
text after a line break is a natural beginning) and from <EOS> otherwise, and <EOS> is never
emitted (its probability is set to zero).

Every draw goes through an explicit `np.random.Generator`: one uniform per sample and step, read
through the inverse CDF of the filtered probabilities, so the same seed gives the same text.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from charlm.backend import to_numpy, xp_of
from charlm.errors import CharlmError
from charlm.model import CharModel
from charlm.vocab import Vocab

Array = Any
State = list[tuple[Array, ...]]


def start_id(vocab: Vocab) -> int:
    """The first input of every sample: <EOS> in lines mode; "\\n" (else <EOS>) in stream mode."""
    if vocab.mode == "stream" and "\n" in vocab.tokens:
        return vocab.tokens.index("\n")
    return vocab.eos_id


def unknown_chars(vocab: Vocab, text: str) -> list[str]:
    """The distinct characters of `text` that `vocab` reads as <UNK>, in order of appearance."""
    if not text:
        return []
    ids = vocab.encode(text)
    found: dict[str, None] = {}  # an ordered set
    for i in np.flatnonzero(ids == vocab.unk_id).tolist():
        found.setdefault(text[i])
    return list(found)


def banned_ids(vocab: Vocab, no_unk: bool) -> list[int]:
    """Ids that must never be drawn: <EOS> in stream mode, <UNK> with `no_unk`."""
    banned = [vocab.eos_id] if vocab.mode == "stream" else []
    if no_unk:
        banned.append(vocab.unk_id)
    if len(banned) >= len(vocab):
        raise CharlmError("the vocabulary has no character left to sample (only special tokens)")
    return banned


def _column_buffer(xp: Any, V: int, N: int) -> Array:
    """A float64 (V, N) buffer stored column by column (Fortran order).

    Every reduction here runs down the V ids of a column; contiguous columns make them,
    the cumulative sum above all, several times faster than the (V, N) C layout.
    """
    return xp.empty((N, V), dtype=xp.float64).T


def filter_probs(
    logits: Array,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    banned: Sequence[int] = (),
    out: Array | None = None,
) -> Array:
    """Normalised float64 probabilities (V, N) from logits (V, N), after the filters.

    Banned ids get probability 0 (the rest renormalised). top_k > 0 keeps the k largest logits
    per column (ties at the k-th value are all kept). top_p < 1 keeps the nucleus: the smallest
    set of most probable ids whose mass reaches top_p (always at least the most likely one).
    `out` (V, N) float64 is reused when given (`_column_buffer` makes the fastest layout).
    """
    xp = xp_of(logits)
    V = logits.shape[0]
    z = _column_buffer(xp, *logits.shape) if out is None else out
    z[...] = logits
    if len(banned):
        z[banned] = -xp.inf
    if 0 < top_k < V:  # on the raw logits: shifting first could round distinct values together
        kth = xp.partition(z, V - top_k, axis=0)[V - top_k]  # k-th largest per column
        z[z < kth] = -xp.inf
    # Shift by the max before dividing: z - max <= 0, so a tiny temperature gives -inf, not nan.
    z -= z.max(axis=0)
    if temperature != 1.0:
        z *= 1.0 / temperature
    xp.exp(z, out=z)
    z *= 1.0 / z.sum(axis=0)
    if top_p < 1.0:
        order = xp.argsort(-z, axis=0)  # most probable first
        sorted_p = xp.take_along_axis(z, order, axis=0)
        mass_before = xp.cumsum(sorted_p, axis=0) - sorted_p
        drop = xp.empty(z.shape, dtype=bool)
        # The top one always has mass_before 0 < top_p, so no column ends up empty.
        xp.put_along_axis(drop, order, mass_before >= top_p, axis=0)
        z[drop] = 0.0
        z *= 1.0 / z.sum(axis=0)
    return z


def draw(probs: Array, rng: np.random.Generator, cdf: Array | None = None) -> Array:
    """One id per column of probs (V, N) by the inverse CDF: u ~ U[0, 1), the first i with
    cdf[i] > u * total. Ids of probability 0 are never drawn. `cdf` is a (V, N) scratch buffer."""
    xp = xp_of(probs)
    N = probs.shape[1]
    cdf = xp.cumsum(probs, axis=0, out=cdf)
    total = cdf[-1]
    target = xp.asarray(rng.random(N)) * total
    # u * total can round up to total; keep it strictly below so the index stays on a nonzero.
    xp.minimum(target, xp.nextafter(total, 0), out=target)
    return (cdf <= target).sum(axis=0)


def _repeat_columns(state: State, N: int) -> State:
    xp = xp_of(state[0][0])
    return [tuple(xp.repeat(s, N, axis=1) for s in layer) for layer in state]


def _select_columns(state: State, keep: Array) -> State:
    return [tuple(s[:, keep] for s in layer) for layer in state]


def _check_settings(num: int, max_len: int, temperature: float, top_k: int, top_p: float) -> None:
    if num < 1:
        raise CharlmError(f"num must be >= 1, got {num}")
    if max_len < 1:
        raise CharlmError(f"max_len must be >= 1, got {max_len}")
    if not 0 < temperature < math.inf:  # also refuses nan
        raise CharlmError(f"temperature must be > 0, got {temperature}")
    if top_k < 0:
        raise CharlmError(f"top_k must be >= 0, got {top_k}")
    if not 0 < top_p <= 1:
        raise CharlmError(f"top_p must be in (0, 1], got {top_p}")


def generate(
    model: CharModel,
    params: dict[str, Array],
    vocab: Vocab,
    rng: np.random.Generator,
    num: int = 1,
    max_len: int = 200,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    greedy: bool = False,
    no_unk: bool = False,
    prime: str = "",
    on_text: Callable[[str], None] | None = None,
) -> list[str]:
    """`num` samples of at most `max_len` characters each (the prime is not included).

    Samples are drawn in parallel as one batch; a sample ends at <EOS> (lines mode; the <EOS>
    is not part of its text) or after `max_len` characters. <UNK> appears as "<UNK>" unless
    `no_unk`. Prime characters outside the vocabulary are read as <UNK> (see `unknown_chars`).
    With num == 1, `on_text` receives each character as it is generated.
    """
    _check_settings(num, max_len, temperature, top_k, top_p)
    if len(vocab) != model.V:
        raise CharlmError(f"vocabulary has {len(vocab)} tokens but the model expects {model.V}")
    xp = xp_of(params["Wy"])
    banned = banned_ids(vocab, no_unk)
    ban = xp.asarray(banned, dtype=xp.int64)
    lines = vocab.mode == "lines"

    # Warm the state with the start input and the prime: one forward pass over a single row.
    inputs = np.concatenate([[start_id(vocab)], vocab.encode(prime)]).astype(np.int64)[None]
    resets = (inputs == vocab.eos_id) if lines else None  # the state is zeroed at each <EOS>
    state = model.initial_state(1, params["Wy"].dtype, xp)
    logits, state, _ = model.forward(
        params, xp.asarray(inputs), state, None if resets is None else xp.asarray(resets)
    )
    logits = xp.repeat(logits[:, -1, :], num, axis=1)  # (V, num): every sample starts alike
    state = _repeat_columns(state, num)

    out = np.zeros((num, max_len), dtype=np.int64)  # drawn ids, row per sample
    lengths = np.full(num, max_len, dtype=np.int64)
    active = np.arange(num)  # original sample index of each batch column
    probs, cdf = _column_buffer(xp, model.V, num), _column_buffer(xp, model.V, num)
    stream_text = on_text if num == 1 else None
    step = model.stepper(params)
    for t in range(max_len):
        if greedy:
            z = logits.astype(xp.float64)
            z[ban] = -xp.inf
            ids = z.argmax(axis=0)
        else:
            p = filter_probs(logits, temperature, top_k, top_p, ban, out=probs)
            ids = draw(p, rng, cdf)
        host_ids = to_numpy(ids)
        out[active, t] = host_ids
        if stream_text is not None and not (lines and host_ids[0] == vocab.eos_id):
            stream_text(vocab.tokens[int(host_ids[0])])
        if lines:
            ended = host_ids == vocab.eos_id
            if ended.any():
                lengths[active[ended]] = t  # the <EOS> is not part of the text
                keep = np.flatnonzero(~ended)
                if len(keep) == 0:
                    break
                # Shrink the batch: finished samples cost nothing from here on.
                active = active[keep]
                keep_x = xp.asarray(keep)
                ids, state = ids[keep_x], _select_columns(state, keep_x)
                probs, cdf = (_column_buffer(xp, model.V, len(keep)) for _ in range(2))
        if t + 1 < max_len:
            logits, state = step(ids, state)
    return [vocab.decode(out[i, : lengths[i]]) for i in range(num)]
