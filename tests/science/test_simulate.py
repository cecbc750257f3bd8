import time

import numpy as np
import pytest

from bigxanes.energy import check_references
from bigxanes.normalize import find_e0
from bigxanes.phantoms import make_phantom
from bigxanes.simulate import simulate, simulate_to_arrays
from bigxanes.spectra_model import model_references, xanes_spectrum

# ---------------------------------------------------------------- spectra model


def test_xanes_spectrum_is_edge_step_normalized():
    E = np.linspace(8200, 9000, 2000)
    y = xanes_spectrum(
        E, 8345.0, edge_shape="erf", osc_amp=0.0, white_line_height=0.0, pre_edge_height=0.0
    )
    assert abs(y[0]) < 1e-6 and abs(y[-1] - 1.0) < 1e-6
    y2 = xanes_spectrum(E, 8345.0)
    assert abs(E[np.argmax(y2)] - 8350.0) < 2.0  # white line just above e0
    peak = y2 - xanes_spectrum(E, 8345.0, pre_edge_height=0.0)
    assert abs(E[np.argmax(peak)] - 8333.0) < 1.0  # pre-edge peak 12 eV below e0
    assert peak.max() == pytest.approx(0.04, rel=0.05)


@pytest.mark.parametrize("L", [2, 3, 5])
def test_model_references_correlated_distinct_monotone(L):
    E, A, names = model_references(L)
    assert A.shape == (E.size, L) and names == [f"state{j + 1}" for j in range(L)]
    assert 8250 <= E[0] and E[-1] <= 8550 and 90 <= E.size <= 110
    # denser near the edge
    assert np.diff(E)[np.abs(E[:-1] - 8345) < 10].max() < np.diff(E)[E[:-1] > 8400].min()
    C = np.corrcoef(A.T)
    for j in range(L - 1):
        assert 0.9 < C[j, j + 1] < 0.9999
    check_references(A)  # full rank, well enough conditioned
    e0 = find_e0(E, A)
    assert np.all(np.diff(e0) > 0)
    # E50 (first crossing of 0.5) increases too
    e50 = [E[np.argmax(A[:, j] >= 0.5)] for j in range(L)]
    assert np.all(np.diff(e50) > 0)


def test_model_references_seed():
    _, a1, _ = model_references(3, seed=1)
    _, a2, _ = model_references(3, seed=1)
    _, a0, _ = model_references(3)
    np.testing.assert_array_equal(a1, a2)
    assert not np.allclose(a1, a0)


# ---------------------------------------------------------------- phantoms


@pytest.mark.parametrize("name", ["particles", "electrode", "wedge", "cathode"])
@pytest.mark.parametrize("shape", [(128, 128), (64, 64, 64)])
@pytest.mark.parametrize("L", [2, 4])
def test_phantom_simplex_and_speed(name, shape, L):
    t = time.perf_counter()
    X, s = make_phantom(name, shape, L, seed=3)
    assert time.perf_counter() - t < 2.0
    assert X.shape == (L,) + shape and s.shape == shape
    assert np.all(X >= 0) and np.all(X <= 1)
    np.testing.assert_allclose(X.sum(axis=0), 1.0, atol=1e-12)
    assert np.all(s >= 0) and s.max() <= 1.0 + 1e-12
    fg = s > 0.1 * s.max()
    # every state is present somewhere in the foreground with a substantial fraction
    assert np.all(X[:, fg].max(axis=1) > 0.5)
    X2, s2 = make_phantom(name, shape, L, seed=3)
    np.testing.assert_array_equal(X, X2)
    np.testing.assert_array_equal(s, s2)


def test_particles_background_and_radial_profile():
    X, s = make_phantom("particles", (128, 128), 2, seed=0)
    bg = s < 0.03
    assert 0.3 < bg.mean() < 0.9  # a large near-empty background ...
    assert (s > 0.5).mean() > 0.03  # ... and thick particle centres
    assert (s <= 0.02).mean() > 0.3  # background s in [1e-3, 0.02] (+ particle rims)
    assert np.count_nonzero(s < 1e-3) < 0.01 * s.size
    # core-shell: fractions vary inside particles (not a constant per particle)
    inside = s > 0.2
    assert X[0, inside].std() > 0.1
    # different seeds give different phantoms
    _, s_other = make_phantom("particles", (128, 128), 2, seed=1)
    assert not np.allclose(s, s_other)


def test_electrode_dense_and_wedge_linear():
    _, s = make_phantom("electrode", (128, 128), 2, seed=0)
    assert (s > 0.1).mean() > 0.5
    X, s = make_phantom("wedge", (64, 96), 2, seed=0)
    # a linear gradient: second differences of the fraction are ~0 along x
    d2 = np.diff(X[1], n=2, axis=-1)
    assert np.abs(d2).max() < 1e-9
    assert X[1].min() == pytest.approx(0.0) and X[1].max() == pytest.approx(1.0)


def test_make_phantom_unknown():
    with pytest.raises(ValueError, match="particles"):
        make_phantom("blob", (32, 32), 2, 0)


# ---------------------------------------------------------------- simulate


def test_simulate_dataset_contract():
    ds = simulate("particles", (48, 40), 3, sigma=3.0, seed=1)
    assert ds["stack"].dims == ("energy", "y", "x") and ds["stack"].dtype == np.float32
    assert ds["references"].dims == ("energy", "component")
    assert ds["true_fraction"].dims == ("component", "y", "x")
    assert ds["true_scale"].dims == ("y", "x")
    assert ds["energy"].attrs["units"] == "eV"
    assert list(ds["component"].values) == ["state1", "state2", "state3"]
    for k in ("phantom", "sigma", "noise", "seed", "shape"):
        assert k in ds.attrs
    ds3 = simulate("wedge", (8, 12, 10), 2, sigma=1.0)
    assert ds3["stack"].dims == ("energy", "z", "y", "x")


def test_clean_part_is_exact_model():
    r = simulate_to_arrays("electrode", (40, 36), 3, sigma=0.0, seed=2)
    L = r.references.shape[1]
    expect = np.einsum("tl,lyx,yx->tyx", r.references, r.fraction, r.scale)
    np.testing.assert_allclose(r.clean, expect, rtol=1e-12, atol=1e-14)
    np.testing.assert_array_equal(r.stack, r.clean)
    assert L == 3 and r.noise_std == 0.0


@pytest.mark.parametrize("sigma", [1.0, 7.0])
def test_noise_std_matches_convention(sigma):
    r = simulate_to_arrays("particles", (96, 96), 2, sigma=sigma, seed=0)
    resid = r.stack - r.clean
    expected = sigma / 255.0 * r.clean.max()
    assert r.noise_std == pytest.approx(expected)
    assert abs(resid.std() / expected - 1.0) < 0.05
    assert abs(resid.mean()) < 0.05 * expected


def test_poisson_noise_scales_with_dose():
    lo = simulate_to_arrays("wedge", (64, 64), 2, sigma=0.0, poisson=1e3, seed=0)
    hi = simulate_to_arrays("wedge", (64, 64), 2, sigma=0.0, poisson=1e5, seed=0)
    r_lo = (lo.stack - lo.clean).std()
    r_hi = (hi.stack - hi.clean).std()
    # photon noise in OD ~ 1/sqrt(I0 exp(-OD)): 100x dose -> ~10x less noise
    assert 7.0 < r_lo / r_hi < 13.0
    assert abs((hi.stack - hi.clean).mean()) < 3 * r_hi / np.sqrt(hi.stack.size) + 1e-4


def test_user_references_interpolated():
    E, A, names = model_references(2)
    Enew = np.linspace(8300, 8450, 60)
    r = simulate_to_arrays(
        "wedge", (16, 16), 5, sigma=0.0, references=(E, A, ["a", "b"]), energy=Enew / 1000.0
    )
    np.testing.assert_allclose(r.energy, Enew)
    assert r.references.shape == (60, 2) and r.names == ["a", "b"]
    with pytest.raises(ValueError, match="energy-range"):
        simulate_to_arrays(
            "wedge", (16, 16), references=(E, A, names), energy=np.linspace(8200, 8400, 20)
        )
