"""Each metric on inputs with known answers, and against scikit-image where it implements the same one."""

import numpy as np
import pytest
from skimage.color import deltaE_ciede2000
from skimage.metrics import structural_similarity

from semcolor import metrics

RNG = np.random.default_rng(0)


def test_psnr_known_value_and_identity():
    a = np.zeros((8, 8, 3), np.float64)
    b = np.full((8, 8, 3), 0.1)
    assert metrics.psnr(a, b) == pytest.approx(20.0)  # mse 0.01 -> 20 dB
    assert metrics.psnr(a, a) == float("inf")
    assert metrics.psnr(np.zeros((4, 4, 3), np.uint8), np.full((4, 4, 3), 255, np.uint8)) == pytest.approx(0.0)


def test_ssim_matches_scikit_image_away_from_borders():
    x = RNG.random((64, 64, 3))
    y = np.clip(x + 0.1 * RNG.standard_normal(x.shape), 0, 1)
    ours = metrics.ssim(x, y)
    theirs = structural_similarity(x, y, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1.0, channel_axis=-1)
    assert ours == pytest.approx(theirs, abs=0.01)  # skimage crops a 5-px border before averaging
    assert metrics.ssim(x, x) == pytest.approx(1.0)


def test_ms_ssim_is_one_for_identical_and_drops_with_difference():
    x = RNG.random((128, 128, 3))
    assert metrics.ms_ssim(x, x) == pytest.approx(1.0)
    slight = np.clip(x + 0.02 * RNG.standard_normal(x.shape), 0, 1)
    strong = RNG.random(x.shape)
    assert 1.0 > metrics.ms_ssim(x, slight) > metrics.ms_ssim(x, strong) >= 0.0


def test_colorfulness_gray_is_zero_and_known_constant_color():
    gray = np.full((10, 10, 3), 128, np.uint8)
    assert metrics.colorfulness(gray) == pytest.approx(0.0)
    red = np.zeros((10, 10, 3), np.uint8)
    red[..., 0] = 255  # rg = 255, yb = 127.5, no spread
    assert metrics.colorfulness(red) == pytest.approx(0.3 * np.hypot(255, 127.5))
    assert metrics.delta_colorfulness([gray], [red]) == pytest.approx(0.3 * np.hypot(255, 127.5))


def test_ciede2000_matches_scikit_image():
    lab_a = np.stack([RNG.uniform(0, 100, 5000), RNG.uniform(-100, 100, 5000), RNG.uniform(-100, 100, 5000)], -1)
    lab_b = lab_a + RNG.normal(0, 8, lab_a.shape)
    np.testing.assert_allclose(metrics.ciede2000(lab_a, lab_b), deltaE_ciede2000(lab_a, lab_b), atol=1e-6)
    # Sharma et al. (2005) test pair 1
    assert metrics.ciede2000(np.array([50, 2.6772, -79.7751]), np.array([50, 0, -82.7485])) == pytest.approx(2.0425, abs=1e-4)


def test_ab_auc_perfect_constant_error_and_rebalancing():
    target = RNG.uniform(-60, 60, (32, 32, 2))
    assert metrics.ab_error_auc(target, target) == pytest.approx(1.0)
    shifted = target + np.array([30.0, 40.0])  # every pixel off by exactly 50
    # thresholds 0..150: the share is 0 below 50 and 1 from 50 on -> 101 of 151 thresholds
    assert metrics.ab_error_auc(shifted, target) == pytest.approx(101 / 151)
    weights = metrics.rebalancing_weights(target)
    assert weights.mean() == pytest.approx(1.0)
    assert metrics.ab_error_auc(shifted, target, weights) == pytest.approx(101 / 151)


def test_rebalanced_auc_favours_rare_colors():
    # 90 % of pixels gray (ab 0), 10 % red; a prediction that gets only the gray pixels right
    target = np.zeros((100, 2))
    target[:10] = [60, 40]
    prediction = np.zeros((100, 2))
    raw = metrics.ab_error_auc(prediction, target)
    balanced = metrics.ab_error_auc(prediction, target, metrics.rebalancing_weights(target))
    assert balanced < raw  # the rare red pixels count as much as the common gray ones


def test_miou_known_confusion_and_ignore():
    target = np.array([[0, 0, 1, 1], [1, 1, 255, 255]])
    prediction = np.array([[0, 1, 1, 1], [1, 0, 0, 1]])
    confusion = metrics.confusion_matrix(prediction, target, num_classes=2)
    assert confusion.tolist() == [[1, 1], [1, 3]]
    # IoU class 0 = 1 / (2 + 2 - 1) = 1/3; class 1 = 3 / (4 + 4 - 3) = 3/5
    assert metrics.mean_iou(confusion) == pytest.approx((1 / 3 + 3 / 5) / 2)
    with pytest.raises(ValueError, match="outside"):
        metrics.confusion_matrix(prediction, np.full_like(target, 7), num_classes=2)


def test_semantic_color_accuracy_counts_pixels_near_a_class_mode():
    labels = np.array([[1, 1, 2, 2], [255, 255, 3, 3]])
    modes = {1: np.array([[50.0, 0.0]]), 2: np.array([[-40.0, 30.0], [20.0, 60.0]])}
    predicted = np.zeros((2, 4, 2))
    predicted[0, 0] = [50, 5]  # class 1, 5 away: hit
    predicted[0, 1] = [30, 0]  # class 1, 20 away: miss
    predicted[0, 2] = [20, 55]  # class 2, near its second mode: hit
    predicted[0, 3] = [0, 0]  # class 2, far from both: miss
    # class 3 has no modes and 255 is ignored -> 2 hits of 4 labeled pixels
    assert metrics.semantic_color_accuracy(predicted, labels, modes) == pytest.approx(0.5)


def test_mode_coverage_counts_distinct_modes_hit_across_samples():
    labels = np.zeros((4, 4), np.int64)
    labels[:2] = 5
    modes = {5: np.array([[60.0, 40.0], [-20.0, -50.0], [0.0, 70.0]]), 0: np.array([[0.0, 0.0]])}
    red, blue = np.zeros((4, 4, 2)), np.zeros((4, 4, 2))
    red[:2] = [58, 41]
    blue[:2] = [-22, -48]
    assert metrics.mode_coverage([red, red, red], labels, modes) == pytest.approx(1 / 3)
    assert metrics.mode_coverage([red, blue, red], labels, modes) == pytest.approx(2 / 3)
    assert np.isnan(metrics.mode_coverage([red], np.zeros((4, 4), np.int64), modes))  # no multimodal class
