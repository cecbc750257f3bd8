"""Robust unmixing (RUM-TV, RUM-PnP) by ADMM: parameters, the iteration driver, and the
in-memory solver.

The driver :func:`run_admm` owns everything that is the same for the in-memory and the Dask
paths: the ρ schedule, the convergence history and the stopping rule. Each path supplies a
``step(rho, rho_next) -> residual sums`` callable that applies
:func:`bigxanes.kernels.admm.admm_iteration` to its state (one array in memory, a Zarr double
buffer on Dask).

Scaling. λ and ρ act on a stack divided by a data scale ``c`` (the 99th percentile of the LCF
scale s0 over the image), so that foreground pixels have ``s ≈ 1`` and fractions are in [0, 1].
With ``lam="auto"``, ``λ = lam_factor · σ̂ · δ`` where ``σ̂`` is the noise level of the scaled
data estimated from the LCF residual and ``δ`` the contrast between the two closest references
(:func:`resolve_lambda`), so one ``lam_factor`` serves all noise levels and reference sets.

Reference: Wang et al., "Robust retrieval of material chemical states in X-ray
microspectroscopy", Opt. Express 2023, Algorithm 1.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np

from .kernels.admm import RESIDUALS, StateLayout, admm_iteration, initial_state
from .kernels.denoisers import DEFAULT_HALO, DENOISERS
from .kernels.lcf import nnls_coefficients
from .kernels.weights import DEFAULT_KAPPA, edge_weights

METHODS = ("rum-tv", "rum-pnp")
PRIORS = ("tv", "guided-tv")
GUIDED_LAM_FACTOR = 1.0  # chosen on the tuning split of benchmarks/bench_realistic.py


@dataclass
class RumParams:
    """Parameters of a RUM run (all recorded in the output's attrs).

    Attributes
    ----------
    method : {"rum-tv", "rum-pnp"}
    lam : float or "auto"
        Regularization weight λ on the scaled stack; "auto" = ``lam_factor · σ̂ · δ``.
    lam_factor : float, optional
        Prior strength used by ``lam="auto"`` (``λ = lam_factor · σ̂ · δ``, see
        :func:`resolve_lambda`). Default 0.2, 0.1 for RUM-PnP with BM3D/BM4D (chosen with
        benchmarks/param_sensitivity.py on the simulated phantoms), 1.0 for guided TV (its
        weights lower λ at edges; chosen on the tuning split of benchmarks/bench_realistic.py).
    rho : float
        Initial ADMM penalty ρ (scaled stack). The problem is non-convex (X s), so ρ also changes
        the result: ρ >= 1 stops near the LCF start; 0.1-0.3 agree within 0.35 dB (measured).
    gamma : float, optional
        ρ growth per iteration (PnP; ``ρ_{k+1} = γ ρ_k``, capped at ``rho_max``); default 1.05
        for PnP, 1 for RUM-TV.
    prior : {"tv", "guided-tv"}
        RUM-TV spatial prior: plain isotropic TV, or structure-guided TV whose per-pixel
        edge weights come from the LCF scale map (:mod:`bigxanes.kernels.weights`):
        ``U = shrink(∇X + D, λ w / ρ)``.
    guide_kappa : float
        Edge scale κ of the guided-TV weights, in units of the scaled LCF scale map.
    noise_sigma : float, optional
        Known noise standard deviation of the stack (its own units); used by ``lam="auto"``
        instead of the estimate from the LCF residual. Must be positive.
    rho_adapt : bool
        RUM-TV: residual balancing (Boyd et al. 2011, §3.4.1): every 10 iterations, ρ is
        multiplied (divided) by 2 when the primal residual exceeds the dual one tenfold (or the
        reverse), decided from the previous iteration's global residuals, so both paths agree.
    rho_max : float
    max_iter : int, optional
        Default 500 for RUM-TV, 100 for RUM-PnP (its ρ grows by γ per iteration; at 60 the
        primal residual had fallen 75-96x on particles σ = 7, at 100 it falls 840-2700x).
    tol : float
        Stop when the relative primal and dual residuals both fall below ``tol``.
    tv_sweeps : int
        Jacobi sweeps per TV X-step (DESIGN.md §3 step 1).
    denoiser : {"tv", "bm3d", "bm4d"}
        PnP denoiser.
    denoiser_halo : int or None
        Halo for the denoiser on Dask blocks (None: the denoiser's default).
    """

    method: str = "rum-tv"
    lam: float | str = "auto"
    lam_factor: float | None = None
    rho: float = 0.3
    gamma: float | None = None
    rho_max: float = 1e4
    max_iter: int | None = None
    tol: float = 1e-4
    tv_sweeps: int = 10
    denoiser: str = "tv"
    denoiser_halo: int | None = None
    rho_adapt: bool = True
    noise_sigma: float | None = None
    prior: str = "tv"
    guide_kappa: float = DEFAULT_KAPPA

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"unknown method {self.method!r}; choose one of {', '.join(METHODS)}")
        if self.prior not in PRIORS or (self.prior != "tv" and self.method != "rum-tv"):
            raise ValueError(
                f"prior must be one of {', '.join(PRIORS)} ('guided-tv' with method rum-tv), "
                f"got {self.prior!r}"
            )
        fast_pnp = self.method == "rum-pnp" and self.denoiser == "tv"
        if self.lam_factor is None:
            self.lam_factor = 0.1 if (self.method == "rum-pnp" and not fast_pnp) else 0.2
            if self.prior == "guided-tv":
                self.lam_factor = GUIDED_LAM_FACTOR
        if self.gamma is None:
            self.gamma = 1.0 if self.method == "rum-tv" else 1.05
        if self.max_iter is None:
            self.max_iter = 500 if self.method == "rum-tv" else 100
        if self.denoiser not in DENOISERS:
            raise ValueError(
                f"unknown denoiser {self.denoiser!r}; choose one of {', '.join(DENOISERS)}"
            )
        if self.lam != "auto" and not (isinstance(self.lam, int | float) and self.lam >= 0):
            raise ValueError(f"lam must be a non-negative number or 'auto', got {self.lam!r}")
        for name in ("rho", "lam_factor", "rho_max", "tol", "guide_kappa"):
            v = getattr(self, name)
            if not (isinstance(v, int | float) and math.isfinite(v) and v > 0):
                raise ValueError(f"{name} must be a positive number, got {v!r}")
        if self.noise_sigma is not None and not (
            isinstance(self.noise_sigma, int | float)
            and math.isfinite(self.noise_sigma)
            and self.noise_sigma > 0
        ):
            raise ValueError(
                f"noise_sigma must be a positive number (the noise standard deviation), got "
                f"{self.noise_sigma!r}; omit it to estimate the noise from the data"
            )
        if self.gamma < 1:
            raise ValueError(f"gamma must be >= 1 (ρ may only grow), got {self.gamma}")
        if int(self.max_iter) < 0 or int(self.tv_sweeps) < 1:
            raise ValueError("max_iter must be >= 0 and tv_sweeps >= 1")

    @property
    def reg(self) -> str:
        return "tv" if self.method == "rum-tv" else "pnp"

    @property
    def halo(self) -> int:
        return (
            self.tv_sweeps + 2
            if self.reg == "tv"
            else (
                self.denoiser_halo
                if self.denoiser_halo is not None
                else DEFAULT_HALO[self.denoiser]
            )
        )

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class History:
    """Per-iteration convergence record."""

    iteration: list[int] = field(default_factory=list)
    rho: list[float] = field(default_factory=list)
    primal: list[float] = field(default_factory=list)
    dual: list[float] = field(default_factory=list)
    objective: list[float] = field(default_factory=list)
    data_misfit: list[float] = field(default_factory=list)
    r_scale: list[float] = field(default_factory=list)
    r_simplex: list[float] = field(default_factory=list)
    r_positive: list[float] = field(default_factory=list)
    r_reg: list[float] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    rho_next: float = 0.0  # ρ the next iteration will use (for resuming)

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> History:
        return cls(**{k: (list(v) if isinstance(v, list) else v) for k, v in d.items()})


def robust_scale(s0: np.ndarray, quantile: float = 0.99, bins: int = 4096) -> float:
    """Data scale ``c``: the ``quantile`` of the LCF scale map, from a fixed-bin histogram.

    A histogram on ``[0, max s0]`` with ``bins`` bins gives the same number for the whole array
    and for the sum of per-chunk histograms (the Dask path), unlike a sort-based percentile.
    Returns 1.0 for an image without material.
    """
    s0 = np.asarray(s0, dtype=np.float64).ravel()
    smax = float(s0.max(initial=0.0))
    if not smax > 0:
        return 1.0
    hist, edges = np.histogram(s0, bins=bins, range=(0.0, smax))
    return scale_from_histogram(hist, edges)


def scale_from_histogram(hist: np.ndarray, edges: np.ndarray, quantile: float = 0.99) -> float:
    """Upper edge of the histogram bin where the cumulative count reaches ``quantile``."""
    cdf = np.cumsum(hist) / max(hist.sum(), 1)
    i = int(np.searchsorted(cdf, quantile))
    return float(edges[min(i + 1, len(edges) - 1)])


def reference_contrast(A: np.ndarray) -> float:
    """Contrast of the references: the smallest distance ``min_{i<j} ||a_i - a_j||₂``.

    The two closest references are the hardest to tell apart; the fraction noise of a pixel
    with scale 1 is about ``σ / contrast``.
    """
    A = np.asarray(A, dtype=np.float64)
    L = A.shape[1]
    if L < 2:
        return float(np.linalg.norm(A[:, 0]))
    return float(min(np.linalg.norm(A[:, i] - A[:, j]) for i in range(L) for j in range(i + 1, L)))


def resolve_lambda(params: RumParams, noise_var: float, A: np.ndarray, scale: float) -> float:
    """λ on the scaled stack: the given number, or for "auto" ``lam_factor · σ̂ · δ``.

    ``σ̂`` is the noise standard deviation of the scaled stack (``params.noise_sigma / c`` when
    given, else the estimate ``sqrt(noise_var)``) and ``δ`` the references' contrast
    (:func:`reference_contrast`). Reason: a pixel's fraction noise is ``σ_x ≈ σ̂ / (s δ)`` and a
    TV weight proportional to ``σ_x`` on the fractions is ``λ / δ² ∝ σ̂ / δ``, i.e. ``λ ∝ σ̂ δ``
    (measured on the phantoms: the best λ grows like σ, not σ²; benchmarks/param_sensitivity.py).
    """
    if params.lam != "auto":
        return float(params.lam)
    sigma = params.noise_sigma / scale if params.noise_sigma is not None else math.sqrt(noise_var)
    return float(params.lam_factor * sigma * reference_contrast(A))


def next_rho(params: RumParams, k: int, rho: float, history: History) -> float:
    """ρ for iteration k + 1 given ρ of iteration k and the residuals recorded so far.

    PnP: ``min(γ ρ, rho_max)`` (paper Algorithm 1 step 8). TV with ``rho_adapt``: residual
    balancing from the last *completed* iteration (k - 1), at most every 10 iterations.
    """
    if params.reg == "pnp":
        return float(min(rho * params.gamma, max(params.rho_max, rho)))
    if not params.rho_adapt or k < 1 or (k % 10) != 0 or not history.primal:
        return float(rho)
    p, d = history.primal[-1], history.dual[-1]
    if p > 10.0 * d:
        return float(min(rho * 2.0, params.rho_max))
    if d > 10.0 * p:
        return float(max(rho / 2.0, 1e-4))
    return float(rho)


def history_entry(
    history: History,
    k: int,
    rho: float,
    sums: dict[str, float],
    lam: float,
    n_pixels: int,
    n_components: int,
    seconds: float,
) -> tuple[float, float]:
    """Append iteration k's residual norms to ``history``; return (relative primal, dual)."""
    r = {
        name: math.sqrt(max(sums[name], 0.0))
        for name in ("r_scale", "r_simplex", "r_positive", "r_reg")
    }
    primal = math.sqrt(sum(v * v for v in r.values()))
    dual = math.sqrt(max(sums["dual"], 0.0))
    data = 0.5 * max(sums["data"], 0.0)
    history.iteration.append(k + 1)
    history.rho.append(rho)
    history.primal.append(primal)
    history.dual.append(dual)
    history.data_misfit.append(data)
    history.objective.append(data + lam * sums["reg"])
    for name, v in r.items():
        getattr(history, name).append(v)
    history.seconds.append(seconds)
    norm = math.sqrt(n_pixels * n_components)
    return primal / norm, dual / norm


def run_admm(
    step: Callable[[int, float, float], dict[str, float]],
    params: RumParams,
    lam: float,
    n_pixels: int,
    n_components: int,
    *,
    start: int = 0,
    history: History | None = None,
    on_iteration: Callable[[int, History], None] | None = None,
) -> History:
    """Drive ADMM iterations ``start .. max_iter-1``, recording the history.

    ``step(k, rho, rho_next)`` performs iteration k and returns the summed residual channels
    (:data:`bigxanes.kernels.admm.RESIDUALS`). ``on_iteration(k, history)`` runs after each
    completed iteration (checkpoint commit, progress bar). Stops early when the relative primal
    and dual residuals are both below ``params.tol``.
    """
    history = history if history is not None else History()
    rho = history.rho_next if history.iteration else float(params.rho)
    for k in range(start, int(params.max_iter)):
        rho_next = next_rho(params, k, rho, history)
        t0 = time.perf_counter()
        sums = step(k, rho, rho_next)
        rp, rd = history_entry(
            history, k, rho, sums, lam, n_pixels, n_components, time.perf_counter() - t0
        )
        history.rho_next = rho_next
        rho = rho_next
        if on_iteration is not None:
            on_iteration(k, history)
        if rp < params.tol and rd < params.tol:
            break
    return history


@dataclass
class Initialization:
    """What a RUM run derives from the LCF (NNLS) pass before the first iteration."""

    scale: float  # data scale c
    noise_var: float  # σ̂² of the scaled data
    lam: float  # resolved λ
    AtA: np.ndarray  # AᵀA (references are not scaled; the data are)


def noise_variance(
    sum_sq_residual: float, n_pixels: int, n_energies: int, n_components: int, scale: float
) -> float:
    """σ̂² of the scaled data from the NNLS residual: ``Σ|y - A m0|² / (N (T - L) c²)``."""
    dof = max(n_pixels * (n_energies - n_components), 1)
    return float(sum_sq_residual) / dof / (scale * scale)


def unmix_rum_array(
    Y: np.ndarray,
    A: np.ndarray,
    params: RumParams,
    *,
    state_dtype=np.float64,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, History, Initialization]:
    """Robust unmixing of an in-memory stack.

    Parameters
    ----------
    Y : (T, *spatial) ndarray
        Stack (optical density), finite.
    A : (T, L) ndarray
        References on the stack's energies.
    params : RumParams
    state_dtype : dtype
        Precision the state is kept in between iterations (the Dask path stores float32).

    Returns
    -------
    X : (L, *spatial) fractions (non-negative, summing to one), s : (*spatial) scale,
    M : (L, *spatial) coefficients ``X s``, history, init.
    """
    T = Y.shape[0]
    spatial = Y.shape[1:]
    L = A.shape[1]
    guided = params.prior == "guided-tv"
    layout = StateLayout(L, len(spatial), params.reg, weighted=guided)
    Yf = Y.reshape(T, -1).astype(np.float64, copy=False)
    AtA = A.T @ A
    aty = A.T @ Yf
    yty = np.einsum("tn,tn->n", Yf, Yf)
    M0 = nnls_coefficients(AtA, aty)
    resid0 = yty - 2 * np.sum(M0 * aty, 0) + np.sum(M0 * (AtA @ M0), 0)
    c = robust_scale(M0.sum(axis=0))
    nv = noise_variance(float(np.maximum(resid0, 0).sum()), Yf.shape[1], T, L, c)
    lam = resolve_lambda(params, nv, A, c)
    init = Initialization(scale=c, noise_var=nv, lam=lam, AtA=AtA)
    S = initial_state(
        (aty / c).reshape((L,) + spatial),
        (yty / (c * c)).reshape(spatial),
        (M0 / c).reshape((L,) + spatial),
        layout,
        dtype=state_dtype,
        weight=(
            edge_weights(
                (M0.sum(axis=0) / c).reshape(spatial), len(spatial), kappa=params.guide_kappa
            )
            if guided
            else None
        ),
    )
    n = layout.n_channels
    holder = {"S": S}

    def step(k: int, rho: float, rho_next: float) -> dict[str, float]:
        out = admm_iteration(
            holder["S"],
            layout=layout,
            AtA=AtA,
            lam=lam,
            rho=rho,
            rho_next=rho_next,
            tv_sweeps=params.tv_sweeps,
            denoiser=params.denoiser,
        )
        holder["S"] = out[:n].astype(state_dtype, copy=False)
        return {name: float(out[n + i].sum()) for i, name in enumerate(RESIDUALS)}

    history = run_admm(step, params, lam, Yf.shape[1], L)
    X, s, M = final_maps(holder["S"], layout, c)
    return X, s, M, history, init


def final_maps(S: np.ndarray, layout: StateLayout, scale: float):
    """Fractions, scale and coefficients from a state block.

    Fractions are the projected split variable W (non-negative), renormalized to sum to one
    (uniform where W is all zero); the scale is t (non-negative) times the data scale ``c``.
    """
    sl = layout.slices
    W = np.asarray(S[sl["W"]], dtype=np.float64)
    t = np.asarray(S[sl["t"]][0], dtype=np.float64) * scale
    tot = W.sum(axis=0)
    ok = tot > 1e-12
    X = np.where(ok, W / np.where(ok, tot, 1.0), 1.0 / layout.n_components)
    return X, t, X * t
