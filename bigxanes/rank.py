"""Choosing references: fit every combination of up to K references to the sample's spectra.

Targets: the mean spectrum of the sample (the mask's pixels) and the mean spectra of a few
spectral clusters (:func:`cluster_means`, k-means on the normalized pixel spectra, computed block
by block so a Zarr/Dask stack is never loaded whole).

For every combination ``S`` (1..K references) each target ``y`` is fitted with NNLS and free
scale, ``min ||y - A_S m||², m >= 0`` (unmix's LCF, :func:`bigxanes.kernels.lcf.nnls_coefficients`),
optionally after fitting one energy shift per reference on all targets together
(:func:`bigxanes.eshift.fit_energy_shifts`). Reported per combination:

* ``r_factor``: ``Σ(y - ŷ)² / Σy²`` of the sample's mean spectrum (the ranking key);
* ``r_factor_clusters``: the same summed over the cluster means (a combination that fits the
  mean but not the clusters is suspect);
* ``chi2_reduced``: ``Σ(y - ŷ)² / (σ² (T - p))`` on the mean spectrum with ``p`` = number of
  references (+ number of fitted shifts) and ``σ²`` the noise variance of the mean spectrum
  estimated from its second differences, ``var(Δ²y) / 6`` (white noise);
* ``fractions`` (NNLS coefficients of the mean divided by their sum) and ``shifts``.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass, field
from itertools import combinations

import numpy as np

from .energy import as_ev
from .eshift import fit_energy_shifts, shift_references
from .kernels.baseline import subtract_pre_edge
from .kernels.lcf import nnls_coefficients

__all__ = ["RankRow", "rank_references", "cluster_means", "write_rank_csv", "format_rank_table"]


@dataclass
class RankRow:
    """One combination of references and its fit quality."""

    names: tuple[str, ...]
    r_factor: float
    r_factor_clusters: float
    chi2_reduced: float
    fractions: np.ndarray
    shifts: np.ndarray = field(default_factory=lambda: np.zeros(0))


def _iter_pixel_blocks(stack, mask, block_rows: int):
    """Yield ``(T, n)`` float64 spectra of the masked pixels, a few image rows at a time."""
    T, ny = stack.shape[0], stack.shape[1]
    for y0 in range(0, ny, block_rows):
        blk = np.asarray(stack[:, y0 : y0 + block_rows], dtype=np.float64)
        blk = blk.reshape(T, -1)
        if mask is not None:
            blk = blk[:, np.asarray(mask[y0 : y0 + block_rows]).reshape(-1)]
        ok = np.all(np.isfinite(blk), axis=0)
        yield blk[:, ok]


def _unit(Y: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(Y, axis=0)
    return Y / np.where(n > 0, n, 1.0)


def cluster_means(
    stack,
    k: int = 4,
    *,
    mask: np.ndarray | None = None,
    iterations: int = 20,
    block_rows: int = 16,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean spectrum of the sample and of ``k`` spectral clusters, block by block.

    k-means (Lloyd) on the pixel spectra scaled to unit 2-norm (so thickness does not decide the
    cluster, the shape does). Each iteration streams the stack in blocks of ``block_rows`` image
    rows (any array-like with ``stack[:, rows]`` slicing: NumPy, Zarr, Dask), accumulating per
    cluster the sum of unit spectra and of raw spectra. Initial centres: ``k`` pixels drawn from
    the first block (k-means++ on that block).

    Parameters
    ----------
    stack : array-like (T, Y, X)
    k : int
        Number of clusters.
    mask : array_like of bool (Y, X), optional
        Pixels of the sample (default all finite pixels).

    Returns
    -------
    mean : numpy.ndarray (T,)
        Mean spectrum of all (masked) pixels.
    centers : numpy.ndarray (T, k)
        Mean raw spectrum of each cluster (empty clusters dropped, so possibly fewer columns).
    counts : numpy.ndarray (k,)
        Pixels per cluster.
    """
    rng = np.random.default_rng(seed)
    first = next((b for b in _iter_pixel_blocks(stack, mask, block_rows) if b.shape[1]), None)
    if first is None:
        raise ValueError("no finite pixels in the stack (or the mask); check --mask.")
    U0 = _unit(first)
    C = U0[:, [int(rng.integers(U0.shape[1]))]]
    while C.shape[1] < k:  # k-means++ seeding on the first block
        d = np.min(((U0[:, :, None] - C[:, None, :]) ** 2).sum(axis=0), axis=1)
        if d.sum() <= 0:
            break
        C = np.c_[C, U0[:, int(rng.choice(U0.shape[1], p=d / d.sum()))]]
    total = np.zeros(stack.shape[0])
    n_all = 0
    for _ in range(iterations):
        su = np.zeros_like(C)
        sy = np.zeros_like(C)
        cnt = np.zeros(C.shape[1])
        total[:] = 0.0
        n_all = 0
        for Y in _iter_pixel_blocks(stack, mask, block_rows):
            if Y.shape[1] == 0:
                continue
            U = _unit(Y)
            lab = np.argmax(C.T @ U - 0.5 * (C * C).sum(axis=0)[:, None], axis=0)
            for j in range(C.shape[1]):
                sel = lab == j
                su[:, j] += U[:, sel].sum(axis=1)
                sy[:, j] += Y[:, sel].sum(axis=1)
                cnt[j] += sel.sum()
            total += Y.sum(axis=1)
            n_all += Y.shape[1]
        keep = cnt > 0
        C_new = su[:, keep] / cnt[keep]
        done = C_new.shape == C.shape and np.allclose(C_new, C, atol=1e-10)
        C = C_new
        centers, counts = sy[:, keep] / cnt[keep], cnt[keep]
        if done:
            break
    return total / n_all, centers, counts


def _noise_var(y: np.ndarray) -> float:
    d2 = np.diff(y, 2)
    return float(np.var(d2) / 6.0) if d2.size > 2 else 0.0


def rank_references(
    energy: np.ndarray,
    mean: np.ndarray,
    refs_energy: np.ndarray,
    refs: np.ndarray,
    names: list[str],
    *,
    clusters: np.ndarray | None = None,
    max_components: int = 3,
    energy_shift: str = "none",
    bounds: tuple[float, float] = (-10.0, 10.0),
    window: np.ndarray | None = None,
) -> list[RankRow]:
    """Fit every combination of up to ``max_components`` references; best first.

    Parameters
    ----------
    energy : array_like (T,)
        Data energies.
    mean : array_like (T,)
        Mean spectrum of the sample.
    refs_energy, refs : array_like (Tr,), (Tr, L)
        The library on its own grid (covering the data energies).
    names : list of str
        Reference names (L).
    clusters : array_like (T, k), optional
        Cluster mean spectra (:func:`cluster_means`), fitted with the same references.
    max_components : int
        Largest combination size K.
    energy_shift : ``"none"`` or ``"auto"``
        ``"auto"``: fit one shift per reference of each combination on mean + clusters.
    bounds : (float, float)
        Shift bounds in eV.
    window : array_like of bool (T,), optional
        Pre-edge energies: their mean is removed from every target and every (shifted)
        reference before the fits (unmix's ``--baseline pre-edge``,
        :func:`bigxanes.kernels.baseline.subtract_pre_edge`); the R-factors are then those of
        the baseline-free spectra.

    Returns
    -------
    list of RankRow
        Sorted by ``r_factor`` of the mean spectrum (then by fewer references).
    """
    E = as_ev(energy)
    y = np.asarray(mean, dtype=np.float64)
    Yc = None if clusters is None else np.asarray(clusters, dtype=np.float64).reshape(E.size, -1)
    if window is not None:
        window = np.asarray(window, dtype=bool)
        y = subtract_pre_edge(y, window)
        Yc = None if Yc is None else subtract_pre_edge(Yc, window)
    targets = y[:, None] if Yc is None else np.c_[y, Yc]
    R = np.asarray(refs, dtype=np.float64)
    if R.shape[1] != len(names):
        raise ValueError(f"{R.shape[1]} references but {len(names)} names.")
    if energy_shift not in ("none", "auto"):
        raise ValueError(f"energy_shift must be 'none' or 'auto', got {energy_shift!r}.")
    A_all = shift_references(refs_energy, R, 0.0, E)
    if window is not None:
        A_all = subtract_pre_edge(A_all, window)
    sigma2 = _noise_var(y)
    yy = float(y @ y) or 1.0
    cc = float(np.sum(Yc * Yc)) if Yc is not None else 0.0
    rows: list[RankRow] = []
    for k in range(1, min(max_components, R.shape[1]) + 1):
        for S in combinations(range(R.shape[1]), k):
            idx = list(S)
            if energy_shift == "auto":
                fit = fit_energy_shifts(E, targets, refs_energy, R[:, idx], bounds, window=window)
                shifts = fit.shifts
                A = shift_references(refs_energy, R[:, idx], shifts, E)
                if window is not None:
                    A = subtract_pre_edge(A, window)
            else:
                shifts = np.zeros(k)
                A = A_all[:, idx]
            M = nnls_coefficients(A.T @ A, A.T @ targets)
            res = targets - A @ M
            r_mean = float(res[:, 0] @ res[:, 0]) / yy
            r_cl = float(np.sum(res[:, 1:] ** 2)) / cc if cc > 0 else float("nan")
            p = k + (k if energy_shift == "auto" else 0)
            chi2 = (
                float(res[:, 0] @ res[:, 0]) / (sigma2 * max(E.size - p, 1))
                if sigma2 > 0
                else float("inf")
            )
            m = M[:, 0]
            frac = m / m.sum() if m.sum() > 0 else m
            rows.append(
                RankRow(tuple(names[i] for i in idx), r_mean, r_cl, chi2, frac, np.asarray(shifts))
            )
    rows.sort(key=lambda r: (r.r_factor, len(r.names)))
    return rows


def format_rank_table(rows: list[RankRow], top: int = 20) -> str:
    """Printed table: rank, R-factor (mean), R-factor (clusters), reduced χ², references with
    their fractions and shifts."""
    out = [f"{'#':>3}  {'R mean':>9}  {'R clusters':>10}  {'chi2_red':>9}  references"]
    for i, r in enumerate(rows[:top], 1):
        refs = ", ".join(
            f"{n} {f:.2f}" + (f" ({s:+.1f} eV)" if s else "")
            for n, f, s in zip(r.names, r.fractions, r.shifts, strict=True)
        )
        out.append(
            f"{i:>3}  {r.r_factor:>9.3g}  {r.r_factor_clusters:>10.3g}  "
            f"{r.chi2_reduced:>9.3g}  {refs}"
        )
    return "\n".join(out)


def write_rank_csv(rows: list[RankRow], path: str | os.PathLike) -> None:
    """CSV with one row per combination: rank, n, references, fractions, shifts_eV, r_factor,
    r_factor_clusters, chi2_reduced (lists joined with ``;``)."""
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(
            [
                "rank",
                "n",
                "references",
                "fractions",
                "shifts_eV",
                "r_factor",
                "r_factor_clusters",
                "chi2_reduced",
            ]
        )
        for i, r in enumerate(rows, 1):
            w.writerow(
                [
                    i,
                    len(r.names),
                    ";".join(r.names),
                    ";".join(f"{f:.4f}" for f in r.fractions),
                    ";".join(f"{s:.2f}" for s in r.shifts),
                    f"{r.r_factor:.6g}",
                    f"{r.r_factor_clusters:.6g}",
                    f"{r.chi2_reduced:.6g}",
                ]
            )
