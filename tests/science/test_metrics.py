import numpy as np
import pytest

from bigxanes.metrics import (
    foreground_mask,
    phase_map_scores,
    psnr_foreground,
    psnr_paper,
    rmse_foreground,
    spectral_angle,
    ssim_foreground,
    ssim_paper,
)


def test_psnr_paper_hand_value():
    truth = np.array([[[1.0, 0.0], [0.5, 0.5]]])
    est = np.array([[[0.8, 0.2], [0.4, 0.6]]])
    # errors 0.2, 0.2, 0.1, 0.1 -> MSE 0.025; MAX of the ESTIMATE = 0.8 (not 1.0 of truth)
    expected = 20 * np.log10(0.8 / np.sqrt(0.025))
    assert psnr_paper(est, truth) == pytest.approx(expected, rel=1e-12)
    assert expected == pytest.approx(14.0824, abs=1e-3)
    # swapping roles changes MAX -> different value: the definition is asymmetric
    assert psnr_paper(truth, est) == pytest.approx(20 * np.log10(1.0 / np.sqrt(0.025)))


def test_psnr_paper_averages_maps_and_identical_is_inf():
    rng = np.random.default_rng(0)
    t = rng.random((2, 16, 16))
    e = t.copy()
    e[1] += 0.1
    per = psnr_paper(e, t, per_map=True)
    assert np.isinf(per[0]) and per[1] == pytest.approx(20 * np.log10(e[1].max() / 0.1))
    with np.errstate(all="raise"):
        assert psnr_paper(t, t) == np.inf
        assert psnr_foreground(t, t, np.ones((16, 16), bool)) == np.inf


def test_psnr_foreground_uses_mask_and_range_one():
    t = np.zeros((2, 8, 8))
    t[0] = 1.0
    e = t.copy()
    mask = np.zeros((8, 8), bool)
    mask[2:6, 2:6] = True
    e[:, ~mask] = 0.5  # error only outside the mask
    e[0, mask] -= 0.01
    e[1, mask] += 0.01
    assert psnr_foreground(e, t, mask) == pytest.approx(40.0)
    assert rmse_foreground(e, t, mask) == pytest.approx(0.01)
    with pytest.raises(ValueError, match="no pixels"):
        psnr_foreground(e, t, np.zeros((8, 8), bool))


def test_ssim_paper_and_foreground():
    y, x = np.mgrid[0:32, 0:32]
    t0 = np.clip((x + y) / 62.0, 0, 1)
    t = np.stack([t0, 1 - t0])
    assert ssim_paper(t, t) == pytest.approx(1.0)
    assert ssim_paper(t, t, gaussian=True) == pytest.approx(1.0)
    rng = np.random.default_rng(1)
    noisy = np.clip(t + rng.normal(0, 0.1, t.shape), 0, 1)
    very = np.clip(t + rng.normal(0, 0.3, t.shape), 0, 1)
    s1, s2 = ssim_paper(noisy, t), ssim_paper(very, t)
    assert 0 < s2 < s1 < 1
    mask = np.ones((32, 32), bool)
    assert ssim_foreground(noisy, t, mask) == pytest.approx(s1, rel=1e-9)
    # 3-D volumes work
    v = rng.random((2, 10, 10, 10))
    assert ssim_paper(v, v) == pytest.approx(1.0)


def test_phase_map_scores_and_mask():
    s = np.zeros((16, 16))
    s[4:12, 4:12] = 1.0
    s[0, 0] = 0.05
    m = foreground_mask(s)
    assert m.sum() == 64 and not m[0, 0]
    t = np.stack([np.full((16, 16), 0.3), np.full((16, 16), 0.7)])
    sc = phase_map_scores(t + 0.01, t, m)
    assert set(sc) == {
        "psnr_paper",
        "ssim_paper",
        "psnr_foreground",
        "ssim_foreground",
        "rmse_foreground",
    }
    assert sc["psnr_foreground"] == pytest.approx(40.0)
    assert sc["rmse_foreground"] == pytest.approx(0.01)
    with pytest.raises(ValueError, match="shape"):
        phase_map_scores(t[:1], t)


def test_spectral_angle():
    a = np.array([1.0, 0.0, 0.0])
    assert spectral_angle(a, np.array([0.0, 2.0, 0.0])) == pytest.approx(90.0)
    assert spectral_angle(a, 3 * a) == pytest.approx(0.0, abs=1e-6)
    assert spectral_angle(a, np.array([1.0, 1.0, 0.0])) == pytest.approx(45.0)
    A = np.array([[1.0, 1.0], [0.0, 1.0]])
    np.testing.assert_allclose(spectral_angle(A, np.array([[1.0], [0.0]])), [0.0, 45.0], atol=1e-6)
