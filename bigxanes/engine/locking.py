"""One run per output: the ``OUTPUT.lock`` file.

The lock is created with ``O_CREAT | O_EXCL`` (atomic on local file systems and on NFSv3+) and
holds JSON ``{"pid", "host", "time"}``. A second run on the same output refuses with
:class:`OutputLockedError` (a ``FileExistsError``: the CLI prints one line, exit code 2) instead
of interleaving writes into ``OUTPUT.work`` and ``OUTPUT``. The lock is removed when the run
ends, whether it succeeds or raises. A lock left by a process that was killed (SIGKILL, power
loss) is *stale*: if it names this host and a pid that no longer exists it is taken over with a
warning; a lock from another host cannot be checked and is reported (delete it by hand when you
know that run is gone).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import time
import warnings
from pathlib import Path

__all__ = ["OutputLock", "OutputLockedError", "lock_path", "pid_alive", "remove_stale_partials"]


class OutputLockedError(FileExistsError):
    """Another run holds the output's lock."""


def lock_path(output: str | os.PathLike) -> Path:
    output = Path(output)
    return output.with_name(output.name + ".lock")


def pid_alive(pid: int) -> bool:
    """True when a process ``pid`` exists on this host (zombies count as dead)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie (killed, not yet reaped by its parent) is dead for our purpose
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def _read(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


class OutputLock:
    """Context manager holding ``OUTPUT.lock`` for the duration of a run."""

    def __init__(self, output: str | os.PathLike) -> None:
        self.output = Path(output)
        self.path = lock_path(self.output)
        self.held = False

    def acquire(self) -> OutputLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        info = {"pid": os.getpid(), "host": socket.gethostname(), "time": time.time()}
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                self._handle_existing()
                continue
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(info, fh)
            self.held = True
            return self
        raise OutputLockedError(
            f"could not lock {self.output}: {self.path} keeps reappearing "
            "(another run is starting on the same output)"
        )

    def _handle_existing(self) -> None:
        other = _read(self.path)
        if other is None:  # being written right now, or garbage: give the writer a moment
            time.sleep(0.2)
            other = _read(self.path)
        if other is None:
            raise OutputLockedError(
                f"output {self.output} is locked by {self.path} (unreadable); if no other run "
                "is writing it, delete that file and retry"
            )
        pid, host = int(other.get("pid", -1)), str(other.get("host", "?"))
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(other.get("time", 0))))
        if host == socket.gethostname() and not pid_alive(pid):
            warnings.warn(
                f"taking over the stale lock {self.path} of run pid {pid} (started "
                f"{since}), which no longer exists",
                RuntimeWarning,
                stacklevel=3,
            )
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass
            return
        raise OutputLockedError(
            f"output {self.output} is in use by another run (pid {pid} on {host}, started "
            f"{since}); wait for it to finish, or if that run is gone, delete {self.path}"
        )

    def release(self) -> None:
        if self.held:
            cur = _read(self.path)
            if cur is not None and cur.get("pid") == os.getpid():
                try:
                    os.unlink(self.path)
                except FileNotFoundError:
                    pass
            self.held = False

    def __enter__(self) -> OutputLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def remove_stale_partials(output: str | os.PathLike) -> list[Path]:
    """Delete ``OUTPUT.partial-<pid>`` / ``OUTPUT.old-<pid>`` left by dead runs on this host
    (call while holding the lock). Returns the removed paths."""
    output = Path(output)
    removed = []
    if not output.parent.is_dir():
        return removed
    for p in output.parent.iterdir():
        for tag in (".partial-", ".old-"):
            if p.name.startswith(output.name + tag):
                try:
                    pid = int(p.name[len(output.name + tag) :])
                except ValueError:
                    continue
                if pid != os.getpid() and not pid_alive(pid):
                    shutil.rmtree(p, ignore_errors=True)
                    removed.append(p)
    return removed
