"""Input preparation shared by both executors (docs/design.md, "Inputs").

Energies, the energy window, the references and their names, the pre-edge baseline, the NaN
policy and the validation of choices happen here once; :mod:`bigxanes.api` adds only the
conversion of an in-memory stack (:func:`stack_array`) and :mod:`bigxanes.engine` only the
opening of a Zarr store.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import xarray as xr

from ..energy import as_ev, interpolate_reference
from ..kernels.baseline import resolve_baseline, subtract_pre_edge
from ..kernels.normalize import find_e0
from ..validation import check_energy_axis, check_references
from .defaults import LCF_VARIANTS, METHODS, MIN_ENERGIES, NAN_POLICIES, component_names

__all__ = [
    "Inputs",
    "check_options",
    "edge50_e0",
    "energy_selection",
    "prepare_inputs",
    "reference_matrix",
    "Selection",
    "spatial_dims",
    "spatial_selection",
    "stack_array",
]


def spatial_dims(ndim: int) -> tuple[str, ...]:
    """Names of the spatial dimensions of a 2-D image or a 3-D volume."""
    return ("y", "x") if ndim == 2 else ("z", "y", "x")


def check_options(method: str, *, variant: str = "nnls", nan_policy: str = "mask") -> None:
    """One-line ValueErrors for an unknown method, LCF variant or NaN policy."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    if variant not in LCF_VARIANTS:
        raise ValueError(
            f"unknown LCF variant {variant!r}; choose one of {', '.join(LCF_VARIANTS)}"
        )
    if nan_policy not in NAN_POLICIES:
        raise ValueError(
            f"nan_policy must be one of {', '.join(repr(p) for p in NAN_POLICIES)}, "
            f"got {nan_policy!r}"
        )


def stack_array(stack: Any, energy: Any = None) -> tuple[np.ndarray, np.ndarray, dict]:
    """An in-memory stack as ``(T, *spatial)`` array, its energies and its spatial coords.

    Accepts an ``xr.Dataset`` with a ``stack`` variable, an ``xr.DataArray`` with an ``energy``
    dimension (and coordinate, unless ``energy`` is given), or an array plus ``energy``.
    """
    if isinstance(stack, xr.Dataset):
        stack = stack["stack"]
    if isinstance(stack, xr.DataArray):
        if "energy" not in stack.dims:
            raise ValueError(f"stack needs an 'energy' dimension, has dims {stack.dims}")
        stack = stack.transpose("energy", ...)
        if energy is None:
            if "energy" not in stack.coords:
                raise ValueError("stack has no 'energy' coordinate; pass energy=[...] in eV")
            energy = stack["energy"].values
        coords = {d: stack[d].values for d in stack.dims[1:] if d in stack.coords}
        Y = np.asarray(stack.values)
    else:
        Y = np.asarray(stack)
        coords = {}
        if energy is None:
            raise ValueError("a NumPy stack needs energy=[...] (one energy per image, in eV)")
    if Y.ndim not in (3, 4):
        raise ValueError(
            f"stack must have 3 (energy, y, x) or 4 (energy, z, y, x) dimensions, got {Y.ndim}"
        )
    energy = as_ev(check_energy_axis(np.asarray(energy, dtype=np.float64), Y.shape[0]))
    return Y, energy, coords


def reference_matrix(references: Any, energy: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """References as a validated ``(T, L)`` float64 matrix on ``energy`` and their names.

    An ``xr.DataArray`` ``(energy, component)`` is interpolated onto ``energy`` when its own
    energies differ and named by its ``component`` coordinate; other inputs must already be on
    ``energy`` and are named :func:`~.defaults.component_names`.
    """
    names = None
    if isinstance(references, xr.DataArray):
        ref = references.transpose("energy", ...)
        if "component" in ref.coords and ref.ndim == 2:
            names = [str(v) for v in ref["component"].values]
        A = np.asarray(ref.values, dtype=np.float64)
        A = A[:, None] if A.ndim == 1 else A
        if not np.all(np.isfinite(A)):
            raise ValueError("references contain NaN or Inf; fix the reference spectra")
        if "energy" in ref.coords:
            e_ref = as_ev(ref["energy"].values)
            if e_ref.shape != energy.shape or not np.allclose(e_ref, energy, rtol=0, atol=1e-6):
                A = interpolate_reference(e_ref, A, energy)
    else:
        A = np.asarray(references, dtype=np.float64)
    A = check_references(A, energy.size)
    if names is None or len(names) != A.shape[1]:
        names = component_names(A.shape[1])
    return A, names


def energy_selection(energy: np.ndarray, energy_range: Sequence[float] | None) -> np.ndarray | None:
    """Indices of the energies inside ``energy_range`` (eV, inclusive); None keeps all."""
    if energy_range is None:
        return None
    lo, hi = (float(v) for v in energy_range)
    sel = (energy >= lo) & (energy <= hi)
    if sel.sum() < MIN_ENERGIES:
        raise ValueError(
            f"energy_range {tuple(energy_range)} keeps {int(sel.sum())} energies of "
            f"{energy.min():.1f}..{energy.max():.1f} eV; widen it (--energy-range)"
        )
    return np.flatnonzero(sel)


@dataclass
class Inputs:
    """Everything the executors need besides the stack itself.

    ``energy``: fitted energies (eV, after the window); ``select``: their indices in the
    stack (None: all); ``A``: references on them as fitted (baseline removed), or None;
    ``names``: component names; ``window``: pre-edge energies (boolean) or None.
    """

    method: str
    energy: np.ndarray
    select: np.ndarray | None
    A: np.ndarray | None
    names: list[str] | None
    window: np.ndarray | None
    baseline: str
    nan_policy: str
    energy_range: tuple[float, float] | None = None
    extra_attrs: dict[str, Any] = field(default_factory=dict)

    @property
    def n_components(self) -> int:
        return 0 if self.A is None else int(self.A.shape[1])

    def attrs(self) -> dict[str, Any]:
        """The attrs every result carries about its inputs."""
        e, w = self.energy, self.window
        return {
            "n_energies": int(e.size),
            "energy_min": float(e[0]),
            "energy_max": float(e[-1]),
            "energy_range": None if self.energy_range is None else list(self.energy_range),
            "nan_policy": self.nan_policy,
            "baseline": self.baseline if w is not None else "none",
            "baseline_window_eV": None if w is None else [float(e[w].min()), float(e[w].max())],
        }


def prepare_inputs(
    method: str,
    energy: np.ndarray,
    references: Any,
    *,
    baseline: str,
    nan_policy: str,
    energy_range: Sequence[float] | None = None,
) -> Inputs:
    """Resolve energies, window, references, names and the baseline for ``method``.

    The references are resolved on the full energy grid, then the window is applied to both;
    the pre-edge baseline window comes from the windowed references (not used by Edge-50,
    which normalizes each spectrum itself) and is removed from them here (from the data inside
    pass 1).
    """
    A, names = (None, None) if references is None else reference_matrix(references, energy)
    select = energy_selection(energy, energy_range)
    if select is not None:
        energy = energy[select]
        A = None if A is None else A[select]
    window = None if method == "edge50" else resolve_baseline(baseline, energy, A)
    if window is not None:
        A = subtract_pre_edge(A, window)
    if method != "edge50" and A is None:
        raise ValueError(
            f"method {method!r} needs references: pass references= (--refs, or a store with a "
            "'references' variable)"
        )
    rng = None if energy_range is None else (float(energy_range[0]), float(energy_range[1]))
    return Inputs(method, energy, select, A, names, window, baseline, nan_policy, rng)


def edge50_e0(
    energy: np.ndarray, A: np.ndarray | None, mean_spectrum: Callable[[], np.ndarray]
) -> float:
    """The one e0 of Edge-50: the derivative maximum of the references' mean spectrum, or of
    the mean finite spectrum of the data (``mean_spectrum()``) without references."""
    mean = A.mean(axis=1) if A is not None else np.asarray(mean_spectrum(), dtype=np.float64)
    return float(find_e0(energy, mean))


@dataclass
class Selection:
    """Where a run fits and reports: a region (crop) and a sample mask, resolved once.

    ``slices``: the region as slices of the spatial axes (None: the whole field);
    ``mask``: boolean mask of the cropped field (None: no user mask); ``attrs``: what the
    result records about them (``region``, ``user_mask``, ``n_user_mask``).
    """

    slices: tuple[slice, ...] | None = None
    mask: np.ndarray | None = None
    attrs: dict[str, Any] = field(default_factory=dict)

    def coords(self, sdims: Sequence[str], coords: dict[str, Any]) -> dict[str, Any]:
        """Spatial coords of the cropped field: the input's, else the pixel indices of the
        region in the whole field (so a region's maps keep their place)."""
        out = dict(coords)
        if self.slices is not None:
            for d, s in zip(sdims, self.slices, strict=True):
                out.setdefault(d, np.arange(s.start, s.stop))
        return out


def spatial_selection(stack: xr.DataArray, region: Any = None, mask: Any = None) -> Selection:
    """Resolve ``region`` (``"y0:y1,x0:x1[,z0:z1]"`` or slices) and ``mask`` for a stack.

    ``mask`` is a ``.tif``/``.npy`` file or a boolean array of the whole field (cropped to the
    region here), or ``"auto"``: Otsu's threshold on the edge jump of the cropped stack
    (:func:`bigxanes.region_spectra.edge_jump_map`, lazy on a dask-backed stack: one extra
    read). Both executors call this with the full stack (before the energy window), so their
    selections are identical.

    Parameters
    ----------
    stack : xarray.DataArray
        ``(energy, [z], y, x)``, NumPy- or dask-backed.
    region, mask : see above (None: not used)

    Returns
    -------
    Selection
    """
    from ..region_spectra import edge_jump_map
    from ..regions import auto_mask, load_mask, parse_region

    spatial = tuple(str(d) for d in stack.dims[1:])
    shape = tuple(int(n) for n in stack.shape[1:])
    sel = Selection()
    if region is not None:
        sel.slices = parse_region(region, shape) if isinstance(region, str) else tuple(region)
        sel.attrs["region"] = ",".join(f"{s.start}:{s.stop}" for s in sel.slices)
    if mask is None:
        return sel
    crop = sel.slices if sel.slices is not None else tuple(slice(0, n) for n in shape)
    if isinstance(mask, str) and mask == "auto":
        sub = stack.isel(dict(zip(spatial, crop, strict=True)))
        m = auto_mask(np.asarray(edge_jump_map(sub).values))
        sel.attrs["user_mask"] = "auto (Otsu on the edge jump)"
    else:
        if isinstance(mask, np.ndarray | xr.DataArray):
            m = np.asarray(mask).astype(bool)
            if m.shape != shape:
                raise ValueError(
                    f"mask has shape {m.shape} but the images are {shape}; give a --mask of "
                    "the same size"
                )
            sel.attrs["user_mask"] = "array"
        else:
            m = load_mask(mask, shape)
            sel.attrs["user_mask"] = str(mask)
        m = m[crop]
    if not m.any():
        raise ValueError("the mask selects no pixel (inside the region); check --mask / --region")
    sel.mask = np.asarray(m, dtype=bool)
    sel.attrs["n_user_mask"] = int(sel.mask.sum())
    return sel
