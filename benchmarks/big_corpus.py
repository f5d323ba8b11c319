"""Corpora bigger than memory: `charlm data prepare` speed and memory, and training memory.

Usage: python3 benchmarks/big_corpus.py [--sizes 0.2 1 4] [--files 8] [--keep-going]

For each size (GB of UTF-8 text) a synthetic multilingual corpus is written to a temporary
directory, in `--files` files: lines of words in Latin with accents, Greek, Cyrillic, CJK and
emoji (about 1.4 bytes a character, so the text is stored 4 bytes a character in Python).
Then, each in its own subprocess, with peak RSS from `os.wait4` (the child's own ru_maxrss):

* `charlm data prepare DIR -o PREPARED`: MB of text per second of wall time (start-up
  included) and peak RSS. Targets: >= 100 MB/s and < 200 MB peak RSS at every size.
* `charlm train PREPARED` for a few steps of a small LSTM (validation on a fixed ~100,000
  characters, so its cost does not grow with the corpus). Target: the peak RSS at every size is
  within 10% + 4 MiB of the smallest size's (the ids are memory-mapped, never loaded).

Exits 1 when a target is missed. `--sizes 0.05` is a quick check. The temporary directory
(several GB at full size) is removed at the end.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGET_MBPS = 100.0
TARGET_PREPARE_RSS_MB = 200.0
TRAIN_RSS_SLACK = (0.10, 4.0)  # fraction of the smallest size's peak, MiB
VAL_CHARS = 100_000
BLOCK_BYTES = 1 << 22

SCRIPTS = {  # (alphabet, word lengths)
    "latin": ("abcdefghijklmnopqrstuvwxyzéèêàâçôûüïñøåæœß", (2, 9)),
    "greek": ("αβγδεζηθικλμνξοπρστυφχψωάέήίόύώ", (2, 9)),
    "cyrillic": ("абвгдежзийклмнопрстуфхцчшщъыьэюяё", (2, 9)),
    "cjk": (
        "的一是不了人我在有他这中大来上国个到说们为子和你地出道也时年得就那要下以生会自着去之过家学对可她里后小么心多天而能好都然没日于起还发成事只作当想看文无开手十用主行方又如前所本见经头面公同三已老从动两长知民样现分将外但身些与高意进把法此实回二理美点月明其种声全工己话儿者向情部正名定女问力机给等几很业最间新什打便位因重被走电四第门相次东政海口使教西再平真听世气信北少关并内加化由却代军产入先山五太水万市眼体别处总才场师书比住员九笑性通目华报立马命张活难神数件安表原车白应路期叫死常提感金何更反合放做系计或司利受光王果亲界及今京务制解各任至清物台象记边共风战干接它许八特觉望直服毛林题建南度统色字请交爱让认算论百吃义科怎元社术结六功指思非流每青管夫连远资队跟带花快条院变联言权往展该领传近留红治决周保达办运武半候七必城父强步完革深区即求品士转量空甚众技轻程告江语英基派满式李息写呢识极令黄德收脸钱党倒未持取设始版双历越史商千片容研像找友孩站广改议形委早房音火际则首单据导影失拿网香似斯专石若兵弟谁校读志飞观争究包组造落视济喜离虽坏兴",
        (1, 3),
    ),  # noqa: E501
    "emoji": ("😀😂🥰😎🤔🎉🚀🌍🌸🍕⚽🎵💡🔥✨", (1, 2)),
}
WEIGHTS = {"latin": 0.45, "greek": 0.15, "cyrillic": 0.2, "cjk": 0.15, "emoji": 0.05}


def make_block(rng: random.Random, size: int) -> bytes:
    """About `size` bytes of lines of words drawn from the scripts above."""
    names, weights = list(WEIGHTS), list(WEIGHTS.values())
    words = []
    for name in names:
        alphabet, (low, high) = SCRIPTS[name]
        words.append(["".join(rng.choices(alphabet, k=rng.randint(low, high)))
                      for _ in range(2000)])  # fmt: skip
    lines, total = [], 0
    while total < size:
        script = rng.choices(range(len(names)), weights)[0]
        line = " ".join(rng.choices(words[script], k=rng.randint(3, 16)))
        line = line[0].upper() + line[1:] + rng.choice((".", ",", "!", "?", "")) + "\n"
        lines.append(line)
        total += len(line.encode("utf-8"))
    return "".join(lines).encode("utf-8")


def make_corpus(folder: Path, gigabytes: float, files: int, seed: int = 0) -> tuple[int, int]:
    """`files` .txt files of `gigabytes` GB in all, from 16 distinct random blocks written in
    random order; (bytes, characters)."""
    rng = random.Random(seed)
    blocks = [make_block(rng, BLOCK_BYTES) for _ in range(16)]
    chars = [len(b.decode("utf-8")) for b in blocks]
    folder.mkdir(parents=True)
    per_file = int(gigabytes * 1e9 / files)
    total_bytes = total_chars = 0
    for i in range(files):
        written = 0
        with open(folder / f"part-{i:03d}.txt", "wb") as fh:
            while written < per_file:
                k = rng.randrange(len(blocks))
                fh.write(blocks[k])
                written += len(blocks[k])
                total_chars += chars[k]
        total_bytes += written
    return total_bytes, total_chars


def run_measured(cmd: list[str]) -> tuple[float, float, float]:
    """Run `cmd`; (wall seconds, CPU seconds, peak RSS in MiB of that process). A failure
    ends the run."""
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1",
               PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))  # fmt: skip
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    out = proc.stdout.read() if proc.stdout else b""
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{out.decode(errors='replace')}")
    return seconds, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024  # Linux: KiB


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=float, nargs="+", default=[0.2, 1.0, 4.0],
                        help="corpus sizes in GB of text (default: 0.2 1 4)")  # fmt: skip
    parser.add_argument("--files", type=int, default=8, help="files per corpus (default 8)")
    parser.add_argument("--steps", type=int, default=20, help="training steps (default 20)")
    args = parser.parse_args()
    charlm = [sys.executable, "-m", "charlm"]
    rows, ok = [], True
    print(f"{'GB':>5} {'files':>5} {'MB/s':>7} {'MB/CPU-s':>9} {'prepare RSS MB':>15} "
          f"{'train RSS MB':>13} {'load':>5}  result")  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="charlm-big-") as tmp:
        for size in sorted(args.sizes):
            work = Path(tmp) / f"{size:g}"
            nbytes, nchars = make_corpus(work / "text", size, args.files)
            prepared = work / "prepared"
            val = max(VAL_CHARS / nchars, 1e-9)
            prep_cmd = ["data", "prepare", str(work / "text"), "-o", str(prepared)]
            load = os.getloadavg()[0]  # other processes' work: a busy machine reads slower
            seconds, cpu, prep_rss = run_measured([*charlm, *prep_cmd, "--val-fraction", repr(val)])
            shutil.rmtree(work / "text")  # the disk holds one corpus and its ids at a time
            _, _, train_rss = run_measured([
                *charlm, "train", str(prepared), "--run-dir", str(work / "run"), "--quiet",
                "--set", "model.hidden_size=64", "--set", "model.num_layers=1",
                "--set", "train.batch_size=32", "--set", "train.seq_len=64",
                "--set", f"train.max_steps={args.steps}", "--set", "train.kernels=numpy",
            ])  # fmt: skip
            shutil.rmtree(work)
            mbps = nbytes / 1e6 / seconds
            base = rows[0][3] if rows else train_rss
            limit = base * (1 + TRAIN_RSS_SLACK[0]) + TRAIN_RSS_SLACK[1]
            passed = mbps >= TARGET_MBPS and prep_rss < TARGET_PREPARE_RSS_MB
            passed = passed and train_rss <= limit
            ok &= passed
            rows.append((size, mbps, prep_rss, train_rss))
            print(f"{size:>5g} {args.files:>5} {mbps:>7.1f} {nbytes / 1e6 / cpu:>9.1f} "
                  f"{prep_rss:>15.1f} {train_rss:>13.1f} {load:>5.2f}"
                  f"  {'PASS' if passed else 'FAIL'}", flush=True)  # fmt: skip
    print(f"targets: prepare >= {TARGET_MBPS:.0f} MB/s of text (wall, start-up included) and "
          f"< {TARGET_PREPARE_RSS_MB:.0f} MB peak RSS; train peak RSS within "
          f"{TRAIN_RSS_SLACK[0]:.0%} + {TRAIN_RSS_SLACK[1]:g} MiB of the smallest size's; "
          "MB/CPU-s (user + system time, all threads) is for information: the work per "
          "MB whatever the wall time; load: the 1-minute load average before "
          "`prepare` (near 0 on a quiet machine)")  # fmt: skip
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
