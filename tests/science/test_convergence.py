"""Honest convergence of RUM-TV (issue 13 item 3, issue 15 item 3).

Misfitting references (edge shifted 3 eV against the data) made the old ADMM oscillate: the
X-step divided X by a column sum that could approach 0 (spikes of the primal residual to
1e3) and residual balancing never raised ρ out of a limit cycle. These tests fail on the
code before the fix (electrode 64², shifted references: 500/500 iterations, relative primal
residual 0.13, spike 5.8).

Issue 15 item 3 (fewer iterations for the same map): over-relaxation of ∇X = U and X = W
(``RumParams.relax`` 1.8) and the "stable" stop on the maps' change against the fraction noise
(``RumParams.change_tol``); the counts below fail on the code before it.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

import bigxanes.api as bx
from bigxanes.cli.errors import to_flags
from bigxanes.kernels.admm import RESIDUALS, admm_step
from bigxanes.kernels.pass1 import Pass1Layout, pass1_block, pass1_statistics, state_from_pass1
from bigxanes.kernels.quality import fit_quality, r_factor, reduced_chi2, squared_residual
from bigxanes.metrics import foreground_mask, psnr_foreground
from bigxanes.rum import (
    STABLE_PRIMAL,
    History,
    RumParams,
    final_maps,
    fraction_noise,
    next_rho,
    noise_variance,
    resolve_lambda,
    run_admm,
    stop_reason,
)
from bigxanes.simulate import simulate_to_arrays


def _shifted(E: np.ndarray, A: np.ndarray, shift: float) -> np.ndarray:
    """References whose edge sits ``shift`` eV lower than in the data (held flat at the end)."""
    return np.stack([np.interp(E + shift, E, a) for a in np.asarray(A).T], axis=1)


def _relative_primal(ds) -> np.ndarray:
    h = bx.history_of(ds)
    return np.asarray(h["primal"]) / np.sqrt(ds["fraction_unmasked"].size)


def _assert_converged(h: dict) -> None:
    """Converged by one of the two rules, with the numbers that rule promises."""
    assert h["converged"] is True
    if h["stop_reason"] == "tolerance":
        assert h["rel_primal"] < h["tol"] and h["rel_dual"] < h["tol"]
    else:
        assert h["stop_reason"] == "stable"
        assert h["rel_change"] < 1e-3 and h["rel_primal"] < 2e-3


@pytest.fixture(scope="module")
def electrode():
    return simulate_to_arrays("electrode", (64, 64), 2, 7.0, seed=0)


def test_shifted_references_converge_without_spikes(electrode):
    sim = electrode
    A = _shifted(sim.energy, sim.references, 3.0)
    ds = bx.unmix(sim.stack, A, energy=sim.energy, method="rum-tv", state_dtype=np.float32)
    _assert_converged(bx.history_of(ds))
    # 500/500 before the fix of issue 13, 114 (tolerance) before issue 15's relax/stable
    # stop; 42 (stable) after. Over-relaxing X s = M and s = t too took 258.
    assert ds.attrs["n_iterations"] <= 60
    # no spike: the primal residual never exceeds its first value by much (5.8 before)
    p = _relative_primal(ds)
    assert p.max() < 2.0 * p[0]
    assert np.all(np.isfinite(ds["fraction_unmasked"].values))
    np.testing.assert_allclose(ds["fraction_unmasked"].values.sum(axis=0), 1.0, atol=1e-5)


def test_verdict_when_iterations_run_out(electrode):
    sim = electrode
    ds = bx.unmix(sim.stack, sim.references, energy=sim.energy, method="rum-tv", max_iter=5)
    h = History.from_dict(bx.history_of(ds))
    assert h.n_iterations == 5
    assert h.converged is False and h.stop_reason == "max_iter"
    assert h.rel_primal >= 1e-4 or h.rel_dual >= 1e-4
    assert "NOT converged after 5 iterations (max_iter)" in h.verdict()


def test_stall_guard_raises_rho():
    p = RumParams(method="rum-tv")
    h = History(primal=[1.0] * 11, dual=[0.5] * 11)
    assert next_rho(p, 10, 0.3, h) == pytest.approx(0.6)  # stalled: primal flat, > dual
    h = History(primal=[1.0] * 10 + [0.3], dual=[0.1] * 11)
    assert next_rho(p, 10, 0.3, h) == pytest.approx(0.3)  # fell 3x: balanced, keep ρ
    h = History(primal=[1.0] * 11, dual=[2.0] * 11)
    assert next_rho(p, 10, 0.3, h) == pytest.approx(0.3)  # dual dominates: no growth


def _psnr_trajectory(phantom: str) -> tuple[History, np.ndarray]:
    """Default RUM-TV (NumPy float64 kernel) on the 64² phantom, σ = 7, seed 0, driven by
    ``run_admm`` (its ρ rule and stopping rules), with the foreground PSNR of the fractions
    after every iteration."""
    sim = simulate_to_arrays(phantom, (64, 64), 2, 7.0, seed=0)
    p = RumParams(method="rum-tv", backend="numpy")
    Y, A = np.asarray(sim.stack, dtype=np.float64), np.asarray(sim.references, dtype=np.float64)
    T, L = A.shape
    N = Y[0].size
    layout, p1 = p.state_layout(L, 2), Pass1Layout(L)
    P = pass1_block(Y, layout=p1, A=A, energy=np.arange(T, dtype=np.float64))
    st = pass1_statistics(P, p1, A.shape[0])
    c = st["scale"]
    nv = noise_variance(st["resid_sum"], N, T, L, c)
    lam = resolve_lambda(p, nv, A, c)
    state = [state_from_pass1(P, p1=p1, layout=layout, scale=c)]
    mask, n, psnr = foreground_mask(sim.scale), layout.n_channels, []

    def step(k, rho, rho_next, residuals):
        out = admm_step(
            state[0], backend="numpy", layout=layout, AtA=A.T @ A, lam=lam, rho=rho,
            rho_next=rho_next, tv_sweeps=p.tv_sweeps, relax=p.relax,
        )  # fmt: skip
        state[0] = out[:n]
        psnr.append(psnr_foreground(final_maps(state[0], layout, c)[0], sim.fraction, mask))
        sums = out[n:].reshape(len(RESIDUALS), -1).sum(axis=1)
        return {name: float(v) for name, v in zip(RESIDUALS, sums, strict=True)}

    h = run_admm(step, p, lam, N, L, fraction_noise=fraction_noise(p, nv, A, c))
    return h, np.asarray(psnr)


@pytest.mark.parametrize(
    ("phantom", "max_within", "max_stop", "max_below"),
    [("particles", 32, 45, 0.2), ("electrode", 29, 45, 0.2), ("wedge", 45, 60, 0.2)],
)
def test_default_run_iteration_counts(phantom, max_within, max_stop, max_below):
    """Issue 15 item 3 on 64² phantoms (σ = 7, seed 0): the first iteration within 0.1 dB of
    the trajectory's best foreground PSNR, the iterations to the stop, and how far the final
    PSNR ends below that best.

    At the default lam_factor 0.1 (``rum.TV_LAM_FACTOR``; b: plain ADMM, stop on the residuals
    only; a: ``relax`` 1.8, ``change_tol`` 1e-3):

    ============  =====================  ======================  ========================
    phantom       within 0.1 dB (b / a)  iterations (b / a)      final PSNR (b / a), dB
    ============  =====================  ======================  ========================
    particles     46 / 28                95 / 37 (stable)        21.81 / 21.61
    electrode     39 / 25                96 / 38 (stable)        21.48 / 21.36
    wedge         37 / 41                39 / 50 (tolerance)     25.82 / 27.31
    ============  =====================  ======================  ========================

    Both end at their own peak (0.00 dB below). The relaxed run stops 2.5x sooner on particles
    and electrode, 0.1-0.2 dB lower, and gains 1.5 dB on wedge. (At the former lam_factor 0.2:
    within 19/15/40 -> 11/9/24, iterations 100/285/44 -> 46/57/38, final below peak
    0.11/0.97/0 -> 0.09/0.43/0 dB.) The issue's "half the iterations" holds for the stop, not
    for the first iteration within 0.1 dB (0.61x, 0.64x, 1.1x) at this λ.
    """
    h, psnr = _psnr_trajectory(phantom)
    assert h.converged and h.stop_reason in ("stable", "tolerance")
    assert len(psnr) == h.n_iterations <= max_stop
    best = psnr.max()
    assert int(np.argmax(psnr >= best - 0.1)) + 1 <= max_within
    assert best - psnr[-1] <= max_below


def test_stable_stop_rule():
    """ "stable": the map change (dual residual / ρ / sqrt(N L)) below change_tol σ_x for the
    last 5 iterations and the relative primal residual below STABLE_PRIMAL σ_x; not before 5
    iterations, not when one of the window's entries or the primal is too large, off with
    change_tol 0."""
    p = RumParams(method="rum-tv", rho_max=1e4)
    norm, sx = 10.0, 0.05
    thr = p.change_tol * sx  # 5e-5 per iteration

    def hist(changes, primal=0.5 * STABLE_PRIMAL * sx, rho=2.0):
        k = len(changes)
        return History(
            iteration=list(range(1, k + 1)),
            rho=[rho] * k,
            primal=[primal * norm] * k,
            dual=[c * rho * norm for c in changes],
            rho_next=rho,
        )

    assert stop_reason(hist([0.5 * thr] * 5), p, norm, sx) == "stable"
    assert stop_reason(hist([0.5 * thr] * 4), p, norm, sx) is None  # fewer than 5 iterations
    assert stop_reason(hist([2 * thr] + [0.5 * thr] * 5), p, norm, sx) == "stable"
    assert stop_reason(hist([0.5 * thr] * 4 + [2 * thr, 0.5 * thr]), p, norm, sx) is None
    assert stop_reason(hist([0.5 * thr] * 6, primal=2 * STABLE_PRIMAL * sx), p, norm, sx) is None
    assert stop_reason(hist([0.5 * thr] * 6), p, norm, 0.0) is None  # no σ_x: off
    off = RumParams(method="rum-tv", change_tol=0.0)
    assert stop_reason(hist([0.5 * thr] * 6), off, norm, sx) is None
    assert RumParams(method="rum-pnp").change_tol == 0.0
    assert RumParams(method="rum-pnp").relax == 1.0


def test_stable_stop_sets_the_verdict_before_on_iteration():
    """The engine commits in on_iteration: the verdict must be there at the stopping
    iteration (a resume from that commit must not iterate again)."""
    p = RumParams(method="rum-tv")
    seen = []

    def step(k, rho, rho_next, residuals):
        # relative primal 5e-4 (> tol, < 0.02 σ_x), maps change 1e-6 < 1e-3 σ_x per iteration
        return dict(r_scale=(5e-4**2) * 200, r_simplex=0.0, r_positive=0.0, r_reg=0.0,
                    dual=(rho * 1e-6) ** 2 * 200, data=1.0, reg=1.0)  # fmt: skip

    h = run_admm(
        step, p, 0.1, 100, 2, fraction_noise=0.05,
        on_iteration=lambda k, hh: seen.append((k, hh.converged, hh.stop_reason)),
    )  # fmt: skip
    assert h.n_iterations == 5 and h.stop_reason == "stable" and h.converged
    assert seen[-1] == (4, True, "stable") and all(not c for _, c, _ in seen[:-1])
    assert h.rel_change == pytest.approx(1e-6 / 0.05)
    assert "(stable)" in h.verdict() and "maps change" in h.verdict()


def test_relax_and_change_tol_validation():
    for bad in (0.0, 2.0, -1.0, "1.5"):
        with pytest.raises(ValueError, match="relax must be in"):
            RumParams(method="rum-tv", relax=bad)
    for bad in (-1e-3, float("nan")):
        with pytest.raises(ValueError, match="change_tol must be"):
            RumParams(method="rum-tv", change_tol=bad)
    assert to_flags("relax must be in (0, 2)").startswith("--relax must be")
    assert to_flags("change_tol must be a number").startswith("--change-tol must be")


def test_reduced_chi2_and_r_factor():
    rng = np.random.default_rng(1)
    T, L, n = 60, 2, 4000
    A = np.abs(rng.normal(size=(T, L))) + 0.5
    M = rng.uniform(0.2, 1.0, size=(L, n))
    sigma = 0.05
    Y = A @ M + rng.normal(scale=sigma, size=(T, n))
    AtA, aty, yty = A.T @ A, A.T @ Y, np.sum(Y * Y, axis=0)
    Mfit = np.linalg.solve(AtA, aty)
    r2 = squared_residual(yty, aty, Mfit, AtA)
    np.testing.assert_allclose(r2, np.sum((Y - A @ Mfit) ** 2, axis=0), rtol=1e-8, atol=1e-10)
    chi2 = reduced_chi2(r2, sigma, T, L)
    assert abs(np.median(chi2) - 1.0) < 0.05
    assert r_factor(r2, yty) == pytest.approx(np.sum((Y - A @ Mfit) ** 2) / np.sum(Y * Y))
    q = fit_quality(chi2, r2, yty)
    assert q.ok and q.warning() is None
    # a wrong reference set: the model no longer explains the data
    Abad = A.copy()
    Abad[:, 1] = np.roll(Abad[:, 1], 10)
    AtA, aty = Abad.T @ Abad, Abad.T @ Y
    Mbad = np.linalg.solve(AtA, aty)
    r2b = squared_residual(yty, aty, Mbad, AtA)
    qb = fit_quality(reduced_chi2(r2b, sigma, T, L), r2b, yty)
    assert not qb.ok and qb.chi2_median > 2.0
    assert "--energy-shift auto" in qb.warning() and "\n" not in qb.warning()
    with pytest.raises(ValueError, match="noise_sigma"):
        reduced_chi2(r2, 0.0, T, L)


def _shared_data() -> Path:
    env = os.environ.get("BIGXANES_SHARED_DATA")
    return Path(env) if env else Path(__file__).resolve().parents[3] / "shared" / "data"


STXM = _shared_data() / "stxm_fe_l3"


@pytest.mark.skipif(
    not (STXM / "stack_counts.tif").is_file(), reason=f"real STXM data not found in {STXM}"
)
def test_real_stxm_shifted_references_converge(tmp_path):
    pytest.importorskip("tifffile")
    from bigxanes.cli import main
    from bigxanes.references import read_references
    from bigxanes.store import open_stack

    store = tmp_path / "fe.zarr"
    args = ["import", str(STXM / "stack_counts.tif"), str(store), "-q"]
    args += ["--energies", str(STXM / "energies_eV.txt"), "--i0", str(STXM / "i0_counts.txt")]
    assert main(args) == 0
    files = []
    for name in ("ref_fe2_reduced", "ref_fe3_oxidized"):
        tab = np.loadtxt(STXM / f"{name}.txt", comments="#")
        tab[:, 0] += 3.0  # both references shifted by +3 eV
        f = tmp_path / f"{name}.txt"
        np.savetxt(f, tab, header="energy_eV value")
        files.append(f)
    st = open_stack(store)["stack"].sel(energy=slice(703.0, 727.0)).load()
    E = st["energy"].values
    _, A, _ = read_references(files, energy=E)
    ds = bx.unmix(st, A, method="rum-tv", state_dtype=np.float32)
    h = bx.history_of(ds)
    # before the fix: 500/500 iterations, relative primal residual 0.11, spike to 9 at it. 18
    _assert_converged(h)
    assert ds.attrs["n_iterations"] < 250
    p = _relative_primal(ds)
    assert p.max() < 2.0 * p[0]
