"""``bigxanes info``: describe a stack store, a result store or a references table."""

from __future__ import annotations

import argparse
import contextlib
import json
from pathlib import Path

from .common import UserError, eigen_text, fmt_bytes, incomplete_message, read_refs_csv_eigen

EXAMPLES = """examples:
  bigxanes info stack.zarr     # shape, chunks, energies, size, resources a run needs
  bigxanes info result.zarr    # method, iterations, completeness
  bigxanes info refs.csv"""


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


def _table(p: Path) -> int:
    from ..references import read_references

    e, A, names = read_references([p])
    print(
        f"{p}: references table, {A.shape[1]} reference(s) {names}, {e.size} energies "
        f"{e[0]:.2f}-{e[-1]:.2f} eV"
    )
    ev, n = read_refs_csv_eigen(p)
    if ev is not None:
        print(f"estimated number of states: {n}; eigenvalues: {eigen_text(ev)}")
    return 0


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
        sized = ("bytes", "memory_per_worker", "minimum_memory_limit")
        print(
            f"resources ({method}, {nw} workers of {fmt_bytes(lim)}): "
            + ", ".join(
                f"{k}={fmt_bytes(v) if any(w in k for w in sized) else v}" for k, v in est.items()
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
    fr = g["fraction"]
    print("kind: result")
    print(f"method: {a.get('method')}  version: {a.get('version')}")
    print(f"fraction: shape {tuple(fr.shape)} chunks {tuple(fr.chunks)}")
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
    for k in ("input", "references_source", "energy_range", "lam", "n_nonfinite"):
        if k in a:
            print(f"{k}: {a[k]}")
    if "params" in a:
        print(f"params: {a['params']}")
    return 0


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
        raise FileNotFoundError(f"{p} does not exist; check the path")
    if p.is_file():
        if p.suffix.lower() in (".csv", ".txt", ".dat", ".xdi", ".nor"):
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
    if "stack" in arrays:
        return _stack(p, args.workers, args.memory_limit)
    if "fraction" in arrays:
        return _result(p, g)
    print(f"arrays: {', '.join(sorted(arrays)) or '(none)'}")
    return 0
