"""Figures of unmixing results: phase maps, RGB composite, scale, pixel fits, convergence.

Everything is drawn with Matplotlib's non-interactive ``Agg`` backend (no display needed) and
written atomically: the figure goes to a temporary file in the target folder which is then
renamed, so a reader never sees a half-written PNG.

Main entry point: :func:`plot_result`. Smaller helpers (:func:`rgb_composite`,
:func:`fit_spectra`, :func:`plot_references`) are public for notebooks.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from .baseline import subtract_pre_edge

__all__ = [
    "verdict_words",
    "plot_result",
    "plot_references",
    "rgb_composite",
    "fit_spectra",
    "default_pixels",
    "save_figure",
]

SPATIAL = ("z", "y", "x")


def _mpl():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path: str | os.PathLike, dpi: int = 110) -> Path:
    """Save a Matplotlib figure atomically (temporary file in the same folder, then rename).

    Parameters
    ----------
    fig : matplotlib.figure.Figure
    path : str or os.PathLike
        Target file; the format follows the suffix (``.png`` recommended).
    dpi : int
        Resolution.

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = path.suffix or ".png"
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    try:
        fmt = suffix.lstrip(".").lower() or "png"
        fig.savefig(tmp, dpi=dpi, format=fmt, metadata=figure_metadata(fmt))
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; honour the user's umask
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def figure_metadata(fmt: str) -> dict[str, str] | None:
    """Metadata naming bigxanes as the figure's writer (``--overwrite`` replaces only figures
    that carry it: :func:`bigxanes.paths.written_by_bigxanes`)."""
    from . import __version__

    who = f"bigxanes {__version__} (Matplotlib)"
    if fmt == "png":
        return {"Software": who}
    if fmt in ("pdf", "svg"):
        return {"Creator": who}
    return None


def _umask() -> int:
    """The process umask (read by setting and restoring it)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _slice_index(ds: xr.Dataset | xr.DataArray, slice_index: int | None) -> int | None:
    if "z" not in ds.dims:
        return None
    nz = int(ds.sizes["z"])
    z = nz // 2 if slice_index is None else int(slice_index)
    if not 0 <= z < nz:
        raise ValueError(f"--slice {z} is outside the volume (z = 0..{nz - 1}).")
    return z


def _2d(a: xr.DataArray, z: int | None) -> np.ndarray:
    if z is not None and "z" in a.dims:
        a = a.isel(z=z)
    return np.asarray(a.values)


def rgb_composite(fraction: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """RGB image of up to three fraction maps (red, green, blue), black outside ``mask``.

    Parameters
    ----------
    fraction : ndarray (L, y, x)
        Fractions in [0, 1]; components beyond the third are ignored.
    mask : ndarray of bool (y, x), optional

    Returns
    -------
    ndarray (y, x, 3)
        Float RGB in [0, 1].
    """
    f = np.nan_to_num(np.asarray(fraction, dtype=np.float64), nan=0.0)
    rgb = np.zeros(f.shape[1:] + (3,))
    for j in range(min(3, f.shape[0])):
        rgb[..., j] = np.clip(f[j], 0.0, 1.0)
    if mask is not None:
        rgb[~np.asarray(mask, dtype=bool)] = 0.0
    return rgb


def default_pixels(scale: np.ndarray, mask: np.ndarray | None, n: int = 3) -> list[tuple[int, int]]:
    """Pick ``n`` representative foreground pixels (highest, median and lower scale in mask).

    Parameters
    ----------
    scale : ndarray (y, x)
    mask : ndarray of bool (y, x), optional
    n : int

    Returns
    -------
    list of (y, x)
    """
    s = np.nan_to_num(np.asarray(scale, dtype=np.float64), nan=0.0)
    m = np.ones(s.shape, bool) if mask is None else np.asarray(mask, bool)
    idx = np.flatnonzero(m.ravel())
    if idx.size == 0:
        idx = np.arange(s.size)
    order = idx[np.argsort(s.ravel()[idx])]
    picks = [order[int(q * (order.size - 1))] for q in np.linspace(1.0, 0.25, n)]
    out: list[tuple[int, int]] = []
    for p in picks:
        yx = tuple(int(v) for v in np.unravel_index(p, s.shape))
        if yx not in out:
            out.append(yx)  # type: ignore[arg-type]
    return out


def fit_spectra(
    stack: np.ndarray,
    references: np.ndarray,
    fraction: np.ndarray,
    scale: np.ndarray,
    pixels: Sequence[tuple[int, int]],
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Measured and modelled spectra ``(y, s A x)`` at chosen pixels of a 2-D slice.

    Parameters
    ----------
    stack : ndarray (T, y, x)
    references : ndarray (T, L)
    fraction : ndarray (L, y, x)
    scale : ndarray (y, x)
    pixels : sequence of (y, x)

    Returns
    -------
    list of (measured (T,), fit (T,))
    """
    out = []
    for y, x in pixels:
        meas = np.asarray(stack[:, y, x], dtype=np.float64)
        fit = float(scale[y, x]) * (np.asarray(references) @ np.asarray(fraction[:, y, x]))
        out.append((meas, fit))
    return out


def _pixel_fits(
    stack, references, frac, scale, mask, pixels, z, baseline_window=None, result_energy=None
):
    """Measured spectra at a few pixels (read pixel by pixel: never the whole stack) and fits.

    ``baseline_window`` (EMIN, EMAX in eV): the run removed each spectrum's mean over these
    pre-edge energies (:mod:`bigxanes.baseline`); the same is done here to data and references.
    """
    if isinstance(stack, xr.Dataset):
        stack = stack["stack"]
    if isinstance(references, xr.DataArray):
        ref = references.transpose("energy", ...)
        A = np.asarray(ref.values, dtype=np.float64)
    else:
        ref = None
        A = np.asarray(references, dtype=np.float64)
    A = A.reshape(A.shape[0], -1)
    if isinstance(stack, xr.DataArray):
        sdat = stack.transpose("energy", ...)
        if z is not None and "z" in sdat.dims:
            sdat = sdat.isel(z=z)
        if ref is not None and "energy" in ref.coords and sdat.sizes["energy"] != A.shape[0]:
            # the run used an energy range: select the same energies
            sdat = sdat.sel(energy=ref["energy"].values, method="nearest")
        energy = (
            np.asarray(sdat["energy"].values, dtype=np.float64)
            if "energy" in sdat.coords
            else np.arange(sdat.sizes["energy"], dtype=float)
        )
        ny, nx = sdat.sizes["y"], sdat.sizes["x"]

        def get(y, x):
            return np.asarray(sdat.isel(y=y, x=x).values, dtype=np.float64)
    else:
        arr = np.asarray(stack)
        if z is not None and arr.ndim == 4:
            arr = arr[:, z]
        # a bare array has no energies: take the references' (or the result's) when they match
        ref_e = (
            np.asarray(ref["energy"].values, dtype=np.float64)
            if ref is not None and "energy" in ref.coords
            else result_energy
        )
        energy = (
            ref_e
            if ref_e is not None and ref_e.size == arr.shape[0]
            else np.arange(arr.shape[0], dtype=float)
        )
        ny, nx = arr.shape[1], arr.shape[2]

        def get(y, x):
            return np.asarray(arr[:, y, x], dtype=np.float64)

    if A.shape[0] != energy.size:
        raise ValueError(
            f"references have {A.shape[0]} energies but the stack has {energy.size}; "
            "pass the stack that was unmixed (--stack)."
        )
    pix = [tuple(int(v) for v in p) for p in pixels] if pixels else default_pixels(scale, mask)
    for y, x in pix:
        if not (0 <= y < ny and 0 <= x < nx):
            raise ValueError(f"pixel ({y},{x}) is outside the image of {ny}x{nx} pixels.")
    win = None
    if isinstance(baseline_window, str):  # the engine stores list attrs as JSON text
        baseline_window = json.loads(baseline_window)
    if baseline_window is not None:
        lo, hi = (float(v) for v in baseline_window)
        win = (energy >= lo) & (energy <= hi)
        if not win.any():
            raise ValueError(
                f"the run removed a pre-edge baseline over {lo:g}..{hi:g} eV but the stack's "
                "energies do not reach it; pass the stack as an xarray DataArray with its "
                "'energy' coordinate (or the stack store)"
            )
        A = subtract_pre_edge(A, win)
    fits = []
    for y, x in pix:
        meas = get(y, x)
        if win is not None:
            meas = subtract_pre_edge(meas, win)
        fits.append((meas, float(scale[y, x]) * (A @ frac[:, y, x])))
    return energy, pix, fits


def _history(ds: xr.Dataset) -> dict:
    h = ds.attrs.get("history")
    if isinstance(h, str):
        try:
            return json.loads(h)
        except json.JSONDecodeError:
            return {}
    return dict(h or {})


def _eigenvalues(ds: xr.Dataset | None, eigenvalues: Any) -> np.ndarray | None:
    if eigenvalues is not None:
        return np.asarray(eigenvalues, dtype=np.float64)
    if ds is not None and "eigenvalues" in ds.attrs:
        ev = ds.attrs["eigenvalues"]
        if isinstance(ev, str):
            ev = json.loads(ev)
        return np.asarray(ev, dtype=np.float64)
    return None


def _plot_eigen(ax: Any, ev: np.ndarray, n: int | None = None) -> None:
    k = np.arange(1, ev.size + 1)
    pos = np.where(ev > 0, ev, np.nan)
    ax.semilogy(k, pos, "o-", ms=3)
    if n:
        ax.axvline(n + 0.5, color="r", ls="--", lw=1, label=f"n = {n}")
        ax.legend(fontsize=7)
    ax.set_xlabel("index")
    ax.set_title("signal eigenvalues")


def verdict_words(attrs: Any) -> list[str]:
    """Short verdict of a result for titles: ``converged`` / ``NOT converged (max_iter)``
    (iterative methods) and ``fit ok, chi2 0.97`` / ``POOR fit, chi2 83`` (median reduced χ²)."""
    out = []
    if attrs.get("converged") is not None:
        reason = attrs.get("stop_reason") or "-"
        out.append("converged" if bool(attrs["converged"]) else f"NOT converged ({reason})")
    if attrs.get("fit_ok") is not None and attrs.get("chi2_median") is not None:
        ok = bool(attrs["fit_ok"])
        out.append(f"{'fit ok' if ok else 'POOR fit'}, chi2 {float(attrs['chi2_median']):.3g}")
    return out


def plot_result(
    result: xr.Dataset,
    path: str | os.PathLike,
    *,
    stack: xr.DataArray | np.ndarray | None = None,
    references: xr.DataArray | np.ndarray | None = None,
    pixels: Sequence[tuple[int, int]] | None = None,
    slice_index: int | None = None,
    eigenvalues: Sequence[float] | None = None,
    title: str | None = None,
    dpi: int = 110,
) -> Path:
    """Write a PNG summarizing an unmixing result.

    Panels: one map per component (fraction, masked pixels dimmed), an RGB composite of the
    first three components, the scale map, the spectra of chosen pixels with their fit
    ``s A x`` (when ``stack`` and references are available), the convergence curve (from the
    ``history`` attribute, iterative methods only) and the eigenvalue curve (when
    ``eigenvalues`` are given or stored in attrs). For a 3-D result, one ``z`` slice.

    Parameters
    ----------
    result : xarray.Dataset
        As written by ``bigxanes unmix`` / :func:`bigxanes.api.unmix` (``fraction``,
        ``scale``, ``mask``, attrs ``history``).
    path : str or os.PathLike
        Output image (written atomically).
    stack : xarray.DataArray or ndarray (T, [z], y, x), optional
        The unmixed stack, for the pixel spectra panel.
    references : xarray.DataArray (energy, component) or ndarray (T, L), optional
        On the stack's energies; default the result's ``references`` variable if present.
    pixels : sequence of (y, x), optional
        Pixels whose spectra are shown; default three foreground pixels.
    slice_index : int, optional
        ``z`` slice of a 3-D result (default the middle one).
    eigenvalues : sequence of float, optional
        Signal eigenvalues (e.g. from :func:`bigxanes.nstates.estimate_n_states`).
    title : str, optional
        Figure title (default: the method, iteration count and :func:`verdict_words`).
    dpi : int

    Returns
    -------
    pathlib.Path
        ``path``.

    Raises
    ------
    ValueError
        If ``result`` has no ``fraction`` variable, a pixel is outside the image or the slice
        is outside the volume.
    """
    plt = _mpl()
    maps_only = [v for v in _EXTRA_MAPS if v in result.data_vars]
    if "fraction" not in result and not maps_only:
        raise ValueError(
            "the result has no 'fraction' variable (variables: "
            f"{sorted(map(str, result.data_vars))}); plot the output of `bigxanes unmix`."
        )
    z = _slice_index(result, slice_index)
    has_frac = "fraction" in result
    if has_frac:
        fsrc = result["fraction_unmasked"] if "fraction_unmasked" in result else result["fraction"]
        frac = _2d(fsrc.transpose("component", ...), z).astype(np.float64)
    else:
        frac = np.zeros((0,) + _2d(result[maps_only[0]], z).shape)
    L = frac.shape[0]
    names = (
        [str(c) for c in result["component"].values]
        if "component" in result.coords
        else [f"state {j + 1}" for j in range(L)]
    )
    scale = _2d(result["scale"], z).astype(np.float64) if "scale" in result else None
    mask = _2d(result["mask"], z).astype(bool) if "mask" in result else None
    hist = _history(result)
    ev = _eigenvalues(result, eigenvalues)

    if references is None and "references" in result:
        references = result["references"]
    spectra = None
    if has_frac and stack is not None and references is not None and scale is not None:
        spectra = _pixel_fits(
            stack,
            references,
            frac,
            scale,
            mask,
            pixels,
            z,
            result.attrs.get("baseline_window_eV"),
            np.asarray(result["energy"].values, dtype=np.float64)
            if "energy" in result.coords
            else None,
        )
    marks = list(spectra[1]) if spectra is not None else []

    def mark(ax: Any) -> None:
        for i, (y, x) in enumerate(marks):
            ax.plot(x, y, marker="+", ms=9, mew=1.8, color=f"C{i}", ls="none")

    panels: list[Any] = []

    def fraction_panel(j: int) -> Any:
        def draw(ax: Any, fig: Any) -> None:
            img = np.ma.masked_array(frac[j], mask=~mask) if mask is not None else frac[j]
            cmap = plt.get_cmap("viridis").with_extremes(bad="0.85")
            im = ax.imshow(img, vmin=0, vmax=1, cmap=cmap, interpolation="nearest")
            ax.set_title(f"fraction: {names[j]}", fontsize=9)
            fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
            mark(ax)

        return draw

    def image_panel(arr: np.ndarray, title: str, cmap: str, label: str = "") -> Any:
        def draw(ax: Any, fig: Any) -> None:
            img = arr if mask is None else np.ma.masked_array(arr, mask=~mask | ~np.isfinite(arr))
            finite = np.asarray(arr)[np.isfinite(arr) & (mask if mask is not None else True)]
            lo, hi = np.percentile(finite, [1, 99]) if finite.size else (None, None)
            c = plt.get_cmap(cmap).with_extremes(bad="0.85")
            im = ax.imshow(img, cmap=c, vmin=lo, vmax=hi, interpolation="nearest")
            ax.set_title(title, fontsize=9)
            cb = fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
            if label:
                cb.set_label(label, fontsize=8)
            mark(ax)

        return draw

    for j in range(L):
        panels.append(fraction_panel(j))
    if L:

        def rgb(ax: Any, fig: Any) -> None:
            from matplotlib.patches import Patch

            ax.imshow(rgb_composite(frac, mask), interpolation="nearest")
            ax.set_title("RGB composite", fontsize=9)
            handles = [
                Patch(color=c, label=n)
                for c, n in zip(("red", "lime", "blue"), names[:3], strict=False)
            ]
            ax.legend(
                handles=handles,
                fontsize=7,
                loc="upper center",
                bbox_to_anchor=(0.5, -0.02),
                ncol=min(3, L),
                frameon=False,
            )
            mark(ax)

        panels.append(rgb)
    if scale is not None:
        panels.append(image_panel(scale, "scale s", "gray"))
    if "residual_rms" in result:
        panels.append(
            image_panel(_2d(result["residual_rms"], z).astype(float), "residual RMS", "magma")
        )
    if "fraction_std" in result and L:
        sd = _2d(result["fraction_std"], z).astype(float)
        for j in range(L):
            panels.append(image_panel(sd[j], f"fraction std: {names[j]}", "cividis"))
    for v in maps_only:
        unit = result[v].attrs.get("units", "eV" if "energy" in v or v == "edge50" else "")
        map_title = {"edge50": "Edge-50 energy", "white_line_energy": "white-line energy"}.get(
            v, v.replace("_", " ")
        )
        panels.append(
            image_panel(
                _2d(result[v], z).astype(float), map_title, "plasma", "" if unit == "1" else unit
            )
        )
    if mask is not None:

        def mask_panel(ax: Any, fig: Any) -> None:
            ax.imshow(mask, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            ax.set_title(f"mask ({100 * mask.mean():.0f} % of pixels)", fontsize=9)
            mark(ax)

        panels.append(mask_panel)
    if L:

        def histogram(ax: Any, fig: Any) -> None:
            sel = mask if mask is not None else np.ones(frac.shape[1:], bool)
            bins = np.linspace(0.0, 1.0, 41)
            for j in range(L):
                v = frac[j][sel]
                ax.hist(v[np.isfinite(v)], bins=bins, histtype="step", lw=1.3, label=names[j])
            ax.set_xlabel("fraction")
            ax.set_ylabel("pixels in mask")
            ax.set_title("fractions inside the mask", fontsize=9)
            ax.legend(fontsize=7)

        panels.append(histogram)
    if spectra is not None:

        def spectra_panel(ax: Any, fig: Any) -> None:
            energy, pix, fits = spectra
            for i, ((y, x), (meas, fit)) in enumerate(zip(pix, fits, strict=True)):
                c = f"C{i}"
                ax.plot(energy, meas, ".", ms=2.5, color=c, label=f"({y},{x})")
                ax.plot(energy, fit, "-", lw=1.2, color=c)
            ax.set_xlabel("energy (eV)")
            ax.set_title("pixel spectra (dots) and fits, + on maps", fontsize=9)
            ax.legend(fontsize=7)

        panels.append(spectra_panel)
    if hist.get("primal"):

        def conv(ax: Any, fig: Any) -> None:
            it = hist.get("iteration") or list(range(1, len(hist["primal"]) + 1))
            ax.semilogy(it, np.maximum(np.asarray(hist["primal"], float), 1e-16), label="primal")
            if hist.get("dual"):
                ax.semilogy(it, np.maximum(np.asarray(hist["dual"], float), 1e-16), label="dual")
            ax.set_xlabel("iteration")
            ax.set_title("convergence (relative residuals)", fontsize=9)
            ax.legend(fontsize=7)

        panels.append(conv)
    if ev is not None:
        n_est = result.attrs.get("n_states_estimate")
        panels.append(lambda ax, fig: _plot_eigen(ax, ev, n_est))

    fig, axs = _grid(plt, len(panels))
    for draw, ax in zip(panels, axs, strict=True):
        draw(ax, fig)
        if ax.images:
            ax.set_xticks([])
            ax.set_yticks([])
    if title is None:
        meth = result.attrs.get("method", "result")
        its = result.attrs.get("n_iterations")
        title = (
            f"{meth}"
            + (f", {its} iterations" if its else "")
            + (f", slice z={z}" if z is not None else "")
            + "".join(f"; {w}" for w in verdict_words(result.attrs))
        )
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    try:
        return save_figure(fig, path, dpi=dpi)
    finally:
        plt.close(fig)


_EXTRA_MAPS = ("edge50", "white_line_energy", "white_line_height")


def grid_shape(n: int, max_cols: int = 4) -> tuple[int, int, int]:
    """Rows, columns and panels in the last row of a grid of ``n`` panels with no empty cell.

    The column count (3..``max_cols``) giving the fewest rows, then the fewest gaps, is chosen;
    the panels of a short last row are widened to fill it (see :func:`_grid`).
    """
    if n <= max_cols:
        return 1, max(n, 1), max(n, 1)
    best = min(range(3, max_cols + 1), key=lambda c: (-(-n // c), (-n) % c))
    rows = -(-n // best)
    last = n - (rows - 1) * best
    return rows, best, last


def _grid(plt: Any, n: int) -> tuple[Any, list[Any]]:
    """A figure with exactly ``n`` axes filling the grid (the last row's panels are wider)."""
    rows, cols, last = grid_shape(n)
    fig = plt.figure(figsize=(3.6 * cols, 3.3 * rows))
    gs = fig.add_gridspec(rows, cols * last)
    axs = []
    for i in range(n):
        r, c = divmod(i, cols)
        if r < rows - 1:
            axs.append(fig.add_subplot(gs[r, c * last : (c + 1) * last]))
        else:
            axs.append(fig.add_subplot(gs[r, c * cols : (c + 1) * cols]))
    return fig, axs


def plot_references(
    energy: np.ndarray,
    references: np.ndarray,
    names: Sequence[str],
    path: str | os.PathLike,
    *,
    eigenvalues: Sequence[float] | None = None,
    n_states: int | None = None,
    dpi: int = 110,
) -> Path:
    """Plot reference spectra (e.g. from ``bigxanes refs``) and optionally the eigenvalues.

    Parameters
    ----------
    energy : ndarray (T,)
    references : ndarray (T, L)
    names : sequence of str
    path : str or os.PathLike
        Output image (written atomically).
    eigenvalues : sequence of float, optional
        Signal eigenvalues, drawn on a log scale.
    n_states : int, optional
        Estimated number of states, marked on the eigenvalue curve.

    Returns
    -------
    pathlib.Path
    """
    plt = _mpl()
    n = 1 + (eigenvalues is not None)
    fig, axes = plt.subplots(1, n, figsize=(4.5 * n, 3.4), squeeze=False)
    ax = axes[0, 0]
    A = np.asarray(references, dtype=np.float64).reshape(len(energy), -1)
    for j in range(A.shape[1]):
        ax.plot(energy, A[:, j], label=str(names[j]))
    ax.set_xlabel("energy (eV)")
    ax.set_title("reference spectra", fontsize=9)
    ax.legend(fontsize=7)
    if eigenvalues is not None:
        _plot_eigen(axes[0, 1], np.asarray(eigenvalues, dtype=np.float64), n_states)
    fig.tight_layout()
    try:
        return save_figure(fig, path, dpi=dpi)
    finally:
        plt.close(fig)
