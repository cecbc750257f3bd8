"""Simulation from real reference spectra: the cathode layout, thickness variation, energy
shifts and the real reference sets (../shared/data; those tests skip when it is absent)."""

from __future__ import annotations

import numpy as np
import pytest

from bigxanes.phantoms import make_phantom
from bigxanes.simulate import shifted_stack, simulate, simulate_to_arrays
from bigxanes.spectra_model import model_references, real_references, shared_data_dir

DATA = shared_data_dir()
needs_data = pytest.mark.skipif(
    DATA is None or not (DATA / "ni_k_edge_refs").is_dir(),
    reason="shared data folder not found (set BIGXANES_SHARED_DATA)",
)


def test_cathode_layout_collector_cracks_and_touching_particles():
    X, s = make_phantom("cathode", (96, 96), 2, seed=2)
    # current collector: the last columns hold no active element
    assert s[:, -4:].max() < 0.011
    fg = s > 0.1
    assert 0.25 < fg.mean() < 0.8
    # cracks: thin no-material lines inside particles, i.e. foreground pixels with a
    # low-s pixel between them along some line: count pixels with s < 0.07 whose two
    # neighbours (along x or y) are both thick
    thin = s < 0.07
    both_x = (s[:, :-2] > 0.3) & (s[:, 2:] > 0.3) & thin[:, 1:-1]
    both_y = (s[:-2] > 0.3) & (s[2:] > 0.3) & thin[1:-1]
    assert both_x.sum() + both_y.sum() > 10
    # the state jumps across cracks: large fraction steps between foreground neighbours exist
    # while most foreground neighbours differ little (piecewise smooth)
    d = np.abs(np.diff(X[1], axis=1))[fg[:, 1:] & fg[:, :-1]]
    assert np.median(d) < 0.05 and d.max() > 0.2


def test_cathode_3d_simplex():
    X, s = make_phantom("cathode", (16, 32, 32), 3, seed=0)
    np.testing.assert_allclose(X.sum(axis=0), 1.0, atol=1e-12)
    assert np.all(X >= 0) and (s > 0.1).mean() > 0.1


def test_thickness_variation_multiplies_the_scale():
    a = simulate_to_arrays("wedge", (48, 48), 2, sigma=0.0, seed=4)
    b = simulate_to_arrays("wedge", (48, 48), 2, sigma=0.0, seed=4, thickness=0.3)
    ratio = b.scale / a.scale
    assert ratio.min() == pytest.approx(0.7, abs=1e-9) or ratio.max() == pytest.approx(1.3)
    assert 0.7 - 1e-9 <= ratio.min() and ratio.max() <= 1.3 + 1e-9
    np.testing.assert_array_equal(a.fraction, b.fraction)
    # smooth: neighbouring ratios differ by far less than the range
    assert np.abs(np.diff(ratio, axis=0)).max() < 0.1 * (ratio.max() - ratio.min())
    with pytest.raises(ValueError, match="thickness"):
        simulate_to_arrays("wedge", (16, 16), 2, thickness=1.5)


def test_energy_shift_is_an_exact_shift_of_the_references():
    E, A, _ = model_references(2)
    M = np.array([[1.0, 0.0, 0.3], [0.0, 2.0, 0.7]])
    y = shifted_stack(E, A, M, np.array([0.0, 1.5, -0.8]))
    np.testing.assert_allclose(y[:, 0], A[:, 0])
    np.testing.assert_allclose(y[:, 1], 2.0 * np.interp(E - 1.5, E, A[:, 1]))
    expect = 0.3 * np.interp(E + 0.8, E, A[:, 0]) + 0.7 * np.interp(E + 0.8, E, A[:, 1])
    np.testing.assert_allclose(y[:, 2], expect)
    r = simulate_to_arrays("particles", (32, 32), 2, sigma=0.0, seed=0, energy_shift=0.5)
    flat = np.einsum("tl,lyx,yx->tyx", r.references, r.fraction, r.scale)
    assert 0 < np.abs(r.clean - flat).max() < 0.2 * flat.max()
    assert r.attrs["energy_shift_ev"] == 0.5


@needs_data
@pytest.mark.parametrize(
    ("name", "L"), [("ni", 2), ("ni", 3), ("fe-l3", 2), ("mn", 2), ("mn", 5), ("fe-k", 3)]
)
def test_real_reference_sets(name, L):
    E, A, names = real_references(name, L)
    if name in ("ni", "mn", "fe-k"):  # edge-step normalized: pre-edge ~0, post-edge ~1
        assert np.all(np.abs(A[:5]) < 0.1) and np.all(np.abs(A[-5:].mean(axis=0) - 1) < 0.2)
    assert A.shape == (E.size, L) and len(names) == L and np.all(np.isfinite(A))
    assert np.linalg.matrix_rank(A) == L
    ds = simulate("cathode", (24, 24), sigma=3.0, seed=1, references=(E, A, names))
    assert list(ds["component"].values) == names
    with pytest.raises(ValueError, match="states"):
        real_references(name, 6)


@needs_data
def test_ni_references_are_edge_normalized_and_ordered():
    E, A, names = real_references("ni", 3)
    assert names == ["Ni2+", "Ni3+", "Ni0"]
    assert np.all(np.abs(A[E < 8300]) < 0.1)  # pre-edge ~ 0
    assert np.all(np.abs(A[E > 8500].mean(axis=0) - 1.0) < 0.15)  # post-edge ~ 1
    # edges: Ni0 < Ni2+ < Ni3+ (first crossing of 0.5)
    e50 = [E[np.argmax(A[:, j] >= 0.5)] for j in range(3)]
    assert e50[2] < e50[0] <= e50[1]
