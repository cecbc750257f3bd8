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


#: Largest accepted condition number of the normal matrix ``AᵀA`` (``(s_max/s_min)²``): beyond
#: it noise in the data is amplified more than 1e8-fold into the fractions. Real reference sets
#: stay far below (14 Mn K-edge standards of an Athena project: 3.9e6; Ni0/NiO/LiNiO2: 1e3).
MAX_CONDITION = 1e8


def near_duplicate_pair(A: np.ndarray) -> tuple[int, int, float]:
    """The two columns of ``A`` with the largest cosine similarity ``|a_i·a_j|/(|a_i||a_j|)``."""
    nrm = np.linalg.norm(A, axis=0)
    nrm = np.where(nrm > 0, nrm, 1.0)
    C = np.abs(A.T @ A) / np.outer(nrm, nrm)
    np.fill_diagonal(C, -1.0)
    i, j = np.unravel_index(int(np.argmax(C)), C.shape)
    return int(i), int(j), float(C[i, j])


def check_conditioning(
    A: np.ndarray, names: list[str] | None = None, *, max_condition: float = MAX_CONDITION
) -> float:
    """``cond(AᵀA) = (s_max / s_min)²`` of the references; a ValueError naming the two most
    similar references (cosine) when it exceeds ``max_condition`` (collinear or identical
    references make the fractions arbitrary). Returns the condition number."""
    A = np.asarray(A, dtype=np.float64)
    L = A.shape[1]
    names = list(names) if names is not None and len(names) == L else [f"#{k}" for k in range(L)]
    sv = np.linalg.svd(A, compute_uv=False)
    cond = float((sv[0] / sv[-1]) ** 2) if sv[-1] > sv[0] * 1e-150 else float("inf")
    if cond <= max_condition:
        return cond
    if L == 1 or sv[0] == 0:
        raise ValueError(f"reference {names[0]!r} is zero on the fitted energies; drop it")
    i, j, cos = near_duplicate_pair(A)
    what = "identical" if np.allclose(A[:, i], A[:, j], rtol=1e-12, atol=0) else "near duplicates"
    raise ValueError(
        f"references are linearly dependent: {names[i]!r} and {names[j]!r} are {what} (cosine "
        f"{cos:.6f}, cond(AᵀA) = {cond:.3g} > {max_condition:.0e}), so their fractions cannot "
        "be told apart; drop one of them (--components, or remove the file from --refs)"
    )


def check_references(
    references: np.ndarray, n_energies: int, names: list[str] | None = None
) -> np.ndarray:
    """References are (T, L), finite, L <= T and well conditioned (:func:`check_conditioning`,
    the message names the near-duplicate references)."""
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
    check_conditioning(A, names)
    return A
