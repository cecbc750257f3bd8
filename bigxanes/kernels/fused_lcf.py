"""Compiled (numba) pass-1 LCF: block moments, exact NNLS and residual in one read of the stack.

The NumPy reference is :func:`bigxanes.kernels.moments.block_moments` (``AᵀY``, ``yᵀy``, the
bad-spectrum map, with the pre-edge baseline), :func:`bigxanes.kernels.lcf.nnls_coefficients`
(exact NNLS by enumerating the active sets) and :func:`bigxanes.kernels.moments.residual_sq`
(``|y - A m|² = yᵀy - 2 mᵀAᵀy + mᵀAᵀAm``); this module computes the same quantities in one
pass per slab of pixels (docs/design.md, "Pass 1"):

1. per slab of :data:`SLAB` pixels, the pre-edge mean ``b = mean_{t in window} y_t`` and, row
   by row over the energies, ``v = y_t - b`` in float64, ``Aᵀy += A_t v`` and ``yᵀy += v²``.
   The stack is read in its own dtype (a float32 stack is never copied to float64);
2. per pixel, a non-finite ``yᵀy`` marks a bad spectrum (zero moments, as
   :func:`~bigxanes.kernels.moments.clean_block`); otherwise the NNLS minimum over the
   ``2^L - 1`` supports S, ``m_S = (A_SᵀA_S)⁻¹ A_Sᵀy`` (inverses computed once per block),
   feasible when ``m_S >= -tol·max|Aᵀy| / diag(A_SᵀA_S)``, the lowest
   ``mᵀ(AᵀA)m - 2 mᵀAᵀy`` winning (the reference's rule and order), then the residual.

Slabs are independent and each pixel's sums run in a fixed order, so the result does not
depend on the number of threads (``numba.prange`` over slabs).
"""

from __future__ import annotations

from itertools import combinations

import numba
import numpy as np

from .lcf import MAX_ENUMERATED_COMPONENTS

__all__ = ["SLAB", "nnls_tables", "nnls_coefficients_fused", "lcf_pass1_fused"]

#: Pixels per slab: T = 100 float32 energies x 512 px = 200 kB, the slab and its float64
#: accumulators stay in a core's L2 cache.
SLAB = 512


def nnls_tables(AtA: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Supports of the exact NNLS enumeration and their inverse Gram matrices.

    Returns
    -------
    idx : (n_sets, L) int64
        Component indices of each support (in :func:`itertools.combinations` order, the order
        of :func:`bigxanes.kernels.lcf.nnls_coefficients`), padded with -1.
    k : (n_sets,) int64
        Support sizes.
    inv : (n_sets, L, L) float64
        ``(A_SᵀA_S)⁻¹`` in the top-left ``k x k`` corner.
    """
    AtA = np.asarray(AtA, dtype=np.float64)
    L = AtA.shape[0]
    if L > MAX_ENUMERATED_COMPONENTS:
        raise ValueError(
            f"{L} references: exact batched NNLS supports at most {MAX_ENUMERATED_COMPONENTS}; "
            "use fewer reference spectra"
        )
    sets = [S for k in range(1, L + 1) for S in combinations(range(L), k)]
    idx = np.full((len(sets), L), -1, dtype=np.int64)
    ks = np.empty(len(sets), dtype=np.int64)
    inv = np.zeros((len(sets), L, L))
    for i, S in enumerate(sets):
        k = len(S)
        idx[i, :k] = S
        ks[i] = k
        inv[i, :k, :k] = np.linalg.inv(AtA[np.ix_(S, S)])
    return idx, ks, inv


@numba.njit(inline="always")
def _nnls_pixel(b, AtA, idx, ks, inv, tol, m, best):
    """Exact NNLS of one pixel from ``b = Aᵀy`` into ``best`` (``m``: scratch, length L)."""
    L = b.shape[0]
    mx = 0.0
    for i in range(L):
        best[i] = 0.0
        if abs(b[i]) > mx:
            mx = abs(b[i])
    scale = mx + 1e-300
    best_obj = 0.0
    for s in range(ks.shape[0]):
        k = ks[s]
        feasible = True
        for i in range(k):
            acc = 0.0
            for j in range(k):
                acc += inv[s, i, j] * b[idx[s, j]]
            ii = idx[s, i]
            if acc < -tol * scale / AtA[ii, ii]:
                feasible = False
            m[i] = acc if acc > 0.0 else 0.0
        if not feasible:
            continue
        obj = 0.0
        for i in range(k):
            gi = 0.0
            for j in range(k):
                gi += AtA[idx[s, i], idx[s, j]] * m[j]
            obj += m[i] * (gi - 2.0 * b[idx[s, i]])
        if obj < best_obj:
            best_obj = obj
            for i in range(L):
                best[i] = 0.0
            for i in range(k):
                best[idx[s, i]] = m[i]


@numba.njit(parallel=True, cache=True)
def _nnls_many(AtY, AtA, idx, ks, inv, tol, out):
    L, N = AtY.shape
    nslab = (N + SLAB - 1) // SLAB
    for c in numba.prange(nslab):
        b = np.empty(L)
        m = np.empty(L)
        best = np.empty(L)
        for n in range(c * SLAB, min(N, (c + 1) * SLAB)):
            for i in range(L):
                b[i] = AtY[i, n]
            _nnls_pixel(b, AtA, idx, ks, inv, tol, m, best)
            for i in range(L):
                out[i, n] = best[i]


def nnls_coefficients_fused(AtA: np.ndarray, AtY: np.ndarray, tol: float = 1e-12) -> np.ndarray:
    """:func:`bigxanes.kernels.lcf.nnls_coefficients`, compiled, parallel over pixels.

    Parameters
    ----------
    AtA : (L, L) ndarray
    AtY : (L, N) ndarray

    Returns
    -------
    M : (L, N) float64 ndarray, non-negative.
    """
    AtA = np.ascontiguousarray(AtA, dtype=np.float64)
    AtY = np.ascontiguousarray(AtY, dtype=np.float64)
    idx, ks, inv = nnls_tables(AtA)
    out = np.empty_like(AtY)
    _nnls_many(AtY, AtA, idx, ks, inv, float(tol), out)
    return out


@numba.njit(parallel=True, cache=True)
def _pass1(Y, At, win, AtA, idx, ks, inv, tol, out, o_aty, o_yty, o_m0, o_res, o_bad):
    T, N = Y.shape
    L = At.shape[0]
    nwin = win.shape[0]
    nslab = (N + SLAB - 1) // SLAB
    for c in numba.prange(nslab):
        a = c * SLAB
        n = min(N, a + SLAB) - a
        base = np.zeros(n)
        acc = np.zeros((L, n))
        yy = np.zeros(n)
        v = np.empty(n)
        if nwin > 0:
            for w in range(nwin):
                t = win[w]
                for p in range(n):
                    base[p] += Y[t, a + p]
            for p in range(n):
                base[p] /= nwin
        for t in range(T):
            for p in range(n):
                v[p] = np.float64(Y[t, a + p]) - base[p]
            for p in range(n):
                yy[p] += v[p] * v[p]
            for i in range(L):
                ai = At[i, t]
                for p in range(n):
                    acc[i, p] += ai * v[p]
        b = np.empty(L)
        m = np.empty(L)
        best = np.empty(L)
        for p in range(n):
            q = a + p
            if not np.isfinite(yy[p]):
                out[o_bad, q] = 1.0
                out[o_yty, q] = 0.0
                out[o_res, q] = 0.0
                for i in range(L):
                    out[o_aty + i, q] = 0.0
                    out[o_m0 + i, q] = 0.0
                continue
            out[o_bad, q] = 0.0
            out[o_yty, q] = yy[p]
            for i in range(L):
                b[i] = acc[i, p]
                out[o_aty + i, q] = b[i]
            _nnls_pixel(b, AtA, idx, ks, inv, tol, m, best)
            r = yy[p]
            for i in range(L):
                out[o_m0 + i, q] = best[i]
                gi = 0.0
                for j in range(L):
                    gi += AtA[i, j] * best[j]
                r += best[i] * (gi - 2.0 * b[i])
            out[o_res, q] = r


def lcf_pass1_fused(
    Yf: np.ndarray,
    A: np.ndarray,
    window: np.ndarray | None,
    out: np.ndarray,
    channels: dict[str, slice],
    tol: float = 1e-12,
) -> int:
    """``AᵀY``, ``yᵀy``, bad map, NNLS ``M0`` and ``|y - A M0|²`` of ``Yf`` ``(T, N)`` into
    ``out`` ``(channels, N)`` float64 (channels named as :class:`~.pass1.Pass1Layout`:
    ``aty``, ``yty``, ``M0``, ``resid0``, ``bad``).

    ``Yf``: float32 or float64 , read in place; ``window``: boolean mask
    of the pre-edge energies or None; ``A`` already baseline-corrected. Bad spectra get zero
    moments, coefficients and residual. Returns the number of bad spectra (the caller applies
    the NaN policy).
    """
    A = np.asarray(A, dtype=np.float64)
    AtA = np.ascontiguousarray(A.T @ A)
    idx, ks, inv = nnls_tables(AtA)
    win = np.zeros(0, np.int64) if window is None else np.flatnonzero(window).astype(np.int64)
    _pass1(
        np.ascontiguousarray(Yf),
        np.ascontiguousarray(A.T),
        win,
        AtA,
        idx,
        ks,
        inv,
        float(tol),
        out,
        channels["aty"].start,
        channels["yty"].start,
        channels["M0"].start,
        channels["resid0"].start,
        channels["bad"].start,
    )
    return int(np.count_nonzero(out[channels["bad"].start]))
