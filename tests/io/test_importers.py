"""Tests for bigxanes.importers: streaming imports into the stack store, exact round trips."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import h5py
import numpy as np
import pytest
import tifffile
import xarray as xr
import zarr

from bigxanes import importers
from bigxanes.importers import (
    import_hdf5,
    import_npy,
    import_stack,
    import_tiff,
    import_zarr,
    lazy_stack,
)
from bigxanes.store import open_stack

E_EV = np.array([7000.0, 7001.5, 7003.0, 7010.0, 7020.25])


def _stack(shape=(5, 9, 7), seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.uniform(50, 1000, size=shape).astype(np.float32)


def _check(path: Path, data: np.ndarray, energies: np.ndarray, quantity: str = "counts"):
    ds = open_stack(path)
    np.testing.assert_array_equal(ds["stack"].values, data)
    np.testing.assert_array_equal(ds["energy"].values, energies)
    assert ds["energy"].attrs["units"] == "eV"
    assert ds["stack"].dtype == np.float32
    assert ds.attrs["quantity"] == quantity
    assert ds["stack"].attrs["quantity"] == quantity
    return ds


def test_multipage_tiff_with_energy_file(tmp_path):
    data = _stack()
    tifffile.imwrite(tmp_path / "s.tif", data, photometric="minisblack")
    (tmp_path / "e.txt").write_text("\n".join(f"{v}" for v in E_EV) + "\n")
    out = import_tiff(tmp_path / "s.tif", tmp_path / "o.zarr", energies=tmp_path / "e.txt", tile=4)
    ds = _check(out, data, E_EV)
    assert ds["stack"].data.chunks == ((5,), (4, 4, 1), (4, 3))
    assert ds.attrs["source_format"] == "tiff"


def test_compressed_tiff_uint16_and_multicolumn_energies(tmp_path):
    data = (np.arange(5 * 6 * 8).reshape(5, 6, 8) * 7 % 65000).astype(np.uint16)
    tifffile.imwrite(tmp_path / "s.tif", data, photometric="minisblack", compression="zlib")
    (tmp_path / "e.txt").write_text("energy_keV I0\n" + "".join(f"{v / 1000} 1.0\n" for v in E_EV))
    out = import_stack(tmp_path / "s.tif", tmp_path / "o.zarr", energies=tmp_path / "e.txt", tile=4)
    _check(out, data.astype(np.float32), E_EV)


def test_folder_of_tiffs_natural_order(tmp_path):
    data = _stack(shape=(11, 6, 5))
    folder = tmp_path / "imgs"
    folder.mkdir()
    for k in range(11):
        tifffile.imwrite(folder / f"img_{k}.tif", data[k])
    (folder / "notes.txt").write_text("not an image")
    e = 8300.0 + np.arange(11)
    out = import_tiff(folder, tmp_path / "o.zarr", energies=e, tile=4)
    _check(out, data, e)  # img_10 comes after img_9


def test_folder_of_tiff_volumes_3d(tmp_path):
    data = _stack(shape=(3, 4, 6, 5))
    folder = tmp_path / "vols"
    folder.mkdir()
    for k in range(3):
        tifffile.imwrite(folder / f"v{k:02d}.tiff", data[k], photometric="minisblack")
    out = import_stack(folder, tmp_path / "o.zarr", energies=E_EV[:3], tile=4)
    ds = _check(out, data, E_EV[:3])
    assert ds["stack"].dims == ("energy", "z", "y", "x")
    assert ds["stack"].data.chunks == ((3,), (4,), (4, 2), (4, 1))


def _fxi(path: Path, data, e_kev, flat=None, dark=None, name="/img_xanes"):
    with h5py.File(path, "w") as f:
        f.create_dataset(name, data=data)
        f.create_dataset("/X_eng", data=e_kev)
        if flat is not None:
            f.create_dataset("/img_bkg", data=flat)
        if dark is not None:
            f.create_dataset("/img_dark", data=dark)


def test_hdf5_fxi_raw_counts_kev(tmp_path):
    data = (_stack() * 10).astype(np.uint16)
    _fxi(tmp_path / "x.h5", data, E_EV / 1000.0)
    out = import_hdf5(tmp_path / "x.h5", tmp_path / "o.zarr", tile=4)
    ds = _check(out, data.astype(np.float32), E_EV)
    assert ds.attrs["dataset"] == "/img_xanes"


def test_hdf5_fxi_flat_dark_absorbance(tmp_path):
    data = _stack()
    flat = np.stack([np.full((9, 7), 1200.0), np.full((9, 7), 1300.0)])  # averaged: 1250
    dark = np.full((1, 9, 7), 20.0)
    data[0, 0, 0] = 10.0  # I - dark <= 0 -> NaN
    _fxi(tmp_path / "x.h5", data, E_EV / 1000.0, flat=flat, dark=dark)
    out = import_stack(tmp_path / "x.h5", tmp_path / "o.zarr", tile=4)
    with np.errstate(all="ignore"):
        od = -np.log((data.astype(np.float64) - 20.0) / (1250.0 - 20.0))
    od[0, 0, 0] = np.nan
    ds = _check(out, od.astype(np.float32), E_EV, quantity="absorbance")
    assert ds.attrs["od_method"] == "flat_dark"
    # the user says the data are already absorbance: flats are not applied
    out2 = import_hdf5(tmp_path / "x.h5", tmp_path / "o2.zarr", quantity="absorbance", tile=4)
    _check(out2, data, E_EV, quantity="absorbance")


def test_hdf5_3d_volumes(tmp_path):
    data = _stack(shape=(4, 5, 6, 7))
    _fxi(tmp_path / "v.h5", data, E_EV[:4] / 1000.0, name="/recon")
    out = import_hdf5(tmp_path / "v.h5", tmp_path / "o.zarr", dataset="/recon", tile=4)
    ds = _check(out, data, E_EV[:4])
    assert ds["stack"].dims == ("energy", "z", "y", "x")
    arr = zarr.open_group(str(out), mode="r")["absorbance"]
    assert arr.chunks == (4, 4, 4, 4)


def test_hdf5_wrong_dataset_lists_present(tmp_path):
    _fxi(tmp_path / "x.h5", _stack(), E_EV / 1000.0)
    with pytest.raises(ValueError) as err:
        import_hdf5(tmp_path / "x.h5", tmp_path / "o.zarr", dataset="/exchange/data")
    msg = str(err.value)
    assert "'/exchange/data' not found" in msg
    assert "/img_xanes (5, 9, 7)" in msg and "/X_eng (5,)" in msg
    assert not (tmp_path / "o.zarr").exists()


def test_npy_and_zarr_inputs(tmp_path):
    data = _stack()
    np.save(tmp_path / "a.npy", data)
    out = import_npy(tmp_path / "a.npy", tmp_path / "o.zarr", energies=E_EV, tile=4)
    _check(out, data, E_EV)
    # a plain Zarr array needs energies
    z = zarr.create_array(
        str(tmp_path / "plain.zarr"), shape=data.shape, chunks=(1, 9, 7), dtype="f4"
    )
    z[:] = data
    with pytest.raises(ValueError, match="no energies"):
        import_zarr(tmp_path / "plain.zarr", tmp_path / "p.zarr")
    _check(import_zarr(tmp_path / "plain.zarr", tmp_path / "p.zarr", energies=E_EV), data, E_EV)
    # an xarray store with an energy coordinate in keV
    xds = xr.Dataset({"img": (("energy", "y", "x"), data)}, coords={"energy": E_EV / 1000.0})
    xds.to_zarr(tmp_path / "x.zarr", zarr_format=3, consolidated=False)
    _check(import_zarr(tmp_path / "x.zarr", tmp_path / "q.zarr", tile=4), data, E_EV)


def test_unsorted_energies_sorted_with_warning(tmp_path):
    data = _stack()
    perm = np.array([3, 0, 4, 1, 2])
    np.save(tmp_path / "a.npy", data[perm])
    with pytest.warns(UserWarning, match="not in increasing order"):
        out = import_npy(tmp_path / "a.npy", tmp_path / "o.zarr", energies=E_EV[perm], tile=4)
    ds = _check(out, data, E_EV)
    assert ds.attrs["energies_sorted"]
    # the input file is unchanged
    np.testing.assert_array_equal(np.load(tmp_path / "a.npy"), data[perm])


def test_energy_errors(tmp_path):
    np.save(tmp_path / "a.npy", _stack())
    e = E_EV.copy()
    e[3] = e[1]
    with pytest.raises(ValueError, match="duplicate"):
        import_npy(tmp_path / "a.npy", tmp_path / "o.zarr", energies=e)
    (tmp_path / "e.txt").write_text("1\n2\n3\n4\n")
    with pytest.raises(ValueError) as err:
        import_npy(tmp_path / "a.npy", tmp_path / "o.zarr", energies=tmp_path / "e.txt")
    assert str(err.value) == (
        f"4 energies in {tmp_path / 'e.txt'} but 5 images in {tmp_path / 'a.npy'}"
    )
    assert not (tmp_path / "o.zarr").exists()


def test_output_exists_and_input_protected(tmp_path):
    np.save(tmp_path / "a.npy", _stack())
    out = tmp_path / "o.zarr"
    import_npy(tmp_path / "a.npy", out, energies=E_EV)
    with pytest.raises(FileExistsError) as err:
        import_npy(tmp_path / "a.npy", out, energies=E_EV)
    assert str(err.value) == f"output {out} already exists; pass --overwrite to replace it"
    data2 = _stack(seed=1)
    np.save(tmp_path / "b.npy", data2)
    import_npy(tmp_path / "b.npy", out, energies=E_EV, overwrite=True)
    np.testing.assert_array_equal(open_stack(out)["stack"].values, data2)
    with pytest.raises(ValueError, match="inputs are never modified"):
        import_zarr(out, out, overwrite=True)


def test_i0_options_on_import(tmp_path):
    data = _stack()
    np.save(tmp_path / "a.npy", data)
    (tmp_path / "i0.txt").write_text("".join(f"{e} {1000 + k}\n" for k, e in enumerate(E_EV)))
    out = import_stack(tmp_path / "a.npy", tmp_path / "o.zarr", E_EV, i0=tmp_path / "i0.txt")
    i0 = 1000.0 + np.arange(5)
    expected = (-np.log(data.astype(np.float64) / i0[:, None, None])).astype(np.float32)
    ds = _check(out, expected, E_EV, quantity="absorbance")
    assert ds.attrs["od_method"] == "i0"
    out2 = import_stack(tmp_path / "a.npy", tmp_path / "b.zarr", E_EV, i0="background:0:2,0:3")
    bg = data[:, 0:2, 0:3].astype(np.float64).mean(axis=(1, 2))
    exp2 = -np.log(data.astype(np.float64) / bg[:, None, None])
    got = open_stack(out2)["stack"].values
    np.testing.assert_allclose(got, exp2, rtol=0, atol=1e-6)
    mask = np.zeros((9, 7), np.uint8)
    mask[0:2, 0:3] = 1
    tifffile.imwrite(tmp_path / "m.tif", mask)
    out3 = import_stack(tmp_path / "a.npy", tmp_path / "c.zarr", E_EV, i0=tmp_path / "m.tif")
    np.testing.assert_array_equal(open_stack(out3)["stack"].values, got)


def test_nan_pixels_kept(tmp_path):
    data = _stack()
    data[2, 3, 4] = np.nan
    data[1, 0, 0] = np.inf
    np.save(tmp_path / "a.npy", data)
    out = import_npy(tmp_path / "a.npy", tmp_path / "o.zarr", energies=E_EV)
    np.testing.assert_array_equal(open_stack(out)["stack"].values, data)


def test_reads_are_tile_sized(tmp_path, monkeypatch):
    """The import graph has one read per tile; no read covers the whole array."""
    data = _stack(shape=(5, 40, 30))
    tifffile.imwrite(tmp_path / "s.tif", data, photometric="minisblack", compression="zlib")
    ds = lazy_stack(tmp_path / "s.tif", E_EV, tile=8)
    arr = ds["stack"].data
    assert arr.chunks == ((5,), (8,) * 5, (8, 8, 8, 6))
    assert arr.npartitions == 20
    assert len(arr.__dask_graph__()) >= 20
    sizes: list[tuple[int, ...]] = []
    orig = importers._TiffReader.__getitem__

    def spy(self, key):
        out = orig(self, key)
        sizes.append(out.shape)
        return out

    monkeypatch.setattr(importers._TiffReader, "__getitem__", spy)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = import_tiff(tmp_path / "s.tif", tmp_path / "o.zarr", energies=E_EV, tile=8)
    np.testing.assert_array_equal(open_stack(out)["stack"].values, data)
    real = [s for s in sizes if np.prod(s) > 0]
    assert len(real) == 20
    assert max(np.prod(s) for s in real) == 5 * 8 * 8


def _shared_data() -> Path:
    env = os.environ.get("BIGXANES_SHARED_DATA")
    return Path(env) if env else Path(__file__).resolve().parents[3] / "shared" / "data"


def test_real_stxm_fe_l3(tmp_path):
    d = _shared_data() / "stxm_fe_l3"
    if not (d / "stack_counts.tif").exists():
        pytest.skip("shared data stxm_fe_l3 not available")
    out = import_stack(
        d / "stack_counts.tif",
        tmp_path / "fe.zarr",
        energies=d / "energies_eV.txt",
        i0=d / "i0_counts.txt",
        tile=64,
    )
    ds = open_stack(out)
    assert ds["stack"].shape == (123, 125, 125)
    assert ds["energy"].size == 123
    assert ds["energy"].values[0] == 700.0 and ds["energy"].values[-1] == 730.353
    assert ds.attrs["quantity"] == "absorbance"
    od = ds["stack"].values
    mask = tifffile.imread(d / "mask.tif") > 0
    assert np.isfinite(od[:, mask]).all()
    raw = tifffile.imread(d / "stack_counts.tif").astype(np.float64)
    i0 = np.loadtxt(d / "i0_counts.txt")[:, 1]
    expected = (-np.log(raw[:, mask] / i0[:, None])).astype(np.float32)
    np.testing.assert_array_equal(od[:, mask], expected)
