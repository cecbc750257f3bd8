"""Integrity of input stores: missing or corrupted chunks never become silent data.

Zarr v3 returns the array's ``fill_value`` for a chunk whose file is MISSING, without any error,
and xarray stores floats with ``fill_value = NaN``: a lost chunk would silently become a block of
"NaN pixels" (masked by ``nan_policy="mask"``) or of zeros. So before a run the engine lists the
chunk keys present in the store (one cheap metadata listing, no chunk is read) and compares them
with the expected chunk grid (:func:`check_chunks`); and it reads the stack through
:func:`checked_dask`, which turns a decode error of a chunk (garbage bytes, truncated file) into
a :class:`ChunkError` naming the variable, the chunk key and the chunk index.

:func:`tree_checksum` (sha256 over every file of a store, names included) lets tests prove that
an input store is never modified.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "ChunkError",
    "check_chunks",
    "checked_dask",
    "check_energy_order",
    "tree_checksum",
    "missing_chunks",
    "check_array_chunks",
    "InputChangedError",
    "input_fingerprint",
    "check_fingerprint",
]


class ChunkError(ValueError):
    """A chunk of an input array is missing or cannot be decoded."""


def _open_array(path: str | os.PathLike, name: str):
    import zarr

    from .store import STACK_VAR

    g = zarr.open_group(str(path), mode="r")
    if name == "stack" and "stack" not in g and STACK_VAR in g:
        name = STACK_VAR  # new stores name the stack "absorbance", old ones "stack"
    try:
        return g[name]
    except KeyError:
        raise ValueError(f"{path} has no array {name!r}") from None


def _list_keys(arr) -> set[str]:
    from zarr.core.sync import sync

    async def collect(it):
        return [k async for k in it]

    prefix = f"{arr.path}/" if arr.path else ""
    keys = sync(collect(arr.store.list_prefix(prefix)))
    return {k[len(prefix) :] if k.startswith(prefix) else k for k in keys}


def missing_chunks(path: str | os.PathLike, name: str = "stack") -> list[str]:
    """Chunk (or shard) keys of array ``name`` that the grid expects but the store lacks."""
    return _missing(_open_array(path, name))


def _missing(arr) -> list[str]:
    if arr.fill_value is None or getattr(arr.metadata, "zarr_format", 3) != 3:
        return []  # Zarr v2 sources: no key listing here (their missing chunks raise)
    present = _list_keys(arr)
    return [k for k in arr._iter_shard_keys() if k not in present]


def check_array_chunks(arr, label: str) -> None:
    """:func:`check_chunks` for an open Zarr array (e.g. the source of ``bigxanes import``):
    raise :class:`ChunkError` naming the missing chunk files."""
    missing = _missing(arr)
    if missing:
        shown = ", ".join(missing[:5])
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        raise ChunkError(
            f"{label}: {len(missing)} of {arr._nshards} chunk(s) are missing ({shown}{more}); "
            f"Zarr would silently read them as fill values ({arr.fill_value}): restore the "
            "store from its source"
        )


def check_chunks(path: str | os.PathLike, name: str = "stack") -> None:
    """Raise :class:`ChunkError` if a chunk file of array ``name`` is missing.

    Cost: one listing of the array's keys (no chunk is read): ~10 ms for 10,000 chunks on a
    local disk.
    """
    missing = missing_chunks(path, name)
    if missing:
        arr = _open_array(path, name)
        name = arr.basename
        shown = ", ".join(f"{name}/{k}" for k in missing[:5])
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        raise ChunkError(
            f"input {path}: {len(missing)} of {arr._nshards} chunk(s) of {name!r} are missing "
            f"({shown}{more}); Zarr would silently read them as fill values "
            f"({arr.fill_value}): restore the store from its source (re-run `bigxanes import`)"
        )


def check_energy_order(energy: Iterable[float], where: str = "the stack") -> None:
    """Raise ValueError unless the energies are finite and strictly increasing."""
    e = np.asarray(list(energy) if not isinstance(energy, np.ndarray) else energy, dtype=np.float64)
    if e.ndim != 1 or not np.all(np.isfinite(e)):
        raise ValueError(f"energies of {where} must be a finite 1-D axis")
    if e.size > 1 and not np.all(np.diff(e) > 0):
        i = int(np.flatnonzero(np.diff(e) <= 0)[0])
        raise ValueError(
            f"energies of {where} are not strictly increasing (energy[{i}] = {e[i]:g} >= "
            f"energy[{i + 1}] = {e[i + 1]:g}); sort the images by energy and drop duplicates "
            "(`bigxanes import` does this)"
        )


def _read_block(arr, path: str, var: str, block_id=None, block_info=None):
    loc = block_info[None]["array-location"]
    sel = tuple(slice(a, b) for a, b in loc)
    try:
        return np.asarray(arr[sel])
    except Exception as exc:  # noqa: BLE001 - any decode error names the chunk
        idx = tuple(int(i) for i in block_id)
        key = "c/" + "/".join(map(str, idx))
        raise ChunkError(
            f"input {path}: chunk {var}/{key} (chunk index {idx}) cannot be read "
            f"({type(exc).__name__}: {exc}); the file is corrupted: restore the store from its "
            "source (re-run `bigxanes import`)"
        ) from None


def checked_dask(path: str | os.PathLike, name: str = "stack") -> Any:
    """The array ``name`` of a store as a dask array on its stored chunks, read so that a
    chunk that fails to decode raises :class:`ChunkError` naming it (one task per chunk)."""
    import dask.array as da

    arr = _open_array(path, name)
    name = arr.basename  # "absorbance" (new stores) or "stack" (old ones)
    if arr.shards is not None:
        raise ValueError(f"{path}/{name} is sharded; bigxanes stack stores are not")
    chunks = da.core.normalize_chunks(arr.chunks, arr.shape)
    return da.map_blocks(
        _read_block,
        arr=arr,
        path=str(path),
        var=name,
        chunks=chunks,
        dtype=arr.dtype,
        meta=np.empty((0,) * arr.ndim, dtype=arr.dtype),
    )


def tree_checksum(path: str | os.PathLike) -> str:
    """sha256 over every file below ``path`` (relative names, sizes and contents, in sorted
    order): equal before and after means nothing was added, removed or changed."""
    root = Path(path)
    h = hashlib.sha256()
    files = sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else [root]
    for p in files:
        rel = p.relative_to(root).as_posix() if root.is_dir() else p.name
        h.update(rel.encode() + b"\0")
        with open(p, "rb") as fh:
            data = fh.read()
        h.update(len(data).to_bytes(8, "little"))
        h.update(data)
    return h.hexdigest()


class InputChangedError(ValueError):
    """The input store changed since the run started (or since the interrupted run)."""


def input_fingerprint(path: str | os.PathLike) -> str | None:
    """Fingerprint of a store: sha256 over the contents of its metadata files (``zarr.json``,
    ``.zarray``, ``.zattrs``, ``.zgroup``) and the relative name, size and ``mtime_ns`` of every
    file (the chunk listing); no chunk is read. Any re-import, rewrite, added or removed chunk
    changes it. None for a URL (``s3://``: not checked).

    Cost: one ``stat`` per file (~5 ms per 1,000 chunks on a local disk).
    """
    s = os.fspath(path)
    if "://" in s:
        return None
    root = Path(s)
    h = hashlib.sha256()
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        rel_dir = os.path.relpath(dirpath, root)
        for name in sorted(filenames):
            full = os.path.join(dirpath, name)
            try:
                st = os.stat(full)
            except FileNotFoundError:  # removed while listing: a change anyway
                h.update(b"gone\0")
                continue
            h.update(f"{rel_dir}/{name}\0{st.st_size}\0{st.st_mtime_ns}\0".encode())
            if name in ("zarr.json", ".zarray", ".zattrs", ".zgroup"):
                with open(full, "rb") as fh:
                    h.update(fh.read())
    return h.hexdigest()


def check_fingerprint(path: str | os.PathLike, expected: str | None, when: str, fix: str) -> None:
    """Raise :class:`InputChangedError` if ``path``'s fingerprint is no longer ``expected``."""
    if expected is None:
        return
    if input_fingerprint(path) != expected:
        raise InputChangedError(
            f"input {path} changed {when} (re-imported, rewritten or chunks added/removed): "
            f"results would mix old and new data; {fix}"
        )


#: Environment variable of the fault-injection pause points (tests only), e.g.
#: ``BIGXANES_TEST_PAUSE="after_commit=0.5,before_complete=60"``: sleep that many seconds at
#: that point so a test can SIGKILL the process inside a known window.
PAUSE_ENV = "BIGXANES_TEST_PAUSE"
#: Environment variable (tests only): ``"N"`` ends the process with ``os._exit(KILL_EXIT)``
#: at the N-th fault-injection point it reaches (all points counted, 1-based), as a SIGKILL
#: would: no cleanup, no ``finally``, possibly between two chunk writes of one array.
KILL_ENV = "BIGXANES_TEST_KILL"
#: Environment variable (tests only): append the name of every point reached to this file.
TRACE_ENV = "BIGXANES_TEST_TRACE"
#: Exit status of a process ended at a kill point (that of a SIGKILLed process in a shell).
KILL_EXIT = 137
#: The fault-injection points, in run order: ``pass1_block`` (a pass-1 tile computed, before
#: it is stored), ``admm_block`` (a state block iterated; in zarr state mode after its write),
#: ``after_commit`` (after each iteration's commit record, or checkpoint), ``result_block`` (a
#: block of a result variable computed, before it is written), ``before_complete`` (the
#: output data are written, the completion marker is not yet) and ``after_complete`` (marker
#: written, output not yet renamed into place).
TEST_POINTS = (
    "pass1_block",
    "admm_block",
    "after_commit",
    "result_block",
    "before_complete",
    "after_complete",
)

_hits = [0]
_hits_lock = threading.Lock()


def test_pause(point: str) -> None:
    """A fault-injection point (no-op unless a test sets :data:`PAUSE_ENV`,
    :data:`KILL_ENV` or :data:`TRACE_ENV`): sleep, record, or end the process here."""
    pause, kill, trace = (os.environ.get(k) for k in (PAUSE_ENV, KILL_ENV, TRACE_ENV))
    if not (pause or kill or trace):
        return
    import sys
    import time

    if kill or trace:
        with _hits_lock:
            _hits[0] += 1
            n = _hits[0]
            if trace:
                with open(trace, "a", encoding="utf-8") as fh:
                    fh.write(point + "\n")
            if kill and n == int(kill):
                os._exit(KILL_EXIT)
    for item in (pause or "").split(","):
        name, _, secs = item.partition("=")
        if name.strip() == point:
            print(f"bigxanes-test-pause: {point} pid {os.getpid()}", file=sys.stderr, flush=True)
            time.sleep(float(secs or 1.0))


test_pause.__test__ = False  # not a pytest test


class PointHook:
    """``func`` with the fault-injection point ``point`` before each call (picklable, for the
    block functions the engine maps over blocks)."""

    def __init__(self, func: Any, point: str) -> None:
        import inspect

        self.func, self.point = func, point
        self.__name__ = getattr(func, "__name__", "block")
        try:  # dask passes block_info/block_id only to functions whose signature asks
            self.__signature__ = inspect.signature(func)
        except (TypeError, ValueError):
            pass

    def __dask_tokenize__(self) -> tuple:
        from dask.base import tokenize

        return ("PointHook", self.point, tokenize(self.func))

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        out = self.func(*args, **kwargs)
        test_pause(self.point)
        return out
