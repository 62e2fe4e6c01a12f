"""Determinism, honestly stated: the same training stage run twice on one machine gives identical weights
(bit for bit, CPU, two compute threads as the demo uses on 2 cores); another seed gives other weights.
Across machines, CPU kernel dispatch (vector width, thread count, library versions) may change float
results: README "Reproducibility"."""

from __future__ import annotations

import shutil

import pytest
import torch
import yaml

from pipeline.stages.train import run
from semcolor.training.checkpoint import load_checkpoint
from tests.mlflow_store import migrated_mlflow_db, mlflow_store  # noqa: F401  (fixtures)
from tests.world_shards import build_world_shards

TINY_TRAIN = {"steps": 4, "log_every": 2, "checkpoint_every": 2, "threads": 2, "device": "cpu", "seed": 0}
TINY_LOADER = {"batch_size": 4, "crop": 64, "workers": 0, "shuffle_buffer": 8, "seed": 0}
PARAMS = {
    "train_gridnet": {"data": {"source": "synthetic", "size": 128}, "loader": {**TINY_LOADER, "crop": 32},
                      "train": {**TINY_TRAIN, "lr": 0.01},
                      "model": {"num_classes": 12, "width": 0.125, "block_drop_prob": 0.1},
                      "variants": {"gray": {"model": "gridnet"},
                                   "color": {"model": "gridnet", "config": {"input_mode": "lab", "gray_dropout": 0.5}}}},
    "train_sdc": {"data": {"source": "synthetic", "size": 128}, "loader": TINY_LOADER, "train": TINY_TRAIN,
                  "model": {"num_classes": 12, "width": 0.0625},
                  "variants": {"paper": {"model": "sdc", "segmenter": "models/gridnet_gray.pt"}}},
}


def _weights(path):
    return load_checkpoint(path)["model"]


@pytest.mark.parametrize(("family", "variant"), [("gridnet", "color"), ("sdc", "paper")])
@pytest.mark.slow
def test_the_same_training_stage_twice_gives_identical_weights_and_another_seed_others(
        tmp_path, mlflow_store, family, variant):  # noqa: F811  (fixture)
    build_world_shards(tmp_path)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(PARAMS))
    threads = torch.get_num_threads()
    try:
        if family == "sdc":  # the U-Net bundles its seed's GridNet: models/gridnet_gray.pt, models/seeds/1/...
            run("gridnet", "gray", "params.yaml")
            run("gridnet", "gray", "params.yaml", seed=1)
        first_summary = run(family, variant, "params.yaml")
        first = tmp_path / "models" / f"{family}_{variant}.pt"
        kept = tmp_path / "first.pt"
        shutil.copyfile(first, kept)
        run(family, variant, "params.yaml")
        seeded_summary = run(family, variant, "params.yaml", seed=1)
    finally:
        torch.set_num_threads(threads)
    again, seeded = _weights(first), _weights(tmp_path / "models" / "seeds" / "1" / f"{family}_{variant}.pt")
    reference = _weights(kept)
    assert reference.keys() == again.keys()
    for name, tensor in reference.items():
        assert torch.equal(tensor, again[name]), f"{name} differs between two identical runs"
    assert any(not torch.equal(tensor, seeded[name]) for name, tensor in reference.items() if tensor.is_floating_point())
    # the extra seed's outputs live under seeds/1/ and are not registered in MLflow
    assert (tmp_path / "metrics" / "train" / "seeds" / "1" / f"{family}_{variant}.json").is_file()
    assert (tmp_path / "plots" / "train" / "seeds" / "1" / f"{family}_{variant}.csv").is_file()
    assert "registered_model" in first_summary and "registered_model" not in seeded_summary
    payload = load_checkpoint(tmp_path / "models" / "seeds" / "1" / f"{family}_{variant}.pt")
    assert payload["train_config"]["seed"] == 1
