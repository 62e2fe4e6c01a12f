"""Stand-ins with known answers, built on the real classes so that the real prediction path (and the
editor) drive them: a U-Net whose colours are a lookup of its map, and a segmenter that predicts one class
everywhere. They test the plumbing around a model (does a map edit reach the model and come back as
colour?), not what a trained model learned (that is claim f's measurement)."""

from __future__ import annotations

import numpy as np
import torch

from semcolor.models.gridnet import GridNet, GridNetConfig
from semcolor.models.sdc import SdcConfig, SemanticDrivenUNet
from semcolor.scaling import AB_SCALE
from semcolor.data.sources.synthetic import CLASS_NAMES, GRAY_ALIKE_PAIRS, WorldConfig, class_spec, palette_of

PALETTE = palette_of(class_spec(WorldConfig()))
TWIN_IDS = [tuple(CLASS_NAMES.index(name) for name in pair) for pair in GRAY_ALIKE_PAIRS]


def mode_table(ignore_twins: bool = False) -> torch.Tensor:
    """(256, 2) ab in model units: each world class's likeliest mode (255 and unknown ids: gray); with
    ``ignore_twins`` the second twin of each pair paints its first twin's colour (a map-blind model)."""
    table = torch.zeros(256, 2)
    for class_id in range(len(CLASS_NAMES)):
        modes = PALETTE.modes_of(class_id)
        best = PALETTE.modes[modes[int(np.argmax(PALETTE.mode_probability[modes]))]]
        table[class_id] = torch.tensor(best, dtype=torch.float32) / AB_SCALE
    if ignore_twins:
        for first, second in TWIN_IDS:
            table[second] = table[first]
    return table


class PaintsItsMap(SemanticDrivenUNet):
    """A U-Net (family sdc, semantic stream on) whose output ab is ``table[seg]``, whatever the gray."""

    def __init__(self, table: torch.Tensor):
        super().__init__(SdcConfig(num_classes=len(CLASS_NAMES), width=1 / 32))
        self.table = table

    def forward(self, L, seg=None):
        return self.table[seg.long().clamp(0, 255)].permute(0, 3, 1, 2).to(L.dtype)


class PredictsOneClass(GridNet):
    """A GridNet (gray input) whose logits put ``class_id`` first at every pixel."""

    def __init__(self, class_id: int):
        super().__init__(GridNetConfig(num_classes=len(CLASS_NAMES), width=1 / 16))
        self.class_id = class_id

    def forward(self, L):
        logits = torch.zeros(L.shape[0], len(CLASS_NAMES), *L.shape[-2:], dtype=L.dtype)
        logits[:, self.class_id] = 1.0
        return logits
