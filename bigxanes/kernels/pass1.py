"""Pass 1: the one read of the stack, per block (docs/design.md, "Pass 1").

Everything that needs the spectra ``Y`` is computed here, into one stacked array whose channels
are named by :class:`Pass1Layout`: ``AᵀY``, ``yᵀy``, the NNLS start ``M0`` and its squared
residual, the bad-spectrum map, optionally another LCF variant and Edge-50. The in-memory API
calls :func:`pass1_block` once on the whole stack; the engine maps it over tiles.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .admm import BACKENDS, StateLayout, default_backend, initial_state
from .baseline import subtract_pre_edge
from .edge50 import edge50_energy
from .guide import DEFAULT_KAPPA, edge_weights
from .layout import ChannelLayout
from .lcf import lstsq_coefficients, nnls_coefficients, sum_to_one_coefficients
from .moments import block_moments, clean_block, gram, nonfinite_error, residual_sq
from .normalize import normalize_spectra
from .quality import noise_sigma_d2
from .stats import HIST_BINS, data_scale, scale_histogram
from .weights import (
    WeightModel,
    pack_symmetric,
    prepared_block,
    weighted_data_misfit,
    weighted_fit_block,
)
from .whiteline import white_line

#: LCF solvers by variant name (``variant`` of ``bx.lcf``, ``lcf_variant`` of the engine).
LCF_SOLVERS = {
    "nnls": nnls_coefficients,
    "lstsq": lstsq_coefficients,
    "sum-to-one": sum_to_one_coefficients,
}


@dataclass(frozen=True)
class Pass1Layout(ChannelLayout):
    """Channels of the single pass over the stack (everything that needs ``Y``).

    ``aty`` (L), ``yty`` (1), ``M0`` (L, NNLS coefficients), ``resid0`` (1, ``|y - A M0|²``),
    ``bad`` (1, 1 where the spectrum had NaN/Inf), ``sigma`` (1, the spectrum's noise std from
    its second differences, :func:`~bigxanes.kernels.quality.noise_sigma_d2`; NaN where unknown),
    optional ``lcf`` (L) + ``lcf_resid`` (1) for a non-NNLS LCF variant, optional ``edge50``
    (1, eV) + ``edge_step`` (1) +
    ``wl_energy`` (1, eV) + ``wl_height`` (1, edge-step units): the white line.

    ``weighted`` (a weighted data term, :mod:`bigxanes.kernels.weights`): ``M0`` is the
    weighted NNLS fit and ``resid0`` its *unweighted* ``|y - A M0|²`` (the quality maps keep
    their meaning); the weighted normal equations follow: ``wb`` (L, ``AᵀWy``), ``wc``
    (1, ``yᵀWy``), ``G`` (L(L+1)/2, ``AᵀWA`` packed by
    :func:`~bigxanes.kernels.weights.pack_symmetric`), ``vsum`` (1, ``Σ_t 1 / w_t``, the
    summed variances) and ``wresid0`` (1, the weighted misfit ``Σ_t w_t r_t²``).
    """

    n_components: int
    variant: str = "nnls"
    edge50: bool = False
    weighted: bool = False

    @property
    def sizes(self) -> dict[str, int]:
        L = self.n_components
        out = {"aty": L, "yty": 1, "M0": L, "resid0": 1, "bad": 1, "sigma": 1}
        if self.variant != "nnls":
            out.update(lcf=L, lcf_resid=1)
        if self.edge50:
            out.update(edge50=1, edge_step=1, wl_energy=1, wl_height=1)
        if self.weighted:
            out.update(wb=L, wc=1, G=L * (L + 1) // 2, vsum=1, wresid0=1)
        return out

    def lcf_slices(self) -> tuple[slice, slice]:
        """(coefficients, residual) channels of the requested LCF variant."""
        sl = self.slices
        if self.variant == "nnls":
            return sl["M0"], sl["resid0"]
        return sl["lcf"], sl["lcf_resid"]


def pass1_block(
    Y: np.ndarray,
    *,
    layout: Pass1Layout,
    A: np.ndarray | None,
    energy: np.ndarray,
    e0: float | None = None,
    nan_policy: str = "mask",
    baseline: np.ndarray | None = None,
    level: float = 0.5,
    norm_kwargs: dict | None = None,
    backend: str | None = None,
    weights: WeightModel | None = None,
) -> np.ndarray:
    """The one pass over a stack block ``(T, *spatial)``: see :class:`Pass1Layout`.

    ``AᵀY`` and ``yᵀy`` in float64 (:func:`~bigxanes.kernels.moments.block_moments`), exact
    batched NNLS, residuals by :func:`~bigxanes.kernels.moments.residual_sq`. ``baseline``:
    boolean mask of the pre-edge energies; each spectrum's mean over them is subtracted first
    (in the stack's dtype); ``A`` must already be corrected alike. Edge-50 (``layout.edge50``):
    each finite spectrum is edge-step normalized with the given ``e0`` and ``norm_kwargs``
    (:func:`~bigxanes.kernels.normalize.normalize_spectra`) and the first ``level`` crossing
    found (:func:`~bigxanes.kernels.edge50.edge50_energy`), and the white line (peak energy
    and height of the normalized spectrum above ``e0``, local quadratic fit:
    :func:`~bigxanes.kernels.whiteline.white_line`).

    ``backend``: ``"numba"`` computes the moments, NNLS and residual in one compiled read of
    the block (:func:`~bigxanes.kernels.fused_lcf.lcf_pass1_fused`, float32/float64 stacks
    read in place), ``"numpy"`` with the reference kernels above; None:
    :func:`~bigxanes.kernels.admm.default_backend`. Edge-50 and other stack dtypes always use
    the NumPy path.

    ``weights`` (with ``layout.weighted``): the image's noise model; the NNLS start becomes the
    weighted fit (:func:`~bigxanes.kernels.weights.weighted_fit_block`), NumPy path.
    """
    if layout.weighted:
        return _weighted_pass1(Y, layout, A, baseline, nan_policy, weights)
    T = Y.shape[0]
    spatial = Y.shape[1:]
    out = np.zeros((layout.n_channels,) + spatial, dtype=np.float64)
    sl = layout.slices
    flat = out.reshape(layout.n_channels, -1)
    backend = default_backend() if backend is None else backend
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    Y = np.asarray(Y)
    if (
        backend == "numba"
        and A is not None
        and not layout.edge50
        and Y.dtype in (np.float32, np.float64)
        and Y[0].size > 0
    ):
        from .fused_lcf import lcf_pass1_fused  # numba compiles or loads its cache on import
        from .fused_quality import noise_sigma_d2_fused

        n_bad = lcf_pass1_fused(Y.reshape(T, -1), A, baseline, flat, sl)
        if n_bad and nan_policy != "mask":
            raise nonfinite_error(n_bad)
        sig = noise_sigma_d2_fused(Y).reshape(-1)
        flat[sl["sigma"]] = np.where(sig > 0, sig, np.nan)  # NaN for bad or noiseless spectra
        if layout.variant != "nnls":
            AtA, aty, yty = gram(A), flat[sl["aty"]], flat[sl["yty"]][0]
            M = LCF_SOLVERS[layout.variant](AtA, aty)
            flat[sl["lcf"]] = M
            flat[sl["lcf_resid"]] = residual_sq(yty, aty, M, AtA)
        return out
    if layout.edge50:  # normalization needs the whole float64 block
        if baseline is not None:
            with np.errstate(invalid="ignore"):  # Inf - Inf: a bad spectrum, zeroed next
                Y = subtract_pre_edge(Y, baseline)
        Yc, bad = clean_block(Y, nan_policy)
        bad = bad.reshape(-1)
        if A is not None:
            Yf = Yc.reshape(T, -1)
            aty, yty = A.T @ Yf, np.einsum("tn,tn->n", Yf, Yf)
    elif A is not None:
        aty, yty, bad = block_moments(np.asarray(Y).reshape(T, -1), A, baseline, nan_policy)
    else:
        bad = ~np.isfinite(np.asarray(Y)).all(axis=0).reshape(-1)
    flat[sl["bad"]] = bad.reshape(1, -1)
    sig = noise_sigma_d2(Y).reshape(-1)
    flat[sl["sigma"]] = np.where(sig > 0, sig, np.nan)  # NaN for bad or noiseless spectra
    if A is not None:
        AtA = gram(A)
        M0 = nnls_coefficients(AtA, aty)
        flat[sl["aty"]] = aty
        flat[sl["yty"]] = yty
        flat[sl["M0"]] = M0
        flat[sl["resid0"]] = residual_sq(yty, aty, M0, AtA)
        if layout.variant != "nnls":
            M = LCF_SOLVERS[layout.variant](AtA, aty)
            flat[sl["lcf"]] = M
            flat[sl["lcf_resid"]] = residual_sq(yty, aty, M, AtA)
    if layout.edge50:
        nr = normalize_spectra(energy, Yc, e0=e0, **(norm_kwargs or {}))
        flat[sl["edge50"]] = edge50_energy(energy, nr.norm, level).reshape(1, -1)
        flat[sl["edge_step"]] = np.asarray(nr.edge_step).reshape(1, -1)
        wl_e, wl_h = white_line(energy, nr.norm, window=(float(e0), float(energy[-1])))
        flat[sl["wl_energy"]] = np.asarray(wl_e).reshape(1, -1)
        flat[sl["wl_height"]] = np.asarray(wl_h).reshape(1, -1)
    return out


def _weighted_pass1(
    Y: np.ndarray,
    layout: Pass1Layout,
    A: np.ndarray | None,
    baseline: np.ndarray | None,
    nan_policy: str,
    model: WeightModel | None,
) -> np.ndarray:
    """:func:`pass1_block` with a weighted data term (see :class:`Pass1Layout`)."""
    if A is None or model is None or layout.variant != "nnls" or layout.edge50:
        raise ValueError("a weighted pass 1 needs references, a noise model and NNLS")
    spatial = Y.shape[1:]
    out = np.zeros((layout.n_channels,) + spatial, dtype=np.float64)
    sl = layout.slices
    flat = out.reshape(layout.n_channels, -1)
    Yc, off, bad = prepared_block(Y, baseline, nan_policy)
    AtA = gram(A)
    aty, yty = A.T @ Yc, np.einsum("tn,tn->n", Yc, Yc)
    M, w, G, b, c = weighted_fit_block(Yc, A, model, off, nnls_coefficients(AtA, aty))
    flat[sl["aty"]] = aty
    flat[sl["yty"]] = yty
    flat[sl["M0"]] = M
    flat[sl["resid0"]] = residual_sq(yty, aty, M, AtA)
    flat[sl["bad"]] = bad.reshape(1, -1)
    sig = noise_sigma_d2(Y).reshape(-1)
    flat[sl["sigma"]] = np.where(sig > 0, sig, np.nan)
    flat[sl["wb"]] = b
    flat[sl["wc"]] = c
    flat[sl["G"]] = pack_symmetric(G)
    flat[sl["vsum"]] = np.where(bad, 0.0, (1.0 / w).sum(axis=0))
    flat[sl["wresid0"]] = np.maximum(weighted_data_misfit(G, b, c, M), 0.0)
    return out


#: Entries of :func:`stats_block` (in order).
N_STATS = 5


def stats_block(P: np.ndarray, *, p1: Pass1Layout) -> np.ndarray:
    """Sum of the clipped NNLS residuals, max of ``s0 = 1ᵀM0``, the count of bad spectra and
    (weighted layouts, else 0) the sums of the weighted misfit and of the variances ``1 / w``
    over the finite spectra, of a pass-1 block, shaped ``(N_STATS, 1, ...)`` (additive /
    max-able over blocks)."""
    sl = p1.slices
    out = np.zeros((N_STATS,) + (1,) * (P.ndim - 1), dtype=np.float64)
    out[0] = np.maximum(P[sl["resid0"]], 0.0).sum()
    out[1] = P[sl["M0"]].sum(axis=0).max() if P[sl["M0"]].size else 0.0
    out[2] = P[sl["bad"]].sum()
    if p1.weighted:
        out[3] = P[sl["wresid0"]].sum()
        out[4] = P[sl["vsum"]].sum()
    return out


def hist_block(P: np.ndarray, *, p1: Pass1Layout, smax: float) -> np.ndarray:
    """Histogram of ``s0 = 1ᵀM0`` of a pass-1 block (:func:`~.stats.scale_histogram`), shaped
    ``(HIST_BINS, 1, ...)``."""
    h = scale_histogram(P[p1.slices["M0"]].sum(axis=0), smax)
    return h.reshape((HIST_BINS,) + (1,) * (P.ndim - 1))


def state_from_pass1(
    P: np.ndarray,
    *,
    p1: Pass1Layout,
    layout: StateLayout,
    scale: float,
    dtype=np.float32,
    kappa: float = DEFAULT_KAPPA,
    wmean: float = 1.0,
) -> np.ndarray:
    """Initial ADMM state of a block from its pass-1 channels, on the stack scaled by ``1/c``
    (:func:`~bigxanes.kernels.admm.initial_state`; needs a 1-pixel halo for TV). Rounded to
    ``dtype`` (the precision the state is kept in), returned as float64.

    A weighted layout (guided TV) gets its ``w`` channel from the morphology image
    ``m = 1ᵀM0 / c`` (the scaled NNLS scale map) by
    :func:`~bigxanes.kernels.guide.edge_weights` with edge scale ``kappa``; ``w`` reads one
    forward neighbour per axis, so the same 1-pixel halo makes it exact on a block.

    A layout with ``data_weights`` gets the weighted normal equations of pass 1 divided by the
    mean weight ``wmean`` (:func:`reduce_stats`) and scaled like the data: ``wb / (c w̄)``,
    ``wc / (c² w̄)``, ``G / w̄``."""
    sl = p1.slices
    c = float(scale)
    M0 = P[sl["M0"]] / c
    weight = None
    if layout.weighted:
        weight = edge_weights(M0.sum(axis=0), layout.ndim, kappa=kappa)
    S = initial_state(
        P[sl["aty"]] / c, P[sl["yty"]][0] / (c * c), M0, layout, dtype=dtype, weight=weight
    )
    if layout.data_weights:
        ss, w = layout.slices, float(wmean)
        S[ss["wb"]] = P[sl["wb"]] / (c * w)
        S[ss["wc"]] = P[sl["wc"]] / (c * c * w)
        S[ss["G"]] = P[sl["G"]] / w
    return S.astype(np.float64)


def reduce_stats(
    per_block: np.ndarray, p1: Pass1Layout, n_pixels: int, n_energies: int
) -> dict[str, float]:
    """The image statistics from the :func:`stats_block` outputs of all blocks: ``resid_sum``
    (the data term's residual sum at the NNLS start, read by the λ rule), ``s_max``, ``n_bad``
    and ``wmean``.

    Weighted layouts: ``wmean = w̄ = 1 / v̄``, the inverse of the mean variance
    ``v̄ = Σ (1 / w) / (T · N_finite)``; the weighted data term is divided by it,
    ``½ Σ (w / w̄)(y - A m)²``, so that it equals the unweighted one for a spectrum at the
    image's mean noise level and the λ rule sees the same noise variance ``v̄`` as without
    weights (``resid_sum = Σ w r² / w̄ ≈ N (T - L) v̄``): noisier spectra (thick regions) are
    regularized more, quieter ones less. (Normalizing by the mean *weight* instead gives the
    harmonic mean of the variances, dominated by the quiet background: λ too small on the
    sample; normalizing each pixel by its own mean variance keeps the unweighted balance but
    halves the gain: benchmarks/results/weights.md.) Unweighted: ``wmean = 1``,
    ``resid_sum = Σ r²``.
    """
    per_block = np.asarray(per_block).reshape(N_STATS, -1)
    n_bad = int(per_block[2].sum())
    out = {
        "resid_sum": float(per_block[0].sum()),
        "s_max": float(per_block[1].max()),
        "n_bad": n_bad,
        "wmean": 1.0,
    }
    if p1.weighted:
        n_good = max(int(n_pixels) - n_bad, 1)
        vsum = float(per_block[4].sum())
        wmean = (n_good * int(n_energies)) / vsum if vsum > 0 else 1.0
        out.update(wmean=wmean, resid_sum=float(per_block[3].sum()) / wmean)
    return out


def pass1_statistics(P: np.ndarray, p1: Pass1Layout, n_energies: int) -> dict[str, float]:
    """The image statistics of pass 1 with the whole image as one block (:func:`reduce_stats`)
    and the data scale ``scale`` (the engine reduces the same block functions over its
    tiles)."""
    st = reduce_stats(stats_block(P, p1=p1), p1, int(np.prod(P.shape[1:])), n_energies)
    s_max = st["s_max"]
    hist = hist_block(P, p1=p1, smax=s_max).reshape(-1) if s_max > 0 else None
    return {**st, "scale": data_scale(hist, s_max)}
