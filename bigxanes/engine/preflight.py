"""Checks before the long computation: the output location is writable and its file system has
room for the output and the working state (:func:`check_output_location`); on a distributed
cluster, every worker can read the input and write the working state
(:func:`check_paths_on_workers`)."""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

from ..store import disk_bytes as dir_bytes

__all__ = ["check_output_location", "check_paths_on_workers", "DISK_MARGIN", "dir_bytes"]

#: Free space asked beyond the estimate (fraction of it), for metadata and the temp dir.
DISK_MARGIN = 0.10


def _fmt(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"  # pragma: no cover


def _existing_parent(path: Path) -> Path:
    p = path.parent
    while not p.exists():
        if p.parent == p:
            break
        p = p.parent
    return p


def check_output_location(output: str | os.PathLike, need_bytes: int) -> Path:
    """Raise before any computation if ``output`` cannot be written or lacks disk space.

    ``need_bytes`` is the estimated output + working state (``estimate_resources``:
    ``output_disk_bytes + work_disk_bytes``, an uncompressed upper bound). Checks: the nearest
    existing parent is a directory, ``os.access(W_OK)`` and a probe file can be created there
    (this catches read-only mounts even for root, whom permission bits do not stop), and
    ``shutil.disk_usage(parent).free >= need_bytes * (1 + DISK_MARGIN)``.

    Returns the directory checked. Raises ``PermissionError``/``NotADirectoryError`` (unwritable)
    or ``OSError`` subclass :class:`InsufficientSpaceError`-like ``ValueError`` (no room).
    """
    output = Path(output)
    if "://" in str(output):  # remote stores: no local check possible
        return output
    parent = _existing_parent(output)
    if not parent.is_dir():
        raise NotADirectoryError(
            f"cannot write {output}: {parent} is a file, not a directory; choose another output"
        )
    if not os.access(parent, os.W_OK | os.X_OK):
        raise PermissionError(
            f"cannot write {output}: directory {parent} is not writable; choose another output "
            "location or fix its permissions"
        )
    probe = parent / f".bigxanes-probe-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        with open(probe, "wb") as fh:
            fh.write(b"0")
    except OSError as exc:
        raise PermissionError(
            f"cannot write {output}: creating a file in {parent} failed ({exc.strerror}); "
            "choose another output location"
        ) from None
    finally:
        try:
            probe.unlink()
        except OSError:
            pass
    free = shutil.disk_usage(parent).free
    need = int(need_bytes * (1 + DISK_MARGIN))
    if free < need:
        raise ValueError(
            f"not enough free disk for {output}: the output and working state need up to "
            f"{_fmt(need)} but {parent} has {_fmt(free)} free; free some space or write "
            "elsewhere"
        )
    return parent


def _probe_paths(input: str, work_parent: str) -> str | None:
    """Run on a worker: None when ``input`` is a readable Zarr store and ``work_parent`` a
    writable directory there; otherwise the reason."""
    import os

    meta = os.path.join(input, "zarr.json")
    try:
        with open(meta, "rb") as fh:
            fh.read(1)
    except OSError as exc:
        return f"cannot read {meta} ({exc.strerror or type(exc).__name__}) in {os.getcwd()}"
    if not os.path.isdir(work_parent) or not os.access(work_parent, os.W_OK | os.X_OK):
        return f"directory {work_parent} (for the working state) is not writable"
    return None


def check_paths_on_workers(runner: object, input: str | os.PathLike, output: Path) -> None:
    """Before pass 1, on every worker of a distributed ``runner``: the input store is readable
    and the output's directory writable at the same absolute paths (workers of a
    ``--scheduler`` cluster may run on other machines, in other directories). A ValueError
    names the first worker that cannot, and why. No-op on local schedulers and for URLs."""
    client = getattr(runner, "scheduler", None)
    if isinstance(client, str) or client is None or "://" in os.fspath(input):
        return
    parent = str(_existing_parent(Path(output)))
    try:
        answers = client.run(_probe_paths, os.fspath(input), parent)
    except Exception as exc:  # noqa: BLE001 - a failing probe is reported like a bad answer
        answers = {"?": f"the check failed ({type(exc).__name__}: {exc})"}
    bad = {w: why for w, why in answers.items() if why}
    if bad:
        w, why = next(iter(bad.items()))
        raise ValueError(
            f"{len(bad)} of {len(answers)} worker(s) cannot use the run's files (worker {w}: "
            f"{why}); the workers must see {os.fspath(input)} and {parent} at the same "
            "absolute paths as this machine: mount the file system there or copy the stack"
        )
