"""The main process SIGKILLed mid-run (after some iterations; inside the output write):
``--resume`` completes the run with the undisturbed result, and an incomplete output is never
taken for complete. Also: a second process on the same output refuses (lock)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from bigxanes import cli
from bigxanes.engine import unmix_store
from bigxanes.engine.locking import OutputLockedError, lock_path
from bigxanes.engine.state import WorkDir
from bigxanes.simulate import simulate
from bigxanes.store import is_complete, open_stack, write_dataset

ARGS = [
    "--method",
    "rum-tv",
    "--iters",
    "12",
    "--tv-sweeps",
    "2",
    "--chunks",
    "16,16",
    "--checkpoint-every",
    "2",
    "--tol",
    "1e-12",
    "-q",
]
TIMEOUT = 90


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    d = tmp_path_factory.mktemp("kill")
    ds = simulate("particles", (32, 32), 2, sigma=3.0, seed=7)
    path = d / "in.zarr"
    write_dataset(ds[["stack", "references"]], path, chunks=16)
    ref = d / "ref.zarr"
    assert cli.main(["unmix", str(path), str(ref)] + ARGS) == 0
    with xr.open_zarr(ref, consolidated=False) as o:
        return path, o.load()


def _start(inp: Path, out: Path, pause: str) -> subprocess.Popen:
    env = dict(os.environ, BIGXANES_TEST_PAUSE=pause, PYTHONUNBUFFERED="1")
    return subprocess.Popen(
        [sys.executable, "-m", "bigxanes.cli", "unmix", str(inp), str(out)] + ARGS,
        env=env,
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
    )


def _wait_for(cond, proc: subprocess.Popen, what: str) -> None:
    t0 = time.monotonic()
    while not cond():
        if proc.poll() is not None:
            raise AssertionError(
                f"run ended (code {proc.returncode}) before {what}: {proc.stderr.read()}"
            )
        if time.monotonic() - t0 > TIMEOUT:
            proc.kill()
            raise AssertionError(f"timeout waiting for {what}")
        time.sleep(0.05)


def _kill(proc: subprocess.Popen) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL


def _same(out: Path, ref: xr.Dataset) -> None:
    with xr.open_zarr(out, consolidated=False) as o:
        got = o.load()
    for name in ("fraction_unmasked", "scale", "residual_rms", "mask"):
        diff = np.abs(got[name].values.astype(float) - ref[name].values.astype(float)).max()
        assert diff <= 1e-6, (name, diff)
    assert got.attrs["n_iterations"] == ref.attrs["n_iterations"] == 12


def _resume(inp, out, capsys):
    capsys.readouterr()
    assert cli.main(["unmix", str(inp), str(out), "--resume"] + ARGS) == 0
    assert "taking over the stale lock" in capsys.readouterr().err


def test_kill_after_iterations_then_resume(case, tmp_path, input_guard, capsys):
    inp, ref = case
    out = tmp_path / "out.zarr"
    work = WorkDir(tmp_path / "out.zarr.work")
    with input_guard(inp):
        proc = _start(inp, out, "after_commit=0.3")
        try:
            _wait_for(
                lambda: (work.last_commit or {}).get("completed", 0) >= 3, proc, "3 iterations"
            )
            # a second run on the same output, while the first is alive: refused
            with pytest.raises(OutputLockedError, match=f"pid {proc.pid}"):
                unmix_store(inp, out, method="rum-tv", progress=False)
        finally:
            _kill(proc)
        done = work.last_commit["completed"]
        assert 3 <= done < 12
        assert not out.exists() and not is_complete(out) and lock_path(out).exists()
        _resume(inp, out, capsys)
    assert is_complete(out) and not lock_path(out).exists() and not work.path.exists()
    _same(out, ref)


def test_kill_during_output_write_then_resume(case, tmp_path, input_guard, capsys):
    inp, ref = case
    out = tmp_path / "out.zarr"
    with input_guard(inp):
        proc = _start(inp, out, "before_complete=120")
        partial = out.with_name(f"{out.name}.partial-{proc.pid}")
        try:
            _wait_for(
                lambda: (
                    (partial / "fraction" / "zarr.json").exists()
                    and not (partial / "zarr.json").read_text().count("bigxanes_complete")
                    and (WorkDir(tmp_path / "out.zarr.work").last_commit or {}).get("completed")
                    == 12
                ),
                proc,
                "the output write",
            )
            line = ""
            while "before_complete" not in line:  # the pause point is reached
                line = proc.stderr.readline()
                assert line, "process ended"
        finally:
            _kill(proc)
        # the data are there, the marker is not: nobody takes it for complete
        assert partial.exists() and not out.exists() and not is_complete(partial)
        with pytest.raises(ValueError, match="incomplete"):
            open_stack(partial)
        assert cli.main(["info", str(partial)]) == 2
        assert cli.main(["plot", str(partial), str(tmp_path / "p.png")]) == 2
        assert "incomplete" in capsys.readouterr().err
        _resume(inp, out, capsys)
    assert is_complete(out) and not partial.exists() and not lock_path(out).exists()
    _same(out, ref)
