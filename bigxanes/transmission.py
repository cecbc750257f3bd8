"""Transmitted intensity to absorbance (optical density), chunk-wise.

``OD = -ln(I / I0)``. Every function works element-wise on NumPy arrays and lazily on dask
arrays (the result is a dask array with the input's chunks; nothing is computed), so it runs
on one spatial tile at a time.

Non-positive values: where ``I <= 0`` or ``I0 <= 0`` (or either is NaN/Inf) the logarithm is
undefined or infinite, so the OD is set to **NaN** (never ``-inf``/``+inf``). The unmixing step
masks NaN pixels. Arrays are ``(T, *spatial)`` with the energy axis first.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bigxanes.energy import as_ev

__all__ = [
    "absorbance",
    "od_from_i0",
    "od_from_background",
    "od_from_flat_dark",
    "read_table",
    "read_i0",
    "parse_region",
]

ArrayLike = Any  # numpy.ndarray or dask.array.Array


def absorbance(intensity: ArrayLike, i0: ArrayLike, dtype: Any = np.float32) -> ArrayLike:
    """``-ln(intensity / i0)`` with NaN where either is non-positive or non-finite.

    Parameters
    ----------
    intensity, i0 : numpy.ndarray or dask.array.Array
        Broadcastable arrays. Computed in float64.
    dtype : numpy dtype
        Output dtype (default float32, the engine's working precision).

    Returns
    -------
    numpy.ndarray or dask.array.Array
        Optical density (lazy when an input is a dask array).
    """
    i = intensity.astype(np.float64) if hasattr(intensity, "astype") else np.float64(intensity)
    i0 = i0.astype(np.float64) if hasattr(i0, "astype") else np.float64(i0)
    ok = (i > 0) & (i0 > 0) & np.isfinite(i) & np.isfinite(i0)
    # substitute 1 where invalid so the log never sees <= 0 (no warnings), then mask with NaN
    ratio = np.where(ok, i, 1.0) / np.where(ok, i0, 1.0)
    od = np.where(ok, -np.log(ratio), np.nan)
    return od.astype(dtype)


def read_table(path: str | os.PathLike) -> np.ndarray:
    """Read a numeric text table (whitespace, comma or tab separated).

    Lines starting with ``#`` and non-numeric header lines before the data are skipped.

    Parameters
    ----------
    path : str or os.PathLike
        Text file.

    Returns
    -------
    numpy.ndarray, shape (N, C)
        float64 values, one row per data line.

    Raises
    ------
    FileNotFoundError
        If the file does not exist.
    ValueError
        If the file has no numeric rows, a non-numeric row inside the data, or ragged rows.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"table file {path} does not exist")
    rows: list[list[float]] = []
    with open(path, encoding="utf-8", errors="replace") as fh:
        for lineno, line in enumerate(fh, start=1):
            text = line.split("#", 1)[0].strip()
            if not text:
                continue
            tokens = text.replace(",", " ").replace(";", " ").split()
            try:
                rows.append([float(t) for t in tokens])
            except ValueError:
                if rows:
                    raise ValueError(
                        f"{path}, line {lineno}: non-numeric value in {line.strip()!r}; "
                        "fix or comment out the line with '#'."
                    ) from None
                continue  # header line
    if not rows:
        raise ValueError(f"{path} contains no numeric rows.")
    ncol = min(len(r) for r in rows)
    if any(len(r) != ncol for r in rows):
        raise ValueError(f"{path} has rows with different numbers of columns.")
    return np.asarray(rows, dtype=np.float64)


def read_i0(
    i0: str | os.PathLike | ArrayLike, energies: ArrayLike | None, n_energies: int
) -> np.ndarray:
    """Incident intensity per energy, on the stack's energies.

    Parameters
    ----------
    i0 : str, os.PathLike or array_like
        A 1-D array with one value per energy (in the stack's order), an ``(N, 2)`` table
        ``(energy, counts)``, or a text file with one column (values per energy) or two
        columns (energy, counts; e.g. ``i0_counts.txt``).
    energies : array_like or None
        The stack's energies (eV or keV; any order). Needed for tables, which are linearly
        interpolated onto them when the grids differ (no extrapolation).
    n_energies : int
        Number of images.

    Returns
    -------
    numpy.ndarray, shape (T,)
        float64 I0 aligned with the stack's energy axis.

    Raises
    ------
    ValueError
        On a length mismatch or a table that does not cover the stack's energies.
    """
    label = str(i0) if isinstance(i0, (str, os.PathLike)) else "the given I0 array"
    table = read_table(i0) if isinstance(i0, (str, os.PathLike)) else np.asarray(i0, float)
    if table.ndim == 2 and table.shape[1] == 1:
        table = table[:, 0]
    if table.ndim == 1:
        if table.size != n_energies:
            raise ValueError(
                f"{table.size} I0 values in {label} but {n_energies} images; give one I0 per "
                "energy or a two-column table (energy, I0)."
            )
        return table
    if table.ndim != 2:
        raise ValueError(f"I0 in {label} must be 1-D or a two-column table, got {table.shape}.")
    if energies is None:
        raise ValueError(f"I0 table {label} needs the stack's energies to be interpolated.")
    e = np.asarray(energies, dtype=np.float64)
    if e.size != n_energies:
        raise ValueError(f"{e.size} energies but {n_energies} images.")
    te = table[:, 0]
    order = np.argsort(te, kind="stable")
    te_ev, tv = as_ev(te[order]), table[order, 1]
    e_ev = e * 1000.0 if np.max(e) < 100.0 else e
    if te_ev.size == e_ev.size and np.allclose(te_ev, np.sort(e_ev), rtol=0, atol=1e-6):
        return np.interp(e_ev, te_ev, tv)  # same grid: exact values (interp at the nodes)
    tol = 1e-6
    if e_ev.min() < te_ev[0] - tol or e_ev.max() > te_ev[-1] + tol:
        raise ValueError(
            f"I0 table {label} covers {te_ev[0]:.3f}-{te_ev[-1]:.3f} eV but the stack spans "
            f"{e_ev.min():.3f}-{e_ev.max():.3f} eV; I0 cannot be extrapolated: supply I0 over "
            "the whole range."
        )
    return np.interp(e_ev, te_ev, tv)


def od_from_i0(
    counts: ArrayLike,
    i0: str | os.PathLike | ArrayLike,
    energies: ArrayLike | None = None,
    *,
    dtype: Any = np.float32,
) -> ArrayLike:
    """Absorbance from transmitted counts and a measured I0 spectrum.

    Parameters
    ----------
    counts : numpy.ndarray or dask.array.Array, shape (T, *spatial)
        Transmitted intensity.
    i0 : str, os.PathLike or array_like
        I0 per energy; see :func:`read_i0` (tables are interpolated onto ``energies``).
    energies : array_like, optional
        The stack's energies (required for an (energy, I0) table).
    dtype : numpy dtype
        Output dtype.

    Returns
    -------
    numpy.ndarray or dask.array.Array
        ``-ln(counts / i0[:, None, None])``; NaN where counts or I0 <= 0 (see module doc).
    """
    t = counts.shape[0]
    i0v = read_i0(i0, energies, t)
    return absorbance(counts, i0v.reshape((t,) + (1,) * (counts.ndim - 1)), dtype=dtype)


def parse_region(text: str) -> tuple[slice, ...]:
    """Parse ``"y0:y1,x0:x1"`` (or ``"z0:z1,y0:y1,x0:x1"``) into slices.

    An optional ``"background:"`` prefix is accepted. Empty bounds mean the array edge
    (``":10,5:"``).

    Parameters
    ----------
    text : str
        Region specification.

    Returns
    -------
    tuple of slice
    """
    spec = text.split(":", 1)[1] if text.lower().startswith("background:") else text
    out = []
    for part in spec.split(","):
        bounds = part.strip().split(":")
        if len(bounds) != 2:
            raise ValueError(
                f"cannot parse region {text!r}; write it as y0:y1,x0:x1 (e.g. "
                "background:0:20,0:20)."
            )
        try:
            lo, hi = (int(b) if b.strip() else None for b in bounds)
        except ValueError:
            raise ValueError(
                f"cannot parse region {text!r}: bounds must be integers (y0:y1,x0:x1)."
            ) from None
        out.append(slice(lo, hi))
    return tuple(out)


def _region_mask(region: Sequence[slice] | ArrayLike | str, spatial: tuple[int, ...]) -> np.ndarray:
    if isinstance(region, str):
        region = parse_region(region)
    if isinstance(region, tuple) and all(isinstance(s, slice) for s in region):
        if len(region) != len(spatial):
            raise ValueError(
                f"region has {len(region)} ranges but the images have {len(spatial)} spatial "
                f"dimensions {spatial}; give one range per dimension."
            )
        mask = np.zeros(spatial, dtype=bool)
        mask[region] = True
    else:
        mask = np.asarray(region)
        if mask.shape != spatial:
            raise ValueError(
                f"background mask has shape {mask.shape} but the images are {spatial}."
            )
        mask = mask != 0
    if not mask.any():
        raise ValueError("the background region is empty; choose a region inside the image.")
    return mask


def od_from_background(
    counts: ArrayLike,
    region: Sequence[slice] | ArrayLike | str,
    *,
    dtype: Any = np.float32,
) -> ArrayLike:
    """Absorbance with I0 taken as the mean over a sample-free background region.

    ``I0[t]`` is the mean of the finite values of ``counts[t]`` inside the region (NaN/Inf
    pixels are ignored; an energy whose region has no finite value gets I0 = NaN and so an
    all-NaN OD image).

    Parameters
    ----------
    counts : numpy.ndarray or dask.array.Array, shape (T, *spatial)
        Transmitted intensity.
    region : tuple of slice, str or array_like
        ``(slice_y, slice_x)`` (or with z), a string ``"y0:y1,x0:x1"``, or a boolean/0-1 mask
        of the spatial shape (nonzero = background).
    dtype : numpy dtype
        Output dtype.

    Returns
    -------
    numpy.ndarray or dask.array.Array
        Optical density, lazy for dask input.
    """
    spatial = tuple(int(s) for s in counts.shape[1:])
    i0 = background_i0(counts, region)
    c = counts.astype(np.float64)
    return absorbance(c, i0.reshape((-1,) + (1,) * len(spatial)), dtype=dtype)


def background_i0(counts: ArrayLike, region: Sequence[slice] | ArrayLike | str) -> ArrayLike:
    """I0 per energy: the mean of the finite counts inside a sample-free region (NaN where the
    region has none); lazy for dask input. :func:`od_from_background` divides by it."""
    spatial = tuple(int(s) for s in counts.shape[1:])
    mask = _region_mask(region, spatial)
    axes = tuple(range(1, counts.ndim))
    c = counts.astype(np.float64)
    valid = np.isfinite(c) & mask
    total = np.where(valid, c, 0.0).sum(axis=axes)
    n = valid.sum(axis=axes)
    return np.where(n > 0, total / np.maximum(n, 1), np.nan)


def _average_field(field: ArrayLike, spatial: tuple[int, ...], t: int) -> ArrayLike:
    """Flat/dark field broadcastable to ``(T, *spatial)``.

    Shape ``spatial``: one field for all energies. Shape ``(T, *spatial)``: one per energy.
    Shape ``(n, *spatial)`` with ``n != T``: repeated exposures, averaged over the first axis.
    """
    f = field if hasattr(field, "ndim") else np.asarray(field)
    fs = tuple(int(s) for s in f.shape)
    if fs == spatial:
        return f.astype(np.float64)
    if len(fs) == len(spatial) + 1 and fs[1:] == spatial:
        if fs[0] == t:
            return f.astype(np.float64)
        return f.astype(np.float64).mean(axis=0)
    raise ValueError(
        f"flat/dark field has shape {fs} but the images are {spatial} ({t} energies); give "
        "one field, one per energy, or several exposures (count, *spatial) to average."
    )


def od_from_flat_dark(
    counts: ArrayLike,
    flat: ArrayLike,
    dark: ArrayLike | None = None,
    *,
    dtype: Any = np.float32,
) -> ArrayLike:
    """Absorbance from flat (bright) and dark fields: ``-ln((I - dark) / (flat - dark))``.

    Parameters
    ----------
    counts : numpy.ndarray or dask.array.Array, shape (T, *spatial)
        Transmitted intensity.
    flat : array_like
        Flat field: ``spatial`` (one for all energies), ``(T, *spatial)`` (one per energy) or
        ``(n, *spatial)`` with ``n != T`` (several exposures, averaged).
    dark : array_like, optional
        Dark field, same rules; None means zero.
    dtype : numpy dtype
        Output dtype.

    Returns
    -------
    numpy.ndarray or dask.array.Array
        Optical density; NaN where ``I - dark <= 0`` or ``flat - dark <= 0``.
    """
    spatial = tuple(int(s) for s in counts.shape[1:])
    t = int(counts.shape[0])
    f = _average_field(flat, spatial, t)
    c = counts.astype(np.float64)
    if dark is None:
        return absorbance(c, f, dtype=dtype)
    d = _average_field(dark, spatial, t)
    return absorbance(c - d, f - d, dtype=dtype)
