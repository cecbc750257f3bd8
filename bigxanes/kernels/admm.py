"""One ADMM iteration of robust unmixing (RUM-TV / RUM-PnP) on a block of pixel state.

Implements Algorithm 1 of Wang et al., "Robust retrieval of material chemical states in X-ray
microspectroscopy", Opt. Express 2023, in scaled form, as written out in docs/design.md, "ADMM":

1. X-step. TV: ``(s² + 1 - Δ) X = (M - C) s + ∇ᵀ(U - D) + W - E`` (warm-started Jacobi sweeps);
   PnP: ``X = ((M - C) s + (U - D) + W - E) / (s² + 2)``.
2. ... solved on the affine set ``1ᵀX = 1`` (Algorithm 1 step 4, "normalize X"): with
   ``H = diag(h) - Δ`` the same for every component (``h = s² + 1``; PnP ``h = s² + 2``, no Δ)
   and ``H 1 = h``, the constrained minimizer is ``X_j = H⁻¹(b_j - μ)`` with the per-pixel
   multiplier ``μ = (Σ_j b_j - h) / L``. Jacobi sweeps started from an X that sums to one keep
   the sum at one; a final ``X += (1 - 1ᵀX) / L`` removes round-off. (Dividing X by its column
   sum, as before, is not a minimizer and blows up where the sum is near 0 or negative: the
   spikes and the oscillation seen on real data with misfitting references, issue 13.)
3. ``s = (Σ_j X_j (M - C)_j + t - g) / (Σ_j X_j² + 1)``.
4. ``M = (AᵀA + ρI)⁻¹ (AᵀY + ρ (X s + C))``; with a weighted data term
   ``½ Σ_t w_tn (y_tn - (A m)_t)²`` per pixel ``M_n = (G_n + ρI)⁻¹ (b_n + ρ (X s + C)_n)``,
   ``G_n = Aᵀ diag(w_n) A``, ``b_n = Aᵀ diag(w_n) y_n`` (``StateLayout.data_weights``;
   :func:`bigxanes.kernels.weights.weighted_m_step`).
5. TV: ``U = shrink(∇̂X + D, λ/ρ)``; guided TV (``StateLayout.weighted``):
   ``U = shrink(∇̂X + D, λ w/ρ)`` with the per-pixel weight channel ``w``
   (:mod:`bigxanes.kernels.guide`); PnP: ``U_j = denoise(X̂_j + D_j, σ = sqrt(λ/ρ))``.
6. PnP: ``ρ ← γρ`` and the scaled duals C, D, E, g are multiplied by ``ρ_old/ρ_new``.
7. ``W = max(X̂ + E, 0)``, ``t = max(s + g, 0)``.
8. ``C += X s - M``; ``D += ∇̂X - U`` (TV) or ``X̂ - U`` (PnP); ``E += X̂ - W``; ``g += s - t``.

Over-relaxation (Boyd et al. 2011, §3.4.3; ``relax`` = α) of the two linear constraints on X,
``∇X = U`` (PnP ``X = U``) and ``X = W``: in steps 5, 7 and 8 their x side is replaced by
``∇̂X = α ∇X + (1 - α) U_prev`` (PnP ``X̂ = α X + (1 - α) U_prev``) and
``X̂ = α X + (1 - α) W_prev``. The bilinear coupling ``X s = M`` and ``s = t`` are not
relaxed: relaxing them too took 252 instead of 42 iterations with references 3 eV off the data
(electrode 64², α = 1.8; benchmarks/results/convergence_conv_after.md). ``α = 1`` is plain
ADMM. The residual channels are those of the unrelaxed constraints (``∇X - U``, ``X - W``).

The whole state of a block is one array ``(channels, *spatial)`` whose channel layout is given
by :class:`StateLayout`; the iteration returns the new state with extra per-pixel *residual*
channels appended (squared residual contributions, summed over the image by the caller).
The kernel is exact on any block whose halo is at least ``RumParams.halo`` deep
(:attr:`bigxanes.rum.RumParams.halo`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .denoisers import denoise_maps
from .layout import ChannelLayout
from .lcf import fractions_from_coefficients
from .moments import residual_sq
from .stencils import gradient, gradient_adjoint, isotropic_shrink, jacobi_screened_poisson, tv_norm
from .weights import unpack_symmetric, weighted_data_misfit, weighted_m_step

RESIDUALS = ("r_scale", "r_simplex", "r_positive", "r_reg", "dual", "data", "reg")


@dataclass(frozen=True)
class StateLayout(ChannelLayout):
    """Channel layout of the per-pixel ADMM state.

    Channels, in order: ``aty`` (L, constant AᵀY), ``yty`` (1, constant YᵀY), ``X`` (L), ``s`` (1),
    ``M`` (L), ``W`` (L), ``t`` (1), ``C`` (L), ``E`` (L), ``g`` (1), ``U`` (K), ``D`` (K), where
    K = L·ndim for TV (one gradient component per spatial axis, axis-major) and K = L for PnP.
    With ``weighted=True`` (guided TV) one more constant channel ``w`` (1, the TV edge weight)
    is appended after ``D``, so the other channels keep their positions. With
    ``data_weights=True`` (a weighted data term, :mod:`bigxanes.kernels.weights`) the weighted
    normal equations follow as constants: ``wb`` (L, ``AᵀWy``), ``wc`` (1, ``yᵀWy``) and ``G``
    (L(L+1)/2, ``AᵀWA`` packed); ``aty``/``yty`` stay unweighted (the residual maps).
    """

    n_components: int
    ndim: int
    method: str  # "tv" or "pnp"
    weighted: bool = False
    data_weights: bool = False

    @property
    def k_reg(self) -> int:
        return self.n_components * (self.ndim if self.method == "tv" else 1)

    @property
    def sizes(self) -> dict[str, int]:
        L = self.n_components
        return {
            "aty": L,
            "yty": 1,
            "X": L,
            "s": 1,
            "M": L,
            "W": L,
            "t": 1,
            "C": L,
            "E": L,
            "g": 1,
            "U": self.k_reg,
            "D": self.k_reg,
            **({"w": 1} if self.weighted else {}),
            **({"wb": L, "wc": 1, "G": L * (L + 1) // 2} if self.data_weights else {}),
        }

    @property
    def n_out(self) -> int:
        """Channels returned by :func:`admm_iteration`: state + residual channels."""
        return self.n_channels + len(RESIDUALS)


def _reg_view(v: np.ndarray, layout: StateLayout) -> np.ndarray:
    if layout.method == "tv":
        return v.reshape((layout.ndim, layout.n_components) + v.shape[1:])
    return v


def initial_state(
    aty: np.ndarray,
    yty: np.ndarray,
    M0: np.ndarray,
    layout: StateLayout,
    dtype=np.float64,
    weight: np.ndarray | None = None,
) -> np.ndarray:
    """Initial ADMM state from the LCF (NNLS) solution ``M0`` (docs/design.md, "ADMM", Init).

    ``s0 = Σ_j M0_j``, ``X0 = M0 / s0`` (uniform where s0 ~ 0), ``W = X0``, ``t = s0``, duals 0,
    ``U = ∇X0`` (TV) or ``X0`` (PnP). Arrays are (channels, *spatial). ``weight`` (*spatial)
    fills the ``w`` channel of a weighted layout (required there, ignored otherwise).
    """
    sl = layout.slices
    S = np.zeros((layout.n_channels,) + M0.shape[1:], dtype=dtype)
    X0, s0 = fractions_from_coefficients(M0)
    S[sl["aty"]] = aty
    S[sl["yty"]] = yty
    S[sl["X"]] = X0
    S[sl["s"]] = s0
    S[sl["M"]] = M0
    S[sl["W"]] = X0
    S[sl["t"]] = s0
    if layout.method == "tv":
        S[sl["U"]] = gradient(X0, layout.ndim).reshape((layout.k_reg,) + X0.shape[1:])
    else:
        S[sl["U"]] = X0
    if layout.weighted:
        if weight is None:
            raise ValueError("a weighted (guided-TV) layout needs the weight map.")
        S[sl["w"]] = weight
    return S


def admm_iteration(
    S: np.ndarray,
    *,
    layout: StateLayout,
    AtA: np.ndarray,
    lam: float,
    rho: float,
    rho_next: float,
    tv_sweeps: int = 10,
    denoiser: str = "tv",
    relax: float = 1.0,
) -> np.ndarray:
    """One ADMM iteration on a block of state (see module docstring for the steps).

    Parameters
    ----------
    S : (n_channels, *spatial) ndarray
        State block (possibly with a halo), layout from ``layout``.
    layout : StateLayout
    AtA : (L, L) ndarray
        ``AᵀA`` of the (scaled) references.
    lam, rho : float
        Regularization weight λ and penalty ρ of this iteration.
    rho_next : float
        ρ of the next iteration (``γρ`` for PnP, ``ρ`` for TV); the scaled duals are rescaled
        by ``rho / rho_next`` (docs/design.md, "ADMM", step 6).
    tv_sweeps : int
        Jacobi sweeps of the TV X-step.
    denoiser : str
        PnP denoiser name (see :mod:`bigxanes.kernels.denoisers`).
    relax : float
        Over-relaxation α in (0, 2) (module docstring); 1 = plain ADMM.

    Returns
    -------
    (n_out, *spatial) ndarray
        New state, followed by per-pixel channels :data:`RESIDUALS`: squared primal residuals
        ``|Xs - M|²``, ``|X - W|²``, ``|s - t|²``, ``|∇X - U|²`` (or ``|X - U|²``), squared dual
        change ``|M - M_prev|²``, the data term ``|y - A M|²`` and the regularizer ``TV(X)``.
    """
    S = np.asarray(S, dtype=np.float64)
    sl = layout.slices
    nd = layout.ndim
    L = layout.n_components
    aty, yty = S[sl["aty"]], S[sl["yty"]][0]
    X, s, M_prev = S[sl["X"]], S[sl["s"]][0], S[sl["M"]]
    W, t = S[sl["W"]], S[sl["t"]][0]
    C, E, g = S[sl["C"]], S[sl["E"]], S[sl["g"]][0]
    U, D = _reg_view(S[sl["U"]], layout), _reg_view(S[sl["D"]], layout)
    w = S[sl["w"]][0] if layout.weighted else 1.0

    # 1. X-step
    # 1.+2. X-step on the affine set 1ᵀX = 1 (exact minimizer, see module docstring):
    # μ = (Σ_j rhs_j - diag) / L, then solve with rhs_j - μ, then remove round-off.
    if layout.method == "tv":
        rhs = (M_prev - C) * s + W - E + gradient_adjoint(U - D, nd)
        diag = s * s + 1.0
    else:
        rhs = (M_prev - C) * s + W - E + U - D
        diag = s * s + 2.0
    rhs = rhs - (rhs.sum(axis=0) - diag) / L
    if layout.method == "tv":
        X = jacobi_screened_poisson(rhs, diag, X, nd, tv_sweeps)
    else:
        X = rhs / diag
    X = X + (1.0 - X.sum(axis=0)) / L
    # 3. scale
    s = (np.sum(X * (M_prev - C), axis=0) + t - g) / (np.sum(X * X, axis=0) + 1.0)
    # over-relaxation (α = relax) of the linear constraints ∇X = U (PnP X = U) and X = W:
    # their z-steps and duals see α·(x side) + (1 - α)·(previous z)
    a, b = float(relax), 1.0 - float(relax)
    # 4. M-step: pixel-local L x L solve (weighted data term: one per pixel)
    Xs = X * s
    if layout.data_weights:
        wb, G = S[sl["wb"]], unpack_symmetric(S[sl["G"]], L)
        M = weighted_m_step(G, wb, Xs, C, rho)
    else:
        P = np.linalg.inv(AtA + rho * np.eye(L))
        M = np.tensordot(P, aty + rho * (Xs + C), axes=1)
    # 5. U-step
    if layout.method == "tv":
        gX = gradient(X, nd)
        hU = a * gX + b * U
        U = isotropic_shrink(hU + D, (lam / rho) * w)
        reg_res = gX - U
    else:
        hU = a * X + b * U
        U = denoise_maps(hU + D, np.sqrt(lam / rho), denoiser, nd)
        reg_res = X - U
    # 7. projections
    hX = a * X + b * W
    W = np.maximum(hX + E, 0.0)
    t = np.maximum(s + g, 0.0)
    # 8. dual ascent, then (6.) rescale the scaled duals for the next ρ
    r_scale = Xs - M
    r_simplex = X - W
    r_pos = s - t
    f = rho / rho_next
    C = (C + r_scale) * f
    D = (D + hU - U) * f
    E = (E + hX - W) * f
    g = (g + r_pos) * f

    out = np.empty((layout.n_out,) + S.shape[1:], dtype=np.float64)
    out[sl["aty"]] = aty
    out[sl["yty"]] = yty
    out[sl["X"]] = X
    out[sl["s"]] = s
    out[sl["M"]] = M
    out[sl["W"]] = W
    out[sl["t"]] = t
    out[sl["C"]] = C
    out[sl["E"]] = E
    out[sl["g"]] = g
    out[sl["U"]] = U.reshape((layout.k_reg,) + X.shape[1:])
    out[sl["D"]] = D.reshape((layout.k_reg,) + X.shape[1:])
    if layout.weighted:
        out[sl["w"]] = w
    if layout.data_weights:
        for name in ("wb", "wc", "G"):
            out[sl[name]] = S[sl[name]]
    r = layout.n_channels
    out[r + 0] = np.sum(r_scale * r_scale, axis=0)
    out[r + 1] = np.sum(r_simplex * r_simplex, axis=0)
    out[r + 2] = r_pos * r_pos
    reg_axes = (0, 1) if layout.method == "tv" else (0,)
    out[r + 3] = np.sum(reg_res * reg_res, axis=reg_axes)
    dM = M - M_prev
    out[r + 4] = rho * rho * np.sum(dM * dM, axis=0)
    if layout.data_weights:
        out[r + 5] = weighted_data_misfit(G, wb, S[sl["wc"]][0], M)
    else:
        out[r + 5] = residual_sq(yty, aty, M, AtA)
    out[r + 6] = w * tv_norm(X, nd) if layout.method == "tv" else 0.0
    return out


BACKENDS = ("numpy", "numba")


def default_backend() -> str:
    """``"numba"`` when numba imports, else ``"numpy"``."""
    try:
        import numba  # noqa: F401
    except ImportError:
        return "numpy"
    return "numba"


def admm_step(
    S: np.ndarray,
    *,
    backend: str | None = None,
    residuals: bool = True,
    threads: int | None = None,
    **kwargs,
) -> np.ndarray:
    """:func:`admm_iteration` on the chosen backend (thin dispatch; same arguments).

    ``backend="numpy"`` runs the float64 NumPy reference; ``"numba"`` the fused float32 kernel
    :func:`bigxanes.kernels.fused.admm_iteration_fused` on ``threads`` numba threads (None: all
    of them). ``None``: :func:`default_backend`. Either returns the
    :data:`RESIDUALS` channels after the state only when ``residuals`` (the NumPy reference
    computes them anyway and the state channels are returned as a view).
    """
    backend = default_backend() if backend is None else backend
    if backend == "numpy":
        out = admm_iteration(S, **kwargs)
        return out if residuals else out[: kwargs["layout"].n_channels]
    if backend == "numba":
        if kwargs["layout"].data_weights:
            raise ValueError(
                "the numba backend has no weighted data term; use backend 'numpy' with weights"
            )
        from .fused import admm_iteration_fused

        return admm_iteration_fused(S, residuals=residuals, threads=threads, **kwargs)
    raise ValueError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
