"""fraction_std: delta-method LCF covariance and the RUM risk estimate (issue 14, item 5)."""

import numpy as np
import pytest

from bigxanes.kernels.lcf import (
    fractions_from_coefficients,
    lstsq_coefficients,
    nnls_coefficients,
    nnls_coefficients_pixelwise,
)
from bigxanes.kernels.uncertainty import (
    constraint_active,
    lcf_fraction_std,
    perturbation_moments,
    rum_fraction_std,
)
from bigxanes.kernels.weights import irls_weights, weighted_normal_equations
from bigxanes.metrics import foreground_mask
from bigxanes.simulate import simulate_to_arrays


@pytest.mark.parametrize("L", [2, 3])
def test_delta_method_matches_monte_carlo_of_one_pixel(L):
    # one spectrum, many noise draws: the std of x = m / 1ᵀm of the unconstrained fit
    sim = simulate_to_arrays("wedge", (8, 8), L, sigma=0.0, seed=0)
    A = sim.references
    m_true = sim.fraction[:, 4, 4] * sim.scale[4, 4]
    sigma = 0.01
    rng = np.random.default_rng(1)
    Y = (A @ m_true)[:, None] + sigma * rng.standard_normal((A.shape[0], 20_000))
    M = lstsq_coefficients(A.T @ A, A.T @ Y)
    X, _ = fractions_from_coefficients(M)
    sd = lcf_fraction_std(m_true[:, None], A.T @ A, sigma2=sigma**2)[:, 0]
    np.testing.assert_allclose(X.std(axis=1), sd, rtol=0.05)


def _z(sim, X, sd):
    L = X.shape[0]
    fg = foreground_mask(sim.scale).ravel()
    return ((X.reshape(L, -1) - sim.fraction.reshape(L, -1)) / sd.reshape(L, -1))[:, fg]


@pytest.mark.parametrize("seed", [0, 1])
def test_lcf_two_sigma_coverage_gaussian_noise(seed):
    sim = simulate_to_arrays("particles", (96, 96), 2, sigma=7.0, seed=seed)
    T = sim.stack.shape[0]
    Y, A = sim.stack.reshape(T, -1), sim.references
    M = nnls_coefficients(A.T @ A, A.T @ Y)
    X, _ = fractions_from_coefficients(M)
    rss = np.sum((Y - A @ M) ** 2, axis=0)
    z = _z(sim, X, lcf_fraction_std(M, A.T @ A, rss=rss, n_energies=T))
    assert 0.90 <= np.mean(np.abs(z) < 2) <= 0.98
    assert 0.60 <= np.mean(np.abs(z) < 1) <= 0.78


def test_lcf_two_sigma_coverage_counting_noise_with_weights():
    dose = 300.0
    sim = simulate_to_arrays("particles", (96, 96), 2, sigma=0.0, poisson=dose, seed=4)
    T = sim.stack.shape[0]
    Y, A = sim.stack.reshape(T, -1), sim.references
    w, M = irls_weights(A, Y, nnls_coefficients_pixelwise, i0=dose)
    G, _, _ = weighted_normal_equations(A, Y, w)
    X, _ = fractions_from_coefficients(M)
    z = _z(sim, X, lcf_fraction_std(M, G))  # weights are inverse variances: Cov = (AᵀWA)⁻¹
    assert 0.90 <= np.mean(np.abs(z) < 2) <= 0.98


def test_boundary_pixels_are_flagged_and_empty_pixels_are_nan():
    A = np.abs(np.random.default_rng(0).normal(size=(30, 2))) + 0.1
    M = np.array([[1.0, 0.0, 0.0, 0.5], [1.0, 0.7, 0.0, 0.5]])
    sd = lcf_fraction_std(M, A.T @ A, sigma2=1e-4)
    assert np.all(np.isnan(sd[:, 2])) and np.all(np.isfinite(sd[:, [0, 1, 3]]))
    assert sd[0, 1] > 0  # the clipped component keeps a non-zero (conservative) std
    np.testing.assert_array_equal(constraint_active(M), [False, True, False, False])


def test_rum_risk_reduces_to_lcf_variance_without_smoothing():
    # x_R = x_L: Stein's identity gives E(x_R - x)² = 0 - V + 2V = V
    rng = np.random.default_rng(2)
    xl = rng.uniform(size=(2, 16, 16))
    v = np.full_like(xl, 0.01)
    sd = rum_fraction_std(xl, xl, v, var_pert=v, cov_pert=v)
    np.testing.assert_allclose(sd, 0.1, rtol=1e-12)


def test_rum_risk_is_calibrated_for_a_linear_smoother():
    # x_R = box average of x_L (a linear, biased estimator): the estimated MSE is right on average
    rng = np.random.default_rng(3)
    ny = 64
    truth = np.where(np.arange(ny)[None, :, None] < 32, 0.2, 0.8) * np.ones((1, ny, ny))
    sigma = 0.1
    from scipy.ndimage import uniform_filter

    def solve(y):
        return uniform_filter(y, size=(1, 3, 3), mode="nearest"), y

    y = truth + sigma * rng.standard_normal(truth.shape)
    xr, xl = solve(y)
    var_p, cov_p = perturbation_moments(solve, y, sigma, 8, rng, reference=(xr, xl))
    v = np.full_like(y, sigma**2)
    # without edge spreading: Stein's identity, averaged, is calibrated
    z = (xr - truth) / rum_fraction_std(xr, xl, v, var_p, cov_p, edge=1)
    assert 0.8 <= z.std() <= 1.25
    # the default spreads the risk along edges (for TV's thin bias lines): conservative here
    sd = rum_fraction_std(xr, xl, v, var_p, cov_p)
    z = (xr - truth) / sd
    assert 0.6 <= z.std() <= 1.0 and np.mean(np.abs(z) < 2) >= 0.95
    # the smoother's error is larger at the edge (bias): so is the estimate
    assert sd[0, 31, :].mean() > 1.5 * sd[0, 10, :].mean()


@pytest.mark.parametrize("variant", ["nnls", "lstsq"])
def test_lcf_result_carries_calibrated_fraction_std(variant):
    """The LCF result's ``fraction_std`` (api.lcf; the engine gives the same numbers, see
    tests/engine/test_parity.py): 2σ coverage 90-98 %, 1σ 60-78 % on the foreground."""
    from bigxanes.api import lcf

    sim = simulate_to_arrays("particles", (64, 64), 2, sigma=7.0, seed=5)
    ds = lcf(sim.stack, sim.references, variant=variant, energy=sim.energy)
    sd = np.asarray(ds["fraction_std"].values, dtype=np.float64)
    X = np.asarray(ds["fraction_unmasked"].values, dtype=np.float64)
    assert ds["fraction_std"].dims == ds["fraction"].dims
    z = _z(sim, X, sd)
    assert np.isfinite(z).all()
    assert 0.90 <= np.mean(np.abs(z) < 2) <= 0.98, np.mean(np.abs(z) < 2)
    assert 0.60 <= np.mean(np.abs(z) < 1) <= 0.78, np.mean(np.abs(z) < 1)


def test_sum_to_one_fraction_std_is_conservative_when_the_scale_varies():
    """Sum-to-one LCF assumes normalized spectra (scale 1): on a stack whose scale varies the
    misfit enters the residual, so its std is too large (measured: 100 % 2σ coverage)."""
    from bigxanes.api import lcf

    sim = simulate_to_arrays("particles", (64, 64), 2, sigma=7.0, seed=5)
    ds = lcf(sim.stack, sim.references, variant="sum-to-one", energy=sim.energy)
    X = np.asarray(ds["fraction_unmasked"].values, dtype=np.float64)
    z = _z(sim, X, np.asarray(ds["fraction_std"].values, dtype=np.float64))
    assert np.isfinite(z).all() and np.mean(np.abs(z) < 2) >= 0.98


def test_rum_result_fraction_std_is_a_conservative_bound():
    """RUM results carry the linearized std (LCF covariance at the RUM solution, no account
    of the prior): an upper bound, 2σ coverage >= 95 % and larger than the actual error."""
    from bigxanes.api import unmix

    sim = simulate_to_arrays("particles", (40, 40), 2, sigma=7.0, seed=6)
    ds = unmix(sim.stack, sim.references, method="rum-tv", energy=sim.energy, max_iter=60)
    X = np.asarray(ds["fraction"].values, dtype=np.float64)
    sd = np.asarray(ds["fraction_std"].values, dtype=np.float64)
    assert ds["fraction_std"].dims == ds["fraction"].dims
    z = _z(sim, X, sd)
    assert np.isfinite(z).all()
    assert np.mean(np.abs(z) < 2) >= 0.95
    assert np.std(z) < 1.0  # conservative: the spread of the standardized errors is below 1
