"""``bigxanes bench``: a small built-in benchmark, in memory vs engine, LCF and RUM-TV."""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from .common import ints, positive_int

EXAMPLES = """examples:
  bigxanes bench
  bigxanes bench --size 512 --iters 50 --workers 2"""


def register(add) -> None:
    """Add the ``bench`` subparser."""
    s = add("bench", "small built-in benchmark: in memory vs engine, LCF and RUM-TV", EXAMPLES)
    s.add_argument("--size", default="256", help="image edge or y,x (default 256)")
    s.add_argument(
        "--iters", type=positive_int, default=100, help="RUM-TV iterations (default 100)"
    )
    s.add_argument("--workers", type=positive_int, help="engine workers")
    s.set_defaults(func=run)


def _fg_psnr(frac, truth, true_scale) -> float:
    from ..metrics import foreground_mask, psnr_foreground

    return psnr_foreground(np.asarray(frac), np.asarray(truth), foreground_mask(true_scale))


def run(args: argparse.Namespace) -> int:
    """Run the four cases and print a table (seconds, foreground PSNR, engine-memory gap)."""
    import xarray as xr
    from tqdm import tqdm

    from .. import api, engine
    from ..rum import RumParams
    from ..simulate import simulate
    from ..store import write_dataset

    size = ints(args.size, "--size")
    shape = size * 2 if len(size) == 1 else size
    ds = simulate("particles", shape=shape, n_components=2, sigma=7, seed=0)
    truth, ts = ds["true_fraction"].values, ds["true_scale"].values
    rows = []
    runs = [("lcf", "memory"), ("rum-tv", "memory"), ("lcf", "engine"), ("rum-tv", "engine")]
    with tempfile.TemporaryDirectory(prefix="bigxanes-bench-") as tmp:
        store = Path(tmp) / "stack.zarr"
        write_dataset(ds, store)
        mem: dict[str, np.ndarray] = {}
        for method, path in tqdm(runs, desc="bench", disable=args.quiet, file=sys.stderr):
            kw = {"max_iter": args.iters} if method == "rum-tv" else {}
            t0 = time.perf_counter()
            if path == "memory":
                r = api.unmix(ds["stack"], ds["references"], method=method, **kw)
                frac = r["fraction_unmasked"].values
                mem[method] = frac
            else:
                out = Path(tmp) / f"{method}.zarr"
                engine.unmix_store(
                    store,
                    out,
                    method=method,
                    params=RumParams(method=method, **kw) if kw else None,
                    n_workers=args.workers,
                    progress=False,
                )
                frac = xr.open_zarr(out, consolidated=False)["fraction_unmasked"].values
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
    return 0
