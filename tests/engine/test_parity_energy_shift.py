"""Issue 12: the energy shift and the data-edge pre-edge window give the same numbers and attrs
in both executors (``bx.lcf``/``bx.unmix`` in memory and ``unmix_store`` on uneven tiles),
with references on their own finer, wider grid (as read from files)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import xarray as xr
from test_parity import _engine, assert_parity

import bigxanes as bx
from bigxanes.eshift import shift_references
from bigxanes.spectra_model import xanes_spectrum
from bigxanes.store import write_dataset

E = np.arange(7090.0, 7180.01, 1.0)
EF = np.arange(7060.0, 7220.01, 0.1)
TRUE = (-2.5, 1.5)


@pytest.fixture(scope="module")
def shifted(tmp_path_factory):
    """A 24 x 26 stack of two references moved by TRUE eV, Poisson-like noise, flat offsets."""
    R = np.c_[xanes_spectrum(EF, 7121.0), xanes_spectrum(EF, 7127.0, white_line_height=1.1)]
    rng = np.random.default_rng(0)
    f = rng.dirichlet([1, 1], size=24 * 26).T
    t = rng.uniform(0.5, 1.5, 24 * 26)
    A = shift_references(EF, R, TRUE, E)
    Y = (A @ f) * t + rng.uniform(0.2, 0.4, 24 * 26) + rng.normal(0, 0.003, (E.size, 24 * 26))
    stack = Y.reshape(E.size, 24, 26).astype(np.float32)
    ds = xr.Dataset({"stack": (("energy", "y", "x"), stack)}, coords={"energy": E})
    path = tmp_path_factory.mktemp("shift") / "in.zarr"
    write_dataset(ds, path)
    ref = xr.DataArray(
        R,
        dims=("energy", "component"),
        coords={"energy": EF, "component": ["FeII", "FeIII"]},
        attrs={"source": "model"},
    )
    return ds, path, ref


@pytest.mark.parametrize("shift", ["auto", "-2.5,1.5", "none"])
def test_lcf_energy_shift_parity(shifted, tmp_path, shift):
    ds, path, ref = shifted
    kw = {"energy_shift": shift, "references": ref}
    warns = shift == "none"  # the stack IS shifted: both executors warn, naming the flag
    with pytest.warns(UserWarning, match="--energy-shift auto") if warns else _nothing():
        eng = _engine(path, tmp_path, "lcf", (7, 9), **kw)
    with pytest.warns(UserWarning, match="--energy-shift auto") if warns else _nothing():
        mem = bx.lcf(ds["stack"], ref, energy_shift=shift)
    assert_parity(mem, eng)
    s = json.loads(mem.attrs["energy_shift"])
    if shift == "none":
        assert s == [0.0, 0.0] and mem.attrs["energy_shift_mode"] == "none"
    else:
        assert np.all(np.abs(np.array(s) - TRUE) < 0.2), s
    assert json.loads(mem.attrs["reference_names"]) == ["FeII", "FeIII"]
    assert mem.attrs["references_source"] == "model"
    assert "data edge" in mem.attrs["baseline_window"]


def test_rum_tv_energy_shift_parity(shifted, tmp_path):
    ds, path, ref = shifted
    params = bx.rum.RumParams(method="rum-tv", max_iter=8, tol=1e-12)
    eng = _engine(
        path, tmp_path, "rum-tv", (12, 13), references=ref, params=params, energy_shift="auto"
    )
    mem = bx.unmix(
        ds["stack"],
        ref,
        method="rum-tv",
        energy_shift="auto",
        max_iter=8,
        tol=1e-12,
        state_dtype=np.float32,
    )
    assert_parity(mem, eng)
    assert mem.attrs["energy_shift_mode"] == "auto"


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False
