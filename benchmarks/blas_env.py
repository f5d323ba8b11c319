"""The environment of a user's machine, for the processes the benchmarks start.

This workplace sets OPENBLAS_CORETYPE=Haswell and OPENBLAS_L2_SIZE on some machines (older
OpenBLAS builds compute wrong results or crash on their processors). With them, the current
NumPy's OpenBLAS runs AVX2 kernels on an AVX-512 processor: 229 against 406 GFLOP/s for a
(1024, 256) @ (256, 64) sgemm on the 2-core Zen 5 EPYC here. No user's machine sets them, so
both sides of a benchmark run without them (`--keep-blas-env` keeps them). PyTorch's BLAS is
MKL, which reads neither: the peer is at its defaults either way.
"""

from __future__ import annotations

import os
import subprocess
import sys

WORKPLACE_VARS = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")

_KERNEL = """
import ctypes, glob, os, numpy as np
libs = glob.glob(os.path.dirname(np.__file__) + ".libs/*openblas*")
names = ("scipy_openblas_get_corename64_", "scipy_openblas_get_corename", "openblas_get_corename")
for path in libs:
    lib = ctypes.CDLL(path)
    for name in names:
        if hasattr(lib, name):
            fn = getattr(lib, name)
            fn.restype = ctypes.c_char_p
            print(fn().decode())
            raise SystemExit
print("unknown")
"""


def user_environment(keep_workplace: bool = False, **extra: str) -> dict[str, str]:
    """os.environ without the workplace's OpenBLAS overrides (unless `keep_workplace`), plus
    `extra`."""
    env = dict(os.environ)
    if not keep_workplace:
        for name in WORKPLACE_VARS:
            env.pop(name, None)
    return {**env, **extra}


def openblas_kernel(env: dict[str, str]) -> str:
    """The kernel set ("SkylakeX", "Haswell", ...) NumPy's OpenBLAS picks in `env`."""
    out = subprocess.run([sys.executable, "-c", _KERNEL], env=env, capture_output=True,
                         text=True, check=False)  # fmt: skip
    return out.stdout.strip() or "unknown"
