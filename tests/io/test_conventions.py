"""Output conventions: units everywhere, NaN outside the mask, coordinates, a safe stack name."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import xarray as xr

import bigxanes as bx
from bigxanes.conventions import finalize_result
from bigxanes.store import open_stack, write_dataset


@pytest.fixture(scope="module")
def result():
    ds = bx.simulate("particles", shape=(48, 40), n_components=2, sigma=3)
    return ds, bx.lcf(ds["stack"], ds["references"])


def test_fraction_nan_outside_mask_and_raw_kept(result):
    _ds, res = result  # bx.lcf applies the conventions itself (pipeline/result.py)
    mask = res["mask"].values.astype(bool)
    assert (~mask).any() and mask.any()
    raw = res["fraction_unmasked"].values
    assert np.isfinite(raw).all()
    assert np.isnan(res["fraction"].values[:, ~mask]).all()
    np.testing.assert_array_equal(res["fraction"].values[:, mask], raw[:, mask])
    # a plain mean is now the mean over the sample
    np.testing.assert_allclose(
        res["fraction"].mean(("y", "x")).values, raw[:, mask].mean(axis=1), rtol=1e-5
    )
    # applying the conventions again changes nothing (one place, idempotent)
    again = finalize_result(res)
    np.testing.assert_array_equal(again["fraction_unmasked"].values, raw)
    np.testing.assert_array_equal(again["fraction"].values, res["fraction"].values)


def test_engine_result_follows_the_same_conventions(result, tmp_path):
    from bigxanes.engine import unmix_store

    ds, res = result
    src = write_dataset(ds, tmp_path / "s.zarr", chunks=16)
    out = unmix_store(src, tmp_path / "r.zarr", method="lcf", progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # consolidated metadata: no warning
        eng = xr.open_zarr(out)
    assert sorted(eng.data_vars) == sorted(res.data_vars)
    for name in res.variables:
        for k in ("units", "long_name"):
            assert eng[name].attrs.get(k) == res[name].attrs.get(k), (name, k)
    np.testing.assert_allclose(eng["fraction"].values, res["fraction"].values, atol=1e-5)
    assert eng["y"].attrs["units"] == "pixel"


def test_units_and_long_name_on_every_variable(result):
    _ds, res = result
    out = finalize_result(res, pixel_size=0.03)
    for name in out.variables:
        if out[name].dtype.kind in "iufb":
            assert "units" in out[name].attrs, name
        assert "long_name" in out[name].attrs, name
    assert out["energy"].attrs["units"] == "eV"
    assert out["x"].attrs["units"] == "um"
    np.testing.assert_allclose(out["x"].values[:3], [0.0, 0.03, 0.06])
    assert out.attrs["pixel_size_um"] == [0.03, 0.03]
    nopx = finalize_result(res)
    assert nopx["y"].attrs["units"] == "pixel" and nopx.sizes["y"] == 48
    with pytest.raises(ValueError, match="--pixel-size"):
        finalize_result(res, pixel_size=(1.0, 2.0, 3.0))


def test_stack_renamed_and_old_and_new_stores_read(tmp_path, result):
    ds, _res = result
    new = finalize_result(ds[["stack", "references"]])
    assert "absorbance" in new and "stack" not in new
    assert new.absorbance.attrs["long_name"]  # attribute access is no longer a method
    p_new = write_dataset(ds[["stack", "references"]], tmp_path / "new.zarr")
    assert (p_new / "absorbance").is_dir() and not (p_new / "stack").exists()
    p_old = tmp_path / "old.zarr"  # a store as earlier versions wrote it
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zarr's note on fixed-length strings
        ds[["stack", "references"]].to_zarr(p_old, zarr_format=3, consolidated=False)
    from bigxanes.store import mark_complete

    mark_complete(p_old)
    for p in (p_new, p_old):
        np.testing.assert_array_equal(open_stack(p)["stack"].values, ds["stack"].values)


def test_consolidated_metadata_opens_without_warning(tmp_path, result):
    _ds, res = result
    p = write_dataset(res, tmp_path / "res.zarr")  # consolidates itself
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        back = xr.open_zarr(p)
    assert back["fraction"].attrs["units"] == "1"
    assert np.isnan(back["fraction"].values).any()
