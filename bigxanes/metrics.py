"""Quality scores for chemical phase maps.

Phase maps are ``(L, *shape)`` arrays (one fraction map per state, 2-D or 3-D).

Paper metrics (Optics Express 2023, eqs. 11-13), averaged over the L maps:

* ``PSNR_j = 20 log10(MAX_j / RMSE_j)`` with ``MAX_j = max(x̂_j)`` the maximum of the
  **estimated** map over all pixels and ``RMSE_j = sqrt(mean((x̂_j - x_j)^2))`` over all pixels;
* ``SSIM_j`` = mean structural similarity of map j (eq. 13).

Because the paper's PSNR uses the estimate's maximum and all pixels (including the empty
background, whose fractions are meaningless), we also report foreground scores with a fixed
data range of 1 (fractions live in [0, 1]) restricted to a mask of pixels that contain material.
"""

from __future__ import annotations

import numpy as np
from skimage.metrics import structural_similarity

__all__ = [
    "psnr_paper",
    "ssim_paper",
    "psnr_foreground",
    "ssim_foreground",
    "rmse_foreground",
    "phase_map_scores",
    "foreground_mask",
    "spectral_angle",
]


def _pair(est: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    e = np.asarray(est, dtype=np.float64)
    t = np.asarray(truth, dtype=np.float64)
    if e.shape != t.shape:
        raise ValueError(
            f"estimate has shape {e.shape} but truth has shape {t.shape}; both must be "
            "(L, *spatial) with the same component order."
        )
    if e.ndim < 2:
        raise ValueError(f"phase maps must be (L, *spatial), got shape {e.shape}.")
    return e, t


def _mask(mask: np.ndarray, spatial: tuple[int, ...]) -> np.ndarray:
    m = np.asarray(mask, dtype=bool)
    if m.shape != spatial:
        raise ValueError(f"mask has shape {m.shape}, expected the spatial shape {spatial}.")
    if not m.any():
        raise ValueError("mask selects no pixels; lower the foreground threshold.")
    return m


def _psnr(max_val: np.ndarray, mse: np.ndarray) -> np.ndarray:
    # RMSE = 0 -> +inf (perfect estimate); no warnings emitted
    with np.errstate(divide="ignore", invalid="ignore"):
        return 20.0 * np.log10(max_val) - 10.0 * np.log10(mse)


def psnr_paper(est: np.ndarray, truth: np.ndarray, *, per_map: bool = False) -> float | np.ndarray:
    """PSNR of phase maps as defined in the paper (eqs. 11-12).

    ``PSNR_j = 20 log10(MAX_j / RMSE_j)``, ``MAX_j = max over pixels of the estimated map
    x̂_j``, ``RMSE_j`` over all pixels; the result is the mean over the L maps.

    Parameters
    ----------
    est, truth : array_like, shape (L, *spatial)
        Estimated and true fraction maps.
    per_map : bool
        Return the L values instead of their mean.

    Returns
    -------
    float or numpy.ndarray
        dB. A map with ``RMSE = 0`` scores ``+inf`` (so does the mean); no capping is applied.
        ``MAX_j <= 0`` gives ``-inf``/NaN, as the formula does.
    """
    e, t = _pair(est, truth)
    L = e.shape[0]
    ef, tf = e.reshape(L, -1), t.reshape(L, -1)
    vals = _psnr(ef.max(axis=1), np.mean((ef - tf) ** 2, axis=1))
    return vals if per_map else float(np.mean(vals))


def _ssim_kwargs(gaussian: bool) -> dict:
    if gaussian:
        return {"gaussian_weights": True, "sigma": 1.5, "use_sample_covariance": False}
    return {"win_size": 7}


def ssim_paper(
    est: np.ndarray, truth: np.ndarray, *, gaussian: bool = False, per_map: bool = False
) -> float | np.ndarray:
    """Mean SSIM over phase maps (paper eq. 13), with ``data_range = 1``.

    Each map is compared with :func:`skimage.metrics.structural_similarity` (2-D images or 3-D
    volumes). Constants ``c1 = (0.01 * 1)^2``, ``c2 = (0.03 * 1)^2`` (Wang et al. 2004 with
    data range 1, since fractions live in [0, 1]).

    Parameters
    ----------
    est, truth : array_like, shape (L, *spatial)
        Each spatial side must be >= 7.
    gaussian : bool
        False (default): scikit-image's default 7x7(x7) uniform window with sample covariance.
        True: Wang et al.'s 11-tap Gaussian window (sigma 1.5, population covariance), the
        setting of the original SSIM paper and of MATLAB's ``ssim``.
    per_map : bool
        Return the L values instead of their mean.
    """
    e, t = _pair(est, truth)
    kw = _ssim_kwargs(gaussian)
    vals = np.array(
        [structural_similarity(e[j], t[j], data_range=1.0, **kw) for j in range(e.shape[0])]
    )
    return vals if per_map else float(np.mean(vals))


def psnr_foreground(est: np.ndarray, truth: np.ndarray, mask: np.ndarray) -> float:
    """PSNR with fixed data range 1 on the masked pixels, averaged over maps.

    ``PSNR_j = 20 log10(1 / RMSE_j)``, ``RMSE_j`` over pixels where ``mask`` is True.
    ``+inf`` when a map is exact there.
    """
    e, t = _pair(est, truth)
    m = _mask(mask, e.shape[1:])
    mse = np.mean((e[:, m] - t[:, m]) ** 2, axis=1)
    return float(np.mean(_psnr(np.ones_like(mse), mse)))


def ssim_foreground(
    est: np.ndarray, truth: np.ndarray, mask: np.ndarray, *, gaussian: bool = False
) -> float:
    """SSIM map (``data_range = 1``, window as in :func:`ssim_paper`) averaged over ``mask``,
    then over maps.

    As scikit-image's mean SSIM does, pixels closer to the image border than half a window
    (3 px for the 7-wide window, 5 px for the Gaussian one) are left out, so that with an
    all-True mask the result equals :func:`ssim_paper`. Windows near the mask edge still see
    neighbouring background pixels.
    """
    e, t = _pair(est, truth)
    m = _mask(mask, e.shape[1:])
    kw = _ssim_kwargs(gaussian)
    pad = 5 if gaussian else 3
    inner = np.zeros_like(m)
    inner[tuple(slice(pad, n - pad) for n in m.shape)] = True
    if (m & inner).any():
        m = m & inner
    vals = []
    for j in range(e.shape[0]):
        _, smap = structural_similarity(e[j], t[j], data_range=1.0, full=True, **kw)
        vals.append(float(np.mean(smap[m])))
    return float(np.mean(vals))


def rmse_foreground(est: np.ndarray, truth: np.ndarray, mask: np.ndarray) -> float:
    """Root mean square fraction error over all maps and masked pixels:
    ``sqrt(mean_{j, i in mask} (x̂_ji - x_ji)^2)``."""
    e, t = _pair(est, truth)
    m = _mask(mask, e.shape[1:])
    return float(np.sqrt(np.mean((e[:, m] - t[:, m]) ** 2)))


def foreground_mask(true_scale: np.ndarray, threshold: float = 0.1) -> np.ndarray:
    """Pixels holding material: ``s > threshold * max(s)`` (default 10 % of the maximum).

    Below that the fractions are poorly determined by the data (signal ~ s), and in the
    phantoms' background (``s`` of 1e-3..0.02) they are meaningless.
    """
    s = np.asarray(true_scale, dtype=np.float64)
    return s > threshold * np.max(s)


def phase_map_scores(
    est: np.ndarray, truth: np.ndarray, mask: np.ndarray | None = None
) -> dict[str, float]:
    """All scores in one dict.

    Keys: ``psnr_paper``, ``ssim_paper`` (all pixels, paper definitions), ``psnr_foreground``,
    ``ssim_foreground``, ``rmse_foreground`` (on ``mask``; all pixels when ``mask`` is None).
    """
    e, t = _pair(est, truth)
    m = np.ones(e.shape[1:], dtype=bool) if mask is None else mask
    return {
        "psnr_paper": psnr_paper(e, t),
        "ssim_paper": ssim_paper(e, t),
        "psnr_foreground": psnr_foreground(e, t, m),
        "ssim_foreground": ssim_foreground(e, t, m),
        "rmse_foreground": rmse_foreground(e, t, m),
    }


def spectral_angle(a: np.ndarray, b: np.ndarray, *, axis: int = 0) -> float | np.ndarray:
    """Angle between spectra in degrees: ``arccos(<a, b> / (|a| |b|))``.

    Parameters
    ----------
    a, b : array_like
        Spectra along ``axis`` (e.g. (T,) or (T, K) for K pairs); broadcast against each other.

    Returns
    -------
    float or numpy.ndarray
        Degrees in [0, 180]; NaN where a spectrum is all zeros.
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    num = np.sum(a * b, axis=axis)
    den = np.linalg.norm(a, axis=axis) * np.linalg.norm(b, axis=axis)
    with np.errstate(divide="ignore", invalid="ignore"):
        c = np.clip(num / den, -1.0, 1.0)
    ang = np.degrees(np.arccos(c))
    return float(ang) if np.ndim(ang) == 0 else ang
