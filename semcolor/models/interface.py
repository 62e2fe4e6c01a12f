"""The two interfaces every registered model implements, and the one place inputs are padded and resized.

Everything outside ``semcolor.models`` (inference, the CLI, the editor, the MLflow pyfunc, evaluation,
training summaries) drives a model only through these protocols: no ``isinstance`` on a model class and no
branch on a family name. A new family is one new file in ``semcolor/models/`` implementing one (or both) of
them, plus its name in ``MODEL_MODULES`` (``semcolor/models/__init__.py``).

Units (the loader's, ``semcolor.scaling``), for every method below:

- ``L``: float (N, 1, H, W), ``L / 50 - 1`` in [-1, 1] (CIE L in [0, 100]); any H and W >= 1.
- ``ab``: float (N, 2, H, W), ``ab / 128`` in [-1, 1) (CIE a/b in [-128, 127]).
- maps: long (N, H, W) class indices in [0, num_classes) or 255 (``IGNORE_INDEX``: unknown / ignored).

Every prediction comes back at the input's own H x W, whatever the network's stride: the model pads or
resizes internally (``pad_to_multiple``, ``resize_gray``, ``upsample_ab``), so callers never do.

Padding rule (``pad_to_multiple``, bottom/right, then cropped): images (float) by reflection (replication
where a side is too short to reflect); maps (integer) with 255, so a padded pixel is "unknown", never a
real class.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import torch
import torch.nn.functional as F

from semcolor.scaling import upsample_ab  # noqa: F401  (part of this module's resizing helpers)
from semcolor.sources.base import IGNORE_INDEX



@runtime_checkable
class ColorizationModel(Protocol):
    """A model that colors gray photos (``sdc``, ``psc_*``, ``cls_*``).

    Attributes (read-only):
      size_multiple: the network's stride: inputs whose sides are multiples of it run unpadded.
      working_size: the long side (pixels) a photo is resized to for this model by default (the CLI and
        the editor); ``working_shape`` rounds both sides to the family's multiple.
      input_channels: channels of the network input (1: L).
      takes_map: the colors depend on a semantic map given as input (editing the map recolors).
      predicts_map: the model predicts a map of its own (shown, not an input).
      num_classes: size of the label set of the map it takes or predicts; None when it has no map.
      can_sample: it draws diverse colorizations (``sample_ab``), not only one deterministic answer.
    """

    @property
    def size_multiple(self) -> int: ...
    @property
    def working_size(self) -> int: ...
    @property
    def input_channels(self) -> int: ...
    @property
    def takes_map(self) -> bool: ...
    @property
    def predicts_map(self) -> bool: ...
    @property
    def num_classes(self) -> int | None: ...
    @property
    def can_sample(self) -> bool: ...

    def working_shape(self, height: int, width: int, long_side: int | None = None) -> tuple[int, int]:
        """The input shape for a (height, width) photo: long side ``long_side`` (None: ``working_size``),
        aspect kept, each side a multiple of the family's working multiple."""

    def predict_ab(self, L: torch.Tensor, semantic_map: torch.Tensor | None = None,
                   segmenter: "Segmenter | None" = None) -> torch.Tensor:
        """Deterministic ab (N, 2, H, W) at L's size. ``semantic_map`` (N, H, W) for a model that takes
        one; else ``segmenter`` predicts it from L; a model that takes no map ignores both."""

    def predict_map(self, L: torch.Tensor) -> torch.Tensor | None:
        """The model's own map (N, H, W) long at L's size, or None when it predicts none."""

    def sample_ab(self, L: torch.Tensor, seeds: Sequence[int], k: int = 1, temperature: float = 1.0,
                  progress: bool = False, size: tuple[int, int] | None = None) -> torch.Tensor:
        """k draws per image, (N, k, 2, *size) (None: L's size), upsampled from the model's own resolution
        in one step; image n's noise from ``seeds[n]`` alone.
        Raises ValueError when ``can_sample`` is False."""

    def accelerated(self) -> "ColorizationModel":
        """The same predictor, faster for repeated inference where the family has a fast path (the
        U-Net's oneDNN ``FastUNetInference``), else the model itself. Equal to ``predict_ab`` within 1e-5."""


@runtime_checkable
class Segmenter(Protocol):
    """A model whose class logits per pixel are read (``gridnet``; ``psc_embed``/``psc_full``'s branch).

    size_multiple: the network's stride; input_channels: 1 (gray) or 3 (gray + the ab of a colour image);
    num_classes: the label set's size.
    """

    @property
    def size_multiple(self) -> int: ...
    @property
    def input_channels(self) -> int: ...
    @property
    def num_classes(self) -> int | None: ...

    def predict_logits(self, L: torch.Tensor, ab: torch.Tensor | None = None) -> torch.Tensor:
        """Class logits (N, C, H, W) at L's size; ``ab`` is the colour input of a 3-channel segmenter
        (None: gray, ab = 0) and is ignored by a gray one."""

    def predict_map(self, L: torch.Tensor, ab: torch.Tensor | None = None) -> torch.Tensor:
        """argmax of ``predict_logits``: (N, H, W) long."""


def as_colorizer(model: object, who: str | None = None) -> ColorizationModel:
    """``model`` when it implements ``ColorizationModel``; else a ValueError naming it."""
    if not isinstance(model, ColorizationModel):
        name = who or type(model).__name__
        if isinstance(model, Segmenter):
            raise ValueError(f"{name} is a segmentation model: it predicts semantic maps, not colors; "
                             "pass a colorization model (sdc, psc_*, cls_*)")
        raise ValueError(f"{name} is not a colorization model this version knows")
    return model


def as_segmenter(model: object, who: str | None = None) -> Segmenter:
    """``model`` when it implements ``Segmenter``; else a ValueError naming it."""
    if not isinstance(model, Segmenter):
        raise ValueError(f"{who or type(model).__name__} has no segmentation output this version reads")
    return model


# ------------------------------------------------------------------------------------------ sizes, once


def round_to(value: float, multiple: int) -> int:
    """``value`` rounded to the nearest multiple of ``multiple`` (at least ``multiple``)."""
    return max(multiple, int(round(value / multiple)) * multiple)


def working_shape(height: int, width: int, long_side: int, multiple: int) -> tuple[int, int]:
    """The model's input shape for a (height, width) photo: long side ``long_side``, aspect kept, each side
    rounded to ``multiple`` (at least 2 x ``multiple``)."""
    scale = long_side / max(height, width)
    return (max(2 * multiple, round_to(height * scale, multiple)),
            max(2 * multiple, round_to(width * scale, multiple)))


def pad_to_multiple(x: torch.Tensor, multiple: int, min_size: int = 0) -> torch.Tensor:
    """Pad the last two dims bottom/right up to multiples of ``multiple`` (and at least ``min_size``).

    Float images (N, C, H, W) by reflection, replication where a side is too short to reflect; integer maps
    (N, H, W) with ``IGNORE_INDEX`` (255). Crop the result back with ``[..., :H, :W]``."""
    height, width = x.shape[-2:]
    pad_h = max(min_size, -(-height // multiple) * multiple) - height
    pad_w = max(min_size, -(-width // multiple) * multiple) - width
    if pad_h == 0 and pad_w == 0:
        return x
    if not x.is_floating_point():
        return F.pad(x, (0, pad_w, 0, pad_h), value=IGNORE_INDEX)
    mode = "reflect" if pad_h < height and pad_w < width else "replicate"
    return F.pad(x, (0, pad_w, 0, pad_h), mode=mode)


def resize_gray(L: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Gray (N, C, H, W) -> (N, C, *size): bilinear, antialiased when shrinking; unchanged at equal size."""
    if tuple(L.shape[-2:]) == tuple(size):
        return L
    shrinking = size[0] < L.shape[-2] or size[1] < L.shape[-1]
    return F.interpolate(L, size=size, mode="bilinear", align_corners=False, antialias=shrinking)


def upsample_logits(logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Class logits (N, C, h, w) -> (N, C, *size), bilinear; unchanged at equal size."""
    if tuple(logits.shape[-2:]) == tuple(size):
        return logits
    return F.interpolate(logits, size=size, mode="bilinear", align_corners=False)


class eval_mode:
    """Context manager: the given modules in eval mode inside, their previous modes restored after."""

    def __init__(self, *modules: torch.nn.Module | None) -> None:
        self.modules = [m for m in modules if m is not None]

    def __enter__(self) -> None:
        self.previous = [(m, m.training) for m in self.modules]
        for m in self.modules:
            m.eval()

    def __exit__(self, *exc: object) -> None:
        for m, training in self.previous:
            m.train(training)
