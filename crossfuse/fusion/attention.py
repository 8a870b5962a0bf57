"""``attention`` — attention-weighted sum of projected modality embeddings.

Each modality is projected to a shared width; a small scoring network gives each a
score, softmax over the present modalities gives the weights (additive attention,
Bahdanau et al., ICLR 2015, applied across modalities as in e.g. Hori et al.,
"Attention-Based Multimodal Fusion for Video Description", ICCV 2017).

Shapes: ``{m: [B, D_m]}`` -> ``[B, M, H]`` -> weights ``[B, M]`` -> ``[B, H]``.
"""

from __future__ import annotations

import torch
from torch import nn

from crossfuse.fusion.base import FusionMethod, FusionSpec, presence_mask, projector
from crossfuse.fusion.registry import register_fusion


@register_fusion("attention")
class AttentionFusion(FusionMethod):
    """>>> from crossfuse.fusion.base import example_inputs
    >>> spec, x, present = example_inputs("attention")
    >>> AttentionFusion(spec)(x, present).shape
    torch.Size([2, 16])
    """

    def __init__(self, spec: FusionSpec):
        super().__init__(spec)
        h = spec.hidden_dim
        self.project = nn.ModuleDict({m: projector(d, h, spec.dropout) for m, d in spec.dims.items()})
        self.score = nn.Sequential(nn.Linear(h, h), nn.Tanh(), nn.Linear(h, 1, bias=False))

    def forward(self, features, present):
        tokens = torch.stack([self.project[m](features[m]) for m in self.modalities], dim=1)
        scores = self.score(tokens).squeeze(-1)                                    # [B, M]
        mask = presence_mask(present, self.modalities)
        weights = scores.masked_fill(~mask, float("-inf")).softmax(-1)
        return (weights.unsqueeze(-1) * tokens).sum(dim=1)
