"""Faults around one run: the input is never modified, missing/corrupt input chunks are named,
one run per output (lock), unwritable or too-full output locations fail before computing."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest
import xarray as xr

import bigxanes.engine.preflight as preflight
from bigxanes import cli
from bigxanes.engine import unmix_store
from bigxanes.engine.locking import OutputLock, OutputLockedError, lock_path
from bigxanes.integrity import ChunkError, missing_chunks, tree_checksum
from bigxanes.rum import RumParams
from bigxanes.simulate import simulate
from bigxanes.store import is_complete, open_stack, write_dataset

KW = dict(chunks=12, progress=False, scheduler="synchronous")


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    ds = simulate("particles", (24, 28), 2, sigma=3.0, seed=3)
    path = tmp_path_factory.mktemp("faults") / "in.zarr"
    write_dataset(ds[["stack", "references"]], path, chunks=12)
    return path


def _load(p):
    with xr.open_zarr(p, consolidated=False) as o:
        return o.load()


@pytest.mark.parametrize("method", ["lcf", "edge50", "rum-tv", "rum-pnp"])
def test_input_never_modified(store, tmp_path, method, input_guard):
    params = (
        RumParams(method=method, max_iter=2, tv_sweeps=2, denoiser="tv", denoiser_halo=4)
        if method.startswith("rum")
        else None
    )
    with input_guard(store):
        out = unmix_store(store, tmp_path / "o.zarr", method=method, params=params, **KW)
        assert is_complete(out)
        # the lock is gone, no working state left behind
        assert not lock_path(out).exists() and not (tmp_path / "o.zarr.work").exists()
    # even a failing run (here: injected after one iteration) leaves the input alone
    if method == "rum-tv":
        with input_guard(store), pytest.raises(RuntimeError):
            unmix_store(
                store, tmp_path / "f.zarr", method=method, params=params, _fail_after=1, **KW
            )


def test_checksum_detects_change(tmp_path):
    d = tmp_path / "s"
    d.mkdir()
    (d / "a").write_bytes(b"12")
    h = tree_checksum(d)
    (d / "a").write_bytes(b"13")
    assert tree_checksum(d) != h
    (d / "a").write_bytes(b"12")
    (d / "b").write_bytes(b"")
    assert tree_checksum(d) != h


@pytest.fixture
def broken(store, tmp_path):
    p = tmp_path / "broken.zarr"
    shutil.copytree(store, p)
    return p


def test_missing_chunk_is_named(broken, tmp_path):
    (broken / "absorbance" / "c" / "0" / "1" / "0").unlink()
    assert missing_chunks(broken) == ["c/0/1/0"]
    # what zarr alone does: silently reads fill values
    assert np.isnan(open_stack(broken)["stack"][:, 12:, :12].values).all()
    for method in ("lcf", "rum-tv"):
        with pytest.raises(
            ChunkError,
            match=r"1 of 6 chunk\(s\) of 'absorbance' are missing "
            r"\(absorbance/c/0/1/0\)",
        ):
            unmix_store(broken, tmp_path / f"{method}.zarr", method=method, **KW)
    assert not (tmp_path / "lcf.zarr.work").exists()
    code = cli.main(["unmix", str(broken), str(tmp_path / "c.zarr"), "--method", "lcf", "-q"])
    assert code == 2


def test_corrupt_chunk_is_named(broken, tmp_path, capsys):
    f = broken / "absorbance" / "c" / "0" / "0" / "1"
    f.write_bytes(np.random.default_rng(0).bytes(f.stat().st_size))
    with pytest.raises(
        ChunkError,
        match=r"chunk absorbance/c/0/0/1 \(chunk index \(0, 0, 1\)\) "
        r"cannot be read",
    ):
        unmix_store(broken, tmp_path / "o.zarr", method="lcf", **KW)
    assert not (tmp_path / "o.zarr").exists()
    code = cli.main(["unmix", str(broken), str(tmp_path / "c.zarr"), "--method", "lcf", "-q"])
    err = capsys.readouterr().err
    assert code == 2 and "absorbance/c/0/0/1" in err and len(err.strip().splitlines()) == 1


def test_truncated_chunk_is_named(broken, tmp_path):
    f = broken / "absorbance" / "c" / "0" / "1" / "2"
    f.write_bytes(f.read_bytes()[:10])
    with pytest.raises(ChunkError, match=r"absorbance/c/0/1/2"):
        unmix_store(
            broken,
            tmp_path / "o.zarr",
            method="rum-tv",
            params=RumParams(method="rum-tv", max_iter=1),
            **KW,
        )


def test_unsorted_energies_rejected(store, tmp_path):
    ds = xr.open_zarr(store, consolidated=False).load()
    e = ds["energy"].values.copy()
    e[[3, 4]] = e[[4, 3]]
    bad = ds.assign_coords(energy=("energy", e, {"units": "eV"}))
    p = tmp_path / "unsorted.zarr"
    write_dataset(bad, p, chunks=12)
    with pytest.raises(ValueError, match="not strictly increasing"):
        unmix_store(p, tmp_path / "o.zarr", method="lcf", **KW)


def test_second_run_refuses_live_lock(store, tmp_path, input_guard):
    out = tmp_path / "o.zarr"
    with OutputLock(out):  # this (live) process holds the lock: like a concurrent run
        with pytest.raises(
            OutputLockedError,
            match=r"is in use by another run \(pid "
            rf"{os.getpid()} on ",
        ):
            unmix_store(store, out, method="lcf", **KW)
        assert not out.exists() and not (tmp_path / "o.zarr.work").exists()
        assert cli.main(["unmix", str(store), str(out), "--method", "lcf", "-q"]) == 2
    assert not lock_path(out).exists()
    with input_guard(store):
        assert is_complete(unmix_store(store, out, method="lcf", **KW))


def test_stale_lock_taken_over(store, tmp_path):
    out = tmp_path / "o.zarr"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    lock_path(out).write_text(
        f'{{"pid": {dead.pid}, "host": "{os.uname().nodename}", "time": {time.time()}}}'
    )
    with pytest.warns(RuntimeWarning, match=rf"stale lock .* pid {dead.pid}"):
        unmix_store(store, out, method="lcf", **KW)
    assert is_complete(out) and not lock_path(out).exists()


def _no_compute(monkeypatch):
    import bigxanes.engine.unmix as eu

    def boom(*a, **k):
        raise AssertionError("computation started before the preflight check")

    monkeypatch.setattr(eu, "make_runner", boom)


def test_output_under_a_file(store, tmp_path, monkeypatch):
    _no_compute(monkeypatch)
    f = tmp_path / "file.txt"
    f.write_text("x")
    with pytest.raises(NotADirectoryError, match="is a file, not a directory"):
        unmix_store(store, f / "o.zarr", method="lcf", **KW)


def test_unwritable_directory(store, tmp_path, monkeypatch):
    # tests run as root, whom chmod does not stop: simulate a read-only directory
    _no_compute(monkeypatch)
    d = tmp_path / "ro"
    d.mkdir()
    real = os.access
    monkeypatch.setattr(
        preflight.os, "access", lambda p, m, **k: False if str(p) == str(d) else real(p, m, **k)
    )
    with pytest.raises(PermissionError, match="is not writable"):
        unmix_store(store, d / "o.zarr", method="rum-tv", **KW)
    assert not any(d.iterdir())


def test_disk_full_before_compute(store, tmp_path, monkeypatch, capsys):
    _no_compute(monkeypatch)
    monkeypatch.setattr(
        preflight.shutil,
        "disk_usage",
        lambda p: shutil._ntuple_diskusage(10**12, 10**12 - 1000, 1000),
    )
    with pytest.raises(ValueError, match=r"not enough free disk .* has 1000\.0 B free"):
        unmix_store(store, tmp_path / "o.zarr", method="rum-tv", **KW)
    assert not (tmp_path / "o.zarr.work").exists() and not lock_path(tmp_path / "o.zarr").exists()
    assert cli.main(["unmix", str(store), str(tmp_path / "o.zarr"), "--method", "lcf", "-q"]) == 2
    assert "not enough free disk" in capsys.readouterr().err


def test_info_and_plot_refuse_incomplete(store, tmp_path, capsys):
    out = unmix_store(store, tmp_path / "r.zarr", method="lcf", **KW)
    import zarr

    del zarr.open_group(str(out), mode="r+").attrs["bigxanes_complete"]
    assert not is_complete(out)
    assert cli.main(["info", str(out)]) == 2
    assert "incomplete" in capsys.readouterr().err
    assert cli.main(["plot", str(out), str(tmp_path / "p.png")]) == 2
    assert "incomplete" in capsys.readouterr().err
    with pytest.raises(ValueError, match="incomplete"):
        open_stack(out)
