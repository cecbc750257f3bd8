"""Edge-step normalization of a whole stack, chunk-wise (the Dask wrapper of
:func:`bigxanes.normalize.normalize_spectra`).

Every spatial chunk holds the whole energy axis, so the per-pixel fits are chunk-local: one
``map_blocks`` call, no halo. One e0 is used for all pixels (the derivative maximum of the
mean spectrum unless given), so a chunked result equals the in-memory one exactly, whatever
the chunking.
"""

from __future__ import annotations

import dask.array as da
import numpy as np
import xarray as xr

from .normalize import find_e0, normalize_spectra


def _normalize_block(block: np.ndarray, *, energy: np.ndarray, e0: float, kw: dict) -> np.ndarray:
    out = normalize_spectra(energy, np.asarray(block, dtype=np.float64), e0=e0, **kw).norm
    return out.astype(np.float32)


def normalize_stack(stack: xr.DataArray, *, e0: float | None = None, **kw) -> xr.DataArray:
    """Edge-step normalized stack ``(mu - pre) / edge_step`` per pixel, lazily and chunk-wise.

    Parameters
    ----------
    stack : xr.DataArray (energy, [z], y, x), absorbance, energy in eV
    e0 : float, optional
        Edge energy for all pixels; default: derivative maximum of the mean spectrum
        (NaN pixels ignored).
    **kw
        Windows of :func:`bigxanes.normalize.normalize_spectra` (``pre1``, ``pre2``, ``norm1``,
        ``norm2``, ``nnorm``). Pixels without an edge (step <= 0, empty background) become NaN.

    Returns
    -------
    xr.DataArray, float32, same dims, chunks and coordinates, attrs ``quantity="normalized"``
    and ``e0``.
    """
    stack = stack.transpose("energy", ...)
    energy = np.asarray(stack["energy"].values, dtype=np.float64)
    data = stack.data if isinstance(stack.data, da.Array) else da.from_array(stack.values)
    if data.chunks[0] != (data.shape[0],):
        data = data.rechunk({0: -1})
    if e0 is None:
        mean = np.asarray(da.nanmean(data.reshape(data.shape[0], -1), axis=1).compute())
        e0 = float(find_e0(energy, mean))
    out = data.map_blocks(_normalize_block, energy=energy, e0=float(e0), kw=kw, dtype=np.float32)
    res = stack.copy(data=out)
    res.attrs.update(stack.attrs)
    res.attrs.update(quantity="normalized", e0=float(e0))
    return res
