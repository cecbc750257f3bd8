"""Export a result to formats other tools open: TIFF (Fiji), OME-Zarr (napari), NetCDF.

``bigxanes export RESULT OUT --format tiff|ome-zarr|netcdf`` calls :func:`export_result`.

- ``tiff``: a folder with one 32-bit float TIFF per map (``fraction_<component>.tif``,
  ``scale.tif``, ``residual_rms.tif``, ``mask.tif``, ``edge50.tif``, ...), ImageJ hyperstack
  metadata (axes ``YX`` or ``ZYX``) and the pixel size in the resolution tags (micrometres), so
  Fiji opens each map with its calibration.
- ``ome-zarr``: OME-NGFF 0.4 multiscale image (one resolution level ``s0``, Zarr v2, the version
  most readers support) with the components as channels (axes ``c[z]yx``), channel labels in the
  ``omero`` metadata, pixel size as the scale transform; napari opens it (napari-ome-zarr).
- ``netcdf``: the whole Dataset (:func:`bigxanes.conventions.finalize_result` applied) via
  :meth:`xarray.Dataset.to_netcdf`.

Memory (issue 16): for ``tiff`` and ``ome-zarr`` a result path is opened lazily indexed
(xarray without dask) and each map is read block by block from its stored Zarr chunks, so the
exporting process never holds a whole map, nor a dask graph of one:

- TIFF: a 3-D map is written page by page from z-slabs one stored z-tile thick (float32,
  ``t_z * n_y * n_x * 4`` bytes: the whole map only when ``n_z <= t_z``); each slab is filled
  one stored y-tile row at a time; a 2-D map is one page.
- OME-Zarr: the image is written one output chunk at a time; chunks are ``(1, n_y', n_x')``
  (2-D) or ``(1, t_z, n_y', n_x')`` (3-D) with ``n' = min(256, n)`` and ``t_z`` the stored
  z-tile; the ``omero`` window maximum is accumulated over the chunks (no second pass).
- NetCDF: opened with dask and written by xarray chunk by chunk.

``fraction`` is set to NaN outside ``mask`` block by block (the convention of
:func:`~bigxanes.conventions.finalize_result`, which would load a lazily indexed variable whole).
"""

from __future__ import annotations

import itertools
import json
import os
import warnings
from collections.abc import Hashable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import xarray as xr

from .conventions import finalize_result
from .store import DEFAULT_TILE_3D

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
#: y/x edge of the OME-Zarr chunks (the z edge of 3-D chunks is the stored z-tile).
_OME_TILE = 256
#: OME-Zarr colours of the channels, in turn.
_COLORS = ("FF0000", "00FF00", "0000FF", "FFFF00", "FF00FF", "00FFFF")


def _open(result: str | os.PathLike | xr.Dataset, *, lazy: bool) -> xr.Dataset:
    """The result as a Dataset; a path is opened lazily indexed (``lazy``) or with dask."""
    if isinstance(result, xr.Dataset):
        return result
    p = Path(result)
    if not p.exists():
        raise FileNotFoundError(f"result {p} does not exist; give the OUT of `bigxanes unmix`")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*[Cc]onsolidated.*")
        # chunks=None: lazily indexed arrays, a block read touches only its Zarr chunks (no dask
        # graph, nothing loaded whole); chunks={}: dask on the stored chunks, which
        # ``to_netcdf`` writes chunk by chunk
        return xr.open_zarr(p, chunks=None if lazy else {})


def _spatial(ds: xr.Dataset) -> list[str]:
    return [d for d in ("z", "y", "x") if d in ds.dims]


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
    spatial = _spatial(ds)
    maps: dict[str, xr.DataArray] = {}
    for var in ("fraction", "lcf_fraction"):
        if var in ds.data_vars and "component" in ds[var].dims:
            for c in ds["component"].values:
                maps[f"{var}_{c}"] = ds[var].sel(component=c)
    for name in _MAPS:
        if name in ds.data_vars and list(ds[name].dims) == spatial:
            maps[name] = ds[name]
    return maps


@dataclass(frozen=True)
class _Map:
    """One exported map, read block by block.

    Attributes
    ----------
    name : str
        ``fraction_<component>``, ``scale``, ...
    data : xarray.DataArray
        The map, dims in ``(z,) y, x`` order (lazily indexed, dask or NumPy).
    mask : xarray.DataArray or None
        For ``fraction`` maps: the map is NaN where ``mask`` is False.
    tiles : dict
        Block edge per spatial dim (the stored Zarr chunk, else the dask chunk).
    """

    name: str
    data: xr.DataArray
    mask: xr.DataArray | None
    tiles: dict[Hashable, int]


def _tiles(da_: xr.DataArray) -> dict[Hashable, int]:
    """Block edge per dim: the dask chunk, else the stored Zarr chunk (``encoding``), else
    :data:`~bigxanes.store.DEFAULT_TILE_3D` along ``z`` and the whole extent along ``y``/``x``."""
    if da_.chunks is not None:
        return {d: max(max(c, default=1), 1) for d, c in zip(da_.dims, da_.chunks, strict=True)}
    stored = da_.encoding.get("preferred_chunks") or {}
    tiles: dict[Hashable, int] = {}
    for d, n in da_.sizes.items():
        default = DEFAULT_TILE_3D if d == "z" else n
        tiles[d] = max(1, min(int(stored.get(d, default)), n))
    return tiles


def _maps(ds: xr.Dataset) -> list[_Map]:
    """:func:`map_variables` of ``ds`` with their block edges; ``fraction_*`` maps carry the
    mask (``ds`` has ``fraction`` as stored: ``finalize_result(..., mask_fraction=False)``)."""
    spatial = _spatial(ds)
    mask = None
    if "mask" in ds.data_vars and sorted(map(str, ds["mask"].dims)) == sorted(spatial):
        mask = ds["mask"].transpose(*spatial)
    out = []
    for name, da_ in map_variables(ds).items():
        da_ = da_.transpose(*spatial)
        out.append(_Map(name, da_, mask if name.startswith("fraction_") else None, _tiles(da_)))
    return out


def _fill(buf: np.ndarray, m: _Map, region: tuple[slice, ...]) -> None:
    """Fill ``buf`` (float32, the shape of ``region``) with map ``m`` over ``region``.

    Reads one stored y-tile row at a time (``t_z * t_y * n_x`` values of the stored dtype);
    where ``m.mask`` is False the values are NaN.
    """
    ys = region[-2]
    ty = m.tiles[m.data.dims[-2]]
    edges = [ys.start, *range((ys.start // ty + 1) * ty, ys.stop, ty), ys.stop]
    for y0, y1 in itertools.pairwise(edges):
        sel = dict(zip(m.data.dims, (*region[:-2], slice(y0, y1), region[-1]), strict=True))
        dst = buf[..., y0 - ys.start : y1 - ys.start, :]
        # Variable, not DataArray: no coordinate indexes built per block
        dst[...] = m.data.variable.isel(sel).values  # cast to float32 on assignment
        if m.mask is not None:
            keep = np.asarray(m.mask.variable.isel(sel).values, dtype=bool)
            np.copyto(dst, np.float32(np.nan), where=~keep)


def _pages(m: _Map) -> Iterator[np.ndarray]:
    """The z pages of a 3-D map as float32, read one stored z-tile slab at a time (the client
    holds one slab, never the whole volume), for ``tifffile``."""
    nz, ny, nx = m.data.shape
    tz = m.tiles[m.data.dims[0]]
    for z0 in range(0, nz, tz):
        z1 = min(z0 + tz, nz)
        slab = np.empty((z1 - z0, ny, nx), np.float32)
        _fill(slab, m, (slice(z0, z1), slice(0, ny), slice(0, nx)))
        for page in slab:
            yield page.copy()  # tifffile keeps the last page: a view would keep the slab
        del slab, page  # freed before the next slab is allocated


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)


def _export_tiff(ds: xr.Dataset, out: Path) -> list[Path]:
    import tifffile

    spatial = _spatial(ds)
    ps = _pixel_size(ds, spatial)
    out.mkdir(parents=True, exist_ok=True)
    files = []
    for m in _maps(ds):
        kw: dict = {}
        if m.data.ndim == 3:
            arr = _pages(m)
            kw = {"shape": tuple(m.data.shape), "dtype": np.float32}
        else:
            arr = np.empty(m.data.shape, np.float32)
            _fill(arr, m, tuple(slice(0, n) for n in m.data.shape))
        meta = {"axes": "ZYX" if m.data.ndim == 3 else "YX", "unit": "um" if ps else "pixel"}
        meta["Info"] = json.dumps(
            {"variable": m.name, "units": m.data.attrs.get("units", ""), "bigxanes": True}
        )
        if ps:
            kw["resolution"] = (1.0 / ps[-1], 1.0 / ps[-2])
            if m.data.ndim == 3:
                meta["spacing"] = ps[0]
        f = out / f"{_safe(m.name)}.tif"
        tifffile.imwrite(f, arr, imagej=True, metadata=meta, **kw)
        files.append(f)
        del arr
    return files


def _export_ome_zarr(ds: xr.Dataset, out: Path) -> Path:
    """OME-NGFF 0.4 image (Zarr v2) written one chunk at a time, its metadata written here.

    The layout is the one ``ome_zarr.writer.write_image`` (0.18) writes, without importing
    ``ome-zarr`` (a test dependency only): group attributes ``multiscales`` (axes ``c[z]yx``,
    one dataset ``s0`` with ``scale`` = ``(1, pixel size...)`` and a zero ``translation``) and
    ``omero`` (channel labels, colours, window ``[0, max]`` of the finite values); ``s0`` is
    float32, Zstd level 0, ``/``-separated chunk keys, fill value 0.
    """
    import zarr
    from numcodecs import Zstd

    spatial = _spatial(ds)
    maps = _maps(ds)
    chans = [m for m in maps if m.name.startswith("fraction_")] or maps
    if not chans:
        raise ValueError("the result has no 2-D/3-D maps to export")
    shape = (len(chans), *chans[0].data.shape)
    edges = tuple(min(_OME_TILE, n) for n in shape[-2:])
    if len(spatial) == 3:
        edges = (chans[0].tiles[spatial[0]], *edges)
    root = zarr.open_group(str(out), mode="w", zarr_format=2)
    img = root.create_array(
        "s0",
        shape=shape,
        chunks=(1, *edges),
        dtype=np.float32,
        fill_value=0.0,
        compressors=Zstd(level=0),
        chunk_key_encoding={"name": "v2", "separator": "/"},
    )
    hi = -np.inf
    for c, m in enumerate(chans):  # one output chunk at a time
        starts = [range(0, n, e) for n, e in zip(shape[1:], edges, strict=True)]
        for corner in itertools.product(*starts):
            region = tuple(
                slice(a, min(a + e, n)) for a, e, n in zip(corner, edges, shape[1:], strict=True)
            )
            buf = np.empty(tuple(r.stop - r.start for r in region), np.float32)
            _fill(buf, m, region)
            hi = max(hi, float(np.max(buf, where=np.isfinite(buf), initial=-np.inf)))
            img[(c, *region)] = buf
            del buf
    ps = _pixel_size(ds, spatial) or [1.0] * len(spatial)
    hi = hi if np.isfinite(hi) else 1.0
    multiscale = {
        "axes": [{"name": "c", "type": "channel"}]
        + [{"name": d, "type": "space"} for d in spatial],
        "datasets": [
            {
                "path": "s0",
                "coordinateTransformations": [
                    {"type": "scale", "scale": [1.0, *ps]},
                    {"type": "translation", "translation": [0.0] * len(shape)},
                ],
            }
        ],
        "name": "image",
        "version": "0.4",
    }
    omero = {
        "version": "0.4",
        "channels": [
            {
                "label": m.name.removeprefix("fraction_"),
                "color": _COLORS[i % len(_COLORS)],
                "window": {"start": 0.0, "end": hi, "min": 0.0, "max": hi},
                "active": True,
            }
            for i, m in enumerate(chans)
        ],
    }
    root.attrs.update({"multiscales": [multiscale], "omero": omero})
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
    lazy = fmt != "netcdf"  # maps read block by block; NetCDF streamed by xarray from dask
    ds = finalize_result(
        _open(result_path_or_ds, lazy=lazy), pixel_size=pixel_size, mask_fraction=not lazy
    )
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
