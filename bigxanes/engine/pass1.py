"""Pass 1 on the engine: the one read of the stack, block by block
(:func:`bigxanes.kernels.pass1.pass1_block` over the stack tiles), and the image statistics
reduced from per-block kernels (docs/design.md, "Pass 1")."""

from __future__ import annotations

import sys
from typing import Any

import dask.array as da
import numpy as np

from ..integrity import PointHook
from ..kernels.moments import finite_spectrum_sum, mean_spectrum
from ..kernels.pass1 import (
    N_STATS,
    Pass1Layout,
    hist_block,
    pass1_block,
    reduce_stats,
    stats_block,
)
from ..kernels.stats import HIST_BINS, data_scale
from ..kernels.weights import noise_moments_block
from ..pipeline.prepare import Inputs, edge50_e0, weight_model
from .chunked import map_spatial_blocks
from .state import WorkDir

__all__ = ["engine_e0", "engine_mean_spectrum", "engine_noise_moments", "run_pass1"]


def say(progress: bool, msg: str) -> None:
    """A short message on stderr when ``progress``."""
    if progress:
        print(f"bigxanes: {msg}", file=sys.stderr, flush=True)


def _per_block(P: da.Array, func: Any, n: int, dtype: Any, **kw: Any) -> da.Array:
    """``func`` on every block of ``P``, each giving an ``(n, 1, ...)`` array (a small task per
    block; dask's tree reductions of channel slices were ~6 tasks per block)."""
    nd = P.ndim - 1
    return P.map_blocks(
        func,
        dtype=dtype,
        chunks=((n,),) + tuple((1,) * len(b) for b in P.chunks[1:]),
        meta=np.empty((0,) * (nd + 1), dtype),
        **kw,
    )


def engine_mean_spectrum(Y: da.Array, runner: Any) -> np.ndarray:
    """The mean finite spectrum of the (windowed) stack: one read of the stack, a
    :func:`~bigxanes.kernels.moments.finite_spectrum_sum` per block, summed."""
    sums = _per_block(Y, finite_spectrum_sum, Y.shape[0] + 1, np.float64)
    return mean_spectrum(runner.compute(sums.sum(axis=tuple(range(1, Y.ndim))))[0])


def engine_noise_moments(Y: da.Array, inputs: Inputs, runner: Any) -> np.ndarray:
    """The summed :func:`~bigxanes.kernels.weights.noise_moments_block` of the stack (one
    read: an unweighted NNLS fit per block, per-energy residual and dose sums)."""
    T = Y.shape[0]
    sums = _per_block(
        Y,
        noise_moments_block,
        2 * T + 1,
        np.float64,
        A=inputs.A,
        window=inputs.window,
        nan_policy=inputs.nan_policy,
    )
    return runner.compute(sums.sum(axis=tuple(range(1, Y.ndim))))[0]


def engine_e0(Y: da.Array, inputs: Inputs, runner: Any) -> float:
    """Edge-50's e0 (:func:`~bigxanes.pipeline.prepare.edge50_e0`); without references one
    extra read of the stack for its mean finite spectrum."""
    return edge50_e0(inputs.energy, inputs.A, lambda: engine_mean_spectrum(Y, runner))


def run_pass1(
    Y: da.Array,
    inputs: Inputs,
    p1: Pass1Layout,
    e0: float | None,
    runner: Any,
    work: WorkDir,
    *,
    in_memory: bool,
    progress: bool,
) -> tuple[da.Array, dict[str, Any]]:
    """Pass 1 unless ``work`` holds a complete one; returns the pass-1 channels and the record
    of its statistics (``resid_sum``, ``s_max``, ``n_bad``, ``wmean``, ``scale``, ``e0``, and
    with weights the noise model's attrs under ``weights_attrs``). A weighted pass 1 first
    reads the stack once for its noise model unless the I0 is given
    (:func:`~bigxanes.pipeline.prepare.weight_model`).

    ``in_memory``: the channels stay persisted in the cluster (LCF/Edge-50 when they fit:
    nothing to resume after pass 1, so no Zarr round trip); else they are stored in the Zarr
    work array ``pass1`` and the record is written once that array is complete.
    """
    rec = work.get("pass1")
    if rec is not None:
        return work.dask("pass1"), rec
    spatial = tuple(int(n) for n in Y.shape[1:])
    tiles = tuple(int(c[0]) for c in Y.chunks[1:])
    model = None
    if p1.weighted:
        if inputs.i0 is None:
            say(progress, f"noise model for --weights {inputs.weights} (one read of the stack)")
        model = weight_model(inputs, lambda: engine_noise_moments(Y, inputs, runner))
    say(progress, f"pass 1 over the stack {tuple(Y.shape)} in tiles {tiles}")
    P = map_spatial_blocks(
        PointHook(pass1_block, "pass1_block"),  # a fault-injection point (tests)
        Y,
        p1.n_channels,
        layout=p1,
        A=inputs.A,
        energy=inputs.energy,
        e0=e0,
        nan_policy=inputs.nan_policy,
        baseline=inputs.window,
        weights=model,
    )
    if in_memory:
        (P,) = runner.persist(P)
        store = None
    else:
        target = work.create("pass1", p1.n_channels, spatial, tiles, dtype=np.float64)
        store = da.store(P, target, lock=False, compute=False)
    _, per_block = runner.compute(store, _per_block(P, stats_block, N_STATS, np.float64, p1=p1))
    st = reduce_stats(per_block, p1, int(np.prod(spatial)), int(Y.shape[0]))
    s_max = st["s_max"]
    Pz = P if in_memory else work.dask("pass1")
    hist = None
    if inputs.A is not None and s_max > 0:
        h = _per_block(Pz, hist_block, HIST_BINS, np.int64, p1=p1, smax=s_max)
        hist = runner.compute(h.sum(axis=tuple(range(1, Pz.ndim))))[0]
    rec = {**st, "scale": data_scale(hist, s_max), "e0": e0}
    if model is not None:
        rec["weights_attrs"] = model.as_attrs()
    if not in_memory:  # the record names a complete pass1 array
        work.put("pass1", rec)
    return Pz, rec
