"""Finite-difference stencils on (channels, *spatial) blocks with Neumann boundaries.

Every function treats the edges of the block it receives as Neumann (reflecting) boundaries.
On the whole array that is the true boundary condition; on a Dask block cut out with a halo
(``map_overlap(boundary="none")``) the outer faces of the volume are true boundaries and the
inner faces carry a halo at least as deep as the stencils' total reach, so the wrong values
near inner faces never reach the part of the block that is kept. Both paths give the same
numbers.

Operators (per spatial axis ``a`` of size n, forward differences):
``(∇_a x)_i = x_{i+1} - x_i`` for i < n-1 and 0 at i = n-1;
``∇ᵀ`` is its adjoint (a negative backward-difference divergence), and ``Δ = -∇ᵀ∇`` is the
5-point (7-point in 3D) Laplacian with Neumann boundary.
"""

from __future__ import annotations

import numpy as np


def gradient(x: np.ndarray, ndim: int) -> np.ndarray:
    """Forward-difference gradient of each channel.

    Parameters
    ----------
    x : (C, *spatial) ndarray, ``len(spatial) == ndim``
    ndim : int

    Returns
    -------
    g : (ndim, C, *spatial) ndarray; ``g[a]`` is the difference along spatial axis ``a``.
    """
    g = np.zeros((ndim,) + x.shape, dtype=x.dtype)
    for a in range(ndim):
        ax = x.ndim - ndim + a
        sl_hi = [slice(None)] * x.ndim
        sl_lo = [slice(None)] * x.ndim
        sl_hi[ax] = slice(1, None)
        sl_lo[ax] = slice(None, -1)
        g[a][tuple(sl_lo)] = x[tuple(sl_hi)] - x[tuple(sl_lo)]
    return g


def gradient_adjoint(g: np.ndarray, ndim: int) -> np.ndarray:
    """Adjoint ``∇ᵀ`` of :func:`gradient` (equal to minus the backward-difference divergence).

    Parameters
    ----------
    g : (ndim, C, *spatial) ndarray

    Returns
    -------
    (C, *spatial) ndarray with ``<∇x, g> = <x, ∇ᵀg>``.
    """
    out = np.zeros(g.shape[1:], dtype=g.dtype)
    nd_total = g.ndim - 1
    for a in range(ndim):
        ax = nd_total - ndim + a
        ga = g[a]
        n = ga.shape[ax]
        if n < 2:
            continue
        lo = [slice(None)] * nd_total
        hi = [slice(None)] * nd_total
        lo[ax] = slice(None, -1)  # entries i = 0..n-2 of g (last is 0 by construction)
        hi[ax] = slice(1, None)
        # (∇ᵀg)_i = g_{i-1} - g_i  (with g_{-1} = 0 and g_{n-1} treated as 0)
        gl = ga[tuple(lo)]
        out[tuple(lo)] -= gl
        out[tuple(hi)] += gl
    return out


def neighbour_count(spatial_shape: tuple[int, ...], dtype=np.float64) -> np.ndarray:
    """Number of in-block neighbours of each pixel (the diagonal of ``-Δ``)."""
    cnt = np.zeros(spatial_shape, dtype=dtype)
    for ax, n in enumerate(spatial_shape):
        if n < 2:
            continue
        c = np.full(n, 2.0, dtype=dtype)
        c[0] = c[-1] = 1.0
        shape = [1] * len(spatial_shape)
        shape[ax] = n
        cnt += c.reshape(shape)
    return cnt


def neighbour_sum(x: np.ndarray, ndim: int) -> np.ndarray:
    """Sum of the in-block axis neighbours of each pixel, per channel (``Δx + count·x``)."""
    out = np.zeros_like(x)
    for a in range(ndim):
        ax = x.ndim - ndim + a
        lo = [slice(None)] * x.ndim
        hi = [slice(None)] * x.ndim
        lo[ax] = slice(None, -1)
        hi[ax] = slice(1, None)
        out[tuple(lo)] += x[tuple(hi)]
        out[tuple(hi)] += x[tuple(lo)]
    return out


def laplacian(x: np.ndarray, ndim: int) -> np.ndarray:
    """Neumann Laplacian ``Δx = -∇ᵀ∇x`` of each channel."""
    cnt = neighbour_count(x.shape[x.ndim - ndim :], x.dtype)
    return neighbour_sum(x, ndim) - cnt * x


def jacobi_screened_poisson(
    rhs: np.ndarray, diag: np.ndarray, x0: np.ndarray, ndim: int, sweeps: int
) -> np.ndarray:
    """Solve ``(diag - Δ) x = rhs`` approximately by warm-started Jacobi sweeps.

    Each sweep is ``x ← (rhs + Σ_neighbours x) / (diag + count)``; the matrix is strictly
    diagonally dominant (diag > 0), so Jacobi converges. Each sweep reaches one pixel further,
    so ``sweeps`` sweeps need a halo of ``sweeps`` pixels (plus the reach of ``rhs``).

    Parameters
    ----------
    rhs : (C, *spatial) ndarray
    diag : (*spatial) ndarray, broadcast over channels (here ``s² + 1``)
    x0 : (C, *spatial) ndarray, warm start
    ndim : int
    sweeps : int
    """
    cnt = neighbour_count(rhs.shape[rhs.ndim - ndim :], rhs.dtype)
    inv = 1.0 / (diag + cnt)
    x = x0
    for _ in range(sweeps):
        x = (rhs + neighbour_sum(x, ndim)) * inv
    return x


def isotropic_shrink(v: np.ndarray, threshold: float) -> np.ndarray:
    """Group soft-thresholding over the gradient components (isotropic TV prox).

    ``shrink(v, τ) = v · max(1 - τ / |v|, 0)`` with ``|v|`` the Euclidean norm over axis 0
    (the ndim gradient components of each pixel and channel).
    """
    norm = np.sqrt(np.sum(v * v, axis=0, keepdims=True))
    factor = np.maximum(1.0 - threshold / np.maximum(norm, 1e-300), 0.0)
    return v * factor


def tv_norm(x: np.ndarray, ndim: int) -> np.ndarray:
    """Isotropic total variation per pixel, summed over channels: ``Σ_j |∇x_j|``."""
    g = gradient(x, ndim)
    return np.sqrt(np.sum(g * g, axis=0)).sum(axis=0)
