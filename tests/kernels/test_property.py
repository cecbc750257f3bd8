"""Property tests: random shapes, chunkings, 2-4 states, energy orders and NaN placements, LCF
and Edge-50, in memory (bigxanes.api) and on the engine (local scheduler): only our ValueError
ever escapes, fractions are in [0, 1] and sum to 1 where defined, both paths agree."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bigxanes import api
from bigxanes.engine import unmix_store
from bigxanes.store import write_dataset

SETTINGS = settings(
    max_examples=8, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)


@st.composite
def cases(draw):
    ny, nx = draw(st.integers(3, 12)), draw(st.integers(3, 12))
    T = draw(st.integers(8, 16))
    L = draw(st.integers(2, 4))
    tile = (draw(st.integers(2, 12)), draw(st.integers(2, 12)))
    seed = draw(st.integers(0, 2**31 - 1))
    shuffled = draw(st.booleans()) and draw(st.booleans())  # ~25 %
    n_nan = draw(st.integers(0, 4))
    return ny, nx, T, L, tile, seed, shuffled, n_nan


def _data(ny, nx, T, L, seed, shuffled, n_nan):
    rng = np.random.default_rng(seed)
    e = np.linspace(-1, 1, T)
    centers = np.sort(rng.uniform(-0.4, 0.4, L))
    A = np.stack(
        [
            1 / (1 + np.exp(-(e - c) / 0.08))
            + 0.3 * rng.random() * np.exp(-(((e - c - 0.1) / 0.05) ** 2))
            for c in centers
        ],
        1,
    )
    X = rng.dirichlet(np.ones(L), size=ny * nx).T
    s = rng.uniform(0.0, 2.0, ny * nx)
    Y = (A @ (X * s)).reshape(T, ny, nx) + 0.01 * rng.standard_normal((T, ny, nx))
    for _ in range(n_nan):
        Y[rng.integers(T), rng.integers(ny), rng.integers(nx)] = np.nan
    energy = 8333.0 + 20 * e
    if shuffled:
        perm = rng.permutation(T)
        if np.all(np.diff(perm) > 0):
            perm = perm[::-1]
        energy = energy[perm]
    return Y.astype(np.float32), A, energy


def _run(kind, method, Y, A, energy, tile, tmp):
    """(dataset or None, ValueError message or None) for one path."""
    try:
        if kind == "memory":
            stack = xr.DataArray(
                Y, dims=("energy", "y", "x"), coords={"energy": ("energy", energy, {"units": "eV"})}
            )
            fn = api.lcf if method == "lcf" else api.edge50
            return fn(stack, A, nan_policy="mask"), None
        ds = xr.Dataset(
            {"stack": (("energy", "y", "x"), Y), "references": (("energy", "component"), A)},
            coords={
                "energy": ("energy", energy, {"units": "eV"}),
                "component": [f"c{i}" for i in range(A.shape[1])],
            },
        )
        inp = write_dataset(ds, tmp / "in.zarr", chunks=tile)
        out = unmix_store(
            inp,
            tmp / "out.zarr",
            method=method,
            chunks=tile,
            progress=False,
            scheduler="synchronous",
        )
        with xr.open_zarr(out, consolidated=False) as o:
            return o.load(), None
    except ValueError as exc:
        assert str(exc).strip(), "ValueError without a message"
        return None, str(exc)


@pytest.mark.parametrize("method", ["lcf", "edge50"])
@SETTINGS
@given(case=cases())
def test_paths_agree_and_fractions_valid(method, case):
    ny, nx, T, L, tile, seed, shuffled, n_nan = case
    Y, A, energy = _data(ny, nx, T, L, seed, shuffled, n_nan)
    tmp = Path(tempfile.mkdtemp(prefix="bx-prop-"))
    try:
        mem, mem_err = _run("memory", method, Y, A, energy, tile, tmp)
        eng, eng_err = _run("engine", method, Y, A, energy, tile, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if shuffled:
        assert mem_err and eng_err, (mem_err, eng_err)
        assert "increasing" in mem_err and "increasing" in eng_err
        return
    if method == "edge50" and L > 2:  # both paths: the Edge-50 map, no fractions
        assert mem_err is None and eng_err is None, (mem_err, eng_err)
        assert "fraction" not in mem and "fraction" not in eng
        return
    assert (mem_err is None) == (eng_err is None), (mem_err, eng_err)
    if mem_err is not None:
        return
    m = mem["mask"].values
    assert np.array_equal(m, eng["mask"].values)  # one mask rule: scale > 0.05 x data scale
    nanpix = ~np.isfinite(Y).all(axis=0)
    assert not m[nanpix].any()  # a NaN spectrum is never "defined"
    for ds in (mem, eng):
        if "fraction" not in ds:
            continue
        f = ds["fraction_unmasked"].values[:, m]
        assert np.all(np.isfinite(f))
        assert f.min() >= -1e-6 and f.max() <= 1 + 1e-6
        if method == "lcf":
            np.testing.assert_allclose(f.sum(axis=0), 1.0, atol=1e-5)
    assert ("fraction" in mem) == ("fraction" in eng)
    if "fraction" in mem:
        np.testing.assert_allclose(
            eng["fraction_unmasked"].values[:, m], mem["fraction_unmasked"].values[:, m], atol=1e-4
        )
    if method == "edge50":
        a, b = mem["edge50"].values, eng["edge50"].values
        ok = m & np.isfinite(a)
        np.testing.assert_allclose(b[ok], a[ok], atol=1e-3)
