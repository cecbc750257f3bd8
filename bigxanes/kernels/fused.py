"""Fused float32 ADMM iteration of robust unmixing (RUM-TV / RUM-PnP), compiled with numba.

The same math, steps and channel layout as the NumPy reference
:func:`bigxanes.kernels.admm.admm_iteration` (Wang et al., Opt. Express 2023, Algorithm 1 in
scaled form, DESIGN.md §3), reorganized into a few passes over the block instead of ~100
full-array NumPy passes over float64 temporaries:

TV
    1. pass ``rhs``: ``rhs = (M - C) s + W - E + ∇ᵀ(U - D)`` minus the multiplier of the
       affine set ``1ᵀX = 1``, ``μ = (Σ_j rhs_j - (s² + 1)) / L`` (step 2), and
       ``1/(s² + 1 + count)`` (the Jacobi diagonal of ``s² + 1 - Δ``), per pixel, reading the
       neighbours of ``U - D``;
    2. ``tv_sweeps`` warm-started Jacobi sweeps ``X ← (rhs + Σ_neighbours X) / (s² + 1 + count)``,
       the last one also removing round-off, ``X += (1 - 1ᵀX) / L``;
    3. pass ``update``: steps 3-8 per pixel (scale s, the L x L M-step, ``∇X`` from the
       neighbours' new X, the isotropic shrink with threshold ``λ w / ρ`` (``w`` the guided-TV
       weight channel, 1 without), projections, dual ascent with the ρ rescale), over-relaxed
       by ``relax`` as the reference, and, only when asked, the residual channels.
PnP
    1. pass ``local``: the X-step on ``1ᵀX = 1`` (``X = (rhs - μ) / (s² + 2)``,
       ``μ = (Σ_j rhs_j - (s² + 2)) / L``, then the round-off correction), s, M, W, t, C, E, g
       and ``V = X̂ + D`` per pixel (``X̂ = α X + (1 - α) U_old``, α = ``relax``);
    2. the denoiser ``U_j = denoise(V_j, sqrt(λ/ρ))`` (numba Chambolle for ``"tv"``,
       :func:`bigxanes.kernels.denoisers.denoise_maps` for the others);
    3. pass ``dual``: ``D ← (D + X̂ - U) ρ/ρ_next`` and the regularizer residual.

The state is stored in float32 and every pixel's arithmetic is done in float64 registers, so
the result equals the float64 reference to float32 round-off (tested to 1e-5 relative). Every
pass is parallel over rows (``numba.prange``) and writes each output element from its own
inputs only: no reduction crosses rows, so the result does not depend on the thread count.
The residual channels are per-pixel, as in the reference (the caller sums them over the part
of the block it keeps); with ``residuals=False`` they are neither computed nor returned.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

import numba
import numpy as np

from .admm import RESIDUALS, StateLayout
from .denoisers import denoise_maps
from .fused_tv import denoise_maps_tv

#: Channel offsets passed to the compiled passes, in this order.
_NAMES = ("aty", "yty", "X", "s", "M", "W", "t", "C", "E", "g", "U", "D")


def _offsets(layout: StateLayout) -> np.ndarray:
    """Channel offsets of :data:`_NAMES`, then that of the guided-TV weight ``w`` (-1 if none)."""
    sl = layout.slices
    starts = [sl[n].start for n in _NAMES] + [sl["w"].start if layout.weighted else -1]
    return np.array(starts, dtype=np.int64)


@numba.njit(inline="always")
def _count(z, y, x, nz, ny, nx):
    """Number of in-block neighbours (the diagonal of ``-Δ``, Neumann boundary)."""
    c = 0.0
    if x > 0:
        c += 1.0
    if x < nx - 1:
        c += 1.0
    if y > 0:
        c += 1.0
    if y < ny - 1:
        c += 1.0
    if z > 0:
        c += 1.0
    if z < nz - 1:
        c += 1.0
    return c


# The state is channel-major (channel, z, y, x): one pixel's channels lie a whole map apart
# (4 MiB at 1024², a power of two, so they all fall in the same cache sets). Each pass
# therefore gathers the rows it needs into a small pixel-major buffer (x, channel), computes
# there, and scatters the result rows back: every access to the big arrays is a sequential
# row.


@numba.njit(inline="always")
def _gather(A, c0, nc, z, y, B, b0):
    """``B[x, b0 + c] = A[c0 + c, z, y, x]`` for c < nc (one row, channels to columns)."""
    for c in range(nc):
        for x in range(A.shape[3]):
            B[x, b0 + c] = A[c0 + c, z, y, x]


@numba.njit(inline="always")
def _scatter(B, b0, nc, A, c0, z, y):
    """``A[c0 + c, z, y, x] = B[x, b0 + c]`` for c < nc."""
    for c in range(nc):
        for x in range(A.shape[3]):
            A[c0 + c, z, y, x] = B[x, b0 + c]


@numba.njit(parallel=True, cache=True)
def _tv_rhs(S, o, L, nd, rhs, inv):
    """TV step 1, right-hand side ``(M - C) s + W - E + ∇ᵀ(U - D)`` and ``1/(s²+1+count)``."""
    n, nz, ny, nx = S.shape
    os_, oM, oW, oC, oE, oU, oD = o[3], o[4], o[5], o[7], o[8], o[10], o[11]
    K = nd * L
    for r in numba.prange(nz * ny):
        z = r // ny
        y = r - z * ny
        B = np.empty((nx, n))
        Qy = np.zeros((nx, 2 * K))  # U, D of row y - 1 (K components each)
        Qz = np.zeros((nx, 2 * K))  # U, D of plane z - 1
        R = np.empty((nx, L + 1))
        _gather(S, 0, n, z, y, B, 0)
        if y > 0:
            _gather(S, oU, 2 * K, z, y - 1, Qy, 0)
        if z > 0:
            _gather(S, oU, 2 * K, z - 1, y, Qz, 0)
        for x in range(nx):
            s = B[x, os_]
            R[x, L] = 1.0 / (s * s + 1.0 + _count(z, y, x, nz, ny, nx))
            for j in range(L):
                b = (B[x, oM + j] - B[x, oC + j]) * s + B[x, oW + j] - B[x, oE + j]
                # (∇ᵀq)_i = q_{i-1} - q_i with q_{-1} = 0 and q_{n-1} taken as 0, per axis;
                # gradient components are axis-major over the nd spatial axes (z, y, x)
                div = 0.0
                cx = (nd - 1) * L + j
                cy = (nd - 2) * L + j
                if x < nx - 1:
                    div -= B[x, oU + cx] - B[x, oD + cx]
                if x > 0:
                    div += B[x - 1, oU + cx] - B[x - 1, oD + cx]
                if y < ny - 1:
                    div -= B[x, oU + cy] - B[x, oD + cy]
                if y > 0:
                    div += Qy[x, cy] - Qy[x, K + cy]
                if nd == 3:
                    if z < nz - 1:
                        div -= B[x, oU + j] - B[x, oD + j]
                    if z > 0:
                        div += Qz[x, j] - Qz[x, K + j]
                R[x, j] = b + div
            # step 2: the multiplier of 1ᵀX = 1, μ = (Σ_j rhs_j - (s² + 1)) / L
            tot = 0.0
            for j in range(L):
                tot += R[x, j]
            mu = (tot - (s * s + 1.0)) / L
            for j in range(L):
                R[x, j] -= mu
        for j in range(L):
            for x in range(nx):
                rhs[j, z, y, x] = R[x, j]
        for x in range(nx):
            inv[z, y, x] = R[x, L]


@numba.njit(parallel=True, cache=True)
def _jacobi_sweep(src, rhs, inv, dst):
    """One Jacobi sweep ``dst = (rhs + Σ_neighbours src) · inv`` (Neumann boundary)."""
    L, nz, ny, nx = src.shape
    for r in numba.prange(nz * ny):
        z = r // ny
        y = r - z * ny
        for j in range(L):
            for x in range(nx):
                acc = np.float64(rhs[j, z, y, x])
                if x > 0:
                    acc += src[j, z, y, x - 1]
                if x < nx - 1:
                    acc += src[j, z, y, x + 1]
                if y > 0:
                    acc += src[j, z, y - 1, x]
                if y < ny - 1:
                    acc += src[j, z, y + 1, x]
                if z > 0:
                    acc += src[j, z - 1, y, x]
                if z < nz - 1:
                    acc += src[j, z + 1, y, x]
                dst[j, z, y, x] = acc * inv[z, y, x]


@numba.njit(parallel=True, cache=True)
def _jacobi_last_normalize(src, rhs, inv, out, oX):
    """The last Jacobi sweep, then the round-off correction of step 2,
    ``X += (1 - 1ᵀX) / L``, written to the X channels of ``out``."""
    L, nz, ny, nx = src.shape
    for r in numba.prange(nz * ny):
        z = r // ny
        y = r - z * ny
        xv = np.empty((L, nx))
        col = np.zeros(nx)
        for j in range(L):
            for x in range(nx):
                acc = np.float64(rhs[j, z, y, x])
                if x > 0:
                    acc += src[j, z, y, x - 1]
                if x < nx - 1:
                    acc += src[j, z, y, x + 1]
                if y > 0:
                    acc += src[j, z, y - 1, x]
                if y < ny - 1:
                    acc += src[j, z, y + 1, x]
                if z > 0:
                    acc += src[j, z - 1, y, x]
                if z < nz - 1:
                    acc += src[j, z + 1, y, x]
                v = acc * inv[z, y, x]
                xv[j, x] = v
                col[x] += v
        for j in range(L):
            for x in range(nx):
                out[oX + j, z, y, x] = xv[j, x] + (1.0 - col[x]) / L


@numba.njit(inline="always")
def _pixel_local(B, OB, x, o, L, P, AtA, rho, f, a, X, Mn, Xs, res, want):
    """Steps 3, 4, 7 and the C, E, g parts of 8 for pixel ``x`` of a gathered row ``B``
    (old state) whose normalized X is in ``X``; W and E over-relaxed by ``a`` (α: they see
    ``α X + (1 - α) W_old``).

    Writes aty, yty, s, M, W, t, C, E, g to the output row ``OB`` and fills ``Mn`` (the new
    M); when ``want``, also the residual columns r_scale, r_simplex, r_positive, dual and data
    (``OB[x, res + i]``)."""
    oaty, oyty, os_, oM, oW, ot, oC, oE, og = o[0], o[1], o[3], o[4], o[5], o[6], o[7], o[8], o[9]
    for c in range(L + 1):
        OB[x, oaty + c] = B[x, oaty + c]
    t_old = B[x, ot]
    g_old = B[x, og]
    num = 0.0
    den = 0.0
    for j in range(L):
        num += X[j] * (B[x, oM + j] - B[x, oC + j])
        den += X[j] * X[j]
    s = (num + t_old - g_old) / (den + 1.0)
    b = 1.0 - a
    for j in range(L):
        Xs[j] = X[j] * s
    for i in range(L):
        m = 0.0
        for k in range(L):
            m += P[i, k] * (B[x, oaty + k] + rho * (Xs[k] + B[x, oC + k]))
        Mn[i] = m
    t = max(s + g_old, 0.0)
    r_sc = 0.0
    r_si = 0.0
    dM = 0.0
    for j in range(L):
        e_old = B[x, oE + j]
        hx = a * X[j] + b * B[x, oW + j]
        w = max(hx + e_old, 0.0)
        rs = Xs[j] - Mn[j]
        ri = X[j] - w
        OB[x, oM + j] = Mn[j]
        OB[x, oW + j] = w
        OB[x, oC + j] = (B[x, oC + j] + rs) * f
        OB[x, oE + j] = (e_old + hx - w) * f
        r_sc += rs * rs
        r_si += ri * ri
        d = Mn[j] - B[x, oM + j]
        dM += d * d
    rp = s - t
    OB[x, os_] = s
    OB[x, ot] = t
    OB[x, og] = (g_old + rp) * f
    if want:
        OB[x, res + 0] = r_sc
        OB[x, res + 1] = r_si
        OB[x, res + 2] = rp * rp
        OB[x, res + 4] = rho * rho * dM
        ma = 0.0
        mam = 0.0
        for i in range(L):
            ma += Mn[i] * B[x, oaty + i]
            am = 0.0
            for k in range(L):
                am += AtA[i, k] * Mn[k]
            mam += Mn[i] * am
        OB[x, res + 5] = B[x, oyty] - 2.0 * ma + mam


@numba.njit(parallel=True, cache=True)
def _tv_update(S, out, o, L, nd, P, AtA, rho, thr, f, a, res, want):
    """TV steps 3-8 per pixel, reading the new X of the pixel and its forward neighbours
    from ``out``; the regularizer residual ``|∇X - U|²`` and ``w TV(X)``. With a guided-TV
    weight channel (``o[12] >= 0``) the shrink threshold is ``thr · w`` and ``w`` is copied.
    Over-relaxed by ``a``: the shrink and D see ``α ∇X + (1 - α) U_old``."""
    n, nz, ny, nx = S.shape
    oX, oU, oD, ow = o[2], o[10], o[11], o[12]
    n_ob = out.shape[0]
    for r in numba.prange(nz * ny):
        z = r // ny
        y = r - z * ny
        B = np.empty((nx, n))
        OB = np.empty((nx, n_ob))
        Xc = np.empty((nx, L))
        Xy = np.zeros((nx, L))  # X of row y + 1
        Xz = np.zeros((nx, L))  # X of plane z + 1
        _gather(S, 0, n, z, y, B, 0)
        _gather(out, oX, L, z, y, Xc, 0)
        if y < ny - 1:
            _gather(out, oX, L, z, y + 1, Xy, 0)
        if z < nz - 1:
            _gather(out, oX, L, z + 1, y, Xz, 0)
        X = np.empty(L)
        Mn = np.empty(L)
        Xs = np.empty(L)
        gX = np.zeros(3)
        v = np.zeros(3)
        hv = np.zeros(3)
        a0 = 3 - nd
        for x in range(nx):
            for j in range(L):
                X[j] = Xc[x, j]
            _pixel_local(B, OB, x, o, L, P, AtA, rho, f, a, X, Mn, Xs, res, want)
            wx = 1.0
            if ow >= 0:
                wx = B[x, ow]
                OB[x, ow] = wx
            thr_x = thr * wx
            r_reg = 0.0
            tv = 0.0
            b = 1.0 - a
            for j in range(L):
                gX[0] = Xz[x, j] - X[j] if z < nz - 1 else 0.0
                gX[1] = Xy[x, j] - X[j] if y < ny - 1 else 0.0
                gX[2] = Xc[x + 1, j] - X[j] if x < nx - 1 else 0.0
                nrm = 0.0
                gn = 0.0
                for ax in range(a0, 3):
                    c = (ax - a0) * L + j
                    g = gX[ax]
                    gn += g * g
                    hg = a * g + b * B[x, oU + c]
                    hv[ax] = hg
                    vv = hg + B[x, oD + c]
                    v[ax] = vv
                    nrm += vv * vv
                nrm = np.sqrt(nrm)
                fac = max(1.0 - thr_x / max(nrm, 1e-300), 0.0)
                tv += np.sqrt(gn)
                for ax in range(a0, 3):
                    c = (ax - a0) * L + j
                    u = v[ax] * fac
                    rr = gX[ax] - u
                    OB[x, oU + c] = u
                    OB[x, oD + c] = (B[x, oD + c] + hv[ax] - u) * f
                    r_reg += rr * rr
            if want:
                OB[x, res + 3] = r_reg
                OB[x, res + 6] = wx * tv
        _scatter(OB, 0, oX, out, 0, z, y)
        _scatter(OB, oX + L, n_ob - oX - L, out, oX + L, z, y)


@numba.njit(parallel=True, cache=True)
def _pnp_local(S, out, o, L, P, AtA, rho, f, a, res, want, V):
    """PnP steps 1-4, 7 and 8 (all but the U-step and D) per pixel; the denoiser's input
    ``V = α X + (1 - α) U_old + D`` (over-relaxed by ``a``)."""
    n, nz, ny, nx = S.shape
    oX, os_, oM, oW, oC, oE, oU, oD = o[2], o[3], o[4], o[5], o[7], o[8], o[10], o[11]
    n_ob = out.shape[0]
    for r in numba.prange(nz * ny):
        z = r // ny
        y = r - z * ny
        B = np.empty((nx, n))
        OB = np.empty((nx, n_ob))
        VB = np.empty((nx, L))
        _gather(S, 0, n, z, y, B, 0)
        X = np.empty(L)
        Mn = np.empty(L)
        Xs = np.empty(L)
        for x in range(nx):
            s = B[x, os_]
            den = s * s + 2.0
            tot = 0.0
            for j in range(L):
                base = (B[x, oM + j] - B[x, oC + j]) * s + B[x, oW + j] - B[x, oE + j]
                X[j] = base + B[x, oU + j] - B[x, oD + j]
                tot += X[j]
            # step 2 on 1ᵀX = 1: μ = (Σ_j rhs_j - den) / L, X = (rhs - μ) / den, round-off
            mu = (tot - den) / L
            col = 0.0
            for j in range(L):
                X[j] = (X[j] - mu) / den
                col += X[j]
            for j in range(L):
                X[j] = X[j] + (1.0 - col) / L
                OB[x, oX + j] = X[j]
                VB[x, j] = a * X[j] + (1.0 - a) * B[x, oU + j] + B[x, oD + j]
            _pixel_local(B, OB, x, o, L, P, AtA, rho, f, a, X, Mn, Xs, res, want)
            if want:
                OB[x, res + 6] = 0.0
        _scatter(OB, 0, oU, out, 0, z, y)
        if want:
            _scatter(OB, res, n_ob - res, out, res, z, y)
        _scatter(VB, 0, L, V, 0, z, y)


@numba.njit(parallel=True, cache=True)
def _pnp_dual(S, out, o, L, U, f, a, res, want):
    """PnP step 8 for D: ``D ← (D + α X + (1 - α) U_old - U) f``, ``U`` stored, and
    ``|X - U|²``."""
    _, nz, ny, nx = S.shape
    oX, oU, oD = o[2], o[10], o[11]
    for r in numba.prange(nz * ny):
        z = r // ny
        y = r - z * ny
        acc = np.zeros(nx)
        for j in range(L):
            for x in range(nx):
                u = np.float64(U[j, z, y, x])
                xn = np.float64(out[oX + j, z, y, x])
                rr = xn - u
                hx = a * xn + (1.0 - a) * np.float64(S[oU + j, z, y, x])
                out[oU + j, z, y, x] = u
                out[oD + j, z, y, x] = (np.float64(S[oD + j, z, y, x]) + hx - u) * f
                acc[x] += rr * rr
        if want:
            for x in range(nx):
                out[res + 3, z, y, x] = acc[x]


#: Pixels of a block per numba thread: smaller blocks run on fewer threads. Each iteration is
#: 12 parallel regions (TV, 10 sweeps); on a loaded machine a region waits for its slowest
#: thread's time slice: RUM-TV at 128² on 2 threads took 281-350 ms per iteration against
#: 29 ms on 1 (load average 8 on 2 cores, benchmarks/results/bench_backend.md).
PIXELS_PER_THREAD = 1 << 16


def block_threads(n_pixels: int, threads: int | None = None) -> int:
    """Numba threads for a block of ``n_pixels``: at most ``threads`` (None: numba's current
    setting) and at most one per :data:`PIXELS_PER_THREAD` pixels, at least 1."""
    cap = numba.get_num_threads() if threads is None else int(threads)
    return max(1, min(cap, int(n_pixels) // PIXELS_PER_THREAD))


@contextmanager
def numba_threads(n: int | None) -> Iterator[None]:
    """Run the enclosed compiled passes on ``n`` numba threads (None: leave as is).

    ``numba.set_num_threads`` is per calling thread, so an executor's worker threads can each
    give their tasks their share of the cores; clipped to ``[1, NUMBA_NUM_THREADS]``. The
    results do not depend on it (see the module docstring).
    """
    if n is None:
        yield
        return
    before = numba.get_num_threads()
    numba.set_num_threads(max(1, min(int(n), numba.config.NUMBA_NUM_THREADS)))
    try:
        yield
    finally:
        numba.set_num_threads(before)


def _as_4d(a: np.ndarray, ndim: int) -> np.ndarray:
    return a.reshape(a.shape[:1] + (1,) * (3 - ndim) + a.shape[1:])


def _fused_passes(
    S: np.ndarray,
    out: np.ndarray,
    layout: StateLayout,
    AtA: np.ndarray,
    lam: float,
    rho: float,
    rho_next: float,
    tv_sweeps: int,
    denoiser: str,
    residuals: bool,
    relax: float = 1.0,
) -> None:
    """The compiled passes of :func:`admm_iteration_fused` (arguments checked there)."""
    nd = layout.ndim
    L = layout.n_components
    n = layout.n_channels
    S4, O4 = _as_4d(S, nd), _as_4d(out, nd)
    o = _offsets(layout)
    AtA = np.ascontiguousarray(AtA, dtype=np.float64)
    P = np.linalg.inv(AtA + rho * np.eye(L))
    f = float(rho) / float(rho_next)
    a = float(relax)
    want = bool(residuals)
    if layout.method == "tv":
        sp = S4.shape[1:]
        rhs = np.empty((L,) + sp, dtype=np.float32)
        inv = np.empty(sp, dtype=np.float32)
        _tv_rhs(S4, o, L, nd, rhs, inv)
        Xc = S4[o[2] : o[2] + L]
        bufs = (np.empty((L,) + sp, dtype=np.float32), np.empty((L,) + sp, dtype=np.float32))
        for k in range(int(tv_sweeps) - 1):
            dst = bufs[k % 2]
            _jacobi_sweep(Xc, rhs, inv, dst)
            Xc = dst
        _jacobi_last_normalize(Xc, rhs, inv, O4, o[2])
        thr = float(lam) / float(rho)
        _tv_update(S4, O4, o, L, nd, P, AtA, float(rho), thr, f, a, n, want)
    else:
        V = np.empty((L,) + S4.shape[1:], dtype=np.float32)
        _pnp_local(S4, O4, o, L, P, AtA, float(rho), f, a, n, want, V)
        sigma = float(np.sqrt(lam / rho))
        V = V.reshape((L,) + S.shape[1:])
        if denoiser == "tv":
            U = denoise_maps_tv(V, sigma, nd)
        else:
            U = denoise_maps(V, sigma, denoiser, nd).astype(np.float32)
        _pnp_dual(S4, O4, o, L, _as_4d(np.ascontiguousarray(U), nd), f, a, n, want)
        if layout.weighted:
            out[o[12]] = S[o[12]]


def admm_iteration_fused(
    S: np.ndarray,
    *,
    layout: StateLayout,
    AtA: np.ndarray,
    lam: float,
    rho: float,
    rho_next: float,
    tv_sweeps: int = 10,
    denoiser: str = "tv",
    relax: float = 1.0,
    residuals: bool = True,
    out: np.ndarray | None = None,
    threads: int | None = None,
) -> np.ndarray:
    """One ADMM iteration on a float32 state block, fused and compiled (see module docstring).

    Same arguments and result as :func:`bigxanes.kernels.admm.admm_iteration`, in float32.

    Parameters
    ----------
    S : (n_channels, *spatial) ndarray
        State block (converted to C-contiguous float32 if it is not; never modified).
    layout, AtA, lam, rho, rho_next, tv_sweeps, denoiser, relax
        As :func:`~bigxanes.kernels.admm.admm_iteration`.
    residuals : bool
        Compute and return the per-pixel :data:`~bigxanes.kernels.admm.RESIDUALS` channels.
        Without them the iteration skips their arithmetic and the output has only the state.
    out : ndarray, optional
        Preallocated float32 C-contiguous output of the returned shape (not ``S``): lets a
        driver double-buffer the state without allocating per iteration.
    threads : int, optional
        At most this many numba threads for this call (None: numba's current setting), and
        at most one per :data:`PIXELS_PER_THREAD` pixels (:func:`block_threads`).

    Returns
    -------
    (n_out, *spatial) float32 ndarray if ``residuals`` else (n_channels, *spatial).
    """
    nd = layout.ndim
    n = layout.n_channels
    if S.shape[0] != n or S.ndim != nd + 1:
        raise ValueError(f"state has shape {S.shape}, expected ({n}, <{nd} spatial axes>)")
    S = np.ascontiguousarray(S, dtype=np.float32)
    n_out = layout.n_out if residuals else n
    shape = (n_out,) + S.shape[1:]
    if out is None:
        out = np.empty(shape, dtype=np.float32)
    elif out.shape != shape or out.dtype != np.float32 or not out.flags.c_contiguous:
        raise ValueError(f"out must be a C-contiguous float32 array of shape {shape}")
    elif np.shares_memory(out, S):
        raise ValueError("out must not share memory with the state S")
    with numba_threads(block_threads(S[0].size, threads)):
        _fused_passes(
            S, out, layout, AtA, lam, rho, rho_next, tv_sweeps, denoiser, residuals, relax
        )
    return out


def compile_fused(ndim: int = 2, method: str = "tv", n_components: int = 2) -> float:
    """Compile (or load from numba's on-disk cache) the passes for one kind of block, on a tiny
    block; return the seconds it took (reported apart from the iteration times)."""
    layout = StateLayout(n_components, ndim, method)
    S = np.zeros((layout.n_channels,) + (4,) * ndim, dtype=np.float32)
    S[layout.slices["X"]] = 1.0 / n_components
    t0 = time.perf_counter()
    admm_iteration_fused(
        S, layout=layout, AtA=np.eye(n_components), lam=0.1, rho=1.0, rho_next=1.0, tv_sweeps=2
    )
    return time.perf_counter() - t0


__all__ = [
    "PIXELS_PER_THREAD",
    "RESIDUALS",
    "admm_iteration_fused",
    "block_threads",
    "compile_fused",
    "numba_threads",
]
