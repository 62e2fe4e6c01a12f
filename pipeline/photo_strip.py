"""A before/after strip of colorized photos: row 1 the photos in gray, row 2 the colorizations.

    python -m pipeline.photo_strip PHOTOS_DIR COLORIZED_DIR OUT.png [--height 160] [--count 6]

Pairs each photo with ``<stem>_color.png`` written by `semcolor colorize`; used by `make demo`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from semcolor.photo_io import find_photos, write_image_atomic


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("photos", type=Path)
    parser.add_argument("colorized", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--height", type=int, default=160)
    parser.add_argument("--count", type=int, default=6)
    args = parser.parse_args(argv)
    pairs = [(p, args.colorized / rel / f"{p.stem}_color.png") for p, rel in find_photos([args.photos])]
    pairs = [pair for pair in pairs if pair[1].is_file()][: args.count]
    if not pairs:
        print(f"no colorized photos of {args.photos} in {args.colorized}", file=sys.stderr)
        return 1
    write_image_atomic(args.out, strip(pairs, args.height))
    print(f"wrote {args.out} ({len(pairs)} photos)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
