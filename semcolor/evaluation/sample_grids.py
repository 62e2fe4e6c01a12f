"""A labelled grid of validation images for one trained model: what a training run shows of its model.

Rows are the first ``images`` validation images of a shard set (at the stored size); columns, each labelled
in the picture:

- colorizers: ``gray | real | <model>`` (``sdc_*`` with the ground-truth map, as it is trained); PixelCNN
  models (``psc_*``) show the fast, non-autoregressive output (``fast``) and one autoregressive ``sample``;
- segmenters (``gridnet_*``): ``gray | truth | predicted`` maps in the label palette (a segmenter trained on
  color, ``input_mode: lab``, sees the real colors).

Built from ``semcolor.evaluation.tiles``, as ``semcolor compare --grid`` is, so the two agree.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from semcolor.models.interface import ColorizationModel, as_segmenter
from semcolor.evaluation.tiles import (
    ValidationImages,
    assemble_grid,
    colorize_tiles,
    read_validation_images,
    reference_tiles,
    sample_tiles,
)


def _map_tiles(maps: torch.Tensor) -> list[np.ndarray]:
    from semcolor.app.inference import map_palette

    palette = map_palette()
    return [palette[m.numpy().astype(np.uint8)] for m in maps.cpu()]


def _segmenter_columns(model: torch.nn.Module, batch: ValidationImages) -> tuple[list, list[str]]:
    gray, _ = reference_tiles(batch)
    with torch.inference_mode():  # a colour-input segmenter reads the stored ab, a gray one ignores it
        predicted = as_segmenter(model).predict_map(batch.L_unit, batch.ab_unit)
    return [gray, _map_tiles(batch.seg), _map_tiles(predicted)], ["gray", "truth", "predicted"]


def model_grid(checkpoint: str | Path, shard_dir: str | Path, images: int = 4, *, label: str = "",
               seed: int = 0) -> tuple[np.ndarray, list[str]]:
    """The labelled grid (uint8 RGB) of the model in ``checkpoint`` on the validation split of
    ``shard_dir``, and its column labels (see the module docstring). ``label``: the model column's name
    (default: the checkpoint's model name)."""
    from semcolor.app.inference import load_colorizer
    from semcolor.training.checkpoint import load_checkpoint, model_from_checkpoint

    payload = load_checkpoint(checkpoint)
    model = model_from_checkpoint(payload)
    name = label or payload["model_name"]
    batch = read_validation_images(shard_dir, images)
    if not isinstance(model, ColorizationModel):
        columns, labels = _segmenter_columns(model, batch)
    else:
        gray, real = reference_tiles(batch)
        colorizer = load_colorizer(checkpoint)
        columns, labels = [gray, real, colorize_tiles(colorizer, batch)], ["gray", "real", name]
        if model.can_sample:  # PixelCNN: fast path and a sample
            labels[-1] = f"{name} fast"
            columns.append(sample_tiles(colorizer, batch, seed))
            labels.append(f"{name} sample")
    return assemble_grid(columns, labels), labels
