#!/usr/bin/env python
"""Counting-noise weights of the data term at low dose (issue 14, item 3): LCF and RUM-TV with
``weights="none"``, ``"counts"`` (I0 given, or estimated from the data) and ``"energy"``.

Stacks are simulated from real reference spectra (:func:`bigxanes.spectra_model.
real_references`: Mn K from ``Mn.prj``, Ni K) on the particles and cathode layouts, with a
smooth ±30 % thickness variation, then turned into photon counts ``I ~ Poisson(I0 e^{-OD})``
and back into ``OD = -ln(I / I0)``. Two optical-depth regimes:

* ``thin``: the simulator's scale (peak OD of the sample ~1.5-1.8 at the white line);
* ``thick``: the sample's OD doubled plus a flat 0.5 OD background from the rest of the
  sample (other elements, support), as in a thick electrode section: the noise variance
  ``e^{OD} / I0`` then changes ~20x between pre-edge and white line and between thin and
  thick pixels; this is where weighting should matter.

Doses I0 = 300, 1000, 10000 photons per pixel and energy. RUM-TV runs at the default λ and at
``lam_factor=0.05`` (matched λ with and without weights: the weights change which pixels are
smoothed more, so a too-strong λ hides their gain). Scores: foreground PSNR of the
fractions (range 1, true scale > 10 % of its maximum), seconds. The I0 "given" is the true
dose; "estimated" uses no I0 (effective dose per energy from the unweighted residual).

Usage::

    python benchmarks/bench_weights.py            # ~6 min on 2 shared cores
    python benchmarks/bench_weights.py --quick    # 4 cases

Writes ``benchmarks/results/weights.md`` and ``weights.json``.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import itertools
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

from bigxanes import metrics as Mt
from bigxanes.api import unmix
from bigxanes.simulate import simulate_to_arrays
from bigxanes.spectra_model import real_references

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, git_rev  # noqa: E402

SHAPE = (64, 64)
REGIMES = {"thin": (1.0, 0.0), "thick": (2.0, 0.5)}  # (OD factor, background OD)
DOSES = (300.0, 1e3, 1e4)
CASES = [
    dict(refs=r, L=L, layout=lay, regime=g, i0=i0)
    for (r, L), lay, g, i0 in itertools.product(
        (("mn", 2), ("ni", 2), ("mn", 3)), ("particles", "cathode"), REGIMES, DOSES
    )
]
QUICK = [c for c in CASES if c["refs"] == "mn" and c["L"] == 2 and c["layout"] == "particles"][::2][
    :4
]
METHODS = {
    "LCF": ("lcf", {}),
    "LCF-counts": ("lcf", {"weights": "counts", "given": True}),
    "LCF-counts(est)": ("lcf", {"weights": "counts"}),
    "LCF-energy": ("lcf", {"weights": "energy"}),
    "RUM-TV": ("rum-tv", {}),
    "RUM-TV-counts": ("rum-tv", {"weights": "counts", "given": True}),
    "RUM-TV-counts(est)": ("rum-tv", {"weights": "counts"}),
    "RUM-TV(lf 0.05)": ("rum-tv", {"lam_factor": 0.05}),
    "RUM-TV-counts(lf 0.05)": ("rum-tv", {"lam_factor": 0.05, "weights": "counts", "given": True}),
}


def counts_stack(c: dict, seed: int = 2):
    """(sim, noisy OD stack, foreground mask) of case ``c`` (see the module docstring)."""
    refs = real_references(c["refs"], c["L"])
    sim = simulate_to_arrays(c["layout"], SHAPE, c["L"], 0.0, None, seed, refs, thickness=0.3)
    k, bg = REGIMES[c["regime"]]
    od = k * np.asarray(sim.stack, dtype=np.float64) + bg
    rng = np.random.default_rng([seed, int(c["i0"])])
    n = rng.poisson(c["i0"] * np.exp(-od))
    noisy = -np.log(np.maximum(n, 1.0) / c["i0"])
    return sim, noisy.astype(np.float32), Mt.foreground_mask(sim.scale)


def score(sim, Y, mask, i0: float, method: str, opts: dict) -> dict:
    opts = dict(opts)
    if opts.pop("given", False):
        opts["i0"] = np.full(Y.shape[0], i0)
    t0 = time.perf_counter()
    ds = unmix(Y, sim.references, method=method, energy=sim.energy, **opts)
    X = np.nan_to_num(np.asarray(ds["fraction_unmasked"].values, dtype=np.float64))
    return {
        "psnr_fg": Mt.psnr_foreground(X, sim.fraction, mask),
        "seconds": time.perf_counter() - t0,
        "iterations": ds.attrs.get("n_iterations"),
    }


def label(c: dict) -> str:
    return f"{c['layout']} {c['refs']} L={c['L']} {c['regime']} I0={c['i0']:.0e}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="4 cases")
    ap.add_argument("--out-dir", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    t_all = time.perf_counter()
    rows = []
    for c in QUICK if args.quick else CASES:
        sim, Y, mask = counts_stack(c)
        r = {"case": label(c), "spec": c}
        r["methods"] = {m: score(sim, Y, mask, c["i0"], *mp) for m, mp in METHODS.items()}
        rows.append(r)
        print(
            f"  {r['case']:38s} "
            + " ".join(f"{m} {s['psnr_fg']:6.2f}" for m, s in r["methods"].items()),
            flush=True,
        )
    names = list(METHODS)
    head = "| case | " + " | ".join(names) + " |\n|---|" + "---|" * len(names) + "\n"
    body = "".join(
        f"| {r['case']} | "
        + " | ".join(f"{r['methods'][m]['psnr_fg']:.2f}" for m in names)
        + " |\n"
        for r in rows
    )

    def gains(regime: str, a: str, b: str) -> str:
        d = [
            r["methods"][a]["psnr_fg"] - r["methods"][b]["psnr_fg"]
            for r in rows
            if r["spec"]["regime"] == regime
        ]
        if not d:
            return "-"
        return f"mean {np.mean(d):+.2f} dB, min {np.min(d):+.2f}, max {np.max(d):+.2f}"

    summary = "\n".join(
        f"- {g}: {a} vs {b}: {gains(g, a, b)}"
        for g in REGIMES
        for a, b in (
            ("LCF-counts", "LCF"),
            ("LCF-counts(est)", "LCF"),
            ("LCF-energy", "LCF"),
            ("RUM-TV-counts", "RUM-TV"),
            ("RUM-TV-counts(est)", "RUM-TV"),
            ("RUM-TV-counts(lf 0.05)", "RUM-TV(lf 0.05)"),
            ("RUM-TV(lf 0.05)", "RUM-TV"),
            ("RUM-TV", "LCF"),
        )
    )
    cmd = "python benchmarks/bench_weights.py" + (" --quick" if args.quick else "")
    text = (
        "# Counting-noise weights at low dose (issue 14, item 3)\n\n"
        f"`{cmd}` — {_dt.datetime.now(_dt.UTC):%Y-%m-%d %H:%M} UTC, git {git_rev()}, "
        f"{platform.node()} ({platform.processor() or platform.machine()}), "
        f"total {time.perf_counter() - t_all:.0f} s. {SHAPE} pixels, seed 2; regimes "
        f"{REGIMES} (OD factor, background OD).\n\n"
        f"## Foreground PSNR (dB)\n\n{head}{body}\n## Gain of the weighted data term\n\n"
        f"{summary}\n"
    )
    args.out_dir.mkdir(parents=True, exist_ok=True)
    stem = "weights_quick" if args.quick else "weights"
    (args.out_dir / f"{stem}.md").write_text(text)
    (args.out_dir / f"{stem}.json").write_text(json.dumps({"command": cmd, "rows": rows}, indent=1))
    print(f"\n{summary}\nwrote {args.out_dir / stem}.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
