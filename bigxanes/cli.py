"""The ``bigxanes`` command line: simulate, import, unmix, refs, plot, info, bench, demo.

Every subcommand is a thin layer over the library (:mod:`bigxanes.importers`,
:mod:`bigxanes.references`, :mod:`bigxanes.engine`, :mod:`bigxanes.plot`, ...). A user mistake
(``ValueError``, ``FileNotFoundError``, ``FileExistsError``, ``KeyError`` ...) is printed as ONE
line ``bigxanes: error: <message>`` on stderr with exit code 2; ``--debug`` shows the traceback.
See docs/cli.md for the reference and the "bad input -> what the user sees" table.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import time
import traceback
import warnings
from collections.abc import Sequence
from dataclasses import fields
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["main", "build_parser", "engine_available"]

PROG = "bigxanes"
USER_ERRORS = (
    ValueError,
    FileNotFoundError,
    FileExistsError,
    KeyError,
    NotADirectoryError,
    IsADirectoryError,
    PermissionError,
)
METHODS = ("lcf", "edge50", "rum-tv", "rum-pnp")


class UserError(ValueError):
    """A mistake in the command line (reported like any ValueError)."""


# ---------------------------------------------------------------------------------------------
# small helpers


def engine_available() -> bool:
    """True when :mod:`bigxanes.engine` (the out-of-core Dask engine) is installed."""
    try:
        return find_spec("bigxanes.engine") is not None
    except (ImportError, ValueError):
        return False


def _err(msg: str) -> None:
    print(f"{PROG}: error: {' '.join(str(msg).split())}", file=sys.stderr)


def _warn(msg: str) -> None:
    print(f"{PROG}: warning: {' '.join(str(msg).split())}", file=sys.stderr)


def _info(msg: str = "", quiet: bool = False) -> None:
    if not quiet:
        print(msg, flush=True)


def _ints(text: str, what: str, n: int | None = None) -> tuple[int, ...]:
    try:
        vals = tuple(int(v) for v in str(text).replace("x", ",").split(",") if v.strip())
    except ValueError:
        raise UserError(f"cannot read {what} {text!r}: give integers separated by commas") from None
    if not vals or (n is not None and len(vals) != n):
        raise UserError(
            f"cannot read {what} {text!r}: expected "
            f"{n if n else 'one or more'} integers separated by commas"
        )
    return vals


def _energy_range(text: str | None) -> tuple[float, float] | None:
    if text is None:
        return None
    try:
        lo, hi = (float(v) for v in text.split(","))
    except ValueError:
        raise UserError(
            f"cannot read --energy-range {text!r}: write EMIN,EMAX in eV (e.g. 8330,8400)"
        ) from None
    if not lo < hi:
        raise UserError(f"--energy-range {text!r}: EMIN must be smaller than EMAX")
    from .energy import as_ev

    lo_ev, hi_ev = (float(v) for v in as_ev(np.array([lo, hi])))
    return lo_ev, hi_ev


def _check_out(path: str | os.PathLike, overwrite: bool) -> None:
    if Path(path).exists() and not overwrite:
        raise FileExistsError(f"output {path} already exists; pass --overwrite to replace it")


@contextlib.contextmanager
def _dask_progress(enabled: bool, desc: str):
    """tqdm progress bar for dask computations on the local schedulers."""
    if not enabled:
        yield
        return
    try:
        from tqdm.dask import TqdmCallback
    except ImportError:  # pragma: no cover
        yield
        return
    with TqdmCallback(desc=desc, leave=False, file=sys.stderr):
        yield


def _atomic_write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _fmt_bytes(n: float | None) -> str:
    if n is None:
        return "?"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} TiB"  # pragma: no cover


def _open_result(path: str | os.PathLike):
    import xarray as xr

    from .store import is_complete

    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{p} does not exist; check the path")
    if not is_complete(p):
        raise ValueError(
            f"{p} is incomplete (an interrupted run?); re-run the command that made "
            "it (bigxanes unmix ... --resume continues an interrupted run)"
        )
    return xr.open_zarr(p, consolidated=False, zarr_format=3, chunks={})


# ---------------------------------------------------------------------------------------------
# simulate


def cmd_simulate(args: argparse.Namespace) -> int:
    from .phantoms import PHANTOMS
    from .simulate import simulate
    from .store import write_dataset

    _check_out(args.output, args.overwrite)
    shape = _ints(args.shape, "--shape")
    if len(shape) not in (2, 3):
        raise UserError(f"--shape {args.shape!r}: give 2 (y,x) or 3 (z,y,x) sizes")
    if args.phantom not in PHANTOMS:
        raise UserError(f"unknown phantom {args.phantom!r}; choose one of {', '.join(PHANTOMS)}")
    ds = simulate(
        args.phantom,
        shape=shape,
        n_components=args.components,
        sigma=args.noise,
        poisson=args.poisson,
        seed=args.seed,
    )
    write_dataset(ds, args.output, overwrite=args.overwrite)
    st = ds["stack"]
    _info(
        f"wrote {args.output}: stack {tuple(st.shape)} ({st.dims[0]}, {', '.join(st.dims[1:])}),"
        f" {ds.sizes['component']} references, truth (true_fraction, true_scale); "
        f"energies {float(ds.energy[0]):.1f}-{float(ds.energy[-1]):.1f} eV",
        args.quiet,
    )
    return 0


# ---------------------------------------------------------------------------------------------
# import


def cmd_import(args: argparse.Namespace) -> int:
    from .importers import import_stack
    from .store import stack_info

    _check_out(args.output, args.overwrite)
    tile = _ints(args.tile, "--tile") if args.tile else None
    if tile is not None and len(tile) == 1:
        tile = tile[0]
    with _dask_progress(not args.quiet, "import"):
        out = import_stack(
            args.input,
            args.output,
            energies=args.energies,
            dataset=args.dataset,
            i0=args.i0,
            quantity=args.quantity,
            overwrite=args.overwrite,
            tile=tile,
            normalize=args.normalize,
        )
    info = stack_info(out)
    _info(
        f"wrote {out}: stack {info['shape']} chunks {info['chunks']}, {info['n_energies']} "
        f"energies {info['energy_min']:.2f}-{info['energy_max']:.2f} eV, "
        f"{info['quantity']}, {_fmt_bytes(info['nbytes_disk'])} on disk",
        args.quiet,
    )
    return 0


# ---------------------------------------------------------------------------------------------
# references


def _foreground(stack_da) -> np.ndarray:
    """Pixels holding material: total absorbance above 10 % of its 99th percentile."""
    tot = stack_da.sum("energy", skipna=False)
    tot = np.asarray(tot.values, dtype=np.float64)
    finite = np.isfinite(tot)
    if not finite.any():
        raise ValueError("every pixel of the stack has NaN/Inf values")
    hi = np.percentile(tot[finite], 99)
    m = finite & (tot > 0.1 * hi)
    if m.sum() < 10:
        m = finite
    return m


#: ``--denoise`` methods of ``bigxanes refs`` (``bigxanes.extract.extract_references``).
DENOISE_CHOICES = ("gaussian", "tv", "none", "auto")


def _auto_references(stack_da, n: int | None, seed: int, denoise: str | None, quiet: bool):
    """VCA references (energy, component) of a stack; ``n`` None = estimated number of states.

    ``denoise`` None = the default of :func:`bigxanes.extract.extract_references`; otherwise one
    of ``DENOISE_CHOICES``. The denoising applied is in ``ref.attrs["denoise"]``.
    """
    from .extract import extract_references
    from .nstates import estimate_n_states

    with _dask_progress(not quiet, "foreground"):
        mask = _foreground(stack_da)
    with _dask_progress(not quiet, "number of states"):
        ns = estimate_n_states(stack_da.data, mask=mask)
    L = int(n) if n else max(int(ns.n), 2)
    with _dask_progress(not quiet, "VCA"):
        kw = {} if denoise is None else {"denoise": None if denoise == "none" else denoise}
        ex = extract_references(stack_da.data, L, mask=mask, seed=seed, **kw)
    ref = ex.vca.to_dataarray(np.asarray(stack_da["energy"].values, dtype=np.float64))
    ref = ref.copy(data=ex.references)
    applied = ex.denoise or "none"
    if ex.denoise_choice is not None:
        applied = f"auto: {applied}"
    ref.attrs.update(
        method="vca+refine", edge_step_scaled=1, refine_rounds=len(ex.history), denoise=applied
    )
    return ref, ns, L


def _eigen_text(ev: np.ndarray, k: int = 10) -> str:
    return ", ".join(f"{v:.3g}" for v in np.asarray(ev)[:k])


def cmd_refs(args: argparse.Namespace) -> int:
    from .store import open_stack

    out = Path(args.output)
    _check_out(out, args.overwrite)
    src = open_stack(args.input)
    st = src["stack"]
    if args.energy_range:
        lo, hi = _energy_range(args.energy_range)
        st = st.sel(energy=slice(lo, hi))
    ref, ns, L = _auto_references(st, args.components, args.seed, args.denoise, args.quiet)
    e = np.asarray(ref["energy"].values)
    names = [str(c) for c in ref["component"].values]
    lines = [
        f"# bigxanes refs: VCA references of {args.input} (seed {args.seed}, "
        f"denoise {ref.attrs['denoise']})",
        f"# n_states_estimate ({ns.method}): {ns.n}",
        "# eigenvalues: " + " ".join(f"{v:.6g}" for v in ns.eigenvalues),
        ",".join(["energy"] + names),
    ]
    A = np.asarray(ref.values)
    lines += [",".join([f"{e[i]:.6f}"] + [f"{v:.8g}" for v in A[i]]) for i in range(e.size)]
    _atomic_write_text(out, "\n".join(lines) + "\n")
    _info(f"estimated number of states ({ns.method}): {ns.n}", args.quiet)
    _info(f"eigenvalues: {_eigen_text(ns.eigenvalues)}", args.quiet)
    _info(
        f"wrote {out}: {L} VCA references ({', '.join(names)}) on {e.size} energies "
        f"(denoise {ref.attrs['denoise']})",
        args.quiet,
    )
    return 0


def _read_refs_csv_eigen(path: Path) -> tuple[np.ndarray | None, int | None]:
    ev, n = None, None
    with open(path, encoding="utf-8", errors="replace") as fh:
        for line in fh:
            if not line.startswith("#"):
                if line.strip() and not line.lstrip()[0].isalpha():
                    break
                continue
            body = line.lstrip("# ").strip()
            if body.startswith("eigenvalues:"):
                ev = np.array([float(v) for v in body.split(":", 1)[1].split()])
            elif body.startswith("n_states_estimate"):
                with contextlib.suppress(ValueError):
                    n = int(body.rsplit(":", 1)[1])
    return ev, n


# ---------------------------------------------------------------------------------------------
# unmix


def _rum_params(args: argparse.Namespace):
    from .rum import RumParams

    if args.method not in ("rum-tv", "rum-pnp"):
        return None
    kw: dict[str, Any] = {"method": args.method}
    if args.lam is not None:
        kw["lam"] = args.lam if args.lam == "auto" else float(args.lam)
    for name, attr in (
        ("lam_factor", "lam_factor"),
        ("max_iter", "iters"),
        ("tol", "tol"),
        ("rho", "rho"),
        ("denoiser", "denoiser"),
        ("tv_sweeps", "tv_sweeps"),
    ):
        v = getattr(args, attr)
        if v is not None:
            kw[name] = v
    return RumParams(**kw)


def _select_energies(energy: np.ndarray, erange: tuple[float, float] | None) -> np.ndarray:
    if erange is None:
        return energy
    sel = energy[(energy >= erange[0]) & (energy <= erange[1])]  # as the engine selects
    if sel.size < 3:
        raise UserError(
            f"--energy-range {erange[0]:.2f},{erange[1]:.2f} keeps {sel.size} of the stack's "
            f"energies ({energy[0]:.2f}-{energy[-1]:.2f} eV); widen it"
        )
    return sel


def _on_full_grid(ref, energy: np.ndarray):
    """References read on the energy window, extended to all stack energies.

    The engine takes references on the stack's full energy axis and applies ``energy_range``
    to both; energies outside the window are never used, so they hold the edge values.
    """
    import xarray as xr

    e_sel = np.asarray(ref["energy"].values, dtype=np.float64)
    if e_sel.size == energy.size:
        return ref
    A = np.asarray(ref.transpose("energy", "component").values, dtype=np.float64)
    full = np.stack([np.interp(energy, e_sel, A[:, j]) for j in range(A.shape[1])], axis=1)
    return xr.DataArray(
        full,
        dims=("energy", "component"),
        coords={
            "energy": ("energy", energy, {"units": "eV"}),
            "component": ref["component"].values,
        },
        name="references",
    )


def _references_for(args, src, energy_sel: np.ndarray):
    """References (energy, component) on the selected stack energies, and a description."""
    import xarray as xr

    from .references import read_references

    if not args.refs:
        if "references" not in src:
            raise UserError(
                f"{args.input} holds no reference spectra; pass --refs FILE [FILE ...] "
                "(or --refs auto to extract them with VCA)"
            )
        ref = src["references"].load()
        if args.components:
            have = [str(c) for c in ref["component"].values]
            missing = [c for c in args.components if c not in have]
            if missing:
                raise UserError(f"components {missing} not in {args.input}; available: {have}")
            ref = ref.sel(component=list(args.components))
        ref = ref.sel(energy=energy_sel)
        return ref, "store", None
    if [r.lower() for r in args.refs] == ["auto"]:
        st = src["stack"].sel(energy=energy_sel)
        ref, ns, L = _auto_references(st, args.components_count, args.seed, None, args.quiet)
        _info(
            f"VCA: {L} references extracted (estimated number of states {ns.n}; "
            f"eigenvalues {_eigen_text(ns.eigenvalues, 6)}; denoise {ref.attrs['denoise']})",
            args.quiet,
        )
        return ref, "auto", ns
    _, A, names = read_references(args.refs, energy=energy_sel, components=args.components)
    ref = xr.DataArray(
        A,
        dims=("energy", "component"),
        coords={"energy": ("energy", energy_sel, {"units": "eV"}), "component": names},
        name="references",
    )
    return ref, "files", None


def cmd_unmix(args: argparse.Namespace) -> int:
    from .store import open_stack

    if not args.resume:
        _check_out(args.output, args.overwrite)
    if args.method not in METHODS:
        raise UserError(f"unknown method {args.method!r}; choose one of {', '.join(METHODS)}")
    src = open_stack(args.input)
    energy = np.asarray(src["energy"].values, dtype=np.float64)
    erange = _energy_range(args.energy_range)
    energy_sel = _select_energies(energy, erange)
    ref, ref_source, _ = _references_for(args, src, energy_sel)
    params = _rum_params(args)
    chunks = _ints(args.chunks, "--chunks") if args.chunks else None
    t0 = time.perf_counter()
    provenance = {
        "input": str(Path(args.input).resolve()),
        "references_source": ref_source,
        "references_files": json.dumps([str(Path(f).resolve()) for f in args.refs])
        if ref_source == "files"
        else "[]",
        "command": " ".join(["bigxanes", "unmix"] + list(args._argv)),
    }
    if engine_available():
        from . import engine

        out = engine.unmix_store(
            args.input,
            args.output,
            method=args.method,
            references=_on_full_grid(ref, energy),
            params=params,
            lcf_variant=args.lcf_variant,
            energy_range=erange,
            chunks=chunks,
            scheduler=args.scheduler,
            n_workers=args.workers,
            memory_limit=args.memory_limit,
            resume=args.resume,
            overwrite=args.overwrite,
            progress=not args.quiet,
            nan_policy="mask",
            baseline=args.baseline,
            state_mode=args.state_mode,
            checkpoint_every=args.checkpoint_every,
        )
        out = Path(out)
        mode = "engine"
    else:  # in-memory fallback while bigxanes.engine is not installed
        from . import api
        from .store import write_dataset

        if args.scheduler or args.workers:
            _warn(
                "bigxanes.engine is not installed: running in memory, ignoring "
                "--scheduler/--workers"
            )
        stack = src["stack"].sel(energy=energy_sel)
        with _dask_progress(not args.quiet, "read stack"):
            stack = stack.load()
        kw: dict[str, Any] = {}
        if args.method == "lcf":
            kw["variant"] = args.lcf_variant
        elif params is not None:
            kw = {f.name: getattr(params, f.name) for f in fields(params) if f.name != "method"}
        if args.method != "edge50":
            kw["baseline"] = args.baseline
        res = api.unmix(stack, ref, method=args.method, nan_policy="mask", **kw)
        res.attrs.update(provenance)  # references: as fitted, like the engine's results
        out = write_dataset(res, args.output, overwrite=args.overwrite or args.resume)
        mode = "in memory"
    # the engine records input, references and energy_range itself; a finished store is never
    # modified afterwards
    res = _open_result(out)
    a = res.attrs
    nbad = int(a.get("n_nonfinite", 0) or 0)
    if nbad:
        _warn(
            f"{nbad} pixel(s) of {args.input} hold NaN/Inf values: they were masked (mask = "
            "False, fraction not fitted) and not used for their neighbours"
        )
    its = a.get("n_iterations")
    _info(
        f"wrote {out}: {a.get('method', args.method)} ({mode})"
        + (f", {its} iterations" if its else "")
        + f", {int(res['mask'].sum())} of {int(res['mask'].size)} pixels in mask, "
        f"{time.perf_counter() - t0:.1f} s",
        args.quiet,
    )
    return 0


# ---------------------------------------------------------------------------------------------
# plot


def _parse_pixels(items: Sequence[str] | None) -> list[tuple[int, int]] | None:
    if not items:
        return None
    return [tuple(_ints(p, "--pixels", 2)) for p in items]  # type: ignore[misc]


def cmd_plot(args: argparse.Namespace) -> int:
    from .plot import plot_references, plot_result
    from .store import open_stack

    src = Path(args.result)
    if not src.exists():
        raise FileNotFoundError(f"{src} does not exist; check the path")
    pixels = _parse_pixels(args.pixels)
    if src.is_file():  # a references table (e.g. from `bigxanes refs`)
        from .references import read_references

        e, A, names = read_references([src])
        ev, n = _read_refs_csv_eigen(src)
        out = plot_references(e, A, names, args.output, eigenvalues=ev, n_states=n)
        _info(f"wrote {out}", args.quiet)
        return 0
    res = _open_result(src)
    if "fraction" not in res:
        if "stack" in res:
            raise UserError(
                f"{src} is a stack store, not a result; run `bigxanes unmix "
                f"{src} OUT.zarr ...` first and plot OUT.zarr"
            )
        raise UserError(f"{src} has no 'fraction' variable; plot the output of `bigxanes unmix`")
    stack_path = args.stack or res.attrs.get("input")
    stack = refs = None
    if stack_path:
        if args.stack is None and not Path(str(stack_path)).exists():
            _warn(f"the unmixed stack {stack_path} is gone: no pixel spectra (pass --stack)")
        else:
            sds = open_stack(stack_path)
            stack = sds["stack"]
            refs = _result_references(res, sds, stack)
    out = plot_result(
        res, args.output, stack=stack, references=refs, pixels=pixels, slice_index=args.slice
    )
    _info(f"wrote {out}", args.quiet)
    return 0


def _result_references(res, sds, stack):
    """References on the stack energies used by the run, from the result or its provenance."""
    import xarray as xr

    if "references" in res:
        r = res["references"]
        if "ref_energy" in r.dims:
            e = np.asarray(r["ref_energy"].values) if "ref_energy" in r.coords else None
            r = r.rename(ref_energy="energy")
            if e is None:
                n = r.sizes["energy"]
                e_all = np.asarray(stack["energy"].values)
                lo, hi = res.attrs.get("energy_min"), res.attrs.get("energy_max")
                if lo is not None and hi is not None:
                    e = e_all[(e_all >= float(lo) - 1e-6) & (e_all <= float(hi) + 1e-6)]
                if e is None or e.size != n:
                    e = e_all[:n]
            r = r.assign_coords(energy=e)
        return r.load()
    source = res.attrs.get("references_source")
    if source == "store" and "references" in sds:
        return sds["references"].load()
    files = json.loads(res.attrs.get("references_files", "[]") or "[]")
    if files and all(Path(f).exists() for f in files):
        from .references import read_references

        e_all = np.asarray(stack["energy"].values)
        lo, hi = res.attrs.get("energy_min", e_all[0]), res.attrs.get("energy_max", e_all[-1])
        e = e_all[(e_all >= float(lo) - 1e-6) & (e_all <= float(hi) + 1e-6)]
        comps = [str(c) for c in res["component"].values] if "component" in res.coords else None
        _, A, names = read_references(files, energy=e, components=comps)
        return xr.DataArray(
            A, dims=("energy", "component"), coords={"energy": e, "component": names}
        )
    return None


# ---------------------------------------------------------------------------------------------
# info


def cmd_info(args: argparse.Namespace) -> int:
    import zarr

    from .store import is_complete, stack_info

    p = Path(args.path)
    if not p.exists():
        raise FileNotFoundError(f"{p} does not exist; check the path")
    if p.is_file():
        if p.suffix.lower() in (".csv", ".txt", ".dat", ".xdi", ".nor"):
            from .references import read_references

            e, A, names = read_references([p])
            print(
                f"{p}: references table, {A.shape[1]} reference(s) {names}, {e.size} energies "
                f"{e[0]:.2f}-{e[-1]:.2f} eV"
            )
            ev, n = _read_refs_csv_eigen(p)
            if ev is not None:
                print(f"estimated number of states: {n}; eigenvalues: {_eigen_text(ev)}")
            return 0
        raise UserError(
            f"{p} is not a Zarr store; `bigxanes info` reads stores and reference "
            f"tables: import it first (bigxanes import {p} OUT.zarr --energies FILE)"
        )
    complete = is_complete(p)
    try:
        g = zarr.open_group(str(p), mode="r")
    except Exception:
        raise UserError(f"{p} is not a Zarr store") from None
    arrays = {k: v for k, v in g.arrays()}
    print(f"path: {p}")
    print(f"complete: {'yes' if complete else 'NO (interrupted write or run in progress)'}")
    if not complete:
        raise UserError(
            f"{p} is incomplete (an interrupted write, or a run still in progress): "
            "its data are not valid; re-run the command that made it (bigxanes "
            "unmix ... --resume continues an interrupted run)"
        )
    if "stack" in arrays and complete:
        info = stack_info(p)
        print(f"kind: stack store ({info['quantity']})")
        print(f"shape: {info['shape']} dims {info['dims']}")
        print(f"chunks: {info['chunks']}  dtype: {info['dtype']}")
        print(
            f"energies: {info['n_energies']}, {info['energy_min']:.3f}-{info['energy_max']:.3f} eV"
        )
        print(
            f"size: {_fmt_bytes(info['nbytes_memory'])} in memory, "
            f"{_fmt_bytes(info['nbytes_disk'])} on disk"
        )
        print(f"variables: {', '.join(info['variables'])}")
        if info["components"]:
            print(f"references: {', '.join(info['components'])}")
        if engine_available():
            from . import engine

            for method in ("lcf", "rum-tv"):
                try:
                    est = engine.estimate_resources(str(p), method)
                except Exception as exc:  # noqa: BLE001
                    print(f"resources ({method}): unavailable ({exc})")
                    continue
                print(
                    f"resources ({method}): "
                    + ", ".join(
                        f"{k}={_fmt_bytes(v) if 'bytes' in k else v}" for k, v in est.items()
                    )
                )
        else:
            T = info["n_energies"]
            nvox = int(np.prod(info["shape"][1:]))
            print(
                "resources (rough, engine not installed): in-memory run needs about "
                f"{_fmt_bytes(nvox * T * 8 * 3)}; result on disk about "
                f"{_fmt_bytes(nvox * 4 * 6)}"
            )
        return 0
    if "fraction" in arrays:
        a = dict(g.attrs)
        fr = arrays["fraction"]
        print("kind: result")
        print(f"method: {a.get('method')}  version: {a.get('version')}")
        print(f"fraction: shape {tuple(fr.shape)} chunks {tuple(fr.chunks)}")
        its = a.get("n_iterations")
        print(f"iterations: {its if its is not None else '-'}")
        hist = a.get("history")
        if isinstance(hist, str):
            with contextlib.suppress(json.JSONDecodeError):
                h = json.loads(hist)
                if h.get("primal"):
                    print(
                        f"final residuals: primal {h['primal'][-1]:.3g}, "
                        f"dual {h.get('dual', [float('nan')])[-1]:.3g}"
                    )
        for k in ("input", "references_source", "energy_range", "lam", "n_nonfinite"):
            if k in a:
                print(f"{k}: {a[k]}")
        if "params" in a:
            print(f"params: {a['params']}")
        return 0
    print(f"arrays: {', '.join(sorted(arrays)) or '(none)'}")
    return 0


# ---------------------------------------------------------------------------------------------
# bench and demo


def _fg_psnr(frac, truth, true_scale) -> float:
    from .metrics import foreground_mask, psnr_foreground

    return psnr_foreground(np.asarray(frac), np.asarray(truth), foreground_mask(true_scale))


def cmd_bench(args: argparse.Namespace) -> int:
    import xarray as xr
    from tqdm import tqdm

    from . import api
    from .simulate import simulate
    from .store import write_dataset

    size = _ints(args.size, "--size")
    shape = size * 2 if len(size) == 1 else size
    ds = simulate("particles", shape=shape, n_components=2, sigma=7, seed=0)
    truth, ts = ds["true_fraction"].values, ds["true_scale"].values
    rows = []
    runs = [("lcf", "memory"), ("rum-tv", "memory")]
    if engine_available():
        runs += [("lcf", "engine"), ("rum-tv", "engine")]
    with tempfile.TemporaryDirectory(prefix="bigxanes-bench-") as tmp:
        store = Path(tmp) / "stack.zarr"
        write_dataset(ds, store)
        mem: dict[str, np.ndarray] = {}
        for method, path in tqdm(runs, desc="bench", disable=args.quiet, file=sys.stderr):
            kw = {"max_iter": args.iters} if method == "rum-tv" else {}
            t0 = time.perf_counter()
            if path == "memory":
                r = api.unmix(ds["stack"], ds["references"], method=method, **kw)
                frac = r["fraction"].values
                mem[method] = frac
            else:
                from . import engine
                from .rum import RumParams

                out = Path(tmp) / f"{method}.zarr"
                engine.unmix_store(
                    store,
                    out,
                    method=method,
                    params=RumParams(method=method, **kw) if kw else None,
                    n_workers=args.workers,
                    progress=False,
                )
                frac = xr.open_zarr(out, consolidated=False)["fraction"].values
            dt = time.perf_counter() - t0
            diff = (
                float(np.nanmax(np.abs(frac - mem[method])))
                if path == "engine" and method in mem
                else float("nan")
            )
            rows.append((method, path, dt, _fg_psnr(frac, truth, ts), diff))
    print(
        f"benchmark: particles {shape}, {ds.sizes['energy']} energies, 2 states, "
        f"RUM-TV {args.iters} iterations"
    )
    print(
        f"{'method':<8} {'path':<7} {'seconds':>8} {'PSNR fg (dB)':>13} {'max |engine-memory|':>20}"
    )
    for m, pth, dt, ps, d in rows:
        print(f"{m:<8} {pth:<7} {dt:8.2f} {ps:13.2f} {d:20.2e}")
    if not engine_available():
        print("(bigxanes.engine not installed: engine rows skipped)")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    import xarray as xr

    from . import api
    from .metrics import foreground_mask, psnr_foreground
    from .plot import plot_result
    from .simulate import simulate
    from .store import open_stack, write_dataset

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    size = _ints(args.size, "--size")
    shape = size * 2 if len(size) == 1 else size
    stack_path, result_path, png = out / "stack.zarr", out / "rum-tv.zarr", out / "rum-tv.png"
    t0 = time.perf_counter()
    _info(
        f"1/4 simulate a particles stack {shape}, 2 states, noise sigma 7 -> {stack_path}",
        args.quiet,
    )
    ds = simulate("particles", shape=shape, n_components=2, sigma=7, seed=0)
    write_dataset(ds, stack_path, overwrite=True)
    _info("2/4 LCF (in memory)", args.quiet)
    r_lcf = api.unmix(ds["stack"], ds["references"], method="lcf")
    if engine_available():
        from . import engine

        _info(f"3/4 RUM-TV on a Dask LocalCluster via the engine -> {result_path}", args.quiet)
        # memory_limit="auto" asks the engine for a LocalCluster even for a small stack
        from .rum import RumParams

        params = RumParams(method="rum-tv", max_iter=args.iters) if args.iters else None
        engine.unmix_store(
            stack_path,
            result_path,
            method="rum-tv",
            params=params,
            n_workers=args.workers,
            memory_limit="auto",
            overwrite=True,
            progress=not args.quiet,
        )
    else:
        _info(f"3/4 RUM-TV in memory (bigxanes.engine not installed) -> {result_path}", args.quiet)
        kw = {"max_iter": args.iters} if args.iters else {}
        r = api.unmix(ds["stack"], ds["references"], method="rum-tv", nan_policy="mask", **kw)
        r.attrs["input"] = str(stack_path.resolve())
        write_dataset(r, result_path, overwrite=True)
    res = xr.open_zarr(result_path, consolidated=False)
    _info(f"4/4 plot -> {png}", args.quiet)
    sds = open_stack(stack_path)
    plot_result(res, png, stack=sds["stack"], references=sds["references"].load())
    fg = foreground_mask(ds["true_scale"].values)
    truth = ds["true_fraction"].values
    p_lcf = psnr_foreground(r_lcf["fraction"].values, truth, fg)
    p_rum = psnr_foreground(res["fraction"].values, truth, fg)
    print("foreground PSNR vs truth (dB, higher is better):")
    print(f"  LCF     {p_lcf:6.2f}")
    its = res.attrs.get("n_iterations", "?")
    print(f"  RUM-TV  {p_rum:6.2f}   ({its} iterations)")
    print(
        f"outputs in {out}/ ({time.perf_counter() - t0:.0f} s): stack.zarr, rum-tv.zarr, rum-tv.png"
    )
    return 0


# ---------------------------------------------------------------------------------------------
# parser


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, exit code 2 (argparse's convention)
        sub = self.prog.split()[-1]
        hint = f"see '{self.prog} --help'" if sub != PROG else f"see '{PROG} --help'"
        print(f"{PROG}: error: {message} ({hint})", file=sys.stderr)
        raise SystemExit(2)


_FMT = argparse.RawDescriptionHelpFormatter

EXAMPLES = {
    "simulate": """examples:
  bigxanes simulate sim.zarr --phantom particles --shape 128,128 --components 2 --noise 7 --seed 0
  bigxanes simulate vol.zarr --shape 64,64,64 --components 3 --noise 5
  bigxanes simulate low.zarr --poisson 1000 --overwrite""",
    "import": """examples:
  bigxanes import stack.tif stack.zarr --energies energies.txt
  bigxanes import scan.h5 stack.zarr                      # FXI layout: /img_xanes, /X_eng (keV ok)
  bigxanes import scan.h5 stack.zarr --dataset /exchange/data --energies e.txt
  bigxanes import counts.tif od.zarr --energies e.txt --i0 i0.txt
  bigxanes import counts.tif od.zarr --energies e.txt --i0 background:0:20,0:20""",
    "unmix": """examples:
  bigxanes unmix stack.zarr result.zarr --method rum-tv --refs fe2.txt fe3.txt
  bigxanes unmix sim.zarr lcf.zarr --method lcf                 # references stored in sim.zarr
  bigxanes unmix stack.zarr r.zarr --method rum-tv --refs refs.csv --components NiO LiNiO2 \\
      --energy-range 8330,8400 --lam-factor 2 --iters 300
  bigxanes unmix stack.zarr r.zarr --method rum-pnp --refs a.txt b.txt --denoiser bm3d --iters 40
  bigxanes unmix big.zarr r.zarr --method rum-tv --chunks 512,512 --workers 4 --memory-limit 4GB
  bigxanes unmix big.zarr r.zarr --scheduler tcp://10.0.0.5:8786 --resume
  bigxanes unmix stack.zarr r.zarr --refs auto --components-count 3""",
    "refs": """examples:
  bigxanes refs stack.zarr refs.csv                 # number of states estimated (HySime)
  bigxanes refs stack.zarr refs.csv --components 3 --denoise none --seed 0
  bigxanes unmix stack.zarr r.zarr --refs refs.csv  # then unmix with them""",
    "plot": """examples:
  bigxanes plot result.zarr result.png
  bigxanes plot result.zarr result.png --stack stack.zarr --pixels 40,52 60,60
  bigxanes plot vol_result.zarr slice.png --slice 10
  bigxanes plot refs.csv refs.png                   # references and eigenvalue curve""",
    "info": """examples:
  bigxanes info stack.zarr     # shape, chunks, energies, size, resources a run needs
  bigxanes info result.zarr    # method, iterations, completeness
  bigxanes info refs.csv""",
    "bench": """examples:
  bigxanes bench
  bigxanes bench --size 512 --iters 50 --workers 2""",
    "demo": """examples:
  bigxanes demo
  bigxanes demo --out /tmp/demo --size 96""",
}


def build_parser() -> argparse.ArgumentParser:
    """The argparse parser of the ``bigxanes`` command."""
    p = _Parser(
        prog=PROG,
        formatter_class=_FMT,
        description="Chemical phase maps from TXM-XANES stacks (robust unmixing RUM-TV/RUM-PnP, "
        "LCF, Edge-50), in memory or out-of-core on Dask/Zarr.",
        epilog="""first steps:
  bigxanes demo                                    # simulate, unmix, plot, compare (~1 min)
  bigxanes import stack.tif stack.zarr --energies energies.txt
  bigxanes unmix stack.zarr result.zarr --method rum-tv --refs ref1.txt ref2.txt
  bigxanes plot result.zarr result.png
run 'bigxanes COMMAND --help' for the options and examples of each command.""",
    )
    from . import __version__

    p.add_argument("--version", action="version", version=f"bigxanes {__version__}")
    p.add_argument("--debug", action="store_true", help="show tracebacks of errors")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    def add(name: str, help_: str) -> argparse.ArgumentParser:
        sp = sub.add_parser(
            name, help=help_, description=help_, epilog=EXAMPLES[name], formatter_class=_FMT
        )
        sp.add_argument("-q", "--quiet", action="store_true", help="no progress output")
        sp.add_argument("--debug", action="store_true", help=argparse.SUPPRESS)
        return sp

    s = add("simulate", "simulate a TXM-XANES stack with ground truth into a Zarr store")
    s.add_argument("output", metavar="OUT.zarr")
    s.add_argument("--phantom", default="particles", help="particles | electrode | wedge")
    s.add_argument("--shape", default="128,128", help="y,x or z,y,x (default 128,128)")
    s.add_argument("--components", type=int, default=2, help="number of chemical states")
    s.add_argument(
        "--noise",
        type=float,
        default=7.0,
        help="Gaussian noise sigma on the 0-255 scale of the paper (default 7)",
    )
    s.add_argument(
        "--poisson",
        type=float,
        default=None,
        metavar="I0",
        help="add Poisson counting noise with I0 incident counts",
    )
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--overwrite", action="store_true")
    s.set_defaults(func=cmd_simulate)

    s = add("import", "import a TIFF / HDF5 / npy / Zarr stack into the Zarr stack store")
    s.add_argument("input", metavar="INPUT", help=".tif stack, folder of TIFFs, .h5, .npy, .zarr")
    s.add_argument("output", metavar="OUT.zarr")
    s.add_argument(
        "--energies",
        metavar="FILE",
        help="one energy per image (eV or keV), text file; optional for HDF5 with /X_eng",
    )
    s.add_argument("--dataset", metavar="PATH", help="HDF5 dataset (default /img_xanes)")
    s.add_argument(
        "--i0",
        metavar="FILE|background:y0:y1,x0:x1",
        help="convert counts to optical density -ln(I/I0): I0 file (one per energy "
        "or energy,I0 columns), a sample-free region, or a mask .tif/.npy",
    )
    s.add_argument(
        "--normalize",
        action="store_true",
        help="store the edge-step normalized stack (pre-edge line, post-edge "
        "polynomial, one e0), computed chunk-wise; needs absorbance",
    )
    s.add_argument(
        "--quantity",
        choices=("counts", "absorbance"),
        help="what the input holds when no conversion is made",
    )
    s.add_argument("--tile", help="spatial chunk edge, e.g. 256 or 64,64,64")
    s.add_argument("--overwrite", action="store_true")
    s.set_defaults(func=cmd_import)

    s = add("unmix", "phase maps from a stack store: rum-tv, rum-pnp, lcf or edge50")
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
    s.add_argument(
        "--components", nargs="+", metavar="NAME", help="use only these references, in this order"
    )
    s.add_argument(
        "--components-count",
        type=int,
        metavar="L",
        help="with --refs auto: number of states (default: estimated)",
    )
    s.add_argument("--seed", type=int, default=0, help="seed of --refs auto")
    s.add_argument("--lam", help="regularization weight λ, or 'auto' (default)")
    s.add_argument("--lam-factor", type=float, help="prior strength used by --lam auto")
    s.add_argument("--iters", type=int, help="maximum ADMM iterations")
    s.add_argument("--tol", type=float, help="stopping tolerance (relative residuals)")
    s.add_argument("--rho", type=float, help="initial ADMM penalty")
    s.add_argument("--tv-sweeps", type=int, help="Jacobi sweeps per TV step")
    s.add_argument("--denoiser", choices=("tv", "bm3d", "bm4d"), help="RUM-PnP denoiser")
    s.add_argument("--lcf-variant", default="nnls", choices=("nnls", "lstsq", "sum-to-one"))
    s.add_argument("--energy-range", metavar="EMIN,EMAX", help="analyse only these energies (eV)")
    s.add_argument("--chunks", metavar="Y,X", help="spatial chunk of the run, e.g. 256,256")
    s.add_argument("--workers", type=int, help="LocalCluster workers (default: machine-sized)")
    s.add_argument("--memory-limit", metavar="SIZE", help="per worker, e.g. 2GB")
    s.add_argument(
        "--scheduler", metavar="ADDRESS", help="join an existing Dask cluster (tcp://host:8786)"
    )
    s.add_argument(
        "--baseline",
        default="pre-edge",
        choices=("pre-edge", "none"),
        help="remove each spectrum's pre-edge mean (data and references) before "
        "fitting: measured OD carries a flat background (default pre-edge)",
    )
    s.add_argument(
        "--state-mode",
        default="auto",
        choices=("auto", "memory", "zarr"),
        help="RUM state between iterations: in the cluster's memory (checkpointed "
        "to Zarr) or the Zarr double buffer; auto: memory when it fits",
    )
    s.add_argument(
        "--checkpoint-every",
        type=int,
        default=10,
        metavar="K",
        help="memory state mode: checkpoint to Zarr every K iterations (default 10)",
    )
    s.add_argument("--resume", action="store_true", help="continue an interrupted run")
    s.add_argument("--overwrite", action="store_true")
    s.set_defaults(func=cmd_unmix)

    s = add("refs", "extract reference spectra with VCA and estimate the number of states")
    s.add_argument("input", metavar="IN.zarr")
    s.add_argument("output", metavar="OUT.csv")
    s.add_argument(
        "--components",
        type=int,
        metavar="L",
        help="number of references (default: the estimated number of states)",
    )
    s.add_argument(
        "--denoise",
        nargs="?",
        const="gaussian",
        choices=DENOISE_CHOICES,
        metavar="METHOD",
        help="spatial denoising of the images before extraction: gaussian (a "
        "1-pixel Gaussian filter, linear: every pixel stays a mixture of the "
        "references; the flag alone), tv (total variation; bends the spectra), "
        "none, auto (the filter or none, whichever its estimated bias vs noise "
        "favours). Default: that of bigxanes.extract.extract_references "
        "(gaussian)",
    )
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--energy-range", metavar="EMIN,EMAX")
    s.add_argument("--overwrite", action="store_true")
    s.set_defaults(func=cmd_refs)

    s = add("plot", "PNG of a result: phase maps, RGB, scale, pixel fits, convergence")
    s.add_argument("result", metavar="OUT.zarr", help="result store (or a refs .csv)")
    s.add_argument("output", metavar="FIG.png")
    s.add_argument(
        "--stack",
        metavar="IN.zarr",
        help="the unmixed stack (default: the result's recorded input)",
    )
    s.add_argument("--pixels", nargs="+", metavar="Y,X", help="pixels whose spectra are shown")
    s.add_argument(
        "--slice", type=int, metavar="Z", help="z slice of a 3-D result (default middle)"
    )
    s.set_defaults(func=cmd_plot)

    s = add("info", "describe a stack store, a result store or a references table")
    s.add_argument("path", metavar="PATH")
    s.set_defaults(func=cmd_info)

    s = add("bench", "small built-in benchmark: in memory vs engine, LCF and RUM-TV")
    s.add_argument("--size", default="256", help="image edge or y,x (default 256)")
    s.add_argument("--iters", type=int, default=100, help="RUM-TV iterations (default 100)")
    s.add_argument("--workers", type=int, help="engine workers")
    s.set_defaults(func=cmd_bench)

    s = add("demo", "simulate -> RUM-TV on a LocalCluster -> PNG -> PSNR of LCF vs RUM-TV")
    s.add_argument("--out", default="bigxanes-demo", metavar="DIR")
    s.add_argument("--size", default="128", help="image edge or y,x (default 128)")
    s.add_argument("--workers", type=int, help="LocalCluster workers (default: machine-sized)")
    s.add_argument("--iters", type=int, help="RUM-TV iterations (default: until converged)")
    s.set_defaults(func=cmd_demo)
    return p


# ---------------------------------------------------------------------------------------------
# entry point


def _showwarning(message, category, filename, lineno, file=None, line=None):
    text = str(message)
    if "bigxanes" in str(filename) or issubclass(category, UserWarning):
        _warn(text)
    else:  # pragma: no cover - third-party noise keeps the default format
        sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``bigxanes`` command line; returns the exit code (0 ok, 2 user error)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:
        return int(e.code or 0) if not isinstance(e.code, str) else 2
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    args._argv = [a for a in argv[argv.index(args.command) + 1 :]] if args.command in argv else []
    old = warnings.showwarning
    warnings.showwarning = _showwarning
    try:
        return int(args.func(args) or 0)
    except USER_ERRORS as exc:
        if debug:
            traceback.print_exc()
        msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        if isinstance(exc, KeyError):
            msg = f"not found: {msg}"
        elif isinstance(exc, OSError) and not str(exc.args[-1] if exc.args else "").strip():
            msg = f"{exc.strerror or exc}: {exc.filename}"
        _err(str(msg) or type(exc).__name__)
        return 2
    except KeyboardInterrupt:
        _err(
            "interrupted"
            + (" (bigxanes unmix ... --resume continues)" if args.command == "unmix" else "")
        )
        return 130
    finally:
        warnings.showwarning = old


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
