"""Out-of-core: a stack 4x larger than the cluster's total memory limit runs LCF and RUM-TV
iterations to completion, no worker killed or restarted, every worker's RSS under its limit."""

from __future__ import annotations

import threading
import time

import dask.array as da
import numpy as np
import pytest
import xarray as xr

from bigxanes.engine import get_client, unmix_store
from bigxanes.rum import RumParams
from bigxanes.store import is_complete, write_dataset

LIMIT = 250 * 2**20  # per worker; the package's imports alone take ~130 MB of RSS
N_WORKERS = 2
T, NY, NX = 600, 940, 940  # 2.12 GB float32 >= 4 x (2 x 250 MiB)
TILE = 64  # 9.8 MB chunks: leaves headroom under the limit when the machine is loaded


def _references() -> np.ndarray:
    e = np.linspace(-1.0, 1.0, T)
    a = 1.0 / (1.0 + np.exp(-(e + 0.1) / 0.03))
    b = 1.0 / (1.0 + np.exp(-(e - 0.1) / 0.03)) + 0.2 * np.exp(-(((e - 0.15) / 0.05) ** 2))
    return np.stack([a, b], axis=1)


def _block(block_id=None, A=None):
    """One (T, TILE, TILE) tile of a synthetic two-state stack, generated from its block id."""
    _, by, bx = block_id
    rng = np.random.default_rng(1000 * by + bx)
    ny = min(TILE, NY - by * TILE)
    nx = min(TILE, NX - bx * TILE)
    yy, xx = np.mgrid[0:ny, 0:nx]
    x2 = 0.5 + 0.5 * np.sin((yy + by * TILE) / 37.0) * np.cos((xx + bx * TILE) / 53.0)
    s = 1.0 + 0.2 * rng.random((ny, nx))
    M = np.stack([(1 - x2) * s, x2 * s]).reshape(2, -1)
    Y = (A.astype(np.float32) @ M.astype(np.float32)).reshape(T, ny, nx)
    Y += 0.02 * rng.standard_normal((T, ny, nx), dtype=np.float32)
    return Y


@pytest.fixture(scope="module")
def big_stack(tmp_path_factory):
    A = _references()
    lazy = da.map_blocks(
        _block,
        A=A,
        dtype=np.float32,
        chunks=((T,), *(da.core.normalize_chunks(TILE, (n,))[0] for n in (NY, NX))),
    )
    ds = xr.Dataset(
        {"stack": (("energy", "y", "x"), lazy), "references": (("energy", "component"), A)},
        coords={"energy": np.linspace(8300.0, 8500.0, T), "component": ["a", "b"]},
    )
    path = tmp_path_factory.mktemp("ooc") / "big.zarr"
    with __import__("dask").config.set(scheduler="threads", num_workers=2):
        write_dataset(ds, path, compressor=None, chunks=TILE)  # streamed, tile by tile
    return path


def _rss():
    import psutil

    return psutil.Process().memory_info().rss


@pytest.mark.slow
def test_out_of_core_lcf_and_rum_tv(big_stack, tmp_path):
    client = get_client(n_workers=N_WORKERS, memory_limit=LIMIT)
    try:
        stack_bytes = T * NY * NX * 4
        assert stack_bytes >= 4 * N_WORKERS * LIMIT
        pids0 = client.run(lambda: __import__("os").getpid())
        peak: dict[str, int] = {}
        stop = threading.Event()

        def poll():
            while not stop.is_set():
                try:
                    for w, r in client.run(_rss).items():
                        peak[w] = max(peak.get(w, 0), r)
                except Exception:  # a worker restarting would show up in pids below
                    pass
                time.sleep(0.2)

        th = threading.Thread(target=poll, daemon=True)
        th.start()
        try:
            t0 = time.perf_counter()
            lcf = unmix_store(
                big_stack,
                tmp_path / "lcf.zarr",
                method="lcf",
                client=client,
                chunks=TILE,
                progress=False,
            )
            t1 = time.perf_counter()
            rum = unmix_store(
                big_stack,
                tmp_path / "tv.zarr",
                method="rum-tv",
                client=client,
                chunks=TILE,
                progress=False,
                params=RumParams(method="rum-tv", max_iter=3, tv_sweeps=3),
            )
            print(f"LCF {t1 - t0:.1f} s, RUM-TV 3 iterations {time.perf_counter() - t1:.1f} s")
        finally:
            stop.set()
            th.join()
        assert is_complete(lcf) and is_complete(rum)
        assert client.run(lambda: __import__("os").getpid()) == pids0  # none restarted
        assert len(peak) == N_WORKERS
        print({w: f"{p / 2**20:.0f} MiB" for w, p in peak.items()})
        assert max(peak.values()) < LIMIT
        with xr.open_zarr(rum, consolidated=False) as o:
            assert o.attrs["n_iterations"] == 3
            f = o["fraction_unmasked"][:, ::97, ::89].values
        assert np.isfinite(f).all() and np.allclose(f.sum(axis=0), 1.0, atol=1e-5)
    finally:
        client.close()
        client.cluster.close()
