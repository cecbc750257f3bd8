"""Worker environment of the engine's LocalCluster."""

from __future__ import annotations

import dask
import distributed  # noqa: F401  (loads the distributed.* config defaults)

from bigxanes.engine.cluster import worker_spawn_environ


def test_worker_environ_drops_malloc_trim_threshold():
    """distributed's MALLOC_TRIM_THRESHOLD_ made NumPy temporaries page-fault in workers (5x
    slower ADMM blocks); the thread caps stay."""
    base = dask.config.get("distributed.nanny.pre-spawn-environ")
    with dask.config.set(
        {
            "distributed.nanny.pre-spawn-environ": {
                **base,
                "MALLOC_TRIM_THRESHOLD_": 65536,
                "OMP_NUM_THREADS": 1,
            }
        }
    ):
        env = worker_spawn_environ()
    assert "MALLOC_TRIM_THRESHOLD_" not in env
    assert env["OMP_NUM_THREADS"] == 1


def test_memory_mode_on_a_cluster_equals_zarr_mode_and_in_memory(tmp_path, monkeypatch):
    """Memory mode on a LocalCluster keeps one future per state block, each on its owner
    worker, and cuts the halos where the neighbours live (engine/pinned.py): the same numbers
    as Zarr mode and the in-memory path, on 3 x 4 uneven blocks split over 2 workers."""
    import json

    import numpy as np
    import xarray as xr

    import bigxanes as bx
    import bigxanes.engine.unmix as eu
    from bigxanes.engine import get_client, unmix_store
    from bigxanes.rum import RumParams
    from bigxanes.simulate import simulate
    from bigxanes.store import write_dataset

    monkeypatch.setattr(eu, "STATE_BLOCK_BYTES", 0)  # state blocks = the 16 x 18 tiles
    ds = simulate("particles", (40, 70), 2, sigma=3.0, seed=5)
    inp = tmp_path / "in.zarr"
    write_dataset(ds[["stack", "references"]], inp, chunks=16)
    params = RumParams(
        method="rum-tv", max_iter=7, tv_sweeps=3, tol=1e-12, backend="numba", residual_every=2
    )
    kw = dict(method="rum-tv", params=params, chunks=(16, 18), progress=False, checkpoint_every=3)
    client = get_client(n_workers=2, threads_per_worker=1, memory_limit="1GB")
    try:
        got = {}
        for mode in ("memory", "zarr"):
            out = unmix_store(inp, tmp_path / f"{mode}.zarr", client=client, state_mode=mode, **kw)
            with xr.open_zarr(out, consolidated=False) as o:
                got[mode] = o.load()
    finally:
        cluster = client.cluster
        client.close()
        cluster.close()
    m, z = got["memory"], got["zarr"]
    assert m.attrs["state_mode"] == "memory" and json.loads(m.attrs["state_tiles"]) == [16, 18]
    for name in ("fraction_unmasked", "scale", "residual_rms"):
        assert np.abs(m[name].values - z[name].values).max() <= 1e-6, name
    np.testing.assert_allclose(
        json.loads(m.attrs["history"])["primal"],
        json.loads(z.attrs["history"])["primal"],
        rtol=1e-6,
    )
    mem = bx.unmix(
        ds["stack"],
        ds["references"],
        method="rum-tv",
        max_iter=7,
        tv_sweeps=3,
        tol=1e-12,
        backend="numba",
        residual_every=2,
    )
    assert np.abs(m["fraction_unmasked"].values - mem["fraction_unmasked"].values).max() <= 1e-5
