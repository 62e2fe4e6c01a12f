"""How Lab enters and leaves the models: one convention for the loader, every model and inference.

- L (lightness, [0, 100])  <->  L_unit = L / 50 - 1, in [-1, 1]
- a, b ([-128, 127])       <->  ab_unit = ab / 128, in [-1, 0.9921875]
- 8-bit Lab codes (the shard codec, see semcolor.color.encode_lab8): L8 = L * 255 / 100, a8 = a + 128,
  b8 = b + 128; so L_unit = L8 / 127.5 - 1 and ab_unit = (ab8 - 128) / 128 exactly.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

AB_SCALE = 128.0  # ab_unit = ab / AB_SCALE


def lab8_to_unit(lab8: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """8-bit Lab codes (H, W, 3) uint8 -> (L_unit (1, H, W), ab_unit (2, H, W)) float32, channel-first."""
    lab8 = np.asarray(lab8)
    if lab8.dtype != np.uint8 or lab8.shape[-1] != 3:
        raise ValueError(f"expected uint8 (H, W, 3) Lab codes, got {lab8.dtype} {lab8.shape}")
    chw = lab8.transpose(2, 0, 1).astype(np.float32)
    return chw[:1] / 127.5 - 1.0, (chw[1:] - 128.0) / AB_SCALE


def unit_to_lab(L_unit: torch.Tensor | np.ndarray, ab_unit: torch.Tensor | np.ndarray):
    """(L_unit (..., 1, H, W), ab_unit (..., 2, H, W)) -> Lab (..., 3, H, W) with L in [0, 100], ab in
    [-128, 127]; torch in, torch out; numpy in, numpy out."""
    if isinstance(L_unit, torch.Tensor):
        return torch.cat([(L_unit + 1.0) * 50.0, (ab_unit * AB_SCALE).clamp(-128.0, 127.0)], dim=-3)
    return np.concatenate([(np.asarray(L_unit) + 1.0) * 50.0, np.clip(np.asarray(ab_unit) * AB_SCALE, -128, 127)], axis=-3)


def lab_to_unit(lab: torch.Tensor | np.ndarray):
    """Lab (..., 3, H, W) -> (L_unit (..., 1, H, W), ab_unit (..., 2, H, W))."""
    return lab[..., :1, :, :] / 50.0 - 1.0, lab[..., 1:, :, :] / AB_SCALE


def upsample_ab(ab: torch.Tensor, size: int | tuple[int, int]) -> torch.Tensor:
    """a/b ``(..., 2, h, w)`` -> ``(..., 2, *size)`` (an int: a square), bilinear with
    ``align_corners=False``: model pixel i covers input pixels around ``(i + 0.5) * scale``. A no-op at the
    same size. Bilinear weights are convex, so values stay within the input's range (ab_unit in [-1, 1])."""
    size = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    if tuple(ab.shape[-2:]) == size:
        return ab
    lead = ab.shape[:-3]
    flat = ab.reshape(-1, *ab.shape[-3:])
    return F.interpolate(flat, size=size, mode="bilinear", align_corners=False).reshape(*lead, 2, *size)
