"""The ``semcolor`` command: one argparse subcommand per job.

Each subcommand is one ``add_<name>_parser(subparsers)`` function that builds its parser and sets
``handler`` (a function ``args -> exit status``); ``COMMANDS`` lists them, so adding a subcommand is one
function and one table entry. Exit status: 0 success, 1 some inputs failed, 2 usage or setup error.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

DEFAULT_DEVICE = "cpu"


# ------------------------------------------------------------------------------------------ colorize


def add_colorize_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    from semcolor.photo_io import DEFAULT_MAX_PIXELS

    parser = subparsers.add_parser(
        "colorize",
        help="colorize photos (files or folders) with a trained model",
        description=(
            "Colorize photos at their own resolution and lightness. Writes <stem>_color.png (or "
            "<stem>_color_s<i>.png for --samples > 1) and, with --save-map, <stem>_map.png into --out, "
            "mirroring the sub-folders of a folder input. A failed photo is reported and the rest continue; "
            "the exit status is 1 when any failed."
        ),
    )
    parser.add_argument("inputs", nargs="+", metavar="INPUT",
                        help="photo files or folders (searched recursively)")
    _add_model_arguments(parser)
    parser.add_argument("--out", required=True, type=Path, help="output folder (created if missing)")
    parser.add_argument("--samples", type=int, default=1, help="PixelCNN models: number of diverse results")
    parser.add_argument("--seed", type=int, default=0, help="PixelCNN models: seed of the first sample")
    parser.add_argument("--temperature", type=float, default=1.0,
                        help="PixelCNN models: sampling temperature")
    parser.add_argument("--semantic-map", type=Path,
                        help="class-index PNG to use instead of the predicted map (one input photo only; "
                        "the photo's size or the model's working size)")
    parser.add_argument("--save-map", action="store_true",
                        help="also write the semantic map as <stem>_map.png (palette PNG of class indices)")
    parser.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS,
                        help="refuse photos with more pixels (decompression bombs; "
                        f"default {DEFAULT_MAX_PIXELS})")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(handler=run_colorize)
    return parser


def _add_model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True,
                        help="checkpoint file, models:/name@alias, runs:/<id>/model, a run id "
                        "or an MLflow model folder")
    parser.add_argument("--segmenter", help="GridNet for sdc models' semantic maps (default: the one bundled "
                        "in the MLflow model, if any)")
    parser.add_argument("--device", default=DEFAULT_DEVICE, help="torch device (cpu, cuda, cuda:1, ...)")


def output_paths(out_dir: Path, relative_dir: Path, stem: str, samples: int) -> tuple[list[Path], Path]:
    """The colorized image paths (one per sample) and the map path for a photo."""
    folder = out_dir / relative_dir
    if samples == 1:
        images = [folder / f"{stem}_color.png"]
    else:
        images = [folder / f"{stem}_color_s{i}.png" for i in range(samples)]
    return images, folder / f"{stem}_map.png"


def run_colorize(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from semcolor.inference import load_colorizer, map_palette
    from semcolor.photo_io import PhotoError, find_photos, read_label_map, read_photo, write_image_atomic

    if args.samples < 1:
        return _usage_error(f"--samples must be >= 1, got {args.samples}")
    if args.max_pixels < 1:
        return _usage_error(f"--max-pixels must be >= 1, got {args.max_pixels}")
    try:
        photos = find_photos(args.inputs, exclude=[args.out])
    except PhotoError as error:
        return _usage_error(str(error))
    if not photos:
        return _usage_error(f"no photos found in {' '.join(map(str, args.inputs))}")
    if args.semantic_map is not None and len(photos) != 1:
        return _usage_error(f"--semantic-map applies to one photo; {len(photos)} were given")
    try:
        colorizer = load_colorizer(args.model, args.segmenter, device=args.device)
        if args.samples > 1 and not colorizer.supports_samples:
            return _usage_error(f"{colorizer.model_name} is deterministic: "
                                "--samples needs a PixelCNN model (psc_*)")
        semantic_map = None
        if args.semantic_map is not None:
            if not colorizer.takes_semantic_map:
                return _usage_error(f"{colorizer.model_name} does not take a semantic map (--semantic-map)")
            semantic_map = read_label_map(args.semantic_map, args.max_pixels)
    except PhotoError as error:  # the --semantic-map file
        return _usage_error(str(error))
    except (OSError, ValueError, KeyError) as error:
        return _usage_error(f"cannot load the model: {error}")

    inputs = {path.resolve() for path, _ in photos}
    claimed: dict[Path, Path] = {}  # output -> the photo that writes it, to catch two photos with one name
    failures: list[str] = []
    written = 0
    bar = tqdm(photos, desc="colorize", unit="photo", disable=args.no_progress, file=sys.stderr)
    for path, relative_dir in bar:
        bar.set_postfix_str(path.name, refresh=False)
        try:
            images, map_path = output_paths(args.out, relative_dir, path.stem, args.samples)
            for target in [*images, map_path]:
                owner = claimed.setdefault(target.resolve(), path)
                if owner != path:
                    raise PhotoError(path, f"its output {target} is also the output of {owner}; rename one")
            photo = read_photo(path, args.max_pixels)
            result = colorizer.colorize(photo.lightness, semantic_map=semantic_map, samples=args.samples,
                                        seed=args.seed, temperature=args.temperature)
            for target, image in zip(images, result.images):
                write_image_atomic(target, image, protected=inputs)
            if args.save_map and result.semantic_map is not None:
                write_image_atomic(map_path, result.semantic_map, protected=inputs, palette=map_palette())
            written += 1
        except PhotoError as error:
            failures.append(str(error))
            tqdm.write(f"FAILED {error}", file=sys.stderr)
        except (OSError, ValueError, RuntimeError, MemoryError) as error:
            failures.append(f"{path}: {error}")
            tqdm.write(f"FAILED {path}: {type(error).__name__}: {error}", file=sys.stderr)
    bar.close()
    print(f"colorized {written} of {len(photos)} photos into {args.out}"
          + (f"; {len(failures)} failed" if failures else ""), file=sys.stderr)
    return 1 if failures else 0


# ------------------------------------------------------------------------------------------ edit


def add_edit_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    from semcolor.photo_io import DEFAULT_MAX_PIXELS

    parser = subparsers.add_parser(
        "edit",
        help="the semantic editor: correct the semantic map in the browser, the colors follow",
        description="Serve the semantic editor on this machine and open it in the browser.",
    )
    parser.add_argument("photos", metavar="PHOTO_OR_DIR", help="one photo or a folder of photos")
    _add_model_arguments(parser)
    parser.add_argument("--out", type=Path, default=Path("semcolor-edits"),
                        help="where Save writes <stem>_color.png and <stem>_map.png "
                        "(default ./semcolor-edits)")
    parser.add_argument("--host", default="127.0.0.1", help="address to serve on (default loopback only)")
    parser.add_argument("--port", type=int, default=0, help="port (0: any free port)")
    parser.add_argument("--allow-remote", action="store_true", help="permit a non-loopback --host")
    parser.add_argument("--no-browser", action="store_true", help="do not open a browser")
    parser.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS, help="refuse larger photos")
    parser.set_defaults(handler=run_edit)
    return parser


def run_edit(args: argparse.Namespace) -> int:
    from semcolor.editor.server import EditorError, serve

    try:
        return serve(
            photos=args.photos, model_ref=args.model, segmenter_ref=args.segmenter, device=args.device,
            out_dir=args.out, host=args.host, port=args.port, allow_remote=args.allow_remote,
            open_browser=not args.no_browser, max_pixels=args.max_pixels,
        )
    except EditorError as error:
        return _usage_error(str(error))


# ------------------------------------------------------------------------------------------ main

def add_compare_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    from semcolor.compare import add_compare_parser as add

    return add(subparsers)


def add_promote_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    from semcolor.registry import add_promote_parser as add

    return add(subparsers)


COMMANDS: dict[str, Callable[[argparse._SubParsersAction], argparse.ArgumentParser]] = {
    "colorize": add_colorize_parser,
    "edit": add_edit_parser,
    "compare": add_compare_parser,
    "promote": add_promote_parser,
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="semcolor", description="Semantic-guided image colorization.")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add_parser in COMMANDS.values():
        add_parser(subparsers)
    return parser


def _usage_error(message: str) -> int:
    print(f"semcolor: error: {message}", file=sys.stderr)
    return 2


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``semcolor`` console script; returns the exit status."""
    args = build_parser().parse_args(argv)
    return int(args.handler(args))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
