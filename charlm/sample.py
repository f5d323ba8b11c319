"""Sampling novel text from a trained model (the notes' procedure), N samples at a time.

    zero state; feed the start input (and the prime, if any) to warm the state
    repeat: logits -> / temperature -> [ban <UNK>] -> top-k -> top-p -> draw (or argmax)
            feed the drawn character back; a sample ends at <EOS>, at a stop string, at its
            N-th line break (`lines`) or after max_len characters

The start input is `<EOS>` in lines mode: the training ids there are "<EOS> line <EOS> line ..."
with the state zeroed at every <EOS>, so the model has learnt what follows a fresh <EOS>. In
stream mode the model never saw <EOS>; it starts from "\\n" when that is in the vocabulary (the
text after a line break is a natural beginning) and from <EOS> otherwise, and <EOS> is never
emitted (its probability is set to zero).

Randomness: sample i draws its uniforms from its own generator, child i of
`np.random.SeedSequence(seed)`, one uniform per step read through the inverse CDF of the
filtered probabilities. Child i does not depend on how many children there are, so the same
seed gives the same i-th sample whatever the number of samples (up to rounding: a matrix
product over a batch of another width may round a column's logits differently in the last
bit, which changes a draw only if its uniform falls within that rounding of a boundary).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from charlm.config import SampleConfig
from charlm.device import to_numpy, xp_of
from charlm.errors import CharlmError
from charlm.model import CharModel
from charlm.vocab import Vocab

Array = Any
State = list[tuple[Array, ...]]

# Steps of uniforms drawn per call to a sample's generator: few Python calls even at num=64,
# and (num, BLOCK) float64 stays small whatever max_len is.
UNIFORM_BLOCK = 256


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


def training_had_unk(vocab: Vocab, train_unk_count: int | None = None) -> bool:
    """Whether the model's training text held characters read as <UNK>.

    `train_unk_count` is the number of <UNK> ids in the training split that the trainer records
    in the checkpoint (meta "train_unk_count"). Older checkpoints fall back to the vocabulary's
    count of <UNK> in the text it was built from; a vocabulary saved without counts (all 0)
    reads as "none", so <UNK> is banned there by default too.
    """
    if train_unk_count is None:
        return vocab.counts[vocab.unk_id] > 0
    if isinstance(train_unk_count, bool) or not isinstance(train_unk_count, (int, np.integer)):
        raise CharlmError(
            f"checkpoint field 'train_unk_count' is not an integer: {train_unk_count!r}"
        )
    if train_unk_count < 0:
        raise CharlmError(f"checkpoint field 'train_unk_count' is negative: {train_unk_count}")
    return train_unk_count > 0


def bans_unk(no_unk: bool | None, vocab: Vocab, train_unk_count: int | None = None) -> bool:
    """`no_unk` resolved: True/False as given; None (auto) bans <UNK> when the training text
    had none (see `training_had_unk`), since such a model has never learnt where it belongs."""
    return not training_had_unk(vocab, train_unk_count) if no_unk is None else no_unk


def banned_ids(vocab: Vocab, no_unk: bool) -> list[int]:
    """Ids that must never be drawn: <EOS> in stream mode, <UNK> with `no_unk`."""
    banned = [vocab.eos_id] if vocab.mode == "stream" else []
    if no_unk:
        banned.append(vocab.unk_id)
    if len(banned) >= len(vocab):
        raise CharlmError("the vocabulary has no character left to sample (only special tokens)")
    return banned


def sample_generators(seed: int | None, num: int) -> list[np.random.Generator]:
    """One generator per sample: child i of SeedSequence(seed), the same for every num > i.

    seed None: fresh entropy from the OS (different every call)."""
    return [np.random.default_rng(child) for child in np.random.SeedSequence(seed).spawn(num)]


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


def draw(probs: Array, uniforms: Array, cdf: Array | None = None) -> Array:
    """One id per column of probs (V, N) by the inverse CDF: for u = uniforms[j] in [0, 1), the
    first i with cdf[i] > u * total. Ids of probability 0 are never drawn. `cdf` is a (V, N)
    scratch buffer."""
    xp = xp_of(probs)
    cdf = xp.cumsum(probs, axis=0, out=cdf)
    total = cdf[-1]
    target = xp.asarray(uniforms, dtype=xp.float64) * total
    # u * total can round up to total; keep it strictly below so the index stays on a nonzero.
    xp.minimum(target, xp.nextafter(total, 0), out=target)
    return (cdf <= target).sum(axis=0)


def _repeat_columns(state: State, N: int) -> State:
    xp = xp_of(state[0][0])
    return [tuple(xp.repeat(s, N, axis=1) for s in layer) for layer in state]


def _select_columns(state: State, keep: Array) -> State:
    return [tuple(s[:, keep] for s in layer) for layer in state]


class _StopStrings:
    """Finds the step at which a sample first produces one of the stop strings.

    Only a token whose text holds the last character of some stop string can complete one, so
    a lookup table picks those few columns and only they are decoded and searched.
    """

    def __init__(self, vocab: Vocab, stops: Sequence[str]) -> None:
        for s in stops:
            if not isinstance(s, str) or not s:
                raise CharlmError(f"a stop string must be non-empty text, got {s!r}")
        self.vocab, self.stops = vocab, tuple(dict.fromkeys(stops))
        self.longest = max(map(len, self.stops), default=0)
        last_chars = {s[-1] for s in self.stops}
        self.may_end = np.array(
            [i != vocab.eos_id and any(c in tok for c in last_chars)
             for i, tok in enumerate(vocab.tokens)]
        )  # fmt: skip

    def ended(self, out: np.ndarray, rows: np.ndarray, ids: np.ndarray, t: int) -> np.ndarray:
        """Mask over `rows` (samples whose step-t ids are `ids`) of those whose text now holds a
        stop string ending in the step-t token (the first occurrence: earlier ones ended it)."""
        done = np.zeros(len(rows), dtype=bool)
        for j in np.flatnonzero(self.may_end[ids]).tolist():
            # A stop string ending in this token starts at most `longest - 1` tokens earlier.
            tail = self.vocab.decode(out[rows[j], max(0, t + 1 - self.longest) : t + 1])
            new = len(self.vocab.tokens[ids[j]])
            done[j] = any(
                tail.find(s, max(0, len(tail) - new - len(s) + 1)) >= 0 for s in self.stops
            )
        return done


def generate(
    model: CharModel,
    params: dict[str, Array],
    vocab: Vocab,
    settings: SampleConfig,
    *,
    stop: Sequence[str] = (),
    train_unk_count: int | None = None,
    on_text: Callable[[str], None] | None = None,
) -> list[str]:
    """`settings.num` samples of at most `settings.max_len` tokens each (the prime not included).

    Samples are drawn in parallel as one batch, and a sample that has ended leaves the batch.
    A sample ends
    - at <EOS> (lines mode; the <EOS> is not part of its text);
    - right after the token that completes the first occurrence of one of the `stop` strings in
      its text (the prime is not searched; the stop string is kept);
    - right after its `settings.lines`-th "\\n" (stream mode; 0 = off; in lines mode every sample
      is one line and `lines` has no effect);
    - after `settings.max_len` tokens.
    <UNK> appears as "<UNK>" unless banned: `settings.no_unk` True bans it, False allows it, None
    bans it when the training text had none (`train_unk_count`, see `training_had_unk`). Prime
    characters outside the vocabulary are read as <UNK> (see `unknown_chars`). With num == 1,
    `on_text` receives each token's text as it is generated.
    """
    if len(vocab) != model.V:
        raise CharlmError(f"vocabulary has {len(vocab)} tokens but the model expects {model.V}")
    s = settings
    num, max_len = s.num, s.max_len
    stops = _StopStrings(vocab, stop)
    xp = model.device.xp
    ban = xp.asarray(banned_ids(vocab, bans_unk(s.no_unk, vocab, train_unk_count)), xp.int64)
    lines = vocab.mode == "lines"
    newline = vocab.tokens.index("\n") if s.lines and "\n" in vocab.tokens else None

    # Warm the state with the start input and the prime: one forward pass over a single row.
    inputs = np.concatenate([[start_id(vocab)], vocab.encode(s.prime)]).astype(np.int64)[None]
    resets = (inputs == vocab.eos_id) if lines else None  # the state is zeroed at each <EOS>
    state = model.initial_state(1, params["Wy"].dtype)
    logits, state, _ = model.forward(
        params, xp.asarray(inputs), state, None if resets is None else xp.asarray(resets)
    )
    logits = xp.repeat(logits[:, -1, :], num, axis=1)  # (V, num): every sample starts alike
    state = _repeat_columns(state, num)

    # Drawn ids, a row per sample; zeros are lazily mapped, so rows that end early cost little.
    out = np.zeros((num, max_len), dtype=vocab.dtype)
    lengths = np.full(num, max_len, dtype=np.int64)
    newlines = np.zeros(num, dtype=np.int64)
    active = np.arange(num)  # original sample index of each batch column
    generators = [] if s.greedy else sample_generators(s.seed, num)
    block = min(max_len, UNIFORM_BLOCK)
    uniforms = np.empty((num, block))
    probs, cdf = _column_buffer(xp, model.V, num), _column_buffer(xp, model.V, num)
    # The device's one-pass filter and draw, where it has one and the filters are its two.
    fused = None if s.top_k or s.top_p < 1.0 else model.device.draw_ids
    allowed = np.ones(model.V, dtype=bool)
    allowed[to_numpy(ban)] = False
    stream_text = on_text if num == 1 else None
    step = model.stepper(params)
    for t in range(max_len):
        if s.greedy:
            z = logits.astype(xp.float64)
            z[ban] = -xp.inf
            ids = z.argmax(axis=0)
        else:
            if t % block == 0:  # the next `block` uniforms of each sample still running
                for i in active.tolist():
                    uniforms[i] = generators[i].random(block)
            if fused is not None:
                ids = fused(logits, s.temperature, allowed, uniforms[active, t % block])
            else:
                p = filter_probs(logits, s.temperature, s.top_k, s.top_p, ban, out=probs)
                ids = draw(p, uniforms[active, t % block], cdf)
        host_ids = to_numpy(ids)
        out[active, t] = host_ids
        if stream_text is not None and not (lines and host_ids[0] == vocab.eos_id):
            stream_text(vocab.tokens[int(host_ids[0])])
        ended = np.zeros(len(active), dtype=bool)
        if lines:
            ended = host_ids == vocab.eos_id
            lengths[active[ended]] = t  # the <EOS> is not part of the text
        if stops.stops:
            done = ~ended & stops.ended(out, active, host_ids, t)
            lengths[active[done]] = t + 1  # the stop string is part of the text
            ended |= done
        if newline is not None:
            is_newline = host_ids == newline
            newlines[active] += is_newline
            done = ~ended & is_newline & (newlines[active] >= s.lines)
            lengths[active[done]] = t + 1
            ended |= done
        if ended.any():
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
