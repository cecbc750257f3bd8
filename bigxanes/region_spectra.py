"""Mean spectra of a region or mask (chunk-wise), the sample mask from the data, map statistics.

- :func:`edge_jump_map`: post-edge minus pre-edge mean absorbance per pixel (the input of
  ``--mask auto``), lazily on a dask-backed stack.
- :func:`region_spectra`: mean and standard deviation over the pixels of a region and/or mask,
  per energy, as dask reductions (never the whole stack in memory).
- :func:`spectra_csv` is the body of ``bigxanes spectra IN.zarr OUT.csv``.
- :func:`mask_summary` is what ``bigxanes info RESULT`` prints: per-component mean and
  percentiles of the fractions over the mask.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from .regions import parse_region, resolve_mask

__all__ = [
    "edge_jump_map",
    "region_spectra",
    "spectra_csv",
    "read_spectra_csv",
    "plot_spectra",
    "mask_summary",
]


def _spatial(st: xr.DataArray) -> list[str]:
    return [str(d) for d in st.dims if d in ("z", "y", "x")]


def edge_jump_map(stack: xr.DataArray, fraction: float = 0.1) -> xr.DataArray:
    """Per-pixel absorption jump: maximum absorbance minus the pre-edge mean.

    ``J = max_E mu(E) - mean_{E in pre} mu(E)`` (pre = the first ``fraction`` of the energy
    points). The maximum rather than a post-edge mean, so that L-edges, whose post-edge step is
    small next to the white line, still separate sample from background (on the real Fe L3
    stack the post-edge step is 0.006 OD, the white line about 1 OD). Lazy on dask arrays.
    """
    T = stack.sizes["energy"]
    k = max(1, int(round(fraction * T)))
    return stack.max("energy") - stack.isel(energy=slice(0, k)).mean("energy")


def region_spectra(
    stack: xr.DataArray,
    *,
    region: str | tuple[slice, ...] | None = None,
    mask: Any = None,
) -> xr.Dataset:
    """Mean spectrum and its standard deviation over a region and/or mask.

    ``mean(E) = (1/N) sum_p mu_p(E)``, ``std(E) = sqrt(sum_p (mu_p(E) - mean(E))^2 / (N - 1))``
    over the N selected pixels (NaN pixels skipped). Dask-backed stacks stay lazy until the
    final (small) result is computed.

    Parameters
    ----------
    stack : xarray.DataArray
        ``(energy, [z], y, x)``.
    region : str or tuple of slice, optional
        ``"y0:y1,x0:x1[,z0:z1]"``.
    mask : path, "auto", bool ndarray, optional
        Sample mask (``.tif``/``.npy``, or ``auto``: Otsu on the edge jump); combined with the
        region.

    Returns
    -------
    xarray.Dataset
        ``mean``, ``std`` (energy) and attrs ``n_pixels``, ``region``, ``mask``.
    """
    spatial = _spatial(stack)
    shape = tuple(int(stack.sizes[d]) for d in spatial)
    if region is None and mask is None:
        raise ValueError("give a region (--region y0:y1,x0:x1) or a mask (--mask FILE|auto)")
    sel = np.ones(shape, dtype=bool)
    if region is not None:
        sl = parse_region(region, shape) if isinstance(region, str) else region
        r = np.zeros(shape, dtype=bool)
        r[sl] = True
        sel &= r
    jump = None
    if isinstance(mask, str) and mask == "auto":
        jump = np.asarray(edge_jump_map(stack).values)
    m = resolve_mask(mask, shape, jump)
    if m is not None:
        sel &= m
    n = int(sel.sum())
    if n < 2:
        raise ValueError(
            f"the region/mask selects {n} pixel(s); choose a larger --region or another --mask"
        )
    sel_da = xr.DataArray(sel, dims=spatial)
    masked = stack.where(sel_da)
    mean = masked.mean(spatial, skipna=True)
    std = masked.std(spatial, skipna=True, ddof=1)
    out = xr.Dataset({"mean": mean, "std": std}).compute()
    out["mean"].attrs.update(units="1", long_name="mean spectrum (optical density)")
    out["std"].attrs.update(units="1", long_name="standard deviation over the pixels")
    out.attrs.update(
        n_pixels=n,
        region="" if region is None else str(region),
        mask="" if mask is None else (mask if isinstance(mask, str) else "array"),
    )
    return out


def spectra_csv(
    in_path: str | os.PathLike,
    out_csv: str | os.PathLike,
    *,
    region: str | None = None,
    mask: str | os.PathLike | None = None,
    plot: str | os.PathLike | None = None,
    overwrite: bool = False,
) -> Path:
    """``bigxanes spectra IN.zarr OUT.csv --region ... | --mask ...``.

    Writes ``energy_eV,mean,std`` (one row per energy, header ``# n_pixels=...``) and, with
    ``plot``, a figure of the mean ± std.
    """
    from .store import open_stack

    out = Path(out_csv)
    if out.exists() and not overwrite:
        raise FileExistsError(f"output {out} already exists; pass --overwrite to replace it")
    st = open_stack(in_path)["stack"]
    sp = region_spectra(st, region=region, mask=None if mask is None else str(mask))
    tmp = out.with_name(f".{out.name}.partial-{os.getpid()}")
    with open(tmp, "w", newline="") as f:
        f.write(f"# bigxanes spectra of {in_path}: n_pixels={sp.attrs['n_pixels']}")
        f.write(f" region={sp.attrs['region'] or '-'} mask={sp.attrs['mask'] or '-'}\n")
        w = csv.writer(f)
        w.writerow(["energy_eV", "mean", "std"])
        for e, m, s in zip(sp["energy"].values, sp["mean"].values, sp["std"].values, strict=True):
            w.writerow([f"{e:.4f}", f"{m:.6g}", f"{s:.6g}"])
    os.replace(tmp, out)
    if plot is not None:
        plot_spectra([sp], plot)
    return out


def read_spectra_csv(path: str | os.PathLike) -> xr.Dataset | None:
    """Read a table written by :func:`spectra_csv` back (None if ``path`` is not one)."""
    p = Path(path)
    with open(p, encoding="utf-8") as fh:
        head = fh.readline()
        if not head.startswith("# bigxanes spectra"):
            return None
        rows = list(csv.DictReader(fh))
    e = np.array([float(r["energy_eV"]) for r in rows])
    ds = xr.Dataset(
        {
            "mean": ("energy", np.array([float(r["mean"]) for r in rows])),
            "std": ("energy", np.array([float(r["std"]) for r in rows])),
        },
        coords={"energy": ("energy", e, {"units": "eV"})},
    )
    attrs = dict(kv.split("=", 1) for kv in head.split() if "=" in kv)
    ds.attrs.update(
        n_pixels=int(attrs.get("n_pixels", 0)),
        region="" if attrs.get("region", "-") == "-" else attrs["region"],
        mask="" if attrs.get("mask", "-") == "-" else attrs["mask"],
    )
    return ds


def plot_spectra(
    spectra: Sequence[xr.Dataset], path: str | os.PathLike, labels: Sequence[str] | None = None
) -> Path:
    """Figure of mean spectra with a ±1 std band, one curve per region/mask."""
    from .plot import _mpl, save_figure

    plt = _mpl()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for i, sp in enumerate(spectra):
        e, m, s = sp["energy"].values, sp["mean"].values, sp["std"].values
        lab = labels[i] if labels else (sp.attrs.get("region") or sp.attrs.get("mask") or "")
        ax.plot(e, m, label=f"{lab} (n={sp.attrs.get('n_pixels')})")
        ax.fill_between(e, m - s, m + s, alpha=0.25)
    ax.set_xlabel("energy (eV)")
    ax.set_ylabel("optical density")
    ax.legend(fontsize=8)
    fig.tight_layout()
    out = save_figure(fig, path)
    plt.close(fig)
    return out


def mask_summary(
    result: xr.Dataset, percentiles: Sequence[float] = (5, 25, 50, 75, 95)
) -> dict[str, dict[str, float]]:
    """Per-component mean and percentiles of the fractions over the result's mask.

    Returns
    -------
    dict
        ``{component: {"mean": ..., "p5": ..., ...}}`` plus ``"_mask"``:
        ``{"n_pixels": ..., "fraction_of_image": ...}``.
    """
    frac = result["fraction_unmasked"] if "fraction_unmasked" in result else result["fraction"]
    spatial = [d for d in frac.dims if d in ("z", "y", "x")]
    if "mask" in result:
        m = np.asarray(result["mask"].values, dtype=bool)
    else:
        m = np.ones(tuple(frac.sizes[d] for d in spatial), dtype=bool)
    out: dict[str, dict[str, float]] = {
        "_mask": {"n_pixels": float(m.sum()), "fraction_of_image": float(m.mean())}
    }
    vals = np.asarray(frac.values)
    for i, c in enumerate(result["component"].values):
        v = vals[i][m]
        v = v[np.isfinite(v)]
        row = {"mean": float(v.mean()) if v.size else float("nan")}
        for p in percentiles:
            row[f"p{p:g}"] = float(np.percentile(v, p)) if v.size else float("nan")
        out[str(c)] = row
    return out
