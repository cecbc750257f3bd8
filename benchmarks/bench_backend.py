"""Whole in-memory RUM runs on the two iteration backends, each in a fresh process (issue 15,
the default of ``RumParams.backend``); not run in CI.

For each image size and method, ``bx.unmix`` on a simulated particles phantom (L = 2,
``max_iter`` fixed, ``tol`` tiny so every run does the same iterations) in a new Python process,
once with ``backend="numpy"`` and once with ``backend="numba"``. Reports the wall time of the
whole process (imports, numba compile or cache load, pass 1, iterations) and the median
seconds per iteration from the run's history. The size where numba's one-time cost is paid
back sets ``bigxanes.rum.AUTO_NUMBA_PIXELS``.

    python benchmarks/bench_backend.py [--sizes 64,128,256,512] [--iters 40]

Writes ``benchmarks/results/bench_backend.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time

from _common import RESULTS, git_rev

CHILD = """
import json, sys, time
t0 = time.perf_counter()
import numpy as np
import bigxanes as bx
from bigxanes.simulate import simulate
n, method, backend, iters = int(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4])
sim = simulate("particles", (n, n), 2, sigma=3.0, seed=0)
t1 = time.perf_counter()
ds = bx.unmix(sim["stack"], sim["references"], method=method, backend=backend,
              max_iter=iters, tol=1e-12, denoiser="tv")
t2 = time.perf_counter()
h = bx.history_of(ds)
print(json.dumps({"unmix": t2 - t1, "setup": t1 - t0, "it": float(np.median(h["seconds"])),
                  "n": len(h["iteration"])}))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="64,128,256,512")
    ap.add_argument("--iters", type=int, default=40)
    ap.add_argument("--methods", default="rum-tv,rum-pnp")
    ap.add_argument("--no-write", action="store_true")
    a = ap.parse_args()
    rows = []
    for method in a.methods.split(","):
        for n in (int(v) for v in a.sizes.split(",")):
            res = {}
            for backend in ("numpy", "numba"):
                t0 = time.perf_counter()
                p = subprocess.run(
                    [sys.executable, "-c", CHILD, str(n), method, backend, str(a.iters)],
                    capture_output=True,
                    text=True,
                    check=True,
                )
                wall = time.perf_counter() - t0
                res[backend] = {**json.loads(p.stdout.strip().splitlines()[-1]), "wall": wall}
            u, b = res["numpy"], res["numba"]
            rows.append(
                f"| {method} | {n}² | {u['wall']:.2f} | {b['wall']:.2f} | "
                f"{u['unmix']:.2f} | {b['unmix']:.2f} | {u['it'] * 1e3:.1f} | "
                f"{b['it'] * 1e3:.1f} | {u['it'] / b['it']:.2f} |"
            )
            print(rows[-1], flush=True)
    text = "\n".join(
        [
            "# RUM in memory, NumPy vs numba backend, fresh process each (bench_backend.py)",
            "",
            f"git {git_rev()}, {platform.machine()}, {os.cpu_count()} cores, load average "
            f"{os.getloadavg()[0]:.1f} at the end (shared machine: the rows are not from an idle "
            f"machine); particles phantom, L = 2, {a.iters} iterations each, TV denoiser for PnP.",
            "process = whole Python process (imports, numba compile/cache load, simulation, "
            "run); unmix = the bx.unmix call; iteration = median seconds per iteration.",
            "",
            "| method | image | process numpy s | process numba s | unmix numpy s | "
            "unmix numba s | iteration numpy ms | iteration numba ms | numpy/numba per "
            "iteration |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|",
            *rows,
        ]
    )
    print(text)
    if not a.no_write:
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / "bench_backend.md").write_text(text + "\n")


if __name__ == "__main__":
    main()
