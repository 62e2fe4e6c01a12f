"""DVC stages `train_<family>@<variant>`: train one model on shards, track it in MLflow, register it.

    python -m pipeline.stages.train psc plain        # train_psc@plain
    python -m pipeline.stages.train sdc no_in        # train_sdc@no_in
    python -m pipeline.stages.train psc plain --seed 1   # train_psc_seed@1-plain (make claims)

The params section `train_<family>` holds the data, loader, train and model settings shared by the
family's variants, and `variants.<variant>` names the registered model and its config overrides.
Started by torchrun, it trains with DDP; rank 0 alone tracks and writes outputs.

``--seed S`` (the extra training seeds of `make claims`): train.seed and loader.seed become S (weights
init, dropout, crops, flips, shuffling), every output goes under a ``seeds/S/`` folder (models/seeds/S/,
metrics/train/seeds/S/, plots/train/seeds/S/), a U-Net bundles its seed's GridNet, and nothing is
registered in MLflow (the run is tagged ``semcolor.seed``), so the registry only holds the default models.

Resuming: progress checkpoints live in models/.partial/ (not a DVC output, so DVC does not delete them
when the stage restarts). A restarted stage resumes only if the stored model name, model config, train
config and data manifest hash equal the current ones; otherwise it starts fresh.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from pipeline import tracking
from pipeline.params import read_params, section
from semcolor.atomic import write_json_atomic, write_text_atomic
from semcolor.config import ConfigError, config_to_dict, load_config
from semcolor.loader import LoaderConfig, ShardBatches, read_manifest
from semcolor.models import create_model
from semcolor.training.checkpoint import load_checkpoint
from semcolor.training.distributed import cleanup_distributed, init_distributed, resolve_device
from semcolor.training.loop import TrainConfig, train


@dataclass(frozen=True)
class ShardRef:
    """Which shards a stage reads: data/shards/<source>/<size>."""

    source: str = "synthetic"
    size: int = 128
    split: str = "train"


@dataclass(frozen=True)
class Variant:
    model: str  # registered model name (semcolor.models.list_models())
    config: dict[str, Any] = field(default_factory=dict)  # overrides of the family's model config
    segmenter: str | None = None  # a GridNet checkpoint bundled with the registered model (the U-Net's maps)


@dataclass(frozen=True)
class TrainStageConfig:
    """params.yaml `train_<family>`."""

    data: ShardRef = field(default_factory=ShardRef)
    loader: LoaderConfig = field(default_factory=LoaderConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    model: dict[str, Any] = field(default_factory=dict)
    variants: dict[str, Variant] = field(default_factory=dict)
    family: str = ""  # the registry family name (psc, sdc, gridnet, cls ...); defaults to the section's
    class_weights_from: str | None = None  # ab-bin statistics JSON (stage ab_bins): its weights -> model class_weights


def stage_paths(family: str, variant: str, shards_dir: str = "data/shards", seed: int | None = None
                ) -> dict[str, Path]:
    name = f"{family}_{variant}"
    below = Path("seeds") / str(seed) if seed is not None else Path()
    return {
        "checkpoint": Path("models") / below / f"{name}.pt",
        "partial": Path("models") / ".partial" / below / f"{name}.pt",
        "curve": Path("plots") / "train" / below / f"{name}.csv",
        "summary": Path("metrics") / "train" / below / f"{name}.json",
    }


def seeded_path(path: str, seed: int | None) -> str:
    """A model path of the default stages (models/x.pt) as the same model of an extra seed
    (models/seeds/<seed>/x.pt); other paths and seed None are returned unchanged."""
    if seed is None or not path.startswith("models/"):
        return path
    return str(Path("models") / "seeds" / str(seed) / path.removeprefix("models/"))


def load_stage_config(family: str, variant: str, params_path: str | Path = "params.yaml", seed: int | None = None
                      ) -> tuple[TrainStageConfig, Variant, dict]:
    where = f"train_{family}"
    stage = load_config(TrainStageConfig, section(read_params(params_path), where), where)
    if variant not in stage.variants:
        raise ConfigError(f"{where}.variants has no {variant!r}; it has {sorted(stage.variants)}")
    if seed is not None:
        if seed < 0:
            raise ConfigError(f"--seed must be >= 0, got {seed}")
        stage = dataclasses.replace(stage, train=dataclasses.replace(stage.train, seed=seed),
                                    loader=dataclasses.replace(stage.loader, seed=seed))
    chosen = stage.variants[variant]
    if seed is not None and chosen.segmenter is not None:
        chosen = dataclasses.replace(chosen, segmenter=seeded_path(chosen.segmenter, seed))
    model_config = {**stage.model, **chosen.config}
    if stage.class_weights_from is not None:
        from semcolor.quantized_ab import read_bin_statistics

        model_config["class_weights"] = [float(w) for w in read_bin_statistics(stage.class_weights_from)["weights"]]
    return stage, chosen, model_config


def _resumable(partial: Path, model_name: str, model_config: dict, train_config: TrainConfig, manifest_hash: str) -> bool:
    if not partial.is_file():
        return False
    try:
        payload = load_checkpoint(partial)
    except Exception:  # an unreadable leftover is not worth resuming from
        return False
    return (payload["model_name"] == model_name and payload["model_config"] == model_config
            and payload["train_config"] == config_to_dict(train_config)
            and payload.get("extra", {}).get("manifest_sha256") == manifest_hash)


def run(family: str, variant: str, params_path: str | Path = "params.yaml", seed: int | None = None) -> dict[str, Any]:
    stage, chosen, model_config = load_stage_config(family, variant, params_path, seed)
    stage_name = f"train_{family}@{variant}" if seed is None else f"train_{family}_seed@{seed}-{variant}"
    registry_family = stage.family or family
    if stage.train.threads is not None:
        # on a small CPU, more compute threads than free cores thrash (OpenMP spin-waits): 20x slower here
        torch.set_num_threads(stage.train.threads)
    device = resolve_device(stage.train.device)
    context = init_distributed(device)
    if device.type == "cuda":
        device = torch.device("cuda", context.local_rank)
    shard_dir = Path("data/shards") / stage.data.source / str(stage.data.size)
    manifest = shard_dir / "manifest.json"
    paths = stage_paths(family, variant, seed=seed)
    batches = ShardBatches(shard_dir, stage.data.split, stage.loader, train=True, rank=context.rank,
                           world_size=context.world_size)
    torch.manual_seed(stage.train.seed)
    model = create_model(chosen.model, **model_config)
    manifest_hash = tracking.file_sha256(manifest)
    class_names = read_manifest(shard_dir).get("class_names", [])
    resume = _resumable(paths["partial"], chosen.model, model_config, stage.train, manifest_hash)
    if not resume:
        paths["partial"].unlink(missing_ok=True)
    curve: list[dict[str, float]] = []

    def on_log(metrics: dict[str, float], step: int) -> None:
        curve.append({"step": step, **metrics})
        tracking.log_metrics(metrics, step)

    tracked_config = {"stage": stage_name, "model_name": chosen.model, "model": model_config,
                      "train": config_to_dict(stage.train), "loader": config_to_dict(stage.loader),
                      "data": config_to_dict(stage.data), "world_size": context.world_size}
    tags = {"semcolor.family": registry_family, "semcolor.variant": variant, "semcolor.dataset": stage.data.source,
            "semcolor.model_name": chosen.model, **({"semcolor.seed": str(seed)} if seed is not None else {})}
    with tracking.stage_run(stage_name, tracked_config, manifest=manifest, tags=tags, enabled=context.is_main) as mlflow_run:
        result = train(model, chosen.model, model_config, batches, stage.train, paths["partial"], device=device,
                       context=context, on_log=on_log, resume=resume,
                       extra={"manifest_sha256": manifest_hash, "stage": stage_name, "dataset": stage.data.source,
                              "class_names": list(class_names)})
        summary: dict[str, Any] = {}
        if context.is_main:
            paths["checkpoint"].parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(paths["partial"], paths["checkpoint"])
            summary = {"steps": result.step, "samples_per_second": result.samples_per_second,
                       **{f"final_{k}": v for k, v in result.losses.items()}}
            _write_curve(paths["curve"], curve)
            size = stage.loader.crop or stage.data.size
            channels = 3 if model_config.get("input_mode") == "lab" else 1  # a GridNet trained on color
            example = torch.zeros(1, channels, size, size).numpy()
            tracking.log_metrics({"final_" + k: v for k, v in result.losses.items()})
            summary["run_id"] = mlflow_run.info.run_id
            if seed is None:  # extra seeds are for the claims only: the registry holds the default models
                registered = tracking.registered_name(registry_family, variant)
                model_info = tracking.log_checkpoint_model(paths["checkpoint"], registered, example,
                                                           segmenter=chosen.segmenter)
                summary["registered_model"] = f"{registered}/{model_info.registered_model_version}"
            write_json_atomic(paths["summary"], summary)
            paths["partial"].unlink(missing_ok=True)
    cleanup_distributed()
    return summary


def _write_curve(path: Path, rows: list[dict[str, float]]) -> None:
    """The training curve as CSV for `dvc plots` (step, loss, ... per logged step)."""
    columns = sorted({key for row in rows for key in row} - {"step"})
    lines = [",".join(["step", *columns])]
    lines += [",".join([str(int(row["step"]))] + [f"{row.get(c, float('nan')):.6g}" for c in columns]) for row in rows]
    write_text_atomic(path, "\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="train one model variant (a DVC stage)")
    parser.add_argument("family", help="params section train_<family>, e.g. psc, sdc, gridnet")
    parser.add_argument("variant", help="a key of train_<family>.variants, e.g. plain, embed, full")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--seed", type=int, default=None,
                        help="an extra training seed (make claims): overrides train.seed and loader.seed, "
                             "writes under models/seeds/<seed>/ and registers nothing")
    args = parser.parse_args(argv)
    try:
        summary = run(args.family, args.variant, args.params, args.seed)
    except ConfigError as error:
        print(f"params.yaml: {error}", file=sys.stderr)
        return 2
    if summary:
        print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
