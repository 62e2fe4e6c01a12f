"""The names of the MLflow tags semcolor writes and reads, in one place: the stages set them
(``pipeline.tracking``, ``pipeline.stages.*``), ``semcolor compare`` and the registry filter by them.

Run tags: which stage made a run and of what. Version tags (registered models): what produced the version
(``TAG_DATA_VERSION``, ``TAG_GIT_COMMIT``) and its figures under ``TRAIN_PREFIX`` / ``METRIC_PREFIX``.
"""

from __future__ import annotations

PREFIX = "semcolor."

TAG_STAGE = "semcolor.stage"  # the DVC stage (train_psc@full, evaluate/psc_full, pipeline)
TAG_FAMILY = "semcolor.family"  # psc, sdc, gridnet, cls
TAG_VARIANT = "semcolor.variant"  # full, paper, ...
TAG_DATASET = "semcolor.dataset"  # the shard source
TAG_MODEL_NAME = "semcolor.model_name"  # the registered model factory (psc_full, ...)
TAG_SEED = "semcolor.seed"  # an extra training seed (make claims); absent for the default stages
TAG_EVALUATES = "semcolor.evaluates"  # an evaluation run: the model it measured
TAG_COMMAND = "semcolor.command"  # the pipeline parent run: the command (dvc repro, dvc exp run)
TAG_PIPELINE_KEY = "semcolor.pipeline_key"  # the pipeline parent run: which invocation it groups
TAG_DVC_LOCK_INPUTS = "semcolor.dvc_lock_inputs"  # hash of the stage's inputs in dvc.lock
TAG_MANIFEST_SHA256 = "semcolor.manifest_sha256"  # the shard manifest a run read
TAG_DATA_VERSION = "semcolor.data_version"  # version tag: the shard manifest's sha256
TAG_GIT_COMMIT = "semcolor.git_commit"  # version tag: the commit that trained it
TRAIN_PREFIX = "semcolor.train."  # version tags: semcolor.train.steps, semcolor.train.final_<loss term>
METRIC_PREFIX = "semcolor.metric."  # version tag: the metric it scored when it was promoted
PREVIOUS_PREFIX = "semcolor.previous_"  # version tag: where an alias pointed before this version took it
TAG_HOST, TAG_PID, TAG_PID_START = "semcolor.host", "semcolor.pid", "semcolor.pid_start"  # a run's process
