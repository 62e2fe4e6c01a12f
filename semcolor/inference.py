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

Classification models (``cls_*``) run like the U-Net (long side 352, multiples of 32), decoded by their own
annealed mean.

Every model is driven through its interface (``semcolor.models.interface``: ``ColorizationModel`` and
``Segmenter``): its ``working_shape``, ``predict_ab``, ``predict_map``, ``sample_ab``, ``takes_map``, ...; the
family numbers above are the families' own attributes, and nothing here names a family.

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

from semcolor.color import lab_to_rgb8_keep_lightness, rgb8_to_lab
from semcolor.models.interface import (
    ColorizationModel,
    Segmenter,
    as_colorizer,
    as_segmenter,
    resize_gray,
    working_shape,
)
from semcolor.models.psc import SAMPLE_GROUP  # noqa: F401  (evaluation chunks its draws by it)
from semcolor.photo_io import Photo
from semcolor.scaling import AB_SCALE, upsample_ab
from semcolor.sources.base import IGNORE_INDEX
from semcolor.errors import ModelReferenceError

# the editor's display shape: the U-Net's default working shape (each model's own working shape is its
# ``working_shape``; these are not read for inference)
SDC_WORKING_SIZE = 352
SDC_MULTIPLE = 32
_upsample_ab = upsample_ab


# ------------------------------------------------------------------------------------ model-level predict
# Each family implements semcolor.models.interface (ColorizationModel, Segmenter); these are thin, checked
# entry points over it: no family is named here.


def takes_map_input(model: nn.Module) -> bool:
    """True when the model's colors depend on a semantic map given as input (sdc with its semantic stream,
    cls_* with ``semantic`` "input" or "both")."""
    return bool(as_colorizer(model).takes_map)


@torch.no_grad()
def predict_ab(
    model: nn.Module,
    L_unit: torch.Tensor,
    seg: torch.Tensor | None = None,
    segmenter: nn.Module | None = None,
) -> torch.Tensor:
    """The model's deterministic chroma for a gray batch, at the input's size (``ColorizationModel.predict_ab``).

    L_unit: float (N, 1, H, W), ``L / 50 - 1`` in [-1, 1], any H and W. seg: optional (N, H, W) long class
    map (models that take one); segmenter: a GridNet that predicts the map when ``seg`` is None. Returns
    ab_unit (N, 2, H, W) float, ``ab / 128``. ``sdc`` runs at the input's own size (padded to multiples of
    32); ``psc_*`` uses its non-autoregressive head (the mixture mean), upsampled from 1/4 resolution.
    """
    if L_unit.dim() != 4 or L_unit.shape[1] != 1:
        raise ValueError(f"predict_ab expects L of shape (N, 1, H, W), got {tuple(L_unit.shape)}")
    colorizer = as_colorizer(model)
    model.eval()
    if segmenter is not None:
        segmenter.eval()
    return colorizer.predict_ab(L_unit, seg, segmenter=segmenter)


@torch.no_grad()
def sample_ab(
    model: nn.Module,
    L_unit: torch.Tensor,
    seeds: Sequence[int],
    k: int = 1,
    temperature: float = 1.0,
    progress: bool = False,
) -> torch.Tensor:
    """k draws per image (models that sample: ``psc_*``), at the input's size: ab_unit (N, k, 2, H, W),
    ``ab / 128`` (``ColorizationModel.sample_ab``). L_unit: (N, 1, H, W) in [-1, 1]; seeds: one int per
    image; image n's noise comes from ``seeds[n]`` alone, so its samples do not depend on its batch."""
    colorizer = as_colorizer(model)
    if not colorizer.can_sample:
        raise ValueError(f"{type(model).__name__} does not sample: only PixelCNN models (psc_*) draw colorizations")
    if len(seeds) != L_unit.shape[0]:
        raise ValueError(f"seeds must hold one seed per image ({L_unit.shape[0]}), got {len(seeds)}")
    model.eval()
    return colorizer.sample_ab(L_unit, seeds, k=k, temperature=temperature, progress=progress)


@torch.no_grad()
def segment_logits(model: nn.Module, L_unit: torch.Tensor, ab_unit: torch.Tensor | None = None) -> torch.Tensor:
    """Class logits (N, C, H, W) at the input's size from a segmenter (``Segmenter.predict_logits``): a
    GridNet (gray, or ``lab`` with ``ab_unit`` (N, 2, H, W) as its colour input; padded to its size multiple
    and cropped) or a PixelCNN's segmentation branch (``psc_embed``/``psc_full``, upsampled bilinearly)."""
    segmenter = as_segmenter(model)
    model.eval()
    return segmenter.predict_logits(L_unit, ab_unit)


def resize_label_map(seg: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of a (H, W) label map (pixel centres, no half-pixel shift)."""
    if seg.shape == tuple(shape):
        return seg
    def source_index(size: int, source_size: int) -> np.ndarray:
        centres = (np.arange(size) + 0.5) * source_size / size
        return np.minimum(centres.astype(np.int64), source_size - 1)

    rows, cols = source_index(shape[0], seg.shape[0]), source_index(shape[1], seg.shape[1])
    return seg[rows[:, None], cols[None, :]]




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
        self.interface = as_colorizer(self.model, self.model_name)
        # what computes the colors: the model, or its faster twin (the U-Net's oneDNN path) where it has one
        self._predictor = self.interface.accelerated() if self.fast_inference else self.interface
        self.model.eval()
        if self.segmenter is not None:
            self.segmenter.eval()
            segmenter_classes = as_segmenter(self.segmenter, "the segmenter").num_classes
            if self.num_classes is not None and segmenter_classes != self.num_classes:
                raise ValueError(
                    f"the segmenter predicts {segmenter_classes} classes "
                    f"but {self.model_name} "
                    f"expects {self.num_classes}; use the segmenter trained with this model"
                )
        if not self.class_names and self.num_classes is not None:
            self.class_names = tuple(f"class {i}" for i in range(self.num_classes))

    # -- what the model offers -------------------------------------------------------------------------
    @property
    def family(self) -> str:
        """The model's registry family, for display (``psc_full`` -> ``psc``); nothing branches on it."""
        return self.model_name.partition("_")[0]

    @property
    def num_classes(self) -> int | None:
        """Size of the label set of the map this model uses or predicts (None: no map at all)."""
        return self.interface.num_classes

    @property
    def takes_semantic_map(self) -> bool:
        """True when the map is an input: editing it changes the colors (``sdc`` with its semantic stream,
        ``cls_*`` with the map as input)."""
        return self.interface.takes_map

    @property
    def supports_samples(self) -> bool:
        """True for the models that draw diverse colorizations (the PixelCNN models)."""
        return self.interface.can_sample

    def working_shape(self, height: int, width: int) -> tuple[int, int]:
        """The model's input shape for a (height, width) photo (see the module docstring)."""
        return self.interface.working_shape(height, width, self.working_size)

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
            seg = as_segmenter(self.segmenter).predict_map(L_in)
        else:
            seg = self.interface.predict_map(L_in)
            if seg is None:
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
            ab_list = [self._predictor.predict_ab(L_in, seg_t)]
        else:
            seg = self.predict_map(lightness)
            if self.supports_samples and not fast:
                # one draw per seed, so sample i is the same whether k = 1 or k > 1 were asked for
                # drawn straight at the photo's size: one upsampling from the draw's own resolution
                ab_list = [self.interface.sample_ab(L_in, [seed + i], k=1, temperature=temperature,
                                                    progress=progress, size=full_shape)[:, 0]
                           for i in range(samples)]
            else:
                ab_list = [self._predictor.predict_ab(L_in)]

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
            from semcolor.model_reference import resolve_segmenter

            segmenter_path = _mlflow_call(model_ref, lambda: resolve_segmenter(model_ref))
        if segmenter_path is not None:
            segmenter_payload = load_checkpoint(segmenter_path, map_location=device)
            segmenter = model_from_checkpoint(segmenter_payload, source=segmenter_path).to(device)
            if isinstance(segmenter, ColorizationModel) or not isinstance(segmenter, Segmenter):
                raise ValueError(f"{segmenter_path} holds a {segmenter_payload['model_name']} model; "
                                 "a segmenter must be gridnet (a segmentation model, not a colorizer)")
    colorizer = Colorizer(model=model, model_name=payload["model_name"], segmenter=segmenter, device=device,
                          working_size=working_size)
    if colorizer.num_classes is not None:
        colorizer.class_names = class_names_from_payload(payload, colorizer.num_classes)
    return colorizer


def _resolve(reference: str | Path) -> Path:
    """A checkpoint file for a reference; MLflow (slow to import) only when it is not a local file."""
    if Path(str(reference)).is_file():
        return Path(str(reference))
    from semcolor.model_reference import resolve_checkpoint

    return _mlflow_call(reference, lambda: resolve_checkpoint(reference))


def _mlflow_call(reference: str | Path, call: Callable[[], Any]) -> Any:
    """``call()``, with MLflow's errors (a raw traceback otherwise: a missing alias, a mistyped name, an
    unreachable server) turned into one ModelReferenceError line naming the reference and the store."""
    if Path(str(reference)).is_dir():  # a downloaded MLflow model folder: read locally, no store involved
        try:
            return call()
        except FileNotFoundError as error:
            raise ModelReferenceError(" ".join(str(error).split())) from None
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

