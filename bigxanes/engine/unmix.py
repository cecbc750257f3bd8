"""Orchestration of out-of-core unmixing: Zarr stack in, Zarr result Dataset out.

One read of the stack (pass 1: ``AᵀY``, ``yᵀy``, NNLS, residuals, Edge-50, LCF variant) into a
Zarr working array (or, for LCF/Edge-50 when it fits, persisted in memory); then, for RUM, one
graph per ADMM iteration, on the state persisted in the cluster's memory (``state_mode="memory"``,
checkpointed to the Zarr double buffer every K iterations; on a distributed cluster one
future per state block on a fixed worker, :mod:`bigxanes.engine.pinned`) or on the
double-buffered Zarr state (``"zarr"``, for states that do not fit: one Zarr-to-Zarr task per
state block) (DESIGN.md §4); then the result maps (DESIGN.md §5).
The arithmetic is that of the in-memory path :func:`bigxanes.rum.unmix_rum_array`, run
block-wise.
"""

from __future__ import annotations

import hashlib
import math
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import dask
import dask.array as da
import numpy as np
import xarray as xr

from .. import __version__
from ..baseline import resolve_baseline, subtract_pre_edge
from ..integrity import check_chunks, check_energy_order, checked_dask, test_pause
from ..kernels.admm import RESIDUALS, StateLayout
from ..kernels.edge50 import edge50_energy, fraction_from_edge50
from ..normalize import find_e0, normalize_spectra
from ..rum import (
    History,
    RumParams,
    noise_variance,
    resolve_lambda,
    run_admm,
    scale_from_histogram,
)
from ..store import is_complete, open_stack
from .chunked import (
    LCF_VARIANTS,
    Pass1Layout,
    admm_block,
    admm_zarr_block,
    block_regions,
    init_state_block,
    map_spatial_blocks,
    map_spatial_overlap,
    min_chunks,
    pass1_block,
)
from .cluster import make_runner
from .locking import OutputLock, remove_stale_partials
from .pinned import PinnedState
from .preflight import check_output_location, dir_bytes
from .results import MASK_THRESHOLD, lcf_outputs_block, rum_outputs_block, write_results
from .state import BUFFERS, WorkDir

__all__ = [
    "unmix_store",
    "estimate_resources",
    "choose_state_mode",
    "DEFAULT_TILE",
    "METHODS",
    "HIST_BINS",
    "STATE_MODES",
    "DEFAULT_CHECKPOINT_EVERY",
    "STATE_BLOCK_BYTES",
    "state_tiles",
]

METHODS = ("lcf", "edge50", "rum-tv", "rum-pnp")
#: Default spatial tile edge per number of spatial dims. Measured (benchmarks/results/engine.md,
#: 1024² x 100, 2 workers): 128² is 1.8x slower for LCF and 1.6x for RUM-TV than 256²; 512²
#: equals 256² for LCF and is 1.5x faster per RUM-TV iteration but needs 25 % more memory.
#: 256² is the memory-safe default; the RUM iterations run on larger state blocks anyway
#: (:func:`state_tiles`), which takes the RUM gain without the LCF loss.
DEFAULT_TILE = {2: 256, 3: 64}
#: Bins of the histogram that gives the data scale (as :func:`bigxanes.rum.robust_scale`).
HIST_BINS = 4096
#: Environment variable: fail after this many completed iterations (tests of resume).
FAIL_ENV = "BIGXANES_FAIL_AFTER"
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


class InjectedFailure(RuntimeError):
    """Raised by the failure-injection hook (``_fail_after`` / ``BIGXANES_FAIL_AFTER``)."""


def _work_path(output: Path) -> Path:
    return output.with_name(output.name + ".work")


def _tiles(chunks, spatial: Sequence[int]) -> tuple[int, ...]:
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


def _load_inputs(input, references, energy_range):
    """Open the stack and resolve references and the energy window.

    The small variables (energies, references) are read in this process (synchronous
    scheduler), not through the cluster that may be the default scheduler: each ``.values``
    on a dask-backed variable would otherwise be a round trip to the workers.
    """
    with dask.config.set(scheduler="synchronous"):
        return _load_inputs_local(input, references, energy_range)


def _load_inputs_local(input, references, energy_range):
    ds = open_stack(input)
    stack = ds["stack"]
    energy = np.asarray(ds["energy"].values, dtype=np.float64)
    names = None
    if references is None:
        if "references" in ds.data_vars:
            ref = ds["references"].transpose("energy", "component")
            A = np.asarray(ref.values, dtype=np.float64)
            names = [str(c) for c in ref["component"].values] if "component" in ref.coords else None
        else:
            A = None
    elif isinstance(references, xr.DataArray):
        ref = references.transpose("energy", ...)
        A = np.asarray(ref.values, dtype=np.float64)
        if "component" in ref.coords:
            names = [str(c) for c in ref["component"].values]
    else:
        A = np.asarray(references, dtype=np.float64)
    if A is not None:
        if A.ndim != 2 or A.shape[0] != energy.size:
            raise ValueError(
                f"references have shape {A.shape}; expected ({energy.size}, L) on the stack's "
                "energies: interpolate them with bigxanes.energy first"
            )
        if not np.all(np.isfinite(A)):
            raise ValueError("references contain NaN/Inf; fix the reference spectra")
        if names is None or len(names) != A.shape[1]:
            names = [f"component{i}" for i in range(A.shape[1])]
    if energy_range is not None:
        lo, hi = (float(v) for v in energy_range)
        sel = (energy >= lo) & (energy <= hi)
        if sel.sum() < 3:
            raise ValueError(
                f"energy_range {energy_range} keeps {int(sel.sum())} energies of "
                f"{energy.min():.1f}..{energy.max():.1f} eV; widen it"
            )
        stack = stack.isel(energy=np.flatnonzero(sel))
        energy = energy[sel]
        if A is not None:
            A = A[sel]
    return ds, stack, energy, A, names


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


def _n_threads(runner) -> int:
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


def _fail_hook(_fail_after: int | None) -> int | None:
    if _fail_after is not None:
        return int(_fail_after)
    env = os.environ.get(FAIL_ENV)
    return int(env) if env else None


def _say(progress: bool, msg: str) -> None:
    if progress:
        print(f"bigxanes: {msg}", file=sys.stderr, flush=True)


def unmix_store(
    input: str | os.PathLike,
    output: str | os.PathLike,
    *,
    method: str = "lcf",
    references=None,
    params: RumParams | None = None,
    lcf_variant: str = "nnls",
    energy_range: tuple[float, float] | None = None,
    chunks: int | Sequence[int] | None = None,
    client=None,
    scheduler: str | None = None,
    n_workers: int | None = None,
    memory_limit: str | int | None = None,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    nan_policy: str = "mask",
    baseline: str = "pre-edge",
    state_mode: str = "auto",
    checkpoint_every: int = DEFAULT_CHECKPOINT_EVERY,
    _fail_after: int | None = None,
) -> Path:
    """Unmix a Zarr stack store chunk-wise and write the result Dataset to ``output``.

    Parameters
    ----------
    input : path
        Stack store (:func:`bigxanes.store.open_stack`).
    output : path
        Result store (Zarr v3), written atomically with the completion marker last. The ADMM
        state and the pass-1 arrays live in ``OUTPUT.work`` until the run has finished.
    method : {"lcf", "edge50", "rum-tv", "rum-pnp"}
    references : None, (T, L) ndarray or xarray.DataArray (energy, component)
        On the stack's energies; None uses the store's ``references`` variable.
    params : RumParams, optional
        RUM parameters (default ``RumParams(method)``); ``params.method`` must equal ``method``.
    lcf_variant : {"nnls", "lstsq", "sum-to-one"}
        LCF solver for ``method="lcf"``.
    energy_range : (float, float), optional
        Energy window in eV applied to the stack and the references.
    chunks : int or tuple of int, optional
        Spatial tile; default :data:`DEFAULT_TILE`. RUM enlarges tiles smaller than the halo,
        and runs its iterations on state blocks made of several tiles (:func:`state_tiles`,
        recorded in the ``state_tiles`` attr).
    client : distributed.Client, optional
        Use this client (not closed).
    scheduler : str, optional
        Scheduler address to join, or "threads"/"synchronous".
    n_workers, memory_limit : optional
        LocalCluster size (a cluster is started for inputs >= 256 MB or when these are given).
    resume : bool
        Continue an interrupted run of the same input and parameters from its last completed
        iteration (the commit record in ``OUTPUT.work``); starts afresh if there is none.
    overwrite : bool
        Replace an existing ``output``.
    progress : bool
        tqdm bar over iterations and short messages on stderr.
    nan_policy : {"mask", "raise"}
        ``"mask"``: spectra holding NaN/Inf are zeroed (scale 0, ``mask`` False) and counted in
        the attrs (``n_nonfinite``); ``"raise"``: a ValueError.
    baseline : {"pre-edge", "none"}
        Subtract each spectrum's mean over the pre-edge energies (``E < e0 - 5 eV``, e0 of the
        references' mean) from the data and the references before fitting
        (:mod:`bigxanes.baseline`); not used by Edge-50, which normalizes each spectrum itself.
    state_mode : {"auto", "memory", "zarr"}
        Where the ADMM state lives between iterations (DESIGN.md §4). ``"memory"``: persisted
        in the cluster's memory (float32, as stored), checkpointed to the Zarr double buffer
        every ``checkpoint_every`` iterations and at the end; ``"zarr"``: read from and written
        to the Zarr double buffer every iteration (states larger than memory). ``"auto"``
        picks memory when 3x the state fits in half the memory available for data (sum of
        the workers' limits minus their overhead; the machine's available memory on local
        schedulers). Both modes give the same numbers; recorded in the attrs. For LCF/Edge-50
        the same rule keeps the pass-1 channels in memory instead of a Zarr work array.
    checkpoint_every : int
        Memory mode: iterations between checkpoints (a resume restarts from the last one).

    Returns
    -------
    pathlib.Path
        ``output``.
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    if lcf_variant not in LCF_VARIANTS:
        raise ValueError(
            f"unknown lcf_variant {lcf_variant!r}; choose one of {', '.join(LCF_VARIANTS)}"
        )
    if state_mode not in STATE_MODES:
        raise ValueError(f"state_mode must be one of {', '.join(STATE_MODES)}, got {state_mode!r}")
    if int(checkpoint_every) < 1:
        raise ValueError(f"checkpoint_every must be >= 1, got {checkpoint_every}")
    if nan_policy not in ("mask", "raise"):
        raise ValueError(f"nan_policy must be 'mask' or 'raise', got {nan_policy!r}")
    output = Path(output)
    if output.exists() and not overwrite:
        raise FileExistsError(
            f"output {output} already exists; pass overwrite=True (--overwrite) to replace it"
        )
    rum = method.startswith("rum")
    if rum:
        params = params if params is not None else RumParams(method=method)
        if params.method != method:
            raise ValueError(f"params.method is {params.method!r} but method is {method!r}")
    elif params is not None:
        raise ValueError(f"params (RumParams) apply to rum-tv/rum-pnp, not to {method!r}")

    loaded = _load_inputs(input, references, energy_range)
    ds, stack, energy, A, names = loaded
    check_energy_order(ds["energy"].values, f"{input}")
    check_chunks(input, "stack")  # a missing chunk would read as fill values, silently
    if A is None and method != "edge50":
        raise ValueError(
            f"method {method!r} needs references: the store has no 'references' "
            "variable; pass references="
        )
    T = energy.size
    spatial = tuple(int(n) for n in stack.shape[1:])
    nd = len(spatial)
    sdims = tuple(str(d) for d in stack.dims[1:])
    N = int(np.prod(spatial))
    L = 0 if A is None else A.shape[1]
    tiles = _tiles(chunks, spatial)
    halo = params.halo if rum else 0
    tiles = min_chunks(tiles, spatial, max(halo, 1))
    Y = checked_dask(input, "stack")  # a chunk that fails to decode is named in the error
    if Y.dtype != stack.dtype or Y.shape[0] != T:
        full = np.asarray(ds["energy"].values, dtype=np.float64)
        Y = Y[np.flatnonzero(np.isin(full, energy))] if Y.dtype == stack.dtype else stack.data
    Y = Y.rechunk((T,) + tiles)
    # per-pixel pre-edge baseline, removed from the data and the references alike (baseline.py)
    window = None if method == "edge50" else resolve_baseline(baseline, energy, A)
    if window is not None:  # Y: inside the pass-1 task (pass1_block)
        A = subtract_pre_edge(A, window)

    e0 = None
    want_e50 = method == "edge50"
    p1 = Pass1Layout(L, lcf_variant if method == "lcf" else "nnls", want_e50)
    # before any computation: the output location is writable and has room (preflight.py)
    est = estimate_resources(
        input,
        method,
        references=references,
        params=params,
        _loaded=loaded,
        chunks=chunks,
        energy_range=energy_range,
    )
    have = dir_bytes(_work_path(output)) if resume else 0
    check_output_location(output, est["output_disk_bytes"] + max(0, est["work_disk_bytes"] - have))
    lock = OutputLock(output).acquire()  # a second run on this output refuses here
    try:
        remove_stale_partials(output)
        runner = make_runner(
            int(Y.nbytes),
            client=client,
            scheduler=scheduler,
            n_workers=n_workers,
            memory_limit=memory_limit,
        )
    except BaseException:
        lock.release()
        raise
    work = WorkDir(_work_path(output))
    try:
        if want_e50:
            if A is not None:
                e0 = float(find_e0(energy, A.mean(axis=1)))
            else:  # one extra read of the stack: the mean spectrum
                good = da.isfinite(Y).all(axis=0)
                mean = da.where(good, Y, 0).sum(axis=tuple(range(1, nd + 1))) / da.maximum(
                    good.sum(), 1
                )
                e0 = float(find_e0(energy, np.asarray(runner.compute(mean)[0])))
        run = {
            "input": str(Path(input).resolve()) if "://" not in str(input) else str(input),
            "method": method,
            "lcf_variant": lcf_variant,
            "energy_range": energy_range,
            "tiles": tiles,
            "shape": (T,) + spatial,
            "nan_policy": nan_policy,
            "params": params.as_dict() if rum else None,
            "references": None if A is None else hashlib.sha1(A.tobytes()).hexdigest(),
            "version": __version__,
        }
        if not (resume and work.matches(run)):
            work.reset(run)

        # ---- pass 1: the only read of the stack ------------------------------------------
        # where the ADMM state (RUM) or the pass-1 channels (LCF, Edge-50) live
        if rum:
            mode_bytes = StateLayout(L, nd, params.reg).n_channels * N * 4
        else:  # float64 pass-1 channels + the float32 result maps being written
            mode_bytes = p1.n_channels * N * 8
        mode = choose_state_mode(state_mode, mode_bytes, runner.memory_bytes())
        rec = work.get("pass1")
        P_mem = None
        if rec is None:
            _say(progress, f"pass 1 over the stack {tuple(Y.shape)} in tiles {tiles}")
            P = map_spatial_blocks(
                pass1_block,
                Y,
                p1.n_channels,
                layout=p1,
                A=A,
                energy=energy,
                e0=e0,
                nan_policy=nan_policy,
                baseline=window,
            )
            sl = p1.slices
            if not rum and mode == "memory":
                # LCF/Edge-50: nothing to resume after pass 1 -> no Zarr round trip of P
                (P,) = runner.persist(P)
                P_mem = P
                st = None
            else:
                target = work.create("pass1", p1.n_channels, spatial, tiles, dtype=np.float64)
                st = da.store(P, target, lock=False, compute=False)
            # the three scalars as one small task per block, reduced here (dask's tree
            # reductions of three channel slices were ~6 tasks per block)
            stats = P.map_blocks(
                _stats_block,
                p1=p1,
                dtype=np.float64,
                chunks=((3,),) + tuple((1,) * len(b) for b in P.chunks[1:]),
                meta=np.empty((0,) * (nd + 1), np.float64),
            )
            _, per_block = runner.compute(st, stats)
            per_block = np.asarray(per_block).reshape(3, -1)
            r_sum, s_max, n_bad = (per_block[0].sum(), per_block[1].max(), per_block[2].sum())
            c = 1.0
            if A is not None and float(s_max) > 0:
                Pz = P_mem if P_mem is not None else work.dask("pass1")
                hist = Pz.map_blocks(
                    _hist_block,
                    p1=p1,
                    smax=float(s_max),
                    chunks=((HIST_BINS,),) + tuple((1,) * len(b) for b in Pz.chunks[1:]),
                    dtype=np.int64,
                    drop_axis=(),
                    meta=np.empty((0,) * (nd + 1), np.int64),
                )
                h = runner.compute(hist.sum(axis=tuple(range(1, nd + 1))))[0]
                edges = np.linspace(0.0, float(s_max), HIST_BINS + 1)
                c = scale_from_histogram(np.asarray(h), edges)
            rec = {
                "resid_sum": float(r_sum),
                "s_max": float(s_max),
                "n_bad": int(n_bad),
                "scale": float(c),
                "e0": e0,
            }
            if P_mem is None:  # the record names a complete pass1 array
                work.put("pass1", rec)
        c = float(rec["scale"])
        Pz = P_mem if P_mem is not None else work.dask("pass1")
        variables: dict[str, tuple[Sequence[str], Any]] = {}
        attrs: dict[str, Any] = {
            "method": method,
            "input": run["input"],
            "energy_range": energy_range,
            "lcf_variant": lcf_variant if method == "lcf" else None,
            "nan_policy": nan_policy,
            "n_nonfinite": int(rec["n_bad"]),
            "data_scale": c,
            "mask_threshold": MASK_THRESHOLD,
            "tiles": list(tiles),
            "engine": "dask",
            "state_mode": mode,
            "baseline": baseline if window is not None else "none",
            "baseline_window_eV": (
                [float(energy[window].min()), float(energy[window].max())]
                if window is not None
                else None
            ),
        }
        fdims = ("component",) + sdims
        if A is not None:
            lo = map_spatial_blocks(
                lcf_outputs_block,
                Pz,
                L + 3,
                p1=p1,
                n_energies=T,
                scale=c,
                nnls_only=method != "lcf",
            )
            mask = lo[L + 2] > 0.5
            if method == "lcf":
                variables.update(
                    fraction=(fdims, lo[:L].astype(np.float32)),
                    scale=(sdims, lo[L].astype(np.float32)),
                    residual_rms=(sdims, lo[L + 1].astype(np.float32)),
                    mask=(sdims, mask),
                )
            else:
                variables["lcf_fraction"] = (fdims, lo[:L].astype(np.float32))
        if method == "edge50":
            sl = p1.slices
            e50 = Pz[sl["edge50"]][0]
            variables["edge50"] = (sdims, e50.astype(np.float32))
            attrs["e0"] = e0
            emask = da.isfinite(e50) & (Pz[sl["bad"]][0] == 0)
            if A is not None:
                variables.update(
                    scale=(sdims, lo[L].astype(np.float32)),
                    residual_rms=(sdims, lo[L + 1].astype(np.float32)),
                )
                emask = emask & mask
                if L == 2:
                    refs = edge50_energy(energy, normalize_spectra(energy, A, e0=e0).norm)
                    attrs["edge50_references"] = [float(v) for v in refs]
                    fr = e50.map_blocks(
                        lambda e, r=refs: fraction_from_edge50(e, r),
                        new_axis=0,
                        chunks=((2,),) + e50.chunks,
                        dtype=np.float64,
                    )
                    variables["fraction"] = (fdims, fr.astype(np.float32))
            else:
                variables["scale"] = (sdims, Pz[sl["edge_step"]][0].astype(np.float32))
            variables["mask"] = (sdims, emask)
        if rum:
            X, s, rms, hist, ckpt = _run_rum(
                work,
                Pz,
                p1,
                A,
                params,
                c,
                rec,
                T,
                N,
                tiles,
                runner,
                progress,
                _fail_hook(_fail_after),
                mode,
                int(checkpoint_every),
            )
            variables.update(
                fraction=(fdims, X.astype(np.float32)),
                scale=(sdims, s.astype(np.float32)),
                residual_rms=(sdims, rms.astype(np.float32)),
                mask=(sdims, (s > MASK_THRESHOLD * c) & (Pz[p1.slices["bad"]][0] == 0)),
            )
            attrs.update(
                params=params.as_dict(),
                history=hist.as_dict(),
                n_iterations=len(hist.iteration),
                halo=halo,
                lam=work.get("commit")["lam"],
                noise_var=work.get("commit")["noise_var"],
                checkpoint_every=int(checkpoint_every) if mode == "memory" else 1,
                **ckpt,
            )
        coords: dict[str, Any] = {}
        for d in sdims:
            if d in stack.coords:
                coords[d] = stack[d].values
        if A is not None:
            coords["component"] = np.asarray(names, dtype=object)
            coords["energy"] = ("energy", energy, {"units": "eV"})
            variables["references"] = (("energy", "component"), A)
        _say(progress, f"writing {output}")
        write_results(
            variables,
            coords,
            attrs,
            output,
            tiles=tiles,
            spatial_dims=sdims,
            scheduler=runner.scheduler,
            overwrite=overwrite,
        )
        work.remove()
        return output
    finally:
        runner.close()
        lock.release()


def _sum_parts(parts: Sequence[np.ndarray]) -> np.ndarray:
    return np.sum(np.stack(parts), axis=0)


def _stats_block(P: np.ndarray, *, p1: Pass1Layout) -> np.ndarray:
    """Sum of the clipped NNLS residuals, max of ``s0 = Σ M0`` and the count of bad spectra of
    a pass-1 block, shaped ``(3, 1, ...)``."""
    sl = p1.slices
    out = np.zeros((3,) + (1,) * (P.ndim - 1), dtype=np.float64)
    out[0] = np.maximum(P[sl["resid0"]], 0.0).sum()
    out[1] = P[sl["M0"]].sum(axis=0).max() if P[sl["M0"]].size else 0.0
    out[2] = P[sl["bad"]].sum()
    return out


def _hist_block(P: np.ndarray, *, p1: Pass1Layout, smax: float) -> np.ndarray:
    s0 = P[p1.slices["M0"]].sum(axis=0)
    h, _ = np.histogram(s0.ravel(), bins=HIST_BINS, range=(0.0, smax))
    return h.reshape((HIST_BINS,) + (1,) * (P.ndim - 1))


def _run_rum(
    work: WorkDir,
    Pz: da.Array,
    p1: Pass1Layout,
    A: np.ndarray,
    params: RumParams,
    c: float,
    rec: dict,
    T: int,
    N: int,
    tiles,
    runner,
    progress: bool,
    fail_after: int | None,
    mode: str = "zarr",
    checkpoint_every: int = 1,
):
    """The ADMM iterations; returns lazy (X, s, rms) and the history.

    ``mode="zarr"``: each iteration reads state k from one Zarr buffer and writes state k+1 to
    the other, then commits (one compute). It is one independent task per state block
    (:func:`~bigxanes.engine.chunked.admm_zarr_block`: read the block and its halo, iterate,
    write the block, return its residual sums), so the workers hold only the running tasks'
    working sets and peak memory does not grow with the volume. (A ``map_overlap`` graph over
    the buffer kept finished blocks and halo slices in the workers while their neighbours and
    the store waited: 2.1 -> 3.3 GiB from 1x to 8x, benchmarks/results/engine.md.)
    ``mode="memory"``: the float32 state stays persisted
    in the cluster's memory (each iteration's graph depends only on the persisted previous
    state, so it does not grow). On a distributed cluster it is one future per state block,
    each block's tasks on a fixed owner worker (:class:`~bigxanes.engine.pinned.PinnedState`:
    with ``map_overlap`` the blocks drifted onto one worker); on the local schedulers a
    ``map_overlap`` graph over a persisted dask array. It is stored to the buffer the last
    commit does not name and committed every ``checkpoint_every`` iterations and at the end.
    Same kernels, same float32 state, so the same numbers; a resume starts from the last commit
    of either mode.
    """
    from tqdm.auto import tqdm

    L = A.shape[1]
    spatial = tuple(Pz.shape[1:])
    layout = StateLayout(L, len(spatial), params.reg)
    n = layout.n_channels
    AtA = A.T @ A
    nv = noise_variance(rec["resid_sum"], N, T, L, c)
    lam = resolve_lambda(params, nv, A, c)
    memory = mode == "memory"
    # larger blocks than the stack tiles for the iterations (state_tiles); same in both modes,
    # so both give the same numbers (PnP depends on the blocking)
    nthr = _n_threads(runner)
    st = state_tiles(
        tiles, spatial, n, nthr, max_bytes=runner.memory_bytes() // (nthr * STATE_TASK_FACTOR)
    )
    schunks = ((n,),) + tuple(st)
    regions = block_regions(spatial, st)
    commit = work.get("commit")
    cur: dict[str, Any] = {}
    # memory mode on a cluster: one future per block, each block on its own worker (pinned.py)
    pinned = None
    if memory and runner.distributed:
        pinned = PinnedState(
            runner.scheduler,
            spatial,
            st,
            params.halo,
            {a: int(w.get("nthreads") or 1) for a, w in runner.workers().items()},
        )
    if commit is None:
        for b in BUFFERS:
            work.create(b, n, spatial, tiles)
        S0 = map_spatial_overlap(init_state_block, Pz, n, 1, p1=p1, layout=layout, scale=c)
        if pinned is not None:
            pinned.load_array(S0.astype(np.float32).rechunk(schunks))
            cur["buf"] = None
            history, start = History(), 0
        elif memory:  # no write: a resume without a commit starts again from pass 1
            (cur["S"],) = runner.persist(S0.astype(np.float32).rechunk(schunks))
            cur["buf"] = None
            history, start = History(), 0
        else:
            runner.compute(
                da.store(S0.astype(np.float32), work.array(BUFFERS[0]), lock=False, compute=False)
            )
            work.commit(
                0, BUFFERS[0], History().as_dict(), lam=lam, noise_var=nv, scale=c, converged=False
            )
            commit = work.get("commit")
    if commit is not None:
        history = History.from_dict(commit["history"])
        start = int(commit["completed"])
        cur["buf"] = commit["buffer"]
        if pinned is not None:
            pinned.load_zarr(str(work.path / cur["buf"]))
        elif memory:
            (cur["S"],) = runner.persist(work.dask(cur["buf"], schunks))
    cur["committed"] = start if commit is not None else None
    cur["ckpt_s"], cur["n_ckpt"] = 0.0, 0
    norm = math.sqrt(N * L)
    bar = tqdm(
        total=int(params.max_iter),
        initial=start,
        disable=not progress,
        desc=params.method,
        unit="it",
    )

    def other(buf: str | None) -> str:
        return BUFFERS[0] if buf is None else BUFFERS[1 - BUFFERS.index(buf)]

    def step(k: int, rho: float, rho_next: float) -> dict[str, float]:
        S = cur["S"]
        out = map_spatial_overlap(
            admm_block,
            S,
            layout.n_out,
            params.halo,
            layout=layout,
            AtA=AtA,
            lam=lam,
            rho=rho,
            rho_next=rho_next,
            tv_sweeps=params.tv_sweeps,
            denoiser=params.denoiser,
        )
        sums = [out[n + i].sum() for i in range(len(RESIDUALS))]
        new, *psums = runner.persist(out[:n].astype(np.float32), *sums)
        res = runner.compute(*psums)
        cur["next"] = new
        return {name: float(v) for name, v in zip(RESIDUALS, res, strict=True)}

    def step_pinned(k: int, rho: float, rho_next: float) -> dict[str, float]:
        res = pinned.iterate(
            layout=layout,
            AtA=AtA,
            lam=lam,
            rho=rho,
            rho_next=rho_next,
            tv_sweeps=params.tv_sweeps,
            denoiser=params.denoiser,
        )
        return {name: float(v) for name, v in zip(RESIDUALS, res, strict=True)}

    def step_zarr(k: int, rho: float, rho_next: float) -> dict[str, float]:
        # one task per state block, Zarr to Zarr, returning only its residual sums
        src, dst = work.path / cur["buf"], work.path / other(cur["buf"])
        kw = dict(
            layout=layout,
            AtA=AtA,
            lam=lam,
            rho=rho,
            rho_next=rho_next,
            tv_sweeps=params.tv_sweeps,
            denoiser=params.denoiser,
        )
        parts = [
            dask.delayed(admm_zarr_block, pure=False)(str(src), str(dst), r, params.halo, **kw)
            for r in regions
        ]
        (res,) = runner.compute(dask.delayed(_sum_parts)(parts))
        cur["next"] = dst.name
        return {name: float(v) for name, v in zip(RESIDUALS, res, strict=True)}

    def checkpoint(done: int, hist: History, conv: bool, final: bool) -> None:
        t0 = time.perf_counter()
        dst = other(cur["buf"])  # never overwrite the buffer the last commit names
        if pinned is not None:
            pinned.store(str(work.path / dst))
        else:
            runner.compute(da.store(cur["S"], work.array(dst), lock=False, compute=False))
        work.commit(done, dst, hist.as_dict(), lam=lam, noise_var=nv, scale=c, converged=bool(conv))
        cur["buf"], cur["committed"] = dst, done
        if runner.distributed and not final:
            # cut the lineage the scheduler keeps for the persisted chain: a lost worker then
            # recomputes at most `checkpoint_every` iterations, from this checkpoint
            if pinned is not None:
                pinned.load_zarr(str(work.path / dst))
            else:
                (cur["S"],) = runner.persist(work.dask(dst, schunks))
        cur["ckpt_s"] += time.perf_counter() - t0
        cur["n_ckpt"] += 1
        test_pause("after_commit")

    def on_iteration(k: int, hist: History) -> None:
        conv = (hist.primal[-1] / norm < params.tol) and (hist.dual[-1] / norm < params.tol)
        if memory:
            if pinned is None:
                cur["S"] = cur.pop("next")
            done = k + 1
            final = conv or done >= int(params.max_iter)
            if done % checkpoint_every == 0 or final:
                checkpoint(done, hist, conv, final)
        else:
            cur["buf"] = cur.pop("next")
            work.commit(
                k + 1,
                cur["buf"],
                hist.as_dict(),
                lam=lam,
                noise_var=nv,
                scale=c,
                converged=bool(conv),
            )
            test_pause("after_commit")
        bar.update(1)
        if fail_after is not None and k + 1 == fail_after:
            raise InjectedFailure(f"injected failure after iteration {k + 1}")

    try:
        if not (commit or {}).get("converged", False):
            fn = step_zarr if not memory else (step if pinned is None else step_pinned)
            history = run_admm(
                fn, params, lam, N, L, start=start, history=history, on_iteration=on_iteration
            )
        if memory and cur["committed"] != len(history.iteration):  # always end on a commit
            conv = bool(history.iteration) and (
                history.primal[-1] / norm < params.tol and history.dual[-1] / norm < params.tol
            )
            checkpoint(len(history.iteration), history, conv, True)
    finally:
        bar.close()
    S = cur["S"] if (memory and pinned is None) else work.dask(cur["buf"])
    out = map_spatial_blocks(
        rum_outputs_block, S, L + 2, layout=layout, AtA=AtA, scale=c, n_energies=T
    )
    stats = {
        "checkpoint_seconds": round(cur["ckpt_s"], 3),
        "n_checkpoints": cur["n_ckpt"],
        "state_tiles": list(st),
    }
    return out[:L], out[L], out[L + 1], history, stats


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
    loaded = _loaded if _loaded is not None else _load_inputs(input, references, energy_range)
    ds, stack, energy, A, _ = loaded
    T = energy.size
    spatial = tuple(int(n) for n in stack.shape[1:])
    nd = len(spatial)
    N = int(np.prod(spatial))
    L = 2 if A is None else A.shape[1]
    rum = method.startswith("rum")
    if rum:
        params = params if params is not None else RumParams(method=method)
    halo = params.halo if rum else 0
    tiles = min_chunks(_tiles(chunks, spatial), spatial, max(halo, 1))
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
    out_ch = L + 3 + (L if rum else 0) + (1 if method == "edge50" else 0)
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


def is_result_complete(path: str | os.PathLike) -> bool:
    """True when ``path`` holds a complete result store."""
    return is_complete(path)
