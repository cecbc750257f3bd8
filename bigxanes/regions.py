"""Regions and masks: parse ``y0:y1,x0:x1[,z0:z1]``, load a mask file, or find the sample (auto).

Pure NumPy (plus tifffile to read ``.tif`` masks). Region strings follow the order of the
spatial axes ``(y, x)`` of images; for volumes the third range is ``z``, as written on the
command line (``--region y0:y1,x0:x1,z0:z1``); :func:`parse_region` returns slices in array
order ``(z, y, x)``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

__all__ = ["parse_region", "load_mask", "auto_mask", "otsu_threshold", "resolve_mask"]


def parse_region(text: str, shape: tuple[int, ...]) -> tuple[slice, ...]:
    """Parse ``"y0:y1,x0:x1[,z0:z1]"`` into slices in array order.

    Each range is half-open like Python slices; an empty bound means the edge
    (``":,10:20"``). Negative bounds count from the end.

    Parameters
    ----------
    text : str
        The region as given to ``--region``.
    shape : tuple of int
        Spatial shape ``(y, x)`` or ``(z, y, x)`` of the data.

    Returns
    -------
    tuple of slice
        ``(y, x)`` or ``(z, y, x)`` slices with bounds inside ``shape``.

    Raises
    ------
    ValueError
        On a malformed string, a wrong number of ranges or an empty range.
    """
    parts = [p.strip() for p in str(text).split(",")]
    nd = len(shape)
    if len(parts) != nd:
        want = "y0:y1,x0:x1" if nd == 2 else "y0:y1,x0:x1,z0:z1"
        raise ValueError(
            f"--region {text!r} has {len(parts)} ranges but the data has {nd} spatial axes; "
            f"write it as {want}"
        )
    names = ["y", "x", "z"][:nd]
    sizes = dict(zip(["z", "y", "x"][-nd:], shape, strict=True))
    slices: dict[str, slice] = {}
    for name, p in zip(names, parts, strict=True):
        bits = p.split(":")
        if len(bits) != 2:
            raise ValueError(f"--region range {p!r} for {name} is not of the form start:stop")
        try:
            a = int(bits[0]) if bits[0] else None
            b = int(bits[1]) if bits[1] else None
        except ValueError:
            raise ValueError(f"--region range {p!r} for {name} must hold integers") from None
        lo, hi, _ = slice(a, b).indices(sizes[name])
        if hi <= lo:
            raise ValueError(
                f"--region range {p!r} for {name} is empty on an axis of {sizes[name]} pixels"
            )
        slices[name] = slice(lo, hi)
    return tuple(slices[d] for d in ["z", "y", "x"][-nd:])


def load_mask(path: str | os.PathLike, shape: tuple[int, ...] | None = None) -> np.ndarray:
    """Read a boolean mask from ``.npy`` or ``.tif``/``.tiff`` (nonzero = sample).

    Parameters
    ----------
    path : str or os.PathLike
    shape : tuple of int, optional
        Expected spatial shape; checked when given.

    Raises
    ------
    FileNotFoundError
        If the file does not exist.
    ValueError
        On an unknown suffix or a shape mismatch.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"mask file {p} does not exist; check --mask")
    suffix = p.suffix.lower()
    if suffix == ".npy":
        m = np.load(p, allow_pickle=False)
    elif suffix in (".tif", ".tiff"):
        import tifffile

        m = tifffile.imread(p)
    else:
        raise ValueError(f"mask file {p} must be .npy, .tif or .tiff (or use --mask auto)")
    m = np.asarray(m)
    m = np.squeeze(m) if shape is not None and m.ndim > len(shape) else m
    if shape is not None and tuple(m.shape) != tuple(shape):
        raise ValueError(
            f"mask {p} has shape {tuple(m.shape)} but the data's images are {tuple(shape)}; "
            "give a --mask of the same size"
        )
    return np.asarray(m != 0)


def otsu_threshold(values: np.ndarray, bins: int = 256) -> float:
    """Otsu's threshold: the cut maximizing the between-class variance of a histogram.

    ``t* = argmax_t w0(t) w1(t) (mu0(t) - mu1(t))^2`` (Otsu, IEEE SMC 9, 62, 1979), over the
    finite values.
    """
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0 or v.min() == v.max():
        raise ValueError("cannot find a sample mask automatically: the image is constant")
    hist, edges = np.histogram(v, bins=bins)
    centers = 0.5 * (edges[:-1] + edges[1:])
    w0 = np.cumsum(hist).astype(np.float64)
    w1 = w0[-1] - w0
    s0 = np.cumsum(hist * centers)
    with np.errstate(invalid="ignore", divide="ignore"):
        mu0 = s0 / w0
        mu1 = (s0[-1] - s0) / w1
        between = w0 * w1 * (mu0 - mu1) ** 2
    between = np.where(np.isfinite(between), between, -1.0)
    return float(edges[int(np.argmax(between)) + 1])


def auto_mask(edge_jump: np.ndarray) -> np.ndarray:
    """Sample mask from the data: Otsu's threshold on an edge-jump (or total absorbance) map.

    Parameters
    ----------
    edge_jump : ndarray
        Per-pixel edge jump (post-edge minus pre-edge mean absorbance) or total absorbance.

    Returns
    -------
    bool ndarray
        True above the threshold (sample), False elsewhere and on NaN.
    """
    a = np.asarray(edge_jump, dtype=np.float64)
    t = otsu_threshold(a)
    return np.isfinite(a) & (a > t)


def resolve_mask(
    spec: str | os.PathLike | np.ndarray | None,
    shape: tuple[int, ...],
    edge_jump: np.ndarray | None = None,
) -> np.ndarray | None:
    """Turn a ``--mask`` value (None, ``"auto"``, a file, an array) into a boolean mask."""
    if spec is None:
        return None
    if isinstance(spec, np.ndarray):
        if spec.shape != tuple(shape):
            raise ValueError(f"mask has shape {spec.shape}, the images are {tuple(shape)}")
        return spec.astype(bool)
    if str(spec) == "auto":
        if edge_jump is None:
            raise ValueError("--mask auto needs the data's edge jump")
        return auto_mask(edge_jump)
    return load_mask(spec, shape)
