"""Bad input -> what the user sees (docs/cli.md): one line on stderr, exit code 2, no traceback."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from bigxanes.cli import main
from bigxanes.simulate import simulate
from bigxanes.store import open_stack, write_dataset


def run(capsys, *argv) -> tuple[int, str, str]:
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def assert_user_error(rc: int, err: str, *words: str) -> str:
    assert rc == 2
    assert "Traceback" not in err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    line = lines[0]
    assert line.startswith("bigxanes: error: ")
    for w in words:
        assert w.lower() in line.lower(), (w, line)
    return line


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    d = tmp_path_factory.mktemp("bad")
    ds = simulate("particles", shape=(32, 32), n_components=2, sigma=7, seed=0)
    write_dataset(ds, d / "sim.zarr")
    return d, ds


def test_missing_file(sim, capsys):
    d, _ = sim
    rc, _, err = run(capsys, "import", d / "nope.tif", d / "o.zarr", "--energies", d / "e.txt")
    assert_user_error(rc, err, "nope.tif", "does not exist")
    rc, _, err = run(capsys, "unmix", d / "nope.zarr", d / "o.zarr")
    assert_user_error(rc, err, "nope.zarr", "does not exist")
    rc, _, err = run(capsys, "unmix", d / "sim.zarr", d / "o.zarr", "--refs", d / "none.txt")
    assert_user_error(rc, err, "none.txt", "not found")


def test_wrong_hdf5_dataset_path(sim, capsys):
    h5py = pytest.importorskip("h5py")
    d, ds = sim
    with h5py.File(d / "fxi.h5", "w") as f:
        f["img_xanes"] = ds["stack"].values
        f["X_eng"] = ds["energy"].values / 1000
    rc, _, err = run(capsys, "import", d / "fxi.h5", d / "o.zarr", "--dataset", "/exchange/data")
    # names the wrong path and lists what is there
    assert_user_error(rc, err, "/exchange/data", "not found", "/img_xanes", "--dataset")


def test_energy_count_differs_from_images(sim, capsys):
    tifffile = pytest.importorskip("tifffile")
    d, ds = sim
    tifffile.imwrite(d / "s.tif", ds["stack"].values, photometric="minisblack")
    np.savetxt(d / "e99.txt", ds["energy"].values[:-1])
    rc, _, err = run(capsys, "import", d / "s.tif", d / "o.zarr", "--energies", d / "e99.txt")
    assert_user_error(rc, err, "99 energies", "100 images")
    assert not (d / "o.zarr").exists()


def test_kev_references_with_ev_stack_work(sim, tmp_path, capsys):
    d, ds = sim
    e, A = ds["energy"].values, ds["references"].values
    for j, name in enumerate(("a", "b")):
        np.savetxt(tmp_path / f"{name}_kev.txt", np.c_[e / 1000.0, A[:, j]])
    rc, _, err = run(
        capsys,
        "unmix",
        d / "sim.zarr",
        tmp_path / "kev.zarr",
        "--method",
        "lcf",
        "--refs",
        tmp_path / "a_kev.txt",
        tmp_path / "b_kev.txt",
        "-q",
    )
    assert rc == 0, err
    rc, _, err = run(capsys, "unmix", d / "sim.zarr", tmp_path / "ev.zarr", "--method", "lcf", "-q")
    assert rc == 0, err
    f_kev = xr.open_zarr(tmp_path / "kev.zarr", consolidated=False)["fraction_unmasked"].values
    f_ev = xr.open_zarr(tmp_path / "ev.zarr", consolidated=False)["fraction_unmasked"].values
    np.testing.assert_allclose(f_kev, f_ev, atol=1e-4)
    # and a stack imported with keV energies is stored in eV
    np.savetxt(tmp_path / "e_kev.txt", e / 1000.0)
    np.save(tmp_path / "s.npy", ds["stack"].values)
    rc, _, err = run(
        capsys,
        "import",
        tmp_path / "s.npy",
        tmp_path / "s.zarr",
        "--energies",
        tmp_path / "e_kev.txt",
        "--quantity",
        "absorbance",
        "-q",
    )
    assert rc == 0, err
    np.testing.assert_allclose(open_stack(tmp_path / "s.zarr")["energy"].values, e, atol=1e-6)


def test_references_of_another_edge_or_wrong_units(sim, tmp_path, capsys):
    d, ds = sim
    e, A = ds["energy"].values, ds["references"].values
    np.savetxt(tmp_path / "other.txt", np.c_[e - 1000.0, A[:, 0]])  # no overlap at all
    rc, _, err = run(
        capsys,
        "unmix",
        d / "sim.zarr",
        tmp_path / "o.zarr",
        "--method",
        "lcf",
        "--refs",
        tmp_path / "other.txt",
    )
    assert_user_error(rc, err, "do not overlap", "units")


def test_nan_inf_pixels_masked_reported_not_spread(sim, tmp_path, capsys):
    d, ds = sim
    bad = [(10, 12), (20, 18), (5, 25)]
    st = ds["stack"].values.copy()
    st_nan, st_zero = st.copy(), st.copy()
    for k, (y, x) in enumerate(bad):
        st_nan[:: (k + 2), y, x] = np.inf if k == 1 else np.nan
        st_zero[:, y, x] = 0.0
    write_dataset(ds.assign(stack=(ds["stack"].dims, st_nan)), tmp_path / "nan.zarr")
    write_dataset(ds.assign(stack=(ds["stack"].dims, st_zero)), tmp_path / "zero.zarr")
    res = {}
    for name in ("nan", "zero"):
        rc, _, err = run(
            capsys,
            "unmix",
            tmp_path / f"{name}.zarr",
            tmp_path / f"r_{name}.zarr",
            "--method",
            "rum-tv",
            "--iters",
            "10",
            "-q",
        )
        assert rc == 0, err
        if name == "nan":
            assert "3 pixel(s)" in err and "NaN/Inf" in err and "Traceback" not in err
        res[name] = xr.open_zarr(tmp_path / f"r_{name}.zarr", consolidated=False).load()
    rc, _, err = run(
        capsys,
        "unmix",
        d / "sim.zarr",
        tmp_path / "r_clean.zarr",
        "--method",
        "rum-tv",
        "--iters",
        "10",
        "-q",
    )
    assert rc == 0, err
    clean = xr.open_zarr(tmp_path / "r_clean.zarr", consolidated=False).load()
    r = res["nan"]
    badmask = np.zeros((32, 32), bool)
    for y, x in bad:
        badmask[y, x] = True
        assert not bool(r["mask"].values[y, x])
    assert np.all(np.isfinite(r["fraction_unmasked"].values))
    assert np.all(np.isfinite(r["scale"].values))
    # identical to a run where those pixels were set to 0
    np.testing.assert_allclose(
        r["fraction_unmasked"].values[:, ~badmask],
        res["zero"]["fraction_unmasked"].values[:, ~badmask],
        atol=1e-5,
    )
    # neighbours stay close to the clean run
    for y, x in bad:
        sl = (slice(None), slice(y - 1, y + 2), slice(x - 1, x + 2))
        nb = ~badmask[sl[1:]]
        diff = np.abs(
            r["fraction_unmasked"].values[sl][:, nb] - clean["fraction_unmasked"].values[sl][:, nb]
        )
        assert diff.max() < 0.15, diff.max()


def test_references_outside_energy_range(sim, tmp_path, capsys):
    d, ds = sim
    e, A = ds["energy"].values, ds["references"].values
    for j, name in enumerate(("a", "b")):
        np.savetxt(tmp_path / f"{name}.txt", np.c_[e[20:], A[20:, j]])
    rc, _, err = run(
        capsys,
        "unmix",
        d / "sim.zarr",
        tmp_path / "o.zarr",
        "--method",
        "lcf",
        "--refs",
        tmp_path / "a.txt",
        tmp_path / "b.txt",
    )
    line = assert_user_error(rc, err, "cover", "--energy-range")
    suggested = line.split("--energy-range ")[1].split()[0]
    rc, _, err = run(
        capsys,
        "unmix",
        d / "sim.zarr",
        tmp_path / "o.zarr",
        "--method",
        "lcf",
        "--refs",
        tmp_path / "a.txt",
        tmp_path / "b.txt",
        "--energy-range",
        suggested,
        "-q",
    )
    assert rc == 0, err
    r = xr.open_zarr(tmp_path / "o.zarr", consolidated=False)
    assert r["references"].sizes["energy"] == e.size - 20


def test_output_exists_without_overwrite(sim, tmp_path, capsys):
    d, _ = sim
    out = tmp_path / "o.zarr"
    assert main(["unmix", str(d / "sim.zarr"), str(out), "--method", "lcf", "-q"]) == 0
    before = sorted(p.name for p in out.rglob("*"))
    for argv in (
        ["unmix", d / "sim.zarr", out, "--method", "lcf"],
        ["simulate", out],
        ["import", d / "sim.zarr", out],
    ):
        rc, _, err = run(capsys, *argv)
        assert_user_error(rc, err, "already exists", "--overwrite")
    assert sorted(p.name for p in out.rglob("*")) == before
    rc, _, err = run(capsys, "unmix", d / "sim.zarr", out, "--method", "lcf", "--overwrite", "-q")
    assert rc == 0, err


def test_argument_mistakes_are_one_line(sim, capsys):
    d, _ = sim
    rc, _, err = run(capsys, "unmix", d / "sim.zarr", d / "o.zarr", "--method", "magic")
    assert_user_error(rc, err, "magic")
    rc, _, err = run(capsys, "unmix", d / "sim.zarr", d / "o.zarr", "--energy-range", "8300")
    assert_user_error(rc, err, "--energy-range", "EMIN,EMAX")
    rc, _, err = run(capsys, "plot", d / "sim.zarr", d / "p.png")
    assert_user_error(rc, err, "stack store", "unmix")


def test_debug_shows_traceback(sim, capsys):
    d, _ = sim
    rc, _, err = run(capsys, "--debug", "unmix", d / "nope.zarr", d / "o.zarr")
    assert rc == 2 and "Traceback" in err and "bigxanes: error:" in err


def test_refs_unknown_denoise_method(sim, capsys):
    d, _ = sim
    rc, _, err = run(capsys, "refs", d / "sim.zarr", d / "r.csv", "--denoise", "bm3d")
    assert_user_error(rc, err, "--denoise", "bm3d")


def test_prior_flag_mistakes(sim, capsys):
    d, _ = sim
    base = ("unmix", d / "sim.zarr", d / "o.zarr")
    rc, _, err = run(capsys, *base, "--method", "rum-pnp", "--prior", "guided-tv")
    assert_user_error(rc, err, "--prior guided-tv", "--method rum-tv")
    rc, _, err = run(capsys, *base, "--method", "lcf", "--prior", "guided-tv")
    assert_user_error(rc, err, "--prior", "--method rum-tv")
    rc, _, err = run(capsys, *base, "--guide-kappa", "0.05")
    assert_user_error(rc, err, "--guide-kappa", "--prior guided-tv")
    rc, _, err = run(capsys, *base, "--prior", "guided-tv", "--guide-kappa", "-1")
    assert_user_error(rc, err, "--guide-kappa", "positive")
    assert not (d / "o.zarr").exists()


def test_prior_guided_tv_runs_and_is_recorded(sim, tmp_path, capsys):
    import json

    d, _ = sim
    out = tmp_path / "g.zarr"
    argv = ["unmix", d / "sim.zarr", out, "--prior", "guided-tv", "--iters", "5", "-q"]
    rc, _, err = run(capsys, *argv)
    assert rc == 0, err
    ds = xr.open_zarr(out, consolidated=False)
    params = json.loads(ds.attrs["params"])
    assert params["prior"] == "guided-tv" and params["lam_factor"] == 1.0


def test_lam_sure_needs_rum_tv(sim, capsys):
    d, _ = sim
    rc, _, err = run(
        capsys, "unmix", d / "sim.zarr", d / "o.zarr", "--method", "rum-pnp", "--lam", "sure"
    )
    assert_user_error(rc, err, "--lam sure", "--method rum-tv")
    rc, _, err = run(capsys, "unmix", d / "sim.zarr", d / "o.zarr", "--lam", "big")
    assert_user_error(rc, err, "--lam", "'sure'")
