"""MLflow tracking for the DVC stages: one run per stage, with what produced it.

Tracking URI: MLflow's own resolution (MLFLOW_TRACKING_URI, else ``sqlite:///mlflow.db`` in the working
directory, MLflow 3.17's default). Every run records the resolved config (params), the git commit, the
hash of the stage's inputs in dvc.lock, the dataset manifest's hash, system metrics, per-step metrics,
images and - for training stages - the model, registered under ``semcolor-<family>-<variant>``.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline import tracking_health
from semcolor import hashing
from semcolor.config import parse_yaml
from semcolor.tracking import tags as tt

EXPERIMENT = os.environ.get("SEMCOLOR_EXPERIMENT", "semcolor")


def _mlflow():
    import mlflow

    return mlflow


def git_commit(cwd: str | Path = ".") -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, check=True)
        return out.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def dvc_lock_inputs_hash(stage: str, lock_path: str | Path = "dvc.lock") -> str:
    """sha256 over the deps and params dvc.lock recorded for ``stage`` at its last run ("" if absent).

    Inside `dvc repro` the lock entry of the running stage is the previous run's; the deps of this run
    are hashed by DVC after the stage ends, so this identifies the inputs of the data the stage read."""
    path = Path(lock_path)
    if not path.is_file():
        return ""
    entry = (parse_yaml(path.read_text()) or {}).get("stages", {}).get(stage)
    if not entry:
        return ""
    relevant = {"deps": entry.get("deps", []), "params": entry.get("params", {})}
    return hashlib.sha256(json.dumps(relevant, sort_keys=True).encode()).hexdigest()


def file_sha256(path: str | Path) -> str:
    """The sha256 of a manifest for a tag; "" when there is none (a tag never fails a run)."""
    return hashing.file_sha256(path) if Path(path).is_file() else ""


def flatten(mapping: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested config -> {"a.b": "value"} with values as strings (MLflow params are strings, max 6000 chars)."""
    flat: dict[str, str] = {}
    for key, value in mapping.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = json.dumps(value) if isinstance(value, (list, tuple, dict)) else str(value)
    return flat


EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
CLASSIC_ML_KIND = "custom_model_development"  # the MLflow UI's "machine learning" (not GenAI) experiment view
PARENT_RUN_ENV = "SEMCOLOR_PARENT_RUN_ID"  # nest the stages under this run instead of the dvc one
PIPELINE_STAGE = "pipeline"  # semcolor.stage of the parent run of one `dvc repro` / `dvc exp run`
TAG_PIPELINE_KEY = tt.TAG_PIPELINE_KEY
LONG_PARAM_CHARS = 250  # a param value longer than this goes to config.json (MLflow truncates at 6000)
QUIET_LOGGERS = ("mlflow",)  # INFO chatter (experiment creation, system-metrics start/stop) stays out of stage logs


def quiet_mlflow() -> None:
    """Warnings and errors only from MLflow, and no artifact progress bars, in the stage logs."""
    import logging

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)


def ensure_experiment(name: str = EXPERIMENT) -> str:
    """The id of experiment ``name`` (created when missing), tagged as a classic ML experiment so that the
    MLflow UI opens it in its runs/models view, not the GenAI one. Made the active experiment."""
    mlflow = _mlflow()
    client = mlflow.MlflowClient()
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        experiment_id = client.create_experiment(name, tags={EXPERIMENT_KIND_TAG: CLASSIC_ML_KIND})
    else:
        experiment_id = experiment.experiment_id
        if EXPERIMENT_KIND_TAG not in (experiment.tags or {}):
            client.set_experiment_tag(experiment_id, EXPERIMENT_KIND_TAG, CLASSIC_ML_KIND)
    mlflow.set_experiment(experiment_id=experiment_id)
    return experiment_id


def split_params(flat: Mapping[str, str]) -> tuple[dict[str, str], dict[str, str]]:
    """(params short enough for MLflow, the long ones) - long ones (e.g. 313 class weights) are logged in
    the run's ``config.json`` and as a param that points there."""
    short = {k: v for k, v in flat.items() if len(v) <= LONG_PARAM_CHARS}
    long = {k: v for k, v in flat.items() if len(v) > LONG_PARAM_CHARS}
    return short, long


# ---------------------------------------------------------------------------------------- pipeline runs


def dvc_invocation() -> tuple[str, str] | None:
    """(key, command line) of the `dvc` process this stage runs under (`dvc repro`, `dvc exp run`), found
    among the process's ancestors; None outside DVC. The key (host, pid, start time) names one invocation."""
    import socket

    try:
        import psutil
    except ImportError:  # pragma: no cover - psutil comes with mlflow's system metrics
        return None
    try:
        for process in psutil.Process().parents():
            command = process.cmdline()
            names = [Path(part).name for part in command[:3]]
            if "dvc" in names or any(a == "-m" and b == "dvc" for a, b in zip(command, command[1:])):
                shown = command[names.index("dvc") + 1:] if "dvc" in names else command[command.index("-m") + 2:]
                return (f"{socket.gethostname()}:{process.pid}:{process.create_time():.3f}",
                        " ".join(["dvc", *shown]))
    except (psutil.Error, OSError, ValueError):
        return None
    return None


def pipeline_parent_run(experiment_id: str) -> str | None:
    """The run id every stage of this pipeline run nests under: ``SEMCOLOR_PARENT_RUN_ID`` when set, else the
    parent run of the enclosing `dvc` invocation (created by its first stage, tagged with the invocation's
    key so that the next stages find it), else None (a stage run on its own)."""
    explicit = os.environ.get(PARENT_RUN_ENV)
    if explicit:
        return explicit
    invocation = dvc_invocation()
    if invocation is None:
        return None
    key, command = invocation
    client = _mlflow().MlflowClient()
    found = client.search_runs([experiment_id], filter_string=f"tags.`{TAG_PIPELINE_KEY}` = '{key}'",
                               max_results=1)
    if found:
        return found[0].info.run_id
    run = client.create_run(experiment_id, run_name=command, tags={
        tt.TAG_STAGE: PIPELINE_STAGE, TAG_PIPELINE_KEY: key, tt.TAG_COMMAND: command,
        "mlflow.source.git.commit": git_commit(), "mlflow.note.content":
            f"One `{command}`: every stage it ran is a nested run."})
    return run.info.run_id


def _mark_parent(parent_run_id: str | None, status: str) -> None:
    """The parent run is RUNNING while one of its stages runs, and ends with the last stage's outcome."""
    if parent_run_id is None or parent_run_id == os.environ.get(PARENT_RUN_ENV):
        return  # a parent made by someone else is theirs to end
    client = _mlflow().MlflowClient()
    if status == "RUNNING":
        client.update_run(parent_run_id, status="RUNNING")
    else:
        client.set_terminated(parent_run_id, status=status)


# ---------------------------------------------------------------------------------------- stage runs


@dataclass(frozen=True)
class DatasetRef:
    """A shard set as an MLflow dataset: name ``<source>-<size>``, digest from its manifest's sha256, source
    its directory; ``context`` is how the run uses it (training, evaluation)."""

    shard_dir: Path
    context: str = "training"

    @property
    def manifest(self) -> Path:
        return Path(self.shard_dir) / "manifest.json"

    @property
    def name(self) -> str:
        return f"{Path(self.shard_dir).parent.name}-{Path(self.shard_dir).name}"


def log_dataset(dataset: DatasetRef) -> None:
    """``mlflow.log_input`` of the shard set (metadata only: the bytes stay in DVC)."""
    mlflow = _mlflow()
    from mlflow.data.dataset_source_registry import get_dataset_source_from_json
    from mlflow.data.meta_dataset import MetaDataset
    from mlflow.types import ColSpec, DataType, Schema

    digest = file_sha256(dataset.manifest)
    if not digest:
        return
    schema = Schema([ColSpec(DataType.string, "__key__"), ColSpec(DataType.binary, "lab.npy"),
                     ColSpec(DataType.binary, "seg.png"), ColSpec(DataType.string, "json")])
    # a local directory ("local" source type), named explicitly: resolving a path matches two source kinds
    source = get_dataset_source_from_json(json.dumps({"uri": str(Path(dataset.shard_dir).resolve())}), "local")
    # MLflow stores at most 36 characters of digest; 32 hex digits of the manifest's sha256 identify it
    mlflow.log_input(MetaDataset(source, name=dataset.name, digest=digest[:32], schema=schema),
                     context=dataset.context, tags={"manifest_sha256": digest})


@contextmanager
def stage_run(stage: str, config: Mapping[str, Any], *, manifest: str | Path | None = None,
              tags: Mapping[str, str] | None = None, enabled: bool = True, dataset: DatasetRef | None = None,
              parent_run_id: str | None = None, system_metrics: bool = True) -> Iterator[Any]:
    """An MLflow run for one DVC stage (no-op yielding None when ``enabled`` is False, e.g. rank > 0).

    The run is nested under ``parent_run_id``, else under the pipeline run of the enclosing `dvc repro`
    (``pipeline_parent_run``). Params: the flattened ``config`` (long values: in ``config.json``);
    ``dataset``: logged as the run's input; ``system_metrics``: CPU/memory sampled while the run lasts."""
    if not enabled:
        yield None
        return
    mlflow = _mlflow()
    tracking_health.check_reachable()  # one short request, not MLflow's four minutes of retries
    quiet_mlflow()
    experiment_id = ensure_experiment(EXPERIMENT)
    tracking_health.end_stale_runs(EXPERIMENT, stage)  # earlier runs of this stage whose process died
    parent = parent_run_id or pipeline_parent_run(experiment_id)
    own_parent = parent if parent_run_id is None else None
    run_tags = {
        **tracking_health.process_tags(),
        tt.TAG_STAGE: stage,
        "mlflow.source.git.commit": git_commit(),
        tt.TAG_DVC_LOCK_INPUTS: dvc_lock_inputs_hash(stage),
        tt.TAG_MANIFEST_SHA256: file_sha256(manifest) if manifest else "",
        **(tags or {}),
    }
    _mark_parent(own_parent, "RUNNING")
    status = "FAILED"
    try:
        with mlflow.start_run(run_name=stage, tags=run_tags, log_system_metrics=system_metrics,
                              parent_run_id=parent) as run:
            short, long = split_params(flatten(config))
            params = {**short, **{k: f"(in config.json: {len(v)} characters)" for k, v in long.items()}}
            for start in range(0, len(params), 90):  # log_params accepts at most 100 per call
                mlflow.log_params(dict(list(params.items())[start : start + 90]))
            mlflow.log_dict(json.loads(json.dumps(config, default=str)), "config.json")
            if dataset is not None:
                log_dataset(dataset)
            with tracking_health.killed_on_interrupt():  # Ctrl-C / SIGTERM: KILLED, not FAILED or RUNNING
                yield run
        status = "FINISHED"
    finally:
        _mark_parent(own_parent, status)


def log_metrics(metrics: Mapping[str, float], step: int | None = None) -> None:
    finite = {k: float(v) for k, v in metrics.items() if v is not None and np.isfinite(v)}
    if finite:
        _mlflow().log_metrics(finite, step=step)


def log_image(image: np.ndarray, artifact_file: str) -> None:
    """An RGB uint8 (H, W, 3) image as a run artifact (e.g. ``images/grid.png``)."""
    _mlflow().log_image(np.asarray(image), artifact_file=artifact_file)


def log_sample_grid(checkpoint: str | Path, shard_dir: str | Path, label: str, images: int = 4) -> None:
    """The model's labelled grid of validation images (``semcolor.evaluation.sample_grids``) as ``images/samples.png``."""
    from semcolor.evaluation.sample_grids import model_grid

    grid, _ = model_grid(checkpoint, shard_dir, images, label=label)
    log_image(grid, "images/samples.png")


def version_tags(stage: str, dataset: str, manifest_sha256: str, steps: int,
                 losses: Mapping[str, float]) -> dict[str, str]:
    """Tags of a registered version: what produced it (stage, git commit, data version) and its training
    figures; ``pipeline.champions`` adds the evaluation's headline metrics."""
    tags = {tt.TAG_STAGE: stage, tt.TAG_DATASET: dataset, tt.TAG_DATA_VERSION: manifest_sha256,
            tt.TAG_GIT_COMMIT: git_commit(), tt.TAG_DVC_LOCK_INPUTS: dvc_lock_inputs_hash(stage),
            f"{tt.TRAIN_PREFIX}steps": str(steps),
            **{f"{tt.TRAIN_PREFIX}final_{k}": f"{v:.6g}" for k, v in losses.items() if np.isfinite(v)}}
    return {key: value for key, value in tags.items() if value}  # no empty tags (a first run has no lock entry)


def version_description(stage: str, model_name: str, dataset: str, steps: int, final_loss: float | None,
                        manifest_sha256: str) -> str:
    loss = "" if final_loss is None else f", final loss {final_loss:.4g}"
    return (f"{model_name} trained by the DVC stage {stage} on {dataset} (shard manifest "
            f"{manifest_sha256[:12]}) for {steps} steps{loss}; git {git_commit()[:12]}.")


def registered_name(family: str, variant: str | None = None) -> str:
    """Registry name per model family and variant, e.g. semcolor-psc-full, semcolor-sdc-no-in
    (``semcolor.tracking.registry.registered_name``: the variant spelled with hyphens)."""
    from semcolor.tracking.registry import registered_name as name

    return name(family, variant)


def log_checkpoint_model(checkpoint: str | Path, name: str, example_L: np.ndarray,
                         segmenter: str | Path | None = None, *, description: str = "",
                         tags: Mapping[str, str] | None = None, model_description: str = "") -> Any:
    """Log ``checkpoint`` as a pyfunc model (semcolor.tracking.mlflow_model.CheckpointModel, "models from code") with
    its signature and ``example_L`` (float32 (N, 1, H, W), or (N, 3, H, W) for a color segmenter) as input
    example, and register it as a new version of ``name`` carrying ``description`` and ``tags`` (the
    registered model gets ``model_description`` when it is created). Returns the ModelInfo; its
    ``registered_model_version`` is the new version.

    ``segmenter``: a GridNet checkpoint bundled with a model that needs a semantic map (the U-Net), so
    that ``models:/<name>@alias`` alone colorizes a photo."""
    mlflow = _mlflow()
    from mlflow.exceptions import MlflowException

    from semcolor.tracking.mlflow_model import CHECKPOINT_ARTIFACT, MODEL_CODE, SEGMENTER_ARTIFACT, CheckpointModel

    artifacts = {CHECKPOINT_ARTIFACT: str(checkpoint)}
    if segmenter is not None:
        artifacts[SEGMENTER_ARTIFACT] = str(segmenter)

    # predict once, through the same code the loaded model runs, to know the output's dtype and rank
    probe = CheckpointModel()
    context = type("Context", (), {"artifacts": artifacts})()
    probe.load_context(context)
    output = probe.predict(context, example_L)
    info = mlflow.pyfunc.log_model(
        name="model",
        python_model=str(MODEL_CODE),  # models from code: no pickled object in the model
        artifacts=artifacts,
        signature=image_signature(example_L, output),
        input_example=example_L,
        # given explicitly: inferring requirements costs ~20 s per model (REFERENCE.md section 4)
        pip_requirements=["semcolor", "torch", "numpy", "mlflow"],
    )
    client = mlflow.MlflowClient()
    try:
        client.create_registered_model(name, description=model_description or None)
    except MlflowException as error:
        if error.error_code not in ("RESOURCE_ALREADY_EXISTS", "ALREADY_EXISTS"):
            raise
    run = mlflow.active_run()
    version = client.create_model_version(
        name, source=info.model_uri, run_id=run.info.run_id if run else None,
        tags={k: str(v) for k, v in (tags or {}).items()}, description=description or None,
        model_id=info.model_id)
    info.registered_model_version = version.version
    print(f"registered {name} version {version.version}")
    return info


def image_signature(example: np.ndarray, output: np.ndarray) -> Any:
    """Tensor signature with free batch, height and width: (-1, C, -1, -1) in, (-1, C', -1, -1) or (-1, -1,
    -1) (class indices) out, with the dtypes of ``example`` and ``output``."""
    from mlflow.models import ModelSignature
    from mlflow.types import Schema, TensorSpec

    def spec(array: np.ndarray) -> TensorSpec:
        shape = tuple(-1 if axis != 1 or array.ndim != 4 else int(array.shape[1]) for axis in range(array.ndim))
        return TensorSpec(np.dtype(array.dtype), shape)

    return ModelSignature(inputs=Schema([spec(np.asarray(example))]), outputs=Schema([spec(np.asarray(output))]))
