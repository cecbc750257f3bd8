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
from .kernels.pass1 import pass1_block, pass1_statistics
from .kernels.quality import chi2_histogram
from .kernels.stats import noise_sigma
from .kernels.weights import noise_moments_block
from .pipeline.defaults import DEFAULT_BASELINE, DEFAULT_NAN_POLICY, LCF_VARIANTS, MASK_THRESHOLD
from .pipeline.prepare import (
    align_inputs,
    check_options,
    edge50_e0,
    pass1_layout,
    prepare_inputs,
    spatial_dims,
    spatial_selection,
    stack_array,
    weight_model,
)
from .pipeline.result import (
    build_dataset,
    method_variables,
    one_block,
    quality_attrs,
    result_attrs,
    result_coords,
    verdict_attrs,
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
    chi2_sigma: float | None = None,
    energy_shift: Any = "none",
    region: Any = None,
    mask: Any = None,
    weights: str = "none",
    i0: Any = None,
) -> xr.Dataset:
    """The pipeline with the whole stack as one block (the engine maps the same calls)."""
    check_options(method, variant=variant, nan_policy=nan_policy, weights=weights)
    if i0 is None and weights == "counts" and isinstance(stack, xr.Dataset) and "i0" in stack:
        i0 = np.asarray(stack["i0"].values)  # the I0 the stack was converted with
    Y, energy, coords = stack_array(stack, energy)
    pixel_size = stack.attrs.get("pixel_size_um") if isinstance(stack, xr.DataArray) else None
    sel = None
    if region is not None or mask is not None:
        sdims0 = spatial_dims(Y.ndim - 1)
        full = xr.DataArray(Y, dims=("energy",) + sdims0, coords={"energy": energy})
        sel = spatial_selection(full, region, mask)
        if sel.slices is not None:
            Y = Y[(slice(None),) + sel.slices]
            coords = {
                d: np.asarray(coords[d])[s]
                for d, s in zip(sdims0, sel.slices, strict=True)
                if d in coords
            }
    inputs = prepare_inputs(
        method,
        energy,
        references,
        baseline=baseline,
        nan_policy=nan_policy,
        energy_range=energy_range,
        energy_shift=energy_shift,
        weights=weights,
        i0=i0,
    )
    if inputs.select is not None:
        Y = Y[inputs.select]
    inputs = align_inputs(inputs, lambda: mean_spectrum(finite_spectrum_sum(Y)))
    if nan_policy == "raise":
        check_stack(Y)  # names the first bad pixel
    sdims = spatial_dims(Y.ndim - 1)
    L, T = inputs.n_components, inputs.energy.size
    p1 = pass1_layout(inputs, variant)
    model = weight_model(
        inputs,
        lambda: noise_moments_block(Y, A=inputs.A, window=inputs.window, nan_policy=nan_policy),
    )
    extra: dict[str, Any] = {} if model is None else model.as_attrs()
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
        weights=model,
    )
    stats = pass1_statistics(P, p1, T)
    c = stats["scale"]
    rum_maps = None
    if params is not None and params.lam == "sure":
        params = resolve_sure(
            np.asarray(Y[(slice(None),) + sure_crop(Y.shape[1:])]), inputs, params, extra
        )
    if params is not None:
        S, history, init = solve_rum(P, p1, inputs.A, params, stats, state_dtype=state_dtype)
        layout = params.state_layout(L, Y.ndim - 1, p1.weighted)
        rum_maps = rum_outputs_block(S, layout=layout, AtA=init.AtA, scale=c, n_energies=T)
        extra.update(
            params=params.as_dict(),
            lam=init.lam,
            noise_sigma=noise_sigma(init.noise_var, c),
            kernel_backend=init.backend,
            history=history.as_dict(),
            **verdict_attrs(history),
        )
        chi2_sigma = params.noise_sigma
    variables = method_variables(
        inputs,
        P,
        p1,
        c,
        sdims,
        one_block,
        rum_maps=rum_maps,
        e50_refs=e50_refs,
        noise_sigma=chi2_sigma,
    )
    if "reduced_chi2" in variables:
        counts = chi2_histogram(variables["reduced_chi2"][1], variables["mask"][1])
        extra.update(quality_attrs(counts, chi2_sigma))
    if sel is not None:
        extra.update(sel.attrs)
    attrs = result_attrs(inputs, n_bad=stats["n_bad"], scale=c, lcf_variant=variant, **extra)
    return build_dataset(
        inputs,
        variables,
        result_coords(inputs, coords if sel is None else sel.coords(sdims, coords), sdims),
        attrs,
        user_mask=None if sel is None else sel.mask,
        pixel_size=pixel_size,
    )


def lcf(
    stack: Any,
    references: Any,
    *,
    energy: npt.ArrayLike | None = None,
    variant: str = "nnls",
    nan_policy: str = DEFAULT_NAN_POLICY,
    baseline: str = DEFAULT_BASELINE,
    energy_range: tuple[float, float] | None = None,
    noise_sigma: float | None = None,
    energy_shift: Any = "none",
    region: Any = None,
    mask: Any = None,
    weights: str = "none",
    i0: npt.ArrayLike | None = None,
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
    noise_sigma : float, optional
        Noise std of the stack (its units) for the ``reduced_chi2`` map; default: each
        spectrum's own estimate from its second differences
        (:func:`bigxanes.kernels.quality.noise_sigma_d2`).
    energy_shift : "none", "auto", float or sequence of float
        Energy shift of the references (``r_l(E - s_l)``, eV): ``"auto"`` fits one shift per
        reference (within ±10 eV) on the stack's mean spectrum before the per-pixel fit
        (:func:`bigxanes.pipeline.prepare.align_inputs`); values are applied as given (one
        for all, or one per reference); ``"none"`` (default) applies none but warns when the
        fitted shift would exceed 1 eV or lower the misfit by more than 20 %. The shifts are in
        ``attrs["energy_shift"]``, the mode in ``attrs["energy_shift_mode"]``, the pre-edge
        window used in ``attrs["baseline_window"]``.
    region : str or tuple of slice, optional
        ``"y0:y1,x0:x1[,z0:z1]"``: fit only this box (the result covers it).
    mask : path, "auto" or bool ndarray, optional
        Sample mask of the whole field (``.tif``/``.npy``, or ``"auto"``: Otsu on the edge
        jump); ``mask`` of the result is the material mask AND this one, and ``fraction`` is
        NaN outside it (:func:`bigxanes.pipeline.prepare.spatial_selection`).
    weights : {"none", "counts", "energy"}
        Data term. "none": least squares. "counts": photon-counting noise, the weighted fit
        ``min Σ_t w_t (y_t - (A m)_t)²`` with ``w_t = I0_t exp(-OD_t)`` (the inverse variance
        of ``OD = -ln(I/I0)``), evaluated at the fitted OD and refined by reweighting
        (:mod:`bigxanes.kernels.weights`); the NNLS variant only. "energy": one inverse
        variance per energy, estimated from the residual of an unweighted fit. The noise model
        is in ``attrs`` (``weights``, ``weights_source``, ``weights_i0`` / ``weights_var``).
    i0 : array_like, optional
        Incident photons per pixel at each stack energy, for ``weights="counts"`` (default:
        the stack Dataset's ``i0`` variable when it was converted from counts, else an
        effective dose per energy estimated from the residual of an unweighted fit).

    Returns
    -------
    xr.Dataset with ``fraction`` (NaN outside ``mask``), ``fraction_unmasked``, ``scale``,
    ``residual_rms``, ``reduced_chi2``, ``mask``, ``references``; attrs with the fit-quality
    summary (``chi2_median``, ``fit_ok``, ``fit_verdict``;
    :func:`bigxanes.pipeline.result.quality_attrs`).
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
        chi2_sigma=noise_sigma,
        energy_shift=energy_shift,
        region=region,
        mask=mask,
        weights=weights,
        i0=i0,
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
    noise_sigma: float | None = None,
    energy_shift: Any = "none",
    region: Any = None,
    mask: Any = None,
    **norm_kwargs: Any,
) -> xr.Dataset:
    """Edge-50 map: energy where each pixel's normalized spectrum first reaches ``level``.

    Each spectrum is edge-step normalized (:func:`bigxanes.kernels.normalize.normalize_spectra`
    with ``norm_kwargs``, one e0 for all pixels: the derivative maximum of the references' mean
    spectrum, else of the mean finite spectrum, unless given), then
    :func:`bigxanes.kernels.edge50.edge50_energy` finds the interpolated crossing. With two
    references the map is also read as fractions, ``x₂ = (E - E₁) / (E₂ - E₁)`` clipped to
    [0, 1], with E₁, E₂ the references' Edge-50 energies.

    With references, ``energy_shift`` moves them as in :func:`lcf` (their Edge-50 energies and
    the fit of the same pass use the shifted references).

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
        chi2_sigma=noise_sigma,
        energy_shift=energy_shift,
        region=region,
        mask=mask,
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
    energy_shift: Any = "none",
    state_dtype: npt.DTypeLike = np.float64,
    region: Any = None,
    mask: Any = None,
    weights: str = "none",
    i0: npt.ArrayLike | None = None,
    **params: Any,
) -> xr.Dataset:
    """Robust unmixing (RUM-TV or RUM-PnP) of an in-memory stack, or LCF / Edge-50 by name.

    Solves ``min_{X,s} ½||Y - A X diag(s)||² + λ Σ_j Φ(x_j)`` s.t. X >= 0, 1ᵀX = 1, s >= 0
    (paper eq. 5) by ADMM (Algorithm 1; docs/design.md, "ADMM"), initialized from NNLS-LCF.

    Parameters
    ----------
    stack, references, energy, nan_policy, baseline, energy_range, energy_shift, region, mask
        As :func:`lcf`.
    weights, i0
        As :func:`lcf`: the weighted data term ``½ Σ_t w_tn (y_tn - (A m)_t)²`` of the
        ADMM M-step (a per-pixel L x L solve; NumPy kernel), its weights divided by their
        mean so that the λ rule keeps its units.
    method : {"rum-tv", "rum-pnp", "lcf", "edge50"}
    state_dtype : dtype
        Precision of the ADMM state between iterations with the NumPy backend (float32
        matches the engine); the numba backend keeps it in float32.
    **params
        :class:`bigxanes.rum.RumParams` fields: ``lam`` ("auto", "sure" or a number),
        ``lam_factor``, ``rho``, ``gamma``, ``max_iter``, ``tol``, ``tv_sweeps``, ``denoiser``
        ("tv" | "bm3d" | "bm4d"), ``rho_adapt``, ``backend`` ("auto" | "numpy" | "numba"),
        ``residual_every``; for "lcf" ``variant``, for "edge50" the keywords of
        :func:`edge50`.

    Returns
    -------
    xr.Dataset with ``fraction`` (component, ...), ``scale``, ``residual_rms``, ``mask``,
    ``lcf_fraction`` (the NNLS initialization), ``reduced_chi2`` and attrs: method, params,
    lam, data scale, noise level ``noise_sigma`` (stack units), ``history`` (JSON:
    per-iteration primal and dual residuals, objective, ρ), the verdict (``converged``,
    ``stop_reason``, ``rel_primal``, ``rel_dual``, ``tol``, ``n_iterations``, ``verdict``:
    :func:`bigxanes.pipeline.result.verdict_attrs`) and the fit quality (``chi2_median``,
    ``fit_ok``, ``fit_verdict``: :func:`bigxanes.pipeline.result.quality_attrs`).
    """
    kw = dict(
        energy=energy,
        nan_policy=nan_policy,
        energy_range=energy_range,
        energy_shift=energy_shift,
        region=region,
        mask=mask,
    )
    if method == "lcf":
        return lcf(stack, references, baseline=baseline, weights=weights, i0=i0, **kw, **params)
    if method == "edge50":
        check_options("edge50", weights=weights)
        if weights != "none":
            raise ValueError("Edge-50 has no data term to weight: drop --weights")
        return edge50(stack, references, **kw, **params)
    p = RumParams(method=method, **params)
    return _run(
        method,
        stack,
        references,
        baseline=baseline,
        params=p,
        state_dtype=state_dtype,
        weights=weights,
        i0=i0,
        **kw,
    )


def history_of(ds: xr.Dataset) -> dict:
    """The convergence history stored in a result's attrs, as a dict of lists."""
    h = ds.attrs.get("history")
    return json.loads(h) if isinstance(h, str) else dict(h or {})
