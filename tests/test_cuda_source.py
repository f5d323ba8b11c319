"""The CUDA kernels checked on the CPU: compiled to PTX by nvcc (where it is installed) to catch
what NVRTC would reject on a GPU, and compiled by g++ through a shim (`cuda_emulation`) to run
every kernel -- and the window loops, pointer arithmetic and resets of `charlm.cells.cuda` --
against the NumPy reference in float64."""

from __future__ import annotations

import contextlib
import math
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from _cuda_emulation import (
    EmulatedBackend,
    EmulatedCudaDevice,
    compile_ptx,
    emulated_backend,
    gxx_missing,
    nvcc_missing,
)
from _models import random_batches
from hypothesis import given, settings
from hypothesis import strategies as st
from test_kernels import FORMS, problem, run, spec

from charlm import cudaops
from charlm.cells import cuda, cuda_backend, cuda_source, gru, lstm, rnn
from charlm.model import CharModel, dropout_mask
from charlm.optim import Optimizer, clip_gradients
from charlm.params import FlatParams

needs_gxx = pytest.mark.skipif(gxx_missing() is not None, reason=f"{gxx_missing()}")
TOL = {"rtol": 1e-12, "atol": 1e-13}


# ---------------------------------------------------------------- nvcc: the source compiles
@pytest.mark.skipif(nvcc_missing() is not None, reason=f"{nvcc_missing()}")
@pytest.mark.parametrize("dtype_char", ["f", "d"])
def test_every_kernel_compiles_to_ptx_with_nvcc(dtype_char: str, tmp_path: Path) -> None:
    result = compile_ptx(dtype_char, tmp_path)
    assert result.returncode == 0, result.stderr
    ptx = (tmp_path / f"kernels_{dtype_char}.ptx").read_text()
    for name in cuda_source.signatures():
        assert f".entry {name}(" in ptx, name


def test_the_signature_reader_sees_every_kernel_and_type() -> None:
    sigs = cuda_source.signatures()
    assert sigs["finish_dh"] == [("T *", "dh"), ("const T *", "g"), ("const T *", "keep"),
                                 ("I", "H"), ("I", "N"), ("I", "lddh"), ("I", "ldg")]  # fmt: skip
    assert cuda_source.SOURCE.count('extern "C" __global__') == len(sigs)
    for params in sigs.values():  # every argument type has a launcher conversion
        for ctype, _ in params:
            assert cuda_backend.argument_type(ctype, "f") is not None


# ---------------------------------------------------------------- g++: kernels vs NumPy
def model_case(form_options: dict, resets: bool, dtype: Any, seed: int = 0) -> list:
    reference = CharModel(spec(**form_options), 11)
    model = CharModel(spec(**form_options), 11, EmulatedCudaDevice())
    params, *rest = problem(reference, resets, seed)
    params = {k: v.astype(dtype) for k, v in params.items()}
    rest[2] = [tuple(s.astype(dtype) for s in layer) for layer in rest[2]]
    return [run(model, params, *rest), run(reference, params, *rest)]


@needs_gxx
@pytest.mark.parametrize("resets", [False, True])
@pytest.mark.parametrize(("form", "options"), FORMS)
def test_every_cell_through_the_cuda_window_loops_matches_the_reference(
    form: str, options: dict, resets: bool
) -> None:
    """Loss, every gradient, final state and state gradient of a 2-layer model whose cells run
    the CUDA window loops (resets inside the kernels) equal the NumPy reference's."""
    backend = emulated_backend("d")
    backend.launches.clear()
    got, want = model_case(options, resets, np.float64)
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g, w, **TOL)
    assert backend.launches, "the CUDA kernels never ran"
    T, layers = 7, 2
    per_step = {"rnn": 2, "gru": 4 if options.get("gru_reset_after") is False else 2, "lstm": 2}
    cell = options["cell"]
    assert len(backend.launches) == layers * T * per_step[cell] + layers * (
        cell == "gru" or resets
    )  # each step's kernels, and one finish per backward window where one is pending


@needs_gxx
@pytest.mark.parametrize(("form", "options"), FORMS)
def test_float32_kernels_match_the_reference_to_float32_precision(form: str, options: dict):
    got, want = model_case(options, True, np.float32, seed=3)
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g, w, rtol=2e-5, atol=2e-6)


@needs_gxx
@pytest.mark.parametrize(("form", "options"), FORMS)
def test_sampling_steps_through_the_cuda_step_kernels(form: str, options: dict) -> None:
    reference = CharModel(spec(**options), 11)
    model = CharModel(spec(**options), 11, EmulatedCudaDevice())
    params, x, _, state, _ = problem(reference, resets=False)
    step, want_step = model.stepper(params), reference.stepper(params)
    got_state = want_state = state
    for t in range(x.shape[1]):
        got, got_state = step(x[:, t], got_state)
        want, want_state = want_step(x[:, t], want_state)
        np.testing.assert_allclose(got, want, **TOL)


def strided(rng: np.random.Generator, rows: int, N: int, pad: int = 3) -> np.ndarray:
    """A (rows, N) view with row stride N + pad (a window's column block)."""
    return rng.standard_normal((rows, N + pad))[:, 1 : N + 1]


@needs_gxx
@given(H=st.integers(1, 9), N=st.integers(1, 7), seed=st.integers(0, 2**16))
@settings(max_examples=15, deadline=None)
def test_step_kernels_on_strided_views_match_the_reference(H: int, N: int, seed: int) -> None:
    """Every step kernel with every operand a strided view (the cells' per-step views),
    against its NumPy function; nothing outside the views is written."""
    rng = np.random.default_rng(seed)
    cells = cuda.CudaCells(emulated_backend)

    originals: dict[int, np.ndarray] = {}

    def pair(rows: int) -> tuple[np.ndarray, np.ndarray]:
        """(a strided view for the kernel, a contiguous copy for the reference)."""
        x = strided(rng, rows, N)
        originals[id(x)] = x.base.copy()
        return x, x.copy()

    def check(*pairs: tuple[np.ndarray, np.ndarray]) -> None:
        for got, want in pairs:
            np.testing.assert_allclose(got, want, **TOL)
            base, before = got.base, originals[id(got)]  # the padding columns are untouched
            np.testing.assert_array_equal(base[:, [0, *range(N + 1, N + 3)]],
                                          before[:, [0, *range(N + 1, N + 3)]])  # fmt: skip
            before[:, 1 : N + 1] = got  # the next kernel's "before"

    # LSTM
    a, wh, cp, c, tc, h = pair(4 * H), pair(4 * H), pair(H), pair(H), pair(H), pair(H)
    cells.lstm_step_forward(a[0], wh[0], cp[0], c[0], tc[0], h[0])
    lstm.step_forward(a[1], wh[1], cp[1], c[1], tc[1], h[1])
    check(a, c, tc, h)
    dout, dh, dc, da = pair(H), pair(H), pair(H), pair(4 * H)
    cells.lstm_step_backward(a[0], tc[0], cp[0], dout[0], dh[0], dc[0], da[0], None)
    lstm.step_backward(a[1], tc[1], cp[1], dout[1], dh[1], dc[1], da[1], np.empty((7 * H, N)))
    check(dh, dc, da)
    # GRU, notes' form then reset-after
    a, wur, hp, rh, wc, h = pair(3 * H), pair(2 * H), pair(H), pair(H), pair(H), pair(H)
    cells.gru_forward_gates(a[0], wur[0], hp[0], rh[0])
    gru.forward_gates(a[1], wur[1], hp[1], rh[1])
    check(a, rh)
    cells.gru_forward_candidate(a[0], wc[0], hp[0], h[0])
    gru.forward_candidate(a[1], wc[1], hp[1], h[1])
    check(a, h)
    dout, dh, da, dcand, drh = pair(H), pair(H), pair(3 * H), pair(H), pair(H)
    cells.gru_backward_candidate(a[0], hp[0], dout[0], dh[0], da[0], dcand[0], None)
    gru.backward_candidate(a[1], hp[1], dout[1], dh[1], da[1], dcand[1], np.empty((H, N)))
    check(dh, da, dcand)
    cells.gru_backward_gates(a[0], hp[0], dh[0], da[0], drh[0], None)
    gru.backward_gates(a[1], hp[1], dh[1], da[1], drh[1].copy(), np.empty((2 * H, N)))
    check(dh, da)
    a, wh3, rh, h = pair(3 * H), pair(3 * H), pair(H), pair(H)
    bhn = rng.standard_normal(H)
    cells.gru_forward_after(a[0], wh3[0], bhn, hp[0], rh[0], h[0])
    gru.forward_after(a[1], wh3[1], bhn, hp[1], rh[1], h[1])
    check(a, rh, h)
    dout, dh, dwh, dcand = pair(H), pair(H), pair(3 * H), pair(H)
    cells.gru_backward_after(a[0], hp[0], rh[0], dout[0], dh[0], dwh[0], dcand[0], None, None)
    gru.backward_after(a[1], hp[1], rh[1], dout[1], dh[1], dwh[1], dcand[1], np.empty((H, N)),
                       np.empty((2 * H, N)))  # fmt: skip
    check(dh, dwh, dcand)
    # RNN, both activations
    for act in ("tanh", "relu"):
        g, h = pair(H), pair(H)
        cells.rnn_step_forward(act, g[0], h[0])
        rnn.step_forward(act, g[1], h[1])
        check(h)
        dout, dh, da = pair(H), pair(H), pair(H)
        cells.rnn_step_backward(act, h[0], dout[0], dh[0], da[0])
        rnn.step_backward(act, h[1], dout[1], dh[1], da[1])
        check(dh, da)


@needs_gxx
def test_a_planted_bug_in_a_kernel_is_caught(tmp_path: Path) -> None:
    """The comparison can fail: the notes' GRU with the update gate's sigma' written as
    (1 - r) r differs from the reference."""
    bad = cuda_source.SOURCE.replace("dr[0] = dr[0] * ((1 - u) * u);",
                                     "dr[0] = dr[0] * ((1 - rg) * rg);")  # fmt: skip
    assert bad != cuda_source.SOURCE
    backend = EmulatedBackend("d", bad)
    device = EmulatedCudaDevice()
    device.cells = cuda.CudaCells(lambda _: backend)
    options = {"cell": "gru", "gru_reset_after": False}
    reference = CharModel(spec(**options), 11)
    inputs = problem(reference, False)
    got = run(CharModel(spec(**options), 11, device), *inputs)
    want = run(reference, *inputs)
    assert any(not np.allclose(g, w, **TOL) for g, w in zip(got, want, strict=True))


# ---------------------------------------------------------------- g++: the step's other kernels
def flat_problem(seed: int, n_params: int = 3) -> tuple[FlatParams, FlatParams]:
    rng = np.random.default_rng(seed)
    shapes = {f"p{i}": tuple(rng.integers(1, 40, size=2)) for i in range(n_params)}
    values = {k: rng.standard_normal(s) for k, s in shapes.items()}
    params = FlatParams.of(shapes, values, np, np.dtype(np.float64))
    grads = params.zeros_like()
    grads.flat[...] = rng.standard_normal(grads.flat.shape) * rng.uniform(0.1, 10)
    return params, grads


@needs_gxx
@pytest.mark.parametrize("clip", [0.0, 1.0, 1e6])
def test_fused_norm_clip_matches_clip_gradients(clip: float) -> None:
    _, grads = flat_problem(1)
    want = FlatParams.of({k: v.shape for k, v in grads.items()}, dict(grads.items()), np,
                         np.dtype(np.float64))  # fmt: skip
    scalars = cudaops.StepScalars(np, emulated_backend)
    norm = clip_gradients(grads, clip, "norm", scalars)
    want_norm = clip_gradients(want, clip, "norm")
    assert math.isclose(float(norm), float(want_norm), rel_tol=1e-13)
    np.testing.assert_allclose(grads.flat, want.flat, rtol=1e-15, atol=0)


@needs_gxx
def test_the_norm_of_a_buffer_larger_than_the_partial_sums() -> None:
    """More elements than first-level threads: each thread sums a strided share."""
    x = np.random.default_rng(2).standard_normal(cudaops.FIRST * 3 + 17)
    scalars = cudaops.StepScalars(np, emulated_backend)
    norm = cudaops.clip_global_norm(x, 0.0, scalars)
    assert math.isclose(float(norm), float(np.sqrt(np.sum(x * x))), rel_tol=1e-12)


@needs_gxx
@pytest.mark.parametrize("weight_decay", [0.0, 0.01])
def test_fused_adam_matches_the_numpy_optimizer_over_steps(weight_decay: float) -> None:
    params, grads = flat_problem(3)
    want_params, _ = flat_problem(3)
    ours = Optimizer("adam", params, 0.9, 0.99, 1e-8, weight_decay)
    ours.scalars = cudaops.StepScalars(np, emulated_backend)
    theirs = Optimizer("adam", want_params, 0.9, 0.99, 1e-8, weight_decay)
    for step in range(5):
        lr = 1e-2 / (step + 1)
        ours.step(params, grads, lr)
        theirs.step(want_params, grads, lr)
        np.testing.assert_allclose(params.flat, want_params.flat, rtol=1e-13, atol=1e-15)
    assert ours.scalars.buffer[cudaops.COUNT] == 5 == ours.t
    resumed = Optimizer("adam", params, 0.9, 0.99, 1e-8, weight_decay)
    resumed.scalars = cudaops.StepScalars(np, emulated_backend)
    resumed.load_state_arrays(ours.state_arrays(), ours.t)
    assert resumed.scalars.buffer[cudaops.COUNT] == 5  # the device count resumes too


@needs_gxx
def test_device_uniforms_are_the_documented_hash_and_advance_a_device_counter() -> None:
    drop = cudaops.DeviceDropout(np, seed=7, backends=emulated_backend)
    first = drop.random((3, 5))
    np.testing.assert_array_equal(first.reshape(-1), cudaops.reference_uniforms(7, 0, 15))
    second = drop.random((3, 5))
    assert drop.draws == 2 and not np.array_equal(first, second)
    again = cudaops.DeviceDropout(np, seed=7, draws=1, backends=emulated_backend)
    np.testing.assert_array_equal(again.random((3, 5)), second)  # resumed from `draws`
    other_seed = cudaops.DeviceDropout(np, seed=8, backends=emulated_backend).random((3, 5))
    assert not np.array_equal(first, other_seed)


@needs_gxx
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_device_dropout_masks_are_the_model_expression(dtype: Any) -> None:
    p = 0.3
    drop = cudaops.DeviceDropout(np, seed=11, backends=emulated_backend)
    mask = dropout_mask(drop, (4, 6, 5), p, dtype)
    u = cudaops.reference_uniforms(11, 0, 120).reshape(4, 6, 5)
    want = dropout_mask(SimpleNamespace(random=lambda shape: u), u.shape, p, dtype)
    assert mask.dtype == dtype
    np.testing.assert_array_equal(mask, want)


def test_the_hash_uniforms_look_uniform() -> None:
    """Mean, variance and a lag-1 correlation of a million draws, at the 5-sigma level."""
    u = cudaops.reference_uniforms(1337, 4, 1_000_000)
    n = u.size
    assert 0 <= u.min() and u.max() < 1
    assert abs(u.mean() - 0.5) < 5 * math.sqrt(1 / 12 / n)
    assert abs(u.var() - 1 / 12) < 5 * math.sqrt(1 / 180 / n)
    assert abs(np.corrcoef(u[:-1], u[1:])[0, 1]) < 5 / math.sqrt(n)
    counts = np.bincount((u * 16).astype(int), minlength=16)
    chi2 = float(((counts - n / 16) ** 2 / (n / 16)).sum())
    assert chi2 < 45  # 15 degrees of freedom: p ~ 1e-4


# ---------------------------------------------------------------- the graph step's bookkeeping
class ReplayingStream:
    """Stands for a CuPy stream; events and waits are no-ops on the CPU."""

    def __init__(self, non_blocking: bool = False) -> None:
        self.capturing = False

    def __enter__(self) -> ReplayingStream:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def record(self) -> None:
        return None

    def wait_event(self, event: object) -> None:
        return None

    def synchronize(self) -> None:
        assert not self.capturing, "a capturing stream cannot be synchronized"


class ReplayedGraph:
    """A 'graph' that replays by running the captured step's Python again and writing its
    outputs where the capture's went -- what a correct capture does when the step reads and
    writes only the fixed buffers the graph holds. A graph runs no Python: the host's update
    count stays as it was."""

    def __init__(self, work: Any, outputs: tuple[Any, ...], optimizer: Any) -> None:
        self.work, self.outputs, self.optimizer, self.launches = work, outputs, optimizer, 0

    def launch(self, stream: object = None) -> None:
        self.launches += 1
        count = self.optimizer.t
        for out, new in zip(self.outputs, self.work(), strict=True):
            out[...] = new
        self.optimizer.t = count


def replaying_step_type() -> type:
    from charlm.cudagraph import GraphedTrainStep

    class ReplayingTrainStep(GraphedTrainStep):
        def cuda_module(self) -> Any:
            cuda_ns = SimpleNamespace(
                Stream=ReplayingStream,
                MemoryPool=lambda: SimpleNamespace(malloc=None),
                using_allocator=lambda malloc: contextlib.nullcontext(),
                get_current_stream=ReplayingStream,
            )
            return SimpleNamespace(asarray=np.asarray, array=np.array, cuda=cuda_ns)

        def _capture(self, work: Any) -> tuple[Any, Any]:
            # A capture runs nothing: the outputs are where the replays will write them.
            outputs = (np.zeros(()), np.zeros(()))
            return ReplayedGraph(work, outputs, self.optimizer), outputs

    return ReplayingTrainStep


@needs_gxx
@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
@pytest.mark.parametrize("lines", [False, True])
def test_graph_step_bookkeeping_gives_the_uncaptured_numbers(cell: str, lines: bool) -> None:
    """GraphedTrainStep's bookkeeping around the graph -- inputs copied into fixed buffers,
    the state updated in place (restarts too), the rate set before each replay, Adam's count
    and the dropout counter advancing on the device, the loss and norm copied out -- checked
    on the CPU with a stand-in graph that replays by running the step again, against the
    uncaptured step: same losses, norms, parameters, state and counters after 7 steps. (The
    capture itself, CuPy's, is tested on a GPU in test_gpu.py.)"""
    from charlm.config import TrainConfig
    from charlm.step import TrainStep

    V, N, T = 13, 3, 5
    device = EmulatedCudaDevice()
    rng = np.random.default_rng(4)
    batches = random_batches(rng, V, N, T, 7, lines, reset_p=0.2, restart_p=0.4)
    settings = TrainConfig(batch_size=N, seq_len=T, lr=3e-2, lr_schedule="cosine", max_steps=7,
                           warmup_steps=2, dtype="float64")  # fmt: skip
    runs = []
    for step_type in (TrainStep, replaying_step_type()):
        model = CharModel(spec(cell=cell, dropout=0.3), V, device)
        initial = model.init_params(np.random.default_rng(0), np.float64)
        train = step_type.create(model, initial, settings, 7, dropout=device.uniforms(rng, 5))
        stats = [train(b, i) for i, b in enumerate(batches)]
        runs.append((train, [(float(s.loss), float(s.grad_norm), s.lr) for s in stats]))
    (eager, eager_stats), (graphed, graphed_stats) = runs
    (graph,) = graphed.graphs.values()
    assert graph.graph.launches == 6 and graphed.graph_error is None  # step 1 ran, then captured
    np.testing.assert_allclose(graphed_stats, eager_stats, rtol=1e-12)
    np.testing.assert_allclose(graphed.params.flat, eager.params.flat, rtol=1e-12, atol=1e-14)
    for got, want in zip(graphed.state, eager.state, strict=True):
        for g, w in zip(got, want, strict=True):
            np.testing.assert_allclose(g, w, rtol=1e-12, atol=1e-14)
    assert graphed.optimizer.t == eager.optimizer.t == 7
    assert graphed.optimizer.scalars.buffer[cudaops.COUNT] == 7
    assert graphed.dropout.draws == eager.dropout.draws == 7 * 2


@needs_gxx
def test_a_failed_capture_falls_back_to_uncaptured_steps() -> None:
    from charlm.config import TrainConfig
    from charlm.data import Batch

    class Failing(replaying_step_type()):  # type: ignore[misc]
        def _capture(self, work: Any) -> tuple[Any, Any]:
            raise RuntimeError("operation not permitted when stream is capturing")

    device = EmulatedCudaDevice()
    model = CharModel(spec(cell="lstm"), 11, device)
    settings = TrainConfig(batch_size=2, seq_len=4, dtype="float64")
    train = Failing.create(model, model.init_params(np.random.default_rng(0), np.float64),
                           settings)  # fmt: skip
    rng = np.random.default_rng(1)
    for i in range(3):
        stats = train(Batch(rng.integers(0, 11, (2, 4)), rng.integers(0, 11, (2, 4)), None), i)
        assert np.isfinite(float(stats.loss))
    assert "not permitted" in train.graph_error and not train.graphs
    assert train.optimizer.t == 3
