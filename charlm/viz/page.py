"""The `charlm viz --html` page: one self-contained file (inline CSS, script and data; a
Content-Security-Policy that forbids any network request), opened from disk.

The data are compact so that 20,000 characters stay a few MB: each unit's activations as int8
(value / scale, scale = its largest |value| / 127), the top-k predictions as token ids and
probabilities in 1/255ths, the surprisals in 1/100 bits, all base64. A page keeps at most
`PAGE_VALUES` activations: past that, the units that track a feature best come first, then the
others in unit order across the layers and states, and the page says how many it kept.
"""

from __future__ import annotations

import base64
import html
import json
import re
from importlib import resources
from typing import Any

import numpy as np

from charlm.viz.activations import SATURATION, Activations
from charlm.viz.features import FEATURES, Match, Unit

PAGE_VALUES = 2_500_000  # int8 activations a page keeps: about 3.3 MB in base64
NO_BITS = 65535  # nextBits' "no next character"
_PLACEHOLDER = re.compile(r"/\*@(CSS|JS|DATA)@\*/|@TITLE@")


def quantize(values: np.ndarray) -> tuple[np.ndarray, float]:
    """(int8 values, scale) with values ~= q * scale, |error| <= scale / 2."""
    top = float(np.abs(values).max(initial=0.0))
    scale = top / 127.0 if top > 0 else 1.0
    return np.round(values / scale).astype(np.int8), scale


def colour_range(values: np.ndarray) -> float:
    """The |value| that gets the strongest colour: the unit's largest, and at least 1 (tanh's
    range), so a unit that barely moves looks pale."""
    return max(1.0, float(np.abs(values).max(initial=0.0)))


def all_units(acts: Activations) -> list[Unit]:
    """Every unit, unit by unit across the layers and states (so a cut keeps some of each)."""
    return [Unit(layer, state, index)
            for index in range(acts.states[0]["h"].shape[1])
            for layer in range(acts.layers) for state in acts.states[layer]]  # fmt: skip


def kept_units(
    acts: Activations,
    matches: dict[str, list[Match]],
    budget: int = PAGE_VALUES,
    chosen: Unit | None = None,
) -> list[Unit]:
    """The units whose activations fit in `budget` values (see the module docstring), sorted;
    `chosen` is always among them."""
    every = all_units(acts)
    capacity = max(budget // len(acts.text), 1)
    best = [m.unit for ms in matches.values() for m in ms]
    order = list(dict.fromkeys([*([chosen] if chosen else []), *best, *every]))
    return sorted(order[:capacity])


def _b64(array: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(array).tobytes()).decode("ascii")


def display_token(token: str, lines: bool) -> str:
    """How a vocabulary token reads in the predictions: visible whitespace, <EOS> as the line
    end it is in lines mode."""
    shown = {"\n": "\u21b5", " ": "\u2423", "\t": "\u21e5", "<EOS>": "\u21b5" if lines else "<EOS>"}
    return shown.get(token, token)


def page_data(
    acts: Activations,
    matches: dict[str, list[Match]],
    tokens: list[str],
    lines: bool,
    units: list[Unit],
    initial: Unit,
    source: str,
    note: str = "",
) -> dict[str, Any]:
    """The page's data, as the script reads them (see page.js). `note` is shown at the top,
    with a word about the units left out if `units` are not all of them."""
    V = len(tokens)
    total = sum(s.shape[1] for layer in acts.states for s in layer.values())
    if len(units) < total:
        kept = (
            f"the page keeps {len(units):,} of the {total:,} units' activations (its size "
            "limit; the feature-tracking units first): a shorter --limit keeps more"
        )
        note = f"{note}; {kept}" if note else kept
    id_type = np.uint8 if V < 255 else np.dtype("<u2")  # V itself marks "no next token"
    streams, unit_rows = [], []
    for unit in units:
        values = acts.states[unit.layer][unit.state][:, unit.index]
        q, scale = quantize(values)
        streams.append(q)
        unit_rows.append([unit.layer, unit.state, unit.index, scale, colour_range(values)])
    acts_bytes = np.concatenate(streams) if streams else np.zeros(0, np.int8)
    bits = np.where(
        np.isnan(acts.next_bits), NO_BITS, np.clip(acts.next_bits * 100, 0, NO_BITS - 1)
    )
    gates = list(acts.saturation[0]) if acts.saturation else []
    return {
        "source": source,
        "note": note,
        "cell": acts.cell,
        "layers": acts.layers,
        "hidden": acts.states[0]["h"].shape[1],
        "states": list(acts.states[0]),
        "text": acts.text,
        "tokens": [display_token(t, lines) for t in tokens],
        "units": unit_rows,
        "unitsTotal": total,
        "acts": _b64(acts_bytes),
        "k": acts.top_ids.shape[1],
        "idBytes": np.dtype(id_type).itemsize,
        "topIds": _b64(acts.top_ids.astype(id_type)),
        "topProbs": _b64(np.round(acts.top_probs * 255).astype(np.uint8)),
        "nextIds": _b64(np.where(acts.next_ids < 0, V, acts.next_ids).astype(id_type)),
        "nextBits": _b64(np.round(bits).astype("<u2")),
        "features": [
            {
                "name": name,
                "about": about,
                "matches": [
                    [m.unit.layer, m.unit.state, m.unit.index, round(m.r, 3)]
                    for m in matches.get(name, [])
                ],
            }
            for name, about in FEATURES.items()
        ],  # fmt: skip
        "saturation": {
            "gates": gates,
            "edges": list(SATURATION),
            "layers": [
                {g: np.round(fr, 4).tolist() for g, fr in sat.items()} for sat in acts.saturation
            ],  # fmt: skip
        },
        "initial": [initial.layer, initial.state, initial.index],
    }


def _asset(name: str) -> str:
    return resources.files("charlm.viz").joinpath(name).read_text(encoding="utf-8")


def render_page(data: dict[str, Any], title: str) -> str:
    """The whole HTML page: the template with its style, script and data inlined."""
    # "</" would end the <script> element the data sit in; "<\/" is the same JSON string
    payload = json.dumps(data, ensure_ascii=False, separators=(",", ":")).replace("</", "<\\/")
    parts = {"/*@CSS@*/": _asset("page.css"), "/*@JS@*/": _asset("page.js"),
             "/*@DATA@*/": payload, "@TITLE@": html.escape(title)}  # fmt: skip
    # one pass: text inserted is never searched for placeholders again
    return _PLACEHOLDER.sub(lambda m: parts[m.group(0)], _asset("page.html"))
