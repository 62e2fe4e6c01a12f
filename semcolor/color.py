"""sRGB <-> CIE Lab conversions (numpy and torch) and the 8-bit Lab codec of the shards.

Conventions used everywhere in semcolor:

- sRGB floats are in [0, 1]; 8-bit sRGB is ``uint8`` in [0, 255]; channel order R, G, B.
- CIE Lab uses the D65 white (Xn, Yn, Zn) = (0.95047, 1.0, 1.08883) and the 2-degree observer.
  L is in [0, 100]; a and b are unbounded in theory, about [-86, 98] and [-108, 95] for sRGB colors,
  and stored in [-128, 127] by the 8-bit codec.
- The formulas and constants are exactly scikit-image's ``rgb2lab`` / ``lab2rgb`` (sRGB companding with
  the 0.04045 threshold, the sRGB matrix of the spec, and the classic rounded CIE constants
  0.008856 / 7.787), so results match ``skimage.color`` to float rounding.
- numpy functions take channel-last arrays ``(..., 3)``; torch functions take the channel dimension as
  ``dim`` (default -3, i.e. ``(N, 3, H, W)``).

8-bit Lab codec (``encode_lab8`` / ``decode_lab8``), the pixel format of the shards' ``.lab.npy`` planes
(and of format 1's ``.lab.png``): code_L = L * 255 / 100, code_a = a + 128, code_b = b + 128, rounded half
to even (``numpy.rint``) and clipped to [0, 255]. Decoding is the exact inverse of the scaling (no rounding).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # torch is imported where it is used: the numpy paths (shard workers) never pay for it
    import torch

__all__ = [
    "srgb_to_lab",
    "lab_to_srgb",
    "rgb8_to_lab",
    "lab_to_rgb8",
    "encode_lab8",
    "decode_lab8",
    "rgb8_to_lab8",
    "rgb8_to_lab8_planar",
    "prepare_lab8_lookup",
    "srgb_to_lab_torch",
    "lab_to_srgb_torch",
]

# sRGB (linear) -> XYZ matrix from the sRGB specification, as in skimage.color.colorconv.
_XYZ_FROM_RGB = np.array(
    [
        [0.412453, 0.357580, 0.180423],
        [0.212671, 0.715160, 0.072169],
        [0.019334, 0.119193, 0.950227],
    ]
)
_RGB_FROM_XYZ = np.linalg.inv(_XYZ_FROM_RGB)
_WHITE_D65 = np.array([0.95047, 1.0, 1.08883])

# sRGB companding: linear segment below these thresholds (encoded / linear side).
_SRGB_ENCODED_THRESHOLD = 0.04045
_SRGB_LINEAR_THRESHOLD = 0.0031308
# CIE Lab nonlinearity f(t) = cbrt(t) above epsilon, else slope * t + 16/116. The rounded constants
# (not 216/24389 and 841/108) are the ones scikit-image uses; we match it rather than the exact ones.
_LAB_EPSILON = 0.008856
_LAB_SLOPE = 7.787
_LAB_OFFSET = 16.0 / 116.0
_LAB_INVERSE_THRESHOLD = 0.2068966  # f(epsilon), as in skimage

_AB_OFFSET = 128.0


# ----------------------------------------------------------------------------------------------
# numpy, float
# ----------------------------------------------------------------------------------------------


def _check_channels_last(array: np.ndarray, name: str) -> None:
    if array.ndim < 1 or array.shape[-1] != 3:
        raise ValueError(f"{name}: expected a channel-last array of shape (..., 3), got shape {array.shape}")


def _float_input(values, name: str) -> tuple[np.ndarray, np.dtype]:
    """Float64 copy of a float array plus the dtype to return (float32 for float16/float32 input)."""
    array = np.asarray(values)
    if not np.issubdtype(array.dtype, np.floating):
        hint = " (uint8 data: use rgb8_to_lab / decode_lab8)" if array.dtype == np.uint8 else ""
        raise TypeError(f"{name}: expected a float array, got dtype {array.dtype}{hint}")
    _check_channels_last(array, name)
    return array.astype(np.float64), np.result_type(array.dtype, np.float32)


def _srgb_to_linear(encoded: np.ndarray) -> np.ndarray:
    # The power branch is evaluated on a clamped copy so negative inputs give no NaN warnings;
    # np.where then keeps the linear segment there, exactly as skimage's masked assignment.
    power = np.power((np.maximum(encoded, _SRGB_ENCODED_THRESHOLD) + 0.055) / 1.055, 2.4)
    return np.where(encoded > _SRGB_ENCODED_THRESHOLD, power, encoded / 12.92)


def _linear_to_srgb(linear: np.ndarray) -> np.ndarray:
    power = 1.055 * np.power(np.maximum(linear, _SRGB_LINEAR_THRESHOLD), 1.0 / 2.4) - 0.055
    return np.where(linear > _SRGB_LINEAR_THRESHOLD, power, linear * 12.92)


def _lab_f(t: np.ndarray) -> np.ndarray:
    return np.where(t > _LAB_EPSILON, np.cbrt(t), _LAB_SLOPE * t + _LAB_OFFSET)


def _lab_f_inverse(f: np.ndarray) -> np.ndarray:
    return np.where(f > _LAB_INVERSE_THRESHOLD, f * f * f, (f - _LAB_OFFSET) / _LAB_SLOPE)


def _linear_to_lab(linear: np.ndarray) -> np.ndarray:
    """Linear sRGB float64 (..., 3) -> Lab float64 (..., 3)."""
    red, green, blue = linear[..., 0], linear[..., 1], linear[..., 2]
    # Explicit per-channel sums instead of `@`: BLAS may change summation order with the array
    # shape, and rgb8_to_lab8 relies on this path giving the same bits on any subset of pixels.
    m = _XYZ_FROM_RGB
    fx = _lab_f((m[0, 0] * red + m[0, 1] * green + m[0, 2] * blue) / _WHITE_D65[0])
    fy = _lab_f((m[1, 0] * red + m[1, 1] * green + m[1, 2] * blue) / _WHITE_D65[1])
    fz = _lab_f((m[2, 0] * red + m[2, 1] * green + m[2, 2] * blue) / _WHITE_D65[2])
    return np.stack([116.0 * fy - 16.0, 500.0 * (fx - fy), 200.0 * (fy - fz)], axis=-1)


def srgb_to_lab(rgb) -> np.ndarray:
    """Convert float sRGB to CIE Lab (D65, 2 degrees); matches ``skimage.color.rgb2lab``.

    Args:
        rgb: float array ``(..., 3)``, R, G, B in [0, 1] (values outside are extrapolated, not clipped).

    Returns:
        Lab ``(..., 3)``: L in [0, 100], a and b roughly in [-128, 127]. float64 for float64 input,
        float32 for float16/float32 input (computed in float64 either way).
    """
    array, out_dtype = _float_input(rgb, "srgb_to_lab")
    return _linear_to_lab(_srgb_to_linear(array)).astype(out_dtype, copy=False)


def lab_to_srgb(lab) -> np.ndarray:
    """Convert CIE Lab (D65, 2 degrees) to float sRGB clipped to [0, 1]; matches ``skimage.color.lab2rgb``.

    Args:
        lab: float array ``(..., 3)``, L in [0, 100], a and b roughly in [-128, 127]. Colors outside the
            sRGB gamut are clipped per channel; a negative Z (b too large for L) is set to zero first,
            as scikit-image does (silently here).

    Returns:
        sRGB ``(..., 3)`` in [0, 1]; float64 for float64 input, float32 for float16/float32 input.
    """
    array, out_dtype = _float_input(lab, "lab_to_srgb")
    fy = (array[..., 0] + 16.0) / 116.0
    fx = array[..., 1] / 500.0 + fy
    fz = np.maximum(fy - array[..., 2] / 200.0, 0.0)
    x = _lab_f_inverse(fx) * _WHITE_D65[0]
    y = _lab_f_inverse(fy) * _WHITE_D65[1]
    z = _lab_f_inverse(fz) * _WHITE_D65[2]
    m = _RGB_FROM_XYZ
    linear = np.stack(
        [
            m[0, 0] * x + m[0, 1] * y + m[0, 2] * z,
            m[1, 0] * x + m[1, 1] * y + m[1, 2] * z,
            m[2, 0] * x + m[2, 1] * y + m[2, 2] * z,
        ],
        axis=-1,
    )
    return np.clip(_linear_to_srgb(linear), 0.0, 1.0).astype(out_dtype, copy=False)


# ----------------------------------------------------------------------------------------------
# numpy, 8-bit
# ----------------------------------------------------------------------------------------------

# Linear sRGB of every 8-bit code, computed by the same float64 function as srgb_to_lab(code / 255),
# so rgb8_to_lab(x) is bit-identical to srgb_to_lab(x / 255.0).
_LINEAR_OF_CODE64 = _srgb_to_linear(np.arange(256, dtype=np.float64) / 255.0)


def _check_uint8(array: np.ndarray, name: str) -> None:
    if array.dtype != np.uint8:
        raise TypeError(f"{name}: expected a uint8 array, got dtype {array.dtype}")
    _check_channels_last(array, name)


def rgb8_to_lab(rgb8) -> np.ndarray:
    """Convert 8-bit sRGB to CIE Lab; equal to ``srgb_to_lab(rgb8 / 255.0)`` bit for bit.

    Args:
        rgb8: uint8 array ``(..., 3)``, R, G, B in [0, 255].

    Returns:
        float64 Lab ``(..., 3)``: L in [0, 100], a in about [-86, 98], b in about [-108, 95].
    """
    array = np.asarray(rgb8)
    _check_uint8(array, "rgb8_to_lab")
    return _linear_to_lab(_LINEAR_OF_CODE64[array])


def lab_to_rgb8(lab) -> np.ndarray:
    """Convert CIE Lab to 8-bit sRGB: ``lab_to_srgb`` scaled by 255, rounded half to even.

    Args:
        lab: float array ``(..., 3)``, L in [0, 100], a and b roughly in [-128, 127]; out-of-gamut
            colors are clipped per channel.

    Returns:
        uint8 array ``(..., 3)``, R, G, B in [0, 255].
    """
    array, _ = _float_input(lab, "lab_to_rgb8")  # float64, so rounding sees the exact value
    return np.rint(lab_to_srgb(array) * 255.0).astype(np.uint8)


def encode_lab8(lab) -> np.ndarray:
    """Encode CIE Lab as 8-bit codes: L * 255 / 100, a + 128, b + 128, rounded half to even, clipped.

    Args:
        lab: float array ``(..., 3)``, L in [0, 100], a and b in [-128, 127]; values outside map to the
            nearest end code (L = 100 -> 255, a = -128 -> 0, a = 127 -> 255, a = 200 -> 255).

    Returns:
        uint8 array ``(..., 3)`` of codes in [0, 255].

    Raises:
        TypeError: if ``lab`` is not a float array (uint8 input is most likely codes already).
        ValueError: if ``lab`` contains NaN or infinity (they have no code).
    """
    array, _ = _float_input(lab, "encode_lab8")
    if not np.isfinite(array).all():
        raise ValueError("encode_lab8: Lab values contain NaN or infinity; they have no 8-bit code")
    scaled = array + np.array([0.0, _AB_OFFSET, _AB_OFFSET])
    scaled[..., 0] = array[..., 0] * 255.0 / 100.0  # not * 2.55, which is inexact: 50 -> 127.4999
    return np.clip(np.rint(scaled), 0.0, 255.0).astype(np.uint8)


def decode_lab8(codes) -> np.ndarray:
    """Decode 8-bit Lab codes: L = code * 100 / 255, a = code - 128, b = code - 128.

    Args:
        codes: uint8 array ``(..., 3)`` of codes in [0, 255].

    Returns:
        float32 Lab ``(..., 3)``: L in [0, 100], a and b in [-128, 127].
    """
    array = np.asarray(codes)
    _check_uint8(array, "decode_lab8")
    lab = array.astype(np.float32) - np.array([0.0, _AB_OFFSET, _AB_OFFSET], dtype=np.float32)
    lab[..., 0] = array[..., 0] * np.float32(100.0) / np.float32(255.0)  # nearest float32 to the ratio
    return lab


# ----------------------------------------------------------------------------------------------
# numpy, 8-bit sRGB -> 8-bit Lab fast path (the shard writer's per-pixel work)
# ----------------------------------------------------------------------------------------------
# Strategy: float32 arithmetic with two small tables replaces the float64 pow and cube root that
# dominate the reference path's time, then every pixel whose approximate code lies within
# _TIE_MARGIN of a rounding boundary (x.5) is recomputed with the float64 reference arithmetic. Because
# the table path's error is far below _TIE_MARGIN (measured on all 2^24 colors: < 2.4e-4 code), a
# rounding decision can only differ from the reference for flagged pixels, so the output equals
# encode_lab8(rgb8_to_lab(rgb8)) exactly; tests/test_color.py checks this on every 8-bit color.
# The work arrays are channel-first (3, n) float32, so each numpy call covers all three channels; the
# 3x3 matrix is one small matmul (its summation order only moves the table path's error by float32
# rounding, ~1e-5 code, still far inside the margin).

_LAB_F_TABLE_SIZE = 16384  # f(t) sampled at t = i / size, linearly interpolated in between
_TIE_MARGIN = 1e-3  # in code units; 4x the largest table-path error (2.4e-4), flags ~0.6% of pixels
_CHUNK_PIXELS = 1 << 15  # (3, 32768) float32 temporaries of 384 KiB: cache-friendly, memory bounded

_LINEAR_OF_CODE32 = _LINEAR_OF_CODE64.astype(np.float32)
# Rows: t_k * table_size as a linear function of linear R, G, B (white scaling folded in).
_TABLE_INDEX_FROM_LINEAR = (_XYZ_FROM_RGB / _WHITE_D65[:, None] * _LAB_F_TABLE_SIZE).astype(np.float32)
# White maps to t = 0.99998 / 1.0 / 0.99993 and float32 rounding may push it a hair above 1: two
# spare entries keep index i and i + 1 inside the table without a clip.
_LAB_F_AT_GRID = _lab_f(np.arange(_LAB_F_TABLE_SIZE + 2, dtype=np.float64) / _LAB_F_TABLE_SIZE)
_LAB_F_BASE = _LAB_F_AT_GRID[:-1].astype(np.float32)
_LAB_F_STEP = np.diff(_LAB_F_AT_GRID).astype(np.float32)
_AB_SCALE_COLUMN = np.array([[500.0], [200.0]], dtype=np.float32)
_TIE_THRESHOLD = np.float32(0.5 - _TIE_MARGIN)
# The reference arithmetic on (3, k) arrays: the same float64 operations, in the same order, as
# _linear_to_lab and encode_lab8 (so the same bits), with one numpy call per step for all channels.
_XYZ_COLUMNS = [_XYZ_FROM_RGB[:, c : c + 1] for c in range(3)]
_WHITE_COLUMN = _WHITE_D65[:, None]


def _rgb8_to_lab8_chunk(rgb8: np.ndarray, out: np.ndarray) -> np.ndarray:
    """Table path on a (n, 3) uint8 chunk: writes codes into ``out``, a (3, n) uint8 array or view
    (channel-first), and returns the indices of the pixels within _TIE_MARGIN of a rounding boundary,
    which the caller recomputes with ``_reference_lab8``."""
    linear = _LINEAR_OF_CODE32.take(rgb8.T)  # (3, n)
    position = _TABLE_INDEX_FROM_LINEAR @ linear  # t_k * table size, >= 0
    index = position.astype(np.intp)  # t >= 0, so truncation is floor
    weight = index.astype(np.float32)
    np.subtract(position, weight, out=weight)  # the interpolation weight in [0, 1)
    f = _LAB_F_STEP.take(index)
    f *= weight
    f += _LAB_F_BASE.take(index)
    # codes: L * 255 / 100 = 2.55 * (116 fy - 16); a + 128 = 500 (fx - fy) + 128;
    # b + 128 = 200 (fy - fz) + 128.
    codes = position  # reuse the buffer
    np.multiply(f[1], np.float32(2.55 * 116.0), out=codes[0])
    codes[0] -= np.float32(2.55 * 16.0)
    np.subtract(f[:2], f[1:], out=codes[1:])
    codes[1:] *= _AB_SCALE_COLUMN
    codes[1:] += np.float32(_AB_OFFSET)
    rounded = np.rint(codes, out=f)
    # sRGB colors always land inside [0, 255] (L in [0, 100], a in [-87, 99], b in [-108, 95]),
    # so the cast needs no clip.
    np.copyto(out, rounded, casting="unsafe")
    codes -= rounded
    np.abs(codes, out=codes)
    return np.flatnonzero(codes.max(axis=0) > _TIE_THRESHOLD)


def _reference_lab8(rgb8: np.ndarray) -> np.ndarray:
    """``encode_lab8(rgb8_to_lab(rgb8))`` for a few (k, 3) uint8 pixels, channel-first (3, k): the same
    float64 arithmetic step by step, in a third of the numpy calls (their fixed cost dominates here)."""
    red, green, blue = _LINEAR_OF_CODE64.take(rgb8.T)
    t = (_XYZ_COLUMNS[0] * red + _XYZ_COLUMNS[1] * green + _XYZ_COLUMNS[2] * blue) / _WHITE_COLUMN
    fx, fy, fz = _lab_f(t)
    codes = np.stack([(116.0 * fy - 16.0) * 255.0 / 100.0, 500.0 * (fx - fy) + _AB_OFFSET,
                      200.0 * (fy - fz) + _AB_OFFSET])
    return np.clip(np.rint(codes), 0.0, 255.0).astype(np.uint8)


def _computed_lab8_into(flat: np.ndarray, out: np.ndarray) -> None:
    """Codes of the (n, 3) uint8 pixels ``flat`` into ``out``, (3, n) uint8, computed: float32 with the f(t)
    table, then the float64 reference for the pixels flagged near a rounding boundary."""
    near_tie = []
    for start in range(0, flat.shape[0], _CHUNK_PIXELS):
        stop = start + _CHUNK_PIXELS
        near_tie.append(start + _rgb8_to_lab8_chunk(flat[start:stop], out[:, start:stop]))
    if near_tie:
        # One reference call for all flagged pixels (about 1% of them): its fixed cost is paid once.
        flagged = np.concatenate(near_tie)
        if flagged.size:
            out[:, flagged] = _reference_lab8(flat[flagged])


# A process that converts many pixels (the shard writer at dataset scale) switches to a lookup in the codes
# of all 2^24 colors: one little-endian uint32 per color (L | a << 8 | b << 16, 64 MiB), indexed by
# r << 16 | g << 8 | b, so a pixel costs one gather (three uint8 tables, one gather each, measured slower).
# Building it is converting every color once, about as long as converting 2^24 pixels of photos, so it is
# built once a process has converted that many (1,024 images of 128 px, 135 of 352 px): the rent-or-buy
# rule, never more than twice the best choice made in hindsight. It gives the same codes, since they are
# the codes of the computed path (tests/test_color.py); a short-lived process (a training stage,
# `colorize`) never builds it.
_LOOKUP_AFTER_PIXELS = 1 << 24
_computed_pixels = 0
_lab8_of_color: np.ndarray | None = None  # (2^24,) '<u4' once built
_PACKED = np.dtype("<u4")


def _build_lab8_of_color() -> np.ndarray:
    table = np.empty(1 << 24, dtype=_PACKED)
    green_blue = np.stack(np.meshgrid(np.arange(256), np.arange(256), indexing="ij"), axis=-1).reshape(-1, 2)
    colors = np.empty((1 << 16, 3), dtype=np.uint8)
    colors[:, 1:] = green_blue
    codes = np.empty((3, 1 << 16), dtype=np.uint8)
    for red in range(256):
        colors[:, 0] = red
        _computed_lab8_into(colors, codes)
        row = table[red << 16 : (red + 1) << 16]
        np.left_shift(codes[2], 16, out=row, dtype=_PACKED)
        row |= codes[1].astype(_PACKED) << 8
        row |= codes[0]
    return table


def _looked_up_lab8_into(flat: np.ndarray, out: np.ndarray, table: np.ndarray) -> None:
    for start in range(0, flat.shape[0], _CHUNK_PIXELS):  # temporaries of 384 KiB, whatever the image size
        pixels = flat[start : start + _CHUNK_PIXELS]
        index = pixels[:, 0].astype(np.intp)
        index <<= 8
        index |= pixels[:, 1]
        index <<= 8
        index |= pixels[:, 2]
        packed = table.take(index, mode="clip")  # "clip": no bounds-check buffering (every index < 2^24)
        out[:, start : start + _CHUNK_PIXELS] = packed.view(np.uint8).reshape(-1, 4)[:, :3].T


def prepare_lab8_lookup() -> None:
    """Build this process's table of the Lab codes of all 2^24 colors now (64 MiB, about a second), rather
    than after its first 2^24 converted pixels: for a process that is known to convert many images."""
    global _lab8_of_color
    if _lab8_of_color is None:
        _lab8_of_color = _build_lab8_of_color()  # threads racing here build it twice: the same bytes


def _rgb8_to_lab8_into(flat: np.ndarray, out: np.ndarray) -> None:
    """Codes of the (n, 3) uint8 pixels ``flat`` into ``out``, (3, n) uint8 (an array or a view)."""
    global _computed_pixels
    if _lab8_of_color is None:
        _computed_pixels += flat.shape[0]
        if _computed_pixels < _LOOKUP_AFTER_PIXELS:
            _computed_lab8_into(flat, out)
            return
        prepare_lab8_lookup()
    _looked_up_lab8_into(flat, out, _lab8_of_color)


def rgb8_to_lab8(rgb8) -> np.ndarray:
    """Convert 8-bit sRGB to 8-bit Lab codes, fast; identical to ``encode_lab8(rgb8_to_lab(rgb8))``.

    Works in chunks of 32768 pixels, so the extra memory is a few MiB whatever the image size (plus a
    copy of the input if it is not contiguous). About 8-10x faster than the float64 reference path; once
    this process has converted 2^24 pixels (or after ``prepare_lab8_lookup``), a lookup in a 64 MiB table
    of all colors, faster again (the same codes).

    Args:
        rgb8: uint8 array ``(..., 3)``, R, G, B in [0, 255].

    Returns:
        uint8 array ``(..., 3)``: codes of L * 255 / 100, a + 128, b + 128 (see module docstring).
    """
    array = np.asarray(rgb8)
    _check_uint8(array, "rgb8_to_lab8")
    flat = array.reshape(-1, 3)
    out = np.empty_like(flat)
    _rgb8_to_lab8_into(flat, out.T)
    return out.reshape(array.shape)


def rgb8_to_lab8_planar(rgb8) -> np.ndarray:
    """``rgb8_to_lab8`` with the channels first: uint8 (..., 3) sRGB -> uint8 (3, ...) Lab codes, equal
    to ``np.moveaxis(rgb8_to_lab8(rgb8), -1, 0)``. The fast path computes channel-first, so this layout
    costs no transposition (the shards store it: planes crop and convert with contiguous rows).

    Args:
        rgb8: uint8 array ``(..., 3)``, R, G, B in [0, 255].

    Returns:
        uint8 array ``(3, ...)``: the L, a, b code planes (see module docstring).
    """
    array = np.asarray(rgb8)
    _check_uint8(array, "rgb8_to_lab8_planar")
    flat = array.reshape(-1, 3)
    out = np.empty((3, flat.shape[0]), dtype=np.uint8)
    _rgb8_to_lab8_into(flat, out)
    return out.reshape(3, *array.shape[:-1])


# ----------------------------------------------------------------------------------------------
# torch (differentiable, any float dtype, any device)
# ----------------------------------------------------------------------------------------------


def _torch_float_input(tensor: torch.Tensor, dim: int, name: str) -> torch.Tensor:
    import torch

    if not isinstance(tensor, torch.Tensor) or not tensor.is_floating_point():
        got = tensor.dtype if isinstance(tensor, torch.Tensor) else type(tensor).__name__
        raise TypeError(f"{name}: expected a floating-point torch.Tensor, got {got}")
    if tensor.dim() == 0 or not -tensor.dim() <= dim < tensor.dim() or tensor.shape[dim] != 3:
        raise ValueError(f"{name}: expected 3 channels along dim={dim}, got shape {tuple(tensor.shape)}")
    # float16 / bfloat16 lack the precision for L up to 100 and the cube root; compute in float32.
    if tensor.dtype in (torch.float16, torch.bfloat16):
        return tensor.float()
    return tensor


def srgb_to_lab_torch(rgb: torch.Tensor, dim: int = -3) -> torch.Tensor:
    """Differentiable float sRGB -> CIE Lab (D65, 2 degrees); same math as ``srgb_to_lab``.

    Args:
        rgb: float tensor with R, G, B along ``dim`` (default -3, e.g. ``(N, 3, H, W)``), in [0, 1]
            (values outside are extrapolated, not clipped). Any float dtype and device.
        dim: the channel dimension.

    Returns:
        Lab tensor of the same shape, dtype and device: L in [0, 100], a and b roughly in [-128, 127]
        (float16/bfloat16 inputs are computed in float32 and cast back). Gradients are finite
        everywhere, including at black, where the cube root and the 2.4 power are not evaluated.
    """
    import torch

    x = _torch_float_input(rgb, dim, "srgb_to_lab_torch")
    # Each power branch sees a clamped input: torch.where back-propagates into both branches, and
    # an unclamped pow at 0 (or below) would turn the unused branch's inf/NaN gradient into NaN.
    threshold = _SRGB_ENCODED_THRESHOLD
    linear = torch.where(x > threshold, ((x.clamp_min(threshold) + 0.055) / 1.055) ** 2.4, x / 12.92)
    red, green, blue = linear.unbind(dim)
    m, white = _XYZ_FROM_RGB.tolist(), _WHITE_D65.tolist()
    f = []
    for k in range(3):
        t = (m[k][0] * red + m[k][1] * green + m[k][2] * blue) / white[k]
        cube_root = t.clamp_min(_LAB_EPSILON) ** (1.0 / 3.0)
        f.append(torch.where(t > _LAB_EPSILON, cube_root, _LAB_SLOPE * t + _LAB_OFFSET))
    fx, fy, fz = f
    lab = torch.stack([116.0 * fy - 16.0, 500.0 * (fx - fy), 200.0 * (fy - fz)], dim=dim)
    return lab.to(rgb.dtype)


def lab_to_srgb_torch(lab: torch.Tensor, dim: int = -3) -> torch.Tensor:
    """Differentiable CIE Lab (D65, 2 degrees) -> float sRGB in [0, 1]; same math as ``lab_to_srgb``.

    Args:
        lab: float tensor with L, a, b along ``dim`` (default -3, e.g. ``(N, 3, H, W)``): L in [0, 100],
            a and b roughly in [-128, 127]. A negative Z is set to zero and out-of-gamut channels are
            clipped, as in ``lab_to_srgb`` (their gradient is zero there). Any float dtype and device.
        dim: the channel dimension.

    Returns:
        sRGB tensor of the same shape, dtype and device, in [0, 1] (float16/bfloat16 inputs are
        computed in float32 and cast back). Gradients are finite everywhere.
    """
    import torch

    x = _torch_float_input(lab, dim, "lab_to_srgb_torch")
    lightness, a, b = x.unbind(dim)
    fy = (lightness + 16.0) / 116.0
    fx = a / 500.0 + fy
    fz = (fy - b / 200.0).clamp_min(0.0)
    white = _WHITE_D65.tolist()
    xyz = [
        torch.where(fk > _LAB_INVERSE_THRESHOLD, fk**3, (fk - _LAB_OFFSET) / _LAB_SLOPE) * white[k]
        for k, fk in enumerate((fx, fy, fz))
    ]
    m = _RGB_FROM_XYZ.tolist()
    threshold = _SRGB_LINEAR_THRESHOLD
    channels = []
    for k in range(3):
        c = m[k][0] * xyz[0] + m[k][1] * xyz[1] + m[k][2] * xyz[2]
        power = 1.055 * c.clamp_min(threshold) ** (1.0 / 2.4) - 0.055
        encoded = torch.where(c > threshold, power, 12.92 * c)
        channels.append(encoded.clamp(0.0, 1.0))
    return torch.stack(channels, dim=dim).to(lab.dtype)


# -------------------------------------------------------------------- gamut mapping: Lab -> sRGB, L kept


def lab_to_rgb8_keep_lightness(lab: np.ndarray, iterations: int = 8) -> np.ndarray:
    """Lab (H, W, 3) float (L in [0, 100]) -> uint8 sRGB (H, W, 3) whose lightness is the input's L.

    Out-of-gamut pixels (a linear R, G or B outside [0, 1]) get their (a, b) scaled by the largest factor in
    [0, 1] that keeps them in gamut, found by bisection to 2**-iterations (1/256: < 0.5 a/b units); gray,
    factor 0, is always in gamut. Hue and L stay, chroma shrinks; only 8-bit rounding then separates the
    output's L from the input's (< 0.3 L units).
    """
    lab = np.asarray(lab, dtype=np.float64).copy()
    flat = lab.reshape(-1, 3)
    outside = np.flatnonzero(~in_srgb_gamut(flat))
    if outside.size:
        chosen = flat[outside]
        low = np.zeros(outside.size)  # known in gamut
        high = np.ones(outside.size)  # known outside
        for _ in range(iterations):
            middle = (low + high) / 2
            inside = in_srgb_gamut(np.concatenate([chosen[:, :1], chosen[:, 1:] * middle[:, None]], axis=1))
            low = np.where(inside, middle, low)
            high = np.where(inside, high, middle)
        flat[outside, 1:] = chosen[:, 1:] * low[:, None]
    return lab_to_rgb8(lab)


def in_srgb_gamut(lab: np.ndarray, slack: float = 1e-6) -> np.ndarray:
    """(n, 3) Lab (L in [0, 100]) -> (n,) bool: its linear sRGB lies in [0, 1] (up to ``slack``)."""
    fy = (lab[:, 0] + 16.0) / 116.0
    x = _lab_f_inverse(lab[:, 1] / 500.0 + fy) * _WHITE_D65[0]
    y = _lab_f_inverse(fy) * _WHITE_D65[1]
    z = _lab_f_inverse(fy - lab[:, 2] / 200.0) * _WHITE_D65[2]
    m = _RGB_FROM_XYZ  # explicit sums: a (n, 3) @ (3, 3) product is several times slower here
    linear = np.stack([m[i, 0] * x + m[i, 1] * y + m[i, 2] * z for i in range(3)], axis=1)
    return np.all((linear >= -slack) & (linear <= 1.0 + slack), axis=1)
