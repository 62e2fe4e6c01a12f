"""Prefect flow: fetch (or generate) every archive of the requested sources, verify it, extract it.

One flow run covers all requested sources: a ``download-archive`` task per archive (retried with backoff:
network failures resume from the ``.part`` file), then an ``extract-source`` task per source once its
archives are verified. A source class with ``generated = True`` (the synthetic world) has its archive
written by ``semcolor.data.sources.synthetic.write_world_archive`` instead of downloaded, and is extracted like
any other, through the same safe extraction.

Layout: ``<raw_dir>/<source>/<archive file name>`` (plus ``<file>.verified.json`` digest caches) and
``<extracted_dir>/<source>/`` holding every archive's top-level directories side by side, with a marker per
archive in ``.extracted/``. Archives without a published checksum are verified against
``<checksum_dir or raw_dir/source>/...`` (see ``checksum_record_path``): the sha256 of the first download
is recorded there, and every later download must match it.

Mirror: ``mirror`` is a base URL laid out like ``raw_dir``: archive ``F`` of source ``S`` is fetched from
``<mirror>/<S>/<F>`` instead of its original URL (so serving a copy of ``data/raw`` is a mirror).
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from semcolor.config import load_config
from semcolor.data.download import ChecksumError, download
from semcolor.data.extract import install_file, is_extracted, safe_extract
from semcolor.data.sources import source_class
from semcolor.data.sources.base import Archive

RETRY_DELAYS_SECONDS = (2.0, 10.0, 30.0)  # backoff between the 3 retries of a failed download
SYNTHETIC_ARCHIVE = "semantic_world.tar"  # unless the generated source class names its archive_filename
CHECKSUM_RECORD = "checksums.json"
_PERMANENT_ERRORS = (ChecksumError, ValueError)  # a retry would fail the same way: bad checksum, bad argument


def checksum_record_path(source: str, raw_dir: str | Path, checksum_dir: str | Path | None = None) -> Path:
    """``<checksum_dir>/<source>.json`` when a directory is given (keep it in git, outside DVC outputs),
    else ``<raw_dir>/<source>/checksums.json``."""
    if checksum_dir is not None:
        return Path(checksum_dir) / f"{source}.json"
    return Path(raw_dir) / source / CHECKSUM_RECORD


def _retry_unless_permanent(task, task_run, state) -> bool:
    """Retry network trouble; a checksum mismatch or a bad argument would only fail again, slower."""
    error = state.data if isinstance(state.data, BaseException) else None
    if error is None:
        try:
            error = state.result(raise_on_failure=False)
        except Exception:  # noqa: BLE001  - unknown failure: let the retry policy decide
            return True
    return not isinstance(error, _PERMANENT_ERRORS)


@task(name="download-archive", task_run_name="download {source}/{archive.filename}",
      retries=len(RETRY_DELAYS_SECONDS), retry_delay_seconds=list(RETRY_DELAYS_SECONDS),
      retry_condition_fn=_retry_unless_permanent, cache_policy=NO_CACHE)
def download_archive(
    source: str, archive: Archive, raw_dir: Path, mirror: str | None = None, checksum_dir: Path | None = None,
    progress: bool = True,
) -> Path:
    """Fetch one archive into ``<raw_dir>/<source>/`` (skipped when already verified); its path."""
    source_mirror = f"{mirror.rstrip('/')}/{source}" if mirror else None
    return download(
        archive.url, Path(raw_dir) / source / archive.filename,
        sha256=archive.sha256, md5=archive.md5, size=archive.size,
        checksum_record=checksum_record_path(source, raw_dir, checksum_dir),
        mirror=source_mirror, progress=progress,
    )


@task(name="generate-archive", task_run_name="generate {source}", cache_policy=NO_CACHE)
def generate_archive(
    source: str, raw_dir: Path, synthetic: Mapping[str, Any] | None, progress: bool = True,
) -> Path:
    """Write the synthetic world's tar into ``<raw_dir>/<source>/``; ``synthetic`` holds ``WorldConfig``
    fields (validated: an unknown key or a wrong type is a ConfigError naming it).

    Always regenerated: the bytes are deterministic for a config, so an unchanged world keeps its sha256
    and its extraction is skipped, while a changed generator can never be hidden behind an old archive."""
    # Imported here: only this task needs the generator, and the other sources' runs should not pay for it.
    from semcolor.data.sources.synthetic import WorldConfig, write_world_archive

    config = load_config(WorldConfig, synthetic, where=f"sources.{source}")
    path = Path(raw_dir) / source / getattr(source_class(source), "archive_filename", SYNTHETIC_ARCHIVE)
    return write_world_archive(config, path, progress=progress)


@task(name="extract-source", task_run_name="extract {source}", cache_policy=NO_CACHE)
def extract_source(
    source: str, files: Sequence[Path], extract_flags: Sequence[bool], extracted_dir: Path,
    progress: bool = True,
) -> Path:
    """Extract (or, for ``extract=False`` archives, copy) ``files`` into ``<extracted_dir>/<source>``.

    Nothing is done when every file's marker matches. Otherwise the target is emptied first and every file
    extracted again: the tree then depends on the current archives only, with no file left over from an
    older version or an interrupted run (DVC hashes the whole directory)."""
    target = Path(extracted_dir) / source
    files = [Path(f) for f in files]
    if target.exists() and all(is_extracted(f, target) for f in files):
        return target
    if target.exists():
        shutil.rmtree(target)
    for file, extract in zip(files, extract_flags, strict=True):
        if extract:
            safe_extract(file, target, progress=progress)
        else:
            install_file(file, target)
    return target


def archives_for(cls: type, options: dict[str, Any]) -> tuple:
    """The archives a source needs with its options: its own, plus the annotation archives when its
    labels are rendered from COCO-format JSON (``label_source: json``)."""
    archives = tuple(cls.archives)
    if options.get("label_source") == "json":
        archives += tuple(getattr(cls, "annotation_archives", ()))
    return archives


@flow(name="download-sources")
def download_sources(
    sources: list[str],
    raw_dir: Path,
    extracted_dir: Path,
    mirror: str | None = None,
    synthetic: dict[str, Any] | None = None,
    checksum_dir: Path | None = None,
    retry_delay_seconds: list[float] | None = None,
    progress: bool = True,
    source_options: dict[str, dict[str, Any]] | None = None,
) -> dict[str, str]:
    """Download, verify and extract ``sources`` (names from ``semcolor.data.sources.SOURCES``).

    ``synthetic``: keyword arguments of ``WorldConfig`` for a generated source. ``source_options``:
    per-source options (params.yaml ``sources.<name>``); they decide extra archives, e.g. COCO-stuff 164k
    with ``label_source: json`` also needs its annotation archives. ``retry_delay_seconds``:
    backoff between download retries (default ``RETRY_DELAYS_SECONDS``; one retry per entry).
    Returns source name -> extracted root. Raises the first failure (after retries) of any task."""
    raw_dir, extracted_dir = Path(raw_dir), Path(extracted_dir)
    fetch = download_archive
    if retry_delay_seconds is not None:
        fetch = download_archive.with_options(retries=len(retry_delay_seconds),
                                              retry_delay_seconds=list(retry_delay_seconds))
    classes = {name: source_class(name) for name in sources}  # unknown names fail before any download

    pending = {}
    for name, cls in classes.items():
        if getattr(cls, "generated", False):
            pending[name] = ([generate_archive.submit(name, raw_dir, synthetic, progress)], [True])
        else:
            archives = archives_for(cls, (source_options or {}).get(name, {}))
            if not archives:
                raise ValueError(f"source {name!r} lists no archives to download")
            futures = [fetch.submit(name, a, raw_dir, mirror, checksum_dir, progress) for a in archives]
            pending[name] = (futures, [a.extract for a in archives])

    extracted = {}
    for name, (futures, flags) in pending.items():
        files = [future.result() for future in futures]  # re-raises the task's own error
        extracted[name] = extract_source.submit(name, files, flags, extracted_dir, progress)
    return {name: str(future.result()) for name, future in extracted.items()}


def run_download(
    source: str,
    raw_dir: str | Path,
    extracted_dir: str | Path,
    mirror: str | None = None,
    synthetic_config: Mapping[str, Any] | None = None,
    checksum_dir: str | Path | None = None,
) -> Path:
    """Entry for a DVC stage ``download@<source>``: one flow run for one source; its extracted root."""
    result = download_sources(
        [source], Path(raw_dir), Path(extracted_dir), mirror=mirror,
        synthetic=dict(synthetic_config) if synthetic_config is not None else None,
        checksum_dir=Path(checksum_dir) if checksum_dir is not None else None,
    )
    return Path(result[source])
