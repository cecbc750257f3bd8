"""2-D example: simulate -> unmix in memory and with the engine -> compare -> plot.

Run:  python examples/example_2d.py [OUT_DIR]
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np
import xarray as xr

import bigxanes as bx
from bigxanes.metrics import foreground_mask, psnr_foreground
from bigxanes.plot import plot_result
from bigxanes.store import write_dataset


def main(out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    ds = bx.simulate("particles", shape=(128, 128), n_components=2, sigma=7, seed=0)
    truth, fg = ds["true_fraction"].values, foreground_mask(ds["true_scale"].values)

    # in memory
    lcf = bx.lcf(ds["stack"], ds["references"])
    rum = bx.unmix(ds["stack"], ds["references"], method="rum-tv", max_iter=200)

    # out of core: the same data from a Zarr store, chunk-wise on Dask
    from bigxanes.engine import unmix_store

    stack_path = write_dataset(ds, out_dir / "stack.zarr", overwrite=True)
    res_path = unmix_store(
        stack_path,
        out_dir / "rum-tv.zarr",
        method="rum-tv",
        params=bx.RumParams(method="rum-tv", max_iter=200),
        overwrite=True,
        chunks=64,
    )
    eng = xr.open_zarr(res_path, consolidated=False).load()

    print("foreground PSNR vs truth (dB):")
    print(f"  LCF               {psnr_foreground(lcf['fraction'].values, truth, fg):6.2f}")
    print(f"  RUM-TV in memory  {psnr_foreground(rum['fraction'].values, truth, fg):6.2f}")
    print(f"  RUM-TV engine     {psnr_foreground(eng['fraction'].values, truth, fg):6.2f}")
    diff = np.abs(eng["fraction_unmasked"].values - rum["fraction_unmasked"].values)
    print(f"max |engine - in memory| = {diff.max():.2e}")
    png = plot_result(eng, out_dir / "rum-tv.png", stack=ds["stack"], references=ds["references"])
    print(f"figure: {png}")


if __name__ == "__main__":  # guard needed when the engine starts a LocalCluster
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp(prefix="bx2d-")))
