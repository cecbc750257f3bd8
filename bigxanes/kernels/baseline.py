"""Per-pixel pre-edge baseline removal for fitting.

Measured optical density carries a background that has nothing to do with the element studied:
absorption by other elements, the substrate or support film, detector offsets. It is nearly flat
across an edge and varies from pixel to pixel independently of the element's amount, so the
model ``Y = A X diag(s)`` cannot absorb it (on the real STXM Fe L3 stack it is ~0.9 OD under an
edge of ~0.3). Subtracting each spectrum's mean over the pre-edge energies, from the data and
from the references alike, removes it. The operation is linear, so noiseless data that follow
the model still fit exactly, and pixel-local (one chunk holds the whole energy axis).

The pre-edge window is ``E < e0 - gap`` with ``e0`` the derivative maximum of the references'
mean spectrum (:func:`bigxanes.normalize.find_e0`), default ``gap = 5 eV``.
"""

from __future__ import annotations

import numpy as np

from .normalize import find_e0

BASELINES = ("pre-edge", "none")
MIN_PRE_EDGE_POINTS = 3


def pre_edge_window(energy: np.ndarray, references: np.ndarray, gap: float = 5.0) -> np.ndarray:
    """Boolean mask of the pre-edge energies ``E < e0 - gap`` (e0 from the references' mean).

    Raises ValueError when fewer than 3 energies lie there.
    """
    energy = np.asarray(energy, dtype=np.float64)
    e0 = float(find_e0(energy, np.asarray(references, dtype=np.float64).mean(axis=1)))
    window = energy < e0 - gap
    if window.sum() < MIN_PRE_EDGE_POINTS:
        raise ValueError(
            f"only {int(window.sum())} energies lie below the edge (e0 = {e0:.1f} eV - {gap:g} eV)"
            " for the pre-edge baseline; use baseline='none' (--baseline none) or include"
            " pre-edge energies"
        )
    return window


def subtract_pre_edge(spectra, window: np.ndarray):
    """``spectra - mean(spectra[window], axis=0)``; NumPy or dask arrays, energy on axis 0."""
    idx = np.flatnonzero(window)
    return spectra - spectra[idx].mean(axis=0, keepdims=True)


def resolve_baseline(
    baseline: str, energy: np.ndarray, references: np.ndarray | None, gap: float = 5.0
) -> np.ndarray | None:
    """The pre-edge window for ``baseline="pre-edge"``, None for ``"none"`` or no references."""
    if baseline not in BASELINES:
        raise ValueError(f"baseline must be one of {', '.join(BASELINES)}, got {baseline!r}")
    if baseline == "none" or references is None:
        return None
    return pre_edge_window(energy, references, gap)
