"""White-line kernel: peak energy and height of each spectrum by a local quadratic fit."""

from __future__ import annotations

import numpy as np

__all__ = ["white_line"]


def white_line(
    energy: np.ndarray,
    spectra: np.ndarray,
    *,
    half_width: int = 3,
    window: tuple[float, float] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Peak (white-line) energy and height per spectrum, to sub-grid precision.

    For each spectrum, ``i*`` is the sample maximum within ``window`` (eV); a parabola
    ``y = a u^2 + b u + c`` in ``u = E - E_{i*}`` is least-squares fitted to the ``2h+1`` points
    around it (fewer at the ends), and the peak is its vertex ``E = E_{i*} - b / 2a``,
    ``height = c - b^2 / 4a``. Where the fit is not a maximum (``a >= 0``) or its vertex leaves
    the fitted points, the sample maximum is returned. Batched over pixels (one block).

    Parameters
    ----------
    energy : (T,) ndarray, eV, increasing
    spectra : (T, ...) ndarray
    half_width : int
        Points on each side of the maximum used by the fit (h).
    window : (float, float), optional
        Energy range (eV) searched for the maximum; default the whole range.

    Returns
    -------
    peak_energy, peak_height : ndarray of shape ``spectra.shape[1:]``
        NaN where a spectrum is all-NaN.
    """
    e = np.asarray(energy, dtype=np.float64)
    T = e.size
    y = np.asarray(spectra, dtype=np.float64).reshape(T, -1)
    N = y.shape[1]
    inside = np.ones(T, bool) if window is None else (e >= window[0]) & (e <= window[1])
    if not inside.any():
        raise ValueError(f"the white-line window {window} holds no energy of the stack")
    allnan = ~np.isfinite(y).any(axis=0)
    ys = np.where(np.isfinite(y) & inside[:, None], y, -np.inf)
    imax = np.argmax(ys, axis=0)
    h = int(half_width)
    offs = np.arange(-h, h + 1)
    idx = imax[None, :] + offs[:, None]  # (2h+1, N)
    ok = (idx >= 0) & (idx < T)
    idx_c = np.clip(idx, 0, T - 1)
    cols = np.arange(N)[None, :]
    yy = y[idx_c, cols]
    ok &= np.isfinite(yy)
    u = np.where(ok, e[idx_c] - e[imax][None, :], 0.0)
    w = ok.astype(np.float64)
    yy = np.where(ok, yy, 0.0)
    # normal equations of the weighted quadratic fit, batched: G (N, 3, 3) p = r (N, 3)
    pw = [np.sum(w * u**k, axis=0) for k in range(5)]
    G = np.stack(
        [
            np.stack([pw[4], pw[3], pw[2]], -1),
            np.stack([pw[3], pw[2], pw[1]], -1),
            np.stack([pw[2], pw[1], pw[0]], -1),
        ],
        -2,
    )
    r = np.stack([np.sum(w * u**k * yy, axis=0) for k in (2, 1, 0)], -1)
    enough = w.sum(axis=0) >= 3
    G[~enough] = np.eye(3)
    with np.errstate(invalid="ignore", divide="ignore"):
        p = np.linalg.solve(G, r[..., None])[..., 0]
        a, b, c = p[:, 0], p[:, 1], p[:, 2]
        uv = -b / (2 * a)
        hv = c - b * b / (4 * a)
    umin = np.where(ok, u, np.inf).min(axis=0)
    umax = np.where(ok, u, -np.inf).max(axis=0)
    good = enough & (a < 0) & (uv >= umin) & (uv <= umax)
    e_peak = np.where(good, e[imax] + uv, e[imax])
    y_max = y[imax, np.arange(N)]
    h_peak = np.where(good, hv, y_max)
    e_peak = np.where(allnan, np.nan, e_peak)
    h_peak = np.where(allnan, np.nan, h_peak)
    shape = np.asarray(spectra).shape[1:]
    return e_peak.reshape(shape), h_peak.reshape(shape)
