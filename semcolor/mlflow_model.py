"""A semcolor checkpoint as an MLflow pyfunc model, and loading any model reference back.

The logged model carries the training checkpoint (plain data, ``torch.load(weights_only=True)``) as an
artifact instead of a pickled or exported module: loading rebuilds the registered architecture from the
checkpoint's own config. ``predict`` takes lightness and returns chroma, both in the model's units:

- input  ``L``:  float32 (N, 1, H, W), L / 50 - 1 in [-1, 1], any H and W
- output ``ab``: float32 (N, 2, H, W), ab / 128 in [-1, 1), at the input's size
  (the model's ``ColorizationModel.predict_ab``, ``semcolor.models.interface``)

Segmenters (GridNet) take ``L`` (or L and ab scaled alike, (N, 3, H, W), for ``input_mode: lab``) and
return class indices (N, H, W) int64 at the input's size (``Segmenter.predict_map``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

# the artifact names of a logged model, defined where references are resolved (which reads them)
from semcolor.model_reference import CHECKPOINT_ARTIFACT, SEGMENTER_ARTIFACT  # noqa: F401

try:  # mlflow is a dependency of the project, but keep the library importable without it
    from mlflow.pyfunc import PythonModel
except ImportError:  # pragma: no cover
    PythonModel = object  # type: ignore[assignment,misc]

# the "models from code" file MLflow logs instead of a pickled CheckpointModel
MODEL_CODE = Path(__file__).with_name("mlflow_model_code.py")


class CheckpointModel(PythonModel):
    """pyfunc wrapper: ``load_context`` rebuilds the model from the checkpoint artifact."""

    def load_context(self, context) -> None:
        from semcolor.training.checkpoint import load_checkpoint, model_from_checkpoint

        self.checkpoint_path = Path(context.artifacts[CHECKPOINT_ARTIFACT])
        self.payload = load_checkpoint(self.checkpoint_path)
        self.model = model_from_checkpoint(self.payload)
        segmenter = context.artifacts.get(SEGMENTER_ARTIFACT)
        self.segmenter = model_from_checkpoint(load_checkpoint(segmenter)) if segmenter else None

    def predict(self, context, model_input: np.ndarray, params: dict[str, Any] | None = None) -> np.ndarray:
        import torch

        from semcolor.models.interface import ColorizationModel, as_segmenter

        inputs = torch.as_tensor(np.asarray(model_input, dtype=np.float32))
        segmenter = getattr(self, "segmenter", None)
        with torch.inference_mode():
            if isinstance(self.model, ColorizationModel):
                self.model.eval()
                if segmenter is not None:
                    segmenter.eval()
                return self.model.predict_ab(inputs, segmenter=segmenter).numpy()
            # a segmenter: class index per pixel, (N, H, W) int64; L (and ab, for a 3-channel one) stacked
            model = as_segmenter(self.model, "this MLflow model")
            return model.predict_map(inputs[:, :1], inputs[:, 1:] if inputs.shape[1] > 1 else None).numpy()
