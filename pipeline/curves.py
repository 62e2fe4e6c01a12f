"""Training curves as PNG charts, for reading offline (``dvc plots show`` loads Vega from a CDN).

    python -m pipeline.curves plots/train reports/curves      # what the report stage does

One chart per model family (``plots/train/<family>_<variant>.csv``, as the train stage writes them): one
panel per logged quantity (the loss and each of its terms, validation losses when logged), every variant of
the family overlaid. Steps on x; a quantity spanning more than two decades gets a log y axis.
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

from semcolor.app.photo_io import write_image_atomic

NOT_CURVES = {"step", "epoch", "samples_per_second", "grad_norm"}  # logged per step, but not losses
PANEL_INCHES = (3.6, 2.6)
MAX_COLUMNS = 3


def read_curve(path: Path) -> dict[str, list[tuple[int, float]]]:
    """{quantity: [(step, value), ...]} of one CSV (empty and non-finite cells left out)."""
    series: dict[str, list[tuple[int, float]]] = defaultdict(list)
    with path.open(newline="") as stream:
        for row in csv.DictReader(stream):
            step = int(float(row["step"]))
            for name, text in row.items():
                if name in NOT_CURVES or not text:
                    continue
                value = float(text)
                if math.isfinite(value):
                    series[name].append((step, value))
    return dict(series)


def families(plots_dir: Path) -> dict[str, dict[str, Path]]:
    """{family: {variant: csv}} from ``<family>_<variant>.csv`` names."""
    found: dict[str, dict[str, Path]] = defaultdict(dict)
    for path in sorted(Path(plots_dir).glob("*.csv")):
        family, _, variant = path.stem.partition("_")
        found[family][variant or family] = path
    return dict(found)


def render_family(family: str, variants: dict[str, Path]) -> np.ndarray:
    """The family's chart as an RGB uint8 image."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = {variant: read_curve(path) for variant, path in variants.items()}
    quantities = sorted({name for curve in curves.values() for name in curve},
                        key=lambda name: (name != "loss", name))
    if not quantities:
        raise ValueError(f"no curve columns in {sorted(map(str, variants.values()))}")
    columns = min(MAX_COLUMNS, len(quantities))
    rows = math.ceil(len(quantities) / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(PANEL_INCHES[0] * columns, PANEL_INCHES[1] * rows),
                                squeeze=False)
    for axis, quantity in zip(axes.flat, quantities):
        values = []
        for variant, curve in curves.items():
            points = curve.get(quantity)
            if points:
                axis.plot([s for s, _ in points], [v for _, v in points], label=variant, linewidth=1.2)
                values += [v for _, v in points]
        positive = [v for v in values if v > 0]
        if positive and len(positive) == len(values) and max(positive) / min(positive) > 100:
            axis.set_yscale("log")
        axis.set_title(quantity, fontsize=10)
        axis.set_xlabel("step", fontsize=8)
        axis.tick_params(labelsize=7)
        axis.grid(alpha=0.3)
        axis.legend(fontsize=7)
    for axis in list(axes.flat)[len(quantities):]:
        axis.axis("off")
    figure.suptitle(f"{family}: training curves", fontsize=11)
    figure.set_dpi(100)
    figure.tight_layout()
    figure.canvas.draw()
    image = np.asarray(figure.canvas.buffer_rgba())[..., :3].copy()
    plt.close(figure)
    return image


def render_all(plots_dir: str | Path, out_dir: str | Path) -> list[Path]:
    """One ``<family>.png`` per family in ``out_dir``; the paths written."""
    written = []
    for family, variants in families(Path(plots_dir)).items():
        path = Path(out_dir) / f"{family}.png"
        write_image_atomic(path, render_family(family, variants))
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("plots_dir", type=Path, help="folder of <family>_<variant>.csv curves")
    parser.add_argument("out_dir", type=Path)
    args = parser.parse_args(argv)
    for path in render_all(args.plots_dir, args.out_dir):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
