"""Guided-TV edge weights and the weighted U-prox of the ADMM kernel."""

from __future__ import annotations

import numpy as np
import pytest

from bigxanes.kernels.admm import StateLayout, admm_iteration, initial_state
from bigxanes.kernels.guide import edge_weights
from bigxanes.kernels.stencils import gradient
from bigxanes.rum import RumParams


def test_weights_are_one_on_flat_morphology_and_low_at_its_edges():
    m = np.zeros((20, 24))
    m[:, 12:] = 1.0  # a vertical outline between columns 11 and 12
    w = edge_weights(m, 2, kappa=0.05, w_min=0.1)
    assert w.shape == m.shape and np.all((w >= 0.1) & (w <= 1.0))
    # forward difference: the edge belongs to column 11 (x_12 - x_11)
    np.testing.assert_allclose(w[:, 11], 0.1 + 0.9 / (1 + 400.0))
    np.testing.assert_allclose(np.delete(w, 11, axis=1), 1.0)
    np.testing.assert_allclose(edge_weights(np.full((6, 7, 8), 3.0), 3), 1.0)
    with pytest.raises(ValueError, match="kappa"):
        edge_weights(m, 2, kappa=0.0)
    with pytest.raises(ValueError, match="w_min"):
        edge_weights(m, 2, w_min=1.5)


def _state(weighted: bool, w=None, L=2, shape=(10, 12), seed=0):
    rng = np.random.default_rng(seed)
    A = rng.uniform(0.1, 1.0, (15, L))
    M0 = rng.uniform(0.0, 1.0, (L,) + shape)
    Y = np.tensordot(A, M0, axes=1) + 0.05 * rng.standard_normal((15,) + shape)
    aty = np.tensordot(A.T, Y, axes=1)
    yty = np.sum(Y * Y, axis=0)
    lay = StateLayout(L, len(shape), "tv", weighted=weighted)
    return lay, initial_state(aty, yty, M0, lay, weight=w), A.T @ A


def test_unit_weights_reproduce_plain_tv_exactly():
    lay0, S0, AtA = _state(False)
    lay1, S1, _ = _state(True, np.ones((10, 12)))
    assert lay1.n_channels == lay0.n_channels + 1
    n0 = lay0.n_channels
    # the added channel is the last one: every other channel keeps its position
    np.testing.assert_array_equal(S1[:n0], S0)
    for _ in range(5):
        o0 = admm_iteration(S0, layout=lay0, AtA=AtA, lam=0.3, rho=0.5, rho_next=0.5)
        o1 = admm_iteration(S1, layout=lay1, AtA=AtA, lam=0.3, rho=0.5, rho_next=0.5)
        np.testing.assert_array_equal(o1[:n0], o0[:n0])
        np.testing.assert_array_equal(o1[n0 + 1 :], o0[n0:])  # residual channels
        np.testing.assert_array_equal(o1[lay1.slices["w"]], 1.0)
        S0, S1 = o0[:n0], o1[: lay1.n_channels]


def test_weight_scales_the_shrink_threshold():
    """U = shrink(∇X + D, λ w / ρ): w = 0 leaves ∇X + D unshrunk, w = 1 is plain TV."""
    w = np.ones((10, 12))
    w[:, :6] = 0.0
    lay, S, AtA = _state(True, w)
    out = admm_iteration(S, layout=lay, AtA=AtA, lam=5.0, rho=0.5, rho_next=0.5)
    sl = lay.slices
    X = out[sl["X"]]
    U = out[sl["U"]].reshape((2, 2, 10, 12))
    gX = gradient(X, 2)  # D was 0, so U = shrink(∇X, λ w / ρ)
    np.testing.assert_allclose(U[..., :6], gX[..., :6])
    # λ/ρ = 10 is far above any gradient of fractions: everything shrunk to 0 where w = 1
    np.testing.assert_array_equal(U[..., 6:], 0.0)


def test_rum_params_prior_validation():
    assert RumParams(prior="guided-tv").prior == "guided-tv"
    with pytest.raises(ValueError, match="prior"):
        RumParams(prior="tgv")
    with pytest.raises(ValueError, match="prior"):
        RumParams(method="rum-pnp", prior="guided-tv")
    with pytest.raises(ValueError, match="guide_kappa"):
        RumParams(prior="guided-tv", guide_kappa=0.0)
    lay = StateLayout(2, 2, "tv", weighted=True)
    with pytest.raises(ValueError, match="weight"):
        initial_state(np.zeros((2, 4, 4)), np.zeros((4, 4)), np.ones((2, 4, 4)), lay)


def test_solvers_carry_the_guide_weights():
    """Regression (issue 14): the weight channel must reach the iterations. A merge once
    dropped it, so ``prior="guided-tv"`` ran plain TV with its 5x larger λ (19.9 dB vs 24.5)."""
    from bigxanes.api import unmix
    from bigxanes.kernels.pass1 import Pass1Layout, pass1_block, state_from_pass1
    from bigxanes.simulate import simulate_to_arrays

    sim = simulate_to_arrays("particles", (24, 24), 2, 7.0, seed=0)
    params = RumParams(prior="guided-tv", guide_kappa=0.05)
    layout = params.state_layout(2, 2)
    assert layout.weighted and not RumParams().state_layout(2, 2).weighted
    p1 = Pass1Layout(2)
    A = sim.references
    P = pass1_block(sim.stack, layout=p1, A=A, energy=sim.energy)
    S = state_from_pass1(P, p1=p1, layout=layout, scale=2.0, dtype=np.float64, kappa=0.05)
    m = P[p1.slices["M0"]].sum(axis=0) / 2.0
    np.testing.assert_allclose(S[layout.slices["w"]][0], edge_weights(m, 2, kappa=0.05))
    assert S[layout.slices["w"]].min() < 0.5  # the particles' outlines are edges
    # same λ: guided TV must differ from plain TV (and keep more contrast at edges)
    kw = dict(method="rum-tv", lam=0.05, max_iter=30, energy=sim.energy)
    X_tv = unmix(sim.stack, A, **kw)["fraction_unmasked"].values
    X_g = unmix(sim.stack, A, prior="guided-tv", **kw)["fraction_unmasked"].values
    assert np.abs(X_tv - X_g).max() > 1e-2
