"""Checkpoint/resume: a run stopped after iteration k resumes and ends as an uninterrupted run."""

from __future__ import annotations

import json

import numpy as np
import pytest
import xarray as xr

from bigxanes.engine import InjectedFailure, unmix_store
from bigxanes.engine.state import WorkDir
from bigxanes.rum import RumParams
from bigxanes.simulate import simulate
from bigxanes.store import is_complete, write_dataset


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    ds = simulate("particles", (40, 44), 2, sigma=4.0, seed=5)
    path = tmp_path_factory.mktemp("res") / "in.zarr"
    write_dataset(ds[["stack", "references"]], path)
    return path


def _load(p):
    with xr.open_zarr(p, consolidated=False) as o:
        return o.load()


@pytest.mark.parametrize(
    "method,state_mode",
    [("rum-tv", "zarr"), ("rum-pnp", "zarr"), ("rum-tv", "memory"), ("rum-pnp", "memory")],
)
def test_resume_equals_uninterrupted(stack, tmp_path, method, state_mode, monkeypatch):
    params = RumParams(method=method, max_iter=8, tv_sweeps=3, denoiser="tv", denoiser_halo=8)
    kw = dict(
        method=method,
        params=params,
        chunks=(20, 22),
        progress=False,
        state_mode=state_mode,
        checkpoint_every=2,
    )
    ref = _load(unmix_store(stack, tmp_path / "ref.zarr", **kw))
    assert ref.attrs["state_mode"] == state_mode

    out = tmp_path / "run.zarr"
    # zarr mode commits every iteration; memory mode every 2: iteration 3 is lost
    with pytest.raises(InjectedFailure):
        unmix_store(stack, out, _fail_after=3, **kw)
    assert not out.exists() and not is_complete(out)
    commit = WorkDir(tmp_path / "run.zarr.work").last_commit
    done = 3 if state_mode == "zarr" else 2
    assert commit["completed"] == done and len(commit["history"]["iteration"]) == done

    import bigxanes.engine.chunked as eu  # the iterations call the block functions here

    calls = []
    # zarr mode: one kernel call per state block inside the Zarr-to-Zarr tasks (one task per
    # group of blocks, chunked.admm_zarr_blocks); memory mode: map_overlap's block
    name = "admm_interior" if state_mode == "zarr" else "admm_block"
    orig = getattr(eu, name)
    monkeypatch.setattr(eu, name, lambda *a, **k: calls.append(1) or orig(*a, **k))
    got = _load(unmix_store(stack, out, resume=True, **kw))
    # only iterations done+1..8 ran, one task per state block (state_tiles: 40 x 22 on the
    # threaded scheduler's >= 2 threads, 2 blocks; the stack tiles 20 x 22 give 2 x 2)
    st = json.loads(ref.attrs["state_tiles"])
    n_blocks = int(np.prod([-(-n // t) for n, t in zip((40, 44), st, strict=True)]))
    assert len(calls) == (8 - done) * n_blocks
    assert is_complete(out) and not (tmp_path / "run.zarr.work").exists()
    for name in ("fraction_unmasked", "scale", "residual_rms"):
        assert np.abs(got[name].values - ref[name].values).max() <= 1e-6, name
    h_ref, h_got = json.loads(ref.attrs["history"]), json.loads(got.attrs["history"])
    assert h_got["iteration"] == list(range(1, 9))
    np.testing.assert_allclose(h_got["primal"], h_ref["primal"], rtol=1e-6)
    np.testing.assert_allclose(h_got["rho"], h_ref["rho"], rtol=1e-12)


def test_resume_env_hook_and_mismatch(stack, tmp_path, monkeypatch):
    params = RumParams(method="rum-tv", max_iter=4, tv_sweeps=3)
    kw = dict(method="rum-tv", chunks=(20, 22), progress=False)
    out = tmp_path / "run.zarr"
    monkeypatch.setenv("BIGXANES_FAIL_AFTER", "2")
    with pytest.raises(InjectedFailure):
        unmix_store(stack, out, params=params, state_mode="zarr", **kw)
    monkeypatch.delenv("BIGXANES_FAIL_AFTER")
    # different parameters: the stale state is not reused, the run starts afresh
    other = RumParams(method="rum-tv", max_iter=4, tv_sweeps=3, lam=0.01)
    got = _load(unmix_store(stack, out, params=other, resume=True, **kw))
    assert json.loads(got.attrs["params"])["lam"] == 0.01
    assert json.loads(got.attrs["history"])["iteration"] == [1, 2, 3, 4]


@pytest.mark.parametrize("method", ["rum-tv", "rum-pnp"])
def test_memory_mode_equals_zarr_mode(stack, tmp_path, method):
    """The persisted in-memory state is float32 like the Zarr one: the same numbers."""
    params = RumParams(method=method, max_iter=6, tv_sweeps=3, denoiser="tv", denoiser_halo=8)
    kw = dict(method=method, params=params, chunks=(20, 22), progress=False)
    z = _load(unmix_store(stack, tmp_path / "z.zarr", state_mode="zarr", **kw))
    m = _load(
        unmix_store(stack, tmp_path / "m.zarr", state_mode="memory", checkpoint_every=4, **kw)
    )
    assert (z.attrs["state_mode"], m.attrs["state_mode"]) == ("zarr", "memory")
    assert m.attrs["checkpoint_every"] == 4
    for name in ("fraction_unmasked", "scale", "residual_rms"):
        assert np.abs(m[name].values - z[name].values).max() <= 1e-6, name
    np.testing.assert_allclose(
        json.loads(m.attrs["history"])["primal"],
        json.loads(z.attrs["history"])["primal"],
        rtol=1e-6,
    )
    # small state on the threaded scheduler: auto keeps it in memory
    a = _load(unmix_store(stack, tmp_path / "a.zarr", **kw))
    assert a.attrs["state_mode"] == "memory"


def test_resume_across_modes(stack, tmp_path):
    """A run interrupted in zarr mode resumes in memory mode (same commit record)."""
    params = RumParams(method="rum-tv", max_iter=6, tv_sweeps=3)
    kw = dict(method="rum-tv", params=params, chunks=(20, 22), progress=False)
    ref = _load(unmix_store(stack, tmp_path / "ref.zarr", state_mode="zarr", **kw))
    out = tmp_path / "run.zarr"
    with pytest.raises(InjectedFailure):
        unmix_store(stack, out, state_mode="zarr", _fail_after=3, **kw)
    got = _load(unmix_store(stack, out, state_mode="memory", resume=True, **kw))
    assert json.loads(got.attrs["history"])["iteration"] == list(range(1, 7))
    for name in ("fraction_unmasked", "scale", "residual_rms"):
        assert np.abs(got[name].values - ref[name].values).max() <= 1e-6, name


@pytest.mark.parametrize("state_mode", ["zarr", "memory"])
def test_resume_after_the_stable_stop_runs_nothing(stack, tmp_path, monkeypatch, state_mode):
    """The "stable" stop (RumParams.change_tol) is in the commit of the iteration it stops at:
    a run interrupted right after that commit resumes without iterating (before the verdict
    was set ahead of on_iteration, the commit said "not converged" and a resume ran on)."""
    params = RumParams(method="rum-tv", tv_sweeps=3)
    kw = dict(
        method="rum-tv",
        params=params,
        chunks=(20, 22),
        progress=False,
        state_mode=state_mode,
        checkpoint_every=4,
    )
    ref = _load(unmix_store(stack, tmp_path / "ref.zarr", **kw))
    n = ref.attrs["n_iterations"]
    assert ref.attrs["stop_reason"] == "stable" and ref.attrs["converged"] == 1 and n < 60
    out = tmp_path / "run.zarr"
    with pytest.raises(InjectedFailure):
        unmix_store(stack, out, _fail_after=n, **kw)
    commit = WorkDir(tmp_path / "run.zarr.work").last_commit
    assert commit["completed"] == n and commit["converged"] is True

    import bigxanes.engine.chunked as eu

    calls = []
    name = "admm_interior" if state_mode == "zarr" else "admm_block"
    orig = getattr(eu, name)
    monkeypatch.setattr(eu, name, lambda *a, **k: calls.append(1) or orig(*a, **k))
    got = _load(unmix_store(stack, out, resume=True, **kw))
    assert calls == []
    assert got.attrs["n_iterations"] == n and got.attrs["stop_reason"] == "stable"
    for name in ("fraction_unmasked", "scale", "residual_rms"):
        assert np.abs(got[name].values - ref[name].values).max() <= 1e-6, name


def test_choose_state_mode():
    from bigxanes.engine.unmix import choose_state_mode

    assert choose_state_mode("auto", 100, 600) == "memory"
    assert choose_state_mode("auto", 100, 599) == "zarr"
    assert choose_state_mode("zarr", 1, 10**12) == "zarr"
    assert choose_state_mode("memory", 10**12, 1) == "memory"
    with pytest.raises(ValueError, match="state_mode"):
        choose_state_mode("ram", 1, 1)
