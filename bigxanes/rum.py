"""Robust unmixing (RUM-TV, RUM-PnP) by ADMM: parameters, the iteration driver, and the
in-memory solver.

The driver :func:`run_admm` owns everything that is the same for the in-memory and the Dask
paths: the ρ schedule, the convergence history and the stopping rules (:func:`stop_reason`:
residuals below ``tol``, or maps stable against their noise, or a stall). Each path supplies a
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

import bisect
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np

from .kernels.admm import BACKENDS, RESIDUALS, StateLayout, admm_step, default_backend
from .kernels.denoisers import DEFAULT_HALO, DENOISERS
from .kernels.guide import DEFAULT_KAPPA
from .kernels.maps import final_maps
from .kernels.moments import gram
from .kernels.pass1 import Pass1Layout, pass1_block, state_from_pass1
from .kernels.stats import (
    auto_lambda,
    noise_variance,
    reference_contrast,
    robust_scale,
    scale_from_histogram,
)

__all__ = [
    "AUTO_NUMBA_PIXELS",
    "METHODS",
    "RumParams",
    "History",
    "Initialization",
    "final_maps",
    "fraction_noise",
    "next_rho",
    "noise_variance",
    "reference_contrast",
    "resolve_lambda",
    "resolve_sure",
    "sure_crop",
    "sure_lam_factor",
    "robust_scale",
    "run_admm",
    "scale_from_histogram",
    "stop_reason",
    "solve_rum",
    "unmix_rum_array",
]

METHODS = ("rum-tv", "rum-pnp")
#: Smallest image (pixels) on which ``backend="auto"`` picks numba. Measured, whole in-memory
#: runs of 30 iterations in fresh processes (benchmarks/results/bench_backend.md, loaded 2-core
#: machine): numba's one-time compile/cache load costs 2-7 s per process; at 64²-256² the
#: whole run was slower or about even (RUM-TV 256²: 12.5 s vs 8.3 s), at 512² numba took
#: 0.60x (RUM-TV) and 0.78x (RUM-PnP) of NumPy's time.
AUTO_NUMBA_PIXELS = 1 << 18
PRIORS = ("tv", "guided-tv")
GUIDED_LAM_FACTOR = 1.0  # chosen on the tuning split of benchmarks/bench_realistic.py
#: RUM-TV's default ``lam_factor``: chosen on the tuning split of benchmarks/bench_realistic.py
#: (stacks from real Ni/Mn/Fe spectra, seed 1: 0.1 of {0.05, 0.1, 0.2}), checked on its test
#: split (31 cases: +1.17 dB mean over 0.2), bench_lam_sure (best or within 0.05 dB of the best
#: on 7 of 9 cases) and bench_weights (Poisson counts). On the parametric phantoms of
#: benchmarks/param_sensitivity.py 0.2 was best by 0.35-0.8 dB (particles σ 3-7).
TV_LAM_FACTOR = 0.1
LAM_RULES = ("auto", "sure")
#: lam_factor candidates of ``lam="sure"`` (:func:`sure_lam_factor`)
SURE_GRID = (0.05, 0.1, 0.2, 0.5, 1.0, 2.0)
#: spatial size of the central subsample SURE is computed on (per axis; z: SURE_CROP_Z)
SURE_CROP, SURE_CROP_Z = 48, 12
#: RUM-TV over-relaxation α and map-stability tolerance (RumParams.relax, .change_tol), chosen
#: with benchmarks/bench_convergence.py on its tuning set (128², σ = 7, seed 0; α = 1.5-1.9,
#: change_tol 5e-4-2e-3 measured): benchmarks/results/convergence_conv_after*.md
TV_RELAX, TV_CHANGE_TOL = 1.8, 1e-3
#: "stable" stop: iterations the map change must stay below ``change_tol σ_x`` ...
STABLE_WINDOW = 5
#: ... while the relative primal residual is below ``STABLE_PRIMAL σ_x`` (constraints met to
#: 2 % of the fraction noise; the limit cycle of issue 13 had 0.13, i.e. 2.4 σ_x)
STABLE_PRIMAL = 0.02


@dataclass
class RumParams:
    """Parameters of a RUM run (all recorded in the output's attrs).

    Attributes
    ----------
    method : {"rum-tv", "rum-pnp"}
    lam : float, "auto" or "sure"
        Regularization weight λ on the scaled stack; "auto" = ``lam_factor · σ̂ · δ``;
        "sure" (RUM-TV): ``lam_factor`` chosen from :data:`SURE_GRID` by Monte-Carlo SURE on
        a central subsample (:func:`sure_lam_factor`), then "auto" with it.
    lam_factor : float, optional
        Prior strength used by ``lam="auto"`` (``λ = lam_factor · σ̂ · δ``, see
        :func:`resolve_lambda`). Default: RUM-TV 0.1 (:data:`TV_LAM_FACTOR`, chosen on stacks
        simulated from real spectra), RUM-PnP(tv) 0.2 and RUM-PnP with BM3D/BM4D 0.1 (chosen
        with benchmarks/param_sensitivity.py on the simulated phantoms), 1.0 for guided TV
        (its weights lower λ at edges; chosen on the tuning split of
        benchmarks/bench_realistic.py).
    rho : float
        Initial ADMM penalty ρ (scaled stack). The problem is non-convex (X s), so ρ also changes
        the result: ρ >= 1 stops near the LCF start; 0.1-0.3 agree within 0.35 dB (measured).
    gamma : float, optional
        ρ growth per iteration (PnP; ``ρ_{k+1} = γ ρ_k``, capped at ``rho_max``); default 1.05
        for PnP, 1 for RUM-TV.
    prior : {"tv", "guided-tv"}
        RUM-TV spatial prior: plain isotropic TV, or structure-guided TV whose per-pixel
        edge weights come from the LCF scale map (:mod:`bigxanes.kernels.guide`):
        ``U = shrink(∇X + D, λ w / ρ)``.
    guide_kappa : float
        Edge scale κ of the guided-TV weights, in units of the scaled LCF scale map.
    noise_sigma : float, optional
        Known noise standard deviation of the stack (its own units); used by ``lam="auto"``
        instead of the estimate from the LCF residual. Must be positive.
    relax : float, optional
        ADMM over-relaxation α in (0, 2) (Boyd et al. 2011, §3.4.3; docs/design.md, "ADMM")
        of the linear constraints ``∇X = U`` (PnP ``X = U``) and ``X = W``: the U- and W-steps
        and the D, E updates see ``α·(x side) + (1 - α)·(previous U or W)``
        (:func:`~bigxanes.kernels.admm.admm_iteration`). Default 1.8 for RUM-TV
        (:data:`TV_RELAX`: on the phantoms of benchmarks/bench_convergence.py within 0.1 dB of
        the trajectory's best PSNR in 18-25 iterations instead of 25-42), 1 (plain ADMM) for
        RUM-PnP.
    change_tol : float, optional
        Stop when the maps are stable (:func:`stop_reason`, ``"stable"``): the RMS change per
        iteration of the coefficient maps ``M = X s``, ``sqrt(Σ|M_k - M_{k-1}|² / (N L))``, stays
        below ``change_tol · σ_x`` for :data:`STABLE_WINDOW` iterations while the relative
        primal residual is below ``STABLE_PRIMAL · σ_x``; ``σ_x = σ̂ / δ`` is the fraction
        noise of a pixel with scale 1 (:func:`fraction_noise`). At that rate 100 more
        iterations move the maps by at most 0.1 σ_x, while the non-convex ADMM keeps drifting
        slowly away from its best PSNR (issue 15: 0.2-0.9 dB over 100-250 iterations). Default
        1e-3 for RUM-TV (:data:`TV_CHANGE_TOL`), 0 (off) for RUM-PnP.
    rho_adapt : bool
        RUM-TV: residual balancing (Boyd et al. 2011, §3.4.1) with a stall guard: every 10
        iterations, ρ is multiplied (divided) by 2 when the primal residual exceeds the dual one
        tenfold (or the reverse), and doubled when the primal residual fell less than 2x over
        the last 10 iterations (see :func:`next_rho`); decided from the previous iteration's
        global residuals, so both paths agree.
    rho_max : float
    max_iter : int, optional
        Default 500 for RUM-TV, 100 for RUM-PnP (its ρ grows by γ per iteration; at 60 the
        primal residual had fallen 75-96x on particles σ = 7, at 100 it falls 840-2700x).
    tol : float
        Stop when the relative primal and dual residuals both fall below ``tol`` (or, with
        ``change_tol``, when the maps are stable).
    tv_sweeps : int
        Jacobi sweeps per TV X-step (docs/design.md, "ADMM", step 1).
    denoiser : {"tv", "bm3d", "bm4d"}
        PnP denoiser.
    denoiser_halo : int or None
        Halo for the denoiser on Dask blocks (None: the denoiser's default).
    backend : {"auto", "numpy", "numba"}
        Kernel of the iteration, in both executors: ``"numpy"`` the float64 NumPy reference
        :func:`bigxanes.kernels.admm.admm_iteration`, ``"numba"`` the fused float32 kernel
        :func:`bigxanes.kernels.fused.admm_iteration_fused` (the in-memory state is then
        float32, as the engine's), ``"auto"`` numba when it imports and the image has at
        least :data:`AUTO_NUMBA_PIXELS` pixels (:meth:`kernel_backend`).
    residual_every : int
        Compute the residual diagnostics (history, stopping rule) every k-th iteration, at
        the iterations the ρ rule reads (every 10th for RUM-TV with ``rho_adapt``) and at the
        last one (:func:`wants_residuals`); 1 = every iteration.
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
    backend: str = "auto"
    residual_every: int = 1
    relax: float | None = None
    change_tol: float | None = None

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
            if self.method == "rum-tv":
                self.lam_factor = TV_LAM_FACTOR
            else:
                self.lam_factor = 0.2 if fast_pnp else 0.1
            if self.prior == "guided-tv":
                self.lam_factor = GUIDED_LAM_FACTOR
        if self.gamma is None:
            self.gamma = 1.0 if self.method == "rum-tv" else 1.05
        if self.max_iter is None:
            self.max_iter = 500 if self.method == "rum-tv" else 100
        if self.relax is None:
            self.relax = TV_RELAX if self.method == "rum-tv" else 1.0
        if self.change_tol is None:
            self.change_tol = TV_CHANGE_TOL if self.method == "rum-tv" else 0.0
        if not (isinstance(self.relax, int | float) and 0.0 < self.relax < 2.0):
            raise ValueError(f"relax must be in (0, 2) (1 = plain ADMM), got {self.relax!r}")
        if not (
            isinstance(self.change_tol, int | float)
            and math.isfinite(self.change_tol)
            and self.change_tol >= 0
        ):
            raise ValueError(f"change_tol must be a number >= 0 (0: off), got {self.change_tol!r}")
        if self.denoiser not in DENOISERS:
            raise ValueError(
                f"unknown denoiser {self.denoiser!r}; choose one of {', '.join(DENOISERS)}"
            )
        if self.lam not in LAM_RULES and not (isinstance(self.lam, int | float) and self.lam >= 0):
            raise ValueError(
                f"lam must be a non-negative number, 'auto' or 'sure', got {self.lam!r}"
            )
        if self.lam == "sure" and self.method != "rum-tv":
            raise ValueError("lam='sure' is implemented for method rum-tv only")
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
        if self.backend not in ("auto",) + BACKENDS:
            raise ValueError(
                f"unknown backend {self.backend!r}; choose one of auto, {', '.join(BACKENDS)}"
            )
        if self.backend == "numba" and default_backend() != "numba":
            raise ValueError("backend 'numba' needs the numba package; use backend 'numpy'")
        if not (isinstance(self.residual_every, int) and self.residual_every >= 1):
            raise ValueError(f"residual_every must be an integer >= 1, got {self.residual_every!r}")

    @property
    def reg(self) -> str:
        return "tv" if self.method == "rum-tv" else "pnp"

    def kernel_backend(self, n_pixels: int, data_weights: bool = False) -> str:
        """The backend the iterations on an image of ``n_pixels`` run on: ``backend``, with
        "auto" resolved to numba when it imports and ``n_pixels >= AUTO_NUMBA_PIXELS``; a
        weighted data term (``data_weights``) runs on NumPy (the fused kernel has none)."""
        if data_weights:
            if self.backend == "numba":
                raise ValueError(
                    "backend 'numba' has no weighted data term: use backend 'numpy' or 'auto' "
                    "with --weights"
                )
            return "numpy"
        if self.backend != "auto":
            return self.backend
        return default_backend() if int(n_pixels) >= AUTO_NUMBA_PIXELS else "numpy"

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

    def state_layout(self, n_components: int, ndim: int, data_weights: bool = False) -> StateLayout:
        """Channel layout of this run's ADMM state (with the guided-TV weight channel ``w``
        when ``prior == "guided-tv"``, the weighted normal equations with ``data_weights``);
        the one place both executors build it."""
        return StateLayout(
            n_components,
            ndim,
            self.reg,
            weighted=self.prior == "guided-tv",
            data_weights=bool(data_weights),
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
    # verdict, set by run_admm at the iteration it stops at (before on_iteration)
    converged: bool = False
    stop_reason: str = ""  # "tolerance", "stable", "max_iter" or "stalled"
    rel_primal: float | None = None  # final relative primal residual (compare with tol)
    rel_dual: float | None = None  # final relative dual residual
    tol: float | None = None  # (None until set: JSON-safe, no NaN in Zarr attrs)
    rel_change: float | None = None  # final RMS change of M per iteration, in units of σ_x

    @property
    def n_iterations(self) -> int:
        """Iterations completed (the last recorded one: the driver records the last)."""
        return int(self.iteration[-1]) if self.iteration else 0

    def verdict(self) -> str:
        """One line: converged or not, why it stopped, final residuals against the tolerance."""
        state = "converged" if self.converged else "NOT converged"
        if self.rel_primal is None or self.rel_dual is None or self.tol is None:
            return f"{state} after {self.n_iterations} iterations ({self.stop_reason or '-'})"
        change = (
            f"; maps change {self.rel_change:.3g} σ_x per iteration"
            if self.rel_change is not None
            else ""
        )
        return (
            f"{state} after {self.n_iterations} iterations ({self.stop_reason}): relative "
            f"primal {self.rel_primal:.3g}, dual {self.rel_dual:.3g}, tol {self.tol:.3g}{change}"
        )

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> History:
        known = set(cls.__dataclass_fields__)
        return cls(
            **{k: (list(v) if isinstance(v, list) else v) for k, v in d.items() if k in known}
        )


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
    return auto_lambda(params.lam_factor, _scaled_sigma(params, noise_var, scale), A)


def _scaled_sigma(params: RumParams, noise_var: float, scale: float) -> float:
    """σ̂ of the scaled stack: ``params.noise_sigma / c`` when given, else ``sqrt(noise_var)``."""
    if params.noise_sigma is not None:
        return params.noise_sigma / scale
    return math.sqrt(max(noise_var, 0.0))


def fraction_noise(params: RumParams, noise_var: float, A: np.ndarray, scale: float) -> float:
    """``σ_x = σ̂ / δ``: the fraction noise of a pixel with scale ``s = 1`` (scaled stack).

    ``σ̂`` as in :func:`resolve_lambda`, ``δ`` the references' contrast
    (:func:`reference_contrast`); the unit of the ``"stable"`` stopping rule
    (:func:`stop_reason`). 0 when the references have no contrast (the rule is then off).
    """
    delta = reference_contrast(A)
    return _scaled_sigma(params, noise_var, scale) / delta if delta > 0 else 0.0


def next_rho(params: RumParams, k: int, rho: float, history: History) -> float:
    """ρ for iteration k + 1 given ρ of iteration k and the residuals recorded so far.

    PnP: ``min(γ ρ, rho_max)`` (paper Algorithm 1 step 8). TV with ``rho_adapt``: every 10
    iterations, from the last *completed* iteration (k - 1): ρ doubles when the primal residual
    exceeds the dual one tenfold (residual balancing, Boyd et al. 2011 §3.4.1) or when it has
    stalled (fallen less than 2x over the last 10 iterations while ``primal >= dual``); ρ halves
    when the dual residual exceeds the primal one tenfold.
    """
    if params.reg == "pnp":
        return float(min(rho * params.gamma, max(params.rho_max, rho)))
    if not params.rho_adapt or k < 1 or (k % 10) != 0 or not history.primal:
        return float(rho)
    if history.iteration and history.iteration[-1] != k:
        return float(rho)  # iteration k - 1 has no residuals (see wants_residuals)
    p, d = history.primal[-1], history.dual[-1]
    # stall guard (non-convex X s coupling: ADMM needs ρ large enough, which is not known in
    # advance): the primal residual fell less than 2x over the last 10 iterations while it
    # dominates the dual one -> double ρ (issue 13: 500 iterations stuck in a limit cycle).
    p10 = primal_before(history, 10)
    stalled = p10 is not None and p > 0.5 * p10 and p >= d
    if p > 10.0 * d or stalled:
        return float(min(rho * 2.0, params.rho_max))
    if d > 10.0 * p:
        return float(max(rho / 2.0, 1e-4))
    return float(rho)


def primal_before(history: History, n: int) -> float | None:
    """The primal residual ``n`` iterations before the last entry of ``history`` (the latest
    entry at or before that iteration when residuals are computed every few iterations);
    None when there is none. A history without iteration numbers is read by position."""
    if not history.iteration:
        return history.primal[-1 - n] if len(history.primal) > n else None
    i = bisect.bisect_right(history.iteration, history.iteration[-1] - n) - 1
    return history.primal[i] if i >= 0 else None


def wants_residuals(params: RumParams, k: int) -> bool:
    """Whether iteration k (0-based) computes the residual diagnostics: every
    ``residual_every`` iterations, the last iteration, and (RUM-TV with ``rho_adapt``) the
    iterations whose residuals :func:`next_rho` reads (every 10th)."""
    done = k + 1
    return (
        done % int(params.residual_every) == 0
        or done >= int(params.max_iter)
        or (params.reg == "tv" and params.rho_adapt and done % 10 == 0)
    )


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
    step: Callable[[int, float, float, bool], dict[str, float] | None],
    params: RumParams,
    lam: float,
    n_pixels: int,
    n_components: int,
    *,
    start: int = 0,
    history: History | None = None,
    on_iteration: Callable[[int, History], None] | None = None,
    fraction_noise: float = 0.0,
) -> History:
    """Drive ADMM iterations ``start .. max_iter-1``, recording the history.

    ``step(k, rho, rho_next, residuals)`` performs iteration k and, when ``residuals``
    (:func:`wants_residuals`), returns the summed residual channels
    (:data:`bigxanes.kernels.admm.RESIDUALS`; else None). Only those iterations get a history
    entry (its ``seconds`` is the mean per iteration since the previous entry) and a stopping
    test (:func:`stop_reason`; ``fraction_noise`` is σ_x of the ``"stable"`` rule, 0: off).
    At the iteration it stops at, the verdict is set in ``history`` (``converged``,
    ``stop_reason``, ...) *before* ``on_iteration(k, history)`` runs, so a checkpoint commit
    records it; ``on_iteration`` runs after each completed iteration (checkpoint commit,
    progress bar).
    """
    history = history if history is not None else History()
    history.converged, history.stop_reason = False, ""  # a resume is not stopped yet
    # a resume continues with the ρ recorded after the last completed iteration
    rho = history.rho_next if start > 0 and history.rho_next > 0 else float(params.rho)
    norm = math.sqrt(n_pixels * n_components)
    reason = None
    t_acc, n_acc = 0.0, 0
    for k in range(start, int(params.max_iter)):
        rho_next = next_rho(params, k, rho, history)
        want = wants_residuals(params, k)
        t0 = time.perf_counter()
        sums = step(k, rho, rho_next, want)
        t_acc, n_acc = t_acc + time.perf_counter() - t0, n_acc + 1
        if want:
            assert sums is not None
            history_entry(history, k, rho, sums, lam, n_pixels, n_components, t_acc / n_acc)
            t_acc, n_acc = 0.0, 0
        history.rho_next = rho_next
        rho = rho_next
        if want:
            reason = stop_reason(history, params, norm, fraction_noise)
        if reason is None and k + 1 >= int(params.max_iter):
            reason = "max_iter"
        if reason is not None:
            set_verdict(history, params.tol, norm, reason, fraction_noise)
        if on_iteration is not None:
            on_iteration(k, history)
        if reason is not None:
            break
    if reason is None:  # no iteration left to run (start >= max_iter)
        set_verdict(history, params.tol, norm, "max_iter", fraction_noise)
    return history


def stop_reason(
    history: History, params: RumParams, norm: float, fraction_noise: float = 0.0
) -> str | None:
    """Why to stop after the last entry of ``history``, or None to go on.

    ``"tolerance"``: relative primal and dual residuals (``|r| / sqrt(N L)``) below
    ``params.tol``. ``"stable"`` (``params.change_tol > 0`` and ``fraction_noise`` σ_x > 0): the
    RMS change per iteration of the coefficient maps, ``|M_k - M_{k-1}| / sqrt(N L)`` (the
    dual residual divided by its ρ: no extra reduction), below ``change_tol · σ_x`` at every
    entry of the last :data:`STABLE_WINDOW` iterations, and the relative primal residual below
    ``STABLE_PRIMAL · σ_x``. ``"stalled"``: ρ at ``rho_max`` and the primal residual fell less
    than 2x in 50 iterations (:func:`stalled`).
    """
    if not history.primal:
        return None
    rp, rd = history.primal[-1] / norm, history.dual[-1] / norm
    if rp < params.tol and rd < params.tol:
        return "tolerance"
    sx = float(fraction_noise)
    if params.change_tol > 0 and sx > 0 and rp < STABLE_PRIMAL * sx:
        last = history.iteration[-1]
        window = [
            i
            for i in range(len(history.iteration) - 1, -1, -1)
            if history.iteration[i] > last - STABLE_WINDOW
        ]
        if last >= STABLE_WINDOW and all(
            map_change(history, i, norm) < params.change_tol * sx for i in window
        ):
            return "stable"
    if history.rho_next >= params.rho_max and stalled(history, norm, params.tol):
        return "stalled"
    return None


def map_change(history: History, i: int, norm: float) -> float:
    """RMS change of the coefficient maps M at history entry ``i``: the dual residual
    ``ρ |M_k - M_{k-1}|`` divided by its ρ and by ``norm = sqrt(N L)``."""
    return history.dual[i] / (history.rho[i] * norm) if history.rho[i] > 0 else math.inf


def stalled(history: History, norm: float, tol: float, window: int = 50) -> bool:
    """True when ρ is at its cap and the primal residual fell less than 2x in ``window`` its."""
    before = primal_before(history, window)
    p = history.primal
    return before is not None and p[-1] / norm >= tol and p[-1] > 0.5 * before


def set_verdict(
    history: History, tol: float, norm: float, reason: str, fraction_noise: float = 0.0
) -> None:
    """Record the run's verdict in ``history`` (``converged``, ``stop_reason``, residuals, the
    last map change in units of ``fraction_noise`` σ_x when it is > 0). Converged: residuals
    below ``tol`` (reason ``"tolerance"`` whatever the caller's) or maps ``"stable"``."""
    if history.primal:
        history.rel_primal = history.primal[-1] / norm
        history.rel_dual = history.dual[-1] / norm
        if fraction_noise > 0:
            history.rel_change = map_change(history, len(history.primal) - 1, norm) / float(
                fraction_noise
            )
    history.tol = float(tol)
    tolerance = bool(
        history.rel_primal is not None and history.rel_primal < tol and history.rel_dual < tol
    )
    if tolerance:
        reason = "tolerance"
    history.converged = tolerance or reason == "stable"
    history.stop_reason = reason


@dataclass
class Initialization:
    """What a RUM run derives from the LCF (NNLS) pass before the first iteration."""

    scale: float  # data scale c
    noise_var: float  # σ̂² of the scaled data
    lam: float  # resolved λ
    AtA: np.ndarray  # AᵀA (references are not scaled; the data are)
    backend: str = "numpy"  # the iteration backend the run used


def solve_rum(
    P: np.ndarray,
    p1: Pass1Layout,
    A: np.ndarray,
    params: RumParams,
    stats: dict,
    *,
    state_dtype=np.float64,
) -> tuple[np.ndarray, History, Initialization]:
    """RUM on one block holding the whole image: the in-memory executor of the iterations.

    Starts from the pass-1 channels ``P`` (:func:`~bigxanes.kernels.pass1.pass1_block`) with
    their statistics ``stats`` (:func:`~bigxanes.kernels.pass1.pass1_statistics`: data scale
    ``scale``, the residual sum ``resid_sum`` of the λ rule, the mean weight ``wmean``; the
    engine derives them from the same channels block by block), resolves λ, builds the
    initial state
    (:func:`~bigxanes.kernels.pass1.state_from_pass1`) and drives
    :func:`~bigxanes.kernels.admm.admm_step` on ``params.kernel_backend(N)``
    with :func:`run_admm`.

    Returns
    -------
    S : final state (n_channels, *spatial), history, init.
    """
    T, L = A.shape
    spatial = P.shape[1:]
    N = int(np.prod(spatial))
    scale = float(stats["scale"])
    layout = params.state_layout(L, len(spatial), p1.weighted)
    AtA = gram(A)
    nv = noise_variance(stats["resid_sum"], N, T, L, scale)
    lam = resolve_lambda(params, nv, A, scale)
    sigma_x = fraction_noise(params, nv, A, scale)
    init = Initialization(scale=scale, noise_var=nv, lam=lam, AtA=AtA)
    n = layout.n_channels
    backend = params.kernel_backend(N, p1.weighted)
    if backend == "numba":
        state_dtype = np.float32  # the fused kernel's state, as the engine's
    state = [
        state_from_pass1(
            P,
            p1=p1,
            layout=layout,
            scale=scale,
            dtype=state_dtype,
            kappa=params.guide_kappa,
            wmean=stats.get("wmean", 1.0),
        )
    ]

    def step(k: int, rho: float, rho_next: float, residuals: bool) -> dict[str, float] | None:
        out = admm_step(
            state[0],
            backend=backend,
            residuals=residuals,
            layout=layout,
            AtA=AtA,
            lam=lam,
            rho=rho,
            rho_next=rho_next,
            tv_sweeps=params.tv_sweeps,
            denoiser=params.denoiser,
            relax=params.relax,
        )
        state[0] = out[:n].astype(state_dtype, copy=False)
        if not residuals:
            return None
        sums = out[n:].reshape(len(RESIDUALS), -1).sum(axis=1, dtype=np.float64)
        return {name: float(v) for name, v in zip(RESIDUALS, sums, strict=True)}

    history = run_admm(step, params, lam, N, L, fraction_noise=sigma_x)
    init.backend = backend
    return state[0], history, init


def unmix_rum_array(
    Y: np.ndarray,
    A: np.ndarray,
    params: RumParams,
    *,
    state_dtype=np.float64,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, History, Initialization]:
    """Robust unmixing of an in-memory stack (finite, baseline already removed).

    Pass 1 on the whole stack as one block, the data scale from its channels, then
    :func:`solve_rum` and :func:`~bigxanes.kernels.maps.final_maps`.

    Parameters
    ----------
    Y : (T, *spatial) ndarray
        Stack (optical density), finite.
    A : (T, L) ndarray
        References on the stack's energies.
    params : RumParams
    state_dtype : dtype
        Precision the state is kept in between iterations with the NumPy backend (the engine
        stores float32); the numba backend keeps it in float32.

    Returns
    -------
    X : (L, *spatial) fractions (non-negative, summing to one), s : (*spatial) scale,
    M : (L, *spatial) coefficients ``X s``, history, init.
    """
    from .kernels.pass1 import pass1_statistics

    p1 = Pass1Layout(A.shape[1])
    P = pass1_block(Y, layout=p1, A=A, energy=np.arange(Y.shape[0], dtype=np.float64))
    stats = pass1_statistics(P, p1, Y.shape[0])
    S, history, init = solve_rum(P, p1, A, params, stats, state_dtype=state_dtype)
    X, s, M = final_maps(S, params.state_layout(A.shape[1], Y.ndim - 1), init.scale)
    return X, s, M, history, init


def sure_crop(spatial: tuple[int, ...]) -> tuple[slice, ...]:
    """The central subsample of ``lam="sure"``: at most :data:`SURE_CROP` pixels per axis
    (:data:`SURE_CROP_Z` along z of a volume), the same in both executors."""
    out = []
    for i, n in enumerate(spatial):
        k = min(int(n), SURE_CROP_Z if (len(spatial) == 3 and i == 0) else SURE_CROP)
        a = (int(n) - k) // 2
        out.append(slice(a, a + k))
    return tuple(out)


def sure_lam_factor(
    Y: np.ndarray,
    A: np.ndarray,
    params: RumParams,
    *,
    baseline: np.ndarray | None = None,
    grid: tuple[float, ...] = SURE_GRID,
    seed: int = 0,
) -> tuple[float, list[dict[str, float]]]:
    """``lam_factor`` minimizing Monte-Carlo SURE of the fitted data on a (sub)stack.

    Stein's unbiased risk estimate of the fit ``f(y) = A M(y)`` (Ramani, Blu & Unser, IEEE TIP
    2008, Monte-Carlo divergence; works with any solver)::

        SURE(λ) = |y - f(y)|² - n σ² + 2 σ² div f,   div f ≈ bᵀ (f(y + ε b) - f(y)) / ε

    with ``n = T·N`` values, ``b ~ N(0, I)`` (fixed seed), ``ε = 0.1 σ`` and ``σ²`` the noise
    variance estimated from the NNLS residual (:func:`~bigxanes.kernels.stats.noise_variance`).
    For each ``lam_factor`` of ``grid`` RUM-TV runs with ``lam="auto"``; the perturbed run keeps
    that run's λ and data scale (a perturbed stack would get another "auto" λ). SURE estimates
    the risk of the fitted spectra, a proxy for the fractions' error.

    Parameters
    ----------
    Y : (T, *spatial) ndarray
        The subsample (:func:`sure_crop`) of the stack on the fitted energies, as stored.
    A : (T, L) ndarray
        References as fitted (baseline removed when ``baseline`` is given).
    params : RumParams
        The run's parameters (``lam`` is replaced).
    baseline : bool ndarray, optional
        Pre-edge energies: each spectrum's mean over them is subtracted first (as in pass 1).

    Returns
    -------
    lam_factor, table (one dict per candidate: lam_factor, lam, sure per value, divergence
    per value).
    """
    from dataclasses import replace

    from .kernels.baseline import subtract_pre_edge
    from .kernels.moments import clean_block
    from .kernels.pass1 import pass1_statistics

    Y = np.asarray(Y, dtype=np.float64)
    if baseline is not None:
        with np.errstate(invalid="ignore"):
            Y = subtract_pre_edge(Y, baseline)
    Y, _ = clean_block(Y, "mask")
    Y = np.asarray(Y, dtype=np.float64)
    T, L = A.shape
    n = Y.size
    p1 = Pass1Layout(L)
    energy = np.arange(T, dtype=np.float64)
    b = np.random.default_rng(seed).standard_normal(Y.shape)

    def fit(Yk: np.ndarray, p: RumParams, scale: float | None):
        P = pass1_block(Yk, layout=p1, A=A, energy=energy)
        st = pass1_statistics(P, p1, T)
        c = st["scale"] if scale is None else scale
        S, _, init = solve_rum(P, p1, A, p, {**st, "scale": c})
        _, _, M = final_maps(S, p.state_layout(L, Yk.ndim - 1), c)
        return A @ M.reshape(L, -1), init

    table = []
    for lf in grid:
        p = replace(params, lam="auto", lam_factor=float(lf))
        F, init = fit(Y, p, None)
        sigma2 = init.noise_var * init.scale**2  # stack units
        eps = 0.1 * math.sqrt(max(sigma2, 1e-30))
        Fp, _ = fit(Y + eps * b, replace(p, lam=init.lam), init.scale)
        div = float(np.sum(b.reshape(T, -1) * (Fp - F)) / eps)
        r = Y.reshape(T, -1) - F
        sure = float(np.sum(r * r) - n * sigma2 + 2.0 * sigma2 * div)
        table.append({"lam_factor": float(lf), "lam": init.lam, "sure": sure / n, "div": div / n})
    best = min(table, key=lambda t: t["sure"])
    return best["lam_factor"], table


def resolve_sure(Y_crop: np.ndarray, inputs, params: RumParams, extra: dict) -> RumParams:
    """``lam="sure"``: the parameters with the SURE-chosen ``lam_factor`` and ``lam="auto"``;
    records ``lam_rule`` and the SURE table in ``extra`` (the result's attrs). Both executors
    call it on the same central subsample (:func:`sure_crop`) of the stack."""
    from dataclasses import replace

    lf, table = sure_lam_factor(Y_crop, inputs.A, params, baseline=inputs.window, grid=SURE_GRID)
    extra.update(lam_rule="sure", lam_sure=table)
    return replace(params, lam="auto", lam_factor=lf)
