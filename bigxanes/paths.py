"""Output-path safety: what ``--overwrite`` may replace, outputs that overlap inputs, stale
leftovers of interrupted runs, absolute paths for cluster workers, and the umask.

Every command that writes calls :func:`check_output` before it reads anything:

- an output equal to, inside, or containing one of the command's inputs is refused (paths are
  resolved, symlinks followed), so no command can write into or delete its own input;
- an existing output is replaced only with ``overwrite`` AND only when it is something bigxanes
  wrote (:func:`written_by_bigxanes`): a Zarr store carrying the ``bigxanes_complete`` attribute,
  a text table whose first line starts with ``# bigxanes``, or a figure whose file signature
  matches its suffix and whose metadata name bigxanes as its writer
  (:func:`bigxanes.plot.figure_metadata`; PNG ``Software``, PDF/SVG ``Creator``). Anything
  else (a folder of raw TIFFs, a foreign file, a figure another program drew) is refused with
  a message that says to choose another output.
"""

from __future__ import annotations

import errno
import os
import shutil
from collections.abc import Iterable, Sequence
from pathlib import Path

__all__ = [
    "OutputPathError",
    "check_output",
    "written_by_bigxanes",
    "resolve",
    "absolute",
    "stale_leftovers",
    "clean_stale_leftovers",
    "apply_umask",
    "current_umask",
]

#: Folder suffix of the engine's working state (iterates, pass-1 arrays, commit record).
WORK_SUFFIX = ".work"
#: Suffixes of the temporary siblings of :func:`bigxanes.store.write_dataset`.
TEMP_TAGS = (".partial-", ".old-")
_IMAGE_MAGIC = {
    ".png": b"\x89PNG\r\n\x1a\n",
    ".pdf": b"%PDF",
    ".svg": b"<?xml",
}


class OutputPathError(ValueError):
    """An output path that would overwrite, or overlap, data bigxanes did not write."""


def resolve(path: str | os.PathLike) -> Path:
    """Absolute path with every symlink followed (``strict=False``: the tail may not exist).

    Raises
    ------
    OutputPathError
        On a symlink loop (``ELOOP``), named in the message.
    """
    try:
        return Path(os.path.realpath(os.fspath(path), strict=True))
    except (FileNotFoundError, NotADirectoryError):  # the tail does not exist (yet)
        return Path(os.path.realpath(os.fspath(path)))
    except OSError as exc:
        if exc.errno == errno.ELOOP or "loop" in str(exc).lower():
            raise OutputPathError(
                f"{path} is a symlink loop (it points back to itself); fix or remove the link"
            ) from None
        raise


def absolute(path: str | os.PathLike | None) -> str | None:
    """``path`` as an absolute, symlink-resolved string (URLs such as ``s3://`` unchanged).

    Workers of a ``--scheduler`` cluster run in their own directory: every path that reaches
    a graph must be absolute (issue 13, item 2).
    """
    if path is None:
        return None
    s = os.fspath(path)
    if "://" in s:
        return s
    return str(resolve(s))


def _contains(outer: Path, inner: Path) -> bool:
    return inner == outer or outer in inner.parents


def _is_bigxanes_store(path: Path) -> bool:
    from .store import COMPLETE_ATTR

    meta = path / "zarr.json"
    if not meta.is_file():
        return False
    try:
        import json

        attrs = json.loads(meta.read_text(encoding="utf-8")).get("attributes", {}) or {}
    except (OSError, ValueError, AttributeError):
        return False
    return COMPLETE_ATTR in attrs


def _is_bigxanes_file(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            head = fh.read(4096)
    except OSError:
        return False
    if head.startswith(b"# bigxanes"):
        return True
    magic = _IMAGE_MAGIC.get(path.suffix.lower())
    if not magic or not head.startswith(magic):
        return False
    if b"bigxanes" in head:  # PNG tEXt chunks and SVG metadata come first
        return True
    try:  # the PDF info dictionary comes last
        with open(path, "rb") as fh:
            fh.seek(max(0, path.stat().st_size - 8192))
            return b"bigxanes" in fh.read()
    except OSError:
        return False


def written_by_bigxanes(path: str | os.PathLike) -> bool:
    """True when ``path`` is something a bigxanes command wrote (see the module docstring)."""
    p = Path(path)
    if p.is_dir():
        return _is_bigxanes_store(p)
    if p.is_file():
        return _is_bigxanes_file(p)
    return False


def check_output(
    output: str | os.PathLike,
    inputs: Iterable[str | os.PathLike | None] = (),
    *,
    overwrite: bool = False,
    resume: bool = False,
) -> Path:
    """Refuse an output that would destroy data; return it resolved.

    Parameters
    ----------
    output : path
        Where the command writes.
    inputs : iterable of paths
        Everything the command reads (None entries are skipped; URLs are not checked).
    overwrite : bool
        ``--overwrite`` was given: an existing bigxanes output may be replaced.
    resume : bool
        ``--resume`` was given: an existing output is the run's own (the engine checks it).

    Raises
    ------
    OutputPathError
        Output equal to, inside or containing an input; an existing output without
        ``--overwrite``; an existing output bigxanes did not write (even with ``--overwrite``).
    """
    if "://" in os.fspath(output):
        return Path(output)
    out = resolve(output)
    for inp in inputs:
        if inp is None or "://" in os.fspath(inp):
            continue
        src = resolve(inp)
        if _contains(src, out):
            what = "is" if src == out else "lies inside"
            raise OutputPathError(
                f"output {output} {what} the input {inp}: bigxanes never writes into its "
                "input; choose another output path"
            )
        if _contains(out, src):
            raise OutputPathError(
                f"output {output} contains the input {inp} (replacing it would delete the "
                "input); choose another output path"
            )
    if out.exists() or Path(output).is_symlink():
        if resume:
            return out
        if not overwrite:
            hint = (
                "pass --overwrite to replace it"
                if written_by_bigxanes(out)
                else "choose another output path (it was not written by bigxanes, so "
                "--overwrite will not replace it)"
            )
            raise OutputPathError(f"output {output} already exists; {hint}")
        if not written_by_bigxanes(out):
            kind = "folder" if out.is_dir() else "file"
            raise OutputPathError(
                f"output {output} is a {kind} that bigxanes did not write; --overwrite only "
                "replaces bigxanes stores, tables and figures: choose another output path"
            )
    return out


def _pid_of(name: str, stem: str) -> int | None:
    for tag in TEMP_TAGS:
        if name.startswith(stem + tag):
            try:
                return int(name[len(stem + tag) :])
            except ValueError:
                return None
    return None


def stale_leftovers(output: str | os.PathLike) -> tuple[list[Path], Path | None]:
    """Temporary siblings of ``output`` left by dead processes, and its work folder.

    Returns
    -------
    (list of Path, Path or None)
        ``OUTPUT.partial-<pid>`` / ``OUTPUT.old-<pid>`` whose process no longer exists, and
        ``OUTPUT.work`` if present (an interrupted or failed ``unmix``; ``--resume`` uses it).
    """
    from .engine.locking import pid_alive

    out = Path(output)
    parent = out.parent if str(out.parent) else Path(".")
    partials: list[Path] = []
    if parent.is_dir():
        for p in parent.iterdir():
            pid = _pid_of(p.name, out.name)
            if pid is not None and pid != os.getpid() and not pid_alive(pid):
                partials.append(p)
    work = out.with_name(out.name + WORK_SUFFIX)
    return sorted(partials), (work if work.is_dir() else None)


def clean_stale_leftovers(output: str | os.PathLike) -> list[Path]:
    """Delete the dead ``.partial-<pid>``/``.old-<pid>`` siblings of ``output``; return them."""
    partials, _ = stale_leftovers(output)
    for p in partials:
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
        else:
            try:
                p.unlink()
            except OSError:
                pass
    return partials


def current_umask() -> int:
    """The process umask (read by setting and restoring it)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def apply_umask(paths: Sequence[str | os.PathLike] | str | os.PathLike) -> None:
    """Give files written through ``mkstemp`` (mode 0600) the mode ``0666 & ~umask``."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    mode = 0o666 & ~current_umask()
    for p in paths:
        if Path(p).is_file():
            os.chmod(p, mode)
