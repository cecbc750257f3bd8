"""Issue 13, item 2: paths reach the workers absolute, and the workers are asked before pass 1
whether they can read the input and write the working state."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from bigxanes.engine import unmix_store
from bigxanes.engine.cluster import Runner
from bigxanes.engine.preflight import check_paths_on_workers
from bigxanes.rum import RumParams
from bigxanes.simulate import simulate
from bigxanes.store import write_dataset


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    d = tmp_path_factory.mktemp("paths")
    ds = simulate("particles", shape=(16, 16), n_components=2, sigma=3, seed=3)
    write_dataset(ds[["stack", "references"]], d / "in.zarr", chunks=8)
    return d / "in.zarr"


def test_relative_paths_reach_the_graph_absolute(stack, tmp_path, monkeypatch):
    """Fast variant of the external-cluster test: every path the graph or the workers get
    (the stack's reads, the working state) is absolute, whatever the caller's cwd."""
    import bigxanes.engine.state as st
    import bigxanes.engine.unmix as eu

    seen: list[str] = []
    orig_checked, orig_init = eu.checked_dask, st.WorkDir.__init__

    def checked(path, name="stack"):
        seen.append(os.fspath(path))
        return orig_checked(path, name)

    def init(self, path):
        seen.append(os.fspath(path))
        orig_init(self, path)

    monkeypatch.setattr(eu, "checked_dask", checked)
    monkeypatch.setattr(st.WorkDir, "__init__", init)
    shutil.copytree(stack, tmp_path / "in.zarr")
    monkeypatch.chdir(tmp_path)
    params = RumParams(method="rum-tv", max_iter=2, tv_sweeps=1)
    out = unmix_store("in.zarr", "out.zarr", method="rum-tv", params=params, progress=False)
    assert seen and all(os.path.isabs(p) for p in seen), seen
    assert Path(out).is_absolute() and (tmp_path / "out.zarr").is_dir()
    with xr.open_zarr(tmp_path / "out.zarr", consolidated=False) as r:
        assert r.attrs["input"] == str((tmp_path / "in.zarr").resolve())


def test_workers_that_cannot_read_the_input_are_named(stack, tmp_path):
    distributed = pytest.importorskip("distributed")
    with (
        distributed.LocalCluster(
            n_workers=1, threads_per_worker=1, processes=False, dashboard_address=":0"
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        runner = Runner(client)
        check_paths_on_workers(runner, str(stack), tmp_path / "out.zarr")  # fine
        with pytest.raises(ValueError, match=r"1 of 1 worker\(s\) cannot use .*missing\.zarr"):
            check_paths_on_workers(runner, str(tmp_path / "missing.zarr"), tmp_path / "o.zarr")
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o555)
        try:
            if not os.access(ro, os.W_OK):  # root: permission bits do not stop it
                with pytest.raises(ValueError, match="not writable"):
                    check_paths_on_workers(runner, str(stack), ro / "o.zarr")
        finally:
            ro.chmod(0o755)
    # local schedulers share this process's view: nothing to ask
    check_paths_on_workers(Runner("threads"), str(tmp_path / "missing.zarr"), tmp_path / "o")


def _start(args: list[str], cwd: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", *args],
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=dict(os.environ, DASK_DISTRIBUTED__WORKER__DAEMON="False"),
    )


@pytest.mark.slow
def test_relative_paths_on_an_external_cluster_in_another_cwd(stack, tmp_path):
    """`dask scheduler` + `dask worker` started in another directory; `unmix` run with
    relative paths from the data's directory gives the threaded scheduler's result (on main:
    every pixel NaN, 0 pixels in mask, the work files under the worker's directory)."""
    pytest.importorskip("distributed")
    data = tmp_path / "data"
    elsewhere = tmp_path / "elsewhere"
    data.mkdir()
    elsewhere.mkdir()
    shutil.copytree(stack, data / "in.zarr")
    sfile = tmp_path / "scheduler.json"
    procs = [
        _start(
            [
                "distributed.cli.dask_scheduler",
                "--scheduler-file",
                str(sfile),
                "--port",
                "0",
                "--no-dashboard",
            ],
            elsewhere,
        )
    ]
    try:
        t0 = time.monotonic()
        while not sfile.exists():
            assert time.monotonic() - t0 < 60, "scheduler did not start"
            time.sleep(0.2)
        import json

        address = json.loads(sfile.read_text())["address"]
        procs.append(
            _start(
                [
                    "distributed.cli.dask_worker",
                    "--scheduler-file",
                    str(sfile),
                    "--nthreads",
                    "1",
                    "--no-dashboard",
                ],
                elsewhere,
            )
        )
        argv = ["unmix", "in.zarr", "r.zarr", "--method", "rum-tv", "--iters", "3", "-q"]
        cli = [sys.executable, "-m", "bigxanes.cli"]
        p = subprocess.run(
            cli + argv + ["--scheduler", address, "--connect-timeout", "60"],
            cwd=data,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert p.returncode == 0, p.stderr
        p = subprocess.run(
            cli + argv[:2] + ["ref.zarr"] + argv[3:] + ["--scheduler", "threads"],
            cwd=data,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert p.returncode == 0, p.stderr
    finally:
        for pr in procs:
            pr.terminate()
        for pr in procs:
            try:
                pr.wait(timeout=20)
            except subprocess.TimeoutExpired:
                pr.kill()
    assert not any(elsewhere.iterdir()), list(elsewhere.iterdir())  # nothing written there
    with (
        xr.open_zarr(data / "r.zarr", consolidated=False) as a,
        xr.open_zarr(data / "ref.zarr", consolidated=False) as b,
    ):
        assert a["mask"].values.sum() > 0
        np.testing.assert_array_equal(a["mask"].values, b["mask"].values)
        assert (
            float(np.abs(a["fraction_unmasked"].values - b["fraction_unmasked"].values).max())
            <= 1e-6
        )
