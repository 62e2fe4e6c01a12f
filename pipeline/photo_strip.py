"""DVC stage `photos`: real photos colorized by the demo U-Net, and a before/after strip for the report.

    python -m pipeline.photo_strip                     # the stage: params.yaml `photos`
    python -m pipeline.photo_strip --only-strip PHOTOS_DIR COLORIZED_DIR OUT.png   # a strip of done work

The stage runs `semcolor colorize <photos.dir> --model ... --segmenter ... --out reports/photos --save-map`
(the command of the README) and writes ``reports/photos_strip.png``: row 1 the photos in gray, row 2 their
colorizations (at most ``photos.count``, ``photos.height`` px high). When ``photos.dir`` does not exist
(a clone without ``../shared``), the strip is a one-line image saying so, and the pipeline goes on.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from semcolor.config import ConfigError
from semcolor.app.photo_io import find_photos, write_image_atomic

COLORIZED_DIR = Path("reports/photos")
STRIP = Path("reports/photos_strip.png")
NO_PHOTOS_NOTE = "NO_PHOTOS.txt"


@dataclass(frozen=True)
class PhotosConfig:
    """params.yaml `photos`."""

    dir: str = "../shared/photos"  # a folder of photos (searched recursively)
    model: str = "models/sdc_paper.pt"
    segmenter: str = "models/gridnet_gray.pt"
    count: int = 6  # photos in the strip
    height: int = 160  # px, of each row of the strip

    def __post_init__(self):
        if self.count < 1 or self.height < 8:
            raise ValueError(f"count must be >= 1 and height >= 8, got {self.count} and {self.height}")


def strip(pairs: list[tuple[Path, Path]], height: int) -> np.ndarray:
    rows: list[list[np.ndarray]] = [[], []]
    for original, colorized in pairs:
        gray = Image.open(original).convert("L").convert("RGB")
        color = Image.open(colorized).convert("RGB")
        width = max(1, round(gray.width * height / gray.height))
        rows[0].append(np.asarray(gray.resize((width, height), Image.Resampling.LANCZOS)))
        rows[1].append(np.asarray(color.resize((width, height), Image.Resampling.LANCZOS)))
    gap = np.full((height, 4, 3), 255, np.uint8)
    lines = [np.concatenate([part for tile in row for part in (tile, gap)][:-1], axis=1) for row in rows]
    return np.concatenate([lines[0], np.full((4, lines[0].shape[1], 3), 255, np.uint8), lines[1]], axis=0)


def note_image(text: str, width: int = 640, height: int = 40) -> np.ndarray:
    """A white image with one line of ``text`` (the strip when there are no photos)."""
    image = Image.new("RGB", (width, height), (255, 255, 255))
    try:
        font = ImageFont.load_default(size=14)
    except (TypeError, OSError):
        font = ImageFont.load_default()
    ImageDraw.Draw(image).text((8, 12), text, fill=(0, 0, 0), font=font)
    return np.asarray(image)


def write_strip(photos: Path, colorized: Path, out: Path, height: int, count: int) -> int:
    """The strip of the photos under ``photos`` that have a ``<stem>_color.png`` in ``colorized``; how many."""
    pairs = [(p, colorized / rel / f"{p.stem}_color.png") for p, rel in find_photos([photos])]
    pairs = [pair for pair in pairs if pair[1].is_file()][:count]
    if pairs:
        write_image_atomic(out, strip(pairs, height))
    return len(pairs)


def run(config: PhotosConfig) -> int:
    from semcolor.app.cli import main as semcolor

    photos = Path(config.dir)
    COLORIZED_DIR.mkdir(parents=True, exist_ok=True)
    if not photos.is_dir():
        message = f"no photos: {config.dir} does not exist (params.yaml photos.dir)"
        (COLORIZED_DIR / NO_PHOTOS_NOTE).write_text(message + "\n")
        write_image_atomic(STRIP, note_image(message))
        print(message)
        return 0
    (COLORIZED_DIR / NO_PHOTOS_NOTE).unlink(missing_ok=True)
    status = semcolor(["colorize", str(photos), "--model", config.model, "--segmenter", config.segmenter,
                       "--out", str(COLORIZED_DIR), "--save-map", "--no-progress"])
    if status == 2:
        return 2
    shown = write_strip(photos, COLORIZED_DIR, STRIP, config.height, config.count)
    if not shown:
        print(f"no colorized photos of {photos} in {COLORIZED_DIR}", file=sys.stderr)
        return 1
    print(f"wrote {STRIP} ({shown} photos)")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--only-strip", nargs=3, metavar=("PHOTOS", "COLORIZED", "OUT"), type=Path,
                        help="only assemble the strip of photos colorized before")
    parser.add_argument("--height", type=int, default=PhotosConfig.height, help="with --only-strip")
    parser.add_argument("--count", type=int, default=PhotosConfig.count, help="with --only-strip")
    args = parser.parse_args(argv)
    if args.only_strip:
        photos, colorized, out = args.only_strip
        shown = write_strip(photos, colorized, out, args.height, args.count)
        print(f"wrote {out} ({shown} photos)" if shown else f"no colorized photos of {photos} in {colorized}")
        return 0 if shown else 1
    from pipeline.params import load_section

    try:
        config = load_section(PhotosConfig, "photos", args.params)
    except ConfigError as error:
        print(f"params.yaml: {error}", file=sys.stderr)
        return 2
    return run(config)


if __name__ == "__main__":
    sys.exit(main())
