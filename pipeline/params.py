"""The one place that reads params.yaml: sections become typed, validated configs (semcolor.config).

Stage entry points call ``load_section(Cls, "section.path")``; an unknown key or a wrong type stops the
stage with the dotted key's name before any work is done.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

from semcolor.config import ConfigError, load_config, parse_yaml
from semcolor.data.shard_settings import ShardSettings

T = TypeVar("T")
DEFAULT_PARAMS = Path("params.yaml")


def read_params(path: str | Path = DEFAULT_PARAMS) -> dict[str, Any]:
    """The whole params file as plain data; a clear error when it is missing or not a mapping."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"params file not found: {path.resolve()} (run from the project root)")
    data = parse_yaml(path.read_text()) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return data


def section(params: dict[str, Any], dotted: str) -> Any:
    """The value at a dotted key (``shards`` or ``sources.synthetic``); ConfigError naming it if absent."""
    value: Any = params
    for i, part in enumerate(dotted.split(".")):
        if not isinstance(value, dict) or part not in value:
            raise ConfigError(f"params.yaml has no key {'.'.join(dotted.split('.')[: i + 1])}")
        value = value[part]
    return value


def load_section(cls: type[T], dotted: str, path: str | Path = DEFAULT_PARAMS) -> T:
    """Load params section ``dotted`` into the frozen dataclass ``cls``."""
    return load_config(cls, section(read_params(path), dotted), dotted)


@dataclass(frozen=True)
class DataConfig:
    """params.yaml `data`: which sources and sizes the data stages build, and where."""

    sources: tuple[str, ...] = ("synthetic",)
    sizes: tuple[int, ...] = (128, 352)
    raw_dir: str = "data/raw"
    extracted_dir: str = "data/extracted"
    shards_dir: str = "data/shards"

    def __post_init__(self):
        from semcolor.data.sources import SOURCES

        for name in self.sources:
            if name not in SOURCES:
                raise ValueError(f"sources: unknown source {name!r}; known: {', '.join(sorted(SOURCES))}")
        for size in self.sizes:
            if size not in (128, 352):
                raise ValueError(f"sizes: {size} is not a shard size; use 128 and/or 352")


def shard_dir(source: str, size: int, path: str | Path = DEFAULT_PARAMS) -> Path:
    """``<data.shards_dir>/<source>/<size>``: where the shards stage writes a source's shards (the default of
    the stages that read them when dvc.yaml does not pass ``--shards``)."""
    data = load_config(DataConfig, read_params(path).get("data") or {}, "data")  # no section: the defaults
    return Path(data.shards_dir) / source / str(size)


@dataclass(frozen=True)
class DownloadConfig:
    """params.yaml `download`: where archives come from, how hard to try, where first-seen checksums go."""

    mirror: str | None = None  # base URL replacing each archive's host (a proxy or internal mirror)
    retry_delays: tuple[float, ...] = (2.0, 10.0, 30.0)  # seconds before each retry of a failed download
    checksum_dir: str = "data/checksums"  # sha256 recorded on first download of unpublished-checksum archives (git)

    def __post_init__(self):
        if len(self.retry_delays) > 20 or any(d < 0 for d in self.retry_delays):
            raise ValueError(f"retry_delays must be at most 20 non-negative numbers, got {self.retry_delays}")


@dataclass(frozen=True)
class ShardsConfig:
    """params.yaml `shards`: conversion of extracted sources into Lab WebDataset shards. The writing
    settings are ``semcolor.data.shard_settings.ShardSettings`` (its defaults and checks); ``settings``
    hands them on."""

    samples_per_shard: int = ShardSettings.samples_per_shard
    workers: int = 2  # processes on this machine (ignored when dask_address is set)
    on_error: Literal["skip", "raise"] = ShardSettings.on_error
    max_skipped_fraction: float = ShardSettings.max_skipped_fraction  # above this skipped share: fail
    dask_address: str | None = None  # e.g. tcp://scheduler:8786 to run on a Dask cluster

    def __post_init__(self):
        self.settings  # noqa: B018  (validates the writing settings, with their own messages)
        if self.workers < 1:
            raise ValueError(f"workers must be >= 1, got {self.workers}")

    @property
    def settings(self) -> ShardSettings:
        return ShardSettings(self.samples_per_shard, self.on_error, self.max_skipped_fraction)
