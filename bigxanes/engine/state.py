"""The engine's working directory: the pass-1 array and the double-buffered ADMM state in a
Zarr group, with commit records for resuming (docs/design.md, "State modes and state blocks").

Layout of ``OUT.work`` (a Zarr v3 group next to the output ``OUT``)::

    pass1      (channels, *spatial) float64   AᵀY, yᵀy, NNLS M0, residual, bad mask, ...
    state_a    (n_channels, *spatial) float32 ADMM state, buffer A
    state_b    (n_channels, *spatial) float32 ADMM state, buffer B

Group attrs: ``run`` (what the run is: input, method, parameters, shapes; a resume refuses a
different run), ``pass1`` (the scalars derived from pass 1, written once pass1 is complete) and
``commit`` (the last completed iteration: ``completed`` = number of iterations done,
``buffer`` holding that state, ``history`` with ``rho_next``, ``scale``, ``lam``). The commit
record is written only after the iteration's single compute has finished writing the other
buffer, so the buffer it names is always complete.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
import zarr

__all__ = ["WorkDir", "BUFFERS"]

BUFFERS = ("state_a", "state_b")


#: Codec of the ADMM state buffers (scratch, noisy float32). None, by measurement
#: (benchmarks/results/bench_engine_io.md, "Work-buffer codecs"): a RUM state compresses only
#: 1.3x with Blosc-LZ4 (1.4x with bitshuffle or zstd), and writing + reading it uncompressed took
#: 0.76x and 0.86x the time of the Blosc-LZ4 c1 shuffle used before, in two runs; the disk
#: estimate (``work_disk_bytes``) was already the uncompressed size.
STATE_CODEC = None


def _compressors(name: str):
    from zarr.codecs import BloscCodec

    if name in BUFFERS:
        return STATE_CODEC
    # pass 1 (float64 channels with a 0/1 flag and sparse NNLS supports): Blosc-LZ4, not measured
    # against the alternatives here (docs/design.md, "Measured pitfalls": lz4 ~2x faster than zstd)
    return (BloscCodec(cname="lz4", clevel=1, shuffle="shuffle"),)


class WorkDir:
    """Zarr group holding the pass-1 channels, the state buffers and the commit records."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    # -- lifecycle -----------------------------------------------------------------------------
    def exists(self) -> bool:
        return (self.path / "zarr.json").exists()

    def reset(self, run: dict[str, Any]) -> None:
        """Start afresh: delete any previous content, record ``run``."""
        if self.path.exists():
            shutil.rmtree(self.path)
        g = zarr.open_group(str(self.path), mode="w", zarr_format=3)
        g.attrs["run"] = _jsonable(run)

    def matches(self, run: dict[str, Any]) -> bool:
        """True when the stored run description equals ``run``."""
        if not self.exists():
            return False
        return self.group().attrs.get("run") == _jsonable(run)

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)

    def group(self, mode: str = "r+") -> zarr.Group:
        return zarr.open_group(str(self.path), mode=mode, zarr_format=3)

    # -- arrays --------------------------------------------------------------------------------
    def create(
        self,
        name: str,
        n_channels: int,
        spatial: Sequence[int],
        tiles: Sequence[int],
        dtype=np.float32,
    ) -> zarr.Array:
        """Create (overwrite) ``(n_channels, *spatial)``, chunked ``(n_channels, *tiles)``."""
        return zarr.create_array(
            store=str(self.path),
            name=name,
            shape=(int(n_channels), *map(int, spatial)),
            chunks=(int(n_channels), *map(int, tiles)),
            dtype=dtype,
            compressors=_compressors(name),
            overwrite=True,
            fill_value=0,
        )

    def array(self, name: str) -> zarr.Array:
        return zarr.open_array(str(self.path / name), mode="r+")

    def dask(self, name: str, chunks: Any = None) -> da.Array:
        """The stored array as dask, on its stored chunks or on ``chunks`` (read directly in
        those blocks: no rechunk layer, so the reads stay root tasks the scheduler queues)."""
        if chunks is None:
            return da.from_zarr(str(self.path / name))
        return da.from_zarr(str(self.path / name), chunks=chunks)

    # -- records -------------------------------------------------------------------------------
    def get(self, key: str) -> Any:
        if not self.exists():
            return None
        return self.group("r").attrs.get(key)

    def put(self, key: str, value: Any) -> None:
        self.group().attrs[key] = _jsonable(value)

    def commit(self, completed: int, buffer: str, history: dict, **extra: Any) -> None:
        """Record that ``buffer`` holds the state after ``completed`` iterations."""
        self.put(
            "commit", {"completed": int(completed), "buffer": buffer, "history": history, **extra}
        )

    @property
    def last_commit(self) -> dict | None:
        return self.get("commit")


def _jsonable(obj: Any) -> Any:
    """Round-trip through JSON (numpy scalars/tuples -> plain types) so comparisons are exact."""
    return json.loads(json.dumps(obj, default=_default))


def _default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serializable: {type(o)}")
