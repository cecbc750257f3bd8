"""Benchmark of the out-of-core engine (not run in CI).

Measures, on this machine, with the engine's default LocalCluster (2 workers x 1 thread,
processes), a 1024² x 100 float32 stack (0.42 GB) as the 1x size:

- LCF and RUM-TV / RUM-PnP(tv) per-iteration throughput, Dask path vs in-memory path on the
  same data (fits in memory), and their ratio, for both state modes of the engine
  (``state_mode="memory"``: persisted state, Zarr checkpoint at the end, its cost amortized
  over the iterations; ``"zarr"``: the double buffer every iteration);
- the spatial tile (256/512 in 2-D);
- the cluster shape: 2 processes x 1 thread, 1 process x 2 threads, the threaded scheduler;
- time per voxel at 1x, 2x, 4x, 8x data (8x = 2896², 3.4 GB, mirrored copies of 1x);
- peak RSS summed over all processes (this one and the workers), polled with psutil;
- first RUM iteration vs later ones;
- RUM-PnP seam error vs halo (PSNR loss vs the in-memory path).

Run (unset the OpenBLAS core override for this command only, see the env notes)::

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/bench_engine.py

Prints a Markdown report and writes ``benchmarks/results/engine.md``.

``python benchmarks/bench_engine.py --state-blocks`` runs only the state-block comparison
(RUM-TV and RUM-PnP(tv) seconds per iteration at 1024² x 100 with the state blocked like the
stack tiles vs the engine's ``state_tiles`` rule, both state modes, one process and cluster)
and prints its Markdown table (engine.md is not rewritten).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
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
#: 1x size (BASE² x T float32 = 0.42 GB); 8x = 2896².
BASE = 1024
#: RUM iterations per Dask run.
N_IT = 5
#: RUM iterations per run of the state-block comparison (this machine is shared: more samples).
SB_IT = 11


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


def tiled_stack(tmp: Path, base: Path, n: int, tile: int = 256) -> Path:
    """An n x n stack made of mirrored copies of the ``base`` store, streamed chunk-wise
    (this process never holds it), same references."""
    import dask
    import dask.array as da

    path = tmp / f"tiled{n}.zarr"
    src = xr.open_zarr(base, consolidated=False)
    Yb = src["stack"].data
    nb = Yb.shape[1]
    r = -(-n // nb)
    rows = [da.concatenate([Yb[:, ::(-1) ** i, ::(-1) ** j] for j in range(r)], axis=2)
            for i in range(r)]
    Y = da.concatenate(rows, axis=1)[:, :n, :n].rechunk((Yb.shape[0], tile, tile))
    ds = xr.Dataset({"stack": (("energy", "y", "x"), Y),
                     "references": src["references"].load()},
                    coords={"energy": src["energy"].values})
    ds["energy"].attrs.update(src["energy"].attrs)
    with dask.config.set(scheduler="threads"):
        write_dataset(ds, path, compressor="lz4", chunks=tile)
    return path


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


def state_blocks() -> None:
    """RUM seconds/iteration: state blocked like the stack tiles vs :func:`state_tiles`."""
    import bigxanes.engine.unmix as eu

    tmp = Path(tempfile.mkdtemp(prefix="bench_engine_sb_"))
    n = BASE
    ds, base = make_stack(tmp, n)
    Y, A = ds["stack"].values, ds["references"].values
    del ds
    variants = (("stack tiles (before)", 0), ("state_tiles, 32 MiB", 32 * 2**20),
                ("state_tiles, 64 MiB (default)", 64 * 2**20))
    lines = [f"## State blocks ({n}x{n}x{T}, stack tile 256, 2 processes x 1 thread, 6 GB; "
             f"RUM {SB_IT} iterations, median after the first, memory mode incl. the final "
             "checkpoint amortized; one process, one cluster)", "",
             "| method | state blocks | mode | state tiles | in-memory s/it | Dask s/it | "
             "Dask / in-memory | peak RSS |", "|---|---|---|---|---|---|---|---|"]
    client = get_client(n_workers=2, threads_per_worker=1, memory_limit="6GB")
    saved = eu.STATE_BLOCK_BYTES
    try:
        for method, kw in (("rum-tv", {}), ("rum-pnp", {"denoiser": "tv"})):
            p = RumParams(method=method, max_iter=SB_IT, tol=1e-12, **kw)
            _, _, _, hm, _ = unmix_rum_array(Y, A, p, state_dtype=np.float32)
            sm = float(np.median(hm.seconds[1:]))
            for label, nbytes in variants:
                eu.STATE_BLOCK_BYTES = nbytes
                for mode in ("memory", "zarr"):
                    _, peak, h = run_dask(base, tmp / "o.zarr", method, client, params=p,
                                          chunks=256, state_mode=mode)
                    with xr.open_zarr(tmp / "o.zarr", consolidated=False) as o:
                        stt = o.attrs.get("state_tiles")
                    sd = per_iteration(h)
                    lines.append(f"| {method} | {label} | {mode} | {stt} | {sm:.2f} | "
                                 f"{sd:.2f} | {sm / sd:.2f} | {peak / 2**20:.0f} MiB |")
                    print(lines[-1], flush=True)
    finally:
        eu.STATE_BLOCK_BYTES = saved
        client.close()
        client.cluster.close()
        shutil.rmtree(tmp, ignore_errors=True)
    print("\n".join(lines))


def main() -> None:
    if "--state-blocks" in sys.argv[1:]:
        state_blocks()
        return
    lines: list[str] = []
    try:
        from threadpoolctl import threadpool_info

        blas = [(i.get("internal_api"), i.get("architecture"), i.get("num_threads"))
                for i in threadpool_info()]
    except ImportError:
        blas = np.show_config(mode="dicts").get("Build Dependencies", {}).get("blas", {})
        blas = f"{blas.get('name')} {blas.get('version')} (threadpoolctl not installed)"
    tmp = Path(tempfile.mkdtemp(prefix="bench_engine_"))
    n = BASE
    ds, base = make_stack(tmp, n)
    Y, A = ds["stack"].values, ds["references"].values
    del ds
    N = n * n
    gb = Y.size * 4 / 1e9
    client = get_client(n_workers=2, threads_per_worker=1, memory_limit="6GB")
    try:
        lines += ["# Engine benchmark", "",
                  f"Machine: {os.cpu_count()} cores (shared); default LocalCluster 2 workers x "
                  f"1 thread (processes), 6 GB limit each, started by `get_client` (workers "
                  "without distributed's `MALLOC_TRIM_THRESHOLD_`, see Conclusions); "
                  f"BLAS {blas}; OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE')}; "
                  f"T = {T} energies, 2 components, float32 stack, lz4 Zarr, tile 256. "
                  "Peak RSS = summed over this process (which holds the "
                  f"{gb:.2f} GB 1x stack as NumPy for the in-memory path) and all workers.", ""]

        # ---- 1. Dask vs in-memory -------------------------------------------------------------
        lines += [f"## Dask path vs in-memory path ({n}x{n}x{T} = {gb:.2f} GB float32, tile "
                  "256)", "",
                  f"RUM: {N_IT} iterations, median after the first; `memory` = state persisted in "
                  "the workers, Zarr checkpoint at the end (its time spread over the iterations);"
                  " `zarr` = Zarr double buffer every iteration. LCF (best of 2, whole run "
                  "incl. Zarr read of the stack and result write): `memory` keeps the pass-1 "
                  "channels in the workers, `zarr` writes them to a Zarr work array and reads "
                  "them back. In-memory = NumPy on the whole array, one thread.", "",
                  "| method | in-memory | Dask mode | Dask | Dask / in-memory | "
                  "Dask peak RSS (all procs) |", "|---|---|---|---|---|---|"]
        t_mem = min(lcf_memory(Y, A) for _ in range(3))
        for mode in ("memory", "zarr"):
            runs = [run_dask(base, tmp / "o.zarr", "lcf", client, chunks=256, state_mode=mode)
                    for _ in range(2)]
            t_dask, peak = min(r[0] for r in runs), max(r[1] for r in runs)
            lines.append(f"| LCF (NNLS), voxel-energies/s | {fmt(N * T / t_mem / 1e6)} M | "
                         f"{mode} | {fmt(N * T / t_dask / 1e6)} M | "
                         f"{t_mem / t_dask:.2f} | {peak / 2**20:.0f} MiB |")
        firsts = {}
        for method, kw in (("rum-tv", {}), ("rum-pnp", {"denoiser": "tv"})):
            p = RumParams(method=method, max_iter=N_IT, tol=1e-12, **kw)
            _, _, _, hm, _ = unmix_rum_array(Y, A, p, state_dtype=np.float32)
            sm = np.median(hm.seconds[1:])
            for mode in ("memory", "zarr"):
                t_dask, peak, hd = run_dask(base, tmp / "o.zarr", method, client, params=p,
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

        # ---- 2. tile ----------------------------------------------------------------------
        lines += ["", f"## Spatial tile ({n}x{n}x{T}; LCF, then RUM-TV {N_IT} iterations, "
                  "memory mode; the stack is stored in 256² chunks, 512 merges 4)", "",
                  "| tile | LCF s | LCF voxel-energies/s | RUM-TV s/iteration | peak RSS |",
                  "|---|---|---|---|---|"]
        p = RumParams(method="rum-tv", max_iter=N_IT, tol=1e-12)
        for tile in (256, 512):
            t_l, pk1, _ = run_dask(base, tmp / "o.zarr", "lcf", client, chunks=tile)
            _, pk2, h = run_dask(base, tmp / "o.zarr", "rum-tv", client, chunks=tile, params=p,
                                 state_mode="memory")
            lines.append(f"| {tile} | {t_l:.2f} | {fmt(N * T / t_l / 1e6)} M | "
                         f"{per_iteration(h):.2f} | {max(pk1, pk2) / 2**20:.0f} MiB |")
    finally:
        client.close()
        client.cluster.close()

    # ---- 3. cluster shape ---------------------------------------------------------------------
    lines += ["", f"## Cluster shape ({n}x{n}x{T}, tile 256, memory mode)", "",
              f"LCF best of 2; RUM-TV {N_IT} iterations. Ratios against the in-memory figures "
              "of the first table.", "",
              "| scheduler | LCF s | LCF / in-memory | RUM-TV s/iteration | RUM-TV / in-memory | "
              "peak RSS |", "|---|---|---|---|---|---|"]
    sm_tv = firsts[("rum-tv", "memory")][1]
    for shape in ("2 processes x 1 thread", "1 process x 2 threads", "threaded (no cluster)"):
        if shape.startswith("threaded"):
            cl, kw = None, {"scheduler": "threads"}
        else:
            nw = int(shape[0])
            cl = get_client(n_workers=nw, threads_per_worker=2 // nw,
                            memory_limit=f"{12 // nw}GB")
            kw = {}
        try:
            runs = [run_dask(base, tmp / "o.zarr", "lcf", cl, chunks=256, state_mode="memory",
                             **kw) for _ in range(2)]
            t_l = min(r[0] for r in runs)
            _, pk, h = run_dask(base, tmp / "o.zarr", "rum-tv", cl, chunks=256, params=p,
                                state_mode="memory", **kw)
            it = per_iteration(h)
            lines.append(f"| {shape} | {t_l:.2f} | {t_mem / t_l:.2f} | {it:.2f} | "
                         f"{sm_tv / it:.2f} | {max(pk, *(r[1] for r in runs)) / 2**20:.0f} MiB |")
        finally:
            if cl is not None:
                cl.close()
                cl.cluster.close()
    del Y

    # ---- 4. scaling ---------------------------------------------------------------------------
    client = get_client(n_workers=2, threads_per_worker=1, memory_limit="6GB")
    try:
        lines += ["", "## Scaling (tile 256, 2 processes x 1 thread): time per voxel", "",
                  f"1x = the {n}² stack above; larger stacks are mirrored copies of it. LCF "
                  f"(memory mode best of 2, zarr mode 1 run) and RUM-TV ({N_IT} iterations, "
                  "median after the first, memory mode incl. the final checkpoint amortized). "
                  "Peak RSS over the runs of that size.", "",
                  "| data | pixels | stack GB | LCF µs/voxel memory | LCF µs/voxel zarr | "
                  "RUM-TV µs/voxel/it memory | RUM-TV µs/voxel/it zarr | peak RSS memory | "
                  "peak RSS zarr |", "|---|---|---|---|---|---|---|---|---|"]
        for k in (1, 2, 4, 8):
            n = int(round(BASE * np.sqrt(k)))
            path = base if k == 1 else tiled_stack(tmp, base, n)
            N = n * n
            row, peaks = [], []
            for kind in ("lcf", "rum-tv"):
                for mode in ("memory", "zarr"):
                    if kind == "lcf":
                        runs = [run_dask(path, tmp / "o.zarr", "lcf", client, chunks=256,
                                         state_mode=mode)
                                for _ in range(2 if mode == "memory" else 1)]
                        row.append(min(r[0] for r in runs) / N * 1e6)
                        pk = max(r[1] for r in runs)
                    else:
                        _, pk, h = run_dask(path, tmp / "o.zarr", "rum-tv", client, chunks=256,
                                            state_mode=mode, params=p)
                        row.append(per_iteration(h) / N * 1e6)
                    peaks.append((mode, pk))
            pm = max(q for m, q in peaks if m == "memory") / 2**20
            pz = max(q for m, q in peaks if m == "zarr") / 2**20
            lines.append(f"| {k}x | {n}² | {N * T * 4 / 1e9:.2f} | "
                         + " | ".join(f"{v:.3f}" for v in row)
                         + f" | {pm:.0f} MiB | {pz:.0f} MiB |")
            print(lines[-1], flush=True)
            if k > 1:
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
