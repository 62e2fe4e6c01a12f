"""Polyak / exponential moving average of model weights (the PixelCNN recipe evaluates these)."""

from __future__ import annotations

import copy

import torch
import torch.nn as nn


class ExponentialMovingAverage:
    """shadow <- decay * shadow + (1 - decay) * weights after every optimizer step; buffers are copied.

    decay in [0, 1): 0 copies the weights, 0.999 averages over about the last 1000 steps."""

    def __init__(self, model: nn.Module, decay: float):
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"ema decay must be in [0, 1), got {decay}")
        self.decay = decay
        self.shadow = copy.deepcopy(model).eval()
        for parameter in self.shadow.parameters():
            parameter.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        for shadow, current in zip(self.shadow.parameters(), model.parameters()):
            shadow.lerp_(current.detach(), 1.0 - self.decay)
        for shadow, current in zip(self.shadow.buffers(), model.buffers()):
            shadow.copy_(current)

    def state_dict(self) -> dict:
        return self.shadow.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.shadow.load_state_dict(state)
