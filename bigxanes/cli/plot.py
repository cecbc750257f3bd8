"""``bigxanes plot``: PNG of a result (phase maps, RGB, scale, pixel fits, convergence) or of a
references table."""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..paths import apply_umask
from .common import (
    UserError,
    info,
    ints,
    leftover_message,
    open_result,
    prepare_output,
    read_refs_csv_eigen,
    warn,
)

EXAMPLES = """examples:
  bigxanes plot result.zarr result.png
  bigxanes plot result.zarr result.png --stack stack.zarr --pixels 40,52 60,60
  bigxanes plot vol_result.zarr slice.png --slice 10
  bigxanes plot refs.csv refs.png                   # references and eigenvalue curve
  bigxanes plot mean.csv mean.png                   # spectra from `bigxanes spectra` (mean ± std)
  bigxanes plot aligned.zarr shifts.png             # shift table of `bigxanes align`"""


def register(add) -> None:
    """Add the ``plot`` subparser."""
    s = add("plot", "PNG of a result: phase maps, RGB, scale, pixel fits, convergence", EXAMPLES)
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
    s.set_defaults(func=run)


def parse_pixels(items: Sequence[str] | None) -> list[tuple[int, int]] | None:
    """``--pixels Y,X ...`` as a list of (y, x)."""
    if not items:
        return None
    return [tuple(ints(p, "--pixels", 2)) for p in items]  # type: ignore[misc]


def run(args: argparse.Namespace) -> int:
    """Draw the figure; an existing figure (one bigxanes drew) is replaced."""
    from ..paths import resolve
    from ..plot import plot_references, plot_result
    from ..store import open_stack

    src = Path(args.result)
    resolve(src)  # a symlink loop is named as such, not "does not exist"
    if not src.exists() and not src.with_name(src.name + ".work").is_dir():
        left = leftover_message(src)
        if left:
            raise UserError(left)
        raise FileNotFoundError(f"{src} does not exist; check the path")
    # plot has always replaced its figure: only figures bigxanes drew are replaced
    prepare_output(args.output, (args.result, args.stack), True, quiet=args.quiet)
    pixels = parse_pixels(args.pixels)
    if src.is_file():  # a table of mean spectra (`bigxanes spectra`) or of references
        from ..references import read_references
        from ..region_spectra import plot_spectra, read_spectra_csv

        sp = read_spectra_csv(src) if src.suffix.lower() == ".csv" else None
        if sp is not None:
            out = plot_spectra([sp], args.output)
            info(f"wrote {out} (mean ± std spectra)", args.quiet)
            return 0

        e, A, names = read_references([src])
        ev, n = read_refs_csv_eigen(src)
        out = plot_references(e, A, names, args.output, eigenvalues=ev, n_states=n)
        apply_umask(out)
        info(f"wrote {out}", args.quiet)
        return 0
    res = open_result(src)
    if "shift" in res and "fraction" not in res:  # an aligned stack: its shift table
        from ..align import plot_shifts, shift_table

        out = plot_shifts(shift_table(res), args.output)
        info(f"wrote {out} (shift table of the aligned stack)", args.quiet)
        return 0
    maps = [v for v in ("edge50", "white_line_energy") if v in res]
    if "fraction" not in res and not maps:
        if "stack" in res or "absorbance" in res:
            raise UserError(
                f"{src} is a stack store, not a result; run `bigxanes unmix "
                f"{src} OUT.zarr ...` first and plot OUT.zarr"
            )
        raise UserError(f"{src} has no 'fraction' variable; plot the output of `bigxanes unmix`")
    stack_path = args.stack or res.attrs.get("input")
    stack = refs = None
    if stack_path:
        if args.stack is None and not Path(str(stack_path)).exists():
            warn(f"the unmixed stack {stack_path} is gone: no pixel spectra (pass --stack)")
        else:
            sds = open_stack(stack_path)
            stack = sds["stack"]
            refs = result_references(res, sds, stack)
    out = plot_result(
        res, args.output, stack=stack, references=refs, pixels=pixels, slice_index=args.slice
    )
    apply_umask(out)
    info(f"wrote {out}", args.quiet)
    return 0


def result_references(res: Any, sds: Any, stack: Any) -> Any:
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
        from ..references import read_references

        e_all = np.asarray(stack["energy"].values)
        lo, hi = res.attrs.get("energy_min", e_all[0]), res.attrs.get("energy_max", e_all[-1])
        e = e_all[(e_all >= float(lo) - 1e-6) & (e_all <= float(hi) + 1e-6)]
        comps = [str(c) for c in res["component"].values] if "component" in res.coords else None
        _, A, names = read_references(files, energy=e, components=comps)
        return xr.DataArray(
            A, dims=("energy", "component"), coords={"energy": e, "component": names}
        )
    return None
