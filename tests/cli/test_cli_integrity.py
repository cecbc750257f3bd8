"""Issue 13, item 2 through the command line: references whose parsing cannot be trusted,
near-duplicate references, counts fitted as absorbance, missing chunks of an import source,
a changed input (fingerprint), absolute paths and the worker-side readability check."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from bigxanes.cli import main
from bigxanes.simulate import simulate
from bigxanes.store import write_dataset


def run(capsys, *argv) -> tuple[int, str, str]:
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def one_line(rc: int, err: str, *words: str) -> str:
    assert rc == 2, (rc, err)
    assert "Traceback" not in err
    lines = [ln for ln in err.splitlines() if ln.strip() and "%|" not in ln]
    assert len(lines) == 1, err
    assert lines[0].startswith("bigxanes: error: ")
    for w in words:
        assert w.lower() in lines[0].lower(), (w, lines[0])
    return lines[0]


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    d = tmp_path_factory.mktemp("integrity")
    ds = simulate("particles", shape=(24, 24), n_components=2, sigma=3, seed=0)
    write_dataset(ds[["stack", "references"]], d / "sim.zarr", chunks=12)
    return d / "sim.zarr", ds


def _refs(ds) -> tuple[np.ndarray, np.ndarray]:
    return ds["energy"].values, ds["references"].transpose("energy", "component").values


# ---------------------------------------------------------------------------------------------
# references: parsing that cannot be trusted is an error; conditioning names the pair


def test_decimal_comma_csv_without_header_is_refused(sim, tmp_path, capsys):
    path, ds = sim
    e, A = _refs(ds)
    f = tmp_path / "refs.csv"  # "8250,00,0,00393,0,00388": 2 references read as 5 on main
    f.write_text(
        "".join(
            f"{e[i]:.2f},{A[i, 0]:.5f},{A[i, 1]:.5f}\n".replace(".", ",") for i in range(e.size)
        )
    )
    rc, _, err = run(capsys, "unmix", path, tmp_path / "r.zarr", "--method", "lcf", "--refs", f)
    one_line(rc, err, "decimal comma", "refs.csv", "';' between fields")
    assert not (tmp_path / "r.zarr").exists()
    # integers only, no leading zero ("8250,5,1,234,0,987"): refused as well
    g = tmp_path / "ints.csv"
    g.write_text("8250,5,1,234,0,987\n8255,5,1,334,0,887\n8260,5,1,434,0,787\n")
    rc, _, err = run(capsys, "unmix", path, tmp_path / "r.zarr", "--method", "lcf", "--refs", g)
    one_line(rc, err, "decimal comma", "no field has a decimal point")
    # the same numbers with ';' between fields are read correctly
    h = tmp_path / "semi.csv"
    lines = [f"{e[i]:.2f};{A[i, 0]:.5f};{A[i, 1]:.5f}".replace(".", ",") for i in range(e.size)]
    h.write_text("\n".join(lines) + "\n")
    rc, _, err = run(capsys, "unmix", path, tmp_path / "ok.zarr", "--method", "lcf", "-q")
    assert rc == 0, err
    rc, _, err = run(
        capsys, "unmix", path, tmp_path / "semi.zarr", "--method", "lcf", "--refs", h, "-q"
    )
    assert rc == 0, err
    with (
        xr.open_zarr(tmp_path / "ok.zarr", consolidated=False) as a,
        xr.open_zarr(tmp_path / "semi.zarr", consolidated=False) as b,
    ):
        assert b.sizes["component"] == 2
        assert (
            float(np.abs(a["fraction_unmasked"].values - b["fraction_unmasked"].values).max())
            < 1e-3
        )


def test_nor_column_named_like_an_energy_prefix_is_kept(sim, tmp_path, capsys):
    path, ds = sim
    e, A = _refs(ds)
    f = tmp_path / "multi.nor"  # Athena multi-group export; on main "Eu2O3" was dropped
    f.write_text(
        "# Athena export\n# energy Fe2 Eu2O3\n"
        + "".join(f"{e[i]:.3f} {A[i, 0]:.6f} {A[i, 1]:.6f}\n" for i in range(e.size))
    )
    out = tmp_path / "r.zarr"
    rc, _, err = run(capsys, "unmix", path, out, "--method", "lcf", "--refs", f, "-q")
    assert rc == 0, err
    with xr.open_zarr(out, consolidated=False) as r:
        assert [str(c) for c in r["component"].values] == ["Fe2", "Eu2O3"]


@pytest.mark.parametrize("kind", ["collinear", "identical"])
def test_near_duplicate_references_are_named(sim, tmp_path, capsys, kind):
    path, ds = sim
    e, A = _refs(ds)
    b = 2 * A[:, 0] + 1e-7 * np.sin(e) if kind == "collinear" else A[:, 0]
    f = tmp_path / "refs.csv"
    f.write_text(
        "energy,FeO,Fe2SiO4,Fe2O3\n"
        + "".join(f"{e[i]:.3f},{A[i, 0]:.8f},{b[i]:.8f},{A[i, 1]:.8f}\n" for i in range(e.size))
    )
    for method in ("lcf", "rum-tv"):
        rc, _, err = run(
            capsys, "unmix", path, tmp_path / "r.zarr", "--method", method, "--refs", f
        )
        word = "identical" if kind == "identical" else "near duplicates"
        one_line(rc, err, "'FeO' and 'Fe2SiO4'", word, "cond(AᵀA)", "--components")
    # dropping one of them works
    rc, _, err = run(
        capsys, "unmix", path, tmp_path / "r.zarr", "--method", "lcf", "--refs", f,
        "--components", "FeO", "Fe2O3", "-q",
    )  # fmt: skip
    assert rc == 0, err


# ---------------------------------------------------------------------------------------------
# counts are not absorbance; a missing chunk of an import source is an error


def _tiff(tmp_path: Path, data: np.ndarray) -> tuple[Path, Path]:
    tifffile = pytest.importorskip("tifffile")
    tif = tmp_path / "s.tif"
    tifffile.imwrite(tif, data.astype(np.float32), photometric="minisblack")
    e = tmp_path / "e.txt"
    np.savetxt(e, np.arange(data.shape[0], dtype=float) + 8330)
    return tif, e


def test_counts_stack_is_refused_by_unmix_unless_said_absorbance(sim, tmp_path, capsys):
    path, ds = sim
    od = ds["stack"].values
    tif, e = _tiff(tmp_path, od)
    ref = tmp_path / "refs.csv"
    E, A = _refs(ds)
    E = np.arange(od.shape[0], dtype=float) + 8330
    ref.write_text(
        "energy,a,b\n" + "".join(f"{E[i]},{A[i, 0]:.8f},{A[i, 1]:.8f}\n" for i in range(E.size))
    )
    counts = tmp_path / "counts.zarr"
    assert main(["import", str(tif), str(counts), "--energies", str(e), "-q"]) == 0
    argv = ["unmix", counts, tmp_path / "r.zarr", "--method", "lcf", "--refs", ref, "-q"]
    rc, _, err = run(capsys, *argv)
    one_line(rc, err, "transmitted counts", "--i0", "--assume-absorbance")
    assert not (tmp_path / "r.zarr").exists()
    rc, _, err = run(capsys, *argv, "--assume-absorbance")
    assert rc == 0, err
    # an absorbance import, and a bigxanes store re-imported, are accepted as they are
    od_store = tmp_path / "od.zarr"
    argv_i = ["import", tif, od_store, "--energies", e, "--quantity", "absorbance", "-q"]
    assert main([str(a) for a in argv_i]) == 0
    rc, _, err = run(capsys, "unmix", od_store, tmp_path / "r2.zarr", "--method", "lcf",
                     "--refs", ref, "-q")  # fmt: skip
    assert rc == 0, err
    again = tmp_path / "again.zarr"
    assert main(["import", str(path), str(again), "-q"]) == 0
    with xr.open_zarr(again, consolidated=False) as s:
        assert s["absorbance"].attrs["quantity"] == "absorbance"


def test_missing_chunk_of_an_import_source_is_an_error(sim, tmp_path, capsys):
    path, _ = sim
    src = tmp_path / "src.zarr"
    shutil.copytree(path, src)
    (src / "absorbance" / "c" / "0" / "1" / "1").unlink()  # one of 4 chunks (12 x 12 of 24 x 24)
    out = tmp_path / "o.zarr"
    rc, _, err = run(capsys, "import", src, out, "-q")
    one_line(rc, err, "1 of 4 chunk(s) are missing", "c/0/1/1", "fill values")
    assert not out.exists()


# ---------------------------------------------------------------------------------------------
# the input's fingerprint: a changed input stops the run (at the end, and on --resume)

RUM = ["--method", "rum-tv", "--iters", "6", "--tv-sweeps", "2", "--tol", "1e-12"]


def _reimport(ds, path: Path, seed: int) -> None:
    """The user re-imports another stack at the same path (what `import --overwrite` does)."""
    other = simulate("particles", shape=(24, 24), n_components=2, sigma=3, seed=seed)
    write_dataset(other[["stack", "references"]], path, chunks=12, overwrite=True)


def test_resume_after_the_input_changed_is_refused(sim, tmp_path, capsys, monkeypatch):
    src, ds = sim
    inp = tmp_path / "in.zarr"
    shutil.copytree(src, inp)
    out = tmp_path / "r.zarr"
    monkeypatch.setenv("BIGXANES_FAIL_AFTER", "3")  # the run stops after 3 iterations
    rc, _, err = run(capsys, "unmix", inp, out, *RUM, "-q")
    assert rc != 0 and not out.exists() and (tmp_path / "r.zarr.work").is_dir()
    monkeypatch.delenv("BIGXANES_FAIL_AFTER")
    _reimport(ds, inp, seed=1)
    rc, _, err = run(capsys, "unmix", inp, out, *RUM, "--resume", "-q")
    one_line(rc, err, "changed since the interrupted run", "without --resume")
    assert not out.exists()
    # starting afresh on the new data works, and equals a run that never saw the old data
    rc, _, err = run(capsys, "unmix", inp, out, *RUM, "-q")
    assert rc == 0, err
    rc, _, err = run(capsys, "unmix", inp, tmp_path / "fresh.zarr", *RUM, "-q")
    assert rc == 0, err
    with (
        xr.open_zarr(out, consolidated=False) as a,
        xr.open_zarr(tmp_path / "fresh.zarr", consolidated=False) as b,
    ):
        assert (
            float(np.abs(a["fraction_unmasked"].values - b["fraction_unmasked"].values).max())
            <= 1e-6
        )


def test_input_changed_during_the_run_stops_it(sim, tmp_path):
    import os
    import subprocess
    import sys
    import time

    src, ds = sim
    inp = tmp_path / "in.zarr"
    shutil.copytree(src, inp)
    out = tmp_path / "r.zarr"
    env = dict(os.environ, BIGXANES_TEST_PAUSE="after_commit=0.5", PYTHONUNBUFFERED="1")
    cmd = [sys.executable, "-m", "bigxanes.cli", "unmix", str(inp), str(out), *RUM, "-q"]
    proc = subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    try:
        t0 = time.monotonic()
        line = ""
        while "bigxanes-test-pause: after_commit" not in line:  # iteration 1 is committed
            line = proc.stderr.readline()
            assert line or proc.poll() is None, "the run ended before its first iteration"
            assert time.monotonic() - t0 < 120
        _reimport(ds, inp, seed=2)  # while the run reads it
        _, rest = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 2, rest
    lines = [ln for ln in rest.splitlines() if ln.startswith("bigxanes: error")]
    assert len(lines) == 1 and "Traceback" not in rest, rest
    assert "changed during the run" in lines[0] and str(inp) in lines[0]
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if ".partial-" in p.name]


def test_killed_import_leftover_is_reported_then_cleaned(sim, tmp_path, capsys):
    import os
    import subprocess
    import sys

    from bigxanes.integrity import KILL_ENV, KILL_EXIT

    src, _ = sim
    out = tmp_path / "o.zarr"
    env = dict(os.environ, **{KILL_ENV: "1"})  # killed at its first point: data in, no marker
    cmd = [sys.executable, "-m", "bigxanes.cli", "import", str(src), str(out), "-q"]
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == KILL_EXIT, p.stderr
    (partial,) = tmp_path.glob("o.zarr.partial-*")
    for cmd in ("info", "plot"):
        argv = [cmd, out] + ([tmp_path / "f.png"] if cmd == "plot" else [])
        rc, _, err = run(capsys, *argv)
        one_line(rc, err, "interrupted write left", partial.name, "incomplete", "delete it")
    rc, stdout, err = run(capsys, "import", src, out)
    assert rc == 0, err
    assert f"removed {partial}" in stdout and not partial.exists()


def test_plot_replaces_only_figures_bigxanes_drew(sim, tmp_path, capsys):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from bigxanes.paths import written_by_bigxanes
    from bigxanes.plot import save_figure

    src, _ = sim
    res = tmp_path / "r.zarr"
    assert main(["unmix", str(src), str(res), "--method", "lcf", "-q"]) == 0
    theirs = tmp_path / "thesis_fig.png"  # a Matplotlib figure of the user's own
    fig, ax = plt.subplots()
    ax.plot([0, 1])
    fig.savefig(theirs)
    before = theirs.read_bytes()
    rc, _, err = run(capsys, "plot", res, theirs, "-q")
    one_line(rc, err, "did not write", "another output")
    assert theirs.read_bytes() == before
    ours = tmp_path / "ours.png"
    assert main(["plot", str(res), str(ours), "-q"]) == 0
    assert main(["plot", str(res), str(ours), "-q"]) == 0  # its own figure: replaced
    for suffix in ("pdf", "svg"):  # the writer is recognised in every figure format
        fig.savefig(tmp_path / f"theirs.{suffix}")
        save_figure(fig, tmp_path / f"ours.{suffix}")
        assert not written_by_bigxanes(tmp_path / f"theirs.{suffix}")
        assert written_by_bigxanes(tmp_path / f"ours.{suffix}")
    plt.close(fig)


def _tree(p: Path) -> list[tuple[str, int]]:
    return sorted((str(q.relative_to(p)), q.stat().st_size) for q in p.rglob("*"))


def test_every_writer_refuses_outputs_overlapping_its_inputs(sim, tmp_path, capsys):
    """Item 1 for every command that writes: the output equal to, inside, or containing an
    input is refused, even with --overwrite, and nothing of the input changes."""
    src, ds = sim
    d = tmp_path / "p"
    d.mkdir()
    stack = d / "stack.zarr"
    shutil.copytree(src, stack)
    res = tmp_path / "res.zarr"
    assert main(["unmix", str(stack), str(res), "--method", "lcf", "-q"]) == 0
    e, A = _refs(ds)
    ref = d / "refs.csv"
    ref.write_text(
        "energy,a,b\n" + "".join(f"{e[i]},{A[i, 0]:.8f},{A[i, 1]:.8f}\n" for i in range(e.size))
    )
    before = {p: _tree(p) for p in (stack, res)}
    before_ref = ref.read_bytes()
    cases = {
        "import": (["import", stack], stack),
        "unmix": (["unmix", stack, "--method", "lcf"], stack),
        "refs": (["refs", stack], stack),
        "plot": (["plot", res], res),
    }
    for head, inp in cases.values():
        outs = [(inp, "is the input"), (inp / "x.out", "inside the input")]
        outs.append((inp.parent, "contains the input"))
        for out, word in outs:
            argv = [head[0], head[1], out, *head[2:]]
            argv += [] if head[0] == "plot" else ["--overwrite"]
            rc, _, err = run(capsys, *argv)
            one_line(rc, err, word)
    # a reference file is an input too
    for out, word in ((ref, "is the input"), (d, "contains the input")):
        rc, _, err = run(capsys, "unmix", stack, out, "--refs", ref, "--overwrite")
        one_line(rc, err, word)
    # plot --stack: the figure may not go into the unmixed stack either
    rc, _, err = run(capsys, "plot", res, stack / "f.png", "--stack", stack)
    one_line(rc, err, "inside the input")
    assert {p: _tree(p) for p in (stack, res)} == before and ref.read_bytes() == before_ref
