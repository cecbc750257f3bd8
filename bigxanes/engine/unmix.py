"""Orchestration of out-of-core unmixing: Zarr stack in, Zarr result Dataset out.

The engine executor of the pipeline (docs/design.md, "Both executors"): the inputs are
prepared by :mod:`bigxanes.pipeline.prepare`, the run planned by :mod:`.planning` (tiles,
state blocks, state mode, resources), the stack read once by :mod:`.pass1` (the kernel
:func:`bigxanes.kernels.pass1.pass1_block` over the tiles), the RUM iterations run by
:mod:`.iterations`, and the result assembled by :mod:`bigxanes.pipeline.result` (the same code
as in memory, with ``map_blocks`` as its block runner) and written atomically by
:mod:`.results`. This module holds the order of those steps and the run's bookkeeping (lock,
work directory, preflight) only.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np

from .. import __version__
from ..integrity import (
    PointHook,
    check_chunks,
    check_energy_order,
    check_fingerprint,
    checked_dask,
    input_fingerprint,
)
from ..kernels.edge50 import edge50_reference_energies
from ..kernels.quality import chi2_histogram
from ..paths import absolute
from ..pipeline.defaults import DEFAULT_BASELINE, DEFAULT_NAN_POLICY, METHODS
from ..pipeline.prepare import (
    Inputs,
    Selection,
    align_inputs,
    check_options,
    needs_mean_spectrum,
    pass1_layout,
    spatial_selection,
)
from ..pipeline.result import (
    build_dataset,
    method_variables,
    quality_attrs,
    result_attrs,
    result_coords,
)
from ..rum import RumParams, resolve_sure, sure_crop
from .chunked import admm_block, admm_zarr_block, map_spatial_blocks
from .cluster import make_runner
from .iterations import InjectedFailure, RumIterations
from .locking import OutputLock, remove_stale_partials
from .pass1 import engine_e0, engine_mean_spectrum, run_pass1, say
from .planning import (
    DEFAULT_CHECKPOINT_EVERY,
    DEFAULT_TILE,
    STATE_BLOCK_BYTES,
    STATE_MODES,
    choose_state_mode,
    estimate_resources,
    load_inputs,
    n_threads,
    plan_for_runner,
    state_tiles,
)
from .preflight import check_output_location, check_paths_on_workers, dir_bytes
from .results import write_results
from .state import WorkDir

__all__ = [
    "unmix_store",
    "estimate_resources",
    "choose_state_mode",
    "DEFAULT_TILE",
    "METHODS",
    "STATE_MODES",
    "DEFAULT_CHECKPOINT_EVERY",
    "STATE_BLOCK_BYTES",
    "InjectedFailure",
    "admm_block",
    "admm_zarr_block",
    "state_tiles",
]

#: Work-directory attribute holding the input's fingerprint (:func:`input_fingerprint`).
FINGERPRINT_KEY = "input_fingerprint"
#: Environment variable: fail after this many completed iterations (tests of resume).
FAIL_ENV = "BIGXANES_FAIL_AFTER"
#: Worker threads of a runner (module attribute so that benchmarks can pretend a count).
_n_threads = n_threads


def _work_path(output: Path) -> Path:
    return output.with_name(output.name + ".work")


def _fail_hook(_fail_after: int | None) -> int | None:
    if _fail_after is not None:
        return int(_fail_after)
    env = os.environ.get(FAIL_ENV)
    return int(env) if env else None


def _check_args(
    method: str,
    params: RumParams | None,
    lcf_variant: str,
    nan_policy: str,
    state_mode: str,
    checkpoint_every: int,
    output: Path,
    overwrite: bool,
) -> RumParams | None:
    """One-line ValueErrors for the arguments; the RUM parameters to use (None: not RUM)."""
    check_options(method, variant=lcf_variant, nan_policy=nan_policy)
    if state_mode not in STATE_MODES:
        raise ValueError(f"state_mode must be one of {', '.join(STATE_MODES)}, got {state_mode!r}")
    if int(checkpoint_every) < 1:
        raise ValueError(f"checkpoint_every must be >= 1, got {checkpoint_every}")
    if output.exists() and not overwrite:
        raise FileExistsError(
            f"output {output} already exists; pass overwrite=True (--overwrite) to replace it"
        )
    if method.startswith("rum"):
        params = params if params is not None else RumParams(method=method)
        if params.method != method:
            raise ValueError(f"params.method is {params.method!r} but method is {method!r}")
        return params
    if params is not None:
        raise ValueError(f"params (RumParams) apply to rum-tv/rum-pnp, not to {method!r}")
    return None


def _run_record(
    input: Any,
    method: str,
    lcf_variant: str,
    energy_range: Any,
    tiles: tuple[int, ...],
    Y: da.Array,
    params: RumParams | None,
    inputs: Inputs,
) -> dict[str, Any]:
    """What the run is (a resume refuses a work directory recorded for another run)."""
    A = inputs.A
    return {
        "input": str(Path(input).resolve()) if "://" not in str(input) else str(input),
        "method": method,
        "lcf_variant": lcf_variant,
        "energy_range": energy_range,
        "tiles": tiles,
        "shape": tuple(Y.shape),
        "nan_policy": inputs.nan_policy,
        "params": params.as_dict() if params is not None else None,
        "references": None if A is None else hashlib.sha1(A.tobytes()).hexdigest(),
        "energy_shift": None if inputs.shifts is None else [float(v) for v in inputs.shifts],
        "weights": inputs.weights,
        "i0": None if inputs.i0 is None else hashlib.sha1(inputs.i0.tobytes()).hexdigest(),
        "version": __version__,
    }


def _stack_dask(
    input: Any, ds: Any, inputs: Inputs, tiles: tuple[int, ...], sel: Selection
) -> da.Array:
    """The stack as dask on ``(T, *tiles)`` chunks, windowed and cropped to the region; a
    chunk that fails to decode is named in the error
    (:func:`bigxanes.integrity.checked_dask`)."""
    Y = checked_dask(input, "stack")
    if sel.slices is not None:
        Y = Y[(slice(None),) + sel.slices]
    if Y.dtype != ds["stack"].dtype:
        Y = ds["stack"].data
    if inputs.select is not None:
        Y = Y[inputs.select]
    return Y.rechunk((inputs.energy.size,) + tiles)


def unmix_store(
    input: str | os.PathLike,
    output: str | os.PathLike,
    *,
    method: str = "lcf",
    references: Any = None,
    params: RumParams | None = None,
    lcf_variant: str = "nnls",
    energy_range: tuple[float, float] | None = None,
    chunks: int | Sequence[int] | None = None,
    client: Any = None,
    scheduler: str | None = None,
    n_workers: int | None = None,
    memory_limit: str | int | None = None,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    nan_policy: str = DEFAULT_NAN_POLICY,
    baseline: str = DEFAULT_BASELINE,
    state_mode: str = "auto",
    checkpoint_every: int = DEFAULT_CHECKPOINT_EVERY,
    noise_sigma: float | None = None,
    energy_shift: Any = "none",
    region: Any = None,
    mask: Any = None,
    weights: str = "none",
    i0: Any = None,
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
        A DataArray with an ``energy`` coordinate is interpolated onto the stack's energies;
        other references must be on them. None uses the store's ``references`` variable.
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
        ``"mask"`` (default, as ``bx.lcf``): spectra holding NaN/Inf are zeroed (scale 0,
        ``mask`` False) and counted in the attrs (``n_nonfinite``); ``"raise"``: a ValueError.
    baseline : {"pre-edge", "none"}
        Subtract each spectrum's mean over the pre-edge energies (``E < e0 - 5 eV``, e0 of the
        references' mean) from the data and the references before fitting
        (:mod:`bigxanes.kernels.baseline`); not used by Edge-50, which normalizes each
        spectrum itself.
    state_mode : {"auto", "memory", "zarr"}
        Where the ADMM state lives between iterations (docs/design.md, "State modes and
        state blocks"). ``"memory"``: persisted in the cluster's memory (float32, as
        stored), checkpointed to the Zarr double buffer every ``checkpoint_every``
        iterations and at the end; ``"zarr"``: read from and written to the Zarr double
        buffer every iteration (states larger than memory). ``"auto"`` picks memory when 3x
        the state fits in half the memory available for data (sum of the workers' limits
        minus their overhead; the machine's available memory on local schedulers). Both
        modes give the same numbers; recorded in the attrs. For LCF/Edge-50 the same rule
        keeps the pass-1 channels in memory instead of a Zarr work array.
    checkpoint_every : int
        Memory mode: iterations between checkpoints (a resume restarts from the last one).
    noise_sigma : float, optional
        Noise std (stack units) of the ``reduced_chi2`` map and the fit-quality attrs
        (:func:`bigxanes.pipeline.result.quality_attrs`); default ``params.noise_sigma``,
        else each spectrum's own σ̂ from its second differences.
    energy_shift : "none", "auto", float or sequence of float
        Energy shift of the references, as :func:`bigxanes.api.lcf`. With references and
        ``"auto"``, ``"none"`` (its misalignment warning) or ``baseline="pre-edge"`` (the
        window below the data's own edge) the stack is read once more before pass 1 for its
        mean spectrum (:func:`bigxanes.pipeline.prepare.align_inputs`).
    region : str or tuple of slice, optional
        ``"y0:y1,x0:x1[,z0:z1]"``: unmix only this box (``--region``).
    mask : path, "auto" or bool ndarray, optional
        Sample mask of the whole field (``--mask``); the result's ``mask`` is the material
        mask AND this one, ``fraction`` NaN outside
        (:func:`bigxanes.pipeline.prepare.spatial_selection`, as in memory).
    weights : {"none", "counts", "energy"}
        Noise weights of the data term, as :func:`bigxanes.api.lcf` (``--weights``); without a
        given I0 the stack is read once more before pass 1 for the noise model.
    i0 : array_like, optional
        I0 per stack energy for counting weights (default: the store's ``i0`` variable, else
        estimated).

    Returns
    -------
    pathlib.Path
        ``output``.
    """
    # workers of a --scheduler cluster run in their own directory: absolute paths only
    input, output = absolute(input), Path(absolute(output))
    fingerprint = input_fingerprint(input)  # before anything is read (checked at the end)
    params = _check_args(
        method, params, lcf_variant, nan_policy, state_mode, checkpoint_every, output, overwrite
    )
    check_options(method, variant=lcf_variant, nan_policy=nan_policy, weights=weights)
    loaded = load_inputs(
        input,
        method,
        references,
        energy_range,
        baseline=baseline,
        nan_policy=nan_policy,
        energy_shift=energy_shift,
        weights=weights,
        i0=i0,
    )
    ds, inputs = loaded
    check_energy_order(ds["energy"].values, f"{input}")
    check_chunks(input, "stack")  # a missing chunk would read as fill values, silently
    sel = spatial_selection(ds["stack"], region, mask)
    if sel.slices is not None:
        ds = ds.isel(dict(zip(ds["stack"].dims[1:], sel.slices, strict=True)))
    halo = params.halo if params is not None else 0
    nbytes = int(np.prod(ds["stack"].shape)) * np.dtype(ds["stack"].dtype).itemsize
    # before any computation: the output location is writable and has room (preflight.py)
    est = estimate_resources(
        input, method, references=references, params=params, _loaded=loaded, chunks=chunks
    )
    have = dir_bytes(_work_path(output)) if resume else 0
    check_output_location(output, est["output_disk_bytes"] + max(0, est["work_disk_bytes"] - have))
    lock = OutputLock(output).acquire()  # a second run on this output refuses here
    try:
        remove_stale_partials(output)
        runner = make_runner(
            nbytes,
            client=client,
            scheduler=scheduler,
            n_workers=n_workers,
            memory_limit=memory_limit,
        )
    except BaseException:
        lock.release()
        raise
    try:
        # tiles and state blocks from the workers' memory limit (refused below the minimum,
        # before any task reaches a worker too small for it)
        reg = params.reg if params is not None else "tv"
        plan = plan_for_runner(
            runner,
            ds,
            inputs,
            halo,
            reg,
            chunks,
            target_bytes=STATE_BLOCK_BYTES,
            total_threads=_n_threads(runner),
        )
        check_paths_on_workers(runner, input, output)  # before pass 1: workers see the files
    except BaseException:
        runner.close()
        lock.release()
        raise
    try:
        tiles = plan["tiles"]
        Y = _stack_dask(input, ds, inputs, tiles, sel)
        if needs_mean_spectrum(inputs):
            say(progress, "mean spectrum (energy shift, pre-edge window)")
        inputs = align_inputs(inputs, lambda: engine_mean_spectrum(Y, runner))
        run = _run_record(input, method, lcf_variant, energy_range, tiles, Y, params, inputs)
        run["selection"] = {
            **sel.attrs,
            "mask_sha1": None if sel.mask is None else hashlib.sha1(sel.mask.tobytes()).hexdigest(),
        }
        work = WorkDir(_work_path(output))
        if resume and work.matches(run):
            check_fingerprint(
                input,
                work.get(FINGERPRINT_KEY),
                "since the interrupted run",
                f"its state in {work.path} belongs to the old data: rerun without --resume "
                "to start afresh",
            )
        else:
            work.reset(run)
        work.put(FINGERPRINT_KEY, fingerprint)
        if noise_sigma is None and params is not None:
            noise_sigma = params.noise_sigma
        exe = dict(
            tiles=tiles,
            state_tiles=plan["state_tiles"],
            state_mode=state_mode,
            checkpoint_every=checkpoint_every,
            noise_sigma=noise_sigma,
            selection=sel,
        )
        ds_out = _execute(
            Y, ds, inputs, params, lcf_variant, runner, work, run, exe, progress, _fail_after
        )
        say(progress, f"writing {output}")
        write_results(
            ds_out,
            output,
            tiles=tiles,
            scheduler=runner.scheduler,
            overwrite=overwrite,
            verify=lambda: check_fingerprint(
                input, fingerprint, "during the run", "run unmix again once it is stable"
            ),
        )
        work.remove()
        return output
    finally:
        runner.close()
        lock.release()


def _chi2_counts(chi2: da.Array, mask: da.Array, runner: Any) -> np.ndarray:
    """Summed :func:`~bigxanes.kernels.quality.chi2_histogram` over the blocks of the lazy
    ``reduced_chi2`` map (the maps are computed once more by the result write)."""
    import dask

    mask = mask.rechunk(chi2.chunks)
    parts = [
        dask.delayed(chi2_histogram)(c, m)
        for c, m in zip(chi2.to_delayed().ravel(), mask.to_delayed().ravel(), strict=True)
    ]
    (total,) = runner.compute(dask.delayed(sum)(parts))
    return np.asarray(total)


def _execute(
    Y: da.Array,
    ds: Any,
    inputs: Inputs,
    params: RumParams | None,
    lcf_variant: str,
    runner: Any,
    work: WorkDir,
    run: dict[str, Any],
    exe: dict[str, Any],
    progress: bool,
    fail_after: int | None,
) -> Any:
    """Pass 1, the RUM iterations and the result Dataset (dask-backed, not yet written)."""
    method, L = inputs.method, inputs.n_components
    spatial = tuple(int(n) for n in Y.shape[1:])
    sdims = tuple(str(d) for d in ds["stack"].dims[1:])
    N = int(np.prod(spatial))
    p1 = pass1_layout(inputs, lcf_variant)
    if params is not None:  # where the ADMM state (RUM) or the pass-1 channels live
        mode_bytes = params.state_layout(L, len(spatial), p1.weighted).n_channels * N * 4
    else:  # float64 pass-1 channels + the float32 result maps being written
        mode_bytes = p1.n_channels * N * 8
    mode = choose_state_mode(exe["state_mode"], mode_bytes, runner.memory_bytes())
    extra: dict[str, Any] = {
        "input": run["input"],
        "tiles": list(exe["tiles"]),
        "engine": "dask",
        "state_mode": mode,
    }
    e0 = e50_refs = None
    if method == "edge50":
        e0 = engine_e0(Y, inputs, runner)
        extra.update(e0=e0, level=0.5)
        if L == 2:
            e50_refs = edge50_reference_energies(inputs.energy, inputs.A, e0)
            extra["edge50_references"] = [float(v) for v in e50_refs]
    in_memory = params is None and mode == "memory"
    P, rec = run_pass1(Y, inputs, p1, e0, runner, work, in_memory=in_memory, progress=progress)
    extra.update(rec.get("weights_attrs", {}))
    rum_maps = None
    if params is not None and params.lam == "sure":
        (crop,) = runner.compute(Y[(slice(None),) + sure_crop(spatial)])
        params = resolve_sure(np.asarray(crop), inputs, params, extra)
    if params is not None:
        st = exe["state_tiles"]
        it = RumIterations(
            work,
            runner,
            inputs.A,
            params,
            rec,
            spatial,
            st,
            mode=mode,
            checkpoint_every=exe["checkpoint_every"],
            fail_after=_fail_hook(fail_after),
            data_weights=p1.weighted,
        )
        rum_maps, history = it.run(P, p1, progress)
        extra.update(it.attrs(history))
    c = float(rec["scale"])

    def blocks(func: Any, arr: da.Array, n_out: int, **kw: Any) -> da.Array:
        return map_spatial_blocks(PointHook(func, "result_block"), arr, n_out, **kw)

    variables = method_variables(
        inputs,
        P,
        p1,
        c,
        sdims,
        blocks,
        rum_maps=rum_maps,
        e50_refs=e50_refs,
        noise_sigma=exe["noise_sigma"],
    )
    if "reduced_chi2" in variables:
        say(progress, "fit quality (reduced chi2 inside the mask)")
        counts = _chi2_counts(variables["reduced_chi2"][1], variables["mask"][1], runner)
        extra.update(quality_attrs(counts, exe["noise_sigma"]))
    sel: Selection = exe["selection"]
    extra.update(sel.attrs)
    attrs = result_attrs(inputs, n_bad=rec["n_bad"], scale=c, lcf_variant=lcf_variant, **extra)
    stack = ds["stack"]
    have = {d: stack[d].values for d in sdims if d in stack.coords}
    coords = result_coords(inputs, sel.coords(sdims, have), sdims)
    user_mask = None
    if sel.mask is not None:
        user_mask = da.from_array(sel.mask, chunks=exe["tiles"])
    pixel_size = stack.attrs.get("pixel_size_um", ds.attrs.get("pixel_size_um"))
    return build_dataset(
        inputs, variables, coords, attrs, user_mask=user_mask, pixel_size=pixel_size
    )
