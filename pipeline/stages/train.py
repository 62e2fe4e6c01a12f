"""DVC stages `train_<family>@<variant>`: train one model on shards, track it in MLflow, register it.

    python -m pipeline.stages.train psc plain --shards data/shards/synthetic/128   # train_psc@plain
    python -m pipeline.stages.train sdc no_in        # train_sdc@no_in, shards of train_sdc.data
    python -m pipeline.stages.train psc plain --seed 1   # train_psc_seed@1-plain (make claims)

``--shards DIR``: the shard folder (dvc.yaml passes the one it lists as the stage's dependency); without
it, ``<data.shards_dir>/<train_<family>.data.source>/<size>``.

The params section `train_<family>` holds the data, loader, train and model settings shared by the
family's variants, and `variants.<variant>` names the registered model and its config overrides.
Started by torchrun, it trains with DDP; rank 0 alone tracks and writes outputs.

``--seed S`` (the extra training seeds of `make claims`): train.seed and loader.seed become S (weights
init, dropout, crops, flips, shuffling), every output goes under a ``seeds/S/`` folder (models/seeds/S/,
metrics/train/seeds/S/, plots/train/seeds/S/), a U-Net bundles its seed's GridNet, and nothing is
registered in MLflow (the run is tagged ``semcolor.seed``), so the registry only holds the default models.

Resuming: progress checkpoints live in models/.partial/ (not a DVC output, so DVC does not delete them
when the stage restarts). A restarted stage resumes only if the stored model name, model config, train
config and data manifest hash equal the current ones; otherwise it starts fresh. The checkpoint carries
the rows logged so far, so the curve of a resumed stage is whole.

Curves: plots/train/<family>_<variant>.csv has one row per logged step with every loss term the model
returns (raw, and ``<term>_weighted`` where the model weights its terms), grad_norm, samples/s and, every
``train.val_every`` steps and at the end, ``val_<term>`` on the first ``train.val_samples`` samples of the
shards' val split (centre crops of the training crop size, no flips).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from pipeline import tracking, tracking_health
from pipeline.params import read_params, section
from pipeline.params import shard_dir as default_shard_dir
from pipeline.stage_main import stage_main
from semcolor import tracking_tags as tt
from semcolor.atomic import copy_file_atomic, write_json_atomic, write_text_atomic
from semcolor.config import ConfigError, config_to_dict, load_config, relocate_keys
from semcolor.loader import LoaderConfig, ShardBatches, read_manifest
from semcolor.models import create_model
from semcolor.training.checkpoint import load_checkpoint
from semcolor.training.distributed import cleanup_distributed, init_distributed, resolve_device
from semcolor.training.loop import TrainConfig, train


EXAMPLE_SIZE = 32  # px, the registered model's input example


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


def stage_paths(family: str, variant: str, seed: int | None = None) -> dict[str, Path]:
    """Where a variant's stage writes: its checkpoint, the resumable progress checkpoint, curve and summary
    (the default stages' under models/, plots/train/, metrics/train/; an extra seed's under seeds/<seed>/)."""
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


def run(family: str, variant: str, params_path: str | Path = "params.yaml", seed: int | None = None,
        shards: str | Path | None = None) -> dict[str, Any]:
    """Train one variant on the shard folder ``shards`` (None: ``<data.shards_dir>/<source>/<size>`` of
    ``train_<family>.data``) and write its outputs (``stage_paths``)."""
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
    if context.is_main:
        tracking_health.check_reachable()  # before any work: a dead server is one line, not 4 minutes
    torch.manual_seed(stage.train.seed)
    model = build_model(family, variant, chosen, model_config)
    if shards is None:
        shard_dir = default_shard_dir(stage.data.source, stage.data.size, params_path)
    else:
        shard_dir = Path(shards)
    manifest = shard_dir / "manifest.json"
    paths = stage_paths(family, variant, seed=seed)
    check_crop(f"train_{family}", stage, shard_dir)
    batches = ShardBatches(shard_dir, stage.data.split, stage.loader, train=True, rank=context.rank,
                           world_size=context.world_size)
    manifest_hash = tracking.file_sha256(manifest)
    class_names = read_manifest(shard_dir).get("class_names", [])
    resume = _resumable(paths["partial"], chosen.model, model_config, stage.train, manifest_hash)
    if not resume:
        paths["partial"].unlink(missing_ok=True)
    validation = validation_batches(shard_dir, stage.loader, stage.train.val_samples) if context.is_main else None
    # the rows its killed predecessor logged travel in the progress checkpoint (TrainResult.history)
    restored: list[dict[str, float]] = _restored_history(paths["partial"]) if resume else []

    def on_log(metrics: dict[str, float], step: int) -> None:
        tracking.log_metrics(metrics, step)

    tracked_config = {"stage": stage_name, "model_name": chosen.model, "model": model_config,
                      "train": config_to_dict(stage.train), "loader": config_to_dict(stage.loader),
                      "data": config_to_dict(stage.data), "world_size": context.world_size}
    tags = {tt.TAG_FAMILY: registry_family, tt.TAG_VARIANT: variant, tt.TAG_DATASET: stage.data.source,
            tt.TAG_MODEL_NAME: chosen.model, **({tt.TAG_SEED: str(seed)} if seed is not None else {})}
    with tracking.stage_run(stage_name, tracked_config, manifest=manifest, tags=tags, enabled=context.is_main,
                            dataset=tracking.DatasetRef(shard_dir, "training")) as mlflow_run:
        for row in restored:  # a resumed run's MLflow curve carries the steps its killed predecessor logged
            tracking.log_metrics({k: v for k, v in row.items() if k != "step"}, int(row["step"]))
        result = train(model, chosen.model, model_config, batches, stage.train, paths["partial"], device=device,
                       context=context, on_log=on_log, resume=resume, validation=validation,
                       extra={"manifest_sha256": manifest_hash, "stage": stage_name, "dataset": stage.data.source,
                              "class_names": list(class_names)})
        summary: dict[str, Any] = {}
        if context.is_main:
            copy_file_atomic(paths["partial"], paths["checkpoint"])  # never a half-copied model in models/
            losses = dict(result.losses)  # restored from the checkpoint when a run killed after it had no step left
            summary = {"steps": result.step, "samples_per_second": result.samples_per_second,
                       **{f"final_{k}": v for k, v in losses.items()}}
            _write_curve(paths["curve"], result.history)
            # the signature leaves H and W free; 32 x 32 (a multiple of every model's stride) shows the layout;
            # the channels are the model's own (a GridNet trained on colour takes L and ab: 3)
            example = torch.zeros(1, model.input_channels, EXAMPLE_SIZE, EXAMPLE_SIZE).numpy()
            tracking.log_sample_grid(paths["checkpoint"], shard_dir, f"{family}_{variant}")
            tracking.log_metrics({"final_" + k: v for k, v in losses.items()})
            summary["run_id"] = mlflow_run.info.run_id
            if seed is None:  # extra seeds are for the claims only: the registry holds the default models
                registered = tracking.registered_name(registry_family, variant)
                model_info = tracking.log_checkpoint_model(
                    paths["checkpoint"], registered, example, segmenter=chosen.segmenter,
                    description=tracking.version_description(stage_name, chosen.model, stage.data.source,
                                                             result.step, losses.get("loss"), manifest_hash),
                    tags=tracking.version_tags(stage_name, stage.data.source, manifest_hash, result.step, losses),
                    model_description=f"semcolor {registry_family} model, variant {variant} ({chosen.model}); "
                                      f"one version per run of the DVC stage {stage_name}.")
                summary["registered_model"] = f"{registered}/{model_info.registered_model_version}"
            write_json_atomic(paths["summary"], summary)
            paths["partial"].unlink(missing_ok=True)
    cleanup_distributed()
    return summary


def validation_batches(shard_dir: Path, loader: LoaderConfig, samples: int) -> list[dict[str, Any]]:
    """The first ``samples`` samples of the val split as batches of the training batch size, centre-cropped
    to the training crop (so a validation loss compares with the training loss), no flips. Empty when
    ``samples`` is 0 or the shards have no val split."""
    if samples == 0 or "val" not in read_manifest(shard_dir).get("splits", {}):
        return []
    config = LoaderConfig(batch_size=min(samples, loader.batch_size), crop=loader.crop, flip=False, workers=0,
                          seed=loader.seed)
    batches, taken = [], 0
    for batch in ShardBatches(shard_dir, "val", config, train=False):
        keep = min(samples - taken, len(batch["key"]))
        batches.append({key: value[:keep] for key, value in batch.items()})
        taken += keep
        if taken >= samples:
            break
    return batches
def build_model(family: str, variant: str, chosen: Variant, model_config: dict[str, Any]) -> torch.nn.Module:
    """The variant's model; a config error names its key in params.yaml (train_sdc.model.widht, or
    train_sdc.variants.<variant>.config.<key> for a variant's override), not the model's own (sdc.widht)."""
    where = f"train_{family}"
    try:
        return create_model(chosen.model, **model_config)
    except ConfigError as error:
        def place(key: str) -> str:
            return f"{where}.variants.{variant}.config.{key}" if key in chosen.config else f"{where}.model.{key}"

        raise relocate_keys(error, chosen.model, place) from None


def check_crop(where: str, stage: TrainStageConfig, shard_dir: Path) -> None:
    """A crop larger than the stored shards fails here, naming the key, not at the first batch in a worker."""
    crop = stage.loader.crop
    if crop is None:
        return
    width, height = read_manifest(shard_dir).get("stored_size", [crop, crop])
    if crop > min(width, height):
        raise ConfigError(f"{where}.loader.crop: {crop} is larger than the shards in {shard_dir} "
                          f"({width}x{height}); use a crop <= {min(width, height)} or larger shards "
                          f"({where}.data.size)")


def _restored_history(checkpoint: Path) -> list[dict[str, float]]:
    """The rows logged up to the progress checkpoint (the loop replays the later steps)."""
    try:
        return [dict(row) for row in load_checkpoint(checkpoint).get("history", [])]
    except (OSError, ValueError, KeyError, TypeError, RuntimeError):
        return []


def _write_curve(path: Path, rows: list[dict[str, float]]) -> None:
    """The training curve as CSV for `dvc plots` (step, loss, ... per logged step). A value a row lacks
    (``val_*`` between validation steps) is an empty cell, which the plots skip."""
    columns = sorted({key for row in rows for key in row} - {"step"})
    lines = [",".join(["step", *columns])]
    lines += [",".join([str(int(row["step"]))] + [f"{row[c]:.6g}" if c in row else "" for c in columns])
              for row in rows]
    write_text_atomic(path, "\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="train one model variant (a DVC stage)")
    parser.add_argument("family", help="params section train_<family>, e.g. psc, sdc, gridnet")
    parser.add_argument("variant", help="a key of train_<family>.variants, e.g. plain, embed, full")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--seed", type=int, default=None,
                        help="an extra training seed (make claims): overrides train.seed and loader.seed, "
                             "writes under models/seeds/<seed>/ and registers nothing")
    parser.add_argument("--shards", default=None,
                        help="the shard folder to train on (dvc.yaml passes it); default: "
                             "<data.shards_dir>/<train_<family>.data.source>/<size>")
    args = parser.parse_args(argv)

    def work() -> int:
        summary = run(args.family, args.variant, args.params, args.seed, args.shards)
        if summary:
            print(json.dumps(summary, indent=2))
        return 0

    return stage_main(work, f"train_{args.family}@{args.variant}")


if __name__ == "__main__":
    sys.exit(main())
