"""The pieces :class:`~ml_tasks.models.network.TabularNet` is assembled from: the numeric inputs' scaled
views, their piecewise-linear encoding (Gorishniy et al. 2022), the MLP and the ensemble's per-member heads.

Functions of tensors and the model's buffers, so the ONNX export traces them as part of the model.
Design notes: ``docs/training.md`` ("The model").
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from torch import Tensor, nn

#: stands for a missing value in the piecewise-linear encoding (finite: times a zero slope it is 0)
BELOW_EVERY_EDGE = -3.0e38


def scaled_views(
    numeric: Tensor, raw: tuple[Tensor, Tensor], log: tuple[Tensor, Tensor], clip: float
) -> list[Tensor]:
    """[z-score of the raw values, z-score of ``sign(x) * log1p(|x|)``, missing indicator], each [N, F]:
    the z-scores use the (mean, std) buffers given, are clipped to +-``clip`` and 0 where ``x`` is NaN."""
    missing = torch.isnan(numeric)
    scaled = torch.clamp((numeric - raw[0]) / raw[1], -clip, clip)
    logged = torch.sign(numeric) * torch.log1p(torch.abs(numeric))
    log_scaled = torch.clamp((logged - log[0]) / log[1], -clip, clip)
    zeros = torch.zeros_like(scaled)
    return [
        torch.where(missing, zeros, scaled),
        torch.where(missing, zeros, log_scaled),
        missing.to(numeric.dtype),
    ]


def piecewise_linear(numeric: Tensor, lo: Tensor, slope: Tensor) -> Tensor:
    """``clamp((x - lo) * slope, 0, 1)`` per input and bin: [N, F] -> [N, F, bins] (``lo``, ``slope``:
    [F, bins]; padding bins have slope 0). 0 where ``x`` is NaN."""
    # NaN replaced BEFORE the arithmetic by a value below every edge (its encoding clamps to 0); the
    # padding bins' zero slope (the mask folded into it: a constant the export folds) keeps them at 0.
    # Two fewer passes over [N, F, bins] than multiplying by the masks: the ONNX model's hot loop.
    x = torch.where(torch.isnan(numeric), torch.full_like(numeric, BELOW_EVERY_EDGE), numeric)
    return torch.clamp((x.unsqueeze(-1) - lo) * slope, 0.0, 1.0)


def mlp_blocks(
    width: int, hidden: tuple[int, ...], activation: Literal["relu", "gelu"], dropout: float
) -> nn.Sequential:
    """(Linear -> LayerNorm -> activation -> dropout) per hidden width."""
    layers: list[nn.Module] = []
    for out in hidden:
        act = nn.ReLU() if activation == "relu" else nn.GELU()
        layers += [nn.Linear(width, out), nn.LayerNorm(out), act, nn.Dropout(dropout)]
        width = out
    return nn.Sequential(*layers)


class MemberHeads(nn.Module):
    """One linear output per ensemble member: [N, members, H] -> [N, members, 1]."""

    def __init__(self, members: int, width: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(members, width))
        self.bias = nn.Parameter(torch.zeros(members))

    def forward(self, x: Tensor) -> Tensor:
        return ((x * self.weight).sum(dim=-1) + self.bias).unsqueeze(-1)


def coarsen(edges: tuple[float, ...], bins: int) -> tuple[float, ...]:
    """At most ``bins`` bins: an evenly spaced subset of the (quantile) edges, keeping both ends."""
    if bins <= 0 or len(edges) < 2:
        return ()
    if len(edges) - 1 <= bins:
        return edges
    keep = np.unique(np.round(np.linspace(0, len(edges) - 1, bins + 1)).astype(np.int64))
    return tuple(edges[int(i)] for i in keep)


def ple_tables(all_edges: list[tuple[float, ...]], bins: int) -> tuple[Tensor, Tensor, Tensor]:
    """Per numeric input and bin: lower edge, 1 / width and a 0/1 mask ([F, bins] each; padding: 0, 1, 0)."""
    n = len(all_edges)
    lo = np.zeros((n, bins), dtype=np.float64)
    inv_width = np.ones((n, bins), dtype=np.float64)
    mask = np.zeros((n, bins), dtype=np.float64)
    for j, column_edges in enumerate(all_edges):
        edges = np.asarray(column_edges, dtype=np.float64)
        k = max(edges.size - 1, 0)
        lo[j, :k] = edges[:-1]
        inv_width[j, :k] = 1.0 / np.diff(edges)
        mask[j, :k] = 1.0
    return (
        torch.tensor(lo, dtype=torch.float32),
        torch.tensor(inv_width, dtype=torch.float32),
        torch.tensor(mask, dtype=torch.float32),
    )
