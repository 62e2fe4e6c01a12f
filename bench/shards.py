"""Shard conversion speed against the JPEG decode floor, on the same JPEGs, in one run.

    python bench/shards.py [--images DIR] [--count 200] [--size 128] [--rounds 3] [--workers N]

Builds a tree in the real VOC2012 layout (JPEGs + palette label PNGs + split list) in a temporary
directory, from ``--images DIR`` (its *.jpg, with generated labels) or from ``--count`` generated
500x375 JPEGs (quality 90, seeded: smooth gradients and blobs plus sensor-like noise, not flat colors).
Then it measures, best of ``--rounds`` interleaved rounds:

- ``decode_ips``: PIL decode only, one core: ``Image.open(p).convert("RGB")`` + ``load()``;
- ``convert_ips_per_core``: ``semcolor.data.shards.convert_item`` through the ``voc2012`` source (its
  ``load_resized``: JPEG draft decode and resize, label decode, checks, nearest resize; then Lab, the .npy
  and the map's PNG), one core; ``ratio`` = convert rate / decode rate (the aim: >= 0.5), measured with
  the two interleaved image by image in each round (``ratio_rounds``), median over rounds;
  ``ratio_unpaired`` the same from the best whole-pass rates; ``ratio_vs_draft`` = convert / draft-mode
  decode alone (the floor of this design).
  Lab codes come from the table of all colors (``semcolor.color.prepare_lab8_lookup``), as in a process
  that has converted more than 2^24 pixels (dataset scale); ``ratio_computed`` is the same pairing with
  every pixel computed (a process's first 2^24 pixels: the path before the table), ``lab_table_build_s``
  the table's one-off CPU cost, and ``ratio_amortized_10k`` the ratio of a process that converts 10,000
  images from its start (computed, then the build, then looked up), from these measured figures;
  These one-core rates are images per CPU second of this process (``time.process_time``), so that other
  jobs on a shared machine disturb them little;
- ``scaling``: wall-clock rate of ``convert_split`` on a warm pool of ``--workers`` processes (default
  all cores) over the same in this one process (both write the shards). Only meaningful on an otherwise
  idle machine: ``load_average_1min`` is printed beside it;
plus a per-stage breakdown (ms per image), and the Lab member's encode time and size per encoding
(``lab_encodings``: the format-2 .npy against format 1's PNG at several zlib levels).
The last line printed is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image

from semcolor import color
from semcolor.color import prepare_lab8_lookup, rgb8_to_lab8, rgb8_to_lab8_planar
from semcolor.data.shard_format import MANIFEST_FORMAT, PNG_COMPRESS_LEVEL, encode_npy, encode_png
from semcolor.data.shards import convert_item, convert_items, convert_split, process_pool, resize_sample
from semcolor.data.sources.labels import invalid_label_values, read_palette_indices, read_rgb_image_resized, resize_label
from semcolor.data.sources import get_source
from semcolor.data.sources.base import Item, Source

WIDTH, HEIGHT = 500, 375


def natural_image(rng: np.random.Generator, width: int = WIDTH, height: int = HEIGHT) -> np.ndarray:
    """uint8 (H, W, 3): a sky-to-ground gradient, a few soft colored blobs, fine texture and noise."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    top, bottom = rng.uniform(40, 230, 3), rng.uniform(20, 200, 3)
    image = top + (bottom - top) * (y / height)[..., None]
    for _ in range(int(rng.integers(3, 7))):
        cx, cy = rng.uniform(0, width), rng.uniform(0, height)
        radius = rng.uniform(20, 150)
        weight = np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * radius**2))[..., None]
        image = image * (1 - weight) + rng.uniform(0, 255, 3) * weight
    frequency = rng.uniform(0.05, 0.3, 2)
    image += 12 * (np.sin(x * frequency[0]) * np.sin(y * frequency[1]))[..., None]
    image += rng.normal(0, 5, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8)


def blocky_label(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """uint8 (H, W): a few rectangles of classes 1-20 with a 2-pixel 255 band, as VOC labels look."""
    label = np.zeros((height, width), np.uint8)
    for _ in range(3):
        x0, y0 = int(rng.integers(0, width // 2)), int(rng.integers(0, height // 2))
        x1, y1 = int(rng.integers(x0 + 8, width + 1)), int(rng.integers(y0 + 8, height + 1))
        label[y0:y1, x0:x1] = 255
        label[y0 + 2 : y1 - 2, x0 + 2 : x1 - 2] = int(rng.integers(1, 21))
    return label


def build_voc_tree(root: Path, images: Path | None, count: int, seed: int) -> Path:
    """``root`` in the VOC2012 layout (the ``voc2012`` source reads it); returns ``root``."""
    devkit = root / "VOCdevkit" / "VOC2012"
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (devkit / sub).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    ids = []
    sources = sorted(images.glob("*.jpg"))[:count] if images is not None else [None] * count
    for index, path in enumerate(sources):
        image_id = f"bench_{index:06d}"
        target = devkit / "JPEGImages" / f"{image_id}.jpg"
        if path is None:
            Image.fromarray(natural_image(rng)).save(target, quality=90)
        else:
            shutil.copyfile(path, target)
        with Image.open(target) as image:
            width, height = image.size
        palette_label = Image.fromarray(blocky_label(rng, width, height), mode="P")
        palette_label.putpalette([0, 0, 0] + [128, 64, 0] * 255)
        palette_label.save(devkit / "SegmentationClass" / f"{image_id}.png")
        ids.append(image_id)
    if not ids:
        raise SystemExit(f"no *.jpg found in {images}")
    (devkit / "ImageSets/Segmentation/train.txt").write_text("\n".join(ids) + "\n")
    return root


def _pil_indices(path: Path) -> np.ndarray:
    """A label PNG's palette indices as PIL reads them (the reader before png_indices)."""
    with Image.open(path) as image:
        return np.array(image)


def per_second(count: int, action: Callable[[], object]) -> float:
    """``count`` divided by the wall time of ``action()``."""
    start = time.perf_counter()
    action()
    return count / (time.perf_counter() - start)


def per_cpu_second(count: int, action: Callable[[], object]) -> float:
    """``count`` divided by the CPU time this process spent in ``action()``: a one-core rate that other
    load on a shared machine disturbs far less than wall time does."""
    start = time.process_time()
    action()
    return count / (time.process_time() - start)


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds consumed so far by the processes ``pids`` (Linux /proc; 0 elsewhere)."""
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime
    return total


def decode_all(paths: list[str], draft: int | None = None) -> None:
    for path in paths:
        with Image.open(path) as image:
            if draft is not None:
                image.draft("RGB", (draft, draft))
            image.convert("RGB").load()


def paired_seconds(source: Source, items: list[Item], size: int) -> tuple[float, float, float]:
    """CPU seconds of full decode, draft decode and convert_item over every item, the three interleaved
    image by image (each on a different image, so none warms the caches for another): the three see the
    same machine state, which on a shared machine matters more than anything else."""
    count = len(items)
    spent = [0.0, 0.0, 0.0]
    for index in range(count):
        for slot, offset in enumerate((0, count // 3, 2 * count // 3)):
            item = items[(index + offset) % count]
            start = time.process_time()
            if slot == 0:
                decode_all([item.paths[0]])
            elif slot == 1:
                decode_all([item.paths[0]], size)
            else:
                convert_item(source, item, size)
            spent[slot] += time.process_time() - start
    return spent[0], spent[1], spent[2]


@contextmanager
def computed_lab() -> Iterator[None]:
    """This process converts every pixel through the computed path while inside (its table, if built, is
    set aside and restored afterwards)."""
    table, after = color._lab8_of_color, color._LOOKUP_AFTER_PIXELS
    color._lab8_of_color, color._LOOKUP_AFTER_PIXELS = None, 1 << 62
    try:
        yield
    finally:
        color._lab8_of_color, color._LOOKUP_AFTER_PIXELS = table, after


def convert_all(source: Source, items: list[Item], size: int) -> None:
    for item in items:
        convert_item(source, item, size)


def stage_breakdown(source: Source, items: list[Item], size: int) -> dict[str, float]:
    """Milliseconds per image of each stage of ``convert_item`` (and the old full-decode path), one core."""
    paths = [item.paths[0] for item in items]
    label_paths = [item.paths[1] for item in items]
    samples = [source.load(item) for item in items]
    resized = [read_rgb_image_resized(path, size)[0] for path in paths]
    labels = [read_palette_indices(path) for path in label_paths]
    planes = [rgb8_to_lab8_planar(image) for image in resized]
    small_labels = [resize_label(label, size) for label in labels]

    def timed(action: Callable[[], object]) -> float:
        start = time.process_time()
        action()
        return 1000 * (time.process_time() - start) / len(items)

    def computed(action: Callable[[], object]) -> float:
        with computed_lab():
            return timed(action)

    breakdown = {
        "decode_jpeg": timed(lambda: decode_all(paths)),
        "decode_jpeg_draft": timed(lambda: decode_all(paths, size)),
        "image_draft_decode_and_resize": timed(lambda: [read_rgb_image_resized(path, size) for path in paths]),
        "label_decode": timed(lambda: [read_palette_indices(path) for path in label_paths]),
        "label_decode_pil": timed(lambda: [_pil_indices(path) for path in label_paths]),  # the old path
        "label_checks": timed(lambda: [invalid_label_values(label, source.num_classes, 255) for label in labels]),
        "label_resize": timed(lambda: [resize_label(label, size) for label in labels]),
        "rgb8_to_lab8_planar": timed(lambda: [rgb8_to_lab8_planar(image) for image in resized]),
        "rgb8_to_lab8_planar_computed": computed(lambda: [rgb8_to_lab8_planar(image) for image in resized]),
        "encode_lab_npy": timed(lambda: [encode_npy(p) for p in planes]),
        "encode_seg_png": timed(lambda: [encode_png(label, row_filter="none") for label in small_labels]),
        "source_load_resized": timed(lambda: [source.load_resized(item, size) for item in items]),
        "convert_item": timed(lambda: convert_all(source, items, size)),
        # the format-1 path, for comparison: full decode, resize from full size
        "source_load_full": timed(lambda: [source.load(item) for item in items]),
        "resize_full": timed(lambda: [resize_sample(s.image, s.label, size) for s in samples]),
    }
    return {name: round(value, 3) for name, value in breakdown.items()}


def lab_encodings(source: Source, items: list[Item], size: int) -> dict[str, dict[str, float]]:
    """Lab member encode time (ms/image) and size (KiB/image): the format-2 .npy, and format 1's PNG with
    this module's encoder and with PIL's (adaptive per-row filter) per zlib level."""
    rgbs = [read_rgb_image_resized(item.paths[0], size)[0] for item in items]
    labs = [rgb8_to_lab8(image) for image in rgbs]
    planes = [rgb8_to_lab8_planar(image) for image in rgbs]

    def pil_png(lab: np.ndarray, level: int) -> bytes:
        buffer = io.BytesIO()
        Image.fromarray(lab, mode="RGB").save(buffer, format="PNG", compress_level=level)
        return buffer.getvalue()

    def measure(encode: Callable[[np.ndarray], bytes], arrays: list[np.ndarray]) -> dict[str, float]:
        start = time.process_time()
        total = sum(len(encode(array)) for array in arrays)
        elapsed = time.process_time() - start
        return {"ms": round(1000 * elapsed / len(arrays), 3), "kib": round(total / len(arrays) / 1024, 1)}

    table = {"npy": measure(encode_npy, planes)}
    for level in (0, 1, 3, 6, 9):
        table[f"png_semcolor_{level}"] = measure(lambda lab: encode_png(lab, level), labs)
        table[f"png_pil_{level}"] = measure(lambda lab: pil_png(lab, level), labs)
    return table


def main(argv: list[str] | None = None) -> dict[str, object]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=Path, help="a folder of *.jpg to use instead of generated ones")
    parser.add_argument("--count", type=int, default=200, help="images to generate or take (default 200)")
    parser.add_argument("--size", type=int, default=128, help="stored side in pixels (default 128)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; the best is kept")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="processes (all cores)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="bench-shards-") as temporary:
        root = build_voc_tree(Path(temporary) / "voc2012", args.images, args.count, args.seed)
        source = get_source("voc2012", root)
        items = source.list_items("train")
        paths = [item.paths[0] for item in items]
        out_dir = Path(temporary) / "shards"

        def split_with(**options: object) -> None:
            convert_split(source, "train", args.size, out_dir, progress=False, chunk_size=8, **options)

        def fresh_out_dir() -> None:
            # as convert_source clears its outputs first: renaming a shard over last round's file costs
            # ~10 ms of unlinking, which is not conversion
            shutil.rmtree(out_dir, ignore_errors=True)

        build_start = time.process_time()
        prepare_lab8_lookup()
        lab_table_build_s = time.process_time() - build_start
        started = time.perf_counter()
        pool = process_pool(args.workers, initializer=prepare_lab8_lookup)  # workers hold the Lab table
        # warm: every worker started and holding its imports before anything is timed
        warm = [pool.submit(convert_items, source, items[:1], args.size) for _ in range(args.workers)]
        [future.result() for future in warm]
        pool_start_s = time.perf_counter() - started

        worker_pids = list(pool._processes)  # private, but the only handle on the workers' CPU time
        decode, decode_draft, convert, serial, parallel, serial_cpu, parallel_cpu = ([] for _ in range(7))
        paired, paired_computed = [], []
        try:
            for _ in range(args.rounds):
                paired.append(paired_seconds(source, items, args.size))
                with computed_lab():
                    paired_computed.append(paired_seconds(source, items, args.size))
                decode.append(per_cpu_second(len(items), lambda: decode_all(paths)))
                decode_draft.append(per_cpu_second(len(items), lambda: decode_all(paths, args.size)))
                convert.append(per_cpu_second(len(items), lambda: convert_all(source, items, args.size)))
                fresh_out_dir()
                cpu_before = time.process_time()
                serial.append(per_second(len(items), lambda: split_with(workers=1)))
                serial_cpu.append(time.process_time() - cpu_before)
                fresh_out_dir()
                cpu_before = time.process_time() + cpu_seconds(worker_pids)
                parallel.append(
                    per_second(len(items), lambda: split_with(workers=args.workers, executor=pool))
                )
                parallel_cpu.append(time.process_time() + cpu_seconds(worker_pids) - cpu_before)
        finally:
            pool.shutdown()
        breakdown = stage_breakdown(source, items, args.size)
        levels = lab_encodings(source, items[:50], args.size)

    # a process converting 10,000 images from its start: the first ceil(2^24 / pixels) computed, then the
    # table's build, then the rest looked up (per-image CPU seconds from the paired runs, medians)
    images_before_table = -(-(1 << 24) // (args.size * args.size))
    decode_s, looked_up_s, computed_s = (float(np.median(values)) / len(items) for values in (
        [d for d, _, _ in paired], [c for _, _, c in paired], [c for _, _, c in paired_computed]))
    amortized_s = (min(images_before_table, 10_000) * computed_s + lab_table_build_s
                   + max(0, 10_000 - images_before_table) * looked_up_s) / 10_000
    figures: dict[str, object] = {
        "images": len(items),
        "size": args.size,
        "workers": args.workers,
        "decode_ips": round(max(decode), 1),
        "decode_draft_ips": round(max(decode_draft), 1),
        "convert_ips_per_core": round(max(convert), 1),
        # convert / decode rate, paired image by image, median over rounds (the aim: >= 0.5)
        "ratio": round(float(np.median([d / c for d, _, c in paired])), 3),
        "ratio_rounds": [round(d / c, 3) for d, _, c in paired],
        "ratio_vs_draft": round(float(np.median([d / c for _, d, c in paired])), 3),
        "ratio_computed": round(float(np.median([d / c for d, _, c in paired_computed])), 3),
        "ratio_computed_rounds": [round(d / c, 3) for d, _, c in paired_computed],
        "lab_table_build_s": round(lab_table_build_s, 3),
        "ratio_amortized_10k": round(decode_s / amortized_s, 3),
        # the same from the best whole-pass rates of each (the measure before pairing)
        "ratio_unpaired": round(max(convert) / max(decode), 3),
        "split_ips_one_process": round(max(serial), 1),
        "split_ips_all_workers": round(max(parallel), 1),
        "scaling": round(max(parallel) / max(serial), 3),
        # CPU seconds of the whole parallel run (parent + workers) per CPU second of the serial one: the
        # pool's overhead. On idle cores the speed-up would be about workers / this.
        "parallel_cpu_overhead": round(min(parallel_cpu) / min(serial_cpu), 3),
        "scaling_on_idle_cores_estimate": round(args.workers * min(serial_cpu) / min(parallel_cpu), 3),
        "pool_start_s": round(pool_start_s, 2),
        "png_compress_level": PNG_COMPRESS_LEVEL,
        "ms_per_image": breakdown,
        "lab_encodings": levels,
        "format": MANIFEST_FORMAT,
        "load_average_1min": round(os.getloadavg()[0], 2),
    }
    print(f"decode only      {figures['decode_ips']:8.1f} img/s (draft {figures['decode_draft_ips']:.1f})")
    print(f"convert, 1 core  {figures['convert_ips_per_core']:8.1f} img/s  ratio {figures['ratio']:.3f} "
          f"(vs draft decode {figures['ratio_vs_draft']:.3f}); every pixel computed {figures['ratio_computed']:.3f}; "
          f"table build {figures['lab_table_build_s']:.2f} s, 10,000 images from the start "
          f"{figures['ratio_amortized_10k']:.3f}")
    print(
        f"convert_split    {figures['split_ips_one_process']:8.1f} img/s in 1 process, "
        f"{figures['split_ips_all_workers']:.1f} img/s on {args.workers}: scaling {figures['scaling']:.3f} "
        f"(load average {figures['load_average_1min']}; CPU overhead of the pool "
        f"{figures['parallel_cpu_overhead']:.3f}x, so about {figures['scaling_on_idle_cores_estimate']:.2f}x "
        "on idle cores)"
    )
    print("ms per image:", ", ".join(f"{k} {v}" for k, v in breakdown.items()))
    print(json.dumps(figures, sort_keys=True))
    return figures


if __name__ == "__main__":
    main(sys.argv[1:])
