"""Energy shift of references fitted on the data (stack simulated from real Athena references)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import xarray as xr
from prj_sim import ENERGY, prj_library, simulate

from bigxanes.eshift import (
    ShiftFit,
    fit_energy_shifts,
    parse_energy_shift,
    shift_references,
    shift_warning,
)
from bigxanes.kernels.lcf import fractions_from_coefficients, nnls_coefficients
from bigxanes.spectra_model import xanes_spectrum

LIB = prj_library()
needs_prj = pytest.mark.skipif(LIB is None, reason="Athena project files (shared data) not found")
PAIR = ["Hematite", "Olivine (Fo80)"]


def _pair():
    ef, R, names = LIB
    return ef, R[:, [names.index(n) for n in PAIR]]


def _fraction_rmse(Y, A, f_true):
    M = nnls_coefficients(A.T @ A, A.T @ Y)
    f, _ = fractions_from_coefficients(M)
    return float(np.sqrt(np.mean((f - f_true) ** 2)))


@needs_prj
def test_shifts_recovered_and_fractions_improve():
    ef, R = _pair()
    true = np.array([-3.0, 2.0])
    Y, f_true = simulate(ef, R, true)
    fit = fit_energy_shifts(ENERGY, Y.mean(axis=1), ef, R)
    assert np.all(np.abs(fit.shifts - true) < 0.3), fit.shifts
    assert fit.misfit < 0.5 * fit.misfit_unshifted
    rmse_none = _fraction_rmse(Y, shift_references(ef, R, 0.0, ENERGY), f_true)
    rmse_auto = _fraction_rmse(Y, shift_references(ef, R, fit.shifts, ENERGY), f_true)
    assert rmse_auto <= 0.5 * rmse_none, (rmse_none, rmse_auto)
    msg = shift_warning(fit, PAIR)
    assert msg is not None and "--energy-shift auto" in msg and "Hematite -" in msg


@needs_prj
def test_no_shift_present_fits_zero_and_no_warning():
    ef, R = _pair()
    Y, _ = simulate(ef, R, [0.0, 0.0], seed=1)
    fit = fit_energy_shifts(ENERGY, Y.mean(axis=1), ef, R)
    assert np.all(np.abs(fit.shifts) < 0.2), fit.shifts
    assert shift_warning(fit, PAIR) is None


@needs_prj
def test_cluster_means_share_the_shifts():
    ef, R = _pair()
    Y, f = simulate(ef, R, [-3.0, 2.0], seed=2)
    groups = [f[0] > 0.5, f[0] <= 0.5]  # two "clusters" with different mixtures
    means = np.stack([Y[:, g].mean(axis=1) for g in groups], axis=1)
    fit = fit_energy_shifts(ENERGY, means, ef, R)
    assert fit.coefficients.shape == (2, 2)
    assert np.all(np.abs(fit.shifts - [-3.0, 2.0]) < 0.3), fit.shifts


def test_synthetic_bounds_and_unused_reference():
    E = np.linspace(7090, 7170, 161)
    ef = np.linspace(7060, 7200, 1401)
    R = np.c_[xanes_spectrum(ef, 7120.0), xanes_spectrum(ef, 7126.0, white_line_height=1.2)]
    y = shift_references(ef, R[:, :1], -4.0, E)[:, 0]  # only the first reference is present
    fit = fit_energy_shifts(E, y, ef, R, bounds=(-6, 6))
    assert abs(fit.shifts[0] + 4.0) < 0.05 and fit.shifts[1] == 0.0
    assert fit.coefficients[1, 0] == 0.0
    tight = fit_energy_shifts(E, y, ef, R, bounds=(-2, 2))
    assert tight.shifts[0] >= -2.0 - 1e-9  # bounded
    with pytest.raises(ValueError, match="--energy-range"):
        fit_energy_shifts(np.linspace(7000, 7100, 11), np.ones(11), ef, R)


def test_warning_rule_thresholds():
    small = ShiftFit(np.array([0.5, -0.4]), np.ones((2, 1)), 0.09, 0.1)  # 10 % gain
    assert shift_warning(small) is None
    assert shift_warning(ShiftFit(np.array([1.5, 0.0]), np.ones((2, 1)), 0.099, 0.1))
    assert shift_warning(ShiftFit(np.array([0.5, 0.0]), np.ones((2, 1)), 0.07, 0.1))


def test_parse_energy_shift():
    assert parse_energy_shift("AUTO", 2) == "auto" and parse_energy_shift("none", 3) == "none"
    np.testing.assert_array_equal(parse_energy_shift("-3,2", 2), [-3.0, 2.0])
    np.testing.assert_array_equal(parse_energy_shift("-3", 2), [-3.0, -3.0])
    with pytest.raises(ValueError, match="--energy-shift"):
        parse_energy_shift("-3,2,1", 2)
    with pytest.raises(ValueError, match="--energy-shift"):
        parse_energy_shift("left", 2)


def test_auto_shift_at_the_bound_warns_through_the_api():
    """A reference 15 eV off (beyond the ±10 eV bounds): applied at the bound, with a warning."""
    from bigxanes import api

    E = np.arange(7090.0, 7170.01, 1.0)
    ef = np.arange(7050.0, 7210.01, 0.1)
    R = np.c_[xanes_spectrum(ef, 7120.0), xanes_spectrum(ef, 7132.0, white_line_height=1.2)]
    A = shift_references(ef, R, [-15.0, 0.0], E)
    f = np.linspace(0.2, 0.8, 36)
    Y = (A @ np.stack([f, 1 - f])).reshape(E.size, 6, 6)
    ref = xr.DataArray(
        R, dims=("energy", "component"), coords={"energy": ef, "component": ["a", "b"]}
    )
    with pytest.warns(UserWarning, match="at the -10..10 eV bound \\(a -10.0 eV\\)"):
        ds = api.lcf(Y, ref, energy=E, energy_shift="auto")
    assert json.loads(ds.attrs["energy_shift"])[0] == pytest.approx(-10.0, abs=0.01)
