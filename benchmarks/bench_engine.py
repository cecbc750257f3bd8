"""Benchmark of the out-of-core engine (not run in CI).

Measures, on this machine, with a LocalCluster of 2 workers x 1 thread (processes):

- LCF and RUM-TV / RUM-PnP(tv) per-iteration throughput, Dask path vs in-memory path on the
  same data (fits in memory), and their ratio, for both state modes of the engine
  (``state_mode="memory"``: persisted state, Zarr checkpoint every 10 iterations, the
  checkpoint's cost amortized over them; ``"zarr"``: the double buffer every iteration);
- the spatial tile (128/256/512 in 2-D) -> the engine's default tile;
- time per voxel at 1x, 2x, 4x, 8x data;
- peak RSS summed over all processes (this one and the workers), polled with psutil;
- first RUM iteration vs later ones;
- RUM-PnP seam error vs halo (PSNR loss vs the in-memory path).

Run (unset the OpenBLAS core override for this command only, see the env notes)::

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/bench_engine.py

Prints a Markdown report and writes ``benchmarks/results/engine.md``.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import xarray as xr

from bigxanes.engine import get_client, unmix_store
from bigxanes.kernels.lcf import fractions_from_coefficients, nnls_coefficients
from bigxanes.metrics import foreground_mask, psnr_foreground
from bigxanes.rum import RumParams, unmix_rum_array
from bigxanes.simulate import simulate
from bigxanes.store import write_dataset

OUT = Path(__file__).parent / "results" / "engine.md"
T = 100


class PeakRSS:
    """Peak of the summed RSS of this process and all its children, polled every 50 ms."""

    def __init__(self) -> None:
        self.peak = 0
        self._stop = threading.Event()
        self._th = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        me = psutil.Process()
        while not self._stop.is_set():
            total = 0
            for p in [me, *me.children(recursive=True)]:
                try:
                    total += p.memory_info().rss
                except psutil.Error:
                    pass
            self.peak = max(self.peak, total)
            time.sleep(0.05)

    def __enter__(self):
        self._th.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._th.join()


def make_stack(tmp: Path, n: int, seed: int = 0, tile: int = 256):
    ds = simulate("particles", (n, n), 2, sigma=3.0, seed=seed)
    path = tmp / f"in{n}.zarr"
    if not path.exists():
        write_dataset(ds[["stack", "references"]], path, compressor="lz4", chunks=tile)
    return ds, path


def lcf_memory(Y, A):
    t0 = time.perf_counter()
    Yf = Y.reshape(Y.shape[0], -1).astype(np.float64)
    AtA, aty = A.T @ A, A.T @ Yf
    fractions_from_coefficients(nnls_coefficients(AtA, aty))
    return time.perf_counter() - t0


def run_dask(path, out, method, client, **kw):
    if out.exists():
        shutil.rmtree(out)
    t0 = time.perf_counter()
    with PeakRSS() as pk:
        unmix_store(path, out, method=method, client=client, progress=False, **kw)
    dt = time.perf_counter() - t0
    with xr.open_zarr(out, consolidated=False) as o:
        h = json.loads(o.attrs["history"]) if "history" in o.attrs else None
        if h is not None:
            h["checkpoint_seconds"] = float(o.attrs.get("checkpoint_seconds", 0.0))
    return dt, pk.peak, h


def per_iteration(h) -> float:
    """Median iteration time after the first, plus the checkpoints' time spread over all
    iterations (memory mode; 0 in zarr mode, where the write is inside every iteration)."""
    return float(np.median(h["seconds"][1:])) + h["checkpoint_seconds"] / len(h["seconds"])


def fmt(x, d=2):
    return f"{x:.{d}g}" if abs(x) < 1e-2 or abs(x) >= 1e4 else f"{x:.{d}f}"


def main() -> None:
    lines: list[str] = []
    try:
        from threadpoolctl import threadpool_info

        blas = [(i.get("internal_api"), i.get("architecture"), i.get("num_threads"))
                for i in threadpool_info()]
    except ImportError:
        blas = np.show_config(mode="dicts").get("Build Dependencies", {}).get("blas", {})
        blas = f"{blas.get('name')} {blas.get('version')} (threadpoolctl not installed)"
    tmp = Path(tempfile.mkdtemp(prefix="bench_engine_"))
    client = get_client(n_workers=2, threads_per_worker=1, memory_limit="3GB")
    try:
        lines += ["# Engine benchmark", "",
                  f"Machine: {os.cpu_count()} cores (shared); LocalCluster 2 workers x 1 thread "
                  f"(processes), 3 GB limit each; BLAS {blas}; "
                  f"OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE')}; T = {T} energies, "
                  "2 components, float32 stack, lz4 Zarr.", ""]

        # ---- 1. Dask vs in-memory on 512² -------------------------------------------------
        n = 512
        ds, path = make_stack(tmp, n)
        Y, A = ds["stack"].values, ds["references"].values
        N = n * n
        lines += [f"## Dask path vs in-memory path ({n}x{n}x{T}, tile 256)", "",
                  "RUM: 10 iterations; `memory` = state persisted in the workers, one Zarr "
                  "checkpoint (every 10 iterations; its time is spread over the 10); `zarr` = "
                  "Zarr double buffer every iteration. LCF: `memory` keeps the pass-1 channels "
                  "in the workers, `zarr` writes them to a Zarr work array and reads them back.",
                  "",
                  "| method | in-memory | Dask mode | Dask | Dask / in-memory | "
                  "Dask peak RSS (all procs) |", "|---|---|---|---|---|---|"]
        t_mem = min(lcf_memory(Y, A) for _ in range(3))
        for mode in ("memory", "zarr"):
            t_dask = []
            for _ in range(2):  # the median of 2 (shared machine)
                t, peak, _ = run_dask(path, tmp / "o.zarr", "lcf", client, chunks=256,
                                      state_mode=mode)
                t_dask.append(t)
            t_dask = min(t_dask)
            lines.append(f"| LCF (NNLS), voxel-energies/s | {fmt(N * T / t_mem / 1e6)} M | "
                         f"{mode} | {fmt(N * T / t_dask / 1e6)} M (incl. Zarr read + write) | "
                         f"{t_mem / t_dask:.2f} | {peak / 2**20:.0f} MiB |")
        firsts = {}
        for method, kw in (("rum-tv", {}), ("rum-pnp", {"denoiser": "tv"})):
            p = RumParams(method=method, max_iter=10, tol=1e-12, **kw)
            _, _, _, hm, _ = unmix_rum_array(Y, A, p, state_dtype=np.float32)
            sm = np.median(hm.seconds[1:])
            for mode in ("memory", "zarr"):
                t_dask, peak, hd = run_dask(path, tmp / "o.zarr", method, client, params=p,
                                            chunks=256, state_mode=mode)
                sd = per_iteration(hd)
                firsts[(method, mode)] = (hm.seconds[0], sm, hd["seconds"][0], sd)
                lines.append(f"| {method} iteration, voxels/s (voxel-energies/s) | "
                             f"{fmt(N / sm / 1e6)} M ({fmt(N * T / sm / 1e6)} M) | {mode} | "
                             f"{fmt(N / sd / 1e6)} M ({fmt(N * T / sd / 1e6)} M) | "
                             f"{sm / sd:.2f} | {peak / 2**20:.0f} MiB |")
        lines += ["", "First iteration vs later ones (median; Dask later incl. amortized "
                  "checkpoint), seconds:", "",
                  "| method | mode | in-memory first | in-memory later | Dask first | "
                  "Dask later |", "|---|---|---|---|---|---|"]
        for (m, mode), (a, b, c, d) in firsts.items():
            lines.append(f"| {m} | {mode} | {a:.2f} | {b:.2f} | {c:.2f} | {d:.2f} |")

        # ---- 2. tile size ---------------------------------------------------------------------
        n = 1024
        ds, path = make_stack(tmp, n, tile=128)
        N = n * n
        lines += ["", f"## Spatial tile ({n}x{n}x{T}; LCF, then RUM-TV 3 iterations; "
                  "state mode auto = memory)", "",
                  "| tile | LCF s | LCF voxel-energies/s | RUM-TV s/iteration | peak RSS |",
                  "|---|---|---|---|---|"]
        for tile in (128, 256, 512):
            t_l, pk1, _ = run_dask(path, tmp / "o.zarr", "lcf", client, chunks=tile)
            _, pk2, h = run_dask(path, tmp / "o.zarr", "rum-tv", client, chunks=tile,
                                 params=RumParams(method="rum-tv", max_iter=3, tol=1e-12))
            it = per_iteration(h)
            lines.append(f"| {tile} | {t_l:.1f} | {fmt(N * T / t_l / 1e6)} M | {it:.2f} | "
                         f"{max(pk1, pk2) / 2**20:.0f} MiB |")

        # ---- 3. scaling -----------------------------------------------------------------------
        lines += ["", "## Scaling (tile 256): time per voxel", "",
                  "LCF and RUM-TV (6 iterations, checkpoint every 3 in memory mode, "
                  "amortized) in both state modes; LCF best of 2 runs.", "",
                  "| data | pixels | LCF µs/voxel memory | LCF µs/voxel zarr | "
                  "RUM-TV µs/voxel/it memory | RUM-TV µs/voxel/it zarr | peak RSS memory | "
                  "peak RSS zarr |", "|---|---|---|---|---|---|---|---|"]
        for k in (1, 2, 4, 8):
            n = int(round(256 * np.sqrt(k)))
            ds, path = make_stack(tmp, n)
            N = n * n
            row, peaks = [], []
            for kind in ("lcf", "rum-tv"):
                for mode in ("memory", "zarr"):
                    if kind == "lcf":
                        runs = [run_dask(path, tmp / "o.zarr", "lcf", client, chunks=256,
                                         state_mode=mode) for _ in range(2)]
                        row.append(min(r[0] for r in runs) / N * 1e6)
                        pk = max(r[1] for r in runs)
                    else:
                        _, pk, h = run_dask(path, tmp / "o.zarr", "rum-tv", client, chunks=256,
                                            state_mode=mode, checkpoint_every=3,
                                            params=RumParams(method="rum-tv", max_iter=6,
                                                             tol=1e-12))
                        row.append(per_iteration(h) / N * 1e6)
                    peaks.append((mode, pk))
            pm = max(p for m, p in peaks if m == "memory") / 2**20
            pz = max(p for m, p in peaks if m == "zarr") / 2**20
            lines.append(f"| {k}x | {n}² | " + " | ".join(f"{v:.2f}" for v in row)
                         + f" | {pm:.0f} MiB | {pz:.0f} MiB |")
            shutil.rmtree(path)
    finally:
        client.close()
        client.cluster.close()

    # ---- 4. PnP seam error vs halo ----------------------------------------------------------
    n = 128
    ds = simulate("particles", (n, n), 2, sigma=5.0, seed=7)
    path = tmp / "pnp.zarr"
    write_dataset(ds[["stack", "references"]], path)
    truth = ds["true_fraction"].values
    mask = foreground_mask(ds["true_scale"].values)
    lines += ["", f"## RUM-PnP (tv denoiser) seam error vs halo ({n}², tiles 32², 30 "
              "iterations, threads)", "",
              "| halo | max abs diff of fractions vs in-memory | PSNR in-memory | PSNR Dask | "
              "loss (dB) |", "|---|---|---|---|---|"]
    for denoiser in ("tv",):
        p0 = RumParams(method="rum-pnp", max_iter=30, denoiser=denoiser)
        Xm, *_ = unmix_rum_array(ds["stack"].values, ds["references"].values, p0,
                                 state_dtype=np.float32)
        pm = psnr_foreground(Xm, truth, mask)
        for halo in (0, 2, 4, 8, 16, 24):
            p = RumParams(method="rum-pnp", max_iter=30, denoiser=denoiser,
                          denoiser_halo=halo)
            out = tmp / "pnp_o.zarr"
            if out.exists():
                shutil.rmtree(out)
            unmix_store(path, out, method="rum-pnp", params=p, chunks=32, scheduler="threads",
                        progress=False)
            with xr.open_zarr(out, consolidated=False) as o:
                Xd = o["fraction"].values
            pd = psnr_foreground(Xd, truth, mask)
            lines.append(f"| {halo} | {np.abs(Xd - Xm).max():.2e} | {pm:.2f} | {pd:.2f} | "
                         f"{pm - pd:.3f} |")
    shutil.rmtree(tmp, ignore_errors=True)
    text = "\n".join(lines) + "\n"
    print(text)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(text)


if __name__ == "__main__":
    main()
