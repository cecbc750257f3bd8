"""``bigxanes demo``: simulate -> RUM-TV on a LocalCluster -> PNG -> PSNR of LCF vs RUM-TV."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from ..paths import OutputPathError, written_by_bigxanes
from .common import info, ints, positive_int

EXAMPLES = """examples:
  bigxanes demo
  bigxanes demo --out /tmp/demo --size 96"""

#: What the demo writes inside ``--out`` (and replaces on a second run).
DEMO_FILES = ("stack.zarr", "rum-tv.zarr", "rum-tv.png")


def register(add) -> None:
    """Add the ``demo`` subparser."""
    s = add(
        "demo", "simulate -> RUM-TV on a LocalCluster -> PNG -> PSNR of LCF vs RUM-TV", EXAMPLES
    )
    s.add_argument("--out", default="bigxanes-demo", metavar="DIR")
    s.add_argument("--size", default="128", help="image edge or y,x (default 128)")
    s.add_argument(
        "--workers", type=positive_int, help="LocalCluster workers (default: machine-sized)"
    )
    s.add_argument(
        "--iters", type=positive_int, help="RUM-TV iterations (default: until converged)"
    )
    s.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the demo; its three outputs in ``--out`` are replaced only if bigxanes wrote them."""
    import xarray as xr

    from .. import api, engine
    from ..metrics import foreground_mask, psnr_foreground
    from ..paths import apply_umask
    from ..plot import plot_result
    from ..rum import RumParams
    from ..simulate import simulate
    from ..store import open_stack, write_dataset

    out = Path(args.out)
    for name in DEMO_FILES:
        p = out / name
        if p.exists() and not written_by_bigxanes(p):
            raise OutputPathError(
                f"{p} exists and was not written by bigxanes; the demo would replace it: "
                "choose another --out"
            )
    out.mkdir(parents=True, exist_ok=True)
    size = ints(args.size, "--size")
    shape = size * 2 if len(size) == 1 else size
    stack_path, result_path, png = (out / n for n in DEMO_FILES)
    t0 = time.perf_counter()
    info(
        f"1/4 simulate a particles stack {shape}, 2 states, noise sigma 7 -> {stack_path}",
        args.quiet,
    )
    ds = simulate("particles", shape=shape, n_components=2, sigma=7, seed=0)
    write_dataset(ds, stack_path, overwrite=True)
    info("2/4 LCF (in memory)", args.quiet)
    r_lcf = api.unmix(ds["stack"], ds["references"], method="lcf")
    info(f"3/4 RUM-TV on a Dask LocalCluster via the engine -> {result_path}", args.quiet)
    # memory_limit="auto" asks the engine for a LocalCluster even for a small stack
    params = RumParams(method="rum-tv", max_iter=args.iters) if args.iters else None
    engine.unmix_store(
        stack_path.resolve(),
        result_path.resolve(),
        method="rum-tv",
        params=params,
        n_workers=args.workers,
        memory_limit="auto",
        overwrite=True,
        progress=not args.quiet,
    )
    res = xr.open_zarr(result_path, consolidated=False)
    info(f"4/4 plot -> {png}", args.quiet)
    sds = open_stack(stack_path)
    plot_result(res, png, stack=sds["stack"], references=sds["references"].load())
    apply_umask(png)
    fg = foreground_mask(ds["true_scale"].values)
    truth = ds["true_fraction"].values
    p_lcf = psnr_foreground(r_lcf["fraction_unmasked"].values, truth, fg)
    p_rum = psnr_foreground(res["fraction_unmasked"].values, truth, fg)
    print("foreground PSNR vs truth (dB, higher is better):")
    print(f"  LCF     {p_lcf:6.2f}")
    its = res.attrs.get("n_iterations", "?")
    print(f"  RUM-TV  {p_rum:6.2f}   ({its} iterations)")
    print(
        f"outputs in {out}/ ({time.perf_counter() - t0:.0f} s): stack.zarr, rum-tv.zarr, rum-tv.png"
    )
    return 0
