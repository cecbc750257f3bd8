"""``bigxanes refs``: reference spectra by VCA and the estimated number of states.

The number of states is the knee of the eigenvalue curve (:func:`bigxanes.nstates.
estimate_n_states` with ``method="knee"``); HySime and the eigen-gap estimate are reported
with it, and the line says which to trust (they overestimate on real stacks whose noise is not
white: the STXM Fe L3 stack gives knee 2, HySime 8)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np

from .common import (
    UserError,
    add_components,
    atomic_write_text,
    components_arg,
    dask_progress,
    eigen_text,
    energy_range,
    info,
    prepare_output,
)

EXAMPLES = """examples:
  bigxanes refs stack.zarr refs.csv                 # number of states estimated (knee)
  bigxanes refs stack.zarr refs.csv --n-components 3 --denoise none --seed 0
  bigxanes refs stack.zarr refs.csv --components NiO LiNiO2   # 2 references, named
  bigxanes unmix stack.zarr r.zarr --refs refs.csv  # then unmix with them"""

#: ``--denoise`` methods of ``bigxanes refs`` (``bigxanes.extract.extract_references``'s
#: ``denoise``: "gaussian", "tv", None, "auto"; "none" stands for None).
DENOISE_CHOICES = ("gaussian", "tv", "none", "auto")


def register(add) -> None:
    """Add the ``refs`` subparser."""
    s = add(
        "refs", "extract reference spectra with VCA and estimate the number of states", EXAMPLES
    )
    s.add_argument("input", metavar="IN.zarr")
    s.add_argument("output", metavar="OUT.csv")
    add_components(
        s,
        "names of the extracted references (their number sets --n-components)",
        "number of references (default: the estimated number of states)",
    )
    s.add_argument(
        "--denoise",
        nargs="?",
        const="gaussian",
        choices=DENOISE_CHOICES,
        metavar="METHOD",
        help="spatial denoising of the images before extraction: gaussian (a "
        "1-pixel Gaussian filter, linear: every pixel stays a mixture of the "
        "references; the flag alone), tv (total variation; bends the spectra), "
        "none, auto (the filter or none, whichever its estimated bias vs noise "
        "favours). Default: that of bigxanes.extract.extract_references "
        "(gaussian)",
    )
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--energy-range", metavar="EMIN,EMAX")
    s.add_argument("--overwrite", action="store_true")
    s.set_defaults(func=run)


def states_text(ns: Any) -> str:
    """One line: the knee, HySime and eigen-gap estimates and which to trust."""
    agree = ns.n_knee == ns.n_hysime == ns.n_eigengap
    trust = (
        "the three estimates agree"
        if agree
        else "trust the knee (HySime and eigen-gap assume white noise and overestimate on "
        "real stacks); check it with 'bigxanes rank' (the R-factor stops improving past the "
        "right number)"
    )
    return (
        f"number of states: knee {ns.n_knee}, HySime {ns.n_hysime}, eigen-gap "
        f"{ns.n_eigengap}: {trust}"
    )


def foreground(stack_da: Any) -> np.ndarray:
    """Pixels holding material: total absorbance above 10 % of its 99th percentile."""
    tot = stack_da.sum("energy", skipna=False)
    tot = np.asarray(tot.values, dtype=np.float64)
    finite = np.isfinite(tot)
    if not finite.any():
        raise ValueError("every pixel of the stack has NaN/Inf values")
    hi = np.percentile(tot[finite], 99)
    m = finite & (tot > 0.1 * hi)
    if m.sum() < 10:
        m = finite
    return m


def checked_stack(path: str, src: Any) -> Any:
    """The ``stack`` variable of ``src`` read through :func:`bigxanes.integrity.checked_dask`,
    so that a chunk that fails to decode is named in a one-line error."""
    from ..integrity import checked_dask

    st = src["stack"]
    return st.copy(data=checked_dask(path, "stack").rechunk(st.data.chunks))


def auto_references(
    stack_da: Any, n: int | None, seed: int, denoise: str | None, quiet: bool
) -> tuple[Any, Any, int]:
    """VCA references (energy, component) of a stack; ``n`` None = estimated number of states.

    ``denoise`` None = the default of :func:`bigxanes.extract.extract_references`; otherwise one
    of ``DENOISE_CHOICES``. The denoising applied is in ``ref.attrs["denoise"]``.
    """
    from ..extract import extract_references
    from ..nstates import estimate_n_states

    with dask_progress(not quiet, "foreground"):
        mask = foreground(stack_da)
    with dask_progress(not quiet, "number of states"):
        ns = estimate_n_states(stack_da.data, mask=mask, method="knee")
    L = int(n) if n else max(int(ns.n), 2)
    with dask_progress(not quiet, "VCA"):
        kw = {} if denoise is None else {"denoise": None if denoise == "none" else denoise}
        ex = extract_references(stack_da.data, L, mask=mask, seed=seed, **kw)
    ref = ex.vca.to_dataarray(np.asarray(stack_da["energy"].values, dtype=np.float64))
    ref = ref.copy(data=ex.references)
    applied = ex.denoise or "none"
    if ex.denoise_choice is not None:
        applied = f"auto: {applied}"
    ref.attrs.update(
        method="vca+refine", edge_step_scaled=1, refine_rounds=len(ex.history), denoise=applied
    )
    return ref, ns, L


def run(args: argparse.Namespace) -> int:
    """Extract the references and write them as a CSV with the eigenvalues in its header."""
    from ..store import open_stack

    out = Path(args.output)
    prepare_output(out, (args.input,), args.overwrite, quiet=args.quiet)
    names_asked, count = components_arg(args)
    src = open_stack(args.input)
    st = checked_stack(args.input, src)
    if args.energy_range:
        lo, hi = energy_range(args.energy_range)
        st = st.sel(energy=slice(lo, hi))
        if st.sizes["energy"] < 3:
            raise UserError(f"--energy-range {args.energy_range} keeps fewer than 3 energies")
    n = len(names_asked) if names_asked else count
    ref, ns, L = auto_references(st, n, args.seed, args.denoise, args.quiet)
    if names_asked:
        ref = ref.assign_coords(component=("component", names_asked))
    e = np.asarray(ref["energy"].values)
    names = [str(c) for c in ref["component"].values]
    lines = [
        f"# bigxanes refs: VCA references of {args.input} (seed {args.seed}, "
        f"denoise {ref.attrs['denoise']})",
        f"# n_states_estimate ({ns.method}): {ns.n}",
        f"# {ns.summary()}",
        "# eigenvalues: " + " ".join(f"{v:.6g}" for v in ns.eigenvalues),
        ",".join(["energy"] + names),
    ]
    A = np.asarray(ref.values)
    lines += [",".join([f"{e[i]:.6f}"] + [f"{v:.8g}" for v in A[i]]) for i in range(e.size)]
    atomic_write_text(out, "\n".join(lines) + "\n")
    info(f"estimated number of states ({ns.method}): {ns.n}", args.quiet)
    info(states_text(ns), args.quiet)
    info(f"eigenvalues: {eigen_text(ns.eigenvalues)}", args.quiet)
    info(
        f"wrote {out}: {L} VCA references ({', '.join(names)}) on {e.size} energies "
        f"(denoise {ref.attrs['denoise']})",
        args.quiet,
    )
    return 0
