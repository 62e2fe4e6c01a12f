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


def test_ssim_is_scikit_images_standard_ssim():
    x = RNG.random((64, 48, 3))
    y = np.clip(x + 0.1 * RNG.standard_normal(x.shape), 0, 1)
    theirs = structural_similarity(
        x, y, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1.0, channel_axis=-1
    )
    assert metrics.ssim(x, y) == pytest.approx(theirs, abs=1e-12)
    # uint8 is brought to [0, 1] first: the same figure as the float image of the same values
    x8, y8 = (x * 255).round().astype(np.uint8), (y * 255).round().astype(np.uint8)
    assert metrics.ssim(x8, y8) == pytest.approx(metrics.ssim(x8 / 255.0, y8 / 255.0), abs=1e-12)
    assert metrics.ssim(x, x) == pytest.approx(1.0)


def test_ssim_of_constant_images_is_the_luminance_term():
    # no variance: contrast-structure is exactly 1, SSIM is (2 mu_x mu_y + C1) / (mu_x^2 + mu_y^2 + C1)
    a, b, c1 = 0.5, 0.6, 0.01**2
    x, y = np.full((32, 32, 3), a), np.full((32, 32, 3), b)
    assert metrics.ssim(x, y) == pytest.approx((2 * a * b + c1) / (a * a + b * b + c1), abs=1e-12)


def test_ms_ssim_is_one_for_identical_and_drops_with_difference():
    x = RNG.random((128, 128, 3))
    assert metrics.ms_ssim(x, x) == pytest.approx(1.0)
    slight = np.clip(x + 0.02 * RNG.standard_normal(x.shape), 0, 1)
    strong = RNG.random(x.shape)
    assert 1.0 > metrics.ms_ssim(x, slight) > metrics.ms_ssim(x, strong) >= 0.0


def test_ms_ssim_known_answer_for_constant_images():
    # contrast-structure is 1 at every scale, so only the coarsest scale's luminance term, to its weight, stays
    a, b, c1 = 0.5, 0.6, 0.01**2
    x, y = np.full((64, 64, 3), a), np.full((64, 64, 3), b)
    luminance = (2 * a * b + c1) / (a * a + b * b + c1)
    assert metrics.ms_ssim(x, y) == pytest.approx(luminance ** metrics.MS_SSIM_WEIGHTS[-1], abs=1e-12)


def test_colorfulness_gray_is_zero_and_known_constant_color():
    gray = np.full((10, 10, 3), 128, np.uint8)
    assert metrics.colorfulness(gray) == pytest.approx(0.0)
    red = np.zeros((10, 10, 3), np.uint8)
    red[..., 0] = 255  # rg = 255, yb = 127.5, no spread
    assert metrics.colorfulness(red) == pytest.approx(0.3 * np.hypot(255, 127.5))
    assert metrics.delta_colorfulness([gray], [red]) == pytest.approx(0.3 * np.hypot(255, 127.5))


# Sharma, Wu and Dalal (2005), Table 1: pairs 1, 7, 15, 17 and 25 with their published CIEDE2000
SHARMA_PAIRS = [
    ((50.0, 2.6772, -79.7751), (50.0, 0.0, -82.7485), 2.0425),
    ((50.0, 0.0, 0.0), (50.0, -1.0, 2.0), 2.3669),
    ((50.0, 2.4900, -0.0010), (50.0, -2.4900, 0.0011), 7.2195),
    ((50.0, 2.5, 0.0), (73.0, 25.0, -18.0), 27.1492),
    ((60.2574, -34.0099, 36.2677), (60.4626, -34.1751, 39.4387), 1.2644),
]


def test_ciede2000_is_scikit_images_and_matches_the_published_pairs():
    lab_a = np.stack([RNG.uniform(0, 100, 5000), RNG.uniform(-100, 100, 5000), RNG.uniform(-100, 100, 5000)], -1)
    lab_b = lab_a + RNG.normal(0, 8, lab_a.shape)
    np.testing.assert_allclose(metrics.ciede2000(lab_a, lab_b), deltaE_ciede2000(lab_a, lab_b), atol=1e-12)
    assert metrics.ciede2000(lab_a[:6].reshape(2, 3, 3), lab_b[:6].reshape(2, 3, 3)).shape == (2, 3)
    first, second, expected = (np.array(column) for column in zip(*SHARMA_PAIRS))
    np.testing.assert_allclose(metrics.ciede2000(first, second), expected, atol=1e-4)


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


def _toy_palette() -> metrics.Palette:
    # class 0 achromatic, class 1 one mode, class 2 two modes (p 0.75 / 0.25), class 3 no modes
    return metrics.Palette.from_class_modes(
        {0: np.array([[0.0, 0.0]]), 1: np.array([[50.0, 0.0]]), 2: np.array([[-40.0, 30.0], [20.0, 60.0]])},
        {0: [1.0], 1: [1.0], 2: [0.75, 0.25]}, num_classes=4)


def test_palette_confusion_assigns_each_pixel_to_the_nearest_mode_of_all_classes():
    palette = _toy_palette()
    labels = np.array([[1, 1, 2, 2, 0], [255, 3, 2, 1, 2]])
    predicted = np.zeros((2, 5, 2))
    predicted[0, 0] = [45, 5]  # class 1 near its own mode: right
    predicted[0, 1] = [-35, 25]  # class 1 painted like class 2: wrong, column 2
    predicted[0, 2] = [18, 58]  # class 2 on its second mode: right
    predicted[0, 3] = [3, 2]  # class 2 painted gray: lands on class 0's mode, wrong
    predicted[0, 4] = [50, 0]  # achromatic class 0: not scored
    predicted[1, 2] = [40, 10]  # class 2 near class 1's mode: wrong
    predicted[1, 3] = [60, -10]  # class 1: right
    predicted[1, 4] = [-40, 31]  # class 2: right
    confusion = metrics.palette_confusion(predicted, labels, palette)
    assert confusion.shape == (4, 4) and confusion.sum() == 7  # 255, class 3 (no modes), class 0 not scored
    assert confusion[1].tolist() == [0, 2, 1, 0] and confusion[2].tolist() == [1, 1, 2, 0]
    assert confusion[0].sum() == confusion[3].sum() == 0
    assert metrics.palette_accuracy(confusion) == pytest.approx(4 / 7)
    per_class = metrics.per_class_palette_accuracy(confusion)
    assert per_class[1] == pytest.approx(2 / 3) and per_class[2] == pytest.approx(0.5) and np.isnan(per_class[0])
    assert np.isnan(metrics.palette_accuracy(np.zeros((4, 4))))


@pytest.mark.slow
def test_a_constant_color_cannot_score_more_than_one_class_share_on_the_world():
    """On generated world images: the real colors score >= 0.99; every constant ab (a 5-unit grid over
    [-60, 60]^2 and every mode of the world) scores at most the largest chromatic class's pixel share (< 0.4), which is what the best
    constant reaches; gray scores 0 (it is the stone's mode). A metric that counted "near any mode of the
    pixel's class" with a loose threshold would let a constant between close modes score far more."""
    from semcolor.sources.synthetic import WorldConfig, class_spec, palette_of, render_image

    config = WorldConfig(seed=5, image_size=64)
    palette = palette_of(class_spec(config))
    images = [render_image(config, "val", i) for i in range(12)]
    ab = np.stack([w.lab[..., 1:] for w in images])
    labels = np.stack([w.label for w in images])
    assert metrics.palette_accuracy(metrics.palette_confusion(ab, labels, palette)) >= 0.99
    scored = labels[np.isin(labels, palette.chromatic_classes)]
    largest_share = np.bincount(scored).max() / scored.size
    grid = np.arange(-60.0, 61.0, 5.0)
    constants = [(a, b) for a in grid for b in grid] + [tuple(mode) for mode in palette.modes]
    best = max(
        metrics.palette_accuracy(metrics.palette_confusion(np.broadcast_to(c, ab.shape), labels, palette))
        for c in constants
    )
    assert best == pytest.approx(largest_share) and best < 0.4
    gray = metrics.palette_confusion(np.zeros_like(ab), labels, palette)
    assert metrics.palette_accuracy(gray) == 0.0


def test_palette_from_class_modes_checks_its_inputs():
    palette = _toy_palette()
    assert palette.chromatic_classes == [1, 2] and palette.multimodal_classes == [2]
    assert palette.modes_of(2).tolist() == [2, 3] and palette.mode_probability.tolist() == [1, 1, 0.75, 0.25]
    assert palette.nearest_mode(np.array([[19.0, 59.0], [1.0, 1.0]])).tolist() == [3, 0]
    with pytest.raises(ValueError, match="one value per mode"):
        metrics.Palette.from_class_modes({1: np.array([[1.0, 2.0]])}, {1: [0.5, 0.5]})
    with pytest.raises(ValueError, match="num_classes is 2"):
        metrics.Palette.from_class_modes({3: np.array([[1.0, 2.0]])}, num_classes=2)


def test_region_mode_counts_and_total_variation_against_the_true_probabilities():
    """Two regions of the two-mode class (the 255 band splits them), 4 samples each: counted per region
    by its median color; a sampler matching p (0.75 / 0.25) has TV 0, a single-mode one 0.25, one that
    paints another class's color is counted under "other"."""
    palette = _toy_palette()
    labels = np.full((12, 12), 1, np.int64)
    labels[:5, :5] = 2
    labels[7:, 7:] = 2
    labels[5:7, :] = 255
    first, second = np.zeros((12, 12, 2)), np.zeros((12, 12, 2))
    first[...] = [-40, 30]  # both regions on mode 0
    second[...] = [-40, 30]
    second[7:, 7:] = [20, 60]  # the second region on mode 1 in this sample
    counts = metrics.region_mode_counts([first, first, first, second], labels, palette)
    assert list(counts) == [2] and counts[2].tolist() == [7, 1, 0]
    assert metrics.mode_total_variation(counts, palette) == pytest.approx(0.5 * (abs(7 / 8 - 0.75) + abs(1 / 8 - 0.25)))
    matching = {2: np.array([6, 2, 0])}
    assert metrics.mode_total_variation(matching, palette) == pytest.approx(0.0)
    off = np.zeros((12, 12, 2)) + [50, 0]  # class 1's color everywhere
    assert metrics.region_mode_counts([off], labels, palette)[2].tolist() == [0, 0, 2]
    assert metrics.mode_total_variation({2: np.array([0, 0, 2])}, palette) == pytest.approx(1.0)
    assert metrics.single_mode_total_variation([2], palette) == pytest.approx(0.25)
    small = np.full((12, 12), 1, np.int64)
    small[0, 0] = 2  # a 1-pixel region is too small to measure
    assert metrics.region_mode_counts([first], small, palette) == {}
    assert np.isnan(metrics.mode_total_variation({}, palette))


def test_auc_histogram_path_equals_the_sorting_path():
    """Integer thresholds take an O(n) cumulative histogram; thresholds a hair below the integers take the
    sort. On continuous random errors (none within 1e-9 of an integer) both give the same AuC."""
    prediction, target = RNG.normal(0, 40, (5000, 2)), RNG.normal(0, 40, (5000, 2))
    weights = RNG.random(5000) + 0.1
    thresholds = np.arange(0, 151, dtype=np.float64)
    for w in (None, weights):
        fast = metrics.ab_error_auc(prediction, target, w, thresholds)
        sorted_path = metrics.ab_error_auc(prediction, target, w, thresholds - 1e-9)
        assert fast == pytest.approx(sorted_path, abs=1e-12)
