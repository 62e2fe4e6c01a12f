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

try:  # mlflow is a dependency of the project, but keep the library importable without it
    from mlflow.pyfunc import PythonModel
except ImportError:  # pragma: no cover
    PythonModel = object  # type: ignore[assignment,misc]

CHECKPOINT_ARTIFACT = "checkpoint"
# For the two-stream U-Net (sdc), the GridNet that predicts its semantic map travels in the same MLflow model
# as a second artifact; ``predict`` then needs no map, and ``semcolor colorize --model`` finds it by itself.
SEGMENTER_ARTIFACT = "segmenter"
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


def resolve_checkpoint(reference: str | Path) -> Path:
    """A local checkpoint file for ``reference``: a checkpoint path, an MLflow model URI
    (``models:/name@alias``, ``models:/name/3``, ``runs:/<run id>/model``), a bare run id, or a local MLflow
    model directory (as downloaded: ``MLmodel`` + ``artifacts/``).

    Model URIs are resolved through the tracking/registry URI of the environment (MLFLOW_TRACKING_URI)."""
    path = Path(str(reference))
    if path.is_file():
        return path
    local = _model_directory(reference)
    found = _named_artifact(local, CHECKPOINT_ARTIFACT)
    if found is not None:
        return found
    # a model logged without an MLmodel artifact table: any checkpoint that is not the bundled segmenter
    candidates = [c for c in sorted(local.rglob("*.pt")) if c != _named_artifact(local, SEGMENTER_ARTIFACT)]
    if not candidates:
        raise FileNotFoundError(f"model {reference} has no checkpoint artifact (*.pt) under {local}")
    return candidates[0]


def resolve_segmenter(reference: str | Path) -> Path | None:
    """The segmenter checkpoint bundled with the model ``reference`` (the ``segmenter`` artifact), or None.

    ``reference`` as for ``resolve_checkpoint``; a plain checkpoint file has no bundled segmenter (None)."""
    if Path(str(reference)).is_file():
        return None
    return _named_artifact(_model_directory(reference), SEGMENTER_ARTIFACT)


def _model_directory(reference: str | Path) -> Path:
    """A local directory holding the MLflow model ``reference`` (downloaded when it is a URI or run id)."""
    path = Path(str(reference))
    if path.is_dir():
        return path
    text = str(reference)
    if not text.startswith(("models:/", "runs:/")):
        if len(text) == 32 and all(c in "0123456789abcdef" for c in text):
            text = f"runs:/{text}/model"
        else:
            raise FileNotFoundError(
                f"{reference!r} is neither a checkpoint file nor an MLflow model URI "
                "(models:/name@alias, runs:/id/model)"
            )
    import mlflow

    if text.startswith("models:/"):
        from semcolor.registry import check_model_uri

        try:  # a mistyped name or an unset alias: one line saying what exists, not MLflow's traceback
            check_model_uri(text)
        except LookupError as error:
            raise FileNotFoundError(error.args[0]) from None
    return Path(mlflow.artifacts.download_artifacts(artifact_uri=text))


def _named_artifact(model_dir: Path, name: str) -> Path | None:
    """The file of pyfunc artifact ``name`` per the model's ``MLmodel`` table (pyfunc stores artifacts under
    their file names, not their artifact names), or None when there is no such artifact."""
    import yaml

    mlmodel = model_dir / "MLmodel"
    if not mlmodel.is_file():
        return None
    spec = yaml.safe_load(mlmodel.read_text()) or {}
    artifacts = (spec.get("flavors", {}).get("python_function", {}) or {}).get("artifacts", {}) or {}
    entry = artifacts.get(name)
    if not entry or "path" not in entry:
        return None
    target = model_dir / entry["path"]
    if target.is_dir():  # an artifact given as a folder: its one checkpoint inside
        inside = sorted(target.rglob("*.pt"))
        return inside[0] if inside else None
    return target if target.is_file() else None
