"""Issue 13 through the command line: nothing lost (item 1), absolute paths (item 2), cluster
arguments and watching (item 4), no traceback (item 5), messages and modes (item 6)."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from bigxanes.cli import main
from bigxanes.simulate import simulate
from bigxanes.store import is_complete, write_dataset


def run(capsys, *argv) -> tuple[int, str, str]:
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def one_line(rc: int, err: str, *words: str, code: int = 2) -> str:
    assert rc == code, (rc, err)
    assert "Traceback" not in err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("bigxanes: error: ")
    for w in words:
        assert w.lower() in lines[0].lower(), (w, lines[0])
    return lines[0]


def listing(p: Path) -> list[tuple[str, int]]:
    return sorted((str(q.relative_to(p)), q.stat().st_size) for q in p.rglob("*"))


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    d = tmp_path_factory.mktemp("safety")
    ds = simulate("particles", shape=(24, 24), n_components=2, sigma=7, seed=0)
    write_dataset(ds, d / "sim.zarr")
    return d / "sim.zarr"


# ---------------------------------------------------------------------------------------------
# item 1: data loss


def test_unmix_output_equal_to_input_is_refused_even_with_overwrite(sim, capsys):
    before = listing(sim)
    rc, _, err = run(capsys, "unmix", sim, sim, "--method", "lcf", "--overwrite")
    one_line(rc, err, "input", "another output")
    assert listing(sim) == before and is_complete(sim)


def test_output_inside_or_containing_the_input_is_refused(sim, tmp_path, capsys):
    before = listing(sim)
    rc, _, err = run(capsys, "unmix", sim, sim / "r.zarr", "--method", "lcf")
    one_line(rc, err, "inside the input")
    rc, _, err = run(capsys, "unmix", sim, sim.parent, "--method", "lcf", "--overwrite")
    one_line(rc, err, "contains the input")
    rc, _, err = run(capsys, "refs", sim, sim / "refs.csv")
    one_line(rc, err, "inside the input")
    assert listing(sim) == before


def test_symlinked_output_resolving_to_the_input_is_refused(sim, tmp_path, capsys):
    link = tmp_path / "link.zarr"
    link.symlink_to(sim, target_is_directory=True)
    rc, _, err = run(capsys, "unmix", sim, link, "--method", "lcf", "--overwrite")
    one_line(rc, err, "is the input")
    assert is_complete(sim)


def test_import_into_the_folder_holding_the_raw_data_is_refused(tmp_path, capsys):
    tifffile = pytest.importorskip("tifffile")
    raw = tmp_path / "raw"
    raw.mkdir()
    tifffile.imwrite(raw / "good.tif", np.ones((5, 8, 8), np.float32), photometric="minisblack")
    (raw / "energies.txt").write_text("\n".join(str(8330 + i) for i in range(5)))
    (raw / "notes.txt").write_text("beamtime notes")
    before = listing(raw)
    rc, _, err = run(
        capsys, "import", raw / "good.tif", raw, "--energies", raw / "energies.txt", "--overwrite"
    )
    one_line(rc, err, "contains the input")
    assert listing(raw) == before


def test_overwrite_replaces_only_what_bigxanes_wrote(sim, tmp_path, capsys):
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("do not delete")
    rc, _, err = run(capsys, "simulate", foreign, "--shape", "8,8", "--overwrite", "-q")
    one_line(rc, err, "did not write", "another output")
    assert (foreign / "thesis.tex").read_text() == "do not delete"
    # without --overwrite the message does not lure the user into --overwrite
    rc, _, err = run(capsys, "simulate", foreign, "--shape", "8,8", "-q")
    line = one_line(rc, err, "already exists", "not written by bigxanes")
    assert "pass --overwrite" not in line
    # a foreign file where a figure goes is refused; a figure bigxanes drew is replaced
    res = tmp_path / "r.zarr"
    assert main(["unmix", str(sim), str(res), "--method", "lcf", "-q"]) == 0
    fig = tmp_path / "fig.png"
    fig.write_text("not a figure")
    rc, _, err = run(capsys, "plot", res, fig, "-q")
    one_line(rc, err, "did not write")
    assert fig.read_text() == "not a figure"
    fig.unlink()
    assert main(["plot", str(res), str(fig), "-q"]) == 0
    assert main(["plot", str(res), str(fig), "-q"]) == 0  # its own figure: replaced
    # a bigxanes store is replaced with --overwrite
    rc, _, err = run(capsys, "unmix", sim, res, "--method", "lcf", "--overwrite", "-q")
    assert rc == 0, err


def test_stale_partials_are_removed_and_work_folders_reported(sim, tmp_path, capsys):
    out = tmp_path / "s.zarr"
    dead = tmp_path / "s.zarr.partial-999999"  # pid far above pid_max's default: not alive
    dead.mkdir()
    (dead / "chunk").write_bytes(b"0" * 100)
    rc, stdout, err = run(capsys, "simulate", out, "--shape", "8,8")
    assert rc == 0, err
    assert not dead.exists() and "removed" in stdout
    r = tmp_path / "r.zarr"
    (tmp_path / "r.zarr.work").mkdir()
    rc, _, err = run(capsys, "unmix", sim, r, "--method", "lcf", "-q")
    assert rc == 0, err
    assert "r.zarr.work" in err and "--resume" in err


# ---------------------------------------------------------------------------------------------
# item 2 (path part): absolute paths reach the engine


def test_relative_paths_reach_the_engine_absolute(sim, tmp_path, capsys, monkeypatch):
    import bigxanes.engine as engine

    seen = {}

    def fake(input, output, **kw):
        seen.update(input=input, output=output)
        raise ValueError("stop here")

    monkeypatch.setattr(engine, "unmix_store", fake)
    monkeypatch.chdir(sim.parent)
    rc, _, err = run(capsys, "unmix", sim.name, "rel.zarr", "--method", "lcf")
    one_line(rc, err, "stop here")
    assert os.path.isabs(seen["input"]) and os.path.isabs(seen["output"])
    assert Path(seen["input"]) == sim.resolve()


# ---------------------------------------------------------------------------------------------
# item 4: cluster arguments and the cluster


@pytest.mark.parametrize(
    "flags, words",
    [
        (("--workers", "-1"), ("--workers", ">= 1")),
        (("--workers", "0"), ("--workers", ">= 1")),
        (("--memory-limit", "lots"), ("--memory-limit", "lots", "not a size")),
        (("--memory-limit", "50MB"), ("--memory-limit", "minimum", "MiB")),
        (("--connect-timeout", "0", "--scheduler", "tcp://127.0.0.1:1"), ("--connect-timeout",)),
    ],
)
def test_cluster_arguments_checked_before_anything_starts(sim, tmp_path, capsys, flags, words):
    out = tmp_path / "o.zarr"
    rc, _, err = run(capsys, "unmix", sim, out, "--method", "lcf", *flags)
    line = one_line(rc, err, *words)
    assert "byte unit" not in line
    assert not out.exists() and not (tmp_path / "o.zarr.work").exists()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_scheduler_is_one_line(sim, tmp_path, capsys):
    addr = f"tcp://127.0.0.1:{_free_port()}"
    t0 = time.monotonic()
    rc, _, err = run(
        capsys, "unmix", sim, tmp_path / "o.zarr", "--method", "lcf", "--scheduler", addr,
        "--connect-timeout", "2",
    )  # fmt: skip
    one_line(rc, err, "cannot reach", addr, "--connect-timeout")
    assert time.monotonic() - t0 < 2 * 2 + 10  # bounded by --connect-timeout (was 30 s)


def test_scheduler_without_workers_is_one_line(sim, tmp_path, capsys):
    from distributed import LocalCluster

    with LocalCluster(n_workers=0, processes=False, dashboard_address=None) as cluster:
        t0 = time.monotonic()
        rc, _, err = run(
            capsys, "unmix", sim, tmp_path / "o.zarr", "--method", "lcf",
            "--scheduler", cluster.scheduler_address, "--connect-timeout", "2",
        )  # fmt: skip
        elapsed = time.monotonic() - t0
    one_line(rc, err, "no worker", "--connect-timeout")
    assert elapsed < 2 * 2 + 10  # bounded by --connect-timeout (was a hang)


def test_watch_stops_the_run_when_no_worker_is_alive(sim, tmp_path, capsys, monkeypatch):
    """The workers disappear during the run: one line naming --resume, exit 2 (not a hang)."""
    from distributed import LocalCluster

    import bigxanes.engine as engine

    def vanishing_workers(input, output, *, client, **kw):
        client.retire_workers(list(client.scheduler_info()["workers"]))
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # a computation waiting for workers forever
            time.sleep(0.05)
        raise AssertionError("the watch did not stop the run")

    monkeypatch.setattr(engine, "unmix_store", vanishing_workers)
    with LocalCluster(n_workers=1, processes=False, dashboard_address=None) as cluster:
        rc, _, err = run(
            capsys, "unmix", sim, tmp_path / "o.zarr", "--method", "lcf",
            "--scheduler", cluster.scheduler_address, "--worker-grace", "1",
        )  # fmt: skip
    one_line(rc, err, "no worker alive", "--worker-grace", "--resume")


def test_cluster_watch_unit():
    from bigxanes.engine.cluster import ClusterWatch

    class NoWorkers:
        def scheduler_info(self):
            return {"workers": {}}

    class OneWorker:
        def scheduler_info(self):
            return {"workers": {"w": {}}}

    w = ClusterWatch(NoWorkers(), grace=0.3, poll=0.05)
    with pytest.raises(KeyboardInterrupt):
        with w:
            time.sleep(30)
    assert w.tripped
    w = ClusterWatch(OneWorker(), grace=0.3, poll=0.05)
    with w:
        time.sleep(0.8)
    assert not w.tripped


# ---------------------------------------------------------------------------------------------
# item 5: no traceback


def test_disk_full_and_read_only_are_one_line(tmp_path, capsys, monkeypatch):
    import bigxanes.engine.results  # noqa: F401 - bound to the real write_dataset first:
    import bigxanes.importers  # noqa: F401 - a module first imported while patched keeps it
    import bigxanes.store as store

    for code, words in ((errno.ENOSPC, ("disk full",)), (errno.EROFS, ("read-only",))):

        def failing(ds, path, *, _code=code, **kw):
            raise OSError(_code, os.strerror(_code), str(path))

        monkeypatch.setattr(store, "write_dataset", failing)
        rc, _, err = run(capsys, "simulate", tmp_path / "s.zarr", "--shape", "8,8")
        one_line(rc, err, *words, "s.zarr")


def test_corrupt_chunk_read_by_refs_and_import(tmp_path, capsys):
    ds = simulate("particles", shape=(24, 24), n_components=2, sigma=7, seed=0)
    bad = write_dataset(ds, tmp_path / "bad.zarr")
    chunk = next(p for p in (bad / "absorbance" / "c").rglob("*") if p.is_file())
    chunk.write_bytes(b"garbage" * 10)
    rc, _, err = run(capsys, "refs", bad, tmp_path / "r.csv", "--n-components", "2", "-q")
    one_line(rc, err, "chunk", "bad.zarr")
    rc, _, err = run(capsys, "import", bad, tmp_path / "i.zarr", "-q")
    one_line(rc, err, "chunk", "bad.zarr")


def test_one_energy_with_the_default_baseline(tmp_path, capsys):
    ds = simulate("particles", shape=(16, 16), n_components=2, sigma=7, seed=0)
    write_dataset(ds.isel(energy=[0]), tmp_path / "few.zarr")  # one energy (was IndexError)
    rc, _, err = run(capsys, "unmix", tmp_path / "few.zarr", tmp_path / "o.zarr", "--method", "lcf")
    line = one_line(rc, err, "energies")  # the references need more energies than one
    assert "IndexError" not in line


def test_symlink_loop_is_one_line(tmp_path, capsys):
    loop = tmp_path / "loop.zarr"
    loop.symlink_to(loop)
    rc, _, err = run(capsys, "unmix", loop, tmp_path / "o.zarr")
    one_line(rc, err, "symlink loop")
    rc, _, err = run(capsys, "info", loop)
    one_line(rc, err, "symlink loop")


def test_deeply_nested_attrs_are_one_line(sim, tmp_path, capsys):
    import json
    import shutil

    bad = tmp_path / "nested.zarr"
    shutil.copytree(sim, bad)
    meta = json.loads((bad / "zarr.json").read_text())
    deep = "[" * 100000 + "]" * 100000
    text = json.dumps(meta)[:-1] + ', "deep": ' + deep + "}"
    (bad / "zarr.json").write_text(text)
    rc, _, err = run(capsys, "info", bad)
    assert rc == 2 and "Traceback" not in err and "bigxanes: error:" in err


def _cli(*args: str, **kw) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    return subprocess.run(
        [sys.executable, "-m", "bigxanes.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        **kw,
    )


def test_info_into_a_closed_pipe(sim):
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    p = subprocess.run(
        f"'{sys.executable}' -m bigxanes.cli info '{sim}' | true",
        shell=True,
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert "Traceback" not in p.stderr and "BrokenPipe" not in p.stderr, p.stderr


@pytest.mark.skipif(
    os.environ.get("BIGXANES_SIGNAL_TESTS") != "1",
    reason="signals a LocalCluster run; passes alone but once hung >120 s after SIGINT on a "
    "loaded machine (under investigation): set BIGXANES_SIGNAL_TESTS=1 to run it",
)
@pytest.mark.parametrize("after", [2.0, 15.0])  # 15 s: workers heartbeating mid-iterations
def test_ctrl_c_on_a_local_cluster_prints_one_line(sim, tmp_path, after):
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    out = tmp_path / "o.zarr"
    proc = subprocess.Popen(
        [sys.executable, "-m", "bigxanes.cli", "unmix", str(sim), str(out), "--method",
         "rum-tv", "--iters", "100000", "--tol", "1e-30", "--workers", "1", "-q"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,  # its own process group, as a terminal's foreground job
    )  # fmt: skip
    lock = tmp_path / "o.zarr.lock"
    deadline = time.monotonic() + 240
    while not lock.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(after)
    assert proc.poll() is None, proc.communicate()
    os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C: SIGINT to every process of the job
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert "Traceback" not in err, err
    assert lines == ["bigxanes: error: interrupted (bigxanes unmix ... --resume continues)"], err


# ---------------------------------------------------------------------------------------------
# item 6: messages and modes


def test_resume_on_a_complete_output_says_already_complete(sim, tmp_path, capsys):
    out = tmp_path / "r.zarr"
    assert main(["unmix", str(sim), str(out), "--method", "lcf", "-q"]) == 0
    before = listing(out)
    rc, stdout, err = run(capsys, "unmix", sim, out, "--method", "lcf", "--resume")
    assert rc == 0, err
    assert "already complete" in stdout
    assert listing(out) == before


def test_info_after_a_killed_run_says_incomplete_resume(sim, tmp_path, capsys, monkeypatch):
    out = tmp_path / "r.zarr"
    monkeypatch.setenv("BIGXANES_FAIL_AFTER", "2")
    rc, _, _ = run(capsys, "unmix", sim, out, "--method", "rum-tv", "--iters", "20", "-q")
    assert rc != 0 and not out.exists() and (tmp_path / "r.zarr.work").is_dir()
    rc, _, err = run(capsys, "info", out)
    one_line(rc, err, "incomplete", "--resume")
    rc, _, err = run(capsys, "plot", out, tmp_path / "p.png")
    one_line(rc, err, "incomplete", "--resume")


def test_unmix_a_tiff_names_the_import_command(tmp_path, capsys):
    tif = tmp_path / "stack.tif"
    tif.write_bytes(b"II*\x00" + b"\x00" * 100)
    rc, _, err = run(capsys, "unmix", tif, tmp_path / "o.zarr")
    line = one_line(rc, err, "not a Zarr", "bigxanes import")
    assert "interrupted" not in line


@pytest.mark.parametrize(
    "argv_tail, flag",
    [
        (("--method", "rum-tv", "--iters", "-1"), "--iters"),
        (("--refs", "auto", "--n-components", "0"), "--n-components"),
        (("--memory-limit", "lots"), "--memory-limit"),
        (("--lam", "big"), "--lam"),
    ],
)
def test_messages_name_flags_not_python_parameters(sim, tmp_path, capsys, argv_tail, flag):
    rc, _, err = run(capsys, "unmix", sim, tmp_path / "o.zarr", *argv_tail)
    line = one_line(rc, err, flag)
    for py in ("max_iter", "L must", "byte unit", "energies=", "lam="):
        assert py not in line, line


def test_import_without_energies_names_the_flag(tmp_path, capsys):
    tifffile = pytest.importorskip("tifffile")
    tifffile.imwrite(tmp_path / "s.tif", np.ones((4, 8, 8), np.float32), photometric="minisblack")
    rc, _, err = run(capsys, "import", tmp_path / "s.tif", tmp_path / "o.zarr", "-q")
    line = one_line(rc, err, "--energies")
    assert "energies=" not in line


def test_truncated_tiff_names_the_file(tmp_path, capsys):
    tifffile = pytest.importorskip("tifffile")
    tif = tmp_path / "trunc.tif"
    tifffile.imwrite(tif, np.ones((6, 32, 32), np.float32), photometric="minisblack")
    data = tif.read_bytes()
    tif.write_bytes(data[: len(data) // 2])
    (tmp_path / "e.txt").write_text("\n".join(str(8330 + i) for i in range(6)))
    rc, _, err = run(
        capsys, "import", tif, tmp_path / "o.zarr", "--energies", tmp_path / "e.txt", "-q"
    )
    line = one_line(rc, err, "trunc.tif")
    assert "mmap length" not in line or "trunc.tif" in line


def test_outputs_honour_the_umask(sim, tmp_path, capsys):
    old = os.umask(0o022)
    try:
        csv = tmp_path / "refs.csv"
        assert main(["refs", str(sim), str(csv), "--n-components", "2", "-q"]) == 0
        assert (csv.stat().st_mode & 0o777) == 0o644
        res = tmp_path / "r.zarr"
        assert main(["unmix", str(sim), str(res), "--method", "lcf", "-q"]) == 0
        png = tmp_path / "r.png"
        assert main(["plot", str(res), str(png), "-q"]) == 0
        assert (png.stat().st_mode & 0o777) == 0o644
    finally:
        os.umask(old)


# ---------------------------------------------------------------------------------------------
# one vocabulary: --components = names, --n-components = a count


def test_components_vocabulary_and_deprecated_spellings(sim, tmp_path, capsys):
    import xarray as xr

    s = tmp_path / "named.zarr"
    rc, _, err = run(capsys, "simulate", s, "--shape", "8,8", "--components", "Fe2", "Fe3", "-q")
    assert rc == 0, err
    names = [str(c) for c in xr.open_zarr(s, consolidated=False)["component"].values]
    assert names == ["Fe2", "Fe3"]
    s3 = tmp_path / "three.zarr"
    rc, _, err = run(capsys, "simulate", s3, "--shape", "8,8", "--components", "3", "-q")
    assert rc == 0 and "deprecated" in err and "--n-components 3" in err
    assert xr.open_zarr(s3, consolidated=False).sizes["component"] == 3
    rc, _, err = run(
        capsys, "unmix", sim, tmp_path / "a.zarr", "--method", "lcf", "--refs", "auto",
        "--components-count", "2", "-q",
    )  # fmt: skip
    assert rc == 0 and "deprecated" in err and "--n-components" in err
    rc, _, err = run(
        capsys, "simulate", tmp_path / "x.zarr", "--components", "A", "B", "--n-components", "3"
    )
    one_line(rc, err, "--n-components", "--components")


def test_cluster_watch_restart_loop_unit():
    """Workers that die and come back (a nanny restarting them: memory limit too small) are
    caught like a cluster without workers, and named as such (issue 13 item 4)."""
    from bigxanes.engine.cluster import ClusterWatch

    class Restarting:  # a new worker address at every poll: none stays up
        n = 0

        def scheduler_info(self):
            self.n += 1
            return {"workers": {f"tcp://w:{self.n}": {}}}

    w = ClusterWatch(Restarting(), grace=0.4, poll=0.05)
    t0 = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        with w:
            time.sleep(30)
    assert w.tripped and time.monotonic() - t0 < 5
    assert w.restarts >= 3
    text = w.describe()
    assert "restarting" in text and "--memory-limit" in text and "--worker-grace" in text

    # a worker that stays up keeps the watch quiet even after others were lost
    class Stable:
        def scheduler_info(self):
            return {"workers": {"tcp://w:1": {}}}

    w = ClusterWatch(Stable(), grace=0.4, poll=0.05)
    with w:
        time.sleep(1.0)
    assert not w.tripped


def test_info_memory_minimum_is_the_refused_minimum(sim, tmp_path, capsys):
    """`info` and the --memory-limit check use one rule (engine.planning.minimum_memory_limit):
    the minimum info prints is the one unmix refuses below and names (issue 13 item 4)."""
    import re

    from bigxanes.engine.cluster import validate_cluster_args
    from bigxanes.engine.planning import estimate_resources, worker_pause_fraction

    rc, out, _ = run(capsys, "info", sim)
    assert rc == 0
    m = re.search(r"resources \(lcf[^)]*\):.*memory_min_per_worker=([\d.]+) MiB", out)
    assert m, out
    est = estimate_resources(str(sim), "lcf")
    need = est["memory_min_per_worker"]
    assert float(m.group(1)) == pytest.approx(need / 2**20, abs=0.06)
    # the minimum limit keeps the worker's expected peak below dask's pause threshold
    assert est["memory_per_worker"] <= worker_pause_fraction() * need < est["memory_per_worker"] + 2
    validate_cluster_args(1, need, task_bytes=est["task_bytes"])  # the minimum itself: accepted
    with pytest.raises(ValueError, match="below the minimum"):
        validate_cluster_args(1, need - 2**20, task_bytes=est["task_bytes"])
    below = f"{int(need // 2**20)}MiB"  # just below the minimum (which is not whole MiB)
    rc, _, err = run(capsys, "unmix", sim, tmp_path / "o.zarr", "--method", "lcf",
                     "--memory-limit", below)  # fmt: skip
    line = one_line(rc, err, "--memory-limit", "minimum")
    assert f"at least {int(-(-need // 2**20))}MiB" in line


# ---------------------------------------------------------------------------------------------
# issue 17 item 6: the dashboard link


def test_dashboard_link_of_a_scheduler_unit(monkeypatch):
    from bigxanes.engine import cluster as cl

    class WithDashboard:
        dashboard_link = "http://10.0.0.5:8787/status"

        def scheduler_info(self):
            return {"services": {"dashboard": 8787}, "workers": {}}

    class WithoutDashboard:
        @property
        def dashboard_link(self):  # distributed raises KeyError here: never reached
            raise AssertionError

        def scheduler_info(self):
            return {"services": {}, "workers": {}}

    assert cl.dashboard_link(WithDashboard()) == "http://10.0.0.5:8787/status"
    assert cl.dashboard_link(WithoutDashboard()) is None
    # a LocalCluster started by the command line serves it on a free local port with bokeh
    seen = {}

    class FakeCluster:
        def __init__(self, **kw):
            seen.update(kw)

    import distributed

    monkeypatch.setattr(distributed, "LocalCluster", FakeCluster)
    monkeypatch.setattr(distributed, "Client", lambda c: c)
    monkeypatch.setattr(cl, "dashboard_available", lambda: True)
    cl.start_local_cluster(1, "1GB")
    assert seen["dashboard_address"] == "127.0.0.1:0"
    monkeypatch.setattr(cl, "dashboard_available", lambda: False)
    cl.start_local_cluster(1, "1GB")
    assert seen["dashboard_address"] is None


@pytest.mark.slow
def test_dashboard_line_for_a_local_cluster(sim, tmp_path, capsys):
    """A LocalCluster of worker processes (slow to start; the fast variant is the unit test
    above, which checks the free-port dashboard address)."""
    import re

    from bigxanes.engine.cluster import dashboard_available

    rc, out, err = run(capsys, "unmix", sim, tmp_path / "a.zarr", "--method", "lcf",
                       "--workers", "1", "--memory-limit", "1GB")  # fmt: skip
    assert rc == 0, err
    if dashboard_available():
        assert re.search(r"^dashboard: http://127\.0\.0\.1:\d+/status$", out, re.M), out
    else:
        assert "dashboard: off (install bokeh" in out


def test_dashboard_line_for_a_scheduler(sim, tmp_path, capsys):
    import re

    from distributed import LocalCluster

    with LocalCluster(n_workers=1, processes=False, dashboard_address=":0") as cluster:
        link = cluster.dashboard_link
        rc, out, err = run(capsys, "unmix", sim, tmp_path / "b.zarr", "--method", "lcf",
                           "--scheduler", cluster.scheduler_address)  # fmt: skip
    assert rc == 0, err
    port = link.rsplit(":", 1)[1].split("/")[0]
    assert re.search(rf"^dashboard: http://\S+:{port}/status$", out, re.M), out  # its own


def test_cluster_flags_checked_before_the_input_is_read(tmp_path, capsys):
    """A bad --workers/--memory-limit is named even before the input is opened."""
    for flags, words in (
        (("--memory-limit", "lots"), ("--memory-limit", "not a size")),
        (("--memory-limit", "10MB"), ("--memory-limit", "minimum")),
        (("--worker-grace", "0"), ("--worker-grace",)),
    ):
        rc, _, err = run(capsys, "unmix", tmp_path / "missing.zarr", tmp_path / "o.zarr", *flags)
        one_line(rc, err, *words)


def test_plot_of_a_symlink_loop_names_the_loop(tmp_path, capsys):
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    rc, _, err = run(capsys, "plot", tmp_path / "loop", tmp_path / "o.png")
    one_line(rc, err, "symlink loop")


def test_library_messages_reach_the_user_in_flags():
    """The library's own messages for Python callers, as raised, are reworded with flags."""
    from bigxanes.cli.errors import to_flags
    from bigxanes.kernels.moments import nonfinite_error
    from bigxanes.rum import RumParams
    from bigxanes.spectra_model import model_references

    msgs = [str(nonfinite_error(3))]
    for bad in (lambda: RumParams(max_iter=-1), lambda: model_references(L=0)):
        with pytest.raises(ValueError) as e:
            bad()
        msgs.append(str(e.value))
    for m in msgs:
        t = to_flags(m)
        for py in ("max_iter", "L must", "nan_policy", "overwrite=True", "energies="):
            assert py not in t, (m, t)


@pytest.fixture
def disk_full(monkeypatch):
    """``disk_full(where)``: Zarr chunk writes into a store whose path contains ``where``
    raise ENOSPC, as a full disk does in the middle of a run (inside the dask tasks that
    write); ``disk_full(None)``: space freed."""
    import zarr.storage

    orig = zarr.storage.LocalStore.set

    def arm(where: str | None) -> None:
        async def full(self, key, value, *a, **kw):
            if where is not None and where in str(self.root) and "/c/" in f"/{key}":
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self.root / key))
            return await orig(self, key, value, *a, **kw)

        monkeypatch.setattr(zarr.storage.LocalStore, "set", full)

    yield arm
    monkeypatch.setattr(zarr.storage.LocalStore, "set", orig)


@pytest.mark.parametrize("where", [".work", ".partial-"])  # the run's state / the result
def test_disk_full_during_unmix_is_one_line_and_resumable(sim, tmp_path, capsys, disk_full,
                                                          where):  # fmt: skip
    out = tmp_path / "o.zarr"
    args = ("unmix", sim, out, "--method", "rum-tv", "--iters", "4", "-q")
    disk_full(where)
    rc, _, err = run(capsys, *args)
    one_line(rc, err, "disk full", "--resume")
    assert not is_complete(out)
    disk_full(None)
    rc, _, err = run(capsys, *args, "--resume")
    assert rc == 0, err
    assert is_complete(out)


def test_disk_full_during_import_is_one_line(tmp_path, capsys, disk_full):
    tifffile = pytest.importorskip("tifffile")
    tif = tmp_path / "s.tif"
    tifffile.imwrite(tif, np.ones((6, 16, 16), np.float32), photometric="minisblack")
    np.savetxt(tmp_path / "e.txt", np.arange(6) + 7000.0)
    disk_full(".partial-")
    out = tmp_path / "s.zarr"
    rc, _, err = run(capsys, "import", tif, out, "--energies", tmp_path / "e.txt", "-q")
    one_line(rc, err, "disk full")
    assert not out.exists() or not is_complete(out)


def test_exported_tiffs_honour_the_umask_and_include_chi2(sim, tmp_path, capsys):
    from bigxanes.export import export_result

    res = tmp_path / "r.zarr"
    assert main(["unmix", str(sim), str(res), "--method", "lcf", "-q"]) == 0
    old = os.umask(0o027)
    try:
        export_result(res, tmp_path / "tif", format="tiff")
    finally:
        os.umask(old)
    files = sorted((tmp_path / "tif").glob("*.tif"))
    assert "reduced_chi2.tif" in [f.name for f in files]
    assert all((f.stat().st_mode & 0o777) == 0o640 for f in files)
