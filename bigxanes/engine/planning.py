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
    "MIN_TILE",
    "choose_state_mode",
    "estimate_resources",
    "memory_plan",
    "pass1_task_bytes",
    "plan_for_runner",
    "runner_limits",
    "state_task_bytes",
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


#: Smallest spatial tile edge :func:`memory_plan` shrinks tiles to (per number of spatial
#: dims); below it the per-task overhead (Python, dask, Zarr) dominates the work.
MIN_TILE = {2: 32, 3: 16}
#: Working bytes of a pass-1 task per pixel and energy on top of its input block, measured
#: with tracemalloc on :func:`~bigxanes.kernels.pass1.pass1_block` (100 energies, 3 references,
#: 16³ and 24³ blocks): LCF/lstsq 2.4-3.1 (the float64 moments are per pixel, not per
#: energy), Edge-50 76.7 (the float64 normalized block and its temporaries).
PASS1_BYTES_PER_VALUE = {"fit": 4, "edge50": 80}
#: Working bytes of one ADMM iteration per halo'd pixel and state channel pair: measured
#: 1433 B/px for RUM-TV 3-D (40 channels, 47 outputs) = ``8 x (n_channels + 3 n_out)``.
_ADMM_BYTES = 8


def pass1_task_bytes(tile_px: int, T: int, itemsize: int, n_channels: int, edge50: bool) -> int:
    """Peak bytes of one pass-1 task on a ``tile_px``-pixel tile: its input block (stored
    dtype) plus the measured working set :data:`PASS1_BYTES_PER_VALUE` and the float64
    output channels."""
    per = PASS1_BYTES_PER_VALUE["edge50" if edge50 else "fit"]
    return int(tile_px * (T * (itemsize + per) + 8 * n_channels))


def state_task_bytes(
    block: Sequence[int], halo: int, layout: StateLayout, spatial: Sequence[int] | None = None
) -> int:
    """Peak bytes of one ADMM block task: the halo'd block (clipped at the volume's faces when
    ``spatial`` is given) in float64, the output and the kernel temporaries,
    ``8 (n_channels + 3 n_out)`` bytes per halo'd pixel (measured)."""
    ext = [int(b) + 2 * int(halo) for b in block]
    if spatial is not None:
        ext = [min(e, int(n)) for e, n in zip(ext, spatial, strict=True)]
    px = math.prod(ext)
    return int(px * _ADMM_BYTES * (layout.n_channels + 3 * layout.n_out))


def memory_plan(
    spatial: Sequence[int],
    n_energies: int,
    itemsize: int,
    method: str,
    n_components: int,
    *,
    halo: int = 0,
    reg: str = "tv",
    stored_chunks: Sequence[int] | None = None,
    memory_limit: int | None = None,
    threads_per_worker: int = 1,
    n_workers: int = 1,
    chunks: int | Sequence[int] | None = None,
    target_bytes: int | None = None,
    total_threads: int | None = None,
    weighted: bool = False,
) -> dict[str, Any]:
    """Tiles and state blocks sized from a worker's memory limit, and the smallest limit a
    run can use (one function for ``unmix``, ``info`` and the engine).

    ``weighted`` (``--weights``): the pass-1 and state channels of a weighted data term, and
    pass-1 tasks with float64 (T, tile) temporaries as Edge-50's.

    Rule: a worker of limit ``M`` with ``k`` threads runs ``k`` tasks at once, each of peak
    ``task`` bytes; it needs ``M >= MIN_WORKER_BASE + 2 k task`` (a task's input and output
    are alive together while distributed transfers them; :func:`~bigxanes.engine.cluster.
    minimum_memory_limit`). Without ``chunks``, the tile edge starts at :data:`DEFAULT_TILE`
    and the longest edge is halved (not below :data:`MIN_TILE`) until the largest task --
    pass 1 (:func:`pass1_task_bytes`), a RUM state-block iteration (:func:`state_task_bytes`
    of the smallest state block, the tile itself) and the read of one stored chunk (decoded,
    plus the compressed bytes) -- fits. State blocks are then grown by :func:`state_tiles`
    within ``(M - MIN_WORKER_BASE) / (2 k)`` of task memory. ``memory_limit=None`` keeps the
    default tiles (no limit to fit).

    Returns
    -------
    dict
        ``tiles``, ``state_tiles`` (None unless RUM), ``task_bytes`` (largest task at these
        tiles), ``minimum_memory_limit`` (bytes per worker: at the smallest tile, or at the
        given ``chunks``), ``fits`` (``memory_limit`` is at least that minimum; True without
        a limit), ``memory_limit``.
    """
    from .cluster import MIN_WORKER_BASE

    spatial = tuple(int(n) for n in spatial)
    nd = len(spatial)
    T, item, L = int(n_energies), int(itemsize), int(n_components)
    k = max(1, int(threads_per_worker))
    rum = method.startswith("rum")
    edge50 = method == "edge50"
    p1 = Pass1Layout(L if L > 0 else 2, "lstsq", edge50, weighted=weighted)
    layout = StateLayout(L, nd, reg, data_weights=weighted) if rum else None
    stored = tuple(int(c) for c in stored_chunks) if stored_chunks is not None else None
    read = 2 * math.prod(stored) * T * item if stored is not None else 0

    def tiles_of(t):
        return min_chunks(spatial_tiles(t, spatial), spatial, max(int(halo), 1))

    def task(t):
        b = pass1_task_bytes(math.prod(t), T, item, p1.n_channels, edge50 or weighted)
        if layout is not None:
            b = max(b, state_task_bytes(t, halo, layout, spatial))
        return max(b, read)

    def need(t):
        return minimum_memory_limit(task(t), k)

    if chunks is not None:
        tiles = tiles_of(chunks)
        floor = tiles
    else:
        tiles = tiles_of(None)
        floor = tiles_of(MIN_TILE[min(nd, 3)])
        if memory_limit is not None:
            cur = list(tiles)
            while need(tuple(cur)) > memory_limit:
                i = max(range(nd), key=lambda j: (cur[j], -j))
                if cur[i] <= MIN_TILE[min(nd, 3)]:
                    break
                cur[i] = max(MIN_TILE[min(nd, 3)], cur[i] // 2)
                cur = list(tiles_of(tuple(cur)))
            tiles = tuple(cur)
    st = None
    if layout is not None:
        nthr = int(total_threads) if total_threads else k * max(1, int(n_workers))
        cap = None
        if memory_limit is not None:  # the state block's task within a thread's share
            budget = (int(memory_limit) * worker_pause_fraction() - MIN_WORKER_BASE) / (2 * k)
            per_px = _ADMM_BYTES * (layout.n_channels + 3 * layout.n_out)
            cap = max(0, int(budget / per_px)) * layout.n_channels * 4

        def grow(c):
            return state_tiles(
                tiles, spatial, layout.n_channels, nthr, target_bytes=target_bytes, max_bytes=c
            )

        st = grow(cap)
        while (
            cap is not None and st != tiles and state_task_bytes(st, halo, layout, spatial) > budget
        ):
            cap //= 2  # the halo'd block is larger than the block the cap counted
            st = grow(cap)
    t_bytes = task(tiles)
    if st is not None:
        t_bytes = max(t_bytes, state_task_bytes(st, halo, layout, spatial))
    minimum = need(floor)
    return {
        "tiles": tuple(tiles),
        "state_tiles": st,
        "task_bytes": int(t_bytes),
        "minimum_memory_limit": int(minimum),
        "fits": memory_limit is None or int(memory_limit) >= minimum,
        "memory_limit": None if memory_limit is None else int(memory_limit),
    }


def load_inputs(
    input: str | os.PathLike,
    method: str,
    references: Any,
    energy_range: Sequence[float] | None,
    *,
    baseline: str = "none",
    nan_policy: str = "mask",
    require_references: bool = True,
    energy_shift: Any = "none",
    weights: str = "none",
    i0: Any = None,
) -> tuple[Any, Inputs]:
    """Open the stack store and prepare the inputs (:func:`~bigxanes.pipeline.prepare.
    prepare_inputs`); ``references=None`` uses the store's ``references`` variable, and
    counting ``weights`` without ``i0`` the store's ``i0`` variable when it has one.

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
            weights, i0 = "none", None
        if weights == "counts" and i0 is None and "i0" in ds.data_vars:
            i0 = np.asarray(ds["i0"].values, dtype=np.float64)
        inputs = prepare_inputs(
            method,
            energy,
            references,
            baseline=baseline,
            nan_policy=nan_policy,
            energy_range=energy_range,
            energy_shift=energy_shift,
            weights=weights,
            i0=i0,
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


def runner_limits(runner: Any) -> tuple[int | None, int, int]:
    """``(memory limit per worker, threads per worker, workers)`` of a runner: the smallest
    worker limit of a distributed cluster (a worker without one shares the machine's memory),
    or the machine's available memory shared by the threads of a local scheduler."""
    from .cluster import _available_memory, _total_memory

    if not runner.distributed:
        return int(_available_memory()), n_threads(runner), 1
    workers = runner.workers()
    if not workers:
        return None, 1, 1
    lims = []
    for w in workers.values():
        lim = int(w.get("memory_limit") or 0)
        lims.append(lim if lim > 0 else _total_memory() // len(workers))
    k = max(1, min(int(w.get("nthreads") or 1) for w in workers.values()))
    return min(lims), k, len(workers)


def plan_for_runner(
    runner: Any,
    ds: Any,
    inputs: Inputs,
    halo: int,
    reg: str,
    chunks: Any,
    *,
    target_bytes: int | None = None,
    total_threads: int | None = None,
) -> dict[str, Any]:
    """:func:`memory_plan` for the stack ``ds["stack"]`` on ``runner``'s workers; a
    ``ValueError`` (one line, the minimum and the flags that help) when their memory limit is
    below the run's minimum."""
    stack = ds["stack"]
    lim, k, nw = runner_limits(runner)
    stored = stack.encoding.get("chunks")
    plan = memory_plan(
        stack.shape[1:],
        inputs.energy.size,
        np.dtype(stack.dtype).itemsize,
        inputs.method,
        inputs.n_components,
        halo=halo,
        reg=reg,
        stored_chunks=tuple(stored)[1:] if stored else None,
        memory_limit=lim,
        threads_per_worker=k,
        n_workers=nw,
        chunks=chunks,
        target_bytes=target_bytes,
        total_threads=total_threads,
        weighted=inputs.weights != "none",
    )
    if not plan["fits"]:
        need = plan["minimum_memory_limit"]
        raise ValueError(
            f"the workers' memory limit ({lim / 2**20:.0f} MiB, {k} thread(s) each) is below "
            f"the minimum for this run, {need / 2**20:.0f} MiB per worker (a worker's own memory "
            f"plus two tasks per thread at tiles {plan['tiles']}); give --memory-limit "
            f"{int(-(-need // 2**20))}MiB or more, fewer threads per worker, smaller --chunks, "
            "or store the stack in smaller chunks (bigxanes simulate --chunks, import --tile)"
        )
    return plan


def choose_state_mode(state_mode: str, state_bytes: int, available_bytes: int) -> str:
    """``"memory"`` when ``STATE_COPIES x state_bytes`` fits in ``MEMORY_FRACTION`` of
    ``available_bytes`` (``state_mode="auto"``), else ``"zarr"``; an explicit mode is kept."""
    if state_mode not in STATE_MODES:
        raise ValueError(f"state_mode must be one of {', '.join(STATE_MODES)}, got {state_mode!r}")
    if state_mode != "auto":
        return state_mode
    fits = STATE_COPIES * int(state_bytes) <= MEMORY_FRACTION * int(available_bytes)
    return "memory" if fits else "zarr"


#: Memory a dask worker process holds before any data (interpreter, NumPy, dask, distributed,
#: zarr); issue 13 measured KilledWorker at 150-200 MB per worker and a run at 225 MB.
PYTHON_WORKER_BASE = 160 * 2**20
#: What numba's compiled kernels add to a worker once it has run one (LLVM, the loaded cache):
#: measured 149 -> 251 MiB RSS for the first numba pass 1 in a fresh process with bigxanes
#: imported (issue 16: 210 MiB workers were killed in pass 1 once pass 1 ran on numba).
NUMBA_CODE_BYTES = 100 * 2**20


def _numba_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("numba") is not None


#: A worker's own memory before any data: :data:`PYTHON_WORKER_BASE`, plus
#: :data:`NUMBA_CODE_BYTES` where numba is installed (pass 1 of LCF/RUM runs on it by default).
MIN_WORKER_BASE = PYTHON_WORKER_BASE + (NUMBA_CODE_BYTES if _numba_installed() else 0)


def worker_pause_fraction() -> float:
    """Fraction of its memory limit at which a dask worker stops running tasks
    (``distributed.worker.memory.pause``, 0.8 by default; 1 when pausing is disabled). A worker
    whose own memory is above it never runs a task again: the run hangs (issue 16: 300 MiB
    workers holding 260 MiB of code waited forever)."""
    import dask

    v = dask.config.get("distributed.worker.memory.pause", 0.8)
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) and v > 0 else 1.0


def minimum_memory_limit(task_bytes: int, threads_per_worker: int = 1) -> int:
    """Smallest per-worker memory limit a run can use: :data:`MIN_WORKER_BASE` plus twice the
    peak of its largest task per thread (``estimate_resources()["task_bytes"]``; a task's input
    and output buffers are alive together while distributed spills and transfers), below the
    worker's pause threshold (:func:`worker_pause_fraction` of the limit).

    The one rule behind ``--memory-limit``'s check and ``bigxanes info``'s
    ``memory_min_per_worker``.
    """
    need = MIN_WORKER_BASE + 2 * max(0, int(task_bytes)) * max(1, int(threads_per_worker))
    return int(math.ceil(need / worker_pause_fraction()))


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
    memory_limit: int | None = None,
    weights: str = "none",
    _loaded: tuple | None = None,
) -> dict[str, Any]:
    """Memory and disk an :func:`unmix_store` run needs (for ``bigxanes info`` and the CLI's
    checks before a cluster starts); tiles and state blocks from :func:`memory_plan`.

    Returns
    -------
    dict
        ``shape``, ``tiles``, ``state_tiles`` (RUM), ``n_components``, ``halo``,
        ``stack_bytes``, ``task_bytes`` (peak working memory of the largest task),
        ``memory_per_worker`` (bytes a worker's process is expected to reach: its own
        :data:`~bigxanes.engine.cluster.MIN_WORKER_BASE` plus two tasks' worth per thread),
        ``minimum_memory_limit`` and its alias ``memory_min_per_worker`` (per worker; a lower
        ``--memory-limit`` is refused: :func:`memory_plan`, the rule of the run itself),
        ``output_disk_bytes`` (uncompressed upper bound), ``work_disk_bytes`` (pass-1 array
        and, for RUM, the two state buffers; deleted at the end), ``state_bytes``
        (one state buffer), ``n_workers``.
    """
    from .cluster import MIN_WORKER_BASE

    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    if _loaded is None:
        _loaded = load_inputs(
            input, method, references, energy_range, require_references=False, weights=weights
        )
    ds, inputs = _loaded
    stack, A = ds["stack"], inputs.A
    T = inputs.energy.size
    spatial = tuple(int(n) for n in stack.shape[1:])
    nd = len(spatial)
    N = int(np.prod(spatial))
    L = 2 if A is None else A.shape[1]
    rum = method.startswith("rum")
    weighted = inputs.weights != "none"
    if rum:
        params = params if params is not None else RumParams(method=method)
    halo = params.halo if rum else 0
    item = np.dtype(stack.dtype).itemsize
    stored = stack.encoding.get("chunks") or (
        tuple(c[0] for c in stack.chunks) if stack.chunks else None
    )
    k = max(1, int(threads_per_worker))
    nw = int(n_workers or max(1, (os.cpu_count() or 1) // k))
    plan = memory_plan(
        spatial,
        T,
        item,
        method,
        L,
        halo=halo,
        reg=params.reg if rum else "tv",
        stored_chunks=tuple(stored)[1:] if stored is not None else None,
        memory_limit=memory_limit,
        threads_per_worker=k,
        n_workers=nw,
        chunks=chunks,
        weighted=weighted,
    )
    p1 = Pass1Layout(L, "lstsq", method == "edge50", weighted=weighted)
    state_bytes = params.state_layout(L, nd, weighted).n_channels * N * 4 if rum else 0
    # fraction + fraction_unmasked (conventions) + fraction_std, scale, residual, mask,
    # lcf_fraction (RUM), edge50 + the two white-line maps (Edge-50)
    out_ch = 3 * L + 3 + (L if rum else 0) + (3 if method == "edge50" else 0)
    task = plan["task_bytes"]
    return {
        "shape": (T,) + spatial,
        "tiles": plan["tiles"],
        "state_tiles": plan["state_tiles"],
        "n_components": L,
        "halo": halo,
        "stack_bytes": int(T * N * item),
        "task_bytes": int(task),
        "memory_per_worker": int(MIN_WORKER_BASE + 2 * k * task),
        "minimum_memory_limit": plan["minimum_memory_limit"],
        "memory_min_per_worker": plan["minimum_memory_limit"],
        "output_disk_bytes": int(out_ch * N * 4),
        "work_disk_bytes": int(p1.n_channels * N * 8 + 2 * state_bytes),
        "state_bytes": int(state_bytes),
        "n_workers": nw,
    }
