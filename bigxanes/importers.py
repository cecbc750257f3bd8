"""Streaming importers: TIFF, HDF5 (NSLS-II FXI layout), NumPy and Zarr into the stack store.

The input is never loaded whole. Each importer wraps the file in a small picklable *reader*
(an object with ``shape``, ``dtype``, ``ndim`` and ``__getitem__`` that opens the file on each
call and reads one hyperslab), builds a dask array from it with chunks ``(T, tile, tile[, tile])``
-- the layout of the store (:func:`bigxanes.store.stack_chunks`) -- and streams it into
:func:`bigxanes.store.write_dataset`. So every task reads one spatial tile at all energies,
and memory stays bounded by a few tiles per worker. Random-access sources (HDF5, ``.npy``,
Zarr, uncompressed TIFF through a memory map) read only the tile; compressed TIFF pages are
decoded whole and cropped (more reading, same bounded memory).

Energies are converted to eV with :func:`bigxanes.energy.as_ev` (keV detected) and stored as
the ``energy`` coordinate (attrs ``units="eV"``). Energies out of order are sorted together
with the images (lazily) with a warning; duplicates and count mismatches raise ``ValueError``.
NaN/Inf pixels are kept as they are (the unmixing masks them). Inputs are only ever opened
read-only.

Stored stack: float32 (``dtype``), attrs ``quantity`` = ``"absorbance"`` or ``"counts"``,
``source``, ``source_format`` and, when absorbance was computed here, ``od_method``
(``"flat_dark"``, ``"i0"`` or ``"background"``) and ``od_source``.
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
import xarray as xr
from dask.base import tokenize

from bigxanes.energy import as_ev
from bigxanes.integrity import check_array_chunks
from bigxanes.store import stack_chunks, write_dataset
from bigxanes.transmission import (
    background_i0,
    od_from_background,
    od_from_flat_dark,
    od_from_i0,
    parse_region,
    read_i0,
    read_table,
)

__all__ = [
    "lazy_stack",
    "import_stack",
    "import_tiff",
    "import_hdf5",
    "import_npy",
    "import_zarr",
    "read_energies",
]

PathLike = str | os.PathLike
Energies = PathLike | Sequence[float] | np.ndarray | None
Tile = int | Sequence[int] | None

_TIFF_SUFFIXES = (".tif", ".tiff")
_HDF5_SUFFIXES = (".h5", ".hdf5", ".hdf", ".he5", ".nxs")
_MASK_SUFFIXES = (".tif", ".tiff", ".npy")


# --------------------------------------------------------------------------------------------
# energies


def read_energies(energies: Energies, label: str | None = None) -> tuple[np.ndarray, str]:
    """Energies as given (original order and units) and a label naming where they came from.

    Parameters
    ----------
    energies : str, os.PathLike or array_like
        A 1-D array, or a text file with one value per line or several columns (the first
        column is used; ``#`` comments and a header line are skipped).
    label : str, optional
        Name used in error messages for an array input.

    Returns
    -------
    energies : numpy.ndarray
        float64, 1-D, in the input order and units.
    label : str
        The file path, or ``label``/"the energies given".
    """
    if energies is None:
        raise ValueError(
            "no energies given; pass energies= (an array or a text file with one energy per line)."
        )
    if isinstance(energies, (str, os.PathLike)):
        table = read_table(energies)
        return table[:, 0].copy(), str(energies)
    e = np.asarray(energies, dtype=np.float64)
    if e.ndim == 2 and e.shape[1] >= 1 and e.shape[0] > 1:
        e = e[:, 0]
    return e.reshape(-1) if e.ndim != 1 else e, label or "the energies given"


def _prepare_energies(
    e_raw: np.ndarray, e_label: str, n_images: int, input_label: str
) -> tuple[np.ndarray, np.ndarray, bool]:
    """Return (eV energies in input order, sorting order, changed)."""
    if e_raw.size != n_images:
        raise ValueError(
            f"{e_raw.size} energies in {e_label} but {n_images} images in {input_label}"
        )
    if not np.all(np.isfinite(e_raw)):
        bad = np.flatnonzero(~np.isfinite(e_raw))[:10].tolist()
        raise ValueError(f"energies in {e_label} contain NaN/Inf at positions {bad}.")
    order = np.argsort(e_raw, kind="stable")
    changed = bool(np.any(order != np.arange(e_raw.size)))
    e_sorted = as_ev(e_raw[order])  # raises on duplicates
    e_input = np.empty_like(e_sorted)
    e_input[order] = e_sorted
    return e_input, order, changed


# --------------------------------------------------------------------------------------------
# readers: picklable, open the file on every call, read one hyperslab


class _Reader:
    """Base for lazy readers used with :func:`dask.array.from_array`."""

    shape: tuple[int, ...]
    dtype: np.dtype

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def _full_key(self, key: Any) -> tuple[Any, ...]:
        if not isinstance(key, tuple):
            key = (key,)
        return key + (slice(None),) * (self.ndim - len(key))

    def __getitem__(self, key: Any) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError


class _H5Reader(_Reader):
    def __init__(self, path: str, name: str, shape: tuple[int, ...], dtype: np.dtype):
        self.path, self.name, self.shape, self.dtype = path, name, shape, np.dtype(dtype)

    def __getitem__(self, key: Any) -> np.ndarray:
        import h5py

        with h5py.File(self.path, "r") as f:
            return np.asarray(f[self.name][self._full_key(key)])


class _NpyReader(_Reader):
    def __init__(self, path: str, shape: tuple[int, ...], dtype: np.dtype):
        self.path, self.shape, self.dtype = path, shape, np.dtype(dtype)

    def __getitem__(self, key: Any) -> np.ndarray:
        return np.array(np.load(self.path, mmap_mode="r")[self._full_key(key)])


class _ZarrReader(_Reader):
    def __init__(self, path: str, name: str | None, shape: tuple[int, ...], dtype: np.dtype):
        self.path, self.name, self.shape, self.dtype = path, name, shape, np.dtype(dtype)

    def __getitem__(self, key: Any) -> np.ndarray:
        import zarr

        arr = zarr.open_array(self.path, path=self.name or "", mode="r")
        try:
            return np.asarray(arr[self._full_key(key)])
        except (OSError, MemoryError):
            raise
        except Exception as exc:  # codec errors: a damaged chunk file
            raise ValueError(
                f"cannot read {self.path}/{self.name or ''}: a chunk failed to decode "
                f"({type(exc).__name__}: {exc}); the store is damaged, re-create or re-copy it"
            ) from exc


class _TiffReader(_Reader):
    """Images of a TIFF stack: ``sources[t] = (file, pages or None)``.

    ``pages`` are the page indices of image ``t`` inside series 0 of one multi-page file;
    None means the whole series 0 of ``file`` (one file per energy). Memory-mappable files
    (uncompressed, contiguous) are sliced through :func:`tifffile.memmap`.
    """

    def __init__(
        self,
        sources: list[tuple[str, list[int] | None]],
        spatial: tuple[int, ...],
        dtype: np.dtype,
        mappable: list[bool],
    ):
        self.sources, self.mappable = sources, mappable
        self.shape = (len(sources),) + tuple(spatial)
        self.dtype = np.dtype(dtype)

    def _image(self, t: int, sub: tuple[Any, ...]) -> np.ndarray:
        file = self.sources[t][0]
        try:
            return self._read_image(t, sub)
        except (ValueError, OSError, IndexError) as exc:
            if isinstance(exc, OSError) and exc.errno is not None:
                raise
            raise ValueError(
                f"cannot read image {t} from {file}: the TIFF is truncated or damaged ({exc}); "
                "re-copy or re-export it"
            ) from exc

    def _read_image(self, t: int, sub: tuple[Any, ...]) -> np.ndarray:
        import tifffile

        file, pages = self.sources[t]
        if self.mappable[t]:
            mm = tifffile.memmap(file, mode="r")
            if pages is None:
                return np.array(mm[sub])
            flat = mm.reshape((-1,) + mm.shape[-2:])
            img = flat[pages[0] : pages[-1] + 1].reshape(self.shape[1:])
            return np.array(img[sub])
        with tifffile.TiffFile(file) as tf:
            series = tf.series[0]
            if pages is None:
                img = series.asarray()
            else:
                img = np.stack([series.pages[k].asarray() for k in pages])
        return np.array(img.reshape(self.shape[1:])[sub])

    def __getitem__(self, key: Any) -> np.ndarray:
        key = self._full_key(key)
        ts = np.arange(self.shape[0])[key[0]]
        sub = key[1:]
        if np.ndim(ts) == 0:
            return self._image(int(ts), sub)
        imgs = [self._image(int(t), sub) for t in ts]
        if not imgs:
            probe = np.empty(self.shape[1:], self.dtype)[sub]
            return np.empty((0,) + probe.shape, self.dtype)
        return np.stack(imgs)


def _from_reader(reader: _Reader, tile: Tile, token: Any) -> da.Array:
    chunks = stack_chunks(reader.shape, tile)
    name = f"read-{type(reader).__name__.lower()}-{tokenize(token, reader.shape, chunks)}"
    return da.from_array(
        reader,
        chunks=chunks,
        name=name,
        lock=False,
        asarray=False,
        fancy=False,
        meta=np.empty((0,) * reader.ndim, dtype=reader.dtype),
    )


def _mtime_token(path: Path) -> Any:
    try:
        st = path.stat()
        return (str(path.resolve()), st.st_mtime_ns, st.st_size)
    except OSError:
        return str(path)


# --------------------------------------------------------------------------------------------
# lazy openers (return the dask array of raw images + metadata)


def _natural_key(name: str) -> list[Any]:
    return [int(p) if p.isdigit() else p.lower() for p in re.split(r"(\d+)", name)]


def _tiff_series_info(file: Path) -> tuple[tuple[int, ...], str, np.dtype, bool]:
    import tifffile

    with tifffile.TiffFile(file) as tf:
        s = tf.series[0]
        return (
            tuple(int(v) for v in s.shape),
            str(s.axes),
            np.dtype(s.dtype),
            (s.dataoffset is not None),
        )


def _open_tiff(path: Path, tile: Tile) -> tuple[da.Array, str]:
    if path.is_dir():
        files = sorted(
            (p for p in path.iterdir() if p.suffix.lower() in _TIFF_SUFFIXES and p.is_file()),
            key=lambda p: _natural_key(p.name),
        )
        if not files:
            raise ValueError(f"no .tif/.tiff files in folder {path}.")
        infos = [_tiff_series_info(f) for f in files]
        shape0, axes0, dtype0, _ = infos[0]
        if "S" in axes0 or len(shape0) not in (2, 3):
            raise ValueError(
                f"{files[0]} holds an image of shape {shape0} (axes {axes0}); each file of a "
                "folder must be one grayscale image (y, x) or one volume (z, y, x)."
            )
        for f, (shp, _, dt, _) in zip(files, infos, strict=True):
            if shp != shape0 or dt != dtype0:
                raise ValueError(
                    f"{f} has shape {shp} and dtype {dt} but {files[0]} has {shape0} and "
                    f"{dtype0}; all images of a folder must have the same shape and type."
                )
        reader = _TiffReader([(str(f), None) for f in files], shape0, dtype0, [i[3] for i in infos])
        token = [_mtime_token(f) for f in files]
        return _from_reader(reader, tile, token), f"{len(files)} files of {path}"
    if not path.is_file():
        raise FileNotFoundError(f"input {path} does not exist")
    shape, axes, dtype, mappable = _tiff_series_info(path)
    if "S" in axes:
        raise ValueError(
            f"{path} is an RGB/multi-sample image (axes {axes}); save the stack as grayscale "
            "pages (one page per energy)."
        )
    if len(shape) < 3 or len(shape) > 4:
        raise ValueError(
            f"{path} holds an array of shape {shape}; expected a multi-page stack "
            "(energy, y, x), a (energy, z, y, x) hyperstack, or a folder of TIFF files."
        )
    spatial = shape[1:]
    per = int(np.prod(spatial[:-2], dtype=np.int64))  # pages per image (z planes)
    sources = [(str(path), list(range(t * per, (t + 1) * per))) for t in range(shape[0])]
    reader = _TiffReader(sources, spatial, dtype, [mappable] * shape[0])
    return _from_reader(reader, tile, _mtime_token(path)), str(path)


def _list_h5_datasets(f: Any) -> list[str]:
    import h5py

    found: list[str] = []

    def visit(name: str, obj: Any) -> None:
        if isinstance(obj, h5py.Dataset):
            found.append(f"/{name} {tuple(obj.shape)}")

    f.visititems(visit)
    return found


def _h5_reader(path: Path, f: Any, name: str) -> _H5Reader:
    ds = f[name]
    return _H5Reader(str(path), ds.name, tuple(int(s) for s in ds.shape), ds.dtype)


def _h5_field(path: Path, f: Any, name: str | None, tile: Tile) -> da.Array | None:
    """A flat/dark dataset as a lazy dask array, or None when absent."""
    if not name or name not in f:
        return None
    r = _h5_reader(path, f, name)
    if r.ndim < 2:
        raise ValueError(f"flat/dark dataset {name} in {path} has shape {r.shape}.")
    if r.ndim == 2:
        return da.from_array(
            r,
            chunks=r.shape,
            lock=False,
            asarray=False,
            fancy=False,
            meta=np.empty((0, 0), r.dtype),
            name=f"read-h5-{tokenize(_mtime_token(path), name)}",
        )
    return _from_reader(r, tile, (_mtime_token(path), name))


# --------------------------------------------------------------------------------------------
# assembling the Dataset


def _is_mask_spec(i0: Any) -> bool:
    return isinstance(i0, (str, os.PathLike)) and Path(i0).suffix.lower() in _MASK_SUFFIXES


def _load_mask(path: PathLike) -> np.ndarray:
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"background mask file {p} does not exist")
    if p.suffix.lower() == ".npy":
        return np.load(p)
    import tifffile

    return tifffile.imread(p)


def _apply_i0(stack: da.Array, i0: Any, energies_ev: np.ndarray) -> tuple[da.Array, dict, Any]:
    """Absorbance from an I0 specification (see :func:`import_stack`), its attrs and the I0
    per image (counts per pixel; lazy for a background region), kept as the store's ``i0``
    variable for counting weights (``unmix --weights counts``)."""
    spatial = tuple(stack.shape[1:])
    region: Any = None
    if isinstance(i0, str) and i0.lower().startswith("background:"):
        region, src = parse_region(i0), i0
    elif _is_mask_spec(i0):
        region, src = _load_mask(i0), str(i0)
    elif isinstance(i0, tuple) and all(isinstance(s, slice) for s in i0):
        region, src = i0, repr(i0)
    elif not isinstance(i0, (str, os.PathLike)):
        arr = np.asarray(i0)
        if arr.shape == spatial and arr.ndim >= 2:
            region, src = arr, "mask array"
    if region is not None:
        attrs = {"od_method": "background", "od_source": src}
        return od_from_background(stack, region), attrs, background_i0(stack, region)
    src = str(i0) if isinstance(i0, (str, os.PathLike)) else "array"
    i0v = read_i0(i0, energies_ev, int(stack.shape[0]))
    return od_from_i0(stack, i0v, energies_ev), {"od_method": "i0", "od_source": src}, i0v


def _assemble(
    raw: da.Array,
    energies: Energies,
    *,
    input_label: str,
    source: str,
    source_format: str,
    i0: Any = None,
    flat: da.Array | None = None,
    dark: da.Array | None = None,
    quantity: str | None = None,
    dtype: Any = np.float32,
    energy_label: str | None = None,
    extra_attrs: dict[str, Any] | None = None,
) -> xr.Dataset:
    if raw.ndim not in (3, 4):
        raise ValueError(
            f"{input_label} has shape {raw.shape}; expected (energy, y, x) or (energy, z, y, x)."
        )
    e_raw, e_label = read_energies(energies, energy_label)
    e_ev, order, changed = _prepare_energies(e_raw, e_label, raw.shape[0], input_label)
    attrs: dict[str, Any] = {"source": source, "source_format": source_format}
    if quantity not in (None, "counts", "absorbance"):
        raise ValueError(f"quantity must be 'counts' or 'absorbance', got {quantity!r}.")
    if i0 is not None:
        if quantity == "absorbance":
            raise ValueError("the input is already absorbance; do not pass i0 as well.")
        stack, od_attrs, i0_per_image = _apply_i0(raw, i0, e_ev)
        attrs.update(od_attrs, quantity="absorbance")
    elif flat is not None and quantity != "absorbance":
        stack = od_from_flat_dark(raw, flat, dark)
        attrs.update(quantity="absorbance", od_method="flat_dark")
    else:
        stack = raw.astype(dtype)
        attrs["quantity"] = quantity or "counts"
    if i0 is None:
        i0_per_image = None
    stack = stack.astype(dtype)
    if changed:
        warnings.warn(
            f"energies in {e_label} were not in increasing order; sorted them and reordered "
            f"the images of {input_label} to match.",
            UserWarning,
            stacklevel=3,
        )
        stack = stack[order]
        attrs["energies_sorted"] = True
    if extra_attrs:
        attrs.update(extra_attrs)
    dims = ("energy", "y", "x") if stack.ndim == 3 else ("energy", "z", "y", "x")
    da_stack = xr.DataArray(stack, dims=dims, attrs={"quantity": attrs["quantity"]})
    out = xr.Dataset(
        {"stack": da_stack},
        coords={"energy": ("energy", e_ev[order], {"units": "eV"})},
        attrs=attrs,
    )
    if i0_per_image is not None:  # the dose of counting weights (unmix --weights counts)
        out["i0"] = ("energy", i0_per_image[order])
        out["i0"].attrs["long_name"] = "incident photons per pixel"
    return out


def _check_not_input(inp: Path, out: PathLike | None) -> None:
    if out is None:
        return
    o = Path(out)
    try:
        same = o.resolve() == inp.resolve() or inp.resolve() in o.resolve().parents
    except OSError:
        same = False
    if same:
        raise ValueError(
            f"output {o} is the input {inp} (or inside it); inputs are never modified: choose "
            "another output path."
        )


def _write(ds: xr.Dataset, out: PathLike, overwrite: bool, tile: Tile, compressor: Any) -> Path:
    return write_dataset(ds, out, overwrite=overwrite, compressor=compressor, chunks=tile)


# --------------------------------------------------------------------------------------------
# public API


def _lazy_hdf5(
    path: Path,
    energies: Energies,
    dataset: str,
    energies_dataset: str | None,
    flat: str | None,
    dark: str | None,
    i0: Any,
    quantity: str | None,
    tile: Tile,
) -> xr.Dataset:
    import h5py

    if not path.is_file():
        raise FileNotFoundError(f"input {path} does not exist")
    with h5py.File(path, "r") as f:
        if dataset not in f or not isinstance(f[dataset], h5py.Dataset):
            present = _list_h5_datasets(f)
            raise ValueError(
                f"dataset {dataset!r} not found in {path}; datasets present: "
                f"{', '.join(present) if present else '(none)'}; pass dataset=NAME "
                "(--dataset NAME)."
            )
        reader = _h5_reader(path, f, dataset)
        e_label = None
        if energies is None:
            if not energies_dataset or energies_dataset not in f:
                raise ValueError(
                    f"no energies: {path} has no {energies_dataset!r} dataset; pass energies= "
                    "(an array or a text file) or energies_dataset=NAME."
                )
            energies = np.asarray(f[energies_dataset][()], dtype=np.float64).reshape(-1)
            e_label = f"{path}:{energies_dataset}"
        flat_arr = _h5_field(path, f, flat, tile) if quantity != "absorbance" else None
        dark_arr = _h5_field(path, f, dark, tile) if flat_arr is not None else None
        extra: dict[str, Any] = {"dataset": dataset}
        if "Pixel Size" in f and isinstance(f["Pixel Size"], h5py.Dataset):
            um = fxi_pixel_size_um(f["Pixel Size"][()])
            if um is not None:
                extra["pixel_size_um"] = um
    raw = _from_reader(reader, tile, (_mtime_token(path), dataset))
    return _assemble(
        raw,
        energies,
        input_label=f"{path}:{dataset}",
        source=str(path),
        source_format="hdf5",
        i0=i0,
        flat=flat_arr if i0 is None else None,
        dark=dark_arr,
        quantity=quantity,
        energy_label=e_label,
        extra_attrs=extra,
    )


def _source_quantity(arr: Any) -> str | None:
    """``quantity`` recorded on a Zarr source array ("counts"/"absorbance"), or absorbance for a
    stack whose ``long_name`` says optical density (``bigxanes simulate``); None: unknown."""
    attrs = dict(arr.attrs)
    q = attrs.get("quantity")
    if q in ("counts", "absorbance"):
        return str(q)
    name = str(attrs.get("long_name", "")).lower()
    if "optical density" in name or "absorbance" in name:
        return "absorbance"
    return None


def fxi_pixel_size_um(value: Any) -> float | None:
    """The pixel size of an NSLS-II FXI file (its ``/Pixel Size`` dataset) in micrometres.

    FXI writes either a number in nanometres (``6500 / magnification``) or a string such as
    ``"21.3nm"``; ``um``/``µm`` units are read as such. None when it cannot be read.
    """
    if isinstance(value, bytes | np.bytes_):
        value = value.decode("utf-8", "replace")
    if isinstance(value, np.ndarray):
        value = value.reshape(-1)[0] if value.size else None
        return fxi_pixel_size_um(value) if value is not None else None
    if isinstance(value, str):
        import re

        m = re.fullmatch(r"\s*([0-9.eE+-]+)\s*(nm|um|µm|mm)?\s*", value)
        if not m:
            return None
        try:
            v = float(m.group(1))
        except ValueError:
            return None
        unit = m.group(2) or "nm"
        v = v / 1000.0 if unit == "nm" else v * 1000.0 if unit == "mm" else v
    else:
        try:
            v = float(value) / 1000.0  # a bare number is in nanometres
        except (TypeError, ValueError):
            return None
    return v if np.isfinite(v) and v > 0 else None


def _zarr_source(path: Path, dataset: str | None) -> tuple[str | None, Any, Any]:
    import zarr

    node = zarr.open(str(path), mode="r")
    if isinstance(node, zarr.Array):
        return None, node, None
    names = [k for k, v in node.arrays()]
    if dataset is None:
        if "stack" in names or "absorbance" in names:  # a bigxanes store, old or new
            dataset = "stack" if "stack" in names else "absorbance"
        else:
            cands = [k for k, v in node.arrays() if v.ndim in (3, 4)]
            if len(cands) != 1:
                raise ValueError(
                    f"cannot tell which array of {path} is the stack (arrays: {sorted(names)}); "
                    "pass dataset=NAME."
                )
            dataset = cands[0]
    if dataset not in names:
        raise ValueError(
            f"array {dataset!r} not found in {path}; arrays present: {sorted(names)}; pass "
            "dataset=NAME."
        )
    energy = node["energy"] if "energy" in names else None
    return dataset, node[dataset], energy


def lazy_stack(
    input: PathLike,
    energies: Energies = None,
    *,
    dataset: str | None = None,
    i0: Any = None,
    quantity: str | None = None,
    tile: Tile = None,
    energies_dataset: str | None = "/X_eng",
    flat: str | None = "/img_bkg",
    dark: str | None = "/img_dark",
) -> xr.Dataset:
    """Open an input stack lazily as the Dataset an importer would write (nothing is read).

    Parameters are those of :func:`import_stack` (without the output options). The returned
    ``stack`` is a dask array with chunks ``(T, tile, tile[, tile])``; each task reads one tile.

    Returns
    -------
    xarray.Dataset
        ``stack`` (energy, [z], y, x) float32 and the ``energy`` coordinate in eV.
    """
    path = Path(input)
    suffix = path.suffix.lower()
    is_zarr = suffix == ".zarr" or (
        path.is_dir() and any((path / m).exists() for m in ("zarr.json", ".zarray", ".zgroup"))
    )
    if not path.exists():
        raise FileNotFoundError(f"input {path} does not exist")
    if is_zarr:
        name, arr, energy = _zarr_source(path, dataset)
        check_array_chunks(arr, f"{path}" + (f"/{name}" if name else ""))
        if quantity is None and i0 is None:  # a bigxanes store keeps what it holds
            quantity = _source_quantity(arr)
        e_label = None
        if energies is None and energy is not None and energy.ndim == 1:
            energies, e_label = np.asarray(energy[:], dtype=np.float64), f"{path}/energy"
        if energies is None:
            raise ValueError(
                f"no energies: {path} has no 'energy' array; pass energies= (an array or a "
                "text file with one energy per line)."
            )
        reader = _ZarrReader(str(path), name, tuple(int(s) for s in arr.shape), arr.dtype)
        token = (_mtime_token(path), name, str(arr.metadata.to_dict()))
        return _assemble(
            _from_reader(reader, tile, token),
            energies,
            input_label=f"{path}" + (f":{name}" if name else ""),
            source=str(path),
            source_format="zarr",
            i0=i0,
            quantity=quantity,
            energy_label=e_label,
        )
    if path.is_dir() or suffix in _TIFF_SUFFIXES:
        raw, label = _open_tiff(path, tile)
        return _assemble(
            raw,
            energies,
            input_label=label,
            source=str(path),
            source_format="tiff",
            i0=i0,
            quantity=quantity,
        )
    if suffix in _HDF5_SUFFIXES:
        return _lazy_hdf5(
            path,
            energies,
            dataset or "/img_xanes",
            energies_dataset,
            flat,
            dark,
            i0,
            quantity,
            tile,
        )
    if suffix == ".npy":
        mm = np.load(path, mmap_mode="r")
        reader = _NpyReader(str(path), tuple(int(s) for s in mm.shape), mm.dtype)
        del mm
        return _assemble(
            _from_reader(reader, tile, _mtime_token(path)),
            energies,
            input_label=str(path),
            source=str(path),
            source_format="npy",
            i0=i0,
            quantity=quantity,
        )
    raise ValueError(
        f"unsupported input {path}: expected a .tif/.tiff stack, a folder of TIFF files, an "
        "HDF5 file (.h5/.hdf5/.hdf/.nxs), a .npy file or a Zarr store (.zarr)."
    )


def import_stack(
    input: PathLike,
    out: PathLike,
    energies: Energies = None,
    dataset: str | None = None,
    i0: Any = None,
    *,
    quantity: str | None = None,
    overwrite: bool = False,
    tile: Tile = None,
    compressor: str | None = "zstd",
    energies_dataset: str | None = "/X_eng",
    flat: str | None = "/img_bkg",
    dark: str | None = "/img_dark",
    normalize: bool = False,
) -> Path:
    """Import a stack into the Zarr stack store, dispatching on the input type.

    Parameters
    ----------
    input : str or os.PathLike
        ``.tif``/``.tiff`` (multi-page stack) or a folder of TIFF files (one image or volume
        per energy, natural name order); HDF5 (``.h5``, ``.hdf5``, ``.hdf``, ``.nxs``); ``.npy``;
        a Zarr array or group (``.zarr`` or a folder with Zarr metadata).
    out : str or os.PathLike
        Output store (must differ from the input).
    energies : str, os.PathLike or array_like, optional
        One energy per image (eV or keV), or a text file (first column). Optional for HDF5
        (``energies_dataset``) and Zarr groups with an ``energy`` array.
    dataset : str, optional
        HDF5 dataset (default ``/img_xanes``) or Zarr array name.
    i0 : optional
        Convert transmitted counts to absorbance ``-ln(I/I0)``: a 1-D array (I0 per image), a
        text file with I0 per line or two columns ``energy, I0`` (interpolated onto the
        energies), ``"background:y0:y1,x0:x1"`` (I0 = mean over a sample-free region), a
        mask file (``.tif``/``.npy``, nonzero = background) or a mask array.
    quantity : {"counts", "absorbance"}, optional
        What the input holds when no conversion is made (default "counts").
    overwrite : bool
        Replace an existing output.
    tile : int or sequence of int, optional
        Spatial tile edge (default 256 for images, 64 for volumes).
    compressor : {"zstd", "lz4", "blosc", None}
        Codec of the store (see :func:`bigxanes.store.write_dataset`).
    energies_dataset, flat, dark : str, optional
        HDF5 only (NSLS-II FXI defaults ``/X_eng``, ``/img_bkg``, ``/img_dark``); see
        :func:`import_hdf5`.
    normalize : bool
        Store the edge-step normalized stack (chunk-wise,
        :func:`bigxanes.normalize_stack.normalize_stack`); needs absorbance (give ``i0`` or
        flat fields for counts). Unmixing does not need it: it fits a free scale per pixel.

    Returns
    -------
    pathlib.Path
        The output store.
    """
    _check_not_input(Path(input), out)
    if Path(out).exists() and not overwrite:
        raise FileExistsError(f"output {out} already exists; pass --overwrite to replace it")
    ds = lazy_stack(
        input,
        energies,
        dataset=dataset,
        i0=i0,
        quantity=quantity,
        tile=tile,
        energies_dataset=energies_dataset,
        flat=flat,
        dark=dark,
    )
    if normalize:
        if ds["stack"].attrs.get("quantity", ds.attrs.get("quantity")) != "absorbance":
            raise ValueError(
                "--normalize needs absorbance: the input holds counts; give --i0 (or flat "
                "fields) to convert them, or --quantity absorbance if it already is"
            )
        from .normalize_stack import normalize_stack

        ds["stack"] = normalize_stack(ds["stack"])
        ds.attrs.update(quantity="normalized", e0=ds["stack"].attrs["e0"])
    return _write(ds, out, overwrite, tile, compressor)


def import_tiff(
    path_or_folder: PathLike,
    out: PathLike,
    energies: Energies,
    *,
    i0: Any = None,
    quantity: str | None = None,
    overwrite: bool = False,
    tile: Tile = None,
    compressor: str | None = "zstd",
) -> Path:
    """Import a multi-page TIFF stack or a folder of TIFF images/volumes.

    A single file holds ``(energy, y, x)`` (one page per energy) or an ``(energy, z, y, x)``
    hyperstack. A folder holds one file per energy, in natural name order (``img2`` before
    ``img10``), each a 2-D image or a 3-D volume ``(z, y, x)``. Uncompressed files are read
    through memory maps, tile by tile. Other parameters: see :func:`import_stack`.

    Returns
    -------
    pathlib.Path
        The output store.
    """
    p = Path(path_or_folder)
    if not (p.is_dir() or p.suffix.lower() in _TIFF_SUFFIXES):
        raise ValueError(f"{p} is neither a folder nor a .tif/.tiff file.")
    return import_stack(
        p,
        out,
        energies,
        i0=i0,
        quantity=quantity,
        overwrite=overwrite,
        tile=tile,
        compressor=compressor,
    )


def import_hdf5(
    path: PathLike,
    out: PathLike,
    dataset: str = "/img_xanes",
    energies_dataset: str | None = "/X_eng",
    flat: str | None = "/img_bkg",
    dark: str | None = "/img_dark",
    *,
    energies: Energies = None,
    i0: Any = None,
    quantity: str | None = None,
    overwrite: bool = False,
    tile: Tile = None,
    compressor: str | None = "zstd",
) -> Path:
    """Import an HDF5 stack (NSLS-II FXI layout by default).

    ``dataset`` is ``(energy, y, x)`` or ``(energy, z, y, x)``; energies come from
    ``energies`` or the ``energies_dataset`` (FXI stores keV; converted to eV). When the
    ``flat`` dataset exists (and ``quantity`` is not "absorbance" and no ``i0`` is given),
    the stored stack is the absorbance ``-ln((I - dark) / (flat - dark))``, computed lazily,
    with attrs ``od_method="flat_dark"``; a missing ``dark`` counts as zero. Flat and dark
    may be one field ``(*spatial)``, one per energy ``(T, *spatial)`` or several exposures
    ``(n, *spatial)`` with ``n != T`` (averaged). Without a flat field the raw counts are
    stored (``quantity="counts"`` unless told otherwise). Pass ``flat=None`` to skip it.

    Raises
    ------
    ValueError
        If ``dataset`` is not in the file (the message lists the datasets present), or on
        energy problems (see :mod:`bigxanes.importers`).

    Returns
    -------
    pathlib.Path
        The output store.
    """
    return import_stack(
        path,
        out,
        energies,
        dataset,
        i0,
        quantity=quantity,
        overwrite=overwrite,
        tile=tile,
        compressor=compressor,
        energies_dataset=energies_dataset,
        flat=flat,
        dark=dark,
    )


def import_npy(
    path: PathLike,
    out: PathLike,
    energies: Energies,
    *,
    i0: Any = None,
    quantity: str | None = None,
    overwrite: bool = False,
    tile: Tile = None,
    compressor: str | None = "zstd",
) -> Path:
    """Import a ``.npy`` array ``(energy, y, x)`` or ``(energy, z, y, x)`` (memory-mapped).

    Returns
    -------
    pathlib.Path
        The output store.
    """
    if Path(path).suffix.lower() != ".npy":
        raise ValueError(f"{path} is not a .npy file.")
    return import_stack(
        path,
        out,
        energies,
        i0=i0,
        quantity=quantity,
        overwrite=overwrite,
        tile=tile,
        compressor=compressor,
    )


def import_zarr(
    path: PathLike,
    out: PathLike,
    energies: Energies = None,
    *,
    dataset: str | None = None,
    i0: Any = None,
    quantity: str | None = None,
    overwrite: bool = False,
    tile: Tile = None,
    compressor: str | None = "zstd",
) -> Path:
    """Import a Zarr array, or a group/xarray store (array ``dataset``, else ``stack``, else
    the only 3-D/4-D array); its ``energy`` array is used when ``energies`` is None.

    Returns
    -------
    pathlib.Path
        The output store.
    """
    return import_stack(
        path,
        out,
        energies,
        dataset,
        i0,
        quantity=quantity,
        overwrite=overwrite,
        tile=tile,
        compressor=compressor,
    )
