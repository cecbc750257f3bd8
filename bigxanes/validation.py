"""Input checks shared by the in-memory API and the out-of-core engine.

Each check raises ``ValueError`` with a message that names the problem and how to fix it.
"""

from __future__ import annotations

import numpy as np


def check_energy_axis(energy: np.ndarray, n_energies: int) -> np.ndarray:
    """Energies must be 1-D, finite, strictly increasing and one per image of the stack."""
    energy = np.asarray(energy, dtype=np.float64)
    if energy.ndim != 1:
        raise ValueError(f"energies must be a 1-D list of values, got shape {energy.shape}")
    if energy.size != n_energies:
        raise ValueError(
            f"{energy.size} energies given but the stack has {n_energies} images along its energy "
            "axis; give exactly one energy per image"
        )
    if not np.all(np.isfinite(energy)):
        raise ValueError("energies contain NaN or Inf; fix the energy list")
    if energy.size > 1 and not np.all(np.diff(energy) > 0):
        raise ValueError(
            "energies must be strictly increasing (sort the stack by energy and remove duplicate "
            "energies)"
        )
    return energy


def check_stack(stack: np.ndarray) -> None:
    """A stack is (T, y, x) or (T, z, y, x), with no NaN/Inf."""
    if stack.ndim not in (3, 4):
        raise ValueError(
            f"stack must have 3 (energy, y, x) or 4 (energy, z, y, x) dimensions, got {stack.ndim}"
        )
    bad = ~np.isfinite(stack)
    if bad.any():
        pix = np.argwhere(bad.any(axis=0))
        first = tuple(int(i) for i in pix[0])
        raise ValueError(
            f"stack contains NaN or Inf in {len(pix)} pixel(s) (first at {first}); "
            "mask them with nan_policy='mask' or clean the data"
        )


def check_references(references: np.ndarray, n_energies: int) -> np.ndarray:
    """References are (T, L), finite, L <= T and linearly independent."""
    A = np.asarray(references, dtype=np.float64)
    if A.ndim == 1:
        A = A[:, None]
    if A.ndim != 2:
        raise ValueError(f"references must be a (energy, component) matrix, got shape {A.shape}")
    if A.shape[0] != n_energies:
        raise ValueError(
            f"references have {A.shape[0]} energies but the stack has {n_energies}; "
            "interpolate the references onto the stack's energies"
        )
    if not np.all(np.isfinite(A)):
        raise ValueError("references contain NaN or Inf; fix the reference spectra")
    T, L = A.shape
    if L > T:
        raise ValueError(
            f"{L} references but only {T} energies: at most as many states as energies can be "
            "separated; use fewer references"
        )
    sv = np.linalg.svd(A, compute_uv=False)
    if sv[-1] <= sv[0] * 1e-10:
        raise ValueError(
            "references are linearly dependent (rank-deficient): one spectrum is a combination of "
            "the others; remove the duplicate or combined reference"
        )
    return A
