"""Batched linear combination fitting (LCF) kernels on pixel blocks.

All solvers work from the normal-equation quantities ``AtA = AᵀA`` (L x L) and ``AtY = AᵀY``
(L x N): after ``AᵀY`` is formed, no solver touches the T-long spectra again. Non-negative and
fully constrained problems are solved *exactly* by enumerating the active sets (2^L - 1 subsets,
vectorized over pixels), which is fast for the small L (2..8) of XANES unmixing.
"""

from __future__ import annotations

from itertools import combinations

import numpy as np

from .weights import batched_solve

MAX_ENUMERATED_COMPONENTS = 10


def _subsets(n: int):
    for k in range(1, n + 1):
        yield from combinations(range(n), k)


def lstsq_coefficients(AtA: np.ndarray, AtY: np.ndarray) -> np.ndarray:
    """Unconstrained least squares ``M = (AᵀA)⁻¹ AᵀY`` for every pixel.

    Parameters
    ----------
    AtA : (L, L) ndarray
    AtY : (L, N) ndarray

    Returns
    -------
    M : (L, N) ndarray
    """
    return np.linalg.solve(AtA, AtY)


def _quadratic_objective(m: np.ndarray, AtA_S: np.ndarray, AtY_S: np.ndarray) -> np.ndarray:
    # ||y - A_S m||² - yᵀy = mᵀ(AᵀA)m - 2 mᵀAᵀy, per pixel (column)
    return np.einsum("in,in->n", m, AtA_S @ m) - 2.0 * np.einsum("in,in->n", m, AtY_S)


def nnls_coefficients(AtA: np.ndarray, AtY: np.ndarray, tol: float = 1e-12) -> np.ndarray:
    """Non-negative least squares ``min ||y - A m||²  s.t.  m >= 0`` for every pixel, exactly.

    The NNLS minimizer is the unconstrained least-squares solution on its support, with positive
    entries; every non-negative subset solution is feasible for NNLS. So the minimum objective
    over all subsets whose least-squares solution is non-negative is the NNLS optimum. The empty
    set (m = 0) is always feasible.

    Parameters
    ----------
    AtA : (L, L) ndarray
    AtY : (L, N) ndarray
    tol : float
        Relative tolerance below zero still accepted as non-negative (then clipped to 0).

    Returns
    -------
    M : (L, N) ndarray, non-negative.
    """
    L, N = AtY.shape
    if L > MAX_ENUMERATED_COMPONENTS:
        raise ValueError(
            f"{L} references: exact batched NNLS supports at most {MAX_ENUMERATED_COMPONENTS}; "
            "use fewer reference spectra"
        )
    best_obj = np.zeros(N)
    best = np.zeros((L, N))
    scale = np.abs(AtY).max(axis=0, initial=0.0) + 1e-300
    for S in _subsets(L):
        idx = np.asarray(S)
        AtA_S = AtA[np.ix_(idx, idx)]
        AtY_S = AtY[idx]
        m = np.linalg.solve(AtA_S, AtY_S)
        feasible = np.all(m >= -tol * scale / np.diag(AtA_S)[:, None], axis=0)
        m = np.maximum(m, 0.0)
        obj = _quadratic_objective(m, AtA_S, AtY_S)
        better = feasible & (obj < best_obj)
        if better.any():
            best[:, better] = 0.0
            best[np.ix_(idx, np.flatnonzero(better))] = m[:, better]
            best_obj = np.where(better, obj, best_obj)
    return best


def nnls_coefficients_pixelwise(G: np.ndarray, b: np.ndarray, tol: float = 1e-12) -> np.ndarray:
    """NNLS with a different normal matrix per pixel: ``min_m mᵀG_n m - 2 mᵀb_n, m >= 0``.

    The weighted LCF ``min Σ_t w_tn (y_tn - (A m)_t)²`` s.t. ``m >= 0`` with per-pixel weights
    (``G_n = Aᵀ diag(w_n) A``, ``b_n = Aᵀ diag(w_n) y_n``, see
    :func:`bigxanes.kernels.weights.weighted_normal_equations`). Same exact active-set
    enumeration as :func:`nnls_coefficients`, with batched L x L solves; a shared ``(L, L)``
    matrix gives the same result as :func:`nnls_coefficients`.

    Parameters
    ----------
    G : (L, L, N) ndarray
    b : (L, N) ndarray

    Returns
    -------
    M : (L, N) ndarray, non-negative.
    """
    if G.ndim == 2:
        return nnls_coefficients(G, b, tol)
    L, N = b.shape
    if L > MAX_ENUMERATED_COMPONENTS:
        raise ValueError(
            f"{L} references: exact batched NNLS supports at most {MAX_ENUMERATED_COMPONENTS}; "
            "use fewer reference spectra"
        )
    best_obj = np.zeros(N)
    best = np.zeros((L, N))
    scale = np.abs(b).max(axis=0, initial=0.0) + 1e-300
    for S in _subsets(L):
        idx = np.asarray(S)
        G_S = G[np.ix_(idx, idx)]
        b_S = b[idx]
        m = batched_solve(G_S, b_S)
        diag = np.einsum("iin->in", G_S)
        feasible = np.all(m >= -tol * scale / diag, axis=0)
        m = np.maximum(m, 0.0)
        obj = np.einsum("in,ijn,jn->n", m, G_S, m) - 2.0 * np.einsum("in,in->n", m, b_S)
        better = feasible & (obj < best_obj)
        if better.any():
            best[:, better] = 0.0
            best[np.ix_(idx, np.flatnonzero(better))] = m[:, better]
            best_obj = np.where(better, obj, best_obj)
    return best


def sum_to_one_coefficients(AtA: np.ndarray, AtY: np.ndarray, tol: float = 1e-10) -> np.ndarray:
    """Fully constrained LCF: ``min ||y - A x||²  s.t.  x >= 0, 1ᵀx = 1`` for every pixel, exactly.

    This is the constraint set of xraylarch's ``lincombo_fit`` default (weights that are
    non-negative and sum to one; no free scale, so the spectra must be edge-step normalized).
    Each active set S is solved through its KKT system ``[[A_SᵀA_S, 1], [1ᵀ, 0]] [x; μ] =
    [A_Sᵀy; 1]``; the feasible (non-negative) solution of lowest objective is the optimum.

    Returns
    -------
    X : (L, N) ndarray, non-negative with columns summing to one.
    """
    L, N = AtY.shape
    if L > MAX_ENUMERATED_COMPONENTS:
        raise ValueError(
            f"{L} references: exact batched LCF supports at most {MAX_ENUMERATED_COMPONENTS}"
        )
    best_obj = np.full(N, np.inf)
    best = np.full((L, N), 1.0 / L)
    for S in _subsets(L):
        idx = np.asarray(S)
        k = idx.size
        K = np.zeros((k + 1, k + 1))
        K[:k, :k] = AtA[np.ix_(idx, idx)]
        K[:k, k] = 1.0
        K[k, :k] = 1.0
        rhs = np.empty((k + 1, N))
        rhs[:k] = AtY[idx]
        rhs[k] = 1.0
        if k == 1:  # a single component: its weight is 1
            m = np.ones((1, N))
        else:
            m = np.linalg.solve(K, rhs)[:k]
        feasible = np.all(m >= -tol, axis=0)
        m = np.maximum(m, 0.0)
        m /= m.sum(axis=0, keepdims=True)
        obj = _quadratic_objective(m, K[:k, :k], AtY[idx])
        better = feasible & (obj < best_obj)
        if better.any():
            best[:, better] = 0.0
            best[np.ix_(idx, np.flatnonzero(better))] = m[:, better]
            best_obj = np.where(better, obj, best_obj)
    return best


#: ``1ᵀM`` at or below this is "no material": the fractions there are uniform (1/L).
FRACTION_EPS = 1e-12


def fractions_from_coefficients(
    M: np.ndarray, eps: float = FRACTION_EPS
) -> tuple[np.ndarray, np.ndarray]:
    """Split coefficients ``M = X diag(s)`` into fractions X (summing to one) and scale s.

    ``s = 1ᵀM``; where ``s <= eps`` (no material) X is uniform 1/L. The one coefficients ->
    fractions rule of the package (LCF maps, the ADMM start, the RUM output maps).

    Parameters
    ----------
    M : (L, *spatial) ndarray

    Returns
    -------
    X : (L, *spatial) ndarray
    s : (*spatial) ndarray
    """
    M = np.asarray(M)
    s = M.sum(axis=0)
    ok = s > eps
    X = np.where(ok, M / np.where(ok, s, 1.0), 1.0 / M.shape[0])
    return X, s
