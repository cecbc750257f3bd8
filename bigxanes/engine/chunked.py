"""Graph plumbing of the engine: the wrappers that run block functions over dask arrays
(``map_blocks`` / ``map_overlap``) and over Zarr regions (one task per state block).

The block functions themselves are the pure NumPy kernels of :mod:`bigxanes.kernels`; they must
be deterministic (a killed worker's tasks are re-run). ``map_blocks`` cannot return several
arrays, so every block function returns ONE stacked float64 array ``(channels, *spatial)`` and
the caller slices channels (docs/design.md, "Both executors").
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence

import dask.array as da
import numpy as np

from ..integrity import test_pause
from ..kernels.admm import admm_step

__all__ = [
    "map_spatial_blocks",
    "map_spatial_overlap",
    "min_chunks",
    "block_regions",
    "halo_window",
    "admm_block",
    "admm_interior",
    "admm_zarr_block",
    "admm_zarr_blocks",
    "group_regions",
]


def min_chunks(chunks: Sequence[int], shape: Sequence[int], depth: int) -> tuple[int, ...]:
    """Enlarge spatial tiles so every chunk (the last one included) is at least ``depth`` deep.

    ``map_overlap`` needs each neighbour to hold a full halo; a tile smaller than the halo
    would make dask rechunk inside the graph. Each returned tile ``t`` satisfies
    ``t >= depth`` and ``n % t == 0 or n % t >= depth`` (or ``t == n``).
    """
    out = []
    for t, n in zip(chunks, shape, strict=True):
        t = max(1, min(int(t), int(n)))
        if n <= depth or t >= n:
            out.append(int(n))
            continue
        t = max(t, depth)
        while t < n and 0 < n % t < depth:
            t += 1
        out.append(int(min(t, n)))
    return tuple(out)


def map_spatial_blocks(
    func: Callable[..., np.ndarray], arr: da.Array, n_out: int, **kwargs
) -> da.Array:
    """``map_blocks`` of a block function ``(C, *spatial) -> (n_out, *spatial)`` float64.

    ``arr`` must hold its channel axis (axis 0) in one chunk.
    """
    chunks = ((n_out,),) + arr.chunks[1:]
    return da.map_blocks(
        func,
        arr,
        chunks=chunks,
        dtype=np.float64,
        meta=np.empty((0,) * arr.ndim, dtype=np.float64),
        **kwargs,
    )


def map_spatial_overlap(
    func: Callable[..., np.ndarray],
    arr: da.Array,
    n_out: int,
    depth: int,
    *,
    dtype: np.dtype | type = np.float64,
    **kwargs,
) -> da.Array:
    """``map_overlap`` with a halo of ``depth`` on the spatial axes only, ``boundary="none"``.

    The outer faces of the volume get no padding: the kernels treat a block's edges as
    Neumann boundaries, which is exactly the volume's boundary condition there. The channel
    axis (axis 0) must be one chunk; the result has ``n_out`` channels of ``dtype`` (what
    ``func`` returns: float64, float32 for the fused ADMM kernel).
    """
    nd = arr.ndim - 1
    dep = {0: 0, **{i + 1: int(depth) for i in range(nd)}}
    bnd = {i: "none" for i in range(arr.ndim)}
    g = da.overlap.overlap(arr, depth=dep, boundary=bnd, allow_rechunk=False)
    y = da.map_blocks(
        func,
        g,
        chunks=((n_out,),) + g.chunks[1:],
        dtype=dtype,
        meta=np.empty((0,) * arr.ndim, dtype=dtype),
        **kwargs,
    )
    return da.overlap.trim_internal(y, dep, boundary=bnd)


def admm_block(S: np.ndarray, **kwargs) -> np.ndarray:
    """One ADMM iteration on a state block with its halo
    (:func:`~bigxanes.kernels.admm.admm_step`: backend, residuals and threads in ``kwargs``)."""
    out = admm_step(S, **kwargs)
    test_pause("admm_block")  # a fault-injection point (tests)
    return out


def block_regions(shape: Sequence[int], block: Sequence[int]) -> list[tuple[slice, ...]]:
    """The spatial regions of a blocking of ``shape`` into ``block``-sized pieces (the last
    piece of each axis may be smaller), in C order."""
    axes = [
        [slice(a, min(a + int(b), int(n))) for a in range(0, int(n), int(b))]
        for n, b in zip(shape, block, strict=True)
    ]
    return list(itertools.product(*axes))


def halo_window(
    region: Sequence[slice], spatial: Sequence[int], depth: int
) -> tuple[tuple[slice, ...], tuple[slice, ...]]:
    """``region`` grown by ``depth`` pixels on each side, clipped at the volume's faces (no
    padding, as :func:`map_spatial_overlap` with ``boundary="none"``); and where ``region``
    sits inside that window."""
    lo = [max(0, r.start - int(depth)) for r in region]
    hi = [min(int(n), r.stop + int(depth)) for r, n in zip(region, spatial, strict=True)]
    window = tuple(slice(u, v) for u, v in zip(lo, hi, strict=True))
    inner = tuple(slice(r.start - u, r.stop - u) for r, u in zip(region, lo, strict=True))
    return window, inner


def admm_interior(
    S: np.ndarray, inner: tuple[slice, ...], **kwargs
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`~bigxanes.kernels.admm.admm_step` on a halo'd block ``S``; the new float32 state
    of its ``inner`` region and that region's float64 sums of the
    :data:`~bigxanes.kernels.admm.RESIDUALS` channels (empty when ``residuals=False``)."""
    out = admm_step(S, **kwargs)[(slice(None),) + tuple(inner)]
    n = kwargs["layout"].n_channels
    sums = out[n:].sum(axis=tuple(range(1, out.ndim)), dtype=np.float64)  # (0,) without
    return np.ascontiguousarray(out[:n], dtype=np.float32), sums


def group_regions(
    regions: Sequence[tuple[slice, ...]], n_groups: int
) -> list[list[tuple[slice, ...]]]:
    """``regions`` (C order) cut into at most ``n_groups`` runs of consecutive regions of
    nearly equal length (neighbours in one run: a prefetched halo is mostly warm in the page
    cache)."""
    n = len(regions)
    g = max(1, min(int(n_groups), n))
    bounds = [round(i * n / g) for i in range(g + 1)]
    return [list(regions[bounds[i] : bounds[i + 1]]) for i in range(g)]


def admm_zarr_block(
    src: str, dst: str, region: tuple[slice, ...], depth: int, **kwargs
) -> np.ndarray:
    """One ADMM iteration of one state block, from Zarr buffer ``src`` to buffer ``dst``.

    Reads ``region`` of the float32 state with a halo of ``depth`` pixels
    (:func:`halo_window`), runs :func:`~bigxanes.kernels.admm.admm_step`, writes the region's
    new state (float32) to ``dst`` and returns only the region's sums of the
    :data:`~bigxanes.kernels.admm.RESIDUALS` channels (float64; empty without residuals).

    One task per block that holds nothing after it returns: the workers' memory is the running
    tasks' working sets, whatever the size of the volume (the map_overlap graph kept finished
    blocks and halo slices alive while neighbours waited). Regions must cover whole chunks of
    ``dst`` (or end at the volume's edge) so concurrent writers never share a chunk; a re-run
    task (lost worker) rewrites the same values.
    """
    import zarr

    a = zarr.open_array(src, mode="r")
    window, inner = halo_window(region, a.shape[1:], depth)
    state, sums = admm_interior(a[(slice(None),) + window], inner, **kwargs)
    zarr.open_array(dst, mode="r+")[(slice(None),) + tuple(region)] = state
    test_pause("admm_block")  # a fault-injection point (tests)
    return sums


def admm_zarr_blocks(
    src: str, dst: str, regions: Sequence[tuple[slice, ...]], depth: int, **kwargs
) -> np.ndarray:
    """:func:`admm_zarr_block` over several state blocks in one task, I/O overlapped with
    compute.

    While block i is computed (:func:`admm_interior`; NumPy and numba release the GIL), a
    background thread reads block i+1 with its halo (prefetch) and another writes block i-1's
    new state (write-behind); at most one read and one write are in flight, so the task holds
    at most three blocks. Each block's numbers are those of :func:`admm_zarr_block` (same
    window, same kernel). Returns the per-block sums of the
    :data:`~bigxanes.kernels.admm.RESIDUALS` channels, ``(len(regions), n_residuals)``, so the
    caller sums them in the same order as one task per block.
    """
    from concurrent.futures import ThreadPoolExecutor

    import zarr

    a = zarr.open_array(src, mode="r")
    b = zarr.open_array(dst, mode="r+")
    spatial = a.shape[1:]

    def read(region: tuple[slice, ...]) -> tuple[np.ndarray, tuple[slice, ...]]:
        window, inner = halo_window(region, spatial, depth)
        return a[(slice(None),) + window], inner

    def write(region: tuple[slice, ...], state: np.ndarray) -> None:
        b[(slice(None),) + tuple(region)] = state

    sums = []
    with ThreadPoolExecutor(2, thread_name_prefix="bigxanes-zarr-io") as io:
        nxt = io.submit(read, regions[0])
        pending = None
        for i, region in enumerate(regions):
            S, inner = nxt.result()
            if i + 1 < len(regions):
                nxt = io.submit(read, regions[i + 1])
            state, s = admm_interior(S, inner, **kwargs)
            del S
            if pending is not None:
                pending.result()  # one write in flight: bounded memory, errors surface here
            pending = io.submit(write, region, state)
            test_pause("admm_block")  # a fault-injection point (tests)
            sums.append(s)
        if pending is not None:
            pending.result()
    return np.stack(sums)
