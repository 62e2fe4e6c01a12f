"""Per-image and per-pixel measures on every compute thread, with the bits of one single-threaded call.

The evaluation's numpy measures (Lab -> sRGB, CIEDE2000, SSIM, palette confusion) ran on one core while
the other idled: on the demo's 2 cores they were ~100 s of the evaluate stage's ~4 minutes. numpy's
ufuncs and scipy's filters release the GIL, so threads over image chunks run them in parallel; and chunks
of a few images also stay in cache (Lab -> sRGB of 150 images at 128 px: 1.2 s in one call, 0.3 s in
chunks on 2 threads).

Only computations that are per pixel or per image are split, and the pieces are put back in order, so
every result is bit-identical to one call over the whole array (tests/test_image_pool.py); the demo's
metrics/evaluate.json and figures came out byte for byte the same. Worker count: ``torch.get_num_threads()``,
the compute threads the process runs with, so the measures use no more cores than the models do.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from typing import Any

import numpy as np
import torch

CHUNK_IMAGES = 16  # images per piece: 16 x 128 x 128 x 3 float64 is 6 MB, a few times the cache


@lru_cache(maxsize=4)
def _pool(workers: int) -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=workers, thread_name_prefix="semcolor-measures")


# a pool's threads do not survive fork: a child would wait forever on the parent's executor
os.register_at_fork(after_in_child=_pool.cache_clear)


def workers() -> int:
    return max(1, torch.get_num_threads())


def _run(function: Callable[..., Any], argument_lists: list[tuple[Any, ...]]) -> list[Any]:
    count = workers()
    if count == 1 or len(argument_lists) <= 1:
        return [function(*arguments) for arguments in argument_lists]
    return list(_pool(count).map(lambda arguments: function(*arguments), argument_lists))


def map_images(function: Callable[..., Any], *arrays: Sequence[Any]) -> list[Any]:
    """``[function(a[i], b[i], ...) for i]``, in order; ``function`` must not itself use this module."""
    return _run(function, list(zip(*arrays)))


def _pieces(arrays: tuple[np.ndarray, ...]) -> list[tuple[np.ndarray, ...]]:
    count = len(arrays[0])
    if any(len(array) != count for array in arrays):
        raise ValueError(f"the arrays differ in their first axis: {[len(a) for a in arrays]}")
    return [tuple(array[start : start + CHUNK_IMAGES] for array in arrays) for start in range(0, count, CHUNK_IMAGES)]


def per_pixel(function: Callable[..., np.ndarray], *arrays: np.ndarray) -> np.ndarray:
    """``function(*arrays)`` for a function computed pixel by pixel (no reduction over pixels): applied to
    chunks of images along axis 0 and concatenated back."""
    if len(arrays[0]) <= CHUNK_IMAGES:
        return function(*arrays)
    return np.concatenate(_run(function, _pieces(arrays)))


def summed(function: Callable[..., np.ndarray], *arrays: np.ndarray) -> np.ndarray:
    """``function(*arrays)`` for a function that returns counts summed over images (e.g. a confusion
    matrix of integers): applied to chunks of images along axis 0 and added up."""
    if len(arrays[0]) <= CHUNK_IMAGES:
        return function(*arrays)
    results = _run(function, _pieces(arrays))
    if any(not np.issubdtype(np.asarray(r).dtype, np.integer) for r in results):
        raise TypeError("summed() keeps one call's bits only for integer counts")
    return sum(results[1:], results[0])
