"""Image statistics of pass 1: the data scale ``c``, the noise level ``σ̂`` and the λ set-up.

The data scale is the 99th percentile of the NNLS scale map ``s0 = 1ᵀM0`` read from a histogram
with a fixed number of bins on ``[0, max s0]``: the whole array and the sum of per-block
histograms (the engine) give the same number, unlike a sort-based percentile
(docs/design.md, "Scaling and λ").
"""

from __future__ import annotations

import math

import numpy as np

#: Bins of the histogram that gives the data scale.
HIST_BINS = 4096
#: Quantile of the NNLS scale map taken as the data scale ``c``.
SCALE_QUANTILE = 0.99


def scale_histogram(s0: np.ndarray, smax: float, bins: int = HIST_BINS) -> np.ndarray:
    """Counts of ``s0`` in ``bins`` equal bins on ``[0, smax]`` (additive over blocks)."""
    h, _ = np.histogram(np.asarray(s0).ravel(), bins=bins, range=(0.0, float(smax)))
    return h


def histogram_edges(smax: float, bins: int = HIST_BINS) -> np.ndarray:
    """Edges of :func:`scale_histogram`."""
    return np.linspace(0.0, float(smax), bins + 1)


def scale_from_histogram(
    hist: np.ndarray, edges: np.ndarray, quantile: float = SCALE_QUANTILE
) -> float:
    """Upper edge of the histogram bin where the cumulative count reaches ``quantile``."""
    cdf = np.cumsum(hist) / max(hist.sum(), 1)
    i = int(np.searchsorted(cdf, quantile))
    return float(edges[min(i + 1, len(edges) - 1)])


def data_scale(hist: np.ndarray | None, smax: float) -> float:
    """Data scale ``c`` from the summed histogram; 1.0 for an image without material."""
    if hist is None or not float(smax) > 0:
        return 1.0
    return scale_from_histogram(np.asarray(hist), histogram_edges(smax, len(hist)))


def robust_scale(s0: np.ndarray, quantile: float = SCALE_QUANTILE, bins: int = HIST_BINS) -> float:
    """Data scale ``c``: the ``quantile`` of the scale map ``s0``, from a fixed-bin histogram.

    Returns 1.0 for an image without material.
    """
    s0 = np.asarray(s0, dtype=np.float64).ravel()
    smax = float(s0.max(initial=0.0))
    if not smax > 0:
        return 1.0
    return scale_from_histogram(
        scale_histogram(s0, smax, bins), histogram_edges(smax, bins), quantile
    )


def noise_variance(
    sum_sq_residual: float, n_pixels: int, n_energies: int, n_components: int, scale: float
) -> float:
    """σ̂² of the scaled data from the NNLS residual: ``Σ|y - A m0|² / (N (T - L) c²)``."""
    dof = max(n_pixels * (n_energies - n_components), 1)
    return float(sum_sq_residual) / dof / (scale * scale)


def reference_contrast(A: np.ndarray) -> float:
    """Contrast of the references: the smallest distance ``min_{i<j} ||a_i - a_j||₂``.

    The two closest references are the hardest to tell apart; the fraction noise of a pixel
    with scale 1 is about ``σ / contrast``.
    """
    A = np.asarray(A, dtype=np.float64)
    L = A.shape[1]
    if L < 2:
        return float(np.linalg.norm(A[:, 0]))
    return float(min(np.linalg.norm(A[:, i] - A[:, j]) for i in range(L) for j in range(i + 1, L)))


def auto_lambda(lam_factor: float, sigma: float, A: np.ndarray) -> float:
    """``λ = lam_factor · σ̂ · δ`` (σ̂: noise of the scaled stack, δ: reference contrast)."""
    return float(lam_factor * sigma * reference_contrast(A))


def noise_sigma(noise_var: float, scale: float) -> float:
    """σ̂ in the stack's units from σ̂² of the scaled data: ``sqrt(σ̂²) · c``."""
    return float(math.sqrt(max(noise_var, 0.0)) * scale)
