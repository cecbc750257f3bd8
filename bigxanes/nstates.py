"""How many chemical states are in a stack? Signal-subspace dimension estimation.

XANES data follow ``Y = A X diag(s) + R`` (docs/CONTRACTS.md): every pixel spectrum is a
*scaled* convex combination of the ``L`` reference spectra. Because of the per-pixel scale
``s`` (thickness, density) the noiseless data fill an ``L``-dimensional *cone*, not an
``(L - 1)``-dimensional affine simplex, so the number of states equals the rank of the
signal part of the **non-centred** correlation matrix ``R_y = Y Y^T / N``; both estimators
below therefore work on ``R_y`` (centring would remove one dimension only when ``s`` is
constant).

Two estimators are provided:

``"hysime"`` (Bioucas-Dias & Nascimento 2008)
    1. Noise estimate by multiple regression: each band ``y_t`` is regressed on all the
       other bands, the residual is the noise estimate ``xi_t``. With ``Q = R_y^{-1}`` the
       residuals are ``xi = D^{-1} Q Y`` (``D = diag(Q)``), so the per-energy noise variance
       is ``1 / Q_tt`` -- computable from ``R_y`` alone. Energy images are separate
       exposures, so ``R_n`` is taken diagonal (see :func:`hysime_noise`).
    2. Signal correlation ``R_x = R_y - R_n`` and its eigenvectors ``e_i`` (decreasing
       eigenvalue).
    3. For the subspace spanned by the first ``k`` eigenvectors the mean squared error of
       projecting the data is, up to a constant,
       ``mse(k) = sum_{i > k} e_i^T R_y e_i + 2 sum_{i <= k} e_i^T R_n e_i``
       (signal power left outside the subspace + noise power kept inside, counted twice as
       in the paper's criterion). The estimate is ``argmin_k mse(k)``.

``"eigengap"``
    Compares each eigenvalue ``lambda_k`` of the signal correlation ``R_x`` with the noise
    power in the same direction ``sigma_k^2 = e_k^T R_n e_k``. Pure noise has sample
    eigenvalues up to the Marchenko-Pastur edge ``sigma^2 (1 + sqrt(T/N))^2``, i.e. up to
    ``sigma^2 ((1 + sqrt(T/N))^2 - 1)`` after subtracting ``R_n`` (floored at
    ``0.1 sigma^2`` for very many pixels); a direction counts as signal when
    ``lambda_k / sigma_k^2`` exceeds ``threshold`` times that edge. The default margin
    (``threshold = 2``) was set on simulated 64 x 64 x 100 stacks: the largest noise direction
    sits at about 0.5 of it, the weakest signal direction of 5 states with edges 2 eV apart at
    sigma = 3 (0-255 scale) at about 2.2 of it. Both estimators need ``N`` well above ``T``
    (``N > 6 T`` for HySime with ``R_n`` diagonal: a pure-noise direction enters its subspace
    when ``(1 + sqrt(T/N))^2 > 2``). The estimate is the number of leading directions above
    the threshold. The criterion values ``log10(lambda_k / (threshold sigma_k^2 edge))``
    change sign at the estimate, which makes a
    readable "eigenvalue gap" plot.

``"knee"`` (the evident knee of the eigenvalue curve)
    On real stacks the multiple-regression noise estimate misses correlated noise (drift,
    residual misalignment, energy-correlated detector noise), so every leading eigenvalue looks
    far above "noise" and both estimators above return ``max_states`` (the real STXM Fe L3
    stack: eigenvalues 309, 0.43, 0.073, 0.058, 0.030, 0.010 against a noise power ~0.001, HySime
    8). An analyst reads the scree plot instead: the number of states is where
    ``log10(lambda_k)`` drops most, ``n = argmax_k [log10 lambda_k - log10 lambda_{k+1}]``.
    Because ``R_y`` is not centred, ``lambda_1`` (the mean spectrum's power) always towers
    over the rest, so the largest drop is sought for ``k >= 2``; ``n = 1`` when the eigen-gap
    criterion finds only one direction above the noise, and ``n`` never exceeds the eigen-gap
    count (directions at the noise level are not states). Every result also carries
    ``n_knee``, ``n_hysime``, ``n_eigengap`` and ``log_gaps`` so the CLI can print all three
    with the eigenvalue curve. Which to trust: on simulated stacks (white noise) all three
    agree; on real stacks where HySime/eigen-gap hit ``max_states``, trust the knee and check
    it with ``bigxanes rank`` (the R-factor stops improving past the right number).

Both estimators need only the sums ``sum y y^T`` and ``N``; for a Dask stack they are
streamed chunk by chunk (:func:`bigxanes.vca.correlation_sums`).

References
----------
.. [1] J. M. Bioucas-Dias and J. M. P. Nascimento, "Hyperspectral subspace identification",
   IEEE Trans. Geosci. Remote Sens. 46(8), 2435-2445 (2008).
.. [2] J. M. P. Nascimento and J. M. Bioucas-Dias, "Vertex component analysis: a fast
   algorithm to unmix hyperspectral data", IEEE Trans. Geosci. Remote Sens. 43(4),
   898-910 (2005).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from bigxanes.vca import CorrelationSums, _unwrap, correlation_sums, spatial_mask

__all__ = ["NStatesResult", "estimate_n_states", "hysime_noise"]

#: Default margin of the eigen-gap criterion over the noise edge.
EIGENGAP_THRESHOLD = 2.0


@dataclass
class NStatesResult:
    """Estimated number of chemical states, with the evidence.

    Attributes
    ----------
    n : int
        Estimated number of states (signal subspace dimension).
    method : str
        ``"hysime"`` or ``"eigengap"``.
    eigenvalues : ndarray, shape (T,)
        Eigenvalues of the signal correlation matrix ``R_x = R_y - R_n``, decreasing (plot
        them on a log scale against ``noise_power``).
    noise_power : ndarray, shape (T,)
        Noise power ``e_k^T R_n e_k`` along each signal eigenvector.
    noise_variance : ndarray, shape (T,)
        Estimated noise variance of every energy (diagonal of ``R_n``).
    k : ndarray of int, shape (K,)
        Candidate numbers of states ``1 .. max_states``.
    criterion : ndarray, shape (K,)
        Criterion for each candidate: HySime mean squared error ``mse(k)`` (minimum at
        ``n``), or for ``"eigengap"`` ``log10`` of eigenvalue over noise edge (positive up to
        ``n``).
    n_pixels : int
        Number of pixels used.
    """

    n: int
    method: str
    eigenvalues: np.ndarray
    noise_power: np.ndarray
    noise_variance: np.ndarray
    k: np.ndarray
    criterion: np.ndarray
    n_pixels: int
    n_hysime: int = 0
    n_eigengap: int = 0
    n_knee: int = 0
    log_gaps: np.ndarray | None = None

    def summary(self) -> str:
        """One line with the three estimates and the leading eigenvalues."""
        ev = ", ".join(f"{v:.3g}" for v in self.eigenvalues[: min(8, self.eigenvalues.size)])
        return (
            f"states: knee {self.n_knee}, HySime {self.n_hysime}, eigen-gap {self.n_eigengap} "
            f"(eigenvalues {ev}; noise ~{float(np.median(self.noise_power)):.2g}); "
            + (
                "estimates agree"
                if self.n_knee == self.n_hysime == self.n_eigengap
                else "trust the knee; check with 'bigxanes rank'"
            )
        )


def hysime_noise(Ry: np.ndarray, n_pixels: int, *, full: bool = False) -> np.ndarray:
    """Noise correlation matrix by multiple regression of each band on the others.

    Parameters
    ----------
    Ry : ndarray, shape (T, T)
        Non-centred correlation matrix ``Y Y^T / N``.
    n_pixels : int
        ``N``; used for the degrees-of-freedom correction ``N / (N - T + 1)`` of the residual
        variances (each regression fits ``T - 1`` coefficients).
    full : bool, default False
        Return the full residual correlation matrix ``D^{-1} Q D^{-1}`` (``Q = Ry^{-1}``,
        ``D = diag(Q)``) instead of its diagonal. The default is the diagonal: energy images
        are separate exposures, so the noise is uncorrelated between energies, and the
        off-diagonal residual correlations are estimation artefacts that are anti-correlated
        with the sample noise eigenvalues of ``Ry`` (they make ``R_n`` look small exactly
        along the largest noise directions and inflate the HySime estimate when ``N`` is not
        much larger than ``T``).

    Returns
    -------
    ndarray, shape (T, T)
        Noise correlation matrix ``R_n``; its diagonal is the per-energy noise variance
        ``1 / Q_tt`` (times the correction).

    References
    ----------
    J. M. Bioucas-Dias and J. M. P. Nascimento, IEEE TGRS 46(8), 2435-2445 (2008), Sec. III-A.
    """
    T = Ry.shape[0]
    ridge = 1e-10 * np.trace(Ry) / T
    Q = np.linalg.inv(Ry + ridge * np.eye(T))
    Q = (Q + Q.T) / 2.0
    dinv = 1.0 / np.diag(Q)
    dof = n_pixels / max(n_pixels - T + 1, 1)
    if not full:
        return np.diag(dinv * dof)
    # Residuals xi = D^{-1} Q Y; xi xi^T / N = D^{-1} Q (Y Y^T / N) Q D^{-1} = D^{-1} Q D^{-1}.
    return dof * (dinv[:, None] * Q * dinv[None, :])


def _from_sums(
    sums: CorrelationSums, method: str, max_states: int, threshold: float
) -> NStatesResult:
    T = sums.S.shape[0]
    N = sums.n
    Ry = sums.correlation
    Rn = hysime_noise(Ry, N)
    Rx = Ry - Rn
    w, V = np.linalg.eigh((Rx + Rx.T) / 2.0)
    order = np.argsort(w)[::-1]
    w, V = w[order], V[:, order]
    py = np.einsum("ti,tu,ui->i", V, Ry, V)
    pn = np.einsum("ti,tu,ui->i", V, Rn, V)
    K = int(min(max_states, T))
    ks = np.arange(1, K + 1)
    # HySime: mse(k) = sum_{i>k} py_i + 2 sum_{i<=k} pn_i (constant terms dropped)
    tail = np.concatenate([np.cumsum(py[::-1])[::-1], [0.0]])  # tail[k] = sum_{i>=k} py
    head = np.concatenate([[0.0], np.cumsum(pn)])
    crit_h = np.array([tail[k] + 2.0 * head[k] for k in ks])
    n_h = int(ks[np.argmin(crit_h)])
    # eigen-gap: eigenvalue over the Marchenko-Pastur noise edge
    g = math.sqrt(T / N)
    edge = max((1.0 + g) ** 2 - 1.0, 0.1) * threshold
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = w[:K] / (np.maximum(pn[:K], np.finfo(float).tiny) * edge)
        crit_e = np.log10(np.where(ratio > 0, ratio, np.finfo(float).tiny))
    above = crit_e > 0
    n_e = max(int(np.argmin(above)) if not above.all() else K, 1)
    # knee: largest drop of log10(eigenvalue) for k >= 2, within the eigen-gap count
    floor = max(float(np.median(pn)), np.finfo(float).tiny) * 1e-3
    lw = np.log10(np.maximum(w[: min(K + 1, T)], floor))
    gaps = lw[:-1] - lw[1:]  # gaps[k-1] = drop after the k-th eigenvalue
    if n_e < 2 or gaps.size < 2:
        n_k = 1
    else:
        n_k = int(np.argmax(gaps[1:n_e])) + 2
    if method == "hysime":
        n, crit = n_h, crit_h
    elif method == "eigengap":
        n, crit = n_e, crit_e
    else:
        n, crit = n_k, gaps[:K]
    return NStatesResult(
        n=n,
        method=method,
        eigenvalues=w,
        noise_power=pn,
        noise_variance=np.diag(Rn).copy(),
        k=ks,
        criterion=crit,
        n_pixels=N,
        n_hysime=n_h,
        n_eigengap=n_e,
        n_knee=n_k,
        log_gaps=gaps,
    )


def estimate_n_states(
    Y: Any,
    *,
    method: Literal["hysime", "eigengap", "knee"] = "hysime",
    max_states: int = 8,
    mask: Any = None,
    threshold: float = EIGENGAP_THRESHOLD,
) -> NStatesResult:
    """Estimate the number of chemical states (signal subspace dimension) of XANES data.

    Parameters
    ----------
    Y : ndarray (T, N), or stack (T, *spatial) as ndarray, dask.array.Array or xarray.DataArray
        Pixel matrix (pixels as columns) or stack. A Dask stack is streamed: only the
        ``T x T`` correlation sum is accumulated, chunk by chunk.
    method : {"hysime", "eigengap", "knee"}
        Estimator (see the module docstring); the result holds all three estimates
        (``n_hysime``, ``n_eigengap``, ``n_knee``) whichever is chosen.
    max_states : int, default 8
        Largest number of states considered.
    mask : array of bool, shape (*spatial), optional
        Pixels to use; mask out the background.
    threshold : float
        Margin over the noise edge for ``"eigengap"``.

    Returns
    -------
    NStatesResult
        ``n`` and the evidence for plotting (eigenvalues, noise powers, criterion per ``k``).

    References
    ----------
    J. M. Bioucas-Dias and J. M. P. Nascimento, "Hyperspectral subspace identification",
    IEEE TGRS 46(8), 2435-2445 (2008).

    Examples
    --------
    >>> res = estimate_n_states(stack, method="hysime")  # doctest: +SKIP
    >>> res.n  # doctest: +SKIP
    3
    """
    if method not in ("hysime", "eigengap", "knee"):
        raise ValueError(f"method must be 'hysime', 'eigengap' or 'knee', got {method!r}.")
    if int(max_states) < 1:
        raise ValueError(f"max_states must be >= 1, got {max_states!r}.")
    arr, _ = _unwrap(Y)
    if arr.ndim < 2:
        raise ValueError(f"expected a (T, N) matrix or (T, *spatial) stack, got {arr.shape}.")
    T = arr.shape[0]
    mask = spatial_mask(mask, arr)
    sums = correlation_sums(arr, mask)
    if sums.n <= T:
        raise ValueError(
            f"only {sums.n} pixels for {T} energies: the noise regression needs more pixels "
            "than energies. Use a larger region (or bin energies)."
        )
    return _from_sums(sums, method, int(max_states), float(threshold))
