"""Edge maps without references: Edge-50 and white line chunk-wise, NaN off the sample."""

from __future__ import annotations

import numpy as np

import bigxanes as bx
from bigxanes.edge_maps import edge_maps


def test_edge_maps_chunkwise_masked_and_ordered_by_state():
    ds = bx.simulate("particles", shape=(48, 48), n_components=2, sigma=2, seed=2)
    mem = edge_maps(ds["stack"])
    chk = edge_maps(ds["stack"].chunk({"y": 16, "x": 16}))
    for v in ("edge50", "white_line_energy", "white_line_height"):
        np.testing.assert_allclose(chk[v].values, mem[v].values, equal_nan=True)
    fg = ds["true_scale"].values > 0.3
    m = mem["mask"].values
    # the auto mask finds the sample, and the maps are NaN off it
    assert (m & fg).sum() / fg.sum() > 0.9 and (m & ~fg).sum() / max(m.sum(), 1) < 0.05
    assert np.isnan(mem["edge50"].values[~m]).all()
    e50 = mem["edge50"].values[m & fg]
    assert np.isfinite(e50).mean() > 0.99
    # Edge-50 follows the chemistry: it correlates with the fraction of the higher-edge state
    refs = ds["references"].values
    from bigxanes.kernels.edge50 import edge50_energy
    from bigxanes.normalize import normalize_spectra

    e = ds["energy"].values
    ref_e50 = edge50_energy(e, normalize_spectra(e, refs, e0=mem.attrs["e0"]).norm)
    hi = int(np.argmax(ref_e50))
    x_hi = ds["true_fraction"].values[hi][m & fg]
    ok = np.isfinite(e50)
    assert np.corrcoef(e50[ok], x_hi[ok])[0, 1] > 0.8
    assert ref_e50.min() - 2 < np.nanmedian(e50) < ref_e50.max() + 2
