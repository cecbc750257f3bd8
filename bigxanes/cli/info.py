"""``bigxanes info``: describe a stack store, a result store or a references table."""

from __future__ import annotations

import argparse
import contextlib
import json
from pathlib import Path

import numpy as np

from .common import (
    UserError,
    eigen_text,
    fmt_bytes,
    incomplete_message,
    leftover_message,
    read_refs_csv_eigen,
)

EXAMPLES = """examples:
  bigxanes info stack.zarr     # shape, chunks, energies, size, resources a run needs
  bigxanes info result.zarr    # method, iterations, completeness
  bigxanes info refs.csv       # every reference: name, energy range, e0 (also .prj, .nor, .xdi)
  bigxanes info Fe.prj         # Athena project: names to pass to unmix --components"""


def register(add) -> None:
    """Add the ``info`` subparser."""
    s = add("info", "describe a stack store, a result store or a references table", EXAMPLES)
    s.add_argument("path", metavar="PATH")
    s.add_argument(
        "--workers",
        type=int,
        default=None,
        help="size the resources for this many workers (default: one per core)",
    )
    s.add_argument(
        "--memory-limit",
        default=None,
        help="per-worker memory limit to size tiles for, e.g. 2GB (default: the LocalCluster's)",
    )
    s.set_defaults(func=run)


#: What ``norm`` (the spectrum fitted) is, per reference format.
_NORMALIZATION = {
    "athena-project": "mu(E) from the project, energy + bkg_eshift, normalized with each "
    "group's own Athena parameters (bkg_e0, pre/post-edge windows), as Athena shows it",
    "demeter-multicolumn": "as exported by Athena/Demeter (normalized mu(E) columns)",
    "xdi": "the XDI norm/flat column as stored, or raw mu(E) normalized by bigxanes' defaults",
    "athena-nor": "the .nor norm column as stored",
    "table": "as stored (normalize raw mu(E) first)",
}

#: Image/array files: ``info`` points to ``import`` instead of reading them as references.
_IMAGE_SUFFIXES = (".tif", ".tiff", ".h5", ".hdf5", ".nxs", ".npy", ".npz", ".txrm", ".xrm")


def _table(p: Path) -> int:
    """Every reference of a file (any format, detected by content): name, energy range, e0."""
    from ..references import detect_format, format_reference_list, list_references

    fmt = detect_format(p)
    recs = list_references(p)
    print(f"{p}: {fmt} references file, {len(recs)} reference(s)")
    print(f"spectra: {_NORMALIZATION.get(fmt, 'as stored')}")
    print(format_reference_list(recs))
    print("select them with: bigxanes unmix IN.zarr OUT.zarr --refs FILE --components NAME ...")
    ev, n = read_refs_csv_eigen(p)
    if ev is not None:
        print(f"estimated number of states: {n}; eigenvalues: {eigen_text(ev)}")
    return 0


#: ``info`` of a stack estimates the number of states when the stack is at most this large
#: (two reads: the foreground and the correlation sums).
STATES_MAX_BYTES = 256 * 2**20


def _states(p: Path, st: dict) -> None:
    """Number of states (knee, HySime, eigen-gap) with the eigenvalue curve, small stacks only."""
    if st["nbytes_memory"] > STATES_MAX_BYTES:
        print(
            f"number of states: not estimated here (stack > {fmt_bytes(STATES_MAX_BYTES)}); "
            "run bigxanes refs"
        )
        return
    from ..nstates import estimate_n_states
    from ..store import open_stack
    from .refs import checked_stack, foreground, states_text

    try:
        da_ = checked_stack(str(p), open_stack(p))
        ns = estimate_n_states(da_.data, mask=foreground(da_), method="knee")
    except ValueError as exc:
        print(f"number of states: not estimated ({' '.join(str(exc).split())})")
        return
    print(states_text(ns))
    print(f"eigenvalues: {eigen_text(ns.eigenvalues)}")


def _stack(p: Path, workers: int | None = None, memory_limit: str | None = None) -> int:
    from .. import engine
    from ..store import stack_info

    st = stack_info(p)
    print(f"kind: stack store ({st['quantity']})")
    print(f"shape: {st['shape']} dims {st['dims']}")
    print(f"chunks: {st['chunks']}  dtype: {st['dtype']}")
    print(f"energies: {st['n_energies']}, {st['energy_min']:.3f}-{st['energy_max']:.3f} eV")
    print(
        f"size: {fmt_bytes(st['nbytes_memory'])} in memory, {fmt_bytes(st['nbytes_disk'])} on disk"
    )
    print(f"variables: {', '.join(st['variables'])}")
    if st["components"]:
        print(f"references: {', '.join(st['components'])}")
    _states(p, st)
    from ..engine.cluster import default_worker_limit, validate_cluster_args

    lim = validate_cluster_args(workers, memory_limit)
    nw, auto = default_worker_limit(workers)
    lim = auto if lim is None else lim
    for method in ("lcf", "rum-tv"):
        try:
            est = engine.estimate_resources(str(p), method, n_workers=nw, memory_limit=lim)
        except Exception as exc:  # noqa: BLE001
            print(f"resources ({method}): unavailable ({' '.join(str(exc).split())})")
            continue
        print(
            f"resources ({method}, {nw} workers of {fmt_bytes(lim)}): "
            + ", ".join(
                f"{k}={fmt_bytes(v) if 'bytes' in k or 'memory' in k else v}"
                for k, v in est.items()
            )
        )
        if lim < est["minimum_memory_limit"]:
            print(
                f"  {method}: a {fmt_bytes(lim)} worker is below this run's minimum "
                f"({fmt_bytes(est['minimum_memory_limit'])}): unmix would refuse it"
            )
    return 0


def _result(p: Path, g) -> int:
    a = dict(g.attrs)
    print("kind: result")
    print(f"method: {a.get('method')}  version: {a.get('version')}")
    for name in ("fraction", "edge50", "white_line_energy"):
        if name in g:
            fr = g[name]
            print(f"{name}: shape {tuple(fr.shape)} chunks {tuple(fr.chunks)}")
    its = a.get("n_iterations")
    print(f"iterations: {its if its is not None else '-'}")
    hist = a.get("history")
    if isinstance(hist, str):
        with contextlib.suppress(json.JSONDecodeError, TypeError, IndexError, AttributeError):
            h = json.loads(hist)
            if h.get("primal"):
                print(
                    f"final residuals: primal {h['primal'][-1]:.3g}, "
                    f"dual {h.get('dual', [float('nan')])[-1]:.3g}"
                )
    if a.get("verdict"):
        print(f"verdict: {a['verdict']}")
    if a.get("fit_verdict"):
        print(f"fit: {a['fit_verdict']}")
    for k in (
        "input",
        "reference_names",
        "references_source",
        "energy_shift_mode",
        "energy_shift",
        "baseline_window",
        "energy_range",
        "lam",
        "n_nonfinite",
    ):
        if k in a:
            print(f"{k}: {a[k]}")
    if "params" in a:
        print(f"params: {a['params']}")
    for k in ("region", "user_mask"):
        if k in a:
            print(f"{k}: {a[k]}")
    _mask_summary(p)
    return 0


def _mask_summary(p: Path) -> None:
    """Per-component mean and percentiles of the fractions over the result's mask."""
    from ..region_spectra import mask_summary
    from .common import open_result

    res = open_result(p)
    if "component" not in res.coords or "fraction" not in res:
        for v in ("edge50", "white_line_energy"):
            if v in res and "mask" in res:
                x = res[v].values[res["mask"].values.astype(bool)]
                x = x[np.isfinite(x)]
                if x.size:
                    q = " ".join(f"{t:.2f}" for t in np.percentile(x, [5, 25, 50, 75, 95]))
                    print(f"{v} over the mask (eV): mean {x.mean():.2f}  p {q}")
        return
    summ = mask_summary(res)
    m = summ.pop("_mask")
    print(
        f"fractions over the mask ({int(m['n_pixels'])} pixels, "
        f"{100 * m['fraction_of_image']:.1f} % of the image): mean, percentiles 5/25/50/75/95"
    )
    for name, row in summ.items():
        pct = " ".join(f"{row[f'p{q}']:.3f}" for q in (5, 25, 50, 75, 95))
        print(f"  {name}: mean {row['mean']:.3f}  p {pct}")


def run(args: argparse.Namespace) -> int:
    """Print the description; an incomplete store (or a killed run's work) is an error."""
    import zarr

    from ..engine.cluster import validate_cluster_args
    from ..paths import resolve
    from ..store import is_complete

    validate_cluster_args(args.workers, args.memory_limit)  # one line before any output
    p = Path(args.path)
    resolve(p)  # a symlink loop is named as such, not "does not exist"
    if not p.exists():
        if p.with_name(p.name + ".work").is_dir():
            raise UserError(incomplete_message(p))
        left = leftover_message(p)
        if left:
            raise UserError(left)
        raise FileNotFoundError(f"{p} does not exist; check the path")
    if p.is_file():
        if p.suffix.lower() not in _IMAGE_SUFFIXES:
            return _table(p)
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
        raise UserError(incomplete_message(p))
    if "stack" in arrays or "absorbance" in arrays:
        return _stack(p, args.workers, args.memory_limit)
    if "fraction" in arrays or "edge50" in arrays:
        return _result(p, g)
    print(f"arrays: {', '.join(sorted(arrays)) or '(none)'}")
    return 0
