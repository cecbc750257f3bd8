"""Compiled pass-1 LCF (kernels/fused_lcf.py) against the NumPy reference kernels (issue 15,
item 4): same moments, NNLS and residuals, on float32 and float64 stacks, with the pre-edge
baseline and NaN/Inf spectra, 2-D and 3-D, independent of the thread count."""

import numba
import numpy as np
import pytest

from bigxanes import api
from bigxanes.kernels.fused_lcf import nnls_coefficients_fused
from bigxanes.kernels.lcf import nnls_coefficients
from bigxanes.kernels.pass1 import Pass1Layout, pass1_block


def _problem(L, spatial, T=16, seed=0):
    rng = np.random.default_rng(seed)
    A = np.abs(rng.standard_normal((T, L))) + np.linspace(0, 1, T)[:, None]
    M = rng.random((L,) + spatial)
    M[0, :2] = 0.0  # pixels on the simplex boundary
    M[:, -1] *= -1.0  # and with no feasible interior solution
    Y = np.tensordot(A, M, axes=1) + 0.02 * rng.standard_normal((T,) + spatial) + 0.3
    return A, Y


@pytest.mark.parametrize("L", [1, 2, 3, 5])
def test_nnls_fused_equals_reference(L):
    A, Y = _problem(L, (4500,), T=30, seed=L)  # three slabs, a partial last one
    AtA, AtY = A.T @ A, A.T @ Y
    ref = nnls_coefficients(AtA, AtY)
    got = nnls_coefficients_fused(AtA, AtY)
    np.testing.assert_allclose(got, ref, rtol=1e-10, atol=1e-12 * np.abs(ref).max())
    assert got.min() >= 0.0


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("variant", ["nnls", "lstsq", "sum-to-one"])
@pytest.mark.parametrize("spatial", [(13, 11), (3, 7, 5)])
@pytest.mark.parametrize("pre_edge", [False, True])
def test_pass1_numba_equals_numpy(dtype, variant, spatial, pre_edge):
    L = 3
    A, Y = _problem(L, spatial, seed=1)
    Y = Y.astype(dtype)
    flat = Y.reshape(Y.shape[0], -1)
    flat[2, 1] = np.nan
    flat[:, -1] = np.inf
    window = None
    if pre_edge:
        window = np.zeros(Y.shape[0], bool)
        window[:4] = True
        A = A - A[:4].mean(axis=0)
    p1 = Pass1Layout(L, variant)
    kw = dict(layout=p1, A=A, energy=np.arange(Y.shape[0], dtype=float), baseline=window)
    ref = pass1_block(Y, backend="numpy", **kw)
    got = pass1_block(Y, backend="numba", **kw)
    assert got.dtype == ref.dtype == np.float64
    # float64: to round-off; float32: the reference subtracts the baseline in float32 first
    tol = 1e-12 if dtype == np.float64 else 1e-6
    np.testing.assert_allclose(got, ref, rtol=tol, atol=tol * np.nanmax(np.abs(ref)))
    sl = p1.slices
    assert got[sl["bad"]].sum() == 2


def test_pass1_numba_raise_policy_names_the_count():
    A, Y = _problem(2, (6, 6))
    Y[0, 1, 1] = np.nan
    kw = dict(layout=Pass1Layout(2), A=A, energy=np.arange(16.0), nan_policy="raise")
    for backend in ("numpy", "numba"):
        with pytest.raises(ValueError, match="1 spectra with NaN/Inf"):
            pass1_block(Y, backend=backend, **kw)


def test_pass1_numba_independent_of_threads():
    A, Y = _problem(2, (70, 65))  # 4550 px: three slabs
    kw = dict(layout=Pass1Layout(2), A=A, energy=np.arange(16.0), backend="numba")
    old = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = pass1_block(Y.astype(np.float32), **kw)
        numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
        many = pass1_block(Y.astype(np.float32), **kw)
    finally:
        numba.set_num_threads(old)
    np.testing.assert_array_equal(one, many)


def test_unknown_backend_is_one_line_error():
    A, Y = _problem(2, (4, 4))
    with pytest.raises(ValueError, match="unknown backend 'gpu'"):
        pass1_block(Y, layout=Pass1Layout(2), A=A, energy=np.arange(16.0), backend="gpu")


@pytest.mark.parametrize("baseline", ["none", "pre-edge"])
def test_lcf_float32_stack_matches_float64(baseline):
    """A float32 stack is fitted from its own values (read in place, accumulated in float64):
    the maps equal those of the same values given as float64 to 1e-5."""
    A, Y = _problem(2, (24, 24), T=20, seed=4)
    energy = np.linspace(7100.0, 7150.0, 20)
    y32 = Y.astype(np.float32)
    d32 = api.lcf(y32, A, energy=energy, baseline=baseline)
    d64 = api.lcf(y32.astype(np.float64), A, energy=energy, baseline=baseline)
    for k in ("fraction_unmasked", "scale", "residual_rms"):
        a, b = d32[k].values, d64[k].values
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5 * np.nanmax(np.abs(b)))
    assert (d32["mask"].values == d64["mask"].values).all()
