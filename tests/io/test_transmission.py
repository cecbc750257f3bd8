"""Tests for bigxanes.transmission: OD = -ln(I / I0), chunk-wise and lazily."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest

from bigxanes.transmission import (
    absorbance,
    od_from_background,
    od_from_flat_dark,
    od_from_i0,
    parse_region,
    read_i0,
)


def _counts() -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.uniform(10, 100, size=(4, 6, 5)).astype(np.float32)


def test_absorbance_values_and_nonpositive_nan():
    i = np.array([1.0, 0.0, -2.0, 4.0, np.nan, 3.0])
    i0 = np.array([2.0, 2.0, 2.0, 0.0, 2.0, np.inf])
    with np.errstate(all="raise"):  # no warnings/invalid operations on the valid path
        od = absorbance(i, i0, dtype=np.float64)
    assert od[0] == -np.log(0.5)
    assert np.isnan(od[1:]).all()  # NaN, never -inf/+inf


def test_od_from_i0_array_exact_and_lazy():
    c = _counts()
    i0 = np.array([100.0, 110.0, 120.0, 130.0])
    expected = (-np.log(c.astype(np.float64) / i0[:, None, None])).astype(np.float32)
    np.testing.assert_array_equal(od_from_i0(c, i0), expected)
    lazy = od_from_i0(da.from_array(c, chunks=(4, 3, 3)), i0)
    assert isinstance(lazy, da.Array)
    assert lazy.chunks == ((4,), (3, 3), (3, 2))
    np.testing.assert_array_equal(lazy.compute(), expected)


def test_od_from_i0_table_interpolated(tmp_path):
    c = _counts()
    e = np.array([700.0, 701.0, 702.0, 703.0])
    f = tmp_path / "i0.txt"
    # table on a coarser grid, in keV, with a header: values linear in energy
    f.write_text("# energy I0\n0.6995 95\n0.7015 115\n0.7035 135\n")
    got = read_i0(f, e, 4)
    np.testing.assert_allclose(got, [100.0, 110.0, 120.0, 130.0], rtol=0, atol=1e-9)
    # the same grid gives the table values exactly
    g = tmp_path / "i0b.txt"
    g.write_text("700 1\n701 2\n702 3\n703 4\n")
    np.testing.assert_array_equal(read_i0(g, e, 4), [1.0, 2.0, 3.0, 4.0])
    with pytest.raises(ValueError, match="cannot be extrapolated"):
        read_i0(g, e + 5, 4)
    with pytest.raises(ValueError, match="3 I0 values"):
        od_from_i0(c, np.ones(3))


def test_od_from_background_region_and_mask():
    c = _counts()
    c[1, 0, 0] = np.nan  # ignored in the background mean
    region = (slice(0, 2), slice(0, 3))
    bg = c[:, 0:2, 0:3].astype(np.float64)
    i0 = np.array([np.nanmean(b) for b in bg])
    expected = (-np.log(c.astype(np.float64) / i0[:, None, None])).astype(np.float32)
    got = od_from_background(c, region)
    np.testing.assert_allclose(got, expected, rtol=0, atol=2e-7)
    lazy = od_from_background(da.from_array(c, chunks=(4, 2, 2)), "background:0:2,0:3")
    assert isinstance(lazy, da.Array)
    np.testing.assert_array_equal(lazy.compute(), got)
    mask = np.zeros((6, 5), np.uint8)
    mask[0:2, 0:3] = 1
    np.testing.assert_array_equal(od_from_background(c, mask), got)
    with pytest.raises(ValueError, match="empty"):
        od_from_background(c, np.zeros((6, 5), bool))
    with pytest.raises(ValueError, match="spatial"):
        od_from_background(c, (slice(0, 2),))


def test_parse_region():
    assert parse_region("background:0:20,5:") == (slice(0, 20), slice(5, None))
    assert parse_region("1:2,3:4,5:6") == (slice(1, 2), slice(3, 4), slice(5, 6))
    with pytest.raises(ValueError, match="y0:y1"):
        parse_region("0-20,0-20")


def test_od_from_flat_dark_shapes():
    c = _counts()
    dark = np.full((2, 6, 5), 2.0)
    dark[1] = 4.0  # average 3
    flat = np.full((6, 5), 103.0)
    flat[0, 0] = 2.0  # flat - dark <= 0 -> NaN
    with np.errstate(all="ignore"):
        expected = -np.log((c.astype(np.float64) - 3.0) / (flat - 3.0))
    expected[:, 0, 0] = np.nan
    np.testing.assert_array_equal(od_from_flat_dark(c, flat, dark), expected.astype(np.float32))
    # one flat per energy
    flats = np.stack([flat + k for k in range(4)])
    with np.errstate(all="ignore"):
        exp2 = -np.log((c.astype(np.float64) - 3.0) / (flats - 3.0))
    exp2[:, 0, 0] = np.where(flats[:, 0, 0] - 3.0 > 0, exp2[:, 0, 0], np.nan)
    lazy = od_from_flat_dark(da.from_array(c, chunks=(4, 3, 3)), da.from_array(flats), dark)
    assert isinstance(lazy, da.Array)
    np.testing.assert_array_equal(lazy.compute(), exp2.astype(np.float32))
    with pytest.raises(ValueError, match="flat/dark field has shape"):
        od_from_flat_dark(c, np.ones((5, 6)))
