"""Fit quality of a linear-combination model against the noise: reduced χ² and R-factor.

Pure NumPy on one block. With the per-pixel sums ``yty = Σ_t y²``, ``aty = Aᵀy`` and the
coefficients ``M`` (``ŷ = A M``), the squared residual is
``|y - A M|² = yᵀy - 2 Mᵀ(Aᵀy) + Mᵀ(AᵀA) M`` (no energy-long array is formed).

- Reduced χ² per pixel: ``χ²_ν = |y - ŷ|² / ((T - L) σ̂²)``; about 1 when the model explains the
  data to the noise level σ̂ (a per-energy standard deviation), ≫ 1 when it does not.
- R-factor (as in Athena/LCF practice): ``R = Σ(y - ŷ)² / Σ y²`` over the pixels considered.
- σ̂ from the data (:func:`noise_sigma_d2`): the second difference along energy
  ``Δ²y_t = y_{t+1} - 2 y_t + y_{t-1}`` of white noise has variance ``6 σ²`` while a smooth
  spectrum contributes little; a robust scale (1.4826 × MAD) of ``Δ²y`` over the energies,
  divided by ``√6``, estimates each pixel's noise std without a model (a constant baseline
  cancels too). Edges and white lines make a few large ``Δ²y``, which the MAD ignores.
- Summary over the mask from a histogram of log χ² (:func:`chi2_histogram`): additive over
  blocks, so the engine and the in-memory API give the same median and 90th percentile.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

#: reduced χ² above which the model is said not to explain the data
CHI2_WARN = 2.0

LIKELY_CAUSES = (
    "references shifted in energy against the data (--energy-shift auto), wrong references "
    "or a missing phase (add its reference), an energy range holding features no reference "
    "has (--energy-range), or a baseline/normalization mismatch (--baseline)"
)


#: log-spaced χ² bin edges of the summary histogram: 100 bins per decade (2.3 % resolution)
CHI2_EDGES = np.logspace(-4.0, 8.0, 1201)

#: 1.4826 · MAD estimates a Gaussian std; Δ²y of white noise has std √6 σ.
_MAD_TO_SIGMA = 1.4826 / np.sqrt(6.0)


def noise_sigma_d2(Y: np.ndarray) -> np.ndarray:
    """Noise std of each spectrum from its second differences along energy (axis 0).

    ``σ̂ = 1.4826 · median(|Δ²y - median(Δ²y)|) / √6`` per pixel; 0 for spectra with fewer
    than 3 energies and NaN where the spectrum holds NaN/Inf.

    Parameters
    ----------
    Y : (T, ...) ndarray
        Spectra along axis 0.

    Returns
    -------
    (...) ndarray, float64
    """
    Y = np.asarray(Y)
    if Y.shape[0] < 3:
        return np.zeros(Y.shape[1:], dtype=np.float64)
    d2 = np.diff(Y.reshape(Y.shape[0], -1), n=2, axis=0).astype(np.float64, copy=False)
    with np.errstate(invalid="ignore"):
        med = np.median(d2, axis=0)
        sig = _MAD_TO_SIGMA * np.median(np.abs(d2 - med), axis=0)
    return sig.reshape(Y.shape[1:])


def chi2_from_rms(rms: Any, sigma: Any, n_energies: int, n_components: int) -> Any:
    """Reduced χ² map from the residual RMS map: ``T · rms² / ((T - L) σ̂²)``.

    Operators only: works on NumPy and on dask arrays (the engine's lazy maps). ``sigma`` is a
    map (per-pixel σ̂) or a number (``--noise-sigma``); σ̂ = 0 gives Inf (a noiseless pixel
    that is not fitted exactly) or NaN (0/0).
    """
    dof = max(int(n_energies) - int(n_components), 1)
    return (rms * rms) * (float(n_energies) / dof) / (sigma * sigma)


def chi2_histogram(chi2: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """Counts of one block for the χ² summary: ``[n, n_bad, under, bins..., over]``.

    ``n``: finite χ² in ``mask``; ``n_bad``: those above :data:`CHI2_WARN`; then the counts
    below, in and above :data:`CHI2_EDGES`. Additive over blocks.
    """
    c = np.asarray(chi2, dtype=np.float64)
    if mask is not None:
        c = c[np.asarray(mask, dtype=bool)]
    c = c[np.isfinite(c)].ravel()
    out = np.zeros(CHI2_EDGES.size + 3, dtype=np.int64)
    out[0] = c.size
    out[1] = int(np.count_nonzero(c > CHI2_WARN))
    idx = np.searchsorted(CHI2_EDGES, c, side="right")  # 0: under, len(edges): over
    out[2:] = np.bincount(idx, minlength=CHI2_EDGES.size + 1)
    return out


def _quantile_from_hist(counts: np.ndarray, q: float) -> float:
    n = int(counts.sum())
    if n == 0:
        return float("nan")
    k = int(np.searchsorted(np.cumsum(counts), q * n, side="left"))
    if k == 0:
        return float(CHI2_EDGES[0])
    if k >= CHI2_EDGES.size:
        return float(CHI2_EDGES[-1])
    return float(np.sqrt(CHI2_EDGES[k - 1] * CHI2_EDGES[k]))  # geometric bin centre


def squared_residual(
    yty: np.ndarray, aty: np.ndarray, M: np.ndarray, AtA: np.ndarray
) -> np.ndarray:
    """``|y - A M|²`` per pixel from ``yᵀy`` (*spatial), ``Aᵀy`` and ``M`` (L, *spatial)."""
    AtAM = np.tensordot(AtA, M, axes=1)
    r2 = yty - 2.0 * np.sum(M * aty, axis=0) + np.sum(M * AtAM, axis=0)
    return np.maximum(r2, 0.0)


def reduced_chi2(
    sq_residual: np.ndarray, noise_sigma: float, n_energies: int, n_components: int
) -> np.ndarray:
    """Reduced χ² per pixel: ``|y - ŷ|² / ((T - L) σ̂²)`` (σ̂: noise std per energy)."""
    if not (np.isfinite(noise_sigma) and noise_sigma > 0):
        raise ValueError(f"noise_sigma must be a positive number, got {noise_sigma!r}")
    dof = max(int(n_energies) - int(n_components), 1)
    return np.asarray(sq_residual, dtype=np.float64) / (dof * noise_sigma**2)


def r_factor(sq_residual: np.ndarray, yty: np.ndarray, mask: np.ndarray | None = None) -> float:
    """R-factor ``Σ(y - ŷ)² / Σy²`` over the pixels of ``mask`` (all when None)."""
    r2 = np.asarray(sq_residual, dtype=np.float64)
    y2 = np.asarray(yty, dtype=np.float64)
    if mask is not None:
        r2, y2 = r2[mask], y2[mask]
    den = float(y2.sum())
    return float(r2.sum()) / den if den > 0 else float("nan")


@dataclass(frozen=True)
class FitQuality:
    """Summary of the fit quality over the pixels considered (the mask)."""

    chi2_median: float
    chi2_p90: float
    frac_bad: float  # fraction of pixels with χ²_ν > CHI2_WARN
    r_factor: float
    ok: bool

    def warning(self) -> str | None:
        """One line when the model does not explain the data, else None."""
        if self.ok:
            return None
        rf = "" if not np.isfinite(self.r_factor) else f", R-factor {self.r_factor:.3g}"
        return (
            f"the references do not explain the data: median reduced chi2 "
            f"{self.chi2_median:.3g} (1 = noise level), {100 * self.frac_bad:.0f}% of pixels "
            f"above {CHI2_WARN:g}{rf}; likely causes: {LIKELY_CAUSES}"
        )


def fit_quality_from_histogram(counts: np.ndarray, threshold: float = CHI2_WARN) -> FitQuality:
    """:class:`FitQuality` from summed :func:`chi2_histogram` counts (R-factor: NaN).

    The median and 90th percentile are bin centres (±1.2 %); ``ok``: median <= ``threshold``;
    no finite χ² in the mask: NaNs and ``ok`` True (nothing to judge).
    """
    counts = np.asarray(counts, dtype=np.int64)
    n, n_bad, hist = int(counts[0]), int(counts[1]), counts[2:]
    nan = float("nan")
    if n == 0:
        return FitQuality(nan, nan, nan, nan, True)
    med = _quantile_from_hist(hist, 0.5)
    return FitQuality(
        chi2_median=med,
        chi2_p90=_quantile_from_hist(hist, 0.9),
        frac_bad=n_bad / n,
        r_factor=nan,
        ok=bool(med <= threshold),
    )


def fit_quality(
    chi2: np.ndarray,
    sq_residual: np.ndarray,
    yty: np.ndarray,
    mask: np.ndarray | None = None,
    threshold: float = CHI2_WARN,
) -> FitQuality:
    """Summarize a χ²_ν map: median, 90th percentile, share above ``threshold``, R-factor.

    ``ok`` is False when the median χ²_ν exceeds ``threshold`` (the typical pixel is not
    fitted to its noise level).
    """
    c = np.asarray(chi2, dtype=np.float64)
    c = c[mask] if mask is not None else c.ravel()
    c = c[np.isfinite(c)]
    if c.size == 0:
        nan = float("nan")
        return FitQuality(nan, nan, nan, nan, True)
    med = float(np.median(c))
    return FitQuality(
        chi2_median=med,
        chi2_p90=float(np.percentile(c, 90)),
        frac_bad=float(np.mean(c > threshold)),
        r_factor=r_factor(sq_residual, yty, mask),
        ok=bool(med <= threshold),
    )
