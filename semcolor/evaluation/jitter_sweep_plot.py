"""Claim (c)'s chart: PSNR against the test-time jitter strength, one line per model, as an image.

    image = jitter_sweep_plot(evaluation.details["jitter_sweep"])   # RGB uint8, H x W x 3

Pure: it draws the curves ``semcolor.evaluation.suite`` measured and returns the pixels; the caller
saves them.
"""

from __future__ import annotations

import numpy as np


def jitter_sweep_plot(curves: dict[str, dict[str, list[float]]]) -> np.ndarray:
    """PSNR (dB, true maps) against the jitter strength (0 = none), one line per model: ``curves`` maps a
    model's name to ``{"levels": [...], "psnr": [...]}``. Returns an RGB uint8 image (500 x 320 px)."""
    import matplotlib  # imported on use: matplotlib is slow to import and only the figures need it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(5, 3.2), dpi=100)
    for name, curve in curves.items():
        axis.plot(curve["levels"], curve["psnr"], marker="o", label=name)
    axis.set_xlabel("test-time jitter strength (contrast, brightness, gamma)")
    axis.set_ylabel("PSNR (dB), true maps")
    axis.grid(alpha=0.3)
    axis.legend()
    figure.tight_layout()
    figure.canvas.draw()
    image = np.asarray(figure.canvas.buffer_rgba())[..., :3].copy()
    plt.close(figure)
    return image
