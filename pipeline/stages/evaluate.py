"""DVC stages `evaluate` and `evaluate_seed@<seed>`: every trained model on the validation split.

    python -m pipeline.stages.evaluate               # models/*.pt -> metrics/evaluate.json, reports/figures/
    python -m pipeline.stages.evaluate --seed 1      # models/seeds/1/*.pt -> metrics/seeds/1/evaluate.json
    python -m pipeline.stages.evaluate --shards data/shards/synthetic/128   # as dvc.yaml runs it

``--shards DIR``: the validation and train shards (default ``<data.shards_dir>/<evaluate.source>/<size>``).

The measuring is ``semcolor.evaluation.suite.evaluate_models``; this stage loads the params section
`evaluate`, the validation shards, the train split's statistics (for the baselines) and the checkpoints,
calls it, and writes metrics/evaluate.json (``models.<model>.<metric>``, ``baselines``, ``details``), the
image grids under reports/figures/ (default seed only) and MLflow runs: one for the stage and, for the
default seed, one per model tagged with its family and variant (so `semcolor compare` shows evaluation
metrics beside the training runs). The claims are the `claims` stage's. The loading is
``pipeline.evaluate_inputs``, the figures ``pipeline.evaluate_figures``, the MLflow record
``pipeline.evaluate_tracking``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from pipeline import tracking
from pipeline.evaluate_figures import write_figures
from pipeline.evaluate_inputs import load_eval_set, load_models, load_train_statistics, world_of
from pipeline.evaluate_tracking import log_model_runs, log_stage_figures
from pipeline.params import load_section, shard_dir as default_shard_dir
from semcolor.tracking import tags as tt
from semcolor.atomic import write_json_atomic
from semcolor.config import ConfigError, config_to_dict
from semcolor.evaluation.suite import EvaluateConfig, evaluate_models
from semcolor.data.loader import read_manifest

FIGURES_DIR = Path("reports/figures")
COLORIZERS = ("psc_plain", "psc_embed", "psc_full", "sdc_paper", "sdc_no_in", "cls_plain", "cls_semantic",
              "cls_semantic_gan")
SEGMENTERS = ("psc_embed", "psc_full", "psc_seg_only", "gridnet_gray")
MAP_SEGMENTER = "gridnet_gray"  # the U-Net's maps, as the paper's system predicts them
TABLE3_SEGMENTER = "gridnet_color"


def stage_paths(seed: int | None) -> dict[str, Path]:
    """Where the stage reads models and writes its record: the default stages' or one extra seed's."""
    if seed is None:
        return {"models": Path("models"), "evaluation": Path("metrics/evaluate.json")}
    return {"models": Path("models/seeds") / str(seed), "evaluation": Path("metrics/seeds") / str(seed) / "evaluate.json"}


def run(config: EvaluateConfig, seed: int | None = None, progress: bool = True,
        run_id: str | None = None, shard_dir: Path | None = None) -> dict[str, Any]:
    """Evaluate the models of ``seed`` (None: the default stages') and write the record (and, for the
    default seed, the figures; ``run_id``, the stage's MLflow run, goes into figures/columns.json for the
    report; ``shard_dir`` None: ``<data.shards_dir>/<source>/<size>`` of params.yaml). Returns the record."""
    paths = stage_paths(seed)
    if shard_dir is None:
        shard_dir = default_shard_dir(config.source, config.size)
    manifest = read_manifest(shard_dir)
    num_classes = len(manifest["class_names"])
    wanted = set(COLORIZERS) | set(SEGMENTERS) | {MAP_SEGMENTER, TABLE3_SEGMENTER}
    models = load_models(paths["models"], wanted)
    data = load_eval_set(shard_dir, config.max_images)
    statistics = load_train_statistics(shard_dir, num_classes)
    world = world_of(manifest)
    evaluation = evaluate_models(
        {name: models[name] for name in COLORIZERS}, {name: models[name] for name in SEGMENTERS},
        models[MAP_SEGMENTER], models[TABLE3_SEGMENTER], data, statistics, num_classes, world, config,
        progress=progress)
    record = {"dataset": config.source, "seed": seed, "class_names": list(manifest["class_names"]),
              "world_version": manifest.get("source_description", {}).get("world_spec", {}).get("version"),
              "images": len(data), "sampled_images": min(config.sample_images, len(data)),
              "temperature": config.temperature,
              "models": evaluation.results, "baselines": evaluation.baselines, "details": evaluation.details}
    write_json_atomic(paths["evaluation"], record)
    if seed is None:
        write_figures(evaluation, FIGURES_DIR, run_id)
    record["_images"] = evaluation.images
    return record


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--seed", type=int, default=None,
                        help="evaluate the models of this extra training seed (models/seeds/<seed>/); "
                             "default: the default stages' models/")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--shards", default=None,
                        help="the shard folder (dvc.yaml passes it); default: "
                             "<data.shards_dir>/<evaluate.source>/<evaluate.size>")
    args = parser.parse_args(argv)
    try:
        config = load_section(EvaluateConfig, "evaluate", args.params)
        if args.shards is None:
            shard_dir = default_shard_dir(config.source, config.size, args.params)
        else:
            shard_dir = Path(args.shards)
    except ConfigError as error:
        print(f"params.yaml: {error}", file=sys.stderr)
        return 2
    stage = "evaluate" if args.seed is None else f"evaluate_seed@{args.seed}"
    tags = {tt.TAG_DATASET: config.source, **({tt.TAG_SEED: str(args.seed)} if args.seed is not None else {})}
    with tracking.stage_run(stage, config_to_dict(config), manifest=shard_dir / "manifest.json", tags=tags,
                            dataset=tracking.DatasetRef(shard_dir, "evaluation")) as stage_run:
        record = run(config, args.seed, progress=not args.no_progress,
                     run_id=stage_run.info.run_id if stage_run is not None else None, shard_dir=shard_dir)
        images = record.pop("_images")
        # an extra seed's images stay unlogged, as they stay unwritten: the figures are the default seed's
        log_stage_figures(record["models"], images if args.seed is None else {})
    if args.seed is None:
        log_model_runs(record["models"], config_to_dict(config), shard_dir / "manifest.json", config.source,
                       stage_run.info.run_id)
    headline = {name: {k: v for k, v in record["models"].get(name, {}).items()
                       if k in ("palette_accuracy", "psnr", "fast_palette_accuracy", "seg_miou")}
                for name in ("psc_full", "sdc_paper", "gridnet_gray")}
    print(f"wrote {stage_paths(args.seed)['evaluation']}: {json.dumps(headline)}")
    return 0


if __name__ == "__main__":
    from pipeline.stage_main import stage_main  # one line per user error, exit 2

    sys.exit(stage_main(main, "evaluate"))
