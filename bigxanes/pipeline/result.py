"""Result assembly shared by both executors: variables, coords, attrs, mask and names
(docs/design.md, "Results").

The executor hands over the pass-1 channels ``P`` (NumPy in memory, dask in the engine), the
final RUM maps and a ``blocks`` callable that runs a block function over ``P``: the whole array
at once in memory (:func:`one_block`), ``map_blocks`` in the engine. Everything else, which
variables a method has, their dims, dtypes and descriptions, and the attrs, is decided here once.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import xarray as xr

from .. import __version__
from ..conventions import finalize_result
from ..kernels.maps import (
    MASK_THRESHOLD,
    edge50_fraction_block,
    lcf_outputs_block,
    material_mask,
)
from ..kernels.moments import gram
from ..kernels.pass1 import Pass1Layout
from ..kernels.quality import CHI2_WARN, chi2_from_rms, fit_quality_from_histogram
from ..kernels.uncertainty import lcf_std_block
from ..rum import History
from .prepare import Inputs

__all__ = [
    "EXECUTOR_ATTRS",
    "build_dataset",
    "clean_attrs",
    "method_variables",
    "one_block",
    "quality_attrs",
    "result_attrs",
    "result_coords",
    "verdict_attrs",
]

#: Attrs that describe how a run was executed or stored, not what it computed (only engine
#: results carry them; ``bigxanes_complete`` is the store's completion marker): the parity
#: tests compare every other attr.
EXECUTOR_ATTRS = (
    "bigxanes_complete",
    "engine",
    "input",
    "tiles",
    "state_mode",
    "state_tiles",
    "halo",
    "checkpoint_every",
    "checkpoint_seconds",
    "n_checkpoints",
)

DESCRIPTIONS = {
    "fraction": "fraction of each chemical state (sums to one)",
    "lcf_fraction": "fractions of the NNLS linear combination fit (the RUM start)",
    "fraction_std": (
        "standard deviation of each fraction: LCF: least-squares covariance with the pixel's "
        "residual variance, delta method; RUM: the same at the RUM solution and residual "
        "(linearized, ignores the prior: an upper bound); bigxanes.kernels.uncertainty"
    ),
    "scale": "per-pixel scale s of Y = A X diag(s)",
    "residual_rms": "RMS over energies of Y - A X s",
    "reduced_chi2": (
        "reduced chi2 T rms^2 / ((T - L) sigma^2): about 1 where the model explains the "
        "spectrum to its noise level sigma (from its second differences, or --noise-sigma)"
    ),
    "mask": (
        f"True where scale > {MASK_THRESHOLD} x data_scale (99th percentile of the NNLS scale) "
        "and the data are finite"
    ),
    "edge50": "energy of the first crossing of the Edge-50 level (eV)",
    "white_line_energy": "peak energy of the normalized spectrum above e0, quadratic fit (eV)",
    "white_line_height": "peak height of the normalized spectrum (edge-step units)",
    "references": (
        "reference spectra as fitted (pre-edge baseline removed when baseline='pre-edge')"
    ),
}

BlockMap = Callable[..., Any]


def one_block(func: Callable[..., np.ndarray], arr: np.ndarray, n_out: int, **kw: Any):
    """The in-memory ``blocks``: the whole array is one block."""
    return func(arr, **kw)


def method_variables(
    inputs: Inputs,
    P: Any,
    p1: Pass1Layout,
    scale: float,
    sdims: tuple[str, ...],
    blocks: BlockMap,
    *,
    rum_maps: Any = None,
    e50_refs: np.ndarray | None = None,
    noise_sigma: float | None = None,
) -> dict[str, tuple[tuple[str, ...], Any]]:
    """The result variables of ``inputs.method`` as ``name -> (dims, array)``.

    ``P``: pass-1 channels; ``rum_maps``: the stacked :func:`~bigxanes.kernels.maps.
    rum_outputs_block` of the final state (RUM); ``e50_refs``: the references' Edge-50
    energies (Edge-50 with two references); ``noise_sigma``: the noise std (stack units) of
    the ``reduced_chi2`` map, None = each spectrum's own σ̂ from pass 1 (``sigma`` channel).
    """
    method, L, T = inputs.method, inputs.n_components, inputs.energy.size
    fd = ("component",) + sdims
    bad = P[p1.slices["bad"]][0]
    v: dict[str, tuple[tuple[str, ...], Any]] = {}
    if L:
        lo = blocks(
            lcf_outputs_block,
            P,
            L + 3,
            p1=p1,
            n_energies=T,
            scale=scale,
            nnls_only=method != "lcf",
        )
        lcf_mask = lo[L + 2] > 0.5
        if method == "lcf":
            v.update(fraction=(fd, lo[:L]), scale=(sdims, lo[L]), mask=(sdims, lcf_mask))
            v["residual_rms"] = (sdims, lo[L + 1])
            sd = blocks(lcf_std_block, P, L, p1=p1, AtA=gram(inputs.A), n_energies=T)
            v["fraction_std"] = (fd, sd)
        else:
            v["lcf_fraction"] = (fd, lo[:L])
    if method == "edge50":
        e50 = P[p1.slices["edge50"]][0]
        v["edge50"] = (sdims, e50)
        v["white_line_energy"] = (sdims, P[p1.slices["wl_energy"]][0])
        v["white_line_height"] = (sdims, P[p1.slices["wl_height"]][0])
        if L:
            v.update(scale=(sdims, lo[L]), residual_rms=(sdims, lo[L + 1]))
            v["mask"] = (sdims, np.isfinite(e50) & lcf_mask)
            if e50_refs is not None:
                fr = blocks(edge50_fraction_block, P, 2, p1=p1, e_refs=e50_refs)
                v["fraction"] = (fd, fr)
        else:
            v["scale"] = (sdims, P[p1.slices["edge_step"]][0])
            v["mask"] = (sdims, np.isfinite(e50) & (bad == 0))
    if rum_maps is not None:
        v.update(fraction=(fd, rum_maps[:L]), scale=(sdims, rum_maps[L]))
        v["residual_rms"] = (sdims, rum_maps[L + 1])
        v["fraction_std"] = (fd, rum_maps[L + 2 : 2 * L + 2])
        v["mask"] = (sdims, material_mask(rum_maps[L], scale, bad))
    if L and "residual_rms" in v:
        sig = P[p1.slices["sigma"]][0] if noise_sigma is None else float(noise_sigma)
        v["reduced_chi2"] = (sdims, chi2_from_rms(v["residual_rms"][1], sig, T, L))
    return {
        k: (d, a if k == "mask" else a.astype(np.float32))
        for k, (d, a) in sorted(v.items())  # one order in both executors
    }


def verdict_attrs(history: History) -> dict[str, Any]:
    """The run's verdict as attrs: ``converged``, ``stop_reason``, final ``rel_primal`` and
    ``rel_dual`` against ``tol``, ``rel_change`` (the maps' last change per iteration in units
    of the fraction noise; None when not computed), ``n_iterations`` and the one-line
    ``verdict``."""
    return {
        "converged": bool(history.converged),
        "stop_reason": history.stop_reason or None,
        "rel_primal": history.rel_primal,
        "rel_dual": history.rel_dual,
        "tol": history.tol,
        "rel_change": history.rel_change,
        "n_iterations": history.n_iterations,
        "verdict": history.verdict(),
    }


def quality_attrs(counts: np.ndarray, noise_sigma: float | None = None) -> dict[str, Any]:
    """Fit-quality attrs from the summed :func:`~bigxanes.kernels.quality.chi2_histogram` of
    the ``reduced_chi2`` map inside the mask: ``chi2_median``, ``chi2_p90``,
    ``chi2_frac_bad`` (share above :data:`~bigxanes.kernels.quality.CHI2_WARN`), ``fit_ok``,
    ``chi2_noise`` (where σ came from) and ``fit_verdict`` (one line)."""
    q = fit_quality_from_histogram(counts)
    finite = bool(np.isfinite(q.chi2_median))
    attrs: dict[str, Any] = {
        "chi2_median": q.chi2_median if finite else None,
        "chi2_p90": q.chi2_p90 if finite else None,
        "chi2_frac_bad": q.frac_bad if finite else None,
        "fit_ok": q.ok,
        "chi2_noise": "data" if noise_sigma is None else float(noise_sigma),
    }
    if not finite:
        attrs["fit_verdict"] = "fit quality unknown (no pixel with a noise estimate in the mask)"
    elif q.ok:
        attrs["fit_verdict"] = (
            f"fit ok: median reduced chi2 {q.chi2_median:.3g} (1 = noise level), "
            f"{100 * q.frac_bad:.0f}% of pixels above {CHI2_WARN:g}"
        )
    else:
        attrs["fit_verdict"] = "POOR fit: " + str(q.warning())
    return attrs


def result_attrs(
    inputs: Inputs, *, n_bad: int, scale: float, lcf_variant: str = "nnls", **extra: Any
) -> dict[str, Any]:
    """The attrs of a result: the method and its inputs, the data scale, and ``extra``
    (method-specific: e0 and level of Edge-50; λ, σ̂, params and history of RUM; the
    engine's :data:`EXECUTOR_ATTRS`)."""
    attrs: dict[str, Any] = {
        "method": inputs.method,
        "lcf_variant": lcf_variant if inputs.method == "lcf" else None,
        **inputs.attrs(),
        "n_nonfinite": int(n_bad),
        "mask_threshold": MASK_THRESHOLD,
        "data_scale": float(scale),
        **extra,
    }
    if inputs.method == "edge50" and inputs.A is not None and inputs.n_components != 2:
        attrs["note"] = (
            f"no fractions: Edge-50 reads fractions only for two references, got "
            f"{inputs.n_components}; use lcf or rum-tv for more states"
        )
    return attrs


def clean_attrs(attrs: Mapping[str, Any]) -> dict[str, Any]:
    """Attrs as stored: None dropped, bools as ints, numbers as Python numbers, everything else
    (lists, dicts: ``params``, ``history``, ``baseline_window_eV``) as a JSON string; and the
    package version."""
    clean: dict[str, Any] = {}
    for k, v in attrs.items():
        if v is None:
            continue
        if isinstance(v, bool | np.bool_):
            clean[k] = int(v)
        elif isinstance(v, str | int | float | np.integer | np.floating):
            clean[k] = v.item() if isinstance(v, np.generic) else v
        else:
            clean[k] = json.dumps(v)
    clean["version"] = __version__
    return clean


def result_coords(
    inputs: Inputs, spatial_coords: Mapping[str, Any], sdims: tuple[str, ...]
) -> dict[str, Any]:
    """Spatial coords present on the input, the component names and the fitted energies."""
    coords: dict[str, Any] = {d: spatial_coords[d] for d in sdims if d in spatial_coords}
    if inputs.names is not None:
        coords["component"] = np.asarray(inputs.names, dtype=object)
    coords["energy"] = ("energy", np.asarray(inputs.energy, dtype=np.float64), {"units": "eV"})
    return coords


def build_dataset(
    inputs: Inputs,
    variables: Mapping[str, tuple[tuple[str, ...], Any]],
    coords: Mapping[str, Any],
    attrs: Mapping[str, Any],
    *,
    user_mask: Any = None,
    pixel_size: Any = None,
) -> xr.Dataset:
    """The result Dataset (NumPy- or dask-backed) with the fitted references, descriptions,
    cleaned attrs and the output conventions.

    ``user_mask`` (``--mask``; NumPy or dask, spatial dims) is combined with the material
    mask: ``mask = mask & user_mask``. Then :func:`bigxanes.conventions.finalize_result`
    (once, for both executors): ``fraction`` NaN outside ``mask`` (raw values kept as
    ``fraction_unmasked``), CF ``units``/``long_name`` on every variable, ``y``/``x`` (``z``)
    coordinates, in micrometres when ``pixel_size`` (or the ``pixel_size_um`` attr) is known.
    """
    v = dict(variables)
    if inputs.A is not None:
        v["references"] = (("energy", "component"), np.asarray(inputs.A, dtype=np.float64))
    ds = xr.Dataset({k: (tuple(d), a) for k, (d, a) in v.items()}, coords=dict(coords))
    for k in ds.data_vars:
        if k in DESCRIPTIONS:
            ds[k].attrs["description"] = DESCRIPTIONS[k]
    if "edge50" in ds:
        ds["edge50"].attrs["units"] = "eV"
    if user_mask is not None and "mask" in ds:
        sdims = ds["mask"].dims
        ds["mask"] = ds["mask"] & xr.DataArray(user_mask, dims=sdims)
        ds["mask"].attrs["description"] = DESCRIPTIONS["mask"] + ", inside the user mask"
    ds.attrs.update(clean_attrs(attrs))
    return finalize_result(ds, pixel_size)
