"""The beamline workflow through the command line (issue 17): align, masks and regions, spectra,
edge maps without references, output conventions, export, figures. Run from another working
directory with relative paths, as a user would; small stacks."""

from __future__ import annotations

import csv
import os
import stat
import warnings

import matplotlib

matplotlib.use("Agg")
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import xarray as xr  # noqa: E402
from scipy import ndimage  # noqa: E402

import bigxanes as bx  # noqa: E402
from bigxanes.align import edge_region  # noqa: E402
from bigxanes.cli import main  # noqa: E402
from bigxanes.store import open_stack, write_dataset  # noqa: E402


def run(capsys, *argv) -> tuple[int, str, str]:
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def one_line_error(rc: int, err: str, *words: str) -> None:
    assert rc == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("bigxanes: error:"), err
    assert "Traceback" not in err
    for w in words:
        assert w in lines[0], (w, lines[0])


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """A folder with a small simulated stack store ``s.zarr`` (references stored) and a mask."""
    d = tmp_path_factory.mktemp("wf")
    ds = bx.simulate("particles", shape=(24, 24), n_components=2, sigma=5, seed=2)
    write_dataset(ds, d / "s.zarr", chunks=12)
    m = np.zeros((24, 24), dtype=np.uint8)
    m[3:21, 2:20] = 1
    np.save(d / "mask.npy", m)
    return d, ds, m.astype(bool)


@pytest.fixture
def cwd(work, monkeypatch):
    d, ds, m = work
    monkeypatch.chdir(d)
    return d, ds, m


# --- 1. align -------------------------------------------------------------------------------


def _drifted(shape=(48, 48), seed=4, amp=6.0, noise=3.0):
    ds = bx.simulate("particles", shape=shape, n_components=2, sigma=0.0, seed=seed)
    clean = ds["stack"].values.astype(np.float64) + 0.5 * ds["true_scale"].values[None]
    T = clean.shape[0]
    rng = np.random.default_rng(seed)
    d = np.clip(np.cumsum(rng.normal(0.0, 0.8, (T, 2)), axis=0), -amp, amp)
    _lo, ref, _e0 = edge_region(ds["energy"].values, clean.reshape(T, -1).mean(axis=1))
    d -= d[ref]
    moved = np.stack([ndimage.shift(clean[t], -d[t], order=3, mode="nearest") for t in range(T)])
    std = noise / 255.0 * clean.max()
    moved += rng.normal(0.0, std, moved.shape)
    undrifted = clean + rng.normal(0.0, std, clean.shape)
    st = xr.DataArray(moved.astype(np.float32), dims=ds["stack"].dims, coords=ds["stack"].coords)
    und = st.copy(data=undrifted.astype(np.float32))
    return xr.Dataset({"stack": st, "references": ds["references"]}), d, und, ds


def test_align_cli_recovers_drift_stores_and_plots_the_table(tmp_path, monkeypatch, capsys):
    ds, d, undrifted, sim = _drifted()
    write_dataset(ds, tmp_path / "drift.zarr", chunks=24)
    monkeypatch.chdir(tmp_path)
    rc, out, err = run(capsys, "align", "drift.zarr", "al.zarr", "-q")
    assert rc == 0, err
    al = open_stack("al.zarr")
    err_px = al["shift"].values - d
    assert np.abs(d).max() > 3.0
    assert float(np.sqrt((err_px**2).sum(axis=1).mean())) < 0.1
    assert np.isfinite(al["stack"].values).all()  # cropped: no invalid border pixel
    rc, out, err = run(capsys, "plot", "al.zarr", "shifts.png")
    assert rc == 0 and (tmp_path / "shifts.png").stat().st_size > 5000 and "shift table" in out
    # the aligned store is a stack store: unmix reads it, and the maps are as good as those of
    # the undrifted stack on the same crop (within 0.5 dB), far better than the drifted ones
    rc, out, err = run(capsys, "unmix", "al.zarr", "r.zarr", "--method", "lcf", "-q")
    assert rc == 0, err
    from bigxanes.kernels.registration import valid_box
    from bigxanes.metrics import foreground_mask, psnr_foreground

    box = valid_box(undrifted.shape[1:], al["shift"].values)
    sl = (slice(None),) + box
    truth = sim["true_fraction"].values[sl]
    fg = foreground_mask(sim["true_scale"].values[box])
    A = sim["references"]
    r = xr.open_zarr("r.zarr").load()
    p_al = psnr_foreground(r["fraction_unmasked"].values, truth, fg)
    p_und = psnr_foreground(bx.lcf(undrifted[sl], A)["fraction_unmasked"].values, truth, fg)
    p_dr = psnr_foreground(bx.lcf(ds["stack"][sl], A)["fraction_unmasked"].values, truth, fg)
    assert r["fraction"].shape[1:] == undrifted[sl].shape[1:]
    assert p_al > p_und - 0.5, (p_al, p_und)
    assert p_dr < p_und - 3.0, (p_dr, p_und)


def test_align_noise_only_pre_edge_reports_no_phantom_drift(tmp_path, monkeypatch, capsys):
    """The earlier report: 11.31 px on an undrifted noisy 48x48 stack (pre-edge images hold
    noise only; phase correlation of noise returns a random peak)."""
    monkeypatch.chdir(tmp_path)
    rc, _, err = run(
        capsys, "simulate", "s.zarr", "--shape", "48,48", "--noise", "7", "--seed", "0", "-q"
    )
    assert rc == 0, err
    rc, out, err = run(capsys, "align", "s.zarr", "a.zarr")
    assert rc == 0, err
    s = open_stack("a.zarr")["shift"].values
    assert np.abs(s).max() < 0.3, np.abs(s).max()
    assert "kept their neighbour's shift" in out
    assert open_stack("a.zarr")["stack"].shape[1:] >= (46, 46)


def test_align_cli_3d_volume(tmp_path, monkeypatch, capsys):
    ds = bx.simulate("particles", shape=(12, 24, 24), n_components=2, sigma=0.0, seed=3)
    ds = ds.isel(energy=slice(None, None, 3))  # 34 energies: a small, fast volume
    clean = ds["stack"].values.astype(np.float64) + 0.5 * ds["true_scale"].values[None]
    T = clean.shape[0]
    _lo, ref, _e0 = edge_region(ds["energy"].values, clean.reshape(T, -1).mean(axis=1))
    d = np.zeros((T, 3))
    d[: ref - 5] = [1.0, -1.5, 2.25]  # the pre-edge moved by a known sub-pixel step
    moved = np.stack([ndimage.shift(clean[t], -d[t], order=3, mode="nearest") for t in range(T)])
    st = xr.DataArray(moved.astype(np.float32), dims=ds["stack"].dims, coords=ds["stack"].coords)
    write_dataset(xr.Dataset({"stack": st}), tmp_path / "v.zarr", chunks=12)
    monkeypatch.chdir(tmp_path)
    rc, out, err = run(capsys, "align", "v.zarr", "va.zarr", "--upsample", "20", "-q")
    assert rc == 0, err
    al = open_stack("va.zarr")
    assert list(al["axis"].values) == ["z", "y", "x"]
    err_px = al["shift"].values - d
    assert float(np.sqrt((err_px**2).sum(axis=1).mean())) < 0.1
    assert al["stack"].dims == ("energy", "z", "y", "x") and np.isfinite(al["stack"].values).all()


def test_align_bad_input_one_line(cwd, capsys):
    rc, _, err = run(capsys, "align", "s.zarr", "x.zarr", "--reference-energy", "high")
    one_line_error(rc, err, "--reference-energy")
    rc, _, err = run(capsys, "align", "s.zarr", "x.zarr", "--region", "5:1,0:10")
    one_line_error(rc, err, "--region")
    rc, _, err = run(capsys, "align", "s.zarr", "s.zarr")
    one_line_error(rc, err, "input")


# --- 2. masks, regions, spectra, info ----------------------------------------------------------


@pytest.mark.parametrize("method", ["lcf", "rum-tv"])
def test_unmix_mask_and_region_engine_equals_memory(cwd, capsys, method):
    d, ds, m = cwd
    extra = ["--iters", "15"] if method == "rum-tv" else []
    out = f"mr-{method}.zarr"
    rc, _, err = run(
        capsys,
        "unmix",
        "s.zarr",
        out,
        "--method",
        method,
        "--mask",
        "mask.npy",
        "--region",
        "2:22,1:23",
        "--overwrite",
        "-q",
        *extra,
    )
    assert rc == 0, err
    eng = xr.open_zarr(out).load()
    kw = {"max_iter": 15} if method == "rum-tv" else {}
    mem = bx.unmix(ds["stack"], ds["references"], method=method, mask=m, region="2:22,1:23", **kw)
    assert eng["fraction"].shape == (2, 20, 22)
    np.testing.assert_array_equal(eng["mask"].values, mem["mask"].values)
    assert not eng["mask"].values[~m[2:22, 1:23]].any()  # nothing outside the user mask
    fe, fm = eng["fraction"].values, mem["fraction"].values
    np.testing.assert_array_equal(np.isnan(fe), np.isnan(fm))
    assert np.nanmax(np.abs(fe - fm)) <= 1e-5
    assert list(eng["y"].values[:2]) == [2, 3] and list(eng["x"].values[:2]) == [1, 2]
    assert eng.attrs["region"] == "2:22,1:23" and eng.attrs["n_user_mask"] == int(m.sum())


def test_unmix_mask_auto_and_errors(cwd, capsys):
    rc, out, err = run(
        capsys, "unmix", "s.zarr", "ma.zarr", "--method", "lcf", "--mask", "auto", "--overwrite"
    )
    assert rc == 0, err
    res = xr.open_zarr("ma.zarr")
    assert res.attrs["user_mask"].startswith("auto")
    assert 0 < int(res["mask"].sum()) < res["mask"].size
    np.save("small.npy", np.ones((5, 5), bool))
    rc, _, err = run(capsys, "unmix", "s.zarr", "e.zarr", "--method", "lcf", "--mask", "small.npy")
    one_line_error(rc, err, "--mask")
    rc, _, err = run(capsys, "unmix", "s.zarr", "e.zarr", "--method", "lcf", "--mask", "no.tif")
    one_line_error(rc, err, "no.tif")
    rc, _, err = run(capsys, "unmix", "s.zarr", "e.zarr", "--method", "lcf", "--region", "0:5")
    one_line_error(rc, err, "--region")


def test_spectra_cli_mean_and_std_equal_numpy(cwd, capsys):
    d, ds, m = cwd
    rc, out, err = run(
        capsys,
        "spectra",
        "s.zarr",
        "sp.csv",
        "--region",
        "4:16,5:20",
        "--mask",
        "mask.npy",
        "--plot",
        "sp.png",
        "--overwrite",
    )
    assert rc == 0, err
    with open(d / "sp.csv") as fh:
        head = fh.readline()
        rows = list(csv.DictReader(fh))
    sel = np.zeros((24, 24), bool)
    sel[4:16, 5:20] = True
    sel &= m
    Y = ds["stack"].values[:, sel].astype(np.float64)
    assert f"n_pixels={int(sel.sum())}" in head
    np.testing.assert_allclose([float(r["mean"]) for r in rows], Y.mean(axis=1), rtol=1e-4)
    np.testing.assert_allclose([float(r["std"]) for r in rows], Y.std(axis=1, ddof=1), rtol=1e-4)
    assert (d / "sp.png").stat().st_size > 5000
    rc, out, err = run(capsys, "plot", "sp.csv", "sp2.png")
    assert rc == 0 and "mean ± std" in out and (d / "sp2.png").stat().st_size > 5000
    rc, _, err = run(capsys, "spectra", "s.zarr", "x.csv")
    one_line_error(rc, err, "--region", "--mask")


def test_info_prints_fractions_over_the_mask(cwd, capsys):
    rc, _, err = run(
        capsys, "unmix", "s.zarr", "i.zarr", "--method", "lcf", "--mask", "mask.npy", "-q"
    )
    assert rc == 0 or "already exists" in err
    rc, out, err = run(capsys, "info", "i.zarr")
    assert rc == 0, err
    res = xr.open_zarr("i.zarr").load()
    mask = res["mask"].values
    assert f"fractions over the mask ({int(mask.sum())} pixels" in out
    for j, c in enumerate(res["component"].values):
        v = res["fraction_unmasked"].values[j][mask]
        line = next(ln for ln in out.splitlines() if ln.strip().startswith(f"{c}:"))
        assert f"mean {v.mean():.3f}" in line and f"{np.median(v):.3f}" in line


# --- 3. edge maps without references -----------------------------------------------------------


def test_edge50_without_references_has_white_line_and_plots(tmp_path, monkeypatch, capsys):
    ds = bx.simulate("particles", shape=(24, 24), n_components=2, sigma=2, seed=1)
    write_dataset(ds[["stack"]], tmp_path / "norefs.zarr", chunks=12)
    monkeypatch.chdir(tmp_path)
    rc, out, err = run(capsys, "unmix", "norefs.zarr", "e.zarr", "--method", "edge50", "-q")
    assert rc == 0, err
    res = xr.open_zarr("e.zarr").load()
    mem = bx.edge50(ds["stack"])
    for v in ("edge50", "white_line_energy", "white_line_height"):
        assert res[v].attrs["units"]
        np.testing.assert_allclose(res[v].values, mem[v].values, atol=1e-3, equal_nan=True)
    fg = res["mask"].values & (ds["true_scale"].values > 0.5 * ds["true_scale"].values.max())
    wl = res["white_line_energy"].values[fg]
    e = ds["energy"].values
    assert np.isfinite(wl).all() and (wl > res.attrs["e0"]).all() and (wl < e[-1]).all()
    # the white line moves with the chemical state: correlated with the true fraction
    x2 = ds["true_fraction"].values[1][fg]
    assert abs(np.corrcoef(wl, x2)[0, 1]) > 0.5
    rc, out, err = run(capsys, "plot", "e.zarr", "e.png")
    assert rc == 0, err
    assert (tmp_path / "e.png").stat().st_size > 10000
    rc, out, err = run(capsys, "info", "e.zarr")
    assert rc == 0, err
    assert "kind: result" in out and "white_line_energy over the mask (eV)" in out


# --- 4. conventions and export -----------------------------------------------------------------


def test_result_conventions_and_plain_open(cwd, capsys):
    rc, _, err = run(capsys, "unmix", "s.zarr", "c.zarr", "--method", "lcf", "--overwrite", "-q")
    assert rc == 0, err
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # consolidated metadata: no warning
        res = xr.open_zarr("c.zarr")
    mask = res["mask"].values
    assert np.isnan(res["fraction"].values[:, ~mask]).all()
    assert np.isfinite(res["fraction_unmasked"].values).all()
    for name in res.variables:
        assert "long_name" in res[name].attrs, name
        if res[name].dtype.kind in "iufb":
            assert "units" in res[name].attrs, name
    assert res["y"].attrs["units"] == "pixel" and res.sizes["y"] == 24
    st = xr.open_zarr("s.zarr")
    assert "absorbance" in st and st.absorbance.attrs is not None  # no method shadows it


def test_export_cli_tiff_ome_zarr_netcdf(cwd, capsys):
    tifffile = pytest.importorskip("tifffile")
    rc, _, err = run(capsys, "unmix", "s.zarr", "x.zarr", "--method", "lcf", "--overwrite", "-q")
    assert rc == 0, err
    res = xr.open_zarr("x.zarr").load()
    comps = [str(c) for c in res["component"].values]
    rc, out, err = run(
        capsys, "export", "x.zarr", "tif", "--format", "tiff", "--pixel-size", "0.05", "--overwrite"
    )
    assert rc == 0, err
    with tifffile.TiffFile(f"tif/fraction_{comps[0]}.tif") as tf:
        assert tf.is_imagej
        arr = tf.asarray()
    assert arr.dtype == np.float32
    np.testing.assert_array_equal(arr, res["fraction"].values[0])  # NaN outside the mask too
    rc, _, err = run(
        capsys, "export", "x.zarr", "o.ome.zarr", "--format", "ome-zarr", "--overwrite"
    )
    assert rc == 0, err
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Reader

    nodes = list(Reader(parse_url("o.ome.zarr"))())
    data = np.asarray(nodes[0].data[0])
    assert data.shape[0] == len(comps)
    np.testing.assert_allclose(data[0], res["fraction"].values[0], equal_nan=True)
    rc, _, err = run(capsys, "export", "x.zarr", "x.nc", "--format", "netcdf", "--overwrite")
    assert rc == 0, err
    with xr.open_dataset("x.nc") as nc:
        np.testing.assert_allclose(nc["fraction"].values, res["fraction"].values, equal_nan=True)
    # again without --overwrite: refused; with it: replaced (bigxanes wrote it)
    rc, _, err = run(capsys, "export", "x.zarr", "x.nc", "--format", "netcdf")
    one_line_error(rc, err, "--overwrite")
    rc, _, err = run(capsys, "export", "x.zarr", "tif", "--format", "tiff", "--overwrite")
    assert rc == 0, err
    rc, _, err = run(capsys, "export", "s.zarr", "y.nc", "--format", "netcdf")
    one_line_error(rc, err, "not a result")


# --- 5. figures: umask, no empty cells ---------------------------------------------------------


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_figures_follow_the_umask(cwd, capsys, umask):
    rc, _, err = run(capsys, "unmix", "s.zarr", "u.zarr", "--method", "lcf", "-q")
    assert rc == 0 or "already exists" in err
    old = os.umask(umask)
    try:
        png = f"u-{umask:o}.png"
        rc, _, err = run(capsys, "plot", "u.zarr", png)
        assert rc == 0, err
        rc, _, err = run(capsys, "spectra", "s.zarr", f"u-{umask:o}.csv", "--region", "0:8,0:8")
        assert rc == 0, err
    finally:
        os.umask(old)
    for f in (png, f"u-{umask:o}.csv"):
        assert stat.S_IMODE(os.stat(f).st_mode) == 0o666 & ~umask, f


def test_fxi_pixel_size_reaches_the_result_coordinates(tmp_path, monkeypatch, capsys):
    h5py = pytest.importorskip("h5py")
    from bigxanes.importers import fxi_pixel_size_um

    assert fxi_pixel_size_um(b"21.3nm") == pytest.approx(0.0213)
    assert fxi_pixel_size_um(np.float64(43.3)) == pytest.approx(0.0433)
    assert fxi_pixel_size_um("0.05 um") == pytest.approx(0.05)
    assert fxi_pixel_size_um("n/a") is None
    ds = bx.simulate("particles", shape=(16, 20), n_components=2, sigma=3, seed=0)
    with h5py.File(tmp_path / "scan.h5", "w") as f:
        f.create_dataset("/img_xanes", data=ds["stack"].values)
        f.create_dataset("/X_eng", data=ds["energy"].values / 1000.0)
        f.create_dataset("Pixel Size", data="21.3nm")
    np.savetxt(tmp_path / "refs.txt", np.column_stack([ds["energy"].values, ds["references"]]))
    monkeypatch.chdir(tmp_path)
    rc, _, err = run(capsys, "import", "scan.h5", "s.zarr", "--quantity", "absorbance", "-q")
    assert rc == 0, err
    rc, _, err = run(capsys, "unmix", "s.zarr", "r.zarr", "--method", "lcf", "--refs", "refs.txt")
    assert rc == 0, err
    res = xr.open_zarr("r.zarr")
    assert res["x"].attrs["units"] == "um"
    np.testing.assert_allclose(res["x"].values[:3], [0.0, 0.0213, 0.0426])
    assert res.sizes["y"] == 16 and res["y"].values[-1] == pytest.approx(15 * 0.0213)
