"""Tests for bigxanes.store: the Zarr v3 stack store layout."""

from __future__ import annotations

import os

import dask.array as da
import numpy as np
import pytest
import xarray as xr
import zarr

from bigxanes.store import (
    COMPLETE_ATTR,
    DEFAULT_TILE_2D,
    DEFAULT_TILE_3D,
    is_complete,
    mark_complete,
    open_stack,
    stack_chunks,
    stack_info,
    write_dataset,
)


def _dataset(shape=(5, 10, 12), lazy=True) -> xr.Dataset:
    n = int(np.prod(shape))
    data = np.arange(n, dtype=np.float32).reshape(shape) * 0.5
    stack = da.from_array(data, chunks=(1,) + shape[1:]) if lazy else data
    dims = ("energy", "y", "x") if len(shape) == 3 else ("energy", "z", "y", "x")
    energy = 7000.0 + np.arange(shape[0]) * 1.5
    refs = np.stack([np.linspace(0, 1, shape[0]), np.linspace(1, 2, shape[0])], axis=1)
    return xr.Dataset(
        {
            "stack": (dims, stack),
            "references": (("energy", "component"), refs),
            "mask": (dims[1:], data[0] > 10),
        },
        coords={"energy": ("energy", energy, {"units": "eV"}), "component": ["fe2", "fe3"]},
        attrs={"quantity": "absorbance"},
    )


def test_stack_chunks_defaults_and_clipping():
    assert DEFAULT_TILE_2D == 256 and DEFAULT_TILE_3D == 64
    assert stack_chunks((100, 1000, 300)) == (100, 256, 256)
    assert stack_chunks((7, 100, 30)) == (7, 100, 30)
    assert stack_chunks((9, 200, 100, 50)) == (9, 64, 64, 50)
    assert stack_chunks((9, 200, 100, 50), tile=32) == (9, 32, 32, 32)
    assert stack_chunks((9, 20, 30), tile=(8, 16)) == (9, 8, 16)
    with pytest.raises(ValueError, match="spatial dimensions"):
        stack_chunks((9, 20, 30), tile=(8, 16, 4))


@pytest.mark.parametrize("compressor", ["zstd", "lz4", "blosc", None])
def test_round_trip_exact(tmp_path, compressor):
    ds = _dataset()
    out = write_dataset(ds, tmp_path / "s.zarr", chunks=4, compressor=compressor)
    assert out == tmp_path / "s.zarr"
    assert is_complete(out)
    got = open_stack(out)
    np.testing.assert_array_equal(got["stack"].values, ds["stack"].values)
    np.testing.assert_array_equal(got["energy"].values, ds["energy"].values)
    np.testing.assert_array_equal(got["references"].values, ds["references"].values)
    np.testing.assert_array_equal(got["mask"].values, ds["mask"].values)
    assert list(got["component"].values) == ["fe2", "fe3"]
    assert got["energy"].attrs["units"] == "eV"
    assert got.attrs["quantity"] == "absorbance"
    assert got["stack"].dtype == np.float32
    # lazy, on the stored chunks: whole energy axis x tiles
    assert isinstance(got["stack"].data, da.Array)
    assert got["stack"].data.chunks == ((5,), (4, 4, 2), (4, 4, 4))
    arr = zarr.open_group(str(out), mode="r")["absorbance"]
    assert arr.chunks == (5, 4, 4)
    assert arr.metadata.zarr_format == 3
    assert zarr.open_group(str(out), mode="r")["mask"].chunks == (4, 4)
    assert zarr.open_group(str(out), mode="r")["references"].chunks == (5, 2)
    if compressor is None:
        assert arr.compressors == ()
    else:
        assert len(arr.compressors) == 1
    # no temporary directories left behind
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.zarr"]


def test_default_chunks_3d(tmp_path):
    ds = _dataset(shape=(3, 70, 10, 66))
    out = write_dataset(ds, tmp_path / "v.zarr")
    arr = zarr.open_group(str(out), mode="r")["absorbance"]
    assert arr.chunks == (3, 64, 10, 64)
    np.testing.assert_array_equal(open_stack(out)["stack"].values, ds["stack"].values)


def test_numpy_backed_and_chunk_mapping(tmp_path):
    ds = _dataset(lazy=False)
    out = write_dataset(ds, tmp_path / "n.zarr", chunks={"y": 5, "x": 6})
    assert zarr.open_group(str(out), mode="r")["absorbance"].chunks == (5, 5, 6)
    np.testing.assert_array_equal(open_stack(out)["stack"].values, ds["stack"].values)


def test_exists_and_overwrite(tmp_path):
    path = tmp_path / "s.zarr"
    write_dataset(_dataset(), path)
    with pytest.raises(FileExistsError) as err:
        write_dataset(_dataset(), path)
    assert str(err.value) == f"output {path} already exists; pass --overwrite to replace it"
    ds2 = _dataset()
    ds2["stack"] = ds2["stack"] + 1
    write_dataset(ds2, path, overwrite=True)
    np.testing.assert_array_equal(open_stack(path)["stack"].values, ds2["stack"].values)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.zarr"]


def test_failed_write_leaves_nothing(tmp_path):
    ds = _dataset()
    bad = ds.assign(
        stack=ds["stack"].copy(data=ds["stack"].data.map_blocks(_boom, dtype=np.float32))
    )
    with pytest.raises(RuntimeError, match="boom"):
        write_dataset(bad, tmp_path / "s.zarr")
    assert list(tmp_path.iterdir()) == []


def _boom(block):
    raise RuntimeError("boom")


def test_open_refuses_incomplete(tmp_path):
    path = tmp_path / "s.zarr"
    write_dataset(_dataset(), path)
    g = zarr.open_group(str(path), mode="r+")
    del g.attrs[COMPLETE_ATTR]
    assert not is_complete(path)
    with pytest.raises(ValueError) as err:
        open_stack(path)
    assert str(err.value) == (
        f"{path} is incomplete (an interrupted write?); re-run the command that made it"
    )
    mark_complete(path)
    assert is_complete(path)
    assert open_stack(path)["stack"].shape == (5, 10, 12)


def test_open_missing_and_not_a_stack(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        open_stack(tmp_path / "nope.zarr")
    assert not is_complete(tmp_path / "nope.zarr")
    ds = _dataset().rename({"stack": "data"})
    write_dataset(ds, tmp_path / "a.zarr")
    with pytest.raises(ValueError, match="no 'stack' variable"):
        open_stack(tmp_path / "a.zarr")
    ds = _dataset().rename({"y": "row"})
    write_dataset(ds, tmp_path / "b.zarr")
    with pytest.raises(ValueError, match="has dims"):
        open_stack(tmp_path / "b.zarr")


def test_stack_info(tmp_path):
    path = write_dataset(_dataset(), tmp_path / "s.zarr", chunks=4)
    info = stack_info(path)
    assert info["shape"] == (5, 10, 12)
    assert info["dims"] == ("energy", "y", "x")
    assert info["chunks"] == (5, 4, 4)
    assert info["dtype"] == "float32"
    assert info["n_energies"] == 5
    assert info["energy_min"] == 7000.0 and info["energy_max"] == 7006.0
    assert info["nbytes_memory"] == 5 * 10 * 12 * 4
    disk = sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(path) for f in fs)
    assert info["nbytes_disk"] == disk > 0
    assert info["components"] == ["fe2", "fe3"]
    assert info["quantity"] == "absorbance"
