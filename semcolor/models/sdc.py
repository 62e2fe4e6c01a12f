"""Semantic-driven Colorization: the two-stream U-Net (Ho et al., ``shared/seeds/004_*``, section 2.3).

A gray image and its semantic map go through the SAME encoder; at every encoder level the gray features
are instance-normalized (no affine) and concatenated with the untouched semantic features; those joined
features are the skips of a U-Net decoder that predicts the two chroma channels. GridNet
(``semcolor.models.gridnet``) supplies the map when the user gives none (``colorize``).

Tensors (the batch contract of ``compute_losses``; N batch, H x W pixels, channel order as listed):
- ``L``: (N, 1, H, W) float, Lab lightness as ``L / 50 - 1`` in [-1, 1] (L in [0, 100]). The release feeds
  8-bit luma / 255 mapped to [-1, 1]; with luma = round(L * 255 / 100) the two agree to 8-bit rounding.
- ``ab``: (N, 2, H, W) float, Lab (a, b) / 128, i.e. [-128, 127] -> [-1, 0.992]. The release uses 8-bit
  (a + 128) / 255 mapped to [-1, 1] = a / 127.5 + 1 / 255: within 1 % of ours.
- ``seg``: (N, H, W) long, class index in [0, num_classes) (release: 60 = background + PASCAL-Context 59, in
  the VOC-first order of ``shared/fixtures/class-lists/pascal-context-59.txt``) or 255 = unknown/ignored.
- output: (N, 2, H, W), ab in the ``ab`` scaling; with the default tanh head it lies in (-1, 1).
- H and W must be multiples of 32 (five stride-2 levels) and the 1/32 level must have more than one pixel
  (Instance Normalization needs > 1 spatial element): 32x64 is the smallest input.

The network, read against the paper (section 2.3, Figs. 5-6) and the public release (``networks.py``,
``components.py``). Same in both and here:
- one encoder, its weights shared by the gray stream and the semantic stream (the paper: "both inputs have
  the same pose");
- the streams join at every encoder level by CONCATENATION, IN(gray) first, then semantic; this is why the
  decoder widths are twice the encoder widths (the paper's channel plan: [32 .. 512] doubled);
- Instance Normalization without affine parameters (eps 1e-5) on the gray features only, and only on the
  copy that joins the skip: the gray stream itself goes on un-normalized to the next encoder layer;
- an encoder layer is ``conv-LeakyReLU-conv-LeakyReLU`` (3x3), its first conv strided except in layer 1; a
  decoder layer is ``convT(stride 2)-LeakyReLU-[+ skip]-conv-LeakyReLU``;
- Huber loss, delta 1, on ab scaled to [-1, 1].
Where we follow the release instead of the paper text:
- depth: six encoder layers 1->32->64->128->256->512->512 (first stride 1, five stride 2) and five decoder
  layers 1024->1024->512->256->128->64 (the paper text says five layers per part, ending at 512);
- skips are ADDED to the decoder layer's up-sampled features, after its first (transposed) conv, as the
  release does (the paper's Fig. 6 shows a summation in the DL; a classic U-Net would concatenate);
- LeakyReLU negative slope 0.1 (``negative_slope``; the paper text says 0.01);
- no convolution has a bias (the paper is silent). This also makes the gray features exactly
  positively homogeneous in the input, so IN removes a contrast change ``a * L`` (a > 0) exactly;
- the semantic map enters as ONE channel, class index / (num_classes - 1) mapped to [-1, 1]
  (``semantic_encoding="scalar"``; the release divides by 59 with 60 classes).
Where we choose, and why:
- output head: a 3x3 conv 64->2 as in the release, then ``tanh`` (default) so the prediction lives in the
  target's range; the release ends in LeakyReLU(0.1) (``output_activation="leaky_relu"``), ``"linear"``
  applies none;
- unknown pixels (255) in the map: ``scalar`` has no spare value in [-1, 1] and maps them to background
  (class 0, the PASCAL-Context "everything else" class, -1.0); ``onehot`` gives them an all-zero vector (no
  class); ``embedding`` gives them a dedicated learned vector;
- ``onehot`` (num_classes channels) and ``embedding`` (``embedding_dim`` channels) cannot share the gray
  stream's 1-channel first conv: the semantic stream gets its own first conv (``semantic_stem``) and shares
  every later encoder conv;
- ``semantic_stream=False`` (ablation): the map is not used; the skips carry the gray features alone, so the
  decoder widths are halved (512->512->256->128->64->32 at width 1.0): a one-stream U-Net;
- ``instance_norm=False`` (the paper's IN ablation, section 4.1): the gray features join unnormalized;
- ``width`` multiplies every channel count (rounded, at least 1); 1.0 is the paper/release width, 37.70 M
  parameters with the scalar encoding (release: 37.7 M).

Instance Normalization, contrast and brightness: IN removes a contrast change around mid-gray, ``a * L`` with
a > 0, exactly up to its eps (bias-free convs and LeakyReLU are positively homogeneous, so every gray
feature map scales by a). A brightness offset ``L + b`` is NOT removed (a constant's convolution differs at
the zero-padded borders and LeakyReLU is not shift-equivariant, so the offset changes the features'
shapes, not only their mean and scale). ``center_gray=True`` (ours, off by default: not in paper or release)
subtracts each image's mean L first, which makes IN's invariance hold for any ``a * L + b``.
Initialisation: He-normal for LeakyReLU and a small (x 0.1) head (``reset_parameters``), not PyTorch's
default (the release's): see its docstring.
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn as nn
import torch.nn.functional as F

from semcolor.config import load_config
from semcolor.models import register_model
from semcolor.models.gridnet import check_class_map
from semcolor.models.interface import ColorizationModel, Segmenter, pad_to_multiple
from semcolor.models.interface import working_shape as _working_shape
from semcolor.data.sources.base import IGNORE_INDEX

ENCODER_CHANNELS = (32, 64, 128, 256, 512, 512)  # release widths; layer 1 at stride 1, the rest stride 2
SIZE_MULTIPLE = 2 ** (len(ENCODER_CHANNELS) - 1)  # 32
WORKING_SIZE = 352  # the paper's and release's training/inference size: the long side a photo is resized to

SemanticEncoding = Literal["scalar", "onehot", "embedding"]
OutputActivation = Literal["tanh", "linear", "leaky_relu"]


@dataclass(frozen=True)
class SdcConfig:
    """Two-stream U-Net hyper-parameters; the defaults are the release's network with a tanh head.

    num_classes: classes of the semantic map (release 60).
    semantic_encoding: how the map becomes input channels: "scalar" (release), "onehot", "embedding".
    embedding_dim: channels of the learned embedding (only for "embedding").
    instance_norm: instance-normalize the gray features before they join the semantic ones (paper: on).
    semantic_stream: use the semantic map at all (False: a gray-only, one-stream U-Net).
    width: multiplier on every channel count (1.0 = paper width).
    negative_slope: LeakyReLU slope (release 0.1; the paper text says 0.01).
    output_activation: "tanh" (ours, output in (-1, 1)), "linear", or "leaky_relu" (release, same slope).
    instance_norm_eps: the eps of Instance Normalization (PyTorch's and the release's 1e-5).
    center_gray: subtract each image's mean of L before the gray stream (neither paper nor release; with
        IN it makes the gray skip features invariant to brightness as well as contrast).
    """

    num_classes: int = 60
    semantic_encoding: SemanticEncoding = "scalar"
    embedding_dim: int = 8
    instance_norm: bool = True
    semantic_stream: bool = True
    width: float = 1.0
    negative_slope: float = 0.1
    output_activation: OutputActivation = "tanh"
    instance_norm_eps: float = 1e-5
    center_gray: bool = False

    def __post_init__(self) -> None:
        if self.num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {self.num_classes}")
        if self.semantic_encoding not in ("scalar", "onehot", "embedding"):
            raise ValueError(
                f"semantic_encoding must be 'scalar', 'onehot' or 'embedding', got {self.semantic_encoding!r}"
            )
        if self.embedding_dim < 1:
            raise ValueError(f"embedding_dim must be >= 1, got {self.embedding_dim}")
        if not self.width > 0:
            raise ValueError(f"width must be > 0, got {self.width}")
        if not 0.0 <= self.negative_slope < 1.0:
            raise ValueError(f"negative_slope must be in [0, 1), got {self.negative_slope}")
        if self.output_activation not in ("tanh", "linear", "leaky_relu"):
            raise ValueError(
                f"output_activation must be 'tanh', 'linear' or 'leaky_relu', got {self.output_activation!r}"
            )
        if not self.instance_norm_eps > 0:
            raise ValueError(f"instance_norm_eps must be > 0, got {self.instance_norm_eps}")

    @property
    def encoder_channels(self) -> tuple[int, ...]:
        """Output channels of the six encoder layers after the width multiplier."""
        return tuple(max(1, round(c * self.width)) for c in ENCODER_CHANNELS)

    @property
    def skip_channels(self) -> tuple[int, ...]:
        """Channels of the joined features at each encoder level (gray + semantic, or gray alone)."""
        streams = 2 if self.semantic_stream else 1
        return tuple(streams * c for c in self.encoder_channels)

    @property
    def semantic_channels(self) -> int:
        """Input channels of the encoded semantic map."""
        channels = {"scalar": 1, "onehot": self.num_classes, "embedding": self.embedding_dim}
        return channels[self.semantic_encoding]


def _conv3x3(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)


class EncoderLayer(nn.Module):
    """``conv(stride)-LeakyReLU-conv-LeakyReLU``, 3x3, no biases (the paper's CL)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, negative_slope: float) -> None:
        super().__init__()
        self.conv1 = _conv3x3(in_channels, out_channels, stride)
        self.conv2 = _conv3x3(out_channels, out_channels)
        self.negative_slope = negative_slope

    def forward(self, x: torch.Tensor, conv1: nn.Module | None = None) -> torch.Tensor:
        """``conv1`` replaces the layer's first conv (the semantic stem of multi-channel encodings)."""
        x = F.leaky_relu((conv1 or self.conv1)(x), self.negative_slope)
        return F.leaky_relu(self.conv2(x), self.negative_slope)


class DecoderLayer(nn.Module):
    """``convT(stride 2)-LeakyReLU, + skip, conv-LeakyReLU``, 3x3, no biases (the paper's DL)."""

    def __init__(self, in_channels: int, out_channels: int, negative_slope: float) -> None:
        super().__init__()
        self.conv1 = nn.ConvTranspose2d(in_channels, out_channels, 3, stride=2, padding=1, output_padding=1,
                                        bias=False)
        self.conv2 = _conv3x3(out_channels, out_channels)
        self.negative_slope = negative_slope

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = F.leaky_relu(self.conv1(x), self.negative_slope) + skip
        return F.leaky_relu(self.conv2(x), self.negative_slope)


class SemanticMapInput(nn.Module):
    """Turns a class-index map (N, H, W) into the semantic stream's input (N, C, H, W) float.

    scalar: C = 1, class / (num_classes - 1) * 2 - 1 in [-1, 1]; 255 -> background (-1.0).
    onehot: C = num_classes, exact one-hot; 255 -> all zeros.
    embedding: C = embedding_dim, a learned vector per class plus one for 255.
    """

    def __init__(self, config: SdcConfig) -> None:
        super().__init__()
        self.encoding = config.semantic_encoding
        self.num_classes = config.num_classes
        if self.encoding == "embedding":
            # row num_classes is the dedicated "unknown" vector
            self.embedding = nn.Embedding(config.num_classes + 1, config.embedding_dim)

    def forward(self, seg: torch.Tensor) -> torch.Tensor:
        check_class_map(seg, self.num_classes, "SemanticDrivenUNet")
        seg = seg.long()
        unknown = seg == IGNORE_INDEX
        if self.encoding == "scalar":
            index = seg.masked_fill(unknown, 0).float()
            return (index * (2.0 / (self.num_classes - 1)) - 1.0).unsqueeze(1)
        if self.encoding == "onehot":
            onehot = F.one_hot(seg.masked_fill(unknown, 0), self.num_classes)
            onehot = onehot.masked_fill(unknown.unsqueeze(-1), 0)
            return onehot.permute(0, 3, 1, 2).float()
        return self.embedding(seg.masked_fill(unknown, self.num_classes)).permute(0, 3, 1, 2)


class SemanticDrivenUNet(nn.Module):
    """The colorization network. ``forward(L, seg=None) -> ab``; shapes and ranges in the module docstring."""

    def __init__(self, config: SdcConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or SdcConfig()
        enc = config.encoder_channels
        slope = config.negative_slope
        self.encoder = nn.ModuleList(
            EncoderLayer(c_in, c_out, 1 if i == 0 else 2, slope)
            for i, (c_in, c_out) in enumerate(zip((1, *enc[:-1]), enc))
        )
        self.semantic_input: SemanticMapInput | None = None
        self.semantic_stem: nn.Conv2d | None = None
        if config.semantic_stream:
            self.semantic_input = SemanticMapInput(config)
            if config.semantic_channels != 1:
                self.semantic_stem = _conv3x3(config.semantic_channels, enc[0])
        skips = config.skip_channels
        # decoder layer k goes from level 6-k to level 5-k: 1024->1024->512->256->128->64 at width 1.0
        self.decoder = nn.ModuleList(
            DecoderLayer(skips[i + 1], skips[i], slope) for i in range(len(skips) - 2, -1, -1)
        )
        self.head = _conv3x3(skips[0], 2)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """He initialisation for LeakyReLU (fan-in), so activations keep their scale through the depth.

        PyTorch's default init (the release's) shrinks them at every conv; after a dozen bias-free convs
        the features of a fresh net fall below IN's eps and the network starts almost constant.
        """
        gain = nn.init.calculate_gain("leaky_relu", self.config.negative_slope)
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
                out_or_in, in_or_out, kh, kw = module.weight.shape
                in_channels = in_or_out if isinstance(module, nn.Conv2d) else out_or_in
                # a stride-s transposed conv feeds each output from 1/s^2 of its kernel taps
                transposed = isinstance(module, nn.ConvTranspose2d)
                taps = kh * kw / (module.stride[0] * module.stride[1] if transposed else 1)
                nn.init.normal_(module.weight, 0.0, gain / (in_channels * taps) ** 0.5)
        # a small head: a fresh net predicts low-chroma colors in tanh's linear range, not saturated ones
        nn.init.normal_(self.head.weight, 0.0, 0.1 / (self.head.in_channels * 9) ** 0.5)

    # -- the pieces, exposed so tests and tools can look inside -------------------------------------
    def _check_gray(self, L: torch.Tensor) -> None:
        if L.dim() != 4 or L.shape[1] != 1:
            raise ValueError(f"SemanticDrivenUNet expects L of shape (N, 1, H, W), got {tuple(L.shape)}")
        height, width = L.shape[-2:]
        if height % SIZE_MULTIPLE or width % SIZE_MULTIPLE:
            raise ValueError(
                f"SemanticDrivenUNet input is {height}x{width}; both sides must be multiples of "
                f"{SIZE_MULTIPLE} (five stride-2 layers): pad or resize first, e.g. with colorize()"
            )
        if (height // SIZE_MULTIPLE) * (width // SIZE_MULTIPLE) < 2 and self.config.instance_norm:
            raise ValueError(
                f"SemanticDrivenUNet input is {height}x{width}: the 1/{SIZE_MULTIPLE} level would be one "
                "pixel, too few for Instance Normalization; use at least 32x64"
            )

    def _check_map(self, L: torch.Tensor, seg: torch.Tensor | None) -> None:
        if not self.config.semantic_stream:
            if seg is not None:
                raise ValueError("SemanticDrivenUNet was built with semantic_stream=False: pass no seg")
            return
        if seg is None:
            raise ValueError(
                "SemanticDrivenUNet has a semantic stream and needs seg (N, H, W); "
                "colorize(model, L, gridnet=...) predicts one"
            )
        expected = (L.shape[0], *L.shape[-2:])
        if tuple(seg.shape) != expected:
            raise ValueError(f"seg must have shape (N, H, W) = {expected}, got {tuple(seg.shape)}")

    def _encode(self, x: torch.Tensor, first_conv: nn.Module | None = None) -> list[torch.Tensor]:
        features = []
        for i, layer in enumerate(self.encoder):
            x = layer(x, first_conv if i == 0 else None)
            features.append(x)
        return features

    def _normalize(self, features: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        if not self.config.instance_norm:
            return list(features)
        return [F.instance_norm(f, eps=self.config.instance_norm_eps) for f in features]

    def _gray_input(self, L: torch.Tensor) -> torch.Tensor:
        return L - L.mean(dim=(-2, -1), keepdim=True) if self.config.center_gray else L

    def gray_skip_features(self, L: torch.Tensor) -> list[torch.Tensor]:
        """The gray stream's contribution to the six skips (after IN when it is on), finest level first."""
        self._check_gray(L)
        return self._normalize(self._encode(self._gray_input(L)))

    def skip_features(self, L: torch.Tensor, seg: torch.Tensor | None = None) -> list[torch.Tensor]:
        """The joined features [IN(gray), semantic] at the six encoder levels, finest level first."""
        self._check_gray(L)
        self._check_map(L, seg)
        L = self._gray_input(L)
        if not self.config.semantic_stream:
            return self._normalize(self._encode(L))
        semantic = self.semantic_input(seg)
        if self.semantic_stem is None:
            # one pass over both streams: the same weights, twice the batch (identical results, faster)
            both = self._encode(torch.cat([L, semantic.to(L.dtype)], dim=0))
            gray = [f[: L.shape[0]] for f in both]
            sem = [f[L.shape[0]:] for f in both]
        else:
            gray = self._encode(L)
            sem = self._encode(semantic.to(L.dtype), self.semantic_stem)
        return [torch.cat([g, s], dim=1) for g, s in zip(self._normalize(gray), sem)]

    def decode(self, skips: Sequence[torch.Tensor]) -> torch.Tensor:
        """Decoder and head: joined skips (finest first) -> ab (N, 2, H, W)."""
        x = skips[-1]
        for layer, skip in zip(self.decoder, reversed(skips[:-1])):
            x = layer(x, skip)
        x = self.head(x)
        if self.config.output_activation == "tanh":
            return torch.tanh(x)
        if self.config.output_activation == "leaky_relu":
            return F.leaky_relu(x, self.config.negative_slope)
        return x

    def forward(self, L: torch.Tensor, seg: torch.Tensor | None = None) -> torch.Tensor:
        """L (N, 1, H, W) in [-1, 1], seg (N, H, W) long -> ab (N, 2, H, W) scaled as (a, b) / 128."""
        return self.decode(self.skip_features(L, seg))

    # --- the ColorizationModel interface (semcolor.models.interface) ------------------------------------
    size_multiple = SIZE_MULTIPLE
    working_size = WORKING_SIZE
    input_channels = 1
    predicts_map = False
    can_sample = False

    @property
    def takes_map(self) -> bool:
        return self.config.semantic_stream

    @property
    def num_classes(self) -> int | None:
        return self.config.num_classes if self.config.semantic_stream else None

    def working_shape(self, height: int, width: int, long_side: int | None = None) -> tuple[int, int]:
        """Long side ``long_side`` (default 352), multiples of 32, at least 64."""
        return _working_shape(height, width, long_side or self.working_size, SIZE_MULTIPLE)

    def predict_ab(self, L: torch.Tensor, semantic_map: torch.Tensor | None = None,
                   segmenter: Segmenter | None = None) -> torch.Tensor:
        """``colorize(self, L, semantic_map, segmenter, mode="pad")``: ab at L's own size."""
        return colorize(self, L, semantic_map, gridnet=segmenter, mode="pad")

    def predict_map(self, L: torch.Tensor) -> torch.Tensor | None:
        return None  # the map is an input, predicted by a segmenter (or given), not by the U-Net

    def sample_ab(self, L: torch.Tensor, seeds: Sequence[int], k: int = 1, temperature: float = 1.0,
                  progress: bool = False, size: tuple[int, int] | None = None) -> torch.Tensor:
        raise ValueError(f"{type(self).__name__} does not sample: only PixelCNN models (psc_*) draw colorizations")

    def accelerated(self) -> ColorizationModel:
        """``FastUNetInference`` behind the same ``predict_ab``, for SemanticDrivenUNet's own forward only: the
        fast path re-implements that forward from the weights, so a subclass with its own forward (a stand-in,
        an experiment) would be silently replaced by it; such a model runs eagerly (itself is returned)."""
        if type(self).forward is not SemanticDrivenUNet.forward:
            return self
        return AcceleratedUNet(self)

    def compute_losses(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Huber loss (delta 1, mean over pixels and both channels) of the predicted ab vs ``batch['ab']``.

        batch: ``L`` (N, 1, H, W), ``ab`` (N, 2, H, W), ``seg`` (N, H, W) as in the module docstring (``seg``
        is ignored when ``semantic_stream`` is off). Returns ``loss`` and ``ab_mae`` (detached mean absolute
        error in the same [-1, 1] scaling; x 128 for Lab units).
        """
        seg = batch["seg"] if self.config.semantic_stream else None
        prediction = self(batch["L"], seg)
        target = batch["ab"]
        if prediction.shape != target.shape:
            raise ValueError(
                f"ab target has shape {tuple(target.shape)}, prediction {tuple(prediction.shape)}"
            )
        loss = F.huber_loss(prediction, target, delta=1.0)
        return {"loss": loss, "ab_mae": (prediction.detach() - target).abs().mean()}


@torch.no_grad()
def colorize(
    model: SemanticDrivenUNet,
    L_full: torch.Tensor,
    seg_full: torch.Tensor | None = None,
    gridnet: Segmenter | None = None,
    mode: Literal["pad", "resize"] = "pad",
    forward: Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor] | None = None,
) -> torch.Tensor:
    """Colorize a photo of any size; returns ab at the photo's own resolution.

    L_full: (N, 1, H, W) or (1, H, W) float, ``L / 50 - 1`` in [-1, 1]. seg_full: (N, H, W) or (H, W) long
    class map (255 unknown); when None and the model uses semantics, ``gridnet`` predicts it (argmax) from
    the same gray input. mode "pad": pad bottom/right to multiples of 32 (at least 64; L by reflection, the
    map with 255: ``interface.pad_to_multiple``) and crop the result, so every pixel is computed at its own resolution; "resize": bilinear-resize L (nearest for the
    map) to the nearest multiples of 32 (at least 64) and resize ab back bilinearly (the release stretches
    to 352x352). Returns ab (N, 2, H, W) or (2, H, W), scaled as (a, b) / 128. Models run in eval mode
    (their previous mode is restored). A model without a semantic stream uses neither seg_full nor gridnet.
    ``forward``: what computes ``model(L, seg)`` (default the model itself; ``AcceleratedUNet`` passes its
    ``FastUNetInference``).
    """
    if mode not in ("pad", "resize"):
        raise ValueError(f"mode must be 'pad' or 'resize', got {mode!r}")
    unbatched = L_full.dim() == 3
    L = L_full.unsqueeze(0) if unbatched else L_full
    if L.dim() != 4 or L.shape[1] != 1:
        raise ValueError(f"L_full must have shape (N, 1, H, W) or (1, H, W), got {tuple(L_full.shape)}")
    seg = seg_full
    if seg is not None and seg.dim() == 2:
        seg = seg.unsqueeze(0)
    if seg is not None and seg.shape != (L.shape[0], *L.shape[-2:]):
        raise ValueError(f"seg_full must match L_full's (N, H, W) = {(L.shape[0], *L.shape[-2:])}, got "
                         f"{tuple(seg_full.shape)}")
    uses_map = model.config.semantic_stream
    if uses_map and seg is None and gridnet is None:
        raise ValueError(
            "colorize: the model needs a semantic map; pass seg_full or a gridnet to predict one"
        )
    height, width = L.shape[-2:]

    if mode == "pad":
        L_in = pad_to_multiple(L, SIZE_MULTIPLE, min_size=2 * SIZE_MULTIPLE)
        seg_in = None if seg is None else pad_to_multiple(seg.long(), SIZE_MULTIPLE, min_size=2 * SIZE_MULTIPLE)
    else:
        size = tuple(
            max(2 * SIZE_MULTIPLE, round(s / SIZE_MULTIPLE) * SIZE_MULTIPLE) for s in (height, width)
        )
        L_in = F.interpolate(L, size=size, mode="bilinear", align_corners=False)
        seg_in = None if seg is None else F.interpolate(
            seg.unsqueeze(1).float(), size=size, mode="nearest").squeeze(1).long()

    was_training = [(m, m.training) for m in (model, gridnet) if m is not None]
    try:
        for m, _ in was_training:
            m.eval()
        if uses_map and seg_in is None:
            seg_in = gridnet.predict_map(L_in)
        ab = (forward or model)(L_in, seg_in if uses_map else None)
    finally:
        for m, training in was_training:
            m.train(training)

    if mode == "pad":
        ab = ab[..., :height, :width]
    else:
        ab = F.interpolate(ab, size=(height, width), mode="bilinear", align_corners=False)
    return ab[0] if unbatched else ab


# ------------------------------------------------------------------------------------ fast CPU inference


class _PackedConv:
    """One Conv2d / stride-2 ConvTranspose2d of a model through oneDNN with its LeakyReLU fused, the weight
    reordered ("prepacked") once per input shape into oneDNN's preferred blocked layout. Eager convolutions
    redo that reorder on every call, and run the activation as a separate pass over memory."""

    def __init__(self, conv: nn.Module, negative_slope: float | None, shapes_kept: int) -> None:
        self.conv = conv
        self.transposed = isinstance(conv, nn.ConvTranspose2d)
        self.attr, self.scalars = ("none", []) if negative_slope is None else ("leaky_relu", [negative_slope])
        self.packed: collections.OrderedDict[tuple, torch.Tensor] = collections.OrderedDict()
        self.shapes_kept = shapes_kept

    def _weight(self, input_size: list[int]) -> torch.Tensor:
        conv = self.conv
        # the weight's version counter: an in-place change (load_state_dict, an optimizer step) repacks
        key = (tuple(input_size), conv.weight._version, conv.weight.data_ptr())
        weight = self.packed.get(key)
        if weight is not None:
            self.packed.move_to_end(key)
            return weight
        mkldnn = torch.ops.mkldnn
        if self.transposed:
            weight = mkldnn._reorder_convolution_transpose_weight(
                conv.weight.detach(), list(conv.padding), list(conv.output_padding), list(conv.stride),
                list(conv.dilation), conv.groups, input_size)
        else:
            weight = mkldnn._reorder_convolution_weight(
                conv.weight.detach(), list(conv.padding), list(conv.stride), list(conv.dilation), conv.groups,
                input_size)
        self.packed[key] = weight
        while len(self.packed) > self.shapes_kept:  # each shape holds a full copy of the weights
            self.packed.popitem(last=False)
        return weight

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        conv, weight = self.conv, self._weight(list(x.shape))
        bias = None if conv.bias is None else conv.bias.detach()
        if self.transposed:
            return torch.ops.mkldnn._convolution_transpose_pointwise(
                x, weight, bias, list(conv.padding), list(conv.output_padding), list(conv.stride),
                list(conv.dilation), conv.groups, self.attr, self.scalars, "")
        return torch.ops.mkldnn._convolution_pointwise(
            x, weight, bias, list(conv.padding), list(conv.stride), list(conv.dilation), conv.groups,
            self.attr, self.scalars, "")


class FastUNetInference:
    """``model(L, seg)`` for inference on the CPU, faster: every convolution goes through oneDNN with its
    weight prepacked for the input's shape and its LeakyReLU fused (``_PackedConv``), the eager model's IN,
    and no autograd bookkeeping (``torch.inference_mode``). The same function as the eager model:
    the same operations in the same order but for oneDNN's summation order, within 1e-5 on the paper-width
    U-Net (tests/test_sdc_fast_inference.py checks 1e-4 on every configuration). Measured on a 2-core CPU at
    352 x 352 against a 2048^3 matmul: bench/unet.py.

    No compilation: the first call at a new shape reorders the weights (a fraction of one forward), and the
    ``shapes_kept`` most recent shapes keep theirs (each a copy of the weights: 150 MB at paper width).
    Falls back to the eager model where oneDNN cannot run it (another device or dtype, a build without
    oneDNN) and where gradients are enabled (the eager model then records them): call it under
    ``torch.no_grad()`` or ``torch.inference_mode()``. Thread-safe (the editor serves from several
    threads)."""

    def __init__(self, model: SemanticDrivenUNet, shapes_kept: int = 2) -> None:
        self.model = model
        slope = model.config.negative_slope

        def packed(conv: nn.Module, activation: bool = True) -> _PackedConv:
            return _PackedConv(conv, slope if activation else None, shapes_kept)

        self.encoder = [(packed(layer.conv1), packed(layer.conv2)) for layer in model.encoder]
        self.stem = None if model.semantic_stem is None else packed(model.semantic_stem)
        self.decoder = [(packed(layer.conv1), packed(layer.conv2)) for layer in model.decoder]
        self.head = packed(model.head, activation=False)
        self._lock = threading.Lock()

    def supports(self, L: torch.Tensor) -> bool:
        """Whether the fast path runs for this input (else ``__call__`` runs the eager model)."""
        weight = self.model.head.weight
        return (torch.backends.mkldnn.is_available() and not torch.is_grad_enabled()
                and L.device.type == "cpu" and weight.device.type == "cpu"
                and L.dtype == torch.float32 and weight.dtype == torch.float32)

    def __call__(self, L: torch.Tensor, seg: torch.Tensor | None = None) -> torch.Tensor:
        """L (N, 1, H, W) in [-1, 1], seg (N, H, W) long -> ab (N, 2, H, W), as ``model(L, seg)``; the model
        runs as in eval mode (it has no dropout or batch statistics, so eval and train agree)."""
        if not self.supports(L):
            return self.model(L, seg)
        with self._lock, torch.inference_mode():
            return self._forward(L, seg)

    def _encode(self, x: torch.Tensor, first: _PackedConv | None = None) -> list[torch.Tensor]:
        features = []
        for index, (conv1, conv2) in enumerate(self.encoder):
            x = conv2((first if index == 0 and first is not None else conv1)(x))
            features.append(x)
        return features

    def _normalize(self, feature: torch.Tensor) -> torch.Tensor:
        # the eager model's own IN (one fused kernel; twice as fast as var_mean and the arithmetic)
        return F.instance_norm(feature, eps=self.model.config.instance_norm_eps)

    def _forward(self, L: torch.Tensor, seg: torch.Tensor | None) -> torch.Tensor:
        model, config = self.model, self.model.config
        model._check_gray(L)
        model._check_map(L, seg)
        L = model._gray_input(L).contiguous()
        count = L.shape[0]
        semantic_features: list[torch.Tensor] | None = None
        if not config.semantic_stream:
            gray = self._encode(L)
        else:
            semantic = model.semantic_input(seg).to(L.dtype).contiguous()
            if self.stem is None:  # one pass over both streams, as skip_features does
                both = self._encode(torch.cat([L, semantic], dim=0))
                gray, semantic_features = [f[:count] for f in both], [f[count:] for f in both]
            else:
                gray, semantic_features = self._encode(L), self._encode(semantic, self.stem)
        if config.instance_norm:
            gray = [self._normalize(feature) for feature in gray]
        skips = gray if semantic_features is None else [
            torch.cat([g, s], dim=1) for g, s in zip(gray, semantic_features)]
        x = skips[-1]
        for (conv1, conv2), skip in zip(self.decoder, reversed(skips[:-1])):
            x = conv2(conv1(x).add_(skip))
        x = self.head(x)
        if config.output_activation == "tanh":
            return torch.tanh(x)
        if config.output_activation == "leaky_relu":
            return F.leaky_relu(x, config.negative_slope)
        return x


class AcceleratedUNet:
    """A SemanticDrivenUNet's ``ColorizationModel`` interface with ``FastUNetInference`` as its forward
    (``SemanticDrivenUNet.accelerated``); every attribute but ``predict_ab`` is the model's own."""

    def __init__(self, model: SemanticDrivenUNet) -> None:
        self.model = model
        self.fast = FastUNetInference(model)

    def __getattr__(self, name: str):
        return getattr(self.model, name)

    def predict_ab(self, L: torch.Tensor, semantic_map: torch.Tensor | None = None,
                   segmenter: Segmenter | None = None) -> torch.Tensor:
        return colorize(self.model, L, semantic_map, gridnet=segmenter, mode="pad", forward=self.fast)

    def accelerated(self) -> ColorizationModel:
        return self


@register_model("sdc")
def sdc(**config: object) -> SemanticDrivenUNet:
    """Two-stream U-Net; keyword arguments are ``SdcConfig`` fields (e.g. ``instance_norm=False``)."""
    return SemanticDrivenUNet(load_config(SdcConfig, config, "sdc"))
