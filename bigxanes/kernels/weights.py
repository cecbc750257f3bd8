"""Inverse-variance weights for counting data and the per-pixel weighted normal equations.

Photon-counting noise (issue 14, item 3). A TXM stack is imported from transmitted counts
``I ~ Poisson(I0 exp(-OD))`` as ``OD = -ln(I / I0)``. By the delta method
``Var(OD) ≈ Var(I) / I² = 1 / I = exp(OD) / I0``: the noise in optical density grows where the
sample absorbs (thick regions, post-edge energies), so every energy and every pixel has its own
variance ``v[t, n]`` and the maximum-likelihood data term is the weighted one
``Σ_t w[t, n] (y[t, n] - (A m)[t])²`` with ``w = 1 / v``.

Per pixel n this changes the normal equations of LCF and of the ADMM M-step from one shared
``AᵀA`` to a per-pixel ``G_n = Aᵀ diag(w_n) A`` (L x L) and ``b_n = Aᵀ diag(w_n) y_n`` (L):

* weighted LCF: ``min_m Σ_t w_tn (y_tn - (A m)_t)²`` s.t. ``m >= 0`` — an L x L problem per pixel
  (:func:`bigxanes.kernels.lcf.nnls_coefficients_pixelwise`);
* weighted M-step (DESIGN.md §3 step 4): ``M_n = (G_n + ρI)⁻¹ (b_n + ρ (X s + C)_n)``
  (:func:`weighted_m_step`), still pixel-local.

Weights are estimated from the data (never from the truth):

* with counts / I0 known: :func:`counting_variance` ``v = exp(ŷ) / I0`` evaluated at the *fitted*
  optical density ``ŷ = A m̂`` (evaluating it at the noisy ``y`` correlates weights with the noise
  and biases the fit: a pixel whose count fluctuated low would get a small weight), refined by
  a few reweighting passes (iteratively reweighted least squares, :func:`irls_weights`);
* without I0: :func:`effective_i0_from_residual` estimates an effective dose per energy from the
  residual of an unweighted fit, assuming the counting model ``v ∝ exp(ŷ)``, or
  :func:`energy_variance_from_residual` gives a per-energy variance (Gaussian, non-counting
  noise whose level depends on the energy only).

Arrays are flattened over pixels: spectra ``(T, N)``, per-pixel matrices ``(L, L, N)``, packed
symmetric matrices ``(L(L+1)/2, N)`` (the layout the engine's state would carry as constant
channels, see :func:`pack_symmetric`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = [
    "WEIGHT_KINDS",
    "WeightModel",
    "prepared_block",
    "noise_moments_block",
    "weight_model_from_moments",
    "model_weights",
    "weighted_fit_block",
    "counting_variance",
    "effective_i0_from_residual",
    "energy_variance_from_residual",
    "weighted_normal_equations",
    "batched_solve",
    "pack_symmetric",
    "unpack_symmetric",
    "weighted_m_step",
    "weighted_data_misfit",
    "irls_weights",
]

OD_CLIP = (-1.0, 12.0)  # OD range in which exp(OD) is evaluated (finite, no overflow)
#: ``weights`` of LCF / RUM: unweighted least squares, photon-counting weights
#: ``w = I0 e^{-OD}`` per energy and pixel, or one inverse variance per energy.
WEIGHT_KINDS = ("none", "counts", "energy")
#: Reweighting passes of the counting weights (see :func:`irls_weights`).
N_REWEIGHT = 2


@dataclass(frozen=True, eq=False)
class WeightModel:
    """The noise model of a weighted fit, fixed for the whole image before pass 1.

    ``kind`` "counts": ``w_tn = 1 / v_tn`` with ``v = exp(OD_tn) / I0_t``
    (:func:`counting_variance`) evaluated at the fitted optical density and refined by
    :data:`N_REWEIGHT` reweighting passes; ``i0`` (T,) is the incident dose per pixel and
    energy, given (the I0 the stack was converted with) or estimated from the residual of an
    unweighted fit (:func:`weight_model_from_moments`). ``kind`` "energy": ``w_t = 1 / var_t``,
    one variance per energy estimated from the residual. ``source``: "given" or "estimated".
    """

    kind: str
    i0: np.ndarray | None = None
    var: np.ndarray | None = None
    source: str = "estimated"
    n_reweight: int = N_REWEIGHT

    def as_attrs(self) -> dict:
        """The model in result attrs (JSON-safe)."""
        out: dict = {"weights": self.kind, "weights_source": self.source}
        if self.i0 is not None:
            out["weights_i0"] = [float(v) for v in self.i0]
        if self.var is not None:
            out["weights_var"] = [float(v) for v in self.var]
        return out


def prepared_block(
    Y: np.ndarray, window: np.ndarray | None, nan_policy: str = "mask"
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(T, N)`` float64 spectra as fitted, their pre-edge offsets and the bad-spectrum map.

    The fitted spectra have each spectrum's pre-edge mean removed (``window``;
    :func:`~bigxanes.kernels.baseline.subtract_pre_edge`) and non-finite spectra zeroed
    (:func:`~bigxanes.kernels.moments.clean_block`). The offset (the removed mean, 0 without a
    window or for a bad spectrum) restores the optical density the counting noise depends on:
    ``OD = A m + offset``.
    """
    from .baseline import subtract_pre_edge
    from .moments import clean_block

    T = Y.shape[0]
    Yf = np.asarray(Y).reshape(T, -1)
    if window is not None:
        with np.errstate(invalid="ignore"):  # Inf - Inf: a bad spectrum, zeroed next
            Ys = subtract_pre_edge(Yf.astype(np.float64), window)
    else:
        Ys = Yf
    Yc, bad = clean_block(Ys, nan_policy)
    if window is None:
        off = np.zeros(Yc.shape[1])
    else:
        with np.errstate(invalid="ignore"):
            off = np.asarray(Yf[window], dtype=np.float64).mean(axis=0)
        off[bad | ~np.isfinite(off)] = 0.0
    return Yc, off, bad


def noise_moments_block(
    Y: np.ndarray, *, A: np.ndarray, window: np.ndarray | None, nan_policy: str = "mask"
) -> np.ndarray:
    """Per-energy sums of a block for the noise model: ``Σ_n r²_tn``, ``Σ_n exp(ŷ_tn)`` and the
    count of finite spectra, shaped ``(2T + 1, 1, ...)`` (additive over blocks).

    ``r = y - A m̂`` is the residual of the unweighted NNLS fit and ``ŷ = A m̂ + offset`` its
    optical density (:func:`prepared_block`); the sums run over the finite spectra.
    """
    from .lcf import nnls_coefficients
    from .moments import gram

    T = Y.shape[0]
    Yc, off, bad = prepared_block(Y, window, nan_policy)
    good = ~bad
    M = nnls_coefficients(gram(A), A.T @ Yc)
    fit = A @ M
    r = (Yc - fit)[:, good]
    e = np.exp(np.clip(fit[:, good] + off[good], *OD_CLIP))
    out = np.concatenate([np.sum(r * r, axis=1), e.sum(axis=1), [float(good.sum())]])
    return out.reshape((2 * T + 1,) + (1,) * (Y.ndim - 1))


def weight_model_from_moments(
    kind: str, sums: np.ndarray, n_components: int, i0: np.ndarray | None = None
) -> WeightModel:
    """The image's :class:`WeightModel` from the summed :func:`noise_moments_block` (or with a
    given ``i0``, which needs no sums: pass ``sums=None``).

    Counting model without I0: ``1 / I0_t = Σ_n r²_tn / (κ Σ_n exp(ŷ_tn))``
    (:func:`effective_i0_from_residual`); per-energy model: ``var_t = Σ_n r²_tn / (κ N)``
    (:func:`energy_variance_from_residual`), with ``κ = (T - L) / T`` the fraction of the noise
    variance an L-component fit leaves in the residual.
    """
    if kind not in WEIGHT_KINDS or kind == "none":
        raise ValueError(f"weights must be one of {', '.join(WEIGHT_KINDS[1:])}, got {kind!r}")
    if kind == "counts" and i0 is not None:
        i0 = np.asarray(i0, dtype=np.float64).reshape(-1)
        if not np.all(np.isfinite(i0) & (i0 > 0)):
            raise ValueError("I0 must be positive and finite at every energy (--i0).")
        return WeightModel("counts", i0=i0, source="given")
    s = np.asarray(sums, dtype=np.float64).reshape(-1)
    T = (s.size - 1) // 2
    r2, e, n = s[:T], s[T : 2 * T], s[-1]
    if n < 1 or not np.any(r2 > 0):
        raise ValueError(
            "cannot estimate noise weights: no finite spectrum with a residual; use --weights none"
        )
    kappa = max(T - n_components, 1) / T
    if kind == "counts":
        inv = r2 / (kappa * np.maximum(e, 1e-300))
        floor = max(float(np.median(inv)) * 1e-3, 1e-300)
        return WeightModel("counts", i0=1.0 / np.maximum(inv, floor))
    v = r2 / (kappa * n)
    floor = max(float(np.median(v)) * 1e-3, 1e-300)
    return WeightModel("energy", var=np.maximum(v, floor))


def model_weights(model: WeightModel, A: np.ndarray, M: np.ndarray, off: np.ndarray) -> np.ndarray:
    """Inverse-variance weights ``(T, N)`` of ``model`` at coefficients ``M`` (L, N):
    ``I0_t exp(-(A m + offset))`` (counts) or ``1 / var_t`` (energy)."""
    T, N = A.shape[0], M.shape[1]
    if model.kind == "energy":
        return np.broadcast_to((1.0 / model.var)[:, None], (T, N))
    return 1.0 / counting_variance(A @ M + off, model.i0)


def weighted_fit_block(
    Yc: np.ndarray, A: np.ndarray, model: WeightModel, off: np.ndarray, M_start: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Weighted NNLS of spectra ``Yc`` (T, N) started from the unweighted ``M_start``.

    Counting weights: :attr:`WeightModel.n_reweight` passes of ``w = 1 / v(A m̂ + offset)``,
    refit (iteratively reweighted least squares, as :func:`irls_weights`); per-energy weights:
    one fit. Returns ``(M, w, G, b, c)``: coefficients, the weights of the last fit and its
    normal equations (:func:`weighted_normal_equations`).
    """
    from .lcf import nnls_coefficients_pixelwise

    M = M_start
    n = model.n_reweight if model.kind == "counts" else 1
    for _ in range(max(int(n), 1)):
        w = model_weights(model, A, M, off)
        G, b, c = weighted_normal_equations(A, Yc, w)
        M = nnls_coefficients_pixelwise(G, b)
    return M, w, G, b, c


def counting_variance(od_fit: np.ndarray, i0: np.ndarray | float) -> np.ndarray:
    """Variance of the optical density of photon-counting data: ``v = exp(OD) / I0``.

    Delta method: ``OD = -ln(I / I0)``, ``I ~ Poisson(I0 e^{-OD})`` so
    ``Var(OD) ≈ Var(I) / E[I]² = 1 / (I0 e^{-OD})``. The noise of I0 itself is neglected
    (I0 is usually averaged over many pixels or a separate long exposure).

    Parameters
    ----------
    od_fit : (T, N) ndarray
        Optical density at which the variance is evaluated: the fitted ``A m̂`` (preferred, see
        module docstring) or the data.
    i0 : float or (T,) or (T, N) ndarray
        Incident photons per pixel (per energy, or per energy and pixel).

    Returns
    -------
    (T, N) ndarray
        Variance, strictly positive and finite.
    """
    od = np.clip(np.asarray(od_fit, dtype=np.float64), *OD_CLIP)
    i0 = np.asarray(i0, dtype=np.float64)
    if i0.ndim == 1:
        i0 = i0[:, None]
    if not np.all(i0 > 0):
        raise ValueError("I0 must be positive at every energy to derive counting weights.")
    return np.exp(od) / i0


def effective_i0_from_residual(
    resid: np.ndarray, od_fit: np.ndarray, dof_factor: float = 1.0, pixels: np.ndarray | None = None
) -> np.ndarray:
    """Effective incident dose per energy from the residual of a fit, for counting data.

    Model ``E[r²_tn] = κ exp(ŷ_tn) / I0_t`` with ``κ = dof_factor`` (``(T - L) / T`` corrects for
    the L fitted coefficients). Moment estimate per energy over the pixels:
    ``1 / I0_t = Σ_n r²_tn / (κ Σ_n exp(ŷ_tn))``.

    Parameters
    ----------
    resid, od_fit : (T, N) ndarray
        Residual ``y - A m̂`` and fitted ``A m̂``.
    dof_factor : float
        κ, the expected fraction of the noise variance left in the residual.
    pixels : (N,) bool ndarray, optional
        Pixels to pool (default all).

    Returns
    -------
    (T,) ndarray
        I0 estimate per energy (positive).
    """
    r2 = np.asarray(resid, dtype=np.float64) ** 2
    e = np.exp(np.clip(np.asarray(od_fit, dtype=np.float64), *OD_CLIP))
    if pixels is not None:
        r2, e = r2[:, pixels], e[:, pixels]
    inv_i0 = r2.sum(axis=1) / (dof_factor * e.sum(axis=1))
    floor = max(float(np.median(inv_i0)) * 1e-3, 1e-300)
    return 1.0 / np.maximum(inv_i0, floor)


def energy_variance_from_residual(
    resid: np.ndarray, dof_factor: float = 1.0, pixels: np.ndarray | None = None
) -> np.ndarray:
    """Per-energy noise variance ``v_t = Σ_n r²_tn / (κ N)`` from a fit's residual.

    For noise whose level depends on the energy only (detector, I0 drift), not on the sample.

    Returns
    -------
    (T,) ndarray
        Positive variance per energy (floored at 1e-3 of the median).
    """
    r2 = np.asarray(resid, dtype=np.float64) ** 2
    if pixels is not None:
        r2 = r2[:, pixels]
    v = r2.mean(axis=1) / dof_factor
    floor = max(float(np.median(v)) * 1e-3, 1e-300)
    return np.maximum(v, floor)


def weighted_normal_equations(
    A: np.ndarray, Y: np.ndarray, w: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-pixel weighted normal equations ``G_n = Aᵀ diag(w_n) A``, ``b_n = Aᵀ diag(w_n) y_n``.

    Formed as one matrix product each: ``G = (A_i A_j)_{ij,t} @ w`` ((L², T) @ (T, N)) and
    ``b = Aᵀ (w ∘ Y)``; also returns ``c_n = y_nᵀ diag(w_n) y_n`` (for the weighted misfit).

    Parameters
    ----------
    A : (T, L) ndarray
    Y : (T, N) ndarray
    w : (T, N) or (T,) ndarray
        Non-negative weights (inverse variances).

    Returns
    -------
    G : (L, L, N), b : (L, N), c : (N,) ndarrays
    """
    A = np.asarray(A, dtype=np.float64)
    Y = np.asarray(Y, dtype=np.float64)
    T, L = A.shape
    w = np.asarray(w, dtype=np.float64)
    if w.ndim == 1:
        w = w[:, None]
    w = np.broadcast_to(w, Y.shape)
    outer = (A[:, :, None] * A[:, None, :]).reshape(T, L * L).T  # (L², T)
    G = (outer @ w).reshape(L, L, -1)
    wY = w * Y
    b = A.T @ wY
    c = np.einsum("tn,tn->n", wY, Y)
    return G, b, c


def batched_solve(G: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Solve ``G_n m_n = b_n`` for every pixel n (vectorized L x L solves).

    Parameters
    ----------
    G : (L, L, N) ndarray (or (L, L): shared by all pixels)
    b : (L, N) ndarray

    Returns
    -------
    (L, N) ndarray
    """
    if G.ndim == 2:
        return np.linalg.solve(G, b)
    Gn = np.moveaxis(G, -1, 0)  # (N, L, L)
    return np.linalg.solve(Gn, b.T[:, :, None])[:, :, 0].T


def pack_symmetric(G: np.ndarray) -> np.ndarray:
    """Upper triangle (row-major, diagonal included) of per-pixel symmetric matrices.

    ``(L, L, *spatial) -> (L(L+1)/2, *spatial)``: the constant state channels the engine would
    carry for the weighted M-step (see :func:`weighted_m_step`).
    """
    L = G.shape[0]
    iu = np.triu_indices(L)
    return G[iu[0], iu[1]]


def unpack_symmetric(P: np.ndarray, L: int) -> np.ndarray:
    """Inverse of :func:`pack_symmetric`: ``(L(L+1)/2, *spatial) -> (L, L, *spatial)``."""
    if P.shape[0] != L * (L + 1) // 2:
        raise ValueError(f"{P.shape[0]} packed channels do not hold a symmetric {L}x{L} matrix")
    G = np.empty((L, L) + P.shape[1:], dtype=P.dtype)
    iu = np.triu_indices(L)
    G[iu[0], iu[1]] = P
    G[iu[1], iu[0]] = P
    return G


def weighted_m_step(
    G: np.ndarray, b: np.ndarray, Xs: np.ndarray, C: np.ndarray, rho: float
) -> np.ndarray:
    """Weighted ADMM M-step, pixel-local: ``M_n = (G_n + ρI)⁻¹ (b_n + ρ (X s + C)_n)``.

    DESIGN.md §3 step 4 with the data term ``½ Σ_t w_tn (y_tn - (A m)_t)²``; with ``w ≡ 1``
    (``G_n = AᵀA``, ``b = AᵀY``) it is the unweighted step of
    :func:`bigxanes.kernels.admm.admm_iteration`.

    Parameters
    ----------
    G : (L, L, *spatial) or (L(L+1)/2, *spatial) ndarray
        Per-pixel ``Aᵀ W A`` (full, or packed by :func:`pack_symmetric`).
    b : (L, *spatial) ndarray
        ``Aᵀ W y``.
    Xs, C : (L, *spatial) ndarray
        ``X s`` of this iteration and the scaled dual C.
    rho : float

    Returns
    -------
    (L, *spatial) ndarray
    """
    L = b.shape[0]
    spatial = b.shape[1:]
    if G.shape[0] != L:
        G = unpack_symmetric(G, L)
    Gf = G.reshape(L, L, -1) + rho * np.eye(L)[:, :, None]
    rhs = (b + rho * (Xs + C)).reshape(L, -1)
    return batched_solve(Gf, rhs).reshape((L,) + spatial)


def weighted_data_misfit(G: np.ndarray, b: np.ndarray, c: np.ndarray, M: np.ndarray) -> np.ndarray:
    """``Σ_t w_tn (y_tn - (A m_n)_t)² = c_n - 2 m_nᵀ b_n + m_nᵀ G_n m_n`` per pixel, from the
    normal-equation quantities alone (no T-long spectra)."""
    GM = np.einsum("ijn,jn->in", G.reshape(G.shape[0], G.shape[1], -1), M.reshape(M.shape[0], -1))
    Mf = M.reshape(M.shape[0], -1)
    return (c.reshape(-1) - 2.0 * np.sum(Mf * b.reshape(Mf.shape), 0) + np.sum(Mf * GM, 0)).reshape(
        M.shape[1:]
    )


def irls_weights(
    A: np.ndarray,
    Y: np.ndarray,
    solve,
    *,
    i0: np.ndarray | float | None = None,
    n_reweight: int = 2,
    pixels: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Counting-noise weights by iterative reweighting: fit, ``v = exp(A m̂) / I0``, refit.

    Pass 0 is the unweighted fit; each pass evaluates :func:`counting_variance` at the current
    fitted optical density and refits with ``w = 1 / v``. When ``i0`` is None the dose per
    energy is estimated from the unweighted residual (:func:`effective_i0_from_residual`, with
    the degrees-of-freedom factor ``(T - L) / T``).

    Parameters
    ----------
    A : (T, L), Y : (T, N) ndarray
    solve : callable ``(G, b) -> M``
        Per-pixel solver on the weighted normal equations, e.g.
        :func:`bigxanes.kernels.lcf.nnls_coefficients_pixelwise`.
    i0 : float or (T,) ndarray, optional
        Incident photons per pixel and energy.
    n_reweight : int
        Reweighting passes (2 is enough: the fit moves by far less than its noise after that).
    pixels : (N,) bool, optional
        Pixels used to estimate the dose when ``i0`` is None.

    Returns
    -------
    w : (T, N) ndarray
        Final inverse-variance weights.
    M : (L, N) ndarray
        Coefficients of the last weighted fit.
    """
    T, L = A.shape
    G, b, _ = weighted_normal_equations(A, Y, np.ones(T))
    M = solve(G, b)
    if i0 is None:
        fit = A @ M
        i0 = effective_i0_from_residual(Y - fit, fit, (T - L) / T, pixels)
    w = np.ones_like(Y, dtype=np.float64)
    for _ in range(max(int(n_reweight), 1)):
        w = 1.0 / counting_variance(A @ M, i0)
        G, b, _ = weighted_normal_equations(A, Y, w)
        M = solve(G, b)
    return w, M
