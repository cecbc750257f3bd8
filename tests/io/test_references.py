import os
from pathlib import Path

import numpy as np
import pytest

from bigxanes.references import (
    load_ni_references,
    read_reference_file,
    read_references,
)
from bigxanes.spectra_model import xanes_spectrum

E = np.linspace(8300.0, 8450.0, 61)
S1 = xanes_spectrum(E, 8345.0)
S2 = xanes_spectrum(E, 8347.0, white_line_height=0.8)


def shared_data() -> Path | None:
    env = os.environ.get("BIGXANES_SHARED_DATA")
    if env:
        return Path(env) if Path(env).is_dir() else None
    for parent in Path(__file__).resolve().parents:  # main checkout or a git worktree
        if (parent / "shared" / "data").is_dir():
            return parent / "shared" / "data"
    return None


def test_two_column_files_kev_and_names(tmp_path):
    p1 = tmp_path / "NiO.txt"
    p2 = tmp_path / "LiNiO2.csv"
    np.savetxt(p1, np.c_[E / 1000.0, S1], header="energy_keV mu")  # keV, commented header
    np.savetxt(p2, np.c_[E, S2], delimiter=",")
    e, A, names = read_references([p1, p2])
    np.testing.assert_allclose(e, E)
    np.testing.assert_allclose(A, np.c_[S1, S2], rtol=1e-12, atol=1e-15)
    assert names == ["NiO", "LiNiO2"]
    # pick components by name, in the requested order
    _, A2, n2 = read_references([p1, p2], components=["LiNiO2"])
    assert n2 == ["LiNiO2"] and A2.shape == (61, 1)
    with pytest.raises(ValueError, match=r"no reference named 'Ni0'.*: 'NiO', 'LiNiO2'\."):
        read_references([p1, p2], components=["Ni0"])


def test_multicolumn_csv_with_header_and_interpolation(tmp_path):
    p = tmp_path / "refs.csv"
    with open(p, "w") as fh:
        fh.write("energy,Ni2+,Ni3+\n")
        for row in np.c_[E[::-1], S1[::-1], S2[::-1]]:  # descending order: must be sorted
            fh.write(",".join(f"{v:.10g}" for v in row) + "\n")
    e, A, names = read_references(p)
    assert names == ["Ni2+", "Ni3+"]
    np.testing.assert_allclose(e, E)
    np.testing.assert_allclose(A[:, 1], S2, rtol=1e-9)
    target = np.linspace(8310, 8440, 27)
    e2, A2, _ = read_references(p, energy=target)
    np.testing.assert_allclose(e2, target)
    np.testing.assert_allclose(A2[:, 0], np.interp(target, E, S1), rtol=1e-9)
    with pytest.raises(ValueError, match="8300.00-8450.00 eV"):
        read_references(p, energy=np.linspace(8250, 8400, 10))


def test_xdi_mutrans_and_transmission(tmp_path):
    mu = 0.3 + 1.7 * S1
    p = tmp_path / "foil.xdi"
    lines = [
        "# XDI/1.0",
        "# Column.1: energy eV",
        "# Column.2: mutrans",
        "# Column.3: i0",
        "# Element.symbol: Ni",
        "# ///",
        "#----",
        "#   energy  mutrans  i0",
    ] + [f"  {a:.4f}  {b:.8f}  100000.0" for a, b in zip(E, mu, strict=True)]
    p.write_text("\n".join(lines) + "\n")
    e, v, names = read_reference_file(p)
    assert names == ["foil"]
    np.testing.assert_allclose(v[:, 0], mu, atol=1e-8)
    # normalize=True recovers the normalized model (edge step 1.7 removed)
    _, vn, _ = read_references(p, normalize=True)
    far = E > 8420
    assert np.abs(vn[far, 0] - S1[far]).max() < 0.05
    assert abs(vn[0, 0]) < 0.02
    # transmission columns only: mu = ln(i0 / itrans)
    i0 = np.full(E.size, 2e5)
    it = i0 * np.exp(-mu)
    p2 = tmp_path / "trans.xdi"
    rows = [f"{a / 1000:.7f} {b:.6f} {c:.6f}" for a, b, c in zip(E, i0, it, strict=True)]
    head = ["# XDI/1.0", "# Column.1: energy keV", "# Column.2: i0", "# Column.3: itrans"]
    lines2 = head + ["#----"] + rows
    p2.write_text("\n".join(lines2) + "\n")
    e2, v2, _ = read_reference_file(p2)
    np.testing.assert_allclose(e2, E, atol=1e-3)
    np.testing.assert_allclose(v2[:, 0], mu, atol=1e-5)


def test_athena_nor(tmp_path):
    p = tmp_path / "nio_athena.nor"
    flat = S1 + 0.01
    with open(p, "w") as fh:
        fh.write("# Athena data file -- Athena version 0.9.26\n# Element: Ni\n")
        fh.write("# ------------------------\n#  energy norm nbkg flat fbkg nder nsec\n")
        for row in np.c_[E, S1, S1, flat, S1, S1, S1]:
            fh.write(" ".join(f"{v:.8f}" for v in row) + "\n")
    e, v, n = read_reference_file(p)
    assert n == ["nio_athena"]
    np.testing.assert_allclose(v[:, 0], S1, atol=1e-7)
    _, vf, _ = read_reference_file(p, column="flat")
    np.testing.assert_allclose(vf[:, 0], flat, atol=1e-7)
    with pytest.raises(ValueError, match="available"):
        read_reference_file(p, column="chi")


def test_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_references(tmp_path / "nope.txt")
    bad = tmp_path / "bad.txt"
    bad.write_text("8300 1\n8301 x\n")
    with pytest.raises(ValueError, match="line 2"):
        read_references(bad)
    dup = tmp_path / "dup.txt"
    np.savetxt(dup, np.c_[E, S1])
    with pytest.raises(ValueError, match="duplicate reference names"):
        read_references([dup, dup])


def test_real_ni_references():
    d = shared_data()
    if d is None or not (d / "ni_k_edge_refs").is_dir():
        pytest.skip("shared data folder not available")
    e, A, names = load_ni_references(d / "ni_k_edge_refs")
    assert names == ["Ni0", "Ni2+", "Ni3+"]
    assert A.shape == (e.size, 3)
    assert e[0] >= 8200 - 1e-6 and e[-1] <= 9000 + 1e-6 and e.size > 500  # eV, overlap grid
    assert np.all(np.diff(e) > 0)
    # all edge-step normalized: ~0 before the edge, ~1 far above
    assert np.all(np.abs(A[e < 8300]).max(axis=0) < 0.05)
    assert np.all(np.abs(A[e > 8800].mean(axis=0) - 1) < 0.05)
    # chemical shift: E50 (first crossing of 0.5) Ni0 < Ni2+ < Ni3+
    e50 = [e[np.argmax(A[:, j] >= 0.5)] for j in range(3)]
    assert e50[0] < e50[1] < e50[2]
    # oxides have a stronger white line than the metal
    assert A[:, 1].max() > A[:, 0].max() + 0.2 and A[:, 2].max() > A[:, 0].max() + 0.2
    # onto a given stack grid
    grid = np.linspace(8.30, 8.45, 40)  # keV
    e2, A2, _ = load_ni_references(d / "ni_k_edge_refs", energy=grid)
    np.testing.assert_allclose(e2, grid * 1000)
    assert A2.shape == (40, 3)
