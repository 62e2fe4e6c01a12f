"""MLflow "models from code" entry point: the pyfunc model a semcolor checkpoint is logged as.

``pipeline.tracking.log_checkpoint_model`` logs this file (not a pickled object); MLflow runs it when the
model is loaded, and the checkpoint travels as the model's artifact (``semcolor.tracking.mlflow_model``).
"""

from mlflow.models import set_model

from semcolor.tracking.mlflow_model import CheckpointModel

set_model(CheckpointModel())
