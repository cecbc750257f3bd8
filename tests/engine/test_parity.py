"""Parity by test: the public in-memory functions (``bx.lcf``, ``bx.edge50``, ``bx.unmix``) and
the engine (``unmix_store``) give the same variables, names, attrs (keys and values) and numbers
on small phantoms cut into uneven tiles, 2-D and 3-D.

Only the attrs that describe the execution (:data:`bigxanes.pipeline.result.EXECUTOR_ATTRS`) and
the seconds per iteration in ``history`` may differ. RUM-PnP's denoiser is not exact on tiles
(tested with the PSNR seam tests in test_engine_equivalence.py), so its parity runs on one
state block (synchronous scheduler: one thread), with uneven tiles for pass 1 and the maps.
"""

from __future__ import annotations

import json
from dataclasses import fields

import numpy as np
import pytest
import xarray as xr

import bigxanes as bx
from bigxanes.engine import unmix_store
from bigxanes.pipeline.result import EXECUTOR_ATTRS
from bigxanes.simulate import simulate
from bigxanes.store import write_dataset

#: Numbers: max abs difference (fractions, scales ~1, residuals) and relative for attrs.
TOL = 1e-5


@pytest.fixture(scope="module")
def data2d(tmp_path_factory):
    ds = simulate("particles", (40, 46), 2, sigma=3.0, seed=1)
    path = tmp_path_factory.mktemp("p2d") / "in.zarr"
    write_dataset(ds[["stack", "references"]], path)
    return ds, path


@pytest.fixture(scope="module")
def data3d(tmp_path_factory):
    ds = simulate("particles", (12, 16, 18), 2, sigma=3.0, seed=2)
    path = tmp_path_factory.mktemp("p3d") / "in.zarr"
    write_dataset(ds[["stack", "references"]], path, chunks=8)
    return ds, path


def _close(a, b, path="attrs"):
    """Equal attr values: same keys and types, numbers within TOL (relative)."""
    if isinstance(a, dict):
        assert isinstance(b, dict) and set(a) == set(b), (path, set(a) ^ set(b))
        for k in a:
            if k != "seconds":  # wall time per iteration
                _close(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, list):
        assert isinstance(b, list) and len(a) == len(b), path
        for i, (u, v) in enumerate(zip(a, b, strict=True)):
            _close(u, v, f"{path}[{i}]")
    elif isinstance(a, bool | str) or a is None:
        assert a == b, (path, a, b)
    else:
        assert np.isclose(float(a), float(b), rtol=TOL, atol=1e-12), (path, a, b)


def _attr(v):
    return json.loads(v) if isinstance(v, str) and v[:1] in "[{" else v


def assert_parity(mem: xr.Dataset, eng: xr.Dataset) -> None:
    assert set(mem.data_vars) == set(eng.data_vars)
    for name in mem.data_vars:
        a, b = mem[name], eng[name]
        assert a.dims == b.dims and a.dtype == b.dtype, name
        assert a.attrs == b.attrs, name
        x, y = np.asarray(a.values, dtype=np.float64), np.asarray(b.values, dtype=np.float64)
        assert np.array_equal(np.isnan(x), np.isnan(y)), name
        ok = ~np.isnan(x)
        if name == "mask":
            # a pixel exactly at the threshold may flip by round-off; none do here
            assert np.array_equal(x, y), name
        else:
            assert np.abs(x[ok] - y[ok]).max(initial=0.0) <= TOL * max(1.0, np.abs(x[ok]).max()), (
                name,
                np.abs(x[ok] - y[ok]).max(),
            )
    assert set(mem.coords) == set(eng.coords)
    for c in mem.coords:
        assert mem[c].values.tolist() == eng[c].values.tolist(), c
    keys = set(eng.attrs) - set(EXECUTOR_ATTRS)
    assert set(mem.attrs) == keys, set(mem.attrs) ^ keys
    for k in keys:
        _close(_attr(mem.attrs[k]), _attr(eng.attrs[k]), k)


def _engine(path, tmp_path, method, chunks, **kw):
    out = unmix_store(path, tmp_path / "o.zarr", method=method, chunks=chunks, progress=False, **kw)
    with xr.open_zarr(out, consolidated=False) as o:
        return o.load()


def _rum_kw(params):
    return {f.name: getattr(params, f.name) for f in fields(params) if f.name != "method"}


@pytest.mark.parametrize("variant", ["nnls", "lstsq", "sum-to-one"])
def test_lcf_parity_2d(data2d, tmp_path, variant):
    ds, path = data2d
    eng = _engine(path, tmp_path, "lcf", (7, 9), lcf_variant=variant)
    assert json.loads(eng.attrs["tiles"]) == [7, 9]  # uneven: 40 = 5 x 7 + 5, 46 = 5 x 9 + 1
    assert_parity(bx.lcf(ds["stack"], ds["references"], variant=variant), eng)


def test_lcf_parity_3d_energy_range(data3d, tmp_path):
    ds, path = data3d
    erange = (8300.0, 8420.0)
    eng = _engine(path, tmp_path, "lcf", (5, 7, 8), energy_range=erange)
    mem = bx.lcf(ds["stack"], ds["references"], energy_range=erange)
    assert mem["fraction_unmasked"].dims == ("component", "z", "y", "x")
    assert mem.attrs["n_energies"] < ds.sizes["energy"]
    assert_parity(mem, eng)


def test_edge50_parity(data2d, tmp_path):
    ds, path = data2d
    eng = _engine(path, tmp_path, "edge50", (7, 9))
    mem = bx.edge50(ds["stack"], ds["references"])
    assert {"edge50", "fraction", "lcf_fraction"} <= set(mem.data_vars)
    assert_parity(mem, eng)


def test_edge50_without_references_parity(data2d, tmp_path):
    ds, _ = data2d
    path = tmp_path / "stack_only.zarr"
    write_dataset(ds[["stack"]], path)
    eng = _engine(path, tmp_path, "edge50", (7, 9))
    mem = bx.edge50(ds["stack"])
    assert set(mem.data_vars) == {
        "edge50",
        "white_line_energy",
        "white_line_height",
        "scale",
        "mask",
    }
    assert_parity(mem, eng)


@pytest.mark.parametrize(
    ("state_mode", "backend", "every"),
    [("memory", "numpy", 1), ("zarr", "numpy", 1), ("memory", "numba", 3), ("zarr", "numba", 1)],
)
def test_rum_tv_parity_2d(data2d, tmp_path, monkeypatch, state_mode, backend, every):
    import bigxanes.engine.unmix as eu

    monkeypatch.setattr(eu, "STATE_BLOCK_BYTES", 0)  # state blocks = the uneven stack tiles
    ds, path = data2d
    p = bx.RumParams(
        method="rum-tv", max_iter=12, tv_sweeps=4, backend=backend, residual_every=every
    )
    eng = _engine(path, tmp_path, "rum-tv", (13, 11), params=p, state_mode=state_mode)
    tiles = json.loads(eng.attrs["tiles"])  # 13 x 11 grown for the halo, still uneven
    assert json.loads(eng.attrs["state_tiles"]) == tiles and 40 % tiles[0] and 46 % tiles[1]
    mem = bx.unmix(ds["stack"], ds["references"], state_dtype=np.float32, **_rum_kw(p))
    assert mem.attrs["kernel_backend"] == backend
    assert_parity(mem, eng)


@pytest.mark.parametrize("state_mode", ["memory", "zarr"])
def test_rum_tv_parity_stable_stop(data2d, tmp_path, monkeypatch, state_mode):
    """Default stopping rules to the end: both executors stop at the same iteration on the
    "stable" rule (RumParams.change_tol, σ_x from each executor's own noise estimate) with
    the same verdict and maps (over-relaxed kernel, relax 1.8)."""
    import bigxanes.engine.unmix as eu

    monkeypatch.setattr(eu, "STATE_BLOCK_BYTES", 0)
    ds, path = data2d
    p = bx.RumParams(method="rum-tv", tv_sweeps=3, backend="numpy")
    eng = _engine(path, tmp_path, "rum-tv", (13, 11), params=p, state_mode=state_mode)
    mem = bx.unmix(ds["stack"], ds["references"], state_dtype=np.float32, **_rum_kw(p))
    assert mem.attrs["stop_reason"] == "stable" and 30 < mem.attrs["n_iterations"] < 60
    assert_parity(mem, eng)


def test_rum_tv_parity_3d(data3d, tmp_path, monkeypatch):
    import bigxanes.engine.unmix as eu

    monkeypatch.setattr(eu, "STATE_BLOCK_BYTES", 0)
    ds, path = data3d
    p = bx.RumParams(method="rum-tv", max_iter=8, tv_sweeps=3, backend="numba")
    eng = _engine(path, tmp_path, "rum-tv", (7, 9, 11), params=p, state_mode="zarr")
    mem = bx.unmix(ds["stack"], ds["references"], state_dtype=np.float32, **_rum_kw(p))
    assert mem["fraction_unmasked"].dims == ("component", "z", "y", "x")
    assert_parity(mem, eng)


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_rum_pnp_tv_parity(data2d, tmp_path, backend):
    ds, path = data2d
    p = bx.RumParams(method="rum-pnp", denoiser="tv", max_iter=6, backend=backend)
    eng = _engine(path, tmp_path, "rum-pnp", (13, 11), params=p, scheduler="synchronous")
    assert json.loads(eng.attrs["state_tiles"]) == [40, 46]  # one state block
    mem = bx.unmix(
        ds["stack"], ds["references"], method="rum-pnp", state_dtype=np.float32, **_rum_kw(p)
    )
    assert_parity(mem, eng)


@pytest.mark.parametrize("dim", [2, 3])
def test_rum_guided_tv_parity(data2d, data3d, tmp_path, monkeypatch, dim):
    """Guided TV (weight channel from the NNLS scale map, 1-pixel halo) on uneven tiles."""
    import bigxanes.engine.unmix as eu

    monkeypatch.setattr(eu, "STATE_BLOCK_BYTES", 0)
    ds, path = data2d if dim == 2 else data3d
    tiles = (13, 11) if dim == 2 else (7, 9, 11)
    p = bx.RumParams(method="rum-tv", prior="guided-tv", max_iter=8, tv_sweeps=3)
    eng = _engine(path, tmp_path, "rum-tv", tiles, params=p, state_mode="zarr")
    assert json.loads(eng.attrs["params"])["prior"] == "guided-tv"
    mem = bx.unmix(ds["stack"], ds["references"], state_dtype=np.float32, **_rum_kw(p))
    assert_parity(mem, eng)


def test_rum_lam_sure_parity(data2d, tmp_path, monkeypatch):
    """``lam="sure"``: the same subsample, the same SURE table and λ in both executors."""
    import bigxanes.engine.unmix as eu
    import bigxanes.rum as rum

    monkeypatch.setattr(eu, "STATE_BLOCK_BYTES", 0)
    monkeypatch.setattr(rum, "SURE_GRID", (0.1, 0.5))  # two candidates keep the test short
    ds, path = data2d
    p = bx.RumParams(method="rum-tv", lam="sure", max_iter=6, tv_sweeps=3)
    eng = _engine(path, tmp_path, "rum-tv", (13, 11), params=p, state_mode="memory")
    mem = bx.unmix(ds["stack"], ds["references"], state_dtype=np.float32, **_rum_kw(p))
    assert mem.attrs["lam_rule"] == "sure" and len(_attr(mem.attrs["lam_sure"])) == 2
    assert_parity(mem, eng)


@pytest.fixture(scope="module")
def counts2d(tmp_path_factory):
    """Photon-counting data (Poisson, I0 = 300): the store holds the ``i0`` variable."""
    ds = simulate("particles", (40, 46), 2, sigma=0.0, poisson=300.0, seed=3)
    path = tmp_path_factory.mktemp("c2d") / "in.zarr"
    write_dataset(ds[["stack", "references", "i0"]], path)
    write_dataset(ds[["stack", "references"]], path.with_name("no_i0.zarr"))
    return ds, path


@pytest.mark.parametrize("weights", ["counts", "energy"])
def test_weighted_lcf_parity_2d(counts2d, tmp_path, weights):
    """Noise model estimated from the data (one extra read on the engine) and the weighted
    NNLS pass 1 on uneven tiles."""
    ds, path = counts2d
    # no i0 anywhere: the dose (or the per-energy variance) is estimated from the data
    eng = _engine(path.with_name("no_i0.zarr"), tmp_path, "lcf", (7, 9), weights=weights)
    mem = bx.lcf(ds["stack"], ds["references"], weights=weights)
    assert mem.attrs["weights"] == weights and mem.attrs["weights_source"] == "estimated"
    assert_parity(mem, eng)


def test_weighted_lcf_given_i0_parity_3d(tmp_path):
    ds = simulate("particles", (10, 14, 16), 2, sigma=0.0, poisson=500.0, seed=4)
    path = tmp_path / "in.zarr"
    write_dataset(ds[["stack", "references", "i0"]], path, chunks=8)
    eng = _engine(path, tmp_path, "lcf", (5, 7, 8), weights="counts")  # the store's i0
    mem = bx.lcf(ds, ds["references"], weights="counts")  # the Dataset's i0
    assert mem.attrs["weights_source"] == "given"
    assert _attr(mem.attrs["weights_i0"]) == [500.0] * ds.sizes["energy"]
    assert_parity(mem, eng)


@pytest.mark.parametrize("state_mode", ["memory", "zarr"])
def test_weighted_rum_tv_parity_2d(counts2d, tmp_path, monkeypatch, state_mode):
    """The per-pixel weighted M-step on uneven state blocks (NumPy kernel)."""
    import bigxanes.engine.unmix as eu

    monkeypatch.setattr(eu, "STATE_BLOCK_BYTES", 0)
    ds, path = counts2d
    p = bx.RumParams(method="rum-tv", max_iter=10, tv_sweeps=3)
    eng = _engine(path, tmp_path, "rum-tv", (13, 11), params=p, state_mode=state_mode,
                  weights="counts")  # fmt: skip
    mem = bx.unmix(ds, ds["references"], state_dtype=np.float32, weights="counts", **_rum_kw(p))
    assert mem.attrs["kernel_backend"] == "numpy" and mem.attrs["weights_source"] == "given"
    assert_parity(mem, eng)


def test_weighted_rum_pnp_parity(counts2d, tmp_path):
    ds, path = counts2d
    p = bx.RumParams(method="rum-pnp", denoiser="tv", max_iter=6)
    eng = _engine(path, tmp_path, "rum-pnp", (13, 11), params=p, scheduler="synchronous",
                  weights="energy")  # fmt: skip
    mem = bx.unmix(ds["stack"], ds["references"], method="rum-pnp", state_dtype=np.float32,
                   weights="energy", **_rum_kw(p))  # fmt: skip
    assert_parity(mem, eng)
