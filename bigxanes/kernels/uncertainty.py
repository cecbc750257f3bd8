"""Per-pixel uncertainty of chemical-state fractions (issue 14, item 5): ``fraction_std``.

LCF (linearized covariance, delta method)
-----------------------------------------
The free-scale LCF fits coefficients ``m = x s`` by (weighted) least squares,
``m̂ = G⁻¹ b`` with ``G = AᵀWA``, ``b = AᵀWy`` (``W = I`` unweighted). With noise covariance
``Σ`` and ``W = Σ⁻¹ / σ²`` the estimate's covariance is ``Cov(m̂) = σ² G⁻¹``:

* weights that are true inverse variances (``σ² = 1``): ``Cov(m̂) = G⁻¹``;
* otherwise ``σ²`` per pixel from the residual, ``σ̂²_n = r_nᵀ W r_n / (T - L)``.

The fractions ``x = m / 1ᵀm`` are a smooth function of m; to first order (delta method)
``Cov(x̂) = J Cov(m̂) Jᵀ`` with ``J = ∂x/∂m = (I - x 1ᵀ) / s``, ``s = 1ᵀm``, i.e.
``Var(x_j) = (C_jj - 2 x_j (C 1)_j + x_j² 1ᵀC1) / s²``.

Non-negativity (NNLS). Where the constraint is active (a component clipped to 0, i.e. the pixel
lies on the simplex boundary) the covariance of the *active-set* solution would give that
fraction a zero std, so any truth above 0 would be "infinitely" far. We therefore use the
covariance of the unconstrained fit on all L components, evaluated at the NNLS solution: the
constrained estimate is (approximately) a projection of the unconstrained one onto the feasible
set, which never increases its distance to a feasible truth, so the interval is conservative
there and exact (to first order) in the interior. The benchmark (benchmarks/bench_uncertainty.py)
reports coverage separately on interior and boundary pixels.

Where ``s`` is ~0 (no material) the fractions are undefined: the std is NaN.

RUM (local risk estimate)
-------------------------
RUM's error is bias (the prior smooths, most at edges) plus a variance far below LCF's, so the
per-pixel LCF covariance is far too large and the estimator's variance alone (perturbed
re-solves) far too small. We estimate the local mean squared error with Stein's identity, using
the unconstrained LCF fractions ``x_L`` (unbiased to first order, covariance ``V_L`` from above)
as the noisy observation of the truth:

``E (x_R - x)² = E (x_R - x_L)² - V_L + 2 Cov(x_R, x_L)``

The covariance term is estimated by K perturbed re-solves (data ``y + δ_k``, ``δ_k`` drawn with
the estimated noise level; ``Cov ≈ mean_k (x_R^k - x_R)(x_L^k - x_L)``) and the whole right-hand
side, divided by ``V_L`` (a local inverse effective number of averaged pixels), is averaged
over a small spatial window (the identity holds in expectation; one pixel is one noisy
sample), floored at the perturbation variance, widened along edges and scaled back by ``V_L``:
:func:`rum_fraction_std`. The re-solves must use the *same* λ as the estimate (with
``lam="auto"`` a perturbed stack is noisier and would get a larger λ).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy.ndimage import maximum_filter, uniform_filter

__all__ = [
    "coefficient_covariance",
    "residual_noise_variance",
    "fraction_covariance",
    "fraction_std",
    "lcf_fraction_std",
    "constraint_active",
    "perturbation_moments",
    "rum_fraction_std",
    "sum_to_one_fraction_std",
    "lcf_std_block",
]


def coefficient_covariance(G: np.ndarray, sigma2: np.ndarray | float | None = None) -> np.ndarray:
    """Covariance of the (weighted) least-squares coefficients: ``σ² G⁻¹`` per pixel.

    Parameters
    ----------
    G : (L, L) or (L, L, N) ndarray
        ``AᵀWA`` (shared or per pixel).
    sigma2 : float or (N,) ndarray, optional
        Noise variance (relative to the weights); None = 1 (weights are inverse variances).

    Returns
    -------
    (L, L, N) ndarray
    """
    G = np.asarray(G, dtype=np.float64)
    if G.ndim == 2:
        Ginv = np.linalg.inv(G)[:, :, None]
    else:
        Ginv = np.moveaxis(np.linalg.inv(np.moveaxis(G, -1, 0)), 0, -1)
    if sigma2 is None:
        return Ginv
    s2 = np.asarray(sigma2, dtype=np.float64).reshape(-1)
    return Ginv * s2[None, None, :]


def residual_noise_variance(rss: np.ndarray, n_energies: int, n_components: int) -> np.ndarray:
    """Per-pixel noise variance from the fit's (weighted) residual: ``σ̂² = RSS / (T - L)``."""
    dof = max(int(n_energies) - int(n_components), 1)
    return np.maximum(np.asarray(rss, dtype=np.float64), 0.0) / dof


def fraction_covariance(M: np.ndarray, covM: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """Delta-method covariance of the fractions ``x = m / 1ᵀm``: ``J Cov(m) Jᵀ``.

    ``J = (I - x 1ᵀ) / s`` with ``s = 1ᵀm``. Pixels with ``s <= eps`` get NaN.

    Parameters
    ----------
    M : (L, N) ndarray
        Coefficients.
    covM : (L, L, N) ndarray
        Their covariance.

    Returns
    -------
    (L, L, N) ndarray
    """
    L = M.shape[0]
    s = M.sum(axis=0)
    ok = s > eps
    x = M / np.where(ok, s, 1.0)
    J = (np.eye(L)[:, :, None] - x[:, None, :]) / np.where(ok, s, 1.0)  # (L, L, N): J[j, k]
    cov = np.einsum("jkn,kln,mln->jmn", J, covM, J)
    cov[:, :, ~ok] = np.nan
    return cov


def fraction_std(M: np.ndarray, covM: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """Standard deviation of each fraction (diagonal of :func:`fraction_covariance`), (L, N).

    ``Var(x_j) = (C_jj - 2 x_j (C1)_j + x_j² 1ᵀC1) / s²``; NaN where ``s <= eps``.
    """
    L = M.shape[0]
    s = M.sum(axis=0)
    ok = s > eps
    sd = np.where(ok, s, 1.0)
    x = M / sd
    diag = np.einsum("jjn->jn", covM)
    c1 = covM.sum(axis=1)  # (C 1)_j
    tot = c1.sum(axis=0)  # 1ᵀ C 1
    var = (diag - 2.0 * x * c1 + x * x * tot) / (sd * sd)
    out = np.sqrt(np.maximum(var, 0.0))
    out[:, ~ok] = np.nan
    assert out.shape[0] == L
    return out


def lcf_fraction_std(
    M: np.ndarray,
    G: np.ndarray,
    *,
    rss: np.ndarray | None = None,
    n_energies: int | None = None,
    sigma2: np.ndarray | float | None = None,
) -> np.ndarray:
    """``fraction_std`` of an LCF (NNLS, free scale) result, per pixel.

    Noise level, in order of precedence: ``sigma2`` (known variance, relative to the weights);
    ``rss`` with ``n_energies`` (per-pixel residual ``σ̂² = RSS / (T - L)``); neither: the
    weights in G are inverse variances (``Cov(m̂) = G⁻¹``).

    Parameters
    ----------
    M : (L, *spatial) ndarray
        NNLS coefficients ``m = x s``.
    G : (L, L) or (L, L, *spatial) ndarray
        ``AᵀA`` (unweighted) or per-pixel ``AᵀWA``.
    rss : (*spatial) ndarray, optional
        Per-pixel (weighted) residual sum of squares ``Σ_t w (y - A m)²``.
    n_energies : int, optional
        T, needed with ``rss``.
    sigma2 : float or (*spatial) ndarray, optional

    Returns
    -------
    (L, *spatial) ndarray
        Std of each fraction; NaN where the scale is ~0.
    """
    L = M.shape[0]
    spatial = M.shape[1:]
    Mf = M.reshape(L, -1)
    Gf = G if G.ndim == 2 else G.reshape(L, L, -1)
    if sigma2 is None and rss is not None:
        if n_energies is None:
            raise ValueError("rss needs n_energies (T) for the degrees of freedom T - L")
        sigma2 = residual_noise_variance(np.reshape(rss, -1), n_energies, L)
    cov = coefficient_covariance(Gf, sigma2)
    if cov.shape[-1] == 1 and Mf.shape[1] != 1:
        cov = np.broadcast_to(cov, (L, L, Mf.shape[1]))
    return fraction_std(Mf, cov).reshape((L,) + spatial)


def constraint_active(M: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """Pixels whose NNLS solution has a component clipped to zero (on the simplex boundary).

    There :func:`lcf_fraction_std` is conservative (an upper bound, see module docstring);
    elsewhere it is the first-order covariance. ``(L, *spatial) -> (*spatial)`` bool; pixels
    without material (``1ᵀm <= eps``) are False.
    """
    s = M.sum(axis=0)
    return (s > eps) & np.any(M <= 0.0, axis=0)


def perturbation_moments(
    solve: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]],
    Y: np.ndarray,
    noise_std: np.ndarray | float,
    n_draws: int,
    rng: np.random.Generator,
    reference: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Perturbed re-solves: variance of an estimator and its covariance with a reference one.

    ``solve(Y) -> (x_R, x_L)`` returns two fraction maps (e.g. RUM and unconstrained LCF) of the
    same data. Each draw solves ``Y + δ_k``, ``δ_k ~ N(0, noise_std²)``; returns
    ``var_R = mean_k (x_R^k - x_R)²`` and ``cov_RL = mean_k (x_R^k - x_R)(x_L^k - x_L)``,
    with ``(x_R, x_L) = solve(Y)`` (or ``reference`` when given). To first order these are the
    estimator's variance and covariance at Y (the perturbation enters linearly).

    Parameters
    ----------
    Y : (T, *spatial) ndarray
    noise_std : float or array broadcastable to Y
    n_draws : int
        K (2-8 is the intended budget; the spatial averaging of :func:`rum_fraction_std`
        reduces their noise).

    Returns
    -------
    var_R, cov_RL : (L, *spatial) ndarrays
    """
    xR, xL = reference if reference is not None else solve(Y)
    var = np.zeros_like(xR, dtype=np.float64)
    cov = np.zeros_like(xR, dtype=np.float64)
    for _ in range(int(n_draws)):
        yk = Y + rng.standard_normal(Y.shape) * noise_std
        rk, lk = solve(yk)
        dr = rk - xR
        var += dr * dr
        cov += dr * (lk - xL)
    return var / n_draws, cov / n_draws


def rum_fraction_std(
    x_rum: np.ndarray,
    x_lcf: np.ndarray,
    var_lcf: np.ndarray,
    var_pert: np.ndarray,
    cov_pert: np.ndarray,
    window: int = 5,
    edge: int = 3,
) -> np.ndarray:
    """Local root-mean-square error estimate of RUM fractions (Stein's identity, module doc).

    Per pixel, the risk relative to the LCF variance,
    ``r = [(x_R - x_L)² - V_L + 2 Cov(x_R, x_L)] / V_L`` (one noisy sample of ``MSE_R / V_L``,
    the inverse of an effective number of pixels the prior averages), is averaged over a
    ``window``-wide box, floored at the box mean of ``var_pert / V_L`` (the variance part alone),
    then spread by a maximum filter of width ``edge`` (the prior's bias lies on thin lines along
    edges, which the box average would dilute), and scaled back: ``MSE = V_L · r̄``. Averaging
    the ratio rather than the risk keeps the empty background (where ``V_L`` is huge) from
    leaking into the particles' border pixels.

    Parameters
    ----------
    x_rum : (L, *spatial) ndarray
        RUM fractions.
    x_lcf : (L, *spatial) ndarray
        Unconstrained (least-squares, free scale) LCF fractions of the same data.
    var_lcf : (L, *spatial) ndarray
        Their variance (``lcf_fraction_std ** 2``); NaN (no material) gives NaN.
    var_pert, cov_pert : (L, *spatial) ndarray
        From :func:`perturbation_moments` (re-solves at the same λ as ``x_rum``).
    window, edge : int
        Box and maximum-filter widths in pixels per spatial axis (``edge=1``: no spreading).

    Returns
    -------
    (L, *spatial) ndarray
        Estimated std (root MSE) of each RUM fraction.
    """
    good = np.isfinite(var_lcf) & np.isfinite(x_lcf) & (var_lcf > 0)
    v = np.where(good, var_lcf, 1.0)
    d = np.where(good, x_rum - x_lcf, 0.0)
    ratio = np.where(good, (d * d - v + 2.0 * cov_pert) / v, 0.0)
    floor = np.where(good, var_pert / v, 0.0)
    size = (1,) + (int(window),) * (x_rum.ndim - 1)
    den = np.maximum(uniform_filter(good.astype(np.float64), size=size, mode="nearest"), 1e-12)
    r = uniform_filter(ratio, size=size, mode="nearest") / den
    r = np.maximum(r, uniform_filter(floor, size=size, mode="nearest") / den)
    if int(edge) > 1:
        r = maximum_filter(r, size=(1,) + (int(edge),) * (x_rum.ndim - 1), mode="nearest")
    return np.where(good, np.sqrt(np.maximum(r, 0.0) * v), np.nan)


def sum_to_one_fraction_std(
    AtA: np.ndarray, rss: np.ndarray, n_energies: int, eps: float = 1e-12
) -> np.ndarray:
    """``fraction_std`` of the sum-to-one LCF (fractions fitted directly with ``1ᵀx = 1``).

    Equality-constrained least squares: ``Cov(x̂) = σ̂² (G⁻¹ - G⁻¹1 1ᵀG⁻¹ / 1ᵀG⁻¹1)``,
    ``G = AᵀA``, ``σ̂² = RSS / (T - L + 1)`` (one constraint gives one degree of freedom back).

    Parameters
    ----------
    AtA : (L, L) ndarray
    rss : (*spatial) ndarray
        Per-pixel residual sum of squares.
    n_energies : int

    Returns
    -------
    (L, *spatial) ndarray
    """
    G = np.asarray(AtA, dtype=np.float64)
    L = G.shape[0]
    Gi = np.linalg.inv(G)
    g1 = Gi.sum(axis=1)
    C = Gi - np.outer(g1, g1) / max(float(g1.sum()), eps)
    s2 = residual_noise_variance(rss, n_energies, L - 1)
    return np.sqrt(np.maximum(np.diag(C), 0.0)).reshape((L,) + (1,) * s2.ndim) * np.sqrt(s2)


def lcf_std_block(P: np.ndarray, *, p1, AtA: np.ndarray, n_energies: int) -> np.ndarray:
    """``fraction_std`` (L, *spatial) of the LCF of a pass-1 block (pixel-local, no halo).

    The variant's coefficients and residual (:meth:`~bigxanes.kernels.pass1.Pass1Layout.
    lcf_slices`): free-scale variants (NNLS, least squares) by the delta method
    (:func:`lcf_fraction_std`, noise from the pixel's residual ``σ̂² = RSS / (T - L)``), the
    sum-to-one variant by :func:`sum_to_one_fraction_std`. Spectra that were not finite
    (``bad``) and pixels without material get NaN. A weighted layout uses the per-pixel
    weighted normal matrix ``G = AᵀWA`` and the weighted residual.
    """
    msl, rsl = p1.lcf_slices()
    M = np.asarray(P[msl], dtype=np.float64)
    rss = np.asarray(P[rsl][0], dtype=np.float64)
    if p1.weighted:  # weighted NNLS: Cov(m̂) = σ̂² G⁻¹ with σ̂² = Σ w r² / (T - L)
        from .weights import unpack_symmetric

        G = unpack_symmetric(np.asarray(P[p1.slices["G"]], dtype=np.float64), M.shape[0])
        wrss = np.asarray(P[p1.slices["wresid0"]][0], dtype=np.float64)
        out = lcf_fraction_std(M, G, rss=wrss, n_energies=n_energies)
    elif p1.variant == "sum-to-one":
        out = sum_to_one_fraction_std(AtA, rss, n_energies)
    else:
        out = lcf_fraction_std(M, AtA, rss=rss, n_energies=n_energies)
    return np.where(P[p1.slices["bad"]][0] > 0, np.nan, out)
