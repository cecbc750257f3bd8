"""Tests of bigxanes.plot (figures written atomically, with real content)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.image as mpimg  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

import bigxanes as bx  # noqa: E402
from bigxanes.plot import (  # noqa: E402
    default_pixels,
    fit_spectra,
    plot_references,
    plot_result,
    rgb_composite,
)


def _content(path) -> float:
    img = mpimg.imread(str(path))[..., :3]
    return float(img.var())


@pytest.fixture(scope="module")
def run2d():
    ds = bx.simulate("particles", shape=(40, 40), n_components=3, sigma=5, seed=1)
    res = bx.unmix(ds["stack"], ds["references"], method="rum-tv", max_iter=10)
    return ds, res


def test_plot_result_2d_all_panels(run2d, tmp_path):
    ds, res = run2d
    out = plot_result(
        res,
        tmp_path / "r.png",
        stack=ds["stack"],
        references=ds["references"],
        pixels=[(20, 20), (5, 30)],
        eigenvalues=[10, 1, 0.1, 1e-3, 1e-4],
    )
    assert out.exists() and _content(out) > 1e-3
    assert [p.name for p in tmp_path.iterdir()] == ["r.png"]  # no temporary left


def test_plot_result_numpy_stack_and_no_stack(run2d, tmp_path):
    ds, res = run2d
    plot_result(
        res, tmp_path / "a.png", stack=ds["stack"].values, references=ds["references"].values
    )
    plot_result(res, tmp_path / "b.png")
    assert _content(tmp_path / "a.png") > 1e-3 and _content(tmp_path / "b.png") > 1e-3


def test_plot_result_3d_slice(tmp_path):
    ds = bx.simulate("particles", shape=(8, 20, 20), n_components=2, sigma=5)
    res = bx.unmix(ds["stack"], ds["references"], method="lcf")
    plot_result(
        res, tmp_path / "v.png", stack=ds["stack"], references=ds["references"], slice_index=2
    )
    assert _content(tmp_path / "v.png") > 1e-3
    with pytest.raises(ValueError, match="outside the volume"):
        plot_result(res, tmp_path / "w.png", slice_index=8)


def test_plot_errors(run2d, tmp_path):
    ds, res = run2d
    with pytest.raises(ValueError, match="outside the image"):
        plot_result(
            res,
            tmp_path / "x.png",
            stack=ds["stack"],
            references=ds["references"],
            pixels=[(100, 0)],
        )
    with pytest.raises(ValueError, match="fraction"):
        plot_result(ds, tmp_path / "y.png")
    assert not list(tmp_path.iterdir())


def test_helpers(run2d, tmp_path):
    ds, res = run2d
    f = res["fraction"].values
    rgb = rgb_composite(f, res["mask"].values)
    assert rgb.shape == (40, 40, 3) and rgb.min() >= 0 and rgb.max() <= 1
    assert np.all(rgb[~res["mask"].values] == 0)
    pix = default_pixels(res["scale"].values, res["mask"].values)
    assert 1 <= len(pix) <= 3 and all(res["mask"].values[p] for p in pix)
    fits = fit_spectra(ds["stack"].values, ds["references"].values, f, res["scale"].values, pix)
    for meas, fit in fits:
        assert meas.shape == fit.shape == (ds.sizes["energy"],)
        assert np.sqrt(np.mean((meas - fit) ** 2)) < 0.1 * float(ds["stack"].max())
    plot_references(
        ds["energy"].values,
        ds["references"].values,
        ["a", "b", "c"],
        tmp_path / "refs.png",
        eigenvalues=[5, 2, 1, 0.01],
        n_states=3,
    )
    assert _content(tmp_path / "refs.png") > 1e-4


def test_plot_numpy_stack_without_energies_is_a_clear_error(run2d, tmp_path):
    """A bare array cannot be baseline-corrected like the run without its energies; the fits
    were silently NaN before."""
    ds, res = run2d
    with pytest.raises(ValueError, match="pre-edge baseline"):
        plot_result(
            res.drop_vars("energy"),
            tmp_path / "c.png",
            stack=ds["stack"].values,
            references=ds["references"].values,
        )
    assert not list(tmp_path.iterdir())
