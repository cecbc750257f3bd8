"""Reference files detected by content, listed, selected by name, and checked for conditioning."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from bigxanes.references import (
    check_reference_set,
    detect_format,
    format_reference_list,
    list_references,
    read_references,
    select_references,
)
from bigxanes.spectra_model import xanes_spectrum

NOR = Path(__file__).resolve().parents[1] / "data" / "demeter_multicolumn.nor"
NAMES = ["FePO4", "Fe3(PO4)2", "Eu2O3", "Olivine (Fo80)"]


def test_demeter_multicolumn_detected_by_content_any_suffix(tmp_path):
    assert NOR.read_bytes().count(b"\r\n") > 200  # CRLF, as Athena on Windows writes it
    for suffix in (".nor", ".dat", ".txt"):
        p = tmp_path / f"refs{suffix}"
        shutil.copy(NOR, p)
        assert detect_format(p) == "demeter-multicolumn"
        recs = list_references(p)
        assert [r.name for r in recs] == NAMES  # Eu2O3 kept, full names despite truncation
    E = recs[0].energy
    np.testing.assert_allclose(E, np.arange(7080.0, 7200.01, 0.5))
    np.testing.assert_allclose(recs[0].norm, xanes_spectrum(E, 7126.0), atol=1e-6)
    assert [round(r.e0, 1) for r in recs] == [7126.0, 7122.0, 7119.0, 7123.5]
    e, A, names = read_references(p, components=["eu2", "fepo4"])
    assert names == ["Eu2O3", "FePO4"] and A.shape == (241, 2)
    np.testing.assert_allclose(A[:, 1], xanes_spectrum(E, 7126.0), atol=1e-6)


def test_info_table_lists_every_reference():
    out = format_reference_list(list_references(NOR))
    lines = out.splitlines()
    assert len(lines) == 5 and "e0 (eV)" in lines[0]
    assert lines[3].startswith("Eu2O3") and "7080.00-7200.00" in lines[3] and "7119.00" in lines[3]


def test_select_exact_case_prefix_and_errors():
    names = ["Fe foil", "Fe(II) phosphate", "Fe(III) phosphate", "Goethite", "goethite-2"]
    assert select_references(names, ["Goethite"]) == [3]
    assert select_references(names, ["FE FOIL"]) == [0]
    assert select_references(names, ["fe(iii)", "Fe f"]) == [2, 0]
    assert select_references(names, ["goethite"]) == [3]  # exact (case-insensitive) beats prefix
    with pytest.raises(ValueError, match=r"ambiguous .*'Fe\(II\) phosphate', 'Fe\(III\)"):
        select_references(names, ["fe(ii"])
    with pytest.raises(ValueError, match=r"no reference named 'Hematite'.*'Fe foil'"):
        select_references(names, ["Hematite"])
    with pytest.raises(ValueError, match="twice"):
        select_references(names, ["Goethite", "GOETHITE"])


def test_conditioning_names_the_near_duplicates():
    E = np.linspace(7080, 7200, 241)
    a, b, c = xanes_spectrum(E, 7120.0), xanes_spectrum(E, 7126.0), xanes_spectrum(E, 7123.0)
    c_dup = a + 1e-5 * np.sin(E)
    cond = check_reference_set(np.c_[a, b, c], ["A", "B", "C"])
    assert cond < 1e8
    with pytest.raises(ValueError, match=r"'A' and 'A2' are near duplicates .*--components"):
        check_reference_set(np.c_[a, b, c_dup], ["A", "B", "A2"])


def test_tables_csv_tsv_header_and_decimal_comma(tmp_path):
    E = np.linspace(7080, 7200, 31)
    y = xanes_spectrum(E, 7120.0)
    p = tmp_path / "r.csv"
    p.write_text("".join(f"{e},{v}\n" for e, v in zip(E, y, strict=True)))
    assert detect_format(p) == "table"
    np.testing.assert_allclose(list_references(p)[0].norm, y)
    t = tmp_path / "r.tsv"
    t.write_text("energy\tFeO\n" + "".join(f"{e}\t{v}\n" for e, v in zip(E, y, strict=True)))
    assert [r.name for r in list_references(t)] == ["r"]  # two columns: named after the file
    # decimal comma with ';' separators (European spreadsheet export): parsed correctly
    d = tmp_path / "eu.csv"
    d.write_text(
        "energy;FeO\n"
        + "".join(f"{e:.2f};{v:.6f}\n".replace(".", ",") for e, v in zip(E, y, strict=True))
    )
    r = list_references(d)[0]
    np.testing.assert_allclose(r.energy, np.round(E, 2))
    np.testing.assert_allclose(r.norm, y, atol=1e-6)
    # decimal comma with space separators: an error, never garbage
    s = tmp_path / "bad.txt"
    s.write_text("".join(f"{e:.2f} {v:.6f}\n".replace(".", ",") for e, v in zip(E, y, strict=True)))
    with pytest.raises(ValueError, match="decimal mark"):
        list_references(s)


def test_xdi_single_spectrum_raw_mu_is_normalized(tmp_path):
    E = np.linspace(7000, 7400, 201)
    mu = 0.4 - 0.0001 * (E - 7000) + 2.0 * xanes_spectrum(E, 7120.0)
    p = tmp_path / "foil.dat"
    p.write_text(
        "# XDI/1.0 GSE/1.0\n# Column.1: energy eV\n# Column.2: mutrans\n# ///\n#--\n"
        + "".join(f"{e:.3f} {v:.8f}\n" for e, v in zip(E, mu, strict=True))
    )
    assert detect_format(p) == "xdi"
    (r,) = list_references(p)
    assert r.name == "foil" and abs(r.edge_step - 2.0) < 0.15
    post = r.norm[E > 7200]
    assert abs(post.mean() - 1.0) < 0.05
