"""``bigxanes rank``: which references (and how many) fit the sample: every combination of up
to K references of a library fitted to the sample's mean spectrum and to cluster means."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

import numpy as np

from .common import UserError, energy_range, info, positive_int, prepare_output

EXAMPLES = """examples:
  bigxanes info Fe.prj                                  # the library's names and edges
  bigxanes rank fe.zarr --refs Fe.prj Fe-K-ALS-10.3.2.prj --max-components 2
  bigxanes rank fe.zarr --refs Fe.prj --energy-shift auto --out rank.csv
  bigxanes rank fe.zarr --refs lib.nor --mask mask.tif --energy-range 7090,7200
  bigxanes unmix fe.zarr r.zarr --refs Fe.prj --components NAME NAME   # then the best set"""

#: Most combinations ``rank`` fits (a library of 20 references and K = 3 gives 1350).
MAX_COMBINATIONS = 5000


def register(add) -> None:
    """Add the ``rank`` subparser."""
    from ..baseline import BASELINES

    s = add(
        "rank",
        "rank combinations of library references by how well they fit the sample's mean "
        "and cluster-mean spectra",
        EXAMPLES,
    )
    s.add_argument("input", metavar="IN.zarr")
    s.add_argument(
        "--refs",
        nargs="+",
        required=True,
        metavar="FILE",
        help="reference library files (.prj, Demeter .nor, XDI, CSV; any number)",
    )
    s.add_argument(
        "--max-components",
        type=positive_int,
        default=3,
        metavar="K",
        help="largest number of references in a combination (default 3)",
    )
    s.add_argument(
        "--energy-shift",
        default="none",
        choices=("none", "auto"),
        help="auto: fit one energy shift per reference of each combination (within ±10 eV; "
        "slower: ~0.1 s per combination)",
    )
    s.add_argument("--energy-range", metavar="EMIN,EMAX", help="fit only these energies (eV)")
    s.add_argument(
        "--mask",
        metavar="auto|FILE",
        help="pixels of the sample: auto (Otsu on the total absorbance) or a .npy/.tif "
        "image (nonzero = sample); default all finite pixels",
    )
    s.add_argument(
        "--clusters",
        type=positive_int,
        default=4,
        metavar="K",
        help="spectral clusters (k-means on the unit-norm spectra) whose mean spectra are "
        "fitted too (default 4)",
    )
    s.add_argument(
        "--baseline",
        default="pre-edge",
        choices=BASELINES,
        help="remove the pre-edge mean (below the data's own edge) from the spectra and "
        "references before fitting, as unmix does (default pre-edge)",
    )
    s.add_argument("--top", type=positive_int, default=15, help="rows printed (default 15)")
    s.add_argument("--out", metavar="TABLE.csv", help="write the whole ranked table (CSV)")
    s.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    s.set_defaults(func=run)


def _stack_mask(args: argparse.Namespace, st: Any) -> np.ndarray | None:
    from ..regions import resolve_mask

    if args.mask is None:
        return None
    shape = tuple(int(n) for n in st.shape[1:])
    edge = None
    if str(args.mask) == "auto":
        edge = np.asarray(st.sum("energy", skipna=True).values, dtype=np.float64)
    m = resolve_mask(args.mask, shape, edge)
    if m is not None and not m.any():
        raise UserError(f"--mask {args.mask} selects no pixel; check the mask")
    return m


def run(args: argparse.Namespace) -> int:
    """Fit every combination, print the best rows and write the table."""
    from math import comb

    from ..kernels.baseline import pre_edge_window_from_data
    from ..rank import cluster_means, format_rank_table, rank_references, write_rank_csv
    from ..references import read_references
    from ..store import open_stack
    from .refs import checked_stack

    out = None
    if args.out:
        out = prepare_output(args.out, [args.input, *args.refs], args.overwrite, quiet=args.quiet)
    inp = Path(args.input)
    if inp.is_file():
        raise UserError(
            f"{args.input} is a file, not a Zarr stack store: rank reads stores; convert it "
            f"first with `bigxanes import {args.input} STACK.zarr --energies FILE`"
        )
    e_ref, R, names = read_references(args.refs, union_grid=True)
    K = min(args.max_components, len(names))
    n_comb = sum(comb(len(names), k) for k in range(1, K + 1))
    if n_comb > MAX_COMBINATIONS:
        raise UserError(
            f"{len(names)} references and --max-components {args.max_components} make "
            f"{n_comb} combinations (more than {MAX_COMBINATIONS}); lower --max-components "
            "or pass fewer files"
        )
    src = open_stack(args.input)
    st = checked_stack(args.input, src)
    erange = energy_range(args.energy_range)
    if erange is not None:
        st = st.sel(energy=slice(*erange))
        if st.sizes["energy"] < 3:
            raise UserError(f"--energy-range {args.energy_range} keeps fewer than 3 energies")
    E = np.asarray(st["energy"].values, dtype=np.float64)
    if e_ref[0] > E[0] + 1e-6 or e_ref[-1] < E[-1] - 1e-6:
        raise UserError(
            f"the references cover {e_ref[0]:.1f}-{e_ref[-1]:.1f} eV but the stack spans "
            f"{E[0]:.1f}-{E[-1]:.1f} eV; pass --energy-range inside the references' range"
        )
    mask = _stack_mask(args, st)
    mean, centers, counts = cluster_means(st.data, k=args.clusters, mask=mask)
    window = None
    if args.baseline == "pre-edge":
        A0 = np.stack([np.interp(E, e_ref, R[:, j]) for j in range(R.shape[1])], axis=1)
        try:
            window, _, desc = pre_edge_window_from_data(E, mean, A0)
        except ValueError as exc:
            raise UserError(str(exc)) from None
        info(f"baseline: {desc}", args.quiet)
    info(
        f"targets: mean spectrum of {int(counts.sum())} pixels and {centers.shape[1]} cluster "
        f"means ({', '.join(str(int(c)) for c in counts)} pixels); {n_comb} combinations of "
        f"{len(names)} references, up to {K}, energy shift {args.energy_shift}",
        args.quiet,
    )
    rows = rank_references(
        E,
        mean,
        e_ref,
        R,
        names,
        clusters=centers,
        max_components=K,
        energy_shift=args.energy_shift,
        window=window,
    )
    print(format_rank_table(rows, args.top))
    best = {}
    for r in rows:
        best.setdefault(len(r.names), r)
    print(
        "best R-factor per number of references: "
        + ", ".join(f"{k}: {best[k].r_factor:.3g}" for k in sorted(best))
    )
    if out is not None:
        tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
        try:
            write_rank_csv(rows, tmp)
            os.replace(tmp, out)
        finally:
            if tmp.exists():
                tmp.unlink()
        info(f"wrote {out}: {len(rows)} combinations ranked by R-factor", args.quiet)
    return 0
