"""Public in-memory API: phase maps from a stack held in memory, as xarray objects.

Functions take a stack as an ``xr.DataArray`` with dims ``("energy", "y", "x")`` or
``("energy", "z", "y", "x")`` and an ``energy`` coordinate in eV (keV is detected), or a NumPy
array plus ``energy=``; references as an ``xr.DataArray`` ``(energy, component)`` (interpolated
onto the stack's energies when their energies differ) or a ``(T, L)`` array on the stack's
energies. They return an ``xr.Dataset`` (``fraction``, ``scale``, ``residual_rms``, ``mask``,
...; docs/design.md, "Results"), with every parameter in ``attrs``.

This module is the in-memory executor of the pipeline: it runs the same kernels as
:func:`bigxanes.engine.unmix_store` (inputs: :mod:`bigxanes.pipeline.prepare`; pass 1:
:func:`bigxanes.kernels.pass1.pass1_block`; maps: :mod:`bigxanes.kernels.maps`; Dataset:
:mod:`bigxanes.pipeline.result`) with the whole array as one block, and holds no math of its
own.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import numpy.typing as npt
import xarray as xr

from .kernels.edge50 import edge50_reference_energies
from .kernels.maps import rum_outputs_block
from .kernels.moments import finite_spectrum_sum, mean_spectrum
from .kernels.pass1 import Pass1Layout, pass1_block, pass1_statistics
from .kernels.stats import noise_sigma
from .pipeline.defaults import DEFAULT_BASELINE, DEFAULT_NAN_POLICY, LCF_VARIANTS, MASK_THRESHOLD
from .pipeline.prepare import (
    check_options,
    edge50_e0,
    prepare_inputs,
    spatial_dims,
    stack_array,
)
from .pipeline.result import (
    build_dataset,
    method_variables,
    one_block,
    result_attrs,
    result_coords,
)
from .rum import RumParams, resolve_sure, solve_rum, sure_crop
from .validation import check_stack

__all__ = ["LCF_VARIANTS", "MASK_THRESHOLD", "edge50", "history_of", "lcf", "unmix"]


def _run(
    method: str,
    stack: Any,
    references: Any,
    *,
    energy: npt.ArrayLike | None,
    nan_policy: str,
    baseline: str,
    energy_range: tuple[float, float] | None,
    variant: str = "nnls",
    params: RumParams | None = None,
    state_dtype: npt.DTypeLike = np.float64,
    e0: float | None = None,
    level: float = 0.5,
    norm_kwargs: dict | None = None,
) -> xr.Dataset:
    """The pipeline with the whole stack as one block (the engine maps the same calls)."""
    check_options(method, variant=variant, nan_policy=nan_policy)
    Y, energy, coords = stack_array(stack, energy)
    inputs = prepare_inputs(
        method,
        energy,
        references,
        baseline=baseline,
        nan_policy=nan_policy,
        energy_range=energy_range,
    )
    if inputs.select is not None:
        Y = Y[inputs.select]
    if nan_policy == "raise":
        check_stack(Y)  # names the first bad pixel
    sdims = spatial_dims(Y.ndim - 1)
    L, T = inputs.n_components, inputs.energy.size
    p1 = Pass1Layout(L, variant if method == "lcf" else "nnls", method == "edge50")
    extra: dict[str, Any] = {}
    e50_refs = None
    if method == "edge50":
        if e0 is None:
            e0 = edge50_e0(inputs.energy, inputs.A, lambda: mean_spectrum(finite_spectrum_sum(Y)))
        extra.update(e0=float(e0), level=float(level))
        if L == 2:
            e50_refs = edge50_reference_energies(inputs.energy, inputs.A, e0, level, norm_kwargs)
            extra["edge50_references"] = [float(v) for v in e50_refs]
    P = pass1_block(
        Y,
        layout=p1,
        A=inputs.A,
        energy=inputs.energy,
        e0=e0,
        baseline=inputs.window,
        level=level,
        norm_kwargs=norm_kwargs,
    )
    stats = pass1_statistics(P, p1)
    c = stats["scale"]
    rum_maps = None
    if params is not None and params.lam == "sure":
        params = resolve_sure(
            np.asarray(Y[(slice(None),) + sure_crop(Y.shape[1:])]), inputs, params, extra
        )
    if params is not None:
        S, history, init = solve_rum(
            P, p1, inputs.A, params, c, stats["resid_sum"], state_dtype=state_dtype
        )
        layout = params.state_layout(L, Y.ndim - 1)
        rum_maps = rum_outputs_block(S, layout=layout, AtA=init.AtA, scale=c, n_energies=T)
        extra.update(
            params=params.as_dict(),
            lam=init.lam,
            noise_sigma=noise_sigma(init.noise_var, c),
            n_iterations=len(history.iteration),
            history=history.as_dict(),
        )
    variables = method_variables(
        inputs, P, p1, c, sdims, one_block, rum_maps=rum_maps, e50_refs=e50_refs
    )
    attrs = result_attrs(inputs, n_bad=stats["n_bad"], scale=c, lcf_variant=variant, **extra)
    return build_dataset(inputs, variables, result_coords(inputs, coords, sdims), attrs)


def lcf(
    stack: Any,
    references: Any,
    *,
    energy: npt.ArrayLike | None = None,
    variant: str = "nnls",
    nan_policy: str = DEFAULT_NAN_POLICY,
    baseline: str = DEFAULT_BASELINE,
    energy_range: tuple[float, float] | None = None,
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
    nan_policy : {"mask", "raise"}
        "mask" (default): pixels with NaN/Inf are zeroed, excluded from ``mask`` and counted in
        attrs (``n_nonfinite``); "raise": a ValueError naming the first such pixel.
    baseline : {"pre-edge", "none"}
        "pre-edge": subtract each spectrum's mean over the pre-edge energies from the data and
        the references before fitting (:mod:`bigxanes.kernels.baseline`; measured OD carries a
        flat background from other elements and supports that the model has no term for).
    energy_range : (float, float), optional
        Fit only the energies in this window (eV, inclusive).

    Returns
    -------
    xr.Dataset with ``fraction``, ``scale``, ``residual_rms``, ``mask``, ``references``.
    """
    return _run(
        "lcf",
        stack,
        references,
        energy=energy,
        nan_policy=nan_policy,
        baseline=baseline,
        energy_range=energy_range,
        variant=variant,
    )


def edge50(
    stack: Any,
    references: Any = None,
    *,
    energy: npt.ArrayLike | None = None,
    e0: float | None = None,
    level: float = 0.5,
    nan_policy: str = DEFAULT_NAN_POLICY,
    energy_range: tuple[float, float] | None = None,
    **norm_kwargs: Any,
) -> xr.Dataset:
    """Edge-50 map: energy where each pixel's normalized spectrum first reaches ``level``.

    Each spectrum is edge-step normalized (:func:`bigxanes.kernels.normalize.normalize_spectra`
    with ``norm_kwargs``, one e0 for all pixels: the derivative maximum of the references' mean
    spectrum, else of the mean finite spectrum, unless given), then
    :func:`bigxanes.kernels.edge50.edge50_energy` finds the interpolated crossing. With two
    references the map is also read as fractions, ``x₂ = (E - E₁) / (E₂ - E₁)`` clipped to
    [0, 1], with E₁, E₂ the references' Edge-50 energies.

    Returns
    -------
    xr.Dataset with ``edge50`` (eV; NaN where there is no crossing), ``scale`` and ``mask``;
    with references also ``residual_rms`` and ``lcf_fraction`` (from the NNLS fit of the same
    pass), and with two references ``fraction`` (NaN where there is no crossing).
    """
    return _run(
        "edge50",
        stack,
        references,
        energy=energy,
        nan_policy=nan_policy,
        baseline="none",
        energy_range=energy_range,
        e0=e0,
        level=level,
        norm_kwargs=norm_kwargs,
    )


def unmix(
    stack: Any,
    references: Any,
    *,
    method: str = "rum-tv",
    energy: npt.ArrayLike | None = None,
    nan_policy: str = DEFAULT_NAN_POLICY,
    baseline: str = DEFAULT_BASELINE,
    energy_range: tuple[float, float] | None = None,
    state_dtype: npt.DTypeLike = np.float64,
    **params: Any,
) -> xr.Dataset:
    """Robust unmixing (RUM-TV or RUM-PnP) of an in-memory stack, or LCF / Edge-50 by name.

    Solves ``min_{X,s} ½||Y - A X diag(s)||² + λ Σ_j Φ(x_j)`` s.t. X >= 0, 1ᵀX = 1, s >= 0
    (paper eq. 5) by ADMM (Algorithm 1; docs/design.md, "ADMM"), initialized from NNLS-LCF.

    Parameters
    ----------
    stack, references, energy, nan_policy, baseline, energy_range
        As :func:`lcf`.
    method : {"rum-tv", "rum-pnp", "lcf", "edge50"}
    state_dtype : dtype
        Precision of the ADMM state between iterations (float32 matches the engine).
    **params
        :class:`bigxanes.rum.RumParams` fields: ``lam`` ("auto", "sure" or a number),
        ``lam_factor``, ``rho``, ``gamma``, ``max_iter``, ``tol``, ``tv_sweeps``, ``denoiser``
        ("tv" | "bm3d" | "bm4d"), ``rho_adapt``; for "lcf" ``variant``, for "edge50" the
        keywords of :func:`edge50`.

    Returns
    -------
    xr.Dataset with ``fraction`` (component, ...), ``scale``, ``residual_rms``, ``mask``,
    ``lcf_fraction`` (the NNLS initialization) and attrs: method, params, lam, data scale,
    noise level ``noise_sigma`` (stack units), iterations and ``history`` (JSON:
    per-iteration primal and dual residuals, objective, ρ).
    """
    kw = dict(energy=energy, nan_policy=nan_policy, energy_range=energy_range)
    if method == "lcf":
        return lcf(stack, references, baseline=baseline, **kw, **params)
    if method == "edge50":
        return edge50(stack, references, **kw, **params)
    p = RumParams(method=method, **params)
    return _run(
        method, stack, references, baseline=baseline, params=p, state_dtype=state_dtype, **kw
    )


def history_of(ds: xr.Dataset) -> dict:
    """The convergence history stored in a result's attrs, as a dict of lists."""
    h = ds.attrs.get("history")
    return json.loads(h) if isinstance(h, str) else dict(h or {})
