"""Alignment of a TXM-XANES stack: estimate the drift between energies and remove it, chunk-wise.

Steps (kernels in :mod:`bigxanes.kernels.registration`):

1. Estimation images: the stack restricted to a region (``--region``, default the whole field)
   and binned by ``bin`` -- small enough to hold in memory at any stack size.
2. Reference (``reference_energy="auto"``): the first energy above the edge region, where the
   contrast is that of the post-edge. The edge region is ``[e0 - 5 %, e0 + 15 %]`` of the energy
   range, with ``e0`` the derivative maximum of the mean spectrum.
3. Shifts by phase correlation (sub-pixel, upsampled), directly against the reference above the
   edge, chained through neighbouring energies across the edge, and against a pre-edge anchor
   below it (:func:`~bigxanes.kernels.registration.register_series`).
4. Shifts applied per chunk with a halo (``dask.array.map_overlap``) by linear interpolation;
   pixels that came from outside the field are NaN, then the stack is cropped to the region that
   every energy covers (``crop=True``) or kept whole with a ``valid`` mask.

The shift table is a Dataset ``shift`` (energy, axis) in pixels of the full-resolution stack,
stored with the aligned stack and drawn by :func:`plot_shifts`.
"""

from __future__ import annotations

import functools
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from .kernels.registration import MIN_CONTRAST, register_series, valid_box
from .kernels.registration import apply_shifts as _apply_block
from .normalize import find_e0
from .regions import parse_region
from .store import STACK_VAR as _STACK_VAR

__all__ = [
    "STACK_VAR",
    "edge_region",
    "estimate_shifts",
    "apply_shifts",
    "align",
    "align_store",
    "plot_shifts",
    "shift_table",
]

_METHOD_NAMES = "0 ref, 1 direct, 2 chained, 3 anchor, 4 held (no contrast)"

#: Name of the stack variable in stores written here (``Dataset.stack`` is a method).
STACK_VAR = _STACK_VAR


def _as_stack(stack: Any) -> xr.DataArray:
    if isinstance(stack, xr.Dataset):
        for name in (STACK_VAR, "stack"):
            if name in stack.data_vars:
                return stack[name]
        raise ValueError("the dataset holds no 'absorbance' or 'stack' variable")
    if not isinstance(stack, xr.DataArray):
        raise ValueError("give the stack as an xarray DataArray with an 'energy' coordinate")
    return stack


def edge_region(energy: np.ndarray, mean_spectrum: np.ndarray) -> tuple[int, int, float]:
    """Index range ``[lo, hi)`` of the edge region and the edge energy ``e0``.

    ``e0`` is the derivative maximum of the mean spectrum
    (:func:`bigxanes.normalize.find_e0`); the region spans ``e0 - 0.05 R`` to ``e0 + 0.15 R``
    with ``R`` the energy range: the rising edge and the white line, where the image contrast
    changes from energy to energy.
    """
    e = np.asarray(energy, dtype=np.float64)
    e0 = float(find_e0(e, np.asarray(mean_spectrum)[:, None])[0])
    r = float(e[-1] - e[0])
    lo = int(np.searchsorted(e, e0 - 0.05 * r))
    hi = int(np.searchsorted(e, e0 + 0.15 * r))
    return lo, min(hi, e.size - 1), e0


def _bin(images: np.ndarray, b: int) -> np.ndarray:
    if b <= 1:
        return images
    sl = (slice(None),) + tuple(slice(0, (n // b) * b) for n in images.shape[1:])
    a = images[sl]
    shape = [a.shape[0]]
    for n in a.shape[1:]:
        shape += [n // b, b]
    return np.nanmean(a.reshape(shape), axis=tuple(range(2, 2 * a.ndim - 1, 2)))


def estimate_shifts(
    stack: Any,
    *,
    reference_energy: float | str = "auto",
    region: str | tuple[slice, ...] | None = None,
    bin: int = 1,
    upsample: int = 100,
    chain: bool = True,
    min_contrast: float = MIN_CONTRAST,
) -> xr.Dataset:
    """Drift of every energy image relative to a reference image (the shift table).

    Parameters
    ----------
    stack : xarray.DataArray or Dataset
        ``(energy, [z], y, x)``, NumPy- or dask-backed (only the region is read).
    reference_energy : float or "auto"
        Energy (eV) of the reference image (nearest stored energy), or ``"auto"``: the first
        energy above the edge region (:func:`edge_region`).
    region : str or tuple of slice, optional
        ``"y0:y1,x0:x1[,z0:z1]"``: estimate on this part of the field only (a feature-rich area,
        or a smaller read on a huge stack). Default the whole field.
    bin : int
        Average ``bin``^ndim pixels before estimating (faster, less noisy); the shifts are
        returned in full-resolution pixels.
    upsample : int
        Sub-pixel precision ``1/upsample`` (per binned pixel).
    chain : bool
        Chain through neighbouring energies across the edge (else every image against the
        reference directly).
    min_contrast : float
        Images whose contrast-to-noise ratio is below this (pre-edge images of a sample that
        absorbs only at the edge: pure noise) keep their neighbour's shift instead of one read
        off a noise peak (:func:`~bigxanes.kernels.registration.register_series`).

    Returns
    -------
    xarray.Dataset
        ``shift`` (energy, axis) float64 in pixels (``axis`` = ``z``/``y``/``x``), ``method``
        (energy) int8 (0 reference, 1 direct, 2 chained, 3 pre-edge anchor, 4 held: no
        contrast); attrs ``reference_energy``, ``e0``, ``edge_lo_ev``/``edge_hi_ev``,
        ``region``, ``bin``, ``upsample``, ``min_contrast``, ``n_held``.
    """
    st = _as_stack(stack)
    spatial = tuple(str(d) for d in st.dims[1:])
    if st.dims[0] != "energy" or spatial not in (("y", "x"), ("z", "y", "x")):
        raise ValueError(f"the stack must have dims (energy, [z], y, x), got {st.dims}")
    energy = np.asarray(st["energy"].values, dtype=np.float64)
    shape = tuple(int(n) for n in st.shape[1:])
    if isinstance(region, str):
        region = parse_region(region, shape)
    sub = st if region is None else st.isel(dict(zip(spatial, region, strict=True)))
    b = max(1, int(bin))
    images = _bin(np.asarray(sub.values, dtype=np.float64), b)
    T = images.shape[0]
    mean = np.nanmean(images.reshape(T, -1), axis=1)
    lo, hi, e0 = edge_region(energy, mean)
    if reference_energy == "auto" or reference_energy is None:
        ref = hi
    else:
        try:
            ref = int(np.argmin(np.abs(energy - float(reference_energy))))
        except (TypeError, ValueError):
            raise ValueError(
                f"--reference-energy {reference_energy!r} is neither a number (eV) nor 'auto'"
            ) from None
    edge = (lo, min(hi, ref)) if chain else None
    shifts, method = register_series(images, ref, edge, upsample, min_contrast)
    shifts = shifts * b
    ds = xr.Dataset(
        {
            "shift": (("energy", "axis"), shifts, {"units": "pixel", "long_name": "drift"}),
            "method": ("energy", method, {"long_name": _METHOD_NAMES}),
        },
        coords={"energy": ("energy", energy, {"units": "eV"}), "axis": list(spatial)},
    )
    ds.attrs.update(
        reference_energy=float(energy[ref]),
        e0=e0,
        edge_lo_ev=float(energy[min(lo, T - 1)]),
        edge_hi_ev=float(energy[min(hi, T - 1)]),
        region="" if region is None else ",".join(f"{s.start}:{s.stop}" for s in region),
        bin=b,
        upsample=int(upsample),
        min_contrast=float(min_contrast),
        n_held=int((method == 4).sum()),
        sign="corrected[i] = raw[i - shift]",
    )
    return ds


def apply_shifts(
    stack: Any, shifts: xr.Dataset | np.ndarray, *, order: int = 1, crop: bool = True
) -> xr.DataArray:
    """Remove the drift from a stack, chunk by chunk, with no wrap-around or ringing.

    Each chunk gets a halo of ``ceil(max |shift|) + 2`` pixels (``map_overlap``, no padding at
    the array's faces); inside, each energy image is interpolated at ``i - shift``
    (:func:`bigxanes.kernels.registration.apply_shifts`), NaN where that falls outside the field.

    Parameters
    ----------
    stack : xarray.DataArray or Dataset
        ``(energy, [z], y, x)``; dask-backed stays lazy (one chunk along energy).
    shifts : Dataset from :func:`estimate_shifts`, or ``(T, ndim)`` array
    order : {1, 3}
        Interpolation order (1: linear, never overshoots).
    crop : bool
        Crop to the region every energy covers (no NaN left); else keep the whole field.

    Returns
    -------
    xarray.DataArray
        Aligned stack, float32, same dims; y/x (z) coordinates follow the crop.
    """
    import dask.array as da

    st = _as_stack(stack)
    s = np.asarray(shifts["shift"].values if isinstance(shifts, xr.Dataset) else shifts, float)
    if s.shape != (st.shape[0], st.ndim - 1):
        raise ValueError(f"shift table has shape {s.shape}, expected {(st.shape[0], st.ndim - 1)}")
    data = st.data
    if not isinstance(data, da.Array):
        data = da.from_array(np.asarray(data), chunks=(-1,) + tuple(st.shape[1:]))
    data = data.rechunk({0: -1})
    depth = int(math.ceil(float(np.abs(s).max()) if s.size else 0.0)) + 2
    depths = {0: 0, **{i: min(depth, n) for i, n in enumerate(st.shape[1:], start=1)}}
    small = {i: max(2 * d, 1) for i, d in depths.items() if i and min(data.chunks[i]) < d}
    if small:  # map_overlap needs every chunk at least as deep as the halo
        data = data.rechunk(small)
    out = da.map_overlap(
        functools.partial(_apply_block, shifts=s, order=order),
        data,
        depth=depths,
        boundary="none",
        dtype=np.float32,
    )
    res = xr.DataArray(out, dims=st.dims, coords=st.coords, attrs=dict(st.attrs), name=STACK_VAR)
    if crop:
        box = valid_box(tuple(st.shape[1:]), s)
        res = res.isel(dict(zip(st.dims[1:], box, strict=True)))
    res.attrs["aligned"] = "drift removed by bigxanes.align (linear interpolation)"
    return res


def align(
    stack: Any,
    *,
    reference_energy: float | str = "auto",
    region: str | None = None,
    bin: int = 1,
    upsample: int = 100,
    order: int = 1,
    crop: bool = True,
) -> tuple[xr.DataArray, xr.Dataset]:
    """Estimate and remove the drift of a stack (in memory or dask-backed).

    Returns
    -------
    aligned : xarray.DataArray
        See :func:`apply_shifts`.
    shifts : xarray.Dataset
        See :func:`estimate_shifts`.
    """
    table = estimate_shifts(
        stack, reference_energy=reference_energy, region=region, bin=bin, upsample=upsample
    )
    return apply_shifts(stack, table, order=order, crop=crop), table


def align_store(
    in_path: str | os.PathLike,
    out_path: str | os.PathLike,
    *,
    reference_energy: float | str = "auto",
    region: str | None = None,
    bin: int = 1,
    upsample: int = 100,
    order: int = 1,
    crop: bool = True,
    overwrite: bool = False,
    plot: str | os.PathLike | None = None,
) -> Path:
    """``bigxanes align IN.zarr OUT.zarr``: align a stack store chunk-wise into a new store.

    The output holds ``absorbance`` (the aligned stack, stored chunking), the shift table
    (``shift``, ``shift_method``), the input's ``references`` and, with ``crop=False``, ``valid``
    (True where every energy has data). Input is never modified.

    Returns
    -------
    pathlib.Path
        ``out_path``.
    """
    from .store import open_stack, write_dataset

    src = open_stack(in_path)
    if Path(out_path).resolve() == Path(in_path).resolve():
        raise ValueError("OUT is the input store; give a new path for the aligned stack")
    st = src["stack"]
    table = estimate_shifts(
        st, reference_energy=reference_energy, region=region, bin=bin, upsample=upsample
    )
    aligned = apply_shifts(st, table, order=order, crop=crop)
    out = xr.Dataset({STACK_VAR: aligned})
    out["shift"] = table["shift"]
    out["shift_method"] = table["method"]
    if "references" in src.data_vars:
        out["references"] = src["references"]
    if not crop:
        out["valid"] = aligned.notnull().all("energy")
    out.attrs.update({k: v for k, v in src.attrs.items() if k != "bigxanes_complete"})
    out.attrs.update({f"align_{k}": v for k, v in table.attrs.items()})
    path = write_dataset(out, out_path, overwrite=overwrite)
    if plot is not None:
        plot_shifts(table, plot)
    return path


def shift_table(aligned: xr.Dataset) -> xr.Dataset:
    """The shift table stored in an aligned stack store (as :func:`estimate_shifts` returns it)."""
    if "shift" not in aligned:
        raise ValueError("the store holds no shift table: it was not written by `bigxanes align`")
    table = xr.Dataset({"shift": aligned["shift"].load()})
    if "shift_method" in aligned:
        table["method"] = aligned["shift_method"].load()
    table.attrs.update(
        {k[len("align_") :]: v for k, v in aligned.attrs.items() if k.startswith("align_")}
    )
    return table


def plot_shifts(table: xr.Dataset, path: str | os.PathLike) -> Path:
    """Figure of the shift table: drift per axis vs energy, reference and edge region marked."""
    from .plot import _mpl, save_figure

    plt = _mpl()
    fig, ax = plt.subplots(figsize=(6, 3.2))
    e = table["energy"].values
    for k, name in enumerate(table["axis"].values):
        ax.plot(e, table["shift"].values[:, k], marker=".", label=f"{name}")
    a = table.attrs
    if "edge_lo_ev" in a and "edge_hi_ev" in a:
        ax.axvspan(a["edge_lo_ev"], a["edge_hi_ev"], color="0.9", label="chained")
    if "method" in table and (np.asarray(table["method"].values) == 4).any():
        held = np.asarray(table["method"].values) == 4
        zeros = np.zeros(int(held.sum()))
        ax.plot(e[held], zeros, "x", color="0.5", ms=4, label="held (no contrast)")
    if "reference_energy" in a:
        ax.axvline(a["reference_energy"], color="k", lw=0.8, ls="--", label="reference")
    ax.set_xlabel("energy (eV)")
    ax.set_ylabel("shift (px)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    out = save_figure(fig, path)
    plt.close(fig)
    return out
