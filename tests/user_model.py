"""A model class of "the user's own", importable (tests/ is on sys.path), whose constructor needs arguments."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class TinyNet(nn.Module):
    """conv -> BN -> ReLU -> conv (no bias) -> pool -> linear, ``width`` channels: no default arguments."""

    def __init__(self, width: int, classes: int) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
                                      nn.Conv2d(width, width, 3, padding=1, bias=False))
        self.act = F.relu  # code held in an attribute: imported by name on load
        self.head = nn.Linear(width, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.act(self.features(x)).mean((2, 3)))
