"""Edge maps from the data alone, chunk-wise: Edge-50 energy and white-line energy/height.

No references are needed. One edge energy ``e0`` for the whole stack (derivative maximum of the
mean spectrum over the sample), each pixel edge-step normalized
(:func:`bigxanes.normalize.normalize_spectra`), then per block
:func:`bigxanes.kernels.edge50.edge50_energy` and
:func:`bigxanes.kernels.whiteline.white_line`. Background pixels have no edge: their
"Edge-50" is a noise crossing, so the maps are NaN outside the sample mask (``mask="auto"``:
Otsu's threshold on the absorption jump, :func:`bigxanes.region_spectra.edge_jump_map`).
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import xarray as xr

from .kernels.edge50 import edge50_energy
from .kernels.whiteline import white_line
from .normalize import find_e0, normalize_spectra
from .region_spectra import edge_jump_map
from .regions import resolve_mask

__all__ = ["edge_maps", "edge_maps_block"]


def edge_maps_block(
    block: np.ndarray,
    energy: np.ndarray,
    e0: float,
    level: float = 0.5,
    half_width: int = 3,
    window: tuple[float, float] | None = None,
) -> np.ndarray:
    """Edge-50 energy, white-line energy and height of one block ``(T, *tile)`` -> ``(3, *tile)``.

    The white line is searched in the normalized spectra (height in edge-step units).
    """
    nr = normalize_spectra(energy, np.asarray(block, dtype=np.float64), e0=e0)
    e50 = edge50_energy(energy, nr.norm, level)
    win = window if window is not None else (e0, float(energy[-1]))
    wl_e, wl_h = white_line(energy, nr.norm, half_width=half_width, window=win)
    return np.stack([e50, wl_e, wl_h]).astype(np.float32)


def edge_maps(
    stack: xr.DataArray,
    *,
    mask: str | os.PathLike | np.ndarray | None = "auto",
    e0: float | None = None,
    level: float = 0.5,
    half_width: int = 3,
    window: tuple[float, float] | None = None,
) -> xr.Dataset:
    """Edge-50 and white-line maps of a stack (NumPy- or dask-backed), NaN outside the mask.

    Parameters
    ----------
    stack : xarray.DataArray
        ``(energy, [z], y, x)``, optical density.
    mask : "auto", path, bool ndarray or None
        Sample mask (``--mask``); None keeps every pixel.
    e0 : float, optional
        Edge energy (eV) for the normalization; default from the mean spectrum in the mask.
    level : float
        Edge-50 level (0.5).
    half_width : int
        Points on each side of the maximum in the white-line quadratic fit.
    window : (float, float), optional
        White-line search range (eV); default ``[e0, E_max]``.

    Returns
    -------
    xarray.Dataset
        ``edge50``, ``white_line_energy`` (eV), ``white_line_height`` (edge-step units),
        ``mask``; attrs ``method="edge-maps"``, ``e0``, ``level``.
    """
    import dask.array as da

    spatial = [str(d) for d in stack.dims if d in ("z", "y", "x")]
    shape = tuple(int(stack.sizes[d]) for d in spatial)
    energy = np.asarray(stack["energy"].values, dtype=np.float64)
    jump = None
    if isinstance(mask, str) and mask == "auto":
        jump = np.asarray(edge_jump_map(stack).values)
    m = resolve_mask(mask, shape, jump)
    if m is None:
        m = np.ones(shape, dtype=bool)
    if not m.any():
        raise ValueError("the mask selects no pixel; check --mask")
    if e0 is None:
        mean = stack.where(xr.DataArray(m, dims=spatial)).mean(spatial, skipna=True)
        e0 = float(find_e0(energy, np.asarray(mean.values)[:, None], smooth=1.0)[0])
    data = stack.data
    if not isinstance(data, da.Array):
        data = da.from_array(np.asarray(data), chunks=(-1,) + shape)
    data = data.rechunk({0: -1})
    out = da.map_blocks(
        edge_maps_block,
        data,
        energy,
        e0,
        level,
        half_width,
        window,
        dtype=np.float32,
        chunks=((3,),) + data.chunks[1:],
    )
    vals = np.asarray(out.compute())
    vals[:, ~m] = np.nan
    coords: dict[str, Any] = {d: stack[d] for d in spatial if d in stack.coords}
    ds = xr.Dataset(
        {
            "edge50": (spatial, vals[0], {"units": "eV", "long_name": "Edge-50 energy"}),
            "white_line_energy": (
                spatial,
                vals[1],
                {"units": "eV", "long_name": "white-line (peak) energy"},
            ),
            "white_line_height": (
                spatial,
                vals[2],
                {"units": "1", "long_name": "white-line height (edge-step units)"},
            ),
            "mask": (spatial, m, {"long_name": "sample mask"}),
        },
        coords=coords,
    )
    ds.attrs.update(method="edge-maps", e0=float(e0), level=float(level), half_width=half_width)
    return ds
