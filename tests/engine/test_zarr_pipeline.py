"""Zarr state mode with several state blocks per task (prefetch + write-behind,
engine/chunked.py::admm_zarr_blocks; issue 15, item 5): the same numbers as one task per block
and as the memory mode."""

from __future__ import annotations

import json

import numpy as np
import pytest
import xarray as xr
import zarr

from bigxanes.engine import chunked, unmix_store
from bigxanes.kernels.admm import StateLayout, initial_state
from bigxanes.kernels.moments import gram
from bigxanes.rum import RumParams
from bigxanes.simulate import simulate
from bigxanes.store import write_dataset


def _buffers(tmp_path, S, tiles):
    paths = []
    for name in ("src", "one", "grouped"):
        z = zarr.create_array(
            store=str(tmp_path / name),
            shape=S.shape,
            chunks=(S.shape[0],) + tiles,
            dtype=np.float32,
            fill_value=0,
        )
        if name == "src":
            z[...] = S
        paths.append(str(tmp_path / name))
    return paths


@pytest.mark.parametrize("n_groups", [1, 2, 5])
def test_grouped_blocks_equal_one_task_per_block(tmp_path, n_groups):
    rng = np.random.default_rng(0)
    L, shape, tiles, depth = 2, (20, 22), (7, 8), 3
    lay = StateLayout(L, 2, "tv")
    A = np.abs(rng.standard_normal((12, L))) + 0.5
    M0 = rng.random((L,) + shape)
    S = initial_state(
        np.tensordot(A.T, A @ M0.reshape(L, -1), 1).reshape((L,) + shape),
        rng.random(shape) + 5,
        M0,
        lay,
        dtype=np.float32,
    )
    src, one, grouped = _buffers(tmp_path, S, tiles)
    kw = dict(layout=lay, AtA=gram(A), lam=0.05, rho=0.3, rho_next=0.3, tv_sweeps=3)
    regions = chunked.block_regions(shape, tiles)  # 3 x 3 blocks, uneven last ones
    ref = np.stack([chunked.admm_zarr_block(src, one, r, depth, **kw) for r in regions])
    groups = chunked.group_regions(regions, n_groups)
    assert [r for g in groups for r in g] == regions and len(groups) == min(n_groups, 9)
    got = np.concatenate([chunked.admm_zarr_blocks(src, grouped, g, depth, **kw) for g in groups])
    np.testing.assert_array_equal(got, ref)
    np.testing.assert_array_equal(zarr.open_array(grouped)[...], zarr.open_array(one)[...])


def test_zarr_mode_grouped_equals_memory_mode(tmp_path, monkeypatch):
    """One worker thread, 4 state blocks: one task iterates all four with prefetch; the result
    and the history equal the memory mode's."""
    import bigxanes.engine.iterations as it
    import bigxanes.engine.unmix as eu

    ds = simulate("particles", (24, 24), 2, sigma=3.0, seed=2)
    path = tmp_path / "in.zarr"
    write_dataset(ds[["stack", "references"]], path)
    monkeypatch.setattr(eu, "STATE_BLOCK_BYTES", 0)  # state blocked like the 12² tiles
    monkeypatch.setattr(it, "n_threads", lambda runner: 1)
    calls = []
    orig = chunked.admm_zarr_blocks
    monkeypatch.setattr(
        chunked,
        "admm_zarr_blocks",
        lambda src, dst, regs, *a, **k: calls.append(len(regs)) or orig(src, dst, regs, *a, **k),
    )
    p = RumParams(method="rum-tv", max_iter=4, tv_sweeps=3)
    kw = dict(method="rum-tv", params=p, chunks=12, progress=False, scheduler="threads")
    z = xr.open_zarr(
        unmix_store(path, tmp_path / "z.zarr", state_mode="zarr", **kw), consolidated=False
    )
    m = xr.open_zarr(
        unmix_store(path, tmp_path / "m.zarr", state_mode="memory", **kw), consolidated=False
    )
    assert calls == [4] * 4  # one task of four blocks per iteration
    for name in ("fraction_unmasked", "scale", "residual_rms"):
        np.testing.assert_array_equal(z[name].values, m[name].values)
    hz, hm = json.loads(z.attrs["history"]), json.loads(m.attrs["history"])
    np.testing.assert_allclose(hz["primal"], hm["primal"], rtol=1e-12)
