"""Issue 13, item 7: seeded fault injection. The main process of ``bigxanes unmix`` is ended
abruptly (``os._exit`` at a fault-injection point of :mod:`bigxanes.integrity`: no cleanup, no
``finally``, possibly between two chunk writes) at points spread over pass 1, the RUM
iterations and the result write, in both state modes. After every kill:

- no incomplete output is readable as complete: the output path holds nothing, or a complete
  store; ``bigxanes info OUTPUT`` says "incomplete ... --resume"; a ``.partial-<pid>`` folder
  lacks the completion marker (unless the kill came after the marker, before the rename);
- ``bigxanes unmix ... --resume`` exits 0 and gives the uninterrupted result (<= 1e-6), and
  leaves no lock, work folder or partial behind.

The runs are forked from one driver process (``python THIS_FILE SPEC``) that imported
bigxanes once and started no thread, so each kill point costs the computation only. The fast
test kills at 3 seeded points per mode (one in each phase); the slow one at every point a run
reaches (25 in memory mode, 28 in zarr mode on this stack).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ARGS = [
    "--method",
    "rum-tv",
    "--iters",
    "6",
    "--tv-sweeps",
    "2",
    "--chunks",
    "16,16",
    "--checkpoint-every",
    "2",
    "--tol",
    "1e-12",
    "-q",
]
PHASES = {
    "pass1_block": "pass 1",
    "admm_block": "iterations",
    "after_commit": "iterations",
    "result_block": "result write",
    "before_complete": "result write",
    "after_complete": "result write",
}


# ---------------------------------------------------------------------------------------------
# the driver (runs in its own process: it forks)


def _fork(fn) -> int:
    """Run ``fn`` in a forked child; its exit status (``os._exit`` code of a kill point)."""
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        code = 1
        try:
            code = int(fn() or 0)
        except BaseException:  # noqa: BLE001
            import traceback

            traceback.print_exc()
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def _unmix(inp: Path, out: Path, mode: str, *extra: str, env: dict | None = None):
    def go() -> int:
        from bigxanes.integrity import KILL_ENV, TRACE_ENV

        for k in (KILL_ENV, TRACE_ENV):
            os.environ.pop(k, None)
        os.environ.update(env or {})
        from bigxanes.cli import main

        return main(["unmix", str(inp), str(out), *ARGS, "--state-mode", mode, *extra])

    return go


def _check_killed(out: Path, note: Path):
    """After a kill: nothing incomplete is readable as complete."""

    def go() -> int:
        import contextlib
        import io

        from bigxanes.cli import main
        from bigxanes.store import is_complete

        problems = []
        partials = sorted(out.parent.glob(out.name + ".partial-*"))
        if out.exists() and not is_complete(out):
            problems.append(f"{out} exists without the completion marker")
        if not out.exists():
            err = io.StringIO()
            with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
                rc = main(["info", str(out)])
            if rc != 2 or "incomplete" not in err.getvalue() or "--resume" not in err.getvalue():
                problems.append(f"info {out}: rc {rc}, {err.getvalue()!r}")
        marked = [p.name for p in partials if is_complete(p)]
        for p in partials:
            if is_complete(p):
                continue
            err = io.StringIO()
            with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
                rc = main(["info", str(p)])
            if rc != 2 or "incomplete" not in err.getvalue():
                problems.append(f"info {p.name}: rc {rc}, {err.getvalue()!r}")
        note.write_text(json.dumps({"problems": problems, "marked_partials": marked}))
        return 0

    return go


def _compare(out: Path, ref: Path, note: Path):
    def go() -> int:
        import numpy as np
        import xarray as xr

        from bigxanes.engine.locking import lock_path
        from bigxanes.store import is_complete

        problems = []
        if not is_complete(out):
            problems.append("resumed output is not complete")
        else:
            a = xr.open_zarr(out, consolidated=False, chunks=None)
            b = xr.open_zarr(ref, consolidated=False, chunks=None)
            for name in ("fraction_unmasked", "scale", "residual_rms", "mask"):
                d = float(np.abs(a[name].values.astype(float) - b[name].values.astype(float)).max())
                if not d <= 1e-6:
                    problems.append(f"{name} differs by {d:.3g}")
            if a.attrs.get("n_iterations") != b.attrs.get("n_iterations"):
                problems.append(f"n_iterations {a.attrs.get('n_iterations')}")
        left = [p.name for p in out.parent.iterdir() if p.name.startswith(out.name + ".")]
        if left or lock_path(out).exists():
            problems.append(f"left behind: {left}")
        note.write_text(json.dumps({"problems": problems}))
        return 0

    return go


def _choose(events: list[str], spec: dict) -> list[int]:
    """1-based kill indices: every event (``"all"``), or one seeded pick in each phase."""
    if spec["points"] == "all":
        return list(range(1, len(events) + 1))
    import random

    rng = random.Random(spec["seed"])
    by_phase: dict[str, list[int]] = {}
    for i, ev in enumerate(events, 1):
        by_phase.setdefault(PHASES[ev], []).append(i)
    return sorted(rng.choice(v) for v in by_phase.values())


def drive(spec: dict) -> dict:
    import threading

    import bigxanes.cli  # noqa: F401 - imported once, before any fork
    import bigxanes.engine  # noqa: F401

    assert threading.active_count() == 1, threading.enumerate()
    from bigxanes.integrity import KILL_ENV, KILL_EXIT, TRACE_ENV

    d, inp = Path(spec["dir"]), Path(spec["input"])
    report: dict = {}
    for mode in spec["modes"]:
        ref, trace = d / f"ref-{mode}.zarr", d / f"trace-{mode}"
        rc = _fork(_unmix(inp, ref, mode, env={TRACE_ENV: str(trace)}))
        assert rc == 0, f"reference run ({mode}): exit {rc}"
        events = trace.read_text().split()
        rows = []
        for k in _choose(events, spec):
            out = d / f"{mode}-{k}.zarr"
            killed = _fork(_unmix(inp, out, mode, env={KILL_ENV: str(k)}))
            n1, n2 = d / f"{mode}-{k}.killed.json", d / f"{mode}-{k}.resumed.json"
            assert _fork(_check_killed(out, n1)) == 0
            resumed = _fork(_unmix(inp, out, mode, "--resume"))
            assert _fork(_compare(out, ref, n2)) == 0
            rows.append(
                {
                    "point": k,
                    "event": events[k - 1],
                    "killed": killed == KILL_EXIT,
                    "resume_rc": resumed,
                    **{f"after_kill_{a}": b for a, b in json.loads(n1.read_text()).items()},
                    "problems": json.loads(n2.read_text())["problems"],
                }
            )
        report[mode] = {"events": events, "rows": rows}
    return report


if __name__ == "__main__":  # the driver: python THIS_FILE SPEC.json
    spec = json.loads(Path(sys.argv[1]).read_text())
    Path(spec["report"]).write_text(json.dumps(drive(spec)))


# ---------------------------------------------------------------------------------------------
# the tests


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    from bigxanes.simulate import simulate
    from bigxanes.store import write_dataset

    d = tmp_path_factory.mktemp("killpoints")
    ds = simulate("particles", (32, 32), 2, sigma=3.0, seed=7)
    # 13 energies (pre-edge kept), 4 tiles of 16 x 16: 4 pass-1 blocks, 2 state blocks
    write_dataset(
        ds[["stack", "references"]].isel(energy=slice(0, 100, 8)), d / "in.zarr", chunks=16
    )
    return d / "in.zarr"


def _run_driver(stack: Path, tmp_path: Path, points: str, seed: int) -> dict:
    if not hasattr(os, "fork"):
        pytest.skip("needs os.fork")
    spec = {
        "dir": str(tmp_path),
        "input": str(stack),
        "modes": ["memory", "zarr"],
        "points": points,
        "seed": seed,
        "report": str(tmp_path / "report.json"),
    }
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    p = subprocess.run(
        [sys.executable, __file__, str(tmp_path / "spec.json")],
        capture_output=True,
        text=True,
        timeout=1200,
        env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)),
    )
    assert p.returncode == 0, p.stderr[-3000:]
    return json.loads((tmp_path / "report.json").read_text())


def _assert_report(report: dict, min_points: int) -> None:
    for mode, r in report.items():
        rows = r["rows"]
        assert len(rows) >= min_points, (mode, len(rows))
        assert {PHASES[x["event"]] for x in rows} == {"pass 1", "iterations", "result write"}
        for x in rows:
            assert x["killed"], (mode, x)  # the process really ended at that point
            assert x["after_kill_problems"] == [], (mode, x)
            assert x["resume_rc"] == 0, (mode, x)
            assert x["problems"] == [], (mode, x)
            if x["after_kill_marked_partials"]:  # only a kill between marker and rename
                assert x["event"] == "after_complete", (mode, x)


def test_kill_at_seeded_points_then_resume(stack, tmp_path):
    """Fast variant: one seeded point in each phase, in each state mode (6 kills)."""
    _assert_report(_run_driver(stack, tmp_path, "one-per-phase", seed=13), min_points=3)


@pytest.mark.slow
@pytest.mark.timeout(3600)  # ~2 min on 2 idle cores; 10+ min on a loaded machine
def test_kill_at_every_point_then_resume(stack, tmp_path):
    """Every fault-injection point a run reaches (>= 20 per state mode)."""
    report = _run_driver(stack, tmp_path, "all", seed=0)
    _assert_report(report, min_points=20)
    assert sum(len(r["rows"]) for r in report.values()) >= 40
