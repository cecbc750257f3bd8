"""Export: TIFFs round-trip (ImageJ metadata), OME-Zarr opens with ome_zarr's reader, NetCDF."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

import bigxanes as bx
from bigxanes.export import export_result


@pytest.fixture(scope="module")
def result():
    ds = bx.simulate("particles", shape=(40, 36), n_components=3, sigma=3)
    res = bx.lcf(ds["stack"], ds["references"])
    res.attrs["pixel_size_um"] = 0.025
    return res


def test_tiff_round_trip_with_imagej_metadata(result, tmp_path):
    tifffile = pytest.importorskip("tifffile")
    out = export_result(result, tmp_path / "tif", "tiff")
    names = sorted(p.name for p in out.iterdir())
    comps = [str(c) for c in result["component"].values]
    assert [f"fraction_{c}.tif" for c in comps][0] in names and "scale.tif" in names
    mask = result["mask"].values.astype(bool)
    for i, c in enumerate(comps):
        with tifffile.TiffFile(out / f"fraction_{c}.tif") as tf:
            assert tf.is_imagej
            arr = tf.asarray()
            xres = tf.pages[0].tags["XResolution"].value
        assert arr.dtype == np.float32 and arr.shape == (40, 36)
        np.testing.assert_array_equal(arr[mask], result["fraction"].values[i][mask])
        assert np.isnan(arr[~mask]).all()
        assert abs(xres[0] / xres[1] - 1 / 0.025) < 1e-3


def test_ome_zarr_opens_with_the_ome_zarr_reader(result, tmp_path):
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Multiscales, Reader

    out = export_result(result, tmp_path / "res.ome.zarr", "ome-zarr")
    nodes = list(Reader(parse_url(str(out)))())
    assert nodes and nodes[0].specs and isinstance(nodes[0].specs[0], Multiscales)
    data = np.asarray(nodes[0].data[0])
    assert data.shape == (3, 40, 36)
    mask = result["mask"].values.astype(bool)
    np.testing.assert_array_equal(data[:, mask], result["fraction"].values[:, mask])
    meta = nodes[0].metadata
    assert [a["name"] for a in meta["axes"]] == ["c", "y", "x"]
    assert meta["channel_names"] == [str(c) for c in result["component"].values]


def test_netcdf_opens_with_xarray_and_refuses_overwrite(result, tmp_path):
    out = export_result(result, tmp_path / "res.nc", "netcdf")
    back = xr.open_dataset(out)
    np.testing.assert_array_equal(
        back["fraction_unmasked"].values,
        result["fraction_unmasked"].values.astype(back["fraction"].dtype),
    )
    assert back["fraction"].attrs["units"] == "1" and back["x"].attrs["units"] == "um"
    back.close()
    with pytest.raises(FileExistsError, match="--overwrite"):
        export_result(result, out, "netcdf")
    with pytest.raises(ValueError, match="--format"):
        export_result(result, tmp_path / "x", "png")
