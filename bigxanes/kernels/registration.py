"""Registration kernels: sub-pixel drift between energy images, and its artefact-free removal.

Pure NumPy/SciPy on in-memory blocks (no dask, xarray or zarr). The orchestration over a Zarr
stack is :mod:`bigxanes.align`.

Conventions: a stack block is ``(T, *spatial)`` with spatial ``(y, x)`` or ``(z, y, x)``. A
*shift* ``s`` (one number per spatial axis, pixels) is what must be applied to an image to bring
it onto the reference: the corrected image is ``out[i] = img[i - s]`` (the sign convention of
:func:`scipy.ndimage.shift` and of :func:`skimage.registration.phase_cross_correlation`).
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

__all__ = [
    "MIN_CONTRAST",
    "apodize",
    "contrast_snr",
    "image_shift",
    "register_series",
    "apply_shifts",
    "valid_box",
]


#: Below this contrast-to-noise ratio (:func:`contrast_snr`) an image holds no feature that
#: phase correlation can lock on: its shift is not measured but held from its neighbour.
MIN_CONTRAST = 2.0


def contrast_snr(img: np.ndarray) -> float:
    """Contrast-to-noise ratio of an image: standard deviation of its content over its noise.

    The noise ``σ`` comes from the differences of neighbouring pixels along the last axis,
    ``σ = 1.4826 · MAD(Δ) / √2`` (robust to the few large steps at feature edges), the content
    from the rest of the variance, ``snr = √max(var(img) - σ², 0) / σ``. A pre-edge image of a
    sample that absorbs only at the edge is pure noise (snr ≈ 0): phase correlation of two such
    images returns a random peak, often several pixels away.

    Returns
    -------
    float
        ``inf`` for a noise-free image with content, 0 for a constant one.
    """
    a = np.asarray(img, dtype=np.float64)
    a = a[np.isfinite(a)] if a.ndim < 2 else np.where(np.isfinite(a), a, np.nanmean(a))
    if a.ndim < 2 or a.shape[-1] < 3:
        return float("inf")
    d = np.diff(a, axis=-1).ravel()
    sigma = 1.4826 * float(np.median(np.abs(d - np.median(d)))) / math.sqrt(2.0)
    var = float(a.var())
    if sigma <= 0.0:
        return float("inf") if var > 0.0 else 0.0
    return math.sqrt(max(var - sigma**2, 0.0)) / sigma


def apodize(img: np.ndarray) -> np.ndarray:
    """Mean-removed image times a separable Hann window (NaN pixels set to the mean first).

    The window takes the image to zero at its faces, so the periodic wrap that the FFT assumes
    adds no spurious edge to the cross-correlation (the border then carries no weight, whatever
    the drift moved in or out of the field of view).
    """
    a = np.asarray(img, dtype=np.float64)
    finite = np.isfinite(a)
    mean = float(a[finite].mean()) if finite.any() else 0.0
    a = np.where(finite, a, mean) - mean
    for axis, n in enumerate(a.shape):
        w = np.hanning(n) if n > 2 else np.ones(n)
        shape = [1] * a.ndim
        shape[axis] = n
        a = a * w.reshape(shape)
    return a


def image_shift(
    reference: np.ndarray, moving: np.ndarray, upsample: int = 100, refine: int = 1
) -> np.ndarray:
    """Sub-pixel shift that registers ``moving`` onto ``reference`` (phase correlation).

    The cross-power spectrum ``R = F(ref) conj(F(mov))`` of the apodized images
    (:func:`apodize`) is inverted; its peak gives the shift to the pixel, then a matrix-multiply
    DFT upsampled by ``upsample`` around the peak refines it to ``1/upsample`` px (Guizar-Sicairos
    et al., Opt. Lett. 33, 156, 2008, as :func:`skimage.registration.phase_cross_correlation`
    with ``normalization=None``: plain cross-correlation, the robust choice at low dose).

    The window is fixed to the frame while the content moves, which biases the estimate towards
    zero (measured: 0.2 px RMS on drifts up to 8 px). Each of the ``refine`` passes shifts
    ``moving`` by the current estimate (cubic spline, edge values extended) and adds the residual
    shift, which is small, so the bias vanishes (0.02 px RMS after one pass).

    Parameters
    ----------
    reference, moving : ndarray, same shape (2-D or 3-D)
    upsample : int
        Upsampling factor of the peak refinement (precision ``1/upsample`` px).
    refine : int
        Number of re-estimation passes on the shifted image.

    Returns
    -------
    (ndim,) float64 ndarray
        Shift ``s`` with ``reference[i] ≈ moving[i - s]``.
    """
    from skimage.registration import phase_cross_correlation

    ref = apodize(reference)
    mov = np.asarray(moving, dtype=np.float64)
    mov = np.where(np.isfinite(mov), mov, np.nanmean(mov) if np.isfinite(mov).any() else 0.0)
    total = np.zeros(ref.ndim)
    for k in range(int(refine) + 1):
        cur = mov if k == 0 else ndimage.shift(mov, total, order=3, mode="nearest")
        shift, _err, _phase = phase_cross_correlation(
            ref, apodize(cur), upsample_factor=int(upsample), normalization=None
        )
        total = total + np.asarray(shift, dtype=np.float64)
    return total


def register_series(
    images: np.ndarray,
    ref_index: int,
    edge: tuple[int, int] | None = None,
    upsample: int = 100,
    min_contrast: float = MIN_CONTRAST,
) -> tuple[np.ndarray, np.ndarray]:
    """Shifts of every energy image onto the reference image, chained across the edge.

    Images whose contrast resembles the reference's (above the edge) are registered directly
    against it. Across the edge (indices ``edge[0] <= i < edge[1]``) contrast inverts or appears,
    so each image is registered to its neighbour nearer the reference and the shifts add up
    (``s_i = s_j + shift(img_j -> img_i)``, ``j`` the nearest measured image above). Below the
    edge, images are registered directly against the last measured chained image (a second
    anchor with pre-edge contrast), so the chain error does not keep growing through the
    pre-edge.

    An image whose contrast-to-noise ratio (:func:`contrast_snr`) is below ``min_contrast``
    (e.g. the pre-edge of a sample that absorbs only at the edge) has no feature to register:
    its shift is held from its neighbour towards the reference (method 4) instead of being
    read off a noise peak, and it is never used as a chain link or anchor.

    Parameters
    ----------
    images : (T, *spatial) ndarray
        Estimation images (a region or a binned copy of the stack), energy increasing.
    ref_index : int
        Index of the reference image (above the edge).
    edge : (int, int), optional
        Index range ``[lo, hi)`` of the edge region. None: no chain, every image against the
        reference directly.
    upsample : int
        See :func:`image_shift`.
    min_contrast : float
        Contrast-to-noise ratio below which a shift is held, not measured (0: measure all).

    Returns
    -------
    shifts : (T, ndim) float64 ndarray
        ``shifts[ref_index] == 0``.
    method : (T,) int8 ndarray
        How each shift was found: 0 reference, 1 direct, 2 chained, 3 against the pre-edge
        anchor, 4 held from the neighbour (no contrast).

    Raises
    ------
    ValueError
        If the reference image itself has no contrast.
    """
    T = images.shape[0]
    nd = images.ndim - 1
    shifts = np.zeros((T, nd))
    method = np.zeros(T, dtype=np.int8)
    good = np.array([contrast_snr(images[i]) >= min_contrast for i in range(T)])
    if not good[ref_index]:
        raise ValueError(
            f"the reference image (index {ref_index}) has no contrast above its noise "
            f"(contrast-to-noise {contrast_snr(images[ref_index]):.2f} < {min_contrast:g}); "
            "choose another --reference-energy or a feature-rich --region"
        )
    lo, hi = (0, 0) if edge is None else (int(edge[0]), int(edge[1]))
    lo, hi = max(lo, 0), min(max(hi, lo), ref_index)
    ref = images[ref_index]
    # above the edge: every image directly against the reference (held going up if no contrast)
    for i in range(hi, T):
        if i == ref_index:
            continue
        if good[i]:
            shifts[i] = image_shift(ref, images[i], upsample)
            method[i] = 1
        else:
            shifts[i] = shifts[i - 1] if i > hi and i - 1 != ref_index else 0.0
            method[i] = 4
    # chain down through the edge region: hi-1, ..., lo, each onto the nearest measured image
    # above it (the reference when none is)
    anchor = ref_index if hi == ref_index else hi
    if not good[anchor]:
        anchor = ref_index
    for i in range(hi - 1, lo - 1, -1):
        if good[i]:
            shifts[i] = shifts[anchor] + image_shift(images[anchor], images[i], upsample)
            method[i] = 2
            anchor = i
        else:
            shifts[i] = shifts[i + 1]
            method[i] = 4
    # below the edge: directly against the last measured chained image
    for i in range(lo - 1, -1, -1):
        if good[i]:
            shifts[i] = shifts[anchor] + image_shift(images[anchor], images[i], upsample)
            method[i] = 3
        else:
            shifts[i] = shifts[i + 1]
            method[i] = 4
    return shifts, method


def apply_shifts(
    block: np.ndarray,
    shifts: np.ndarray,
    order: int = 1,
) -> np.ndarray:
    """Shift each energy image by its own sub-pixel shift; pixels from outside become NaN.

    ``out[t, i] = block[t, i - shifts[t]]`` by spline interpolation of ``order`` (1: linear, no
    overshoot; 3: cubic), never periodic: where ``i - shifts[t]`` falls outside the block the
    output is NaN (``mode="constant", cval=NaN``), so no wrap-around and no ringing row enters
    the image. Run on a block with a halo deeper than ``max|shift| + 1`` and trim it, and the
    interior equals the shift of the whole array.

    Parameters
    ----------
    block : (T, *spatial) ndarray
    shifts : (T, ndim) ndarray
    order : {1, 3}

    Returns
    -------
    (T, *spatial) float32 ndarray
    """
    if order not in (1, 3):
        raise ValueError(f"interpolation order must be 1 or 3, got {order}")
    out = np.empty(block.shape, dtype=np.float32)
    for t in range(block.shape[0]):
        img = np.asarray(block[t], dtype=np.float64)
        s = np.asarray(shifts[t], dtype=np.float64)
        # a shift within 1e-6 px of an integer IS that integer (as in :func:`valid_box`): a
        # chained sum of 5e-17 would otherwise push a whole border row outside the image
        s = np.where(np.abs(s - np.round(s)) < 1e-6, np.round(s), s)
        if not np.any(s):
            out[t] = img
            continue
        if order == 1:
            out[t] = ndimage.shift(img, s, order=1, mode="constant", cval=np.nan, prefilter=False)
        else:
            # cubic spline on NaN-free data, then NaN wherever the linear footprint leaves the
            # image (the same valid region as order 1; mirror-prefiltered so no ringing enters)
            val = ndimage.shift(img, s, order=3, mode="mirror")
            lin = ndimage.shift(
                np.zeros_like(img), s, order=1, mode="constant", cval=np.nan, prefilter=False
            )
            out[t] = np.where(np.isnan(lin), np.nan, val)
    return out


def valid_box(shape: tuple[int, ...], shifts: np.ndarray, tol: float = 1e-6) -> tuple[slice, ...]:
    """Common region that every shifted image covers (the crop without invalid pixels).

    Output pixel ``i`` of an axis of length ``n`` shifted by ``s`` comes from ``i - s``, inside
    the image when ``s <= i <= n - 1 + s``; the intersection over energies is
    ``[max ceil(s), min floor(n - 1 + s)]``.

    Parameters
    ----------
    shape : spatial shape
    shifts : (T, ndim) ndarray
    tol : float
        Shifts within ``tol`` of an integer count as that integer.

    Returns
    -------
    tuple of slice, one per spatial axis

    Raises
    ------
    ValueError
        If the shifts leave no common region.
    """
    out = []
    for ax, n in enumerate(shape):
        s = np.asarray(shifts)[:, ax]
        lo = max(int(math.ceil(v - tol)) for v in s)
        hi = min(int(math.floor(n - 1 + v + tol)) for v in s)
        lo = max(lo, 0)
        hi = min(hi, n - 1)
        if hi < lo:
            raise ValueError(
                f"the drift ({float(s.min()):.1f} to {float(s.max()):.1f} px along axis {ax}) "
                "leaves no region common to all energies; check --reference-energy or --region"
            )
        out.append(slice(lo, hi + 1))
    return tuple(out)
