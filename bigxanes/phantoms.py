"""Phantoms with known chemical-state fractions and scale, in 2-D and 3-D.

Every phantom returns ``X`` of shape ``(L, *shape)`` with each pixel a point of the probability
simplex (``X >= 0``, ``sum_j X_j = 1``) and a scale ``s`` of shape ``shape`` with ``s >= 0``
(``max s <= 1``), so that a stack is ``Y = A X diag(s)`` (docs/CONTRACTS.md). All phantoms are
deterministic for a given ``seed``.

State mixtures are parametrised by a continuous *state position* ``p`` (0 = state 1,
``L-1`` = state L):

* ``particles`` / ``electrode`` use softmax weights
  ``X_j = exp(-(p - j)^2 / (2 w^2)) / sum_k exp(-(p - k)^2 / (2 w^2))`` (``w = 0.5``), so a
  pixel mixes mostly the states next to ``p`` and the fractions vary smoothly with ``p``;
* ``wedge`` uses hat functions ``X_j = max(0, 1 - |p - j|)``: linear interpolation between
  neighbouring states, i.e. exactly linear fraction gradients (for L = 2: ``X_2 = p``).

Background / pore pixels get ``s`` in about ``[1e-3, 0.02]`` and smoothly varying random
fractions: they are valid simplex points but **meaningless**, since with ``s ~ 0`` the data carry no
information about them. Evaluate fractions on a foreground mask (``bigxanes.metrics``).
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter

__all__ = ["particles", "electrode", "wedge", "cathode", "make_phantom", "PHANTOMS"]

_SOFTMAX_WIDTH = 0.5


def _check(shape: tuple[int, ...], n_components: int) -> tuple[int, ...]:
    shape = tuple(int(n) for n in shape)
    if len(shape) not in (2, 3) or min(shape) < 8:
        raise ValueError(
            f"phantom shape must be 2-D (y, x) or 3-D (z, y, x) with sides >= 8, got {shape}."
        )
    if int(n_components) < 1:
        raise ValueError(f"n_components must be >= 1, got {n_components}.")
    return shape


def _softmax_states(pos: np.ndarray, L: int, width: float = _SOFTMAX_WIDTH) -> np.ndarray:
    j = np.arange(L, dtype=np.float64).reshape((L,) + (1,) * pos.ndim)
    logits = -((pos[None] - j) ** 2) / (2.0 * width**2)
    logits -= logits.max(axis=0, keepdims=True)
    w = np.exp(logits)
    return w / w.sum(axis=0, keepdims=True)


def _hat_states(pos: np.ndarray, L: int) -> np.ndarray:
    j = np.arange(L, dtype=np.float64).reshape((L,) + (1,) * pos.ndim)
    X = np.maximum(0.0, 1.0 - np.abs(np.clip(pos, 0, L - 1)[None] - j))
    return X / X.sum(axis=0, keepdims=True)


def _dirichlet_field(rng: np.random.Generator, L: int, shape: tuple[int, ...]) -> np.ndarray:
    """Smoothly varying random simplex field: Gaussian-smoothed exponential draws, normalized.

    Smooth (correlation length ~ min(shape)/10) rather than white, so that whole-image metrics
    (the paper's PSNR) are not dominated by per-pixel noise in pixels that carry no signal.
    """
    g = rng.standard_exponential((L,) + shape)
    width = max(2.0, min(shape) / 10.0)
    g = np.stack([gaussian_filter(gj, width, mode="reflect") for gj in g])
    return g / g.sum(axis=0, keepdims=True)


def _place(
    rng: np.random.Generator,
    shape: tuple[int, ...],
    n: int,
    rmin: float,
    rmax: float,
    min_sep: float,
    tries: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Random sequential addition: centres (k, ndim) and radii (k,).

    A candidate is accepted if ``|c_a - c_b| >= min_sep * (r_a + r_b)`` for all accepted
    spheres (``min_sep >= 1``: no overlap) and the sphere lies inside the image.
    """
    hi = np.asarray(shape, dtype=np.float64)
    r_all = rng.uniform(rmin, rmax, tries)
    c_all = r_all[:, None] + rng.random((tries, len(shape))) * (hi - 1.0 - 2.0 * r_all[:, None])
    C = np.empty((n, len(shape)))
    R = np.empty(n)
    k = 0
    for r, c in zip(r_all, c_all, strict=True):
        if k >= n:
            break
        if k:
            d2 = ((C[:k] - c) ** 2).sum(axis=1)
            if np.any(d2 < (min_sep * (R[:k] + r)) ** 2):
                continue
        C[k] = c
        R[k] = r
        k += 1
    return C[:k], R[:k]


def _render(
    shape: tuple[int, ...],
    centres: np.ndarray,
    radii: np.ndarray,
    core: np.ndarray,
    shell: np.ndarray,
    power: float = 2.0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Dome profile ``s = sqrt(r^2 - rho^2) / r_max`` per sphere (max over overlaps) and state
    position ``p = core + (shell - core) (rho / r)^power``; returns (s, p, inside)."""
    s = np.zeros(shape)
    pos = np.zeros(shape)
    rnorm = float(radii.max()) if radii.size else 1.0
    for c, r, pc, ps in zip(centres, radii, core, shell, strict=True):
        lo = np.maximum(np.floor(c - r).astype(int), 0)
        hi = np.minimum(np.ceil(c + r).astype(int) + 1, shape)
        box = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
        grids = np.ogrid[box]
        rho2 = sum((g - ci) ** 2 for g, ci in zip(grids, c, strict=True))
        u2 = rho2 / r**2
        dome = np.sqrt(np.maximum(r**2 - rho2, 0.0)) / rnorm
        sb, pb = s[box], pos[box]
        upd = (u2 < 1.0) & (dome > sb)
        sb[upd] = dome[upd]
        pb[upd] = (pc + (ps - pc) * np.sqrt(u2) ** power)[upd]
    return s, pos, s > 0


def particles(
    shape: tuple[int, ...] = (128, 128),
    n_components: int = 2,
    seed: int = 0,
    *,
    n_particles: int | None = None,
    radius_range: tuple[float, float] = (0.08, 0.17),
    background: tuple[float, float] = (1e-3, 0.02),
) -> tuple[np.ndarray, np.ndarray]:
    """Separate spherical particles with core-shell state gradients on a near-empty background.

    Geometry: up to ``n_particles`` (default 8 in 2-D, 24 in 3-D) non-overlapping spheres
    (discs in 2-D) with radii ``radius_range * min(shape)``, placed by random sequential
    addition. Scale inside a sphere is the chord length through it,
    ``s = 2 sqrt(r^2 - rho^2)``, divided by the largest diameter, so ``s`` is 1 at the centre
    of the biggest particle and falls to 0 at every rim (a projection of a sphere). In 3-D the
    same dome profile is used as a density.

    Chemistry: each particle has a random core state position and shell state position
    (at least ``(L-1)/2`` apart, so cores and shells differ), ``p = core + (shell - core)
    (rho/r)^2``, fractions from the softmax of ``p`` (module docstring). So fractions vary
    radially and between particles. Background: ``s ~ U(background)``, random fractions.

    Returns
    -------
    X : numpy.ndarray, shape (n_components, *shape)
    s : numpy.ndarray, shape shape
    """
    shape = _check(shape, n_components)
    L = int(n_components)
    rng = np.random.default_rng(seed)
    m = min(shape)
    if n_particles is None:
        n_particles = 8 if len(shape) == 2 else 24
    cen, rad = _place(rng, shape, n_particles, radius_range[0] * m, radius_range[1] * m, 1.05, 400)
    k = rad.size
    span = max(L - 1, 1)
    core = rng.uniform(-0.5, L - 0.5, k)
    # shell at least span/2 away from the core, on the side with more room
    direction = np.where(core < (L - 1) / 2, 1.0, -1.0)
    shell = np.clip(core + direction * rng.uniform(0.5 * span, span + 0.5, k), -0.5, L - 0.5)
    s, pos, inside = _render(shape, cen, rad, core, shell)
    X = _dirichlet_field(rng, L, shape)
    X[:, inside] = _softmax_states(pos[inside], L)
    s[~inside] = rng.uniform(background[0], background[1], np.count_nonzero(~inside))
    return X, s


def electrode(
    shape: tuple[int, ...] = (128, 128),
    n_components: int = 2,
    seed: int = 0,
    *,
    radius_range: tuple[float, float] = (0.05, 0.10),
    binder_scale: tuple[float, float] = (0.03, 0.08),
    background: tuple[float, float] = (1e-3, 0.01),
) -> tuple[np.ndarray, np.ndarray]:
    """Densely packed active particles in binder and pores, like a battery electrode.

    Spheres (radii ``radius_range * min(shape)``) are added at random with a tolerated overlap
    (centre distance >= 0.8 of the radius sum), filling most of the image/volume; ``s`` is the
    dome profile of the topmost sphere (max over overlaps). The rest is split by a smooth random
    field into carbon/binder (``s ~ U(binder_scale)``: little of the element) and pores
    (``s ~ U(background)``). Chemistry: per-particle core-shell state positions as in
    :func:`particles`, plus a depth gradient of the state position along the last axis (the
    state of charge changes from the separator side to the current collector).
    """
    shape = _check(shape, n_components)
    L = int(n_components)
    rng = np.random.default_rng(seed)
    m = min(shape)
    vol = float(np.prod(shape))
    rmean = 0.5 * (radius_range[0] + radius_range[1]) * m
    unit = np.pi * rmean**2 if len(shape) == 2 else 4.0 / 3.0 * np.pi * rmean**3
    n_target = int(2.0 * vol / unit) + 4
    cen, rad = _place(
        rng, shape, n_target, radius_range[0] * m, radius_range[1] * m, 0.8, 8 * n_target
    )
    k = rad.size
    core = rng.uniform(-0.3, L - 0.7, k)
    shell = core + rng.uniform(0.3, 1.0, k) * max(L - 1, 1) * rng.choice([-1.0, 1.0], k)
    s, pos, inside = _render(shape, cen, rad, core, shell)
    depth = np.linspace(-0.5, 0.5, shape[-1]) * 0.5 * max(L - 1, 1)
    pos = np.clip(pos + depth, -0.5, L - 0.5)
    X = _dirichlet_field(rng, L, shape)
    X[:, inside] = _softmax_states(pos[inside], L)
    field = gaussian_filter(rng.standard_normal(shape), sigma=max(1.0, 0.03 * m))
    binder = ~inside & (field > 0)
    pore = ~inside & ~binder
    s[binder] = rng.uniform(*binder_scale, np.count_nonzero(binder))
    s[pore] = rng.uniform(*background, np.count_nonzero(pore))
    return X, s


def wedge(
    shape: tuple[int, ...] = (128, 128),
    n_components: int = 2,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Linear fraction gradient across the image with a smooth scale.

    The state position ``p`` increases linearly from 0 to ``L-1`` along a direction that is
    the last axis tilted by a random angle (within +-20 degrees, from ``seed``), fractions are
    the hat functions of ``p`` (exactly linear between neighbouring states; for L = 2,
    ``X_2 = p``). Scale: ``s = 0.3 + 0.6 prod_a cos^2(pi (c_a - 0.5))`` over the other axes
    (coordinates ``c_a`` in [0, 1]): smooth, in ``[0.3, 0.9]``, never near 0 (no background).
    """
    shape = _check(shape, n_components)
    L = int(n_components)
    rng = np.random.default_rng(seed)
    coords = np.meshgrid(*[np.linspace(0.0, 1.0, n) for n in shape], indexing="ij")
    ang = np.deg2rad(rng.uniform(-20, 20))
    t = np.cos(ang) * coords[-1] + np.sin(ang) * coords[-2]
    t = (t - t.min()) / (t.max() - t.min())
    X = _hat_states(t * (L - 1), L) if L > 1 else np.ones((1,) + shape)
    bump = np.ones(shape)
    for c in coords[:-1]:
        bump = bump * np.cos(np.pi * (c - 0.5)) ** 2
    s = 0.3 + 0.6 * bump
    return X, s


def _crack_distance(
    rng: np.random.Generator, shape: tuple[int, ...], centre: np.ndarray, radius: float
) -> tuple[tuple[slice, ...], np.ndarray]:
    """Distance of each pixel of a sphere's bounding box to a random plane (a line in 2-D)
    through a point near the sphere's centre: ``|n · (r - c')|``, ``n`` a random unit normal."""
    nd = len(shape)
    lo = np.maximum(np.floor(centre - radius).astype(int), 0)
    hi = np.minimum(np.ceil(centre + radius).astype(int) + 1, shape)
    box = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
    normal = rng.standard_normal(nd)
    normal /= np.linalg.norm(normal)
    through = centre + rng.uniform(-0.3, 0.3, nd) * radius
    grids = np.ogrid[box]
    dist = np.abs(sum(nv * (g - c) for nv, g, c in zip(normal, grids, through, strict=True)))
    return box, dist


def cathode(
    shape: tuple[int, ...] = (128, 128),
    n_components: int = 2,
    seed: int = 0,
    *,
    radius_range: tuple[float, float] = (0.06, 0.13),
    collector: float = 0.08,
    binder_scale: tuple[float, float] = (0.02, 0.06),
    background: tuple[float, float] = (1e-3, 0.01),
    crack_fraction: float = 0.5,
    crack_width: float = 1.0,
    crack_reach: float = 2.5,
) -> tuple[np.ndarray, np.ndarray]:
    """A battery cathode section: cracked secondary particles with core-shell state gradients
    in a carbon/binder matrix, on a current collector.

    Layout along the last axis (electrode depth): separator side at index 0, a current
    collector slab in the last ``collector`` fraction of the axis (no active element:
    ``s ~ U(background)``). Between them, secondary particles (radii ``radius_range *
    min(shape)``, centre distance >= 0.85 of the radius sum: they may touch) sit in a matrix
    that a smooth random field splits into carbon/binder (``s ~ U(binder_scale)``) and pores
    (``s ~ U(background)``).

    Chemistry: each particle has a core and a shell state position (delithiation starts at
    the surface), ``p = core + (shell - core) (rho/r)^2`` as in :func:`particles`, shifted
    by a depth gradient (particles near the separator react further). A fraction
    ``crack_fraction`` of the particles are cracked: a plane (line in 2-D) of width
    ``crack_width`` px through the particle holds no material (``s`` of the binder), and the
    electrolyte reaching the crack faces drives them to the shell state:
    ``p ← p + (shell - p) exp(-d / crack_reach)`` with ``d`` the distance to the crack plane.
    So fractions jump between touching particles and at crack faces, and vary smoothly inside.
    Fractions from the softmax of ``p`` (module docstring).
    """
    shape = _check(shape, n_components)
    L = int(n_components)
    rng = np.random.default_rng(seed)
    m = min(shape)
    span = max(L - 1, 1)
    n_depth = shape[-1]
    n_coll = max(2, int(round(collector * n_depth)))
    active_shape = shape[:-1] + (n_depth - n_coll,)
    rmean = 0.5 * (radius_range[0] + radius_range[1]) * m
    vol = float(np.prod(active_shape))
    unit = np.pi * rmean**2 if len(shape) == 2 else 4.0 / 3.0 * np.pi * rmean**3
    n_target = int(1.5 * vol / unit) + 4
    cen, rad = _place(
        rng, active_shape, n_target, radius_range[0] * m, radius_range[1] * m, 0.85, 8 * n_target
    )
    k = rad.size
    core = rng.uniform(-0.3, 0.4 * span, k)
    shell = np.clip(core + rng.uniform(0.5, 1.0, k) * span, -0.5, L - 0.5)
    depth = 0.3 * span * (0.5 - cen[:, -1] / max(n_depth - n_coll - 1, 1))
    core, shell = core + depth, np.clip(shell + depth, -0.5, L - 0.5)
    s, pos, inside = _render(shape, cen, rad, core, shell)
    owner = np.full(shape, -1)
    for i, (c, r) in enumerate(zip(cen, rad, strict=True)):
        lo = np.maximum(np.floor(c - r).astype(int), 0)
        hi = np.minimum(np.ceil(c + r).astype(int) + 1, shape)
        box = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
        rho2 = sum((g - ci) ** 2 for g, ci in zip(np.ogrid[box], c, strict=True))
        dome = np.sqrt(np.maximum(r**2 - rho2, 0.0)) / float(rad.max())
        ob = owner[box]
        ob[(rho2 < r * r) & (np.abs(s[box] - dome) < 1e-12)] = i
    crack = np.zeros(shape, dtype=bool)
    for i in np.flatnonzero(rng.random(k) < crack_fraction):
        box, dist = _crack_distance(rng, shape, cen[i], rad[i])
        mine = owner[box] == i
        pb = pos[box]
        pb[mine] = (pb + (shell[i] - pb) * np.exp(-dist / crack_reach))[mine]
        cb = crack[box]
        cb |= mine & (dist < 0.5 * crack_width)
    X = _dirichlet_field(rng, L, shape)
    X[:, inside] = _softmax_states(np.clip(pos[inside], -0.5, L - 0.5), L)
    field = gaussian_filter(rng.standard_normal(shape), sigma=max(1.0, 0.03 * m))
    matrix = ~inside | crack
    binder = matrix & (field > -0.3)
    pore = matrix & ~binder
    s[binder] = rng.uniform(*binder_scale, np.count_nonzero(binder))
    s[pore] = rng.uniform(*background, np.count_nonzero(pore))
    coll = (slice(None),) * (len(shape) - 1) + (slice(n_depth - n_coll, None),)
    s[coll] = rng.uniform(*background, s[coll].shape)
    return X, s


PHANTOMS = {"particles": particles, "electrode": electrode, "wedge": wedge, "cathode": cathode}


def make_phantom(
    name: str, shape: tuple[int, ...] = (128, 128), n_components: int = 2, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Build a phantom by name.

    Parameters
    ----------
    name : {"particles", "electrode", "wedge", "cathode"}
    shape : tuple of int
        ``(y, x)`` or ``(z, y, x)``.
    n_components : int
        Number of chemical states L.
    seed : int
        Random seed (deterministic output).

    Returns
    -------
    X : numpy.ndarray, shape (L, *shape)
        Fractions, each pixel on the simplex.
    s : numpy.ndarray, shape shape
        Scale, >= 0.
    """
    try:
        fn = PHANTOMS[name]
    except KeyError:
        raise ValueError(f"unknown phantom {name!r}; choose one of {sorted(PHANTOMS)}.") from None
    return fn(tuple(shape), n_components, seed)


# --- block-wise phantoms (streaming simulation of volumes larger than memory) -------------

#: Phantoms that :func:`phantom_block` builds one block at a time.
BLOCK_PHANTOMS = ("particles", "wedge")
_BLOCK_BG_STREAM = 0xB6B6  # second seed word: background fields of block phantoms
_BLOCK_S_STREAM = 0xB5CA  # second seed word (+ block origin): background scale draws


def _particles_geometry(shape: tuple[int, ...], L: int, seed: int) -> dict:
    """The global (small) part of :func:`particles`: centres, radii, core/shell positions
    (the same draws, in the same order, as :func:`particles`)."""
    rng = np.random.default_rng(seed)
    m = min(shape)
    n_particles = 8 if len(shape) == 2 else 24
    cen, rad = _place(rng, shape, n_particles, 0.08 * m, 0.17 * m, 1.05, 400)
    k = rad.size
    span = max(L - 1, 1)
    core = rng.uniform(-0.5, L - 0.5, k)
    direction = np.where(core < (L - 1) / 2, 1.0, -1.0)
    shell = np.clip(core + direction * rng.uniform(0.5 * span, span + 0.5, k), -0.5, L - 0.5)
    # background fractions: softmax of a sum of 3 random plane waves per state (period
    # about min(shape)/3): smooth, and a function of the position only (any blocking)
    brng = np.random.default_rng([int(seed), _BLOCK_BG_STREAM])
    nd = len(shape)
    waves = brng.normal(size=(L, 3, nd))
    waves *= (3.0 / m) / np.maximum(np.linalg.norm(waves, axis=-1, keepdims=True), 1e-12)
    phases = brng.uniform(0.0, 2.0 * np.pi, (L, 3))
    return {"centres": cen, "radii": rad, "core": core, "shell": shell, "waves": waves,
            "phases": phases}  # fmt: skip


def phantom_block(
    name: str,
    shape: tuple[int, ...],
    n_components: int,
    seed: int,
    region: tuple[slice, ...],
    *,
    geometry: dict | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """One block ``region`` of a block-wise phantom: ``X`` (L, *block) and ``s`` (block).

    Only the global geometry (sphere centres and radii, a few plane waves) is held whole; each
    block is computed from it and its position, so a volume of any size is built one block at
    a time (:func:`bigxanes.simulate.simulate_to_store`). ``wedge`` equals :func:`wedge`
    exactly. ``particles`` has the spheres of :func:`particles` (same placement and core-shell
    chemistry); its background (scale ~ 0, meaningless fractions) differs: fractions are the
    softmax of smooth plane waves and the scale draws are seeded by the block's origin, so
    the background depends on the blocking (the particles do not).

    Parameters
    ----------
    name : {"particles", "wedge"}
    shape : tuple of int
        Whole ``(y, x)`` or ``(z, y, x)``.
    n_components, seed
        As :func:`make_phantom`.
    region : tuple of slice
        The block (``start``/``stop`` set, step 1).
    geometry : dict, optional
        ``_particles_geometry(shape, L, seed)`` computed once by the caller (else per call).
    """
    shape = _check(shape, n_components)
    L = int(n_components)
    lo = np.array([r.start for r in region], dtype=np.float64)
    bshape = tuple(int(r.stop - r.start) for r in region)
    if name == "wedge":
        rng = np.random.default_rng(seed)
        ang = np.deg2rad(rng.uniform(-20, 20))
        axes = [
            np.linspace(0.0, 1.0, n)[r.start : r.stop] for n, r in zip(shape, region, strict=True)
        ]
        coords = np.meshgrid(*axes, indexing="ij")
        a, b = np.cos(ang), np.sin(ang)
        corners = [a * cx + b * cy for cx in (0.0, 1.0) for cy in (0.0, 1.0)]
        t = (a * coords[-1] + b * coords[-2] - min(corners)) / (max(corners) - min(corners))
        X = _hat_states(t * (L - 1), L) if L > 1 else np.ones((1,) + bshape)
        bump = np.ones(bshape)
        for c in coords[:-1]:
            bump = bump * np.cos(np.pi * (c - 0.5)) ** 2
        return X, 0.3 + 0.6 * bump
    if name != "particles":
        raise ValueError(
            f"phantom {name!r} is not built block-wise; choose one of {', '.join(BLOCK_PHANTOMS)}"
        )
    g = geometry if geometry is not None else _particles_geometry(shape, L, seed)
    cen, rad = g["centres"], g["radii"]
    hi = lo + np.asarray(bshape)
    near = np.all((cen + rad[:, None] >= lo) & (cen - rad[:, None] <= hi - 1), axis=1)
    s = np.zeros(bshape)
    pos = np.zeros(bshape)
    rnorm = float(rad.max()) if rad.size else 1.0
    for c, r, pc, ps in zip(cen[near] - lo, rad[near], g["core"][near], g["shell"][near],
                            strict=True):  # fmt: skip
        a = np.maximum(np.floor(c - r).astype(int), 0)
        b = np.minimum(np.ceil(c + r).astype(int) + 1, bshape)
        if np.any(b <= a):
            continue
        box = tuple(slice(i, j) for i, j in zip(a, b, strict=True))
        grids = np.ogrid[box]
        rho2 = sum((gr - ci) ** 2 for gr, ci in zip(grids, c, strict=True))
        u2 = rho2 / r**2
        dome = np.sqrt(np.maximum(r**2 - rho2, 0.0)) / rnorm
        sb, pb = s[box], pos[box]
        upd = (u2 < 1.0) & (dome > sb)
        sb[upd] = dome[upd]
        pb[upd] = (pc + (ps - pc) * np.sqrt(u2) ** 2)[upd]
    inside = s > 0
    grids = np.meshgrid(*[np.arange(r.start, r.stop, dtype=np.float64) for r in region],
                        indexing="ij", sparse=True)  # fmt: skip
    logits = np.zeros((L,) + bshape)
    for j in range(L):
        for w, ph in zip(g["waves"][j], g["phases"][j], strict=True):
            logits[j] += np.cos(2.0 * np.pi * sum(wi * gi for wi, gi in zip(w, grids, strict=True))
                                + ph)  # fmt: skip
    logits -= logits.max(axis=0, keepdims=True)
    X = np.exp(logits)
    X /= X.sum(axis=0, keepdims=True)
    X[:, inside] = _softmax_states(pos[inside], L)
    srng = np.random.default_rng([int(seed), _BLOCK_S_STREAM, *(int(r.start) for r in region)])
    s[~inside] = srng.uniform(1e-3, 0.02, np.count_nonzero(~inside))
    return X, s
