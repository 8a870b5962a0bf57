"""The interface every fusion method implements, and the missing-modality mechanism they share.

``forward(features, present) -> logits``:

- ``features``: ``{modality: Tensor[B, D_m]}``, one pooled vector per sample and modality;
- ``present``: ``{modality: BoolTensor[B]}``, False where the sample lacks that modality;
- returns ``Tensor[B, num_classes]`` logits.

A missing modality never reaches the arithmetic: :meth:`FusionHead.fill_missing`
swaps its row for a learned placeholder vector before any layer sees it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class FusionSpec:
    """Everything needed to rebuild a fusion head (stored next to its weights)."""

    method: str
    dims: dict[str, int]
    num_classes: int
    hidden_dim: int = 256
    dropout: float = 0.2

    def to_dict(self) -> dict:
        return asdict(self)


class FusionHead(nn.Module):
    """Base class: holds the spec and one learned placeholder per modality."""

    def __init__(self, spec: FusionSpec):
        super().__init__()
        self.spec = spec
        self.modalities = list(spec.dims)
        self.placeholders = nn.ParameterDict(
            {m: nn.Parameter(torch.zeros(d)) for m, d in spec.dims.items()})

    def fill_missing(self, features: dict[str, torch.Tensor],
                     present: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Replace absent rows by the modality's placeholder: same shapes in and out."""
        filled = {}
        for m in self.modalities:
            x = features[m]
            mask = present[m].to(torch.bool).unsqueeze(-1)
            filled[m] = torch.where(mask, x, self.placeholders[m].to(x.dtype).expand_as(x))
        return filled

    def forward(self, features: dict[str, torch.Tensor],
                present: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.fuse(self.fill_missing(features, present), present)

    def fuse(self, features: dict[str, torch.Tensor],
             present: dict[str, torch.Tensor]) -> torch.Tensor:
        """Method-specific fusion of complete features -> logits ``[B, num_classes]``."""
        raise NotImplementedError


def mlp(in_dim: int, hidden_dim: int, out_dim: int, dropout: float) -> nn.Sequential:
    """``Linear -> GELU -> Dropout -> Linear``: the classifier block the methods share."""
    return nn.Sequential(nn.Linear(in_dim, hidden_dim), nn.GELU(), nn.Dropout(dropout),
                         nn.Linear(hidden_dim, out_dim))
