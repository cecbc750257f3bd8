"""Edge-50: the interpolated half-height crossing."""

import numpy as np

from bigxanes import api
from bigxanes.kernels.edge50 import edge50_energy
from bigxanes.simulate import simulate_to_arrays


def test_edge50_matches_analytic_crossing():
    energy = np.arange(8300.0, 8400.0, 0.5)
    centres = np.array([8340.3, 8345.0, 8351.7])
    # normalized arctan edges: 0.5 exactly at the centre
    norm = 0.5 + np.arctan((energy[:, None] - centres[None, :]) / 2.0) / np.pi
    # renormalize so that pre-edge -> 0 and post-edge -> 1 exactly at the ends
    e50 = edge50_energy(energy, norm)
    np.testing.assert_allclose(e50, centres, atol=0.05)


def test_edge50_through_normalization_of_synthetic_spectra():
    energy = np.arange(8200.0, 8600.0, 0.5)
    e0s = np.array([8340.0, 8346.0])
    # a smooth erf-like edge on a sloping pre-edge, with a flat post-edge: half height at e0
    from scipy.special import erf

    mu = 0.1 + 1e-4 * (energy[:, None] - 8200.0) + 0.5 * (1 + erf((energy[:, None] - e0s) / 3.0))
    ds = api.edge50(mu.reshape(energy.size, 1, 2), energy=energy)
    np.testing.assert_allclose(ds["edge50"].values.ravel(), e0s, atol=0.05)


def test_edge50_fraction_for_two_states_noiseless():
    sim = simulate_to_arrays("wedge", (16, 16), 2, sigma=0.0, seed=0)
    ds = api.edge50(sim.stack, sim.references, energy=sim.energy)
    assert np.all(np.isfinite(ds["edge50"].values))
    x = ds["fraction_unmasked"].values
    np.testing.assert_allclose(x.sum(0), 1.0, atol=1e-6)
    # Edge-50 is monotone in the true fraction of the second state
    t = sim.fraction[1].ravel()
    order = np.argsort(t)
    assert np.all(np.diff(x[1].ravel()[order]) >= -1e-6)
