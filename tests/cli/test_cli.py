"""End-to-end tests of the ``bigxanes`` command line (small images, few iterations)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.image as mpimg  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import xarray as xr  # noqa: E402

from bigxanes.cli import build_parser, main  # noqa: E402
from bigxanes.references import read_references  # noqa: E402
from bigxanes.store import is_complete, open_stack  # noqa: E402


def run(capsys, *argv) -> tuple[int, str, str]:
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def open_result(path) -> xr.Dataset:
    assert is_complete(path)
    return xr.open_zarr(path, consolidated=False).load()


def assert_png_has_content(path):
    img = mpimg.imread(str(path))
    assert img.ndim == 3 and img.shape[0] > 200 and img.shape[1] > 200
    rgb = img[..., :3]
    assert float(rgb.var()) > 1e-3, "blank figure"
    # several distinct colours (maps, curves), not a uniform background
    assert len(np.unique((rgb.reshape(-1, 3) * 255).astype(np.uint8), axis=0)) > 50


@pytest.fixture(scope="module")
def sim2d(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli2d")
    out = d / "sim.zarr"
    assert (
        main(
            [
                "simulate",
                str(out),
                "--phantom",
                "particles",
                "--shape",
                "48,48",
                "--n-components",
                "2",
                "--noise",
                "7",
                "--seed",
                "0",
                "-q",
            ]
        )
        == 0
    )
    return out


def test_simulate_store(sim2d, capsys):
    ds = open_stack(sim2d)
    assert ds["stack"].dims == ("energy", "y", "x")
    assert ds["stack"].shape[1:] == (48, 48)
    for v in ("references", "true_fraction", "true_scale"):
        assert v in ds
    rc, _, err = run(capsys, "simulate", sim2d, "--shape", "48,48")
    assert rc == 2 and "already exists" in err and "--overwrite" in err


@pytest.mark.parametrize("method", ["lcf", "edge50", "rum-tv", "rum-pnp"])
def test_unmix_each_method_and_plot(sim2d, tmp_path, capsys, method):
    out = tmp_path / f"{method}.zarr"
    args = ["unmix", sim2d, out, "--method", method, "-q"]
    if method.startswith("rum"):
        args += ["--iters", "8"]
    rc, _, err = run(capsys, *args)
    assert rc == 0, err
    r = open_result(out)
    assert r.attrs["method"].startswith(method)
    m = r["mask"].values
    f = r["fraction_unmasked"].values
    assert m.sum() > 100
    assert np.all(np.isfinite(f[:, m]))
    assert np.all((f[:, m] >= -1e-5) & (f[:, m] <= 1 + 1e-5))
    np.testing.assert_allclose(f[:, m].sum(axis=0), 1.0, atol=1e-4)
    truth = open_stack(sim2d)["true_fraction"].values
    assert np.mean(np.abs(f[:, m] - truth[:, m])) < 0.25
    if method.startswith("rum"):
        assert r.attrs["n_iterations"] <= 8
        assert "history" in r.attrs
    png = tmp_path / f"{method}.png"
    rc, _, err = run(capsys, "plot", out, png, "--pixels", "20,20", "30,25")
    assert rc == 0, err
    assert_png_has_content(png)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(f".{method}.")]


def test_unmix_with_reference_files_components_and_energy_range(sim2d, tmp_path, capsys):
    ds = open_stack(sim2d)
    e = ds["energy"].values
    refs = ds["references"].values
    f1, f2 = tmp_path / "a.txt", tmp_path / "b.txt"
    np.savetxt(f1, np.c_[e, refs[:, 0]], header="energy_eV value")
    np.savetxt(f2, np.c_[e, refs[:, 1]], header="energy_eV value")
    out = tmp_path / "r.zarr"
    rc, _, err = run(
        capsys,
        "unmix",
        sim2d,
        out,
        "--method",
        "lcf",
        "--refs",
        f1,
        f2,
        "--components",
        "b",
        "a",
        "-q",
    )
    assert rc == 0, err
    r = open_result(out)
    assert [str(c) for c in r["component"].values] == ["b", "a"]
    # same as the stored references (swapped)
    r0 = tmp_path / "r0.zarr"
    assert main(["unmix", str(sim2d), str(r0), "--method", "lcf", "-q"]) == 0
    f0 = open_result(r0)["fraction_unmasked"].values
    np.testing.assert_allclose(r["fraction_unmasked"].values[::-1], f0, atol=1e-5)
    # energy window
    lo, hi = float(e[10]), float(e[-10])
    out2 = tmp_path / "rw.zarr"
    rc, _, err = run(
        capsys,
        "unmix",
        sim2d,
        out2,
        "--method",
        "rum-tv",
        "--iters",
        "5",
        "--refs",
        f1,
        f2,
        "--energy-range",
        f"{lo},{hi}",
        "-q",
    )
    assert rc == 0, err
    r2 = open_result(out2)
    assert r2["references"].sizes["energy"] == len(e) - 19
    png = tmp_path / "rw.png"
    assert main(["plot", str(out2), str(png), "-q"]) == 0
    assert_png_has_content(png)


def test_refs_vca_csv_then_unmix(sim2d, tmp_path, capsys):
    csv = tmp_path / "refs.csv"
    rc, out, err = run(capsys, "refs", sim2d, csv, "--n-components", "2", "--seed", "0")
    assert rc == 0, err
    assert "estimated number of states" in out and "eigenvalues" in out
    e, A, names = read_references([csv])
    assert A.shape == (open_stack(sim2d).sizes["energy"], 2) and len(names) == 2
    png = tmp_path / "refs.png"
    assert main(["plot", str(csv), str(png), "-q"]) == 0
    assert_png_has_content(png)
    rc, out, err = run(capsys, "info", csv)
    assert rc == 0 and "eigenvalues" in out
    out_r = tmp_path / "r.zarr"
    rc, _, err = run(capsys, "unmix", sim2d, out_r, "--method", "lcf", "--refs", csv, "-q")
    assert rc == 0, err
    out_a = tmp_path / "ra.zarr"
    rc, _, err = run(
        capsys,
        "unmix",
        sim2d,
        out_a,
        "--method",
        "lcf",
        "--refs",
        "auto",
        "--n-components",
        "2",
        "-q",
    )
    assert rc == 0, err
    assert open_result(out_a).sizes["component"] == 2


@pytest.mark.parametrize(
    "flag, applied",
    [
        ((), "gaussian"),  # no flag: the library default
        (("--denoise",), "gaussian"),  # the flag alone: the Gaussian filter
        (("--denoise", "none"), "none"),
        (("--denoise", "tv"), "tv"),
        (("--denoise", "auto"), "auto: "),
    ],
)
def test_refs_denoise_follows_the_library(sim2d, tmp_path, capsys, flag, applied):
    from bigxanes.extract import extract_references

    csv = tmp_path / "refs.csv"
    rc, out, err = run(capsys, "refs", sim2d, csv, "--n-components", "2", *flag, "-q")
    assert rc == 0, err
    header = csv.read_text().splitlines()[0]
    assert f"denoise {applied}" in header, header
    if applied == "gaussian":  # the CSV holds what the Python API gives
        from bigxanes.cli.refs import foreground as _foreground

        st = open_stack(sim2d)["stack"]
        ex = extract_references(st.data, 2, mask=_foreground(st), seed=0)
        _, A, _ = read_references([csv])
        np.testing.assert_allclose(A, ex.references, rtol=1e-6, atol=1e-8)


def test_unmix_refs_auto_uses_the_library_default(sim2d, tmp_path, capsys):
    out = tmp_path / "ra.zarr"
    rc, stdout, err = run(
        capsys, "unmix", sim2d, out, "--method", "lcf", "--refs", "auto", "--n-components", "2"
    )
    assert rc == 0, err
    assert "denoise gaussian" in stdout


def test_3d_volume_unmix_plot_slice(tmp_path, capsys):
    sim = tmp_path / "vol.zarr"
    assert main(["simulate", str(sim), "--shape", "12,24,24", "--n-components", "2", "-q"]) == 0
    assert open_stack(sim)["stack"].dims == ("energy", "z", "y", "x")
    out = tmp_path / "vr.zarr"
    rc, _, err = run(capsys, "unmix", sim, out, "--method", "rum-tv", "--iters", "4", "-q")
    assert rc == 0, err
    r = open_result(out)
    assert r["fraction_unmasked"].dims == ("component", "z", "y", "x")
    png = tmp_path / "vr.png"
    rc, _, err = run(capsys, "plot", out, png, "--slice", "5")
    assert rc == 0, err
    assert_png_has_content(png)
    rc, _, err = run(capsys, "plot", out, tmp_path / "bad.png", "--slice", "99")
    assert rc == 2 and "outside the volume" in err


def test_info_stack_and_result(sim2d, tmp_path, capsys):
    rc, out, _ = run(capsys, "info", sim2d)
    assert rc == 0
    for word in ("shape", "chunks", "energies", "on disk", "resources"):
        assert word in out
    res = tmp_path / "r.zarr"
    assert main(["unmix", str(sim2d), str(res), "--method", "rum-tv", "--iters", "3", "-q"]) == 0
    rc, out, _ = run(capsys, "info", res)
    assert rc == 0
    assert "method: rum-tv" in out and "iterations: 3" in out and "complete: yes" in out


# ---------------------------------------------------------------------------------------------
# import


def test_import_tiff_roundtrip(tmp_path, capsys):
    tifffile = pytest.importorskip("tifffile")
    rng = np.random.default_rng(0)
    data = rng.random((7, 20, 30)).astype(np.float32)
    tifffile.imwrite(tmp_path / "s.tif", data, photometric="minisblack")
    e = np.linspace(7100.0, 7160.0, 7)
    np.savetxt(tmp_path / "e.txt", e)
    out = tmp_path / "s.zarr"
    rc, _, err = run(
        capsys,
        "import",
        tmp_path / "s.tif",
        out,
        "--energies",
        tmp_path / "e.txt",
        "--quantity",
        "absorbance",
        "-q",
    )
    assert rc == 0, err
    ds = open_stack(out)
    np.testing.assert_array_equal(ds["stack"].values, data)
    np.testing.assert_array_equal(ds["energy"].values, e)


def test_import_fxi_hdf5_kev(tmp_path, capsys):
    h5py = pytest.importorskip("h5py")
    rng = np.random.default_rng(1)
    data = (rng.random((6, 16, 18)) * 1000).astype(np.float32)
    e_kev = np.array([8.30, 8.33, 8.34, 8.35, 8.36, 8.40])
    with h5py.File(tmp_path / "fxi.h5", "w") as f:
        f["img_xanes"] = data
        f["X_eng"] = e_kev
    out = tmp_path / "fxi.zarr"
    rc, _, err = run(capsys, "import", tmp_path / "fxi.h5", out, "-q")
    assert rc == 0, err
    ds = open_stack(out)
    np.testing.assert_array_equal(ds["stack"].values, data)
    np.testing.assert_allclose(ds["energy"].values, e_kev * 1000, rtol=0, atol=1e-9)


def test_import_hdf5_3d_volume(tmp_path, capsys):
    h5py = pytest.importorskip("h5py")
    rng = np.random.default_rng(2)
    data = rng.random((5, 8, 10, 12)).astype(np.float32)
    with h5py.File(tmp_path / "vol.h5", "w") as f:
        f.create_dataset("exchange/volumes", data=data, chunks=(1, 8, 10, 12))
    e = np.array([700.0, 705.0, 708.0, 710.0, 720.0])
    np.savetxt(tmp_path / "e.txt", e)
    out = tmp_path / "vol.zarr"
    rc, _, err = run(
        capsys,
        "import",
        tmp_path / "vol.h5",
        out,
        "--dataset",
        "/exchange/volumes",
        "--energies",
        tmp_path / "e.txt",
        "--quantity",
        "absorbance",
        "-q",
    )
    assert rc == 0, err
    ds = open_stack(out)
    assert ds["stack"].dims == ("energy", "z", "y", "x")
    np.testing.assert_array_equal(ds["stack"].values, data)
    np.testing.assert_array_equal(ds["energy"].values, e)


def test_import_with_i0_background_region(tmp_path, capsys):
    tifffile = pytest.importorskip("tifffile")
    counts = np.full((4, 10, 10), 1000.0, dtype=np.float32)
    counts[:, 5:, 5:] = 500.0
    tifffile.imwrite(tmp_path / "c.tif", counts, photometric="minisblack")
    np.savetxt(tmp_path / "e.txt", [700, 701, 702, 703])
    out = tmp_path / "od.zarr"
    rc, _, err = run(
        capsys,
        "import",
        tmp_path / "c.tif",
        out,
        "--energies",
        tmp_path / "e.txt",
        "--i0",
        "background:0:4,0:4",
        "-q",
    )
    assert rc == 0, err
    od = open_stack(out)["stack"].values
    np.testing.assert_allclose(od[:, 7, 7], np.log(2.0), rtol=1e-5)
    np.testing.assert_allclose(od[:, 1, 1], 0.0, atol=1e-6)


# ---------------------------------------------------------------------------------------------
# help, bench, demo, installed command


def test_help_has_examples_for_every_command(capsys):
    parser = build_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    assert set(sub.choices) == {
        "simulate",
        "import",
        "align",
        "unmix",
        "spectra",
        "export",
        "refs",
        "plot",
        "info",
        "bench",
        "demo",
    }
    for name in sub.choices:
        rc, out, _ = run(capsys, name, "--help")
        assert rc == 0
        assert "examples:" in out and f"bigxanes {name}" in out
    rc, out, _ = run(capsys, "--help")
    assert rc == 0 and "bigxanes demo" in out


def test_bench_small(capsys):
    rc, out, err = run(capsys, "bench", "--size", "32", "--iters", "3", "-q")
    assert rc == 0, err
    assert "rum-tv" in out and "lcf" in out and "PSNR" in out


def test_demo_small(tmp_path, capsys):
    rc, out, err = run(
        capsys,
        "demo",
        "--out",
        tmp_path / "demo",
        "--size",
        "40",
        "--iters",
        "15",
        "--workers",
        "1",
        "-q",
    )
    assert rc == 0, err
    assert "LCF" in out and "RUM-TV" in out
    assert_png_has_content(tmp_path / "demo" / "rum-tv.png")


def test_installed_command_subprocess(tmp_path):
    exe = shutil.which("bigxanes") or str(Path(sys.executable).with_name("bigxanes"))
    if not os.path.exists(exe):
        pytest.skip("bigxanes console script not installed")
    p = subprocess.run(
        [exe, "unmix", str(tmp_path / "missing.zarr"), str(tmp_path / "o.zarr"), "--method", "lcf"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert p.returncode == 2
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("bigxanes: error: ")
    assert "missing.zarr" in lines[0] and "Traceback" not in p.stderr
    p = subprocess.run(
        [exe, "simulate", str(tmp_path / "s.zarr"), "--shape", "24,24", "-q"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert p.returncode == 0, p.stderr
    assert is_complete(tmp_path / "s.zarr")
