"""Tiny random-initialised colorizers saved as real checkpoints, for the inference, CLI and editor tests.

A random U-Net is still a conv net: a map edit changes its output where the map changed, which is all the
editor tests need; the colorization tests check geometry and lightness, not color quality.
"""

from __future__ import annotations

from pathlib import Path

import torch

from semcolor.models import create_model
from semcolor.training.checkpoint import rng_state, save_checkpoint

NUM_CLASSES = 6
CLASS_NAMES = ["background", "sky", "water", "person", "tree", "building"]
SDC_CONFIG = {"width": 0.125, "num_classes": NUM_CLASSES}
GRIDNET_CONFIG = {"width": 0.25, "num_classes": NUM_CLASSES}
PSC_CONFIG = {"width": 0.0625, "num_classes": NUM_CLASSES, "generator_layers": 2, "generator_channels": 8,
              "num_mixtures": 2}


def save_model(path: Path, name: str, config: dict, seed: int = 0, extra: dict | None = None) -> Path:
    """Build ``name`` with ``config`` from ``seed`` and save it in the training loop's checkpoint format."""
    torch.manual_seed(seed)
    model = create_model(name, **config)
    return save_checkpoint(path, {
        "model_name": name, "model_config": dict(config), "model": model.state_dict(), "ema": None,
        "optimizer": {}, "step": 0, "rng": rng_state(), "extra": dict(extra or {}),
    })


def save_sdc_pair(folder: Path) -> tuple[Path, Path]:
    """A tiny sdc (with class names in extra) and its tiny gridnet segmenter."""
    model = save_model(folder / "sdc.pt", "sdc", SDC_CONFIG, seed=1, extra={"class_names": CLASS_NAMES})
    segmenter = save_model(folder / "gridnet.pt", "gridnet", GRIDNET_CONFIG, seed=2)
    return model, segmenter
