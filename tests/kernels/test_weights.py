"""Counting-noise weights and the per-pixel weighted normal equations (issue 14, item 3)."""

import numpy as np
import pytest
from scipy.optimize import nnls

from bigxanes.kernels.lcf import (
    fractions_from_coefficients,
    nnls_coefficients,
    nnls_coefficients_pixelwise,
)
from bigxanes.kernels.weights import (
    batched_solve,
    counting_variance,
    effective_i0_from_residual,
    irls_weights,
    pack_symmetric,
    unpack_symmetric,
    weighted_data_misfit,
    weighted_m_step,
    weighted_normal_equations,
)
from bigxanes.metrics import foreground_mask
from bigxanes.simulate import simulate_to_arrays


def _problem(L, N=200, T=50, seed=0):
    rng = np.random.default_rng(seed)
    A = np.abs(rng.normal(size=(T, L))) + np.linspace(0, 1, T)[:, None]
    Y = A @ np.abs(rng.normal(size=(L, N))) + 0.5 * rng.normal(size=(T, N))
    w = rng.uniform(0.2, 5.0, size=(T, N))
    return A, Y, w


@pytest.mark.parametrize("L", [2, 3, 4])
def test_weighted_normal_equations_match_explicit_sums(L):
    A, Y, w = _problem(L)
    G, b, c = weighted_normal_equations(A, Y, w)
    for n in (0, 17, 199):
        np.testing.assert_allclose(G[:, :, n], A.T @ (w[:, n, None] * A), rtol=1e-12)
        np.testing.assert_allclose(b[:, n], A.T @ (w[:, n] * Y[:, n]), rtol=1e-12)
        np.testing.assert_allclose(c[n], np.sum(w[:, n] * Y[:, n] ** 2), rtol=1e-12)
    G1, b1, _ = weighted_normal_equations(A, Y, np.ones(A.shape[0]))
    np.testing.assert_allclose(G1, np.broadcast_to((A.T @ A)[:, :, None], G1.shape), rtol=1e-12)
    np.testing.assert_allclose(b1, A.T @ Y, rtol=1e-12)


@pytest.mark.parametrize("L", [2, 3, 5])
def test_pixelwise_nnls_matches_scipy_on_whitened_problem(L):
    A, Y, w = _problem(L, N=120, seed=L)
    G, b, _ = weighted_normal_equations(A, Y, w)
    M = nnls_coefficients_pixelwise(G, b)
    sw = np.sqrt(w)
    ref = np.stack([nnls(sw[:, n, None] * A, sw[:, n] * Y[:, n])[0] for n in range(120)], 1)
    np.testing.assert_allclose(M, ref, atol=1e-8)
    # a shared matrix gives exactly the unweighted NNLS
    np.testing.assert_allclose(
        nnls_coefficients_pixelwise(np.repeat((A.T @ A)[:, :, None], 120, 2), A.T @ Y),
        nnls_coefficients(A.T @ A, A.T @ Y),
        atol=1e-10,
    )


def test_pack_roundtrip_and_misfit_from_normal_equations():
    A, Y, w = _problem(3)
    G, b, c = weighted_normal_equations(A, Y, w)
    P = pack_symmetric(G)
    assert P.shape == (6, Y.shape[1])
    np.testing.assert_array_equal(unpack_symmetric(P, 3), G)
    M = batched_solve(G, b)
    direct = np.sum(w * (Y - A @ M) ** 2, axis=0)
    np.testing.assert_allclose(weighted_data_misfit(G, b, c, M), direct, rtol=1e-8)
    with pytest.raises(ValueError, match="symmetric"):
        unpack_symmetric(P[:5], 3)


def test_weighted_m_step_is_the_per_pixel_proximal_solve():
    A, Y, w = _problem(3, N=64)
    G, b, _ = weighted_normal_equations(A, Y, w)
    rng = np.random.default_rng(1)
    Xs, C = rng.normal(size=(3, 8, 8)), rng.normal(size=(3, 8, 8))
    rho = 0.3
    M = weighted_m_step(pack_symmetric(G).reshape(6, 8, 8), b.reshape(3, 8, 8), Xs, C, rho)
    for n in (0, 9, 63):
        iy, ix = divmod(n, 8)
        ref = np.linalg.solve(G[:, :, n] + rho * np.eye(3), b[:, n] + rho * (Xs + C)[:, iy, ix])
        np.testing.assert_allclose(M[:, iy, ix], ref, rtol=1e-10)
    # unit weights: the unweighted step of kernels/admm.py, (AᵀA + ρI)⁻¹(AᵀY + ρ(Xs + C))
    G1, b1, _ = weighted_normal_equations(A, Y, np.ones(A.shape[0]))
    M1 = weighted_m_step(G1.reshape(3, 3, 8, 8), b1.reshape(3, 8, 8), Xs, C, rho)
    P = np.linalg.inv(A.T @ A + rho * np.eye(3))
    ref1 = np.tensordot(P, b1.reshape(3, 8, 8) + rho * (Xs + C), axes=1)
    np.testing.assert_allclose(M1, ref1, rtol=1e-10)


def test_counting_variance_matches_poisson_od_variance():
    # delta method Var(-ln(n / I0)) ~ exp(OD) / I0, checked against Poisson draws
    rng = np.random.default_rng(0)
    i0 = 2000.0
    od = np.array([0.1, 0.8, 1.5, 2.5])
    n = rng.poisson(i0 * np.exp(-od)[:, None], size=(4, 200_000))
    emp = np.var(-np.log(np.maximum(n, 1) / i0), axis=1)
    np.testing.assert_allclose(counting_variance(od[:, None], i0)[:, 0], emp, rtol=0.05)
    with pytest.raises(ValueError, match="I0"):
        counting_variance(od[:, None], np.array([1.0, 0.0, 1.0, 1.0]))


def test_effective_dose_estimated_from_the_residual():
    dose = 150.0
    sim = simulate_to_arrays("particles", (48, 48), 2, sigma=0.0, poisson=dose, seed=3)
    T = sim.stack.shape[0]
    Y, A = sim.stack.reshape(T, -1), sim.references
    M = nnls_coefficients(A.T @ A, A.T @ Y)
    fit = A @ M
    est = effective_i0_from_residual(Y - fit, fit, (T - 2) / T)
    # one number per energy from ~2300 pixels: within 15 % of the true dose on average
    assert abs(np.median(est) / dose - 1) < 0.15


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_weighted_lcf_beats_unweighted_at_low_dose(seed):
    dose = 100.0
    sim = simulate_to_arrays("particles", (64, 64), 2, sigma=0.0, poisson=dose, seed=seed)
    T = sim.stack.shape[0]
    Y, A = sim.stack.reshape(T, -1), sim.references
    fg = foreground_mask(sim.scale).ravel()
    truth = sim.fraction.reshape(2, -1)[:, fg]
    Xu, _ = fractions_from_coefficients(nnls_coefficients(A.T @ A, A.T @ Y))
    _, Mw = irls_weights(A, Y, nnls_coefficients_pixelwise, i0=dose)
    Xw, _ = fractions_from_coefficients(Mw)
    _, Me = irls_weights(A, Y, nnls_coefficients_pixelwise, pixels=fg)  # dose from the data
    Xe, _ = fractions_from_coefficients(Me)
    mse_u = np.mean((Xu[:, fg] - truth) ** 2)
    assert np.mean((Xw[:, fg] - truth) ** 2) < mse_u
    assert np.mean((Xe[:, fg] - truth) ** 2) < mse_u
