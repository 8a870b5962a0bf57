"""Late (decision-level) fusion: one classifier per modality, log-probabilities combined
by learned, softmax-normalised modality weights; absent modalities get weight 0.

See Baltrušaitis et al., TPAMI 2019, §5 "late fusion"; Snoek et al., "Early versus
late fusion in semantic video analysis", ACM MM 2005.

Shapes: ``{m: [B, D_m]}`` -> per modality ``[B, num_classes]`` -> ``[B, num_classes]``.
"""

from __future__ import annotations

import torch
from torch import nn

from crossfuse.fusion.base import FusionHead, FusionSpec, mlp
from crossfuse.fusion.registry import register_fusion


@register_fusion("late")
class LateFusion(FusionHead):
    """>>> head = LateFusion(FusionSpec("late", {"image": 8, "text": 4}, num_classes=3))
    >>> head({"image": torch.randn(2, 8), "text": torch.randn(2, 4)},
    ...      {"image": torch.ones(2, dtype=torch.bool), "text": torch.ones(2, dtype=torch.bool)}).shape
    torch.Size([2, 3])
    """

    def __init__(self, spec: FusionSpec):
        super().__init__(spec)
        self.heads = nn.ModuleDict({
            m: nn.Sequential(nn.LayerNorm(d), mlp(d, spec.hidden_dim, spec.num_classes,
                                                  spec.dropout))
            for m, d in spec.dims.items()})
        self.weight_logits = nn.Parameter(torch.zeros(len(self.modalities)))

    def fuse(self, features, present):
        log_probs = torch.stack([self.heads[m](features[m]).log_softmax(-1)
                                 for m in self.modalities], dim=1)        # [B, M, C]
        mask = torch.stack([present[m].to(torch.bool) for m in self.modalities], dim=1)  # [B, M]
        # All-absent rows fall back to equal weights over placeholders rather than NaN.
        mask = mask | ~mask.any(dim=1, keepdim=True)
        weights = self.weight_logits.expand_as(mask).masked_fill(~mask, float("-inf")).softmax(-1)
        return (weights.unsqueeze(-1) * log_probs).sum(dim=1) * len(self.modalities)
