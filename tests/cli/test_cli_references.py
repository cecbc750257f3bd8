"""Real reference files through the current CLI: `unmix --refs FILE.prj --components NAME NAME`
and `info` on a Demeter multi-column export. Skips the .prj part when the shared data are absent.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from bigxanes.cli import main
from bigxanes.references import list_references
from bigxanes.store import write_dataset

NOR = Path(__file__).resolve().parents[1] / "data" / "demeter_multicolumn.nor"


def _prj_dir() -> Path | None:
    env = os.environ.get("BIGXANES_SHARED_DATA")
    roots = [Path(env)] if env else [p / "shared" / "data" for p in Path(__file__).parents]
    for r in roots:
        if (r / "athena_projects" / "Fe.prj").is_file():
            return r / "athena_projects"
    return None


PRJ = _prj_dir()


def test_info_lists_demeter_multicolumn_names(capsys):
    assert main(["info", str(NOR)]) == 0
    out = capsys.readouterr().out
    for name in ("FePO4", "Fe3(PO4)2", "Eu2O3", "Olivine (Fo80)"):
        assert name in out


@pytest.mark.skipif(PRJ is None, reason="Athena project files (shared data) not found")
def test_unmix_refs_prj_components_by_printed_name(tmp_path, capsys):
    recs = {r.name: r for f in ("Fe.prj", "Fe-K-ALS-10.3.2.prj") for r in list_references(PRJ / f)}
    E = np.arange(7090.0, 7190.01, 0.5)
    A = np.stack(
        [np.interp(E, recs[n].energy, recs[n].norm) for n in ("Hematite", "Olivine (Fo80)")], axis=1
    )
    f = np.stack(np.meshgrid(np.linspace(0, 1, 16), np.ones(12)), 0)[0]
    frac = np.stack([f, 1 - f])  # (2, 12, 16)
    stack = np.einsum("tl,lyx->tyx", A, frac)
    ds = xr.Dataset({"stack": (("energy", "y", "x"), stack)}, coords={"energy": E})
    src = tmp_path / "fe.zarr"
    write_dataset(ds, src)
    out = tmp_path / "r.zarr"
    rc = main(
        [
            "unmix",
            str(src),
            str(out),
            "--method",
            "lcf",
            "--refs",
            str(PRJ / "Fe.prj"),
            str(PRJ / "Fe-K-ALS-10.3.2.prj"),
            "--components",
            "hematite",
            "olivine (fo80)",
            "--baseline",
            "none",
            "-q",
        ]
    )
    err = capsys.readouterr().err
    assert rc == 0, err
    r = xr.open_zarr(out, consolidated=False).load()
    assert [str(c) for c in r["component"].values] == ["Hematite", "Olivine (Fo80)"]
    np.testing.assert_allclose(r["fraction_unmasked"].values, frac, atol=1e-3)
    rc = main(
        [
            "unmix",
            str(src),
            str(tmp_path / "bad.zarr"),
            "--method",
            "lcf",
            "--refs",
            str(PRJ / "Fe.prj"),
            "--components",
            "goethite",
            "-q",
        ]
    )
    err = capsys.readouterr().err
    assert rc == 2 and "no reference named 'goethite'" in err and "'Goerthite'" in err
    assert "Traceback" not in err
