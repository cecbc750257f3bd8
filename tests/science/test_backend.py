"""The RUM iteration backend (``RumParams.backend``) and the residual schedule
(``RumParams.residual_every``) through the drivers.

- numba (fused float32) vs numpy (float64 reference) on small RUM-TV and RUM-PnP(tv) runs:
  fractions within 1e-4;
- the numba run gives the same numbers, bit for bit, on 1 and 2 numba threads;
- residuals every k iterations: the same state as every iteration (the ρ rule reads the same
  iterations), history entries only at the k-th, the ρ rule's and the last iterations;
- the CLI flag ``--backend`` reaches the run, a bad value exits 2 with one line.
"""

from __future__ import annotations

import json

import numba
import numpy as np
import pytest
import xarray as xr

import bigxanes as bx
from bigxanes.cli import main
from bigxanes.kernels import fused
from bigxanes.rum import History, RumParams, run_admm, wants_residuals
from bigxanes.simulate import simulate


@pytest.fixture(scope="module")
def sim():
    return simulate("particles", (24, 28), 2, sigma=3.0, seed=4)


def _unmix(sim, **kw):
    return bx.unmix(sim["stack"], sim["references"], **kw)


@pytest.mark.parametrize(
    ("method", "kw"),
    [("rum-tv", {"max_iter": 30}), ("rum-pnp", {"max_iter": 15, "denoiser": "tv"})],
)
def test_numba_backend_matches_numpy(sim, method, kw):
    ref = _unmix(sim, method=method, backend="numpy", **kw)
    got = _unmix(sim, method=method, backend="numba", **kw)
    assert json.loads(got.attrs["params"])["backend"] == "numba"
    h_ref, h_got = bx.history_of(ref), bx.history_of(got)
    assert h_ref["iteration"] == h_got["iteration"] and h_ref["rho"] == h_got["rho"]
    np.testing.assert_allclose(h_got["primal"], h_ref["primal"], rtol=1e-3)
    d = np.abs(got["fraction_unmasked"].values - ref["fraction_unmasked"].values)
    assert np.nanmax(d) <= 1e-4, np.nanmax(d)
    # the run did something: the fractions moved away from the LCF start
    assert np.nanmax(np.abs(ref["fraction_unmasked"].values - ref["lcf_fraction"].values)) > 1e-2


@pytest.mark.parametrize("method", ["rum-tv", "rum-pnp"])
def test_numba_backend_independent_of_thread_count(sim, method, monkeypatch):
    monkeypatch.setattr(fused, "PIXELS_PER_THREAD", 1)  # the small image on every thread
    before = numba.get_num_threads()
    results = []
    try:
        for n in sorted({1, 2, numba.config.NUMBA_NUM_THREADS}):
            numba.set_num_threads(n)
            ds = _unmix(sim, method=method, backend="numba", max_iter=8)
            results.append((ds["fraction_unmasked"].values, bx.history_of(ds)["primal"]))
    finally:
        numba.set_num_threads(before)
    for frac, primal in results[1:]:
        assert np.array_equal(frac, results[0][0], equal_nan=True)
        assert primal == results[0][1]


def test_auto_backend_by_image_size(sim):
    from bigxanes.rum import AUTO_NUMBA_PIXELS

    p = RumParams()
    assert p.kernel_backend(AUTO_NUMBA_PIXELS - 1) == "numpy"
    assert p.kernel_backend(AUTO_NUMBA_PIXELS) == "numba"
    assert RumParams(backend="numpy").kernel_backend(10**8) == "numpy"
    assert RumParams(backend="numba").kernel_backend(4) == "numba"
    ds = _unmix(sim, method="rum-tv", max_iter=2)  # 24 x 28: numpy
    assert ds.attrs["kernel_backend"] == "numpy"
    assert json.loads(ds.attrs["params"])["backend"] == "auto"


def test_wants_residuals_schedule():
    p = RumParams(method="rum-tv", max_iter=25, residual_every=4)
    done = [k + 1 for k in range(25) if wants_residuals(p, k)]
    assert done == [4, 8, 10, 12, 16, 20, 24, 25]  # every 4th, the ρ rule's 10th, the last
    p = RumParams(method="rum-pnp", max_iter=11, residual_every=5)
    assert [k + 1 for k in range(11) if wants_residuals(p, k)] == [5, 10, 11]
    assert all(wants_residuals(RumParams(), k) for k in range(7))
    with pytest.raises(ValueError, match="residual_every must be an integer >= 1"):
        RumParams(residual_every=0)
    with pytest.raises(ValueError, match="unknown backend 'cuda'"):
        RumParams(backend="cuda")


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_residual_every_keeps_the_state(sim, backend):
    """Residuals every 4 iterations: the same fractions and ρ path as every iteration; the
    history holds the 4th, 10th (ρ rule) and last iterations."""
    kw = dict(method="rum-tv", backend=backend, max_iter=25, tol=1e-12)
    full = _unmix(sim, **kw)
    sparse = _unmix(sim, residual_every=4, **kw)
    assert np.array_equal(
        full["fraction_unmasked"].values, sparse["fraction_unmasked"].values, equal_nan=True
    )
    hf, hs = bx.history_of(full), bx.history_of(sparse)
    assert hs["iteration"] == [4, 8, 10, 12, 16, 20, 24, 25]
    assert sparse.attrs["n_iterations"] == full.attrs["n_iterations"] == 25
    for it, p in zip(hs["iteration"], hs["primal"], strict=True):
        assert p == hf["primal"][it - 1]
    assert hs["rho_next"] == hf["rho_next"]


def test_run_admm_stops_only_where_residuals_are_computed():
    """A step that reports tiny residuals from the start: with residuals every 3 iterations
    the run stops at the first computed one (iteration 3), the state steps all ran."""
    calls = []

    def step(k, rho, rho_next, residuals):
        calls.append(residuals)
        return (
            dict.fromkeys(
                ("r_scale", "r_simplex", "r_positive", "r_reg", "dual", "data", "reg"), 0.0
            )
            if residuals
            else None
        )

    p = RumParams(method="rum-pnp", max_iter=20, residual_every=3)
    h = run_admm(step, p, 0.1, 100, 2)
    assert calls == [False, False, True]
    assert h.iteration == [3] and h.n_iterations == 3 and h.stop_reason == "tolerance"
    assert isinstance(h, History)


def test_cli_backend_flag(tmp_path, capsys):
    src = tmp_path / "sim.zarr"
    assert main(["simulate", str(src), "--shape", "20,24", "--n-components", "2", "-q"]) == 0
    out = tmp_path / "r.zarr"
    argv = ["unmix", str(src), str(out), "--method", "rum-tv", "--iters", "3", "-q"]
    assert main(argv + ["--backend", "numpy", "--residual-every", "2"]) == 0
    with xr.open_zarr(out, consolidated=False) as ds:
        params = json.loads(ds.attrs["params"])
        assert bx.history_of(ds)["iteration"] == [2, 3]
    assert params["backend"] == "numpy" and params["residual_every"] == 2
    capsys.readouterr()
    assert main(argv + ["--overwrite", "--backend", "cuda"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert "--backend: invalid choice: 'cuda'" in err
