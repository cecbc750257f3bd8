"""Input preparation shared by both executors (docs/design.md, "Inputs").

Energies, the energy window, the references and their names, the pre-edge baseline, the NaN
policy and the validation of choices happen here once; :mod:`bigxanes.api` adds only the
conversion of an in-memory stack (:func:`stack_array`) and :mod:`bigxanes.engine` only the
opening of a Zarr store.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import xarray as xr

from ..energy import as_ev, interpolate_reference
from ..eshift import fit_energy_shifts, parse_energy_shift, shift_references, shift_warning
from ..kernels.baseline import pre_edge_window_from_data, resolve_baseline, subtract_pre_edge
from ..kernels.normalize import find_e0
from ..validation import check_conditioning, check_energy_axis, check_references
from .defaults import LCF_VARIANTS, METHODS, MIN_ENERGIES, NAN_POLICIES, component_names

#: Bounds of a fitted energy shift (eV).
SHIFT_BOUNDS = (-10.0, 10.0)

__all__ = [
    "Inputs",
    "SHIFT_BOUNDS",
    "align_inputs",
    "needs_mean_spectrum",
    "reference_source",
    "shift_spec",
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


def check_options(
    method: str, *, variant: str = "nnls", nan_policy: str = "mask", weights: str = "none"
) -> None:
    """One-line ValueErrors for an unknown method, LCF variant, NaN policy or weights, and
    for weights with an LCF variant other than NNLS."""
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
    from ..kernels.weights import WEIGHT_KINDS

    if weights not in WEIGHT_KINDS:
        raise ValueError(f"unknown weights {weights!r}; choose one of {', '.join(WEIGHT_KINDS)}")
    if weights != "none" and method == "lcf" and variant != "nnls":
        raise ValueError(
            f"weights apply to the NNLS fit only, not the {variant!r} LCF variant: use "
            "--variant nnls or --weights none"
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


@dataclass
class Inputs:
    """Everything the executors need besides the stack itself.

    ``energy``: fitted energies (eV, after the window); ``select``: their indices in the
    stack (None: all); ``A``: references on them as fitted (shifted, baseline removed), or None;
    ``names``: component names; ``window``: pre-edge energies (boolean) or None;
    ``weights``: the data term's noise weights (:data:`~bigxanes.kernels.weights.WEIGHT_KINDS`)
    and ``i0`` the incident dose per fitted energy for counting weights (None: estimated).

    ``refs_energy``/``refs_raw``: the references as given, on their own grid (a finer, wider
    grid when read from files; the stack's grid for plain arrays), from which the shifted
    references are interpolated; ``shift_spec``: ``"none"``, ``"auto"`` or the shifts asked
    for; ``aligned``: True once :func:`align_inputs` has looked at the data (False: the
    references-only preparation that resource estimates use).
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
    refs_energy: np.ndarray | None = None
    refs_raw: np.ndarray | None = None
    shift_spec: str | np.ndarray = "none"
    shifts: np.ndarray | None = None
    shift_misfit: tuple[float, float] | None = None
    window_text: str | None = None
    references_source: str | None = None
    aligned: bool = False
    weights: str = "none"
    i0: np.ndarray | None = None

    @property
    def n_components(self) -> int:
        return 0 if self.A is None else int(self.A.shape[1])

    @property
    def shift_mode(self) -> str:
        """``"none"``, ``"auto"`` or ``"fixed"`` (shifts given in eV)."""
        return self.shift_spec if isinstance(self.shift_spec, str) else "fixed"

    def attrs(self) -> dict[str, Any]:
        """The attrs every result carries about its inputs (and the references' selection,
        energy shift and pre-edge window)."""
        e, w = self.energy, self.window
        out: dict[str, Any] = {
            "n_energies": int(e.size),
            "energy_min": float(e[0]),
            "energy_max": float(e[-1]),
            "energy_range": None if self.energy_range is None else list(self.energy_range),
            "nan_policy": self.nan_policy,
            "baseline": self.baseline if w is not None else "none",
            "baseline_window_eV": None if w is None else [float(e[w].min()), float(e[w].max())],
            "baseline_window": self.window_text if w is not None else None,
        }
        if self.A is not None:
            out.update(
                reference_names=list(self.names or []),
                references_source=self.references_source,
                energy_shift_mode=self.shift_mode,
                energy_shift=[float(v) for v in self.shifts] if self.shifts is not None else None,
                energy_shift_misfit=None
                if self.shift_misfit is None
                else [float(v) for v in self.shift_misfit],
            )
        return out


def reference_source(
    references: Any, energy: np.ndarray
) -> tuple[np.ndarray | None, np.ndarray | None, list[str] | None, str | None]:
    """The references as given: ``(own energies, values (Tr, L), names, source)``.

    An ``xr.DataArray`` ``(energy, component)`` keeps its own energies (the shifted
    references are interpolated from them), its ``component`` names and its ``source`` attr
    (the files it was read from); other inputs are on ``energy`` (the stack's grid).
    """
    if references is None:
        return None, None, None, None
    if isinstance(references, xr.DataArray):
        ref = references.transpose("energy", ...)
        names = None
        if "component" in ref.coords and ref.ndim == 2:
            names = [str(v) for v in ref["component"].values]
        R = np.asarray(ref.values, dtype=np.float64)
        R = R[:, None] if R.ndim == 1 else R
        if not np.all(np.isfinite(R)):
            raise ValueError("references contain NaN or Inf; fix the reference spectra")
        e_ref = as_ev(ref["energy"].values) if "energy" in ref.coords else energy
        if e_ref.size != R.shape[0]:
            raise ValueError(f"references have {R.shape[0]} values but {e_ref.size} energies")
        if e_ref.size > 1 and np.any(np.diff(e_ref) < 0):
            order = np.argsort(e_ref, kind="stable")
            e_ref, R = e_ref[order], R[order]
        src = references.attrs.get("source")
        if names is None or len(names) != R.shape[1]:
            names = component_names(R.shape[1])
        return e_ref, R, names, None if src is None else str(src)
    R = check_references(np.asarray(references, dtype=np.float64), energy.size)
    return energy, R, component_names(R.shape[1]), None


def reference_matrix(references: Any, energy: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """References as a validated ``(T, L)`` float64 matrix on ``energy`` and their names.

    An ``xr.DataArray`` ``(energy, component)`` is interpolated onto ``energy`` when its own
    energies differ and named by its ``component`` coordinate; other inputs must already be on
    ``energy`` and are named :func:`~.defaults.component_names`.
    """
    e_ref, R, names, _ = reference_source(references, energy)
    return _on_energies(e_ref, R, energy, names), list(names or [])


def _on_energies(
    e_ref: np.ndarray, R: np.ndarray, energy: np.ndarray, names: Sequence[str] | None = None
) -> np.ndarray:
    same = e_ref.shape == energy.shape and np.allclose(e_ref, energy, rtol=0, atol=1e-6)
    A = R if same else interpolate_reference(e_ref, R, energy)
    return check_references(A, energy.size, names)


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


def shift_spec(energy_shift: Any, n_refs: int) -> str | np.ndarray:
    """``energy_shift`` as ``"none"``, ``"auto"`` or ``n_refs`` shifts in eV (one value is used
    for every reference); a one-line ValueError naming ``--energy-shift`` otherwise."""
    if energy_shift is None:
        return "none"
    if isinstance(energy_shift, str):
        return parse_energy_shift(energy_shift, n_refs)
    vals = np.atleast_1d(np.asarray(energy_shift, dtype=np.float64))
    return parse_energy_shift(",".join(repr(float(v)) for v in vals), n_refs)


def prepare_inputs(
    method: str,
    energy: np.ndarray,
    references: Any,
    *,
    baseline: str,
    nan_policy: str,
    energy_range: Sequence[float] | None = None,
    energy_shift: Any = "none",
    weights: str = "none",
    i0: Any = None,
) -> Inputs:
    """Resolve energies, window, references, names and the baseline for ``method``, from the
    references alone (no look at the data).

    ``weights``/``i0``: the noise weights of the data term, checked here
    (:func:`check_weights`); ``i0`` (one value per stack energy) is cut to the window.

    The energy window is applied first and the references (on their own grid) are
    interpolated onto the fitted energies. The pre-edge window here comes from the
    references' edge and fixed shifts (``energy_shift`` values) are applied; ``"auto"`` shifts
    and the data's own edge need the data: :func:`align_inputs` finishes the preparation with
    the stack's mean spectrum (both executors call it; resource estimates do not).
    """
    e_ref, R, names, source = reference_source(references, energy)
    n_stack = int(energy.size)
    select = energy_selection(energy, energy_range)
    if select is not None:
        energy = energy[select]
    A = None if R is None else _on_energies(e_ref, R, energy, names)
    if method != "edge50" and A is None:
        raise ValueError(
            f"method {method!r} needs references: pass references= (--refs, or a store with a "
            "'references' variable)"
        )
    spec: str | np.ndarray = "none" if A is None else shift_spec(energy_shift, A.shape[1])
    shifts = None
    if A is not None:
        shifts = np.zeros(A.shape[1]) if isinstance(spec, str) else np.asarray(spec)
        if np.any(shifts != 0):
            A = check_references(shift_references(e_ref, R, shifts, energy), energy.size, names)
    window = None if method == "edge50" else resolve_baseline(baseline, energy, A)
    if window is not None:
        A = subtract_pre_edge(A, window)
    if A is not None and (select is not None or window is not None):
        check_conditioning(A, names)  # the matrix actually fitted (window, baseline removed)
    rng = None if energy_range is None else (float(energy_range[0]), float(energy_range[1]))
    text = None if window is None else _window_text(energy, window, "references' edge")
    i0v = check_weights(method, weights, i0, select, n_stack)
    return Inputs(
        method,
        energy,
        select,
        A,
        names,
        window,
        baseline,
        nan_policy,
        rng,
        refs_energy=e_ref,
        refs_raw=R,
        shift_spec=spec,
        shifts=shifts,
        window_text=text,
        references_source=source,
        weights=weights,
        i0=i0v,
    )


def check_weights(
    method: str, weights: str, i0: Any, select: np.ndarray | None, n_stack: int
) -> np.ndarray | None:
    """One-line ValueErrors for a weights option that cannot apply; the I0 per fitted energy.

    Weights apply to the fits with a data term (LCF NNLS, RUM-TV, RUM-PnP); ``i0`` only to
    counting weights, positive and finite, one value per energy of the stack.
    """
    from ..kernels.weights import WEIGHT_KINDS

    if weights not in WEIGHT_KINDS:
        raise ValueError(f"unknown weights {weights!r}; choose one of {', '.join(WEIGHT_KINDS)}")
    if weights == "none":
        if i0 is not None:
            raise ValueError("an I0 is used by counting weights only: add --weights counts")
        return None
    if method == "edge50":
        raise ValueError("Edge-50 has no data term to weight: drop --weights")
    if i0 is None:
        return None
    if weights != "counts":
        raise ValueError("an I0 is used by counting weights only: use --weights counts")
    v = np.asarray(i0, dtype=np.float64).reshape(-1)
    if v.size != n_stack:
        raise ValueError(f"I0 has {v.size} values for a stack of {n_stack} energies (--i0)")
    if select is not None:
        v = v[select]
    if not np.all(np.isfinite(v) & (v > 0)):
        raise ValueError("I0 must be positive and finite at every energy (--i0)")
    return v


def _window_text(energy: np.ndarray, window: np.ndarray, why: str) -> str:
    e = energy[window]
    return f"pre-edge window {e[0]:.1f}-{e[-1]:.1f} eV ({why})"


def _data_window_or_refs(
    E: np.ndarray, mean: np.ndarray, A: np.ndarray, refs_window: Any, refs_text: Any
) -> tuple[np.ndarray, str]:
    """The window below the data's and the references' edges; when fewer than 3 energies lie
    there (a stack cut just below its edge), the references-only window, said so."""
    try:
        window, _, text = pre_edge_window_from_data(E, mean, A)
        return window, text
    except ValueError:
        if refs_window is None:
            raise
        return refs_window, f"{refs_text}; fewer than 3 energies below the data's own edge"


def _data_window(E: np.ndarray, mean: np.ndarray, A: np.ndarray) -> np.ndarray | None:
    """The pre-edge window below the data's and the references' edges, or None when fewer
    than 3 energies lie there (the shift fit then uses the spectra as they are)."""
    try:
        return pre_edge_window_from_data(E, mean, A)[0]
    except ValueError:
        return None


def needs_mean_spectrum(inputs: Inputs) -> bool:
    """Whether :func:`align_inputs` reads the data: references with a pre-edge baseline (the
    data's edge), ``"auto"`` shifts, or ``"none"`` (the misalignment warning)."""
    if inputs.A is None or inputs.aligned:
        return False
    pre = inputs.method != "edge50" and inputs.baseline == "pre-edge"
    return pre or inputs.shift_mode in ("auto", "none")


def align_inputs(
    inputs: Inputs,
    mean_spectrum: Callable[[], np.ndarray],
    *,
    bounds: tuple[float, float] = SHIFT_BOUNDS,
    warn: bool = True,
) -> Inputs:
    """Finish :func:`prepare_inputs` with the data's mean spectrum (both executors).

    Steps (docs/design.md, "Energy shift and the pre-edge window"):

    1. ``m = mean_spectrum()``: the mean finite spectrum of the stack on the fitted energies
       (:func:`bigxanes.kernels.moments.mean_spectrum`), read only when needed
       (:func:`needs_mean_spectrum`).
    2. Pre-edge window below the data's own edge and the references' edge,
       ``E < min(e0_data, e0_refs) - 5 eV`` (:func:`bigxanes.kernels.baseline.
       pre_edge_window_from_data`).
    3. Energy shift: ``"auto"`` fits one shift per reference within ``bounds`` on ``m``
       (NNLS with free scale after removing the pre-edge mean, :func:`bigxanes.eshift.
       fit_energy_shifts`; the window of step 2 is used for that fit also with
       ``baseline="none"`` when it exists, so a flat background is not taken for a
       shift) and applies it, ``r_l(E - s_l)`` (a shift at a bound with a warning);
       ``"none"`` fits it too and warns
       (one line naming ``--energy-shift auto``) when a shift exceeds 1 eV or the misfit would
       fall by more than 20 % (:func:`bigxanes.eshift.shift_warning`).
    4. With shifts, the window is taken again below the shifted references' edge; the
       references' pre-edge mean is removed.
    """
    if not needs_mean_spectrum(inputs):
        return replace(inputs, aligned=True)
    E, e_ref, R = inputs.energy, inputs.refs_energy, inputs.refs_raw
    mean = np.asarray(mean_spectrum(), dtype=np.float64).reshape(-1)
    usable = mean.size == E.size and bool(np.all(np.isfinite(mean))) and np.ptp(mean) > 0
    pre = inputs.method != "edge50" and inputs.baseline == "pre-edge"
    mode = inputs.shift_mode
    shifts = np.asarray(inputs.shifts, dtype=np.float64)
    A_raw = _on_energies(e_ref, R, E, inputs.names) if mode != "fixed" else None
    window = inputs.window
    text = inputs.window_text
    if pre and usable:
        A0 = shift_references(e_ref, R, shifts, E) if A_raw is None else A_raw
        window, text = _data_window_or_refs(E, mean, A0, window, text)
    misfit = None
    if mode in ("auto", "none") and usable:
        fit_window = window if pre else _data_window(E, mean, A_raw)
        try:
            fit = fit_energy_shifts(E, mean, e_ref, R, bounds, window=fit_window)
        except ValueError:
            if mode == "auto":
                raise
            fit = None
        if fit is not None:
            misfit = (float(fit.misfit_unshifted), float(fit.misfit))
            if mode == "auto":
                shifts = np.asarray(fit.shifts, dtype=np.float64)
                at = (shifts <= bounds[0] + 0.01) | (shifts >= bounds[1] - 0.01)
                if warn and at.any():
                    bad = ", ".join(
                        f"{n} {v:+.1f} eV"
                        for n, v, a in zip(inputs.names or [], shifts, at, strict=False)
                        if a
                    )
                    warnings.warn(
                        f"fitted energy shift at the {bounds[0]:g}..{bounds[1]:g} eV bound ({bad}):"
                        " that reference may not belong to this sample or the energies may be "
                        "miscalibrated by more; check the references with 'bigxanes rank'",
                        UserWarning,
                        stacklevel=3,
                    )
            elif warn:
                msg = shift_warning(fit, list(inputs.names or []))
                if msg:
                    warnings.warn(msg, UserWarning, stacklevel=3)
    elif mode == "auto":
        raise ValueError(
            "energy_shift='auto' needs finite data to fit the shifts on, but the stack's mean "
            "spectrum is not usable (no finite pixel?); pass --energy-shift none or V[,V...]"
        )
    A = shift_references(e_ref, R, shifts, E) if np.any(shifts != 0) else A_raw
    if A is None:
        A = shift_references(e_ref, R, shifts, E)
    A = check_references(A, E.size)
    if pre and usable and np.any(shifts != 0):
        window, text = _data_window_or_refs(E, mean, A, window, text)
    if window is not None:
        A = subtract_pre_edge(A, window)
    return replace(
        inputs,
        A=A,
        window=window,
        window_text=text,
        shifts=shifts,
        shift_misfit=misfit,
        aligned=True,
    )


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


def weight_model(inputs: Inputs, moment_sums: Callable[[], np.ndarray]) -> Any:
    """The image's noise model for a weighted fit, or None (``inputs.weights == "none"``).

    Counting weights with a given I0 need no look at the data; otherwise ``moment_sums()``
    returns the summed :func:`~bigxanes.kernels.weights.noise_moments_block` of the whole
    stack (one block in memory, reduced over the tiles by the engine: one extra read).
    """
    from ..kernels.weights import weight_model_from_moments

    if inputs.weights == "none":
        return None
    if inputs.weights == "counts" and inputs.i0 is not None:
        return weight_model_from_moments("counts", None, inputs.n_components, inputs.i0)
    return weight_model_from_moments(inputs.weights, moment_sums(), inputs.n_components)


def pass1_layout(inputs: Inputs, variant: str = "nnls") -> Any:
    """The pass-1 channels of a run (:class:`~bigxanes.kernels.pass1.Pass1Layout`): the LCF
    ``variant`` for LCF, Edge-50's channels, the weighted normal equations with weights."""
    from ..kernels.pass1 import Pass1Layout

    m = inputs.method
    return Pass1Layout(
        inputs.n_components,
        variant if m == "lcf" else "nnls",
        m == "edge50",
        weighted=inputs.weights != "none",
    )
