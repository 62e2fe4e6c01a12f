"""The evaluate stage's loaders that need no trained model: the world read from a manifest, and the
checkpoint loader's refusal when checkpoints are missing."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pipeline.evaluate_inputs import load_models, world_of
from semcolor.data.sources.synthetic import WorldConfig, class_spec, gray_alike_pairs_of, palette_of


def test_world_of_reads_the_palette_and_twins_of_a_world_spec_and_none_without_one():
    spec = class_spec(WorldConfig())
    manifest = json.loads(json.dumps({"source_description": {"world_spec": spec}}))  # as read from disk
    world = world_of(manifest)
    assert world is not None and world.twin_pairs == tuple(gray_alike_pairs_of(spec))
    assert np.array_equal(world.palette.modes, palette_of(spec).modes) and world.twin_pairs
    assert world_of({"source_description": {"name": "a real dataset"}}) is None and world_of({}) is None


def test_load_models_names_every_missing_checkpoint_before_loading_any(tmp_path):
    (tmp_path / "psc_full.pt").write_bytes(b"not a checkpoint: must not be read")
    missing = "no checkpoint for gridnet_gray, sdc_paper; train them first"
    with pytest.raises(FileNotFoundError, match=missing):
        load_models(tmp_path, {"psc_full", "sdc_paper", "gridnet_gray"})
