"""The real Fe L3-edge STXM stack (../shared/data/stxm_fe_l3) through the CLI.

Skipped when the shared data folder is absent (it is not part of the repository).
"""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.image as mpimg  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import xarray as xr  # noqa: E402

from bigxanes.cli import main  # noqa: E402
from bigxanes.store import open_stack  # noqa: E402


def _shared_data() -> Path:
    env = os.environ.get("BIGXANES_SHARED_DATA")
    return Path(env) if env else Path(__file__).resolve().parents[3] / "shared" / "data"


DATA = _shared_data() / "stxm_fe_l3"
pytestmark = pytest.mark.skipif(
    not (DATA / "stack_counts.tif").is_file(), reason=f"real STXM data not found in {DATA}"
)


@pytest.fixture(scope="module")
def stxm(tmp_path_factory):
    tifffile = pytest.importorskip("tifffile")
    d = tmp_path_factory.mktemp("stxm")
    stack = d / "fe.zarr"
    rc = main(
        [
            "import",
            str(DATA / "stack_counts.tif"),
            str(stack),
            "--energies",
            str(DATA / "energies_eV.txt"),
            "--i0",
            str(DATA / "i0_counts.txt"),
            "-q",
        ]
    )
    assert rc == 0
    refs = [str(DATA / "ref_fe2_reduced.txt"), str(DATA / "ref_fe3_oxidized.txt")]
    out = {}
    for method, extra in (("lcf", []), ("rum-tv", ["--iters", "60"])):
        res = d / f"{method}.zarr"
        rc = main(
            ["unmix", str(stack), str(res), "--method", method, "--refs", *refs, "-q", *extra]
        )
        assert rc == 0
        out[method] = xr.open_zarr(res, consolidated=False).load()
    mask = tifffile.imread(DATA / "mask.tif").astype(bool)
    return d, stack, out, mask


def test_import_with_i0_is_optical_density(stxm):
    _, stack, _, _ = stxm
    ds = open_stack(stack)
    assert ds["stack"].shape == (123, 125, 125)
    assert ds["stack"].attrs.get("quantity", ds.attrs.get("quantity")) == "absorbance"
    e = ds["energy"].values
    np.testing.assert_allclose(e, np.loadtxt(DATA / "energies_eV.txt"))
    counts = __import__("tifffile").imread(DATA / "stack_counts.tif").astype(np.float64)
    i0 = np.loadtxt(DATA / "i0_counts.txt")[:, 1]
    od = -np.log(counts[:, 60, 60] / i0)
    np.testing.assert_allclose(ds["stack"].values[:, 60, 60], od, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("method", ["lcf", "rum-tv"])
def test_fractions_in_simplex_inside_mask(stxm, method):
    _, _, out, mask = stxm
    f = out[method]["fraction_unmasked"].values
    assert f.shape == (2, 125, 125)
    fm = f[:, mask]
    assert np.all(np.isfinite(fm))
    assert fm.min() >= -1e-5 and fm.max() <= 1 + 1e-5
    np.testing.assert_allclose(fm.sum(axis=0), 1.0, atol=1e-4)


def test_rum_tv_residual_close_to_lcf(stxm):
    _, _, out, mask = stxm
    r_lcf = float(out["lcf"]["residual_rms"].values[mask].mean())
    r_tv = float(out["rum-tv"]["residual_rms"].values[mask].mean())
    assert abs(r_tv - r_lcf) <= 0.05 * r_lcf, (r_tv, r_lcf)


def test_png_written(stxm):
    d, _, _, _ = stxm
    png = d / "fe.png"
    assert main(["plot", str(d / "rum-tv.zarr"), str(png), "--pixels", "60,60", "-q"]) == 0
    img = mpimg.imread(str(png))[..., :3]
    assert float(img.var()) > 1e-3
