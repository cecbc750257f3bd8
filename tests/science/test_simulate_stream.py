"""Block-wise (streaming) simulation: a 3-D stack written one chunk at a time (issue 16)."""

from __future__ import annotations

import tracemalloc

import numpy as np

from bigxanes.phantoms import particles, phantom_block, wedge
from bigxanes.simulate import simulate_to_store


def _whole(name, shape, L, seed, step):
    X = np.zeros((L,) + shape)
    s = np.zeros(shape)
    for z in range(0, shape[0], step):
        for y in range(0, shape[1], step):
            reg = (slice(z, min(z + step, shape[0])), slice(y, min(y + step, shape[1])),
                   slice(0, shape[2]))  # fmt: skip
            X[(slice(None),) + reg], s[reg] = phantom_block(name, shape, L, seed, reg)
    return X, s


def test_block_phantoms_match_the_whole_phantom():
    shape = (20, 24, 28)
    Xw, sw = wedge(shape, 3, 1)
    Xb, sb = _whole("wedge", shape, 3, 1, 7)
    np.testing.assert_array_equal(Xb, Xw)
    np.testing.assert_array_equal(sb, sw)
    Xp, sp = particles(shape, 2, 0)
    Xb, sb = _whole("particles", shape, 2, 0, 8)
    inside = sp > 0.05  # the spheres (background differs by design)
    assert inside.mean() > 0.05
    np.testing.assert_array_equal(sb[inside], sp[inside])
    np.testing.assert_array_equal(Xb[:, inside], Xp[:, inside])
    # background fractions: a function of the position only, any blocking
    Xc, _ = _whole("particles", shape, 2, 0, 5)
    np.testing.assert_array_equal(Xc, Xb)
    np.testing.assert_allclose(Xb.sum(axis=0), 1.0)


def test_simulate_to_store_streams(tmp_path):
    E = np.linspace(8300.0, 8400.0, 20)
    simulate_to_store(tmp_path / "warm.zarr", "particles", (8, 16, 16), 2, energy=E, chunks=8)
    tracemalloc.start()
    try:
        ds = simulate_to_store(tmp_path / "s.zarr", "particles", (40, 64, 64), 2, sigma=3,
                               energy=E, chunks=16)  # fmt: skip
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    nbytes = ds["stack"].nbytes  # 20 energies x 40 x 64 x 64 float32 = 13 MB
    assert peak < nbytes / 4, (peak, nbytes)  # a few blocks in flight, never the stack
    assert ds["stack"].encoding["chunks"] == (20, 16, 16, 16)
    Y = ds["stack"].values.astype(np.float64)
    clean = np.einsum("tl,lzyx->tzyx", ds["references"].values,
                      ds["true_fraction"].values * ds["true_scale"].values)  # fmt: skip
    std = ds.attrs["noise_std"]
    assert std == 3 / 255 * clean.max()
    r = Y - clean
    assert abs(r.std() - std) < 0.02 * std and abs(r.mean()) < 0.01 * std
