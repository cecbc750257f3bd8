"""Regions and masks: mean spectra ± std, chunk-wise; CSV; auto mask; mask statistics."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

import bigxanes as bx
from bigxanes.region_spectra import mask_summary, region_spectra, spectra_csv
from bigxanes.regions import load_mask, parse_region
from bigxanes.store import write_dataset


def _shared_data() -> Path | None:
    env = os.environ.get("BIGXANES_SHARED_DATA")
    if env:
        return Path(env)
    for parent in Path(__file__).resolve().parents:
        if (parent / "shared" / "data").is_dir():
            return parent / "shared" / "data"
    return None


STXM = (_shared_data() or Path("/nonexistent")) / "stxm_fe_l3"


def test_parse_region_2d_3d_and_errors():
    assert parse_region("2:5,:10", (20, 30)) == (slice(2, 5), slice(0, 10))
    assert parse_region("0:4,1:3,5:", (8, 6, 7)) == (slice(5, 8), slice(0, 4), slice(1, 3))
    for bad, msg in [("1:2", "y0:y1,x0:x1"), ("a:2,1:2", "integers"), ("5:5,1:2", "empty")]:
        with pytest.raises(ValueError, match=msg):
            parse_region(bad, (20, 30))


def test_region_mean_and_std_chunkwise_equal_numpy(tmp_path):
    ds = bx.simulate("particles", shape=(40, 50), n_components=2, sigma=5)
    st = ds["stack"].chunk({"y": 16, "x": 16})
    sp = region_spectra(st, region="5:25,10:40")
    sub = ds["stack"].values[:, 5:25, 10:40].reshape(ds.sizes["energy"], -1).astype(np.float64)
    np.testing.assert_allclose(sp["mean"].values, sub.mean(axis=1), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(sp["std"].values, sub.std(axis=1, ddof=1), rtol=1e-4, atol=1e-7)
    assert sp.attrs["n_pixels"] == 600
    m = ds["true_scale"].values > 0.5
    np.save(tmp_path / "m.npy", m)
    sp2 = region_spectra(st, region="5:25,10:40", mask=str(tmp_path / "m.npy"))
    sel = m[5:25, 10:40]
    np.testing.assert_allclose(
        sp2["mean"].values, sub[:, sel.ravel()].mean(axis=1), rtol=1e-5, atol=1e-7
    )
    with pytest.raises(ValueError, match="--region"):
        region_spectra(st)


def test_spectra_csv_and_figure(tmp_path):
    ds = bx.simulate("particles", shape=(32, 32), n_components=2, sigma=3)
    src = write_dataset(ds[["stack"]], tmp_path / "in.zarr", chunks=16)
    out = spectra_csv(src, tmp_path / "s.csv", region="0:16,0:16", plot=tmp_path / "s.png")
    lines = out.read_text().splitlines()
    assert lines[0].startswith("# bigxanes spectra") and lines[1] == "energy_eV,mean,std"
    assert len(lines) == 2 + ds.sizes["energy"]
    assert (tmp_path / "s.png").stat().st_size > 1000
    with pytest.raises(FileExistsError, match="--overwrite"):
        spectra_csv(src, out, region="0:16,0:16")


def test_mask_summary_over_the_mask():
    ds = bx.simulate("particles", shape=(40, 40), n_components=2, sigma=3)
    res = bx.lcf(ds["stack"], ds["references"])
    summ = mask_summary(res)
    m = res["mask"].values.astype(bool)
    c0 = str(res["component"].values[0])
    np.testing.assert_allclose(
        summ[c0]["mean"], res["fraction_unmasked"].values[0][m].mean(), rtol=1e-6
    )
    np.testing.assert_allclose(
        summ[c0]["p50"], np.median(res["fraction_unmasked"].values[0][m]), rtol=1e-6
    )
    assert summ["_mask"]["n_pixels"] == m.sum()


@pytest.mark.skipif(not (STXM / "mask.tif").is_file(), reason="real STXM data absent")
def test_real_stxm_mask_spectra_and_auto_mask():
    tifffile = pytest.importorskip("tifffile")
    counts = tifffile.imread(STXM / "stack_counts.tif").astype(np.float64)
    e = np.loadtxt(STXM / "energies_eV.txt")
    i0 = np.loadtxt(STXM / "i0_counts.txt")[:, 1]
    od = -np.log(counts / i0[:, None, None])
    st = xr.DataArray(od, dims=("energy", "y", "x"), coords={"energy": e}).chunk({"y": 64, "x": 64})
    m = load_mask(STXM / "mask.tif", (125, 125))
    assert abs(m.mean() - 0.28) < 0.01
    inside = region_spectra(st, mask=str(STXM / "mask.tif"))
    outside = region_spectra(st, mask=~m)
    # the Fe L3 white line is in the sample, not in the background
    wl_in = inside["mean"].values.max() - inside["mean"].values[:12].mean()
    wl_out = outside["mean"].values.max() - outside["mean"].values[:12].mean()
    assert wl_in > 5 * abs(wl_out)
    assert e[np.argmax(inside["mean"].values)] == pytest.approx(709.0, abs=2.0)
    auto = region_spectra(st, mask="auto")
    # Otsu keeps the thick sample only: nearly all of its pixels lie in the shipped mask
    from bigxanes.region_spectra import edge_jump_map
    from bigxanes.regions import auto_mask

    am = auto_mask(edge_jump_map(st).values)
    assert (am & m).sum() / am.sum() > 0.9
    assert auto.attrs["n_pixels"] == am.sum()
