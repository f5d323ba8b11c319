"""The CUDA C source of the fused cell kernels, and a reader of its kernel signatures.

One thread per element (r, n) of an (H, N) state; every (rows, N) operand is a pointer and its
row stride, so a kernel reads and writes strided per-step views of a window in place. Each
kernel computes exactly the expressions of its NumPy reference in `lstm.py`, `gru.py` and
`rnn.py`, in the same order of operations (sigma(x) = 0.5 tanh(0.5 x) + 0.5 as in `ops.sigmoid`).

Lines-mode resets are inside the kernels: `keep` (a row of the (T, N) keep mask, or a null
pointer for none) zeroes the previous state of the columns where a sequence starts. Zeroing a
column of c<t-1> before the product Wh c<t-1> is zeroing that column of the product, so the
kernels scale the recurrent term by keep[n] and the window loops run the product on the
unmasked state; `hm` (null for none) receives the masked c<t-1> that the weight gradient
reads. Backward, `keep_next` (row t+1, or null) masks the gradient that arrives from step t+1.

The source is a plain C subset (no CuPy-specific syntax), DTYPE standing for float or double:
`tests/test_cuda_source.py` compiles it with nvcc to PTX and with g++ through a shim that runs
the grid as a loop, and checks each kernel against the NumPy reference on the CPU.
"""

from __future__ import annotations

import re

PRELUDE = r"""
typedef DTYPE T;
typedef long long I;

__device__ T sigm(T x) { return tanh(x * (T)0.5) * (T)0.5 + (T)0.5; }
__device__ T keep_of(const T* keep, I n) { return keep ? keep[n] : (T)1; }
"""

CELLS = r"""
// ---------------------------------------------------------------- LSTM (gates u, f, o, c~)
// a (4H, N): Wx x + b in, gate activations out; wh (4H, N): Wh c<t-1> (unmasked).
extern "C" __global__ void lstm_forward(
    T* a, const T* wh, const T* cprev, T* c, T* tc, T* h,
    const T* keep, const T* hprev, T* hm,
    I H, I N, I lda, I ldwh, I ldcprev, I ldc, I ldtc, I ldh, I ldhprev, I ldhm)
{
    I i = (I)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= H * N) return;
    I r = i / N, n = i % N, ga = H * lda, gw = H * ldwh;
    T k = keep_of(keep, n);
    T* ar = a + r * lda + n;
    const T* wr = wh + r * ldwh + n;
    T u = sigm(ar[0] + wr[0] * k);
    T f = sigm(ar[ga] + wr[gw] * k);
    T o = sigm(ar[2 * ga] + wr[2 * gw] * k);
    T g = tanh(ar[3 * ga] + wr[3 * gw] * k);
    ar[0] = u; ar[ga] = f; ar[2 * ga] = o; ar[3 * ga] = g;
    T cn = f * (cprev[r * ldcprev + n] * k) + u * g;   // c = f * c_prev + u * c~
    T t = tanh(cn);
    c[r * ldc + n] = cn;
    tc[r * ldtc + n] = t;
    h[r * ldh + n] = o * t;                             // a = o * tanh(c)
    if (hm) hm[r * ldhm + n] = hprev[r * ldhprev + n] * k;
}

// dh: Wh^T dA<t+1> (masked here by keep_next), dc from step t+1 (already masked); da (4H, N)
// gets the gate gradients, dc becomes dLoss/dc<t-1> masked by keep.
extern "C" __global__ void lstm_backward(
    const T* a, const T* tc, const T* cprev, const T* dout, T* dh, T* dc, T* da,
    const T* keep, const T* keep_next,
    I H, I N, I lda, I ldtc, I ldcprev, I lddout, I lddh, I lddc, I ldda)
{
    I i = (I)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= H * N) return;
    I r = i / N, n = i % N, ga = H * lda, gd = H * ldda;
    T k = keep_of(keep, n);
    const T* ar = a + r * lda + n;
    T u = ar[0], f = ar[ga], o = ar[2 * ga], g = ar[3 * ga];
    T t = tc[r * ldtc + n];
    T dht = dh[r * lddh + n] * keep_of(keep_next, n) + dout[r * lddout + n];
    T dct = dc[r * lddc + n] + (1 - t * t) * o * dht;
    T* dr = da + r * ldda + n;
    dr[0] = (dct * g) * ((1 - u) * u);
    dr[gd] = (dct * (cprev[r * ldcprev + n] * k)) * ((1 - f) * f);
    dr[2 * gd] = (dht * t) * ((1 - o) * o);
    dr[3 * gd] = dct * ((1 - g * g) * u);
    dh[r * lddh + n] = dht;
    dc[r * lddc + n] = dct * f * k;
}

// ---------------------------------------------------------------- GRU (gates u, r, c~)
// Notes' form, before the candidate's product: u, r from a + W_ur c<t-1>; rh = r * c<t-1>.
extern "C" __global__ void gru_gates(
    T* a, const T* wur, const T* hprev, T* rh, const T* keep, T* hm,
    I H, I N, I lda, I ldwur, I ldhprev, I ldrh, I ldhm)
{
    I i = (I)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= H * N) return;
    I r = i / N, n = i % N, ga = H * lda, gw = H * ldwur;
    T k = keep_of(keep, n);
    T hp = hprev[r * ldhprev + n] * k;
    T* ar = a + r * lda + n;
    const T* wr = wur + r * ldwur + n;
    T u = sigm(ar[0] + wr[0] * k);
    T rg = sigm(ar[ga] + wr[gw] * k);
    ar[0] = u; ar[ga] = rg;
    rh[r * ldrh + n] = rg * hp;
    if (hm) hm[r * ldhm + n] = hp;
}

// c~ = tanh(a_c + W_c (r * c<t-1>)), c<t> = c<t-1> + u (c~ - c<t-1>).
extern "C" __global__ void gru_candidate(
    T* a, const T* wc, const T* hprev, T* h, const T* keep,
    I H, I N, I lda, I ldwc, I ldhprev, I ldh)
{
    I i = (I)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= H * N) return;
    I r = i / N, n = i % N, ga = H * lda;
    T hp = hprev[r * ldhprev + n] * keep_of(keep, n);
    T* ar = a + r * lda + n;
    T cand = tanh(ar[2 * ga] + wc[r * ldwc + n]);
    ar[2 * ga] = cand;
    h[r * ldh + n] = (cand - hp) * ar[0] + hp;
}

// Reset-after form from wh = W_h c<t-1> (3H, N, unmasked): rh = W_cc c<t-1> + b_hn.
extern "C" __global__ void gru_after(
    T* a, const T* wh, const T* bhn, const T* hprev, T* rh, T* h, const T* keep, T* hm,
    I H, I N, I lda, I ldwh, I ldhprev, I ldrh, I ldh, I ldhm)
{
    I i = (I)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= H * N) return;
    I r = i / N, n = i % N, ga = H * lda, gw = H * ldwh;
    T k = keep_of(keep, n);
    T hp = hprev[r * ldhprev + n] * k;
    T* ar = a + r * lda + n;
    const T* wr = wh + r * ldwh + n;
    T rhv = wr[2 * gw] * k + bhn[r];
    T u = sigm(ar[0] + wr[0] * k);
    T rg = sigm(ar[ga] + wr[gw] * k);
    T cand = tanh(ar[2 * ga] + rg * rhv);
    ar[0] = u; ar[ga] = rg; ar[2 * ga] = cand;
    rh[r * ldrh + n] = rhv;
    h[r * ldh + n] = (cand - hp) * u + hp;
    if (hm) hm[r * ldhm + n] = hp;
}

// dh <- (dh + g) keep_next + dout (g: the W^T product of step t+1, or null), kept in dh;
// d u (before sigma') into da[0:H], d pre-activation of c~ into dcand.
extern "C" __global__ void gru_back_candidate(
    const T* a, const T* hprev, const T* dout, T* dh, const T* g, T* da, T* dcand,
    const T* keep, const T* keep_next,
    I H, I N, I lda, I ldhprev, I lddout, I lddh, I ldg, I ldda, I lddcand)
{
    I i = (I)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= H * N) return;
    I r = i / N, n = i % N, ga = H * lda;
    T hp = hprev[r * ldhprev + n] * keep_of(keep, n);
    T u = a[r * lda + n], cand = a[r * lda + n + 2 * ga];
    T d = dh[r * lddh + n];
    if (g) d = d + g[r * ldg + n];
    T dht = d * keep_of(keep_next, n) + dout[r * lddout + n];
    dh[r * lddh + n] = dht;
    da[r * ldda + n] = (cand - hp) * dht;
    dcand[r * lddcand + n] = dht * ((1 - cand * cand) * u);
}

// Notes' form, from drh = W_c^T dcand: d r, sigma' on u and r, dh <- dh (1 - u) + drh r.
extern "C" __global__ void gru_back_gates(
    const T* a, const T* hprev, T* dh, T* da, const T* drh, const T* keep,
    I H, I N, I lda, I ldhprev, I lddh, I ldda, I lddrh)
{
    I i = (I)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= H * N) return;
    I r = i / N, n = i % N, ga = H * lda, gd = H * ldda;
    T hp = hprev[r * ldhprev + n] * keep_of(keep, n);
    T u = a[r * lda + n], rg = a[r * lda + n + ga];
    T d_rh = drh[r * lddrh + n];
    T* dr = da + r * ldda + n;
    dr[0] = dr[0] * ((1 - u) * u);
    dr[gd] = (d_rh * hp) * ((1 - rg) * rg);
    dh[r * lddh + n] = dh[r * lddh + n] * (1 - u) + d_rh * rg;
}

// Reset-after form: dwh (3H, N) = d(W_h c<t-1> [+ b_hn]) rows u, r, c~; dcand the d
// pre-activation of c~; dh <- dh (1 - u) (the W_h^T term comes after).
extern "C" __global__ void gru_back_after(
    const T* a, const T* hprev, const T* rh, const T* dout, T* dh, const T* g, T* dwh,
    T* dcand, const T* keep, const T* keep_next,
    I H, I N, I lda, I ldhprev, I ldrh, I lddout, I lddh, I ldg, I lddwh, I lddcand)
{
    I i = (I)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= H * N) return;
    I r = i / N, n = i % N, ga = H * lda, gd = H * lddwh;
    T hp = hprev[r * ldhprev + n] * keep_of(keep, n);
    const T* ar = a + r * lda + n;
    T u = ar[0], rg = ar[ga], cand = ar[2 * ga];
    T d = dh[r * lddh + n];
    if (g) d = d + g[r * ldg + n];
    T dht = d * keep_of(keep_next, n) + dout[r * lddout + n];
    T dc = dht * ((1 - cand * cand) * u);
    T* dr = dwh + r * lddwh + n;
    dr[0] = ((cand - hp) * dht) * ((1 - u) * u);
    dr[gd] = (dc * rh[r * ldrh + n]) * ((1 - rg) * rg);
    dr[2 * gd] = dc * rg;
    dcand[r * lddcand + n] = dc;
    dh[r * lddh + n] = dht * (1 - u);
}

// ---------------------------------------------------------------- vanilla RNN
// h: W_aa a<t-1> (unmasked) in, a<t> = g(. keep + gates) out; act 0 = tanh, 1 = relu.
extern "C" __global__ void rnn_forward(
    const T* a, T* h, const T* keep, const T* hprev, T* hm,
    I act, I H, I N, I lda, I ldh, I ldhprev, I ldhm)
{
    I i = (I)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= H * N) return;
    I r = i / N, n = i % N;
    T k = keep_of(keep, n);
    T x = h[r * ldh + n] * k + a[r * lda + n];
    h[r * ldh + n] = act == 0 ? tanh(x) : (x > 0 ? x : (T)0);
    if (hm) hm[r * ldhm + n] = hprev[r * ldhprev + n] * k;
}

// dh <- dh keep_next + dout; da = dh g'(pre-activation) from the output h.
extern "C" __global__ void rnn_backward(
    const T* h, const T* dout, T* dh, T* da, const T* keep_next,
    I act, I H, I N, I ldh, I lddout, I lddh, I ldda)
{
    I i = (I)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= H * N) return;
    I r = i / N, n = i % N;
    T y = h[r * ldh + n];
    T dht = dh[r * lddh + n] * keep_of(keep_next, n) + dout[r * lddout + n];
    dh[r * lddh + n] = dht;
    da[r * ldda + n] = act == 0 ? (1 - y * y) * dht : dht * (T)(y > 0);
}

// ---------------------------------------------------------------- after a backward window
// dh <- (dh + g) keep: the last W^T product and the first step's reset mask (g, keep: null).
extern "C" __global__ void finish_dh(
    T* dh, const T* g, const T* keep, I H, I N, I lddh, I ldg)
{
    I i = (I)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= H * N) return;
    I r = i / N, n = i % N;
    T d = dh[r * lddh + n];
    if (g) d = d + g[r * ldg + n];
    dh[r * lddh + n] = d * keep_of(keep, n);
}
"""

# The training step's other work over the flat buffers (launched from `charlm.cudaops`): the
# global norm as a two-level sum (per-thread partial sums into a buffer, then a pass over those)
# so that no thread waits on another; the clip scale, learning rate and Adam's step count stay
# in a device buffer of doubles, read by the kernels, so a captured graph replays them.
OPS = r"""
// ---------------------------------------------------------------- norm clipping
// part[i] = sum of x[j]^2 over j = i, i + P, i + 2P, ... < n, in double.
extern "C" __global__ void sum_squares(const T* x, I n, double* part, I P)
{
    I i = (I)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= P) return;
    double s = 0;
    for (I j = i; j < n; j += P) { double v = x[j]; s += v * v; }
    part[i] = s;
}

// out[i] = sum of part[j] over j = i, i + P, ... < n.
extern "C" __global__ void sum_partials(const double* part, I n, double* out, I P)
{
    I i = (I)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= P) return;
    double s = 0;
    for (I j = i; j < n; j += P) s += part[j];
    out[i] = s;
}

// One thread: norm = sqrt(sum of part[0..n)), coef = min(clip / (norm + 1e-6), 1) (1 when
// clip <= 0) into s[NORM], s[COEF].
extern "C" __global__ void clip_coefficient(const double* part, I n, double clip, double* s)
{
    if (blockIdx.x * blockDim.x + threadIdx.x != 0) return;
    double total = 0;
    for (I j = 0; j < n; ++j) total += part[j];
    double norm = sqrt(total);
    double coef = clip / (norm + 1e-6);
    s[2] = norm;
    s[3] = clip > 0 && coef < 1 ? coef : 1;
}

// g *= coef, rounded to T first (as the NumPy path multiplies by coef.astype(g.dtype)).
extern "C" __global__ void scale(T* g, I n, const double* s)
{
    I i = (I)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    g[i] = g[i] * (T)s[3];
}

// ---------------------------------------------------------------- Adam
// One thread: t += 1 and the bias corrections: s[STEP] = lr / (1 - b1^t),
// s[VSCALE] = 1 / sqrt(1 - b2^t).
extern "C" __global__ void adam_schedule(double* s, double b1, double b2)
{
    if (blockIdx.x * blockDim.x + threadIdx.x != 0) return;
    double t = s[1] + 1;
    s[1] = t;
    s[4] = s[0] / (1 - pow(b1, t));
    s[5] = 1 / sqrt(1 - pow(b2, t));
}

// optim.Optimizer.step's Adam on one flat buffer, expression for expression.
extern "C" __global__ void adam(
    T* p, const T* g, T* m, T* v, I n, const double* s, double b1, double b2, double eps,
    double wd)
{
    I i = (I)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    T gi = g[i], pi = p[i];
    if (wd != 0) pi = pi - (T)(s[0] * wd) * pi;
    T mi = m[i] * (T)b1 + (T)(1 - b1) * gi;
    T vi = v[i] * (T)b2 + gi * gi * (T)(1 - b2);
    T d = sqrt(vi) * (T)s[5] + (T)eps;
    p[i] = pi - mi / d * (T)s[4];
    m[i] = mi;
    v[i] = vi;
}

// ---------------------------------------------------------------- dropout
typedef unsigned long long U;

__device__ U mix64(U z)   // splitmix64's finaliser
{
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

// Uniform i of draw number *counter of generator `seed`: a hash of (seed, draw, i), so any
// element of any draw is computed on its own, in any order, reproducibly.
__device__ double uniform(U seed, U draw, U i)
{
    U key = mix64(mix64(seed + 0x9E3779B97F4A7C15ULL) + draw * 0x9E3779B97F4A7C15ULL);
    return (double)(mix64(key + i * 0xD1B54A32D192ED03ULL) >> 11) * (1.0 / 9007199254740992.0);
}

extern "C" __global__ void uniforms(double* out, I n, U seed, const U* counter)
{
    I i = (I)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    out[i] = uniform(seed, counter[0], (U)i);
}

// Inverted dropout: mask[i] = (u >= p) / (1 - p), as the model's NumPy expression.
extern "C" __global__ void dropout_mask(T* mask, I n, U seed, const U* counter, double p)
{
    I i = (I)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    mask[i] = (T)(uniform(seed, counter[0], (U)i) >= p) / (T)(1 - p);
}

// One thread: the next draw.
extern "C" __global__ void count_draw(U* counter)
{
    if (blockIdx.x * blockDim.x + threadIdx.x == 0) counter[0] += 1;
}
"""

SOURCE = PRELUDE + CELLS + OPS

_SIGNATURE = re.compile(r'extern "C" __global__ void (\w+)\(([^)]*)\)')


def signatures(source: str = SOURCE) -> dict[str, list[tuple[str, str]]]:
    """{kernel name: [(C type, parameter name)]} of every kernel in `source`, in order."""
    out = {}
    for name, params in _SIGNATURE.findall(source):
        pairs = []
        for param in params.split(","):
            words = param.replace("*", " * ").split()
            pairs.append((" ".join(words[:-1]), words[-1]))
        out[name] = pairs
    return out


def specialise(source: str, dtype_char: str) -> str:
    """`source` for float32 ('f') or float64 ('d')."""
    return source.replace("DTYPE", {"f": "float", "d": "double"}[dtype_char])
