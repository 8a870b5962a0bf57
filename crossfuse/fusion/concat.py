"""``concat`` — early fusion: LayerNorm each modality's vector, concatenate, one hidden layer.

The classic baseline; see Baltrušaitis, Ahuja & Morency, "Multimodal Machine Learning:
A Survey and Taxonomy", TPAMI 2019, §5 (early fusion).

Shapes: ``{m: [B, D_m]}`` -> ``[B, sum_m D_m]`` -> ``[B, H]``.
"""

from __future__ import annotations

import torch
from torch import nn

from crossfuse.fusion.base import FusionMethod, FusionSpec
from crossfuse.fusion.registry import register_fusion


@register_fusion("concat")
class ConcatFusion(FusionMethod):
    """>>> from crossfuse.fusion.base import example_inputs
    >>> spec, x, present = example_inputs("concat")
    >>> ConcatFusion(spec)(x, present).shape
    torch.Size([2, 16])
    """

    def __init__(self, spec: FusionSpec):
        super().__init__(spec)
        self.norms = nn.ModuleDict({m: nn.LayerNorm(d) for m, d in spec.dims.items()})
        self.body = nn.Sequential(nn.Linear(sum(spec.dims.values()), spec.hidden_dim), nn.GELU(),
                                  nn.Dropout(spec.dropout))

    def forward(self, features, present):
        return self.body(torch.cat([self.norms[m](features[m]) for m in self.modalities], dim=-1))
