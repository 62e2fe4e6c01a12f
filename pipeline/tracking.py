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
from pathlib import Path
from typing import Any

import numpy as np
import yaml

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
    entry = (yaml.safe_load(path.read_text()) or {}).get("stages", {}).get(stage)
    if not entry:
        return ""
    relevant = {"deps": entry.get("deps", []), "params": entry.get("params", {})}
    return hashlib.sha256(json.dumps(relevant, sort_keys=True).encode()).hexdigest()


def file_sha256(path: str | Path) -> str:
    path = Path(path)
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else ""


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


@contextmanager
def stage_run(stage: str, config: Mapping[str, Any], *, manifest: str | Path | None = None,
              tags: Mapping[str, str] | None = None, enabled: bool = True,
              log_system_metrics: bool = True) -> Iterator[Any]:
    """An MLflow run for one DVC stage (no-op yielding None when ``enabled`` is False, e.g. rank > 0).
    ``log_system_metrics=False`` for short runs that only record figures (each monitor start/stop prints)."""
    if not enabled:
        yield None
        return
    mlflow = _mlflow()
    mlflow.set_experiment(EXPERIMENT)
    run_tags = {
        "semcolor.stage": stage,
        "mlflow.source.git.commit": git_commit(),
        "semcolor.dvc_lock_inputs": dvc_lock_inputs_hash(stage),
        "semcolor.manifest_sha256": file_sha256(manifest) if manifest else "",
        **(tags or {}),
    }
    with mlflow.start_run(run_name=stage, tags=run_tags, log_system_metrics=log_system_metrics) as run:
        params = flatten(config)
        for start in range(0, len(params), 90):  # log_params accepts at most 100 per call
            mlflow.log_params(dict(list(params.items())[start : start + 90]))
        yield run


def log_metrics(metrics: Mapping[str, float], step: int | None = None) -> None:
    finite = {k: float(v) for k, v in metrics.items() if v is not None and np.isfinite(v)}
    if finite:
        _mlflow().log_metrics(finite, step=step)


def log_image(image: np.ndarray, artifact_file: str) -> None:
    """An RGB uint8 (H, W, 3) image as a run artifact (e.g. ``images/grid.png``)."""
    _mlflow().log_image(np.asarray(image), artifact_file=artifact_file)


def registered_name(family: str, variant: str | None = None) -> str:
    """Registry name per model family and variant, e.g. semcolor-psc-full, semcolor-sdc-no_in."""
    return f"semcolor-{family}" + (f"-{variant}" if variant else "")


def log_checkpoint_model(checkpoint: str | Path, name: str, example_L: np.ndarray,
                         segmenter: str | Path | None = None) -> Any:
    """Log ``checkpoint`` as a pyfunc model (semcolor.mlflow_model.CheckpointModel) with a signature
    inferred from ``example_L`` (float32 (N, 1, H, W)), and register it under ``name``.

    ``segmenter``: a GridNet checkpoint bundled with a model that needs a semantic map (the U-Net), so
    that ``models:/<name>@alias`` alone colorizes a photo."""
    mlflow = _mlflow()
    from mlflow.models import infer_signature

    from semcolor.mlflow_model import CHECKPOINT_ARTIFACT, SEGMENTER_ARTIFACT, CheckpointModel

    artifacts = {CHECKPOINT_ARTIFACT: str(checkpoint)}
    if segmenter is not None:
        artifacts[SEGMENTER_ARTIFACT] = str(segmenter)

    # predict once, through the same code the loaded model runs, to infer the output schema
    probe = CheckpointModel()
    context = type("Context", (), {"artifacts": artifacts})()
    probe.load_context(context)
    signature = infer_signature(example_L, probe.predict(context, example_L))
    return mlflow.pyfunc.log_model(
        name="model",
        python_model=CheckpointModel(),
        artifacts=artifacts,
        signature=signature,
        # given explicitly: inferring requirements costs ~20 s per model (REFERENCE.md section 4)
        pip_requirements=["semcolor", "torch", "numpy", "mlflow"],
        registered_model_name=name,
    )
