"""Larger than memory, end to end (issue 16), on an external ``dask scheduler`` + ``dask worker``
cluster started by their own command lines (in another working directory, memory-limited).

Flow: simulate (3-D, written block by block) -> info -> Edge-50 -> LCF -> RUM-TV (Zarr state
mode, N iterations) -> RUM-PnP(tv) (a few iterations) -> plot of a slice -> export (OME-Zarr),
each stage a ``python -m bigxanes.cli`` (or ``python -c``) client process. Per stage: wall time,
voxels/s, bytes read and written (``rchar``/``wchar`` of the client and every worker), peak
RSS of every process (client, each worker, scheduler), free disk before/after; and the same
for two floors: the Zarr read floor of the stack (a plain chunk-wise read on the cluster) and
the copy floor of the RUM state (one chunk-wise Zarr-to-Zarr copy of a state-sized array).

Examples (from the repository root)::

    # what ran in this session (see benchmarks/results/larger_than_memory.md)
    python benchmarks/bench_larger_than_memory.py --shape 160,192,192 --workers 2 \\
        --memory-limit 600MiB --workdir /tmp/bxltm
    # the issue's 32 GB run: 100 energies x 420^3 voxels (~33.6 GB float32)
    python benchmarks/bench_larger_than_memory.py --shape 420,420,420 --workers 2 \\
        --memory-limit 2GiB --iters 5 --workdir /big/disk/bxltm

Not part of CI. The data are deleted at the end unless ``--keep``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, git_rev  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Monitor:
    """Samples RSS (peak) and I/O counters of named processes every ``dt`` seconds."""

    def __init__(self, dt: float = 0.2):
        self.dt = dt
        self.procs: dict[str, psutil.Process] = {}
        self.peak: dict[str, int] = {}
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._lock = threading.Lock()

    def watch(self, name: str, pid: int) -> None:
        with self._lock:
            self.procs[name] = psutil.Process(pid)
            self.peak.setdefault(name, 0)

    def unwatch(self, name: str) -> None:
        with self._lock:
            self.procs.pop(name, None)

    def reset(self) -> None:
        with self._lock:
            self.peak = {k: 0 for k in self.procs}

    def io(self) -> dict[str, tuple[int, int]]:
        out = {}
        with self._lock:
            for k, p in self.procs.items():
                try:
                    c = p.io_counters()
                    out[k] = (c.read_chars, c.write_chars)
                except psutil.Error:
                    pass
        return out

    def _sample(self) -> None:
        with self._lock:
            for k, p in list(self.procs.items()):
                try:
                    self.peak[k] = max(self.peak.get(k, 0), p.memory_info().rss)
                except psutil.Error:
                    pass

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            time.sleep(self.dt)

    def start(self) -> None:
        self._t.start()

    def stop(self) -> None:
        self._stop.set()


def start_cluster(n_workers: int, memory_limit: str, cwd: Path, log: Path):
    """``dask scheduler`` and ``dask worker`` processes (their own command lines, in ``cwd``)."""
    port = free_port()
    addr = f"tcp://127.0.0.1:{port}"
    env = dict(os.environ, PYTHONPATH=str(ROOT), DASK_DISTRIBUTED__WORKER__DAEMON="False")
    exe = str(Path(sys.executable).with_name("dask"))
    sched = subprocess.Popen(
        [exe, "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"],
        cwd=cwd,
        env=env,
        stdout=open(log / "scheduler.log", "w"),  # noqa: SIM115
        stderr=subprocess.STDOUT,
    )
    time.sleep(3)
    workers = subprocess.Popen(
        [exe, "worker", addr, "--nworkers", str(n_workers), "--nthreads", "1",
         "--memory-limit", memory_limit, "--no-dashboard", "--local-directory", str(cwd)],
        cwd=cwd,
        env=env,
        stdout=open(log / "workers.log", "w"),  # noqa: SIM115
        stderr=subprocess.STDOUT,
    )  # fmt: skip
    from distributed import Client

    client = Client(addr, timeout=60)
    client.wait_for_workers(n_workers, timeout=120)
    return addr, sched, workers, client


def worker_pids(client) -> dict[str, int]:
    pids = client.run(os.getpid)  # {address: pid}
    return {f"worker{i}": int(pid) for i, (_, pid) in enumerate(sorted(pids.items()))}


def stage(mon: Monitor, name: str, cmd: list[str], voxels: int, disk: Path, rows: list, log: Path):
    """Run one client command; record its row."""
    free0 = shutil.disk_usage(disk).free
    mon.reset()
    io0 = mon.io()
    t0 = time.perf_counter()
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    with open(log / f"{name}.log", "w") as f:
        p = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
        try:
            mon.watch("client", p.pid)
        except psutil.Error:
            pass
        rc = p.wait()
    wall = time.perf_counter() - t0
    mon._sample()
    io1 = mon.io()
    mon.unwatch("client")
    rd = sum(io1[k][0] - io0.get(k, (0, 0))[0] for k in io1 if k != "client")
    wr = sum(io1[k][1] - io0.get(k, (0, 0))[1] for k in io1 if k != "client")
    # the client's own counters are gone with it: read them from /proc/<pid>/io is not
    # possible after exit; its I/O is counted by the workers (stores are written there)
    row = {
        "stage": name,
        "rc": rc,
        "wall_s": round(wall, 2),
        "voxels_per_s": round(voxels / wall) if wall > 0 else None,
        "read_bytes": int(rd),
        "written_bytes": int(wr),
        "peak_rss": dict(mon.peak),
        "free_disk_before": int(free0),
        "free_disk_after": int(shutil.disk_usage(disk).free),
    }
    rows.append(row)
    print(json.dumps(row), flush=True)
    if rc != 0:
        print((log / f"{name}.log").read_text()[-3000:], file=sys.stderr)
    return row


def floors(client, mon: Monitor, stack: Path, work: Path, state_channels: int, rows, voxels):
    """The Zarr read floor of the stack and the copy floor of a state-sized array."""
    import dask.array as da
    import numpy as np
    import zarr

    g = zarr.open_group(str(stack), mode="r")
    name = "absorbance" if "absorbance" in g else "stack"
    for label in ("read_floor", "copy_floor"):
        mon.reset()
        io0 = mon.io()
        free0 = shutil.disk_usage(work).free
        t0 = time.perf_counter()
        if label == "read_floor":
            x = da.from_zarr(str(stack), component=name)
            x.map_blocks(lambda b: np.zeros((1,) * b.ndim), dtype=float,
                         chunks=tuple((1,) * len(c) for c in x.chunks)).sum().compute()  # fmt: skip
        else:
            from zarr.codecs import BloscCodec

            # the engine's state buffers: float32, lz4 (bigxanes.engine.state); random values
            # (a constant array would compress to nothing and time no I/O)
            lz4 = (BloscCodec(cname="lz4", clevel=1, shuffle="shuffle"),)
            spatial = g[name].shape[1:]
            chunks = (state_channels,) + tuple(g[name].chunks[1:])
            src, dst = work / "state_a.zarr", work / "state_b.zarr"
            z = da.random.random((state_channels,) + tuple(spatial), chunks=chunks)
            da.to_zarr(z.astype(np.float32), str(src), overwrite=True, compressors=lz4)
            io0 = mon.io()
            t0 = time.perf_counter()  # timed: one chunk-wise read + write of the state
            da.to_zarr(da.from_zarr(str(src)), str(dst), overwrite=True, compressors=lz4)
        wall = time.perf_counter() - t0
        io1 = mon.io()
        row = {
            "stage": label,
            "rc": 0,
            "wall_s": round(wall, 2),
            "voxels_per_s": round(voxels / wall),
            "read_bytes": int(sum(io1[k][0] - io0.get(k, (0, 0))[0] for k in io1)),
            "written_bytes": int(sum(io1[k][1] - io0.get(k, (0, 0))[1] for k in io1)),
            "peak_rss": dict(mon.peak),
            "free_disk_before": int(free0),
            "free_disk_after": int(shutil.disk_usage(work).free),
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
    for p in ("state_a.zarr", "state_b.zarr"):
        shutil.rmtree(work / p, ignore_errors=True)


def fmt(n: float) -> str:
    for u in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or u == "TiB":
            return f"{n:.0f} {u}" if u == "B" else f"{n:.1f} {u}"
        n /= 1024
    return str(n)


def write_md(args, rows, meta, path: Path) -> None:
    lines = [
        "# Larger than memory, end to end (issue 16)",
        "",
        f"Command: `python benchmarks/bench_larger_than_memory.py {' '.join(sys.argv[1:])}`",
        "",
        f"Revision {meta['rev']}; machine: {meta['cpus']} cores, {fmt(meta['mem_total'])} RAM "
        f"(shared with other jobs: load average at start {meta['load']}); stack "
        f"{meta['shape']} float32 = {fmt(meta['stack_bytes'])} on disk "
        f"{fmt(meta['stack_disk'])}; cluster: `dask scheduler` + `dask worker --nworkers "
        f"{args.workers} --nthreads 1 --memory-limit {args.memory_limit}` "
        f"(total {fmt(meta['limit_total'])}: the stack is {meta['ratio']:.1f}x the workers' "
        "memory).",
        "",
        "| stage | wall s | voxels/s | read | written | peak RSS client | peak RSS workers "
        "(each) | all processes | free disk before -> after |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        pk = r["peak_rss"]
        ws = [v for k, v in pk.items() if k.startswith("worker")]
        allp = sum(pk.values())
        lines.append(
            f"| {r['stage']}{'' if r['rc'] == 0 else ' (FAILED rc=' + str(r['rc']) + ')'} | "
            f"{r['wall_s']} | {r['voxels_per_s']:,} | {fmt(r['read_bytes'])} | "
            f"{fmt(r['written_bytes'])} | {fmt(pk.get('client', 0))} | "
            f"{', '.join(fmt(v) for v in ws)} | {fmt(allp)} | "
            f"{fmt(r['free_disk_before'])} -> {fmt(r['free_disk_after'])} |"
        )
    lines += ["", "```json", json.dumps(meta, indent=1, default=str), "```", ""]
    path.write_text("\n".join(lines))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shape", default="160,192,192", help="z,y,x voxels (100 energies)")
    ap.add_argument("--chunks", default="32", help="stored tile edge of the stack")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--memory-limit", default="600MiB", help="per worker")
    ap.add_argument("--iters", type=int, default=5, help="RUM-TV iterations (>= 5)")
    ap.add_argument("--pnp-iters", type=int, default=2)
    ap.add_argument("--workdir", default="/tmp/bxltm")
    ap.add_argument("--keep", action="store_true", help="keep the data")
    ap.add_argument("--out", default=str(RESULTS / "larger_than_memory.md"))
    ap.add_argument("--skip", default="", help="comma-separated stages to skip")
    args = ap.parse_args()
    from dask.utils import parse_bytes

    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    cwd = work / "cluster-cwd"
    cwd.mkdir(exist_ok=True)
    log = work / "logs"
    log.mkdir(exist_ok=True)
    shape = tuple(int(v) for v in args.shape.split(","))
    voxels = shape[0] * shape[1] * shape[2]
    T = 100
    py = sys.executable
    stack, skip = work / "stack.zarr", set(args.skip.split(","))
    rows: list = []
    meta = {
        "rev": git_rev(),
        "cpus": os.cpu_count(),
        "mem_total": psutil.virtual_memory().total,
        "load": os.getloadavg()[0],
        "shape": (T,) + shape,
        "stack_bytes": T * voxels * 4,
        "limit_total": args.workers * parse_bytes(args.memory_limit),
        "free_disk_start": shutil.disk_usage(work).free,
    }
    meta["ratio"] = meta["stack_bytes"] / meta["limit_total"]
    mon = Monitor()
    mon.start()
    addr, sched, wproc, client = start_cluster(args.workers, args.memory_limit, cwd, log)
    try:
        mon.watch("scheduler", sched.pid)
        pids0 = worker_pids(client)
        for k, pid in pids0.items():
            mon.watch(k, pid)
        cli = [py, "-m", "bigxanes.cli"]
        run = [*cli, "unmix", str(stack)]
        common = ["--scheduler", addr, "--overwrite", "-q"]
        stages = [
            ("simulate", [*cli, "simulate", str(stack), "--shape", args.shape, "--n-components",
                          "3", "--noise", "5", "--chunks", args.chunks, "--overwrite", "-q"]),
            ("info", [*cli, "info", str(stack), "--workers", str(args.workers),
                      "--memory-limit", args.memory_limit]),
            ("edge50", [*run, str(work / "e50.zarr"), "--method", "edge50", *common]),
            ("lcf", [*run, str(work / "lcf.zarr"), "--method", "lcf", *common]),
            ("rum-tv", [*run, str(work / "tv.zarr"), "--method", "rum-tv", "--state-mode", "zarr",
                        "--iters", str(args.iters), *common]),
            ("rum-pnp", [*run, str(work / "pnp.zarr"), "--method", "rum-pnp", "--denoiser", "tv",
                         "--state-mode", "zarr", "--iters", str(args.pnp_iters), *common]),
            ("plot", [*cli, "plot", str(work / "tv.zarr"), str(work / "slice.png"), "--stack",
                      str(stack), "--slice", str(shape[0] // 2)]),
            ("export", [py, "-c", "import sys; from bigxanes.export import export_result; "
                        "export_result(sys.argv[1], sys.argv[2], 'ome-zarr', overwrite=True)",
                        str(work / "tv.zarr"), str(work / "tv.ome.zarr")]),
        ]  # fmt: skip
        for name, cmd in stages:
            if name in skip:
                continue
            r = stage(mon, name, cmd, voxels, work, rows, log)
            if name == "simulate":
                meta["stack_disk"] = sum(f.stat().st_size for f in stack.rglob("*") if f.is_file())
                floors(client, mon, stack, work, 40, rows, voxels)
            if name == "info":
                meta["info"] = (log / "info.log").read_text()
            if r["rc"] != 0 and name == "simulate":
                break
        meta["worker_pids_start"] = pids0
        meta["worker_pids_at_end"] = worker_pids(client)
    finally:
        mon.stop()
        client.close()
        for p in (wproc, sched):
            p.terminate()
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
        meta["free_disk_end_before_delete"] = shutil.disk_usage(work).free
        if not args.keep:
            for p in ("stack.zarr", "e50.zarr", "lcf.zarr", "tv.zarr", "pnp.zarr",
                      "tv.ome.zarr"):  # fmt: skip
                shutil.rmtree(work / p, ignore_errors=True)
        meta["free_disk_end"] = shutil.disk_usage(work).free
    meta.setdefault("stack_disk", 0)
    (Path(args.out).with_suffix(".json")).write_text(json.dumps({"meta": meta, "rows": rows},
                                                                indent=1, default=str))  # fmt: skip
    write_md(args, rows, meta, Path(args.out))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
