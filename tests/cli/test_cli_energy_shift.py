"""Issue 12, items 2 and 4 through the CLI: `unmix --energy-shift none|auto|V[,V...]` on a stack
simulated from real Athena references (shifts -3 / +2 eV, Poisson noise) and on the real STXM
Fe L3 stack with references moved +3 eV; the pre-edge window below the data's own edge; the
shifts, mode, window and reference selection in the result attrs and the printed summary.
Skips the parts that need ../shared/data when it is absent.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "science"))
from prj_sim import ENERGY, prj_files, prj_library, shared_data, simulate  # noqa: E402

from bigxanes.cli import main  # noqa: E402
from bigxanes.kernels.baseline import pre_edge_window  # noqa: E402
from bigxanes.kernels.normalize import find_e0  # noqa: E402
from bigxanes.store import write_dataset  # noqa: E402

LIB = prj_library()
needs_prj = pytest.mark.skipif(LIB is None, reason="Athena project files (shared data) absent")
PAIR = ["Hematite", "Olivine (Fo80)"]
STXM = None if shared_data() is None else shared_data() / "stxm_fe_l3"


def _sim_store(tmp: Path, shifts, seed: int) -> tuple[Path, np.ndarray]:
    ef, R, names = LIB
    Y, f = simulate(ef, R[:, [names.index(n) for n in PAIR]], shifts, shape=(20, 20), seed=seed)
    ds = xr.Dataset(
        {"stack": (("energy", "y", "x"), Y.reshape(ENERGY.size, 20, 20))},
        coords={"energy": ENERGY},
    )
    path = tmp / f"sim{seed}.zarr"
    write_dataset(ds, path)
    return path, f


def _unmix(capsys, src: Path, out: Path, *extra: str) -> tuple[xr.Dataset, str, str]:
    refs = [str(p) for p in prj_files()]
    rc = main(
        ["unmix", str(src), str(out), "--method", "lcf", "--refs", *refs]
        + ["--components", *PAIR, *extra]
    )
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    return xr.open_zarr(out, consolidated=False).load(), cap.out, cap.err


def _rmse(res: xr.Dataset, f_true: np.ndarray) -> float:
    return float(np.sqrt(np.mean((res["fraction_unmasked"].values.reshape(2, -1) - f_true) ** 2)))


def _warnings(err: str) -> list[str]:
    """The energy-shift warnings (the fit-quality warning may come too: it is another check)."""
    return [
        ln
        for ln in err.splitlines()
        if ln.startswith("bigxanes: warning:") and "energy-shift" in ln and "misaligned" in ln
    ]


@needs_prj
def test_auto_recovers_shifts_and_halves_the_fraction_error(tmp_path, capsys):
    src, f = _sim_store(tmp_path, [-3.0, 2.0], seed=0)
    none, _, err = _unmix(capsys, src, tmp_path / "none.zarr")
    warn = _warnings(err)
    assert len(warn) == 1 and "--energy-shift auto" in warn[0], err
    assert none.attrs["energy_shift_mode"] == "none"
    assert json.loads(none.attrs["energy_shift"]) == [0.0, 0.0]
    auto, out, err = _unmix(capsys, src, tmp_path / "auto.zarr", "--energy-shift", "auto")
    assert not _warnings(err)
    shifts = np.array(json.loads(auto.attrs["energy_shift"]))
    assert np.all(np.abs(shifts - [-3.0, 2.0]) < 0.3), shifts
    assert auto.attrs["energy_shift_mode"] == "auto"
    assert _rmse(auto, f) <= 0.5 * _rmse(none, f), (_rmse(auto, f), _rmse(none, f))
    assert "energy shift (auto): Hematite -" in out and "Olivine (Fo80) +" in out
    assert "baseline: pre-edge window" in out


@needs_prj
def test_no_shift_present_fits_zero_and_does_not_warn(tmp_path, capsys):
    src, _ = _sim_store(tmp_path, [0.0, 0.0], seed=1)
    _, _, err = _unmix(capsys, src, tmp_path / "none.zarr")
    assert not _warnings(err), err
    auto, _, _ = _unmix(capsys, src, tmp_path / "auto.zarr", "--energy-shift", "auto")
    assert np.all(np.abs(json.loads(auto.attrs["energy_shift"])) <= 0.2)


@needs_prj
def test_pre_edge_window_lies_below_the_data_edge(tmp_path, capsys):
    """Data calibrated 3 eV below the references: the references' window would reach into the
    data's rising edge; the run's window ends 5 eV below the data's own edge, and says so."""
    src, _ = _sim_store(tmp_path, [-3.0, -3.0], seed=2)
    res, out, _ = _unmix(capsys, src, tmp_path / "r.zarr")
    Y = xr.open_zarr(src, consolidated=False)["absorbance"].values.reshape(ENERGY.size, -1)
    e0_data = float(find_e0(ENERGY, Y.mean(axis=1), smooth=2.0))
    lo, hi = json.loads(res.attrs["baseline_window_eV"])
    assert hi < e0_data - 5.0 + 1e-9 and lo == ENERGY[0]
    refs_only = ENERGY[pre_edge_window(ENERGY, res["references"].values)].max()
    assert refs_only > hi + 2.0  # the old window reached 3 eV further up
    assert "data edge" in res.attrs["baseline_window"]
    assert f"baseline: {res.attrs['baseline_window']}" in out


def test_bad_energy_shift_is_one_line(tmp_path, capsys):
    E = np.linspace(7080, 7180, 60)
    A = np.c_[np.tanh((E - 7120) / 3) + 1, np.tanh((E - 7126) / 3) + 1]
    ds = xr.Dataset(
        {
            "stack": (("energy", "y", "x"), np.einsum("tl,lyx->tyx", A, np.ones((2, 6, 6)))),
            "references": (("energy", "component"), A),
        },
        coords={"energy": E, "component": ["a", "b"]},
    )
    write_dataset(ds, tmp_path / "s.zarr")
    for bad, what in (("left", "expected none, auto"), ("1,2,3", "one per reference (2")):
        rc = main(
            ["unmix", str(tmp_path / "s.zarr"), str(tmp_path / "r.zarr")]
            + ["--method", "lcf", "--energy-shift", bad]
        )
        err = capsys.readouterr().err.strip().splitlines()
        assert rc == 2 and len(err) == 1 and "--energy-shift" in err[0] and what in err[0]


@pytest.mark.skipif(
    STXM is None or not (STXM / "stack_counts.tif").is_file(), reason="STXM data absent"
)
def test_real_stxm_references_moved_up_3_ev(tmp_path, capsys):
    """The real stack's own references moved +3 eV: `none` warns, `auto` finds about -3 eV."""
    pytest.importorskip("tifffile")
    stack = tmp_path / "fe.zarr"
    rc = main(
        ["import", str(STXM / "stack_counts.tif"), str(stack), "--energies"]
        + [str(STXM / "energies_eV.txt"), "--i0", str(STXM / "i0_counts.txt"), "-q"]
    )
    assert rc == 0
    refs = []
    for name in ("ref_fe2_reduced", "ref_fe3_oxidized"):
        e, y = np.loadtxt(STXM / f"{name}.txt", unpack=True)
        p = tmp_path / f"{name}_plus3.txt"
        np.savetxt(p, np.c_[e, np.interp(e - 3.0, e, y)])  # features at E + 3 eV
        refs.append(str(p))
    base = ["unmix", str(stack), "--method", "lcf", "--refs", *refs]
    assert main(base[:2] + [str(tmp_path / "none.zarr")] + base[2:]) == 0
    warn = _warnings(capsys.readouterr().err)
    assert len(warn) == 1 and "--energy-shift auto" in warn[0]
    rc = main(base[:2] + [str(tmp_path / "auto.zarr")] + base[2:] + ["--energy-shift", "auto"])
    cap = capsys.readouterr()
    assert rc == 0 and not _warnings(cap.err)
    auto = xr.open_zarr(tmp_path / "auto.zarr", consolidated=False)
    shifts = np.array(json.loads(auto.attrs["energy_shift"]))
    assert np.all(np.abs(shifts + 3.0) < 0.3), shifts
    mis = json.loads(auto.attrs["energy_shift_misfit"])
    assert mis[1] < 0.2 * mis[0]
