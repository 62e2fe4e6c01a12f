"""Run a named parameter setup as a DVC experiment: `python -m pipeline.exp configs/paper/<setup>.yaml`.

A setup file holds `overrides` (dotted params keys -> values) and `targets` (stages). This runs
`dvc exp run -S key=value ... <targets>` after checking that the overridden params.yaml is valid for every
typed config it touches, so a typo fails here, before hours of GPU time. `--dry-run` prints the command.
"""

from __future__ import annotations

import argparse
import copy
import json
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from pipeline.params import DataConfig, DownloadConfig, ShardsConfig, read_params
from semcolor.config import ConfigError, load_config


def read_setup(path: str | Path) -> dict[str, Any]:
    setup = yaml.safe_load(Path(path).read_text()) or {}
    unknown = set(setup) - {"description", "targets", "overrides"}
    if unknown or not isinstance(setup.get("overrides"), dict):
        raise ConfigError(f"{path}: needs an 'overrides' mapping (and optional description, targets); unknown {sorted(unknown)}")
    return setup


def apply_overrides(params: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``params`` with each dotted key set; a key whose parent section does not exist is an error."""
    result = copy.deepcopy(params)
    for dotted, value in overrides.items():
        node = result
        parts = dotted.split(".")
        for i, part in enumerate(parts[:-1]):
            if not isinstance(node.get(part), dict):
                raise ConfigError(f"override {dotted}: params.yaml has no section {'.'.join(parts[: i + 1])}")
            node = node[part]
        node[parts[-1]] = value
    return result


def validate(params: dict[str, Any]) -> None:
    """Load every section a stage would load, with the same typed configs."""
    from pipeline.stages.ab_bins import AbBinsConfig
    from semcolor.evaluation.suite import EvaluateConfig
    from pipeline.stages.train import TrainStageConfig
    from semcolor.models import create_model

    load_config(DataConfig, params["data"], "data")
    load_config(DownloadConfig, params["download"], "download")
    load_config(ShardsConfig, params["shards"], "shards")
    load_config(AbBinsConfig, params["ab_bins"], "ab_bins")
    load_config(EvaluateConfig, params["evaluate"], "evaluate")
    for section in [k for k in params if k.startswith("train_")]:
        stage = load_config(TrainStageConfig, params[section], section)
        for name, variant in stage.variants.items():
            config = {**stage.model, **variant.config}
            config.pop("class_weights", None)
            try:  # the model's own config class validates names and ranges; build on the meta device
                import torch

                with torch.device("meta"):
                    create_model(variant.model, **config)
            except (TypeError, ValueError) as error:
                raise ConfigError(f"{section}.variants.{name}: {error}") from error


def command(setup: dict[str, Any]) -> list[str]:
    args = [sys.executable, "-m", "dvc", "exp", "run"]
    for key, value in setup["overrides"].items():
        args += ["-S", f"{key}={json.dumps(value)}"]
    return args + list(setup.get("targets", []))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("setup", help="a setup file, e.g. configs/paper/psc_voc2012_aug.yaml")
    parser.add_argument("--dry-run", action="store_true", help="validate and print the command only")
    args = parser.parse_args(argv)
    try:
        setup = read_setup(args.setup)
        validate(apply_overrides(read_params(), setup["overrides"]))
    except ConfigError as error:
        print(f"{args.setup}: {error}", file=sys.stderr)
        return 2
    cmd = command(setup)
    print(shlex.join(cmd[2:]))
    return 0 if args.dry_run else subprocess.call(cmd)


if __name__ == "__main__":
    sys.exit(main())
