"""``gmu`` — Gated Multimodal Unit.

Arevalo, Solorio, Montes-y-Gómez & González, "Gated Multimodal Units for Information
Fusion", ICLR Workshop 2017. Each modality gives a candidate ``h_m = tanh(W_m x_m)``;
a gate computed from all inputs decides, per hidden unit, how much of each to take.
The paper's two-modality gate ``z = sigmoid(W_z [x_1; x_2])`` generalises to a softmax
over ``M`` modalities per unit; absent modalities get gate 0.

Shapes: ``{m: [B, D_m]}`` -> candidates ``[B, M, H]``, gates ``[B, M, H]`` -> ``[B, H]``.
"""

from __future__ import annotations

import torch
from torch import nn

from crossfuse.fusion.base import FusionMethod, FusionSpec, presence_mask
from crossfuse.fusion.registry import register_fusion


@register_fusion("gmu")
class GatedMultimodalUnit(FusionMethod):
    """>>> from crossfuse.fusion.base import example_inputs
    >>> spec, x, present = example_inputs("gmu")
    >>> GatedMultimodalUnit(spec)(x, present).shape
    torch.Size([2, 16])
    """

    def __init__(self, spec: FusionSpec):
        super().__init__(spec)
        h, m = spec.hidden_dim, len(spec.dims)
        self.norms = nn.ModuleDict({k: nn.LayerNorm(d) for k, d in spec.dims.items()})
        self.candidates = nn.ModuleDict({k: nn.Linear(d, h) for k, d in spec.dims.items()})
        self.gate = nn.Linear(sum(spec.dims.values()), m * h)
        self.dropout = nn.Dropout(spec.dropout)

    def forward(self, features, present):
        x = {k: self.norms[k](features[k]) for k in self.modalities}
        cand = torch.stack([torch.tanh(self.candidates[k](x[k])) for k in self.modalities], dim=1)
        gates = self.gate(torch.cat([x[k] for k in self.modalities], dim=-1))
        gates = gates.view(cand.shape)                                             # [B, M, H]
        mask = presence_mask(present, self.modalities).unsqueeze(-1)
        gates = gates.masked_fill(~mask, float("-inf")).softmax(dim=1)
        return self.dropout((gates * cand).sum(dim=1))
