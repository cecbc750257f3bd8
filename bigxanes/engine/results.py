"""Writing the engine's result Dataset (assembled by :mod:`bigxanes.pipeline.result`) to Zarr,
atomically via :func:`bigxanes.store.write_dataset` (temp dir, completion marker last,
rename)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import dask
import xarray as xr

from ..store import write_dataset

__all__ = ["write_results"]


def write_results(
    ds: xr.Dataset,
    path: str | Path,
    *,
    tiles: Sequence[int],
    scheduler: Any,
    overwrite: bool,
    verify: Callable[[], None] | None = None,
) -> Path:
    """Write the dask-backed result Dataset to ``path`` in one pass, chunked like the stack's
    spatial ``tiles``; complete (``bigxanes_complete``) only once everything is written and
    ``verify`` (the input-fingerprint check) has passed."""
    sdims = [d for d in ds["scale"].dims] if "scale" in ds else list(ds["edge50"].dims)
    chunks = {d: int(t) for d, t in zip(sdims, tiles, strict=True)}
    with dask.config.set(scheduler=scheduler):
        return write_dataset(
            ds, path, overwrite=overwrite, compressor="zstd", chunks=chunks, verify=verify
        )
