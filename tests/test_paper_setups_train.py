"""The paper setups (configs/paper/*.yaml) train on a CPU: a few-step smoke run of the models each one
trains (every distinct code path), at the setup's own widths and optimizer settings, and ~30 steps of paper-width psc_full at the
paper's optimizer settings (lr 1e-3, betas (0.95, 0.9995), clip 5), where an unnormalized network diverged.

The data are images of the synthetic world rendered in memory at 64 px (its labels, 0-8, are valid class
indices of every setup); batch 1 and small crops keep the paper widths affordable on one CPU thread.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.exp import apply_overrides, read_setup
from pipeline.params import read_params
from pipeline.stages.train import TrainStageConfig
from semcolor.config import config_to_dict, load_config
from semcolor.models import create_model
from semcolor.scaling import lab_to_unit
from semcolor.sources.synthetic import WorldConfig, render_image
from semcolor.training.checkpoint import load_checkpoint, model_from_checkpoint
from semcolor.training.loop import InMemoryBatches, TrainConfig, train

REPO = Path(__file__).resolve().parents[1]
SETUPS = sorted((REPO / "configs" / "paper").glob("*.yaml"))
# dvc targets -> (params section, variants smoke-tested). psc_full holds every part plain and embed have
# (f, h, g, the seg conditioning); seg_only runs the other code path (h alone); sdc no_in differs from paper
# by one flag. At paper width a PSC checkpoint (model, EMA, Adam) is 1.3 GB: each variant costs seconds.
STAGE_VARIANTS = {"train_psc": ("train_psc", ["full"]),
                  "train_seg_only": ("train_psc", ["seg_only"]),
                  "train_sdc": ("train_sdc", ["paper"])}


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def _world_batches(count: int, size: int, crop: int) -> list[dict]:
    config = WorldConfig(image_size=size)
    batches = []
    for index in range(count):
        image = render_image(config, "train", index)
        L, ab = lab_to_unit(torch.from_numpy(image.lab).permute(2, 0, 1).float())
        batches.append({"L": L[None, :, :crop, :crop], "ab": ab[None, :, :crop, :crop],
                        "seg": torch.from_numpy(image.label.astype(np.int64))[None, :crop, :crop],
                        "key": [image.image_id]})
    return batches


def _targets(setup: dict) -> list[tuple[str, str]]:
    pairs = []
    for target in setup["targets"]:
        if "@" in target:
            stage, variant = target.split("@")
            pairs.append((stage, variant))
        else:
            section, variants = STAGE_VARIANTS[target]
            pairs += [(section, v) for v in variants]
    return pairs


def _stage(params: dict, section: str) -> TrainStageConfig:
    return load_config(TrainStageConfig, params[section], section)


@pytest.mark.slow
@pytest.mark.parametrize("path", SETUPS, ids=[p.stem for p in SETUPS])
def test_every_model_of_a_paper_setup_trains_a_few_steps_on_cpu(path, tmp_path):
    setup = read_setup(path)
    params = apply_overrides(read_params(REPO / "params.yaml"), setup["overrides"])
    pairs = _targets(setup)
    assert pairs, f"{path.name} trains nothing"
    for section, variant in pairs:
        stage = _stage(params, section)
        chosen = stage.variants[variant]
        model_config = {**stage.model, **chosen.config}
        crop = 32 if section == "train_psc" else 64  # multiples of 4 (PSC), 16 (GridNet) and 32 (U-Net)
        data = _world_batches(2, 64, crop)
        # the setup's optimizer and EMA, on the CPU, for 2 steps, with a validation pass and a checkpoint
        train_config = load_config(TrainConfig, {**config_to_dict(stage.train), "steps": 2, "device": "cpu",
                                                 "progress": False, "log_every": 1, "val_every": 2}, section)
        torch.manual_seed(0)
        model = create_model(chosen.model, **model_config)
        before = {k: v.clone() for k, v in model.state_dict().items()}
        checkpoint = tmp_path / f"{section}_{variant}.pt"
        result = train(model, chosen.model, model_config, InMemoryBatches(data), train_config, checkpoint,
                       validation=data[:1])
        where = f"{path.name} {section}.{variant}"
        assert result.step == 2, where
        assert all(math.isfinite(v) for v in result.losses.values()), (where, result.losses)
        assert "val_loss" in result.losses, where
        changed = [k for k, v in model.state_dict().items() if v.is_floating_point() and not torch.equal(v, before[k])]
        assert changed, f"{where}: training changed no weight"
        rebuilt = model_from_checkpoint(load_checkpoint(checkpoint))  # the checkpoint rebuilds the model
        assert type(rebuilt) is type(model), where


@pytest.mark.slow
def test_paper_width_psc_full_trains_stably_at_the_papers_optimizer_settings(tmp_path):
    setup = read_setup(REPO / "configs" / "paper" / "psc_voc2012_aug.yaml")
    params = apply_overrides(read_params(REPO / "params.yaml"), setup["overrides"])
    stage = _stage(params, "train_psc")
    model_config = {**stage.model, **stage.variants["full"].config}
    assert model_config["width"] == 1.0 and model_config["seg_weight"] == 100.0
    assert (stage.train.lr, stage.train.betas, stage.train.grad_clip) == (1e-3, (0.95, 0.9995), 5.0)
    steps = 30
    train_config = load_config(TrainConfig, {**config_to_dict(stage.train), "steps": steps, "device": "cpu",
                                             "progress": False, "log_every": 1, "val_samples": 0}, "train_psc")
    torch.manual_seed(0)
    model = create_model("psc_full", **model_config)
    rows = []
    # 4 images of 64 px, batch 1: each image comes back every 4 steps (a diverging model cannot hide)
    train(model, "psc_full", model_config, InMemoryBatches(_world_batches(4, 64, 64)), train_config,
          tmp_path / "full.pt", on_log=lambda metrics, step: rows.append(metrics))  # NaN/inf would raise
    assert len(rows) == steps
    for term in ("emb", "gen", "seg", "loss"):
        values = [row[term] for row in rows]
        assert all(math.isfinite(v) for v in values), term
        first, last = np.mean(values[:4]), np.mean(values[-4:])  # one pass over the 4 images each
        assert last < first, f"{term} did not fall: first 4 steps {first:.3f}, last 4 {last:.3f}"
    norms = [row["grad_norm"] for row in rows]
    assert max(norms) < 10 * norms[0], f"gradient norm {max(norms):.1f} vs {norms[0]:.1f} at step 1"
