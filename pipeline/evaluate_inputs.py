"""What the `evaluate` stage (``pipeline.stages.evaluate``) measures on: the validation images, the train
split's statistics, the synthetic world's palette and twins, and the trained checkpoints.

    data = load_eval_set(shard_dir, config.max_images)
    statistics = load_train_statistics(shard_dir, num_classes)
    world = world_of(read_manifest(shard_dir))
    models = load_models(Path("models"), {"psc_full", "gridnet_gray"})

Every loader reads whole splits in key order without crops or flips, so the same shards give the same inputs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from semcolor.data.loader import LoaderConfig, ShardBatches, read_manifest
from semcolor.evaluation import baselines as bl
from semcolor.evaluation import measures as ev
from semcolor.evaluation.suite import World
from semcolor.training.checkpoint import load_checkpoint, model_from_checkpoint


def load_eval_set(shard_dir: Path, max_images: int) -> ev.EvalSet:
    """The first ``max_images`` validation samples (in key order) at the stored size, with their metadata."""
    batches = ShardBatches(shard_dir, "val", LoaderConfig(batch_size=max_images, crop=None, flip=False, workers=0),
                           train=False)
    batch = next(iter(batches))
    metadata = _shard_metadata(shard_dir, set(batch["key"]))
    return ev.EvalSet(batch["L"], batch["ab"], batch["seg"], list(batch["key"]),
                      [metadata.get(k, {}) for k in batch["key"]])


def _shard_metadata(shard_dir: Path, keys: set[str]) -> dict[str, dict[str, Any]]:
    # the loader's batches carry no per-sample metadata, so it is read from the val shards themselves
    from semcolor.data.shard_reader import read_shard_samples

    found: dict[str, dict[str, Any]] = {}
    for shard in read_manifest(shard_dir)["splits"]["val"]["shards"]:
        for sample in read_shard_samples(shard_dir / shard["file"]):
            if sample.key in keys:
                found[sample.key] = sample.metadata
    return found


def load_train_statistics(shard_dir: Path, num_classes: int) -> bl.TrainStatistics:
    """The baselines' fit: class pixel counts and mean ab over the whole train split (no crops, no flips)."""
    batches = ShardBatches(shard_dir, "train", LoaderConfig(batch_size=64, crop=None, flip=False, workers=0),
                           train=False)
    return bl.train_statistics(((batch["seg"], batch["ab"]) for batch in batches), num_classes)


def world_of(manifest: dict[str, Any]) -> World | None:
    """The world's palette and twins from a shard manifest's ``world_spec`` (None for real datasets)."""
    spec = manifest.get("source_description", {}).get("world_spec")
    if not spec:
        return None
    from semcolor.data.sources.synthetic import gray_alike_pairs_of, palette_of

    return World(palette_of(spec), tuple(gray_alike_pairs_of(spec)))


def load_models(models_dir: Path, names: set[str]) -> dict[str, Any]:
    """The checkpoints ``<models_dir>/<name>.pt`` as models, by name; raises FileNotFoundError naming every
    missing one before loading any."""
    missing = sorted(name for name in names if not (models_dir / f"{name}.pt").is_file())
    if missing:
        raise FileNotFoundError(f"{models_dir}: no checkpoint for {', '.join(missing)}; train them first "
                                "(dvc repro, or make claims for the extra seeds)")
    return {name: model_from_checkpoint(load_checkpoint(models_dir / f"{name}.pt")) for name in sorted(names)}
