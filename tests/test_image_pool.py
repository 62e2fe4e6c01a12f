"""The threaded measures give the bits of one call over the whole array, in order."""

import numpy as np
import pytest
import torch

from semcolor.color import lab_to_srgb
from semcolor.evaluation import image_pool, metrics
from semcolor.evaluation.measures import lab_to_rgb8


@pytest.fixture
def two_threads(monkeypatch):
    """Two workers and pieces of 4 images, so every call below is split (37 images: 10 pieces)."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    monkeypatch.setattr(image_pool, "CHUNK_IMAGES", 4)
    yield
    torch.set_num_threads(before)


def test_the_work_is_split_over_threads(two_threads):
    import threading

    seen: list[tuple[int, str]] = []

    def record(lab: np.ndarray) -> np.ndarray:
        seen.append((len(lab), threading.current_thread().name))
        return lab

    image_pool.per_pixel(record, _lab(0))
    assert sorted(n for n, _ in seen) == [1] + [4] * 9
    assert all(name.startswith("semcolor-measures") for _, name in seen)


def _lab(seed: int, count: int = 37, size: int = 24) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.stack([rng.uniform(0, 100, (count, size, size)), rng.uniform(-90, 90, (count, size, size)),
                     rng.uniform(-110, 110, (count, size, size))], axis=-1)


def test_per_pixel_measures_equal_one_call(two_threads):
    lab, other = _lab(0), _lab(1)  # 37 images: two whole chunks and a partial one
    assert np.array_equal(lab_to_rgb8(lab), np.round(lab_to_srgb(lab) * 255.0).astype(np.uint8))
    assert np.array_equal(image_pool.per_pixel(metrics.ciede2000, lab, other), metrics.ciede2000(lab, other))


def test_map_images_keeps_the_order(two_threads):
    rgb, other = lab_to_rgb8(_lab(0)), lab_to_rgb8(_lab(1))
    assert image_pool.map_images(metrics.ssim, rgb, other) == [metrics.ssim(a, b) for a, b in zip(rgb, other)]
    assert image_pool.map_images(lambda image: int(image[0, 0, 0]), rgb) == [int(image[0, 0, 0]) for image in rgb]


def test_summed_counts_equal_one_call_and_refuse_floats(two_threads):
    labels = np.random.default_rng(2).integers(0, 5, (37, 8, 8))

    def histogram(seg: np.ndarray) -> np.ndarray:
        return np.bincount(seg.reshape(-1), minlength=5)

    assert np.array_equal(image_pool.summed(histogram, labels), histogram(labels))
    with pytest.raises(TypeError, match="integer counts"):
        image_pool.summed(lambda seg: histogram(seg).astype(float), labels)


def test_arrays_of_different_lengths_are_refused(two_threads):
    with pytest.raises(ValueError, match="first axis"):
        image_pool.per_pixel(metrics.ciede2000, _lab(0, count=20), _lab(1, count=19))
