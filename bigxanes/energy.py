"""Energy axes and reference spectra on them.

Conventions (docs/CONTRACTS.md): energies are 1-D float64 arrays in **eV**, strictly
increasing. Reference spectra are ``(T, L)`` arrays on the stack's energies.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "KEV_THRESHOLD",
    "as_ev",
    "sort_energies",
    "interpolate_reference",
    "check_references",
]

#: Energies whose maximum is below this value are taken to be in keV. Hard X-ray edges in
#: eV are all above 100 eV and no TXM/STXM edge lies below 100 eV, so the test is unambiguous.
KEV_THRESHOLD = 100.0


def _as_1d_finite(energies: np.ndarray | list | tuple, what: str = "energies") -> np.ndarray:
    e = np.asarray(energies, dtype=np.float64)
    if e.ndim != 1:
        raise ValueError(
            f"{what} must be a 1-D array, got shape {e.shape}; pass one energy per image "
            "(e.g. a text file with one value per line)."
        )
    if e.size == 0:
        raise ValueError(f"{what} is empty; provide at least one energy value.")
    if not np.all(np.isfinite(e)):
        bad = np.flatnonzero(~np.isfinite(e))
        raise ValueError(
            f"{what} contain non-finite values (NaN/Inf) at positions {bad[:10].tolist()}; "
            "remove or fix those entries."
        )
    return e


def as_ev(energies: np.ndarray | list | tuple) -> np.ndarray:
    """Return energies as a strictly increasing float64 array in eV.

    keV input is detected by ``max(energies) < 100`` (:data:`KEV_THRESHOLD`) and multiplied
    by 1000.

    Parameters
    ----------
    energies : array_like, shape (T,)
        Energies in eV or keV.

    Returns
    -------
    numpy.ndarray, shape (T,)
        Energies in eV (a new array).

    Raises
    ------
    ValueError
        If the input is not 1-D, is empty, contains NaN/Inf, has duplicates or is not strictly
        increasing. The message names the offending positions and how to fix the input.
    """
    e = _as_1d_finite(energies).copy()
    if np.max(e) < KEV_THRESHOLD:
        e *= 1000.0
    if e.size > 1:
        d = np.diff(e)
        if np.any(d == 0):
            dup = np.flatnonzero(d == 0)
            raise ValueError(
                f"energies contain duplicate values (e.g. {e[dup[0]]:.4f} eV at positions "
                f"{dup[0]} and {dup[0] + 1}); remove the repeated images/energies or average them."
            )
        if np.any(d < 0):
            bad = np.flatnonzero(d < 0)
            raise ValueError(
                f"energies are not strictly increasing (decrease after position {bad[0]}: "
                f"{e[bad[0]]:.4f} -> {e[bad[0] + 1]:.4f} eV); sort the energies together with "
                "the images (bigxanes.energy.sort_energies)."
            )
    return e


def sort_energies(
    energies: np.ndarray | list | tuple, *arrays_along_axis0: np.ndarray
) -> tuple[np.ndarray, tuple[np.ndarray, ...], bool]:
    """Sort energies increasingly and reorder arrays along their first axis to match.

    Parameters
    ----------
    energies : array_like, shape (T,)
        Energies (eV or keV; keV is converted by :func:`as_ev` after sorting).
    *arrays_along_axis0 : numpy.ndarray
        Arrays whose axis 0 has length T (images, reference spectra, ...).

    Returns
    -------
    energies : numpy.ndarray, shape (T,)
        Sorted energies in eV.
    arrays : tuple of numpy.ndarray
        The input arrays reordered along axis 0 (unchanged objects when no sorting was needed).
    sorted_ : bool
        True when the input order was changed (importers should warn the user).

    Raises
    ------
    ValueError
        On length mismatch, non-finite values or duplicate energies.
    """
    e = _as_1d_finite(energies)
    for i, a in enumerate(arrays_along_axis0):
        if np.shape(a)[0] != e.size:
            raise ValueError(
                f"array #{i} has {np.shape(a)[0]} entries along axis 0 but there are {e.size} "
                "energies; give one image/spectrum value per energy."
            )
    order = np.argsort(e, kind="stable")
    changed = bool(np.any(order != np.arange(e.size)))
    if changed:
        e = e[order]
        arrays = tuple(np.asarray(a)[order] for a in arrays_along_axis0)
    else:
        arrays = tuple(arrays_along_axis0)
    return as_ev(e), arrays, changed


def interpolate_reference(
    ref_energy: np.ndarray, ref_values: np.ndarray, energy: np.ndarray, *, tol: float = 1e-6
) -> np.ndarray:
    """Linearly interpolate reference spectra onto the stack's energies.

    ``values[:, l] = np.interp(energy, ref_energy, ref_values[:, l])``. No extrapolation:
    the reference must cover ``[energy.min(), energy.max()]`` (within ``tol`` eV).

    Parameters
    ----------
    ref_energy : array_like, shape (Tref,)
        Reference energies (eV or keV, converted by :func:`as_ev`).
    ref_values : array_like, shape (Tref,) or (Tref, L)
        Reference spectra.
    energy : array_like, shape (T,)
        Target energies (eV or keV).
    tol : float
        Allowed overhang in eV (rounding in files).

    Returns
    -------
    numpy.ndarray, shape (T,) or (T, L)
        Interpolated spectra, float64.

    Raises
    ------
    ValueError
        When the reference does not cover the target range; the message gives both ranges and
        suggests restricting the stack with ``--energy-range EMIN,EMAX``.
    """
    re = as_ev(ref_energy)
    e = as_ev(energy)
    v = np.asarray(ref_values, dtype=np.float64)
    if v.shape[0] != re.size:
        raise ValueError(
            f"reference has {re.size} energies but {v.shape[0]} values along axis 0; "
            "give one value per energy."
        )
    if e[0] < re[0] - tol or e[-1] > re[-1] + tol:
        lo, hi = max(e[0], re[0]), min(e[-1], re[-1])
        hint = (
            f"use --energy-range {lo:.1f},{hi:.1f} to analyse only the covered part"
            if lo < hi
            else "the ranges do not overlap: check the units and the reference file"
        )
        raise ValueError(
            f"reference spectra cover {re[0]:.2f}-{re[-1]:.2f} eV but the stack spans "
            f"{e[0]:.2f}-{e[-1]:.2f} eV; references cannot be extrapolated: {hint}, "
            "or supply references measured over the whole range."
        )
    if v.ndim == 1:
        return np.interp(e, re, v)
    flat = v.reshape(v.shape[0], -1)
    out = np.empty((e.size, flat.shape[1]), dtype=np.float64)
    for j in range(flat.shape[1]):  # loop over L references (few), not pixels
        out[:, j] = np.interp(e, re, flat[:, j])
    return out.reshape((e.size,) + v.shape[1:])


def check_references(A: np.ndarray, *, max_condition: float = 1e8) -> np.ndarray:
    """Validate a reference matrix for unmixing.

    Parameters
    ----------
    A : array_like, shape (T, L)
        Reference spectra as columns.
    max_condition : float
        Largest accepted 2-norm condition number ``s_max / s_min`` of ``A``.

    Returns
    -------
    numpy.ndarray
        ``A`` as float64 (T, L).

    Raises
    ------
    ValueError
        If ``A`` is not 2-D, contains NaN/Inf, has more references than energies (L > T),
        is rank deficient (``numpy.linalg.matrix_rank(A) < L``) or its condition number
        exceeds ``max_condition``.
    """
    A = np.asarray(A, dtype=np.float64)
    if A.ndim == 1:
        A = A[:, None]
    if A.ndim != 2:
        raise ValueError(
            f"references must be a 2-D array (energies x components), got shape {A.shape}."
        )
    T, L = A.shape
    if L == 0:
        raise ValueError("no reference spectra given; provide at least one reference.")
    if not np.all(np.isfinite(A)):
        cols = sorted(set(np.nonzero(~np.isfinite(A))[1].tolist()))
        raise ValueError(
            f"references contain NaN/Inf (components {cols}); check the reference files or "
            "their energy coverage."
        )
    if L > T:
        raise ValueError(
            f"more references ({L}) than energies ({T}); the unmixing is underdetermined: "
            "use fewer references or more energies."
        )
    rank = int(np.linalg.matrix_rank(A))
    if rank < L:
        raise ValueError(
            f"references are linearly dependent (rank {rank} < {L} components); remove "
            "duplicate or combined references."
        )
    sv = np.linalg.svd(A, compute_uv=False)
    cond = float(sv[0] / sv[-1])
    if cond > max_condition:
        raise ValueError(
            f"references are nearly linearly dependent (condition number {cond:.3g} > "
            f"{max_condition:.3g}); remove near-duplicate references."
        )
    return A
