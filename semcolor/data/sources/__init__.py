"""Dataset sources by name. The names are used everywhere: params.yaml, data paths, the CLI."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from semcolor.data.sources.base import IGNORE_INDEX, Archive, Item, Sample, SampleError, Source

# name -> "module:Class"; imported on demand so that `import semcolor` stays cheap
SOURCES: dict[str, str] = {
    "voc2012": "semcolor.data.sources.voc2012:Voc2012",
    "sbd": "semcolor.data.sources.sbd:Sbd",
    "voc2012_aug": "semcolor.data.sources.voc2012_aug:Voc2012Aug",
    "coco_stuff10k": "semcolor.data.sources.coco_stuff:CocoStuff10k",
    "coco_stuff164k": "semcolor.data.sources.coco_stuff:CocoStuff164k",
    "pascal_context": "semcolor.data.sources.pascal_context:PascalContext",
    "synthetic": "semcolor.data.sources.synthetic:Synthetic",
}


def source_class(name: str) -> type[Source]:
    """The Source subclass registered as ``name``; ValueError listing the known names otherwise."""
    if name not in SOURCES:
        raise ValueError(f"unknown source {name!r}; known sources: {', '.join(sorted(SOURCES))}")
    module_name, class_name = SOURCES[name].split(":")
    return getattr(importlib.import_module(module_name), class_name)


def get_source(name: str, root: str | Path, **options: Any) -> Source:
    """An instance of source ``name`` reading the extracted tree at ``root``."""
    return source_class(name)(root, **options)


__all__ = ["IGNORE_INDEX", "SOURCES", "Archive", "Item", "Sample", "SampleError", "Source", "get_source", "source_class"]
