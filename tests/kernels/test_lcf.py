"""LCF kernels and the public lcf(): exact recovery on noiseless data, agreement with SciPy."""

import numpy as np
import pytest
from scipy.optimize import nnls

from bigxanes import api
from bigxanes.kernels.lcf import nnls_coefficients, sum_to_one_coefficients
from bigxanes.simulate import simulate_to_arrays


@pytest.mark.parametrize("L", [2, 3, 5])
def test_nnls_matches_scipy(L):
    rng = np.random.default_rng(L)
    A = np.abs(rng.normal(size=(60, L))) + np.linspace(0, 1, 60)[:, None]
    Y = rng.normal(size=(60, 300)) + A @ np.abs(rng.normal(size=(L, 300)))
    M = nnls_coefficients(A.T @ A, A.T @ Y)
    ref = np.stack([nnls(A, Y[:, i])[0] for i in range(Y.shape[1])], axis=1)
    np.testing.assert_allclose(M, ref, atol=1e-9)


def test_sum_to_one_is_optimal_and_feasible():
    rng = np.random.default_rng(3)
    A = np.abs(rng.normal(size=(40, 3))) + 0.5
    Y = A @ rng.dirichlet(np.ones(3), 200).T + 0.3 * rng.normal(size=(40, 200))
    X = sum_to_one_coefficients(A.T @ A, A.T @ Y)
    np.testing.assert_allclose(X.sum(0), 1, atol=1e-12)
    assert X.min() >= 0
    obj = np.sum((Y - A @ X) ** 2, axis=0)
    # no random feasible point does better
    for _ in range(50):
        Z = rng.dirichlet(np.ones(3), 200).T
        assert np.all(obj <= np.sum((Y - A @ Z) ** 2, axis=0) + 1e-9)


@pytest.mark.parametrize("variant", ["nnls", "lstsq"])
@pytest.mark.parametrize("L", [2, 3, 5])
def test_lcf_recovers_fractions_and_scale_noiseless(variant, L):
    sim = simulate_to_arrays("particles", (32, 32), L, sigma=0.0, seed=1)
    ds = api.lcf(sim.stack, sim.references, energy=sim.energy, variant=variant)
    fg = sim.scale > 1e-3
    np.testing.assert_allclose(
        ds["fraction_unmasked"].values[:, fg], sim.fraction[:, fg], atol=1e-5
    )
    np.testing.assert_allclose(ds["scale"].values, sim.scale, atol=1e-5)


def test_sum_to_one_lcf_recovers_fractions_on_normalized_data():
    # the fully constrained LCF assumes normalized spectra (s = 1), like xraylarch
    sim = simulate_to_arrays("wedge", (24, 24), 3, sigma=0.0, seed=2)
    Y = np.einsum("tl,l...->t...", sim.references, sim.fraction)
    ds = api.lcf(Y, sim.references, energy=sim.energy, variant="sum-to-one")
    np.testing.assert_allclose(ds["fraction_unmasked"].values, sim.fraction, atol=1e-5)
