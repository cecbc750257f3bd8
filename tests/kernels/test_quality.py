"""Fit-quality kernels (issue 13 item 3): σ̂ from second differences, the block-additive χ²
histogram and its summary."""

from __future__ import annotations

import numpy as np

from bigxanes.kernels.quality import (
    CHI2_WARN,
    chi2_from_rms,
    chi2_histogram,
    fit_quality_from_histogram,
    noise_sigma_d2,
)


def test_noise_sigma_from_second_differences_ignores_an_edge():
    rng = np.random.default_rng(0)
    E = np.linspace(-20, 40, 100)
    clean = 1.0 + np.tanh(E / 1.5)[:, None] * rng.uniform(0.5, 2.0, size=(1, 3000))
    sigma = 0.03
    Y = clean + rng.normal(scale=sigma, size=clean.shape)
    s = noise_sigma_d2(Y)
    assert s.shape == (3000,)
    # an edge 1.5 eV wide on a 0.6 eV grid, steps up to 4 OD adds curvature on a few energies:
    # the MAD keeps the estimate within 8 % (measured +5 %: conservative, chi2 slightly low)
    assert 0.97 < np.median(s) / sigma < 1.08
    flat = 0.01 * E[:, None] + rng.normal(scale=sigma, size=(E.size, 3000))  # no edge
    assert abs(np.median(noise_sigma_d2(flat)) / sigma - 1.0) < 0.03
    # a constant baseline cancels; a NaN spectrum gives NaN; too few energies give 0
    np.testing.assert_allclose(noise_sigma_d2(Y + 5.0), s, rtol=1e-9, atol=1e-12)
    Y[:, 0] = np.nan
    assert np.isnan(noise_sigma_d2(Y)[0])
    assert np.all(noise_sigma_d2(Y[:2]) == 0)


def test_chi2_from_rms_is_one_for_a_fit_at_the_noise_level():
    rng = np.random.default_rng(1)
    T, L, sigma = 80, 2, 0.1
    r = rng.normal(scale=sigma, size=(T - L, 5000))  # T - L free residual components
    rms = np.sqrt(np.sum(r * r, axis=0) / T)
    chi2 = chi2_from_rms(rms, sigma, T, L)
    assert abs(np.median(chi2) - 1.0) < 0.05


def test_chi2_histogram_summary_is_block_additive_and_close_to_exact():
    rng = np.random.default_rng(2)
    c = rng.lognormal(mean=0.5, sigma=1.0, size=(64, 64))
    mask = rng.random((64, 64)) > 0.3
    c[0, 0] = np.nan
    whole = chi2_histogram(c, mask)
    parts = sum(chi2_histogram(c[i : i + 16], mask[i : i + 16]) for i in range(0, 64, 16))
    assert np.array_equal(whole, parts)
    q = fit_quality_from_histogram(whole)
    ref = c[mask & np.isfinite(c)]
    assert abs(q.chi2_median / np.median(ref) - 1) < 0.025
    assert abs(q.chi2_p90 / np.percentile(ref, 90) - 1) < 0.025
    assert q.frac_bad == np.mean(ref > CHI2_WARN)
    assert q.ok == (np.median(ref) <= CHI2_WARN)
    empty = fit_quality_from_histogram(chi2_histogram(c, np.zeros_like(mask)))
    assert empty.ok and np.isnan(empty.chi2_median)
