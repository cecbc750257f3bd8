"""Many chunks: an input store cut into 2,500 chunks (500 x 500 px in 10 x 10 tiles; 10,000 on
1000 x 1000 px in the slow run) runs LCF to completion and equals the in-memory LCF. (The
engine's own tiles are 100 x 100 here to keep the test short; benchmarks/bench_many_chunks.py
runs 10,000 engine tiles too.)"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from bigxanes import api
from bigxanes.engine import unmix_store
from bigxanes.store import is_complete

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from bench_many_chunks import make_stack  # noqa: E402


@pytest.mark.parametrize(
    "side", [500, pytest.param(1000, marks=pytest.mark.slow)], ids=["2500", "10000"]
)
def test_many_input_chunks(tmp_path, input_guard, side):
    """2,500 input chunks by default (10 s), 10,000 in the slow run (34 s on 2 cores)."""
    inp = tmp_path / "in.zarr"
    Y, A = make_stack(inp, side, 10, 4)
    import zarr

    assert zarr.open_group(str(inp), mode="r")["absorbance"].nchunks == (side // 10) ** 2
    t0 = time.perf_counter()
    with input_guard(inp):
        # 4 energies: no pre-edge to take a baseline from
        out = unmix_store(
            inp,
            tmp_path / "o.zarr",
            method="lcf",
            chunks=100,
            progress=False,
            scheduler="threads",
            baseline="none",
        )
    wall = time.perf_counter() - t0
    assert is_complete(out)
    with xr.open_zarr(out, consolidated=False) as o:
        got = o.load()
    ref = api.lcf(xr.open_zarr(inp, consolidated=False)["absorbance"].load(), A, baseline="none")
    assert np.abs(got["fraction_unmasked"].values - ref["fraction_unmasked"].values).max() <= 1e-4
    assert np.abs(got["scale"].values - ref["scale"].values).max() <= 1e-4 * float(
        ref["scale"].max()
    )
    print(f"{(side // 10) ** 2} input chunks: LCF in {wall:.1f} s")
