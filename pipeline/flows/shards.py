"""Prefect flow: build the Lab WebDataset shards of one source, at one or more sizes.

    data/extracted/<source>/  ->  data/shards/<source>/<size>/{<split>-000000.tar, ..., manifest.json}

The work is cut into chunks of items; each chunk is one ``convert-chunk`` task run that loads, resizes and
encodes its samples and returns them. The flow consumes the chunk results in key order (a bounded number
in flight) and writes the shards and the manifest itself, so the bytes do not depend on the task runner
or on how many workers it has (semcolor.shards explains the format and the skip policy).

Where the tasks run:
- by default, a local pool of worker processes (Prefect's ProcessPoolTaskRunner);
- with ``dask_address`` (``tcp://host:8786``), on that Dask cluster (prefect-dask's DaskTaskRunner). Its
  workers need this package installed and must see the extracted tree at the same path (a shared file
  system); results travel back to the flow process, which alone writes ``out_root``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from prefect.futures import PrefectFuture
from prefect.task_runners import ProcessPoolTaskRunner, TaskRunner

from semcolor.shard_settings import ShardSettings
from semcolor.shards import ConvertedSample, Skipped, SubmitChunk, convert_items, convert_source
from semcolor.sources import get_source
from semcolor.sources.base import Item, Source


@task(name="convert-chunk", cache_policy=NO_CACHE, persist_result=False)
def convert_chunk(source: Source, items: Sequence[Item], size: int) -> list[ConvertedSample | Skipped]:
    """Load and encode one chunk of items at ``size`` x ``size`` pixels (semcolor.shards.convert_items)."""
    return convert_items(source, items, size)


class _TaskRunFuture:
    """A Prefect future seen as the ``ChunkFuture`` the ordered map expects (result and cancel)."""

    def __init__(self, future: PrefectFuture[list[ConvertedSample | Skipped]]):
        self.future = future

    def result(self) -> list[ConvertedSample | Skipped]:
        return self.future.result()

    def cancel(self) -> Any:
        wrapped = getattr(self.future, "wrapped_future", None)  # concurrent.futures / distributed future
        return wrapped.cancel() if wrapped is not None and hasattr(wrapped, "cancel") else False


def _chunk_submitter(source: Source) -> Callable[[int], SubmitChunk]:
    def submitter_for(size: int) -> SubmitChunk:
        def submit(items: Sequence[Item]) -> _TaskRunFuture:
            # Not wrapped in prefect's quote(): Dask takes that tuple subclass for a namedtuple and
            # rebuilds it wrongly. Walking a chunk of items costs Prefect microseconds anyway.
            return _TaskRunFuture(convert_chunk.submit(source, list(items), size))

        return submit

    return submitter_for


def default_workers() -> int:
    """All the cores of this machine."""
    return os.cpu_count() or 1


@flow(name="build-shards", task_runner=ProcessPoolTaskRunner(), log_prints=True)
def build_shards(
    source: str,
    extracted_dir: str,
    out_root: str,
    sizes: list[int],
    splits: list[str] | None = None,
    settings: ShardSettings = ShardSettings(),
    chunk_size: int | None = None,
    max_in_flight: int | None = None,
    progress: bool = True,
    source_options: dict[str, Any] | None = None,
) -> dict[str, str]:
    """Build ``out_root/<source>/<size>/`` for every size in ``sizes``; returns {size: manifest path}.

    ``extracted_dir``: the source's extracted tree (``data/extracted/<source>``). ``splits``: all of the
    source's by default. ``chunk_size``: items per task run (default: about two chunks per in-flight
    slot, 8 to 256; a task run costs Prefect 0.1-0.5 s, so chunks should not be small).
    ``max_in_flight``: chunks submitted ahead of the one being written (memory bound; default twice the
    machine's cores). The task runner is the flow's: a local process pool unless
    set with ``build_shards.with_options(task_runner=...)`` (see ``run_shards``)."""
    source_object = get_source(source, extracted_dir, **(source_options or {}))
    in_flight = max_in_flight or 2 * default_workers()
    manifests: dict[str, str] = {}
    for size in sizes:
        manifest = convert_source(
            source_object,
            Path(out_root) / source / str(size),
            size,
            splits,
            settings=settings,
            chunk_size=chunk_size,
            progress=progress,
            submit_chunk_for=_chunk_submitter(source_object),
            window=in_flight,
        )
        print(f"{source} {size}: wrote {manifest}")
        manifests[str(size)] = str(manifest)
    return manifests


def shards_task_runner(workers: int | None = None, dask_address: str | None = None) -> TaskRunner:
    """DaskTaskRunner on the scheduler at ``dask_address`` if given, else a local pool of ``workers``
    processes (default: all cores)."""
    if dask_address:
        from prefect_dask import DaskTaskRunner  # imported only when used: it pulls in distributed

        return DaskTaskRunner(address=dask_address)
    if workers is not None and workers <= 0:
        raise ValueError(f"workers must be positive, got {workers}")
    return ProcessPoolTaskRunner(max_workers=workers or default_workers())


def run_shards(
    source_name: str,
    extracted_root: str | Path,
    out_root: str | Path,
    size: int,
    splits: Sequence[str] | None = None,
    workers: int | None = None,
    settings: ShardSettings = ShardSettings(),
    dask_address: str | None = None,
    *,
    chunk_size: int | None = None,
    progress: bool = True,
    source_options: dict[str, Any] | None = None,
) -> Path:
    """The DVC stage's call: run ``build_shards`` for one size; returns the written manifest's path
    (``out_root/<source_name>/<size>/manifest.json``).

    ``extracted_root``: the source's own extracted tree (``data/extracted/<source_name>``).
    ``workers``: local processes (default all cores), or, with ``dask_address``, the number of Dask
    worker slots to keep busy (twice as many chunks are kept in flight)."""
    runner = shards_task_runner(workers, dask_address)
    manifests = build_shards.with_options(task_runner=runner)(
        source=source_name,
        extracted_dir=str(extracted_root),
        out_root=str(out_root),
        sizes=[size],
        splits=None if splits is None else list(splits),
        settings=settings,
        chunk_size=chunk_size,
        max_in_flight=2 * (workers or default_workers()),
        progress=progress,
        source_options=source_options,
    )
    return Path(manifests[str(size)])
