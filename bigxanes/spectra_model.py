"""A parametric, normalized XANES spectrum model and synthetic reference sets.

The model is a sum of simple line shapes (all energies in eV, ``d = E - e0``):

* edge step of height 1: ``arctan``: ``1/2 + arctan(d / (w/2)) / pi`` or ``erf``:
  ``(1 + erf(d / w)) / 2`` with ``w = edge_width``;
* white line just above the edge: Lorentzian ``h / (1 + ((d - c) / (g/2))^2)`` or Gaussian
  ``h exp(-(d - c)^2 / (2 (g/2.355)^2))`` with ``h = white_line_height``,
  ``c = white_line_offset``, ``g = white_line_width`` (FWHM);
* pre-edge peak (1s -> 3d like): Gaussian of height ``pre_edge_height`` at
  ``d = pre_edge_offset`` (about -10 to -15 eV), FWHM ``pre_edge_width``;
* post-edge (EXAFS-like) oscillation, switched on by the edge step:
  ``osc_amp sin(2 pi (d - c) / osc_period + osc_phase) exp(-max(d, 0) / osc_decay) step(d)``.

Below the edge the spectrum is flat at 0 apart from the pre-edge peak; far above it tends to 1,
i.e. it is already edge-step normalized, like Athena ``norm`` data.

:func:`real_references` gives *measured* reference sets from the shared data folder
(``../shared/data``; README there) for simulations built from real spectra.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from scipy.special import erf

__all__ = [
    "xanes_spectrum",
    "model_references",
    "default_energy_grid",
    "real_references",
    "REAL_SETS",
    "shared_data_dir",
]

# name -> (max L, components in the order they are used for L = 2, 3, ...)
REAL_SETS = {
    "ni": (3, ("Ni2+", "Ni3+", "Ni0")),
    "fe-l3": (2, ("Fe2+", "Fe3+")),
    "mn": (5, ("MnO", "Mn2O3x", "Pyrolusite", "Mn foil", "Li2MnO3")),
    "fe-k": (4, ("Fe foil", "Hematite", "Goerthite", "Ferrihydrite")),
}
_PRJ = {"mn": ("Mn.prj", 6550.0), "fe-k": ("Fe.prj", 7125.0)}


def default_energy_grid(base_e0: float = 8345.0) -> np.ndarray:
    """Ni-K-like energy grid: 8250-8550 eV for ``base_e0 = 8345``, 100 points.

    5 eV steps from ``e0-95`` to ``e0-25``, 1 eV steps over ``[e0-25, e0+35)`` (the edge and
    white line), then 7 eV steps up to ``e0+205``. The grid follows ``base_e0``.
    """
    lo = np.arange(-95.0, -25.0, 5.0)
    mid = np.arange(-25.0, 35.0, 1.0)
    hi = np.linspace(35.0, 205.0, 26)
    return base_e0 + np.concatenate([lo, mid, hi])


def xanes_spectrum(
    energy: np.ndarray,
    e0: float,
    *,
    edge_width: float = 2.0,
    edge_shape: str = "arctan",
    white_line_height: float = 0.6,
    white_line_width: float = 6.0,
    white_line_offset: float = 5.0,
    white_line_shape: str = "lorentzian",
    pre_edge_height: float = 0.04,
    pre_edge_offset: float = -12.0,
    pre_edge_width: float = 2.0,
    osc_amp: float = 0.08,
    osc_period: float = 40.0,
    osc_decay: float = 80.0,
    osc_phase: float = 0.0,
) -> np.ndarray:
    """Normalized model XANES spectrum (edge step 1), see the module docstring for formulas.

    Parameters
    ----------
    energy : array_like, shape (T,)
        Energies in eV.
    e0 : float
        Edge position (inflection point of the step) in eV.
    edge_width : float
        Width ``w`` of the step in eV.
    edge_shape : {"arctan", "erf"}
        Step function.
    white_line_height, white_line_width, white_line_offset : float
        Peak height, FWHM (eV) and position relative to ``e0`` (eV) of the white line.
    white_line_shape : {"lorentzian", "gaussian"}
        Line shape of the white line.
    pre_edge_height, pre_edge_offset, pre_edge_width : float
        Height, position relative to ``e0`` and FWHM of the pre-edge peak.
    osc_amp, osc_period, osc_decay, osc_phase : float
        Amplitude, period (eV), exponential decay length (eV) and phase (rad) of the post-edge
        oscillation.

    Returns
    -------
    numpy.ndarray, shape (T,)
        The spectrum (float64).
    """
    E = np.asarray(energy, dtype=np.float64)
    d = E - float(e0)
    if edge_shape == "arctan":
        step = 0.5 + np.arctan(d / (0.5 * edge_width)) / np.pi
    elif edge_shape == "erf":
        step = 0.5 * (1.0 + erf(d / edge_width))
    else:
        raise ValueError(f"edge_shape must be 'arctan' or 'erf', got {edge_shape!r}.")
    u = d - white_line_offset
    if white_line_shape == "lorentzian":
        wl = white_line_height / (1.0 + (u / (0.5 * white_line_width)) ** 2)
    elif white_line_shape == "gaussian":
        sd = white_line_width / 2.3548
        wl = white_line_height * np.exp(-0.5 * (u / sd) ** 2)
    else:
        raise ValueError(
            f"white_line_shape must be 'lorentzian' or 'gaussian', got {white_line_shape!r}."
        )
    sd_pre = pre_edge_width / 2.3548
    pre = pre_edge_height * np.exp(-0.5 * ((d - pre_edge_offset) / sd_pre) ** 2)
    osc = (
        osc_amp
        * np.sin(2.0 * np.pi * u / osc_period + osc_phase)
        * np.exp(-np.maximum(d, 0.0) / osc_decay)
        * step
    )
    return step + wl + pre + osc


def model_references(
    L: int,
    energy: np.ndarray | None = None,
    *,
    base_e0: float = 8345.0,
    shift: float = 1.5,
    seed: int | None = None,
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """``L`` synthetic Ni-K-like references, one per oxidation state.

    State ``j = 0..L-1`` has its edge at ``base_e0 + j * shift`` (a chemical shift of ~1.5 eV
    per valence step, as between Ni2+ and Ni3+), a white line that grows and narrows slightly
    with ``j`` (height ``0.55 + 0.05 j``, FWHM ``6.5 - 0.3 j`` eV), a pre-edge peak that grows
    slightly, and a post-edge oscillation whose phase moves with ``j``. Neighbouring states are
    therefore strongly correlated, which is what makes real valence-state unmixing hard.

    Parameters
    ----------
    L : int
        Number of states (>= 1).
    energy : array_like, optional
        Energies in eV; default :func:`default_energy_grid` (8250-8550 eV, 100 points).
    base_e0 : float
        Edge energy of state 1 in eV.
    shift : float
        Edge shift per state in eV (> 0 gives monotonically increasing edges).
    seed : int, optional
        If given, small random perturbations (+-2 % of white-line height, +-0.1 eV of edge
        width) are added, reproducibly. ``None`` = deterministic model.

    Returns
    -------
    energy : numpy.ndarray, shape (T,)
        Energies in eV.
    A : numpy.ndarray, shape (T, L)
        References as columns (edge-step normalized).
    names : list of str
        ``["state1", ..., "stateL"]``.
    """
    if int(L) < 1:
        raise ValueError(f"L must be >= 1, got {L}.")
    L = int(L)
    E = default_energy_grid(base_e0) if energy is None else np.asarray(energy, dtype=np.float64)
    rng = np.random.default_rng(seed) if seed is not None else None
    cols = []
    for j in range(L):
        wl_h = 0.55 + 0.05 * j
        ew = 2.0
        if rng is not None:
            wl_h *= 1.0 + rng.uniform(-0.02, 0.02)
            ew += rng.uniform(-0.1, 0.1)
        cols.append(
            xanes_spectrum(
                E,
                base_e0 + j * shift,
                edge_width=ew,
                white_line_height=wl_h,
                white_line_width=6.5 - 0.3 * j,
                pre_edge_height=0.03 + 0.005 * j,
                osc_phase=0.15 * j,
            )
        )
    A = np.stack(cols, axis=1)
    return E, A, [f"state{j + 1}" for j in range(L)]


def shared_data_dir() -> Path | None:
    """The shared real-data folder: ``$BIGXANES_SHARED_DATA``, else ``../shared/data`` next to
    the repository; None when neither exists."""
    cands = [os.environ.get("BIGXANES_SHARED_DATA")]
    cands += [str(Path(__file__).resolve().parents[2] / "shared" / "data")]
    for c in cands:
        if c and Path(c).is_dir():
            return Path(c)
    return None


def real_references(
    name: str,
    n_components: int,
    *,
    energy: np.ndarray | None = None,
    data_dir: str | os.PathLike | None = None,
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Measured reference spectra for simulating stacks from real spectra.

    Sets (``REAL_SETS``; files in the shared data folder, see its README):

    * ``"ni"``: Ni K edge, edge-step normalized (:func:`bigxanes.references.load_ni_references`):
      L = 2 gives Ni2+ (NiO) and Ni3+ (LiNiO2), the close pair of a Ni-rich cathode; L = 3
      adds Ni0 (foil). Default energies: :func:`default_energy_grid` with ``e0 = 8345``
      (8250-8550 eV, 100 points, 1 eV over the edge), as a TXM scan would have them.
    * ``"fe-l3"``: Fe L3 edge STXM references Fe2+ / Fe3+ (optical density as measured, on
      the stack's own 123 energies 700-730 eV), L = 2.
    * ``"mn"``: Mn K edge standards of ``athena_projects/Mn.prj`` (read and normalized by
      :func:`bigxanes.references.prj.read_athena_project`, ``norm``): MnO (Mn2+), Mn2O3
      (Mn3+), pyrolusite (MnO2, Mn4+), Mn foil (Mn0), Li2MnO3 (Mn4+, layered), L = 2..5 in
      that order. Default energies: :func:`default_energy_grid` with ``e0 = 6550``.
    * ``"fe-k"``: Fe K edge standards of ``Fe.prj``: Fe foil, hematite, goethite ("Goerthite"
      as labelled in the file), ferrihydrite (three Fe3+ oxides: nearly collinear), L = 2..4;
      default grid ``e0 = 7125``.

    Parameters
    ----------
    name : str
        Set name.
    n_components : int
        L, from 2 to the set's maximum; the first L components of the set's order are used.
    energy : array_like, optional
        Target energies in eV; the references are interpolated (no extrapolation).
    data_dir : path, optional
        Shared data folder; default :func:`shared_data_dir`.

    Returns
    -------
    energy (T,) eV, A (T, L), names.

    Raises
    ------
    FileNotFoundError
        When the shared data folder or the set's files are absent.
    """
    from .energy import interpolate_reference
    from .references import load_ni_references, read_table

    if name not in REAL_SETS:
        raise ValueError(f"unknown reference set {name!r}; choose one of {sorted(REAL_SETS)}.")
    max_l, order = REAL_SETS[name]
    L = int(n_components)
    if not 2 <= L <= max_l:
        raise ValueError(f"reference set {name!r} holds 2..{max_l} states, asked for {L}.")
    root = Path(data_dir) if data_dir is not None else shared_data_dir()
    if root is None or not root.is_dir():
        raise FileNotFoundError("shared data folder not found; set BIGXANES_SHARED_DATA.")
    if name in _PRJ:
        from .references.prj import read_athena_project

        fname, e0 = _PRJ[name]
        recs = {r.name: r for r in read_athena_project(root / "athena_projects" / fname)}
        E = default_energy_grid(e0) if energy is None else np.asarray(energy, dtype=np.float64)
        cols = [interpolate_reference(recs[c].energy, recs[c].norm, E) for c in order[:L]]
        return E, np.stack(cols, axis=1), list(order[:L])
    if name == "ni":
        e_all, A_all, names_all = load_ni_references(root / "ni_k_edge_refs")
    else:
        d = root / "stxm_fe_l3"
        e_all, v2, _ = read_table(d / "ref_fe2_reduced.txt")
        _, v3, _ = read_table(d / "ref_fe3_oxidized.txt")
        A_all, names_all = np.stack([v2[:, 0], v3[:, 0]], axis=1), ["Fe2+", "Fe3+"]
    cols = [names_all.index(c) for c in order[:L]]
    A = A_all[:, cols]
    if energy is None and name == "ni":
        energy = default_energy_grid(8345.0)
    if energy is None:
        return e_all, A, list(order[:L])
    E = np.asarray(energy, dtype=np.float64)
    return E, interpolate_reference(e_all, A, E), list(order[:L])
