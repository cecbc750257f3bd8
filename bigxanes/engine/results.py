"""Output of the engine: block functions for the result maps and the Dataset written to Zarr
(DESIGN.md §5), atomically via :func:`bigxanes.store.write_dataset` (temp dir, completion
marker last, rename)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import dask
import numpy as np
import xarray as xr

from .. import __version__
from ..kernels.admm import StateLayout
from ..kernels.lcf import fractions_from_coefficients
from ..rum import final_maps
from ..store import write_dataset
from .chunked import Pass1Layout

__all__ = ["MASK_THRESHOLD", "lcf_outputs_block", "rum_outputs_block", "write_results"]

#: ``mask`` is True where ``scale > MASK_THRESHOLD · c`` (c: the data scale, the 99th
#: percentile of the LCF scale) and the spectrum was finite.
MASK_THRESHOLD = 0.05


def _fractions(M: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    L = M.shape[0]
    X, s = fractions_from_coefficients(M.reshape(L, -1))
    return X.reshape(M.shape), s.reshape(M.shape[1:])


def lcf_outputs_block(
    P: np.ndarray, *, p1: Pass1Layout, n_energies: int, scale: float, nnls_only: bool = False
) -> np.ndarray:
    """LCF maps of a pass-1 block: ``fraction`` (L), ``scale``, ``residual_rms``, ``mask``.

    With ``nnls_only`` the NNLS coefficients are used whatever the layout's variant (the
    ``lcf_fraction`` of RUM runs).
    """
    sl = p1.slices
    msl, rsl = (sl["M0"], sl["resid0"]) if nnls_only else p1.lcf_slices()
    X, s = _fractions(P[msl])
    rms = np.sqrt(np.maximum(P[rsl][0], 0.0) / n_energies)
    mask = (s > MASK_THRESHOLD * scale) & (P[sl["bad"]][0] == 0)
    return np.concatenate([X, s[None], rms[None], mask[None].astype(np.float64)])


def rum_outputs_block(
    S: np.ndarray, *, layout: StateLayout, AtA: np.ndarray, scale: float, n_energies: int
) -> np.ndarray:
    """RUM maps of a final state block: ``fraction`` (L), ``scale``, ``residual_rms``.

    Uses :func:`bigxanes.rum.final_maps`; the residual is ``|y - A X s|`` in the stack's units.
    """
    sl = layout.slices
    X, s, M = final_maps(S, layout, scale)
    aty = np.asarray(S[sl["aty"]], dtype=np.float64) * scale
    yty = np.asarray(S[sl["yty"]][0], dtype=np.float64) * scale * scale
    r = yty - 2.0 * np.sum(M * aty, axis=0) + np.sum(M * np.tensordot(AtA, M, axes=1), axis=0)
    rms = np.sqrt(np.maximum(r, 0.0) / n_energies)
    return np.concatenate([X, s[None], rms[None]])


def write_results(
    variables: Mapping[str, tuple[Sequence[str], Any]],
    coords: Mapping[str, Any],
    attrs: Mapping[str, Any],
    path: str | Path,
    *,
    tiles: Sequence[int],
    spatial_dims: Sequence[str],
    scheduler: Any,
    overwrite: bool,
) -> Path:
    """Write the result Dataset (dask-backed variables computed in one pass) to ``path``.

    ``attrs`` values that are not str/number are stored as JSON strings (``history``,
    ``params``). The store is complete (``bigxanes_complete``) only once everything is written.
    """
    ds = xr.Dataset({k: (tuple(d), v) for k, (d, v) in variables.items()}, coords=dict(coords))
    clean: dict[str, Any] = {}
    for k, v in attrs.items():
        if v is None:
            continue
        if isinstance(v, bool):
            clean[k] = int(v)
        elif isinstance(v, str | int | float | np.integer | np.floating):
            clean[k] = v.item() if isinstance(v, np.generic) else v
        else:
            clean[k] = json.dumps(v)
    clean["version"] = __version__
    ds.attrs.update(clean)
    chunks = {d: int(t) for d, t in zip(spatial_dims, tiles, strict=True)}
    with dask.config.set(scheduler=scheduler):
        return write_dataset(ds, path, overwrite=overwrite, compressor="zstd", chunks=chunks)
