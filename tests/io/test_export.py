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


def test_export_3d_streams(tmp_path):
    """A 3-D result is exported slab by slab (TIFF) or chunk by chunk (OME-Zarr): the exporting
    process never holds a whole map (issue 16), and the files hold the maps exactly."""
    import gc
    import tracemalloc

    import tifffile
    import zarr

    from bigxanes.export import export_result
    from bigxanes.store import write_dataset

    rng = np.random.default_rng(0)
    shape = (64, 48, 48)  # one float64 map: 1.2 MB; two components
    frac = rng.random((2,) + shape)
    ds = xr.Dataset(
        {
            "fraction": (("component", "z", "y", "x"), frac),
            "scale": (("z", "y", "x"), rng.random(shape)),
            "mask": (("z", "y", "x"), np.ones(shape, bool)),
        },
        coords={"component": ["a", "b"]},
        attrs={"method": "lcf"},
    )
    path = write_dataset(ds, tmp_path / "r.zarr", chunks=8)
    for fmt, out in (("tiff", tmp_path / "t"), ("ome-zarr", tmp_path / "o.ome.zarr")):
        # The warm-up export takes the imports and fills CPython's free lists (tuples of zarr's
        # asyncio reads, ~0.4 MB here, whatever the map size); a full collection empties them,
        # so with the collector on, the peak below would depend on when it last ran (0.38 or
        # 0.75 MB). Off, every allocation of the export, cyclic garbage included, still counts.
        gc.disable()
        try:
            export_result(path, tmp_path / f"warm-{fmt}", fmt)
            tracemalloc.start()
            try:
                export_result(path, out, fmt)
                peak = tracemalloc.get_traced_memory()[1]
            finally:
                tracemalloc.stop()
        finally:
            gc.enable()
        assert peak < frac[0].nbytes / 2, (fmt, peak)  # a map in float32 is frac[0].nbytes / 2
    np.testing.assert_array_equal(
        tifffile.imread(tmp_path / "t" / "fraction_a.tif"), frac[0].astype(np.float32)
    )
    img = zarr.open_group(str(tmp_path / "o.ome.zarr"), mode="r")
    level = img.attrs["multiscales"][0]["datasets"][0]["path"]  # "s0", as ome-zarr 0.18 names it
    np.testing.assert_array_equal(img[level][:], frac.astype(np.float32))
