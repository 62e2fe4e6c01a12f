"""The paper setups (configs/paper/*.yaml) are valid overrides of params.yaml, checked by the same typed
configs the stages use; typos are caught before any GPU time is spent."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.exp import apply_overrides, command, read_setup, validate
from pipeline.params import read_params
from semcolor.config import ConfigError

REPO = Path(__file__).resolve().parents[1]
SETUPS = sorted((REPO / "configs" / "paper").glob("*.yaml"))


def test_default_params_are_valid():
    validate(read_params(REPO / "params.yaml"))


@pytest.mark.parametrize("path", SETUPS, ids=[p.stem for p in SETUPS])
@pytest.mark.slow
def test_paper_setup_is_valid_and_becomes_one_dvc_exp_command(path):
    setup = read_setup(path)
    validate(apply_overrides(read_params(REPO / "params.yaml"), setup["overrides"]))
    args = command(setup)
    assert args[1:5] == ["-m", "dvc", "exp", "run"] and args[-len(setup["targets"]):] == setup["targets"]
    sets = dict(a.split("=", 1) for a in args[5:-len(setup["targets"])] if a != "-S")
    assert {k: json.loads(v) for k, v in sets.items()} == setup["overrides"]


def test_a_typo_in_an_override_is_refused_with_its_key():
    params = read_params(REPO / "params.yaml")
    with pytest.raises(ConfigError, match="train_sdc.loader.crp"):
        validate(apply_overrides(params, {"train_sdc.loader.crp": 352}))
    with pytest.raises(ConfigError, match="no section train_sdcc"):
        apply_overrides(params, {"train_sdcc.loader.crop": 352})
    with pytest.raises(ConfigError, match="train_psc.variants.plain"):
        validate(apply_overrides(params, {"train_psc.model.width": -1.0}))
