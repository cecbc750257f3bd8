"""Export a result to formats other tools open: TIFF (Fiji), OME-Zarr (napari), NetCDF.

``bigxanes export RESULT OUT --format tiff|ome-zarr|netcdf`` calls :func:`export_result`.

- ``tiff``: a folder with one 32-bit float TIFF per map (``fraction_<component>.tif``,
  ``scale.tif``, ``residual_rms.tif``, ``mask.tif``, ``edge50.tif``, ...), ImageJ hyperstack
  metadata (axes ``YX`` or ``ZYX``) and the pixel size in the resolution tags (micrometres), so
  Fiji opens each map with its calibration.
- ``ome-zarr``: OME-NGFF 0.4 multiscale image (one resolution level, Zarr v2, the version
  most readers support) with the components as channels (axes ``c[z]yx``), channel labels in the
  ``omero`` metadata, pixel size as the scale transform; napari opens it (napari-ome-zarr).
- ``netcdf``: the whole Dataset (:func:`bigxanes.conventions.finalize_result` applied) via
  :meth:`xarray.Dataset.to_netcdf`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import xarray as xr

from .conventions import finalize_result

__all__ = ["FORMATS", "export_result", "map_variables"]

FORMATS = ("tiff", "ome-zarr", "netcdf")
_MAPS = (
    "scale",
    "residual_rms",
    "reduced_chi2",
    "mask",
    "edge50",
    "white_line_energy",
    "white_line_height",
)


def _open(result: str | os.PathLike | xr.Dataset) -> xr.Dataset:
    if isinstance(result, xr.Dataset):
        return result
    p = Path(result)
    if not p.exists():
        raise FileNotFoundError(f"result {p} does not exist; give the OUT of `bigxanes unmix`")
    with __import__("warnings").catch_warnings():
        __import__("warnings").filterwarnings("ignore", message=".*[Cc]onsolidated.*")
        return xr.open_zarr(p, chunks={})  # dask on the stored chunks: nothing loaded whole


def _pixel_size(ds: xr.Dataset, spatial: list[str]) -> list[float] | None:
    ps = ds.attrs.get("pixel_size_um")
    if ps is None:
        return None
    ps = [float(v) for v in np.atleast_1d(ps)]
    return ps * len(spatial) if len(ps) == 1 else ps


def map_variables(ds: xr.Dataset) -> dict[str, xr.DataArray]:
    """The 2-D/3-D maps of a result, one entry per image: ``fraction_<component>``, ``scale``...

    Fractions are taken as written (NaN outside the mask after
    :func:`~bigxanes.conventions.finalize_result`).
    """
    spatial = [d for d in ("z", "y", "x") if d in ds.dims]
    maps: dict[str, xr.DataArray] = {}
    for var in ("fraction", "lcf_fraction"):
        if var in ds.data_vars and "component" in ds[var].dims:
            for c in ds["component"].values:
                maps[f"{var}_{c}"] = ds[var].sel(component=c)
    for name in _MAPS:
        if name in ds.data_vars and list(ds[name].dims) == spatial:
            maps[name] = ds[name]
    return maps


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)


def _export_tiff(ds: xr.Dataset, out: Path) -> list[Path]:
    import tifffile

    spatial = [d for d in ("z", "y", "x") if d in ds.dims]
    ps = _pixel_size(ds, spatial)
    out.mkdir(parents=True, exist_ok=True)
    files = []
    for name, da_ in map_variables(ds).items():
        arr = _pages(da_) if da_.ndim == 3 else np.asarray(da_.values, dtype=np.float32)
        kw = {"shape": tuple(da_.shape), "dtype": np.float32} if da_.ndim == 3 else {}
        meta = {"axes": "ZYX" if da_.ndim == 3 else "YX", "unit": "um" if ps else "pixel"}
        meta["Info"] = json.dumps(
            {"variable": name, "units": da_.attrs.get("units", ""), "bigxanes": True}
        )
        if ps:
            kw["resolution"] = (1.0 / ps[-1], 1.0 / ps[-2])
            if da_.ndim == 3:
                meta["spacing"] = ps[0]
        f = out / f"{_safe(name)}.tif"
        tifffile.imwrite(f, arr, imagej=True, metadata=meta, **kw)
        files.append(f)
    return files


def _pages(da_: xr.DataArray):
    """The z slices of a 3-D map, computed one z-chunk slab at a time (the client holds a
    slab of the map, never the whole volume), as float32 pages for ``tifffile``."""
    chunks = da_.chunks[0] if da_.chunks is not None else (da_.shape[0],)
    z0 = 0
    for tz in chunks:
        slab = np.asarray(da_.isel({da_.dims[0]: slice(z0, z0 + tz)}).values, dtype=np.float32)
        yield from slab
        z0 += tz


def _export_ome_zarr(ds: xr.Dataset, out: Path) -> Path:
    import zarr
    from ome_zarr.format import FormatV04
    from ome_zarr.io import parse_url
    from ome_zarr.writer import write_image

    spatial = [d for d in ("z", "y", "x") if d in ds.dims]
    maps = map_variables(ds)
    names = [n for n in maps if n.startswith("fraction_")] or list(maps)
    import dask.array as dsa

    # dask: written chunk by chunk by ome-zarr's writer, never held whole
    data = dsa.stack([dsa.asarray(maps[n].data).astype(np.float32) for n in names])
    ps = _pixel_size(ds, spatial) or [1.0] * len(spatial)
    fmt = FormatV04()
    store = parse_url(str(out), mode="w", fmt=fmt).store
    root = zarr.group(store=store, overwrite=True, zarr_format=2)
    axes = [{"name": "c", "type": "channel"}] + [
        {"name": d, "type": "space", "unit": "micrometer"} for d in spatial
    ]
    write_image(
        data,
        group=root,
        scale_factors=[],
        fmt=fmt,
        axes=axes,
        scale={"c": 1.0, **dict(zip(spatial, ps, strict=True))},
        storage_options={"chunks": (1,) + tuple(min(256, n) for n in data.shape[1:])},
    )
    hi = float(dsa.nanmax(dsa.where(dsa.isfinite(data), data, np.nan)).compute())
    hi = hi if np.isfinite(hi) else 1.0
    colors = ["FF0000", "00FF00", "0000FF", "FFFF00", "FF00FF", "00FFFF"]
    root.attrs["omero"] = {
        "version": "0.4",
        "channels": [
            {
                "label": n.removeprefix("fraction_"),
                "color": colors[i % len(colors)],
                "window": {"start": 0.0, "end": hi, "min": 0.0, "max": hi},
                "active": True,
            }
            for i, n in enumerate(names)
        ],
    }
    return out


def export_result(
    result_path_or_ds: str | os.PathLike | xr.Dataset,
    out: str | os.PathLike,
    format: str = "tiff",
    *,
    pixel_size: float | None = None,
    overwrite: bool = False,
) -> Path:
    """``bigxanes export RESULT OUT --format tiff|ome-zarr|netcdf``.

    Parameters
    ----------
    result_path_or_ds : path or xarray.Dataset
        A result store (or Dataset) with ``fraction`` and the maps.
    out : path
        A folder of TIFFs, an ``.ome.zarr`` directory or a ``.nc`` file.
    format : {"tiff", "ome-zarr", "netcdf"}
    pixel_size : float, optional
        Micrometres per pixel, when the result does not record it (``--pixel-size``).
    overwrite : bool
        Replace an existing OUT.

    Returns
    -------
    pathlib.Path
        ``out``.
    """
    fmt = str(format).lower()
    if fmt not in FORMATS:
        raise ValueError(
            f"unknown export format {format!r}; choose --format tiff, ome-zarr or netcdf"
        )
    out = Path(out)
    if out.exists() and not overwrite:
        raise FileExistsError(f"output {out} already exists; pass --overwrite to replace it")
    ds = finalize_result(_open(result_path_or_ds), pixel_size=pixel_size)
    if out.exists():
        import shutil

        shutil.rmtree(out) if out.is_dir() else out.unlink()
    if fmt == "tiff":
        _export_tiff(ds, out)
    elif fmt == "ome-zarr":
        _export_ome_zarr(ds, out)
    else:
        clean = ds.copy()
        for name in list(clean.variables):
            if clean[name].dtype == object:
                clean[name] = clean[name].astype(str)
            if clean[name].dtype == bool:
                clean[name] = clean[name].astype(np.uint8)
        clean.attrs = {
            k: (json.dumps(v) if not isinstance(v, (str, int, float)) else v)
            for k, v in clean.attrs.items()
        }
        clean.to_netcdf(out)
    return out
