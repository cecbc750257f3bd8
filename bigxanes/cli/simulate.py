"""``bigxanes simulate``: a TXM-XANES stack with ground truth into a Zarr store."""

from __future__ import annotations

import argparse

from .common import UserError, add_components, components_arg, info, ints, prepare_output

EXAMPLES = """examples:
  bigxanes simulate sim.zarr --phantom particles --shape 128,128 --n-components 2 --noise 7
  bigxanes simulate vol.zarr --shape 64,64,64 --n-components 3 --noise 5
  bigxanes simulate named.zarr --components Fe2 Fe3
  bigxanes simulate low.zarr --poisson 1000 --overwrite"""


def register(add) -> None:
    """Add the ``simulate`` subparser (``add(name, help, epilog)`` makes it)."""
    from ..phantoms import PHANTOMS

    s = add("simulate", "simulate a TXM-XANES stack with ground truth into a Zarr store", EXAMPLES)
    s.add_argument("output", metavar="OUT.zarr")
    s.add_argument("--phantom", default="particles", help=" | ".join(PHANTOMS))
    s.add_argument("--shape", default="128,128", help="y,x or z,y,x (default 128,128)")
    add_components(
        s,
        "names of the simulated chemical states (their number sets --n-components)",
        "number of chemical states (default 2)",
    )
    s.add_argument(
        "--noise",
        type=float,
        default=7.0,
        help="Gaussian noise sigma on the 0-255 scale of the paper (default 7)",
    )
    s.add_argument(
        "--poisson",
        type=float,
        default=None,
        metavar="I0",
        help="add Poisson counting noise with I0 incident counts",
    )
    s.add_argument("--seed", type=int, default=0)
    s.add_argument(
        "--chunks",
        default=None,
        metavar="TILE",
        help="spatial tile edge(s) of the stored chunks (default 256 in 2-D, 64 in 3-D); "
        "3-D particles/wedge stacks are written one chunk at a time (never held whole)",
    )
    s.add_argument("--overwrite", action="store_true")
    s.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Simulate and write the store; prints one summary line."""
    from ..phantoms import BLOCK_PHANTOMS, PHANTOMS
    from ..simulate import simulate, simulate_to_store
    from ..store import write_dataset

    prepare_output(args.output, (), args.overwrite, quiet=args.quiet)
    shape = ints(args.shape, "--shape")
    if len(shape) not in (2, 3):
        raise UserError(f"--shape {args.shape!r}: give 2 (y,x) or 3 (z,y,x) sizes")
    if args.phantom not in PHANTOMS:
        raise UserError(f"unknown --phantom {args.phantom!r}; choose one of {', '.join(PHANTOMS)}")
    names, count = components_arg(args)
    n = len(names) if names else (count or 2)
    chunks = ints(args.chunks, "--chunks") if args.chunks else None
    if chunks is not None and (len(chunks) not in (1, len(shape)) or min(chunks) < 1):
        raise UserError(
            f"--chunks {args.chunks!r}: give one positive tile edge or one per axis of --shape"
        )
    if chunks is not None and len(chunks) == 1:
        chunks = chunks * len(shape)
    if len(shape) == 3 and args.phantom in BLOCK_PHANTOMS:
        ds = simulate_to_store(
            args.output,
            args.phantom,
            shape,
            n,
            sigma=args.noise,
            poisson=args.poisson,
            seed=args.seed,
            component_names=names or None,
            chunks=chunks,
            overwrite=args.overwrite,
        )
        _summary(args, ds)
        return 0
    ds = simulate(
        args.phantom,
        shape=shape,
        n_components=n,
        sigma=args.noise,
        poisson=args.poisson,
        seed=args.seed,
    )
    if names:
        ds = ds.assign_coords(component=("component", names))
    write_dataset(ds, args.output, overwrite=args.overwrite, chunks=chunks)
    _summary(args, ds)
    return 0


def _summary(args: argparse.Namespace, ds) -> None:
    st = ds["stack"]
    info(
        f"wrote {args.output}: stack {tuple(st.shape)} ({st.dims[0]}, {', '.join(st.dims[1:])}),"
        f" {ds.sizes['component']} references, truth (true_fraction, true_scale); "
        f"energies {float(ds.energy[0]):.1f}-{float(ds.energy[-1]):.1f} eV",
        args.quiet,
    )
