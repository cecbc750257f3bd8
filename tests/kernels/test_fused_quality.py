"""The compiled noise σ̂ (second differences, MAD) equals the NumPy reference."""

from __future__ import annotations

import numpy as np
import pytest

from bigxanes.kernels.fused_quality import noise_sigma_d2_fused
from bigxanes.kernels.quality import noise_sigma_d2


@pytest.mark.parametrize("T", [3, 4, 7, 100, 101])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_equals_reference_with_nan_and_odd_shapes(T, dtype):
    rng = np.random.default_rng(T)
    Y = (rng.standard_normal((T, 13, 37)) * rng.uniform(0.01, 2.0, (1, 13, 37))).astype(dtype)
    Y[:, 2, 3] = np.cumsum(np.ones(T))  # a noiseless ramp: σ̂ 0
    Y[T // 2, 5, 7] = np.nan
    Y[0, 6, 1] = np.inf
    ref = noise_sigma_d2(Y)
    got = noise_sigma_d2_fused(Y)
    assert got.shape == ref.shape == (13, 37)
    assert np.array_equal(np.isnan(got), np.isnan(ref)) and np.isnan(got[5, 7])
    # float32: the reference differences in float32, the kernel in float64 (round-off ~1e-7)
    tol = 1e-12 if dtype == np.float64 else 1e-6
    np.testing.assert_allclose(got, ref, rtol=tol, atol=tol)
    assert got[2, 3] == 0.0


def test_fewer_than_three_energies_and_independent_of_threads():
    assert np.all(noise_sigma_d2_fused(np.ones((2, 4, 4))) == 0)
    import numba

    Y = np.random.default_rng(1).standard_normal((50, 3000))
    a = noise_sigma_d2_fused(Y)
    n = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        b = noise_sigma_d2_fused(Y)
    finally:
        numba.set_num_threads(n)
    assert np.array_equal(a, b)
