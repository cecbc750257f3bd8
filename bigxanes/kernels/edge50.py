"""Edge-50 kernel: the energy where a normalized spectrum first reaches one half."""

from __future__ import annotations

import numpy as np


def edge50_energy(energy: np.ndarray, norm: np.ndarray, level: float = 0.5) -> np.ndarray:
    """Energy of the first upward crossing of ``level`` by each normalized spectrum.

    For the first index i with ``n_i < level <= n_{i+1}``, the crossing is interpolated
    linearly: ``E = E_i + (level - n_i) (E_{i+1} - E_i) / (n_{i+1} - n_i)``. Spectra that never
    cross (or contain NaN, e.g. empty pixels) give NaN. Batched over pixels.

    Parameters
    ----------
    energy : (T,) ndarray, eV, increasing
    norm : (T, ...) ndarray of edge-step normalized spectra
    level : float

    Returns
    -------
    (...) ndarray of energies in eV
    """
    T = norm.shape[0]
    flat = norm.reshape(T, -1)
    below = flat[:-1] < level
    above = flat[1:] >= level
    cross = below & above
    has = cross.any(axis=0)
    i = np.argmax(cross, axis=0)
    cols = np.arange(flat.shape[1])
    n0, n1 = flat[i, cols], flat[np.minimum(i + 1, T - 1), cols]
    e0, e1 = energy[i], energy[np.minimum(i + 1, T - 1)]
    with np.errstate(invalid="ignore", divide="ignore"):
        out = e0 + (level - n0) * (e1 - e0) / (n1 - n0)
    out = np.where(has, out, np.nan)
    return out.reshape(norm.shape[1:])


def fraction_from_edge50(e50: np.ndarray, e50_refs: np.ndarray) -> np.ndarray:
    """Two-state fractions from Edge-50 energies, by linear interpolation between the references.

    ``x_2 = clip((E - E_1) / (E_2 - E_1), 0, 1)``, ``x_1 = 1 - x_2`` — the usual reading of an
    Edge-50 map as a phase map for L = 2 (paper, Table 1). NaN energies give NaN fractions.
    """
    e1, e2 = float(e50_refs[0]), float(e50_refs[1])
    x2 = np.clip((e50 - e1) / (e2 - e1), 0.0, 1.0)
    return np.stack([1.0 - x2, x2])


def edge50_reference_energies(
    energy: np.ndarray,
    references: np.ndarray,
    e0: float,
    level: float = 0.5,
    norm_kwargs: dict | None = None,
) -> np.ndarray:
    """Edge-50 energies of the references, normalized like the data (same e0 and options).

    Raises ValueError when they are undefined or equal (the map cannot be read as fractions).
    """
    from .normalize import normalize_spectra

    norm = normalize_spectra(energy, references, e0=e0, **(norm_kwargs or {})).norm
    e_refs = edge50_energy(energy, norm, level)
    if not np.all(np.isfinite(e_refs)) or abs(float(e_refs[-1] - e_refs[0])) < 1e-9:
        raise ValueError(
            "the references' Edge-50 energies are undefined or equal: Edge-50 cannot tell them "
            "apart; use --method lcf or rum-tv"
        )
    return e_refs
