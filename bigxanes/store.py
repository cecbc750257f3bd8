"""The on-disk stack store: a Zarr v3 group written from an :class:`xarray.Dataset`.

Layout (docs/CONTRACTS.md):

- ``stack``: dims ``("energy", "y", "x")`` or ``("energy", "z", "y", "x")``, chunked
  ``(T, tile, tile[, tile])`` -- the whole energy axis in one chunk, spatial tiles of
  :data:`DEFAULT_TILE_2D` (2-D images) or :data:`DEFAULT_TILE_3D` (3-D volumes);
- coordinate ``energy`` in eV (attrs ``units="eV"``), optional ``component`` (str);
- optional ``references`` (energy, component), ``mask`` and truth variables, chunked with
  the same spatial tiles and every non-spatial dimension whole;
- group attribute ``bigxanes_complete = true``, written last. Readers refuse a store without
  it (an interrupted write).

Writes go to a sibling ``PATH.partial-<pid>`` directory that is renamed into place once
complete, so a reader never sees a half-written store under ``PATH``.
"""

from __future__ import annotations

import os
import shutil
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr
import zarr

__all__ = [
    "DEFAULT_TILE_2D",
    "DEFAULT_TILE_3D",
    "COMPLETE_ATTR",
    "STACK_VAR",
    "SPATIAL_DIMS",
    "stack_chunks",
    "default_tile",
    "write_dataset",
    "open_stack",
    "is_complete",
    "mark_complete",
    "stack_info",
]

#: Spatial tile edge (pixels) of 2-D stacks: a (T, 256, 256) float32 chunk is 256 KiB per
#: energy, ~25 MiB for 100 energies -- big enough to amortize Zarr I/O, small enough for a few
#: chunks per worker. The engine may tune this by measurement.
DEFAULT_TILE_2D = 256
#: Spatial tile edge (voxels) of 3-D stacks: (T, 64, 64, 64) float32 is 1 MiB per energy.
DEFAULT_TILE_3D = 64
#: Name of the stack variable in new stores (``stack`` is shadowed by ``Dataset.stack``);
#: :func:`open_stack` reads it, and the old name ``stack``, as ``ds["stack"]``.
STACK_VAR = "absorbance"
#: Group attribute set (last) when a store has been completely written.
COMPLETE_ATTR = "bigxanes_complete"
#: Dimension names that are tiled; every other dimension is stored as one chunk.
SPATIAL_DIMS = ("z", "y", "x")

_STACK_DIMS = {2: ("energy", "y", "x"), 3: ("energy", "z", "y", "x")}
_COMPRESSORS = ("zstd", "lz4", "blosc", None)


def default_tile(n_spatial: int) -> int:
    """Return the default tile edge for a stack with ``n_spatial`` spatial dimensions.

    Parameters
    ----------
    n_spatial : int
        2 for images ``(y, x)``, 3 for volumes ``(z, y, x)``.

    Returns
    -------
    int
        :data:`DEFAULT_TILE_3D` for 3 or more spatial dimensions, else :data:`DEFAULT_TILE_2D`.
    """
    return DEFAULT_TILE_3D if n_spatial >= 3 else DEFAULT_TILE_2D


def _tile_tuple(tile: int | Sequence[int] | None, n_spatial: int) -> tuple[int, ...]:
    if tile is None:
        return (default_tile(n_spatial),) * n_spatial
    if isinstance(tile, (int, np.integer)):
        t = (int(tile),) * n_spatial
    else:
        t = tuple(int(v) for v in tile)
        if len(t) != n_spatial:
            raise ValueError(
                f"tile has {len(t)} entries but the data has {n_spatial} spatial dimensions; "
                "give one integer (same edge for all) or one per spatial dimension."
            )
    if any(v < 1 for v in t):
        raise ValueError(f"tile sizes must be positive integers, got {t}.")
    return t


def stack_chunks(shape: Sequence[int], tile: int | Sequence[int] | None = None) -> tuple[int, ...]:
    """Chunk shape of a stack: the whole energy axis in one chunk, spatial tiles.

    Parameters
    ----------
    shape : sequence of int
        ``(T, y, x)`` or ``(T, z, y, x)``.
    tile : int or sequence of int, optional
        Spatial tile edge(s); default :data:`DEFAULT_TILE_2D` for 2-D images and
        :data:`DEFAULT_TILE_3D` for 3-D volumes. Tiles larger than the array are clipped.

    Returns
    -------
    tuple of int
        ``(T, min(tile, y), min(tile, x))`` or the 3-D analogue.

    Examples
    --------
    >>> stack_chunks((100, 1000, 300))
    (100, 256, 256)
    >>> stack_chunks((100, 50, 300, 300), tile=32)
    (100, 32, 32, 32)
    """
    shape = tuple(int(s) for s in shape)
    if len(shape) < 2:
        raise ValueError(f"a stack needs an energy axis and spatial axes, got shape {shape}.")
    n_spatial = len(shape) - 1
    t = _tile_tuple(tile, n_spatial)
    spatial = tuple(max(1, min(ti, s)) for ti, s in zip(t, shape[1:], strict=True))
    return (max(shape[0], 1),) + spatial


#: Zstandard level of ``compressor="zstd"`` (measured in benchmarks/bench_engine.py).
ZSTD_LEVEL = 1


def _make_compressors(compressor: str | None) -> tuple[Any, ...] | None:
    from zarr.codecs import BloscCodec, ZstdCodec

    if compressor is None:
        return None
    name = str(compressor).lower()
    if name == "zstd":
        # level 1: half the encode time of level 3 for < 2 % larger files on float32 maps
        # (benchmarks/results/engine.md, "Compression")
        return (ZstdCodec(level=ZSTD_LEVEL),)
    if name == "lz4":
        return (BloscCodec(cname="lz4", clevel=5, shuffle="shuffle"),)
    if name == "blosc":
        return (BloscCodec(cname="zstd", clevel=3, shuffle="shuffle"),)
    raise ValueError(
        f"unknown compressor {compressor!r}; choose one of 'zstd', 'lz4', 'blosc' or None."
    )


def _dim_tiles(ds: xr.Dataset, tile: int | Sequence[int] | None) -> dict[str, int]:
    """Tile edge per spatial dimension name, following the dimensionality of the data."""
    spatial = [d for d in SPATIAL_DIMS if d in ds.dims]
    if tile is None:
        return {d: default_tile(len(spatial)) for d in spatial}
    if isinstance(tile, (int, np.integer)):
        return {d: _tile_tuple(tile, 1)[0] for d in spatial}
    return dict(zip(spatial, _tile_tuple(tile, len(spatial)), strict=True))


def _var_chunks(
    var: xr.Variable, dim_tiles: Mapping[str, int], overrides: Mapping[str, int]
) -> tuple[int, ...]:
    """Chunks of one variable: spatial dims tiled, others whole, ``overrides`` win."""
    out = []
    for d, n in zip(var.dims, var.shape, strict=True):
        c = overrides.get(str(d), dim_tiles.get(str(d), n))
        out.append(max(1, min(int(c), int(n))))
    return tuple(out)


def _partial_path(path: Path) -> Path:
    return path.with_name(f"{path.name}.partial-{os.getpid()}")


def write_dataset(
    ds: xr.Dataset,
    path: str | os.PathLike,
    *,
    overwrite: bool = False,
    compressor: str | None = "zstd",
    chunks: int | Sequence[int] | Mapping[str, int] | None = None,
    verify: Callable[[], None] | None = None,
) -> Path:
    """Write a Dataset to a Zarr v3 stack store, atomically.

    The data go to ``PATH.partial-<pid>`` first; the group attribute ``bigxanes_complete``
    is set last (then the metadata are consolidated), then the directory is renamed to
    ``PATH``. With ``overwrite`` an existing
    ``PATH`` is moved aside, replaced, then deleted. Dask-backed variables are streamed chunk
    by chunk (never loaded whole); note that ``to_zarr`` may take a cluster-wide lock
    (docs/design.md, "Measured pitfalls"), acceptable for one-off imports.

    A variable ``stack`` is stored as :data:`STACK_VAR` (``absorbance``), which no xarray
    method shadows; :func:`open_stack` reads both names as ``ds["stack"]``.

    Parameters
    ----------
    ds : xarray.Dataset
        Data to store (e.g. a ``stack`` variable with an ``energy`` coordinate).
    path : str or os.PathLike
        Output directory (a local path).
    overwrite : bool
        Replace an existing ``PATH``.
    compressor : {"zstd", "lz4", "blosc", None}
        ``"zstd"``: :class:`zarr.codecs.ZstdCodec` at :data:`ZSTD_LEVEL` (1);
        ``"lz4"``: Blosc-LZ4 with byte shuffle (about 2x faster I/O, larger files);
        ``"blosc"``: Blosc-Zstd with shuffle; None: uncompressed.
    chunks : int, sequence of int or mapping, optional
        An int (or one per spatial dim) is the spatial tile edge; a mapping ``{dim: size}``
        sets chunk sizes per dimension name. Default: spatial dims (``z``, ``y``, ``x``) in
        tiles of :data:`DEFAULT_TILE_2D`/:data:`DEFAULT_TILE_3D`, every other dimension
        (``energy``, ``component``) whole.
    verify : callable, optional
        Called once the data are written and before the completion marker; an exception it
        raises leaves no output (the engine checks there that its input did not change).

    Returns
    -------
    pathlib.Path
        ``PATH``.

    Raises
    ------
    FileExistsError
        If ``PATH`` exists and ``overwrite`` is False.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"output {path} already exists; pass --overwrite to replace it")
    compressors = _make_compressors(compressor)
    if isinstance(chunks, Mapping):
        tile, overrides = None, {str(k): int(v) for k, v in chunks.items()}
    else:
        tile, overrides = chunks, {}
    dim_tiles = _dim_tiles(ds, tile)

    out = ds.copy()
    if "stack" in out.data_vars and STACK_VAR not in out.data_vars:
        out = out.rename({"stack": STACK_VAR})  # ``Dataset.stack`` is a method
    encoding: dict[str, dict[str, Any]] = {}
    for name in list(out.variables):
        var = out.variables[name]
        if var.dtype.kind == "U":  # fixed-length UTF-32 has no Zarr v3 spec: store variable-length
            var = var.astype(object)
        var.encoding = {}
        enc: dict[str, Any] = {"compressors": compressors}
        if var.ndim > 0 and var.dtype != object:
            c = _var_chunks(var, dim_tiles, overrides)
            enc["chunks"] = c
            if var.chunks is not None:
                var = var.chunk(dict(zip(var.dims, c, strict=True)))
        if name in out.coords:
            out = out.assign_coords({name: var})
        else:
            out[name] = var
        encoding[str(name)] = enc

    tmp = _partial_path(path)
    if tmp.exists():
        shutil.rmtree(tmp)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*does not have a Zarr V3 specification.*")
            warnings.filterwarnings("ignore", message=".*[Cc]onsolidated metadata.*")
            out.to_zarr(tmp, mode="w-", zarr_format=3, consolidated=False, encoding=encoding)
        from .integrity import test_pause

        test_pause("before_complete")  # fault-injection window (tests): data in, marker not
        if verify is not None:
            verify()
        mark_complete(tmp)
        from .conventions import consolidate

        consolidate(tmp)  # a plain ``xr.open_zarr`` reads it without a warning
        test_pause("after_complete")  # fault-injection point (tests): marked, not renamed
        if path.exists():
            old = path.with_name(f"{path.name}.old-{os.getpid()}")
            if old.exists():
                shutil.rmtree(old)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def is_complete(path: str | os.PathLike) -> bool:
    """Return True when ``path`` is a Zarr group carrying ``bigxanes_complete = true``.

    Parameters
    ----------
    path : str or os.PathLike
        Store location.

    Returns
    -------
    bool
        False for a missing path, a non-group or an unmarked (interrupted) store.
    """
    try:
        g = zarr.open_group(str(path), mode="r")
    except (FileNotFoundError, ValueError, TypeError, KeyError, zarr.errors.BaseZarrError):
        return False
    return g.attrs.get(COMPLETE_ATTR) is True


def mark_complete(path: str | os.PathLike) -> None:
    """Set the group attribute ``bigxanes_complete = true`` (call it after all data are written).

    Parameters
    ----------
    path : str or os.PathLike
        An existing Zarr group.
    """
    g = zarr.open_group(str(path), mode="r+")
    g.attrs[COMPLETE_ATTR] = True


def open_stack(path: str | os.PathLike) -> xr.Dataset:
    """Open a complete stack store lazily (dask arrays on the stored chunks).

    Parameters
    ----------
    path : str or os.PathLike
        Store written by :func:`write_dataset` (e.g. by an importer).

    Returns
    -------
    xarray.Dataset
        With a ``stack`` variable of dims ``(energy, y, x)`` or ``(energy, z, y, x)``.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        If the store lacks the completion marker, has no ``stack`` variable, or ``stack``
        has the wrong dimensions.
    """
    spath = str(path)
    if "://" not in spath and not Path(spath).exists():
        raise FileNotFoundError(
            f"stack store {spath} does not exist; check the path or create it with "
            "`bigxanes import`."
        )
    if not is_complete(spath):
        raise ValueError(
            f"{spath} is incomplete (an interrupted write?); re-run the command that made it"
        )
    ds = xr.open_zarr(spath, chunks={}, consolidated=False, zarr_format=3)
    if STACK_VAR in ds.data_vars and "stack" not in ds.data_vars:
        # new stores name the stack ``absorbance`` (``Dataset.stack`` is a method); code here
        # reads it as ``ds["stack"]`` from stores old and new
        ds = ds.rename({STACK_VAR: "stack"})
    if "stack" not in ds.data_vars:
        raise ValueError(
            f"{spath} has no 'stack' variable (variables: {sorted(map(str, ds.data_vars))}); "
            "it is not a bigxanes stack store: import the data with `bigxanes import`."
        )
    dims = tuple(ds["stack"].dims)
    if dims not in _STACK_DIMS.values():
        raise ValueError(
            f"'stack' in {spath} has dims {dims}; expected ('energy', 'y', 'x') or "
            "('energy', 'z', 'y', 'x'): re-import the data with `bigxanes import`."
        )
    if "energy" not in ds.coords:
        raise ValueError(f"{spath} has no 'energy' coordinate; re-import the data.")
    return ds


def disk_bytes(path: str | os.PathLike) -> int:
    """Bytes of all files below ``path`` (0 for a missing path)."""
    total = 0
    for root, _dirs, files in os.walk(path):
        for f in files:
            try:
                total += os.path.getsize(os.path.join(root, f))
            except OSError:
                pass
    return total


def stack_info(path: str | os.PathLike) -> dict[str, Any]:
    """Summarize a stack store.

    Parameters
    ----------
    path : str or os.PathLike
        A complete stack store.

    Returns
    -------
    dict
        ``path``, ``shape``, ``dims``, ``chunks`` (stored chunk shape of ``stack``), ``dtype``,
        ``n_energies``, ``energy_min``/``energy_max`` (eV), ``quantity`` (attrs, or None),
        ``nbytes_memory`` (of ``stack`` uncompressed), ``nbytes_disk`` (whole store on disk,
        local paths only, else None), ``variables`` and ``components`` (names, when
        ``references`` are stored, else None).
    """
    ds = open_stack(path)
    st = ds["stack"]
    g = zarr.open_group(str(path), mode="r")
    arr = g[STACK_VAR] if STACK_VAR in g else g["stack"]
    energy = np.asarray(ds["energy"].values, dtype=np.float64)
    components = None
    if "references" in ds.data_vars and "component" in ds.coords:
        components = [str(c) for c in ds["component"].values]
    p = Path(str(path))
    return {
        "path": str(path),
        "shape": tuple(int(s) for s in st.shape),
        "dims": tuple(str(d) for d in st.dims),
        "chunks": tuple(int(c) for c in arr.chunks),
        "dtype": str(st.dtype),
        "n_energies": int(energy.size),
        "energy_min": float(energy.min()) if energy.size else None,
        "energy_max": float(energy.max()) if energy.size else None,
        "quantity": st.attrs.get("quantity", ds.attrs.get("quantity")),
        "nbytes_memory": int(st.nbytes),
        "nbytes_disk": disk_bytes(p) if p.exists() else None,
        "variables": sorted(str(v) for v in ds.data_vars),
        "components": components,
    }
