"""``bigxanes align``: remove the drift between energy images of a stack store, chunk-wise."""

from __future__ import annotations

import argparse

import numpy as np

from .common import UserError, dask_progress, info, positive_int, prepare_output

EXAMPLES = """examples:
  bigxanes align stack.zarr aligned.zarr               # reference: first energy above the edge
  bigxanes align stack.zarr aligned.zarr --reference-energy 8400 --region 100:400,120:420
  bigxanes align vol.zarr vol-aligned.zarr --bin 2 --plot shifts.png
  bigxanes plot aligned.zarr shifts.png                         # the stored shift table"""


def register(add) -> None:
    """Add the ``align`` subparser."""
    s = add(
        "align",
        "remove the drift between energy images (sub-pixel phase correlation), chunk-wise",
        EXAMPLES,
    )
    s.add_argument("input", metavar="IN.zarr")
    s.add_argument("output", metavar="OUT.zarr")
    s.add_argument(
        "--reference-energy",
        default="auto",
        metavar="E|auto",
        help="energy (eV) of the reference image; auto: the first energy above the edge",
    )
    s.add_argument(
        "--region",
        metavar="y0:y1,x0:x1[,z0:z1]",
        help="estimate the drift on this part of the field only (all of it is aligned)",
    )
    s.add_argument("--bin", type=positive_int, default=1, help="bin pixels for the estimate")
    s.add_argument(
        "--upsample", type=positive_int, default=100, help="sub-pixel precision 1/N (default 100)"
    )
    s.add_argument(
        "--order", type=int, choices=(1, 3), default=1, help="interpolation order (1: linear)"
    )
    s.add_argument(
        "--no-crop",
        action="store_true",
        help="keep the whole field (pixels without data at some energy are NaN, 'valid' is "
        "stored) instead of cropping to the region every energy covers",
    )
    s.add_argument("--plot", metavar="FIG.png", help="also draw the shift table")
    s.add_argument("--overwrite", action="store_true")
    s.set_defaults(func=run)


def _reference(text: str) -> float | str:
    if str(text).lower() == "auto":
        return "auto"
    try:
        return float(text)
    except ValueError:
        raise UserError(
            f"--reference-energy {text!r}: give an energy in eV (e.g. 8400) or 'auto'"
        ) from None


def run(args: argparse.Namespace) -> int:
    """Align and print one summary line (largest drift per axis, held shifts, crop)."""
    from ..align import align_store
    from ..store import open_stack

    ref = _reference(args.reference_energy)
    prepare_output(args.output, (args.input,), args.overwrite, quiet=args.quiet)
    if args.plot:
        prepare_output(args.plot, (args.input,), True, quiet=args.quiet)
    shape_in = tuple(open_stack(args.input)["stack"].shape)
    with dask_progress(not args.quiet, "align"):
        out = align_store(
            args.input,
            args.output,
            reference_energy=ref,
            region=args.region,
            bin=args.bin,
            upsample=args.upsample,
            order=args.order,
            crop=not args.no_crop,
            overwrite=args.overwrite,
            plot=args.plot,
        )
    res = open_stack(out)
    s = np.asarray(res["shift"].values)
    axes = [str(a) for a in res["axis"].values]
    drift = ", ".join(f"{a} {np.abs(s[:, k]).max():.2f}" for k, a in enumerate(axes))
    held = int(res.attrs.get("align_n_held", 0) or 0)
    info(
        f"wrote {out}: largest drift (px) {drift}; reference "
        f"{float(res.attrs['align_reference_energy']):.2f} eV"
        + (f"; {held} energies without contrast kept their neighbour's shift" if held else "")
        + f"; stack {shape_in} -> {tuple(res['stack'].shape)}",
        args.quiet,
    )
    if args.plot:
        info(f"wrote {args.plot}", args.quiet)
    return 0
