"""JPEG draft decoding through libjpeg-turbo's TurboJPEG API (``simplejpeg``): PIL's draft mode, cheaper.

``Image.draft`` asks libjpeg to scale the DCT blocks by 1/2, 1/4 or 1/8; ``decode_jpeg_draft`` asks
libjpeg-turbo for the very same scale, chosen by PIL's own rule, and gets the same pixels (the same
library, the same integer IDCT and fancy upsampling; ``tests/test_jpeg_draft.py`` compares them on JPEGs of
every chroma subsampling, baseline and progressive, and odd sizes). It skips PIL's Python-level decoder
loop and its copies: 0.62 against 0.71-0.97 ms for a 500x375 photo at 1/2, a tenth of converting one
sample to a 128 px shard.

It returns None, and the caller decodes with PIL as before, for anything but a YCbCr JPEG (gray, CMYK,
YCCK and Adobe-RGB files keep PIL's own conversion), for a file libjpeg-turbo reports any error or warning
on (PIL's verdict on damaged files stays the one that counts), for one beyond PIL's decompression-bomb limit,
and when the scaled size is not PIL's.
"""

from __future__ import annotations

import numpy as np
import simplejpeg

from semcolor.data.sources.png_indices import beyond_pil_pixel_limit

_DRAFT_SCALES = (8, 4, 2)  # PIL's: JpegImagePlugin.draft, largest first


def pil_draft_scale(width: int, height: int, size: int) -> int:
    """The denominator PIL's ``image.draft(mode, (size, size))`` picks for a ``width`` x ``height`` JPEG:
    the largest of 8, 4, 2 (else 1) no greater than both ``width // size`` and ``height // size``."""
    fits = min(width // size, height // size)
    return next((scale for scale in _DRAFT_SCALES if fits >= scale), 1)


def decode_jpeg_draft(data: bytes, size: int) -> tuple[np.ndarray, tuple[int, int], tuple[float, ...]] | None:
    """Decode the JPEG ``data`` scaled as PIL's draft mode would for a ``size`` x ``size`` target.

    Returns (uint8 (H', W', 3) RGB, the file's (width, height), the box of the drafted pixels that covers
    the original extent, as ``Image.draft`` returns it) or None (module docstring). Only called for a file
    at least twice ``size`` on both sides, so the scale is at least 1/2."""
    try:
        height, width, colorspace, _ = simplejpeg.decode_jpeg_header(data)
    except ValueError:
        return None
    if colorspace != "YCbCr" or beyond_pil_pixel_limit(width, height):
        return None
    scale = pil_draft_scale(width, height, size)
    if scale == 1:
        return None
    drafted = (-(-width // scale), -(-height // scale))  # PIL's sides, rounded up
    try:
        pixels = simplejpeg.decode_jpeg(
            data, colorspace="RGB", min_width=drafted[0], min_height=drafted[1], min_factor=scale, strict=True
        )
    except ValueError:  # strict: a warning (a truncated or damaged stream) is an error here
        return None
    if pixels.shape != (drafted[1], drafted[0], 3):
        return None
    return pixels, (width, height), (0, 0, width / scale, height / scale)
