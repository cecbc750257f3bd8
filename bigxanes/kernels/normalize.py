"""XANES edge-step normalization, batched over pixels.

Follows the procedure of xraylarch's ``pre_edge`` (Newville, J. Synchrotron Rad. 2013):

1. ``e0`` = energy of the maximum of ``d mu / d E`` (optionally of a lightly Gaussian-smoothed
   spectrum), ignoring the two points at each end of the energy axis.
2. Pre-edge line ``pre(E) = a + b (E - e0)`` fitted by least squares on
   ``[e0 + pre1, e0 + pre2]`` (default -50 .. -10 eV).
3. Post-edge polynomial ``post(E) = sum_k c_k (E - e0)^k``, ``k = 0..nnorm``, fitted on
   ``[e0 + norm1, e0 + norm2]`` (default +50 eV .. last energy).
4. ``edge_step = post(e0) - pre(e0)`` and ``norm = (mu - pre) / edge_step``.
5. ``flat`` (larch's "flattened" spectrum): ``norm`` below ``e0`` and
   ``norm - ((post - pre) / edge_step - 1)`` from ``e0`` on, i.e. the curvature of the post-edge
   background removed so the post-edge oscillates around 1 (what already-normalized reference
   files usually hold).

Windows are clipped to the data. When a window holds too few points (short scans, soft X-ray
L-edges ~30 eV wide) it is replaced by a fallback: the lower half of the points below ``e0`` for
the pre-edge, the upper half of the points above ``e0`` for the post-edge (never fewer than one
point; the polynomial degree is lowered to fit the number of points).

``nnorm=None`` picks the post-edge degree like larch does from the window width
``w = norm2 - norm1`` (after clipping): 2 if ``w > 350`` eV, 1 if ``w > 50`` eV, else 0.
A constant post-edge is robust to noise but biased when the background keeps sloping above
the edge (typical of short L-edge scans): pass ``nnorm=1`` there.

Vectorisation: every pixel with the same ``e0`` shares one design matrix, so the fits are one
least-squares solve with many right-hand sides per distinct ``e0`` (``e0`` lies on the energy
grid, so there are at most T groups; with a scalar ``e0`` there is exactly one). There is no
Python loop over pixels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import gaussian_filter1d

from ..energy import as_ev

__all__ = ["NormResult", "find_e0", "normalize_spectra", "auto_nnorm"]

_X_SCALE = 100.0  # eV; polynomial variable is (E - e0) / 100 for conditioning


@dataclass
class NormResult:
    """Result of :func:`normalize_spectra`.

    Attributes
    ----------
    norm : numpy.ndarray, shape (T, *spatial)
        ``(mu - pre) / edge_step``; ``fill`` (default NaN) where the edge step is not
        positive / not finite (empty pixels).
    e0 : numpy.ndarray, shape (*spatial)
        Edge energy in eV.
    edge_step : numpy.ndarray, shape (*spatial)
        ``post(e0) - pre(e0)`` (unmodified, may be <= 0 for empty pixels).
    pre : numpy.ndarray, shape (T, *spatial)
        Pre-edge line evaluated at all energies.
    post : numpy.ndarray, shape (T, *spatial)
        Post-edge polynomial evaluated at all energies.
    flat : numpy.ndarray, shape (T, *spatial)
        Flattened normalized spectrum (``fill`` where ``norm`` is).
    """

    norm: np.ndarray
    e0: np.ndarray
    edge_step: np.ndarray
    pre: np.ndarray
    post: np.ndarray
    flat: np.ndarray


def auto_nnorm(width: float) -> int:
    """Post-edge polynomial degree from the fit window width in eV (larch's rule).

    Returns 2 if ``width > 350``, 1 if ``width > 50``, else 0.
    """
    if width > 350.0:
        return 2
    if width > 50.0:
        return 1
    return 0


def _e0_index(energy: np.ndarray, flat: np.ndarray, smooth: float) -> np.ndarray:
    mu = gaussian_filter1d(flat, smooth, axis=0, mode="nearest") if smooth > 0 else flat
    d = np.gradient(mu, energy, axis=0)
    T = energy.size
    lo, hi = (2, T - 2) if T > 6 else (0, T)
    d = d[lo:hi]
    d = np.where(np.isfinite(d), d, -np.inf)
    return np.argmax(d, axis=0) + lo


def find_e0(energy: np.ndarray, spectra: np.ndarray, *, smooth: float = 0.0) -> np.ndarray:
    """Edge energy per spectrum: energy of the maximum of ``d mu / d E``.

    Parameters
    ----------
    energy : array_like, shape (T,)
        Energies (eV or keV).
    spectra : array_like, shape (T, ...)
        Spectra along axis 0, any trailing (spatial) shape.
    smooth : float
        Standard deviation, in energy points, of a Gaussian smoothing applied along energy before
        differentiating (0 = none). 1-2 points help on noisy pixels.

    Returns
    -------
    numpy.ndarray, shape spectra.shape[1:]
        ``e0`` in eV; always one of the grid energies. The two points at each end are excluded
        (when T > 6) because one-sided differences there are unreliable.
    """
    e = as_ev(energy)
    y = np.asarray(spectra, dtype=np.float64)
    flat = y.reshape(y.shape[0], -1)
    idx = _e0_index(e, flat, smooth)
    return e[idx].reshape(y.shape[1:])


def _window(energy: np.ndarray, e0: float, lo: float, hi: float, side: str) -> np.ndarray:
    """Indices of the fit window, with the documented fallback for short data."""
    m = (energy >= e0 + lo) & (energy <= e0 + hi)
    need = 2
    if np.count_nonzero(m) >= need:
        return np.flatnonzero(m)
    if side == "pre":
        cand = np.flatnonzero(energy < e0)
        if cand.size == 0:
            return np.array([0])
        return cand[: max(1, cand.size // 2)]
    cand = np.flatnonzero(energy > e0)
    if cand.size == 0:
        return np.array([energy.size - 1])
    return cand[cand.size - max(1, cand.size // 2) :]


def _poly_fit_eval(
    x: np.ndarray, idx: np.ndarray, Y: np.ndarray, degree: int
) -> tuple[np.ndarray, np.ndarray]:
    """Fit ``sum_k c_k x^k`` on rows ``idx`` of Y (T, n); return (curve (T, n), value at x=0)."""
    degree = int(min(degree, idx.size - 1))
    V = np.vander(x, degree + 1, increasing=True)  # (T, degree+1)
    coef, *_ = np.linalg.lstsq(V[idx], Y[idx], rcond=None)  # one matrix, n right-hand sides
    return V @ coef, coef[0]


def normalize_spectra(
    energy: np.ndarray,
    spectra: np.ndarray,
    *,
    e0: float | np.ndarray | None = None,
    pre1: float = -50.0,
    pre2: float = -10.0,
    norm1: float = 50.0,
    norm2: float | None = None,
    nnorm: int | None = None,
    smooth: float = 0.0,
    fill: float = np.nan,
) -> NormResult:
    """Edge-step normalize XANES spectra (larch ``pre_edge`` style), batched over pixels.

    ``norm = (mu - pre) / (post(e0) - pre(e0))`` with ``pre`` a line fitted on
    ``[e0+pre1, e0+pre2]`` and ``post`` a degree-``nnorm`` polynomial fitted on
    ``[e0+norm1, e0+norm2]`` (see the module docstring for the window fallbacks).

    Parameters
    ----------
    energy : array_like, shape (T,)
        Energies (eV or keV; converted with :func:`bigxanes.energy.as_ev`).
    spectra : array_like, shape (T, ...)
        Absorbance spectra along axis 0; any trailing spatial shape.
    e0 : float or array_like or None
        Edge energy in eV. ``None``: per spectrum with :func:`find_e0`. A scalar uses the same
        ``e0`` for all pixels (one least-squares solve in total; what the chunked engine uses).
        An array of shape ``spectra.shape[1:]`` gives one value per pixel.
    pre1, pre2 : float
        Pre-edge window relative to ``e0`` in eV (default -50, -10).
    norm1 : float
        Start of the post-edge window relative to ``e0`` in eV (default +50).
    norm2 : float or None
        End of the post-edge window relative to ``e0``; ``None`` = last energy.
    nnorm : int or None
        Post-edge polynomial degree (0, 1 or 2); ``None`` = :func:`auto_nnorm` of the clipped
        window width (larch's rule).
    smooth : float
        Gaussian smoothing (in points) used only to locate ``e0``.
    fill : float
        Value of ``norm`` where ``edge_step`` is not > 0 or not finite (empty pixels, s ~ 0).
        Default NaN; no division warnings are emitted.

    Returns
    -------
    NormResult
        ``norm``, ``e0``, ``edge_step``, ``pre``, ``post``, ``flat``.
    """
    E = as_ev(energy)
    y = np.asarray(spectra, dtype=np.float64)
    if y.shape[0] != E.size:
        raise ValueError(
            f"spectra have {y.shape[0]} points along axis 0 but there are {E.size} energies; "
            "energy must be the first axis."
        )
    spatial = y.shape[1:]
    Y = y.reshape(E.size, -1)
    N = Y.shape[1]

    if e0 is None:
        idx = _e0_index(E, Y, smooth)
        e0_pix = E[idx]
    else:
        e0_arr = np.asarray(e0, dtype=np.float64)
        if e0_arr.ndim == 0:
            e0_pix = np.full(N, float(e0_arr))
        else:
            if e0_arr.shape != spatial:
                raise ValueError(
                    f"e0 has shape {e0_arr.shape} but the spectra's spatial shape is {spatial}; "
                    "give a scalar or one e0 per pixel."
                )
            e0_pix = e0_arr.reshape(-1)
    if N and not np.all(np.isfinite(e0_pix)):
        raise ValueError("e0 contains NaN/Inf; give finite edge energies.")

    pre = np.empty_like(Y)
    post = np.empty_like(Y)
    step = np.empty(N)
    groups, inverse = np.unique(e0_pix, return_inverse=True)
    for g, e0g in enumerate(groups):  # at most T groups (distinct e0 values), not pixels
        cols = np.flatnonzero(inverse == g)
        x = (E - e0g) / _X_SCALE
        ipre = _window(E, e0g, pre1, pre2, "pre")
        hi = (E[-1] - e0g) if norm2 is None else norm2
        ipost = _window(E, e0g, norm1, hi, "post")
        deg = auto_nnorm(E[ipost[-1]] - E[ipost[0]]) if nnorm is None else int(nnorm)
        Yg = Y if groups.size == 1 else Y[:, cols]
        pre_c, pre0 = _poly_fit_eval(x, ipre, Yg, 1)
        post_c, post0 = _poly_fit_eval(x, ipost, Yg, deg)
        if groups.size == 1:
            pre[:], post[:], step[:] = pre_c, post_c, post0 - pre0
        else:
            pre[:, cols] = pre_c
            post[:, cols] = post_c
            step[cols] = post0 - pre0

    ok = np.isfinite(step) & (step > 0)
    norm = np.full_like(Y, fill)
    np.divide(Y - pre, step[None, :], out=norm, where=ok[None, :])
    resid = np.zeros_like(Y)
    np.divide(post - pre, step[None, :], out=resid, where=ok[None, :])
    above = E[:, None] >= e0_pix[None, :]
    flat = np.where(above & ok[None, :], norm - (resid - 1.0), norm)
    return NormResult(
        norm=norm.reshape(y.shape),
        e0=e0_pix.reshape(spatial),
        edge_step=step.reshape(spatial),
        pre=pre.reshape(y.shape),
        post=post.reshape(y.shape),
        flat=flat.reshape(y.shape),
    )
