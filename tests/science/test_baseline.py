"""Pre-edge baseline removal: a per-pixel flat background no longer biases the fractions."""

import numpy as np
import pytest

from bigxanes import api
from bigxanes.baseline import pre_edge_window, subtract_pre_edge
from bigxanes.metrics import foreground_mask, rmse_foreground
from bigxanes.simulate import simulate_to_arrays


@pytest.fixture(scope="module")
def offset_sim():
    sim = simulate_to_arrays("particles", (32, 32), 2, sigma=0.0, seed=5)
    rng = np.random.default_rng(0)
    offset = rng.uniform(0.5, 1.5, sim.scale.shape)  # background from other elements
    return sim, sim.stack + offset[None]


def test_pre_edge_window_below_the_edge(offset_sim):
    sim, _ = offset_sim
    w = pre_edge_window(sim.energy, sim.references)
    assert w.sum() >= 3 and sim.energy[w].max() < 8345.0


def test_subtraction_is_linear_and_removes_offsets(offset_sim):
    sim, Y = offset_sim
    w = pre_edge_window(sim.energy, sim.references)
    np.testing.assert_allclose(subtract_pre_edge(Y, w), subtract_pre_edge(sim.stack, w), atol=1e-12)


@pytest.mark.parametrize("method", ["lcf", "rum-tv"])
def test_fractions_with_offsets_need_the_baseline(offset_sim, method):
    sim, Y = offset_sim
    fg = foreground_mask(sim.scale)
    kw = {"tol": 1e-7, "max_iter": 300} if method == "rum-tv" else {}
    good = api.unmix(Y, sim.references, energy=sim.energy, method=method, **kw)
    bad = api.unmix(Y, sim.references, energy=sim.energy, method=method, baseline="none", **kw)
    assert good.attrs["baseline"] == "pre-edge"
    assert rmse_foreground(good["fraction_unmasked"].values, sim.fraction, fg) < 1e-3
    assert rmse_foreground(bad["fraction_unmasked"].values, sim.fraction, fg) > 0.05


def test_no_pre_edge_energies_is_a_clear_error(offset_sim):
    sim, Y = offset_sim
    keep = sim.energy > 8343.0
    with pytest.raises(ValueError, match="below the edge"):
        api.lcf(Y[keep], sim.references[keep], energy=sim.energy[keep])
    api.lcf(Y[keep], sim.references[keep], energy=sim.energy[keep], baseline="none")


def test_pre_edge_window_from_data_stays_below_the_data_edge():
    from bigxanes.baseline import pre_edge_window, pre_edge_window_from_data
    from bigxanes.spectra_model import xanes_spectrum

    E = np.arange(7080.0, 7200.01, 0.5)
    refs = np.c_[xanes_spectrum(E, 7124.0), xanes_spectrum(E, 7126.0)]
    rng = np.random.default_rng(0)
    mean = 0.3 + 0.8 * xanes_spectrum(E, 7119.0) + rng.normal(0, 0.005, E.size)
    old = pre_edge_window(E, refs)
    win, e0, desc = pre_edge_window_from_data(E, mean, refs)
    assert abs(e0 - 7119.0) <= 1.0
    assert E[old].max() > 7117.0  # the references' window reaches into the data's rising edge
    assert E[win].max() < 7115.0 and win.sum() >= 3
    assert desc.startswith("pre-edge window 7080.0-") and "data edge" in desc
    win2, e02, _ = pre_edge_window_from_data(E, 0.8 * xanes_spectrum(E, 7130.0), refs)
    assert abs(e02 - float(E[pre_edge_window(E, refs)].max() + 5.5)) < 2.0  # refs' edge lower
    with pytest.raises(ValueError, match="--baseline none"):
        pre_edge_window_from_data(E[E > 7116], mean[E > 7116])
