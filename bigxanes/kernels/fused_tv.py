"""Chambolle's total-variation denoiser compiled with numba, step for step as scikit-image.

The exact algorithm of ``skimage.restoration.denoise_tv_chambolle`` (its n-D routine
``_denoise_tv_chambolle_nd``; A. Chambolle, "An algorithm for total variation minimization and
applications", J. Math. Imaging Vis. 20, 2004): the dual field ``p`` (one component per axis)
is iterated as

``d = div p`` (backward differences, as ``-∇ᵀp``), ``u = v + d``, ``g = ∇u`` (forward differences,
0 at the last index), ``p ← (p - τ g) / (1 + (τ/w)|g|)`` with ``τ = 1/(2 ndim)``,

and the result is ``u`` of the last iteration. Stopping rule (the same as scikit-image): with
the energy ``E_n = (Σ d² + w Σ |g|) / size`` of iteration n, stop when
``|E_{n-1} - E_n| < eps · E_0`` or after ``max_num_iter`` iterations.

Two passes over the map per iteration, each parallel over rows (``numba.prange``); the two
sums of ``E`` are taken per row and then added in row order, so the result does not depend on
the number of threads.
"""

from __future__ import annotations

import numba
import numpy as np


@numba.njit(parallel=True, cache=True)
def _pass_u(v, p, u, rows_d2, nd):
    """``u = v + div p`` (scikit-image's operation order) and the row sums of ``d²``."""
    nz, ny, nx = v.shape
    for r in numba.prange(nz * ny):
        z = r // ny
        y = r - z * ny
        acc = 0.0
        for x in range(nx):
            if nd == 3:
                d = -(p[0, z, y, x] + p[1, z, y, x] + p[2, z, y, x])
                if z > 0:
                    d += p[0, z - 1, y, x]
                if y > 0:
                    d += p[1, z, y - 1, x]
                if x > 0:
                    d += p[2, z, y, x - 1]
            else:
                d = -(p[0, z, y, x] + p[1, z, y, x])
                if y > 0:
                    d += p[0, z, y - 1, x]
                if x > 0:
                    d += p[1, z, y, x - 1]
            u[z, y, x] = v[z, y, x] + d
            acc += d * d
        rows_d2[r] = acc


@numba.njit(parallel=True, cache=True)
def _pass_p(u, p, rows_norm, tau, tau_w, nd):
    """``g = ∇u``, ``p ← (p - τ g) / (1 + (τ/w)|g|)``, and the row sums of ``|g|``."""
    nz, ny, nx = u.shape
    for r in numba.prange(nz * ny):
        z = r // ny
        y = r - z * ny
        acc = 0.0
        for x in range(nx):
            c = u[z, y, x]
            gx = u[z, y, x + 1] - c if x < nx - 1 else 0.0
            gy = u[z, y + 1, x] - c if y < ny - 1 else 0.0
            if nd == 3:
                gz = u[z + 1, y, x] - c if z < nz - 1 else 0.0
                norm = np.sqrt(gz * gz + gy * gy + gx * gx)
                den = norm * tau_w + 1.0
                p[0, z, y, x] = (p[0, z, y, x] - tau * gz) / den
                p[1, z, y, x] = (p[1, z, y, x] - tau * gy) / den
                p[2, z, y, x] = (p[2, z, y, x] - tau * gx) / den
            else:
                norm = np.sqrt(gy * gy + gx * gx)
                den = norm * tau_w + 1.0
                p[0, z, y, x] = (p[0, z, y, x] - tau * gy) / den
                p[1, z, y, x] = (p[1, z, y, x] - tau * gx) / den
            acc += norm
        rows_norm[r] = acc


@numba.njit(cache=True)
def _row_total(rows):
    """Sum of the per-row sums in row order (independent of the thread count)."""
    t = 0.0
    for i in range(rows.shape[0]):
        t += rows[i]
    return t


def chambolle_iterations(
    v: np.ndarray, u: np.ndarray, weight: float, eps: float, max_num_iter: int, nd: int
) -> int:
    """Run Chambolle's iteration on one map ``v`` (nz, ny, nx), writing the result into ``u``.

    ``nd`` is the number of spatial axes of the map (2: ``nz == 1`` and no z component;
    3: volume). The dual field ``p`` and the iterate are kept in float64 whatever the dtype of
    ``v`` and ``u`` (in float32 the unconverged iterations drifted by up to 1e-5 from the float64
    result after 100 iterations; in float64 the error is float32 round-off of the input).
    Returns the number of iterations run.
    """
    nz, ny, nx = v.shape
    p = np.zeros((nd, nz, ny, nx))
    work = u if u.dtype == np.float64 else np.empty(v.shape)
    rows_d2 = np.zeros(nz * ny)
    rows_norm = np.zeros(nz * ny)
    tau = 1.0 / (2.0 * nd)
    tau_w = tau / weight
    size = float(v.size)
    e_init = e_prev = 0.0
    i = 0
    while i < max_num_iter:
        _pass_u(v, p, work, rows_d2, nd)  # i == 0: p = 0, so u = v and d = 0
        _pass_p(work, p, rows_norm, tau, tau_w, nd)
        e = (_row_total(rows_d2) + weight * _row_total(rows_norm)) / size
        if i == 0:
            e_init = e_prev = e
        elif abs(e_prev - e) < eps * e_init:
            break
        else:
            e_prev = e
        i += 1
    if work is not u:
        u[...] = work
    return i


def denoise_tv_chambolle_numba(
    image: np.ndarray, weight: float = 0.1, eps: float = 2.0e-4, max_num_iter: int = 200
) -> np.ndarray:
    """TV denoising of a 2-D image or 3-D volume by Chambolle's algorithm (numba).

    Same arguments, stopping rule and result as ``skimage.restoration.denoise_tv_chambolle``
    (``channel_axis=None``) on float input: ``argmin_u ||u - v||²/2 + weight · TV(u)``
    (isotropic TV), to round-off. float32 input is computed and returned in float32, any other
    input in float64.

    Parameters
    ----------
    image : (ny, nx) or (nz, ny, nx) ndarray
    weight : float
        Denoising weight (> 0).
    eps : float
        Relative change of the energy that stops the iteration (``|E_{n-1} - E_n| < eps E_0``).
    max_num_iter : int
        Maximum number of iterations.
    """
    img = np.asarray(image)
    dtype = np.float32 if img.dtype == np.float32 else np.float64
    if img.ndim not in (2, 3):
        raise ValueError(f"expected a 2-D image or 3-D volume, got {img.ndim} dimensions")
    v = np.ascontiguousarray(img, dtype=dtype)
    v3 = v.reshape((1,) + v.shape) if v.ndim == 2 else v
    u = np.empty_like(v3)
    chambolle_iterations(v3, u, float(weight), float(eps), int(max_num_iter), img.ndim)
    return u.reshape(img.shape)


def denoise_maps_tv(v: np.ndarray, sigma: float, ndim: int, max_num_iter: int = 100) -> np.ndarray:
    """The PnP ``"tv"`` denoiser of :mod:`bigxanes.kernels.denoisers` in numba: each map
    ``v[j]`` denoised with ``weight = σ²``, ``eps = 1e-5``, ``max_num_iter`` iterations.

    ``v`` is ``(L, *spatial)``; float32 stays float32. ``sigma <= 0`` returns a copy.
    """
    if sigma <= 0:
        return v.copy()
    out = np.empty_like(v)
    for j in range(v.shape[0]):
        out[j] = denoise_tv_chambolle_numba(
            v[j], weight=sigma * sigma, eps=1e-5, max_num_iter=max_num_iter
        )
    return out
