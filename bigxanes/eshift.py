"""Energy shift of reference spectra against the data, fitted the way an analyst aligns standards.

Model (one shift ``s_l`` per reference, shared by every spectrum fitted)::

    y_k(E) ≈ Σ_l m_lk · r_l(E - s_l),      m_lk >= 0   (NNLS with free scale, as unmix's LCF)

``r_l(E - s)`` moves the features of reference ``l`` by ``+s`` eV (``s < 0``: the reference's
edge moves to lower energy, as for a stack calibrated ~3 eV below its standards). The shifted
reference is linearly interpolated from the reference's own (usually finer, wider) grid, so the
reference must cover the data's energies; beyond its ends a shift holds the end value (at most
``max(|bounds|)`` eV, a flat pre-edge/post-edge there).

The misfit is the R-factor ``R = Σ_k Σ_E (y - ŷ)² / Σ_k Σ_E y²`` over the fitted spectra (the
data's mean spectrum, or the mean spectra of a few clusters). For each shift vector the
coefficients are the exact NNLS solution (:func:`bigxanes.kernels.lcf.nnls_coefficients`); the
shifts are found by coordinate descent: for each reference in turn a grid search over
``bounds`` (``grid_step`` eV) followed by a bounded 1-D refinement (Brent) around the best grid
point, sweeping until no shift moves by more than 0.01 eV. A reference with a negligible weight
(at most :data:`UNUSED_SHARE` of the coefficients) in every spectrum has no defined shift: it is
reported as 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize_scalar

from .energy import as_ev
from .kernels.baseline import subtract_pre_edge
from .kernels.lcf import nnls_coefficients

__all__ = [
    "ShiftFit",
    "shift_references",
    "fit_energy_shifts",
    "shift_warning",
    "parse_energy_shift",
    "SHIFT_WARN_EV",
    "SHIFT_WARN_GAIN",
]

SHIFT_WARN_EV = 1.0  # eV: a fitted shift larger than this deserves a warning
SHIFT_WARN_GAIN = 0.20  # relative misfit reduction that deserves a warning
#: A reference weighing at most this share of every fitted spectrum has no defined shift (0).
UNUSED_SHARE = 1e-3
#: R-factor below which the unshifted fit is exact (noiseless data): nothing to warn about.
EXACT_MISFIT = 1e-10


@dataclass
class ShiftFit:
    """Result of :func:`fit_energy_shifts`.

    Attributes
    ----------
    shifts : numpy.ndarray (L,)
        Fitted shift per reference in eV (apply with :func:`shift_references`).
    coefficients : numpy.ndarray (L, K)
        NNLS coefficients of each fitted spectrum with the shifted references.
    misfit : float
        R-factor with the fitted shifts.
    misfit_unshifted : float
        R-factor with all shifts 0 (same NNLS fit).
    """

    shifts: np.ndarray
    coefficients: np.ndarray
    misfit: float
    misfit_unshifted: float

    @property
    def gain(self) -> float:
        """Relative misfit reduction ``1 - misfit / misfit_unshifted`` (0 when both are 0)."""
        if self.misfit_unshifted <= 0:
            return 0.0
        return 1.0 - self.misfit / self.misfit_unshifted


def shift_references(
    refs_energy: np.ndarray, refs: np.ndarray, shifts, energy: np.ndarray
) -> np.ndarray:
    """References ``r_l(E - s_l)`` on the data energies ``E``: ``(T, L)``.

    Parameters
    ----------
    refs_energy : array_like (Tr,)
        The references' own energies (eV or keV), increasing.
    refs : array_like (Tr, L) or (Tr,)
    shifts : float or array_like (L,)
        Shift per reference in eV.
    energy : array_like (T,)
        Data energies (eV or keV).
    """
    er = as_ev(refs_energy)
    R = np.asarray(refs, dtype=np.float64)
    if R.ndim == 1:
        R = R[:, None]
    E = as_ev(energy)
    s = np.broadcast_to(np.asarray(shifts, dtype=np.float64), (R.shape[1],))
    return np.stack([np.interp(E - s[j], er, R[:, j]) for j in range(R.shape[1])], axis=1)


def _misfit(Y: np.ndarray, A: np.ndarray, yy: float) -> tuple[float, np.ndarray]:
    AtA = A.T @ A
    AtY = A.T @ Y
    M = nnls_coefficients(AtA, AtY)
    r = Y - A @ M
    return float(np.sum(r * r) / yy), M


def fit_energy_shifts(
    energy: np.ndarray,
    spectra: np.ndarray,
    refs_energy: np.ndarray,
    refs: np.ndarray,
    bounds: tuple[float, float] = (-10.0, 10.0),
    *,
    fit: np.ndarray | None = None,
    grid_step: float = 0.5,
    max_sweeps: int = 6,
    window: np.ndarray | None = None,
) -> ShiftFit:
    """Fit one energy shift per reference to the data's spectrum (or spectra).

    Parameters
    ----------
    energy : array_like (T,)
        Data energies (eV or keV).
    spectra : array_like (T,) or (T, K)
        The data's mean spectrum, or K mean spectra (e.g. of spectral clusters) that share the
        shifts (each has its own NNLS coefficients).
    refs_energy, refs : array_like (Tr,), (Tr, L)
        References on their own grid (must cover the data energies; ValueError otherwise).
    bounds : (float, float)
        Allowed shift range in eV (default ±10 eV).
    fit : array_like of bool (L,), optional
        Which references get a fitted shift (others stay at 0). Default: all.
    grid_step : float
        Step of the grid search in eV before the bounded refinement.
    max_sweeps : int
        Maximum coordinate-descent sweeps over the references.
    window : array_like of bool (T,), optional
        Pre-edge energies: when given, the mean over them is subtracted from every spectrum and
        from every shifted reference before each fit (:func:`bigxanes.kernels.baseline.
        subtract_pre_edge`, as unmix's ``--baseline pre-edge``), so a flat background of the
        data does not decide the shift.

    Returns
    -------
    ShiftFit
    """
    E = as_ev(energy)
    er = as_ev(refs_energy)
    Y = np.asarray(spectra, dtype=np.float64)
    if Y.ndim == 1:
        Y = Y[:, None]
    if Y.shape[0] != E.size:
        raise ValueError(f"spectra have {Y.shape[0]} energies but energy has {E.size}.")
    R = np.asarray(refs, dtype=np.float64)
    if R.ndim == 1:
        R = R[:, None]
    if er[0] > E[0] + 1e-6 or er[-1] < E[-1] - 1e-6:
        raise ValueError(
            f"references cover {er[0]:.1f}-{er[-1]:.1f} eV but the data span "
            f"{E[0]:.1f}-{E[-1]:.1f} eV; restrict the data with --energy-range."
        )
    lo, hi = float(bounds[0]), float(bounds[1])
    if not lo <= 0.0 <= hi:
        raise ValueError(f"shift bounds {bounds} must contain 0 (e.g. -10,10 eV).")
    if not (np.all(np.isfinite(Y)) and np.all(np.isfinite(R))):
        raise ValueError("spectra or references contain NaN/Inf; mask or fix them first.")
    L = R.shape[1]
    free = np.ones(L, bool) if fit is None else np.asarray(fit, dtype=bool)
    if window is not None:
        window = np.asarray(window, dtype=bool)
        Y = subtract_pre_edge(Y, window)

    def column(j: int, s: float) -> np.ndarray:
        c = np.interp(E - s, er, R[:, j])
        return c if window is None else c - c[window].mean()

    yy = float(np.sum(Y * Y)) or 1.0
    shifts = np.zeros(L)
    cols = [column(j, 0.0) for j in range(L)]

    def objective(j: int, s: float) -> float:
        c = list(cols)
        c[j] = column(j, s)
        return _misfit(Y, np.stack(c, axis=1), yy)[0]

    base, _ = _misfit(Y, np.stack(cols, axis=1), yy)
    grid = np.arange(lo, hi + 1e-9, grid_step)
    for _ in range(max_sweeps):
        moved = 0.0
        for j in np.flatnonzero(free):
            vals = np.array([objective(j, s) for s in grid])
            g = grid[int(np.argmin(vals))]
            res = minimize_scalar(
                lambda s, j=j: objective(j, s),
                bounds=(max(lo, g - grid_step), min(hi, g + grid_step)),
                method="bounded",
                options={"xatol": 1e-5},
            )
            s_new = float(res.x) if res.fun <= vals.min() else float(g)
            moved = max(moved, abs(s_new - shifts[j]))
            shifts[j] = s_new
            cols[j] = column(j, s_new)
        if moved < 0.01:
            break
    misfit, M = _misfit(Y, np.stack(cols, axis=1), yy)
    share = M / np.maximum(M.sum(axis=0, keepdims=True), np.finfo(float).tiny)
    unused = np.all(share <= UNUSED_SHARE, axis=1)
    shifts[unused] = 0.0
    return ShiftFit(shifts=shifts, coefficients=M, misfit=misfit, misfit_unshifted=base)


def shift_warning(fit: ShiftFit, names: list[str] | None = None) -> str | None:
    """One warning line for ``--energy-shift none`` runs, or None.

    Warn when a fitted shift exceeds :data:`SHIFT_WARN_EV` (1 eV) or the shifts lower the
    misfit by more than :data:`SHIFT_WARN_GAIN` (20 %); never when the unshifted R-factor is
    already at round-off level (:data:`EXACT_MISFIT`, noiseless data fitted exactly).
    """
    big = np.abs(fit.shifts) > SHIFT_WARN_EV
    if fit.misfit_unshifted <= EXACT_MISFIT:  # the references already fit exactly
        return None
    if not big.any() and fit.gain <= SHIFT_WARN_GAIN:
        return None
    names = names or [f"ref{j + 1}" for j in range(fit.shifts.size)]
    desc = ", ".join(f"{n} {s:+.1f} eV" for n, s in zip(names, fit.shifts, strict=True))
    return (
        f"the references look misaligned in energy (fitted shifts {desc}; misfit "
        f"{fit.misfit_unshifted:.3g} -> {fit.misfit:.3g}, {100 * fit.gain:.0f} % lower); "
        "pass --energy-shift auto (or --energy-shift V,V) to correct it."
    )


def parse_energy_shift(text: str, n_refs: int) -> str | np.ndarray:
    """Parse ``--energy-shift``: ``"none"``, ``"auto"``, or ``V`` / ``V,V,...`` (eV).

    Returns ``"none"``, ``"auto"`` or an array of ``n_refs`` shifts (one value is used for all).
    Raises ValueError (one line naming the flag) otherwise.
    """
    t = text.strip().lower()
    if t in ("none", "auto"):
        return t
    try:
        vals = np.array([float(v) for v in t.split(",")], dtype=np.float64)
    except ValueError:
        raise ValueError(
            f"--energy-shift {text!r}: expected none, auto, or shifts in eV like -3 or -3,2."
        ) from None
    if vals.size == 1:
        vals = np.full(n_refs, vals[0])
    if vals.size != n_refs or not np.all(np.isfinite(vals)):
        raise ValueError(
            f"--energy-shift {text!r}: give one shift or one per reference ({n_refs} values)."
        )
    return vals
