#!/usr/bin/env python
"""Reproduce the protocol of Tables 1 and 2 of the paper on bigxanes' simulated phantoms.

Paper: "Robust retrieval of material chemical states in X-ray microspectroscopy",
Optics Express 2023, Section 3 (Tables 1 and 2).

Table 1: each phantom x noise level sigma in {1, 3, 5, 7} (0-255 scale, see
``bigxanes.simulate``), L = 2 states, 128 x 128, seed 0, methods

* Edge-50 (fractions read off the Edge-50 energy, L = 2 only),
* LCF (per-pixel NNLS),
* RUM-TV (the paper's RUM_ex),
* RUM-PnP with BM3D (the paper's RUM_im uses a learned denoiser / BM3D-type prior),
* RUM-PnP with the built-in TV denoiser (the package's fast, dependency-free option).

Table 2: L in {3, 4, 5} at sigma = 3 (LCF, RUM-TV, RUM-PnP(BM3D), RUM-PnP(tv)); phantoms
particles and wedge, as in the paper (``--phantoms`` overrides).

Scores (``bigxanes.metrics``): the paper's PSNR (max of the estimate / RMSE over all pixels,
averaged over maps) and SSIM, plus foreground PSNR / SSIM (data range 1, on pixels whose true
scale exceeds 10 % of its maximum). Wall-clock seconds per method and case.

All RUM runs use the package defaults (``bigxanes.rum.RumParams``); nothing is tuned per case.

Usage::

    python benchmarks/paper_tables.py                     # both tables (~25+ min with BM3D)
    python benchmarks/paper_tables.py --quick             # particles, sigma 3 and 7, L = 3
    python benchmarks/paper_tables.py --no-bm3d --phantoms wedge --sigmas 3 7
    python benchmarks/paper_tables.py --tables 2

Results go to ``benchmarks/results/paper_table1.md`` / ``paper_table2.md`` (Markdown, with the
command, date, machine and parameters at the top) and a JSON file with the raw numbers next
to them; the tables are also printed.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as _dt
import json
import os
import platform
import shlex
import sys
import time
from pathlib import Path

import numpy as np

import bigxanes
from bigxanes import metrics as M
from bigxanes.api import unmix
from bigxanes.rum import RumParams
from bigxanes.simulate import simulate_to_arrays

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, git_rev  # noqa: E402

# label -> (method, params). Only the denoiser is chosen; everything else is the default.
METHODS = {
    "Edge-50": ("edge50", {}),
    "LCF": ("lcf", {}),
    "RUM-TV": ("rum-tv", {}),
    "RUM-PnP(BM3D)": ("rum-pnp", {"denoiser": "bm3d"}),
    "RUM-PnP(tv)": ("rum-pnp", {"denoiser": "tv"}),
}
RUM_LABELS = ("RUM-TV", "RUM-PnP(BM3D)", "RUM-PnP(tv)")


def run_case(
    phantom: str, sigma: float, L: int, size: int, seed: int, labels: list[str]
) -> list[dict]:
    sim = simulate_to_arrays(phantom, (size, size), L, sigma, seed=seed)
    mask = M.foreground_mask(sim.scale)
    rows = []
    for label in labels:
        method, params = METHODS[label]
        t0 = time.perf_counter()
        ds = unmix(sim.stack, sim.references, method=method, energy=sim.energy, **params)
        dt = time.perf_counter() - t0
        X = np.nan_to_num(np.asarray(ds["fraction_unmasked"].values, dtype=np.float64))
        rows.append(
            {
                "phantom": phantom,
                "sigma": sigma,
                "L": L,
                "method": label,
                "psnr_paper": M.psnr_paper(X, sim.fraction),
                "psnr_fg": M.psnr_foreground(X, sim.fraction, mask),
                "ssim_paper": M.ssim_paper(X, sim.fraction),
                "ssim_fg": M.ssim_foreground(X, sim.fraction, mask),
                "seconds": dt,
                "iterations": ds.attrs.get("n_iterations"),
                "lam": ds.attrs.get("lam"),
                "fg_fraction": float(mask.mean()),
                "params": ds.attrs.get("params"),
            }
        )
        r = rows[-1]
        print(
            f"  {phantom:9s} s={sigma:g} L={L} {label:14s} PSNR {r['psnr_paper']:6.2f} "
            f"fgPSNR {r['psnr_fg']:6.2f} SSIM {r['ssim_paper']:.3f} fgSSIM {r['ssim_fg']:.3f} "
            f"{dt:7.2f} s it={r['iterations']}",
            flush=True,
        )
    return rows


def _fmt(v, nd=2):
    return "—" if v is None else f"{v:.{nd}f}"


def _lg(r: dict) -> str:
    """lam_factor and gamma actually used (from the result's attrs), '—' for LCF / Edge-50."""
    p = r.get("params")
    if not p:
        return "—"
    p = json.loads(p) if isinstance(p, str) else p
    return f"{p.get('lam_factor'):g}, {p.get('gamma'):g}"


def long_table(rows: list[dict], key2: str) -> str:
    head = (
        f"| phantom | {key2} | method | PSNR (paper) | PSNR (fg) | SSIM (paper) | SSIM (fg) "
        "| iterations | seconds | lam_factor, gamma |\n"
        "|---|---|---|---|---|---|---|---|---|---|\n"
    )
    out = []
    for r in rows:
        it = "—" if r["iterations"] is None else str(r["iterations"])
        out.append(
            f"| {r['phantom']} | {r[key2]:g} | {r['method']} | {_fmt(r['psnr_paper'])} | "
            f"{_fmt(r['psnr_fg'])} | {_fmt(r['ssim_paper'], 3)} | {_fmt(r['ssim_fg'], 3)} "
            f"| {it} | {_fmt(r['seconds'])} | {_lg(r)} |"
        )
    return head + "\n".join(out) + "\n"


def gain_table(rows: list[dict], key2: str) -> str:
    """Foreground and paper PSNR gains of each RUM variant over LCF."""
    groups: dict[tuple, dict] = {}
    for r in rows:
        groups.setdefault((r["phantom"], r[key2]), {})[r["method"]] = r
    labels = [m for m in RUM_LABELS if any(m in g for g in groups.values())]
    head = (
        f"| phantom | {key2} | LCF fg PSNR | "
        + " | ".join(f"{m} − LCF (fg / paper dB)" for m in labels)
        + " |\n|"
        + "---|" * (3 + len(labels))
        + "\n"
    )
    out = []
    for (ph, k), g in groups.items():
        if "LCF" not in g:
            continue
        lcf = g["LCF"]
        cells = []
        for m in labels:
            if m in g:
                cells.append(
                    f"{g[m]['psnr_fg'] - lcf['psnr_fg']:+.2f} / "
                    f"{g[m]['psnr_paper'] - lcf['psnr_paper']:+.2f}"
                )
            else:
                cells.append("—")
        out.append(f"| {ph} | {k:g} | {lcf['psnr_fg']:.2f} | " + " | ".join(cells) + " |")
    return head + "\n".join(out) + "\n"


def rum_dirty() -> bool:
    import subprocess

    try:
        root = Path(__file__).resolve().parent.parent
        out = subprocess.run(
            ["git", "status", "--porcelain", "bigxanes/rum.py"],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        return bool(out.strip())
    except Exception:  # noqa: BLE001
        return False


def cases_line(rows: list[dict], key2: str) -> str:
    """The cases present in the table, with the methods run on each (all rows, merged)."""
    by: dict[tuple, list[str]] = {}
    for r in rows:
        by.setdefault((r["phantom"], r[key2]), []).append(r["method"])
    parts = [f"{ph} {key2}={k:g} [{', '.join(ms)}]" for (ph, k), ms in by.items()]
    return "Cases: " + "; ".join(parts)


def this_command() -> str:
    return " ".join(shlex.quote(a) for a in [Path(sys.executable).name] + sys.argv)


def header(title: str, args, extra: str, commands: list[str]) -> str:
    ob = {
        k: os.environ.get(k)
        for k in (
            "OPENBLAS_CORETYPE",
            "OPENBLAS_L2_SIZE",
            "OMP_NUM_THREADS",
            "OPENBLAS_NUM_THREADS",
        )
    }
    cmd = "`, `".join(commands)
    tv = dataclasses.asdict(RumParams(method="rum-tv"))
    pnp_b = dataclasses.asdict(RumParams(method="rum-pnp", denoiser="bm3d"))
    pnp_t = dataclasses.asdict(RumParams(method="rum-pnp", denoiser="tv"))
    try:
        import bm3d  # noqa: F401

        bm3d_ver = getattr(bm3d, "__version__", "installed")
    except ImportError:
        bm3d_ver = "not installed"
    return (
        f"# {title}\n\n"
        f"- Command(s): `{cmd}` (run from the repository root"
        + (", in this order; later rows replace earlier ones" if len(commands) > 1 else "")
        + ")\n"
        f"- Date: {_dt.datetime.now().isoformat(timespec='seconds')}, git HEAD {git_rev()}"
        f"{' + uncommitted changes to bigxanes/rum.py' if rum_dirty() else ''} "
        "(results reflect the working tree at run time)\n"
        f"- Machine: {platform.platform()}, {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} logical CPUs (shared; timings are indicative), Python "
        f"{platform.python_version()}, NumPy {np.__version__}, bigxanes {bigxanes.__version__}, "
        f"bm3d {bm3d_ver}\n"
        f"- Environment: {', '.join(f'{k}={v}' for k, v in ob.items())} "
        "(None = unset)\n"
        f"- Data: `simulate_to_arrays(phantom, ({args.size}, {args.size}), L, sigma, "
        f"seed={args.seed})`; noise std = sigma/255 · max(clean stack)\n"
        f"- {extra}\n"
        "- Parameters: package defaults, identical for every case (no per-case tuning).\n"
        f"  - RUM-TV: `{json.dumps(tv)}`\n"
        f"  - RUM-PnP(BM3D): `{json.dumps(pnp_b)}`\n"
        f"  - RUM-PnP(tv): `{json.dumps(pnp_t)}`\n"
        "  - LCF: per-pixel NNLS, fractions = m / 1ᵀm. Edge-50: level 0.5, e0 from the mean "
        "spectrum, fractions from the references' Edge-50 energies (L = 2 only).\n"
        "- Metrics: PSNR/SSIM (paper) = eqs. 11-13 over all pixels, MAX = max of the estimate, "
        "averaged over the L maps; fg = data range 1, pixels with true scale > 10 % of max "
        "(`bigxanes.metrics.foreground_mask`). SSIM: 7x7 uniform window, data range 1.\n\n"
    )


def write(path: Path, text: str, rows: list[dict], commands: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.with_suffix(".json").write_text(json.dumps({"commands": commands, "rows": rows}, indent=1))


def load_previous(path: Path, merge: bool) -> tuple[list[dict], list[str]]:
    j = path.with_suffix(".json")
    if not merge or not j.exists():
        return [], []
    d = json.loads(j.read_text())
    return d.get("rows", []), d.get("commands", [])


def merged(old: list[dict], new: list[dict], key2: str) -> list[dict]:
    def k(r):
        return (r["phantom"], r[key2], r["method"])

    keys = {k(r) for r in new}
    rows = [r for r in old if k(r) not in keys] + new
    ph_order = {p: i for i, p in enumerate(["particles", "electrode", "wedge"])}
    m_order = {m: i for i, m in enumerate(METHODS)}
    return sorted(
        rows, key=lambda r: (ph_order.get(r["phantom"], 9), r[key2], m_order.get(r["method"], 9))
    )


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--quick", action="store_true", help="particles only, sigma 3 and 7, Table 2 only L = 3"
    )
    ap.add_argument(
        "--phantoms", nargs="+", default=None, choices=["particles", "electrode", "wedge"]
    )
    ap.add_argument("--sigmas", nargs="+", type=float, default=None)
    ap.add_argument("--Ls", nargs="+", type=int, default=None, help="Table 2 state counts")
    ap.add_argument("--no-bm3d", action="store_true", help="skip RUM-PnP(BM3D) (slow)")
    ap.add_argument(
        "--methods",
        nargs="+",
        default=None,
        choices=list(METHODS),
        help="run only these methods (default: all)",
    )
    ap.add_argument(
        "--merge",
        action="store_true",
        help="add the new rows to the existing results (JSON next to the .md), "
        "replacing rows of the same case and method; the header lists every "
        "command that contributed",
    )
    ap.add_argument("--tables", nargs="+", type=int, default=[1, 2], choices=[1, 2])
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out-dir", type=Path, default=RESULTS)
    args = ap.parse_args(argv)

    phantoms = args.phantoms or (
        ["particles"] if args.quick else ["particles", "electrode", "wedge"]
    )
    phantoms2 = args.phantoms or (["particles"] if args.quick else ["particles", "wedge"])
    sigmas = args.sigmas or ([3.0, 7.0] if args.quick else [1.0, 3.0, 5.0, 7.0])
    Ls = args.Ls or ([3] if args.quick else [3, 4, 5])
    labels1 = [m for m in (args.methods or METHODS) if not (args.no_bm3d and "BM3D" in m)]
    labels2 = [m for m in labels1 if m != "Edge-50"]
    t_start = time.perf_counter()

    if 1 in args.tables:
        rows: list[dict] = []
        out = args.out_dir / "paper_table1.md"
        old, cmds = load_previous(out, args.merge)
        cmds = cmds + [this_command()]
        print(f"Table 1: {phantoms} x sigma {sigmas}, L = 2", flush=True)
        for ph in phantoms:
            for sg in sigmas:
                rows += run_case(ph, sg, 2, args.size, args.seed, labels1)
                allr = merged(old, rows, "sigma")
                text = (
                    header(
                        "Paper Table 1 protocol (L = 2, noise sweep)",
                        args,
                        cases_line(allr, "sigma") + ", L = 2",
                        cmds,
                    )
                    + "## RUM gain over LCF (PSNR dB: foreground / paper)\n\n"
                    + gain_table(allr, "sigma")
                    + "\n## All scores\n\n"
                    + long_table(allr, "sigma")
                )
                write(out, text, allr, cmds)  # after every case: partial results survive
        print("\n" + text, flush=True)

    if 2 in args.tables:
        rows = []
        out = args.out_dir / "paper_table2.md"
        old, cmds = load_previous(out, args.merge)
        cmds = cmds + [this_command()]
        print(f"Table 2: {phantoms2} x L {Ls}, sigma = 3", flush=True)
        for ph in phantoms2:
            for L in Ls:
                rows += run_case(ph, 3.0, L, args.size, args.seed, labels2)
                allr = merged(old, rows, "L")
                text = (
                    header(
                        "Paper Table 2 protocol (L = 3, 4, 5 at sigma = 3)",
                        args,
                        cases_line(allr, "L") + ", sigma = 3",
                        cmds,
                    )
                    + "## RUM gain over LCF (PSNR dB: foreground / paper)\n\n"
                    + gain_table(allr, "L")
                    + "\n## All scores\n\n"
                    + long_table(allr, "L")
                )
                write(out, text, allr, cmds)
        print("\n" + text, flush=True)

    print(f"total {time.perf_counter() - t_start:.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
