"""Iterations and seconds to solution of default RUM-TV on the phantoms (issue 15 item 3).

For each phantom, runs the default in-memory RUM-TV iteration by iteration (the same kernel,
ρ rule and stopping rule as ``bigxanes.rum.run_admm``) and records the foreground PSNR of the
fractions after every iteration. Reports: iterations to the stopping rule, the best PSNR along
the trajectory and where, the first iteration within 0.1 dB of that best, the final PSNR and
its distance below the peak, and seconds. Run it against any checkout to compare code
versions, e.g. from the repository root::

    PYTHONPATH=/work/main python benchmarks/bench_convergence.py --label before
    PYTHONPATH=. python benchmarks/bench_convergence.py --label after

Writes ``benchmarks/results/convergence_<label>.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, git_rev  # noqa: E402

import bigxanes.metrics as metrics  # noqa: E402
from bigxanes.kernels.admm import RESIDUALS, StateLayout, admm_iteration, initial_state  # noqa: E402
from bigxanes.kernels.lcf import nnls_coefficients  # noqa: E402
from bigxanes.rum import (  # noqa: E402
    History,
    RumParams,
    final_maps,
    history_entry,
    next_rho,
    noise_variance,
    resolve_lambda,
    robust_scale,
)
from bigxanes.simulate import simulate_to_arrays  # noqa: E402


def trajectory(phantom: str, size: int, sigma: float, seed: int) -> dict:
    """Default RUM-TV (float64 state, no baseline: simulated data) with PSNR per iteration."""
    sim = simulate_to_arrays(phantom, (size, size), 2, sigma, seed=seed)
    p = RumParams(method="rum-tv")
    Y = np.asarray(sim.stack, dtype=np.float64)
    A = np.asarray(sim.references, dtype=np.float64)
    T, L = A.shape
    spatial = Y.shape[1:]
    layout = StateLayout(L, len(spatial), p.reg)
    Yf = Y.reshape(T, -1)
    t0 = time.perf_counter()
    AtA, aty, yty = A.T @ A, A.T @ Yf, np.einsum("tn,tn->n", Yf, Yf)
    M0 = nnls_coefficients(AtA, aty)
    r0 = yty - 2 * np.sum(M0 * aty, 0) + np.sum(M0 * (AtA @ M0), 0)
    c = robust_scale(M0.sum(axis=0))
    lam = resolve_lambda(
        p, noise_variance(float(np.maximum(r0, 0).sum()), Yf.shape[1], T, L, c), A, c
    )
    S = initial_state(
        (aty / c).reshape((L,) + spatial),
        (yty / c**2).reshape(spatial),
        (M0 / c).reshape((L,) + spatial),
        layout,
    )
    mask = metrics.foreground_mask(sim.scale)
    n = layout.n_channels
    h, rho, psnr, secs = History(), float(p.rho), [], []
    for k in range(int(p.max_iter)):
        rho_next = next_rho(p, k, rho, h)
        t1 = time.perf_counter()
        out = admm_iteration(S, layout=layout, AtA=AtA, lam=lam, rho=rho, rho_next=rho_next)
        S = out[:n]
        sums = {name: float(out[n + i].sum()) for i, name in enumerate(RESIDUALS)}
        rp, rd = history_entry(h, k, rho, sums, lam, Yf.shape[1], L, 0.0)
        rho = rho_next
        X, _, _ = final_maps(S, layout, c)
        psnr.append(metrics.psnr_foreground(X, sim.fraction, mask))
        secs.append(time.perf_counter() - t1 + (t1 - t0 if k == 0 else 0.0))
        if rp < p.tol and rd < p.tol:
            break
    ps = np.asarray(psnr)
    best = float(ps.max())
    within = int(np.argmax(ps >= best - 0.1))
    cum = np.cumsum(secs)
    return {
        "phantom": phantom,
        "iterations": len(ps),
        "converged": bool(rp < p.tol and rd < p.tol),
        "final_rho": rho,
        "best_psnr": best,
        "best_at": int(ps.argmax()) + 1,
        "within_0.1dB_at": within + 1,
        "final_psnr": float(ps[-1]),
        "final_below_peak_dB": best - float(ps[-1]),
        "seconds_to_stop": float(cum[-1]),
        "seconds_to_within_0.1dB": float(cum[within]),
        "psnr": [round(float(v), 3) for v in ps],
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--label", default="after")
    ap.add_argument("--phantoms", nargs="+", default=["particles", "electrode", "wedge"])
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--sigma", type=float, default=7.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tag", default="", help="suffix of the result files")
    args = ap.parse_args(argv)
    rows = []
    for ph in args.phantoms:
        r = trajectory(ph, args.size, args.sigma, args.seed)
        rows.append(r)
        print(
            f"{ph:10s} it {r['iterations']:4d} conv {r['converged']!s:5s} best "
            f"{r['best_psnr']:6.2f} dB @ {r['best_at']:4d}  within 0.1 dB @ "
            f"{r['within_0.1dB_at']:4d}  final {r['final_psnr']:6.2f} "
            f"(-{r['final_below_peak_dB']:.2f})  {r['seconds_to_stop']:6.1f} s "
            f"({r['seconds_to_within_0.1dB']:.1f} s to within 0.1 dB)",
            flush=True,
        )
    RESULTS.mkdir(exist_ok=True)
    meta = {"label": args.label, "git": git_rev(), "size": args.size, "sigma": args.sigma}
    (RESULTS / f"convergence_{args.label}{args.tag}.json").write_text(
        json.dumps({**meta, "rows": rows}, indent=1)
    )
    lines = [
        f"# RUM-TV convergence ({args.label}, git {meta['git']}, {args.size}², sigma "
        f"{args.sigma:g}, seed {args.seed}, default parameters, float64 in memory)\n",
        "| phantom | iterations | converged | best PSNR (it) | within 0.1 dB at | final PSNR "
        "| below peak | s to stop | s to within 0.1 dB |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['phantom']} | {r['iterations']} | {r['converged']} | {r['best_psnr']:.2f} "
            f"({r['best_at']}) | {r['within_0.1dB_at']} | {r['final_psnr']:.2f} | "
            f"{r['final_below_peak_dB']:.2f} | {r['seconds_to_stop']:.1f} | "
            f"{r['seconds_to_within_0.1dB']:.1f} |"
        )
    (RESULTS / f"convergence_{args.label}{args.tag}.md").write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
