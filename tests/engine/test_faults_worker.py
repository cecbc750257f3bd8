"""A worker SIGKILLed in the middle of a RUM-TV run on a LocalCluster: the scheduler re-runs its
tasks (the nanny restarts it), the run finishes with the undisturbed result."""

from __future__ import annotations

import os
import signal
import threading
import time

import numpy as np
import pytest
import xarray as xr

from bigxanes.engine import get_client, unmix_store
from bigxanes.engine.state import WorkDir
from bigxanes.rum import RumParams
from bigxanes.simulate import simulate
from bigxanes.store import is_complete, write_dataset


def _load(p):
    with xr.open_zarr(p, consolidated=False) as o:
        return o.load()


@pytest.mark.parametrize("state_mode", ["zarr", "memory"])
def test_worker_killed_mid_iteration(tmp_path, input_guard, state_mode):
    ds = simulate("particles", (48, 48), 2, sigma=3.0, seed=11)
    inp = tmp_path / "in.zarr"
    write_dataset(ds[["stack", "references"]], inp, chunks=16)
    params = RumParams(method="rum-tv", max_iter=10, tv_sweeps=3, tol=1e-12)
    # memory mode: the persisted state of the killed worker is recomputed from the last
    # checkpoint (every 2 iterations here), the result is unchanged
    kw = dict(
        method="rum-tv",
        params=params,
        chunks=16,
        progress=False,
        state_mode=state_mode,
        checkpoint_every=2,
    )
    client = get_client(n_workers=2, threads_per_worker=1, memory_limit="1GB")
    try:
        with input_guard(inp):
            ref = _load(unmix_store(inp, tmp_path / "ref.zarr", client=client, **kw))
            pids_before = set(client.run(os.getpid).values())
            assert len(pids_before) == 2
            out = tmp_path / "out.zarr"
            work = WorkDir(tmp_path / "out.zarr.work")
            killed: dict = {}

            def killer():
                t0 = time.monotonic()
                while time.monotonic() - t0 < 120:
                    c = work.last_commit if work.exists() else None
                    if c and c.get("completed", 0) >= 3:
                        pid = sorted(pids_before)[0]
                        os.kill(pid, signal.SIGKILL)
                        killed.update(pid=pid, at=c["completed"])
                        return
                    time.sleep(0.005)

            th = threading.Thread(target=killer, daemon=True)
            th.start()
            got = _load(unmix_store(inp, out, client=client, **kw))
            th.join(5)
        assert killed and 3 <= killed["at"] < 10, killed  # killed while iterations ran
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # the nanny restarted the worker
            pids_after = set(client.run(os.getpid).values())
            if len(pids_after) == 2:
                break
            time.sleep(0.2)
        assert killed["pid"] not in pids_after
        assert is_complete(out)
        for name in ("fraction_unmasked", "scale", "residual_rms", "mask"):
            diff = np.abs(got[name].values.astype(float) - ref[name].values.astype(float)).max()
            assert diff <= 1e-6, (name, diff)
        assert got.attrs["n_iterations"] == ref.attrs["n_iterations"] == 10
    finally:
        cluster = client.cluster
        client.close()
        cluster.close()
