"""Dask schedulers for the engine: a LocalCluster sized to the machine, an existing cluster, or
the threaded scheduler for small inputs (docs/design.md, "Measured pitfalls")."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from .planning import MIN_WORKER_BASE, minimum_memory_limit

__all__ = [
    "ClusterError",
    "ClusterWatch",
    "DEFAULT_CONNECT_TIMEOUT",
    "DEFAULT_WORKER_GRACE",
    "MIN_WORKER_BASE",
    "connect",
    "dashboard_available",
    "dashboard_link",
    "minimum_memory_limit",
    "parse_memory_limit",
    "start_local_cluster",
    "validate_cluster_args",
    "get_client",
    "default_worker_limit",
    "Runner",
    "make_runner",
    "SMALL_INPUT_BYTES",
    "WORKER_OVERHEAD",
    "worker_spawn_environ",
]

#: Inputs below this many bytes run on the threaded scheduler without a cluster.
SMALL_INPUT_BYTES = 256 * 2**20
#: Memory a worker process needs for itself (imports, buffers) before it can hold data.
WORKER_OVERHEAD = 256 * 2**20


#: Seconds to wait for a ``--scheduler`` to answer and to have a worker (``--connect-timeout``).
DEFAULT_CONNECT_TIMEOUT = 10.0
#: Seconds a running cluster may have no worker alive before the run stops (``--worker-grace``).
DEFAULT_WORKER_GRACE = 30.0


class ClusterError(ValueError):
    """The cluster cannot run the job: unreachable, no workers, or bad arguments.

    A ``ValueError``: the command line prints it as one line with exit code 2.
    """


def parse_memory_limit(value: str | int | None, flag: str = "--memory-limit") -> int | None:
    """Bytes of a per-worker memory limit (``"2GB"``, ``"512MiB"``, an int); None/"auto" -> None.

    Raises
    ------
    ClusterError
        When the text is not a size; the message names ``flag``.
    """
    if value is None or value == "auto":
        return None
    if isinstance(value, int):
        n = value
    else:
        from dask.utils import parse_bytes

        try:
            n = int(parse_bytes(str(value)))
        except (ValueError, TypeError, KeyError):
            raise ClusterError(
                f"{flag} {value!r} is not a size; write e.g. 2GB, 512MiB or 4e9"
            ) from None
    if n <= 0:
        raise ClusterError(f"{flag} {value!r} must be a positive size, e.g. 2GB")
    return n


def validate_cluster_args(
    n_workers: int | None,
    memory_limit: str | int | None,
    *,
    task_bytes: int = 0,
    minimum: int | None = None,
    connect_timeout: float | None = None,
    worker_grace: float | None = None,
) -> int | None:
    """Check cluster arguments before anything starts; returns the memory limit in bytes.

    Raises
    ------
    ClusterError
        ``--workers`` < 1, a ``--memory-limit`` that is not a size or is below
        ``minimum`` (the run's :func:`~bigxanes.engine.planning.memory_plan` minimum; default
        :func:`minimum_memory_limit` of ``task_bytes``; the message gives it), a timeout <= 0.
    """
    if n_workers is not None and int(n_workers) < 1:
        raise ClusterError(f"--workers must be >= 1, got {n_workers}")
    lim = parse_memory_limit(memory_limit)
    if lim is not None:
        need = minimum_memory_limit(task_bytes) if minimum is None else int(minimum)
        if lim < need:
            raise ClusterError(
                f"--memory-limit {memory_limit} is below the minimum for this run "
                f"({need / 2**20:.0f} MiB per worker: a worker's own "
                f"{MIN_WORKER_BASE / 2**20:.0f} MiB plus two of its largest tasks at the "
                f"smallest tiles); give at least {int(-(-need // 2**20))}MiB, or store the "
                "stack in smaller chunks (bigxanes simulate --chunks, import --tile)"
            )
    for flag, v in (("--connect-timeout", connect_timeout), ("--worker-grace", worker_grace)):
        if v is not None and not float(v) > 0:
            raise ClusterError(f"{flag} must be > 0 seconds, got {v}")
    return lim


def connect(address: str, timeout: float = DEFAULT_CONNECT_TIMEOUT):
    """A :class:`distributed.Client` of the scheduler at ``address`` with at least one worker.

    Raises
    ------
    ClusterError
        Within about ``timeout`` seconds (twice at most: connecting, then waiting for a
        worker) when the scheduler does not answer or has no worker.
    """
    import logging

    from distributed import Client

    log = logging.getLogger("distributed")
    old = log.level
    log.setLevel(logging.CRITICAL)  # the failed connection attempts are reported below, once
    try:
        try:
            client = Client(address, timeout=f"{float(timeout)}s")
        except (OSError, TimeoutError, ValueError) as exc:
            detail = str(exc).split("\n")[0][:120] or type(exc).__name__
            raise ClusterError(
                f"cannot reach the scheduler {address} within {timeout:g} s ({detail}); check "
                "--scheduler (tcp://HOST:PORT) and that the scheduler runs, or raise "
                "--connect-timeout"
            ) from None
        try:
            client.wait_for_workers(1, timeout=float(timeout))
        except (TimeoutError, OSError):
            client.close()
            raise ClusterError(
                f"the scheduler {address} has no worker (waited {timeout:g} s); start workers "
                "(dask worker " + address + ") or raise --connect-timeout"
            ) from None
    finally:
        log.setLevel(old)
    return client


@contextlib.contextmanager
def _sigint_ignored() -> Iterator[None]:
    """Ignore SIGINT while processes are spawned: they inherit it, so Ctrl-C reaches only this
    process (which closes the cluster) instead of printing one traceback per worker."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old)


def dashboard_available() -> bool:
    """True when distributed can serve its dashboard (it needs ``bokeh``)."""
    import importlib.util

    return importlib.util.find_spec("bokeh") is not None


def dashboard_link(client: Any) -> str | None:
    """URL of the dashboard of ``client``'s scheduler, None when it serves none."""
    try:
        services = client.scheduler_info().get("services", {}) or {}
    except Exception:  # noqa: BLE001 - no dashboard to show is not an error
        return None
    if not services.get("dashboard"):
        return None
    try:
        link = client.dashboard_link
    except Exception:  # noqa: BLE001
        return None
    return str(link) if link else None


def start_local_cluster(n_workers: int | None = None, memory_limit: str | int | None = "auto"):
    """:func:`get_client` for a new LocalCluster whose worker processes ignore SIGINT and log
    critical messages only: their WARNING lines (tasks cancelled by a Ctrl-C) and ERROR
    tracebacks (a heartbeat to the scheduler that a Ctrl-C already closed, measured: 30
    lines after "interrupted") would break the one-line contract of the command line; a
    task's error reaches the command as an exception, a worker that dies through the watch.
    Its dashboard is served on a free port of 127.0.0.1 when ``bokeh`` is installed
    (:func:`dashboard_link`)."""
    import logging
    import warnings

    with _sigint_ignored(), warnings.catch_warnings():
        # another cluster on this machine holds the dashboard's port: not the user's concern
        warnings.filterwarnings("ignore", message=r"Port \d+ is already in use")
        return get_client(
            n_workers=n_workers,
            memory_limit=memory_limit or "auto",
            worker_log_level=logging.CRITICAL,
            dashboard=dashboard_available(),
        )


class ClusterWatch:
    """Watch a client's workers in a thread; when no worker has stayed alive ``stable``
    seconds for ``grace`` seconds (none alive, or workers that keep dying and being restarted
    by their nannies: a memory limit too small), interrupt the main thread
    (``KeyboardInterrupt`` there; :attr:`tripped` tells it apart from Ctrl-C, :meth:`describe`
    says which).

    Use as a context manager around the computation.
    """

    def __init__(
        self,
        client: Any,
        grace: float = DEFAULT_WORKER_GRACE,
        poll: float = 0.5,
        stable: float | None = None,
    ):
        self.client, self.grace, self.poll = client, float(grace), float(poll)
        #: a worker alive this long counts as healthy (a restart loop never gets there)
        self.stable = min(self.grace / 2, 10.0) if stable is None else float(stable)
        self.tripped = False
        self.restarts = 0  # workers lost during the unhealthy stretch that tripped the watch
        self.alive = 0  # workers alive when it tripped
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bigxanes-cluster-watch")
        self._thread.daemon = True

    def _workers(self) -> set:
        try:
            info = self.client.scheduler_info()
        except Exception:  # noqa: BLE001 - a scheduler gone counts as no worker
            return set()
        return set(info.get("workers", {}))

    def _n_workers(self) -> int:
        return len(self._workers())

    def _interrupt_main(self) -> None:
        """A real SIGINT to the main thread: it also wakes a main thread blocked in a wait
        (``_thread.interrupt_main`` alone only acts once the main thread runs Python again)."""
        import _thread

        if (
            hasattr(signal, "pthread_kill")
            and signal.getsignal(signal.SIGINT) is signal.default_int_handler
        ):
            signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)
        else:
            _thread.interrupt_main()

    def _run(self) -> None:
        first_seen: dict[str, float] = {}
        since = None  # start of the current stretch without a healthy worker
        lost = 0
        while not self._stop.wait(self.poll):
            now = time.monotonic()
            cur = self._workers()
            gone = set(first_seen) - cur
            for a in gone:
                del first_seen[a]
            for a in cur:
                first_seen.setdefault(a, now)
            if any(now - t >= self.stable for t in first_seen.values()):
                since, lost = None, 0
                continue
            since = now if since is None else since
            lost += len(gone)
            if now - since >= self.grace:
                self.tripped, self.restarts, self.alive = True, lost, len(cur)
                self._interrupt_main()
                return

    def describe(self) -> str:
        """Why the watch tripped, naming the flags that change it."""
        if self.restarts or self.alive:
            return (
                f"the workers kept dying and restarting for {self.grace:g} s (--worker-grace; "
                f"{self.restarts} lost, none stayed up {self.stable:g} s): out of memory? "
                "raise --memory-limit, use smaller --chunks or fewer --workers"
            )
        return (
            f"no worker alive for {self.grace:g} s (--worker-grace): the workers died (out of "
            "memory? raise --memory-limit) or were stopped"
        )

    def __enter__(self) -> ClusterWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join(timeout=2 * self.poll + 1)


def _available_memory() -> int:
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except Exception:  # pragma: no cover
        return 2 * 2**30


def _total_memory() -> int:
    try:
        import psutil

        return int(psutil.virtual_memory().total)
    except Exception:  # pragma: no cover - psutil is a distributed dependency
        return 8 * 2**30


def worker_spawn_environ() -> dict:
    """Environment for new worker processes: distributed's ``pre-spawn-environ`` without
    ``MALLOC_TRIM_THRESHOLD_``.

    Distributed sets ``MALLOC_TRIM_THRESHOLD_=65536`` in its workers; any explicit glibc malloc
    threshold switches off glibc's dynamic mmap threshold, so every NumPy temporary larger
    than 128 KiB is a fresh ``mmap`` whose pages fault in on first touch. Measured here
    (benchmarks/results/engine.md): an ADMM block update took 0.155 s in a worker against
    ~0.03 s in the main process, 5x slower; elementwise NumPy on 14 MB arrays 2x slower. The
    BLAS/OpenMP thread caps (one thread per worker) are kept.
    """
    import dask
    import distributed  # noqa: F401  (its import loads the ``distributed.*`` config defaults)

    env = dict(dask.config.get("distributed.nanny.pre-spawn-environ", {}) or {})
    env.pop("MALLOC_TRIM_THRESHOLD_", None)
    return env


def default_worker_limit(n_workers: int | None = None, threads_per_worker: int = 1):
    """``(workers, memory limit per worker)`` of the LocalCluster :func:`get_client` starts
    without ``--workers``/``--memory-limit``: one worker per core, 80 % of the machine's
    memory shared among them."""
    n = int(n_workers or max(1, (os.cpu_count() or 1) // max(1, threads_per_worker)))
    return n, int(0.8 * _total_memory() / n)


def get_client(
    scheduler: str | None = None,
    n_workers: int | None = None,
    threads_per_worker: int = 1,
    memory_limit: str | int | None = "auto",
    processes: bool = True,
    worker_log_level: int | None = None,
    dashboard: bool = False,
):
    """Return a :class:`distributed.Client`.

    Parameters
    ----------
    scheduler : str, optional
        Address of a running scheduler (e.g. ``"tcp://host:8786"``, a dask-jobqueue cluster);
        None starts a :class:`distributed.LocalCluster` on this machine.
    n_workers : int, optional
        Workers of the local cluster; default one per core (Zarr v3 decodes poorly on threads,
        so processes with one thread each are the default).
    threads_per_worker : int
    memory_limit : str or int, optional
        Per-worker memory limit (e.g. ``"2GB"``); ``"auto"``/None = 80 % of the machine's
        memory divided among the workers.
    processes : bool
    worker_log_level : int, optional
        ``logging`` level of the LocalCluster's workers (distributed's default: WARNING).
    dashboard : bool
        Serve the LocalCluster's dashboard on a free port of 127.0.0.1 (needs ``bokeh``);
        default off.

    Returns
    -------
    distributed.Client
        Close it (and its cluster, ``client.cluster``) when done; the engine does this for
        clients it creates itself.
    """
    from distributed import Client, LocalCluster

    if scheduler is not None:
        return Client(scheduler)
    n, auto = default_worker_limit(n_workers, threads_per_worker)
    if memory_limit in (None, "auto"):
        memory_limit = auto
    import dask
    from dask.utils import parse_bytes

    lim = parse_bytes(memory_limit) if isinstance(memory_limit, str) else int(memory_limit or 0)
    # tight workers (< 1 GiB) keep distributed's aggressive trimming: without it the
    # out-of-core test's 250 MiB workers went over their limit
    env = (
        worker_spawn_environ()
        if lim == 0 or lim >= 2**30
        else dict(dask.config.get("distributed.nanny.pre-spawn-environ", {}) or {})
    )
    with dask.config.set({"distributed.nanny.pre-spawn-environ": env}):
        cluster = LocalCluster(
            n_workers=n,
            threads_per_worker=threads_per_worker,
            memory_limit=memory_limit,
            processes=processes,
            dashboard_address="127.0.0.1:0" if dashboard else None,
            **({} if worker_log_level is None else {"silence_logs": worker_log_level}),
        )
    return Client(cluster)


@dataclass
class Runner:
    """Where graphs run: a distributed client or a local scheduler name."""

    scheduler: Any  # a distributed.Client or "threads" / "synchronous"
    owned: bool = False

    @property
    def distributed(self) -> bool:
        return not isinstance(self.scheduler, str)

    def compute(self, *objs):
        """One ``dask.compute`` of all ``objs`` (shared tasks run once)."""
        import dask

        return dask.compute(*objs, scheduler=self.scheduler)

    def persist(self, *objs):
        """Persist ``objs`` (in the workers' memory, or as NumPy chunks locally); one graph."""
        import dask

        if self.distributed:
            out = self.scheduler.persist(list(objs))
            return tuple(out)
        return dask.persist(*objs, scheduler=self.scheduler)

    def workers(self) -> dict:
        """The distributed scheduler's record of every worker (``{}`` on local schedulers)."""
        if not self.distributed:
            return {}
        try:
            info = self.scheduler.scheduler_info(n_workers=-1)
        except TypeError:  # older distributed
            info = self.scheduler.scheduler_info()
        return info.get("workers", {})

    def memory_bytes(self) -> int:
        """Memory available for persisted data: the sum over workers of (memory limit -
        :data:`WORKER_OVERHEAD`), or the machine's available memory on local schedulers."""
        if not self.distributed:
            return _available_memory()
        workers = self.workers()
        total = 0
        for w in workers.values():
            lim = int(w.get("memory_limit") or 0)
            if lim <= 0:  # no limit: share the machine's memory
                lim = _total_memory() // max(1, len(workers))
            total += max(0, lim - WORKER_OVERHEAD)
        return total

    def close(self) -> None:
        if self.owned and self.distributed:
            client = self.scheduler
            cluster = getattr(client, "cluster", None)
            client.close()
            if cluster is not None:
                cluster.close()


def make_runner(
    nbytes: int,
    *,
    client=None,
    scheduler: str | None = None,
    n_workers: int | None = None,
    memory_limit: str | int | None = None,
) -> Runner:
    """Choose the scheduler for an input of ``nbytes``.

    A given ``client`` is used as is; ``scheduler`` (an address, or ``"threads"`` /
    ``"synchronous"``) joins that scheduler; otherwise small inputs (< :data:`SMALL_INPUT_BYTES`,
    no ``n_workers``/``memory_limit`` asked) run on the threaded scheduler and larger ones on a
    new LocalCluster, closed by :meth:`Runner.close`.
    """
    if client is not None:
        return Runner(client, owned=False)
    if scheduler in ("threads", "synchronous", "sync", "processes"):
        return Runner("synchronous" if scheduler == "sync" else scheduler, owned=False)
    if scheduler is not None:
        return Runner(get_client(scheduler), owned=True)
    if nbytes < SMALL_INPUT_BYTES and n_workers is None and memory_limit is None:
        return Runner("threads", owned=False)
    return Runner(get_client(n_workers=n_workers, memory_limit=memory_limit or "auto"), owned=True)
