"""Model references -> local files: a checkpoint path, an MLflow model URI (``models:/name@alias``,
``models:/name/3``, ``runs:/<run id>/model``), a bare run id, or a local MLflow model directory.

One job: find the checkpoint (and a bundled segmenter) a reference names, downloading through the tracking
URI of the environment (MLFLOW_TRACKING_URI) when needed; a mistyped registered name or an unset alias is
one line naming what exists (``semcolor.registry.check_model_uri``). The pyfunc that serves a logged model
is ``semcolor.mlflow_model``; neither imports the other's callers, so there is no import cycle.
"""

from __future__ import annotations

from pathlib import Path

from semcolor.registry import CHAMPION, check_model_uri, model_uri

CHECKPOINT_ARTIFACT = "checkpoint"
# For the two-stream U-Net (sdc), the GridNet that predicts its semantic map travels in the same MLflow model
# as a second artifact; ``predict`` then needs no map, and ``semcolor colorize --model`` finds it by itself.
SEGMENTER_ARTIFACT = "segmenter"


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


def checkpoint_for(name: str, alias: str = CHAMPION) -> Path:
    """The local checkpoint file of ``models:/<name>@<alias>`` (downloaded through the tracking URI)."""
    return resolve_checkpoint(model_uri(name, alias))


def load_model(name: str, alias: str = CHAMPION, use_ema: bool = True):
    """The model ``models:/<name>@<alias>`` rebuilt from its checkpoint (eval mode, CPU)."""
    from semcolor.training.checkpoint import model_from_checkpoint

    return model_from_checkpoint(checkpoint_for(name, alias), use_ema=use_ema)
