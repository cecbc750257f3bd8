"""Chunk-wise edge-step normalization of a stack and its import option."""

import numpy as np
import pytest
import tifffile

from bigxanes import cli
from bigxanes.normalize import normalize_spectra
from bigxanes.normalize_stack import normalize_stack
from bigxanes.simulate import simulate
from bigxanes.store import open_stack


@pytest.fixture(scope="module")
def ds():
    return simulate("particles", (40, 44), 2, sigma=3.0, seed=0)


def test_chunked_equals_in_memory(ds):
    st = ds["stack"]
    chunked = normalize_stack(st.chunk({"y": 7, "x": 9}))
    whole = normalize_stack(st)
    ref = normalize_spectra(
        st["energy"].values, st.values.astype(np.float64), e0=chunked.attrs["e0"]
    ).norm
    assert chunked.chunks[1] == (7,) * 5 + (5,)
    np.testing.assert_array_equal(chunked.values, whole.values)
    np.testing.assert_allclose(chunked.values, ref, atol=1e-4, equal_nan=True)


def test_normalized_pixels_are_step_weighted_mixtures_of_normalized_references():
    # normalization is linear per pixel for one e0: norm(s A x) = sum_j w_j norm(a_j),
    # w_j = x_j step_j / sum_k x_k step_k (noiseless data)
    d = simulate("wedge", (12, 14), 2, sigma=0.0, seed=1)
    out = normalize_stack(d["stack"])
    e0 = out.attrs["e0"]
    E = d["energy"].values
    A = d["references"].values
    nr = normalize_spectra(E, A, e0=e0)
    x = d["true_fraction"].values.reshape(2, -1)
    w = x * nr.edge_step[:, None]
    w = w / w.sum(axis=0)
    expect = (nr.norm @ w).reshape(out.shape)
    np.testing.assert_allclose(out.values, expect, atol=1e-4)


def test_import_normalize_cli(ds, tmp_path):
    tif = tmp_path / "s.tif"
    tifffile.imwrite(tif, ds["stack"].values.astype(np.float32))
    e = tmp_path / "e.txt"
    np.savetxt(e, ds["energy"].values)
    out = tmp_path / "n.zarr"
    assert (
        cli.main(
            [
                "import",
                str(tif),
                str(out),
                "--energies",
                str(e),
                "--quantity",
                "absorbance",
                "--normalize",
                "-q",
            ]
        )
        == 0
    )
    st = open_stack(out)
    assert st.attrs["quantity"] == "normalized"
    ref = normalize_stack(ds["stack"]).values
    np.testing.assert_allclose(st["stack"].values, ref, atol=1e-5, equal_nan=True)
    # counts cannot be normalized without I0
    assert (
        cli.main(
            [
                "import",
                str(tif),
                str(tmp_path / "c.zarr"),
                "--energies",
                str(e),
                "--normalize",
                "-q",
            ]
        )
        == 2
    )
