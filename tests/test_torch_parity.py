"""Cross-check the NumPy model against PyTorch's nn.RNN / nn.GRU / nn.LSTM in float64 (and
loss and gradients in float32, at float32's precision).

Identical weights go into a torch model (one-hot inputs, or nn.Embedding), then the loss, every
parameter gradient, the gradient w.r.t. the carried-in state, and a few clipped Adam steps with
the state carried between windows must agree to ~1e-10.

Mapping (our rows -> torch rows): LSTM ours u, f, o, c~ -> torch i, f, g, o; GRU ours u, r, c~
-> torch r, z, n with z = 1 - u (so torch's z rows are our u rows negated), and our reset-after
GRU's bhn is torch's b_hn. Our single bias b is torch's b_ih; torch's b_hh is zero (but b_hn).
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from charlm.device import get_device, has_numba
from charlm.model import CharModel
from charlm.optim import Optimizer, clip_gradients

torch = pytest.importorskip("torch")
nn = torch.nn
F = torch.nn.functional

V, H, L = 6, 5, 2

# For each torch gate block, in torch's order: (our gate block, sign).
TORCH_GATES = {
    "rnn": [(0, 1.0)],
    "gru": [(1, 1.0), (0, -1.0), (2, 1.0)],  # r, z = -(u), n = c~
    "lstm": [(0, 1.0), (1, 1.0), (3, 1.0), (2, 1.0)],  # i = u, f, g = c~, o
}
TORCH_CELLS = {"rnn": nn.RNN, "gru": nn.GRU, "lstm": nn.LSTM}


@pytest.fixture(autouse=True)
def float64_default():
    """torch's default dtype is float64 inside these tests only."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        yield
    finally:
        torch.set_default_dtype(old)


def make_spec(cell: str, embedding_size: int = 0, activation: str = "tanh") -> SimpleNamespace:
    return SimpleNamespace(
        cell=cell,
        hidden_size=H,
        num_layers=L,
        dropout=0.0,
        embedding_size=embedding_size,
        gru_reset_after=cell == "gru",
        rnn_activation=activation,
    )


# --- our params <-> torch modules ---------------------------------------------------------------


def rows_to_torch(a: np.ndarray, cell: str) -> np.ndarray:
    """Fused gate rows (ours) -> torch's gate order and sign."""
    order = TORCH_GATES[cell]
    blocks = np.split(a, len(order), axis=0)
    return np.concatenate([sign * blocks[ours] for ours, sign in order], axis=0)


def rows_from_torch(a: np.ndarray, cell: str) -> np.ndarray:
    """Inverse of rows_to_torch (also maps gradients: the map is linear)."""
    order = TORCH_GATES[cell]
    blocks = np.split(a, len(order), axis=0)
    ours = [None] * len(order)
    for torch_block, (our_block, sign) in enumerate(order):
        ours[our_block] = sign * blocks[torch_block]
    return np.concatenate(ours, axis=0)


class TorchCharModel(nn.Module):
    """The same architecture as CharModel: [embedding | one-hot] -> L layers -> linear head."""

    def __init__(self, spec: SimpleNamespace) -> None:
        super().__init__()
        self.spec = spec
        E = spec.embedding_size
        self.embed = nn.Embedding(V, E) if E else None
        kwargs = {"nonlinearity": spec.rnn_activation} if spec.cell == "rnn" else {}
        self.rnn = TORCH_CELLS[spec.cell](E or V, H, num_layers=L, **kwargs)
        self.head = nn.Linear(H, V)

    def forward(self, x, state):
        ids = x.T  # (T, N)
        dtype = self.head.weight.dtype  # float64, or float32 after .float()
        inp = self.embed(ids) if self.embed is not None else F.one_hot(ids, V).to(dtype)
        out, new_state = self.rnn(inp, state)
        return self.head(out), new_state  # (T, N, V)

    def bias_hh_used(self, i: int) -> slice:
        """The rows of torch's b_hh that are our parameters (GRU's b_hn); the rest stay 0."""
        return slice(2 * H, 3 * H) if self.spec.cell == "gru" else slice(0, 0)

    def load(self, params: dict[str, np.ndarray]) -> None:
        """Copy our parameters in."""
        cell = self.spec.cell
        with torch.no_grad():
            for i in range(L):
                ours = {
                    "weight_ih": rows_to_torch(params[f"l{i}.Wx"], cell),
                    "weight_hh": rows_to_torch(params[f"l{i}.Wh"], cell),
                    "bias_ih": rows_to_torch(params[f"l{i}.b"], cell),
                }
                for name, value in ours.items():
                    getattr(self.rnn, f"{name}_l{i}").copy_(torch.from_numpy(value))
                bias_hh = getattr(self.rnn, f"bias_hh_l{i}")
                bias_hh.zero_()
                if cell == "gru":
                    bias_hh[self.bias_hh_used(i)] = torch.from_numpy(params[f"l{i}.bhn"])
            self.head.weight.copy_(torch.from_numpy(params["Wy"]))
            self.head.bias.copy_(torch.from_numpy(params["by"]))
            if self.embed is not None:
                self.embed.weight.copy_(torch.from_numpy(params["embed"].T))

    def export(self, attr: str) -> dict[str, np.ndarray]:
        """Parameters (attr='data') or their gradients (attr='grad') under our names."""

        def get(t) -> np.ndarray:
            return getattr(t, attr).detach().numpy().copy()

        cell = self.spec.cell
        out: dict[str, np.ndarray] = {}
        if self.embed is not None:
            out["embed"] = get(self.embed.weight).T
        for i in range(L):
            out[f"l{i}.Wx"] = rows_from_torch(get(getattr(self.rnn, f"weight_ih_l{i}")), cell)
            out[f"l{i}.Wh"] = rows_from_torch(get(getattr(self.rnn, f"weight_hh_l{i}")), cell)
            out[f"l{i}.b"] = rows_from_torch(get(getattr(self.rnn, f"bias_ih_l{i}")), cell)
            if cell == "gru":
                out[f"l{i}.bhn"] = get(getattr(self.rnn, f"bias_hh_l{i}"))[self.bias_hh_used(i)]
        out["Wy"] = get(self.head.weight)
        out["by"] = get(self.head.bias)
        return out

    def drop_unused_bias_grads(self) -> None:
        """Zero the gradient of torch's b_hh rows that are not our parameters (kept at 0)."""
        for i in range(L):
            bias_hh = getattr(self.rnn, f"bias_hh_l{i}")
            keep = torch.zeros_like(bias_hh.grad)
            keep[self.bias_hh_used(i)] = 1.0
            bias_hh.grad.mul_(keep)


def state_to_torch(state, cell: str, requires_grad: bool = False):
    """Our per-layer (H, N) states -> torch's h0 (L, N, H) [and c0]."""
    parts = [
        torch.tensor(np.stack([layer[j].T for layer in state]), requires_grad=requires_grad)
        for j in range(len(state[0]))
    ]
    return tuple(parts) if cell == "lstm" else parts[0]


def state_from_torch(tstate, cell: str, attr: str = "data"):
    """torch (L, N, H) tensors (or their .grad) -> our per-layer tuples of (H, N) arrays."""
    parts = tstate if cell == "lstm" else (tstate,)
    arrays = [getattr(p, attr).detach().numpy() for p in parts]
    return [tuple(a[i].T.copy() for a in arrays) for i in range(L)]


# Every kernel set the CPU has: the NumPy reference and, with numba, the compiled one.
KERNELS = ["numpy", *(["compiled"] if has_numba() else [])]


def setup(
    spec: SimpleNamespace,
    N: int = 3,
    T: int = 7,
    windows: int = 1,
    seed: int = 0,
    kernels: str = "numpy",
):
    rng = np.random.default_rng(seed)
    model = CharModel(spec, V, get_device("cpu", kernels))
    params = model.init_params(rng, np.float64)
    for value in params.values():
        value += 0.2 * rng.standard_normal(value.shape)
    xs = [rng.integers(0, V, size=(N, T)) for _ in range(windows)]
    ys = [rng.integers(0, V, size=(N, T)) for _ in range(windows)]
    state = [
        tuple(rng.standard_normal(s.shape) * 0.5 for s in layer)
        for layer in model.initial_state(N, np.float64)
    ]
    tmodel = TorchCharModel(spec)
    tmodel.load(params)
    return model, params, xs, ys, state, tmodel


def torch_loss(tmodel, x: np.ndarray, y: np.ndarray, tstate):
    logits, new_state = tmodel(torch.from_numpy(x), tstate)
    loss = F.cross_entropy(logits.reshape(-1, V), torch.from_numpy(y.T.reshape(-1)))
    return loss, new_state


def assert_close(ours: np.ndarray, theirs: np.ndarray, what: str, tol: float = 1e-10) -> None:
    np.testing.assert_allclose(ours, theirs, rtol=tol, atol=1e-3 * tol, err_msg=what)


CASES = [
    ("rnn-tanh", "rnn", 0, "tanh"),
    ("rnn-relu", "rnn", 0, "relu"),
    ("gru", "gru", 0, "tanh"),
    ("lstm", "lstm", 0, "tanh"),
    ("gru-embed", "gru", 4, "tanh"),
    ("lstm-embed", "lstm", 4, "tanh"),
]


def test_mapping_round_trip() -> None:
    for cell, order in TORCH_GATES.items():
        a = np.arange(len(order) * H * 2, dtype=np.float64).reshape(len(order) * H, 2)
        np.testing.assert_array_equal(rows_from_torch(rows_to_torch(a, cell), cell), a)
    spec = make_spec("gru", 3)
    model, params, *_, tmodel = setup(spec)
    exported = tmodel.export("data")
    assert list(exported) == list(params)
    for k in params:
        np.testing.assert_array_equal(exported[k], params[k])


@pytest.mark.parametrize("kernels", KERNELS)
@pytest.mark.parametrize(
    ("case", "cell", "embedding_size", "act"), CASES, ids=[c[0] for c in CASES]
)
def test_loss_and_gradients_match_torch(case, cell, embedding_size, act, kernels) -> None:
    spec = make_spec(cell, embedding_size, act)
    model, params, (x,), (y,), state, tmodel = setup(spec, kernels=kernels)
    loss, grads, new_state, dstate = model.loss(params, x, y, state)

    tstate = state_to_torch(state, cell, requires_grad=True)
    tloss, tnew = torch_loss(tmodel, x, y, tstate)
    tloss.backward()

    assert loss == pytest.approx(tloss.item(), rel=1e-12)
    tgrads = tmodel.export("grad")
    assert list(tgrads) == list(grads)
    for k in grads:
        assert_close(grads[k], tgrads[k], f"d{k}")
    tdstate = state_from_torch(tstate, cell, "grad")
    for i, (ours, theirs) in enumerate(zip(dstate, tdstate, strict=True)):
        for name, a, b in zip(model.cells[i].state_names, ours, theirs, strict=True):
            assert_close(a, b, f"d state l{i}.{name}")
    for ours, theirs in zip(new_state, state_from_torch(tnew, cell), strict=True):
        for a, b in zip(ours, theirs, strict=True):
            assert_close(a, b, "final state")


@pytest.mark.parametrize("kernels", KERNELS)
@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize(
    ("case", "cell", "embedding_size", "act"), CASES, ids=[c[0] for c in CASES]
)
def test_float32_loss_and_gradients_match_torch(
    case, cell, embedding_size, act, seed, kernels
) -> None:
    """float32 (what training runs in) against torch's float32, from the same rounded weights.

    Measured over 100 seeds per case (T=7): the worst gradient / state error is 0.34 of the
    bound below and the worst loss error 0.34e-6 relative, so the bound has a 3x margin; a
    wrong gradient is off by orders of magnitude more. (Over T=50 a tanh RNN's float32 rounding
    is amplified to ~3e-5 norm-wise in both libraries, which is why the window stays short.)
    """
    spec = make_spec(cell, embedding_size, act)
    model, params, (x,), (y,), state, _ = setup(spec, seed=seed, kernels=kernels)
    params = {k: v.astype(np.float32) for k, v in params.items()}
    state = [tuple(s.astype(np.float32) for s in layer) for layer in state]
    loss, grads, new_state, dstate = model.loss(params, x, y, state)
    tmodel = TorchCharModel(spec).float()
    tmodel.load(params)
    tstate = state_to_torch(state, cell, requires_grad=True)
    tloss, tnew = torch_loss(tmodel, x, y, tstate)
    tloss.backward()
    assert tloss.dtype == torch.float32

    assert loss == pytest.approx(tloss.item(), rel=1e-6)
    tgrads = tmodel.export("grad")
    assert list(tgrads) == list(grads)
    pairs = [(f"d{k}", grads[k], tgrads[k]) for k in grads]
    tdstate = state_from_torch(tstate, cell, "grad")
    for i, (ours, theirs) in enumerate(zip(dstate, tdstate, strict=True)):
        names = model.cells[i].state_names
        pairs += [(f"d state l{i}.{n}", a, b) for n, a, b in zip(names, ours, theirs, strict=True)]
    for ours, theirs in zip(new_state, state_from_torch(tnew, cell), strict=True):
        pairs += [("final state", a, b) for a, b in zip(ours, theirs, strict=True)]
    for what, ours, theirs in pairs:
        assert ours.dtype == theirs.dtype == np.float32, what  # really the float32 path
        np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-6, err_msg=what)


@pytest.mark.parametrize(
    ("case", "cell", "embedding_size"),
    [("rnn", "rnn", 0), ("gru", "gru", 0), ("lstm", "lstm", 0), ("lstm-embed", "lstm", 3)],
)
def test_clipped_adam_with_carried_state_matches_torch(case, cell, embedding_size) -> None:
    spec = make_spec(cell, embedding_size)
    model, params, xs, ys, state, tmodel = setup(spec, N=4, T=6, windows=3, seed=1)
    lr, clip, betas, eps = 0.02, 0.05, (0.9, 0.99), 1e-8
    opt = Optimizer("adam", params, beta1=betas[0], beta2=betas[1], eps=eps)
    topt = torch.optim.Adam(tmodel.parameters(), lr=lr, betas=betas, eps=eps)
    tstate = state_to_torch(state, cell)
    for x, y in zip(xs, ys, strict=True):
        loss, grads, state, _ = model.loss(params, x, y, state)
        norm = clip_gradients(grads, clip, "norm")
        opt.step(params, grads, lr)

        topt.zero_grad()
        tloss, tnew = torch_loss(tmodel, x, y, tstate)
        tloss.backward()
        tmodel.drop_unused_bias_grads()
        tnorm = torch.nn.utils.clip_grad_norm_(tmodel.parameters(), clip)
        topt.step()
        tstate = tuple(s.detach() for s in tnew) if cell == "lstm" else tnew.detach()

        assert norm > 2 * clip  # clipping is really active
        assert loss == pytest.approx(tloss.item(), rel=1e-10)
        assert norm == pytest.approx(tnorm.item(), rel=1e-10)
    final = tmodel.export("data")
    for k in params:
        assert_close(params[k], final[k], k)
    for ours, theirs in zip(state, state_from_torch(tstate, cell), strict=True):
        for a, b in zip(ours, theirs, strict=True):
            assert_close(a, b, "carried state")
    # the unused torch biases never moved
    for i in range(L):
        bias_hh = getattr(tmodel.rnn, f"bias_hh_l{i}").detach().numpy()
        mask = np.ones(bias_hh.shape, dtype=bool)
        mask[tmodel.bias_hh_used(i)] = False
        np.testing.assert_array_equal(bias_hh[mask], 0.0)
