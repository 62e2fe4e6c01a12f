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
        self._shadow_parameters = list(self.shadow.parameters())
        self._shadow_buffers = list(self.shadow.buffers())
        self._source: nn.Module | None = None
        self._source_parameters: list[torch.Tensor] = []
        self._source_buffers: list[torch.Tensor] = []

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        if model is not self._source:  # the tensors of a module keep their identity across optimizer steps
            self._source = model
            self._source_parameters = [p.detach() for p in model.parameters()]
            self._source_buffers = list(model.buffers())
            if len(self._source_parameters) != len(self._shadow_parameters):
                raise ValueError("the model's parameters do not match the EMA copy's")
        torch._foreach_lerp_(self._shadow_parameters, self._source_parameters, 1.0 - self.decay)
        if self._shadow_buffers:
            torch._foreach_copy_(self._shadow_buffers, self._source_buffers)

    def state_dict(self) -> dict:
        return self.shadow.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.shadow.load_state_dict(state)
