"""Planning of an engine run, before any computation: spatial tiles, state blocks, where the
state lives (memory rules) and the resources a run needs (docs/design.md, "State modes and
state blocks")."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import Any

import dask
import numpy as np

from ..energy import as_ev
from ..kernels.admm import StateLayout
from ..kernels.pass1 import Pass1Layout
from ..pipeline.defaults import METHODS
from ..pipeline.prepare import Inputs, prepare_inputs
from ..rum import RumParams
from ..store import open_stack
from .chunked import min_chunks

__all__ = [
    "DEFAULT_CHECKPOINT_EVERY",
    "DEFAULT_TILE",
    "MEMORY_FRACTION",
    "STATE_BLOCK_BYTES",
    "STATE_COPIES",
    "STATE_MODES",
    "STATE_TASK_FACTOR",
    "choose_state_mode",
    "estimate_resources",
    "load_inputs",
    "n_threads",
    "spatial_tiles",
    "state_tiles",
]

#: Default spatial tile edge per number of spatial dims. Measured (benchmarks/results/engine.md,
#: 1024² x 100, 2 workers): 128² is 1.8x slower for LCF and 1.6x for RUM-TV than 256²; 512²
#: equals 256² for LCF and is 1.5x faster per RUM-TV iteration but needs 25 % more memory.
#: 256² is the memory-safe default; the RUM iterations run on larger state blocks anyway
#: (:func:`state_tiles`), which takes the RUM gain without the LCF loss.
DEFAULT_TILE = {2: 256, 3: 64}
#: Where the ADMM state lives between iterations (``state_mode`` of :func:`unmix_store`).
STATE_MODES = ("auto", "memory", "zarr")
#: Memory mode: checkpoint the state to the Zarr double buffer every this many iterations.
DEFAULT_CHECKPOINT_EVERY = 10
#: Memory mode needs about this many copies of the float32 state (the persisted state, the
#: next one, map_overlap's halo'd working copies) ...
STATE_COPIES = 3
#: ... within this fraction of the memory available for data ("fits comfortably").
MEMORY_FRACTION = 0.5
#: RUM iterations run on state blocks of up to this many bytes of float32 state (larger than
#: the stack tiles: fewer map_overlap tasks and halos per iteration), see :func:`state_tiles`.
#: Measured (benchmarks/results/engine.md, "State blocks", 1024² x 100, 2 workers x 1 thread):
#: 64 MiB (1024 x 512 blocks, 50 MB) beat 32 MiB (512², 25 MB) and the 256² stack tiles.
STATE_BLOCK_BYTES = 64 * 2**20
#: Peak memory of one ADMM block task / bytes of its float32 state block (float64 halo'd
#: input and output, kernel temporaries): caps the state block at 1/this of a thread's memory.
STATE_TASK_FACTOR = 12


def load_inputs(
    input: str | os.PathLike,
    method: str,
    references: Any,
    energy_range: Sequence[float] | None,
    *,
    baseline: str = "none",
    nan_policy: str = "mask",
    require_references: bool = True,
) -> tuple[Any, Inputs]:
    """Open the stack store and prepare the inputs (:func:`~bigxanes.pipeline.prepare.
    prepare_inputs`); ``references=None`` uses the store's ``references`` variable.

    The small variables (energies, references) are read in this process (synchronous
    scheduler), not through the cluster that may be the default scheduler: each ``.values``
    on a dask-backed variable would otherwise be a round trip to the workers.
    """
    with dask.config.set(scheduler="synchronous"):
        ds = open_stack(input)
        energy = as_ev(np.asarray(ds["energy"].values, dtype=np.float64))
        if references is None and "references" in ds.data_vars:
            references = ds["references"].load()
        if references is None and not require_references:
            method = "edge50"  # no references: only the stack's shape matters
        inputs = prepare_inputs(
            method,
            energy,
            references,
            baseline=baseline,
            nan_policy=nan_policy,
            energy_range=energy_range,
        )
    return ds, inputs


def spatial_tiles(chunks: int | Sequence[int] | None, spatial: Sequence[int]) -> tuple[int, ...]:
    nd = len(spatial)
    if chunks is None:
        t = (DEFAULT_TILE[min(nd, 3)],) * nd
    elif isinstance(chunks, int | np.integer):
        t = (int(chunks),) * nd
    else:
        t = tuple(int(c) for c in chunks)
        if len(t) != nd:
            raise ValueError(
                f"chunks has {len(t)} entries for {nd} spatial dimensions; give one "
                "tile edge per spatial dimension (or one integer)"
            )
    if any(c < 1 for c in t):
        raise ValueError(f"chunks must be positive, got {t}")
    return tuple(min(c, n) for c, n in zip(t, spatial, strict=True))


def state_tiles(
    tiles: Sequence[int],
    spatial: Sequence[int],
    n_channels: int,
    n_threads: int,
    *,
    target_bytes: int | None = None,
    max_bytes: int | None = None,
    itemsize: int = 4,
) -> tuple[int, ...]:
    """Spatial block of the ADMM state during the RUM iterations (both state modes).

    Rule: start from the stack ``tiles`` (already :func:`min_chunks`-checked for the halo) and
    repeatedly double the block along its shortest edge (ties: the first axis; an axis already
    spanning the image is skipped) while the doubled block

    - holds at most ``target_bytes`` (default :data:`STATE_BLOCK_BYTES`) and at most
      ``max_bytes`` (a thread's memory / :data:`STATE_TASK_FACTOR`) of state
      (``n_channels x itemsize`` bytes per pixel), and
    - leaves at least ``n_threads`` blocks (one per worker thread);

    edges are capped at the image. The returned edges are multiples of ``tiles`` (or the whole
    axis), so every state block is a union of stack tiles: checkpoint writes cover whole Zarr
    chunks of the state buffers, and the last block is at least as deep as the last tile (the
    halo condition of :func:`min_chunks` holds). The stack pass and LCF keep ``tiles``.
    TV iterations are exact for any blocking; PnP depends on the blocks through its halo.
    """
    target = STATE_BLOCK_BYTES if target_bytes is None else int(target_bytes)
    if max_bytes is not None:
        target = min(target, int(max_bytes))
    px_bytes = int(n_channels) * int(itemsize)
    tiles = tuple(int(t) for t in tiles)
    spatial = tuple(int(n) for n in spatial)
    mult = [1] * len(tiles)

    def block(m):
        return tuple(min(t * k, n) for t, k, n in zip(tiles, m, spatial, strict=True))

    def n_blocks(b):
        return math.prod(-(-n // e) for n, e in zip(spatial, b, strict=True))

    while True:
        cur = block(mult)
        for i in sorted(range(len(tiles)), key=lambda j: (cur[j], j)):
            if cur[i] >= spatial[i]:
                continue
            m = list(mult)
            m[i] *= 2
            b = block(m)
            if math.prod(b) * px_bytes <= target and n_blocks(b) >= max(1, int(n_threads)):
                mult = m
                break
        else:
            return cur


def n_threads(runner: Any) -> int:
    """Worker threads of the runner (the threaded scheduler: the machine's cores)."""
    if not runner.distributed:
        return 1 if runner.scheduler == "synchronous" else (os.cpu_count() or 1)
    return max(1, sum(int(w.get("nthreads") or 1) for w in runner.workers().values()))


def choose_state_mode(state_mode: str, state_bytes: int, available_bytes: int) -> str:
    """``"memory"`` when ``STATE_COPIES x state_bytes`` fits in ``MEMORY_FRACTION`` of
    ``available_bytes`` (``state_mode="auto"``), else ``"zarr"``; an explicit mode is kept."""
    if state_mode not in STATE_MODES:
        raise ValueError(f"state_mode must be one of {', '.join(STATE_MODES)}, got {state_mode!r}")
    if state_mode != "auto":
        return state_mode
    fits = STATE_COPIES * int(state_bytes) <= MEMORY_FRACTION * int(available_bytes)
    return "memory" if fits else "zarr"


def estimate_resources(
    input: str | os.PathLike,
    method: str = "lcf",
    *,
    references=None,
    params: RumParams | None = None,
    chunks: int | Sequence[int] | None = None,
    energy_range: tuple[float, float] | None = None,
    n_workers: int | None = None,
    threads_per_worker: int = 1,
    _loaded: tuple | None = None,
) -> dict[str, Any]:
    """Memory and disk an :func:`unmix_store` run needs (for ``bigxanes info``).

    Returns
    -------
    dict
        ``shape``, ``tiles``, ``n_components``, ``halo``, ``stack_bytes``,
        ``task_bytes`` (peak working memory of one task), ``memory_per_worker`` (bytes: three
        tasks in flight per thread plus 256 MiB of process overhead),
        ``output_disk_bytes`` (uncompressed upper bound), ``work_disk_bytes`` (pass-1 array
        and, for RUM, the two state buffers; deleted at the end), ``state_bytes``
        (one state buffer), ``n_workers``.
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    if _loaded is None:
        _loaded = load_inputs(input, method, references, energy_range, require_references=False)
    ds, inputs = _loaded
    stack, A = ds["stack"], inputs.A
    T = inputs.energy.size
    spatial = tuple(int(n) for n in stack.shape[1:])
    nd = len(spatial)
    N = int(np.prod(spatial))
    L = 2 if A is None else A.shape[1]
    rum = method.startswith("rum")
    if rum:
        params = params if params is not None else RumParams(method=method)
    halo = params.halo if rum else 0
    tiles = min_chunks(spatial_tiles(chunks, spatial), spatial, max(halo, 1))
    tile_px = int(np.prod(tiles))
    p1 = Pass1Layout(L, "lstsq", method == "edge50")
    # pass 1: the stack block (stored dtype) + a float64 copy + normalization temporaries
    item = np.dtype(stack.dtype).itemsize
    pass1_task = tile_px * (T * (item + 8 * (4 if method == "edge50" else 1)) + 8 * p1.n_channels)
    task = pass1_task
    state_bytes = 0
    nw = int(n_workers or max(1, (os.cpu_count() or 1) // max(1, threads_per_worker)))
    if rum:
        layout = StateLayout(L, nd, params.reg)
        state_bytes = layout.n_channels * N * 4
        # the iterations run on state blocks (state_tiles; without the run's memory cap)
        st = state_tiles(tiles, spatial, layout.n_channels, nw * max(1, threads_per_worker))
        halo_px = int(np.prod([t + 2 * halo for t in st]))
        # halo'd float64 input + output + ~2x temporaries of the kernel
        task = max(task, halo_px * 8 * (layout.n_channels + 3 * layout.n_out))
    # fraction + fraction_unmasked (conventions), scale, residual, mask, lcf_fraction (RUM),
    # edge50 + the two white-line maps (Edge-50)
    out_ch = 2 * L + 3 + (L if rum else 0) + (3 if method == "edge50" else 0)
    return {
        "shape": (T,) + spatial,
        "tiles": tiles,
        "n_components": L,
        "halo": halo,
        "stack_bytes": int(T * N * item),
        "task_bytes": int(task),
        "memory_per_worker": int(3 * task * threads_per_worker + 256 * 2**20),
        "output_disk_bytes": int(out_ch * N * 4),
        "work_disk_bytes": int(p1.n_channels * N * 8 + 2 * state_bytes),
        "state_bytes": int(state_bytes),
        "n_workers": nw,
    }
