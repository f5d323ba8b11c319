"""`charlm viz`: activations read from the forward pass, the feature search, the page (its data
and how it renders in headless Chromium) and the command."""

from __future__ import annotations

import base64
import io
import re
from pathlib import Path

import numpy as np
import pytest
from _chromium import find_chromium, open_page
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from charlm.checkpoint import Checkpoint, save_checkpoint
from charlm.cli import cli
from charlm.config import config_from_dict
from charlm.data import encode_text
from charlm.device import get_device, has_numba
from charlm.model import CharModel
from charlm.viz.activations import collect
from charlm.viz.features import Unit, correlations, feature_search, feature_values
from charlm.viz.page import PAGE_VALUES, kept_units, page_data, render_page
from charlm.vocab import Vocab

TEXT = 'He said "stop (now)" and [then] left.\nShe said "no {never}".\n"Why?" (he asked)\n'
KERNELS = ["numpy", *(["compiled"] if has_numba() else [])]


def make_ckpt(text: str, cell: str = "lstm", mode: str = "stream", hidden: int = 10,
              layers: int = 2, seed: int = 0) -> Checkpoint:  # fmt: skip
    config = config_from_dict({"model": {"cell": cell, "hidden_size": hidden, "num_layers": layers},
                               "data": {"mode": mode}})  # fmt: skip
    vocab = Vocab.build(text, mode)
    params = CharModel(config.model, len(vocab)).init_params(np.random.default_rng(seed))
    return Checkpoint(config, vocab, params)


def stepped(model: CharModel, params: dict, vocab: Vocab, text: str):
    """States and logits after each character, one `model.stepper` step at a time (the
    sampling path: another code path than the window forward the page reads)."""
    ids = encode_text(text, vocab)
    lines = vocab.mode == "lines"
    step = model.stepper(params)
    state = model.initial_state(1)
    states, logits = [], []
    for i in ids:
        if lines and i == vocab.eos_id:
            state = model.initial_state(1)
        z, state = step(np.array([i], np.int64), state)
        states.append([tuple(s[:, 0].copy() for s in layer) for layer in state])
        logits.append(z[:, 0].astype(np.float64))
    first = 1 if lines else 0
    return states[first : first + len(text)], np.array(logits[first : first + len(text)]), ids


# --- activations -------------------------------------------------------------------------------


@pytest.mark.parametrize("kernels", KERNELS)
@pytest.mark.parametrize("mode", ["stream", "lines"])
@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
def test_activations_match_the_models_forward_pass(cell: str, mode: str, kernels: str):
    ckpt = make_ckpt(TEXT, cell, mode)
    model = CharModel(ckpt.config.model, len(ckpt.vocab), get_device("cpu", kernels))
    # windows of 7: the state is carried across several window boundaries
    acts = collect(model, ckpt.params, ckpt.vocab, TEXT, seq_len=7)
    states, logits, ids = stepped(model, ckpt.params, ckpt.vocab, TEXT)
    n = len(TEXT)
    for layer in range(2):
        for k, name in enumerate(model.cells[layer].state_names):
            expected = np.array([s[layer][k] for s in states])
            np.testing.assert_allclose(acts.states[layer][name], expected, atol=2e-5)
    log_p = logits - logits.max(axis=1, keepdims=True)
    log_p -= np.log(np.exp(log_p).sum(axis=1, keepdims=True))
    np.testing.assert_array_equal(acts.top_ids, np.argsort(-log_p, axis=1)[:, :5])
    np.testing.assert_allclose(acts.top_probs, np.exp(np.sort(log_p, axis=1)[:, ::-1][:, :5]),
                               atol=1e-5)  # fmt: skip
    first = 1 if mode == "lines" else 0
    following = ids[first + 1 : first + n + 1]
    np.testing.assert_array_equal(acts.next_ids[: len(following)], following)
    expected_bits = -log_p[np.arange(len(following)), following] / np.log(2)
    np.testing.assert_allclose(acts.next_bits[: len(following)], expected_bits, atol=1e-4)
    assert (acts.next_ids[len(following) :] == -1).all()
    assert np.isnan(acts.next_bits[len(following) :]).all()
    assert list(acts.saturation[0]) == {"rnn": [], "gru": ["update", "reset"],
                                        "lstm": ["input", "forget", "output"]}[cell]  # fmt: skip


def test_the_pages_data_decode_to_the_activations():
    ckpt = make_ckpt(TEXT)
    acts = collect(ckpt.model(), ckpt.params, ckpt.vocab, TEXT)
    matches = feature_search(acts)
    units = kept_units(acts, matches)
    assert len(units) == 2 * 2 * 10  # everything fits: two layers, h and c, 10 units
    data = page_data(acts, matches, list(ckpt.vocab.tokens), False, units, units[0], "src")
    raw = np.frombuffer(base64.b64decode(data["acts"]), np.int8).reshape(len(units), len(TEXT))
    for row, (layer, state, index, scale, _) in enumerate(data["units"]):
        values = acts.states[layer][state][:, index]
        assert np.abs(raw[row] * scale - values).max() <= scale / 2 + 1e-7
    top = np.frombuffer(base64.b64decode(data["topIds"]), np.uint8).reshape(len(TEXT), 5)
    np.testing.assert_array_equal(top, acts.top_ids)
    bits = np.frombuffer(base64.b64decode(data["nextBits"]), "<u2")
    np.testing.assert_allclose(bits[:-1] / 100, acts.next_bits[:-1], atol=0.005 + 1e-9)
    assert bits[-1] == 65535  # nothing came after the last character


def test_the_pages_token_ids_take_two_bytes_past_254_tokens():
    text = "".join(chr(0x100 + i) for i in range(300)) * 2
    ckpt = make_ckpt(text, hidden=4, layers=1)
    acts = collect(ckpt.model(), ckpt.params, ckpt.vocab, text)
    data = page_data(acts, {}, list(ckpt.vocab.tokens), False, [Unit(0, "h", 0)],
                     Unit(0, "h", 0), "src")  # fmt: skip
    assert data["idBytes"] == 2
    top = np.frombuffer(base64.b64decode(data["topIds"]), "<u2").reshape(len(text), 5)
    np.testing.assert_array_equal(top, acts.top_ids)
    following = np.frombuffer(base64.b64decode(data["nextIds"]), "<u2")
    np.testing.assert_array_equal(following[:-1], acts.next_ids[:-1])
    assert following[-1] == len(ckpt.vocab)  # "nothing came next"


# --- features ----------------------------------------------------------------------------------


def test_feature_values_by_hand():
    f = feature_values('a"b(c\n)d")x')
    assert f["inside quotes"].tolist() == [0, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0]
    assert f["bracket depth"].tolist() == [0, 0, 0, 1, 1, 1, 0, 0, 0, 0, 0]  # ")" with none open
    assert f["position in line"].tolist() == [0, 1, 2, 3, 4, 5, 0, 1, 2, 3, 4]
    assert f["just after a newline"].tolist() == [0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0]
    assert f["inside a word"].tolist() == [1, 0, 1, 0, 1, 0, 0, 1, 0, 0, 1]


@settings(max_examples=50, deadline=None)
@given(arrays(np.float64, st.tuples(st.integers(3, 30), st.integers(1, 4)),
              elements=st.floats(-5, 5, allow_subnormal=False)),
       st.integers(0, 2**31))  # fmt: skip
def test_correlations_are_pearsons(values: np.ndarray, seed: int):
    feature = np.random.default_rng(seed).integers(0, 3, len(values)).astype(np.float64)
    r = correlations(values, feature)
    for h in range(values.shape[1]):
        column = values[:, h]
        if np.ptp(column) < 1e-6 or np.ptp(feature) == 0:
            continue
        assert r[h] == pytest.approx(np.corrcoef(column, feature)[0, 1], abs=1e-6)


def quote_text(seed: int = 1, words: int = 160) -> str:
    """Random words; some stretches in double quotes."""
    rng = np.random.default_rng(seed)
    out, inside = [], False
    for _ in range(words):
        word = "".join(rng.choice(list("abcdefghij"), rng.integers(1, 6)))
        if rng.random() < 0.2:
            word = '"' + word if not inside else word + '"'
            inside = not inside
        out.append(word + ("\n" if rng.random() < 0.1 else " "))
    return "".join(out)


def planted_quote_lstm(text: str, unit: int = 3, hidden: int = 6) -> Checkpoint:
    """A 1-layer LSTM of weak random weights but for `unit`, whose weights make it flip on
    each '"': input gate open and forget gate shut only on a quote, where the candidate is
    minus the sign of its own previous output; at every other character it holds c."""
    ckpt = make_ckpt(text, "lstm", hidden=hidden, layers=1, seed=5)
    p, q, H = ckpt.params, ckpt.vocab.encode('"')[0], hidden
    p["l0.Wx"] *= 0.3
    p["l0.Wh"] *= 0.3
    p["l0.Wh"][:, unit] = 0.0  # no other unit sees the parity
    u, f, o, g = unit, H + unit, 2 * H + unit, 3 * H + unit
    for row in (u, f, o, g):
        p["l0.Wx"][row] = 0.0
        p["l0.Wh"][row] = 0.0
    p["l0.Wx"][u, q], p["l0.b"][u] = 40.0, -20.0
    p["l0.Wx"][f, q], p["l0.b"][f] = -40.0, 20.0
    p["l0.b"][o] = 20.0
    p["l0.Wh"][g, unit], p["l0.b"][g] = -10.0, 5.0
    return ckpt


def test_feature_search_finds_a_planted_quote_unit():
    text = quote_text()
    ckpt = planted_quote_lstm(text, unit=3)
    acts = collect(ckpt.model(), ckpt.params, ckpt.vocab, text)
    quotes = feature_search(acts)["inside quotes"]
    assert {m.unit for m in quotes[:2]} == {Unit(0, "c", 3), Unit(0, "h", 3)}, quotes[:4]
    assert abs(quotes[0].r) > 0.95 > abs(quotes[2].r)
    # its gates saturate exactly as planted: input open and forget shut on each quote
    share = text.count('"') / len(text)
    sat = acts.saturation[0]
    assert sat["input"][1, 3] == pytest.approx(share) and sat["input"][0, 3] == pytest.approx(
        1 - share
    )
    assert sat["forget"][0, 3] == pytest.approx(share) and sat["forget"][1, 3] == pytest.approx(
        1 - share
    )
    assert sat["output"][1, 3] == 1.0


def test_a_feature_absent_from_the_text_has_no_matches():
    ckpt = make_ckpt("plain words only\nhere\n")
    found = feature_search(collect(ckpt.model(), ckpt.params, ckpt.vocab, "plain words\nhere\n"))
    assert found["inside quotes"] == [] and found["bracket depth"] == []
    assert len(found["position in line"]) == 10


def test_a_page_over_its_budget_keeps_the_feature_units_first():
    text = quote_text()
    ckpt = planted_quote_lstm(text, unit=3, hidden=40)
    acts = collect(ckpt.model(), ckpt.params, ckpt.vocab, text)
    matches = feature_search(acts)
    units = kept_units(acts, matches, budget=len(text) * 12, chosen=Unit(0, "h", 39))
    assert len(units) == 12 and Unit(0, "h", 39) in units and Unit(0, "c", 3) in units
    assert kept_units(acts, matches, budget=len(text) * 80) == sorted(
        Unit(0, s, i) for s in "hc" for i in range(40)
    )


# --- the page in a browser ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def chromium() -> str:
    path, why = find_chromium()
    if path is None:
        pytest.skip(f"{why}, so the page is not rendered in a browser: install Debian's "
                    "chromium package (make test does, as root or with sudo)")  # fmt: skip
    return path


def test_the_page_renders_in_chromium_without_errors(chromium: str, tmp_path: Path):
    pytest.importorskip("PIL", reason="Pillow (with matplotlib, a test extra) reads the PNG")
    from PIL import Image

    text = quote_text(words=300) + '(a "smile" \U0001f600 <b>&amp;)\n'  # one char, two in JS
    ckpt = planted_quote_lstm(text)
    acts = collect(ckpt.model(), ckpt.params, ckpt.vocab, text)
    matches = feature_search(acts)
    chosen = Unit(0, "c", 3)
    data = page_data(acts, matches, list(ckpt.vocab.tokens), False,
                     kept_units(acts, matches, chosen=chosen), chosen, "planted")  # fmt: skip
    page = tmp_path / "viz.html"
    page.write_text(render_page(data, "planted </script> title"), encoding="utf-8")
    browser = open_page(chromium, page)
    try:
        assert browser.evaluate("document.body.dataset.ready") == "1"
        assert browser.evaluate("document.querySelectorAll('#text span').length") == len(text)
        assert browser.evaluate("document.querySelectorAll('#plots svg').length") == 3
        # hovering a character shows the activation, the guesses and the surprisal
        j = text.index('"') + 2
        span = f"document.querySelector('#text span[data-j=\"{j}\"]')"
        centre = "[r.x + r.width / 2, r.y + r.height / 2]"
        x, y = browser.evaluate(
            f"(() => {{ const r = {span}.getBoundingClientRect(); return {centre}; }})()"
        )
        browser.call("Input.dispatchMouseEvent", {"type": "mouseMoved", "x": x, "y": y})
        tip = browser.evaluate("document.getElementById('tip').innerText")
        shown = float(re.search(r"L0 c\[3\] = (-?[\d.]+)", tip).group(1))
        assert shown == pytest.approx(acts.states[0]["c"][j, 3], abs=0.01)
        best = acts.top_probs[j, 0]
        assert f"{100 * round(best * 255) / 255:.1f}%" in tip
        assert f"{round(acts.next_bits[j] * 100) / 100:.2f} bits" in tip
        # a feature's unit is a click away
        browser.evaluate("document.querySelector('#features button').click()")
        quotes = matches["inside quotes"][0].unit
        assert browser.evaluate("document.getElementById('unit').value") == str(quotes.index)
        png = browser.screenshot()
        assert browser.errors() == []
        assert browser.requests() == [page.resolve().as_uri()]  # nothing from the network
    finally:
        browser.close()
    pixels = np.asarray(Image.open(io.BytesIO(png)).convert("L"), dtype=np.float64)
    assert pixels.shape == (900, 1400)
    assert pixels.std() > 20  # not a blank page: text, colours and plots
    (tmp_path / "page.png").write_bytes(png)


@pytest.mark.parametrize(("cell", "plots"), [("rnn", 0), ("gru", 2)])
def test_pages_of_other_cells_and_lines_mode_render_too(chromium: str, tmp_path: Path,
                                                        cell: str, plots: int):  # fmt: skip
    ckpt = make_ckpt(TEXT, cell, "lines")
    acts = collect(ckpt.model(), ckpt.params, ckpt.vocab, TEXT)
    matches = feature_search(acts)
    units = kept_units(acts, matches)
    data = page_data(acts, matches, list(ckpt.vocab.tokens), True, units, units[0], cell)
    page = tmp_path / "viz.html"
    page.write_text(render_page(data, cell), encoding="utf-8")
    browser = open_page(chromium, page)
    try:
        assert browser.evaluate("document.body.dataset.ready") == "1"
        assert browser.evaluate("document.querySelectorAll('#plots svg').length") == plots
        assert browser.evaluate("document.getElementById('state').options.length") == 1
        assert browser.errors() == []
    finally:
        browser.close()


# --- the command -------------------------------------------------------------------------------


def invoke(*args: str, color: bool = False):
    return CliRunner().invoke(cli, list(args), color=color)


@pytest.fixture
def lstm_run(tmp_path: Path) -> Path:
    run = tmp_path / "run"
    run.mkdir()
    save_checkpoint(run, "last", planted_quote_lstm(quote_text()))
    return run


def test_cli_terminal_colours_one_unit(lstm_run: Path, tmp_path: Path):
    text = 'ab "cd" ef\n'
    plain = invoke("viz", "--run", str(lstm_run), "--text", text, "--layer", "0", "--unit", "3",
                   "--state", "c")  # fmt: skip
    assert plain.exit_code == 0, plain.output
    assert plain.stdout.startswith(text) and "\x1b[" not in plain.stdout  # not a terminal
    assert "layer 0 c[3]:" in plain.stdout
    assert "inside quotes" in plain.stdout and "layer 0 c[3] +" in plain.stdout
    coloured = invoke("viz", "--run", str(lstm_run), "--text", text, "--unit", "3", "--state",
                      "c", color=True)  # fmt: skip
    # inside the quotes the cell is strongly positive (red), outside it is not
    assert "\x1b[41m" in coloured.stdout
    assert coloured.stdout.index("\x1b[41m") < coloured.stdout.index("cd")
    # no --unit: the unit that tracks a feature best
    auto = invoke("viz", "--run", str(lstm_run), "--text", 'x "yz" w "v" u\n')
    assert auto.exit_code == 0, auto.output
    assert re.search(r"layer 0 [hc]\[3\] \(tracks inside quotes", auto.stdout), auto.stdout


def test_cli_html_page_and_limit(lstm_run: Path, tmp_path: Path):
    source = tmp_path / "t.txt"
    source.write_text(quote_text(words=400), encoding="utf-8")
    page = tmp_path / "out.html"
    result = invoke("viz", str(source), "--run", str(lstm_run), "--limit", "500",
                    "--html", str(page))  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "cut at 500 characters" in result.stderr
    body = page.read_text("utf-8")
    assert "cut at 500 characters" in body and body.count("<script") == 2
    assert not re.search(r"""(src|href)\s*=\s*["']?https?:""", body)  # nothing to fetch
    assert "Content-Security-Policy" in body
    assert list(tmp_path.glob(".*.tmp")) == []


@pytest.mark.slow
def test_a_page_of_20000_characters_stays_a_few_mb(tmp_path: Path):
    text = (quote_text(words=5000) * 2)[:20_000]
    ckpt = make_ckpt(text, "lstm", hidden=256, layers=2)
    run = tmp_path / "run"
    run.mkdir()
    save_checkpoint(run, "last", ckpt)
    (tmp_path / "t.txt").write_text(text, encoding="utf-8")
    page = tmp_path / "big.html"
    result = invoke("viz", str(tmp_path / "t.txt"), "--run", str(run), "--html", str(page))
    assert result.exit_code == 0, result.output
    size = page.stat().st_size
    assert size < 4.5e6, size
    assert f"{PAGE_VALUES // 20_000:,} of 1,024 units" in result.stderr
    assert "keeps 125 of the 1,024 units" in page.read_text("utf-8")


def test_cli_errors(lstm_run: Path, tmp_path: Path):
    def error(args: list[str], match: str, code: int = 1) -> None:
        result = invoke("viz", "--run", str(lstm_run), *args)
        assert result.exit_code == code, result.output
        assert "Traceback" not in result.output
        last = result.output.strip().splitlines()[-1]
        assert last.startswith("Error:") and match in last, result.output

    error([], "TEXT_FILE or --text", 2)
    error([str(tmp_path / "a.txt"), "--text", "x"], "TEXT_FILE or --text", 2)
    error([str(tmp_path / "missing.txt")], "not found")
    error(["--text", "abc", "--layer", "1"], "layers are 0 to 0")
    error(["--text", "abc", "--unit", "6"], "units are 0 to 5")
    error(["--text", ""], "empty")
    error(["--text", "abc", "--html", str(tmp_path / "no" / "p.html")], "no directory")
    gru = tmp_path / "gru"
    gru.mkdir()
    save_checkpoint(gru, "last", make_ckpt("abc", "gru"))
    result = invoke("viz", "--run", str(gru), "--text", "abc", "--state", "c")
    assert result.exit_code == 1 and "only an LSTM" in result.output
