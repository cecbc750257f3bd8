"""Helpers: stacks simulated from the real Athena references in ../shared/data/athena_projects.

Not a test module. ``prj_library`` is None when the shared data folder is absent (tests skip).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from bigxanes.eshift import shift_references
from bigxanes.references import read_athena_project


def shared_data() -> Path | None:
    env = os.environ.get("BIGXANES_SHARED_DATA")
    if env:
        return Path(env) if Path(env).is_dir() else None
    for parent in Path(__file__).resolve().parents:  # main checkout or a git worktree
        if (parent / "shared" / "data").is_dir():
            return parent / "shared" / "data"
    return None


def prj_files() -> list[Path]:
    d = shared_data()
    if d is None:
        return []
    files = [d / "athena_projects" / f for f in ("Fe.prj", "Fe-K-ALS-10.3.2.prj")]
    return files if all(f.is_file() for f in files) else []


ENERGY = np.arange(7080.0, 7200.01, 0.5)  # a TXM-XANES Fe K-edge scan, 241 energies


def prj_library(margin: float = 15.0):
    """All Fe references (13) normalized with their groups' parameters, on a 0.1 eV grid that
    covers ``ENERGY`` ± ``margin``: ``(fine_energy, R (Tf, 13), names)``, or None."""
    files = prj_files()
    if not files:
        return None
    recs = [r for f in files for r in read_athena_project(f)]
    ef = np.arange(ENERGY[0] - margin, ENERGY[-1] + margin + 1e-9, 0.1)
    R = np.stack([np.interp(ef, r.energy, r.norm) for r in recs], axis=1)
    return ef, R, [r.name for r in recs]


def simulate(ef, R, shifts, shape=(20, 20), i0=2e4, seed=0):
    """Optical density stack ``(T, N)`` of random mixtures of the columns of ``R`` whose features
    are moved by ``shifts`` eV, with a free thickness per pixel and Poisson counting noise
    (``I ~ Poisson(i0 exp(-OD))``). Returns ``(Y, fractions (L, N))``."""
    rng = np.random.default_rng(seed)
    L = R.shape[1]
    N = int(np.prod(shape))
    f = rng.dirichlet(np.ones(L), size=N).T
    t = rng.uniform(0.5, 1.5, size=N)
    A = shift_references(ef, R, shifts, ENERGY)
    od = (A @ f) * t[None, :]
    counts = rng.poisson(i0 * np.exp(-od))
    Y = -np.log(np.maximum(counts, 1) / i0)
    return Y, f
