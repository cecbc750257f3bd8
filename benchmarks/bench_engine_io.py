"""Engine I/O floors (issue 15, items 4-6); not run in CI.

Prints, in one run, on one LocalCluster (2 processes x 1 thread by default), for an N² x T
float32 stack (default 1024² x 100, L = 2, Blosc-LZ4 as ``bench_engine.make_stack``, tiles 256):

- the Zarr read floor of the stack: a plain chunk-wise read (decode, no compute) on the
  cluster;
- the engine's LCF (``unmix_store(method="lcf")``, memory and zarr modes) / that floor, and
  where its time goes (pass 1, statistics, result write);
- RUM-TV seconds per iteration in the zarr and memory state modes, their ratio, and the zarr
  mode / its buffers' I/O floor (every state block read with its halo and written back with
  the same codec, no compute);
- the work-buffer codec table: size and write + read time of one real (noisy) RUM state per
  codec, single process.

Every time is the best of ``--repeat`` runs. Run from the repository root (unset the
OpenBLAS core override for this command only; see /work/.library/env/README.md)::

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/bench_engine_io.py [--n 1024]

Writes ``benchmarks/results/bench_engine_io.md`` (``--no-write``: print only).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import xarray as xr

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, git_rev  # noqa: E402


def best(f, repeat: int) -> float:
    t = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        f()
        t = min(t, time.perf_counter() - t0)
    return t


def make_store(tmp: Path, n: int, T: int, tile: int) -> Path:
    """A two-state N² x T float32 stack with smooth fractions and noise, Blosc-LZ4."""
    from bigxanes.store import write_dataset

    rng = np.random.default_rng(0)
    energy = np.linspace(7100.0, 7200.0, T)
    e = (energy - 7150.0) / 5.0
    A = np.stack([1 / (1 + np.exp(-e)), 1 / (1 + np.exp(-(e - 0.6)))], axis=1)
    A += 0.2 * np.exp(-(((energy - 7155.0) / 3.0) ** 2))[:, None] * [1.0, 0.5]
    y, x = np.mgrid[0:n, 0:n] / n
    f = 0.5 + 0.4 * np.sin(6 * x) * np.cos(5 * y)
    s = (((x - 0.5) ** 2 + (y - 0.5) ** 2) < 0.2).astype(np.float32) + 0.02
    stack = np.empty((T, n, n), np.float32)
    for t in range(T):
        stack[t] = s * (A[t, 0] * f + A[t, 1] * (1 - f))
        stack[t] += 0.02 * rng.standard_normal((n, n), dtype=np.float32)
    ds = xr.Dataset(
        {
            "stack": (("energy", "y", "x"), stack),
            "references": (("energy", "component"), A),
        },
        coords={"energy": energy, "component": ["a", "b"]},
    )
    ds["energy"].attrs["units"] = "eV"
    path = tmp / "stack.zarr"
    write_dataset(ds, path, compressor="lz4", chunks=tile)
    return path


def _touch(b: np.ndarray) -> np.ndarray:
    return np.zeros((1,) * b.ndim)


def read_floor(client, path: Path) -> float:
    """A plain chunk-wise read of the stack on the cluster (each chunk decoded, nothing kept)."""
    import dask.array as da

    Y = da.from_zarr(str(path / "stack"))
    r = Y.map_blocks(_touch, chunks=(1,) * Y.ndim, dtype=np.float64)
    return float(client.compute(r.sum()).result())


def engine_lcf(client, path: Path, out: Path, mode: str) -> dict:
    from bigxanes.engine import unmix_store

    if out.exists():
        shutil.rmtree(out)
    t0 = time.perf_counter()
    unmix_store(path, out, method="lcf", client=client, progress=False, state_mode=mode, chunks=256)
    return {"seconds": time.perf_counter() - t0}


def rum_zarr_per_iteration(client, path: Path, out: Path, n_it: int) -> tuple[float, Path]:
    """Median seconds of one zarr-mode RUM-TV iteration (after the first); the work dir is
    kept (a failure hook stops the run after ``n_it`` iterations)."""
    from bigxanes.engine import InjectedFailure, unmix_store
    from bigxanes.rum import RumParams

    if out.exists():
        shutil.rmtree(out)
    work = out.with_name(out.name + ".work")
    shutil.rmtree(work, ignore_errors=True)
    p = RumParams(method="rum-tv", max_iter=n_it + 5, tol=1e-12, rho_adapt=False)
    try:
        unmix_store(
            path,
            out,
            method="rum-tv",
            params=p,
            client=client,
            progress=False,
            state_mode="zarr",
            chunks=256,
            _fail_after=n_it,
        )
    except InjectedFailure:
        pass
    import zarr

    h = zarr.open_group(str(work), mode="r").attrs.get("commit")
    return float(np.median(h["history"]["seconds"][1:])), work


def state_io_floor(client, work: Path, spatial, state_tiles, depth: int, repeat: int) -> float:
    """Every state block read with its halo from one buffer and written to the other (the
    zarr mode's I/O without the kernel), one task per block as in the zarr mode."""
    import dask

    from bigxanes.engine.chunked import block_regions, halo_window

    def io(src, dst, region):
        import zarr

        a = zarr.open_array(src, mode="r")
        window, inner = halo_window(region, a.shape[1:], depth)
        S = a[(slice(None),) + window]
        zarr.open_array(dst, mode="r+")[(slice(None),) + tuple(region)] = S[(slice(None),) + inner]
        return 0.0

    regions = block_regions(spatial, state_tiles)
    src, dst = str(work / "state_a"), str(work / "state_b")
    parts = [dask.delayed(io, pure=False)(src, dst, r) for r in regions]
    return best(lambda: client.compute(dask.delayed(sum)(parts)).result(), repeat)


def codec_table(S: np.ndarray, tmp: Path, tile: int, repeat: int) -> list[str]:
    """Size and single-process write + read time of one state array per codec."""
    import zarr
    from zarr.codecs import BloscCodec, ZstdCodec

    codecs = {
        "none (state buffers now)": None,
        "blosc-lz4 c1 shuffle (state before, pass 1)": (
            BloscCodec(cname="lz4", clevel=1, shuffle="shuffle"),
        ),
        "blosc-lz4 c1 bitshuffle": (BloscCodec(cname="lz4", clevel=1, shuffle="bitshuffle"),),
        "blosc-zstd c1 shuffle": (BloscCodec(cname="zstd", clevel=1, shuffle="shuffle"),),
        "zstd 1": (ZstdCodec(level=1),),
    }
    rows = []
    chunks = (S.shape[0],) + (tile,) * (S.ndim - 1)
    for name, comp in codecs.items():
        p = tmp / f"codec_{abs(hash(name))}"
        z = zarr.create_array(
            store=str(p),
            shape=S.shape,
            chunks=chunks,
            dtype=np.float32,
            compressors=comp,
            fill_value=0,
            overwrite=True,
        )

        def w(z=z):
            z[...] = S

        tw = best(w, repeat)
        tr = best(lambda z=z: z[...], repeat)
        size = sum(f.stat().st_size for f in p.rglob("*") if f.is_file())
        rows.append(f"| {name} | {S.nbytes / size:.2f} | {tw:.3f} | {tr:.3f} | {tw + tr:.3f} |")
        shutil.rmtree(p, ignore_errors=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1024, help="image edge (pixels)")
    ap.add_argument("--t", type=int, default=100, help="energies")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--iterations", type=int, default=6, help="RUM iterations per mode")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--no-write", action="store_true")
    a = ap.parse_args()

    from bigxanes.engine import get_client

    tmp = Path(tempfile.mkdtemp(prefix="bench_engine_io_"))
    client = get_client(n_workers=a.workers, threads_per_worker=1, memory_limit="4GB")
    rows: list[str] = []

    class Rows(list):
        def append(self, row: str) -> None:
            print(row, flush=True)
            super().append(row)

    rows = Rows()
    try:
        path = make_store(tmp, a.n, a.t, 256)
        read_floor(client, path)  # warm-up: workers import zarr, numba caches load
        engine_lcf(client, path, tmp / "warm.zarr", "memory")
        t_read = best(lambda: read_floor(client, path), a.repeat)
        rows.append(f"| stack read floor (chunk-wise, {a.workers} workers) | {t_read:.3f} | 1.00 |")
        for mode in ("memory", "zarr"):
            t = best(lambda m=mode: engine_lcf(client, path, tmp / "lcf.zarr", m), a.repeat)
            rows.append(f"| engine LCF, {mode} mode | {t:.3f} | {t / t_read:.2f} |")

        t_it = {}
        t_it["zarr"], work = rum_zarr_per_iteration(client, path, tmp / "rum.zarr", a.iterations)
        # memory mode: time its iterations through the run's history (no commit per iteration)
        from bigxanes.engine import unmix_store
        from bigxanes.rum import RumParams

        out = tmp / "rum_mem.zarr"
        p = RumParams(method="rum-tv", max_iter=a.iterations, tol=1e-12, rho_adapt=False)
        unmix_store(
            path,
            out,
            method="rum-tv",
            params=p,
            client=client,
            progress=False,
            state_mode="memory",
            chunks=256,
            checkpoint_every=10**6,
        )
        with xr.open_zarr(out, consolidated=False) as o:
            h = json.loads(o.attrs["history"])
            ck = float(o.attrs.get("checkpoint_seconds", 0.0))
            o_attrs_state_tiles = o.attrs["state_tiles"]
        t_it["memory"] = float(np.median(h["seconds"][1:]))
        st = tuple(json.loads(o_attrs_state_tiles))
        t_io = state_io_floor(client, work, (a.n, a.n), st, p.halo, a.repeat)
        rows.append(
            f"| RUM-TV iteration, memory mode (final checkpoint {ck:.2f} s not included) "
            f"| {t_it['memory']:.3f} | 1.00 |"
        )
        rows.append(
            f"| RUM-TV iteration, zarr mode / memory mode | {t_it['zarr']:.3f} | "
            f"{t_it['zarr'] / t_it['memory']:.2f} |"
        )
        rows.append(
            f"| zarr-mode buffers' I/O floor (read with halo + write, state blocks "
            f"{st}) | {t_io:.3f} | 1.00 |"
        )
        rows.append(
            f"| RUM-TV iteration, zarr mode / its I/O floor | {t_it['zarr']:.3f} | "
            f"{t_it['zarr'] / t_io:.2f} |"
        )
        import zarr

        S = zarr.open_array(str(work / "state_a"), mode="r")[...]
        codec_rows = codec_table(S, tmp, 256, a.repeat)
    finally:
        client.close()
        client.cluster.close()
        shutil.rmtree(tmp, ignore_errors=True)

    text = "\n".join(
        [
            "# Engine I/O floors (benchmarks/bench_engine_io.py)",
            "",
            f"git {git_rev()}, {platform.processor() or platform.machine()}, {os.cpu_count()} "
            f"cores, {a.workers} workers x 1 thread, "
            f"OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', 'unset')}, load average "
            f"{os.getloadavg()[0]:.1f} at the end",
            f"{a.n}² x {a.t} float32 stack (Blosc-LZ4), tiles 256, L = 2; best of {a.repeat} "
            f"(RUM: median of {a.iterations - 1} iterations after the first).",
            "",
            "| what | seconds | ratio |",
            "|---|---:|---:|",
            *rows,
            "",
            f"Work-buffer codecs: one RUM-TV state after {a.iterations} iterations "
            f"({S.nbytes / 1e6:.0f} MB float32), chunks (channels, 256, 256), one process.",
            "",
            "| codec | ratio | write s | read s | write + read s |",
            "|---|---:|---:|---:|---:|",
            *codec_rows,
        ]
    )
    print(text)
    if not a.no_write:
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / "bench_engine_io.md").write_text(text + "\n")


if __name__ == "__main__":
    main()
