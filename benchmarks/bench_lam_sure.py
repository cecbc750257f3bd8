#!/usr/bin/env python
"""``lam="sure"`` against a grid of lam_factor on a subset of the real-spectra benchmark set
(issue 14 item 4).

For each case of :data:`CASES` (test split of benchmarks/bench_realistic.py, seed 2): RUM-TV
foreground PSNR at every ``lam_factor`` of :data:`bigxanes.rum.SURE_GRID`, the grid's best,
and the one Monte-Carlo SURE picks (``unmix(..., lam="sure")``, subsample 48² of the 64²
stack); the miss is best − SURE's pick.

Usage::

    BIGXANES_SHARED_DATA=../shared/data python benchmarks/bench_lam_sure.py   # ~10 min

Writes ``benchmarks/results/lam_sure.md`` and ``.json``.
"""

from __future__ import annotations

import datetime as _dt
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, git_rev  # noqa: E402
from bench_realistic import TEST, label, simulate  # noqa: E402

from bigxanes import metrics as Mt  # noqa: E402
from bigxanes.api import unmix  # noqa: E402
from bigxanes.rum import SURE_GRID  # noqa: E402

#: particles/cathode Ni σ = 3, 7, 15; Poisson I0 = 1e3; Mn L = 2; Ni L = 3; Mn L = 5; wedge σ 7
CASES = [TEST[i] for i in (0, 1, 2, 10, 12, 16, 20, 26, 7)]


def psnr(sim, mask, **kw) -> tuple[float, dict]:
    ds = unmix(sim.stack, sim.references, method="rum-tv", energy=sim.energy, **kw)
    X = np.nan_to_num(np.asarray(ds["fraction"].values, dtype=np.float64))
    return Mt.psnr_foreground(X, sim.fraction, mask), dict(ds.attrs)


def main() -> int:
    t_all = time.perf_counter()
    rows = []
    for c in CASES:
        sim, mask = simulate(c)
        grid = {lf: psnr(sim, mask, lam_factor=lf)[0] for lf in SURE_GRID}
        t0 = time.perf_counter()
        p_sure, attrs = psnr(sim, mask, lam="sure")
        dt = time.perf_counter() - t0
        params = attrs["params"]
        params = json.loads(params) if isinstance(params, str) else params
        best = max(grid, key=grid.get)
        r = {
            "case": label(c),
            "grid": grid,
            "best_lam_factor": best,
            "best": grid[best],
            "sure_lam_factor": params["lam_factor"],
            "sure": p_sure,
            "miss": grid[best] - p_sure,
            "sure_seconds": dt,
        }
        rows.append(r)
        print(json.dumps(r), flush=True)
    head = "| case | " + " | ".join(f"lf {g:g}" for g in SURE_GRID)
    head += " | best (lf) | SURE (lf) | miss dB | SURE s |\n"
    head += "|---" * (len(SURE_GRID) + 5) + "|\n"
    lines = [
        f"| {r['case']} | "
        + " | ".join(f"{r['grid'][g]:.2f}" for g in SURE_GRID)
        + f" | {r['best']:.2f} ({r['best_lam_factor']:g}) | {r['sure']:.2f} "
        f"({r['sure_lam_factor']:g}) | {r['miss']:.2f} | {r['sure_seconds']:.1f} |"
        for r in rows
    ]
    miss = np.array([r["miss"] for r in rows])
    text = (
        "# lam='sure' vs a lam_factor grid (issue 14 item 4)\n\n"
        f"`python benchmarks/bench_lam_sure.py` — {_dt.datetime.now(_dt.UTC):%Y-%m-%d %H:%M} UTC, "
        f"git {git_rev()}, {platform.node()}, total {time.perf_counter() - t_all:.0f} s "
        "(shared 2-core machine). Subset of the test split of bench_realistic (64², seed 2); "
        "RUM-TV defaults otherwise; foreground PSNR (dB).\n\n"
        + head
        + "\n".join(lines)
        + f"\n\nMiss (grid best − SURE's pick): mean {miss.mean():.2f} dB, "
        f"max {miss.max():.2f} dB; {int((miss > 0.5).sum())} of {len(rows)} cases miss by "
        "more than 0.5 dB.\n"
    )
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "lam_sure.md").write_text(text)
    (RESULTS / "lam_sure.json").write_text(json.dumps(rows, indent=1))
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
