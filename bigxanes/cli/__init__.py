"""The ``bigxanes`` command line: simulate, import, unmix, refs, rank, plot, info, bench, demo.

One module per subcommand (``register`` adds its parser, ``run`` executes it) over the library
(:mod:`bigxanes.importers`, :mod:`bigxanes.references`, :mod:`bigxanes.engine`,
:mod:`bigxanes.plot`, ...); shared helpers in :mod:`.common`, output-path safety in
:mod:`bigxanes.paths`, exception -> message in :mod:`.errors`. A user mistake is printed as ONE
line ``bigxanes: error: <message>`` on stderr with exit code 2; ``--debug`` shows the traceback.
See docs/cli.md for the reference and the "bad input -> what the user sees" table.
"""

from __future__ import annotations

import re
import sys
import warnings
from collections.abc import Sequence

from .common import UserError, warn
from .errors import report
from .parser import build_parser

__all__ = ["main", "build_parser", "UserError"]


def _showwarning(message, category, filename, lineno, file=None, line=None):
    text = str(message)
    if "bigxanes" in str(filename) or issubclass(category, UserWarning):
        warn(text)
    else:  # pragma: no cover - third-party noise keeps the default format
        sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))


#: Flags whose value may start with "-" (negative numbers, lists like ``-3,2``): argparse would
#: take ``--energy-shift -3,2`` for a flag without its value.
_SIGNED_VALUE_FLAGS = ("--energy-shift",)
_SIGNED = re.compile(r"^-[\d.]+(,[-+]?[\d.]+)*$")


def _join_signed_values(argv: list[str]) -> list[str]:
    """``--energy-shift -3,2`` -> ``--energy-shift=-3,2``."""
    out: list[str] = []
    i = 0
    while i < len(argv):
        a = argv[i]
        if a in _SIGNED_VALUE_FLAGS and i + 1 < len(argv) and _SIGNED.match(argv[i + 1]):
            out.append(f"{a}={argv[i + 1]}")
            i += 2
            continue
        out.append(a)
        i += 1
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``bigxanes`` command line; returns the exit code (0 ok, 2 user error,
    130 interrupted, 1 internal error)."""
    argv = _join_signed_values([str(a) for a in (sys.argv[1:] if argv is None else argv)])
    debug = "--debug" in argv
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:
        return int(e.code or 0) if not isinstance(e.code, str) else 2
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    args._argv = [a for a in argv[argv.index(args.command) + 1 :]] if args.command in argv else []
    old = warnings.showwarning
    warnings.showwarning = _showwarning
    try:
        rc = int(args.func(args) or 0)
        sys.stdout.flush()
        return rc
    except BaseException as exc:  # noqa: BLE001 - every failure becomes one line (errors.py)
        if isinstance(exc, SystemExit):
            raise
        return report(exc, args.command, debug)
    finally:
        warnings.showwarning = old
