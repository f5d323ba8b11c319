"""Sampling speed: `charlm.sample.generate` against PyTorch's step-by-step loop, side by side.

One process, interleaved rounds, medians. The model is an LSTM, H=256, 2 layers, V=65 (random
weights: speed does not depend on training). PyTorch (--threads, default 2, torch.no_grad)
runs, per generated character: one-hot -> nn.LSTM on one step -> nn.Linear -> softmax ->
torch.multinomial, the drawn ids fed back. Both produce `num` samples of `max_len` characters
(stream mode: nothing ends early). Prints characters/second and the ratio ours / PyTorch;
exits 1 when a case misses its target ratio. NumPy's BLAS gets the same thread count when
threadpoolctl is installed.

    python benchmarks/sample_speed.py [--rounds 7] [--max-len 500] [--only num64] [--threads 2]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from types import SimpleNamespace

import numpy as np
from sidebyside import compare, header

from charlm.config import SampleConfig
from charlm.model import CharModel
from charlm.sample import generate
from charlm.vocab import Vocab

V, H, L = 65, 256, 2
CASES = {  # name: (samples in parallel, characters per sample, target ratio)
    "num1": (1, 500, 2.0),
    "num64": (64, 200, 1.5),
}


def vocab_of_size(size: int) -> Vocab:
    """A stream-mode vocabulary of `size` tokens: the 2 specials, "\\n" and printable ASCII."""
    chars = "\n" + "".join(chr(c) for c in range(33, 33 + size - 3))
    vocab = Vocab.build(chars)
    assert len(vocab) == size
    return vocab


def ours(num: int, max_len: int) -> Callable[[], float]:
    spec = SimpleNamespace(cell="lstm", hidden_size=H, num_layers=L, dropout=0.0, embedding_size=0,
                           gru_reset_after=False, rnn_activation="tanh")  # fmt: skip
    model = CharModel(spec, V)
    params = model.init_params(np.random.default_rng(0), np.float32)
    vocab = vocab_of_size(V)
    settings = SampleConfig(num=num, max_len=max_len, seed=0, no_unk=False)  # <UNK> drawable

    def run() -> float:
        start = time.perf_counter()
        out = generate(model, params, vocab, settings)
        elapsed = time.perf_counter() - start
        # Count tokens, not characters: "<UNK>" is one token spelled with five.
        assert len(out) == num
        return num * max_len / elapsed

    return run


def torch_equivalent(num: int, max_len: int, threads: int) -> Callable[[], float]:
    import torch  # noqa: PLC0415 - benchmark-only dependency

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    rnn = torch.nn.LSTM(V, H, L)
    head = torch.nn.Linear(H, V)
    gen = torch.Generator().manual_seed(0)

    def run() -> float:
        start = time.perf_counter()
        with torch.no_grad():
            x = torch.zeros(num, dtype=torch.long)
            state = None
            for _ in range(max_len):
                out, state = rnn(torch.nn.functional.one_hot(x, V).float()[None], state)
                probs = torch.softmax(head(out[0]), dim=-1)
                x = torch.multinomial(probs, 1, generator=gen)[:, 0]
        return num * max_len / (time.perf_counter() - start)

    return run


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7, help="interleaved rounds (median)")
    parser.add_argument("--max-len", type=int, default=0, help="characters per sample (0: case's)")
    parser.add_argument("--only", action="append", help="run only these cases")
    parser.add_argument("--threads", type=int, default=2, help="PyTorch (and BLAS) threads")
    args = parser.parse_args()
    unknown = sorted(set(args.only or ()) - set(CASES))
    if unknown:  # a typo would otherwise run nothing and report every target met
        parser.error(f"unknown --only {unknown}; choose from {sorted(CASES)}")
    blas = "BLAS threads: library default"
    try:
        from threadpoolctl import threadpool_limits  # noqa: PLC0415 - optional

        threadpool_limits(limits=args.threads, user_api="blas")
        blas = f"BLAS threads: {args.threads}"
    except ImportError:
        pass
    print(f"LSTM H={H} L={L} V={V}; PyTorch threads: {args.threads}; {blas}")
    header("case")
    failed = 0
    for name, (num, max_len, target) in CASES.items():
        if args.only and name not in args.only:
            continue
        max_len = args.max_len or max_len
        runners = {
            "ours": ours(num, max_len),
            "torch": torch_equivalent(num, max_len, args.threads),
        }
        failed += not compare(name, runners, args.rounds, target)
    print("all targets met" if not failed else f"{failed} case(s) below target")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
