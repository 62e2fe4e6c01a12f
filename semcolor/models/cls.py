"""Colorization as classification over quantized ab, with semantic guidance and an adversarial loss.

The third model family (``shared/seeds/003_*``), on the recipe it builds on (Zhang et al. 2016): an
encoder-decoder on the gray image predicts, per output pixel, a distribution over the 313 in-gamut ab bins
(``semcolor.quantized_ab``); the loss is the class-rebalanced cross-entropy against soft-encoded targets
(5 nearest bins, Gaussian sigma 5); colors are decoded by the annealed mean (T = 0.38). Semantic guidance:
a segmentation head trained jointly on the same features (``semantic="head"``), the semantic map as input
(``"input"``), or both. Adversarial training (``gan=True``): a conditional PatchGAN on (L, ab) with spectral
norm (and optionally an R1 penalty), hinge or standard (non-saturating) loss, its own optimizer.

Tensors (the batch contract of ``compute_losses`` / ``train_step``; channel order as listed):
- ``L``: (N, 1, H, W) float, ``L / 50 - 1`` in [-1, 1] (L in [0, 100]); H, W multiples of 16.
- ``ab``: (N, 2, H, W) float, (a, b) / 128 in [-1, 0.992] (``semcolor.scaling``).
- ``seg``: (N, H, W) long, class index in [0, num_classes) or 255 = ignore (not used by ``semantic="none"``).
- logits: (N, Q, H / s, W / s) with Q = 313 bins and s = ``output_stride`` (1, 2 or 4; Zhang: 4).
- ``colorize(L, seg)``: ab (N, 2, H, W) in the ``ab`` scaling, the annealed mean upsampled bilinearly.

The network reuses the Semantic-driven U-Net's layers (``semcolor.models.sdc``: bias-free 3x3
``conv-LeakyReLU`` encoder layers, transposed-conv decoder layers with ADDED skips, and its semantic-map
encoder). Choices, and why:
- encoder 1(+map) -> 32 -> 64 -> 128 -> 256 -> 256 channels (x ``width``), the first at stride 1, four at
  stride 2 (1/16); the decoder climbs back to 1/``output_stride``. Smaller than Zhang's VGG (no dilation,
  no BatchNorm): the project trains it on a CPU-sized budget.
- targets at stride s: ab is area-averaged over each s x s patch, then soft-encoded (Zhang sub-samples;
  the patch mean is the color the coarse logit stands for). Each target pixel is weighted by the
  rebalancing weight of its nearest bin (Zhang's v(Z) = w of argmax Z); the loss is the mean over pixels.
- the rebalancing weights are a buffer initialised from ``class_weights`` (313 numbers, from the ab_bins
  stage's JSON) or uniform when None; the checkpoint holds them twice (config and state), so a model
  rebuilt from its checkpoint needs no file.
- the discriminator sees (L, ab) at the logits' resolution: real ab and L area-averaged to 1/s, generated
  ab the differentiable annealed mean at 1/s; comparing an upsampled coarse prediction with full-resolution
  truth would let it win on sharpness alone.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn as nn
import torch.nn.functional as F

from semcolor.config import load_config
from semcolor.models import register_model
from semcolor.sources.base import IGNORE_INDEX
from semcolor.models.interface import ColorizationModel, Segmenter, eval_mode, pad_to_multiple
from semcolor.models.interface import working_shape as _working_shape
from semcolor.models.sdc import DecoderLayer, EncoderLayer, SdcConfig, SemanticMapInput
from semcolor.quantized_ab import (
    ANNEALED_MEAN_TEMPERATURE,
    GRID,
    NUM_BINS,
    SOFT_ENCODING_NEIGHBOURS,
    SOFT_ENCODING_SIGMA,
    annealed_mean_from_logits,
    bins_tensor,
    nearest_bin,
    soft_encode,
)
from semcolor.scaling import AB_SCALE

ENCODER_CHANNELS = (32, 64, 128, 256, 256)  # first at stride 1, then four stride-2 layers
SIZE_MULTIPLE = 2 ** (len(ENCODER_CHANNELS) - 1)  # 16
DISCRIMINATOR_CHANNELS = (64, 128, 256, 512)  # pix2pix PatchGAN widths

SemanticMode = Literal["none", "head", "input", "both"]
SemanticEncoding = Literal["onehot", "scalar"]
GanLoss = Literal["hinge", "standard"]


@dataclass(frozen=True)
class ClsConfig:
    """Hyper-parameters of the classification colorizer (params.yaml ``train_cls@*.model``).

    width: multiplier on every generator channel count (1.0: 32..256).
    output_stride: resolution of the logits, 1 (full), 2 or 4 (Zhang et al.).
    grid, num_bins: the ab quantization (grid 10 -> 313 in-gamut bins; checked when the model is built).
    temperature: annealed-mean temperature for decoding (0.38); 1 = the mean, -> 0 = the mode.
    soft_neighbours, soft_sigma: soft encoding of targets over this many nearest bins, Gaussian sigma in
        Lab units (5, 5).
    class_weights: rebalancing weight per bin (num_bins numbers, E_p[w] = 1, as
        ``quantized_ab.write_bin_statistics`` writes them), or None for uniform weights (no rebalancing).
    num_classes: classes of the semantic map (the head's outputs and the map input's one-hot width).
    semantic: "none"; "head" (a jointly trained segmentation head, cross-entropy ignoring 255); "input"
        (the ground-truth map enters with L; colorize then needs a map); "both".
    semantic_encoding: the map input, "onehot" (255 -> all zeros) or "scalar" (one channel in [-1, 1]).
    semantic_weight: weight of the segmentation cross-entropy in the generator loss.
    negative_slope: LeakyReLU slope of the generator layers.
    gan: train adversarially (a discriminator and its own optimizer; see ``train_step``).
    gan_loss: "hinge" or "standard" (non-saturating: D softplus, G -log D(fake)).
    gan_weight: weight of the adversarial term in the generator loss.
    spectral_norm: spectral normalization on every discriminator conv.
    r1_weight: R1 penalty (r1_weight / 2) E||grad_ab D(L, ab_real)||^2 on the discriminator; 0 disables.
    discriminator_width: multiplier on the PatchGAN widths 64..512.
    discriminator_downsamplings: stride-2 convs of the PatchGAN (3 for pix2pix's 70x70; its input is the
        logits' resolution, which must be >= 2^downsamplings * 4).
    discriminator_lr_scale: the discriminator's learning rate is the loop's lr times this.
    """

    width: float = 1.0
    output_stride: int = 4
    grid: int = GRID
    num_bins: int = NUM_BINS
    temperature: float = ANNEALED_MEAN_TEMPERATURE
    soft_neighbours: int = SOFT_ENCODING_NEIGHBOURS
    soft_sigma: float = SOFT_ENCODING_SIGMA
    class_weights: tuple[float, ...] | None = None
    num_classes: int = 60
    semantic: SemanticMode = "none"
    semantic_encoding: SemanticEncoding = "onehot"
    semantic_weight: float = 1.0
    negative_slope: float = 0.1
    gan: bool = False
    gan_loss: GanLoss = "hinge"
    gan_weight: float = 0.05
    spectral_norm: bool = True
    r1_weight: float = 0.0
    discriminator_width: float = 1.0
    discriminator_downsamplings: int = 2
    discriminator_lr_scale: float = 1.0

    def __post_init__(self) -> None:
        if not self.width > 0:
            raise ValueError(f"width must be > 0, got {self.width}")
        if self.output_stride not in (1, 2, 4):
            raise ValueError(f"output_stride must be 1, 2 or 4, got {self.output_stride}")
        if self.grid < 1 or self.num_bins < 2:
            raise ValueError(f"grid must be >= 1 and num_bins >= 2, got {self.grid}, {self.num_bins}")
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        if not 1 <= self.soft_neighbours <= self.num_bins:
            raise ValueError(f"soft_neighbours must be in [1, num_bins], got {self.soft_neighbours}")
        if not self.soft_sigma > 0:
            raise ValueError(f"soft_sigma must be > 0, got {self.soft_sigma}")
        if self.class_weights is not None:
            if len(self.class_weights) != self.num_bins:
                raise ValueError(
                    f"class_weights must have num_bins = {self.num_bins} entries, "
                    f"got {len(self.class_weights)}"
                )
            if not all(w > 0 for w in self.class_weights):
                raise ValueError("class_weights must all be > 0")
        if self.num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {self.num_classes}")
        if self.semantic not in ("none", "head", "input", "both"):
            raise ValueError(f"semantic must be 'none', 'head', 'input' or 'both', got {self.semantic!r}")
        if self.semantic_encoding not in ("onehot", "scalar"):
            raise ValueError(
                f"semantic_encoding must be 'onehot' or 'scalar', got {self.semantic_encoding!r}"
            )
        if self.semantic_weight < 0:
            raise ValueError(f"semantic_weight must be >= 0, got {self.semantic_weight}")
        if not 0.0 <= self.negative_slope < 1.0:
            raise ValueError(f"negative_slope must be in [0, 1), got {self.negative_slope}")
        if self.gan_loss not in ("hinge", "standard"):
            raise ValueError(f"gan_loss must be 'hinge' or 'standard', got {self.gan_loss!r}")
        if self.gan_weight < 0 or self.r1_weight < 0:
            raise ValueError(
                f"gan_weight and r1_weight must be >= 0, got {self.gan_weight}, {self.r1_weight}"
            )
        if not self.discriminator_width > 0:
            raise ValueError(f"discriminator_width must be > 0, got {self.discriminator_width}")
        if not 1 <= self.discriminator_downsamplings <= 3:
            raise ValueError(
                f"discriminator_downsamplings must be in [1, 3], got {self.discriminator_downsamplings}"
            )
        if not self.discriminator_lr_scale > 0:
            raise ValueError(f"discriminator_lr_scale must be > 0, got {self.discriminator_lr_scale}")

    @property
    def encoder_channels(self) -> tuple[int, ...]:
        return tuple(max(1, round(c * self.width)) for c in ENCODER_CHANNELS)

    @property
    def uses_head(self) -> bool:
        return self.semantic in ("head", "both")

    @property
    def uses_map_input(self) -> bool:
        return self.semantic in ("input", "both")


# -------------------------------------------------------------------------------------------------- blocks


def _he_init(module: nn.Module, negative_slope: float) -> None:
    """He (fan-in) initialisation for LeakyReLU: bias-free layers keep their activation scale with depth."""
    gain = nn.init.calculate_gain("leaky_relu", negative_slope)
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            out_or_in, in_or_out, kh, kw = m.weight.shape
            if isinstance(m, nn.Conv2d):
                fan_in = in_or_out * kh * kw
            else:  # a stride-s transposed conv feeds each output from 1/s^2 of its kernel taps
                fan_in = out_or_in * kh * kw / (m.stride[0] * m.stride[1])
            nn.init.normal_(m.weight, 0.0, gain / fan_in**0.5)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


class QuantizedAbNet(nn.Module):
    """Encoder-decoder: L (+ map) -> logits over the ab bins at 1/output_stride (+ segmentation logits)."""

    def __init__(self, config: ClsConfig) -> None:
        super().__init__()
        self.config = config
        enc = config.encoder_channels
        slope = config.negative_slope
        self.semantic_input: SemanticMapInput | None = None
        in_channels = 1
        if config.uses_map_input:
            self.semantic_input = SemanticMapInput(
                SdcConfig(num_classes=config.num_classes, semantic_encoding=config.semantic_encoding))
            in_channels += config.num_classes if config.semantic_encoding == "onehot" else 1
        self.encoder = nn.ModuleList(
            EncoderLayer(c_in, c_out, 1 if i == 0 else 2, slope)
            for i, (c_in, c_out) in enumerate(zip((in_channels, *enc[:-1]), enc))
        )
        self.output_level = config.output_stride.bit_length() - 1  # 1 -> 0, 2 -> 1, 4 -> 2
        # from the deepest level up to the output level; each adds the encoder's skip of its level
        self.decoder = nn.ModuleList(
            DecoderLayer(enc[level + 1], enc[level], slope)
            for level in range(len(enc) - 2, self.output_level - 1, -1)
        )
        features = enc[self.output_level]
        self.trunk = nn.Sequential(nn.Conv2d(features, features, 3, padding=1, bias=False),
                                   nn.LeakyReLU(slope))
        self.ab_head = nn.Conv2d(features, config.num_bins, 1)  # with bias: the bins' prior
        self.segmentation_head = nn.Conv2d(features, config.num_classes, 1) if config.uses_head else None
        _he_init(self, slope)
        # a fresh net predicts nearly uniform bin distributions, not confident random ones
        nn.init.normal_(self.ab_head.weight, 0.0, 0.1 / features**0.5)

    def forward(
        self, L: torch.Tensor, seg: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """L (N, 1, H, W) in [-1, 1], seg (N, H, W) long when the map is an input -> (ab logits
        (N, Q, H/s, W/s), segmentation logits (N, num_classes, H/s, W/s) or None)."""
        x = L
        if self.semantic_input is not None:
            if seg is None:
                raise ValueError("this cls model takes the semantic map as input: pass seg (N, H, W)")
            if tuple(seg.shape) != (L.shape[0], *L.shape[-2:]):
                raise ValueError(f"seg must have shape {(L.shape[0], *L.shape[-2:])}, got {tuple(seg.shape)}")
            x = torch.cat([L, self.semantic_input(seg).to(L.dtype)], dim=1)
        skips = []
        for layer in self.encoder:
            x = layer(x)
            skips.append(x)
        x = skips[-1]
        for layer, level in zip(self.decoder, range(len(skips) - 2, -1, -1)):
            x = layer(x, skips[level])
        x = self.trunk(x)
        segmentation = self.segmentation_head(x) if self.segmentation_head is not None else None
        return self.ab_head(x), segmentation


class PatchDiscriminator(nn.Module):
    """Conditional PatchGAN: concat(L, ab) (N, 3, h, w) -> a realism score per patch (N, 1, h', w').

    4x4 convs, LeakyReLU 0.2, ``downsamplings`` stride-2 layers then one stride-1 layer and the stride-1
    output conv (pix2pix, without BatchNorm: spectral norm is the stabilizer)."""

    def __init__(self, config: ClsConfig) -> None:
        super().__init__()
        widths = [max(1, round(c * config.discriminator_width)) for c in DISCRIMINATOR_CHANNELS]
        widths = widths[: config.discriminator_downsamplings + 1]
        strides = [2] * config.discriminator_downsamplings + [1]
        norm = nn.utils.parametrizations.spectral_norm if config.spectral_norm else (lambda m: m)
        layers: list[nn.Module] = []
        in_channels = 3
        for out_channels, stride in zip(widths, strides):
            conv = nn.Conv2d(in_channels, out_channels, 4, stride=stride, padding=1)
            layers += [norm(conv), nn.LeakyReLU(0.2)]
            in_channels = out_channels
        layers.append(norm(nn.Conv2d(in_channels, 1, 4, stride=1, padding=1)))
        self.body = nn.Sequential(*layers)
        self.min_size = 2 ** config.discriminator_downsamplings * 4

    def forward(self, L: torch.Tensor, ab: torch.Tensor) -> torch.Tensor:
        """L (N, 1, h, w) in [-1, 1], ab (N, 2, h, w) in the ab scaling -> scores (N, 1, h', w'),
        unbounded."""
        if min(L.shape[-2:]) < self.min_size:
            raise ValueError(
                f"PatchDiscriminator input is {tuple(L.shape[-2:])}; it needs >= {self.min_size} px "
                "(use fewer discriminator_downsamplings, a smaller output_stride or larger crops)"
            )
        return self.body(torch.cat([L, ab], dim=1))


# -------------------------------------------------------------------------------------------------- models


class QuantizedColorizer(nn.Module):
    """Classification colorizer, trained by the shared loop through ``compute_losses``."""

    def __init__(self, config: ClsConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or ClsConfig()
        bins = bins_tensor(config.grid)
        if bins.shape[0] != config.num_bins:
            raise ValueError(
                f"grid {config.grid} gives {bins.shape[0]} in-gamut bins, but num_bins is {config.num_bins}"
            )
        self.register_buffer("bins", bins, persistent=False)  # (Q, 2) Lab units, recomputed, never stored
        weights = torch.ones(config.num_bins)
        if config.class_weights is not None:
            weights = torch.tensor(config.class_weights)
        self.register_buffer("class_weights", weights.float())
        self.network = QuantizedAbNet(config)

    # -- pieces ------------------------------------------------------------------------------------------
    def _check_input(self, L: torch.Tensor) -> None:
        if L.dim() != 4 or L.shape[1] != 1:
            raise ValueError(f"cls model expects L of shape (N, 1, H, W), got {tuple(L.shape)}")
        if L.shape[-2] % SIZE_MULTIPLE or L.shape[-1] % SIZE_MULTIPLE:
            raise ValueError(f"cls model input is {tuple(L.shape[-2:])}; both sides must be multiples of "
                             f"{SIZE_MULTIPLE}: crop, pad or use colorize()")

    def forward(
        self, L: torch.Tensor, seg: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(ab logits (N, Q, H/s, W/s), segmentation logits or None); see ``QuantizedAbNet``."""
        self._check_input(L)
        return self.network(L, seg if self.config.uses_map_input else None)

    def _pool(self, x: torch.Tensor) -> torch.Tensor:
        stride = self.config.output_stride
        return x if stride == 1 else F.avg_pool2d(x, stride)

    def decode_ab(self, logits: torch.Tensor) -> torch.Tensor:
        """Logits (N, Q, h, w) -> annealed-mean ab (N, 2, h, w) in the ab scaling, differentiable."""
        ab = annealed_mean_from_logits(logits, self.config.temperature, self.bins) / AB_SCALE
        return ab.to(logits.dtype)

    def classification_loss(
        self, logits: torch.Tensor, ab: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Rebalanced cross-entropy of logits (N, Q, h, w) against soft-encoded ``ab`` (N, 2, H, W) (ab
        scaling), area-averaged to the logits' resolution; returns (loss, pooled target ab)."""
        target_ab = self._pool(ab.float())
        if target_ab.shape[-2:] != logits.shape[-2:]:
            raise ValueError(f"ab target {tuple(ab.shape)} does not match logits {tuple(logits.shape)}")
        lab_units = target_ab * AB_SCALE
        target = soft_encode(lab_units, self.bins, self.config.soft_neighbours, self.config.soft_sigma)
        cross_entropy = -(target * F.log_softmax(logits.float(), dim=1)).sum(dim=1)  # (N, h, w)
        weights = self.class_weights[nearest_bin(lab_units, self.bins)]
        return (weights * cross_entropy).mean(), target_ab

    def segmentation_loss(self, seg_logits: torch.Tensor, seg: torch.Tensor) -> torch.Tensor:
        """Cross-entropy of the head's logits upsampled to the map's size; 255 ignored; 0 if all ignored."""
        upsampled = F.interpolate(seg_logits.float(), size=seg.shape[-2:], mode="bilinear",
                                  align_corners=False)
        if not bool((seg != IGNORE_INDEX).any()):
            return upsampled.sum() * 0.0  # keeps the graph; mean over no pixels would be NaN
        return F.cross_entropy(upsampled, seg.long(), ignore_index=IGNORE_INDEX)

    def generator_losses(self, batch: Mapping[str, Any]) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """Classification (+ segmentation) losses and the generated annealed-mean ab at 1/s (ab scaling)."""
        L, ab = batch["L"], batch["ab"]
        seg = batch.get("seg")
        if (self.config.uses_head or self.config.uses_map_input) and seg is None:
            raise ValueError(f"cls model with semantic={self.config.semantic!r} needs batch['seg']")
        logits, seg_logits = self(L, seg)
        classification, target_ab = self.classification_loss(logits, ab)
        losses = {"classification": classification}
        loss = classification
        if seg_logits is not None:
            losses["segmentation"] = self.segmentation_loss(seg_logits, seg)
            losses["segmentation_weighted"] = self.config.semantic_weight * losses["segmentation"]
            loss = loss + losses["segmentation_weighted"]
        fake_ab = self.decode_ab(logits)
        losses["ab_mae"] = (fake_ab.detach().float() - target_ab).abs().mean()
        losses["loss"] = loss
        return losses, fake_ab

    def compute_losses(self, batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        """``loss`` = rebalanced CE + semantic_weight * segmentation CE; also ``classification``,
        ``segmentation`` and ``segmentation_weighted`` (with a head) and ``ab_mae`` (detached, annealed mean vs pooled target, in the ab
        scaling)."""
        return self.generator_losses(batch)[0]

    @torch.no_grad()
    def colorize(self, L: torch.Tensor, seg: torch.Tensor | None = None) -> torch.Tensor:
        """L (N, 1, H, W) in [-1, 1] (any H, W) -> ab (N, 2, H, W) in the ab scaling, via the annealed mean.

        Pads bottom/right to multiples of 16 (reflect; the map with 255), decodes at 1/s, upsamples ab
        bilinearly (as Zhang et al.) and crops. ``seg`` (N, H, W) is required when the map is an input and
        ignored otherwise. Runs in eval mode; the previous mode is restored."""
        if L.dim() != 4 or L.shape[1] != 1:
            raise ValueError(f"colorize expects L of shape (N, 1, H, W), got {tuple(L.shape)}")
        height, width = L.shape[-2:]
        L_in = pad_to_multiple(L, SIZE_MULTIPLE)
        seg_in = None
        if self.config.uses_map_input:
            if seg is None:
                raise ValueError("this cls model takes the semantic map as input: colorize(L, seg) needs seg")
            seg_in = pad_to_multiple(seg, SIZE_MULTIPLE)
        was_training = self.training
        self.eval()
        try:
            logits, _ = self(L_in, seg_in)
        finally:
            self.train(was_training)
        ab = self.decode_ab(logits).float()
        if self.config.output_stride > 1:
            ab = F.interpolate(ab, size=L_in.shape[-2:], mode="bilinear", align_corners=False)
        return ab[..., :height, :width].clamp(-1.0, 127.0 / AB_SCALE)

    # --- the ColorizationModel interface (semcolor.models.interface) ------------------------------------
    size_multiple = SIZE_MULTIPLE
    working_size = 352  # as the U-Net's: the CLI and editor run both families at the same shapes
    input_channels = 1
    can_sample = False

    @property
    def takes_map(self) -> bool:
        return self.config.uses_map_input

    @property
    def predicts_map(self) -> bool:
        return self.config.uses_head

    @property
    def num_classes(self) -> int | None:
        return self.config.num_classes if self.takes_map or self.predicts_map else None

    def working_shape(self, height: int, width: int, long_side: int | None = None) -> tuple[int, int]:
        """Long side ``long_side`` (default 352), multiples of 32 like the U-Net's (a multiple of this
        network's 16, so the shapes the CLI and editor give it are the U-Net's)."""
        return _working_shape(height, width, long_side or self.working_size, 2 * SIZE_MULTIPLE)

    def predict_ab(self, L: torch.Tensor, semantic_map: torch.Tensor | None = None,
                   segmenter: Segmenter | None = None) -> torch.Tensor:
        """``colorize(L, map)`` at L's size; a model that takes the map gets ``semantic_map``, else the
        ``segmenter``'s map of L; other models ignore both."""
        if self.takes_map and semantic_map is None and segmenter is not None:
            semantic_map = segmenter.predict_map(L)
        return self.colorize(L, semantic_map)

    def predict_map(self, L: torch.Tensor) -> torch.Tensor | None:
        """The segmentation head's map at L's size (None without a head). A model that also takes a map
        ("both") gets none here: its shown map is the one it is given."""
        if not self.predicts_map or self.takes_map:
            return None
        height, width = L.shape[-2:]
        with eval_mode(self):
            return self.predict_segmentation(pad_to_multiple(L, SIZE_MULTIPLE))[..., :height, :width]

    def sample_ab(self, L: torch.Tensor, seeds: Sequence[int], k: int = 1, temperature: float = 1.0,
                  progress: bool = False, size: tuple[int, int] | None = None) -> torch.Tensor:
        raise ValueError(f"{type(self).__name__} does not sample: only PixelCNN models (psc_*) draw colorizations")

    def accelerated(self) -> ColorizationModel:
        return self

    @torch.no_grad()
    def predict_segmentation(self, L: torch.Tensor, seg: torch.Tensor | None = None) -> torch.Tensor:
        """Class map (N, H, W) from the segmentation head (argmax of its upsampled logits); needs a head."""
        if self.network.segmentation_head is None:
            raise ValueError(f"this cls model (semantic={self.config.semantic!r}) has no segmentation head")
        _, seg_logits = self(L, seg)
        upsampled = F.interpolate(seg_logits.float(), size=L.shape[-2:], mode="bilinear", align_corners=False)
        return upsampled.argmax(dim=1)


class AdversarialQuantizedColorizer(QuantizedColorizer):
    """The classifier plus a PatchGAN; ``train_step`` updates D, then G, each with its own optimizer."""

    def __init__(self, config: ClsConfig) -> None:
        super().__init__(config)
        self.discriminator = PatchDiscriminator(config)

    def generator_parameters(self) -> list[nn.Parameter]:
        return [p for name, p in self.named_parameters() if not name.startswith("discriminator.")]

    def make_optimizers(
        self, lr: float, betas: tuple[float, float], weight_decay: float
    ) -> dict[str, torch.optim.Optimizer]:
        """Adam for the generator (lr) and for the discriminator (lr * discriminator_lr_scale)."""
        return {
            "generator": torch.optim.Adam(
                self.generator_parameters(), lr=lr, betas=betas, weight_decay=weight_decay
            ),
            "discriminator": torch.optim.Adam(
                self.discriminator.parameters(), lr=lr * self.config.discriminator_lr_scale, betas=betas,
                weight_decay=weight_decay,
            ),
        }

    def discriminator_loss(self, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        if self.config.gan_loss == "hinge":
            return F.relu(1.0 - real).mean() + F.relu(1.0 + fake).mean()
        return F.softplus(-real).mean() + F.softplus(fake).mean()

    def adversarial_loss(self, fake: torch.Tensor) -> torch.Tensor:
        if self.config.gan_loss == "hinge":
            return -fake.mean()
        return F.softplus(-fake).mean()  # non-saturating: -log sigmoid(D(fake))

    def discriminator_step(self, condition: torch.Tensor, real_ab: torch.Tensor, fake_ab: torch.Tensor,
                           optimizer: torch.optim.Optimizer,
                           grad_clip: float | None) -> dict[str, torch.Tensor]:
        """One discriminator update: L ``condition`` (N, 1, h, w), real and generated ab (N, 2, h, w) at the
        logits' resolution. The generated ab is detached, so no generator gradient is computed."""
        optimizer.zero_grad(set_to_none=True)
        real_ab = real_ab.detach().requires_grad_(self.config.r1_weight > 0)
        real_scores = self.discriminator(condition, real_ab)
        fake_scores = self.discriminator(condition, fake_ab.detach())
        loss = self.discriminator_loss(real_scores.float(), fake_scores.float())
        result = {"discriminator": loss.detach(), "d_real": real_scores.detach().float().mean(),
                  "d_fake": fake_scores.detach().float().mean()}
        if self.config.r1_weight > 0:
            (gradient,) = torch.autograd.grad(real_scores.float().sum(), real_ab, create_graph=True)
            penalty = 0.5 * self.config.r1_weight * gradient.float().square().sum(dim=(1, 2, 3)).mean()
            loss = loss + penalty
            result["r1"] = penalty.detach()
        loss.backward()
        if grad_clip is not None:
            nn.utils.clip_grad_norm_(self.discriminator.parameters(), grad_clip)
        optimizer.step()
        return result

    def generator_step(self, condition: torch.Tensor, fake_ab: torch.Tensor, generator_loss: torch.Tensor,
                       optimizer: torch.optim.Optimizer, grad_clip: float | None) -> dict[str, torch.Tensor]:
        """One generator update on ``generator_loss`` + gan_weight * adversarial(D(condition, fake_ab)).
        The discriminator is frozen meanwhile: its parameters collect no gradient and do not change."""
        optimizer.zero_grad(set_to_none=True)
        self.discriminator.requires_grad_(False)
        try:
            adversarial = self.adversarial_loss(self.discriminator(condition, fake_ab).float())
        finally:
            self.discriminator.requires_grad_(True)
        loss = generator_loss + self.config.gan_weight * adversarial
        loss.backward()
        if grad_clip is not None:
            nn.utils.clip_grad_norm_(self.generator_parameters(), grad_clip)
        optimizer.step()
        return {"loss": loss.detach(), "adversarial": adversarial.detach(),
                "adversarial_weighted": (self.config.gan_weight * adversarial).detach()}

    def train_step(self, batch: Mapping[str, Any], optimizers: Mapping[str, torch.optim.Optimizer],
                   grad_clip: float | None) -> dict[str, torch.Tensor]:
        """The loop's GAN step: one discriminator update (``optimizers["discriminator"]``) on real vs
        detached generated ab, then one generator update (``optimizers["generator"]``) on classification
        (+ segmentation) + gan_weight * adversarial. Returns detached losses; ``loss`` is the generator's."""
        losses, fake_ab = self.generator_losses(batch)
        condition = self._pool(batch["L"])
        result = self.discriminator_step(
            condition, self._pool(batch["ab"]), fake_ab, optimizers["discriminator"], grad_clip
        )
        result.update(
            self.generator_step(condition, fake_ab, losses["loss"], optimizers["generator"], grad_clip)
        )
        result.update({name: value.detach() for name, value in losses.items() if name != "loss"})
        return result


# -------------------------------------------------------------------------------------------------- factories


def _build(
    name: str, config: Mapping[str, Any], fixed: Mapping[str, Any], defaults: Mapping[str, Any]
) -> QuantizedColorizer:
    for key, value in fixed.items():
        if key in config and config[key] != value:
            raise ValueError(
                f"{name}: {key} is fixed to {value!r} by the model name, got {key}={config[key]!r}"
            )
    cfg = load_config(ClsConfig, {**defaults, **config, **fixed}, name)
    if name != "cls_plain" and cfg.semantic == "none":
        raise ValueError(f"{name}: semantic must be 'head', 'input' or 'both' (use cls_plain for none)")
    return AdversarialQuantizedColorizer(cfg) if cfg.gan else QuantizedColorizer(cfg)


@register_model("cls_plain")
def cls_plain(**config: Any) -> QuantizedColorizer:
    """Classification over 313 ab bins, no semantics, no GAN. ``config``: :class:`ClsConfig` fields."""
    return _build("cls_plain", config, {"semantic": "none", "gan": False}, {})


@register_model("cls_semantic")
def cls_semantic(**config: Any) -> QuantizedColorizer:
    """Plus semantic guidance: a joint segmentation head by default (``semantic`` head/input/both)."""
    return _build("cls_semantic", config, {"gan": False}, {"semantic": "head"})


@register_model("cls_semantic_gan")
def cls_semantic_gan(**config: Any) -> AdversarialQuantizedColorizer:
    """Plus the conditional PatchGAN (``gan_loss``, ``gan_weight``, spectral norm / R1); own train_step."""
    model = _build("cls_semantic_gan", config, {"gan": True}, {"semantic": "head"})
    assert isinstance(model, AdversarialQuantizedColorizer)
    return model
