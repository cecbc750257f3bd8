"""Dask schedulers for the engine: a LocalCluster sized to the machine, an existing cluster, or
the threaded scheduler for small inputs (docs/design.md, "Measured pitfalls")."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

__all__ = [
    "get_client",
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


def get_client(
    scheduler: str | None = None,
    n_workers: int | None = None,
    threads_per_worker: int = 1,
    memory_limit: str | int | None = "auto",
    processes: bool = True,
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

    Returns
    -------
    distributed.Client
        Close it (and its cluster, ``client.cluster``) when done; the engine does this for
        clients it creates itself.
    """
    from distributed import Client, LocalCluster

    if scheduler is not None:
        return Client(scheduler)
    n = int(n_workers or max(1, (os.cpu_count() or 1) // max(1, threads_per_worker)))
    if memory_limit in (None, "auto"):
        memory_limit = int(0.8 * _total_memory() / n)
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
            dashboard_address=None,
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
