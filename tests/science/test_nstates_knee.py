"""Number of states on real data: the knee of the eigenvalue curve vs HySime.

The STXM Fe L3 stack (real, ../shared/data) and stacks simulated from real Athena references.
Skipped when the shared data are absent.
"""

from __future__ import annotations

import numpy as np
import pytest
from prj_sim import ENERGY, prj_library, shared_data, simulate

from bigxanes.nstates import estimate_n_states

LIB = prj_library()
D = shared_data()
STXM = None if D is None else D / "stxm_fe_l3"


@pytest.mark.skipif(
    STXM is None or not (STXM / "stack_counts.tif").is_file(), reason="STXM data not found"
)
def test_real_stxm_knee_is_two_where_hysime_says_eight():
    tifffile = pytest.importorskip("tifffile")
    counts = tifffile.imread(STXM / "stack_counts.tif").astype(np.float64)
    i0 = np.loadtxt(STXM / "i0_counts.txt")[:, 1]
    od = -np.log(np.maximum(counts, 1.0) / i0[:, None, None])
    mask = tifffile.imread(STXM / "mask.tif") > 0
    r = estimate_n_states(od, method="knee", mask=mask)
    assert r.n_hysime == 8 and r.n_eigengap == 8  # the overestimate of the issue
    assert r.n == r.n_knee == 2  # Fe(II) + Fe(III): the drop after the 2nd eigenvalue
    assert "trust the knee" in r.summary()


@pytest.mark.skipif(LIB is None, reason="Athena project files (shared data) not found")
@pytest.mark.parametrize(
    "true",
    [("Hematite",), ("Hematite", "Olivine (Fo80)"), ("Goerthite", "Olivine (Fo80)", "Pyrrhotite")],
)
def test_simulated_from_prj_knee_agrees(true):
    ef, R, names = LIB
    Y, _ = simulate(ef, R[:, [names.index(n) for n in true]], [0.0] * len(true), shape=(48, 48))
    r = estimate_n_states(Y, method="knee")
    assert r.n == len(true), r.summary()
    assert r.n_hysime == len(true) and r.n_eigengap == len(true)
    assert ENERGY.size == Y.shape[0]
