import numpy as np
import pytest

from bigxanes.energy import as_ev, check_references, interpolate_reference, sort_energies


def test_as_ev_detects_kev():
    e = as_ev([8.30, 8.33, 8.35])
    np.testing.assert_allclose(e, [8300.0, 8330.0, 8350.0])
    assert e.dtype == np.float64


def test_as_ev_keeps_ev():
    e = as_ev([700.0, 700.5, 701.0])
    np.testing.assert_array_equal(e, [700.0, 700.5, 701.0])


@pytest.mark.parametrize(
    "bad, word",
    [
        ([[1.0, 2.0]], "1-D"),
        ([700.0, np.nan, 702.0], "non-finite"),
        ([700.0, 701.0, 701.0], "duplicate"),
        ([700.0, 702.0, 701.0], "strictly increasing"),
    ],
)
def test_as_ev_errors(bad, word):
    with pytest.raises(ValueError, match=word):
        as_ev(bad)


def test_sort_energies_reorders_arrays():
    e = np.array([702.0, 700.0, 701.0])
    imgs = np.arange(3)[:, None, None] * np.ones((3, 2, 2))
    es, (imgs_s,), changed = sort_energies(e, imgs)
    assert changed
    np.testing.assert_array_equal(es, [700.0, 701.0, 702.0])
    np.testing.assert_array_equal(imgs_s[:, 0, 0], [1, 2, 0])
    es2, _, changed2 = sort_energies(es, imgs_s)
    assert not changed2
    with pytest.raises(ValueError, match="duplicate"):
        sort_energies([1.0, 1.0, 2.0])


def test_interpolate_reference_linear_and_2d():
    re = np.linspace(8300, 8400, 11)
    vals = np.stack([re * 2.0, re - 8300.0], axis=1)
    e = np.array([8305.0, 8350.0, 8399.0])
    out = interpolate_reference(re, vals, e)
    np.testing.assert_allclose(out[:, 0], e * 2.0)
    np.testing.assert_allclose(out[:, 1], e - 8300.0)
    # keV reference onto eV grid
    out1 = interpolate_reference(re / 1000.0, vals[:, 1], e)
    np.testing.assert_allclose(out1, e - 8300.0, atol=1e-9)


def test_interpolate_reference_not_covered_message():
    re = np.linspace(8300, 8400, 11)
    with pytest.raises(ValueError) as exc:
        interpolate_reference(re, re, np.linspace(8250, 8380, 5))
    msg = str(exc.value)
    assert "8300.00-8400.00" in msg
    assert "8250.00-8380.00" in msg
    assert "--energy-range 8300.0,8380.0" in msg


def test_check_references():
    t = np.linspace(0, 1, 20)
    A = np.stack([t, t**2], axis=1)
    assert check_references(A).shape == (20, 2)
    with pytest.raises(ValueError, match="NaN"):
        check_references(np.where(t[:, None] > 0.5, np.nan, A))
    with pytest.raises(ValueError, match="more references"):
        check_references(np.ones((2, 3)) + np.eye(2, 3))
    with pytest.raises(ValueError, match="linearly dependent"):
        check_references(np.stack([t, 2 * t], axis=1))
    with pytest.raises(ValueError, match="condition"):
        check_references(np.stack([t, t + 1e-10 * t**2], axis=1))
