"""Checkpoints: atomic writes, plain-data configs, loadable with ``torch.load(weights_only=True)``.

A checkpoint holds everything needed to rebuild the model without the code that trained it (the
registered model name and its config as plain data, nanoGPT-style) and to resume training exactly
(optimizer, EMA, step, RNG states).
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from semcolor.atomic import atomic_output

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


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint with ``weights_only=True`` (no pickled code is executed)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    payload = torch.load(path, map_location=map_location, weights_only=True)
    if payload.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{path}: checkpoint format {payload.get('format_version')} is not {FORMAT_VERSION}")
    return payload


def model_from_checkpoint(path_or_payload: str | Path | dict[str, Any], use_ema: bool = True):
    """Rebuild the registered model from a checkpoint (EMA weights when present and ``use_ema``)."""
    from semcolor.models import create_model

    payload = path_or_payload if isinstance(path_or_payload, dict) else load_checkpoint(path_or_payload)
    model = create_model(payload["model_name"], **payload["model_config"])
    state = payload.get("ema") if use_ema and payload.get("ema") is not None else payload["model"]
    model.load_state_dict(state)
    return model.eval()


def _to_plain(value):
    if isinstance(value, tuple):
        return [_to_plain(v) for v in value]
    return value


def _to_tuple(value):
    if isinstance(value, list):
        return tuple(_to_tuple(v) for v in value)
    return value
