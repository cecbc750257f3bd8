#!/usr/bin/env python
"""Calibration of ``fraction_std`` and the effect of counting-noise weights (issue 14, items 3, 5).

Data: ``simulate_to_arrays(phantom, shape, L, sigma, poisson, seed)`` (no baseline), truth known.

Table 1 — calibration. Per case (L, noise) and method, on foreground pixels (true scale > 10 %
of its max), the standardized errors ``z = (estimate - truth) / std`` over all components:
spread ``std(z)`` (target 0.8-1.25), coverage of the 1σ and 2σ intervals (targets ~68 %,
~95 %); for LCF also on the pixels whose NNLS constraint is inactive (``constraint_active``
False: the std there is the first-order covariance, elsewhere an upper bound).
Methods and their std:

* ``lcf``: NNLS; :func:`lcf_fraction_std` with σ̂² per pixel from its residual.
* ``lcf-w``: weighted NNLS (IRLS counting weights, I0 known); std ``(AᵀWA)⁻¹`` (Poisson only).
* ``rum-tv/linearized``: RUM-TV fractions with the LCF covariance evaluated at the RUM solution
  and its residual (no account of the prior: expected too conservative); this is the
  ``fraction_std`` that RUM results carry.
* ``rum-tv/risk``: :func:`rum_fraction_std` (Stein risk relative to the LCF variance, 5 px box,
  3 px edge spreading) with ``K`` perturbed RUM re-solves at the same λ (noise std per pixel
  from the LCF residual).
* ``rum-tv/perturb``: the std of the K perturbed re-solves alone (variance only, no bias).

Table 2 — weights at low dose (Poisson, several I0): foreground RMSE / PSNR (range 1) of LCF
unweighted, weighted with I0 known, weighted with the dose estimated from the residual, RUM-TV
unweighted, RUM-TV with the weighted M-step (``weighted_m_step``, I0 known).

Writes ``benchmarks/results/uncertainty.md`` and ``.json``.

Usage::

    python benchmarks/bench_uncertainty.py                 # ~3-6 min on 2 shared cores
    python benchmarks/bench_uncertainty.py --quick         # smaller images, K=2
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import platform
import shlex
import sys
import time
from pathlib import Path

import numpy as np

from bigxanes.kernels.admm import RESIDUALS, StateLayout, admm_iteration, initial_state
from bigxanes.kernels.lcf import (
    fractions_from_coefficients,
    lstsq_coefficients,
    nnls_coefficients,
    nnls_coefficients_pixelwise,
)
from bigxanes.kernels.uncertainty import (
    constraint_active,
    lcf_fraction_std,
    perturbation_moments,
    rum_fraction_std,
)
from bigxanes.kernels.weights import (
    irls_weights,
    weighted_data_misfit,
    weighted_m_step,
    weighted_normal_equations,
)
from bigxanes.metrics import foreground_mask
from bigxanes.rum import (
    RumParams,
    final_maps,
    noise_variance,
    resolve_lambda,
    robust_scale,
    run_admm,
    unmix_rum_array,
)
from bigxanes.simulate import simulate_to_arrays

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, git_rev  # noqa: E402


def calib(z: np.ndarray) -> dict:
    """Spread (over finite z) and coverage; a zero std with a non-zero error (z = ±inf) counts
    as not covered; NaN (no material, or 0/0) is left out."""
    z = z[~np.isnan(z)]
    fin = np.isfinite(z)
    return {
        "spread": float(np.std(z[fin])),
        "cov1": float(np.mean(np.abs(z) < 1)),
        "cov2": float(np.mean(np.abs(z) < 2)),
        "n": int(z.size),
        "n_inf": int(np.count_nonzero(~fin)),
    }


def rum_weighted(Y: np.ndarray, A: np.ndarray, w: np.ndarray, params: RumParams):
    """RUM with the weighted M-step, without touching kernels/admm.py.

    Runs :func:`admm_iteration` and then redoes step 4 with :func:`weighted_m_step` and the
    C-update and residual channels that depend on M. Exact: X, s, U, W, t of an iteration do
    not depend on that iteration's M, and the next iteration reads the patched M and C.
    Weights are normalized to mean 1 over the image so λ = "auto" keeps its meaning.
    """
    T, L = A.shape
    spatial = Y.shape[1:]
    layout = StateLayout(L, len(spatial), params.reg)
    Yf = Y.reshape(T, -1)
    w = w / w.mean()
    G, b, cc = weighted_normal_equations(A, Yf, w)
    M0 = nnls_coefficients_pixelwise(G, b)
    c = robust_scale(M0.sum(axis=0))
    rss = weighted_data_misfit(G, b, cc, M0)
    nv = noise_variance(float(np.maximum(rss, 0).sum()), Yf.shape[1], T, L, c)
    lam = resolve_lambda(params, nv, A, c)
    Gs = G.reshape((L, L) + spatial)
    bs = (b / c).reshape((L,) + spatial)
    ccs = (cc / (c * c)).reshape(spatial)
    S = initial_state(bs, ccs, (M0 / c).reshape((L,) + spatial), layout)
    sl = layout.slices
    n = layout.n_channels
    holder = {"S": S}
    AtA = A.T @ A

    def step(k: int, rho: float, rho_next: float, residuals: bool = True) -> dict[str, float]:
        S0 = holder["S"]
        out = admm_iteration(
            S0, layout=layout, AtA=AtA, lam=lam, rho=rho, rho_next=rho_next, tv_sweeps=10
        )
        X, s = out[sl["X"]], out[sl["s"]][0]
        C0, Mp = S0[sl["C"]], S0[sl["M"]]
        Xs = X * s
        Mw = weighted_m_step(Gs, bs, Xs, C0, rho)
        out[sl["M"]] = Mw
        out[sl["C"]] = (C0 + Xs - Mw) * (rho / rho_next)
        out[n + 0] = np.sum((Xs - Mw) ** 2, axis=0)
        out[n + 4] = rho * rho * np.sum((Mw - Mp) ** 2, axis=0)
        out[n + 5] = weighted_data_misfit(Gs, bs, ccs, Mw)
        holder["S"] = out[:n]
        return {name: float(out[n + i].sum()) for i, name in enumerate(RESIDUALS)}

    run_admm(step, params, lam, Yf.shape[1], L)
    X, _, _ = final_maps(holder["S"], layout, c)
    return X


def rmse_psnr(X, truth, fg):
    L = X.shape[0]
    e = X.reshape(L, -1)[:, fg] - truth.reshape(L, -1)[:, fg]
    mse = np.mean(e * e, axis=1)
    return float(np.sqrt(np.mean(mse))), float(np.mean(-10 * np.log10(mse)))


def calibration_case(L, sigma, dose, shape, K, seed, params):
    sim = simulate_to_arrays("particles", shape, L, sigma=sigma, poisson=dose, seed=seed)
    T = sim.stack.shape[0]
    A = sim.references
    Yf = sim.stack.reshape(T, -1)
    fg = foreground_mask(sim.scale).ravel()
    truth = sim.fraction.reshape(L, -1)
    AtA = A.T @ A
    rows = {}

    def z_of(X, sd, pix=fg):
        with np.errstate(divide="ignore", invalid="ignore"):
            return ((X.reshape(L, -1) - truth) / sd.reshape(L, -1))[:, pix]

    M = nnls_coefficients(AtA, A.T @ Yf)
    X, _ = fractions_from_coefficients(M)
    rss = np.sum((Yf - A @ M) ** 2, axis=0)
    sd = lcf_fraction_std(M, AtA, rss=rss, n_energies=T)
    free = fg & ~constraint_active(M)
    rows["lcf"] = {**calib(z_of(X, sd)), "interior": calib(z_of(X, sd, free))}
    rows["lcf"]["interior_share"] = float(free.sum() / fg.sum())
    if dose is not None:
        w, Mw = irls_weights(A, Yf, nnls_coefficients_pixelwise, i0=dose)
        G, _, _ = weighted_normal_equations(A, Yf, w)
        Xw, _ = fractions_from_coefficients(Mw)
        sdw = lcf_fraction_std(Mw, G)
        freew = fg & ~constraint_active(Mw)
        rows["lcf-w"] = {**calib(z_of(Xw, sdw)), "interior": calib(z_of(Xw, sdw, freew))}

    # RUM-TV and its std estimates
    sigma_pix = np.sqrt(rss / (T - L))  # per-pixel noise std from the LCF residual
    noise_std = np.broadcast_to(sigma_pix.reshape((1,) + shape), sim.stack.shape)

    t0 = time.perf_counter()
    xr, _, Mrum, _, init = unmix_rum_array(sim.stack, A, params)
    t_rum = time.perf_counter() - t0
    # the re-solves keep the λ of the estimate ("auto" would grow with the added noise)
    fixed = RumParams(method=params.method, lam=init.lam)

    def solve(Y):
        Xr, _, _, _, _ = unmix_rum_array(Y, A, fixed)
        Ml = lstsq_coefficients(AtA, A.T @ Y.reshape(T, -1))
        Xl, _ = fractions_from_coefficients(Ml)
        return Xr, Xl.reshape((L,) + shape)

    xl = fractions_from_coefficients(lstsq_coefficients(AtA, A.T @ Yf))[0].reshape((L,) + shape)
    # linearized LCF covariance at the RUM solution and residual: the `fraction_std` of RUM
    # results (kernels.maps.rum_outputs_block)
    Mr = Mrum.reshape(L, -1)
    rss_r = np.sum((Yf - A @ Mr) ** 2, axis=0)
    sd_lin = lcf_fraction_std(Mr, AtA, rss=rss_r, n_energies=T)
    rows["rum-tv/linearized"] = calib(z_of(xr, sd_lin))
    rng = np.random.default_rng([seed, 77])
    t0 = time.perf_counter()
    var_p, cov_p = perturbation_moments(solve, sim.stack, noise_std, K, rng, reference=(xr, xl))
    t_pert = time.perf_counter() - t0
    Ml = lstsq_coefficients(AtA, A.T @ Yf)
    rss_l = np.sum((Yf - A @ Ml) ** 2, axis=0)
    var_l = lcf_fraction_std(Ml, AtA, rss=rss_l, n_energies=T).reshape((L,) + shape) ** 2
    sd_risk = rum_fraction_std(xr, xl, var_l, var_p, cov_p)
    rows["rum-tv/risk"] = calib(z_of(xr, sd_risk))
    rows["rum-tv/perturb"] = calib(z_of(xr, np.sqrt(var_p)))
    rmse = {
        "lcf": rmse_psnr(X, truth, fg),
        "rum-tv": rmse_psnr(xr, truth, fg),
    }
    return rows, rmse, {"rum_s": t_rum, "perturb_s": t_pert}


def weights_case(L, dose, shape, seed, params, with_rum):
    sim = simulate_to_arrays("particles", shape, L, sigma=0.0, poisson=dose, seed=seed)
    T = sim.stack.shape[0]
    A = sim.references
    Yf = sim.stack.reshape(T, -1)
    fg = foreground_mask(sim.scale).ravel()
    truth = sim.fraction
    out = {}
    M = nnls_coefficients(A.T @ A, A.T @ Yf)
    out["lcf"] = rmse_psnr(fractions_from_coefficients(M)[0], truth, fg)
    w, Mw = irls_weights(A, Yf, nnls_coefficients_pixelwise, i0=dose)
    out["lcf-w(I0)"] = rmse_psnr(fractions_from_coefficients(Mw)[0], truth, fg)
    _, Me = irls_weights(A, Yf, nnls_coefficients_pixelwise, pixels=fg)
    out["lcf-w(est)"] = rmse_psnr(fractions_from_coefficients(Me)[0], truth, fg)
    if with_rum:
        Xr, _, _, _, _ = unmix_rum_array(sim.stack, A, params)
        out["rum-tv"] = rmse_psnr(Xr, truth, fg)
        Xw = rum_weighted(sim.stack, A, w, params)
        out["rum-tv-w(I0)"] = rmse_psnr(Xw, truth, fg)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-rum", action="store_true", help="skip RUM in the weights table")
    args = ap.parse_args()
    shape = (48, 48) if args.quick else (64, 64)
    K = 2 if args.quick else 4
    params = RumParams(method="rum-tv")
    cal_cases = [
        (2, 3.0, None),
        (2, 7.0, None),
        (3, 3.0, None),
        (3, 7.0, None),
        (2, 0.0, 300.0),
        (3, 0.0, 300.0),
    ]
    doses = [30.0, 100.0, 300.0]
    t_all = time.perf_counter()
    calibration = []
    for L, sigma, dose in cal_cases:
        rows, rmse, secs = calibration_case(L, sigma, dose, shape, K, args.seed, params)
        calibration.append(
            {"L": L, "sigma": sigma, "dose": dose, "rows": rows, "rmse": rmse, **secs}
        )
        print(L, sigma, dose, json.dumps(rows), flush=True)
    weights = []
    for L in (2, 3):
        for dose in doses:
            r = weights_case(L, dose, shape, args.seed, params, not args.no_rum)
            weights.append({"L": L, "dose": dose, **r})
            print(L, dose, r, flush=True)
    total = time.perf_counter() - t_all

    lines = [
        "# fraction_std calibration and counting-noise weights",
        "",
        f"Command: `{' '.join(shlex.quote(a) for a in ['python', *sys.argv])}`  ",
        f"Date: {_dt.datetime.now(_dt.UTC).isoformat(timespec='seconds')}, git {git_rev()}, "
        f"{platform.node()} ({platform.processor() or platform.machine()}), "
        f"total {total:.0f} s (shared 2-core machine).  ",
        f"Data: simulate_to_arrays('particles', {shape}, L, sigma, poisson, seed={args.seed}); "
        f"RUM-TV with package defaults; K = {K} perturbed re-solves; foreground = true scale > "
        "10 % of max. z = (estimate - truth) / std over all components and foreground pixels.",
        "",
        "## 1. Calibration (targets: spread 0.8-1.25, 1σ ~68 %, 2σ ~95 %)",
        "",
        "| L | noise | method / std | spread | 1σ cover | 2σ cover | interior 2σ (share) |",
        "|---|---|---|---|---|---|---|",
    ]
    for c in calibration:
        noise = f"Poisson I0={c['dose']:g}" if c["dose"] else f"Gauss σ={c['sigma']:g}"
        for name, r in c["rows"].items():
            inner = ""
            if "interior" in r:
                share = r.get("interior_share")
                inner = f"{100 * r['interior']['cov2']:.1f} %" + (
                    f" ({100 * share:.0f} %)" if share is not None else ""
                )
            lines.append(
                f"| {c['L']} | {noise} | {name} | {r['spread']:.2f} | {100 * r['cov1']:.1f} % | "
                f"{100 * r['cov2']:.1f} % | {inner} |"
            )
    lines += [
        "",
        "RMSE (foreground) and seconds per case:",
        "",
        "| L | noise | LCF RMSE | RUM-TV RMSE | RUM s | K re-solves s |",
        "|---|---|---|---|---|---|",
    ]
    for c in calibration:
        noise = f"Poisson I0={c['dose']:g}" if c["dose"] else f"Gauss σ={c['sigma']:g}"
        lines.append(
            f"| {c['L']} | {noise} | {c['rmse']['lcf'][0]:.4f} | {c['rmse']['rum-tv'][0]:.4f} | "
            f"{c['rum_s']:.1f} | {c['perturb_s']:.1f} |"
        )
    keys = [k for k in weights[0] if k not in ("L", "dose")]
    lines += [
        "",
        "## 2. Counting-noise weights at low dose (Poisson only; foreground RMSE / PSNR dB)",
        "",
        "| L | I0 | " + " | ".join(keys) + " |",
        "|---|---|" + "---|" * len(keys),
    ]
    for r in weights:
        cells = " | ".join(f"{r[k][0]:.4f} / {r[k][1]:.2f}" for k in keys)
        lines.append(f"| {r['L']} | {r['dose']:g} | {cells} |")
    text = "\n".join(lines) + "\n"
    RESULTS.mkdir(exist_ok=True)
    stem = "uncertainty_quick" if args.quick else "uncertainty"
    (RESULTS / f"{stem}.md").write_text(text)
    (RESULTS / f"{stem}.json").write_text(
        json.dumps({"calibration": calibration, "weights": weights}, indent=1)
    )
    print(text)


if __name__ == "__main__":
    main()
