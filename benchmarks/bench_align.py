"""Alignment check on the test's simulated drift: shift error, unmixing PSNR, time.

Run: ``python benchmarks/bench_align.py`` (prints a table, writes benchmarks/results/align.md).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "science"))

from test_align import _drifted  # noqa: E402

import bigxanes as bx  # noqa: E402
from bigxanes.align import align  # noqa: E402
from bigxanes.kernels.registration import valid_box  # noqa: E402
from bigxanes.metrics import foreground_mask, psnr_foreground  # noqa: E402


def main() -> None:
    ds, und, moved, d = _drifted()
    t = time.perf_counter()
    al, tab = align(moved)
    dt = time.perf_counter() - t
    err = tab["shift"].values - d
    box = valid_box(und.shape[1:], tab["shift"].values)
    sl = (slice(None),) + box
    A = ds["references"]
    truth = ds["true_fraction"].values[sl]
    fg = foreground_mask(ds["true_scale"].values[box])
    rows = [
        f"| stack | (100, 96, 96), sigma 3, drift max {np.abs(d).max():.2f} px |",
        f"| shift RMS error | {np.sqrt((err**2).sum(1).mean()):.3f} px |",
        f"| shift max error | {np.abs(err).max():.3f} px |",
        f"| align time (estimate + apply) | {dt:.1f} s |",
        f"| cropped shape | {tuple(al.shape)} |",
    ]
    for name, s in [("aligned", al), ("undrifted", und[sl]), ("drifted", moved[sl])]:
        p = psnr_foreground(bx.lcf(s, A)["fraction_unmasked"].values, truth, fg)
        rows.append(f"| LCF foreground PSNR, {name} | {p:.2f} dB |")
    text = "| quantity | value |\n|---|---|\n" + "\n".join(rows) + "\n"
    print(text)
    out = ROOT / "benchmarks" / "results" / "align.md"
    out.write_text("# bench_align.py\n\n" + text)


if __name__ == "__main__":
    main()
