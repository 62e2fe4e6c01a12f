"""Kept for MLflow models logged before the move to ``semcolor.tracking``: their logged code file imports
``CheckpointModel`` from here. New code imports ``semcolor.tracking.mlflow_model``."""
from semcolor.tracking.mlflow_model import CheckpointModel  # noqa: F401
