"""The ``semcolor`` command: one argparse subcommand per job.

Each subcommand is one ``add_<name>_parser(subparsers)`` function that builds its parser and sets
``handler`` (a function ``args -> exit status``); ``COMMANDS`` lists them, so adding a subcommand is one
function and one table entry. Exit status: 0 success, 1 some inputs failed, 2 usage or setup error (one
line, ``semcolor: error: ...``, naming the file or option and what to do), 130 interrupted.

Without ``--model``, ``colorize`` and ``edit`` use the ``champion`` of the U-Net family
(``models:/semcolor-sdc-paper@champion``) when the tracking store has one, else the demo's checkpoint
``models/sdc_paper.pt`` with ``models/gridnet_gray.pt`` (what ``make demo`` leaves), and say which.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from semcolor.registry import DEFAULT_MODEL as DEFAULT_REGISTERED_MODEL

DEFAULT_DEVICE = "cpu"
DEFAULT_OUT = Path("colorized")
DEFAULT_CHECKPOINT = Path("models/sdc_paper.pt")
DEFAULT_SEGMENTER = Path("models/gridnet_gray.pt")
# what colorize writes beside a photo's stem: recognised so that --out = the input folder skips them
_OUTPUT_NAME = re.compile(r"^(?P<stem>.+)_(?:color|color_s\d+|map)$")


class UsageError(Exception):
    """A usage or setup error: printed as one line, exit status 2."""


class HelpWithDefaults(argparse.HelpFormatter):
    """Every option's help ends with its default, unless the text already states it."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        trivial = default is None or default is False or default == argparse.SUPPRESS or default == []
        if action.option_strings and not action.required and not trivial and "default" not in text:
            text += " (default: %(default)s)"
        return text


# ------------------------------------------------------------------------------------------ colorize


def add_colorize_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    from semcolor.photo_io import DEFAULT_MAX_PIXELS

    parser = subparsers.add_parser(
        "colorize",
        help="colorize photos (files or folders) with a trained model",
        description=(
            "Colorize photos at their own resolution and lightness. Writes <stem>_color.png (or "
            "<stem>_color_s<i>.png for --samples > 1) and, with --save-map, <stem>_map.png into --out, "
            "mirroring the sub-folders of a folder input. A failed photo is reported and the rest continue. "
            "Exit status: 0 all done, 1 some photos failed, 2 usage or setup error (nothing colorized)."
        ),
    )
    parser.add_argument("inputs", nargs="+", metavar="INPUT",
                        help="photo files or folders (searched recursively for JPEG, PNG, WebP, TIFF, BMP; "
                        "a file named explicitly is tried whatever its extension)")
    _add_model_arguments(parser)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT,
                        help="output folder, created if missing; may be the input folder (earlier results "
                        "in it are skipped)")
    parser.add_argument("--samples", type=int, default=1, help="PixelCNN models: number of diverse results")
    parser.add_argument("--seed", type=int, default=0, help="PixelCNN models: seed of the first sample")
    parser.add_argument("--temperature", type=float, default=1.0,
                        help="PixelCNN models: sampling temperature")
    parser.add_argument("--fast", action="store_true",
                        help="PixelCNN models: one result from the non-autoregressive head (the mixture's "
                        "mean, no sampling: about as fast as the U-Net) instead of sampling")
    parser.add_argument("--semantic-map", type=Path,
                        help="class-index PNG to use instead of the predicted map (one input photo only; "
                        "the photo's size or the model's working size; default: the predicted map)")
    parser.add_argument("--save-map", action="store_true",
                        help="also write the semantic map as <stem>_map.png (palette PNG of class indices)")
    parser.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS,
                        help="refuse photos with more pixels (decompression bombs; "
                        f"default {DEFAULT_MAX_PIXELS})")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(handler=run_colorize)
    return parser


def _add_model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model",
                        help="checkpoint file, models:/name@alias, runs:/<id>/model, a run id or an MLflow "
                        f"model folder (default: models:/{DEFAULT_REGISTERED_MODEL}@champion if the tracking "
                        f"store has it, else {DEFAULT_CHECKPOINT} with {DEFAULT_SEGMENTER}, as make demo "
                        "leaves them)")
    parser.add_argument("--segmenter", help="GridNet for sdc models' semantic maps (default: the one bundled "
                        "in the MLflow model, if any)")
    parser.add_argument("--device", default=DEFAULT_DEVICE, help="torch device (cpu, cuda, cuda:1, ...)")


def default_model(segmenter: str | None) -> tuple[str, str | None, str]:
    """(model reference, segmenter reference, description) when no --model is given: the champion of
    DEFAULT_REGISTERED_MODEL in the tracking store (MLFLOW_TRACKING_URI, else ./mlflow.db when it exists;
    no store is created), else the demo checkpoint pair in ./models. UsageError when neither exists."""
    uri = os.environ.get("MLFLOW_TRACKING_URI") or (
        f"sqlite:///{Path('mlflow.db').resolve()}" if Path("mlflow.db").is_file() else None)
    note = "no tracking store here"
    if uri is not None:
        found, note = _champion(uri)
        if found is not None:
            reference, version = found
            return reference, segmenter, f"{reference} (version {version}, tracking store {uri})"
    if DEFAULT_CHECKPOINT.is_file() and (segmenter is not None or DEFAULT_SEGMENTER.is_file()):
        chosen = segmenter or str(DEFAULT_SEGMENTER)
        return str(DEFAULT_CHECKPOINT), chosen, f"the demo checkpoint {DEFAULT_CHECKPOINT} with {chosen}"
    raise UsageError(
        f"no --model given and no default model here: no models:/{DEFAULT_REGISTERED_MODEL}@champion ({note}) "
        f"and no {DEFAULT_CHECKPOINT} with {DEFAULT_SEGMENTER} in {Path.cwd()}; run make demo in the project "
        "folder, or pass --model")


def _champion(uri: str) -> tuple[tuple[str, str] | None, str]:
    """((models:/ URI, version) or None, why not) for the champion alias of DEFAULT_REGISTERED_MODEL."""
    from semcolor.tracking_server import TrackingUnavailable, check_reachable

    try:
        check_reachable(uri)
    except TrackingUnavailable as error:
        return None, str(error).split(";")[0]
    import mlflow
    from mlflow.exceptions import MlflowException

    try:
        client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
        version = client.get_model_version_by_alias(DEFAULT_REGISTERED_MODEL, "champion")
    except MlflowException:
        return None, f"not in {uri}"
    return (f"models:/{DEFAULT_REGISTERED_MODEL}@champion", str(version.version)), ""


def _choose_model(args: argparse.Namespace) -> None:
    """Fill in args.model (and args.segmenter) from ``default_model`` when --model was not given."""
    if args.model is not None:
        return
    args.model, args.segmenter, description = default_model(args.segmenter)
    print(f"semcolor: model: {description} (no --model given)", file=sys.stderr)


def check_writable_folder(folder: Path, option: str = "--out") -> None:
    """Prove a file can be written in ``folder`` (created later, when the first result is written)."""
    from semcolor.atomic import check_writable_folder as probe

    try:
        probe(folder)
    except OSError as error:
        reason = error.strerror or type(error).__name__
        raise UsageError(f"{option} {folder}: cannot write there ({reason}); choose another folder") from None


def _drop_earlier_outputs(photos: list[tuple[Path, Path]],
                          explicit: set[Path]) -> tuple[list[tuple[Path, Path]], int]:
    """Photos minus files found in a folder that are colorize's own results for another photo of the list
    (<stem>_color.png, <stem>_color_s<i>.png, <stem>_map.png beside <stem>.<ext>), and how many were dropped.
    Files named explicitly (``explicit``, resolved) are always kept."""
    by_folder = {(path.parent, path.stem) for path, _ in photos}
    kept = []
    for path, relative in photos:
        match = _OUTPUT_NAME.match(path.stem)
        if match and (path.parent, match["stem"]) in by_folder and path.resolve() not in explicit:
            continue
        kept.append((path, relative))
    return kept, len(photos) - len(kept)


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
    if args.fast and args.samples > 1:
        return _usage_error("--fast gives one result (the mean), --samples draws several; choose one")
    # the output folder is left out of a folder search only when it lies inside it (a rerun must not colorize
    # its own results); when it is the input folder (or above it), results are recognised by name instead
    out = args.out.resolve()
    inside = any(Path(i).is_dir() and Path(i).resolve() in out.parents for i in args.inputs)
    not_photos: list[Path] = []
    try:
        photos = find_photos(args.inputs, exclude=[args.out] if inside else [], skipped=not_photos)
    except PhotoError as error:
        return _usage_error(str(error))
    explicit = {Path(i).resolve() for i in args.inputs if Path(i).is_file()}
    photos, earlier = _drop_earlier_outputs(photos, explicit)
    if earlier:
        print(f"semcolor: skipped {earlier} earlier results (<stem>_color/_map.png beside their photo)",
              file=sys.stderr)
    if not_photos:
        names = ", ".join(p.name for p in not_photos[:3]) + (", ..." if len(not_photos) > 3 else "")
        print(f"semcolor: skipped {len(not_photos)} files that are not photos by their extension ({names}); "
              "name a file explicitly to try it anyway", file=sys.stderr)
    if not photos:
        return _usage_error(f"no photos found in {' '.join(map(str, args.inputs))}")
    if args.semantic_map is not None and len(photos) != 1:
        return _usage_error(f"--semantic-map applies to one photo; {len(photos)} were given")
    try:
        _choose_model(args)
        check_writable_folder(args.out)
    except UsageError as error:
        return _usage_error(str(error))
    try:
        colorizer = load_colorizer(args.model, args.segmenter, device=args.device)
        if args.samples > 1 and not colorizer.supports_samples:
            return _usage_error(f"{colorizer.model_name} is deterministic: "
                                "--samples needs a PixelCNN model (psc_*)")
        if args.fast and not colorizer.supports_samples:
            return _usage_error(f"--fast applies to PixelCNN models (psc_*); {colorizer.model_name} has one "
                                "deterministic result already")
        semantic_map = None
        if args.semantic_map is not None:
            if not colorizer.takes_semantic_map:
                return _usage_error(f"{colorizer.model_name} does not take a semantic map (--semantic-map)")
            semantic_map = read_label_map(args.semantic_map, args.max_pixels)
    except PhotoError as error:  # the --semantic-map file
        return _usage_error(str(error))
    except (OSError, ValueError, KeyError) as error:
        return _usage_error(f"cannot load the model: {_one_line(error)}")

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
                                        seed=args.seed, temperature=args.temperature, fast=args.fast)
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
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to serve on: 127.0.0.1, ::1 or localhost (others need --allow-remote)")
    parser.add_argument("--port", type=int, default=0, help="port (default 0: any free port)")
    parser.add_argument("--allow-remote", action="store_true", help="permit a non-loopback --host")
    parser.add_argument("--no-browser", action="store_true", help="do not open a browser")
    parser.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS,
                        help="refuse photos with more pixels (decompression bombs)")
    parser.set_defaults(handler=run_edit)
    return parser


def run_edit(args: argparse.Namespace) -> int:
    from semcolor.editor.server import EditorError, serve

    try:
        _choose_model(args)
    except UsageError as error:
        return _usage_error(str(error))
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
    from semcolor import __version__

    parser = argparse.ArgumentParser(
        prog="semcolor", formatter_class=HelpWithDefaults,
        description="Semantic-guided image colorization. Exit status: 0 done, 1 some inputs failed, "
        "2 usage or setup error.")
    parser.add_argument("--version", action="version", version=f"semcolor {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add_parser in COMMANDS.values():
        add_parser(subparsers)
    for subparser in subparsers.choices.values():
        subparser.formatter_class = HelpWithDefaults  # also for the subcommands defined in other modules
    return parser


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split())


def _usage_error(message: str) -> int:
    print(f"semcolor: error: {' '.join(message.split())}", file=sys.stderr)
    return 2


def _hide_mlflow_developer_warnings() -> None:
    """MLflow's advice to model developers (type hints on predict, signatures) is neither the user's
    business nor a failure. A filter cannot hide it - MLflow re-enables its UserWarnings inside its own
    ``catch_warnings`` - so the display step drops UserWarnings raised from MLflow's own files."""
    import warnings

    show = warnings.showwarning

    def showwarning(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, UserWarning) and f"{os.sep}mlflow{os.sep}" in str(filename):
            return
        show(message, category, filename, lineno, file, line)

    warnings.showwarning = showwarning


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``semcolor`` console script; returns the exit status."""
    _hide_mlflow_developer_warnings()
    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args))
    except KeyboardInterrupt:
        print("semcolor: interrupted", file=sys.stderr)
        return 130
    except Exception as error:
        if _is_user_error(error):  # a subcommand let one through: still one line, not a traceback
            return _usage_error(_one_line(error))
        raise


def _is_user_error(error: Exception) -> bool:
    """Errors whose message names the file, key or server at fault and says what to do."""
    from semcolor.config import ConfigError
    from semcolor.shard_integrity import ShardIntegrityError
    from semcolor.tracking_server import TrackingUnavailable
    from semcolor.training.checkpoint import CheckpointError

    known: tuple[type[Exception], ...] = (ConfigError, ShardIntegrityError, TrackingUnavailable, CheckpointError,
                                          UsageError)
    if "semcolor.inference" in sys.modules:
        known += (sys.modules["semcolor.inference"].ModelReferenceError,)
    return isinstance(error, known)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
