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


def pre_edge_window_from_data(
    energy: np.ndarray,
    mean_spectrum: np.ndarray,
    references: np.ndarray | None = None,
    gap: float = 5.0,
    smooth: float = 2.0,
) -> tuple[np.ndarray, float, str]:
    """Pre-edge window below the data's own edge (and the references', when given).

    ``e0_data`` is the derivative maximum of the stack's mean spectrum, Gaussian-smoothed by
    ``smooth`` points (:func:`bigxanes.normalize.find_e0`), ``e0_refs`` that of the references'
    mean; the window is ``E < min(e0_data, e0_refs) - gap``. A sample calibrated below its
    references (edge at 7119 eV, references at 7122-7127 eV) then gets a window that stops before
    its own rising edge instead of reaching into it.

    Returns
    -------
    window : numpy.ndarray of bool (T,)
    e0 : float
        The edge energy the window ends ``gap`` eV below.
    description : str
        One line for the run's summary/attrs, e.g.
        ``"pre-edge window 7080.0-7113.5 eV (data edge 7119.0 eV, references 7125.0 eV)"``.

    Raises ValueError (one line, naming ``--baseline none``) when fewer than 3 energies remain.
    """
    energy = np.asarray(energy, dtype=np.float64)
    e0_data = float(find_e0(energy, np.asarray(mean_spectrum, dtype=np.float64), smooth=smooth))
    e0 = e0_data
    refs_txt = ""
    if references is not None:
        refs = np.asarray(references, dtype=np.float64).reshape(energy.size, -1)
        e0_refs = float(find_e0(energy, refs.mean(axis=1)))
        e0 = min(e0, e0_refs)
        refs_txt = f", references {e0_refs:.1f} eV"
    window = energy < e0 - gap
    n = int(window.sum())
    if n < MIN_PRE_EDGE_POINTS:
        raise ValueError(
            f"only {n} energies lie below the data's edge (e0 = {e0:.1f} eV - {gap:g} eV) for the"
            " pre-edge baseline; use --baseline none or include pre-edge energies"
        )
    desc = (
        f"pre-edge window {energy[window][0]:.1f}-{energy[window][-1]:.1f} eV "
        f"(data edge {e0_data:.1f} eV{refs_txt})"
    )
    return window, e0, desc
