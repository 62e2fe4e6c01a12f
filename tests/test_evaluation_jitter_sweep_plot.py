"""Claim (c)'s chart: an RGB uint8 image with one line per model, in matplotlib's cycle colors."""

from __future__ import annotations

import numpy as np

from semcolor.evaluation.jitter_sweep_plot import jitter_sweep_plot

FIRST_LINE = (31, 119, 180)  # matplotlib's default cycle: C0, C1
SECOND_LINE = (255, 127, 14)


def pixels_of(image: np.ndarray, color: tuple[int, int, int]) -> int:
    return int(np.all(image == np.array(color, dtype=np.uint8), axis=-1).sum())


def test_one_line_per_model_on_a_500_by_320_rgb_image():
    curve = {"levels": [0.0, 0.5, 1.0], "psnr": [30.0, 25.0, 20.0]}
    one = jitter_sweep_plot({"sdc_paper": curve})
    flatter = {"levels": [0.0, 0.5, 1.0], "psnr": [29.0, 28.0, 27.0]}
    two = jitter_sweep_plot({"sdc_paper": curve, "sdc_no_in": flatter})
    for image in (one, two):
        assert image.shape == (320, 500, 3) and image.dtype == np.uint8
    assert pixels_of(one, FIRST_LINE) > 50 and pixels_of(one, SECOND_LINE) == 0
    assert pixels_of(two, FIRST_LINE) > 50 and pixels_of(two, SECOND_LINE) > 50
