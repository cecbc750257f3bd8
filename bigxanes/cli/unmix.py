"""``bigxanes unmix``: phase maps from a stack store (RUM-TV, RUM-PnP, LCF, Edge-50) on the
out-of-core engine; the cluster is created, checked and watched here."""

from __future__ import annotations

import argparse
import contextlib
import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from .common import (
    UserError,
    add_components,
    components_arg,
    energy_range,
    info,
    ints,
    nonnegative_int,
    open_result,
    positive_float,
    positive_int,
    prepare_output,
    warn,
)

EXAMPLES = """examples:
  bigxanes unmix stack.zarr result.zarr --method rum-tv --refs fe2.txt fe3.txt
  bigxanes unmix sim.zarr lcf.zarr --method lcf                 # references stored in sim.zarr
  bigxanes unmix stack.zarr r.zarr --method rum-tv --refs refs.csv --components NiO LiNiO2 \\
      --energy-range 8330,8400 --lam-factor 2 --iters 300
  bigxanes unmix stack.zarr r.zarr --method rum-pnp --refs a.txt b.txt --denoiser bm3d --iters 40
  bigxanes unmix big.zarr r.zarr --method rum-tv --chunks 512,512 --workers 4 --memory-limit 4GB
  bigxanes unmix big.zarr r.zarr --scheduler tcp://10.0.0.5:8786 --resume
  bigxanes unmix stack.zarr r.zarr --refs auto --n-components 3
  bigxanes unmix fe.zarr r.zarr --method lcf --refs Fe.prj --components hematite ferrihydrite \\
      --energy-shift auto                      # names as 'bigxanes info Fe.prj' prints them
  bigxanes unmix stack.zarr r.zarr --method lcf --refs a.txt b.txt --mask mask.tif \\
      --region 0:200,50:300
  bigxanes unmix stack.zarr edges.zarr --method edge50     # Edge-50 + white line, no references"""


class ClusterStopped(Exception):
    """The cluster lost all its workers during the run (raised in place of the interrupt)."""


def register(add) -> None:
    """Add the ``unmix`` subparser; choices come from the library's own tuples."""
    from ..api import LCF_VARIANTS
    from ..baseline import BASELINES
    from ..engine.cluster import DEFAULT_CONNECT_TIMEOUT, DEFAULT_WORKER_GRACE
    from ..engine.unmix import DEFAULT_CHECKPOINT_EVERY, METHODS, STATE_MODES
    from ..kernels.denoisers import DENOISERS
    from ..kernels.guide import DEFAULT_KAPPA
    from ..kernels.weights import WEIGHT_KINDS
    from ..rum import PRIORS

    s = add("unmix", "phase maps from a stack store: rum-tv, rum-pnp, lcf or edge50", EXAMPLES)
    s.add_argument("input", metavar="IN.zarr")
    s.add_argument("output", metavar="OUT.zarr")
    s.add_argument("--method", default="rum-tv", choices=METHODS)
    s.add_argument(
        "--refs",
        nargs="+",
        metavar="FILE",
        help="reference spectra files (text/CSV/XDI/Athena .nor; eV or keV); "
        "default: the references stored in IN.zarr; 'auto' = VCA extraction",
    )
    add_components(
        s,
        "use only these references, in this order",
        "with --refs auto: number of states (default: estimated)",
    )
    s.add_argument(
        "--components-count", type=positive_int, metavar="L", help=argparse.SUPPRESS
    )  # deprecated spelling of --n-components
    s.add_argument("--seed", type=int, default=0, help="seed of --refs auto")
    s.add_argument(
        "--lam",
        help="regularization weight λ, 'auto' (default: lam_factor · noise · contrast) or "
        "'sure' (RUM-TV: lam_factor chosen by Monte-Carlo SURE on a central 48-pixel subsample)",
    )
    s.add_argument("--lam-factor", type=float, help="prior strength used by --lam auto")
    s.add_argument(
        "--prior",
        choices=PRIORS,
        help="RUM-TV spatial prior: plain TV (default) or structure-guided TV whose edge "
        "weights come from the LCF scale map (fractions may jump where the sample's outline "
        "jumps)",
    )
    s.add_argument(
        "--guide-kappa",
        type=float,
        metavar="K",
        help=f"--prior guided-tv: edge scale κ of the weights (default {DEFAULT_KAPPA:g})",
    )
    s.add_argument("--iters", type=nonnegative_int, help="maximum ADMM iterations")
    s.add_argument("--tol", type=float, help="stopping tolerance (relative residuals)")
    s.add_argument("--rho", type=float, help="initial ADMM penalty")
    s.add_argument(
        "--relax",
        type=float,
        metavar="A",
        help="ADMM over-relaxation in (0, 2), 1 = plain ADMM (default 1.8 RUM-TV, 1 RUM-PnP)",
    )
    s.add_argument(
        "--change-tol",
        type=float,
        metavar="X",
        help="also stop when the maps change by less than X times the fraction noise per "
        "iteration (default 1e-3 RUM-TV; 0: off, the default of RUM-PnP)",
    )
    s.add_argument("--tv-sweeps", type=positive_int, help="Jacobi sweeps per TV step")
    s.add_argument(
        "--noise-sigma",
        type=positive_float,
        metavar="SIGMA",
        help="noise std of the stack (its units) for the fit-quality check (reduced chi2) "
        "and --lam auto; default: estimated per spectrum from its second differences",
    )
    s.add_argument("--denoiser", choices=DENOISERS, help="RUM-PnP denoiser")
    s.add_argument(
        "--backend",
        choices=("auto", "numpy", "numba"),
        help="RUM iteration kernel: the float64 NumPy reference or the fused float32 numba "
        "kernel; auto (default): numba when installed",
    )
    s.add_argument(
        "--residual-every",
        type=positive_int,
        metavar="K",
        help="RUM: compute the residuals (history, stopping test) every K iterations (default 1)",
    )
    s.add_argument("--lcf-variant", default="nnls", choices=tuple(LCF_VARIANTS))
    s.add_argument(
        "--weights",
        default="none",
        choices=WEIGHT_KINDS,
        help="data term: none (least squares, default); counts: photon-counting noise, each "
        "energy and pixel weighted by I0 exp(-OD) (the store's i0, --i0, or a dose estimated "
        "from the data); energy: one noise variance per energy, estimated from the data. "
        "LCF (nnls) and RUM",
    )
    s.add_argument(
        "--i0",
        metavar="FILE",
        help="--weights counts: incident photons per pixel at each energy (one column, or "
        "two: energy, I0), when the store does not hold the I0 it was converted with",
    )
    s.add_argument(
        "--energy-shift",
        default="none",
        metavar="none|auto|V[,V...]",
        help="energy shift of the references (eV): auto fits one per reference (within "
        "±10 eV) on the stack's mean spectrum before the per-pixel fit; V or V,V,... applies "
        "these; none (default) applies none but warns when a shift > 1 eV or a misfit 20 %% "
        "lower is found",
    )
    s.add_argument("--energy-range", metavar="EMIN,EMAX", help="analyse only these energies (eV)")
    s.add_argument(
        "--region",
        metavar="y0:y1,x0:x1[,z0:z1]",
        help="unmix only this box of the field (the result covers it)",
    )
    s.add_argument(
        "--mask",
        metavar="FILE|auto",
        help="sample mask (.tif/.npy, nonzero = sample, whole field) or auto (Otsu on the "
        "edge jump): fraction is NaN outside it",
    )
    s.add_argument("--chunks", metavar="Y,X", help="spatial chunk of the run, e.g. 256,256")
    s.add_argument(
        "--workers", type=positive_int, help="LocalCluster workers (default: machine-sized)"
    )
    s.add_argument("--memory-limit", metavar="SIZE", help="per worker, e.g. 2GB")
    s.add_argument(
        "--scheduler", metavar="ADDRESS", help="join an existing Dask cluster (tcp://host:8786)"
    )
    s.add_argument(
        "--connect-timeout",
        type=float,
        default=DEFAULT_CONNECT_TIMEOUT,
        metavar="SECONDS",
        help="wait this long for --scheduler to answer and to have a worker "
        f"(default {DEFAULT_CONNECT_TIMEOUT:g})",
    )
    s.add_argument(
        "--worker-grace",
        type=float,
        default=DEFAULT_WORKER_GRACE,
        metavar="SECONDS",
        help="stop the run (state kept for --resume) when no worker is alive this long "
        f"(default {DEFAULT_WORKER_GRACE:g})",
    )
    s.add_argument(
        "--baseline",
        default="pre-edge",
        choices=BASELINES,
        help="remove each spectrum's pre-edge mean (data and references) before "
        "fitting: measured OD carries a flat background (default pre-edge)",
    )
    s.add_argument(
        "--state-mode",
        default="auto",
        choices=STATE_MODES,
        help="RUM state between iterations: in the cluster's memory (checkpointed "
        "to Zarr) or the Zarr double buffer; auto: memory when it fits",
    )
    s.add_argument(
        "--checkpoint-every",
        type=positive_int,
        default=DEFAULT_CHECKPOINT_EVERY,
        metavar="K",
        help="memory state mode: checkpoint to Zarr every K iterations "
        f"(default {DEFAULT_CHECKPOINT_EVERY})",
    )
    s.add_argument(
        "--assume-absorbance",
        action="store_true",
        help="fit a stack labelled as transmitted counts (imported without --i0) as if it "
        "held absorbance; without it such a stack is refused",
    )
    s.add_argument("--resume", action="store_true", help="continue an interrupted run")
    s.add_argument("--overwrite", action="store_true")
    s.set_defaults(func=run)


def rum_params(args: argparse.Namespace) -> Any:
    """:class:`bigxanes.rum.RumParams` from the flags (None for LCF/Edge-50)."""
    from ..rum import RumParams

    prior = getattr(args, "prior", None)
    kappa = getattr(args, "guide_kappa", None)
    if prior not in (None, "tv") and args.method != "rum-tv":
        raise UserError(f"--prior {prior} needs --method rum-tv (got --method {args.method})")
    if kappa is not None and prior != "guided-tv":
        raise UserError("--guide-kappa applies to --prior guided-tv; add it or drop the flag")
    if kappa is not None and not (math.isfinite(kappa) and kappa > 0):
        raise UserError(f"--guide-kappa {kappa:g}: give a positive number (e.g. 0.02)")
    if args.method not in ("rum-tv", "rum-pnp"):
        return None
    kw: dict[str, Any] = {"method": args.method}
    if prior is not None:
        kw["prior"] = prior
    if kappa is not None:
        kw["guide_kappa"] = kappa
    if args.lam is not None:
        if args.lam in ("auto", "sure"):
            if args.lam == "sure" and args.method != "rum-tv":
                raise UserError(f"--lam sure needs --method rum-tv (got --method {args.method})")
            kw["lam"] = args.lam
        else:
            try:
                kw["lam"] = float(args.lam)
            except ValueError:
                raise UserError(f"--lam {args.lam!r}: give a number, 'auto' or 'sure'") from None
    for name, attr in (
        ("lam_factor", "lam_factor"),
        ("max_iter", "iters"),
        ("tol", "tol"),
        ("rho", "rho"),
        ("relax", "relax"),
        ("change_tol", "change_tol"),
        ("denoiser", "denoiser"),
        ("tv_sweeps", "tv_sweeps"),
        ("backend", "backend"),
        ("residual_every", "residual_every"),
        ("noise_sigma", "noise_sigma"),
    ):
        v = getattr(args, attr)
        if v is not None:
            kw[name] = v
    return RumParams(**kw)


def select_energies(energy: np.ndarray, erange: tuple[float, float] | None) -> np.ndarray:
    """Stack energies inside ``--energy-range`` (as the engine selects them)."""
    if erange is None:
        return energy
    sel = energy[(energy >= erange[0]) & (energy <= erange[1])]
    if sel.size < 3:
        raise UserError(
            f"--energy-range {erange[0]:.2f},{erange[1]:.2f} keeps {sel.size} of the stack's "
            f"energies ({energy[0]:.2f}-{energy[-1]:.2f} eV); widen it"
        )
    return sel


def references_for(args: argparse.Namespace, src: Any, energy_sel: np.ndarray) -> tuple:
    """References (energy, component) and their source.

    Files are read on their own energy grid (the pipeline interpolates them onto the fitted
    energies, shifted when ``--energy-shift`` asks); the store's references are on the stack's
    grid; VCA references on the selected energies. ``--components`` selects by the names as
    printed (exact, case-insensitive, unique prefix: :func:`bigxanes.references.
    select_references`).
    """
    import xarray as xr

    from ..references import read_references, select_references
    from .refs import auto_references, checked_stack, states_text

    names, count = components_arg(args, legacy_count=False)
    if not args.refs and args.method == "edge50" and "references" not in src:
        return None, "none"  # Edge-50 and white-line maps from the data alone
    if not args.refs:
        if "references" not in src:
            raise UserError(
                f"{args.input} holds no reference spectra; pass --refs FILE [FILE ...] "
                "(or --refs auto to extract them with VCA)"
            )
        ref = src["references"].load()
        if names:
            have = [str(c) for c in ref["component"].values]
            try:
                idx = select_references(have, names)
            except ValueError as exc:
                raise UserError(f"{exc} (references stored in {args.input})") from None
            ref = ref.isel(component=idx)
        ref.attrs["source"] = f"{args.input} (stored references)"
        return ref, "store"
    if [r.lower() for r in args.refs] == ["auto"]:
        st = checked_stack(args.input, src).sel(energy=energy_sel)
        ref, ns, L = auto_references(st, count, args.seed, None, args.quiet)
        if names:
            ref = ref.assign_coords(component=("component", names))
        from .common import eigen_text

        info(
            f"VCA: {L} references extracted (estimated number of states {ns.n}; "
            f"eigenvalues {eigen_text(ns.eigenvalues, 6)}; denoise {ref.attrs['denoise']})",
            args.quiet,
        )
        info(states_text(ns), args.quiet)
        ref.attrs["source"] = "VCA (--refs auto)"
        return ref, "auto"
    e_ref, A, got = read_references(args.refs, components=names, union_grid=True)
    ref = xr.DataArray(
        A,
        dims=("energy", "component"),
        coords={"energy": ("energy", e_ref, {"units": "eV"}), "component": got},
        name="references",
        attrs={"source": ", ".join(str(Path(f).resolve()) for f in args.refs)},
    )
    return ref, "files"


def _check_baseline(args: argparse.Namespace, energy: np.ndarray, ref: Any) -> None:
    """``--baseline pre-edge`` needs a pre-edge window: refuse with the flag that fixes it."""
    if args.method == "edge50" or args.baseline == "none":
        return
    from ..baseline import resolve_baseline
    from ..pipeline.prepare import reference_source

    e_ref, R, _, _ = reference_source(ref, energy)  # not validated yet: the window comes first
    A = np.stack([np.interp(energy, e_ref, R[:, j]) for j in range(R.shape[1])], axis=1)
    try:
        resolve_baseline(args.baseline, energy, A)
    except (IndexError, ValueError) as exc:
        raise UserError(
            f"--baseline {args.baseline} needs several energies below the edge, which "
            f"{energy.size} energies ({energy[0]:.2f}-{energy[-1]:.2f} eV) do not give "
            f"({exc}); pass --baseline none or a wider --energy-range"
        ) from None


def _check_energy_shift(args: argparse.Namespace, ref: Any) -> None:
    """``--energy-shift`` is none, auto or one value / one per reference (one-line error)."""
    from ..pipeline.prepare import shift_spec

    if ref is None:  # Edge-50 from the data alone: nothing to shift
        if str(args.energy_shift).lower() != "none":
            raise UserError("--energy-shift needs references (--refs); Edge-50 without them")
        return
    try:
        shift_spec(args.energy_shift, int(ref.sizes["component"]))
    except ValueError as exc:
        raise UserError(str(exc)) from None


def summary_lines(attrs: dict) -> list[str]:
    """The run's references, energy shift and pre-edge window, from the result attrs."""
    import json

    def val(k: str) -> Any:
        v = attrs.get(k)
        return json.loads(v) if isinstance(v, str) and v[:1] in "[{" else v

    names = val("reference_names") or []
    out = []
    if names:
        src = attrs.get("references_source")
        out.append(f"references: {', '.join(names)}" + (f" (from {src})" if src else ""))
        shifts = val("energy_shift")
        mode = attrs.get("energy_shift_mode", "none")
        mis = val("energy_shift_misfit")
        if shifts is not None:
            desc = ", ".join(f"{n} {s:+.2f} eV" for n, s in zip(names, shifts, strict=False))
            line = f"energy shift ({mode}): {desc}"
            if mode == "auto" and mis:
                line += f" (R-factor of the mean spectrum {mis[0]:.3g} -> {mis[1]:.3g})"
            out.append(line)
    if attrs.get("baseline_window"):
        out.append(f"baseline: {attrs['baseline_window']}")
    if attrs.get("weights") and attrs.get("weights") != "none":
        w, src = attrs["weights"], attrs.get("weights_source", "")
        what = "I0 exp(-OD) per energy and pixel" if w == "counts" else "1/variance per energy"
        dose = val("weights_i0")
        extra = f", median I0 {float(np.median(dose)):.3g}" if dose else ""
        out.append(f"weights: {w} ({what}; {src}{extra})")
    return out


@contextlib.contextmanager
def cluster_for(
    args: argparse.Namespace, nbytes: int, task_bytes: int, minimum: int | None = None
) -> Iterator[Any]:
    """The distributed client of this run (None: the engine's threaded scheduler).

    Arguments are validated first; ``--scheduler`` is reached within ``--connect-timeout``;
    a LocalCluster is started when ``--workers``/``--memory-limit`` ask for one or the stack
    is large (the engine's rule, :data:`bigxanes.engine.cluster.SMALL_INPUT_BYTES`). The client
    is closed on exit, also on Ctrl-C (its worker processes ignore SIGINT).
    """
    from ..engine.cluster import (
        SMALL_INPUT_BYTES,
        connect,
        dashboard_available,
        dashboard_link,
        start_local_cluster,
        validate_cluster_args,
    )

    validate_cluster_args(
        args.workers,
        args.memory_limit,
        task_bytes=task_bytes,
        minimum=minimum,
        connect_timeout=args.connect_timeout,
        worker_grace=args.worker_grace,
    )
    if args.scheduler in ("threads", "synchronous", "sync", "processes"):
        yield None
        return
    if args.scheduler:
        client = connect(args.scheduler, timeout=args.connect_timeout)
    elif args.workers or args.memory_limit or nbytes >= SMALL_INPUT_BYTES:
        client = start_local_cluster(args.workers, args.memory_limit)
    else:
        yield None
        return
    # without bokeh here a LocalCluster's dashboard page only says "install bokeh"
    link = dashboard_link(client) if args.scheduler or dashboard_available() else None
    if link:
        info(f"dashboard: {link}", args.quiet)
    elif args.scheduler:
        info(f"dashboard: none (the scheduler {args.scheduler} serves no dashboard)", args.quiet)
    else:
        info("dashboard: off (install bokeh to watch the cluster in a browser)", args.quiet)
    import logging

    # a Ctrl-C cancels the client's pending futures; asyncio would print each one's
    # "Task exception was never retrieved" traceback when it is garbage collected
    aio = logging.getLogger("asyncio")
    aio_level = aio.level
    aio.setLevel(logging.CRITICAL + 1)
    failed = True
    try:
        yield client
        failed = False
    finally:
        _close_quietly(client, owned_cluster=not args.scheduler, for_good=failed)
        if not failed:
            aio.setLevel(aio_level)


def _close_quietly(client: Any, owned_cluster: bool, for_good: bool = False) -> None:
    """Close the client (and the cluster this command started) without log noise.

    ``for_good`` (the run failed or was interrupted): the ``distributed`` and ``asyncio``
    loggers stay silent, as the cancelled futures' "Task exception was never retrieved"
    messages come when they are garbage collected, after this function.
    """
    import logging

    logs = [logging.getLogger(n) for n in ("distributed", "asyncio")]
    old = [lg.level for lg in logs]
    for lg in logs:
        lg.setLevel(logging.CRITICAL + 1)
    try:
        cluster = getattr(client, "cluster", None) if owned_cluster else None
        with contextlib.suppress(Exception):
            client.close()
        if cluster is not None:
            with contextlib.suppress(Exception):
                cluster.close()
    finally:
        if not for_good:
            for lg, lvl in zip(logs, old, strict=True):
                lg.setLevel(lvl)


def _check_quantity(args: argparse.Namespace, src: Any) -> None:
    """Refuse a stack labelled ``quantity="counts"`` (imported without ``--i0``): unmixing
    models absorbance ``-ln(I/I0)``, linear in the fractions; counts are not."""
    q = src["stack"].attrs.get("quantity", src.attrs.get("quantity"))
    if q == "counts" and not getattr(args, "assume_absorbance", False):
        raise UserError(
            f"{args.input} holds transmitted counts (imported without --i0): unmixing needs "
            "absorbance -ln(I/I0); re-import with `bigxanes import ... --i0 FILE` (or --i0 "
            "background:y0:y1,x0:x1; --quantity absorbance if the source already holds "
            "absorbance), or pass --assume-absorbance"
        )


def _i0_values(args: argparse.Namespace, energy: np.ndarray) -> np.ndarray | None:
    """``--i0 FILE`` read onto the stack's energies (None without it); one-line errors for a
    file that does not apply."""
    if not args.i0:
        return None
    from ..transmission import read_i0

    try:
        return read_i0(args.i0, energy, energy.size)
    except (OSError, ValueError) as e:
        raise UserError(f"--i0 {args.i0}: {e}") from None


def _resume_complete(args: argparse.Namespace) -> bool:
    from ..store import is_complete

    return bool(args.resume) and is_complete(args.output)


def run(args: argparse.Namespace) -> int:
    """Unmix on the engine and print one summary line."""
    from .. import engine
    from ..engine.cluster import validate_cluster_args
    from ..paths import absolute, stale_leftovers
    from ..store import open_stack

    # the cluster flags first, before any file is read (the memory minimum, which needs the
    # run's task size, is checked again once it is known: cluster_for)
    validate_cluster_args(
        args.workers,
        args.memory_limit,
        connect_timeout=args.connect_timeout,
        worker_grace=args.worker_grace,
    )
    if args.i0 and args.weights != "counts":
        raise UserError("--i0 sets the dose of counting weights: add --weights counts")
    if args.weights != "none" and args.method == "edge50":
        raise UserError("Edge-50 has no data term to weight: drop --weights")
    inp = Path(args.input)
    if inp.is_file():
        raise UserError(
            f"{args.input} is a file, not a Zarr stack store: unmix reads stores; convert it "
            f"first with `bigxanes import {args.input} STACK.zarr --energies FILE`"
        )
    refs_files = [f for f in (args.refs or []) if f.lower() != "auto"]
    mask_file = args.mask if args.mask and args.mask != "auto" else None
    prepare_output(
        args.output,
        [args.input, *refs_files, mask_file],
        args.overwrite,
        resume=args.resume,
        quiet=args.quiet,
    )
    if _resume_complete(args):
        info(
            f"{args.output} is already complete: nothing to resume (pass --overwrite instead of "
            "--resume to recompute it)"
        )
        return 0
    _, work = stale_leftovers(args.output)
    if work is not None and not args.resume:
        warn(
            f"{work} holds the state of an interrupted run on {args.output}; it is replaced "
            "(pass --resume instead to continue that run)"
        )
    if args.components_count is not None:
        warn(f"--components-count is deprecated: use --n-components {args.components_count}")
        if args.n_components is None:
            args.n_components = args.components_count
    # workers of a --scheduler cluster run in their own directory: absolute paths only
    in_abs, out_abs = absolute(args.input), absolute(args.output)
    src = open_stack(in_abs)
    _check_quantity(args, src)
    energy = np.asarray(src["energy"].values, dtype=np.float64)
    erange = energy_range(args.energy_range)
    energy_sel = select_energies(energy, erange)
    ref, ref_source = references_for(args, src, energy_sel)
    _check_energy_shift(args, ref)
    _check_baseline(args, energy_sel, ref)
    params = rum_params(args)
    i0 = _i0_values(args, energy)
    chunks = ints(args.chunks, "--chunks") if args.chunks else None
    full_ref = ref
    from ..engine.cluster import parse_memory_limit

    est = engine.estimate_resources(
        in_abs,
        args.method,
        references=full_ref,
        params=params,
        chunks=chunks,
        energy_range=erange,
        n_workers=args.workers,
        memory_limit=parse_memory_limit(args.memory_limit),
        weights=args.weights,
    )
    t0 = time.perf_counter()
    with cluster_for(
        args, int(est["stack_bytes"]), int(est["task_bytes"]), est["minimum_memory_limit"]
    ) as client:
        watch = None
        if client is not None:
            from ..engine.cluster import ClusterWatch

            watch = ClusterWatch(client, grace=args.worker_grace)
        try:
            with watch if watch is not None else contextlib.nullcontext():
                out = engine.unmix_store(
                    in_abs,
                    out_abs,
                    method=args.method,
                    references=full_ref,
                    params=params,
                    lcf_variant=args.lcf_variant,
                    energy_range=erange,
                    chunks=chunks,
                    client=client,
                    scheduler=args.scheduler if client is None else None,
                    resume=args.resume,
                    overwrite=args.overwrite,
                    progress=not args.quiet,
                    nan_policy="mask",
                    baseline=args.baseline,
                    state_mode=args.state_mode,
                    checkpoint_every=args.checkpoint_every,
                    noise_sigma=args.noise_sigma,
                    energy_shift=args.energy_shift,
                    region=args.region,
                    mask=args.mask,
                    weights=args.weights,
                    i0=i0,
                )
        except KeyboardInterrupt:
            if watch is not None and watch.tripped:
                raise UserError(
                    f"{watch.describe()}: the run stopped; its state is kept in "
                    f"{args.output}.work: fix the cluster and rerun with --resume"
                ) from None
            raise
    res = open_result(out)
    a = res.attrs
    nbad = int(a.get("n_nonfinite", 0) or 0)
    if nbad:
        warn(
            f"{nbad} pixel(s) of {args.input} hold NaN/Inf values: they were masked (mask = "
            "False, fraction not fitted) and not used for their neighbours"
        )
    its = a.get("n_iterations")
    info(
        f"wrote {args.output}: {a.get('method', args.method)} (engine)"
        + (f", {its} iterations" if its else "")
        + f", {int(res['mask'].sum())} of {int(res['mask'].size)} pixels in mask, "
        f"{time.perf_counter() - t0:.1f} s",
        args.quiet,
    )
    for line in summary_lines(dict(a)):
        info(line, args.quiet)
    report_verdict(a, args.quiet)
    return 0


#: What to try when RUM does not converge (the warning names the flags).
NOT_CONVERGED_HINT = (
    "the maps may hold artefacts; try more --iters, a larger --rho, --energy-shift auto "
    "(references misaligned in energy with the data), or check the references "
    "(bigxanes rank, bigxanes plot)"
)


def report_verdict(a: Any, quiet: bool = False) -> None:
    """Print the run's verdict and fit quality (stdout), and one warning line for each of a
    run that did not converge and a model that does not explain the data (stderr)."""
    if a.get("verdict"):
        info(f"verdict: {a['verdict']}", quiet)
    if a.get("chi2_median") is not None:
        ok = bool(a.get("fit_ok"))
        info(
            f"fit: {'ok' if ok else 'POOR'}, reduced chi2 median {float(a['chi2_median']):.3g}, "
            f"90th percentile {float(a['chi2_p90']):.3g} (1 = noise level; noise "
            f"{'from the data' if a.get('chi2_noise') == 'data' else '--noise-sigma'})",
            quiet,
        )
    if a.get("converged") is not None and not bool(a["converged"]):
        warn(
            f"{a.get('method', 'RUM')} did not converge ({a.get('verdict')}): {NOT_CONVERGED_HINT}"
        )
    if a.get("fit_ok") is not None and not bool(a["fit_ok"]):
        warn(str(a.get("fit_verdict", "")).removeprefix("POOR fit: "))
