"""3-D example: a simulated volume through the out-of-core engine on a LocalCluster.

Run:  python examples/example_3d.py [OUT_DIR]
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import xarray as xr

import bigxanes as bx
from bigxanes.metrics import foreground_mask, psnr_foreground
from bigxanes.plot import plot_result
from bigxanes.store import open_stack, write_dataset


def main(out_dir: Path) -> None:
    from bigxanes.engine import estimate_resources, unmix_store

    out_dir.mkdir(parents=True, exist_ok=True)
    ds = bx.simulate("particles", shape=(48, 64, 64), n_components=2, sigma=7, seed=0)
    stack_path = write_dataset(ds, out_dir / "volume.zarr", overwrite=True, chunks=32)
    print("resources:", estimate_resources(stack_path, "rum-tv"))
    # n_workers starts a LocalCluster (processes) even for this small volume
    res_path = unmix_store(
        stack_path,
        out_dir / "volume-rum-tv.zarr",
        method="rum-tv",
        params=bx.RumParams(method="rum-tv", max_iter=60),
        n_workers=2,
        overwrite=True,
    )
    res = xr.open_zarr(res_path, consolidated=False)
    fg = foreground_mask(ds["true_scale"].values)
    lcf = res["lcf_fraction"].values if "lcf_fraction" in res else None
    print(
        f"RUM-TV foreground PSNR: "
        f"{psnr_foreground(res['fraction'].values, ds['true_fraction'].values, fg):.2f} dB"
    )
    if lcf is not None:
        p_lcf = psnr_foreground(lcf, ds["true_fraction"].values, fg)
        print(f"LCF    foreground PSNR: {p_lcf:.2f} dB")
    png = plot_result(
        res, out_dir / "volume-slice.png", stack=open_stack(stack_path)["stack"], slice_index=24
    )
    print(f"figure (z = 24): {png}")


if __name__ == "__main__":  # LocalCluster needs this guard
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp(prefix="bx3d-")))
