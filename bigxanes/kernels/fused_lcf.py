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

#: Pixels per slab: each energy row of a slab is 8 kB of float32 (2 pages), the float64
#: accumulators ``(L + 2) x 16 kB`` stay in a core's L2 cache (measured at 1024² x 100, L = 2:
#: 512 px 0.13 CPU-s, 2048 px 0.11, 4096 px 0.11-0.13 for the moments).
SLAB = 2048


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
def _nnls_slab(acc, AtA, idx, ks, inv, tol, n, best, scale, best_obj, m, obj, feas):
    """Exact NNLS of the ``n`` pixels of a slab from ``acc = Aᵀy`` ``(L, n)`` into ``best``,
    support by support, each step a loop over the slab's pixels (vectorizable)."""
    L = acc.shape[0]
    for p in range(n):
        scale[p] = 0.0
        best_obj[p] = 0.0
    for i in range(L):
        for p in range(n):
            best[i, p] = 0.0
            ab = abs(acc[i, p])
            if ab > scale[p]:
                scale[p] = ab
    for p in range(n):
        scale[p] = -tol * (scale[p] + 1e-300)
    for s in range(ks.shape[0]):
        k = ks[s]
        for p in range(n):
            feas[p] = True
            obj[p] = 0.0
        for i in range(k):
            mi = m[i]
            for p in range(n):
                mi[p] = 0.0
            for j in range(k):
                c = inv[s, i, j]
                bj = acc[idx[s, j]]
                for p in range(n):
                    mi[p] += c * bj[p]
            d = 1.0 / AtA[idx[s, i], idx[s, i]]
            for p in range(n):
                if mi[p] < scale[p] * d:
                    feas[p] = False
                if mi[p] < 0.0:
                    mi[p] = 0.0
        for i in range(k):
            bi = acc[idx[s, i]]
            for p in range(n):
                obj[p] -= 2.0 * m[i, p] * bi[p]
            for j in range(k):
                g = AtA[idx[s, i], idx[s, j]]
                for p in range(n):
                    obj[p] += g * m[i, p] * m[j, p]
        for p in range(n):
            if feas[p] and obj[p] < best_obj[p]:
                best_obj[p] = obj[p]
                for i in range(L):
                    best[i, p] = 0.0
                for i in range(k):
                    best[idx[s, i], p] = m[i, p]


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
                row = Y[win[w], a : a + n]
                for p in range(n):
                    base[p] += row[p]
            for p in range(n):
                base[p] /= nwin
        for t in range(T):
            row = Y[t, a : a + n]
            for p in range(n):
                vp = np.float64(row[p]) - base[p]
                v[p] = vp
                yy[p] += vp * vp
            for i in range(L):
                ai = At[i, t]
                ac = acc[i]
                for p in range(n):
                    ac[p] += ai * v[p]
        for p in range(n):  # a bad spectrum: zero moments (clean_block), hence M0 = 0, r = 0
            bad = not np.isfinite(yy[p])
            out[o_bad, a + p] = 1.0 if bad else 0.0
            if bad:
                yy[p] = 0.0
                for i in range(L):
                    acc[i, p] = 0.0
        best = np.empty((L, n))
        m = np.empty((L, n))
        _nnls_slab(
            acc, AtA, idx, ks, inv, tol, n, best, base, v, m, np.empty(n), np.empty(n, np.bool_)
        )
        for p in range(n):
            r = yy[p]
            for i in range(L):
                gi = 0.0
                for j in range(L):
                    gi += AtA[i, j] * best[j, p]
                r += best[i, p] * (gi - 2.0 * acc[i, p])
            out[o_res, a + p] = r
            out[o_yty, a + p] = yy[p]
        for i in range(L):
            for p in range(n):
                out[o_aty + i, a + p] = acc[i, p]
                out[o_m0 + i, a + p] = best[i, p]


@numba.njit(parallel=True, cache=True)
def _nnls_many(AtY, AtA, idx, ks, inv, tol, out):
    L, N = AtY.shape
    nslab = (N + SLAB - 1) // SLAB
    for c in numba.prange(nslab):
        a = c * SLAB
        n = min(N, a + SLAB) - a
        acc = np.ascontiguousarray(AtY[:, a : a + n])
        best = np.empty((L, n))
        m = np.empty((L, n))
        tmp = np.empty((3, n))
        _nnls_slab(
            acc, AtA, idx, ks, inv, tol, n, best, tmp[0], tmp[1], m, tmp[2], np.empty(n, np.bool_)
        )
        out[:, a : a + n] = best


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

    ``Yf``: float32 or float64, read in place (a non-contiguous view is copied in its own
    dtype); ``window``: boolean mask of the pre-edge energies or None; ``A`` already
    baseline-corrected. Bad spectra get zero
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
