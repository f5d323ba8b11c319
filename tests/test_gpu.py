"""The devices and the CUDA kernel set. CPU parts always run; GPU parts are skipped where no GPU
and CuPy are."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from _models import random_batches
from click.testing import CliRunner

from charlm import cublas
from charlm.cells import gru, lstm, rnn
from charlm.checkpoint import load_checkpoint
from charlm.cli import cli
from charlm.device import CPU, get_device, to_numpy, xp_of
from charlm.errors import CharlmError
from charlm.model import CharModel

ROOT = Path(__file__).resolve().parent.parent
HAS_CUPY = importlib.util.find_spec("cupy") is not None


def gpu_available() -> bool:
    if not HAS_CUPY:
        return False
    try:
        get_device("cuda")
    except CharlmError:
        return False
    return True


needs_gpu = pytest.mark.skipif(not gpu_available(), reason="needs CuPy and an NVIDIA GPU")


def spec(cell: str, **kw: object) -> SimpleNamespace:
    base = dict(
        cell=cell,
        hidden_size=16,
        num_layers=2,
        dropout=0.0,
        embedding_size=0,
        gru_reset_after=True,
        rnn_activation="tanh",
    )
    return SimpleNamespace(**{**base, **kw})


# ---------------------------------------------------------------- CPU: always run
def test_numpy_is_the_cpu_module_and_owns_numpy_arrays() -> None:
    assert get_device("cpu") is CPU and CPU.xp is np
    assert xp_of(np.zeros(3)) is np
    arr = np.arange(4.0)
    assert to_numpy(arr) is arr
    assert CPU.send(arr) is arr


def test_unknown_device_is_refused() -> None:
    with pytest.raises(CharlmError, match="unknown device 'tpu'"):
        get_device("tpu")


@pytest.mark.skipif(HAS_CUPY, reason="CuPy is installed here")
def test_cuda_without_cupy_is_one_clear_line(tmp_path: Path) -> None:
    with pytest.raises(CharlmError, match=r"needs CuPy: pip install 'charlm\[gpu\]'"):
        get_device("cuda")
    result = CliRunner().invoke(
        cli,
        [
            "train",
            str(ROOT / "data" / "dinosaurs.txt"),
            "--quiet",
            "--run-dir",
            str(tmp_path / "r"),
            "--set",
            "train.device=cuda",
        ],
    )
    assert result.exit_code == 1
    assert "Error: device 'cuda' needs CuPy" in result.output
    assert "Traceback" not in result.output


def test_the_cpu_hands_every_cell_the_numpy_reference_kernels() -> None:
    """Chosen once, with the device: no kernel is tried and declined at each step."""
    assert CPU.kernels("lstm") is lstm.REFERENCE
    assert CPU.kernels("gru") is gru.REFERENCE
    assert CPU.kernels("rnn") is rnn.REFERENCE
    assert CharModel(spec("lstm"), 20).cells[0].kernels is lstm.REFERENCE


def test_take_columns_matches_fancy_indexing() -> None:
    rng = np.random.default_rng(0)
    table = rng.standard_normal((5, 7))
    ids = rng.integers(0, 7, size=11)
    out = np.empty((5, 11))
    CPU.take_columns(table, ids, out)
    np.testing.assert_array_equal(out, table[:, ids])


def column_major(start: np.ndarray, rows: int, cols: int, ld: int) -> np.ndarray:
    """The column-major matrix (leading dimension ld) that BLAS sees at `start`'s first element."""
    item = start.itemsize
    return np.lib.stride_tricks.as_strided(start, shape=(rows, cols), strides=(item, ld * item))


def column_major_gemm(
    op_x: int,
    op_y: int,
    m: int,
    n: int,
    k: int,
    X: np.ndarray,
    ldx: int,
    Y: np.ndarray,
    ldy: int,
    C: np.ndarray,
    ldc: int,
) -> None:
    """What cuBLAS gemm does with these arguments (alpha 1, beta 0), on NumPy buffers."""
    x = column_major(X, *((m, k) if op_x == 0 else (k, m)), ldx)
    y = column_major(Y, *((k, n) if op_y == 0 else (n, k)), ldy)
    column_major(C, m, n, ldc)[...] = (x if op_x == 0 else x.T) @ (y if op_y == 0 else y.T)


def gemm_layouts(seed: int, xp: Any = np, dtype: Any = np.float64) -> list[tuple[Any, ...]]:
    """(a, b, out) in the layouts the cells pass: contiguous, a transposed view, strided column
    views of a window (T+1 blocks of N columns), a row block of fused weights, N = 1."""
    rng = np.random.default_rng(seed)
    M, K, N, T = 12, 5, 3, 4

    def normal(*shape: int) -> Any:
        return xp.asarray(rng.standard_normal(shape).astype(dtype))

    W, window = normal(M, K), normal(K, (T + 1) * N)
    out_window = xp.zeros((M, T * N), dtype=dtype)
    return [
        (W, normal(K, N), xp.zeros((M, N), dtype=dtype)),
        (xp.ascontiguousarray(W.T).T, window[:, N : 2 * N], out_window[:, N : 2 * N]),
        (W, normal(N, K).T, xp.zeros((M, N), dtype=dtype)),
        (W[4:8], window[:, :N], xp.zeros((4, N), dtype=dtype)),
        (W, normal(K, 1), xp.zeros((M, 1), dtype=dtype)),
    ]


def test_blas_arguments_compute_a_matmul_in_place() -> None:
    """The stride arithmetic behind the GPU's direct cuBLAS calls, checked on the CPU."""
    for a, b, out in gemm_layouts(3):
        args = cublas.blas_arguments(a, b, out)
        assert args is not None
        column_major_gemm(*args)
        np.testing.assert_allclose(out, a @ b, rtol=1e-12)
    overlapping = np.lib.stride_tricks.as_strided(np.zeros(8), shape=(4, 4), strides=(8, 8))
    assert cublas.blas_arguments(overlapping, np.zeros((4, 2)), np.zeros((4, 2))) is None


# ---------------------------------------------------------------- GPU: on the GPU machine
@needs_gpu
@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gemm_calls_cublas_in_place_and_matches_matmul(dtype: type) -> None:
    import cupy as cp

    assert cublas._CuBlasGemm.for_dtype(np.dtype(dtype).char) is not None  # the fast path
    for a, b, out in gemm_layouts(4, cp, dtype):
        assert cublas.blas_arguments(a, b, out) is not None  # read in place, no copy
        cublas.gemm(a, b, out)
        np.testing.assert_allclose(cp.asnumpy(out), cp.asnumpy(a) @ cp.asnumpy(b), rtol=1e-5)


@needs_gpu
@pytest.mark.gpu
def test_fused_kernels_read_and_write_strided_views() -> None:
    """The cells pass per-step column views (h into the window's columns, dA<t> into dA2)."""
    import cupy as cp

    from charlm.cells.cuda import cuda_kernels

    kernels = cuda_kernels("lstm")

    rng = np.random.default_rng(2)
    H, N, T = 8, 3, 5
    a, wh = rng.standard_normal((4 * H, N)), rng.standard_normal((4 * H, N))
    cprev = rng.standard_normal((H, N))
    want = [np.empty((H, N)) for _ in range(3)]
    a_np = a.copy()
    lstm.step_forward(a_np, wh.copy(), cprev, *want)
    hcols = cp.zeros((H, (T + 1) * N))
    outs = [cp.empty((H, N)), cp.empty((H, N)), hcols[:, 2 * N : 3 * N]]
    a_cp = cp.asarray(a)
    kernels.step_forward(a_cp, cp.asarray(wh), cp.asarray(cprev), *outs)
    for got, w in zip(outs, want, strict=True):
        np.testing.assert_allclose(cp.asnumpy(got), w, rtol=1e-12, atol=1e-12)
    assert not cp.asnumpy(hcols[:, : 2 * N]).any()  # nothing written outside the view
    tc, dout, dh, dc = (rng.standard_normal((H, N)) for _ in range(4))
    da_np, dc_np = np.empty((4 * H, N)), dc.copy()
    lstm.step_backward(a_np, tc, cprev, dout, dh.copy(), dc_np, da_np, np.empty((7 * H, N)))
    dA2 = cp.zeros((4 * H, T * N))
    dcols = cp.zeros((H, T * N))
    dcols[:, N : 2 * N] = cp.asarray(dout)
    dc_cp = cp.asarray(dc)
    kernels.step_backward(
        a_cp,
        cp.asarray(tc),
        cp.asarray(cprev),
        dcols[:, N : 2 * N],
        cp.asarray(dh),
        dc_cp,
        dA2[:, 3 * N : 4 * N],
        None,  # no scratch needed
    )
    np.testing.assert_allclose(cp.asnumpy(dA2[:, 3 * N : 4 * N]), da_np, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(cp.asnumpy(dc_cp), dc_np, rtol=1e-10, atol=1e-12)
    assert not cp.asnumpy(dA2[:, : 3 * N]).any()


@needs_gpu
@pytest.mark.gpu
def test_fused_lstm_kernels_match_the_numpy_expressions() -> None:
    import cupy as cp

    from charlm.cells.cuda import cuda_kernels

    kernels = cuda_kernels("lstm")

    rng = np.random.default_rng(1)
    H, N = 32, 8
    a, wh, cprev = (rng.standard_normal(s) for s in ((4 * H, N), (4 * H, N), (H, N)))
    outs_np = [np.empty((H, N)) for _ in range(3)]
    a_np, wh_np = a.copy(), wh.copy()
    lstm.step_forward(a_np, wh_np, cprev, *outs_np)  # NumPy reference
    a_cp = cp.asarray(a)
    outs_cp = [cp.empty((H, N)) for _ in range(3)]
    kernels.step_forward(a_cp, cp.asarray(wh), cp.asarray(cprev), *outs_cp)
    np.testing.assert_allclose(cp.asnumpy(a_cp), a_np, rtol=1e-12, atol=1e-12)
    for got, want in zip(outs_cp, outs_np, strict=True):
        np.testing.assert_allclose(cp.asnumpy(got), want, rtol=1e-12, atol=1e-12)
    tc, dout, dh, dc = (rng.standard_normal((H, N)) for _ in range(4))
    da_np, dh_np, dc_np = np.empty((4 * H, N)), dh.copy(), dc.copy()
    lstm.step_backward(a_np, tc, cprev, dout, dh_np, dc_np, da_np, np.empty((7 * H, N)))
    da_cp, dc_cp = cp.empty((4 * H, N)), cp.asarray(dc)
    kernels.step_backward(
        cp.asarray(a_np),
        cp.asarray(tc),
        cp.asarray(cprev),
        cp.asarray(dout),
        cp.asarray(dh),
        dc_cp,
        da_cp,
        None,
    )
    np.testing.assert_allclose(cp.asnumpy(da_cp), da_np, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(cp.asnumpy(dc_cp), dc_np, rtol=1e-10, atol=1e-12)


@needs_gpu
@pytest.mark.gpu
@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
@pytest.mark.parametrize("with_resets", [True, False])  # LSTM: step kernels / window loops
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gpu_loss_and_gradients_match_cpu(cell: str, with_resets: bool, dtype: type) -> None:
    import cupy as cp

    model = CharModel(spec(cell), 20)
    params = model.init_params(np.random.default_rng(0), dtype)
    rng = np.random.default_rng(1)
    x, y = rng.integers(0, 20, (4, 12)), rng.integers(0, 20, (4, 12))
    state = [tuple(rng.standard_normal(s.shape).astype(dtype) for s in st)
             for st in model.initial_state(4, dtype)]  # fmt: skip
    resets = rng.random((4, 12)) < 0.2 if with_resets else None
    loss, grads, _, dstate = model.loss(params, x, y, state, resets)
    gp = {k: cp.asarray(v) for k, v in params.items()}
    gstate = [tuple(cp.asarray(s) for s in st) for st in state]
    gresets = None if resets is None else cp.asarray(resets)
    gpu_model = CharModel(spec(cell), 20, get_device("cuda"))  # the CUDA kernel set
    gloss, ggrads, _, gdstate = gpu_model.loss(gp, cp.asarray(x), cp.asarray(y), gstate, gresets)
    rtol, atol = (1e-3, 1e-5) if dtype == np.float32 else (1e-9, 1e-12)
    assert abs(gloss - loss) < 10 * atol
    for k in grads:
        np.testing.assert_allclose(cp.asnumpy(ggrads[k]), grads[k], rtol=rtol, atol=atol)
    for got, want in zip(gdstate, dstate, strict=True):
        for g, w in zip(got, want, strict=True):
            np.testing.assert_allclose(cp.asnumpy(g), w, rtol=rtol, atol=atol)


def train_sample_resume(tmp_path: Path, device: str) -> None:
    """Train 20 steps on `device`, sample from it, resume on the CPU to step 25; check what
    each step produced, not only its exit status."""
    run = tmp_path / "run"
    corpus = str(ROOT / "data" / "dinosaurs.txt")
    sets = [
        "--set",
        f"train.device={device}",
        "--set",
        "train.max_steps=20",
        "--set",
        "model.hidden_size=32",
        "--set",
        "train.eval_every=10",
        "--set",
        "data.mode=lines",
    ]
    runner = CliRunner()
    trained = runner.invoke(cli, ["train", corpus, "--run-dir", str(run), "--quiet", *sets])
    assert trained.exit_code == 0, trained.output
    first = load_checkpoint(run / "last.json")
    assert first.step == 20 and first.config.train.device == device
    assert all(np.isfinite(v).all() for v in first.params.values())

    sampled = runner.invoke(
        cli, ["sample", "--run", str(run), "--num", "3", "--seed", "1", "--max-len", "40", "--json"]
    )
    assert sampled.exit_code == 0, sampled.output
    samples = json.loads(sampled.stdout)
    assert len(samples) == 3 and all(isinstance(t, str) for t in samples)
    assert "".join(samples), "all three samples are empty"
    chars = set(first.vocab.tokens)
    for text in samples:
        assert len(text) <= 40 and "\n" not in text  # lines mode: one name, ended by <EOS>
        assert set(text.replace("<UNK>", "")) <= chars, text

    resumed = runner.invoke(
        cli,
        [
            "train",
            corpus,
            "--run-dir",
            str(run),
            "--resume",
            "--quiet",
            "--set",
            "train.device=cpu",
            "--set",
            "train.max_steps=25",
        ],
    )
    assert resumed.exit_code == 0, resumed.output
    last = load_checkpoint(run / "last.json")
    assert last.step == 25 and last.config.train.device == "cpu"
    assert any(not np.array_equal(last.params[k], first.params[k]) for k in first.params)
    lines = (run / "metrics.jsonl").read_text("utf-8").splitlines()
    logged = [r for r in map(json.loads, lines) if "train_loss" in r]
    steps = [r["step"] for r in logged]
    # The log goes on from where the GPU run stopped: no step twice, none lost, up to 25.
    assert steps == sorted(set(steps)) and 20 in steps and steps[-1] == 25, steps
    assert all(np.isfinite(r["train_loss"]) for r in logged)
    assert any("val_loss" in r and r["step"] <= 20 for r in logged)


def test_train_sample_resume_checks_run_on_the_cpu(tmp_path: Path) -> None:
    """The GPU test's checks, on the CPU: they run (and can fail) on every machine."""
    train_sample_resume(tmp_path, "cpu")


@needs_gpu
@pytest.mark.gpu
def test_gpu_training_run_samples_and_resumes_on_cpu(tmp_path: Path) -> None:
    train_sample_resume(tmp_path, "cuda")


# ---------------------------------------------------------------- CPU: the switches do nothing
def test_tf32_and_cuda_graphs_change_nothing_on_the_cpu(tmp_path: Path) -> None:
    """Documented as no effect on the CPU: the same run with both flipped saves the same
    parameters, and the CPU's step is the plain TrainStep."""
    from charlm.step import TrainStep

    assert CPU.train_step_type(True) is TrainStep
    CPU.set_tf32(True)  # nothing to set
    corpus = str(ROOT / "data" / "dinosaurs.txt")
    params = []
    for flags in (["train.tf32=false", "train.cuda_graphs=true"],
                  ["train.tf32=true", "train.cuda_graphs=false"]):  # fmt: skip
        run = tmp_path / flags[0]
        sets = [x for f in [*flags, "train.max_steps=6", "model.hidden_size=16"]
                for x in ("--set", f)]  # fmt: skip
        result = CliRunner().invoke(cli, ["train", corpus, "--run-dir", str(run), "--quiet",
                                          "--config", str(ROOT / "configs" / "tiny.yaml"),
                                          *sets])  # fmt: skip
        assert result.exit_code == 0, result.output
        params.append(load_checkpoint(run / "last.json").params)
    for k in params[0]:
        np.testing.assert_array_equal(params[0][k], params[1][k])


# ---------------------------------------------------------------- GPU: kernels, graphs, TF32
@needs_gpu
@pytest.mark.gpu
@pytest.mark.parametrize("dtype_char", ["f", "d"])
def test_nvrtc_compiles_every_kernel(dtype_char: str) -> None:
    from charlm.cells import cuda_source
    from charlm.cells.cuda_backend import cupy_backend

    backend = cupy_backend(dtype_char)
    for name in cuda_source.signatures():
        assert backend.module.get_function(name) is not None


@needs_gpu
@pytest.mark.gpu
def test_fused_clip_adam_and_dropout_on_the_gpu_match_numpy() -> None:
    import cupy as cp

    from charlm import cudaops
    from charlm.optim import Optimizer, clip_gradients
    from charlm.params import FlatParams

    rng = np.random.default_rng(5)
    shapes = {"a": (300, 70), "b": (1000,), "c": (5, 7)}
    values = {k: rng.standard_normal(s) for k, s in shapes.items()}
    grads_np = {k: rng.standard_normal(s) * 3 for k, s in shapes.items()}
    p_np = FlatParams.of(shapes, values, np, np.dtype(np.float64))
    g_np = FlatParams.of(shapes, grads_np, np, np.dtype(np.float64))
    p_cp = FlatParams.of(shapes, values, cp, np.dtype(np.float64))
    g_cp = FlatParams.of(shapes, grads_np, cp, np.dtype(np.float64))
    scalars = cudaops.StepScalars(cp)
    norm = clip_gradients(g_cp, 1.0, "norm", scalars)
    want = clip_gradients(g_np, 1.0, "norm")
    assert abs(float(norm) - float(want)) <= 1e-12 * float(want)
    np.testing.assert_allclose(cp.asnumpy(g_cp.flat), g_np.flat, rtol=1e-14)
    ours, theirs = (Optimizer("adam", p, 0.9, 0.999, 1e-8, 0.01) for p in (p_cp, p_np))
    ours.scalars = scalars
    for step in range(4):
        ours.step(p_cp, g_cp, 1e-3 * (step + 1))
        theirs.step(p_np, g_np, 1e-3 * (step + 1))
    np.testing.assert_allclose(cp.asnumpy(p_cp.flat), p_np.flat, rtol=1e-12, atol=1e-14)
    drop = cudaops.DeviceDropout(cp, seed=3)
    u = drop.random((1000,))
    np.testing.assert_array_equal(cp.asnumpy(u), cudaops.reference_uniforms(3, 0, 1000))
    assert drop.draws == 1


def graph_problem(cell: str, lines: bool) -> tuple[Any, ...]:
    from charlm.config import TrainConfig

    V, N, T = 30, 8, 12
    model_spec = spec(cell, hidden_size=32, dropout=0.25, gru_reset_after=False)
    rng = np.random.default_rng(9)
    batches = random_batches(rng, V, N, T, 7, lines, reset_p=0.1, restart_p=0.3)
    settings = TrainConfig(batch_size=N, seq_len=T, lr=3e-3, lr_schedule="cosine",
                           max_steps=7, warmup_steps=2)  # fmt: skip
    return model_spec, V, settings, batches


@needs_gpu
@pytest.mark.gpu
@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
@pytest.mark.parametrize("lines", [False, True])
def test_cuda_graph_steps_give_the_uncaptured_numbers(cell: str, lines: bool) -> None:
    """Seven steps replayed from captured graphs (dropout, cosine rate, resets or restarts)
    equal the same steps launched one by one: losses, norms, parameters, state, draw count."""
    from charlm import cudaops
    from charlm.cudagraph import GraphedTrainStep
    from charlm.step import TrainStep

    device = get_device("cuda")
    model_spec, V, settings, batches = graph_problem(cell, lines)
    runs = []
    for step_type in (TrainStep, GraphedTrainStep):
        model = CharModel(model_spec, V, device)
        initial = model.init_params(np.random.default_rng(0), np.float32)
        dropout = cudaops.DeviceDropout(device.xp, seed=4)
        train = step_type.create(model, initial, settings, 7, dropout=dropout)
        stats = [train(b, i) for i, b in enumerate(batches)]
        runs.append((train, [(float(s.loss), float(s.grad_norm)) for s in stats]))
    (eager, eager_stats), (graphed, graphed_stats) = runs
    assert len(graphed.graphs) == 1 and graphed.optimizer.t == eager.optimizer.t == 7
    np.testing.assert_allclose(graphed_stats, eager_stats, rtol=1e-5)
    np.testing.assert_allclose(to_numpy(graphed.params.flat), to_numpy(eager.params.flat),
                               rtol=1e-5, atol=1e-6)  # fmt: skip
    for got, want in zip(graphed.state, eager.state, strict=True):
        for g, w in zip(got, want, strict=True):
            np.testing.assert_allclose(to_numpy(g), to_numpy(w), rtol=1e-5, atol=1e-6)
    assert graphed.dropout.draws == eager.dropout.draws == 7 * 2


@needs_gpu
@pytest.mark.gpu
def test_tf32_rounds_float32_products_and_can_be_turned_off() -> None:
    import cupy as cp

    from charlm.cublas import set_tf32

    rng = np.random.default_rng(1)
    a = cp.asarray(rng.standard_normal((256, 256)).astype(np.float32))
    b = cp.asarray(rng.standard_normal((256, 64)).astype(np.float32))
    exact = cp.asnumpy(a).astype(np.float64) @ cp.asnumpy(b).astype(np.float64)
    errors = []
    for enabled in (False, True, False):
        set_tf32(enabled)
        out = cp.empty((256, 64), dtype=np.float32)
        cublas.gemm(a, b, out)
        errors.append(float(np.abs(cp.asnumpy(out) - exact).max()))
    set_tf32(False)
    assert errors[0] < 1e-4 and errors[2] == errors[0]
    assert 1e-4 < errors[1] < 0.5  # a 10-bit mantissa: ~1e-3 relative per product term
