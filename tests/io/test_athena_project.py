"""Athena project (``.prj``) reader on the real libraries in ../shared/data/athena_projects.

Skipped when the shared data folder is absent (it is not part of the repository); the parser
itself is also tested on a small project written here.
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np
import pytest

from bigxanes.normalize import find_e0
from bigxanes.references import read_athena_project
from bigxanes.references.prj import is_athena_project, parse_perl_list
from bigxanes.spectra_model import xanes_spectrum


def shared_data() -> Path:
    env = os.environ.get("BIGXANES_SHARED_DATA")
    if env:
        return Path(env)
    for parent in Path(__file__).resolve().parents:
        if (parent / "shared" / "data").is_dir():
            return parent / "shared" / "data"
    return Path("/nonexistent")


PRJ = shared_data() / "athena_projects"
needs_prj = pytest.mark.skipif(
    not (PRJ / "Fe.prj").is_file(), reason=f"Athena project files not found in {PRJ}"
)


def _write_prj(path: Path, groups: list[tuple[str, dict, np.ndarray, np.ndarray]]) -> None:
    lines = ["# Athena project file -- Demeter version 0.9.20", ""]
    for i, (label, args, x, y) in enumerate(groups):
        kv = {"label": label, "is_xmu": 1, "xdi_mono": {}, "titles": [], **args}

        def fmt(v):
            if isinstance(v, dict):
                return "{" + ",".join(f"'{k}' => {fmt(w)}" for k, w in v.items()) + "}"
            if isinstance(v, list):
                return "[" + ",".join(fmt(w) for w in v) + "]"
            if isinstance(v, str):
                return "'" + v.replace("'", "\\'") + "'"
            return repr(v)

        lines.append(f"$old_group = 'g{i}';")
        lines.append("@args = (" + ",".join(f"'{k}',{fmt(v)}" for k, v in kv.items()) + ");")
        lines.append("@x = (" + ",".join(f"'{v:.6f}'" for v in x) + ");")
        lines.append("@y = (" + ",".join(f"'{v:.8g}'" for v in y) + ");")
        lines.append("[record]   # create object and set arrays in ifeffit")
        lines.append("")
    lines.append("1;")
    path.write_bytes(gzip.compress("\n".join(lines).encode()))


def test_parse_perl_list_nested_and_quoted():
    v = parse_perl_list("('a','it\\'s',3,{'name' => {'name' => {}}},[],'x',-1.5e-3)")
    assert v == ["a", "it's", 3.0, {"name": {"name": {}}}, [], "x", -1.5e-3]


def test_synthetic_project_eshift_label_and_normalization(tmp_path):
    x = np.linspace(7000.0, 7400.0, 401)
    mu = 0.3 + 0.0002 * (x - 7000) + 1.7 * xanes_spectrum(x, 7120.0)
    args = {
        "bkg_eshift": "-4.0",
        "bkg_e0": "7116",
        "bkg_pre1": -100,
        "bkg_pre2": -30,
        "bkg_nor1": 60,
        "bkg_nor2": 270,
        "bkg_nnorm": 2,
        "bkg_flatten": 1,
    }
    p = tmp_path / "lib.whatever"  # content, not suffix, decides
    _write_prj(p, [("Fe(III) it's", args, x, mu), ("Fe(III) it's", {"bkg_e0": 7120}, x, mu)])
    assert is_athena_project(p)
    recs = read_athena_project(p)
    assert [r.name for r in recs] == ["Fe(III) it's", "Fe(III) it's (2)"]
    np.testing.assert_allclose(recs[0].energy, x - 4.0)
    assert recs[0].eshift == -4.0 and recs[0].e0 == 7116.0
    np.testing.assert_allclose(recs[0].mu, mu, rtol=1e-7)  # stored mu (8 digits written)
    # edge step 1.7 of the model (its post-edge sits at 1), pre-edge removed
    assert abs(recs[0].edge_step - 1.7) < 0.1
    assert abs(np.mean(recs[0].norm[recs[0].energy < 7080])) < 0.01


def test_not_a_project_and_damaged(tmp_path):
    bad = tmp_path / "x.prj"
    bad.write_text("energy mu\n1 2\n")
    with pytest.raises(ValueError, match="not an Athena project"):
        read_athena_project(bad)
    x = np.linspace(7000.0, 7400.0, 50)
    p = tmp_path / "d.prj"
    _write_prj(p, [("a", {}, x, np.ones(49))])
    with pytest.raises(ValueError, match="@x has 50 values but the spectrum has 49"):
        read_athena_project(p)


@needs_prj
def test_real_projects_all_groups_labels_and_normalization():
    names = {
        f: [r.name for r in read_athena_project(PRJ / f)]
        for f in ("Fe.prj", "Mn.prj", "Fe-K-ALS-10.3.2.prj")
    }
    assert names["Fe.prj"] == ["Fe foil", "Ferrihydrite", "Goerthite", "Hematite", "Lepidocrocite"]
    assert len(names["Mn.prj"]) == 14 and "Mn3O4" in names["Mn.prj"]
    assert (
        len(names["Fe-K-ALS-10.3.2.prj"]) == 8 and "Olivine (Fo80)" in names["Fe-K-ALS-10.3.2.prj"]
    )
    for f in names:
        for r in read_athena_project(PRJ / f):
            assert np.all(np.diff(r.energy) > 0)
            pre = r.norm[r.energy < r.e0 - 30]
            post = r.norm[(r.energy > r.e0 + 60) & (r.energy < r.e0 + 200)]
            assert abs(np.mean(pre)) < 0.02, r.name
            assert abs(np.mean(post) - 1.0) < 0.1, r.name
            # edge step as Athena stored it (bkg_step), where the post-edge window is wide
            nor_w = float(r.params["bkg_nor2"]) - float(r.params["bkg_nor1"])
            if nor_w > 150:
                assert abs(r.edge_step / float(r.params["bkg_step"]) - 1) < 0.03, r.name


@needs_prj
def test_real_project_applies_bkg_eshift():
    """Fe foil (eshift 5.81 eV) and Mn3O4 (19.1 eV): the edge (max of dmu/dE) lies at the
    group's e0 (Fe foil: the tabulated Fe K edge 7112 eV) only with the shift applied."""
    fe = {r.name: r for r in read_athena_project(PRJ / "Fe.prj")}["Fe foil"]
    mn = {r.name: r for r in read_athena_project(PRJ / "Mn.prj")}["Mn3O4"]
    assert fe.e0 == 7112.0
    for r, shift in ((fe, 5.81162), (mn, 19.1)):
        assert abs(r.eshift - shift) < 1e-4
        edge = float(find_e0(r.energy, r.mu, smooth=1))
        assert abs(edge - r.e0) < 0.5, r.name
        raw_edge = float(find_e0(r.energy - r.eshift, r.mu, smooth=1))
        assert abs(raw_edge - r.e0) > 5.0, r.name
