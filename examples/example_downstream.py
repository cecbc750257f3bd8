"""Downstream analysis of a phase map with xarray and SciPy.

Labels particles on the result's mask (scipy.ndimage.label), gives the distribution of the
oxidized fraction per particle, and a line profile across the largest particle.

Run:  python examples/example_downstream.py [RESULT.zarr]
(without an argument a small stack is simulated and unmixed first)
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np
import xarray as xr
from scipy import ndimage

import bigxanes as bx


def load_result(argv: list[str]) -> xr.Dataset:
    if len(argv) > 1:
        return xr.open_zarr(argv[1], consolidated=False).load()
    ds = bx.simulate("particles", shape=(128, 128), n_components=2, sigma=7, seed=0)
    return bx.unmix(ds["stack"], ds["references"], method="rum-tv", max_iter=150)


def main(argv: list[str]) -> None:
    res = load_result(argv)
    comp = str(res["component"].values[-1])
    frac = res["fraction"].sel(component=comp)
    mask = res["mask"].values
    labels, n = ndimage.label(ndimage.binary_opening(mask, iterations=1))
    lab = xr.DataArray(
        labels, dims=frac.dims, coords={d: frac[d] for d in frac.dims if d in frac.coords}
    )
    print(f"{n} particles; fraction of {comp!r} per particle:")
    print(f"{'label':>5} {'pixels':>7} {'mean':>6} {'std':>6} {'p10':>6} {'p90':>6}")
    sizes = ndimage.sum_labels(np.ones_like(labels), labels, index=np.arange(1, n + 1))
    for k in range(1, n + 1):
        vals = frac.values[labels == k]
        print(
            f"{k:5d} {int(sizes[k - 1]):7d} {vals.mean():6.3f} {vals.std():6.3f} "
            f"{np.percentile(vals, 10):6.3f} {np.percentile(vals, 90):6.3f}"
        )
    # the same statistics with xarray groupby
    per = frac.where(lab > 0).groupby(lab.rename("particle")).mean()
    print("xarray groupby means:", np.round(per.values[1:], 3))

    # line profile through the centre of the largest particle, along x
    big = int(np.argmax(sizes)) + 1
    cy, cx = (int(round(c)) for c in ndimage.center_of_mass(labels == big))
    ys, xs = np.nonzero(labels == big)
    x0, x1 = xs.min() - 3, xs.max() + 3
    profile = frac.isel(y=cy, x=slice(max(x0, 0), x1 + 1))
    print(f"profile of {comp!r} across particle {big} at y = {cy}:")
    print(np.round(profile.values, 2))

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from bigxanes.plot import save_figure

    fig, ax = plt.subplots(1, 2, figsize=(8, 3.2))
    ax[0].imshow(labels, cmap="nipy_spectral", interpolation="nearest")
    ax[0].axhline(cy, color="w")
    ax[0].set_title(f"{n} particles")
    ax[1].plot(
        profile["x"].values if "x" in profile.coords else np.arange(profile.size),
        profile.values,
        "o-",
    )
    ax[1].set_title(f"fraction of {comp} along y = {cy}")
    fig.tight_layout()
    out = Path(tempfile.gettempdir()) / "bigxanes-downstream.png"
    save_figure(fig, out)
    print(f"figure: {out}")


if __name__ == "__main__":
    main(sys.argv)
