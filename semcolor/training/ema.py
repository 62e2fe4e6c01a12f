"""Polyak / exponential moving average of model weights (the PixelCNN recipe evaluates these)."""

from __future__ import annotations

import copy

import torch
import torch.nn as nn


class ExponentialMovingAverage:
    """shadow <- decay * shadow + (1 - decay) * weights after every optimizer step; buffers are copied.

    decay in [0, 1): 0 copies the weights, 0.999 averages over about the last 1000 steps.

    The tensor lists are collected once and updated with one fused call each (``torch._foreach_*``, as
    ``torch.optim`` does): walking a PixelCNN's ~190 parameters module by module took half of the 4.5 ms an
    update cost on a CPU, per training step."""

    def __init__(self, model: nn.Module, decay: float):
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"ema decay must be in [0, 1), got {decay}")
        self.decay = decay
        self.shadow = copy.deepcopy(model).eval()
        for parameter in self.shadow.parameters():
            parameter.requires_grad_(False)
        # Parameter objects, not their .data: .to()/.double() swap a parameter's data in place, so these
        # follow a moved model. Buffers are replaced by new tensors on a move, so they are looked up by
        # (module, name) at every update.
        self._shadow_parameters = list(self.shadow.parameters())
        self._shadow_buffers = _buffer_slots(self.shadow)
        self._source: nn.Module | None = None
        self._source_parameters: list[torch.Tensor] = []
        self._source_buffers: list[tuple[nn.Module, str]] = []

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        if model is not self._source:
            self._source = model
            self._source_parameters = list(model.parameters())
            self._source_buffers = _buffer_slots(model)
            if len(self._source_parameters) != len(self._shadow_parameters) or \
                    len(self._source_buffers) != len(self._shadow_buffers):
                raise ValueError("the model's parameters or buffers do not match the EMA copy's")
        torch._foreach_lerp_(self._shadow_parameters, self._source_parameters, 1.0 - self.decay)
        if self._shadow_buffers:
            torch._foreach_copy_([module._buffers[name] for module, name in self._shadow_buffers],
                                 [module._buffers[name] for module, name in self._source_buffers])

    def state_dict(self) -> dict:
        return self.shadow.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.shadow.load_state_dict(state)


def _buffer_slots(model: nn.Module) -> list[tuple[nn.Module, str]]:
    """(module, name) of every buffer, in ``model.buffers()`` order."""
    return [(module, name) for module in model.modules() for name, buffer in module._buffers.items()
            if buffer is not None]
