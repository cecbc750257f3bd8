"""Output maps of a block: fractions, scale, residual RMS and mask (docs/design.md, "Results").

Both executors call these on their blocks (the whole array in memory): the LCF maps from the
pass-1 channels (:func:`lcf_outputs_block`), the RUM maps from a final ADMM state
(:func:`rum_outputs_block`). Each returns one stacked array ``(channels, *spatial)``.
"""

from __future__ import annotations

import numpy as np

from .admm import StateLayout
from .edge50 import fraction_from_edge50
from .lcf import fractions_from_coefficients
from .moments import residual_sq
from .pass1 import Pass1Layout
from .uncertainty import lcf_fraction_std

#: ``mask`` is True where ``scale > MASK_THRESHOLD · c`` (c: the data scale, the 99th
#: percentile of the LCF scale) and the spectrum was finite.
MASK_THRESHOLD = 0.05


def residual_rms(resid_sq: np.ndarray, n_energies: int) -> np.ndarray:
    """RMS over the energies from the squared residual: ``sqrt(max(r, 0) / T)``."""
    return np.sqrt(np.maximum(resid_sq, 0.0) / n_energies)


def material_mask(s: np.ndarray, scale: float, bad: np.ndarray) -> np.ndarray:
    """``s > MASK_THRESHOLD · c`` where the spectrum was finite (``bad`` == 0)."""
    return (s > MASK_THRESHOLD * scale) & (bad == 0)


def lcf_outputs_block(
    P: np.ndarray, *, p1: Pass1Layout, n_energies: int, scale: float, nnls_only: bool = False
) -> np.ndarray:
    """LCF maps of a pass-1 block: ``fraction`` (L), ``scale``, ``residual_rms``, ``mask``.

    With ``nnls_only`` the NNLS coefficients are used whatever the layout's variant (the
    ``lcf_fraction`` of RUM runs, the scale of Edge-50). The sum-to-one variant has no scale
    of its own: its coefficients sum to one, so its reported scale is 1.
    """
    sl = p1.slices
    msl, rsl = (sl["M0"], sl["resid0"]) if nnls_only else p1.lcf_slices()
    X, s = fractions_from_coefficients(P[msl])
    rms = residual_rms(P[rsl][0], n_energies)
    mask = material_mask(s, scale, P[sl["bad"]][0])
    return np.concatenate([X, s[None], rms[None], mask[None].astype(np.float64)])


def final_maps(
    S: np.ndarray, layout: StateLayout, scale: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fractions, scale and coefficients from a state block.

    Fractions are the projected split variable W (non-negative), renormalized to sum to one
    (:func:`~bigxanes.kernels.lcf.fractions_from_coefficients`); the scale is t (non-negative)
    times the data scale ``c``; the coefficients ``M = X s``.
    """
    sl = layout.slices
    X, _ = fractions_from_coefficients(np.asarray(S[sl["W"]], dtype=np.float64))
    t = np.asarray(S[sl["t"]][0], dtype=np.float64) * scale
    return X, t, X * t


def rum_outputs_block(
    S: np.ndarray, *, layout: StateLayout, AtA: np.ndarray, scale: float, n_energies: int
) -> np.ndarray:
    """RUM maps of a final state block: ``fraction`` (L), ``scale``, ``residual_rms``,
    ``fraction_std`` (L).

    :func:`final_maps`, and the residual ``|y - A X s|`` in the stack's units from the state's
    ``AᵀY`` and ``yᵀy`` (:func:`~bigxanes.kernels.moments.residual_sq`). ``fraction_std`` is
    the cheap *linearized* estimate: the LCF delta-method std
    (:func:`~bigxanes.kernels.uncertainty.lcf_fraction_std`) evaluated at the RUM coefficients
    ``M = X s`` with the noise variance from the RUM residual, ``σ̂² = RSS / (T - L)``. It ignores
    the prior's averaging (smaller variance) and its bias (at edges), so it is an upper bound in
    practice: measured 2σ coverage 98-100 % (benchmarks/results/uncertainty.md).
    """
    sl = layout.slices
    X, s, M = final_maps(S, layout, scale)
    aty = np.asarray(S[sl["aty"]], dtype=np.float64) * scale
    yty = np.asarray(S[sl["yty"]][0], dtype=np.float64) * scale * scale
    rss = residual_sq(yty, aty, M, AtA)
    rms = residual_rms(rss, n_energies)
    sd = lcf_fraction_std(M, AtA, rss=rss, n_energies=n_energies)
    return np.concatenate([X, s[None], rms[None], sd])


def edge50_fraction_block(P: np.ndarray, *, p1: Pass1Layout, e_refs: np.ndarray) -> np.ndarray:
    """Two-state fractions of a pass-1 block from its Edge-50 channel
    (:func:`~bigxanes.kernels.edge50.fraction_from_edge50`; NaN where there is no crossing)."""
    return fraction_from_edge50(P[p1.slices["edge50"]][0], e_refs)
