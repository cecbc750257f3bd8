"""The fused float32 numba kernels against the NumPy reference and scikit-image.

- ``admm_iteration_fused`` vs ``admm_iteration`` (float64 reference) on random states, TV and
  PnP, 2-D and 3-D, odd shapes, L = 2 and 3, with NaN-masked (zeroed) pixels: every state
  quantity and residual channel within 1e-5 relative;
- the same result, bit for bit, with 1 and 2 threads;
- the numba Chambolle denoiser vs ``skimage.restoration.denoise_tv_chambolle``.
"""

from __future__ import annotations

import numba
import numpy as np
import pytest
from skimage.restoration import denoise_tv_chambolle

from bigxanes.kernels import fused
from bigxanes.kernels.admm import (
    RESIDUALS,
    StateLayout,
    admm_iteration,
    admm_step,
    initial_state,
)
from bigxanes.kernels.fused import admm_iteration_fused, block_threads
from bigxanes.kernels.fused_tv import denoise_maps_tv, denoise_tv_chambolle_numba

REL = 1e-5


def _state(L, spatial, method, seed=0, weighted=False):
    """A random float32 state as a run would hold it: initialized from a random LCF solution
    (with a corner of NaN-masked pixels: zero AᵀY, YᵀY and M0), duals perturbed; with
    ``weighted`` a guided-TV weight channel in (0, 1]."""
    rng = np.random.default_rng(seed)
    layout = StateLayout(L, len(spatial), method, weighted)
    M0 = rng.random((L,) + spatial)
    aty = rng.random((L,) + spatial)
    yty = 3.0 * rng.random(spatial)
    masked = (slice(None),) + tuple(slice(0, 2) for _ in spatial)
    M0[masked] = 0.0
    aty[masked] = 0.0
    yty[masked[1:]] = 0.0
    weight = 0.05 + 0.95 * rng.random(spatial) if weighted else None
    S = initial_state(aty, yty, M0, layout, weight=weight)
    c0, c1 = layout.slices["C"].start, layout.slices["D"].stop
    S[c0:c1] += 0.05 * rng.standard_normal(S[c0:c1].shape)
    S[masked] = np.where(np.isin(np.arange(layout.n_channels), [0, 1]), 0.0, S[masked].T).T
    A = rng.random((30, L))
    return layout, S.astype(np.float32), A.T @ A


def _kwargs(layout, AtA, method, relax=1.0):
    rho = 0.3
    return dict(
        layout=layout,
        AtA=AtA,
        lam=0.05,
        rho=rho,
        rho_next=rho * (1.05 if method == "pnp" else 1.0),
        tv_sweeps=10,
        relax=relax,
    )


def _worst_relative(ref, got, S, layout):
    """Largest error of each named quantity relative to its size (the larger of its reference
    output and its input: a quantity that cancels to ~0, like g, is judged on its terms)."""
    errs = {}
    for name, sl in layout.slices.items():
        scale = max(np.abs(ref[sl]).max(), np.abs(S[sl]).max(), 1e-12)
        errs[name] = np.abs(ref[sl] - got[sl]).max() / scale
    n = layout.n_channels
    for i, name in enumerate(RESIDUALS):
        scale = max(np.abs(ref[n + i]).max(), 1e-12)
        errs[name] = np.abs(ref[n + i] - got[n + i]).max() / scale
    return errs


@pytest.mark.parametrize("method", ["tv", "pnp"])
@pytest.mark.parametrize("spatial", [(13, 17), (5, 7, 9)])
@pytest.mark.parametrize("L", [2, 3])
@pytest.mark.parametrize("relax", [1.0, 1.8])
def test_fused_matches_numpy_reference(method, spatial, L, relax):
    layout, S, AtA = _state(L, spatial, method)
    S_in = S.copy()
    kw = _kwargs(layout, AtA, method, relax)
    ref = admm_iteration(S, **kw)
    got = admm_iteration_fused(S, **kw)
    assert np.array_equal(S, S_in)  # input not modified
    assert got.dtype == np.float32 and got.shape == ref.shape
    errs = _worst_relative(ref, got, S, layout)
    assert max(errs.values()) <= REL, errs
    # the masked corner keeps zero data and uniform fractions, and stays finite
    assert np.all(np.isfinite(got))


@pytest.mark.parametrize("spatial", [(13, 17), (5, 7, 9)])
def test_fused_matches_numpy_reference_guided_tv(spatial):
    """Guided TV (weight channel w): threshold λ w / ρ, residual w TV(X), w carried over."""
    layout, S, AtA = _state(2, spatial, "tv", seed=5, weighted=True)
    kw = _kwargs(layout, AtA, "tv", relax=1.8)
    ref = admm_iteration(S, **kw)
    got = admm_iteration_fused(S, **kw)
    errs = _worst_relative(ref, got, S, layout)
    assert max(errs.values()) <= REL, errs
    w = layout.slices["w"]
    assert np.array_equal(got[w], S[w])
    # the weight matters: the unweighted kernel on the same X, U, D gives other U
    plain = StateLayout(2, len(spatial), "tv")
    ref_plain = admm_iteration(S[: plain.n_channels], **{**kw, "layout": plain})
    u = layout.slices["U"]
    assert np.abs(ref_plain[u] - got[u]).max() > 100 * REL


@pytest.mark.parametrize("method", ["tv", "pnp"])
@pytest.mark.parametrize("relax", [1.0, 1.8])
def test_fused_several_iterations_stay_close(method, relax):
    """Five chained iterations (the state fed back), float32 vs float64 reference."""
    layout, S, AtA = _state(2, (11, 14), method, seed=3)
    n = layout.n_channels
    kw = _kwargs(layout, AtA, method, relax)
    a, b = S.astype(np.float64), S
    for _ in range(5):
        a = admm_iteration(a, **kw)[:n]
        b = admm_iteration_fused(b, residuals=False, **kw)
    for name, sl in layout.slices.items():
        scale = max(np.abs(a[sl]).max(), 1e-3)
        assert np.abs(a[sl] - b[sl]).max() / scale < 1e-4, name


def test_fused_without_residuals_returns_the_same_state():
    layout, S, AtA = _state(2, (9, 10), "tv")
    kw = _kwargs(layout, AtA, "tv")
    full = admm_iteration_fused(S, **kw)
    out = np.empty((layout.n_channels, 9, 10), dtype=np.float32)
    short = admm_iteration_fused(S, residuals=False, out=out, **kw)
    assert short is out and short.shape[0] == layout.n_channels
    assert np.array_equal(short, full[: layout.n_channels])


@pytest.mark.parametrize("method", ["tv", "pnp"])
def test_fused_result_is_independent_of_thread_count(method, monkeypatch):
    monkeypatch.setattr(fused, "PIXELS_PER_THREAD", 1)  # small blocks on every thread
    layout, S, AtA = _state(2, (33, 20), method, seed=1)
    kw = _kwargs(layout, AtA, method)
    before = numba.get_num_threads()
    try:
        results = []
        for n in sorted({1, 2, numba.config.NUMBA_NUM_THREADS}):
            numba.set_num_threads(n)
            results.append(admm_iteration_fused(S, **kw))
    finally:
        numba.set_num_threads(before)
    for r in results[1:]:
        assert np.array_equal(r, results[0])


@pytest.mark.parametrize("method", ["tv", "pnp"])
def test_over_relaxation_moves_u_w_and_their_duals_only(method):
    """α = 1.8 relaxes ∇X = U (PnP X = U) and X = W: U, W, D, E move; X, s (computed before
    the relaxed steps), M, t, C and g (the X s = M and s = t constraints) do not; both kernels
    alike. The residual channels stay those of the plain constraints: |X - W|² from the
    returned X, W."""
    layout, S, AtA = _state(2, (12, 13), method, seed=7)
    plain = admm_iteration(S, **_kwargs(layout, AtA, method, 1.0))
    ref = admm_iteration(S, **_kwargs(layout, AtA, method, 1.8))
    got = admm_iteration_fused(S, **_kwargs(layout, AtA, method, 1.8))
    sl = layout.slices
    for name in ("X", "s", "M", "t", "C", "g"):
        np.testing.assert_array_equal(ref[sl[name]], plain[sl[name]])
    for name in ("W", "E", "U", "D"):
        assert np.abs(ref[sl[name]] - plain[sl[name]]).max() > 1e-3, name
    assert max(_worst_relative(ref, got, S, layout).values()) <= REL
    X, W = ref[sl["X"]], ref[sl["W"]]
    n = layout.n_channels
    np.testing.assert_allclose(ref[n + 1], np.sum((X - W) ** 2, axis=0), rtol=1e-12, atol=1e-15)


def test_backend_dispatch():
    layout, S, AtA = _state(2, (8, 9), "tv")
    kw = _kwargs(layout, AtA, "tv")
    assert np.array_equal(admm_step(S, backend="numpy", **kw), admm_iteration(S, **kw))
    assert np.array_equal(admm_step(S, backend="numba", **kw), admm_iteration_fused(S, **kw))
    with pytest.raises(ValueError, match="unknown backend 'cuda'"):
        admm_step(S, backend="cuda", **kw)


@pytest.mark.parametrize("shape", [(37, 53), (9, 11, 13)])
@pytest.mark.parametrize("weight", [0.01, 0.1])
def test_chambolle_matches_scikit_image(shape, weight):
    rng = np.random.default_rng(2)
    clean = np.zeros(shape)
    clean[tuple(slice(n // 4, 3 * n // 4) for n in shape)] = 1.0
    v = clean + 0.2 * rng.standard_normal(shape)
    ref = denoise_tv_chambolle(v, weight=weight, eps=1e-5, max_num_iter=100)
    # float64: the same operations in the same order
    assert np.abs(denoise_tv_chambolle_numba(v, weight, 1e-5, 100) - ref).max() < 1e-12
    # float32: round-off only
    got32 = denoise_tv_chambolle_numba(v.astype(np.float32), weight, 1e-5, 100)
    assert got32.dtype == np.float32
    assert np.abs(got32 - ref).max() < 1e-5
    # and it denoises
    assert np.mean((ref - clean) ** 2) < np.mean((v - clean) ** 2)


def test_chambolle_stopping_rule_and_pnp_wrapper():
    rng = np.random.default_rng(4)
    v = rng.random((2, 20, 24))
    sigma = 0.2
    got = denoise_maps_tv(v, sigma, 2)
    for j in range(2):
        ref = denoise_tv_chambolle(v[j], weight=sigma**2, eps=1e-5, max_num_iter=100)
        assert np.abs(got[j] - ref).max() < 1e-12
    # a loose eps stops early: different from the converged result, as scikit-image
    early = denoise_tv_chambolle_numba(v[0], 0.04, eps=1e-1, max_num_iter=100)
    ref_early = denoise_tv_chambolle(v[0], weight=0.04, eps=1e-1, max_num_iter=100)
    assert np.abs(early - ref_early).max() < 1e-12
    assert np.abs(early - got[0]).max() > 1e-4
    assert np.array_equal(denoise_maps_tv(v, 0.0, 2), v)


def test_block_threads_rule(monkeypatch):
    """At most one numba thread per PIXELS_PER_THREAD pixels, at most the cap, at least 1."""
    monkeypatch.setattr(fused, "PIXELS_PER_THREAD", 100)
    assert block_threads(50, 4) == 1
    assert block_threads(250, 4) == 2
    assert block_threads(10_000, 4) == 4
    assert block_threads(10_000, None) == numba.get_num_threads()
