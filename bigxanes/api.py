"""Public in-memory API: phase maps from a stack held in memory, as xarray objects.

Functions take a stack as an ``xr.DataArray`` with dims ``("energy", "y", "x")`` or
``("energy", "z", "y", "x")`` and an ``energy`` coordinate in eV (keV is detected), or a NumPy
array plus ``energy=``; references as an ``xr.DataArray`` ``(energy, component)`` (interpolated
onto the stack's energies when their energies differ) or a ``(T, L)`` array on the stack's
energies. They return an ``xr.Dataset`` laid out as DESIGN.md §5 (``fraction``, ``scale``,
``residual_rms``, ``mask``, ...), with every parameter in ``attrs``.

For stacks larger than memory use :func:`bigxanes.engine.unmix_store`, which runs the same
kernels chunk-wise on Dask.
"""

from __future__ import annotations

import json

import numpy as np
import xarray as xr

from . import __version__
from .baseline import resolve_baseline, subtract_pre_edge
from .energy import as_ev, interpolate_reference
from .kernels.edge50 import edge50_energy, fraction_from_edge50
from .kernels.lcf import (
    fractions_from_coefficients,
    lstsq_coefficients,
    nnls_coefficients,
    sum_to_one_coefficients,
)
from .normalize import find_e0, normalize_spectra
from .rum import RumParams, robust_scale, unmix_rum_array
from .validation import check_energy_axis, check_references, check_stack

LCF_VARIANTS = ("nnls", "lstsq", "sum-to-one")
MASK_THRESHOLD = 0.05  # scale below this fraction of the data scale c: no material (= engine)


def _spatial_dims(ndim: int) -> tuple[str, ...]:
    return ("y", "x") if ndim == 2 else ("z", "y", "x")


def _prepare_stack(stack, energy) -> tuple[np.ndarray, np.ndarray, dict]:
    if isinstance(stack, xr.Dataset):
        stack = stack["stack"]
    if isinstance(stack, xr.DataArray):
        if "energy" not in stack.dims:
            raise ValueError(f"stack needs an 'energy' dimension, has dims {stack.dims}")
        stack = stack.transpose("energy", ...)
        if energy is None:
            if "energy" not in stack.coords:
                raise ValueError("stack has no 'energy' coordinate; pass energy=[...] in eV")
            energy = stack["energy"].values
        coords = {d: stack[d].values for d in stack.dims[1:] if d in stack.coords}
        Y = np.asarray(stack.values)
    else:
        Y = np.asarray(stack)
        coords = {}
        if energy is None:
            raise ValueError("a NumPy stack needs energy=[...] (one energy per image, in eV)")
    if Y.ndim not in (3, 4):
        raise ValueError(
            f"stack must have 3 (energy, y, x) or 4 (energy, z, y, x) dimensions, got {Y.ndim}"
        )
    energy = np.asarray(energy, dtype=np.float64)
    check_energy_axis(energy, Y.shape[0])
    energy = as_ev(energy)
    return Y, energy, coords


def _prepare_references(references, energy: np.ndarray) -> tuple[np.ndarray, list[str]]:
    if isinstance(references, xr.DataArray):
        ref = references.transpose("energy", ...)
        names = (
            [str(v) for v in ref["component"].values]
            if "component" in ref.coords
            else [f"ref{i + 1}" for i in range(ref.shape[1])]
        )
        e_ref = as_ev(ref["energy"].values)
        A = np.asarray(ref.values, dtype=np.float64)
        if A.ndim == 1:
            A = A[:, None]
        if not np.all(np.isfinite(A)):
            raise ValueError("references contain NaN or Inf; fix the reference spectra")
        if e_ref.shape != energy.shape or not np.allclose(e_ref, energy, rtol=0, atol=1e-6):
            A = interpolate_reference(e_ref, A, energy)
    else:
        A = np.asarray(references, dtype=np.float64)
        if A.ndim == 1:
            A = A[:, None]
        names = [f"ref{i + 1}" for i in range(A.shape[1])] if A.ndim == 2 else []
    A = check_references(A, energy.size)
    return A, names


def _apply_nan_policy(Y: np.ndarray, nan_policy: str) -> tuple[np.ndarray, np.ndarray]:
    if nan_policy not in ("raise", "mask"):
        raise ValueError(f"nan_policy must be 'raise' or 'mask', got {nan_policy!r}")
    if nan_policy == "raise":
        check_stack(Y)
        return Y, np.zeros(Y.shape[1:], dtype=bool)
    bad = ~np.all(np.isfinite(Y), axis=0)
    if bad.any():
        Y = np.where(bad, 0.0, Y)
    return Y, bad


def _remove_baseline(Y: np.ndarray, A: np.ndarray, energy: np.ndarray, baseline: str):
    window = resolve_baseline(baseline, energy, A)
    if window is None:
        return Y, A, {"baseline": "none"}
    attrs = {
        "baseline": baseline,
        "baseline_window_eV": [float(energy[window].min()), float(energy[window].max())],
    }
    return subtract_pre_edge(Y, window), subtract_pre_edge(A, window), attrs


def _dataset(
    method: str,
    X: np.ndarray,
    s: np.ndarray,
    resid_rms: np.ndarray,
    names: list[str],
    energy: np.ndarray,
    coords: dict,
    bad: np.ndarray,
    attrs: dict,
    data_scale: float,
    references: np.ndarray | None = None,
) -> xr.Dataset:
    dims = _spatial_dims(s.ndim)
    mask = (s > MASK_THRESHOLD * data_scale) & ~bad
    c = {d: coords[d] for d in dims if d in coords}
    c["component"] = names
    # the fitted energies, as in the engine's results (plots redo the baseline on them)
    c["energy"] = ("energy", np.asarray(energy, dtype=np.float64), {"units": "eV"})
    ds = xr.Dataset(
        {
            "fraction": (("component",) + dims, X.astype(np.float32)),
            "scale": (dims, s.astype(np.float32)),
            "residual_rms": (dims, resid_rms.astype(np.float32)),
            "mask": (dims, mask),
        },
        coords=c,
    )
    ds.attrs.update(
        method=method,
        version=__version__,
        n_energies=int(energy.size),
        energy_min=float(energy[0]),
        energy_max=float(energy[-1]),
        n_nonfinite=int(bad.sum()),
        mask_threshold=MASK_THRESHOLD,
        data_scale=float(data_scale),
        **attrs,
    )
    if references is not None:  # as fitted (baseline removed), like the engine's results
        ds["references"] = (("energy", "component"), np.asarray(references, dtype=np.float64))
        ds["references"].attrs["description"] = (
            "reference spectra as fitted (pre-edge baseline removed when baseline='pre-edge')"
        )
    ds["fraction"].attrs["description"] = "fraction of each chemical state (sums to one)"
    ds["scale"].attrs["description"] = "per-pixel scale s of Y = A X diag(s)"
    ds["residual_rms"].attrs["description"] = "RMS over energies of Y - A X s"
    ds["mask"].attrs["description"] = (
        f"True where scale > {MASK_THRESHOLD} x data_scale (99th percentile of the NNLS scale) "
        "and the data are finite"
    )
    return ds


def _residual_rms(Y: np.ndarray, A: np.ndarray, M: np.ndarray) -> np.ndarray:
    T = Y.shape[0]
    R = Y.reshape(T, -1) - A @ M.reshape(M.shape[0], -1)
    return np.sqrt(np.mean(R * R, axis=0)).reshape(Y.shape[1:])


def lcf(
    stack,
    references,
    *,
    energy=None,
    variant: str = "nnls",
    nan_policy: str = "raise",
    baseline: str = "pre-edge",
) -> xr.Dataset:
    """Linear combination fitting per pixel.

    Variants:

    - ``"nnls"`` (default): ``min ||y - A m||, m >= 0``; fractions ``x = m / 1ᵀm`` and scale
      ``s = 1ᵀm``. This is exactly the constrained model ``y = s A x``, x in the simplex, s >= 0.
    - ``"lstsq"``: unconstrained ``m = (AᵀA)⁻¹Aᵀy``, fractions ``m / 1ᵀm`` (may leave [0, 1]).
    - ``"sum-to-one"``: ``min ||y - A x||, x >= 0, 1ᵀx = 1`` (xraylarch's default; assumes
      edge-step normalized spectra, reported scale 1).

    Parameters
    ----------
    stack : xr.DataArray or ndarray (T, *spatial)
    references : xr.DataArray (energy, component) or ndarray (T, L)
    energy : array_like, optional
        Energies in eV when ``stack`` is a NumPy array.
    variant : {"nnls", "lstsq", "sum-to-one"}
    nan_policy : {"raise", "mask"}
        "mask": pixels with NaN/Inf are zeroed, excluded from ``mask`` and counted in attrs.
    baseline : {"pre-edge", "none"}
        "pre-edge": subtract each spectrum's mean over the pre-edge energies from the data and
        the references before fitting (:mod:`bigxanes.baseline`; measured OD carries a flat
        background from other elements and supports that the model has no term for).

    Returns
    -------
    xr.Dataset with ``fraction``, ``scale``, ``residual_rms``, ``mask``.
    """
    if variant not in LCF_VARIANTS:
        raise ValueError(
            f"unknown LCF variant {variant!r}; choose one of {', '.join(LCF_VARIANTS)}"
        )
    Y, energy, coords = _prepare_stack(stack, energy)
    A, names = _prepare_references(references, energy)
    Y, bad = _apply_nan_policy(Y, nan_policy)
    Y, A, battrs = _remove_baseline(Y, A, energy, baseline)
    T, L = A.shape
    Yf = Y.reshape(T, -1).astype(np.float64)
    AtA, AtY = A.T @ A, A.T @ Yf
    M0 = nnls_coefficients(AtA, AtY)
    c = robust_scale(M0.sum(axis=0))
    if variant == "nnls":
        M = M0
        X, s = fractions_from_coefficients(M)
    elif variant == "lstsq":
        M = lstsq_coefficients(AtA, AtY)
        X, s = fractions_from_coefficients(M)
    else:
        X = sum_to_one_coefficients(AtA, AtY)
        s = np.ones(X.shape[1])
        M = X
    spatial = Y.shape[1:]
    X = X.reshape((L,) + spatial)
    s = s.reshape(spatial)
    M = M.reshape((L,) + spatial)
    return _dataset(
        f"lcf-{variant}",
        X,
        s,
        _residual_rms(Y, A, M),
        names,
        energy,
        coords,
        bad,
        {"lcf_variant": variant, **battrs},
        c,
        references=A,
    )


def edge50(
    stack,
    references=None,
    *,
    energy=None,
    e0: float | None = None,
    level: float = 0.5,
    nan_policy: str = "raise",
    **norm_kwargs,
) -> xr.Dataset:
    """Edge-50 map: energy where each pixel's normalized spectrum first reaches ``level``.

    Each spectrum is edge-step normalized (:func:`bigxanes.normalize.normalize_spectra`, one e0
    for all pixels: the derivative maximum of the mean spectrum unless given), then
    :func:`bigxanes.kernels.edge50.edge50_energy` finds the interpolated crossing. With two
    references the map is also read as fractions, ``x₂ = (E - E₁) / (E₂ - E₁)`` clipped to
    [0, 1], with E₁, E₂ the references' Edge-50 energies.

    Returns
    -------
    xr.Dataset with ``edge50`` (eV; NaN where there is no crossing) and, with two references,
    ``fraction``, ``scale`` (edge step), ``residual_rms`` and ``mask`` (like the engine,
    other numbers of references give the ``edge50`` map alone).
    """
    Y, energy, coords = _prepare_stack(stack, energy)
    Y, bad = _apply_nan_policy(Y, nan_policy)
    A, names = (None, None) if references is None else _prepare_references(references, energy)
    if e0 is None:  # as the engine: from the references' mean, else from the data's mean
        mean = A.mean(axis=1) if A is not None else Y.reshape(Y.shape[0], -1).mean(axis=1)
        e0 = float(find_e0(energy, mean))
    nr = normalize_spectra(energy, Y, e0=e0, **norm_kwargs)
    e50 = edge50_energy(energy, nr.norm, level)
    e50 = np.where(bad, np.nan, e50)
    dims = _spatial_dims(Y.ndim - 1)
    attrs = {"e0": float(e0), "level": float(level)}
    if A is None or A.shape[1] != 2:
        # the Edge-50 energy is a map of its own; it reads as fractions only for two states
        ds = xr.Dataset(
            {"edge50": (dims, e50.astype(np.float32))},
            coords={d: coords[d] for d in dims if d in coords},
        )
        ds.attrs.update(method="edge50", version=__version__, **attrs)
        if A is not None:
            ds.attrs["note"] = (
                f"no fractions: Edge-50 reads fractions only for two references, "
                f"got {A.shape[1]}; use lcf or rum-tv for more states"
            )
    else:
        ref_norm = normalize_spectra(energy, A, e0=e0, **norm_kwargs).norm
        e_refs = edge50_energy(energy, ref_norm, level)
        if not np.all(np.isfinite(e_refs)) or abs(e_refs[1] - e_refs[0]) < 1e-9:
            raise ValueError("the references' Edge-50 energies are undefined or equal")
        X = fraction_from_edge50(e50, e_refs)
        X = np.where(np.isfinite(X), X, 0.5)
        # scale, residual and mask as the engine: from the unconstrained LCF of the same pass
        T = Y.shape[0]
        Yf = Y.reshape(T, -1)
        AtA, AtY = A.T @ A, A.T @ Yf
        M = lstsq_coefficients(AtA, AtY)
        s = M.sum(axis=0).reshape(Y.shape[1:])
        c = robust_scale(nnls_coefficients(AtA, AtY).sum(axis=0))
        ds = _dataset(
            "edge50",
            X,
            s,
            _residual_rms(Y, A, M),
            names,
            energy,
            coords,
            bad | ~np.isfinite(e50),
            {**attrs, "edge50_references": [float(v) for v in e_refs]},
            c,
            references=A,
        )
        ds["edge50"] = (dims, e50.astype(np.float32))
    ds["edge50"].attrs.update(units="eV", description=f"energy of the first {level} crossing")
    return ds


def unmix(
    stack,
    references,
    *,
    method: str = "rum-tv",
    energy=None,
    nan_policy: str = "raise",
    baseline: str = "pre-edge",
    state_dtype=np.float64,
    **params,
) -> xr.Dataset:
    """Robust unmixing (RUM-TV or RUM-PnP) of an in-memory stack, or LCF / Edge-50 by name.

    Solves ``min_{X,s} ½||Y - A X diag(s)||² + λ Σ_j Φ(x_j)`` s.t. X >= 0, 1ᵀX = 1, s >= 0
    (paper eq. 5) by ADMM (Algorithm 1; DESIGN.md §3), initialized from NNLS-LCF.

    Parameters
    ----------
    stack, references, energy, nan_policy, baseline
        As :func:`lcf`.
    method : {"rum-tv", "rum-pnp", "lcf", "edge50"}
    state_dtype : dtype
        Precision of the ADMM state between iterations (float32 matches the Dask path).
    **params
        :class:`bigxanes.rum.RumParams` fields: ``lam`` ("auto" or a number), ``lam_factor``,
        ``rho``, ``gamma``, ``max_iter``, ``tol``, ``tv_sweeps``, ``denoiser``
        ("tv" | "bm3d" | "bm4d"), ``rho_adapt``.

    Returns
    -------
    xr.Dataset with ``fraction`` (component, ...), ``scale``, ``residual_rms``, ``mask``,
    ``lcf_fraction`` (the NNLS initialization) and attrs: method, params, lam, data scale,
    noise level, iterations and ``history`` (JSON: per-iteration primal and dual residuals,
    objective, ρ).
    """
    if method == "lcf":
        return lcf(
            stack, references, energy=energy, nan_policy=nan_policy, baseline=baseline, **params
        )
    if method == "edge50":
        return edge50(stack, references, energy=energy, nan_policy=nan_policy, **params)
    p = RumParams(method=method, **params)
    Y, energy, coords = _prepare_stack(stack, energy)
    A, names = _prepare_references(references, energy)
    Y, bad = _apply_nan_policy(Y, nan_policy)
    Y, A, battrs = _remove_baseline(Y, A, energy, baseline)
    X, s, M, history, init = unmix_rum_array(Y, A, p, state_dtype=state_dtype)
    attrs = {
        "params": json.dumps(p.as_dict()),
        "lam": init.lam,
        "noise_sigma": float(np.sqrt(init.noise_var) * init.scale),
        "n_iterations": len(history.iteration),
        "history": json.dumps(history.as_dict()),
        **battrs,
    }
    ds = _dataset(
        method,
        X,
        s,
        _residual_rms(Y, A, M),
        names,
        energy,
        coords,
        bad,
        attrs,
        init.scale,
        references=A,
    )
    T, L = A.shape
    M0 = nnls_coefficients(A.T @ A, A.T @ Y.reshape(T, -1))
    X0, _ = fractions_from_coefficients(M0)
    ds["lcf_fraction"] = (
        ("component",) + _spatial_dims(s.ndim),
        X0.reshape((L,) + s.shape).astype(np.float32),
    )
    return ds


def history_of(ds: xr.Dataset) -> dict:
    """The convergence history stored in a result's attrs, as a dict of lists."""
    h = ds.attrs.get("history")
    return json.loads(h) if isinstance(h, str) else dict(h or {})
