"""Compiled (numba) noise σ̂ of every spectrum from its second differences.

The NumPy reference is :func:`bigxanes.kernels.quality.noise_sigma_d2`:
``σ̂ = 1.4826 · median(|Δ²y - median(Δ²y)|) / √6`` per pixel, NaN where the spectrum holds
NaN (an Inf takes part in the medians, as in ``np.median``). ``np.median`` along the energy
axis of a ``(T, N)`` block partitions strided columns: measured 8.8 s for 1024² x 100 float32
(85 % of ``bx.lcf``'s time, against 0.09 s for the compiled LCF pass 1 itself). Here each
slab of :data:`SLAB` pixels is copied once, row by row, into a contiguous float64 buffer and
the two medians are taken per pixel by selection (Wirth/Hoare), in parallel over slabs: 1.6 s,
equal to the reference to round-off (tests/kernels/test_fused_quality.py). Each pixel's value
depends only on its own spectrum, so the result does not depend on the number of threads.
"""

from __future__ import annotations

import numba
import numpy as np

from .quality import _MAD_TO_SIGMA

__all__ = ["SLAB", "noise_sigma_d2_fused"]

#: Pixels per slab (a (T, 256) float64 buffer: 200 kB at T = 100, in a core's L2 cache).
SLAB = 256


@numba.njit(inline="always")
def _select(d, n, k):  # pragma: no cover - compiled
    """The k-th smallest (0-based) of ``d[:n]``; reorders ``d`` (Wirth's selection)."""
    lo, hi = 0, n - 1
    while lo < hi:
        x = d[k]
        i, j = lo, hi
        while True:
            while d[i] < x:
                i += 1
            while x < d[j]:
                j -= 1
            if i <= j:
                d[i], d[j] = d[j], d[i]
                i += 1
                j -= 1
            if i > j:
                break
        if j < k:
            lo = i
        if k < i:
            hi = j
    return d[k]


@numba.njit(inline="always")
def _median(d, n):  # pragma: no cover - compiled
    """``np.median`` of ``d[:n]`` (mean of the two middle values for even n)."""
    k = n // 2
    upper = _select(d, n, k)
    if n % 2 == 1:
        return upper
    lower = d[0]
    for i in range(1, k):  # after the selection d[:k] holds the k smallest
        if d[i] > lower:
            lower = d[i]
    return 0.5 * (lower + upper)


@numba.njit(parallel=True, cache=True)
def _sigma(Y, out):  # pragma: no cover - compiled
    T, N = Y.shape
    n_slabs = (N + SLAB - 1) // SLAB
    for b in numba.prange(n_slabs):
        s = b * SLAB
        w = min(N, s + SLAB) - s
        buf = np.empty((T, w))
        for t in range(T):
            for j in range(w):
                buf[t, j] = Y[t, s + j]
        d = np.empty(T - 2)
        for j in range(w):
            bad = False
            for t in range(T - 2):
                v = buf[t + 2, j] - 2.0 * buf[t + 1, j] + buf[t, j]
                if np.isnan(v):  # as np.median: NaN propagates, ±Inf are ordered
                    bad = True
                d[t] = v
            if bad:
                out[s + j] = np.nan
                continue
            m = _median(d, T - 2)
            for t in range(T - 2):
                d[t] = abs(d[t] - m)
            out[s + j] = _median(d, T - 2)


def noise_sigma_d2_fused(Y: np.ndarray) -> np.ndarray:
    """:func:`~bigxanes.kernels.quality.noise_sigma_d2` compiled: ``(T, ...)`` spectra along
    axis 0 (float32 or float64, read in place when C-contiguous) -> ``(...)`` float64."""
    Y = np.asarray(Y)
    if Y.shape[0] < 3:
        return np.zeros(Y.shape[1:], dtype=np.float64)
    Yf = Y.reshape(Y.shape[0], -1)
    if Yf.dtype not in (np.float32, np.float64):
        Yf = Yf.astype(np.float64)
    out = np.empty(Yf.shape[1], dtype=np.float64)
    if out.size:
        _sigma(np.ascontiguousarray(Yf), out)
    return (_MAD_TO_SIGMA * out).reshape(Y.shape[1:])
