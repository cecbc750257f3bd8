"""Every example of README's quickstart runs, on the files it names.

The commands are read from README.md itself (the ``bash`` block of the "Quickstart" section and
the inline ``bigxanes ...`` examples of its text), so an edit of the README that breaks an
example fails here. They run from a scratch folder laid out like a checkout (``../shared``
links to the workplace's shared folder, so ``../shared/data/...`` names the same files);
skipped when the data are absent. The fast variant caps the RUM iterations (``--iters``); the
slow one runs the commands exactly as written.
"""

from __future__ import annotations

import os
import re
import shlex
from pathlib import Path

import pytest

from bigxanes.cli import main

ROOT = Path(__file__).resolve().parents[2]
SHARED = ROOT.parent / "shared"
README = ROOT / "README.md"


def quickstart_commands() -> list[list[str]]:
    """The quickstart's commands as argv lists (``bigxanes`` dropped, ``$D`` expanded)."""
    text = README.read_text(encoding="utf-8")
    start = text.index("## Quickstart")
    end = text.index("\n## ", start + 1)
    section = text[start:end]
    block = re.search(r"```bash\n(.*?)```", section, re.S)
    assert block, "README's quickstart has no bash block"
    env: dict[str, str] = {}
    cmds: list[list[str]] = []
    for line in block.group(1).splitlines():
        line = line.split(" #")[0].strip()
        if not line or line.startswith("#"):
            continue
        m = re.fullmatch(r"(\w+)=(\S+)", line)
        if m:
            env[m.group(1)] = m.group(2)
            continue
        for k, v in env.items():
            line = line.replace(f"${k}", v)
        argv = shlex.split(line)
        assert argv[0] == "bigxanes", line
        cmds.append(argv[1:])
    prose = section[block.end() :]
    for m in re.finditer(r"`(bigxanes [^`]+)`", prose):
        cmds.append(shlex.split(" ".join(m.group(1).split()))[1:])
    return cmds


def test_quickstart_is_parsed():
    cmds = quickstart_commands()
    names = [c[0] for c in cmds]
    assert names.count("import") == 1 and names.count("unmix") >= 3 and "plot" in names
    assert "simulate" in names and "info" in names


def _run_all(tmp_path: Path, monkeypatch, capsys, iters: int | None) -> None:
    if not (SHARED / "data" / "stxm_fe_l3").is_dir():
        pytest.skip("../shared/data/stxm_fe_l3 is absent")
    work = tmp_path / "checkout"
    work.mkdir()
    os.symlink(SHARED, tmp_path / "shared")
    monkeypatch.chdir(work)
    for argv in quickstart_commands():
        if iters is not None and argv[0] == "unmix" and any("rum" in a for a in argv):
            argv = [*argv, "--iters", str(iters)]
        if iters is not None and argv[0] == "simulate":
            argv = [*argv, "--shape", "48,48"]  # the last --shape wins
        rc = main([*argv, "-q"] if argv[0] not in ("info",) else argv)
        out, err = capsys.readouterr()
        assert rc == 0, f"bigxanes {' '.join(argv)}: exit {rc}: {err}"
        assert "Traceback" not in err
    for f in ("fe.zarr", "fe-rum.zarr", "fe-lcf.zarr", "fe-rum.png", "sim.zarr", "out.zarr"):
        assert (work / f).exists(), f


def test_readme_quickstart_runs_fast(tmp_path, monkeypatch, capsys):
    _run_all(tmp_path, monkeypatch, capsys, iters=3)


@pytest.mark.slow
def test_readme_quickstart_runs_as_written(tmp_path, monkeypatch, capsys):
    _run_all(tmp_path, monkeypatch, capsys, iters=None)
