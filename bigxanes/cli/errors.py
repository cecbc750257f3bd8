"""Exceptions -> one line on stderr and an exit code (issue 13, items 5 and 6).

User mistakes and environment failures (missing file, disk full, read-only output, a corrupt
chunk, an unreachable scheduler, ...) print ``bigxanes: error: <message>`` and exit 2; Ctrl-C
prints ``bigxanes: error: interrupted`` and exits 130; a closed stdout pipe (``info | head``)
exits 0 quietly; anything else is an internal error: one line, exit 1. ``--debug`` prints the
traceback first. Messages written for Python callers (``pass energies=``) are reworded with the
command line's flags (:data:`FLAG_WORDING`).
"""

from __future__ import annotations

import errno
import os
import re
import sys
import traceback

from .common import err

__all__ = ["USER_ERRORS", "FLAG_WORDING", "to_flags", "report"]

USER_ERRORS = (
    ValueError,
    FileNotFoundError,
    FileExistsError,
    KeyError,
    NotADirectoryError,
    IsADirectoryError,
    PermissionError,
)

#: Python-parameter wording of library messages -> the flag a command-line user passes.
FLAG_WORDING: tuple[tuple[str, str], ...] = (
    (
        r"pass energies= \(an array or a text file\) or energies_dataset=NAME\.?",
        "pass --energies FILE",
    ),
    (
        r"pass energies= \(an array or a text file with one energy per line\)\.?",
        "pass --energies FILE (one energy per line)",
    ),
    (r"pass energies=", "pass --energies FILE"),
    (r"pass dataset=NAME\.?", "pass --dataset PATH"),
    (r"dataset=NAME\.?", "--dataset PATH"),
    (
        r"[Pp]ass column=NAME\.?",
        "save the spectrum as a two-column table (energy, value) and give that file to --refs",
    ),
    (r"pass references=", "pass --refs FILE [FILE ...]"),
    (r"pass overwrite=True \(--overwrite\)", "pass --overwrite"),
    (r"pass nan_policy='mask' to exclude them", "the command line masks them (mask = False)"),
    (
        r"pass nan_policy='mask' \(bigxanes unmix masks them\) to exclude them",
        "bigxanes unmix masks them (mask = False)",
    ),
    (r"max_iter must be >= 0 and tv_sweeps >= 1", "--iters must be >= 0 and --tv-sweeps >= 1"),
    (r"\bmax_iter\b", "--iters"),
    (r"\bL must be >= 1", "--n-components must be >= 1"),
    (r"\bn_components must be >= 1", "--n-components must be >= 1"),
    (r"checkpoint_every must be", "--checkpoint-every must be"),
    (r"^tol must be", "--tol must be"),
    (r"^rho must be", "--rho must be"),
    (r"^relax must be", "--relax must be"),
    (r"^change_tol must be", "--change-tol must be"),
    (r"^lam_factor must be", "--lam-factor must be"),
    (r"^lam must be", "--lam must be"),
    (
        r"^backend 'numba' needs the numba package; use backend 'numpy'",
        "--backend numba needs the numba package; pass --backend numpy",
    ),
    (
        r"Could not interpret '([^']*)' as a byte unit",
        r"--memory-limit '\1' is not a size (e.g. 2GB)",
    ),
)


def to_flags(msg: str) -> str:
    """``msg`` with Python parameter names replaced by command-line flags."""
    for pat, rep in FLAG_WORDING:
        msg = re.sub(pat, rep, msg)
    return msg


def _oserror_message(exc: OSError) -> str | None:
    where = exc.filename or ""
    if exc.errno == errno.ENOSPC:
        return (
            f"disk full while writing {where or 'the output'}: free some space or write the "
            "output elsewhere (an interrupted unmix continues with --resume)"
        )
    if exc.errno == errno.EROFS:
        return f"cannot write {where}: the file system is read-only; choose another output path"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return f"permission denied: {where}; choose another path or fix its permissions"
    if exc.errno == errno.ELOOP:
        return f"{where} is a symlink loop (it points back to itself); fix or remove the link"
    if exc.errno == errno.EDQUOT:
        return f"disk quota exceeded while writing {where}: free some space or write elsewhere"
    return None


def _killed_worker(exc: BaseException) -> bool:
    return type(exc).__name__ == "KilledWorker"


def report(exc: BaseException, command: str | None, debug: bool) -> int:
    """Print ``exc`` as one line (the traceback first with ``debug``); return the exit code."""
    if isinstance(exc, BrokenPipeError):  # `bigxanes info X | head`: the reader has gone
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        except (OSError, ValueError):
            pass
        return 0
    if debug:
        traceback.print_exc()
    if isinstance(exc, KeyboardInterrupt):
        err(
            "interrupted"
            + (" (bigxanes unmix ... --resume continues)" if command == "unmix" else "")
        )
        return 130
    if isinstance(exc, OSError):
        msg = _oserror_message(exc)
        if msg is not None:
            err(msg)
            return 2
    if isinstance(exc, RecursionError):
        err(
            "a structure is nested too deeply to read (e.g. store attributes nested hundreds "
            "of levels); rewrite the file with flat attributes"
        )
        return 2
    if _killed_worker(exc):
        err(
            f"a Dask worker died running the job (out of memory?): raise --memory-limit, use "
            f"smaller --chunks or fewer --workers; --resume continues ({exc})"
        )
        return 2
    if isinstance(exc, TimeoutError):
        err(f"timed out ({exc}); check --scheduler, or raise --connect-timeout")
        return 2
    if isinstance(exc, USER_ERRORS):
        msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        if isinstance(exc, KeyError):
            msg = f"not found: {msg}"
        elif isinstance(exc, OSError) and not str(exc.args[-1] if exc.args else "").strip():
            msg = f"{exc.strerror or exc}: {exc.filename}"
        text = str(msg) or type(exc).__name__
        if isinstance(exc, OSError) and exc.filename and str(exc.filename) not in text:
            text = f"{text}: {exc.filename}"
        err(to_flags(text))
        return 2
    if isinstance(exc, OSError):
        err(f"{exc.strerror or exc}: {exc.filename or ''} (rerun with --debug for details)")
        return 2
    err(
        f"internal error {type(exc).__name__}: {str(exc)[:300]} (rerun with --debug for the "
        "traceback and report it)"
    )
    return 1
