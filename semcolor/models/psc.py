"""Pixelated Semantic Colorization (Zhao et al., IJCV; ``shared/seeds/002_*``), three flows in one model.

Read side by side with the paper:

* ``SharedTrunk`` + ``ColorEmbeddingTop`` = Table 1 (the colour embedding f): gated residual blocks, two
  stride-2 convolutions down to 1/4 resolution, dilated blocks at rates 2 and 4, a 160-channel output.
  ``embedding_head`` (1x1 conv) turns those features into a per-pixel discretized logistic mixture over
  (a, b) at 1/4 resolution, trained with L_emb; ``colorize_fast`` reads its mean or mode (no autoregression).
* ``SharedTrunk`` + ``SegmentationTop`` = Table 2 (the segmentation head h). The paper's gray rows are not
  recoverable from the text; the two tables are identical up to and including the first dilated stage
  (rate 2), and the paper plants h "following a few bottom layers", so the trunk is shared up to there and
  each branch has its own ``conv 3x3/1 512`` + three dilated blocks (f: rate 4, h: rate 2). h ends in ASPP:
  three 3x3 convolutions to #class at rates 6, 12, 18, summed.
* ``ConditionalGatedPixelCNN`` = the generator g (the paper gives no table for it): a gated PixelCNN
  (van den Oord et al. 2016) with vertical and horizontal stacks over the a/b image at 1/4 resolution in
  raster order, conditioned through 1x1 convolutions on f's features (``plain``, ``embed``) or on f's
  features together with h's class probabilities (``full``: concatenation, or the FiLM-style transform).
  Within a pixel, a comes before b through the mixture's coupling (see ``semcolor.models.mixture``).

Flows (``PscConfig.variant``): ``plain`` = purple (no segmentation branch, no L_seg); ``embed`` = purple +
blue (h trained jointly, sharing the trunk); ``full`` = purple + blue + green (h's probabilities also
condition g).

Tensors: L is lightness scaled to [-1, 1] (``L_lab / 50 - 1``), ``(N, 1, H, W)``, H and W multiples of 4
(the paper uses 128 x 128). a/b enter and leave the model in project units (``semcolor.scaling``: ab / 128,
channel order (a, b)); inside, the mixture works on the 8-bit grid ``(ab + 128) / 127.5 - 1`` where every
Lab8 code is a bin centre (``to_mixture_units`` / ``from_mixture_units``). The model works at
``(H/4, W/4)``: ``compute_losses`` average-pools full-resolution a/b over 4 x 4 blocks and snaps the result
to the 256-level grid. Model pixel i stands for input pixels 4i..4i+3 (centre 4i + 1.5), the convention of
the bilinear (align_corners=False) upsampling that turns predictions into images and maps.
Losses: L_emb and L_gen in nats per a/b value; L_seg in nats per labelled pixel, the cross-entropy of h's
logits upsampled bilinearly to the full-resolution label map (255 = ignore) - what the evaluation measures,
so training and evaluation agree on where each logit sits (labels subsampled at pixel 4i + 2 did not).
L_sum = 1 L_emb + 100 L_seg + 1 L_gen by default (the paper); ``compute_losses`` returns each term raw and
weighted.

Normalization and initialization (why this model trains at the paper's lr 1e-3): every convolution is
weight-normalized and data-dependently initialised (PixelCNN++, Salimans et al. 2017;
``semcolor.models.weight_norm``), and the two mixture heads start at the first batch's marginal a/b
distribution (``data_dependent_init``). With PyTorch's default init and no normalization the signal shrank
about x0.58 per trunk stage, and at width 1.0 Adam's first steps (lr 1e-3 on weights of size ~0.01) blew
L_emb up from 6 to 4600 and L_seg to 20000 within 6 steps (issue 10); the segmentation head of the demo never
left the class prior. Weight norm was chosen for the convolutions because g must stay causal (batch or
group statistics over the image would let a pixel see later pixels) and because it is the paper's own
lineage (PixelCNN++); it costs no extra state at inference. Residual branches and output heads start at
0.1 of unit scale, so every block starts close to the identity.
Weight norm alone was not enough at paper width: Adam moves every weight by about lr per step, coherently
over a unit's fan-in, so a unit's pre-activation moves by about lr * sqrt(fan_in) / 0.05 of its unit scale
per step - 2.4x more for f's 512 x 3 x 3 fan-in than for g's 128 x 6; measured on 4 images at lr 1e-3,
the embedding's std grew from 2 to 9 in six steps while L_emb rose from 4.1 to 6-7 and never came back in
30 steps (g, fan-in <= 768, trained fine). So, with ``output_norm`` (the default, set in the paper
setups), f's output (the embedding that f's mixture head and g read) and h's body end in a per-pixel RMS
normalization over channels (``PixelRMSNorm``): on the same 4 images and 30 steps every term then falls
(L_emb 4.5 -> 3.8, L_gen 4.4 -> 3.7, L_seg 2.8 -> 0.4; the gradient norm never exceeds its first value).
GroupNorm worked there too, but at the demo's width (groups of 4 channels over a 64 px crop) h stayed at
the class prior (likely: a per-image normalization erases the absolute level that tells sky from sand in a
one- or two-class crop). The narrow CPU demo (fan-in <= 288) trains well without the normalization and,
measured, worse with it (``seg_only``'s L_seg at step 120: 0.91 without, 1.46 with PixelRMSNorm, 1.00 with
it and ASPP started at unit scale; probably because the heads' logit scale must then grow through their
weight-norm gains, which Adam moves by about lr per step), so the demo profile sets ``output_norm: false``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from collections.abc import Sequence
from typing import Any, Literal

import torch
import torch.nn as nn
import torch.nn.functional as F

from semcolor.config import load_config
from semcolor.models import mixture, register_model
from semcolor.models.pixelcnn import ConditionalGatedPixelCNN, sample_cached, sample_naive
from semcolor.models.interface import (
    ColorizationModel,
    Segmenter,
    eval_mode,
    resize_gray,
    round_to,
    upsample_logits,
)
from semcolor.models.interface import working_shape as _working_shape
from semcolor.models.weight_norm import data_dependent_init, wn_conv2d
from semcolor.scaling import AB_SCALE, unit_to_lab, upsample_ab
from semcolor.sources.base import IGNORE_INDEX
DOWNSAMPLE = 4  # the model's a/b resolution is 1/4 of the input's (two stride-2 convolutions)
WORKING_SIZE = 128  # the paper's training size: the long side a photo is resized to for inference
SAMPLE_GROUP = 12  # images per sampling call when a model's sample() takes no per-image seeds


@dataclass(frozen=True)
class PscConfig:
    """Architecture and loss settings. Channel counts of f and h are the paper's (Table 1/2) times ``width``.

    ``generator_layers`` / ``generator_channels`` / ``generator_kernel`` shape g, which the paper does not
    tabulate (our choice for the paper setup: 8 gated layers of 128 channels, 3x3 receptive kernels).
    ``generator_channels`` is an absolute count, NOT scaled by ``width``: a narrow trunk (the CPU demo) must
    not shrink g to a couple of channels, which cannot model the colour distribution at all.
    ``aspp_rates``: the dilations of h's ASPP (the paper's 6, 12, 18). A 3x3 tap at rate r lands inside a
    feature map of side s only for positions within s - r of it: train on crops whose 1/4-resolution side
    exceeds the largest rate, or scale the rates to the crop (the demo does; see params.yaml).
    ``output_norm``: end f (the embedding) and h's body with a :class:`PixelRMSNorm` - needed at paper width
    for Adam at lr 1e-3, harmful in the narrow CPU demo (see the module docstring for both measurements).
    ``emb_weight`` / ``seg_weight`` / ``gen_weight``: L_sum = w_emb L_emb + w_seg L_seg + w_gen L_gen (the
    paper's 1:100:1). A term whose weight is 0 is not computed at all (``seg_only`` trains h alone and
    never runs f's top or g).
    """

    variant: Literal["plain", "embed", "full"] = "full"
    width: float = 1.0
    num_classes: int = 21
    num_mixtures: int = 10
    condition_on_L: bool = False
    generator_layers: int = 8
    generator_channels: int = 128
    generator_kernel: int = 3
    aspp_rates: tuple[int, ...] = (6, 12, 18)
    output_norm: bool = True
    seg_conditioning: Literal["concat", "film"] = "concat"
    emb_weight: float = 1.0
    seg_weight: float = 100.0
    gen_weight: float = 1.0

    def __post_init__(self) -> None:
        if self.variant not in ("plain", "embed", "full"):
            raise ValueError(f"variant must be 'plain', 'embed' or 'full', got {self.variant!r}")
        if self.seg_conditioning not in ("concat", "film"):
            raise ValueError(f"seg_conditioning must be 'concat' or 'film', got {self.seg_conditioning!r}")
        if not 0 < self.width <= 8:
            raise ValueError(f"width must be in (0, 8], got {self.width}")
        for name in ("num_classes", "num_mixtures", "generator_layers", "generator_channels"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.generator_kernel < 3 or self.generator_kernel % 2 == 0:
            raise ValueError(f"generator_kernel must be odd and >= 3, got {self.generator_kernel}")
        for name in ("emb_weight", "seg_weight", "gen_weight"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not self.aspp_rates or any(rate < 1 for rate in self.aspp_rates):
            raise ValueError(f"aspp_rates must list at least one rate >= 1, got {self.aspp_rates}")
        trained = [self.emb_weight, self.gen_weight] + ([self.seg_weight] if self.has_segmentation else [])
        if not any(weight > 0 for weight in trained):
            raise ValueError("at least one of emb_weight, gen_weight (and seg_weight for embed/full) must be > 0")

    def channels(self, paper_channels: int) -> int:
        """A paper channel count scaled by ``width`` (at least 1)."""
        return max(1, int(round(paper_channels * self.width)))

    @property
    def has_segmentation(self) -> bool:
        return self.variant in ("embed", "full")


# ----------------------------------------------------------------------------------------------------- blocks


class GatedResidualBlock(nn.Module):
    """Two 3x3 convolutions (same dilation), a skip connection and a gate: ``x + u * sigmoid(g)``.

    Pre-activation ELU as in PixelCNN++'s gated_resnet; ``(u, g)`` are the two halves of the second conv.
    """

    def __init__(self, channels: int, dilation: int = 1):
        super().__init__()
        self.conv1 = wn_conv2d(channels, channels, 3, padding=dilation, dilation=dilation)
        # the branch's last conv starts at 0.1 of unit scale: the block starts close to the identity
        self.conv2 = wn_conv2d(channels, 2 * channels, 3, padding=dilation, dilation=dilation, init_scale=0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        u, g = self.conv2(F.elu(self.conv1(F.elu(x)))).chunk(2, dim=1)
        return x + u * torch.sigmoid(g)


def _stage(in_channels: int, out_channels: int, stride: int, blocks: int, dilation: int = 1) -> nn.Sequential:
    """One table row pair: ``convolution 3x3/stride`` then ``Residual block x blocks`` at ``dilation``."""
    layers: list[nn.Module] = [wn_conv2d(in_channels, out_channels, 3, stride=stride, padding=1)]
    layers += [GatedResidualBlock(out_channels, dilation) for _ in range(blocks)]
    return nn.Sequential(*layers)


class SharedTrunk(nn.Sequential):
    """Rows 1-8 of Tables 1 and 2: 128 px x 64 -> 64 px x 128 -> 32 px x 256 -> 32 px x 512 (rate 2)."""

    def __init__(self, config: PscConfig):
        c = config.channels
        super().__init__(
            _stage(1, c(64), 1, 2),
            _stage(c(64), c(128), 2, 2),
            _stage(c(128), c(256), 2, 2),
            _stage(c(256), c(512), 1, 3, dilation=2),
        )
        self.out_channels = c(512)


class PixelRMSNorm(nn.Module):
    """``x / rms_c(x) * gain``: every pixel's feature vector scaled to unit root-mean-square over channels
    (a learnable gain per channel, starting at 1). It bounds the scale of f's and h's outputs without
    removing anything but each pixel's overall scale: unlike GroupNorm or InstanceNorm it keeps every
    pixel's absolute level and every channel pattern, and it looks at one pixel only."""

    def __init__(self, channels: int, eps: float = 1e-6):
        super().__init__()
        self.gain = nn.Parameter(torch.ones(1, channels, 1, 1))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(dim=1, keepdim=True) + self.eps) * self.gain


class ColorEmbeddingTop(nn.Sequential):
    """Table 1 after the trunk: conv 3x3/1 512, 3 residual blocks at rate 4, conv 3x3/1 160 (then PixelRMSNorm when
    ``output_norm``)."""

    def __init__(self, config: PscConfig):
        c = config.channels
        layers = [_stage(c(512), c(512), 1, 3, dilation=4), wn_conv2d(c(512), c(160), 3, padding=1)]
        super().__init__(*layers, *([PixelRMSNorm(c(160))] if config.output_norm else []))
        self.out_channels = c(160)


class SegmentationTop(nn.Module):
    """Table 2 after the trunk: conv 3x3/1 512, 3 residual blocks at rate 2 (then PixelRMSNorm when ``output_norm``), ASPP (6, 12, 18)
    summed."""

    def __init__(self, config: PscConfig):
        super().__init__()
        c = config.channels
        norm = [PixelRMSNorm(c(512))] if config.output_norm else []
        self.body = nn.Sequential(*_stage(c(512), c(512), 1, 3, dilation=2), *norm)
        self.aspp = nn.ModuleList(
            wn_conv2d(c(512), config.num_classes, 3, padding=rate, dilation=rate, init_scale=0.1)
            for rate in config.aspp_rates
        )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        x = self.body(features)
        return sum(branch(x) for branch in self.aspp)


class FilmConditioning(nn.Module):
    """The feature-transform alternative to concatenation: ``f * (1 + gamma) + beta``, (gamma, beta) from
    two 3x3 convolutions on h's class probabilities (Perez et al. 2018; Wang et al. 2018). The last conv
    starts at zero so the transform starts as the identity."""

    def __init__(self, num_classes: int, channels: int):
        super().__init__()
        self.hidden = wn_conv2d(num_classes, channels, 3, padding=1)
        self.out = nn.Conv2d(channels, 2 * channels, 3, padding=1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, features: torch.Tensor, probabilities: torch.Tensor) -> torch.Tensor:
        gamma, beta = self.out(F.relu(self.hidden(probabilities))).chunk(2, dim=1)
        return features * (1.0 + gamma) + beta


# ------------------------------------------------------------------------------------------------------ model


@dataclass
class PscOutputs:
    """What ``forward`` returns; every map is at 1/4 of the input resolution.

    emb_params / gen_params: ``(N, P, H/4, W/4)`` mixture parameters (see ``semcolor.models.mixture``);
    seg_logits: ``(N, num_classes, H/4, W/4)`` or None for ``plain``; embedding: f's ``(N, 160w, H/4, W/4)``.
    """

    emb_params: torch.Tensor
    gen_params: torch.Tensor
    seg_logits: torch.Tensor | None
    embedding: torch.Tensor


def to_mixture_units(ab_unit: torch.Tensor) -> torch.Tensor:
    """Project units (``semcolor.scaling``: ab / 128, what the loader gives and every family returns) ->
    the mixture's 8-bit grid ``x = (ab + 128) / 127.5 - 1``, where the Lab8 code k sits exactly at
    ``k / 127.5 - 1`` (the PixelCNN++ discretization needs the codes on its bin centres)."""
    return (ab_unit * AB_SCALE + 128.0) / 127.5 - 1.0


def from_mixture_units(x: torch.Tensor) -> torch.Tensor:
    """The mixture's 8-bit grid -> project units (ab / 128); inverse of ``to_mixture_units``."""
    return ((x + 1.0) * 127.5 - 128.0) / AB_SCALE


def downsample_ab(ab: torch.Tensor) -> torch.Tensor:
    """Full-resolution a/b ``(N, 2, H, W)`` in [-1, 1] -> ``(N, 2, H/4, W/4)``: 4x4 mean, on the grid."""
    return mixture.quantize(F.avg_pool2d(ab, DOWNSAMPLE))


def downsample_L(L: torch.Tensor) -> torch.Tensor:
    """L ``(N, 1, H, W)`` in [-1, 1] -> its 4x4 block average ``(N, 1, H/4, W/4)`` (for the L coupling)."""
    return F.avg_pool2d(L, DOWNSAMPLE)


def combine_L_ab(L: torch.Tensor, ab: torch.Tensor) -> torch.Tensor:
    """Join the original full-resolution L with (upsampled) a/b into Lab in physical units.

    L: ``(N, 1, H, W)`` in [-1, 1]; ab: ``(N, 2, h, w)`` or ``(N, k, 2, h, w)`` in project units (ab / 128,
    as ``colorize_fast`` and ``sample`` return) at any resolution.
    Returns ``(N, 3, H, W)`` or ``(N, k, 3, H, W)`` with L in [0, 100] and a, b in [-128, 127] (channel
    order L, a, b), ready for ``semcolor.color.lab_to_srgb_torch``.
    """
    ab_full = upsample_ab(ab, (L.shape[-2], L.shape[-1]))
    L_full = L if ab.dim() == 4 else L.unsqueeze(1).expand(-1, ab.shape[1], -1, -1, -1)
    return unit_to_lab(L_full, ab_full)


class PixelatedSemanticColorization(nn.Module):
    """The whole model: f (colour embedding), h (segmentation, ``embed``/``full``) and g (generator)."""

    def __init__(self, config: PscConfig):
        super().__init__()
        self.config = config
        self.trunk = SharedTrunk(config)
        self.color_top = ColorEmbeddingTop(config)
        num_params = mixture.num_mixture_params(config.num_mixtures, config.condition_on_L)
        self.embedding_head = wn_conv2d(self.color_top.out_channels, num_params, 1, init_scale=0.1)
        self.seg_top = SegmentationTop(config) if config.has_segmentation else None
        cond_channels = self.color_top.out_channels
        self.film = None
        if config.variant == "full":
            if config.seg_conditioning == "film":
                self.film = FilmConditioning(config.num_classes, cond_channels)
            else:
                cond_channels += config.num_classes
        self.generator = ConditionalGatedPixelCNN(
            cond_channels=cond_channels,
            channels=config.generator_channels,  # not scaled by width: g's capacity is chosen on its own
            num_layers=config.generator_layers,
            kernel=config.generator_kernel,
            num_mixtures=config.num_mixtures,
            condition_on_L=config.condition_on_L,
        )

    # --- the three parts ---------------------------------------------------------------------------------

    def _check_L(self, L: torch.Tensor) -> None:
        if L.dim() != 4 or L.shape[1] != 1 or L.shape[-1] % DOWNSAMPLE or L.shape[-2] % DOWNSAMPLE:
            raise ValueError(
                f"L must be (N, 1, H, W) with H and W multiples of {DOWNSAMPLE}, got {tuple(L.shape)}"
            )

    def encode(self, L: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """f's features ``(N, 160w, H/4, W/4)`` and h's logits ``(N, classes, H/4, W/4)`` (None for plain)."""
        self._check_L(L)
        shared = self.trunk(L)
        embedding = self.color_top(shared)
        seg_logits = self.seg_top(shared) if self.seg_top is not None else None
        return embedding, seg_logits

    def generator_condition(self, embedding: torch.Tensor, seg_logits: torch.Tensor | None) -> torch.Tensor:
        """What g is conditioned on: f's features, with h's class probabilities in the ``full`` flow."""
        if self.config.variant != "full":
            return embedding
        probabilities = torch.softmax(seg_logits, dim=1)
        if self.film is not None:
            return self.film(embedding, probabilities)
        return torch.cat([embedding, probabilities], dim=1)

    def forward(self, L: torch.Tensor, ab_quarter: torch.Tensor) -> PscOutputs:
        """Teacher-forced pass. L ``(N, 1, H, W)`` in [-1, 1]; ab_quarter ``(N, 2, H/4, W/4)`` in [-1, 1]."""
        embedding, seg_logits = self.encode(L)
        expected = (L.shape[0], 2, L.shape[-2] // DOWNSAMPLE, L.shape[-1] // DOWNSAMPLE)
        if tuple(ab_quarter.shape) != expected:
            raise ValueError(
                f"ab_quarter must have shape {expected} for L {tuple(L.shape)}, got {tuple(ab_quarter.shape)}"
            )
        cond = self.generator_condition(embedding, seg_logits)
        return PscOutputs(
            emb_params=self.embedding_head(embedding),
            gen_params=self.generator(ab_quarter, cond),
            seg_logits=seg_logits,
            embedding=embedding,
        )

    # --- training ------------------------------------------------------------------------------------------

    def compute_losses(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Losses for a batch ``{'L': (N,1,H,W), 'ab': (N,2,H,W), 'seg': (N,H,W)}`` (seg unused by ``plain``).

        L and ab in [-1, 1] at full resolution; seg long/uint8 with 255 = ignore. Returns scalars, for every
        term whose weight is > 0: the raw term (``emb`` and ``gen`` in nats per a/b value, ``seg`` in nats per
        labelled pixel), the weighted term (``emb_weighted`` = emb_weight x emb, ...), ``emb_bpd`` /
        ``gen_bpd`` (bits per dimension, detached), and ``loss`` = the sum of the weighted terms (L_sum).

        L_seg is the cross-entropy at full resolution of h's logits upsampled bilinearly (align_corners
        False), i.e. exactly what ``segment(L, full_resolution=True)`` and the evaluation compare with the
        label map: no subsampled labels whose grid disagrees with the logits'.
        """
        config = self.config
        needs_seg = config.has_segmentation and (config.seg_weight > 0
                                                 or (config.variant == "full" and config.gen_weight > 0))
        for key in ("L", "ab") + (("seg",) if needs_seg else ()):
            if key not in batch:
                raise KeyError(f"compute_losses: batch has no {key!r} (variant {config.variant!r} needs it)")
        L, ab = batch["L"], batch["ab"]
        self._check_L(L)
        if ab.shape[0] != L.shape[0] or ab.shape[1] != 2 or ab.shape[-2:] != L.shape[-2:]:
            raise ValueError(
                f"batch['ab'] must be (N, 2, H, W) like L {tuple(L.shape)}, got {tuple(ab.shape)}"
            )
        ab_quarter = downsample_ab(to_mixture_units(ab))
        L_quarter = downsample_L(L) if config.condition_on_L else None
        k, use_L = config.num_mixtures, config.condition_on_L
        shared = self.trunk(L)
        seg_logits = self.seg_top(shared) if needs_seg else None
        losses: dict[str, torch.Tensor] = {}
        if config.emb_weight > 0 or config.gen_weight > 0:
            embedding = self.color_top(shared)
            if config.emb_weight > 0:
                losses["emb"] = mixture.nll_per_dim(self.embedding_head(embedding), ab_quarter, k, use_L, L_quarter)
            if config.gen_weight > 0:
                cond = self.generator_condition(embedding, seg_logits)
                losses["gen"] = mixture.nll_per_dim(self.generator(ab_quarter, cond), ab_quarter, k, use_L, L_quarter)
        if seg_logits is not None and config.seg_weight > 0:
            losses["seg"] = self._segmentation_loss(seg_logits, batch["seg"], L.shape)
        weights = {"emb": config.emb_weight, "gen": config.gen_weight, "seg": config.seg_weight}
        weighted = {f"{name}_weighted": weights[name] * value for name, value in losses.items()}
        losses["loss"] = sum(weighted.values())
        losses.update(weighted)
        for name in ("emb", "gen"):
            if name in losses:
                losses[f"{name}_bpd"] = mixture.bits_per_dim(losses[name].detach())
        return losses

    def _segmentation_loss(self, logits: torch.Tensor, seg: torch.Tensor, shape: torch.Size) -> torch.Tensor:
        if seg.shape != (shape[0], shape[-2], shape[-1]):
            raise ValueError(f"batch['seg'] must be (N, H, W) like L {tuple(shape)}, got {tuple(seg.shape)}")
        labels = seg.long()
        valid = labels[labels != IGNORE_INDEX]
        if valid.numel() and int(valid.max()) >= self.config.num_classes:
            raise ValueError(
                f"batch['seg'] holds class {int(valid.max())} but num_classes={self.config.num_classes}; "
                f"set num_classes to the source's class count (255 is the ignore label)"
            )
        if not valid.numel():  # an image with no labelled pixel contributes no segmentation gradient (not NaN)
            return logits.sum() * 0.0
        upsampled = F.interpolate(logits, size=labels.shape[-2:], mode="bilinear", align_corners=False)
        return F.cross_entropy(upsampled, labels, ignore_index=IGNORE_INDEX)

    @torch.no_grad()
    def data_dependent_init(self, batch: dict[str, torch.Tensor]) -> int:
        """Initialise the model from one real training batch; the training loop calls it once, on a fresh
        start, before EMA and DDP copy the weights. Returns the number of layers initialised.

        1. Every weight-normalized layer: PixelCNN++'s data-dependent init (``semcolor.models.weight_norm``),
           so activations start at unit scale at any width.
        2. The two mixture heads (f's ``embedding_head``, g's ``head_out``) start as the batch's marginal
           a/b distribution: component k's location bias at the (k + 1/2)/K quantile of a and of b, and every
           log-scale bias at log(std * sqrt(3) / pi) (the logistic with the data's std). Without it the heads
           start at scale 1 (the whole a/b range), and Adam, which moves a bias by about lr per step, needs
           thousands of steps to reach the data's scale: far more than a CPU demo trains.
        """
        count = data_dependent_init(self, lambda: self.compute_losses(batch))
        ab_quarter = downsample_ab(to_mixture_units(batch["ab"]))
        k = self.config.num_mixtures
        quantiles = (torch.arange(k, dtype=ab_quarter.dtype, device=ab_quarter.device) + 0.5) / k
        values = ab_quarter.transpose(0, 1).reshape(2, -1)
        locations = torch.quantile(values, quantiles, dim=1)  # (K, 2)
        log_scales = torch.log(values.std(dim=1) * math.sqrt(3.0) / math.pi).clamp(min=mixture.LOG_SCALE_MIN)
        for head in (self.embedding_head, self.generator.head_out):
            # added to the bias step 1 set (which made the head's output zero-mean on this batch)
            head.bias[1 * k : 2 * k] += locations[:, 0]
            head.bias[2 * k : 3 * k] += locations[:, 1]
            head.bias[3 * k : 4 * k] += log_scales[0]
            head.bias[4 * k : 5 * k] += log_scales[1]
        return count

    # --- inference -----------------------------------------------------------------------------------------

    @torch.no_grad()
    def segment(self, L: torch.Tensor, full_resolution: bool = False) -> torch.Tensor:
        """h's class logits ``(N, classes, H/4, W/4)`` (bilinearly upsampled to ``(H, W)`` if asked)."""
        if self.seg_top is None:
            raise ValueError("the 'plain' variant has no segmentation branch; use variant 'embed' or 'full'")
        _, logits = self.encode(L)
        if full_resolution:
            logits = F.interpolate(logits, size=L.shape[-2:], mode="bilinear", align_corners=False)
        return logits

    @torch.no_grad()
    def colorize_fast(self, L: torch.Tensor, statistic: Literal["mean", "mode"] = "mean") -> torch.Tensor:
        """Non-autoregressive colourization from f alone: a/b ``(N, 2, H/4, W/4)`` in project units (ab / 128).

        ``mean`` is the mixture's expectation per pixel; ``mode`` the centre of its most probable component.
        Use ``combine_L_ab(L, ab)`` for the full-resolution Lab image.
        """
        embedding, _ = self.encode(L)
        params = self.embedding_head(embedding)
        L_quarter = downsample_L(L) if self.config.condition_on_L else None
        k, use_L = self.config.num_mixtures, self.config.condition_on_L
        if statistic == "mean":
            return from_mixture_units(mixture.mean(params, k, use_L, L_quarter))
        if statistic == "mode":
            return from_mixture_units(mixture.mode(params, k, use_L, L_quarter))
        raise ValueError(f"statistic must be 'mean' or 'mode', got {statistic!r}")

    @torch.no_grad()
    def sample(
        self,
        L: torch.Tensor,
        k: int = 1,
        temperature: float = 1.0,
        seed: int = 0,
        method: Literal["cached", "naive"] = "cached",
        progress: bool = False,
        seeds: Sequence[int] | None = None,
    ) -> torch.Tensor:
        """Draw ``k`` colourizations per image from g: a/b ``(N, k, 2, H/4, W/4)`` in project units (ab / 128),
        on the 8-bit code grid.

        Noise: with ``seeds`` (one int per image), image n's k samples use only the noise drawn from
        ``seeds[n]`` (``mixture.sampling_noise``), so an image gets the same samples whatever batch it is in
        and images with different seeds get independent streams; callers that split a set into chunks should
        pass per-image seeds (e.g. ``seed + index in the set``). Without ``seeds``, one stream seeded by
        ``seed`` covers the whole call: the images of one call differ, but a second call with the same
        ``seed`` repeats the same noise for its n-th image.
        Same noise -> same samples, for either ``method`` (``naive``: one full pass of g per pixel;
        ``cached``: incremental, see ``semcolor.models.pixelcnn``). ``temperature`` > 0 (1 = the
        model's distribution). ``combine_L_ab(L, samples)`` gives ``(N, k, 3, H, W)`` Lab at full resolution.
        """
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        samplers = {"naive": sample_naive, "cached": sample_cached}
        if method not in samplers:
            raise ValueError(f"method must be 'cached' or 'naive', got {method!r}")
        count = L.shape[0]
        if seeds is not None and len(seeds) != count:
            raise ValueError(f"seeds must hold one seed per image ({count}), got {len(seeds)}")
        with torch.nn.utils.parametrize.cached():  # weight norm: compute each weight once, not per pixel
            embedding, seg_logits = self.encode(L)
            cond = self.generator_condition(embedding, seg_logits).repeat_interleave(k, dim=0)
            L_quarter = downsample_L(L).repeat_interleave(k, dim=0) if self.config.condition_on_L else None
            shape = (k, self.config.num_mixtures + 2, *cond.shape[-2:])
            if seeds is None:
                noise = mixture.sampling_noise(seed, (count * k,) + shape[1:])
            else:
                noise = torch.cat([mixture.sampling_noise(s, shape) for s in seeds])
            ab = samplers[method](
                self.generator,
                cond,
                num_mixtures=self.config.num_mixtures,
                condition_on_L=self.config.condition_on_L,
                L_quarter=L_quarter,
                temperature=temperature,
                progress=progress,
                noise=noise,
            )
        return from_mixture_units(ab.reshape(count, k, *ab.shape[1:]))


    # --- the ColorizationModel and Segmenter interfaces (semcolor.models.interface) -------------------------
    # Inputs of any size are resized (bilinear, antialiased when shrinking) to multiples of 4, at least 16;
    # the quarter-resolution outputs come back bilinearly at the input's size.
    size_multiple = DOWNSAMPLE
    working_size = WORKING_SIZE
    input_channels = 1
    takes_map = False
    can_sample = True

    @property
    def predicts_map(self) -> bool:
        return self.config.has_segmentation

    @property
    def num_classes(self) -> int | None:
        return self.config.num_classes if self.config.has_segmentation else None

    def working_shape(self, height: int, width: int, long_side: int | None = None) -> tuple[int, int]:
        """Long side ``long_side`` (default 128, the paper's training size), multiples of 4."""
        return _working_shape(height, width, long_side or self.working_size, DOWNSAMPLE)

    def _model_size(self, L: torch.Tensor) -> torch.Tensor:
        size = tuple(max(4 * DOWNSAMPLE, round_to(s, DOWNSAMPLE)) for s in L.shape[-2:])
        return resize_gray(L, size)

    def predict_ab(self, L: torch.Tensor, semantic_map: torch.Tensor | None = None,
                   segmenter: Segmenter | None = None) -> torch.Tensor:
        """The non-autoregressive head's mixture mean (``colorize_fast``) at L's size; no map is used."""
        with eval_mode(self):
            return upsample_ab(self.colorize_fast(self._model_size(L)), tuple(L.shape[-2:]))

    def predict_logits(self, L: torch.Tensor, ab: torch.Tensor | None = None) -> torch.Tensor:
        """The segmentation branch's logits at L's size (``ab`` is not an input of h); ValueError for plain."""
        with eval_mode(self):
            return upsample_logits(self.segment(self._model_size(L), full_resolution=True), tuple(L.shape[-2:]))

    def predict_map(self, L: torch.Tensor, ab: torch.Tensor | None = None) -> torch.Tensor | None:
        """h's argmax map at L's size; None for ``plain`` (no segmentation branch)."""
        return self.predict_logits(L).argmax(dim=1) if self.config.has_segmentation else None

    @torch.no_grad()
    def sample_ab(self, L: torch.Tensor, seeds: Sequence[int], k: int = 1, temperature: float = 1.0,
                  progress: bool = False, size: tuple[int, int] | None = None) -> torch.Tensor:
        """k draws per image (N, k, 2, *size) (default L's size), upsampled once from 1/4. Image n's noise comes from ``seeds[n]`` alone when
        ``sample`` takes per-image seeds, so an image's samples do not depend on its batch. A subclass whose
        ``sample`` takes only one seed is drawn in fixed groups of ``SAMPLE_GROUP`` images, each seeded with
        its first image's seed (a fixed function of the image's index, not of any batch size)."""
        import inspect

        if len(seeds) != L.shape[0]:
            raise ValueError(f"seeds must hold one seed per image ({L.shape[0]}), got {len(seeds)}")
        L_in = self._model_size(L)
        with eval_mode(self):
            if "seeds" in inspect.signature(self.sample).parameters:
                draws = self.sample(L_in, k=k, temperature=temperature, seeds=list(seeds), progress=progress)
            else:
                draws = torch.cat([
                    self.sample(L_in[start : start + SAMPLE_GROUP], k=k, temperature=temperature,
                                seed=int(seeds[start]), progress=progress)
                    for start in range(0, L_in.shape[0], SAMPLE_GROUP)
                ])
        return upsample_ab(draws, tuple(size or L.shape[-2:]))

    def accelerated(self) -> ColorizationModel:
        return self


# -------------------------------------------------------------------------------------------------- factories


def _build(variant: str, config: dict[str, Any]) -> PixelatedSemanticColorization:
    if "variant" in config and config["variant"] != variant:
        raise ValueError(
            f"psc_{variant}: variant is fixed by the model name, got variant={config['variant']!r}"
        )
    config = {**config, "variant": variant}
    return PixelatedSemanticColorization(load_config(PscConfig, config, f"psc_{variant}"))


@register_model("psc_plain")
def psc_plain(**config: Any) -> PixelatedSemanticColorization:
    """Purple flow: f + g, no semantics. ``config``: any :class:`PscConfig` field but ``variant``."""
    return _build("plain", config)


@register_model("psc_embed")
def psc_embed(**config: Any) -> PixelatedSemanticColorization:
    """Purple + blue flows: segmentation branch h trained jointly, sharing f's bottom layers."""
    return _build("embed", config)


@register_model("psc_full")
def psc_full(**config: Any) -> PixelatedSemanticColorization:
    """Purple + blue + green flows: h's class probabilities also condition g (concat or FiLM)."""
    return _build("full", config)

