"""``bigxanes spectra``: mean spectrum ± standard deviation of a region or mask of a stack."""

from __future__ import annotations

import argparse

from .common import UserError, dask_progress, info, prepare_output

EXAMPLES = """examples:
  bigxanes spectra stack.zarr particle.csv --region 40:60,30:55
  bigxanes spectra stack.zarr sample.csv --mask mask.tif --plot sample.png
  bigxanes spectra stack.zarr sample.csv --mask auto          # Otsu on the edge jump"""


def register(add) -> None:
    """Add the ``spectra`` subparser."""
    s = add("spectra", "mean spectrum and its standard deviation over a region or mask", EXAMPLES)
    s.add_argument("input", metavar="IN.zarr")
    s.add_argument("output", metavar="OUT.csv")
    s.add_argument("--region", metavar="y0:y1,x0:x1[,z0:z1]", help="pixels of this box")
    s.add_argument(
        "--mask", metavar="FILE|auto", help=".tif/.npy (nonzero = sample) or auto (Otsu)"
    )
    s.add_argument("--plot", metavar="FIG.png", help="also draw mean ± std")
    s.add_argument("--overwrite", action="store_true")
    s.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Write the CSV (and figure) and print one summary line."""
    from ..region_spectra import spectra_csv

    if args.region is None and args.mask is None:
        raise UserError("give the pixels to average: --region y0:y1,x0:x1 or --mask FILE|auto")
    mask_file = args.mask if args.mask and args.mask != "auto" else None
    prepare_output(args.output, (args.input, mask_file), args.overwrite, quiet=args.quiet)
    if args.plot:
        prepare_output(args.plot, (args.input, mask_file), True, quiet=args.quiet)
    with dask_progress(not args.quiet, "spectra"):
        out = spectra_csv(
            args.input,
            args.output,
            region=args.region,
            mask=args.mask,
            plot=args.plot,
            overwrite=True,
        )
    with open(out, encoding="utf-8") as fh:
        head = fh.readline().strip()
    n = head.split("n_pixels=")[1].split()[0] if "n_pixels=" in head else "?"
    info(f"wrote {out}: mean and std over {n} pixels", args.quiet)
    if args.plot:
        info(f"wrote {args.plot}", args.quiet)
    return 0
