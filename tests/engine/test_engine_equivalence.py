"""Engine vs in-memory beyond exact parity (tests/engine/test_parity.py): where the blocking
changes the numbers (a too small halo, PnP seams), the state-block rule, NaN handling and
argument errors."""

from __future__ import annotations

import json
from dataclasses import fields

import numpy as np
import pytest
import xarray as xr

import bigxanes as bx
from bigxanes.engine import estimate_resources, unmix_store
from bigxanes.kernels.denoisers import DEFAULT_HALO
from bigxanes.metrics import foreground_mask, psnr_foreground
from bigxanes.rum import RumParams
from bigxanes.simulate import simulate
from bigxanes.store import write_dataset

TOL = 1e-4


def _open(path):
    return xr.open_zarr(path, consolidated=False)


@pytest.fixture(scope="module")
def data2d(tmp_path_factory):
    ds = simulate("particles", (64, 72), 2, sigma=3.0, seed=1)
    path = tmp_path_factory.mktemp("e2d") / "in.zarr"
    write_dataset(ds[["stack", "references"]], path)
    return ds, path


def _memory(ds, params):
    """The public in-memory result with the engine's float32 state."""
    kw = {f.name: getattr(params, f.name) for f in fields(params) if f.name != "method"}
    return bx.unmix(
        ds["stack"], ds["references"], method=params.method, state_dtype=np.float32, **kw
    )


def _rum_compare(ds, path, tmp_path, params, chunks, state_mode="auto"):
    out = unmix_store(
        path,
        tmp_path / "o.zarr",
        method=params.method,
        params=params,
        chunks=chunks,
        progress=False,
        state_mode=state_mode,
    )
    o = _open(out)
    if state_mode != "auto":
        assert o.attrs["state_mode"] == state_mode
    mem = _memory(ds, params)
    h, hm = json.loads(o.attrs["history"]), json.loads(mem.attrs["history"])
    assert len(h["iteration"]) == len(hm["iteration"])
    return o, mem["fraction_unmasked"].values, mem["scale"].values, hm


def test_state_tiles_rule():
    from bigxanes.engine.unmix import state_tiles

    # 1024² TV state (24 float32 channels): 1024 x 512 blocks = 48 MiB <= 64 MiB, 2 blocks
    assert state_tiles((256, 256), (1024, 1024), 24, 2) == (1024, 512)
    assert state_tiles((256, 256), (1024, 1024), 24, 2, target_bytes=32 * 2**20) == (512, 512)
    # at least one block per thread, never larger than the image
    assert state_tiles((256, 256), (1024, 1024), 24, 1, target_bytes=2**40) == (1024, 1024)
    assert state_tiles((256, 256), (1024, 1024), 24, 4, target_bytes=2**40) == (512, 512)
    # a memory cap or a zero target keeps the stack tiles
    assert state_tiles((256, 256), (1024, 1024), 24, 2, max_bytes=0) == (256, 256)
    assert state_tiles((256, 256), (1024, 1024), 24, 2, target_bytes=0) == (256, 256)
    # multiples of the (uneven) tiles, capped at the image
    assert state_tiles((13, 11), (64, 72), 24, 2) == (52, 72)
    assert state_tiles((7, 9, 11), (20, 24, 28), 24, 2) == (20, 24, 22)


@pytest.mark.parametrize("state_mode", ["memory", "zarr"])
def test_rum_tv_too_small_halo_has_seams(data2d, tmp_path, monkeypatch, state_mode):
    """The check above can fail: with a 1-pixel halo the tiled TV iteration is not exact."""
    ds, path = data2d
    params = RumParams(method="rum-tv", max_iter=6, tv_sweeps=4)
    monkeypatch.setattr(RumParams, "halo", property(lambda self: 1))
    o, X, _, _ = _rum_compare(ds, path, tmp_path, params, (13, 11), state_mode)
    assert np.abs(o["fraction_unmasked"].values - X).max() > TOL


def test_rum_pnp_default_halo_psnr(data2d, tmp_path):
    ds, path = data2d
    params = RumParams(method="rum-pnp", max_iter=15, denoiser="tv")
    o, X, _, _ = _rum_compare(ds, path, tmp_path, params, (32, 36))
    truth = ds["true_fraction"].values
    mask = foreground_mask(ds["true_scale"].values)
    loss = psnr_foreground(X, truth, mask) - psnr_foreground(
        o["fraction_unmasked"].values, truth, mask
    )
    assert loss < 0.5
    assert o.attrs["halo"] == params.halo


#: RUM-PnP(BM3D) iterations of the seam tests (each BM3D call costs ~0.2-0.5 s here).
BM3D_ITER = 6
#: Max abs difference of the fractions from the in-memory path separating the default halo
#: (measured 0.13) from no halo (0.39) in the seam tests below.
BM3D_SEAM_DIFF = 0.25


@pytest.fixture(scope="module")
def bm3d_memory(data2d):
    """In-memory RUM-PnP(BM3D) fractions of ``data2d`` and their foreground PSNR."""
    ds, _ = data2d
    params = RumParams(method="rum-pnp", denoiser="bm3d", max_iter=BM3D_ITER)
    X = _memory(ds, params)["fraction_unmasked"].values
    mask = foreground_mask(ds["true_scale"].values)
    return X, psnr_foreground(X, ds["true_fraction"].values, mask)


def _pnp_bm3d_dask(data2d, bm3d_memory, tmp_path, monkeypatch, halo):
    """RUM-PnP(BM3D) on 2 x 2 state blocks of 32 x 36; (result, params, loss dB, max diff).

    Loss = foreground PSNR of the in-memory path minus that of the Dask path; max diff = max
    abs difference of the fractions between the two paths.

    The state is blocked like the stack tiles (``STATE_BLOCK_BYTES = 0``, 4 blocks; the default
    rule would give one block on the synchronous scheduler). Synchronous: ``bm3d``/``bm4d``
    abort the process when two threads call them at once (benchmarks/bench_pnp_halo.py).
    """
    import bigxanes.engine.unmix as eu

    monkeypatch.setattr(eu, "STATE_BLOCK_BYTES", 0)
    ds, path = data2d
    params = RumParams(method="rum-pnp", denoiser="bm3d", max_iter=BM3D_ITER, denoiser_halo=halo)
    out = unmix_store(
        path,
        tmp_path / "o.zarr",
        method="rum-pnp",
        params=params,
        chunks=(32, 36),
        scheduler="synchronous",
        progress=False,
    )
    o = _open(out)
    assert json.loads(o.attrs["state_tiles"]) == [32, 36]
    X, psnr_mem = bm3d_memory
    Xd = o["fraction_unmasked"].values
    mask = foreground_mask(ds["true_scale"].values)
    loss = psnr_mem - psnr_foreground(Xd, ds["true_fraction"].values, mask)
    return o, params, loss, float(np.abs(Xd - X).max())


def test_rum_pnp_bm3d_default_halo_psnr(data2d, bm3d_memory, tmp_path, monkeypatch):
    """BM3D tiles cannot be exact; at the default halo the seams cost < 0.5 dB."""
    o, params, loss, diff = _pnp_bm3d_dask(data2d, bm3d_memory, tmp_path, monkeypatch, None)
    assert params.halo == DEFAULT_HALO["bm3d"]
    assert o.attrs["halo"] == params.halo
    assert loss < 0.5  # measured -0.02 dB at halo 16 (0.38 dB at halo 0)
    assert diff < BM3D_SEAM_DIFF  # measured 0.13 at halo 16 (0.39 at halo 0)


@pytest.mark.slow  # 15 s; the halo figures: benchmarks/results/pnp_halo.md
def test_rum_pnp_bm3d_zero_halo_has_seams(data2d, bm3d_memory, tmp_path, monkeypatch):
    """The check above can fail: without a halo the BM3D seams are clearly larger."""
    o, _, loss, diff = _pnp_bm3d_dask(data2d, bm3d_memory, tmp_path, monkeypatch, 0)
    assert o.attrs["halo"] == 0
    assert loss > 0.2
    assert diff > BM3D_SEAM_DIFF


def test_nan_pixels_masked(tmp_path):
    ds = simulate("particles", (32, 40), 2, sigma=3.0, seed=3)
    st = ds["stack"].values.copy()
    st[5, 3, 4] = np.nan
    st[:, 10, 11] = np.inf
    ds["stack"] = (ds["stack"].dims, st)
    write_dataset(ds[["stack", "references"]], tmp_path / "in.zarr")
    out = unmix_store(
        tmp_path / "in.zarr",
        tmp_path / "o.zarr",
        method="rum-tv",
        params=RumParams(method="rum-tv", max_iter=5, tv_sweeps=3),
        chunks=(16, 16),
        progress=False,
    )
    o = _open(out)
    assert o.attrs["n_nonfinite"] == 2
    assert not o["mask"].values[3, 4] and not o["mask"].values[10, 11]
    assert np.isfinite(o["fraction_unmasked"].values).all()
    assert o["scale"].values[3, 4] == 0
    with pytest.raises(ValueError, match="NaN"):
        unmix_store(
            tmp_path / "in.zarr",
            tmp_path / "o2.zarr",
            method="lcf",
            nan_policy="raise",
            progress=False,
        )


def test_errors_and_resources(data2d, tmp_path):
    _, path = data2d
    out = unmix_store(
        path, tmp_path / "o.zarr", method="lcf", progress=False, energy_range=(8300, 8500)
    )
    assert json.loads(_open(out).attrs["energy_range"]) == [8300, 8500]
    with pytest.raises(FileExistsError):
        unmix_store(path, out, method="lcf", progress=False)
    with pytest.raises(ValueError, match="method"):
        unmix_store(path, tmp_path / "x.zarr", method="pca", progress=False)
    with pytest.raises(ValueError, match="references"):
        unmix_store(
            path, tmp_path / "x.zarr", method="lcf", references=np.ones((3, 2)), progress=False
        )
    r = estimate_resources(path, "rum-tv")
    assert r["memory_per_worker"] > r["task_bytes"] > 0 and r["work_disk_bytes"] > 0


@pytest.mark.slow  # 43 s on 2 cores; the figures: benchmarks/results/pnp_halo_bm4d_long.md
def test_rum_pnp_bm4d_default_halo_psnr(tmp_path, monkeypatch):
    """BM4D per 3-D block with the default halo on a volume longer than a block plus two
    halos (16 x 16 x 64 in 16³ blocks: real seams at three faces): loss < 0.5 dB.

    benchmarks/results/pnp_halo_bm4d_long.md measured 0.07 dB on 16 x 16 x 96 (6 iterations).
    """
    import bigxanes.engine.unmix as eu

    monkeypatch.setattr(eu, "STATE_BLOCK_BYTES", 0)  # state blocked like the 16³ tiles
    ds = simulate("particles", (16, 16, 64), 2, sigma=3.0, seed=7)
    path = tmp_path / "in.zarr"
    write_dataset(ds[["stack", "references"]], path)
    params = RumParams(method="rum-pnp", denoiser="bm4d", max_iter=3)
    assert params.halo == DEFAULT_HALO["bm4d"] and 16 + 2 * params.halo < 64
    o = _open(
        unmix_store(
            path,
            tmp_path / "o.zarr",
            method="rum-pnp",
            params=params,
            chunks=(16, 16, 16),
            scheduler="synchronous",
            progress=False,
        )
    )
    assert json.loads(o.attrs["state_tiles"]) == [16, 16, 16]
    X = _memory(ds, params)["fraction_unmasked"].values
    truth, mask = ds["true_fraction"].values, foreground_mask(ds["true_scale"].values)
    loss = psnr_foreground(X, truth, mask) - psnr_foreground(
        o["fraction_unmasked"].values, truth, mask
    )
    assert loss < 0.5
