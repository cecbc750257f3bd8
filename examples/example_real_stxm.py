"""Real data: the Fe L3-edge STXM stack in ../shared/data/stxm_fe_l3 (not in this repository).

import with I0 (OD = -ln(I/I0)) -> unmix with the Fe(II)/Fe(III) references (LCF and
RUM-TV) -> PNG. Exits cleanly with a message when the data folder is absent.

Run:  python examples/example_real_stxm.py [OUT_DIR]
Data folder: $BIGXANES_SHARED_DATA/stxm_fe_l3, default ../shared/data/stxm_fe_l3 next to
the repository.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import xarray as xr

from bigxanes.cli import main as cli


def data_folder() -> Path:
    env = os.environ.get("BIGXANES_SHARED_DATA")
    base = Path(env) if env else Path(__file__).resolve().parents[2] / "shared" / "data"
    return base / "stxm_fe_l3"


def main(out_dir: Path) -> int:
    d = data_folder()
    if not (d / "stack_counts.tif").is_file():
        print(f"the real STXM data are not available ({d} is absent); nothing to do.")
        return 0
    out_dir.mkdir(parents=True, exist_ok=True)
    stack = out_dir / "fe.zarr"
    refs = [str(d / "ref_fe2_reduced.txt"), str(d / "ref_fe3_oxidized.txt")]
    steps = [
        [
            "import",
            str(d / "stack_counts.tif"),
            str(stack),
            "--energies",
            str(d / "energies_eV.txt"),
            "--i0",
            str(d / "i0_counts.txt"),
            "--overwrite",
        ],
        [
            "unmix",
            str(stack),
            str(out_dir / "lcf.zarr"),
            "--method",
            "lcf",
            "--refs",
            *refs,
            "--overwrite",
        ],
        [
            "unmix",
            str(stack),
            str(out_dir / "rum-tv.zarr"),
            "--method",
            "rum-tv",
            "--refs",
            *refs,
            "--overwrite",
        ],
        ["plot", str(out_dir / "rum-tv.zarr"), str(out_dir / "fe-rum-tv.png")],
    ]
    for argv in steps:
        print("$ bigxanes " + " ".join(argv))
        rc = cli(argv)
        if rc:
            return rc
    import tifffile

    mask = tifffile.imread(d / "mask.tif").astype(bool)
    for m in ("lcf", "rum-tv"):
        r = xr.open_zarr(out_dir / f"{m}.zarr", consolidated=False)
        f = r["fraction_unmasked"].sel(component="ref_fe3_oxidized").values[mask]
        print(
            f"{m:7s} Fe(III) fraction in the sample: mean {f.mean():.3f}, "
            f"std {f.std():.3f}; mean residual {float(r['residual_rms'].values[mask].mean()):.4f}"
            f"; pixels with Fe(III) > 0.5: {np.mean(f > 0.5):.1%}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(
        main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp(prefix="bx-stxm-")))
    )
