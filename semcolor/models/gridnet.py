"""GridNet semantic segmentation on the gray image (Semantic-driven Colorization, Ho et al., section 2.2).

The segmentation half of the Semantic-driven Colorization system (``shared/seeds/004_*``): a residual
conv-deconv grid network (Fourure et al. 2017) that predicts a coarse semantic map from the gray image,
which the user may then correct and the colorization U-Net (``semcolor.models.sdc``) consumes.

Read side by side with the paper and its public release:

- Paper 2.2: five rows and six columns, row channels [16, 32, 64, 128, 256]; every convolution 3x3, padding 1,
  stride 1, except the sub-sampling convolutions (stride 2) and the up-sampling transposed convolutions
  (stride 2). Loss: cross-entropy against the annotated map.
- Release (``networks.py``, borrowed from Hv0nnus/GridNet), followed here where the paper is silent:
  * an initial BatchNorm on the input image, then a stem ``conv-BN-ReLU-conv-BN-ReLU`` (1 -> 16);
  * lateral (same-row) streams are pre-activation residual blocks ``BN-ReLU-conv-BN-ReLU-conv + identity``,
    one between every pair of neighbouring columns (5 per row);
  * the first half of the columns (0, 1, 2) goes down the rows with ``BN-ReLU-conv(stride 2)-BN-ReLU-conv``,
    the second half (3, 4, 5) comes up with ``BN-ReLU-convT(stride 2)-BN-ReLU-conv``; where two streams
    meet at a grid node they are summed;
  * head ``conv-BN-ReLU-conv-BN`` from row 0 of the last column to ``num_classes`` logits (release: 60, the
    PASCAL-Context background + 59 classes, in the VOC-first order of
    ``shared/fixtures/class-lists/pascal-context-59.txt``); no convolution has a bias;
  * "total dropout": in training a whole residual branch is dropped with probability ``block_drop_prob``
    (the release applies its random draw even in eval mode; we apply it in training only, and the draw
    comes from torch's global generator so a seeded run repeats).
- Input: we feed the gray image as ``L / 50 - 1`` in [-1, 1] (the colorization net's input); the release
  feeds 8-bit luma / 255 in [0, 1]. The initial BatchNorm absorbs that affine difference when training.
- Sides must be multiples of ``2 ** (rows - 1)`` (16 for 5 rows) so the up-sampled streams meet their
  lateral partners at equal size.

At width 1.0 the network has 13.21 M parameters, as the release (13.2 M, REFERENCE.md section 2).
"""

from __future__ import annotations

from dataclasses import dataclass

from typing import Literal

import torch
import torch.nn as nn
import torch.nn.functional as F

from semcolor.config import load_config
from semcolor.models import register_model
from semcolor.models.interface import eval_mode, pad_to_multiple
from semcolor.data.sources.base import IGNORE_INDEX


@dataclass(frozen=True)
class GridNetConfig:
    """GridNet hyper-parameters; the defaults are the release's network.

    num_classes: output classes (release 60: background + PASCAL-Context 59).
    channels: feature channels per row at width 1.0, top row first; the number of rows is its length.
    columns: grid columns, even: the first half sub-samples, the second half up-samples.
    width: multiplier on every channel count (1.0 = paper width); each count is rounded, at least 1.
    block_drop_prob: probability, in training, of dropping a residual branch entirely ("total dropout").
    input_mode: "gray" (the paper: L only, 1 channel) or "lab" (L and ab, 3 channels: a segmenter trained on
        color images, for the Pixelated Semantic Colorization paper's Table 3 protocol).
    gray_dropout: "lab" only, colour augmentation in training: each sample's ab is set to 0 (gray) with this
        probability (torch's global generator, so a seeded run repeats). A segmenter trained on colour only
        never sees gray and scores below a constant predictor on it; the Table 3 protocol needs one that
        works on gray (the paper's scores 66.9 mIoU on gray, 72.1 on colour) and gains from real colour.
    """

    num_classes: int = 60
    channels: tuple[int, ...] = (16, 32, 64, 128, 256)
    columns: int = 6
    width: float = 1.0
    block_drop_prob: float = 0.0
    input_mode: Literal["gray", "lab"] = "gray"
    gray_dropout: float = 0.0

    def __post_init__(self) -> None:
        if self.input_mode not in ("gray", "lab"):
            raise ValueError(f"input_mode must be 'gray' or 'lab', got {self.input_mode!r}")
        if not 0.0 <= self.gray_dropout <= 1.0:
            raise ValueError(f"gray_dropout must be in [0, 1], got {self.gray_dropout}")
        if self.gray_dropout and self.input_mode != "lab":
            raise ValueError("gray_dropout needs input_mode 'lab' (a gray model has no colour to drop)")
        if self.num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {self.num_classes}")
        if len(self.channels) < 2 or any(c < 1 for c in self.channels):
            raise ValueError(f"channels must list >= 2 positive counts (one per row), got {self.channels}")
        if self.columns < 2 or self.columns % 2:
            raise ValueError(f"columns must be even and >= 2, got {self.columns}")
        if not self.width > 0:
            raise ValueError(f"width must be > 0, got {self.width}")
        if not 0.0 <= self.block_drop_prob < 1.0:
            raise ValueError(f"block_drop_prob must be in [0, 1), got {self.block_drop_prob}")

    @property
    def row_channels(self) -> tuple[int, ...]:
        """Channel count of each row after the width multiplier."""
        return tuple(max(1, round(c * self.width)) for c in self.channels)


def _conv3x3(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)


class StemBlock(nn.Module):
    """Input BatchNorm, then ``conv-BN-ReLU-conv-BN-ReLU`` into row 0 (release ``firstConv``)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.input_norm = nn.BatchNorm2d(in_channels)
        self.body = nn.Sequential(
            _conv3x3(in_channels, out_channels), nn.BatchNorm2d(out_channels), nn.ReLU(),
            _conv3x3(out_channels, out_channels), nn.BatchNorm2d(out_channels), nn.ReLU(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(self.input_norm(x))


class PreActivationResidualBlock(nn.Module):
    """``x + conv(ReLU(BN(conv(ReLU(BN(x))))))``; in training the branch is dropped with ``drop_prob``."""

    def __init__(self, channels: int, drop_prob: float = 0.0) -> None:
        super().__init__()
        self.drop_prob = drop_prob
        self.branch = nn.Sequential(
            nn.BatchNorm2d(channels), nn.ReLU(), _conv3x3(channels, channels),
            nn.BatchNorm2d(channels), nn.ReLU(), _conv3x3(channels, channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and self.drop_prob > 0 and float(torch.rand(())) < self.drop_prob:
            return x
        return x + self.branch(x)


class DownsamplingBlock(nn.Module):
    """``BN-ReLU-conv(stride 2)-BN-ReLU-conv``: one row down, half the resolution."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.BatchNorm2d(in_channels), nn.ReLU(), _conv3x3(in_channels, out_channels, stride=2),
            nn.BatchNorm2d(out_channels), nn.ReLU(), _conv3x3(out_channels, out_channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class UpsamplingBlock(nn.Module):
    """``BN-ReLU-convT(stride 2)-BN-ReLU-conv``: one row up, twice the resolution."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.BatchNorm2d(in_channels), nn.ReLU(),
            nn.ConvTranspose2d(
                in_channels, out_channels, 3, stride=2, padding=1, output_padding=1, bias=False
            ),
            nn.BatchNorm2d(out_channels), nn.ReLU(), _conv3x3(out_channels, out_channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class HeadBlock(nn.Module):
    """``conv-BN-ReLU-conv-BN`` from row 0 to class logits (release ``lastConv``)."""

    def __init__(self, in_channels: int, num_classes: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            _conv3x3(in_channels, num_classes), nn.BatchNorm2d(num_classes), nn.ReLU(),
            _conv3x3(num_classes, num_classes), nn.BatchNorm2d(num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class GridNet(nn.Module):
    """Semantic segmentation of a gray image.

    forward(L): L (N, 1, H, W) float, Lab lightness scaled as ``L / 50 - 1`` to [-1, 1], H and W multiples of
    ``2 ** (rows - 1)``; returns logits (N, num_classes, H, W).
    """

    def __init__(self, config: GridNetConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or GridNetConfig()
        rows = config.row_channels
        half = config.columns // 2
        self.in_channels = 1 if config.input_mode == "gray" else 3
        self.stem = StemBlock(self.in_channels, rows[0])
        # lateral[row][j] links column j to j + 1 of that row
        self.lateral = nn.ModuleList(
            nn.ModuleList(
                PreActivationResidualBlock(c, config.block_drop_prob) for _ in range(config.columns - 1)
            )
            for c in rows
        )
        # down[row][j]: from (row, j) to (row + 1, j), columns 0 .. half-1
        self.down = nn.ModuleList(
            nn.ModuleList(DownsamplingBlock(rows[r], rows[r + 1]) for _ in range(half))
            for r in range(len(rows) - 1)
        )
        # up[row][j]: from (row + 1, half + j) to (row, half + j)
        self.up = nn.ModuleList(
            nn.ModuleList(UpsamplingBlock(rows[r + 1], rows[r]) for _ in range(half))
            for r in range(len(rows) - 1)
        )
        self.head = HeadBlock(rows[0], config.num_classes)

    @property
    def size_multiple(self) -> int:
        """Input sides must be multiples of this (one halving per row below the first)."""
        return 2 ** (len(self.config.channels) - 1)

    def forward(self, L: torch.Tensor) -> torch.Tensor:
        if L.dim() != 4 or L.shape[1] != self.in_channels:
            raise ValueError(
                f"GridNet ({self.config.input_mode} input) expects shape (N, {self.in_channels}, H, W), got {tuple(L.shape)}"
            )
        height, width = L.shape[-2:]
        if height % self.size_multiple or width % self.size_multiple:
            raise ValueError(
                f"GridNet input is {height}x{width}; both sides must be multiples of {self.size_multiple} "
                f"({len(self.config.channels) - 1} stride-2 levels): pad or resize first"
            )
        num_rows = len(self.config.channels)
        half = self.config.columns // 2
        # column 0: the stem feeds row 0, the down-sampling blocks fill the rows below
        column = [self.stem(L)]
        for r in range(num_rows - 1):
            column.append(self.down[r][0](column[r]))
        # columns 1 .. half-1: lateral residual plus the stream coming down from the row above
        for j in range(1, half):
            new = [self.lateral[0][j - 1](column[0])]
            for r in range(1, num_rows):
                new.append(self.lateral[r][j - 1](column[r]) + self.down[r - 1][j](new[r - 1]))
            column = new
        # columns half .. end: lateral residual plus the stream coming up from the row below
        for j in range(half, self.config.columns):
            new = [None] * num_rows
            new[-1] = self.lateral[-1][j - 1](column[-1])
            for r in range(num_rows - 2, -1, -1):
                new[r] = self.lateral[r][j - 1](column[r]) + self.up[r][j - half](new[r + 1])
            column = new
        return self.head(column[0])

    def input_from(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The network input of a batch: ``L`` (gray) or ``cat(L, ab)`` (lab), all in model units. In
        training, ``gray_dropout`` zeroes the ab of a random share of the samples (ab = 0 is gray)."""
        if self.config.input_mode == "gray":
            return batch["L"]
        ab = batch["ab"]
        if self.training and self.config.gray_dropout > 0:
            keep = torch.rand(ab.shape[0], device=ab.device) >= self.config.gray_dropout
            ab = ab * keep.to(ab.dtype)[:, None, None, None]
        return torch.cat([batch["L"], ab], dim=1)

    @torch.no_grad()
    def predict(self, L: torch.Tensor) -> torch.Tensor:
        """The most likely class per pixel, (N, H, W) long in [0, num_classes)."""
        return self(L).argmax(dim=1)

    # --- the Segmenter interface (semcolor.models.interface) ---------------------------------------------
    @property
    def input_channels(self) -> int:
        return self.in_channels

    @property
    def num_classes(self) -> int:
        return self.config.num_classes

    @torch.no_grad()
    def predict_logits(self, L: torch.Tensor, ab: torch.Tensor | None = None) -> torch.Tensor:
        """Logits (N, C, H, W) for L of any size: the input (L, or L and ``ab`` for ``lab``; ab = 0, gray,
        when None) reflect-padded to ``size_multiple``, the logits cropped back. Runs in eval mode."""
        height, width = L.shape[-2:]
        if self.in_channels == 1:
            x = L
        else:
            x = torch.cat([L, torch.zeros_like(L).repeat(1, 2, 1, 1) if ab is None else ab], dim=1)
        with eval_mode(self):
            return self(pad_to_multiple(x, self.size_multiple))[..., :height, :width]

    def predict_map(self, L: torch.Tensor, ab: torch.Tensor | None = None) -> torch.Tensor:
        """argmax of ``predict_logits``: (N, H, W) long in [0, num_classes)."""
        return self.predict_logits(L, ab).argmax(dim=1)

    def compute_losses(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Cross-entropy of the predicted map against ``batch['seg']``.

        batch: ``L`` (N, 1, H, W) float in [-1, 1] (``L / 50 - 1``); ``seg`` (N, H, W) long, class index in
        [0, num_classes) or 255 (ignored). Returns ``loss`` (mean over labelled pixels; a batch without
        any labelled pixel gives a zero loss that still back-propagates, rather than NaN) and
        ``pixel_accuracy`` (detached, over labelled pixels; NaN when none).
        """
        seg = batch["seg"]
        check_class_map(seg, self.config.num_classes, "GridNet")
        logits = self(self.input_from(batch))
        labelled = seg != IGNORE_INDEX
        if not bool(labelled.any()):
            zero = logits.sum() * 0.0
            return {"loss": zero, "pixel_accuracy": torch.tensor(float("nan"))}
        loss = F.cross_entropy(logits, seg, ignore_index=IGNORE_INDEX)
        with torch.no_grad():
            correct = (logits.argmax(dim=1) == seg) & labelled
            accuracy = correct.sum().float() / labelled.sum().float()
        return {"loss": loss, "pixel_accuracy": accuracy}


def check_class_map(seg: torch.Tensor, num_classes: int, who: str) -> None:
    """Raise ValueError unless ``seg`` holds integer class indices in [0, num_classes) or IGNORE_INDEX (255).

    ``who`` names the caller in the message. Skipped inside traced/compiled graphs (see below).
    """
    if seg.dtype not in (torch.int64, torch.int32, torch.uint8, torch.int16):
        raise ValueError(f"{who}: seg must be an integer tensor of class indices, got {seg.dtype}")
    if torch.jit.is_tracing() or torch.compiler.is_compiling():
        return  # a data-dependent branch cannot live in a traced or compiled graph; eager calls check
    bad = (seg >= num_classes) & (seg != IGNORE_INDEX) | (seg < 0)
    if bool(bad.any()):
        value = int(seg[bad][0])
        raise ValueError(
            f"{who}: label {value} is neither a class index in [0, {num_classes}) nor the ignore value "
            f"{IGNORE_INDEX}; check the source's class mapping or the model's num_classes"
        )


@register_model("gridnet")
def gridnet(**config: object) -> GridNet:
    """GridNet segmentation network; keyword arguments are ``GridNetConfig`` fields."""
    return GridNet(load_config(GridNetConfig, config, "gridnet"))
