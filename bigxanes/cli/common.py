"""Helpers shared by the subcommands: messages, argument parsing, output checks, file writes."""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ..paths import apply_umask, check_output, clean_stale_leftovers

__all__ = [
    "PROG",
    "UserError",
    "err",
    "warn",
    "info",
    "ints",
    "energy_range",
    "prepare_output",
    "dask_progress",
    "atomic_write_text",
    "fmt_bytes",
    "incomplete_message",
    "leftover_message",
    "components_arg",
    "add_components",
    "positive_int",
    "positive_float",
    "nonnegative_int",
    "open_result",
    "eigen_text",
    "read_refs_csv_eigen",
]

PROG = "bigxanes"


class UserError(ValueError):
    """A mistake in the command line (reported like any ValueError)."""


def err(msg: str) -> None:
    """Print ``bigxanes: error: MSG`` as one line on stderr."""
    print(f"{PROG}: error: {' '.join(str(msg).split())}", file=sys.stderr)


def warn(msg: str) -> None:
    """Print ``bigxanes: warning: MSG`` as one line on stderr."""
    print(f"{PROG}: warning: {' '.join(str(msg).split())}", file=sys.stderr)


def info(msg: str = "", quiet: bool = False) -> None:
    """Print a progress/result line on stdout unless ``quiet``."""
    if not quiet:
        print(msg, flush=True)


def ints(text: str, what: str, n: int | None = None) -> tuple[int, ...]:
    """Integers separated by commas (or ``x``) of the flag ``what``."""
    try:
        vals = tuple(int(v) for v in str(text).replace("x", ",").split(",") if v.strip())
    except ValueError:
        raise UserError(f"cannot read {what} {text!r}: give integers separated by commas") from None
    if not vals or (n is not None and len(vals) != n):
        raise UserError(
            f"cannot read {what} {text!r}: expected "
            f"{n if n else 'one or more'} integers separated by commas"
        )
    return vals


def energy_range(text: str | None) -> tuple[float, float] | None:
    """``--energy-range EMIN,EMAX`` in eV (keV values are converted)."""
    if text is None:
        return None
    try:
        lo, hi = (float(v) for v in text.split(","))
    except ValueError:
        raise UserError(
            f"cannot read --energy-range {text!r}: write EMIN,EMAX in eV (e.g. 8330,8400)"
        ) from None
    if not lo < hi:
        raise UserError(f"--energy-range {text!r}: EMIN must be smaller than EMAX")
    from ..energy import as_ev

    lo_ev, hi_ev = (float(v) for v in as_ev(np.array([lo, hi])))
    return lo_ev, hi_ev


def prepare_output(
    output: str | os.PathLike,
    inputs: Iterable[str | os.PathLike | None],
    overwrite: bool,
    *,
    resume: bool = False,
    quiet: bool = False,
) -> Path:
    """Check ``output`` against ``inputs`` and ``--overwrite`` (:func:`bigxanes.paths.check_output`)
    and delete the ``.partial-<pid>`` folders that dead runs left next to it."""
    out = check_output(output, inputs, overwrite=overwrite, resume=resume)
    for p in clean_stale_leftovers(output):
        info(f"removed {p} (left by an interrupted run)", quiet)
    return out


@contextlib.contextmanager
def dask_progress(enabled: bool, desc: str) -> Iterator[None]:
    """tqdm progress bar for dask computations on the local schedulers."""
    if not enabled:
        yield
        return
    try:
        from tqdm.dask import TqdmCallback
    except ImportError:  # pragma: no cover
        yield
        return
    with TqdmCallback(desc=desc, leave=False, file=sys.stderr):
        yield


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file (mode ``0666 & ~umask``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        apply_umask(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def fmt_bytes(n: float | None) -> str:
    """Bytes as ``12.3 MiB``."""
    if n is None:
        return "?"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} TiB"  # pragma: no cover


def incomplete_message(p: Path) -> str:
    """The message for a store without the completion marker (or a run's leftover work)."""
    return (
        f"{p} is incomplete (an interrupted write, or a run still in progress): its data are "
        "not valid; re-run the command that made it (bigxanes unmix ... --resume continues an "
        "interrupted run)"
    )


def leftover_message(p: Path) -> str | None:
    """The message for a path that does not exist while an interrupted write of it left
    ``P.partial-<pid>`` folders (a killed ``import``/``simulate``/``unmix``); None if none."""
    from ..paths import stale_leftovers

    partials, _ = stale_leftovers(p)
    if not partials:
        return None
    from ..store import disk_bytes

    size = sum(disk_bytes(q) if q.is_dir() else q.stat().st_size for q in partials)
    names = ", ".join(q.name for q in partials)
    return (
        f"{p} does not exist: an interrupted write left {names} ({fmt_bytes(size)}), which "
        "is incomplete; run the command that writes it again (that removes the leftover), or "
        "delete it"
    )


def open_result(path: str | os.PathLike) -> Any:
    """Open a complete result store lazily; one-line errors for missing/incomplete stores."""
    import xarray as xr

    from ..store import is_complete

    p = Path(path)
    if not p.exists():
        work = p.with_name(p.name + ".work")
        if work.is_dir():
            raise ValueError(incomplete_message(p))
        left = leftover_message(p)
        if left:
            raise ValueError(left)
        raise FileNotFoundError(f"{p} does not exist; check the path")
    if not is_complete(p):
        raise ValueError(incomplete_message(p))
    return xr.open_zarr(p, consolidated=False, zarr_format=3, chunks={})


def eigen_text(ev: np.ndarray, k: int = 10) -> str:
    """The first ``k`` eigenvalues, 3 significant digits."""
    return ", ".join(f"{v:.3g}" for v in np.asarray(ev)[:k])


def read_refs_csv_eigen(path: Path) -> tuple[np.ndarray | None, int | None]:
    """Eigenvalues and estimated number of states from the header of a ``bigxanes refs`` CSV."""
    ev, n = None, None
    with open(path, encoding="utf-8", errors="replace") as fh:
        for line in fh:
            if not line.startswith("#"):
                if line.strip() and not line.lstrip()[0].isalpha():
                    break
                continue
            body = line.lstrip("# ").strip()
            if body.startswith("eigenvalues:"):
                ev = np.array([float(v) for v in body.split(":", 1)[1].split()])
            elif body.startswith("n_states_estimate"):
                with contextlib.suppress(ValueError):
                    n = int(body.rsplit(":", 1)[1])
    return ev, n


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    import argparse

    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {v}")
    return v


def positive_float(text: str) -> float:
    """argparse type: a finite number > 0."""
    import argparse

    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}") from None
    if not (np.isfinite(v) and v > 0):
        raise argparse.ArgumentTypeError(f"must be a number > 0, got {text!r}")
    return v


def nonnegative_int(text: str) -> int:
    """argparse type: an integer >= 0."""
    import argparse

    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}") from None
    if v < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {v}")
    return v


def add_components(sp: Any, names_help: str, count_help: str) -> None:
    """The shared vocabulary: ``--components NAME ...`` (names) and ``--n-components N``."""
    sp.add_argument("--components", nargs="+", metavar="NAME", help=names_help)
    sp.add_argument("--n-components", type=positive_int, metavar="N", help=count_help)


def components_arg(args: Any, legacy_count: bool = True) -> tuple[list[str] | None, int | None]:
    """``(names, count)`` from ``--components`` / ``--n-components``.

    The old spelling ``--components N`` (one integer, a count in ``simulate`` and ``refs``)
    still works with a deprecation warning when ``legacy_count``; names and a count that
    disagree are refused.
    """
    names = list(args.components) if args.components else None
    count = args.n_components
    if (
        legacy_count
        and names is not None
        and len(names) == 1
        and names[0].strip().lstrip("+-").isdigit()
    ):
        n = int(names[0])
        warn(
            f"--components {n} (a count) is deprecated: --components takes reference names; "
            f"use --n-components {n}"
        )
        if n < 1:
            raise UserError(f"--n-components must be >= 1, got {n}")
        names, count = None, (count or n)
    if names is not None:
        if len(set(names)) != len(names):
            raise UserError(f"--components {' '.join(names)}: each name once")
        if count is not None and count != len(names):
            raise UserError(
                f"--n-components {count} disagrees with --components ({len(names)} names); "
                "give one of them"
            )
    return names, count
