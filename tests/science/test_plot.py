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
    f = res["fraction_unmasked"].values
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


# --- issue 17: legend, residual/mask/histogram panels, marked pixels, edge maps, no empty cells


def test_grid_has_no_empty_cells():
    from bigxanes.plot import _grid, _mpl, grid_shape

    plt = _mpl()
    for n in range(1, 14):
        rows, cols, last = grid_shape(n)
        assert (rows - 1) * cols + last == n and 1 <= last <= cols
        fig, axs = _grid(plt, n)
        assert len(fig.axes) == n
        # the panels of every row span the full width
        right = max(ax.get_position().x1 for ax in axs[-last:])
        assert abs(right - max(ax.get_position().x1 for ax in axs)) < 1e-6
        plt.close(fig)


def test_new_panels_and_marked_pixels(run2d, tmp_path):
    import matplotlib.pyplot as plt

    ds, res = run2d
    res = res.copy()
    res["edge50"] = res["scale"] * 0 + 8350.0
    shown = {}
    orig = plt.Figure.savefig

    def spy(self, *a, **k):
        shown["titles"] = [ax.get_title() for ax in self.axes]
        shown["legends"] = [
            [t.get_text() for t in ax.get_legend().get_texts()]
            for ax in self.axes
            if ax.get_legend() is not None
        ]
        shown["marks"] = sum(1 for ax in self.axes for ln in ax.lines if ln.get_marker() == "+")
        return orig(self, *a, **k)

    plt.Figure.savefig = spy
    try:
        plot_result(res, tmp_path / "r.png", stack=ds["stack"], references=ds["references"])
    finally:
        plt.Figure.savefig = orig
    titles = " | ".join(shown["titles"])
    for want in ("RGB", "residual RMS", "mask", "fractions inside the mask", "Edge-50"):
        assert want in titles, titles
    names = [str(c) for c in res["component"].values]
    assert any(leg[: len(names)] == names[:3] for leg in shown["legends"])  # RGB legend
    assert shown["marks"] >= 3  # chosen pixels marked on the maps


def test_fraction_std_is_shown(tmp_path):
    import matplotlib.pyplot as plt

    ds = bx.simulate("particles", shape=(24, 24), n_components=2, sigma=5, seed=2)
    res = bx.lcf(ds["stack"], ds["references"])
    assert "fraction_std" in res
    shown = {}
    orig = plt.Figure.savefig

    def spy(self, *a, **k):
        shown["titles"] = [ax.get_title() for ax in self.axes]
        return orig(self, *a, **k)

    plt.Figure.savefig = spy
    try:
        plot_result(res, tmp_path / "s.png")
    finally:
        plt.Figure.savefig = orig
    assert sum("fraction std" in t for t in shown["titles"]) == 2, shown["titles"]


def test_edge50_only_result_is_plotted(tmp_path):
    ds = bx.simulate("particles", shape=(32, 32), n_components=2, sigma=3)
    res = bx.edge50(ds["stack"], None)
    assert "fraction" not in res
    out = plot_result(res, tmp_path / "e.png")
    assert _content(out) > 0.02


def test_png_follows_the_umask(run2d, tmp_path):
    import os

    _ds, res = run2d
    old = os.umask(0o022)
    try:
        out = plot_result(res, tmp_path / "u.png")
    finally:
        os.umask(old)
    assert (out.stat().st_mode & 0o777) == 0o644


def test_edge_maps_result_keeps_its_title(tmp_path):
    import matplotlib.pyplot as plt

    from bigxanes.edge_maps import edge_maps

    ds = bx.simulate("particles", shape=(32, 32), n_components=2, sigma=2)
    res = edge_maps(ds["stack"])
    seen = {}
    orig = plt.Figure.savefig

    def spy(self, *a, **k):
        seen["sup"] = self._suptitle.get_text()
        seen["titles"] = [ax.get_title() for ax in self.axes if ax.get_title()]
        return orig(self, *a, **k)

    plt.Figure.savefig = spy
    try:
        plot_result(res, tmp_path / "em.png")
    finally:
        plt.Figure.savefig = orig
    assert seen["sup"] == "edge-maps"
    assert {"Edge-50 energy", "white-line energy"} <= set(seen["titles"])
