"""Bad input raises ValueError naming the problem."""

import numpy as np
import pytest
import xarray as xr

from bigxanes import api
from bigxanes.simulate import simulate, simulate_to_arrays


@pytest.fixture(scope="module")
def sim():
    return simulate_to_arrays("particles", (16, 16), 2, sigma=1.0, seed=0)


def test_energy_count_differs(sim):
    with pytest.raises(ValueError, match="energies given but the stack has"):
        api.lcf(sim.stack, sim.references, energy=sim.energy[:-1])


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nonfinite_stack(sim, bad):
    Y = sim.stack.copy()
    Y[3, 2, 5] = bad
    with pytest.raises(ValueError, match=r"NaN or Inf in 1 pixel\(s\) \(first at \(2, 5\)\)"):
        api.unmix(
            Y, sim.references, energy=sim.energy, method="rum-tv", max_iter=2, nan_policy="raise"
        )
    # masked by default (as the engine and the CLI), and the input is not modified
    for ds in (
        api.lcf(Y, sim.references, energy=sim.energy),
        api.unmix(Y, sim.references, energy=sim.energy, method="rum-tv", max_iter=2),
    ):
        assert not ds["mask"].values[2, 5]
        assert ds.attrs["n_nonfinite"] == 1 and ds.attrs["nan_policy"] == "mask"
        assert np.all(np.isfinite(ds["fraction_unmasked"].values))
    assert not np.isfinite(Y[3, 2, 5])


def test_unknown_nan_policy(sim):
    with pytest.raises(ValueError, match="nan_policy must be one of 'mask', 'raise'"):
        api.lcf(sim.stack, sim.references, energy=sim.energy, nan_policy="drop")


def test_nonfinite_references(sim):
    A = sim.references.copy()
    A[10, 0] = np.nan
    with pytest.raises(ValueError, match="references contain NaN or Inf"):
        api.lcf(sim.stack, A, energy=sim.energy)


def test_references_not_covering(sim):
    e = sim.energy
    refs = xr.DataArray(
        sim.references[10:],
        dims=("energy", "component"),
        coords={"energy": e[10:], "component": ["a", "b"]},
    )
    with pytest.raises(ValueError, match="cover"):
        api.lcf(sim.stack, refs, energy=e)


def test_more_references_than_energies(sim):
    Y = sim.stack[:3]
    A = np.random.default_rng(0).random((3, 4))
    with pytest.raises(ValueError, match="only 3 energies"):
        api.lcf(Y, A, energy=sim.energy[:3])


def test_rank_deficient_references(sim):
    A = np.column_stack(
        [
            sim.references[:, 0],
            sim.references[:, 1],
            0.5 * (sim.references[:, 0] + sim.references[:, 1]),
        ]
    )
    with pytest.raises(ValueError, match="linearly dependent|rank"):
        api.lcf(sim.stack, A, energy=sim.energy)


@pytest.mark.parametrize("sigma", [0.0, -1.0])
def test_nonpositive_noise_sigma(sim, sigma):
    with pytest.raises(ValueError, match="noise_sigma must be a positive number"):
        api.unmix(sim.stack, sim.references, energy=sim.energy, noise_sigma=sigma)


def test_negative_simulation_sigma():
    with pytest.raises(ValueError, match="sigma"):
        simulate("particles", (16, 16), 2, sigma=-1.0)


@pytest.mark.parametrize(
    "kw,match",
    [
        ({"rho": 0}, "rho"),
        ({"lam": -1.0}, "lam"),
        ({"method": "nope"}, "unknown method"),
        ({"denoiser": "nope"}, "unknown denoiser"),
        ({"gamma": 0.5}, "gamma"),
    ],
)
def test_bad_parameters(sim, kw, match):
    with pytest.raises(ValueError, match=match):
        api.unmix(sim.stack, sim.references, energy=sim.energy, **kw)


def test_keV_stack_energies_are_converted(sim):
    ds_ev = api.lcf(sim.stack, sim.references, energy=sim.energy)
    ds_kev = api.lcf(sim.stack, sim.references, energy=sim.energy / 1000.0)
    np.testing.assert_allclose(
        ds_ev["fraction_unmasked"].values, ds_kev["fraction_unmasked"].values
    )
    assert ds_kev.attrs["energy_min"] == pytest.approx(sim.energy[0])
