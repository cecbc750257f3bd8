"""Many chunks: a 2-D stack cut into >= 10,000 chunks runs LCF to completion; scheduler
overhead per chunk.

    python benchmarks/bench_many_chunks.py [--size 1000] [--tile 10] [--energies 4]
        [--schedulers synchronous,threads,distributed] [--out benchmarks/results/many_chunks.md]

Overhead per chunk = (wall time of the run - wall time of the same run with ONE chunk) /
number of chunks: the cost the scheduler, the task graph and the per-chunk Zarr I/O add.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import xarray as xr


def make_stack(path: Path, n: int, tile: int, T: int) -> np.ndarray:
    from bigxanes.store import write_dataset

    e = np.linspace(-1.0, 1.0, T)
    A = np.stack([1 / (1 + np.exp(-(e + 0.1) / 0.1)), 1 / (1 + np.exp(-(e - 0.1) / 0.1))], 1)
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:n, 0:n]
    x2 = 0.5 + 0.5 * np.sin(yy / 37.0) * np.cos(xx / 53.0)
    s = 1.0 + 0.2 * rng.random((n, n))
    Y = (A @ np.stack([(1 - x2) * s, x2 * s]).reshape(2, -1)).reshape(T, n, n)
    Y = (Y + 0.01 * rng.standard_normal(Y.shape)).astype(np.float32)
    energy = 8333.0 + 10 * e
    ds = xr.Dataset(
        {"stack": (("energy", "y", "x"), Y), "references": (("energy", "component"), A)},
        coords={"energy": ("energy", energy, {"units": "eV"}), "component": ["a", "b"]},
    )
    write_dataset(ds, path, chunks=tile, compressor=None)
    return Y, A


def run(inp: Path, out: Path, tile: int, scheduler: str) -> float:
    from bigxanes.engine import get_client, unmix_store

    client = None
    kw = {"scheduler": scheduler}
    if scheduler == "distributed":
        client = get_client(n_workers=2, threads_per_worker=1, memory_limit="2GB")
        kw = {"client": client}
    try:
        t0 = time.perf_counter()
        unmix_store(
            inp,
            out,
            method="lcf",
            chunks=tile,
            progress=False,
            overwrite=True,
            baseline="none",
            **kw,
        )  # 4 energies: no pre-edge
        return time.perf_counter() - t0
    finally:
        if client is not None:
            cl = client.cluster
            client.close()
            cl.close()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=1000)
    ap.add_argument("--tile", type=int, default=10)
    ap.add_argument("--energies", type=int, default=4)
    ap.add_argument("--schedulers", default="synchronous,threads,distributed")
    ap.add_argument("--out", default=None, help="write a Markdown table here")
    a = ap.parse_args(argv)
    d = Path(tempfile.mkdtemp(prefix="bx-many-"))
    rows = []
    try:
        t0 = time.perf_counter()
        make_stack(d / "in.zarr", a.size, a.tile, a.energies)
        t_write = time.perf_counter() - t0
        make_stack(d / "in1.zarr", a.size, a.size, a.energies)
        n_chunks = (-(-a.size // a.tile)) ** 2
        for sch in a.schedulers.split(","):
            t1 = run(d / "in1.zarr", d / "o1.zarr", a.size, sch)
            tn = run(d / "in.zarr", d / "on.zarr", a.tile, sch)
            rows.append((sch, n_chunks, tn, t1, (tn - t1) / n_chunks))
            print(
                f"{sch:12s} {n_chunks} chunks: {tn:7.1f} s; 1 chunk: {t1:5.2f} s; "
                f"overhead {1e3 * (tn - t1) / n_chunks:.2f} ms/chunk",
                flush=True,
            )
    finally:
        shutil.rmtree(d, ignore_errors=True)
    cmd = "python benchmarks/bench_many_chunks.py " + " ".join(argv or sys.argv[1:])
    lines = [
        "# Many chunks: LCF on a 2-D stack cut into many chunks",
        "",
        f"`{cmd.strip()}` on {platform.node()} ({os.cpu_count()} cores), stack "
        f"{a.energies} x {a.size} x {a.size} float32, tiles {a.tile} x {a.tile} (input store "
        f"and engine), uncompressed input written in {t_write:.1f} s. Overhead per chunk = "
        "(time with N chunks - time with one chunk) / N; the whole run (open, integrity "
        "listing, pass 1, histogram, result maps, atomic output write of 4 variables x N "
        "chunks) is included.",
        "",
        "| scheduler | chunks | wall time (s) | one chunk (s) | overhead per chunk (ms) |",
        "|---|---:|---:|---:|---:|",
    ] + [f"| {s} | {n} | {tn:.1f} | {t1:.2f} | {1e3 * o:.2f} |" for s, n, tn, t1, o in rows]
    if a.out:
        Path(a.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
