"""Convert a source split into byte-deterministic Lab WebDataset shards and write their manifest.

The format of the bytes (members, encoders, tar headers, shard names) is ``semcolor.data.shard_format``;
reading shards back is ``semcolor.data.shard_reader``.

Geometry: the image is resized straight to S x S (the aspect ratio is NOT kept) with an antialiased
bilinear (tent) filter, in sRGB, before the Lab conversion; the label is resized to S x S with nearest
neighbour, so 255 stays 255 and no class index is invented. Stretching rather than shorter side + center
crop is what both papers do (Pixelated Semantic Colorization: "rescale each image to 128 x 128";
Semantic-driven Colorization: "scale ... to 360 x 360, randomly crop them to 352 x 352"), and it keeps
every labelled pixel, where a crop would drop the borders. A source with ``load_resized`` (the VOC-layout
sources) decodes a JPEG at least twice the target in draft mode and resizes from there
(``semcolor.data.sources.labels``); the others are loaded in full and resized here.

Shard ``<split>-000000.tar`` holds the first ``samples_per_shard`` converted samples in sorted key order,
and so on. The work is split across processes in chunks and reassembled in key order, so any worker count
gives the same files.

Bad inputs (``SampleError`` from ``Source.load``, or a sample whose label is not the size of its image)
follow an explicit policy: ``on_error="raise"`` stops at the first one naming its key; ``"skip"`` leaves
it out, lists it with its reason in ``manifest.json`` and fails once more than ``max_skipped_fraction`` of
the split was skipped. ``manifest.json`` is written last and atomically: a directory without it is not a
finished build.
"""

from __future__ import annotations

import collections
import ctypes
import hashlib
import json
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Executor, ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from tqdm.auto import tqdm

from semcolor.atomic import atomic_output, write_text_atomic
from semcolor.data.shard_format import (
    FORMAT1_MEMBER_SUFFIXES,
    FORMAT_VERSION,
    LAB_ENCODING,
    LABEL_ENCODING,
    MANIFEST_FORMAT,
    MANIFEST_NAME,
    MEMBER_SUFFIXES,
    RESIZE_DESCRIPTION,
    SHARD_NAME_PATTERN,
    encode_json,
    encode_npy,
    encode_png,
    shard_name,
    stored_size_for,
    tar_end_bytes,
    tar_member_bytes,
)
from semcolor.data.shard_settings import OnError, ShardSettings
from semcolor.color import rgb8_to_lab8_planar
from semcolor.data.sources.labels import resize_image, resize_label
from semcolor.data.sources.base import Item, Sample, SampleError, Source
from semcolor.errors import TooManySkippedError

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc mallopt parameters (malloc.h)


@dataclass(frozen=True)
class ConvertedSample:
    """One sample, encoded and ready for a shard. ``members`` are (suffix, bytes) in the fixed order.

    ``lab_npy``: the format-2 Lab planes (``encode_npy``); ``lab_png``: a format-1 Lab PNG instead (for
    callers that build format-1 shards by hand, e.g. test fixtures). Exactly one of the two is given."""

    key: str
    metadata_json: bytes
    seg_png: bytes
    lab_npy: bytes | None = None
    lab_png: bytes | None = None

    def __post_init__(self) -> None:
        if (self.lab_npy is None) == (self.lab_png is None):
            raise ValueError(
                f"sample {self.key!r}: give exactly one of lab_npy (format 2) and lab_png (format 1)"
            )

    @property
    def members(self) -> tuple[tuple[str, bytes], ...]:
        if self.lab_npy is not None:
            return tuple(zip(MEMBER_SUFFIXES, (self.metadata_json, self.lab_npy, self.seg_png)))
        return tuple(zip(FORMAT1_MEMBER_SUFFIXES, (self.metadata_json, self.lab_png, self.seg_png)))


@dataclass(frozen=True)
class Skipped:
    """An input left out of the shards, and why (recorded in the manifest)."""

    key: str
    reason: str


@dataclass(frozen=True)
class ShardInfo:
    """One written shard: file name (relative to the shard directory), sample count, sha256 hex digest."""

    file: str
    samples: int
    sha256: str


@dataclass(frozen=True)
class SplitResult:
    """What converting one split produced: ``items`` listed, ``samples`` written, its shards and skips."""

    split: str
    items: int
    samples: int
    shards: tuple[ShardInfo, ...]
    skipped: tuple[Skipped, ...]


class ChunkFuture(Protocol):
    """What the ordered map needs of a future: ``result()``, and ``cancel()`` if it has one.
    concurrent.futures, Prefect and Dask futures all fit."""

    def result(self) -> list[ConvertedSample | Skipped]: ...


SubmitChunk = Callable[[Sequence[Item]], ChunkFuture]


# --------------------------------------------------------------------------------------------- one sample


def resize_sample(image: np.ndarray, label: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """``image`` uint8 (H, W, 3) sRGB and ``label`` uint8 (H, W) resized to ``size`` x ``size``.

    The image: antialiased bilinear in 8-bit sRGB (aspect ratio not kept); the label: nearest neighbour,
    so every output value (255 included) is one of the input values."""
    return resize_image(image, size), resize_label(label, size)


def _check_sample(sample: Sample) -> str | None:
    """Why ``sample`` cannot be converted, or None. Sources check these too; this guards the shards
    against a source that does not."""
    image, label = sample.image, sample.label
    image_ok = isinstance(image, np.ndarray) and image.dtype == np.uint8 and image.ndim == 3
    if not (image_ok and image.shape[2] == 3):
        return f"image must be uint8 (H, W, 3), got {getattr(image, 'dtype', type(image))} {np.shape(image)}"
    if not (isinstance(label, np.ndarray) and label.dtype == np.uint8 and label.ndim == 2):
        return f"label must be uint8 (H, W), got {getattr(label, 'dtype', type(label))} {np.shape(label)}"
    if label.shape != image.shape[:2]:
        return (
            f"label is {label.shape[1]}x{label.shape[0]} (WxH) but its image is "
            f"{image.shape[1]}x{image.shape[0]}"
        )
    if image.shape[0] == 0 or image.shape[1] == 0:
        return "image is empty"
    return None


def resized_loader(source: Source) -> Callable[[Item, int], Sample] | None:
    """``source.load_resized`` when the source decodes straight to a target size, else None.

    The protocol: ``load_resized(item, size)`` returns a Sample whose image (size, size, 3) and label
    (size, size) are what ``load`` + ``resize_sample`` would store (up to the documented draft-mode
    difference for large JPEGs), with the same checks and SampleErrors, and ``metadata['original_size']``
    the file's own [width, height]. A subclass that overrides ``load`` but not ``load_resized`` (it adds
    to or changes the sample, as the synthetic world adds its facts) goes through its ``load``."""
    method = getattr(type(source), "load_resized", None)
    if method is None:
        return None
    mro = type(source).__mro__
    load_owner = next(cls for cls in mro if "load" in vars(cls))
    resized_owner = next(cls for cls in mro if "load_resized" in vars(cls))
    return source.load_resized if issubclass(resized_owner, load_owner) else None


def convert_item(source: Source, item: Item, size: int) -> ConvertedSample | Skipped:
    """Load ``item`` (``source.load_resized`` where it has one, see ``resized_loader``, else
    ``source.load`` + ``resize_sample``) and encode it at ``size`` x ``size`` pixels (the stored size).

    Returns ``Skipped(key, reason)`` for bad data (``SampleError`` from the source, or a label of another
    size than its image); any other exception is a bug and propagates."""
    _keep_freed_buffers()
    load_resized = resized_loader(source)
    try:
        sample = source.load(item) if load_resized is None else load_resized(item, size)
    except SampleError as error:
        return Skipped(item.key, error.reason)
    problem = _check_sample(sample)
    if problem is not None:
        return Skipped(item.key, f"{problem} ({', '.join(item.paths)})")
    if load_resized is None:
        height, width = sample.image.shape[:2]
        original_size = [int(width), int(height)]
        image, label = resize_sample(sample.image, sample.label, size)
    else:
        original_size = [int(side) for side in sample.metadata["original_size"]]
        image, label = sample.image, sample.label
        if image.shape[:2] != (size, size):
            raise ValueError(f"{type(source).__name__}.load_resized({item.key!r}, {size}) returned "
                             f"{image.shape[1]}x{image.shape[0]} pixels")
    metadata = {
        **sample.metadata,
        "source": source.name,
        "split": item.split,
        "original_id": item.original_id,
        "original_size": original_size,
        "stored_size": [size, size],
    }
    return ConvertedSample(
        key=item.key,
        metadata_json=encode_json(metadata),
        lab_npy=encode_npy(rgb8_to_lab8_planar(np.ascontiguousarray(image))),
        seg_png=encode_png(np.ascontiguousarray(label), row_filter="none"),
    )


def convert_items(source: Source, items: Sequence[Item], size: int) -> list[ConvertedSample | Skipped]:
    """``convert_item`` over one chunk, in order: the unit of work sent to a process or a task."""
    return [convert_item(source, item, size) for item in items]


_allocator_tuned = False


def _keep_freed_buffers() -> None:
    """Once per process: ask glibc to keep freed image buffers for reuse instead of unmapping them.

    By default glibc serves blocks over 128 KiB with mmap and trims the heap eagerly, so a fresh worker
    process pays ~750 page faults and ~2 ms of kernel time per 500x375 image (measured: a quarter of the
    conversion) re-zeroing memory it has just freed. Long-lived processes escape this only because glibc
    raises its thresholds after large frees. No-op where the C library has no ``mallopt``."""
    global _allocator_tuned
    if _allocator_tuned:
        return
    _allocator_tuned = True
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return
    mallopt(_M_MMAP_THRESHOLD, 16 << 20)  # blocks up to 16 MiB (a 2300x2300 RGB image) from the heap
    mallopt(_M_TRIM_THRESHOLD, 64 << 20)  # keep up to 64 MiB of free heap before returning it


# ----------------------------------------------------------------------------------------------- writing


def write_shard(samples: Iterable[ConvertedSample], path: str | Path) -> ShardInfo:
    """Write ``samples`` (strictly increasing keys) to the tar ``path`` atomically; its ShardInfo.

    The tar is USTAR with fixed metadata (``semcolor.data.shard_format``), written to a temporary file beside
    ``path`` and renamed over it only when complete."""
    path = Path(path)
    count = offset = 0
    digest = hashlib.sha256()
    with atomic_output(path) as stream:
        for sample in samples:
            for suffix, data in sample.members:
                member = tar_member_bytes(f"{sample.key}.{suffix}", data)
                digest.update(member)
                stream.write(member)
                offset += len(member)
            count += 1
        end = tar_end_bytes(offset)
        digest.update(end)
        stream.write(end)
    return ShardInfo(file=path.name, samples=count, sha256=digest.hexdigest())


def _checked_order(samples: Iterable[ConvertedSample]) -> Iterator[ConvertedSample]:
    """``samples`` unchanged; ValueError at the first key that is not greater than the one before (a
    repeated key would make two samples collide in a shard, an unsorted one would break determinism)."""
    previous: str | None = None
    for sample in samples:
        if previous is not None and sample.key <= previous:
            raise ValueError(
                f"sample keys must be strictly increasing: {sample.key!r} came after {previous!r}"
            )
        previous = sample.key
        yield sample


def write_shards(
    samples: Iterable[ConvertedSample], out_dir: str | Path, split: str, samples_per_shard: int
) -> list[ShardInfo]:
    """Write ``samples`` (strictly increasing keys) into ``out_dir/<split>-000000.tar``, ... with
    ``samples_per_shard`` samples each (the last one may hold fewer). A split without samples writes no
    shard. Returns the ShardInfo of each shard, in order."""
    if samples_per_shard <= 0:
        raise ValueError(f"samples_per_shard must be positive, got {samples_per_shard}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    iterator = _checked_order(samples)
    shards: list[ShardInfo] = []
    while True:
        first = next(iterator, None)
        if first is None:
            return shards
        batch = [first, *(sample for _, sample in zip(range(samples_per_shard - 1), iterator))]
        shards.append(write_shard(batch, out_dir / shard_name(split, len(shards))))


# ----------------------------------------------------------------------------------------------- converting


def ordered_results(
    submit_chunk: SubmitChunk, chunks: Iterable[Sequence[Item]], window: int
) -> Iterator[list[ConvertedSample | Skipped]]:
    """Submit chunks with at most ``window`` in flight and yield their results in submission order.

    Bounded memory (``window`` chunks of encoded samples) and an order that does not depend on which
    worker finishes first. Futures still pending when the consumer stops (an error) are cancelled."""
    if window <= 0:
        raise ValueError(f"window must be positive, got {window}")
    pending: collections.deque[ChunkFuture] = collections.deque()
    chunk_iterator = iter(chunks)
    try:
        for chunk in chunk_iterator:
            pending.append(submit_chunk(chunk))
            if len(pending) >= window:
                break
        while pending:
            result = pending.popleft().result()
            next_chunk = next(chunk_iterator, None)
            if next_chunk is not None:
                pending.append(submit_chunk(next_chunk))
            yield result
    finally:
        for future in pending:
            cancel = getattr(future, "cancel", None)
            if cancel is not None:
                cancel()


def auto_chunk_size(count: int, window: int, smallest: int = 8, largest: int = 256) -> int:
    """A chunk size giving about two chunks per in-flight slot (``window``) over ``count`` items, kept in
    [smallest, largest]: enough chunks to balance the workers, few enough that a per-chunk overhead (a
    Prefect task run costs ~0.1-0.5 s) stays small next to the work (~5 ms per 128 px image)."""
    return max(smallest, min(largest, -(-count // (2 * window))))


def chunked(items: Sequence[Item], chunk_size: int) -> list[Sequence[Item]]:
    """``items`` cut into consecutive chunks of ``chunk_size`` (the last may be shorter)."""
    if chunk_size <= 0:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}")
    return [items[start : start + chunk_size] for start in range(0, len(items), chunk_size)]


def sorted_items(source: Source, split: str) -> list[Item]:
    """``source.list_items(split)`` sorted by key; ValueError naming a key listed twice."""
    items = sorted(source.list_items(split), key=lambda item: item.key)
    for before, after in zip(items, items[1:]):
        if before.key == after.key:
            raise ValueError(f"{source.name} {split}: key {after.key!r} is listed twice")
    return items


def apply_skip_policy(
    results: Iterable[ConvertedSample | Skipped],
    skipped: list[Skipped],
    *,
    total: int,
    on_error: OnError,
    max_skipped_fraction: float,
    where: str,
) -> Iterator[ConvertedSample]:
    """The converted samples of ``results``; every Skipped is appended to ``skipped``.

    ``on_error="raise"``: SampleError(key, reason) at the first skip. ``"skip"``: TooManySkippedError as
    soon as more than ``max_skipped_fraction * total`` inputs were skipped (no need to convert the rest)."""
    if on_error not in ("skip", "raise"):
        raise ValueError(f"on_error must be 'skip' or 'raise', got {on_error!r}")
    for result in results:
        if isinstance(result, ConvertedSample):
            yield result
            continue
        if on_error == "raise":
            raise SampleError(result.key, f"{result.reason} (in {where}; on_error='raise')")
        skipped.append(result)
        if len(skipped) > max_skipped_fraction * total:
            listed = "; ".join(f"{s.key}: {s.reason}" for s in skipped[:5])
            raise TooManySkippedError(
                f"{where}: {len(skipped)} of {total} inputs skipped, more than max_skipped_fraction="
                f"{max_skipped_fraction} allows ({listed}{' ...' if len(skipped) > 5 else ''}). "
                "Fix or re-extract the source, or raise max_skipped_fraction."
            )


def convert_split(
    source: Source,
    split: str,
    size: int,
    out_dir: str | Path,
    *,
    settings: ShardSettings = ShardSettings(),
    workers: int = 1,
    chunk_size: int | None = None,
    progress: bool = True,
    executor: Executor | None = None,
    submit_chunk: SubmitChunk | None = None,
    window: int | None = None,
) -> SplitResult:
    """Convert every item of ``split`` at ``size`` x ``size`` pixels into shards in ``out_dir``.

    Where the work runs: ``submit_chunk`` (a callable items -> future, e.g. a Prefect task's submit) if
    given, else ``executor`` (any concurrent.futures.Executor), else this process when ``workers == 1``,
    else a pool of ``workers`` processes. Chunks of ``chunk_size`` items (default ``auto_chunk_size``) are
    the unit of work; at most ``window`` chunks (default ``2 * max(workers, 2)``) are in flight, and
    results are reassembled in key order, so the shards are identical for any of these choices.
    Writes only shards (no manifest; see ``convert_source``)."""
    if workers <= 0:
        raise ValueError(f"workers must be positive, got {workers}")
    items = sorted_items(source, split)
    window = window or 2 * max(workers, 2)
    chunks = chunked(items, chunk_size or auto_chunk_size(len(items), window))
    where = f"{source.name} {split} at {size}px"
    skipped: list[Skipped] = []
    own_pool: ProcessPoolExecutor | None = None
    chunk_results: Iterable[list[ConvertedSample | Skipped]] = ()
    if submit_chunk is None:
        if executor is None and workers > 1:
            executor = own_pool = process_pool(workers)
        if executor is not None:
            pool = executor

            def submit_chunk(chunk: Sequence[Item]) -> ChunkFuture:
                return pool.submit(convert_items, source, chunk, size)

    try:
        if submit_chunk is None:
            chunk_results = (convert_items(source, chunk, size) for chunk in chunks)
        else:
            chunk_results = ordered_results(submit_chunk, chunks, window)
        with tqdm(total=len(items), desc=where, unit="img", disable=not progress) as bar:

            def flattened() -> Iterator[ConvertedSample | Skipped]:
                for results in chunk_results:
                    yield from results
                    bar.update(len(results))

            accepted = apply_skip_policy(
                flattened(),
                skipped,
                total=len(items),
                on_error=settings.on_error,
                max_skipped_fraction=settings.max_skipped_fraction,
                where=where,
            )
            shards = write_shards(accepted, out_dir, split, settings.samples_per_shard)
    finally:
        close = getattr(chunk_results, "close", None)
        if close is not None:  # cancels the chunks still in flight when we stop early
            close()
        if own_pool is not None:
            own_pool.shutdown(wait=True, cancel_futures=True)
    return SplitResult(
        split=split,
        items=len(items),
        samples=sum(shard.samples for shard in shards),
        shards=tuple(shards),
        skipped=tuple(skipped),
    )


def process_pool(workers: int, initializer: Callable[[], object] | None = None) -> ProcessPoolExecutor:
    """A pool of ``workers`` processes forked from a clean server process that has this module loaded;
    each worker calls ``initializer()`` once at its start when given.

    Not plain fork: the caller may hold threads (tqdm's monitor, Prefect's clients) whose locks fork
    would copy mid-state. Not spawn: every worker would import this module (numpy, PIL, and torch through
    semcolor.color) again, seconds each; the fork server imports it once per Python process."""
    context = get_context("forkserver")
    context.set_forkserver_preload([__name__])
    return ProcessPoolExecutor(workers, mp_context=context, initializer=initializer)


def clear_outputs(out_dir: str | Path) -> None:
    """Remove the manifest first (the directory stops claiming to be complete), then every shard and
    leftover temporary file of a previous build. Other files are left alone."""
    out_dir = Path(out_dir)
    (out_dir / MANIFEST_NAME).unlink(missing_ok=True)
    if not out_dir.is_dir():
        return
    for path in out_dir.iterdir():
        if SHARD_NAME_PATTERN.match(path.name) or (path.name.startswith(".") and path.name.endswith(".tmp")):
            path.unlink()


def convert_source(
    source: Source,
    out_dir: str | Path,
    size: int,
    splits: Sequence[str] | None = None,
    *,
    stored_size: int | None = None,
    settings: ShardSettings = ShardSettings(),
    workers: int = 1,
    chunk_size: int | None = None,
    progress: bool = True,
    executor: Executor | None = None,
    submit_chunk_for: Callable[[int], SubmitChunk] | None = None,
    window: int | None = None,
) -> Path:
    """Build the shard set ``size`` of ``source`` in ``out_dir``: clear it, convert each split (all of the
    source's by default), then write ``manifest.json``. Returns the manifest path.

    ``stored_size`` defaults to ``stored_size_for(size)``. ``submit_chunk_for(stored_size)`` may provide
    the chunk submitter (Prefect/Dask); see ``convert_split`` for the other arguments. If anything fails,
    the directory is left without a manifest."""
    stored = stored_size_for(size) if stored_size is None else stored_size
    splits = tuple(source.splits if splits is None else splits)
    out_dir = Path(out_dir)
    clear_outputs(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    own_pool = None
    if submit_chunk_for is None and executor is None and workers > 1:
        executor = own_pool = process_pool(workers)  # one pool for every split
    try:
        results = [
            convert_split(
                source,
                split,
                stored,
                out_dir,
                settings=settings,
                workers=workers,
                chunk_size=chunk_size,
                progress=progress,
                executor=executor,
                submit_chunk=None if submit_chunk_for is None else submit_chunk_for(stored),
                window=window,
            )
            for split in splits
        ]
    finally:
        if own_pool is not None:
            own_pool.shutdown(wait=True, cancel_futures=True)
    policy = {"on_error": settings.on_error, "max_skipped_fraction": settings.max_skipped_fraction}
    return write_manifest(
        out_dir,
        source_description=source.describe(),
        size=size,
        stored_size=stored,
        splits=results,
        skip_policy=policy,
    )


# ----------------------------------------------------------------------------------------------- manifest


def manifest_data(
    *,
    source_description: Mapping[str, Any],
    size: int,
    stored_size: int,
    splits: Sequence[SplitResult],
    skip_policy: Mapping[str, Any],
) -> dict[str, Any]:
    """The manifest as plain data (see ``write_manifest``)."""
    description = dict(source_description)
    return {
        "format": MANIFEST_FORMAT,
        "format_version": FORMAT_VERSION,
        "source": description.get("source"),
        "size": size,
        "stored_size": [stored_size, stored_size],
        "resize": RESIZE_DESCRIPTION,
        "lab_encoding": dict(LAB_ENCODING),
        "label_encoding": LABEL_ENCODING,
        "members": [f"<key>.{suffix}" for suffix in MEMBER_SUFFIXES],
        "class_names": list(description.get("class_names", [])),
        "ignore_index": description.get("ignore_index"),
        "source_description": description,
        "skip_policy": dict(skip_policy),
        "splits": {
            result.split: {
                "items": result.items,
                "samples": result.samples,
                "shards": [{"file": s.file, "samples": s.samples, "sha256": s.sha256} for s in result.shards],
                "skipped": [{"key": s.key, "reason": s.reason} for s in result.skipped],
            }
            for result in splits
        },
    }


def write_manifest(
    out_dir: str | Path,
    *,
    source_description: Mapping[str, Any],
    size: int,
    stored_size: int,
    splits: Sequence[SplitResult],
    skip_policy: Mapping[str, Any],
) -> Path:
    """Write ``out_dir/manifest.json`` atomically and return its path.

    Contents: format, source, ``size`` (the shard set's name, the training size) and ``stored_size``
    ([W, H] on disk), resize, Lab and label encodings, class names, ignore index, the source's
    ``describe()``, the skip policy, and per split: items listed, samples written, shards
    [{file, samples, sha256}] and skipped [{key, reason}]. Sorted keys, indent 2: same build, same bytes."""
    data = manifest_data(
        source_description=source_description,
        size=size,
        stored_size=stored_size,
        splits=splits,
        skip_policy=skip_policy,
    )
    text = json.dumps(data, sort_keys=True, indent=2, ensure_ascii=False) + "\n"
    path = write_text_atomic(Path(out_dir) / MANIFEST_NAME, text)
    return path
