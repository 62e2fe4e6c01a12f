"""MLflow stores for tests, and runs logged exactly as the training and evaluation stages log them.

A new SQLite store runs MLflow's migrations (6-12 s, more on a loaded machine; REFERENCE.md section 4), so
one migrated database is made per test session (``migrated_mlflow_db``) and every store is a copy of it.
``tracking_store(uri, folder)`` points MLflow at a store for the duration of a block, with ``folder`` as the
working directory (MLflow puts a SQLite store's artifacts in ``./mlruns``) so nothing touches the
repository's own ``mlflow.db``, and restores MLflow's global state afterwards.

Use in a test module::

    from tests.mlflow_store import migrated_mlflow_db, mlflow_store  # noqa: F401  (fixtures)
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

# MLflow's process-wide settings a test may change (mlflow.set_experiment exports MLFLOW_EXPERIMENT_ID)
MLFLOW_ENVIRONMENT = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "MLFLOW_EXPERIMENT_ID",
                      "MLFLOW_EXPERIMENT_NAME", "MLFLOW_RUN_ID")
DB_NAME = "mlflow.db"

# tiny architectures (a few thousand weights) whose checkpoints log in well under a second
NUM_CLASSES = 6
PSC_CONFIG = {"variant": "plain", "width": 0.0625, "num_classes": NUM_CLASSES, "generator_layers": 2,
              "generator_channels": 8, "num_mixtures": 2}
# gray-only: a semantic-stream sdc cannot be logged by itself (the signature probe needs a map or a segmenter)
SDC_CONFIG = {"width": 0.0625, "num_classes": NUM_CLASSES, "semantic_stream": False}
EXAMPLE_SIZE = 32  # the example input's side for the logged signature (a multiple of 32 for the U-Net)


def sqlite_uri(path: Path) -> str:
    return f"sqlite:///{Path(path).resolve()}"


def create_migrated_db(folder: Path) -> Path:
    """A new MLflow SQLite store in ``folder/mlflow.db`` with every migration applied (tracking and
    registry tables); its default experiment keeps its artifacts in ``folder/mlruns``."""
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    folder.mkdir(parents=True, exist_ok=True)
    database = folder / DB_NAME
    store = SqlAlchemyStore(sqlite_uri(database), str(folder / "mlruns"))
    store.engine.dispose()  # release the file before it is copied
    return database


def copy_store(template: Path, folder: Path) -> str:
    """Copy the migrated ``template`` database to ``folder/mlflow.db``; its sqlite URI."""
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(template, folder / DB_NAME)
    return sqlite_uri(folder / DB_NAME)


@contextmanager
def tracking_store(uri: str, folder: Path) -> Iterator[str]:
    """MLflow's tracking and registry URI is ``uri`` and the working directory ``folder`` inside the block;
    afterwards any open run is ended and the environment, working directory and URI are restored."""
    import mlflow
    from mlflow.tracking import fluent

    saved = {key: os.environ.pop(key, None) for key in MLFLOW_ENVIRONMENT}
    previous_cwd = os.getcwd()
    os.chdir(folder)
    mlflow.set_tracking_uri(uri)
    try:
        yield uri
    finally:
        while mlflow.active_run() is not None:
            mlflow.end_run()
        mlflow.set_tracking_uri(None)
        # set_experiment caches the experiment id of the store just left; the next store has other ids
        fluent._active_experiment_id = None
        os.chdir(previous_cwd)
        for key, value in saved.items():
            os.environ.pop(key, None)
            if value is not None:
                os.environ[key] = value


@pytest.fixture(scope="session")
def migrated_mlflow_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The session's one migrated MLflow database (copy it; never log into it)."""
    return create_migrated_db(tmp_path_factory.mktemp("mlflow_template"))


@pytest.fixture
def mlflow_store(tmp_path: Path, migrated_mlflow_db: Path) -> Iterator[str]:
    """A fresh SQLite store for one test (a copy of the migrated one) as MLflow's current store, with the
    test's ``tmp_path`` as working directory; yields its ``sqlite:///.../mlflow.db`` URI."""
    with tracking_store(copy_store(migrated_mlflow_db, tmp_path / "store"), tmp_path) as uri:
        yield uri


# ---------------------------------------------------------------------------------------------- runs


@dataclass(frozen=True)
class LoggedRun:
    """A training run as the train stage leaves it: its id, the checkpoint it logged (a local file), the
    registered model name and the version the run's model became."""

    run_id: str
    checkpoint: Path
    registered_name: str
    version: str


def save_tiny_checkpoint(path: Path, model_name: str, config: Mapping[str, Any], seed: int = 0,
                         step: int = 0, extra: Mapping[str, Any] | None = None) -> Path:
    """A randomly initialised ``model_name`` saved in the training loop's checkpoint format."""
    import torch

    from semcolor.models import create_model
    from semcolor.training.checkpoint import rng_state, save_checkpoint

    torch.manual_seed(seed)
    model = create_model(model_name, **config)
    return save_checkpoint(path, {
        "model_name": model_name, "model_config": dict(config), "model": model.state_dict(), "ema": None,
        "optimizer": {}, "step": step, "rng": rng_state(), "extra": dict(extra or {}),
    })


def log_training_run(folder: Path, family: str, variant: str, dataset: str, model_name: str,
                     config: Mapping[str, Any], *, seed: int = 0, steps: int = 4, lr: float = 1e-3,
                     losses: tuple[float, ...] = (1.0, 0.5)) -> LoggedRun:
    """Log a training run of a tiny ``model_name`` the way ``pipeline.stages.train`` does: one stage run
    with its tags and flattened config, per-step ``loss``, the checkpoint as a pyfunc model registered
    under ``semcolor-<family>-<variant>``, then the final metrics."""
    import numpy as np

    from pipeline import tracking

    stage = f"train_{family}@{variant}"
    checkpoint = save_tiny_checkpoint(folder / f"{family}_{variant}_{seed}.pt", model_name, config, seed=seed,
                                      step=steps, extra={"dataset": dataset, "stage": stage})
    tracked = {"stage": stage, "model_name": model_name, "model": dict(config),
               "train": {"steps": steps, "lr": lr, "seed": seed}, "loader": {"batch_size": 2, "crop": None},
               "data": {"source": dataset, "size": EXAMPLE_SIZE, "split": "train"}, "world_size": 1}
    tags = {"semcolor.family": family, "semcolor.variant": variant, "semcolor.dataset": dataset,
            "semcolor.model_name": model_name}
    name = tracking.registered_name(family, variant)
    with tracking.stage_run(stage, tracked, tags=tags) as run:
        for step, loss in enumerate(losses, start=1):
            tracking.log_metrics({"loss": loss}, step)
        example = np.zeros((1, 1, EXAMPLE_SIZE, EXAMPLE_SIZE), np.float32)
        info = tracking.log_checkpoint_model(checkpoint, name, example)
        tracking.log_metrics({"final_loss": losses[-1]})
    return LoggedRun(run.info.run_id, checkpoint, name, str(info.registered_model_version))


def log_evaluation_run(family: str, variant: str, dataset: str, metrics: Mapping[str, float]) -> str:
    """Log the per-model run of ``pipeline.stages.evaluate`` for ``<family>_<variant>``: stage
    ``evaluate/<family>_<variant>``, its tags, ``metrics``; returns the run id."""
    from pipeline import tracking

    model = f"{family}_{variant}"
    tags = {"semcolor.family": family, "semcolor.variant": variant, "semcolor.dataset": dataset,
            "semcolor.evaluates": model}
    config = {"source": dataset, "size": EXAMPLE_SIZE, "split": "val", "models": [model]}
    with tracking.stage_run(f"evaluate/{model}", config, tags=tags) as run:
        tracking.log_metrics(metrics)
    return run.info.run_id
