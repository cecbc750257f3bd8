"""The argparse parser of ``bigxanes``: one subparser per module of this package."""

from __future__ import annotations

import argparse
import sys

from . import align, bench, demo, export, import_, info, plot, rank, refs, simulate, spectra, unmix
from .common import PROG

__all__ = ["build_parser", "SUBCOMMANDS"]

#: Subcommand modules, in the order of ``bigxanes --help``.
SUBCOMMANDS = (
    simulate,
    import_,
    align,
    unmix,
    rank,
    spectra,
    refs,
    plot,
    export,
    info,
    bench,
    demo,
)

_FMT = argparse.RawDescriptionHelpFormatter


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, exit code 2 (argparse's convention)
        sub = self.prog.split()[-1]
        hint = f"see '{self.prog} --help'" if sub != PROG else f"see '{PROG} --help'"
        print(f"{PROG}: error: {message} ({hint})", file=sys.stderr)
        raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    """The argparse parser of the ``bigxanes`` command."""
    from .. import __version__

    p = _Parser(
        prog=PROG,
        formatter_class=_FMT,
        description="Chemical phase maps from TXM-XANES stacks (robust unmixing RUM-TV/RUM-PnP, "
        "LCF, Edge-50), in memory or out-of-core on Dask/Zarr.",
        epilog="""first steps:
  bigxanes demo                                    # simulate, unmix, plot, compare (~1 min)
  bigxanes import stack.tif stack.zarr --energies energies.txt
  bigxanes unmix stack.zarr result.zarr --method rum-tv --refs ref1.txt ref2.txt
  bigxanes plot result.zarr result.png
run 'bigxanes COMMAND --help' for the options and examples of each command.""",
    )
    p.add_argument("--version", action="version", version=f"bigxanes {__version__}")
    p.add_argument("--debug", action="store_true", help="show tracebacks of errors")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    def add(name: str, help_: str, epilog: str) -> argparse.ArgumentParser:
        sp = sub.add_parser(
            name, help=help_, description=help_, epilog=epilog, formatter_class=_FMT
        )
        sp.add_argument("-q", "--quiet", action="store_true", help="no progress output")
        sp.add_argument("--debug", action="store_true", help=argparse.SUPPRESS)
        return sp

    for mod in SUBCOMMANDS:
        mod.register(add)
    return p
