"""Reference spectra from the data when none were measured (paper, Remark 1): a practical
pipeline around VCA.

VCA (:func:`bigxanes.vca.vca_stack`) takes single pixels as vertices. On XANES stacks that is
fragile in three ways, each handled here:

1. *Weak pixels win the vertex search.* The projective step divides each spectrum by its
   projection on the mean spectrum, which amplifies the noise of thin, weakly absorbing pixels
   (particle rims), so noisy rims become "extreme". Extraction therefore uses only pixels whose
   mean absorbance is at least ``min_signal`` × the 99th percentile of the image (default 0.3).
2. *One pixel is noisy.* The stack is denoised spatially first (TV, the paper's remedy), and
   each reference is then refined by ``refine`` rounds of: unmix the denoised pixels with the
   current references (unconstrained least squares), take the ``top`` fraction of pixels with the
   largest fraction of each state, average their scale-normalized spectra.
3. *A pixel spectrum carries its pixel's scale s.* Using it as a reference biases every fraction
   by the ratio of the two pixels' scales. Each reference is divided by its edge step, estimated
   as the mean of the last 20 % of energies minus the mean of the first 10 % (both states tend
   to the same post-edge level), so fractions refer to equal amounts of element.

For stacks larger than memory the refinement works on a seeded random sample of at most
``max_pixels`` masked pixels (the denoising runs chunk-wise with a halo).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .kernels.lcf import lstsq_coefficients
from .vca import VCAResult, denoise_stack, vca_stack


def edge_step_scale(spectra: np.ndarray) -> np.ndarray:
    """Divide each column by its edge step ``mean(last 20 %) - mean(first 10 %)``."""
    E = np.asarray(spectra, dtype=np.float64)
    T = E.shape[0]
    step = E[-max(T // 5, 1):].mean(axis=0) - E[: max(T // 10, 1)].mean(axis=0)
    if np.any(~np.isfinite(step)) or np.any(np.abs(step) < 1e-12):
        raise ValueError("an extracted spectrum has no edge step (flat spectrum); check the mask")
    return E / step


@dataclass
class Extraction:
    """References extracted from a stack, with the evidence."""

    references: np.ndarray  # (T, L), edge-step scaled
    vca: VCAResult
    n_pixels: int
    history: list  # per refinement round: max change of the references


def extract_references(
    stack,
    n_components: int,
    *,
    mask: np.ndarray | None = None,
    denoise: str | None = "tv",
    tv_weight: float = 5.0,
    min_signal: float = 0.3,
    refine: int = 3,
    top: float = 0.005,
    seed: int = 0,
    max_pixels: int = 500_000,
) -> Extraction:
    """VCA references with high-signal masking, denoising, refinement and edge-step scaling.

    Parameters
    ----------
    stack : ndarray or dask array (T, *spatial)
    n_components : int
    mask : bool array (*spatial), optional
        Pixels allowed as references (combined with the high-signal mask).
    denoise : {"tv", "gaussian", None}
        Spatial denoising of each energy image first (:func:`bigxanes.vca.denoise_stack`).
    tv_weight : float
        TV weight as a multiple of each image's estimated noise level.
    min_signal : float
        Keep pixels whose mean absorbance is >= ``min_signal`` × its 99th percentile.
    refine : int
        Refinement rounds (0 = plain VCA vertices).
    top : float
        Fraction of the kept pixels averaged per state in a refinement round (at least 10).
    seed : int
    max_pixels : int
        Largest number of pixel spectra loaded for the refinement.

    Returns
    -------
    Extraction
    """
    import dask.array as da

    lazy = isinstance(stack, da.Array)
    T = stack.shape[0]
    mean_img = stack.mean(axis=0)
    mean_img = np.asarray(mean_img.compute() if lazy else mean_img, dtype=np.float64)
    finite = np.isfinite(mean_img)
    hi = float(np.quantile(mean_img[finite], 0.99)) if finite.any() else 0.0
    keep = finite & (mean_img >= min_signal * hi)
    if mask is not None:
        keep &= np.asarray(mask, dtype=bool)
    if keep.sum() < max(10, n_components):
        raise ValueError(
            f"only {int(keep.sum())} pixels with enough signal to extract {n_components} "
            "references; lower min_signal or give a larger mask"
        )
    data = denoise_stack(stack, denoise, tv_weight=tv_weight) if denoise else stack
    v = vca_stack(data, n_components, mask=keep, seed=seed)
    idx = np.flatnonzero(keep.ravel())
    rng = np.random.default_rng(seed)
    if idx.size > max_pixels:
        idx = np.sort(rng.choice(idx, max_pixels, replace=False))
    flat = data.reshape(T, -1)
    D = flat[:, idx]
    D = np.asarray(D.compute() if lazy else D, dtype=np.float64)
    E = edge_step_scale(v.references)
    history = []
    k = max(10, int(top * D.shape[1]))
    for _ in range(int(refine)):
        M = lstsq_coefficients(E.T @ E, E.T @ D)
        s = M.sum(axis=0)
        ok = s > 1e-12
        X = np.where(ok, M / np.where(ok, s, 1.0), 0.0)
        new = np.empty_like(E)
        for j in range(n_components):
            best = np.argsort(-X[j])[:k]
            new[:, j] = (D[:, best] / s[best]).mean(axis=1)
        new = edge_step_scale(new)
        history.append(float(np.abs(new - E).max()))
        E = new
    return Extraction(E, v, int(D.shape[1]), history)
