"""Chunk-wise execution helpers: the block functions run by ``map_blocks``/``map_overlap`` and
the wrappers that build those graphs.

Block functions call the pure NumPy kernels of :mod:`bigxanes.kernels` on one block; they must
be deterministic (a killed worker's tasks are re-run). ``map_blocks`` cannot return several
arrays, so every block function returns ONE stacked float64 array ``(channels, *spatial)`` and
the caller slices channels (DESIGN.md §4).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import dask.array as da
import numpy as np

from ..baseline import subtract_pre_edge
from ..kernels.admm import StateLayout, admm_iteration, initial_state
from ..kernels.edge50 import edge50_energy
from ..kernels.layout import ChannelLayout
from ..kernels.lcf import lstsq_coefficients, nnls_coefficients, sum_to_one_coefficients
from ..normalize import normalize_spectra

__all__ = [
    "LCF_VARIANTS",
    "Pass1Layout",
    "pass1_block",
    "map_spatial_blocks",
    "map_spatial_overlap",
    "min_chunks",
    "clean_block",
    "block_regions",
    "halo_window",
    "admm_interior",
    "admm_zarr_block",
]

#: LCF variants (``lcf_variant`` of :func:`bigxanes.engine.unmix_store`).
LCF_VARIANTS = {
    "nnls": nnls_coefficients,
    "lstsq": lstsq_coefficients,
    "sum-to-one": sum_to_one_coefficients,
}


@dataclass(frozen=True)
class Pass1Layout(ChannelLayout):
    """Channels of the single pass over the stack (everything that needs ``Y``).

    ``aty`` (L), ``yty`` (1), ``M0`` (L, NNLS coefficients), ``resid0`` (1, ``|y - A M0|²``),
    ``bad`` (1, 1 where the spectrum had NaN/Inf), optional ``lcf`` (L) + ``lcf_resid`` (1)
    for a non-NNLS LCF variant, optional ``edge50`` (1, eV) + ``edge_step`` (1).
    """

    n_components: int
    variant: str = "nnls"
    edge50: bool = False

    @property
    def sizes(self) -> dict[str, int]:
        L = self.n_components
        out = {"aty": L, "yty": 1, "M0": L, "resid0": 1, "bad": 1}
        if self.variant != "nnls":
            out.update(lcf=L, lcf_resid=1)
        if self.edge50:
            out.update(edge50=1, edge_step=1)
        return out

    def lcf_slices(self) -> tuple[slice, slice]:
        """(coefficients, residual) channels of the requested LCF variant."""
        sl = self.slices
        if self.variant == "nnls":
            return sl["M0"], sl["resid0"]
        return sl["lcf"], sl["lcf_resid"]


def clean_block(Y: np.ndarray, nan_policy: str = "mask") -> tuple[np.ndarray, np.ndarray]:
    """Float64 copy of a stack block with non-finite spectra zeroed; and the bad-pixel map.

    With ``nan_policy="mask"`` a spectrum holding any NaN/Inf is set to 0 (so s = 0 and it does
    not spread through the spatial steps); with ``"raise"`` a ValueError is raised.
    """
    Y = np.asarray(Y, dtype=np.float64)
    bad = ~np.isfinite(Y).all(axis=0)
    if bad.any():
        if nan_policy != "mask":
            raise ValueError(
                f"the stack holds {int(bad.sum())} spectra with NaN/Inf in this block; "
                "pass nan_policy='mask' to exclude them"
            )
        Y = Y.copy()
        Y[:, bad] = 0.0
    return Y, bad


def _resid(yty, aty, M, AtA):
    return yty - 2.0 * np.sum(M * aty, axis=0) + np.sum(M * (AtA @ M), axis=0)


def pass1_block(
    Y: np.ndarray,
    *,
    layout: Pass1Layout,
    A: np.ndarray | None,
    energy: np.ndarray,
    e0: float | None = None,
    nan_policy: str = "mask",
    baseline: np.ndarray | None = None,
) -> np.ndarray:
    """The one pass over a stack block ``(T, *spatial)``: see :class:`Pass1Layout`.

    Same arithmetic as the in-memory path (:func:`bigxanes.rum.unmix_rum_array`): ``AᵀY`` and
    ``yᵀy`` in float64, exact batched NNLS. ``baseline``: boolean mask of the pre-edge energies;
    each spectrum's mean over them is subtracted first
    (:func:`bigxanes.baseline.subtract_pre_edge`, here inside the block task: as a separate
    dask step it cost more than the rest of pass 1); ``A`` must already be corrected alike.
    """
    T = Y.shape[0]
    spatial = Y.shape[1:]
    out = np.zeros((layout.n_channels,) + spatial, dtype=np.float64)
    sl = layout.slices
    flat = out.reshape(layout.n_channels, -1)
    if layout.edge50:  # normalization needs the whole float64 block
        if baseline is not None:  # in the stack's dtype, as the in-memory path
            with np.errstate(invalid="ignore"):  # Inf - Inf: a bad spectrum, zeroed next
                Y = subtract_pre_edge(Y, baseline)
        Yc, bad = clean_block(Y, nan_policy)
        bad = bad.reshape(-1)
        if A is not None:
            Yf = Yc.reshape(T, -1)
            aty, yty = A.T @ Yf, np.einsum("tn,tn->n", Yf, Yf)
    elif A is not None:
        aty, yty, bad = _moments(np.asarray(Y).reshape(T, -1), A, baseline, nan_policy)
    else:
        bad = ~np.isfinite(np.asarray(Y)).all(axis=0).reshape(-1)
    flat[sl["bad"]] = bad.reshape(1, -1)
    if A is not None:
        AtA = A.T @ A
        M0 = nnls_coefficients(AtA, aty)
        flat[sl["aty"]] = aty
        flat[sl["yty"]] = yty
        flat[sl["M0"]] = M0
        flat[sl["resid0"]] = _resid(yty, aty, M0, AtA)
        if layout.variant != "nnls":
            M = LCF_VARIANTS[layout.variant](AtA, aty)
            flat[sl["lcf"]] = M
            flat[sl["lcf_resid"]] = _resid(yty, aty, M, AtA)
    if layout.edge50:
        nr = normalize_spectra(energy, Yc, e0=e0)
        flat[sl["edge50"]] = edge50_energy(energy, nr.norm).reshape(1, -1)
        flat[sl["edge_step"]] = np.asarray(nr.edge_step).reshape(1, -1)
    return out


#: Pixels per slab of :func:`_moments`: 100 energies x 1024 px x 8 B = 0.8 MB, so a slab's
#: float64 copy stays in a core's L2 cache while ``AᵀY`` and ``yᵀy`` read it (measured on a
#: 256² tile: 6.9 ms against 11.7 ms for whole-block conversion; 4096 px: 6.0, 256 px: 7.0).
SLAB_PIXELS = 1024


def _moments(
    Yf: np.ndarray, A: np.ndarray, baseline: np.ndarray | None, nan_policy: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``AᵀY``, ``yᵀy`` (float64) and the bad-spectrum mask of ``Yf`` ``(T, N)``, slab by slab.

    Each slab gets the pre-edge baseline in the stack's dtype (as the in-memory path), then a
    float64 copy. A spectrum holding NaN/Inf has a non-finite ``yᵀy`` (squares of float32
    values cannot overflow float64), so no separate finiteness pass is needed; such spectra
    get zero moments, as if zeroed (:func:`clean_block`), or raise with ``"raise"``.
    """
    N = Yf.shape[1]
    At = np.ascontiguousarray(A.T)
    aty = np.empty((A.shape[1], N))
    yty = np.empty(N)
    for a in range(0, N, SLAB_PIXELS):
        ys = Yf[:, a : a + SLAB_PIXELS]
        if baseline is not None:
            with np.errstate(invalid="ignore"):
                ys = subtract_pre_edge(ys, baseline)
        ys = ys.astype(np.float64)
        with np.errstate(invalid="ignore", over="ignore"):
            aty[:, a : a + SLAB_PIXELS] = At @ ys
            yty[a : a + SLAB_PIXELS] = np.einsum("tn,tn->n", ys, ys)
    bad = ~np.isfinite(yty)
    if bad.any():
        if nan_policy != "mask":
            raise ValueError(
                f"the stack holds {int(bad.sum())} spectra with NaN/Inf in this block; "
                "pass nan_policy='mask' to exclude them"
            )
        aty[:, bad] = 0.0
        yty[bad] = 0.0
    return aty, yty, bad


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
    func: Callable[..., np.ndarray], arr: da.Array, n_out: int, depth: int, **kwargs
) -> da.Array:
    """``map_overlap`` with a halo of ``depth`` on the spatial axes only, ``boundary="none"``.

    The outer faces of the volume get no padding: the kernels treat a block's edges as
    Neumann boundaries, which is exactly the volume's boundary condition there. The channel
    axis (axis 0) must be one chunk; the result has ``n_out`` channels, float64.
    """
    nd = arr.ndim - 1
    dep = {0: 0, **{i + 1: int(depth) for i in range(nd)}}
    bnd = {i: "none" for i in range(arr.ndim)}
    g = da.overlap.overlap(arr, depth=dep, boundary=bnd, allow_rechunk=False)
    y = da.map_blocks(
        func,
        g,
        chunks=((n_out,),) + g.chunks[1:],
        dtype=np.float64,
        meta=np.empty((0,) * arr.ndim, dtype=np.float64),
        **kwargs,
    )
    return da.overlap.trim_internal(y, dep, boundary=bnd)


def init_state_block(
    P: np.ndarray, *, p1: Pass1Layout, layout: StateLayout, scale: float, dtype=np.float32
) -> np.ndarray:
    """Initial ADMM state of a block from its pass-1 channels (needs a 1-pixel halo for TV)."""
    sl = p1.slices
    c = float(scale)
    return initial_state(
        P[sl["aty"]] / c, P[sl["yty"]][0] / (c * c), P[sl["M0"]] / c, layout, dtype=dtype
    ).astype(np.float64)


def admm_block(S: np.ndarray, **kwargs) -> np.ndarray:
    """One ADMM iteration on a state block with its halo (:func:`admm_iteration`)."""
    return admm_iteration(S, **kwargs)


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
    """:func:`admm_iteration` on a halo'd block ``S``; the new float32 state of its ``inner``
    region and that region's sums of the :data:`~bigxanes.kernels.admm.RESIDUALS` channels."""
    out = admm_iteration(S, **kwargs)[(slice(None),) + tuple(inner)]
    n = kwargs["layout"].n_channels
    return out[:n].astype(np.float32), out[n:].reshape(out.shape[0] - n, -1).sum(axis=1)


def admm_zarr_block(
    src: str, dst: str, region: tuple[slice, ...], depth: int, **kwargs
) -> np.ndarray:
    """One ADMM iteration of one state block, from Zarr buffer ``src`` to buffer ``dst``.

    Reads ``region`` of the float32 state with a halo of ``depth`` pixels
    (:func:`halo_window`), runs :func:`admm_iteration`, writes the region's new state
    (float32) to ``dst`` and returns only the region's sums of the
    :data:`~bigxanes.kernels.admm.RESIDUALS` channels (float64).

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
    return sums
