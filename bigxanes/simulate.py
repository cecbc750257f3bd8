"""Simulated TXM-XANES stacks with ground truth.

Model (paper eq. 1, docs/design.md, "Model"): ``Y = A X diag(s) + R`` with ``A`` (T, L)
references, ``X`` (L, N) fractions on the simplex, ``s`` (N,) scale. The clean stack is one
matrix product ``A @ (X * s)`` of a (T, L) and an (L, N) matrix.

Noise convention
----------------
* **Gaussian** (the paper's): the paper adds Gaussian noise of standard deviation ``sigma``
  "on a 0-255 scale" (sigma in [1, 7]). We define it relative to the clean stack:
  ``std = sigma / 255 * max(Y_clean)``, i.e. the noise the paper's 8-bit rendering of the stack
  would have. ``sigma = 0`` gives the clean stack exactly.
* **Poisson** (optional, ``poisson = I0`` photons incident per pixel and energy): the clean
  optical density ``OD`` is turned into transmitted counts ``n ~ Poisson(I0 exp(-OD))``, counts
  are clipped to ``>= 1`` (a zero count has no finite OD), and ``OD = -ln(n / I0)``. Photon noise
  thus grows where the sample absorbs most. When both are given, Poisson noise is applied first
  and the Gaussian noise (std from the *clean* maximum) is added on top.

Realism options (off by default)
--------------------------------
* **thickness** ``τ``: the scale is multiplied by a smooth random field ``1 + τ f`` with
  ``f ∈ [-1, 1]`` (Gaussian-smoothed noise, correlation length ~ min(shape)/4): thickness
  and density vary across the sample; ``true_scale`` holds the product.
* **energy_shift** ``δmax`` (eV): each pixel's spectra are shifted in energy by a smooth
  field ``δ ∈ [-δmax, δmax]``: ``y(E) = Σ_j M_j a_j(E - δ)`` (exact, by linear
  interpolation of the references), while the fit uses the unshifted references (calibration
  drift and small chemical shifts the references do not hold).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import xarray as xr
from scipy.ndimage import gaussian_filter

from .energy import as_ev, interpolate_reference
from .phantoms import make_phantom
from .spectra_model import model_references

__all__ = [
    "SimArrays",
    "simulate_to_arrays",
    "simulate",
    "add_noise",
    "spatial_dims",
    "smooth_field",
    "shifted_stack",
    "simulate_to_store",
]

_NOISE_STREAM = 0x5EED  # second seed word: noise draws independent of the phantom's
_FIELD_STREAM = 0xF1E1D  # second seed word: thickness and energy-shift fields


def smooth_field(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Smooth random field in ``[-1, 1]``: white noise smoothed by a Gaussian of width
    ``max(2, min(shape) / 4)`` px, divided by its largest absolute value."""
    f = gaussian_filter(rng.standard_normal(shape), max(2.0, min(shape) / 4.0), mode="reflect")
    return f / max(float(np.abs(f).max()), 1e-300)


def shifted_stack(E: np.ndarray, A: np.ndarray, M: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """Clean stack with per-pixel energy shifts: ``y_n(E) = Σ_j M_jn a_j(E - δ_n)``.

    ``A`` (T, L) on the energies ``E`` (T,), ``M`` (L, N), ``shift`` (N,) eV. The references
    are linearly interpolated (held constant beyond the ends). One (T, N) array per component
    is formed and added, so the peak memory is two stack-sized arrays.
    """
    T, L = A.shape
    N = M.shape[1]
    Eq = (E[:, None] - shift[None, :]).ravel()
    out = np.zeros((T, N))
    for j in range(L):
        out += np.interp(Eq, E, A[:, j]).reshape(T, N) * M[j][None, :]
    return out


def spatial_dims(ndim: int) -> tuple[str, ...]:
    """Dimension names for 2-D ``("y", "x")`` or 3-D ``("z", "y", "x")`` data."""
    if ndim == 2:
        return ("y", "x")
    if ndim == 3:
        return ("z", "y", "x")
    raise ValueError(f"spatial data must be 2-D or 3-D, got {ndim} dimensions.")


@dataclass
class SimArrays:
    """Plain NumPy output of :func:`simulate_to_arrays`."""

    energy: np.ndarray  # (T,) eV
    references: np.ndarray  # (T, L)
    names: list[str]
    fraction: np.ndarray  # (L, *shape)
    scale: np.ndarray  # (*shape)
    clean: np.ndarray  # (T, *shape) float64, A X diag(s)
    stack: np.ndarray  # (T, *shape) float64, noisy
    noise_std: float  # Gaussian std actually used
    attrs: dict = field(default_factory=dict)


def add_noise(
    clean: np.ndarray,
    sigma: float,
    *,
    poisson: float | None = None,
    rng: np.random.Generator,
) -> tuple[np.ndarray, float]:
    """Add the module's noise to a clean optical-density stack.

    Returns the noisy stack (float64) and the Gaussian std ``sigma / 255 * max(clean)``.
    """
    if sigma < 0:
        raise ValueError(f"sigma must be >= 0 (0-255 scale), got {sigma}.")
    y = np.array(clean, dtype=np.float64, copy=True)
    if poisson is not None:
        if not poisson > 0:
            raise ValueError(f"poisson (incident photons I0) must be > 0, got {poisson}.")
        counts = rng.poisson(poisson * np.exp(-y)).astype(np.float64)
        y = -np.log(np.maximum(counts, 1.0) / poisson)
    std = float(sigma) / 255.0 * float(np.max(clean)) if clean.size else 0.0
    if std > 0:
        y += rng.normal(0.0, std, size=y.shape)
    return y, std


def simulate_to_arrays(
    phantom: str = "particles",
    shape: tuple[int, ...] = (128, 128),
    n_components: int = 2,
    sigma: float = 7.0,
    poisson: float | None = None,
    seed: int = 0,
    references: tuple[np.ndarray, np.ndarray, list[str]] | None = None,
    energy: np.ndarray | None = None,
    thickness: float = 0.0,
    energy_shift: float = 0.0,
) -> SimArrays:
    """Simulate a stack and return all arrays (truth included) as NumPy.

    Parameters
    ----------
    phantom : {"particles", "electrode", "wedge", "cathode"}
        See :mod:`bigxanes.phantoms`.
    shape : tuple of int
        ``(y, x)`` or ``(z, y, x)``.
    n_components : int
        Number of states L when ``references`` is None (ignored otherwise: L = columns of A).
    sigma : float
        Gaussian noise level on the 0-255 scale: ``std = sigma / 255 * max(clean stack)``.
    poisson : float, optional
        Incident photons per pixel and energy (I0) for photon-counting noise; None = off.
    seed : int
        Seed of the phantom and of the noise (independent streams).
    references : (energy, A, names), optional
        Reference spectra; None = :func:`bigxanes.spectra_model.model_references`.
    energy : array_like, optional
        Target energies in eV (keV detected); references are interpolated onto them (error if
        not covered). Default: the references' own energies.
    thickness : float
        Relative amplitude ``τ`` in [0, 1) of the smooth thickness variation (module docstring).
    energy_shift : float
        Largest per-pixel energy shift ``δmax`` in eV (module docstring); 0 = none.
    """
    if not 0.0 <= thickness < 1.0:
        raise ValueError(f"thickness must be in [0, 1), got {thickness}.")
    if energy_shift < 0:
        raise ValueError(f"energy_shift must be >= 0 eV, got {energy_shift}.")
    if references is None:
        e_ref, A, names = model_references(n_components, energy)
        E = as_ev(e_ref)
    else:
        e_ref, A, names = references
        A = np.asarray(A, dtype=np.float64)
        if A.ndim == 1:
            A = A[:, None]
        names = list(names)
        if len(names) != A.shape[1]:
            raise ValueError(
                f"{len(names)} reference names for {A.shape[1]} reference spectra; give one "
                "name per column."
            )
        if energy is None:
            E = as_ev(e_ref)
        else:
            E = as_ev(energy)
            A = interpolate_reference(e_ref, A, E)
    L = A.shape[1]
    X, s = make_phantom(phantom, shape, L, seed)
    spatial = s.shape
    frng = np.random.default_rng([int(seed), _FIELD_STREAM])
    if thickness > 0:
        s = s * (1.0 + thickness * smooth_field(frng, spatial))
    M = X.reshape(L, -1) * s.reshape(1, -1)  # X diag(s), (L, N)
    if energy_shift > 0:
        shift = energy_shift * smooth_field(frng, spatial).ravel()
        clean = shifted_stack(E, A, M, shift).reshape((E.size,) + spatial)
    else:
        clean = (A @ M).reshape((E.size,) + spatial)
    rng = np.random.default_rng([int(seed), _NOISE_STREAM])
    noisy, std = add_noise(clean, sigma, poisson=poisson, rng=rng)
    attrs = _sim_attrs(
        phantom, sigma, std, poisson, seed, spatial, L,
        "model_references" if references is None else "user", thickness, energy_shift,
    )  # fmt: skip
    return SimArrays(E, A, names, X, s, clean, noisy, std, attrs)


def _sim_attrs(
    phantom: str,
    sigma: float,
    std: float,
    poisson: float | None,
    seed: int,
    shape: tuple[int, ...],
    L: int,
    references_source: str,
    thickness: float,
    energy_shift: float,
) -> dict[str, Any]:
    """Attrs of a simulated stack (both :func:`simulate_to_arrays` and
    :func:`simulate_to_store`): phantom, the noise rule and its std, seed, shape, L."""
    noise = f"gaussian std=sigma/255*max(clean)={std:.6g}"
    if poisson is not None:
        noise = f"poisson I0={poisson:g} in transmission, then " + noise
    return {
        "phantom": phantom,
        "sigma": float(sigma),
        "noise": noise,
        "noise_std": std,
        "poisson_i0": float(poisson) if poisson is not None else 0.0,
        "seed": int(seed),
        "shape": [int(n) for n in shape],
        "n_components": int(L),
        "references_source": references_source,
        "thickness": float(thickness),
        "energy_shift_ev": float(energy_shift),
    }


def simulate(
    phantom: str = "particles",
    shape: tuple[int, ...] = (128, 128),
    n_components: int = 2,
    sigma: float = 7.0,
    poisson: float | None = None,
    seed: int = 0,
    references: tuple[np.ndarray, np.ndarray, list[str]] | None = None,
    energy: np.ndarray | None = None,
    thickness: float = 0.0,
    energy_shift: float = 0.0,
) -> xr.Dataset:
    """Simulate a TXM-XANES stack as an ``xr.Dataset`` (docs/CONTRACTS.md).

    Parameters are those of :func:`simulate_to_arrays` (noise convention in the module
    docstring: ``std = sigma / 255 * max(clean stack)``).

    Returns
    -------
    xarray.Dataset
        ``stack`` (energy, [z], y, x) float32, ``references`` (energy, component) float64,
        ``true_fraction`` (component, [z], y, x) float64, ``true_scale`` ([z], y, x) float64,
        with Poisson noise ``i0`` (energy: the incident photons);
        coordinates ``energy`` (attrs ``units="eV"``) and ``component`` (names); attrs
        ``phantom, sigma, noise, noise_std, poisson_i0, seed, shape, n_components,
        references_source``.
    """
    r = simulate_to_arrays(
        phantom,
        shape,
        n_components,
        sigma,
        poisson,
        seed,
        references,
        energy,
        thickness=thickness,
        energy_shift=energy_shift,
    )
    dims = spatial_dims(r.scale.ndim)
    coords = {
        "energy": ("energy", r.energy, {"units": "eV"}),
        "component": ("component", np.asarray(r.names, dtype=str)),
    }
    ds = xr.Dataset(
        {
            "stack": (("energy",) + dims, r.stack.astype(np.float32)),
            "references": (("energy", "component"), r.references),
            "true_fraction": (("component",) + dims, r.fraction),
            "true_scale": (dims, r.scale),
        },
        coords=coords,
        attrs=r.attrs,
    )
    ds["references"].attrs["long_name"] = "reference spectra"
    ds["stack"].attrs["long_name"] = "optical density"
    _add_i0(ds, poisson)
    return ds


def _add_i0(ds: xr.Dataset, poisson: float | None) -> None:
    """Poisson noise: the incident photons per pixel as an ``i0`` (energy) variable, as a
    stack converted from counts carries it (``--weights counts`` reads it)."""
    if poisson is not None:
        ds["i0"] = ("energy", np.full(ds.sizes["energy"], float(poisson)))
        ds["i0"].attrs["long_name"] = "incident photons per pixel"


# --- streaming simulation: a stack written block by block, never held whole ---------------

#: Energies per matrix product in a streamed block: the float64 temporaries of one block are
#: ``_ENERGY_GROUP x block voxels x 8`` bytes (the float32 output block is the rest).
_ENERGY_GROUP = 8


def _block_regions(spatial: tuple[int, ...], tiles: tuple[int, ...]) -> list[tuple[slice, ...]]:
    import itertools

    axes = [
        [slice(a, min(a + t, n)) for a in range(0, n, t)]
        for n, t in zip(spatial, tiles, strict=True)
    ]
    return [tuple(r) for r in itertools.product(*axes)]


def _stack_block(
    A: np.ndarray,
    M: np.ndarray,
    std: float,
    poisson: float | None,
    rng: np.random.Generator,
) -> np.ndarray:
    """Noisy float32 block ``(T, n)`` of ``A @ M`` (M: (L, n)), energies in groups of
    :data:`_ENERGY_GROUP` (the module's noise convention, as :func:`add_noise`)."""
    T = A.shape[0]
    out = np.empty((T, M.shape[1]), dtype=np.float32)
    for e in range(0, T, _ENERGY_GROUP):
        y = A[e : e + _ENERGY_GROUP] @ M
        if poisson is not None:
            y = -np.log(np.maximum(rng.poisson(poisson * np.exp(-y)), 1.0) / poisson)
        if std > 0:
            y += std * rng.standard_normal(size=y.shape, dtype=np.float32)
        out[e : e + _ENERGY_GROUP] = y
    return out


def simulate_to_store(
    path,
    phantom: str = "particles",
    shape: tuple[int, ...] = (64, 64, 64),
    n_components: int = 2,
    sigma: float = 7.0,
    poisson: float | None = None,
    seed: int = 0,
    *,
    energy: np.ndarray | None = None,
    component_names: list[str] | None = None,
    chunks: int | tuple[int, ...] | None = None,
    overwrite: bool = False,
    compressor: str | None = "zstd",
):
    """Simulate a stack straight into a Zarr stack store, one block at a time.

    The volume is never held: the phantom is built block by block
    (:func:`bigxanes.phantoms.phantom_block`), each block's stack ``A X diag(s)`` plus noise
    is formed a few energies at a time and written as one Zarr chunk ``(T, *tile)``. Peak
    memory is a few blocks (one per thread of dask's threaded scheduler), whatever ``shape``.
    Two passes over the blocks: the first finds ``max(clean)`` (the noise convention,
    ``std = sigma / 255 * max(clean)``; only the L-channel phantom is built), the second
    writes ``stack``, ``true_fraction`` and ``true_scale``. Noise draws are seeded by
    ``(seed, block origin)``: the same seed and ``chunks`` give the same store.

    Parameters
    ----------
    path : path
        Output store (written atomically, :func:`bigxanes.store.write_dataset`).
    phantom : {"particles", "wedge"}
        Block-wise phantoms (:data:`bigxanes.phantoms.BLOCK_PHANTOMS`).
    shape, n_components, sigma, poisson, seed, energy
        As :func:`simulate` (model references only).
    component_names : list of str, optional
        Names of the states (default: the model references' names).
    chunks : int or tuple of int, optional
        Spatial tile of the stored chunks (default :func:`bigxanes.store.default_tile`).
    overwrite, compressor
        As :func:`bigxanes.store.write_dataset`.

    Returns
    -------
    xarray.Dataset
        The written store, opened lazily (:func:`bigxanes.store.open_stack`).
    """
    import dask
    import dask.array as da

    from .phantoms import _check, _particles_geometry, phantom_block
    from .store import open_stack, stack_chunks, write_dataset

    shape = _check(tuple(int(n) for n in shape), n_components)
    if sigma < 0:
        raise ValueError(f"sigma must be >= 0 (0-255 scale), got {sigma}.")
    if poisson is not None and not poisson > 0:
        raise ValueError(f"poisson (incident photons I0) must be > 0, got {poisson}.")
    e_ref, A, names = model_references(int(n_components), energy)
    E = as_ev(e_ref)
    L, T = A.shape[1], E.size
    if component_names is not None:
        names = list(component_names)
    tiles = stack_chunks((T,) + shape, chunks)[1:]
    geom = _particles_geometry(shape, L, seed) if phantom == "particles" else None
    regions = _block_regions(shape, tiles)

    def block(region):
        return phantom_block(phantom, shape, L, seed, region, geometry=geom)

    def block_max(region):
        X, s = block(region)
        return float((A @ (X.reshape(L, -1) * s.reshape(1, -1))).max())

    with dask.config.set(scheduler="threads"):
        peak = max(dask.compute(*[dask.delayed(block_max)(r) for r in regions]))
    std = float(sigma) / 255.0 * peak

    def gen(kind, block_info=None):
        loc = block_info[None]["array-location"]
        region = tuple(slice(a, b) for a, b in loc[1:])
        X, s = block(region)
        if kind == "fraction":
            return X
        if kind == "scale":
            return s[None]
        rng = np.random.default_rng([int(seed), _NOISE_STREAM, *(r.start for r in region)])
        M = X.reshape(L, -1) * s.reshape(1, -1)
        return _stack_block(A, M, std, poisson, rng).reshape((T,) + X.shape[1:])

    sp_chunks = tuple(
        tuple(min(t, n - a) for a in range(0, n, t)) for n, t in zip(shape, tiles, strict=True)
    )
    dims = spatial_dims(len(shape))

    def lazy(kind, n, dtype):
        return da.map_blocks(gen, kind, chunks=((n,),) + sp_chunks, dtype=dtype,
                             meta=np.empty((0,) * (len(shape) + 1), dtype=dtype))  # fmt: skip

    attrs = _sim_attrs(phantom, sigma, std, poisson, seed, shape, L, "model_references", 0.0, 0.0)
    attrs["simulated"] = "block-wise (simulate_to_store)"
    ds = xr.Dataset(
        {
            "stack": (("energy",) + dims, lazy("stack", T, np.float32)),
            "references": (("energy", "component"), A),
            "true_fraction": (("component",) + dims, lazy("fraction", L, np.float64)),
            "true_scale": (dims, lazy("scale", 1, np.float64)[0]),
        },
        coords={
            "energy": ("energy", E, {"units": "eV"}),
            "component": ("component", np.asarray(names, dtype=str)),
        },
        attrs=attrs,
    )
    ds["references"].attrs["long_name"] = "reference spectra"
    ds["stack"].attrs["long_name"] = "optical density"
    _add_i0(ds, poisson)
    with dask.config.set(scheduler="threads"):
        write_dataset(ds, path, overwrite=overwrite, compressor=compressor, chunks=tiles)
    return open_stack(path)
