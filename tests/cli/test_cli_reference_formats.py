"""Issue 12, item 1 through the CLI, run from another working directory: `bigxanes info FILE`
lists every reference of a Demeter multi-column .nor (written here, CRLF, truncated last header
name), an XDI file, a CSV (decimal comma) and a real Athena .prj with its energy range and e0;
`unmix --refs FILE --components NAME NAME` selects by the printed names (exact,
case-insensitive, unique prefix) end to end, and records names and source in the result attrs;
an unknown or ambiguous name is one line with the available names, exit 2.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from bigxanes.cli import main
from bigxanes.references import list_references
from bigxanes.spectra_model import xanes_spectrum
from bigxanes.store import write_dataset

E_FINE = np.arange(7060.0, 7220.01, 0.25)  # the references' own grid
E = np.arange(7090.0, 7180.01, 1.0)  # the stack's energies (91)
EDGES = {"FePO4": 7126.0, "Fe3(PO4)2": 7122.0, "Eu2O3": 7119.0}


def _prj_dir() -> Path | None:
    env = os.environ.get("BIGXANES_SHARED_DATA")
    roots = [Path(env)] if env else [p / "shared" / "data" for p in Path(__file__).parents]
    for r in roots:
        if (r / "athena_projects" / "Fe.prj").is_file():
            return r / "athena_projects"
    return None


PRJ = _prj_dir()


def _spec(e0: float) -> np.ndarray:
    return xanes_spectrum(E_FINE, e0, white_line_height=0.4 + (e0 - 7119.0) / 10)


def write_demeter(path: Path) -> None:
    """Athena's "multicolumn normalized mu(E)" export: XDI header, CRLF, truncated last name."""
    names = list(EDGES)
    head = [
        "# XDI/1.0 Demeter/0.9.26",
        "# Demeter.output_filetype: multicolumn normalized mu(E)",
        "# Element.symbol: Fe",
        "# Element.edge: K",
        "# Column.1: energy eV",
        *[f"# Column.{i + 2}: {n}" for i, n in enumerate(names)],
        "# ///",
        "#------------------------",
        "#  energy      FePO4  Fe3(PO4)2  Eu2O3_",
    ]
    cols = np.stack([_spec(EDGES[n]) for n in names], axis=1)
    rows = [
        f"  {e:.3f}  " + "  ".join(f"{v:.7f}" for v in r) for e, r in zip(E_FINE, cols, strict=True)
    ]
    path.write_bytes(("\r\n".join(head + rows) + "\r\n").encode())


def write_xdi(path: Path, e0: float) -> None:
    head = ["# XDI/1.0", "# Column.1: energy eV", "# Column.2: norm", "# Element.symbol: Fe"]
    rows = [f"{e:.3f} {v:.7f}" for e, v in zip(E_FINE, _spec(e0), strict=True)]
    path.write_text("\n".join(head + ["#----"] + rows) + "\n")


def write_csv_decimal_comma(path: Path) -> None:
    cols = np.stack([_spec(EDGES[n]) for n in EDGES], axis=1)
    lines = ["energy;FePO4;Fe3(PO4)2;Eu2O3"] + [
        ";".join([f"{e:.2f}".replace(".", ",")] + [f"{v:.7f}".replace(".", ",") for v in r])
        for e, r in zip(E_FINE, cols, strict=True)
    ]
    path.write_text("\n".join(lines) + "\n")


def _stack(tmp: Path, e_ref: np.ndarray, A_ref: np.ndarray) -> tuple[Path, np.ndarray]:
    A = np.stack([np.interp(E, e_ref, A_ref[:, j]) for j in range(2)], axis=1)
    f = np.linspace(0.1, 0.9, 16)[None, :] * np.ones((12, 1))
    frac = np.stack([f, 1 - f])
    stack = np.einsum("tl,lyx->tyx", A, frac)
    src = tmp / "stack.zarr"
    write_dataset(xr.Dataset({"stack": (("energy", "y", "x"), stack)}, coords={"energy": E}), src)
    return src, frac


def _files(tmp: Path, fmt: str) -> tuple[list[str], list[str], list[str]]:
    """(files, names as printed, the same names as typed by a user) of a format."""
    if fmt == "demeter":
        write_demeter(tmp / "lib.nor")
        return ["lib.nor"], ["FePO4", "Eu2O3"], ["fepo4", "eu2"]
    if fmt == "xdi":
        write_xdi(tmp / "fepo4.xdi", EDGES["FePO4"])
        write_xdi(tmp / "eu2o3.xdi", EDGES["Eu2O3"])
        return ["fepo4.xdi", "eu2o3.xdi"], ["fepo4", "eu2o3"], ["FePO4", "EU2"]
    if fmt == "csv":
        write_csv_decimal_comma(tmp / "lib.csv")
        return ["lib.csv"], ["FePO4", "Eu2O3"], ["FePO4", "eu"]
    return (
        [str(PRJ / "Fe.prj"), str(PRJ / "Fe-K-ALS-10.3.2.prj")],
        ["Hematite", "Olivine (Fo80)"],
        ["hem", "olivine (fo80)"],
    )


@pytest.mark.parametrize(
    "fmt",
    [
        "demeter",
        "xdi",
        "csv",
        pytest.param(
            "prj",
            marks=pytest.mark.skipif(PRJ is None, reason="Athena projects (shared data) absent"),
        ),
    ],
)
def test_info_then_unmix_components_by_printed_name(fmt, tmp_path, monkeypatch, capsys):
    data = tmp_path / "data"
    data.mkdir()
    monkeypatch.chdir(data)
    files, printed, typed = _files(data, fmt)
    recs = [r for f in files for r in list_references(f)]
    for f in files:  # info lists every reference with its energy range and e0
        assert main(["info", f]) == 0
        out = capsys.readouterr().out
        assert "e0 (eV)" in out and "energy range (eV)" in out
        for r in list_references(f):
            line = next(ln for ln in out.splitlines() if ln.startswith(r.name + " "))
            assert f"{r.energy[0]:.2f}" in line and f"{r.e0:.2f}" in line, line
    by = {r.name: r for r in recs}
    assert set(printed) <= set(by)
    A_ref = np.stack([np.interp(E_FINE, by[n].energy, by[n].norm) for n in printed], axis=1)
    src, frac = _stack(tmp_path, E_FINE, A_ref)
    work = tmp_path / "elsewhere"  # run from another directory: relative paths resolve
    work.mkdir()
    monkeypatch.chdir(work)
    rel = [os.path.relpath(Path(f) if Path(f).is_absolute() else data / f, work) for f in files]
    rc = main(
        ["unmix", os.path.relpath(src, work), "r.zarr", "--method", "lcf", "--refs", *rel]
        + ["--components", *typed]
    )
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    assert "warning" not in cap.err  # references aligned with the data: no shift warning
    r = xr.open_zarr(work / "r.zarr", consolidated=False).load()
    assert [str(c) for c in r["component"].values] == printed
    np.testing.assert_allclose(r["fraction_unmasked"].values, frac, atol=2e-3)
    assert json.loads(r.attrs["reference_names"]) == printed
    assert all(Path(f).name in r.attrs["references_source"] for f in files)
    assert f"references: {', '.join(printed)}" in cap.out
    rc = main(
        ["unmix", str(src), "bad2.zarr", "--method", "lcf", "--refs", *rel]
        + ["--components", "nosuchname", printed[0]]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "no reference named 'nosuchname'" in err[0]
    assert all(repr(n) in err[0] for n in printed) and "Traceback" not in err[0]


def test_ambiguous_prefix_is_one_line_listing_candidates(tmp_path, capsys):
    write_demeter(tmp_path / "lib.nor")
    e = list_references(tmp_path / "lib.nor")[0].energy
    A = np.stack([_spec(EDGES["FePO4"]), _spec(EDGES["Eu2O3"])], axis=1)
    src, _ = _stack(tmp_path, e, A)
    rc = main(
        ["unmix", str(src), str(tmp_path / "r.zarr"), "--method", "lcf"]
        + ["--refs", str(tmp_path / "lib.nor"), "--components", "fe", "eu2o3"]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1
    assert "ambiguous" in err[0] and "'FePO4'" in err[0] and "'Fe3(PO4)2'" in err[0]
