"""Denoisers for the plug-and-play (RUM-PnP) U-step: ``U_j = D(X_j + D_j; σ)``.

Each denoiser takes one block of maps ``(L, *spatial)`` and the strength ``σ = sqrt(λ/ρ)`` in the
units of the maps (fractions in [0, 1]; not multiplied by 255), and returns denoised maps of the
same shape. They are applied per phase map (channel).

- ``"bm3d"``: BM3D (Dabov et al., IEEE TIP 16(8) 2007) per 2-D map, as in the paper; 3-D
  volumes slice by slice along z. Package ``bm3d`` (non-commercial licence).
- ``"bm4d"``: BM4D (Maggioni et al., IEEE TIP 22(1) 2013) per 3-D map (package ``bm4d``).
- ``"tv"``: the exact proximal map of isotropic total variation,
  ``argmin_u 1/(2σ²)||u - v||² + TV(u)``, by Chambolle's projection algorithm
  (scikit-image ``denoise_tv_chambolle`` with ``weight = σ²``). Free, fast (~0.1-0.4 s per
  megapixel), and the recommended choice for large volumes.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import numpy as np

DENOISERS = ("tv", "bm3d", "bm4d")

# Default Dask halo (pixels) of each denoiser. Tiled BM3D/BM4D are never exact; the halo is
# chosen to keep the PSNR loss vs the in-memory path < 0.5 dB (benchmarks/results/engine.md
# "RUM-PnP (tv denoiser) seam error vs halo"; benchmarks/results/pnp_halo.md, particles sigma 3):
# - tv: 16.
# - bm3d: 16. 104x112, 9 blocks, 15 iterations: 1.42 dB at halo 0, 0.11 dB at 4, <= 0 dB at
#   8, 16 and 24; 16 = twice the smallest halo with no loss, as a margin for longer runs.
# - bm4d: 16. 32³, 8 blocks, only 6 iterations: 0.25 dB at halo 0, 0.06 dB at 8 (16 covered
#   the whole volume there); 16 x 16 x 96 in 4 blocks of 16 x 16 x 24 (real seams at every
#   halo, pnp_halo_bm4d_long.md): 0.007 / 0.003 / 0.07 dB at halo 0 / 8 / 16.
DEFAULT_HALO = {"tv": 16, "bm3d": 16, "bm4d": 16}


def _tv(v: np.ndarray, sigma: float, ndim: int, max_num_iter: int = 100) -> np.ndarray:
    from skimage.restoration import denoise_tv_chambolle

    out = np.empty_like(v)
    for j in range(v.shape[0]):
        out[j] = denoise_tv_chambolle(
            v[j], weight=sigma * sigma, eps=1e-5, max_num_iter=max_num_iter
        )
    return out


#: The ``bm3d`` and ``bm4d`` packages share one native library whose thread pool aborts the
#: whole process when two Python threads call it at once (``ThreadPool::launchPool: Assertion
#: '_threads.empty()' failed``, seen with dask's threaded scheduler). Calls in one process are
#: serialized; separate worker processes still run in parallel.
_NATIVE_LOCK = threading.Lock()
#: Smallest edge the native BM3D/BM4D accept safely: ``bm3d.bm3d`` raises below 8 px and
#: crashed (segfault) on an 8 x 8 image. Smaller blocks (edge tiles) are mirror-padded to this.
MIN_NATIVE_EDGE = 16


def _padded(f: Callable[[np.ndarray], np.ndarray], img: np.ndarray) -> np.ndarray:
    """``f(img)`` with every axis shorter than :data:`MIN_NATIVE_EDGE` mirror-padded first
    and the result cropped back; one native call at a time (:data:`_NATIVE_LOCK`)."""
    pad = [(0, max(0, MIN_NATIVE_EDGE - n)) for n in img.shape]
    if not any(p for _, p in pad):
        with _NATIVE_LOCK:
            return f(img)
    big = np.pad(img, pad, mode="symmetric")  # numpy repeats the mirror for short axes
    with _NATIVE_LOCK:
        out = f(np.ascontiguousarray(big))
    return out[tuple(slice(0, n) for n in img.shape)]


def _bm3d(v: np.ndarray, sigma: float, ndim: int) -> np.ndarray:
    import bm3d

    def one(img: np.ndarray) -> np.ndarray:
        return _padded(lambda a: bm3d.bm3d(a, sigma_psd=sigma), img)

    out = np.empty_like(v)
    for j in range(v.shape[0]):
        if ndim == 2:
            out[j] = one(v[j])
        else:
            for z in range(v.shape[1]):
                out[j, z] = one(v[j, z])
    return out


def _bm4d(v: np.ndarray, sigma: float, ndim: int) -> np.ndarray:
    if ndim != 3:
        raise ValueError("denoiser 'bm4d' needs 3-D volumes; use 'bm3d' or 'tv' for 2-D images")
    import bm4d

    out = np.empty_like(v)
    for j in range(v.shape[0]):
        out[j] = _padded(lambda a: bm4d.bm4d(a, sigma_psd=sigma), v[j])
    return out


_IMPL: dict[str, Callable[[np.ndarray, float, int], np.ndarray]] = {
    "tv": _tv,
    "bm3d": _bm3d,
    "bm4d": _bm4d,
}


def denoise_maps(v: np.ndarray, sigma: float, name: str, ndim: int) -> np.ndarray:
    """Denoise each map ``v[j]`` with strength ``sigma`` using denoiser ``name``.

    Parameters
    ----------
    v : (L, *spatial) ndarray
    sigma : float
        Noise standard deviation assumed by the denoiser, ``sqrt(λ/ρ)`` (paper eq. 10).
    name : {"tv", "bm3d", "bm4d"}
    ndim : int
        Number of spatial dimensions (2 or 3).
    """
    if name not in _IMPL:
        raise ValueError(f"unknown denoiser {name!r}; choose one of {', '.join(DENOISERS)}")
    if sigma <= 0:
        return v.copy()
    return _IMPL[name](np.ascontiguousarray(v, dtype=np.float64), float(sigma), ndim)
