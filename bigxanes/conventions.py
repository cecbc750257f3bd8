"""Output conventions applied to every result Dataset before it is written (one place).

:func:`finalize_result` gives CF-style ``units``/``long_name`` to every variable, NaN
fractions outside the mask (the raw numbers kept as ``fraction_unmasked``), ``y``/``x``
(``z``) coordinates in micrometres when the pixel size is known, and renames a stack variable
``stack`` (shadowed by :meth:`xarray.Dataset.stack`) to ``absorbance``.
:func:`consolidate` writes consolidated metadata so that a plain ``xr.open_zarr`` does not warn.
"""

from __future__ import annotations

import os

import numpy as np
import xarray as xr

from .store import STACK_VAR

__all__ = ["VARIABLE_ATTRS", "finalize_result", "consolidate"]

#: CF-style attributes of the variables bigxanes writes (units "1" = dimensionless).
VARIABLE_ATTRS: dict[str, dict[str, str]] = {
    "fraction": {"units": "1", "long_name": "fraction of each chemical state (NaN outside mask)"},
    "fraction_unmasked": {"units": "1", "long_name": "fraction of each state, unmasked"},
    "scale": {"units": "1", "long_name": "per-pixel scale s (edge step of the model)"},
    "residual_rms": {"units": "1", "long_name": "RMS residual of the fit over energies"},
    "mask": {"units": "1", "long_name": "sample mask (true where fractions are meaningful)"},
    "edge50": {"units": "eV", "long_name": "Edge-50 energy"},
    "white_line_energy": {"units": "eV", "long_name": "white-line (peak) energy"},
    "white_line_height": {"units": "1", "long_name": "white-line height (optical density)"},
    "lcf_fraction": {"units": "1", "long_name": "fraction by linear combination fitting"},
    "references": {"units": "1", "long_name": "reference spectra (optical density)"},
    STACK_VAR: {"units": "1", "long_name": "optical density (absorbance)"},
    "true_fraction": {"units": "1", "long_name": "true fraction (simulation)"},
    "true_scale": {"units": "1", "long_name": "true scale (simulation)"},
    "shift": {"units": "pixel", "long_name": "drift correction per energy"},
    "energy": {"units": "eV", "long_name": "X-ray energy"},
    "component": {"long_name": "chemical state (reference name)"},
}


def finalize_result(
    ds: xr.Dataset,
    pixel_size: float | tuple[float, ...] | None = None,
    *,
    keep_unmasked: bool = True,
    mask_fraction: bool = True,
) -> xr.Dataset:
    """Apply the output conventions to a result (or stack) Dataset; the input is not modified.

    Parameters
    ----------
    ds : xarray.Dataset
        A result (``fraction``, ``scale``, ``mask``, ...) or a stack store Dataset.
    pixel_size : float or tuple of float, optional
        Pixel (voxel) edge in micrometres, one for all axes or one per spatial axis; the
        spatial coordinates become ``index * pixel_size`` with ``units="um"``. Default: the
        ``pixel_size_um`` attribute when present, else pixel indices with ``units="pixel"``.
    keep_unmasked : bool
        Keep the raw fractions as ``fraction_unmasked``.
    mask_fraction : bool
        Set ``fraction`` to NaN where ``mask`` is False. False leaves ``fraction`` as stored
        (and adds no ``fraction_unmasked``), for a caller that masks block by block: on a
        lazily indexed (not dask) Dataset the masking would load the whole variable
        (:func:`bigxanes.export.export_result` does so).

    Returns
    -------
    xarray.Dataset
        With ``fraction`` NaN where ``mask`` is False (unless ``mask_fraction`` is False),
        every variable and coordinate carrying
        ``units`` and ``long_name``, and ``stack`` renamed to ``absorbance``.
    """
    out = ds.copy()
    if "stack" in out.data_vars and STACK_VAR not in out.data_vars:
        out = out.rename({"stack": STACK_VAR})
    if mask_fraction and "fraction" in out.data_vars and "mask" in out.data_vars:
        mask = out["mask"].astype(bool)
        if keep_unmasked and "fraction_unmasked" not in out.data_vars:
            out["fraction_unmasked"] = out["fraction"]
        out["fraction"] = out["fraction"].where(mask)
    spatial = [d for d in ("z", "y", "x") if d in out.dims]
    if pixel_size is None and "pixel_size_um" in out.attrs:
        pixel_size = out.attrs["pixel_size_um"]
    if pixel_size is not None:
        ps = np.atleast_1d(np.asarray(pixel_size, dtype=np.float64))
        if ps.size == 1:
            ps = np.repeat(ps, len(spatial))
        if ps.size != len(spatial) or np.any(ps <= 0):
            raise ValueError(
                f"pixel size {pixel_size!r} must be one positive number or one per spatial axis "
                f"({len(spatial)}); check --pixel-size"
            )
        out.attrs["pixel_size_um"] = [float(v) for v in ps]
    for i, d in enumerate(spatial):
        n = out.sizes[d]
        if pixel_size is not None:
            coord = np.arange(n) * ps[i]
            if d in out.coords and np.asarray(out[d].values).dtype.kind in "iuf":
                coord = np.asarray(out[d].values, dtype=np.float64) * ps[i]
            attrs = {"units": "um", "long_name": f"{d} position"}
        else:
            coord = out[d].values if d in out.coords else np.arange(n)
            attrs = {"units": "pixel", "long_name": f"{d} pixel index"}
        out = out.assign_coords({d: (d, coord, attrs)})
    for name in list(out.variables):
        base = VARIABLE_ATTRS.get(str(name), {})
        attrs = dict(out[name].attrs)
        for k, v in base.items():
            attrs.setdefault(k, v)
        if "units" not in attrs and out[name].dtype.kind in "iufb":
            attrs["units"] = "1"
        attrs.setdefault("long_name", str(name).replace("_", " "))
        out[name].attrs = attrs
    return out


def consolidate(path: str | os.PathLike) -> None:
    """Write consolidated metadata into a Zarr store (plain ``xr.open_zarr`` then reads quietly)."""
    import warnings

    import zarr

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*[Cc]onsolidated metadata.*")
        zarr.consolidate_metadata(str(path))
