"""White-line kernel and Edge-50 without references: known peak and edge positions."""

from __future__ import annotations

import numpy as np

import bigxanes as bx
from bigxanes.kernels.whiteline import white_line


def _spectra(e, peaks, heights, width=4.0, edge=None):
    """Arctan edge + Gaussian white line at known energies, one spectrum per column."""
    edge = peaks - 6.0 if edge is None else edge
    step = 0.5 + np.arctan((e[:, None] - edge[None]) / 1.5) / np.pi
    line = heights[None] * np.exp(-0.5 * ((e[:, None] - peaks[None]) / width) ** 2)
    return step + line


def test_peak_energy_and_height_recovered_off_grid():
    e = np.arange(8300.0, 8420.0, 1.0)
    rng = np.random.default_rng(0)
    peaks = rng.uniform(8340.0, 8380.0, 50)
    heights = rng.uniform(0.3, 1.0, 50)
    y = _spectra(e, peaks, heights)
    ep, hp = white_line(e, y.reshape(e.size, 5, 10), half_width=2)
    # the true maximum of step + line (the edge's slope moves it off the Gaussian's centre)
    fine = [np.linspace(p - 3, p + 3, 6001) for p in peaks]
    curves = [
        _spectra(f, np.array([p]), np.array([hh]))[:, 0]
        for f, p, hh in zip(fine, peaks, heights, strict=True)
    ]
    truth_e = np.array([f[np.argmax(c)] for f, c in zip(fine, curves, strict=False)])
    truth_h = np.array([c.max() for c in curves])
    assert ep.shape == (5, 10)
    np.testing.assert_allclose(ep.ravel(), truth_e, atol=0.1)  # 1-eV grid: sub-grid precision
    np.testing.assert_allclose(hp.ravel(), truth_h, atol=0.01)
    grid_err = np.abs(e[np.argmax(y, axis=0)] - truth_e)
    assert grid_err.mean() > 0.15  # the fit does better than the sample maximum


def test_window_and_nan():
    e = np.arange(0.0, 100.0, 1.0)
    y = np.exp(-0.5 * ((e - 20.3) / 3) ** 2) + 2 * np.exp(-0.5 * ((e - 70.6) / 3) ** 2)
    y = np.stack([y, np.full_like(y, np.nan)], axis=1)
    ep, hp = white_line(e, y, window=(0.0, 50.0))
    assert abs(ep[0] - 20.3) < 0.05 and abs(hp[0] - 1.0) < 0.02
    assert np.isnan(ep[1]) and np.isnan(hp[1])
    ep, _ = white_line(e, y)
    assert abs(ep[0] - 70.6) < 0.05


def test_edge50_without_references_finds_known_edges():
    e = np.arange(8300.0, 8420.0, 0.5)
    edges = np.linspace(8340.0, 8352.0, 24)
    y = _spectra(e, edges + 8.0, np.full(24, 0.4), edge=edges)
    ds = bx.edge50(y.reshape(e.size, 4, 6), None, energy=e)
    got = ds["edge50"].values.ravel()
    # the arctan step reaches 0.5 of its edge step at its centre; the normalization's post-edge
    # line (white line included) moves it by < 1 eV
    assert np.all(np.isfinite(got))
    np.testing.assert_allclose(got, edges, atol=1.0)
    assert np.corrcoef(got, edges)[0, 1] > 0.999
