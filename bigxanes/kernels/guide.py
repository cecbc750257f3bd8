"""Edge weights of the structure-guided (weighted) TV prior from a morphology image.

Guided TV replaces the TV term ``λ Σ_j Σ_i |∇x_j|_i`` by ``λ Σ_j Σ_i w_i |∇x_j|_i`` with a
per-pixel weight ``w_i ∈ [w_min, 1]`` that is small where the sample's outline jumps and 1
elsewhere, so fraction maps may jump where the morphology jumps and stay smooth inside it.
The morphology image ``m`` is a high-SNR quantity every method already has: the LCF scale
``s0 = Σ_j M0_j`` divided by the data scale ``c`` (so ``m ≈ 1`` in the foreground).

Weight (a Perona-Malik-type edge stopping function of the forward-difference gradient, the
same stencil as the TV term, so ``w_i`` belongs to the same difference ``x_{i+1} - x_i``)::

    e_i = |∇m|_i                      (isotropic over the spatial axes, Neumann edges)
    w_i = w_min + (1 - w_min) / (1 + (e_i / κ)²)

``κ`` is in units of ``m`` (an edge is a jump of ``κ`` of the foreground scale between
neighbours). In the ADMM split ``U = ∇X`` only the U-prox changes:
``U = shrink(∇X + D, λ w / ρ)`` (DESIGN.md §3 step 5); the X-step is unchanged.

Pure NumPy: no dask / xarray / zarr. The weight of a pixel reads one neighbour per axis, so a
block needs a halo of 1 to compute it exactly (it is computed once, before the iterations).
"""

from __future__ import annotations

import numpy as np

from .stencils import gradient

__all__ = ["DEFAULT_KAPPA", "DEFAULT_W_MIN", "edge_weights"]

DEFAULT_KAPPA = 0.02  # chosen on the tuning split of benchmarks/bench_realistic.py
DEFAULT_W_MIN = 0.05


def edge_weights(
    morphology: np.ndarray,
    ndim: int,
    *,
    kappa: float = DEFAULT_KAPPA,
    w_min: float = DEFAULT_W_MIN,
) -> np.ndarray:
    """Per-pixel guided-TV weights ``w = w_min + (1 - w_min) / (1 + (|∇m| / κ)²)``.

    Parameters
    ----------
    morphology : (*spatial) ndarray
        Morphology image ``m`` (e.g. LCF scale / data scale), ``len(spatial) == ndim``.
    ndim : int
        Number of spatial axes.
    kappa : float
        Edge scale κ > 0 in units of ``m``.
    w_min : float
        Floor of the weight, in [0, 1].

    Returns
    -------
    (*spatial) ndarray, float64, values in ``[w_min, 1]``.
    """
    if not kappa > 0:
        raise ValueError(f"kappa must be > 0, got {kappa}.")
    if not 0.0 <= w_min <= 1.0:
        raise ValueError(f"w_min must be in [0, 1], got {w_min}.")
    m = np.asarray(morphology, dtype=np.float64)
    g = gradient(m[None], ndim)[:, 0]
    e2 = np.sum(g * g, axis=0) / (kappa * kappa)
    return w_min + (1.0 - w_min) / (1.0 + e2)
