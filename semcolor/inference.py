"""From a photo to a colorized photo, for every model family: the one path the CLI, the editor and MLflow use.

The recipe (the same for every family):
1. Lightness: the photo's CIE L in [0, 100] at its own, full resolution (``semcolor.photo_io``).
2. The model sees L resized (bilinear, antialiased when shrinking) to its working shape: the long side
   becomes the family's working size, the aspect ratio is kept and each side is rounded to the family's
   multiple. U-Net (``sdc``): long side 352 (the paper's and release's training/inference size), multiples
   of 32, at least 64. PixelCNN (``psc_*``): long side 128 (the paper's training size), multiples of 4.
   A photo already at the working shape is used as is, without resampling.
3. The model predicts a/b at working resolution (scaled as ``semcolor.scaling``: ab / 128, the units the
   loader trains every family on; ``psc``'s 8-bit grid (a + 128) / 127.5 - 1 is within 1 a/b unit of it);
   they are upsampled bilinearly to the full resolution and joined with the ORIGINAL full-resolution L.
4. Lab -> sRGB. Colors outside the sRGB gamut are brought inside by reducing their chroma at constant L and
   hue (a bisection on the a/b scale per pixel), instead of clipping R, G and B, which would change the
   lightness: so the output's L equals the input's L up to 8-bit rounding (< 1 L unit).

Classification models (``cls_*``, anything with ``colorize(L, seg)``) run like the U-Net (long side 352,
multiples of 32), decoded by their own annealed mean.

Semantic maps (uint8 class indices, 255 = unknown): ``sdc`` and ``cls_*`` with ``semantic`` "input"/"both"
take one as input - given by the caller (at full resolution or at the working shape) or predicted by a
GridNet segmenter from the gray working image; ``psc_embed``/``psc_full`` and ``cls_*`` with a segmentation
head predict one themselves (shown, not an input); ``psc_plain`` and ``cls_plain`` have none.
A map given at full resolution is resized to the working shape by nearest neighbour; a predicted map is
returned at full resolution by nearest neighbour.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from semcolor.color import lab_to_rgb8_keep_lightness, rgb8_to_lab
from semcolor.photo_io import Photo
from semcolor.scaling import AB_SCALE, upsample_ab
from semcolor.sources.base import IGNORE_INDEX

SDC_WORKING_SIZE = 352
SDC_MULTIPLE = 32
PSC_WORKING_SIZE = 128
PSC_MULTIPLE = 4


# ------------------------------------------------------------------------------------ model-level predict


def _family(model: nn.Module) -> str:
    from semcolor.models.gridnet import GridNet
    from semcolor.models.psc import PixelatedSemanticColorization
    from semcolor.models.sdc import SemanticDrivenUNet

    if isinstance(model, SemanticDrivenUNet):
        return "sdc"
    if isinstance(model, PixelatedSemanticColorization):
        return "psc"
    if isinstance(model, GridNet):
        return "segmenter"
    if hasattr(model, "colorize"):  # the classification family (cls_*) and any model with that contract
        return "generic"
    raise ValueError(f"{type(model).__name__} is not a colorization model this version knows")


def takes_map_input(model: nn.Module) -> bool:
    """True when the model's colors depend on a semantic map given as input (sdc with its semantic stream,
    cls_* with ``semantic`` "input" or "both")."""
    config = getattr(model, "config", None)
    if _family(model) == "sdc":
        return bool(config.semantic_stream)
    return bool(getattr(config, "uses_map_input", False))


def _segment_any_size(segmenter: nn.Module, L_unit: torch.Tensor) -> torch.Tensor:
    """GridNet's argmax map (N, H, W) for L of any size: reflect-padded to its size multiple, then cropped."""
    multiple = 32
    height, width = L_unit.shape[-2:]
    pad_h, pad_w = (-height) % multiple, (-width) % multiple
    mode = "reflect" if pad_h < height and pad_w < width else "replicate"
    padded = F.pad(L_unit, (0, pad_w, 0, pad_h), mode=mode) if pad_h or pad_w else L_unit
    return segmenter(padded).argmax(dim=1)[:, :height, :width]


@torch.no_grad()
def predict_ab(
    model: nn.Module,
    L_unit: torch.Tensor,
    seg: torch.Tensor | None = None,
    segmenter: nn.Module | None = None,
) -> torch.Tensor:
    """The model's deterministic chroma for a gray batch, at the input's size.

    L_unit: float (N, 1, H, W), ``L / 50 - 1`` in [-1, 1], any H and W. seg: optional (N, H, W) long class
    map (``sdc`` and models with ``colorize(L, seg)``); segmenter: a GridNet that predicts the map for an
    ``sdc`` model when ``seg`` is None. Returns ab_unit (N, 2, H, W) float, ``ab / 128``. ``sdc`` runs at
    the input's own size (reflect-padded to multiples of 32); ``psc_*`` uses its non-autoregressive head
    (``colorize_fast``, the mixture mean) and upsamples its 1/4-resolution output bilinearly.
    """
    if L_unit.dim() != 4 or L_unit.shape[1] != 1:
        raise ValueError(f"predict_ab expects L of shape (N, 1, H, W), got {tuple(L_unit.shape)}")
    family = _family(model)
    model.eval()
    height, width = L_unit.shape[-2:]
    if family == "sdc":
        from semcolor.models.sdc import colorize

        if segmenter is not None:
            segmenter.eval()
        return colorize(model, L_unit, seg, gridnet=segmenter, mode="pad")
    if family == "psc":
        size = tuple(max(4 * PSC_MULTIPLE, _round_to(s, PSC_MULTIPLE)) for s in (height, width))
        L_in = resize_gray(L_unit, size)
        return upsample_ab(model.colorize_fast(L_in), (height, width))
    if family == "generic":
        if seg is None and segmenter is not None and takes_map_input(model):
            segmenter.eval()
            seg = _segment_any_size(segmenter, L_unit)
        return upsample_ab(model.colorize(L_unit, seg), (height, width))
    raise ValueError("a segmentation model (gridnet) predicts semantic maps, not colors: "
                     "pass a colorization model")


SAMPLE_GROUP = 12  # images per sampling call when the model's sample() takes no per-image seeds


@torch.no_grad()
def sample_ab(
    model: nn.Module,
    L_unit: torch.Tensor,
    seeds: Sequence[int],
    k: int = 1,
    temperature: float = 1.0,
    progress: bool = False,
) -> torch.Tensor:
    """k PixelCNN draws per image (``psc_*``), at the input's size: ab_unit (N, k, 2, H, W), ``ab / 128``.

    L_unit: (N, 1, H, W) in [-1, 1]; it is resized to the PixelCNN's working shape (multiples of 4, as
    ``predict_ab``) and the quarter-resolution draws are upsampled bilinearly. seeds: one int per image;
    image n's noise comes from ``seeds[n]`` alone when the model's ``sample`` takes per-image seeds, so an
    image's samples do not depend on the batch it is drawn in. Models whose ``sample`` takes only one seed
    are drawn in fixed groups of ``SAMPLE_GROUP`` images, each group seeded with its first image's seed (a
    fixed function of the image's index, not of any batch size; distinct streams for every image)."""
    import inspect

    if _family(model) != "psc":
        raise ValueError(f"{type(model).__name__} does not sample: only PixelCNN models (psc_*) draw colorizations")
    if len(seeds) != L_unit.shape[0]:
        raise ValueError(f"seeds must hold one seed per image ({L_unit.shape[0]}), got {len(seeds)}")
    model.eval()
    height, width = L_unit.shape[-2:]
    size = tuple(max(4 * PSC_MULTIPLE, _round_to(s, PSC_MULTIPLE)) for s in (height, width))
    L_in = resize_gray(L_unit, size)
    if "seeds" in inspect.signature(model.sample).parameters:
        draws = model.sample(L_in, k=k, temperature=temperature, seeds=list(seeds), progress=progress)
    else:
        draws = torch.cat([
            model.sample(L_in[start : start + SAMPLE_GROUP], k=k, temperature=temperature, seed=int(seeds[start]),
                         progress=progress)
            for start in range(0, L_in.shape[0], SAMPLE_GROUP)
        ])
    return upsample_ab(draws, (height, width))


@torch.no_grad()
def segment_logits(model: nn.Module, L_unit: torch.Tensor, ab_unit: torch.Tensor | None = None) -> torch.Tensor:
    """Class logits (N, C, H, W) at the input's size from a segmenter: a GridNet (gray, or ``lab`` with
    ``ab_unit`` (N, 2, H, W) as its colour input; reflect-padded to its size multiple and cropped) or a
    PixelCNN's segmentation branch (``psc_embed``/``psc_full``, upsampled bilinearly)."""
    family = _family(model)
    model.eval()
    height, width = L_unit.shape[-2:]
    if family == "segmenter":
        x = L_unit if model.config.input_mode == "gray" else torch.cat(
            [L_unit, torch.zeros_like(L_unit).repeat(1, 2, 1, 1) if ab_unit is None else ab_unit], dim=1)
        multiple = 32
        pad_h, pad_w = (-height) % multiple, (-width) % multiple
        mode = "reflect" if pad_h < height and pad_w < width else "replicate"
        padded = F.pad(x, (0, pad_w, 0, pad_h), mode=mode) if pad_h or pad_w else x
        return model(padded)[..., :height, :width]
    if family == "psc":
        size = tuple(max(4 * PSC_MULTIPLE, _round_to(s, PSC_MULTIPLE)) for s in (height, width))
        logits = model.segment(resize_gray(L_unit, size), full_resolution=True)
        return logits if tuple(size) == (height, width) else F.interpolate(
            logits, size=(height, width), mode="bilinear", align_corners=False)
    raise ValueError(f"{type(model).__name__} has no segmentation output this version reads")


def _round_to(value: float, multiple: int) -> int:
    return max(multiple, int(round(value / multiple)) * multiple)


def resize_gray(L: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Gray (N, 1, H, W) -> (N, 1, *size): bilinear, antialiased when shrinking; unchanged at equal size."""
    if tuple(L.shape[-2:]) == tuple(size):
        return L
    shrinking = size[0] < L.shape[-2] or size[1] < L.shape[-1]
    return F.interpolate(L, size=size, mode="bilinear", align_corners=False, antialias=shrinking)


def resize_label_map(seg: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of a (H, W) label map (pixel centres, no half-pixel shift)."""
    if seg.shape == tuple(shape):
        return seg
    def source_index(size: int, source_size: int) -> np.ndarray:
        centres = (np.arange(size) + 0.5) * source_size / size
        return np.minimum(centres.astype(np.int64), source_size - 1)

    rows, cols = source_index(shape[0], seg.shape[0]), source_index(shape[1], seg.shape[1])
    return seg[rows[:, None], cols[None, :]]


def working_shape(height: int, width: int, long_side: int, multiple: int) -> tuple[int, int]:
    """The model's input shape for a (height, width) photo: long side ``long_side``, aspect kept, each side
    rounded to ``multiple`` (at least 2 x ``multiple``)."""
    scale = long_side / max(height, width)
    return (max(2 * multiple, _round_to(height * scale, multiple)),
            max(2 * multiple, _round_to(width * scale, multiple)))


# ------------------------------------------------------------------------------------ the Colorizer


def as_lightness(image: Photo | np.ndarray) -> np.ndarray:
    """float32 (H, W) CIE L in [0, 100] from a Photo, an L array (H, W), or uint8 sRGB (H, W, 3)."""
    if isinstance(image, Photo):
        return image.lightness
    array = np.asarray(image)
    if array.ndim == 3 and array.shape[-1] == 3 and array.dtype == np.uint8:
        return rgb8_to_lab(array)[..., 0].astype(np.float32)
    if array.ndim != 2:
        raise ValueError("expected a Photo, lightness (H, W) or uint8 RGB (H, W, 3); "
                         f"got {array.dtype} {array.shape}")
    return array.astype(np.float32, copy=False)



@dataclass
class ColorizeResult:
    """images: k uint8 (H, W, 3) sRGB at the photo's resolution; semantic_map: uint8 (H, W) class indices
    (255 unknown) at full resolution, or None when the model has no map; class_names: the label set."""

    images: list[np.ndarray]
    semantic_map: np.ndarray | None
    class_names: tuple[str, ...]
    working_map: np.ndarray | None = None  # the map at the model's working shape (what the model saw)


@dataclass
class Colorizer:
    """A loaded colorization model with everything it needs (segmenter, label names, working size)."""

    model: nn.Module
    model_name: str
    segmenter: nn.Module | None = None
    class_names: tuple[str, ...] = ()
    device: str = "cpu"
    working_size: int | None = None  # the long side the model sees; None: the family's default
    # U-Net (sdc) on the CPU through semcolor.models.sdc.FastUNetInference (oneDNN, prepacked weights,
    # fused activations; equal to the eager model within 1e-5); False: the eager model
    fast_inference: bool = True

    def __post_init__(self) -> None:
        self.family = _family(self.model)
        self._unet_forward = self.model
        if self.family == "sdc" and self.fast_inference:
            from semcolor.models.sdc import FastUNetInference, SemanticDrivenUNet

            # the fast path re-implements SemanticDrivenUNet.forward from its weights: a subclass with its
            # own forward (a stand-in, an experiment) would be silently replaced by it, so that one runs eagerly
            if type(self.model).forward is SemanticDrivenUNet.forward:
                self._unet_forward = FastUNetInference(self.model)
        if self.family == "segmenter":
            raise ValueError(f"{self.model_name} is a segmentation model; "
                             "pass a colorization model (sdc, psc_*)")
        self.model.eval()
        if self.segmenter is not None:
            self.segmenter.eval()
            if self.num_classes is not None and self.segmenter.config.num_classes != self.num_classes:
                raise ValueError(
                    f"the segmenter predicts {self.segmenter.config.num_classes} classes "
                    f"but {self.model_name} "
                    f"expects {self.num_classes}; use the segmenter trained with this model"
                )
        if not self.class_names and self.num_classes is not None:
            self.class_names = tuple(f"class {i}" for i in range(self.num_classes))

    # -- what the model offers -------------------------------------------------------------------------
    @property
    def num_classes(self) -> int | None:
        """Size of the label set of the map this model uses or predicts (None: no map at all)."""
        config = self.model.config
        if self.family == "psc" and not config.has_segmentation:
            return None
        if self.family == "sdc" and not config.semantic_stream:
            return None
        if self.family == "generic" and not (self.takes_semantic_map or self._has_segmentation_head):
            return None
        return getattr(config, "num_classes", None)

    @property
    def _has_segmentation_head(self) -> bool:
        uses_head = bool(getattr(self.model.config, "uses_head", False))
        return uses_head and hasattr(self.model, "predict_segmentation")

    @property
    def takes_semantic_map(self) -> bool:
        """True when the map is an input: editing it changes the colors (``sdc`` with its semantic stream,
        ``cls_*`` with the map as input)."""
        return takes_map_input(self.model)

    @property
    def supports_samples(self) -> bool:
        """True for the PixelCNN models, which draw diverse colorizations."""
        return self.family == "psc"

    def working_shape(self, height: int, width: int) -> tuple[int, int]:
        """The model's input shape for a (height, width) photo (see the module docstring)."""
        if self.family == "psc":
            return working_shape(height, width, self.working_size or PSC_WORKING_SIZE, PSC_MULTIPLE)
        return working_shape(height, width, self.working_size or SDC_WORKING_SIZE, SDC_MULTIPLE)

    # -- the work --------------------------------------------------------------------------------------
    def _L_tensor(self, lightness: np.ndarray) -> torch.Tensor:
        L_unit = np.ascontiguousarray(lightness, dtype=np.float32) / 50.0 - 1.0
        return torch.from_numpy(L_unit)[None, None].to(self.device)

    @torch.no_grad()
    def predict_map(self, lightness: np.ndarray) -> np.ndarray | None:
        """The model's (or its segmenter's) semantic map at the WORKING shape, uint8; None without one."""
        L = self._L_tensor(lightness)
        L_in = resize_gray(L, self.working_shape(*lightness.shape))
        if self.takes_semantic_map:
            if self.segmenter is None:
                raise ValueError(
                    f"{self.model_name} needs a semantic map: give one (--semantic-map) or a segmenter "
                    "(--segmenter or an MLflow model with a 'segmenter' artifact)"
                )
            seg = self.segmenter(L_in).argmax(dim=1)
        elif self.family == "psc" and self.model.config.has_segmentation:
            seg = self.model.segment(L_in, full_resolution=True).argmax(dim=1)
        elif self.family == "generic" and self._has_segmentation_head:
            seg = self.model.predict_segmentation(L_in)
        else:
            return None
        return seg[0].to(torch.uint8).cpu().numpy()

    def _check_map(self, seg: np.ndarray, shape: tuple[int, int], full_shape: tuple[int, int]) -> np.ndarray:
        seg = np.asarray(seg)
        if seg.ndim != 2 or seg.shape not in (tuple(shape), tuple(full_shape)):
            raise ValueError(
                f"semantic map is {seg.shape}; it must match the photo ({full_shape[0]}x{full_shape[1]}) "
                f"or the model's working shape ({shape[0]}x{shape[1]})"
            )
        bad = (seg >= (self.num_classes or 0)) & (seg != IGNORE_INDEX)
        if bad.any():
            raise ValueError(
                f"semantic map holds class {int(seg[bad][0])}; "
                f"this model knows classes 0..{(self.num_classes or 1) - 1} "
                f"(and {IGNORE_INDEX} = unknown)"
            )
        return resize_label_map(seg.astype(np.uint8), shape)

    @torch.no_grad()
    def colorize(
        self,
        image: Photo | np.ndarray,
        semantic_map: np.ndarray | None = None,
        samples: int = 1,
        seed: int = 0,
        temperature: float = 1.0,
        fast: bool = False,
        progress: bool = False,
    ) -> ColorizeResult:
        """Colorize one photo: a ``Photo``, its lightness (H, W) float (L in [0, 100]) or uint8 RGB (H, W, 3).

        semantic_map: uint8 (H, W) or at ``working_shape`` (class indices, 255 unknown), only for models that
        take a map; None -> predicted. samples: number of PixelCNN draws (``psc_*``; seeds ``seed .. seed +
        samples - 1`` give the same images whether drawn together or one by one); deterministic models accept
        only 1. temperature: PixelCNN sampling temperature (> 0). fast: ``psc_*`` only, the non-autoregressive
        head's mean instead of sampling (one image). Returns images at (H, W) with the input's lightness.
        """
        lightness = as_lightness(image)
        if samples < 1:
            raise ValueError(f"samples must be >= 1, got {samples}")
        if samples > 1 and not self.supports_samples:
            raise ValueError(f"{self.model_name} is deterministic: --samples > 1 needs a PixelCNN model "
                             "(psc_*)")
        if semantic_map is not None and not self.takes_semantic_map:
            raise ValueError(f"{self.model_name} does not take a semantic map as input")
        full_shape = lightness.shape
        shape = self.working_shape(*full_shape)
        L_full = self._L_tensor(lightness)
        L_in = resize_gray(L_full, shape)

        if self.takes_semantic_map:
            if semantic_map is None:
                seg = self.predict_map(lightness)
            else:
                seg = self._check_map(semantic_map, shape, full_shape)
            seg_t = torch.from_numpy(seg.astype(np.int64))[None].to(self.device)
            if self.family == "sdc":
                ab_list = [self._unet_forward(L_in, seg_t)]
            else:
                ab_list = [self.model.colorize(L_in, seg_t)]
        elif self.family == "psc" and not fast:
            seg = self.predict_map(lightness)
            # one draw per seed, so sample i is the same whether k = 1 or k > 1 were asked for
            ab_list = [
                self.model.sample(L_in, k=1, temperature=temperature, seed=seed + i, progress=progress)[:, 0]
                for i in range(samples)
            ]
        elif self.family == "sdc":  # no semantic stream; L_in is already a multiple of 32 on both sides
            seg = None
            ab_list = [self._unet_forward(L_in, None)]
        else:
            seg = self.predict_map(lightness)
            ab_list = [predict_ab(self.model, L_in)]

        images = [_compose(lightness, ab) for ab in ab_list]
        full_map = None if seg is None else resize_label_map(seg, full_shape)
        return ColorizeResult(images=images, semantic_map=full_map, class_names=self.class_names,
                              working_map=seg)


def _compose(lightness: np.ndarray, ab_working: torch.Tensor, rows_per_block: int = 512) -> np.ndarray:
    """Full-resolution L (H, W) in [0, 100] + working-resolution ab_unit (1, 2, h, w) -> uint8 sRGB (H, W, 3).

    ab is upsampled bilinearly to (H, W) as a whole (so block edges are seamless), then joined with L and
    converted in blocks of rows, which bounds the float64 memory on very large photos."""
    ab_full = (upsample_ab(ab_working.float(), lightness.shape)[0].clamp(-1.0, 1.0) * AB_SCALE).cpu()
    ab_full = ab_full.permute(1, 2, 0).numpy()
    image = np.empty((*lightness.shape, 3), np.uint8)
    for top in range(0, lightness.shape[0], rows_per_block):
        rows = slice(top, top + rows_per_block)
        lab = np.concatenate([lightness[rows, :, None].astype(np.float64), ab_full[rows]], axis=-1)
        image[rows] = lab_to_rgb8_keep_lightness(lab)
    return image


# ------------------------------------------------------------------------------------ loading


def load_colorizer(
    model_ref: str | Path,
    segmenter_ref: str | Path | None = None,
    device: str = "cpu",
    working_size: int | None = None,
) -> Colorizer:
    """Load a colorization model (checkpoint path, ``models:/name@alias``, ``runs:/id/model``, run id or a
    local MLflow model folder) and, for ``sdc``, its GridNet segmenter: ``segmenter_ref`` if given, else the
    ``segmenter`` artifact bundled in the same MLflow model, else none (then every photo needs a map).

    Class names come from the checkpoint's ``extra['class_names']``, else from the training data source
    named in ``extra['dataset']``, else "class i".
    """
    from semcolor.training.checkpoint import load_checkpoint, model_from_checkpoint

    model_path = _resolve(model_ref)
    payload = load_checkpoint(model_path, map_location=device)
    model = model_from_checkpoint(payload, source=model_path).to(device)
    segmenter = None
    if takes_map_input(model):
        if segmenter_ref is not None:
            segmenter_path = _resolve(segmenter_ref)
        elif Path(str(model_ref)).is_file():
            segmenter_path = None  # a bare checkpoint file bundles no segmenter
        else:
            from semcolor.mlflow_model import resolve_segmenter

            segmenter_path = _mlflow_call(model_ref, lambda: resolve_segmenter(model_ref))
        if segmenter_path is not None:
            segmenter_payload = load_checkpoint(segmenter_path, map_location=device)
            if segmenter_payload["model_name"] != "gridnet":
                raise ValueError(f"{segmenter_path} holds a {segmenter_payload['model_name']} model; "
                                 "a segmenter must be gridnet")
            segmenter = model_from_checkpoint(segmenter_payload, source=segmenter_path).to(device)
    colorizer = Colorizer(model=model, model_name=payload["model_name"], segmenter=segmenter, device=device,
                          working_size=working_size)
    if colorizer.num_classes is not None:
        colorizer.class_names = class_names_from_payload(payload, colorizer.num_classes)
    return colorizer


class ModelReferenceError(ValueError):
    """A model reference (file, ``models:/``, ``runs:/``, run id) that does not lead to a checkpoint; the
    message names it, says why in one line and what to do."""


def _resolve(reference: str | Path) -> Path:
    """A checkpoint file for a reference; MLflow (slow to import) only when it is not a local file."""
    if Path(str(reference)).is_file():
        return Path(str(reference))
    from semcolor.mlflow_model import resolve_checkpoint

    return _mlflow_call(reference, lambda: resolve_checkpoint(reference))


def _mlflow_call(reference: str | Path, call: Callable[[], Any]) -> Any:
    """``call()``, with MLflow's errors (a raw traceback otherwise: a missing alias, a mistyped name, an
    unreachable server) turned into one ModelReferenceError line naming the reference and the store."""
    import mlflow

    from semcolor.tracking_server import TrackingUnavailable, check_reachable

    uri = mlflow.get_tracking_uri()
    if uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///"):]).is_file():
        # MLflow would create an empty store here (and spend seconds migrating it) only to find nothing
        raise ModelReferenceError(f"cannot resolve the model {reference}: no MLflow store at {uri}; run from "
                                  "the project folder, or set MLFLOW_TRACKING_URI")
    try:
        check_reachable(uri)  # a dead server: one request, not MLflow's minutes of retries
    except TrackingUnavailable as error:
        raise ModelReferenceError(f"cannot resolve the model {reference}: {error}") from None
    try:
        return call()
    except FileNotFoundError as error:
        raise ModelReferenceError(" ".join(str(error).split())) from None
    except Exception as error:
        from mlflow.exceptions import MlflowException

        if not isinstance(error, MlflowException):
            raise
        message = " ".join(str(getattr(error, "message", None) or error).split())[:300]
        raise ModelReferenceError(
            f"cannot resolve the model {reference} in the MLflow store {mlflow.get_tracking_uri()}: {message}; "
            "check the name and alias (semcolor compare, the MLflow UI) or MLFLOW_TRACKING_URI") from None


def class_names_from_payload(payload: dict[str, Any], num_classes: int) -> tuple[str, ...]:
    """The label set's names for a checkpoint: ``extra['class_names']`` (a list of num_classes strings), else
    the ``class_names`` of the source named by ``extra['dataset']`` when its length fits, else "class i"."""
    extra = payload.get("extra") or {}
    names: Sequence[str] | None = extra.get("class_names")
    if names is None and isinstance(extra.get("dataset"), str):
        try:
            from semcolor.sources import source_class

            names = list(source_class(extra["dataset"]).class_names)
        except (ValueError, ImportError, AttributeError, TypeError):
            names = None
    if names is not None and len(names) == num_classes:
        return tuple(str(n) for n in names)
    return tuple(f"class {i}" for i in range(num_classes))


def class_colors(num_classes: int) -> np.ndarray:
    """A distinct color per class: the PASCAL VOC colormap, uint8 (num_classes, 3) RGB (+ entry 255 void)."""
    from semcolor.sources.labels import voc_colormap

    return voc_colormap(256)[: max(num_classes, 1)] if num_classes <= 256 else voc_colormap(256)


def map_palette() -> np.ndarray:
    """The 256-entry palette written into ``*_map.png`` (class i -> VOC color i; 255 -> void)."""
    from semcolor.sources.labels import voc_colormap

    return voc_colormap(256)

