"""Alignment: known sub-pixel drifts recovered, unmixing unharmed, no border artefacts."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr
from scipy import ndimage

import bigxanes as bx
from bigxanes.align import align, align_store, apply_shifts, edge_region, estimate_shifts
from bigxanes.kernels.registration import valid_box
from bigxanes.metrics import foreground_mask, psnr_foreground
from bigxanes.store import open_stack, write_dataset


def _drifted(shape=(96, 96), seed=1, amp=8.0, sigma=3.0):
    """Simulated stack with non-resonant absorption and a random-walk drift clipped to ±amp px.

    The drift moves the noise-free sample (``drifted[t, i] = clean[t, i + d_t]``: the shift that
    corrects image t is ``d_t``), then detector noise is added, as in a measurement; ``d`` is
    zero at the automatic reference energy, so the undrifted stack is in the reference's frame.
    """
    ds = bx.simulate("particles", shape=shape, n_components=2, sigma=0.0, seed=seed)
    # real samples absorb below the edge too (other elements, thickness): 0.5 x the edge step
    clean = ds["stack"].values.astype(np.float64) + 0.5 * ds["true_scale"].values[None]
    T = clean.shape[0]
    rng = np.random.default_rng(seed)
    d = np.clip(np.cumsum(rng.normal(0.0, 0.7, (T, clean.ndim - 1)), axis=0), -amp, amp)
    _lo, ref, _e0 = edge_region(ds["energy"].values, clean.reshape(T, -1).mean(axis=1))
    d -= d[ref]
    moved = np.stack([ndimage.shift(clean[t], -d[t], order=3, mode="nearest") for t in range(T)])
    std = sigma / 255.0 * clean.max()
    moved = moved + rng.normal(0.0, std, moved.shape)
    undrifted = clean + rng.normal(0.0, std, clean.shape)
    coords = ds["stack"].coords
    st = xr.DataArray(moved.astype(np.float32), dims=ds["stack"].dims, coords=coords)
    und = xr.DataArray(undrifted.astype(np.float32), dims=ds["stack"].dims, coords=coords)
    return ds, und, st, d


@pytest.fixture(scope="module")
def drift2d():
    return _drifted()


def test_known_drifts_recovered_within_a_tenth_of_a_pixel(drift2d):
    ds, _und, moved, d = drift2d
    table = estimate_shifts(moved)
    err = table["shift"].values - d
    rms = float(np.sqrt((err**2).sum(axis=1).mean()))
    assert np.abs(d).max() > 4.0  # the drift is real, several pixels
    assert rms < 0.1, rms
    assert set(np.unique(table["method"].values)) >= {0, 1, 2}


def test_aligned_stack_unmixes_like_the_undrifted_one(drift2d):
    ds, undrifted, moved, d = drift2d
    aligned, table = align(moved)
    box = valid_box(undrifted.shape[1:], table["shift"].values)
    sl = (slice(None),) + box
    assert not np.isnan(aligned.values).any() and aligned.shape == undrifted[sl].shape
    A = ds["references"]
    truth = ds["true_fraction"].values[sl]
    fg = foreground_mask(ds["true_scale"].values[box])
    p_aligned = psnr_foreground(bx.lcf(aligned, A)["fraction_unmasked"].values, truth, fg)
    p_undrifted = psnr_foreground(bx.lcf(undrifted[sl], A)["fraction_unmasked"].values, truth, fg)
    p_drifted = psnr_foreground(bx.lcf(moved[sl], A)["fraction_unmasked"].values, truth, fg)
    # interpolation averages some noise away, so aligned may score higher: no loss beyond 0.5 dB
    assert p_aligned > p_undrifted - 0.5, (p_aligned, p_undrifted)
    assert p_drifted < p_undrifted - 3.0  # the drift does matter: the test can fail


def test_no_artefact_rows_or_columns_at_the_border(drift2d):
    ds, clean, moved, d = drift2d
    aligned, table = align(moved)
    a = aligned.values.astype(np.float64)
    assert np.isfinite(a).all()
    # per-row / per-column mean absolute deviation of the aligned images from their own smooth
    # version: a wrap-around or ringing line at the border would stand out against the interior
    hp = np.abs(a - ndimage.uniform_filter(a, size=(1, 3, 3), mode="nearest")).mean(axis=0)
    rows, cols = hp.mean(axis=1), hp.mean(axis=0)
    for prof in (rows, cols):
        inner = np.median(prof[2:-2])
        assert prof[0] < 2.0 * inner and prof[-1] < 2.0 * inner, (prof[:3], prof[-3:], inner)


def test_nan_outside_instead_of_wrap_when_not_cropped():
    img = np.arange(100, dtype=np.float32).reshape(1, 10, 10)
    st = xr.DataArray(np.concatenate([img, img]), dims=("energy", "y", "x"))
    st = st.assign_coords(energy=[1.0, 2.0])
    out = apply_shifts(st, np.array([[0.0, 0.0], [2.5, -1.0]]), crop=False).values
    assert np.isnan(out[1, :3]).all() and np.isfinite(out[1, 3:, :-1]).all()
    assert np.isnan(out[1, :, -1]).all()
    np.testing.assert_allclose(out[1, 5, 4], 0.5 * (img[0, 2, 5] + img[0, 3, 5]))
    cropped = apply_shifts(st, np.array([[0.0, 0.0], [2.5, -1.0]]))
    assert cropped.shape == (2, 7, 9)


def test_3d_drift_recovered():
    ds = bx.simulate("particles", shape=(24, 40, 40), n_components=2, sigma=2, seed=3)
    stack = ds["stack"].values.astype(np.float64) + 0.5 * ds["true_scale"].values[None]
    T = stack.shape[0]
    rng = np.random.default_rng(3)
    d = rng.uniform(-3.0, 3.0, (T, 3))
    d[T // 2] = 0
    moved = np.stack([ndimage.shift(stack[t], -d[t], order=3, mode="nearest") for t in range(T)])
    st = xr.DataArray(moved, dims=ds["stack"].dims, coords=ds["stack"].coords)
    table = estimate_shifts(st, upsample=50)
    ref = int(np.argmin(np.abs(ds["energy"].values - table.attrs["reference_energy"])))
    est = table["shift"].values
    err = (est - est[ref]) - (d - d[ref])
    assert float(np.sqrt((err**2).sum(axis=1).mean())) < 0.1
    assert list(table["axis"].values) == ["z", "y", "x"]


def test_align_store_chunkwise_matches_memory_and_stores_the_table(drift2d, tmp_path):
    ds, clean, moved, d = drift2d
    src = write_dataset(
        xr.Dataset({"stack": moved, "references": ds["references"]}),
        tmp_path / "in.zarr",
        chunks=32,
    )
    before = sorted(p.name for p in src.rglob("*"))
    out = align_store(src, tmp_path / "out.zarr", plot=tmp_path / "shifts.png")
    assert sorted(p.name for p in src.rglob("*")) == before  # input untouched
    got = open_stack(out)
    mem, table = align(moved)
    np.testing.assert_allclose(got["stack"].values, mem.values, atol=1e-6)
    np.testing.assert_allclose(got["shift"].values, table["shift"].values)
    assert (tmp_path / "shifts.png").stat().st_size > 1000
    with pytest.raises(ValueError, match="OUT is the input"):
        align_store(src, src, overwrite=True)


def test_tiny_float_shift_leaves_no_nan_row_in_the_crop():
    """A chained shift of 5.55e-17 px (a rounding residue) counts as 0: the crop that
    ``valid_box`` computes then holds no NaN column (it did: a whole border column was NaN)."""
    img = np.arange(64, dtype=np.float32).reshape(1, 8, 8)
    st = xr.DataArray(np.concatenate([img, img]), dims=("energy", "y", "x"))
    st = st.assign_coords(energy=[1.0, 2.0])
    s = np.array([[0.0, 0.0], [-2.51, 5.55e-17]])
    out = apply_shifts(st, s).values
    assert out.shape == (2, 5, 8) and np.isfinite(out).all()


def test_noise_only_images_hold_no_phantom_drift():
    """Undrifted, noisy 48x48 stack whose pre-edge images hold only noise: the shifts stay
    near 0 (before: up to 11.31 px, phase correlation of two noise images peaks anywhere)."""
    ds = bx.simulate("particles", shape=(48, 48), n_components=2, sigma=7.0, seed=0)
    table = estimate_shifts(ds["stack"])
    assert np.abs(table["shift"].values).max() < 0.3
    held = table["method"].values == 4
    assert held.sum() == table.attrs["n_held"] > 10
    assert held[:10].all()  # the flat pre-edge
