"""``bigxanes import``: a TIFF / HDF5 / npy / Zarr stack into the Zarr stack store."""

from __future__ import annotations

import argparse
from pathlib import Path

from .common import dask_progress, fmt_bytes, info, ints, prepare_output

EXAMPLES = """examples:
  bigxanes import stack.tif stack.zarr --energies energies.txt
  bigxanes import scan.h5 stack.zarr                      # FXI layout: /img_xanes, /X_eng (keV ok)
  bigxanes import scan.h5 stack.zarr --dataset /exchange/data --energies e.txt
  bigxanes import counts.tif od.zarr --energies e.txt --i0 i0.txt
  bigxanes import counts.tif od.zarr --energies e.txt --i0 background:0:20,0:20"""


def register(add) -> None:
    """Add the ``import`` subparser."""
    s = add("import", "import a TIFF / HDF5 / npy / Zarr stack into the Zarr stack store", EXAMPLES)
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
    s.set_defaults(func=run)


def _i0_file(i0: str | None) -> str | None:
    """The file named by ``--i0`` (None for a ``background:`` region)."""
    if not i0 or i0.startswith("background:"):
        return None
    return i0 if Path(i0).exists() else None


def run(args: argparse.Namespace) -> int:
    """Import the stack; prints one summary line."""
    from ..importers import import_stack
    from ..store import stack_info

    prepare_output(
        args.output,
        (args.input, args.energies, _i0_file(args.i0)),
        args.overwrite,
        quiet=args.quiet,
    )
    tile = ints(args.tile, "--tile") if args.tile else None
    if tile is not None and len(tile) == 1:
        tile = tile[0]
    with dask_progress(not args.quiet, "import"):
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
    st = stack_info(out)
    info(
        f"wrote {out}: stack {st['shape']} chunks {st['chunks']}, {st['n_energies']} "
        f"energies {st['energy_min']:.2f}-{st['energy_max']:.2f} eV, "
        f"{st['quantity']}, {fmt_bytes(st['nbytes_disk'])} on disk",
        args.quiet,
    )
    return 0
