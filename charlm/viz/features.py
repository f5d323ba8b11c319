"""Which units track simple features of the text (the paper's quote and line-length cells).

Each feature is a number per position j, read just after text[j] like the activations; a unit
tracks a feature as well as the magnitude of the Pearson correlation of its activations with
it over the text says (a negative correlation tracks it as well as a positive one).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from charlm.viz.activations import Activations

FEATURES = {
    "inside quotes": 'between an opening " and its closing one (an odd number of " read)',
    "bracket depth": "how many (, [ and { are open",
    "position in line": "characters read since the last newline",
    "just after a newline": "the character just read is a newline",
    "inside a word": "the character just read is a letter",
}
OPENING, CLOSING = "([{", ")]}"


@dataclass(frozen=True, order=True)
class Unit:
    """One activation stream: unit `index` of state `state` ("h" or "c") in layer `layer`."""

    layer: int
    state: str
    index: int

    def __str__(self) -> str:
        return f"layer {self.layer} {self.state}[{self.index}]"


@dataclass(frozen=True)
class Match:
    """How well `unit` tracks `feature`: the correlation r of its activations with it."""

    feature: str
    unit: Unit
    r: float


def feature_values(text: str) -> dict[str, np.ndarray]:
    """Each feature of FEATURES at every position of `text`, as (len(text),) float64."""
    codes = np.fromiter(map(ord, text), dtype=np.int64, count=len(text))
    positions = np.arange(len(text))
    newline = codes == ord("\n")
    steps = np.isin(codes, [ord(c) for c in OPENING]).astype(np.int64)
    steps -= np.isin(codes, [ord(c) for c in CLOSING])
    walk = np.cumsum(steps)
    # a closing bracket with none open counts as nothing: the walk reflected at zero
    depth = walk - np.minimum(np.minimum.accumulate(walk), 0)
    last_newline = np.maximum.accumulate(np.where(newline, positions, -1))
    line_start = np.concatenate([[0], last_newline[:-1] + 1])  # where text[j]'s line began
    return {
        "inside quotes": (np.cumsum(codes == ord('"')) % 2).astype(np.float64),
        "bracket depth": depth.astype(np.float64),
        "position in line": (positions - line_start).astype(np.float64),
        "just after a newline": newline.astype(np.float64),
        "inside a word": np.fromiter(map(str.isalpha, text), bool, len(text)).astype(np.float64),
    }


def correlations(values: np.ndarray, feature: np.ndarray) -> np.ndarray:
    """Pearson correlation of each column of `values` (n, H) with `feature` (n,): (H,); 0 for
    a column that does not vary."""
    a = values.astype(np.float64) - values.mean(axis=0, dtype=np.float64)
    f = feature - feature.mean()
    norms = np.sqrt((a * a).sum(axis=0)) * np.sqrt(f @ f)
    r = np.zeros(values.shape[1])
    np.divide(f @ a, norms, out=r, where=norms > 1e-12 * max(float(norms.max(initial=0)), 1.0))
    return r


def feature_search(acts: Activations, top: int = 10) -> dict[str, list[Match]]:
    """The `top` units that track each feature best, best first (ties: in unit order).

    A feature that does not vary in the text (no quotes, no brackets) has no matches."""
    found: dict[str, list[Match]] = {}
    for name, feature in feature_values(acts.text).items():
        if feature.min() == feature.max():
            found[name] = []
            continue
        scored = [
            (-abs(r), Unit(layer, state, index), r)
            for layer, states in enumerate(acts.states)
            for state, values in states.items()
            for index, r in enumerate(correlations(values, feature).tolist())
        ]
        scored.sort(key=lambda item: (item[0], item[1]))
        found[name] = [Match(name, unit, r) for _, unit, r in scored[:top]]
    return found
