"""Normal-equation moments of a block of spectra and the one residual formula.

Every fit in bigxanes works from ``AᵀA``, ``AᵀY`` and ``yᵀy`` (docs/design.md, "Pass 1"): after
they are formed no solver touches the T-long spectra again, and the squared residual of any
coefficients ``M`` is ``|y - A m|² = yᵀy - 2 mᵀ(Aᵀy) + mᵀ(AᵀA) m``, written once here
(:func:`residual_sq`).
"""

from __future__ import annotations

import numpy as np

from .baseline import subtract_pre_edge

#: Pixels per slab of :func:`block_moments`: 100 energies x 1024 px x 8 B = 0.8 MB, so a slab's
#: float64 copy stays in a core's L2 cache while ``AᵀY`` and ``yᵀy`` read it (measured on a
#: 256² tile: 6.9 ms against 11.7 ms for whole-block conversion; 4096 px: 6.0, 256 px: 7.0).
SLAB_PIXELS = 1024


def residual_sq(yty: np.ndarray, aty: np.ndarray, M: np.ndarray, AtA: np.ndarray) -> np.ndarray:
    """Squared residual ``|y - A m|² = yᵀy - 2 mᵀ(Aᵀy) + mᵀ(AᵀA)m`` of every pixel.

    Parameters
    ----------
    yty : (*spatial) ndarray
    aty, M : (L, *spatial) ndarray
    AtA : (L, L) ndarray

    Returns
    -------
    (*spatial) ndarray (may be slightly negative from round-off; callers clip).
    """
    AtAM = np.tensordot(AtA, M, axes=1)
    return yty - 2.0 * np.sum(M * aty, axis=0) + np.sum(M * AtAM, axis=0)


def nonfinite_error(n_bad: int) -> ValueError:
    """The error of ``nan_policy="raise"`` for spectra holding NaN/Inf."""
    return ValueError(
        f"the stack holds {int(n_bad)} spectra with NaN/Inf; pass nan_policy='mask' "
        "(bigxanes unmix masks them) to exclude them, or clean the data"
    )


def clean_block(Y: np.ndarray, nan_policy: str = "mask") -> tuple[np.ndarray, np.ndarray]:
    """Float64 copy of a stack block with non-finite spectra zeroed; and the bad-pixel map.

    With ``nan_policy="mask"`` a spectrum holding any NaN/Inf is set to 0 (so s = 0 and it does
    not spread through the spatial steps); with ``"raise"`` a ValueError is raised.
    """
    Y = np.asarray(Y, dtype=np.float64)
    bad = ~np.isfinite(Y).all(axis=0)
    if bad.any():
        if nan_policy != "mask":
            raise nonfinite_error(int(bad.sum()))
        Y = Y.copy()
        Y[:, bad] = 0.0
    return Y, bad


def block_moments(
    Yf: np.ndarray, A: np.ndarray, window: np.ndarray | None, nan_policy: str = "mask"
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``AᵀY``, ``yᵀy`` (float64) and the bad-spectrum mask of ``Yf`` ``(T, N)``, slab by slab.

    Each slab gets the pre-edge baseline (``window``: boolean mask of the pre-edge energies;
    :func:`~bigxanes.kernels.baseline.subtract_pre_edge`) in the stack's dtype, then a float64
    copy. A spectrum holding NaN/Inf has a non-finite ``yᵀy`` (squares of float32 values cannot
    overflow float64), so no separate finiteness pass is needed; such spectra get zero moments,
    as if zeroed (:func:`clean_block`), or raise with ``nan_policy="raise"``.
    """
    N = Yf.shape[1]
    At = np.ascontiguousarray(A.T)
    aty = np.empty((A.shape[1], N))
    yty = np.empty(N)
    for a in range(0, N, SLAB_PIXELS):
        ys = Yf[:, a : a + SLAB_PIXELS]
        if window is not None:
            with np.errstate(invalid="ignore"):  # Inf - Inf: a bad spectrum, zeroed below
                ys = subtract_pre_edge(ys, window)
        ys = ys.astype(np.float64)
        with np.errstate(invalid="ignore", over="ignore"):
            aty[:, a : a + SLAB_PIXELS] = At @ ys
            yty[a : a + SLAB_PIXELS] = np.einsum("tn,tn->n", ys, ys)
    bad = ~np.isfinite(yty)
    if bad.any():
        if nan_policy != "mask":
            raise nonfinite_error(int(bad.sum()))
        aty[:, bad] = 0.0
        yty[bad] = 0.0
    return aty, yty, bad


def finite_spectrum_sum(Y: np.ndarray) -> np.ndarray:
    """Sum of the finite spectra of a block and their count, shaped ``(T + 1, 1, ...)``
    (additive over blocks; the mean spectrum is ``sum[:T] / max(count, 1)``)."""
    T = Y.shape[0]
    flat = np.asarray(Y).reshape(T, -1)
    good = np.isfinite(flat).all(axis=0)
    out = np.empty(T + 1)
    out[:T] = flat[:, good].sum(axis=1, dtype=np.float64)
    out[T] = good.sum()
    return out.reshape((T + 1,) + (1,) * (Y.ndim - 1))


def mean_spectrum(sums: np.ndarray) -> np.ndarray:
    """Mean finite spectrum from the summed :func:`finite_spectrum_sum` outputs."""
    sums = np.asarray(sums, dtype=np.float64).reshape(-1)
    return sums[:-1] / max(sums[-1], 1.0)


def gram(A: np.ndarray) -> np.ndarray:
    """``AᵀA`` (L x L) of the references, float64."""
    A = np.asarray(A, dtype=np.float64)
    return A.T @ A
