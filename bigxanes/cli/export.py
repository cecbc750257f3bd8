"""``bigxanes export``: a result as TIFFs (Fiji), OME-Zarr (napari) or NetCDF."""

from __future__ import annotations

import argparse
from pathlib import Path

from .common import UserError, info, open_result, prepare_output

EXAMPLES = """examples:
  bigxanes export result.zarr maps --format tiff              # one 32-bit TIFF per map (Fiji)
  bigxanes export result.zarr maps.ome.zarr --format ome-zarr # components as channels (napari)
  bigxanes export result.zarr result.nc --format netcdf --pixel-size 0.03"""

#: File written into exported folders (TIFF, OME-Zarr): ``--overwrite`` replaces only those.
MARKER = "bigxanes-export.txt"


def register(add) -> None:
    """Add the ``export`` subparser."""
    from ..export import FORMATS

    s = add("export", "export a result to TIFF (Fiji), OME-Zarr (napari) or NetCDF", EXAMPLES)
    s.add_argument("result", metavar="RESULT.zarr")
    s.add_argument("output", metavar="OUT")
    s.add_argument("--format", required=True, choices=FORMATS)
    s.add_argument(
        "--pixel-size",
        type=float,
        metavar="UM",
        help="micrometres per pixel when the result does not record it",
    )
    s.add_argument("--overwrite", action="store_true")
    s.set_defaults(func=run)


def _our_export(out: Path) -> bool:
    """An earlier ``bigxanes export`` output (folder with the marker, or a bigxanes NetCDF)."""
    if out.is_dir():
        return (out / MARKER).is_file()
    if out.is_file() and out.suffix.lower() in (".nc", ".nc4", ".netcdf"):
        try:
            import xarray as xr

            with xr.open_dataset(out) as ds:
                return "version" in ds.attrs and "method" in ds.attrs
        except Exception:  # noqa: BLE001 - not a NetCDF we can read: not ours
            return False
    return False


def run(args: argparse.Namespace) -> int:
    """Export and print what was written."""
    from ..export import export_result

    out = Path(args.output)
    if args.pixel_size is not None and not args.pixel_size > 0:
        raise UserError(f"--pixel-size {args.pixel_size:g}: give a positive size in micrometres")
    if args.overwrite and _our_export(out):
        prepare_output(args.output, (args.result,), False, resume=True, quiet=args.quiet)
    else:
        prepare_output(args.output, (args.result,), args.overwrite, quiet=args.quiet)
    res = open_result(args.result)
    if "fraction" not in res and "edge50" not in res:
        raise UserError(
            f"{args.result} is not a result (no 'fraction' or 'edge50'); export the OUT of "
            "`bigxanes unmix`"
        )
    res.close()
    # the path, not ``res`` (dask): export_result opens it lazily indexed and reads each map
    # block by block from its Zarr chunks (TIFF, OME-Zarr), or with dask (NetCDF)
    path = export_result(
        Path(args.result), out, args.format, pixel_size=args.pixel_size, overwrite=args.overwrite
    )
    if path.is_dir():
        (path / MARKER).write_text(
            f"# bigxanes export of {args.result} ({args.format})\n", encoding="utf-8"
        )
        n = sum(1 for p in path.iterdir() if p.suffix == ".tif")
        what = f"{n} TIFF maps" if args.format == "tiff" else "OME-Zarr image"
    else:
        what = "NetCDF"
    info(f"wrote {path}: {what}", args.quiet)
    return 0
