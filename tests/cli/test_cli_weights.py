"""``unmix --weights`` through the command line (issue 14, item 3): the I0 a stack was converted
with travels with it (``import --i0`` writes the store's ``i0`` variable) and counting weights
use it; bad combinations are one-line errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import xarray as xr

from bigxanes.cli import main
from bigxanes.simulate import simulate_to_arrays
from bigxanes.store import open_stack


def run(capsys, *argv) -> tuple[int, str, str]:
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def one_line(rc: int, err: str, *words: str) -> None:
    assert rc == 2 and "Traceback" not in err, (rc, err)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("bigxanes: error: "), err
    for w in words:
        assert w in lines[0], (w, lines[0])


@pytest.fixture(scope="module")
def counts_store(tmp_path_factory):
    """Transmitted counts of a simulated sample (I0 varying with energy) imported with a
    two-column I0 file, as a beamline user does."""
    tifffile = pytest.importorskip("tifffile")
    d = tmp_path_factory.mktemp("counts")
    sim = simulate_to_arrays("particles", (32, 32), 2, 0.0, None, 0)
    T = sim.energy.size
    i0 = np.linspace(800.0, 1200.0, T)
    rng = np.random.default_rng(0)
    counts = rng.poisson(i0[:, None, None] * np.exp(-2.0 * sim.stack)).astype(np.float32)
    tifffile.imwrite(d / "counts.tif", counts, photometric="minisblack")
    np.savetxt(d / "e.txt", sim.energy)
    np.savetxt(d / "i0.txt", np.column_stack([sim.energy, i0]))
    refs = xr.DataArray(
        2.0 * sim.references,
        dims=("energy", "component"),
        coords={"energy": sim.energy, "component": ["a", "b"]},
    )
    return d, sim, i0, refs


def test_import_keeps_i0_and_unmix_counts_uses_it(counts_store, tmp_path, capsys):
    d, sim, i0, refs = counts_store
    store = tmp_path / "od.zarr"
    rc, _, err = run(
        capsys, "import", d / "counts.tif", store, "--energies", d / "e.txt",
        "--i0", d / "i0.txt", "-q",
    )  # fmt: skip
    assert rc == 0, err
    np.testing.assert_allclose(open_stack(store)["i0"].values, i0)
    csv = tmp_path / "refs.csv"
    np.savetxt(csv, np.column_stack([sim.energy, refs.values]), delimiter=",",
               header="energy,a,b", comments="")  # fmt: skip
    out = tmp_path / "w.zarr"
    rc, out_text, err = run(capsys, "unmix", store, out, "--method", "lcf", "--refs", csv,
                            "--weights", "counts")  # fmt: skip
    assert rc == 0, err
    assert "weights: counts" in out_text and "given, median I0 1e+03" in out_text
    with xr.open_zarr(out, consolidated=False) as r:
        assert r.attrs["weights"] == "counts" and r.attrs["weights_source"] == "given"
        got = r.attrs["weights_i0"]
        np.testing.assert_allclose(json.loads(got) if isinstance(got, str) else got, i0)
        frac = r["fraction"].values
    # the fit is the physics: fractions close to the truth where the sample is
    fg = sim.scale > 0.3 * sim.scale.max()
    assert np.abs(frac[:, fg] - sim.fraction[:, fg]).mean() < 0.1


def test_weights_errors_are_one_line(counts_store, tmp_path, capsys):
    d, sim, i0, _ = counts_store
    store = tmp_path / "od.zarr"
    assert main(["import", str(d / "counts.tif"), str(store), "--energies", str(d / "e.txt"),
                 "--i0", str(d / "i0.txt"), "-q"]) == 0  # fmt: skip
    capsys.readouterr()
    rc, _, err = run(capsys, "unmix", store, tmp_path / "a.zarr", "--method", "edge50",
                     "--weights", "counts")  # fmt: skip
    one_line(rc, err, "Edge-50", "--weights")
    rc, _, err = run(capsys, "unmix", store, tmp_path / "b.zarr", "--method", "lcf",
                     "--i0", d / "i0.txt")  # fmt: skip
    one_line(rc, err, "--weights counts")
    csv = tmp_path / "refs.csv"
    np.savetxt(csv, np.column_stack([sim.energy, 2.0 * sim.references]), delimiter=",",
               header="energy,a,b", comments="")  # fmt: skip
    rc, _, err = run(capsys, "unmix", store, tmp_path / "c.zarr", "--method", "lcf",
                     "--refs", csv, "--lcf-variant", "lstsq", "--weights", "energy")  # fmt: skip
    one_line(rc, err, "--variant nnls")
    rc, _, err = run(capsys, "unmix", store, tmp_path / "d.zarr", "--method", "lcf",
                     "--weights", "count")  # fmt: skip
    assert rc == 2 and "invalid choice" in err
