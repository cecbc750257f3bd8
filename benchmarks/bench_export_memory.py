"""Memory of ``bigxanes export`` on a 3-D result (issue 16): does the exporter hold a whole map?

A synthetic 3-D result (two fractions, ``scale``, ``mask``; float64 as stored by
:func:`bigxanes.store.write_dataset` with ``--chunks`` tiles) is exported to each format and two
peaks are measured, each relative to one float32 map (``n_z * n_y * n_x * 4`` bytes):

- ``traced``: tracemalloc peak of the export in this process, with the protocol of
  ``tests/io/test_export.py::test_export_3d_streams`` (a warm-up export of the same format
  first, the cyclic collector off during warm-up and measurement);
- ``rss``: peak RSS of a fresh process minus its RSS just before the export (imports done),
  from ``/proc/self/status`` (``VmHWM`` - ``VmRSS``). It includes what glibc's allocator keeps
  resident after frees (``MALLOC_MMAP_THRESHOLD_=131072`` in the environment switches its
  dynamic threshold off, and the RSS growth then follows the traced peak).

Examples (from the repository root)::

    python benchmarks/bench_export_memory.py                                  # the test's case
    python benchmarks/bench_export_memory.py --shape 64,512,512 --chunks 32 \\
        --out benchmarks/results/export_memory.md
    # the tree before a change: PYTHONPATH=/path/to/old/checkout python benchmarks/...

Not part of CI.
"""

from __future__ import annotations

import argparse
import gc
import json
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import git_rev  # noqa: E402

_CHILD = """
import json, sys, warnings
warnings.simplefilter("ignore")
from bigxanes.export import export_result
import tifffile, zarr  # noqa: F401 - imports before the baseline
try:
    import ome_zarr.writer  # noqa: F401 - imported by older exporters
except ImportError:
    pass

def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) * 1024

before = status("VmRSS:")
export_result(sys.argv[1], sys.argv[2], sys.argv[3])
print(json.dumps({"before": before, "hwm": status("VmHWM:")}))
"""


def make_result(path: Path, shape: tuple[int, int, int], chunks: int) -> Path:
    """A 3-D result store: ``fraction`` (2 components), ``scale``, ``mask`` (all True)."""
    import xarray as xr

    from bigxanes.store import write_dataset

    rng = np.random.default_rng(0)
    ds = xr.Dataset(
        {
            "fraction": (("component", "z", "y", "x"), rng.random((2, *shape))),
            "scale": (("z", "y", "x"), rng.random(shape)),
            "mask": (("z", "y", "x"), np.ones(shape, bool)),
        },
        coords={"component": ["a", "b"]},
        attrs={"method": "lcf"},
    )
    return write_dataset(ds, path, chunks=chunks)


def traced_peak(result: Path, out: Path, fmt: str) -> int:
    """tracemalloc peak (bytes) of one export, after a warm-up export, collector off."""
    from bigxanes.export import export_result

    gc.disable()
    try:
        export_result(result, out.with_name(out.name + "-warm"), fmt)
        tracemalloc.start()
        try:
            export_result(result, out, fmt)
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    finally:
        gc.enable()


def rss_peak(result: Path, out: Path, fmt: str) -> int:
    """Peak RSS growth (bytes) of a fresh process during the export."""
    r = subprocess.run(  # cwd: not the repository root, whose bigxanes would shadow PYTHONPATH's
        [sys.executable, "-c", _CHILD, str(result), str(out), fmt],
        capture_output=True,
        text=True,
        check=True,
        cwd=out.parent,
    )
    d = json.loads(r.stdout.strip().splitlines()[-1])
    return d["hwm"] - d["before"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shape", default="64,48,48", help="z,y,x (default: the test's)")
    ap.add_argument("--chunks", type=int, default=8, help="stored tile edge (default 8)")
    ap.add_argument("--formats", default="tiff,ome-zarr")
    ap.add_argument("--no-rss", action="store_true", help="skip the fresh-process RSS peak")
    ap.add_argument("--out", type=Path, help="also write the table (Markdown) here")
    args = ap.parse_args()
    shape = tuple(int(v) for v in args.shape.split(","))
    assert len(shape) == 3, "--shape z,y,x"
    map_bytes = int(np.prod(shape)) * 4
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        result = make_result(Path(tmp) / "r.zarr", shape, args.chunks)
        for fmt in args.formats.split(","):
            ext = ".ome.zarr" if fmt == "ome-zarr" else ""
            traced = traced_peak(result, Path(tmp) / f"t-{fmt}{ext}", fmt)
            rss = None if args.no_rss else rss_peak(result, Path(tmp) / f"r-{fmt}{ext}", fmt)
            rows.append((fmt, traced, rss))
        wall = time.perf_counter() - t0
    import bigxanes.export

    head = [
        f"`{' '.join(['python', *sys.argv])}` (git {git_rev()}, "
        f"bigxanes.export from {Path(bigxanes.export.__file__).parent.parent}), "
        f"{time.strftime('%Y-%m-%d', time.gmtime())}: result {shape} float64, "
        f"stored tiles {args.chunks}; one float32 map = {map_bytes} B; {wall:.1f} s.",
        "",
        "| format | traced peak (B) | / map | RSS growth (B) | / map |",
        "|---|---:|---:|---:|---:|",
    ]
    for fmt, traced, rss in rows:
        r = ("-", "-") if rss is None else (str(rss), f"{rss / map_bytes:.2f}")
        head.append(f"| {fmt} | {traced} | {traced / map_bytes:.2f} | {r[0]} | {r[1]} |")
    text = "\n".join(head)
    print(text)
    if args.out:
        out = args.out if args.out.is_absolute() else Path.cwd() / args.out
        out.parent.mkdir(parents=True, exist_ok=True)
        with open(out, "a", encoding="utf-8") as fh:
            fh.write(text + "\n\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
