"""Fuzzed and awkward corpora through `vocab build`, `train` and `eval` (in-process, CliRunner).

Every input must end in a correct result (exit 0 with the expected, loadable files) or in one
`Error: ...` line on stderr with exit status 1/2: no traceback, no stray temp files, no
checkpoint from a failed run. Where the outcome is predictable (valid UTF-8 with text in it,
enough characters for one batch) the test also insists on success, so an over-eager error fails.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from _cli_contract import DATA, TINY, assert_cli_outcome, temp_files
from click.testing import CliRunner, Result
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from charlm.checkpoint import load_checkpoint
from charlm.cli import cli
from charlm.vocab import Vocab

BATCH, SEQ, VAL_FRACTION = 2, 4, 0.1  # TINY's batch and window, the default split


@contextlib.contextmanager
def in_temp_dir() -> Iterator[Path]:
    """A fresh working directory (hypothesis examples cannot use function-scoped tmp_path)."""
    old = os.getcwd()
    with tempfile.TemporaryDirectory(prefix="charlm-fuzz-") as tmp:
        os.chdir(tmp)
        try:
            yield Path(tmp)
        finally:
            os.chdir(old)


def expected_text(raw: bytes) -> str | None:
    """What a correct reader makes of `raw` (None where it must refuse): UTF-8 minus a BOM,
    CRLF and lone CR as newlines, refused when empty or whitespace only, or binary (more than
    1% NUL characters)."""
    raw = raw.removeprefix(b"\xef\xbb\xbf")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    if text.count("\0") > len(text) // 100:
        return None
    return None if not text or text.isspace() else text


def refusal(raw: bytes) -> str:
    """The words of the one-line error for a corpus `expected_text` refuses."""
    if not is_utf8(raw):
        return "invalid UTF-8"
    return "looks like a binary file" if b"\0" in raw else "is empty"


def is_utf8(raw: bytes) -> bool:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def train_ids_length(text: str, mode: str) -> int:
    """Training-split length. Stream: the first 90% of the characters. Lines: the blank lines
    dropped, 10% of the lines drawn for validation (a permutation seeded by data.split_seed,
    0), the rest as <EOS> line <EOS> line ... <EOS>."""
    if mode == "stream":
        return int(len(text) * (1.0 - VAL_FRACTION))
    lines = [line for line in text.split("\n") if line.strip()]
    n_val = len(lines) - int(len(lines) * (1.0 - VAL_FRACTION))
    val = set(np.random.default_rng(0).permutation(len(lines))[:n_val].tolist())
    return 1 + sum(len(line) + 1 for i, line in enumerate(lines) if i not in val)


def invoke_on(raw: bytes, corpus: Path, args: list[str], workdir: Path) -> tuple[Result, bool]:
    """Write `raw` to `corpus` and run the CLI: the outcome must keep the one-line contract and
    leave no temp file. Returns the result and whether it succeeded."""
    corpus.write_bytes(raw)
    result = CliRunner().invoke(cli, args)
    ok = assert_cli_outcome(result)
    assert not temp_files(workdir)
    return result, ok


def train_args(corpus: Path, mode: str, run: Path) -> list[str]:
    """`charlm train` of `corpus` with the tiny test model, in `mode`, into `run`."""
    return ["train", str(corpus), *TINY, "--set", f"data.mode={mode}", "--run-dir", str(run)]


def check_vocab_build(raw: bytes, mode: str, workdir: Path) -> None:
    corpus, out = workdir / "corpus.txt", workdir / f"vocab-{mode}.json"
    args = ["vocab", "build", str(corpus), "-o", str(out), "--mode", mode]
    result, ok = invoke_on(raw, corpus, args, workdir)
    text = expected_text(raw)
    assert ok == (text is not None), (result.exit_code, result.stderr)
    if not ok:
        assert not out.exists(), "a failed vocab build left an output file"
        assert refusal(raw) in result.stderr, result.stderr
        return
    vocab = Vocab.load(out)
    assert vocab.mode == mode
    assert "\r" not in vocab.tokens, "CR survived: CRLF / lone CR must read as a newline"
    chars = set(text) - ({"\n"} if mode == "lines" else set())
    assert set(vocab.tokens) - {"<UNK>", "<EOS>"} == chars
    assert sum(vocab.counts) - vocab.counts[vocab.eos_id] == sum(1 for c in text if c in chars), (
        "counts do not add up to the characters read"
    )


def check_train(raw: bytes, mode: str, workdir: Path) -> Path | None:
    corpus, run = workdir / "corpus.txt", workdir / f"run-{mode}"
    result, ok = invoke_on(raw, corpus, train_args(corpus, mode, run), workdir)
    text = expected_text(raw)
    if text is None:
        assert not ok
        assert not run.exists(), "a corpus that cannot be read still created the run directory"
        return None
    enough = train_ids_length(text, mode) >= BATCH * SEQ + 1
    assert ok == enough, (enough, result.exit_code, result.stderr)
    if not ok:
        assert "too short" in result.stderr
        assert not (run / "last.json").exists()
        return None
    ckpt = load_checkpoint(run / "last.json")
    assert ckpt.step == 2
    assert "\r" not in ckpt.vocab.tokens
    assert ckpt.vocab == Vocab.load(run / "vocab.json")
    lines = (run / "metrics.jsonl").read_text("utf-8").splitlines()
    steps = [json.loads(line)["step"] for line in lines]
    assert steps[-1] == 2 and steps == sorted(set(steps)) and set(steps) <= {1, 2}
    return run


@pytest.fixture(scope="module")
def trained_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One tiny run per mode on a small corpus, for `eval` of the fuzzed texts."""
    root = tmp_path_factory.mktemp("eval-runs")
    corpus = root / "dinosaurs.txt"
    corpus.write_bytes((DATA / "dinosaurs.txt").read_bytes()[:4000])
    runs = {}
    for mode in ("stream", "lines"):
        run = root / mode
        result = CliRunner().invoke(cli, train_args(corpus, mode, run))
        assert result.exit_code == 0, result.output
        runs[mode] = run
    return runs


def check_eval(raw: bytes, run: Path, workdir: Path) -> None:
    corpus = workdir / "eval.txt"
    args = ["eval", str(corpus), "--checkpoint", str(run / "last.json"), "--json"]
    result, ok = invoke_on(raw, corpus, args, workdir)
    text = expected_text(raw)
    if text is None:
        assert not ok
        return
    if not ok:  # the one legitimate refusal: nothing to predict (a lone stream character)
        assert load_checkpoint(run / "last.json").vocab.mode == "stream" and len(text) < 2, (
            result.stderr
        )
        return
    report = json.loads(result.stdout)
    assert report["chars"] >= 1
    assert math.isfinite(report["loss"]) and report["loss"] >= 0  # not NaN, not infinite
    assert 0.0 <= report["unk_rate"] <= 1.0


# --- the named awkward corpora, each in both modes ----------------------------------------------


def _cjk_and_emoji(n: int = 3000) -> bytes:
    chars = [chr(0x4E00 + i) for i in range(n)] + [chr(0x1F300 + i) for i in range(600)]
    random.Random(0).shuffle(chars)
    return "".join(chars).encode()


NAMED = {
    "random-bytes": bytes(random.Random(1).randrange(256) for _ in range(400)),
    "invalid-utf8-middle": b"hello world, " * 5 + b"\xff\xfe" + b" more text" * 5,
    "truncated-utf8-end": "dinosaur é".encode() * 5 + "é".encode()[:1],
    "utf8-encoded-surrogate": b"abc" * 10 + b"\xed\xa0\x80",
    "empty": b"",
    "whitespace-only": b" \t\n\r\n  \x0b\x0c\n",
    "bom-only": b"\xef\xbb\xbf",
    "single-char": b"a",
    "single-char-newline": b"a\n",
    "ten-chars": b"abcdefghij",
    "one-long-line": b"the quick brown fox " * 1000,  # 20,000 characters, no newline
    "nul-bytes": b"\x00" * 64 + b"ab\x00cd\x00\n" * 40,
    "only-nul": b"\x00" * 100,
    "mixed-line-endings": b"one\r\ntwo\rthree\nfour\r\n\r\nfive\r" * 20,
    "crlf-only-lines": b"\r\n".join([b"alpha", b"beta", b"gamma", b"delta"] * 10) + b"\r\n",
    "cjk-and-emoji": _cjk_and_emoji(),
    "bom-then-text": b"\xef\xbb\xbf" + b"some text with a BOM\n" * 10,
    "many-blank-lines": b"\n" * 50 + b"x\n" + b"\n" * 50,
}


@pytest.mark.parametrize("mode", ["stream", "lines"])
@pytest.mark.parametrize("name", list(NAMED))
def test_named_corpora(
    name: str, mode: str, tmp_path: Path, trained_runs: dict[str, Path], monkeypatch
) -> None:
    monkeypatch.chdir(tmp_path)
    raw = NAMED[name]
    check_vocab_build(raw, mode, tmp_path)
    check_train(raw, mode, tmp_path)
    check_eval(raw, trained_runs[mode], tmp_path)


def test_crlf_is_one_newline_everywhere(tmp_path: Path) -> None:
    """CRLF and lone CR are newlines: no "\\r" token, and the ids match the LF-only text."""
    crlf, lf = tmp_path / "crlf.txt", tmp_path / "lf.txt"
    body = [f"line number {i} of the file" for i in range(40)]
    crlf.write_bytes("\r\n".join(body).encode() + b"\r\n")
    lf.write_bytes("\n".join(body).encode() + b"\n")
    for name in ("crlf", "lf"):
        args = ["train", str(tmp_path / f"{name}.txt"), *TINY, "--run-dir", str(tmp_path / name)]
        assert CliRunner().invoke(cli, args).exit_code == 0
    a = load_checkpoint(tmp_path / "crlf" / "last.json")
    b = load_checkpoint(tmp_path / "lf" / "last.json")
    assert "\r" not in a.vocab.tokens
    assert a.vocab == b.vocab
    for key in b.params:  # same ids, same seed: the very same training
        assert (a.params[key] == b.params[key]).all(), key


# --- hypothesis: random mixtures of the above ---------------------------------------------------

PIECES = st.sampled_from(
    [
        st.characters(codec="utf-8"),  # anything encodable, controls and NUL included
        st.sampled_from(list("ab\n\r \t")),
        st.characters(min_codepoint=0x4E00, max_codepoint=0x9FFF),  # CJK
        st.characters(min_codepoint=0x1F300, max_codepoint=0x1FAFF),  # emoji outside the BMP
        st.sampled_from(["\x00", "\r\n", "\r", "\n", "x"]),
    ]
)


@st.composite
def corpora(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["text", "bytes", "corrupted", "long-line", "distinct", "blank"]))
    if kind == "bytes":
        return draw(st.binary(max_size=300))
    if kind == "blank":
        return draw(st.text(alphabet=" \t\n\r\x0b\x0c", max_size=20)).encode()
    if kind == "long-line":
        unit = "".join(draw(st.lists(draw(PIECES), min_size=1, max_size=5)))
        return (unit.replace("\n", " ").replace("\r", " ") * draw(st.integers(1, 4000))).encode()
    if kind == "distinct":
        start = draw(st.sampled_from([0x20, 0x4E00, 0x1F300, 0x10000]))
        chars = [chr(start + i) for i in range(draw(st.integers(1, 3000)))]
        draw(st.randoms(use_true_random=False)).shuffle(chars)
        return "".join(chars).encode()
    text = "".join(draw(st.lists(draw(PIECES), max_size=200)))
    raw = text.encode("utf-8")
    if kind == "corrupted" and raw:
        at = draw(st.integers(0, len(raw)))
        bad = draw(st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\x80", b"\xf4\x90"]))
        raw = raw[:at] + bad + raw[at:]
    if draw(st.booleans()):
        raw = b"\xef\xbb\xbf" + raw
    return raw


FUZZ = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@FUZZ
@given(raw=corpora(), mode=st.sampled_from(["stream", "lines"]))
def test_fuzz_vocab_build(raw: bytes, mode: str) -> None:
    with in_temp_dir() as workdir:
        check_vocab_build(raw, mode, workdir)


@FUZZ
@given(raw=corpora(), mode=st.sampled_from(["stream", "lines"]))
def test_fuzz_train(raw: bytes, mode: str) -> None:
    with in_temp_dir() as workdir:
        event("trained" if check_train(raw, mode, workdir) else "refused")


@FUZZ
@given(raw=corpora(), mode=st.sampled_from(["stream", "lines"]))
def test_fuzz_eval(raw: bytes, mode: str, trained_runs: dict[str, Path]) -> None:
    with in_temp_dir() as workdir:
        check_eval(raw, trained_runs[mode], workdir)
