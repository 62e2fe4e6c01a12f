"""Checkpoints: atomic writes, plain-data configs, loadable with ``torch.load(weights_only=True)``.

A checkpoint holds everything needed to rebuild the model without the code that trained it (the
registered model name and its config as plain data, nanoGPT-style) and to resume training exactly
(optimizer, EMA, step, RNG states).
"""

from __future__ import annotations

import pickle
import random
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from semcolor.atomic import atomic_output
from semcolor.errors import CheckpointError

FORMAT_VERSION = 1


def rng_state() -> dict[str, Any]:
    """The CPU (and CUDA) torch generators and the Python/numpy ones, as tensors and plain data."""
    np_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "python": _to_plain(random.getstate()),
        "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(_to_tuple(state["python"]))
    numpy_state = state["numpy"]
    np.random.set_state(("MT19937", numpy_state["keys"].numpy().astype(np.uint32), numpy_state["pos"],
                         numpy_state["has_gauss"], numpy_state["cached_gaussian"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> Path:
    """Write ``payload`` to ``path`` atomically: a temp file in the same folder, fsync, then rename.

    A crash mid-write leaves the previous checkpoint intact, never a truncated one."""
    path = Path(path)
    payload = {"format_version": FORMAT_VERSION, **payload}
    with atomic_output(path, fsync=True) as handle:
        torch.save(payload, handle)
    return path


REQUIRED_KEYS = ("model_name", "model_config", "model")
_ADVICE = "use a checkpoint written by semcolor's training (models/*.pt or an MLflow model of this project)"


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint with ``weights_only=True`` (no pickled code is executed).

    Every way a file can be unusable raises ``CheckpointError`` (a ValueError) with one line naming the file:
    not a PyTorch file (random bytes, empty, truncated), pickled Python objects (which could run code: refused,
    never retried without ``weights_only``), not a semcolor payload, another format version. A missing file
    raises FileNotFoundError."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch warns about old pickle protocols before refusing them
            payload = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        # torch's own message advises weights_only=False, i.e. running the file's code: never pass it on
        if "Unsupported global" in str(error) or "GLOBAL" in str(error):
            raise CheckpointError(
                f"{path}: refused: it holds pickled Python objects besides tensors and plain data, and loading "
                f"them could run code; {_ADVICE}") from None
        raise CheckpointError(f"{path}: not a PyTorch checkpoint (unreadable data); {_ADVICE}") from None
    except (RuntimeError, EOFError, OSError, ValueError, TypeError, AttributeError, IndexError,
            KeyError) as error:
        if isinstance(error, OSError) and not isinstance(error, EOFError) and error.errno is not None:
            raise  # a real I/O error (permissions, disk): its own message names the file
        raise CheckpointError(
            f"{path}: not a PyTorch checkpoint (empty, truncated or corrupt: {type(error).__name__}); "
            f"copy it again or {_ADVICE}") from None
    if not isinstance(payload, dict) or not all(key in payload for key in REQUIRED_KEYS):
        found = f"a dict with keys {sorted(map(str, payload))[:6]}" if isinstance(payload, dict) else \
            f"a {type(payload).__name__}"
        raise CheckpointError(f"{path}: not a semcolor checkpoint ({found}; it needs "
                              f"{', '.join(REQUIRED_KEYS)}); {_ADVICE}")
    if payload.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{path}: checkpoint format {payload.get('format_version')} is not "
                              f"{FORMAT_VERSION}; retrain it with this version of semcolor")
    return payload


def model_from_checkpoint(path_or_payload: str | Path | dict[str, Any], use_ema: bool = True,
                          source: str | Path | None = None):
    """Rebuild the registered model from a checkpoint (EMA weights when present and ``use_ema``).

    CheckpointError naming the file (``source`` for a payload) when its model name is unknown, its config
    is invalid or its weights do not fit the model its config builds."""
    from semcolor.models import create_model

    if isinstance(path_or_payload, dict):
        payload = path_or_payload
    else:
        source = path_or_payload
        payload = load_checkpoint(path_or_payload)
    where = source if source is not None else "checkpoint"
    name, config = payload["model_name"], payload["model_config"]
    if not isinstance(name, str) or not isinstance(config, dict):
        raise CheckpointError(f"{where}: model_name must be a string and model_config a mapping; {_ADVICE}")
    try:
        model = create_model(name, **config)
    except (ValueError, TypeError) as error:  # an unknown model, or a config its dataclass refuses
        raise CheckpointError(f"{where}: cannot build its model {name!r}: {_one_line(error)}; "
                              "it was written by another version of semcolor, or edited") from None
    state = payload.get("ema") if use_ema and payload.get("ema") is not None else payload["model"]
    if not isinstance(state, dict):
        raise CheckpointError(f"{where}: its weights are a {type(state).__name__}, not a state dict; {_ADVICE}")
    try:
        model.load_state_dict(state)
    except RuntimeError as error:
        raise CheckpointError(f"{where}: its weights do not fit its {name} config "
                              f"({_state_mismatch(model.state_dict(), state)}); the file is damaged or was "
                              f"edited: {_ADVICE}") from None
    return model.eval()


def _state_mismatch(expected: dict[str, Any], found: dict[str, Any]) -> str:
    """A short description of how two state dicts differ (missing, unexpected and reshaped tensors)."""
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    shapes = [key for key in sorted(set(expected) & set(found))
              if getattr(found[key], "shape", None) != expected[key].shape]
    parts = []
    if shapes:
        key = shapes[0]
        parts.append(f"{len(shapes)} tensors of another shape, e.g. {key} "
                     f"{tuple(getattr(found[key], 'shape', ()))} instead of {tuple(expected[key].shape)}")
    if missing:
        parts.append(f"{len(missing)} missing, e.g. {missing[0]}")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected, e.g. {unexpected[0]}")
    return "; ".join(parts) or "tensors of another type"


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split())


def _to_plain(value):
    if isinstance(value, tuple):
        return [_to_plain(v) for v in value]
    return value


def _to_tuple(value):
    if isinstance(value, list):
        return tuple(_to_tuple(v) for v in value)
    return value
