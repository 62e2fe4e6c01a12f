"""The model registry: ``create_model(name, **config)`` is the single entry point (timm-style).

Each architecture lives in its own file and registers its factory functions with ``@register_model``.
Modules are imported on first use so that listing or creating one model does not import them all.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

import torch.nn as nn

_FACTORIES: dict[str, Callable[..., nn.Module]] = {}

# modules that define registered models; imported lazily by create_model/list_models
MODEL_MODULES: tuple[str, ...] = (
    "semcolor.models.psc",
    "semcolor.models.gridnet",
    "semcolor.models.sdc",
    "semcolor.models.cls",
)


def register_model(name: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator registering a factory ``fn(**config) -> nn.Module`` under ``name``."""

    def decorate(factory: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _FACTORIES and _FACTORIES[name] is not factory:
            raise ValueError(f"model {name!r} is registered twice")
        _FACTORIES[name] = factory
        return factory

    return decorate


def _import_all() -> None:
    for module in MODEL_MODULES:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as error:
            if error.name != module:  # a real import error inside the module: surface it
                raise


def list_models() -> list[str]:
    """Names of every registered model, sorted."""
    _import_all()
    return sorted(_FACTORIES)


def create_model(name: str, **config: Any) -> nn.Module:
    """Build the registered model ``name`` with keyword ``config`` (validated by the model's config class)."""
    if name not in _FACTORIES:
        _import_all()
    if name not in _FACTORIES:
        raise ValueError(f"unknown model {name!r}; registered: {', '.join(sorted(_FACTORIES))}")
    return _FACTORIES[name](**config)
