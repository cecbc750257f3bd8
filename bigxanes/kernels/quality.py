"""Fit quality of a linear-combination model against the noise: reduced χ² and R-factor.

Pure NumPy on one block. With the per-pixel sums ``yty = Σ_t y²``, ``aty = Aᵀy`` and the
coefficients ``M`` (``ŷ = A M``), the squared residual is
``|y - A M|² = yᵀy - 2 Mᵀ(Aᵀy) + Mᵀ(AᵀA) M`` (no energy-long array is formed).

- Reduced χ² per pixel: ``χ²_ν = |y - ŷ|² / ((T - L) σ̂²)``; about 1 when the model explains the
  data to the noise level σ̂ (a per-energy standard deviation), ≫ 1 when it does not.
- R-factor (as in Athena/LCF practice): ``R = Σ(y - ŷ)² / Σ y²`` over the pixels considered.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: reduced χ² above which the model is said not to explain the data
CHI2_WARN = 2.0

LIKELY_CAUSES = (
    "wrong or missing reference spectra, an energy shift between references and data "
    "(check the edge positions), or a baseline/normalization mismatch (--baseline)"
)


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
        return (
            f"the references do not explain the data: median reduced chi2 "
            f"{self.chi2_median:.3g} (1 = noise level), {100 * self.frac_bad:.0f}% of pixels "
            f"above {CHI2_WARN:g}, R-factor {self.r_factor:.3g}; likely causes: {LIKELY_CAUSES}"
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
