"""Tests of bigxanes.nstates (number of chemical states), on inline synthetic XANES data."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

from bigxanes.nstates import estimate_n_states, hysime_noise


def xanes_references(T: int = 100, L: int = 3, shift: float = 2.5) -> np.ndarray:
    """XANES-like spectra (T, L) as correlated as real states: edges ``shift`` eV apart."""
    E = np.linspace(-30.0, 70.0, T)
    refs = []
    for k in range(L):
        c = k * shift
        edge = 0.5 + np.arctan((E - c) / 1.5) / np.pi
        white_line = (0.6 - 0.12 * k) * np.exp(-0.5 * ((E - c - 4.0) / (2.5 + 0.5 * k)) ** 2)
        osc = 0.05 * np.sin((E - c) / (6.0 + k)) * (E > c + 8) * np.exp(-(E - c) / 60.0)
        refs.append(edge + white_line + osc)
    return np.stack(refs, axis=1)


def make_stack(
    L: int, sigma: float, seed: int, shape=(64, 64), shift: float = 2.5, scale: bool = True
):
    rng = np.random.default_rng(seed)
    R = xanes_references(L=L, shift=shift)
    f = np.stack([gaussian_filter(rng.standard_normal(shape), 6.0) for _ in range(L)])
    f = np.exp(6.0 * f / f.std(axis=(1, 2), keepdims=True))
    F = f / f.sum(axis=0)
    g = gaussian_filter(rng.standard_normal(shape), 8.0)
    s = 0.5 + (g - g.min()) / (g.max() - g.min()) if scale else 1.0
    Y = np.einsum("tl,lyx->tyx", R, F) * s
    std = sigma / 255.0 * Y.max()
    return Y + rng.standard_normal(Y.shape) * std, std


@pytest.mark.parametrize("method", ["hysime", "eigengap"])
@pytest.mark.parametrize("L", [2, 3, 4])
@pytest.mark.parametrize("shift", [2.0, 3.0])
def test_number_of_states_sigma1(L, method, shift):
    Y, _ = make_stack(L, 1.0, seed=L, shift=shift)
    res = estimate_n_states(Y, method=method)
    assert res.n == L, (res.n, res.criterion)
    assert res.k.tolist() == list(range(1, 9))
    assert res.criterion.shape == (8,)
    if method == "hysime":
        assert np.argmin(res.criterion) == L - 1
    else:
        assert np.all(res.criterion[:L] > 0) and res.criterion[L] < 0


@pytest.mark.parametrize("method", ["hysime", "eigengap"])
def test_non_centred_counts_L_not_L_minus_1(method):
    # Constant scale: the data lie on an (L-1)-dim affine simplex; centring (a PCA-style
    # covariance) would report L-1 states, but there are L references. The estimate works
    # on the non-centred correlation matrix, which spans L dims.
    for L in (2, 3):
        Y, _ = make_stack(L, 1.0, seed=11 + L, scale=False)
        assert estimate_n_states(Y, method=method).n == L


def test_noise_variance_estimate():
    Y, std = make_stack(3, 3.0, seed=5)
    res = estimate_n_states(Y)
    ratio = np.median(res.noise_variance) / std**2
    assert 0.9 < ratio < 1.1
    # evidence for plotting: signal eigenvalues above noise for the first L only
    assert np.all(res.eigenvalues[:3] > 10 * res.noise_power[:3])
    assert res.eigenvalues[3] < 2 * res.noise_power[3]


def test_hysime_noise_matches_explicit_regression():
    rng = np.random.default_rng(0)
    T, N = 8, 500
    Y = rng.standard_normal((3, N)).T @ rng.standard_normal((3, T))
    Y = Y.T + 0.1 * rng.standard_normal((T, N))
    Rn = hysime_noise(Y @ Y.T / N, N)
    Rn_full = hysime_noise(Y @ Y.T / N, N, full=True)
    dof = N / (N - T + 1)
    resids = []
    for t in range(T):
        others = np.delete(np.arange(T), t)
        beta, *_ = np.linalg.lstsq(Y[others].T, Y[t], rcond=None)
        resids.append(Y[t] - beta @ Y[others])
    resids = np.array(resids)
    np.testing.assert_allclose(np.diag(Rn), dof * np.sum(resids**2, axis=1) / N, rtol=1e-6)
    assert np.count_nonzero(Rn - np.diag(np.diag(Rn))) == 0
    np.testing.assert_allclose(Rn_full, dof * resids @ resids.T / N, rtol=1e-5, atol=1e-10)


def test_dask_streamed_equals_in_memory_and_flat_input():
    Y, _ = make_stack(3, 1.0, seed=7, shape=(40, 36))
    Yd = da.from_array(Y, chunks=(Y.shape[0], 15, 11))
    mem = estimate_n_states(Y)
    chk = estimate_n_states(Yd)
    flat = estimate_n_states(Y.reshape(Y.shape[0], -1))
    assert mem.n == chk.n == flat.n == 3
    np.testing.assert_allclose(mem.eigenvalues[:5], chk.eigenvalues[:5], rtol=1e-8)
    np.testing.assert_allclose(mem.criterion, flat.criterion, rtol=1e-10)


def test_mask_and_errors():
    Y, _ = make_stack(2, 1.0, seed=8)
    mask = np.zeros(Y.shape[1:], bool)
    mask[:, :40] = True
    assert estimate_n_states(Y, mask=mask).n_pixels == mask.sum()
    with pytest.raises(ValueError, match="method"):
        estimate_n_states(Y, method="aic")
    with pytest.raises(ValueError, match="more pixels"):
        estimate_n_states(Y[:, :5, :5])
