"""Worker environment of the engine's LocalCluster."""

from __future__ import annotations

import dask
import distributed  # noqa: F401  (loads the distributed.* config defaults)

from bigxanes.engine.cluster import worker_spawn_environ


def test_worker_environ_drops_malloc_trim_threshold():
    """distributed's MALLOC_TRIM_THRESHOLD_ made NumPy temporaries page-fault in workers (5x
    slower ADMM blocks); the thread caps stay."""
    base = dask.config.get("distributed.nanny.pre-spawn-environ")
    with dask.config.set({"distributed.nanny.pre-spawn-environ":
                          {**base, "MALLOC_TRIM_THRESHOLD_": 65536, "OMP_NUM_THREADS": 1}}):
        env = worker_spawn_environ()
    assert "MALLOC_TRIM_THRESHOLD_" not in env
    assert env["OMP_NUM_THREADS"] == 1
