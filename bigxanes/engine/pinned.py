"""Memory state mode on a distributed cluster: the ADMM state as one future per state block,
each block's tasks preferring one worker.

With ``map_overlap`` on a persisted dask array the scheduler places each iteration's tasks by
the bytes of their inputs, and the blocks drifted between workers from one iteration to the
next: at 8x (18 blocks, 2 workers) the pixels held per worker went from 3.8 M / 4.6 M to
2.4 M / 6.0 M over 5 iterations, one worker doing 70 % of the work (measured with
``Client.who_has``; disabling work stealing did not stop it, and dask 2026.8 no longer resolves
callable worker annotations). Here every block has an owner from a static assignment balanced
by pixels (:func:`block_owners`); its halo pieces are cut where its neighbours live and only
the thin pieces travel. Restrictions are loose (``allow_other_workers=True``): if an owner
dies, its tasks run elsewhere and lost blocks are recomputed from their lineage, as with a
persisted collection.

The arithmetic is :func:`bigxanes.engine.chunked.admm_interior` on the same halo'd
blocks (clipped at the volume's faces, as ``map_overlap`` with ``boundary="none"``), so the
numbers equal the other paths'.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from .chunked import admm_interior, block_regions, halo_window

__all__ = ["PinnedState", "block_owners"]


def block_owners(regions: Sequence[tuple[slice, ...]], workers: dict[str, int]) -> list[str]:
    """Owner worker of each block: contiguous runs of blocks (C order, so neighbours mostly
    share an owner) with pixel totals proportional to each worker's threads."""
    names = sorted(workers)
    cap = np.array([max(1, int(workers[w])) for w in names], dtype=float)
    px = [math.prod(r.stop - r.start for r in reg) for reg in regions]
    bounds = np.cumsum(cap) / cap.sum() * sum(px)
    owners, acc, wi = [], 0.0, 0
    for p in px:
        while wi < len(names) - 1 and acc + p / 2 > bounds[wi]:
            wi += 1
        owners.append(names[wi])
        acc += p
    return owners


def _block(x: Any) -> np.ndarray:
    """A state block from a block future's value: a bare block (initial / read) or the
    ``(block, sums)`` an iteration returns."""
    return x[0] if isinstance(x, tuple) else x


def _piece(x: Any, sl: tuple[slice, ...]) -> np.ndarray:
    return np.ascontiguousarray(_block(x)[(slice(None),) + sl])


def _sums(x: Any) -> np.ndarray:
    return x[1]


def _iterate(
    center: Any,
    pieces: list,
    places: list,
    shape: tuple[int, ...],
    inner: tuple[slice, ...],
    **kwargs,
) -> tuple[np.ndarray, np.ndarray]:
    """Assemble the halo'd block from its own block and the neighbours' pieces, then
    :func:`~bigxanes.engine.chunked.admm_interior`: the block's new float32 state and its
    residual sums."""
    c = _block(center)
    S = np.empty((c.shape[0],) + tuple(shape), dtype=c.dtype)
    S[(slice(None),) + inner] = c
    for p, where in zip(pieces, places, strict=True):
        S[(slice(None),) + where] = p
    return admm_interior(S, inner, **kwargs)


def _write(x: Any, path: str, region: tuple[slice, ...]) -> None:
    import zarr

    zarr.open_array(path, mode="r+")[(slice(None),) + tuple(region)] = _block(x)


def _read(path: str, region: tuple[slice, ...]) -> np.ndarray:
    import zarr

    return zarr.open_array(path, mode="r")[(slice(None),) + tuple(region)]


class PinnedState:
    """The float32 ADMM state held in the workers, one future per state block."""

    def __init__(
        self,
        client,
        spatial: Sequence[int],
        block: Sequence[int],
        depth: int,
        workers: dict[str, int],
    ) -> None:
        self.client = client
        self.spatial = tuple(int(v) for v in spatial)
        self.regions = block_regions(self.spatial, block)
        self.owners = block_owners(self.regions, workers)
        self.futures: list = []
        self._plan = [self._halo_plan(i, int(depth)) for i in range(len(self.regions))]

    def _halo_plan(self, i: int, depth: int):
        """For block ``i``: the halo'd shape, where the block sits in it, and for every other
        block intersecting the halo its index, its local slices and their place."""
        window, inner = halo_window(self.regions[i], self.spatial, depth)
        shape = tuple(w.stop - w.start for w in window)
        parts = []
        for j, other in enumerate(self.regions):
            if j == i:
                continue
            a = [max(w.start, o.start) for w, o in zip(window, other, strict=True)]
            b = [min(w.stop, o.stop) for w, o in zip(window, other, strict=True)]
            if all(u < v for u, v in zip(a, b, strict=True)):
                local = tuple(
                    slice(u - o.start, v - o.start) for u, v, o in zip(a, b, other, strict=True)
                )
                place = tuple(
                    slice(u - w.start, v - w.start) for u, v, w in zip(a, b, window, strict=True)
                )
                parts.append((j, local, place))
        return shape, inner, parts

    def _submit(self, i: int, fn, *args, **kwargs):
        return self.client.submit(
            fn, *args, workers=[self.owners[i]], allow_other_workers=True, pure=False, **kwargs
        )

    def load_array(self, arr) -> None:
        """Take the blocks of a dask array chunked like the state blocks (persisted here)."""
        from distributed import futures_of

        (arr,) = self.client.persist([arr])
        by_key = {f.key: f for f in futures_of(arr)}
        keys = np.asarray(arr.__dask_keys__(), dtype=object).reshape(-1, arr.ndim + 1)
        self.futures = [by_key[tuple(k)] for k in keys]

    def load_zarr(self, path: str) -> None:
        """Read every block from a Zarr state buffer on its owner (cuts the lineage)."""
        self.futures = [self._submit(i, _read, path, r) for i, r in enumerate(self.regions)]

    def iterate(self, **kwargs) -> np.ndarray:
        """One ADMM iteration of every block; returns the summed residual channels."""
        new = []
        for i, (shape, inner, parts) in enumerate(self._plan):
            pieces = [self._submit(j, _piece, self.futures[j], local) for j, local, _ in parts]
            new.append(
                self._submit(
                    i,
                    _iterate,
                    self.futures[i],
                    pieces,
                    [p for _, _, p in parts],
                    shape,
                    inner,
                    **kwargs,
                )
            )
        sums = [self._submit(i, _sums, f) for i, f in enumerate(new)]
        res = self.client.gather(sums)
        self.futures = new
        return np.sum(np.stack(res), axis=0)

    def store(self, path: str) -> None:
        """Write every block to a Zarr state buffer (chunk-aligned regions) and wait."""
        self.client.gather(
            [
                self._submit(i, _write, f, path, r)
                for i, (f, r) in enumerate(zip(self.futures, self.regions, strict=True))
            ]
        )
