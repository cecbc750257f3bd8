"""Output conventions: units everywhere, NaN outside the mask, coordinates, a safe stack name."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import xarray as xr

import bigxanes as bx
from bigxanes.conventions import consolidate, finalize_result
from bigxanes.store import open_stack, write_dataset


@pytest.fixture(scope="module")
def result():
    ds = bx.simulate("particles", shape=(48, 40), n_components=2, sigma=3)
    return ds, bx.lcf(ds["stack"], ds["references"])


def test_fraction_nan_outside_mask_and_raw_kept(result):
    _ds, res = result
    out = finalize_result(res)
    mask = res["mask"].values.astype(bool)
    assert (~mask).any() and mask.any()
    assert np.isnan(out["fraction"].values[:, ~mask]).all()
    np.testing.assert_array_equal(out["fraction"].values[:, mask], res["fraction"].values[:, mask])
    np.testing.assert_array_equal(out["fraction_unmasked"].values, res["fraction"].values)
    # a plain mean is now the mean over the sample
    np.testing.assert_allclose(
        out["fraction"].mean(("y", "x")).values,
        res["fraction"].values[:, mask].mean(axis=1),
        rtol=1e-5,
    )
    assert "fraction" in res and not np.isnan(res["fraction"].values).any()  # input unchanged


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
    p_new = write_dataset(new, tmp_path / "new.zarr")
    p_old = write_dataset(ds[["stack", "references"]], tmp_path / "old.zarr")
    for p in (p_new, p_old):
        np.testing.assert_array_equal(open_stack(p)["stack"].values, ds["stack"].values)


def test_consolidated_metadata_opens_without_warning(tmp_path, result):
    _ds, res = result
    p = write_dataset(finalize_result(res), tmp_path / "res.zarr")
    consolidate(p)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        back = xr.open_zarr(p)
    assert back["fraction"].attrs["units"] == "1"
    assert np.isnan(back["fraction"].values).any()
