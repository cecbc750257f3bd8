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
from ..kernels.maps import (
    MASK_THRESHOLD,
    edge50_fraction_block,
    lcf_outputs_block,
    material_mask,
)
from ..kernels.moments import gram
from ..kernels.pass1 import Pass1Layout
from ..kernels.uncertainty import lcf_std_block
from .prepare import Inputs

__all__ = [
    "EXECUTOR_ATTRS",
    "build_dataset",
    "clean_attrs",
    "method_variables",
    "one_block",
    "result_attrs",
    "result_coords",
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
    "mask": (
        f"True where scale > {MASK_THRESHOLD} x data_scale (99th percentile of the NNLS scale) "
        "and the data are finite"
    ),
    "edge50": "energy of the first crossing of the Edge-50 level (eV)",
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
) -> dict[str, tuple[tuple[str, ...], Any]]:
    """The result variables of ``inputs.method`` as ``name -> (dims, array)``.

    ``P``: pass-1 channels; ``rum_maps``: the stacked :func:`~bigxanes.kernels.maps.
    rum_outputs_block` of the final state (RUM); ``e50_refs``: the references' Edge-50
    energies (Edge-50 with two references).
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
    return {
        k: (d, a if k == "mask" else a.astype(np.float32))
        for k, (d, a) in sorted(v.items())  # one order in both executors
    }


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
) -> xr.Dataset:
    """The result Dataset (NumPy- or dask-backed) with the fitted references, descriptions and
    cleaned attrs."""
    v = dict(variables)
    if inputs.A is not None:
        v["references"] = (("energy", "component"), np.asarray(inputs.A, dtype=np.float64))
    ds = xr.Dataset({k: (tuple(d), a) for k, (d, a) in v.items()}, coords=dict(coords))
    for k in ds.data_vars:
        if k in DESCRIPTIONS:
            ds[k].attrs["description"] = DESCRIPTIONS[k]
    if "edge50" in ds:
        ds["edge50"].attrs["units"] = "eV"
    ds.attrs.update(clean_attrs(attrs))
    return ds
