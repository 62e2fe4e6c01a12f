"""Class lists shipped with the package as data, read through ``importlib.resources``.

Files (copied verbatim from the datasets' releases, see each source's docstring):

- ``cocostuff-labels.txt``: COCO-stuff ``labels.txt``, 183 lines ``<id>: <name>``, 0 = unlabeled,
  1-91 things, 92-182 stuff.
- ``pascal-context-459.txt``: PASCAL-Context ``labels.txt``, 459 lines ``<id>: <name>``, ids 1-459.
- ``pascal-context-59.txt``: the 59-class subset plus ``0: background`` in the VOC-first order
  (0 background, 1-20 the VOC classes, 21 bag ... 59 wood).

Nothing is read at import time: ``read_class_list`` reads a file on first call and caches it, and
``ClassNamesFromList`` defers that call until a source's ``class_names`` is first accessed.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from importlib import resources
from typing import Any


@functools.cache
def read_class_list(filename: str) -> dict[int, str]:
    """The ``<id>: <name>`` lines of the packaged list ``filename`` as {id: name}, in file order.

    Raises FileNotFoundError for an unknown file and ValueError naming the file and line for a malformed
    line or a repeated id (the lists are data the label decoding depends on: fail loudly)."""
    text = resources.files(__package__).joinpath(filename).read_text(encoding="utf-8")
    names: dict[int, str] = {}
    for line_number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        index_text, separator, name = line.partition(":")
        if not separator or not index_text.strip().isdigit() or not name.strip():
            raise ValueError(
                f"class list {filename}, line {line_number}: expected '<id>: <name>', got {line!r}"
            )
        index = int(index_text)
        if index in names:
            raise ValueError(f"class list {filename}, line {line_number}: id {index} is listed twice")
        names[index] = name.strip()
    return names


class ClassNamesFromList:
    """A class attribute whose value (a tuple of class names) is computed on first access, so that
    defining a source class reads no file. Works on the class (``Source.class_names``) and on instances.

    ``build`` receives nothing and returns the names; it usually calls ``read_class_list``."""

    def __init__(self, build: Callable[[], tuple[str, ...]]):
        self._build = build
        self._names: tuple[str, ...] | None = None

    def __get__(self, instance: Any, owner: type | None = None) -> tuple[str, ...]:
        if self._names is None:
            self._names = tuple(self._build())
        return self._names


__all__ = ["ClassNamesFromList", "read_class_list"]
