"""Early fusion by concatenation: LayerNorm each modality's vector, concatenate, MLP.

The classic baseline (e.g. Baltrušaitis et al., "Multimodal Machine Learning: A
Survey and Taxonomy", TPAMI 2019, §5 "early fusion").

Shapes: ``{m: [B, D_m]}`` -> ``[B, sum_m D_m]`` -> ``[B, num_classes]``.
"""

from __future__ import annotations

import torch
from torch import nn

from crossfuse.fusion.base import FusionHead, FusionSpec, mlp
from crossfuse.fusion.registry import register_fusion


@register_fusion("concat")
class ConcatFusion(FusionHead):
    """>>> head = ConcatFusion(FusionSpec("concat", {"image": 8, "text": 4}, num_classes=3))
    >>> head({"image": torch.randn(2, 8), "text": torch.randn(2, 4)},
    ...      {"image": torch.ones(2, dtype=torch.bool), "text": torch.ones(2, dtype=torch.bool)}).shape
    torch.Size([2, 3])
    """

    def __init__(self, spec: FusionSpec):
        super().__init__(spec)
        self.norms = nn.ModuleDict({m: nn.LayerNorm(d) for m, d in spec.dims.items()})
        self.classifier = mlp(sum(spec.dims.values()), spec.hidden_dim, spec.num_classes,
                              spec.dropout)

    def fuse(self, features, present):
        joint = torch.cat([self.norms[m](features[m]) for m in self.modalities], dim=-1)
        return self.classifier(joint)
