"""rank: the true references hidden in a library of real Athena references are ranked first."""

from __future__ import annotations

import numpy as np
import pytest
from prj_sim import ENERGY, prj_library, simulate

from bigxanes.rank import cluster_means, format_rank_table, rank_references, write_rank_csv

LIB = prj_library()
needs_prj = pytest.mark.skipif(LIB is None, reason="Athena project files (shared data) not found")


def _stack(true_names, shifts, seed=0):
    ef, R, names = LIB
    idx = [names.index(n) for n in true_names]
    Y, f = simulate(ef, R[:, idx], shifts, shape=(20, 20), seed=seed)
    return Y.reshape(ENERGY.size, 20, 20), f


@needs_prj
@pytest.mark.parametrize(
    "true", [("Hematite", "Olivine (Fo80)"), ("Goerthite", "Olivine (Fo80)", "Pyrrhotite")]
)
def test_true_combination_ranked_first(true, tmp_path):
    ef, R, names = LIB
    assert len(names) - len(true) >= 8  # hidden among at least 8 others
    stack, _ = _stack(true, [0.0] * len(true))
    mean, centers, counts = cluster_means(stack, k=3)
    assert counts.sum() == 400
    rows = rank_references(ENERGY, mean, ef, R, names, clusters=centers, max_components=len(true))
    assert set(rows[0].names) == set(true), format_rank_table(rows, 5)
    assert rows[0].r_factor < 0.5 * rows[1].r_factor or set(rows[1].names) == set(true)
    write_rank_csv(rows, tmp_path / "rank.csv")
    text = (tmp_path / "rank.csv").read_text().splitlines()
    assert text[0].startswith("rank,n,references") and len(text) == len(rows) + 1


@needs_prj
def test_rank_with_shift_auto_recovers_pair_and_shifts():
    ef, R, names = LIB
    true = ("Hematite", "Olivine (Fo80)")
    stack, _ = _stack(true, [-3.0, 2.0], seed=3)
    mean, centers, _ = cluster_means(stack, k=2)
    sub = [
        names.index(n)
        for n in ("Hematite", "Olivine (Fo80)", "Goerthite", "Pyrrhotite", "Ferrihydrite")
    ]
    rows = rank_references(
        ENERGY,
        mean,
        ef,
        R[:, sub],
        [names[i] for i in sub],
        clusters=centers,
        max_components=2,
        energy_shift="auto",
    )
    assert rows[0].names == true, format_rank_table(rows, 5)
    assert np.all(np.abs(rows[0].shifts - [-3.0, 2.0]) < 0.3)


def test_cluster_means_blockwise_equals_numpy_and_zarr():
    zarr = pytest.importorskip("zarr")
    rng = np.random.default_rng(0)
    T = 30
    a, b = np.linspace(0, 1, T), np.linspace(1, 0, T) ** 2
    lab = (np.arange(24)[:, None] >= 12) & np.ones((24, 24), bool)
    stack = np.where(lab[None], b[:, None, None], a[:, None, None]) * rng.uniform(
        0.5, 2, (1, 24, 24)
    ) + rng.normal(0, 1e-3, (T, 24, 24))
    mean, C, n = cluster_means(stack, k=2, block_rows=5)
    np.testing.assert_allclose(mean, stack.reshape(T, -1).mean(axis=1))
    assert sorted(n.tolist()) == [288, 288]
    z = zarr.array(stack, chunks=(T, 6, 24))
    mean_z, C_z, n_z = cluster_means(z, k=2, block_rows=6)
    np.testing.assert_allclose(mean_z, mean)
    np.testing.assert_array_equal(np.sort(n_z), np.sort(n))
    mask = np.zeros((24, 24), bool)
    mask[:12] = True
    m_mask, _, n_mask = cluster_means(stack, k=2, mask=mask)
    assert n_mask.sum() == 288
    np.testing.assert_allclose(m_mask, stack[:, :12].reshape(T, -1).mean(axis=1))
