"""``mfb`` — Multimodal Factorized Bilinear pooling.

Yu, Yu, Fan & Tao, "Multi-modal Factorized Bilinear Pooling with Co-Attention Learning
for Visual Question Answering", ICCV 2017. Each modality is projected to ``k * H``
(option ``factor`` k, default 4); the projections are multiplied element-wise (all
``M`` of them), sum-pooled over windows of ``k``, then power-normalised
(``sign(x) sqrt|x|``) and L2-normalised, as in the paper.

Shapes: ``{m: [B, D_m]}`` -> ``[B, k * H]`` each -> product -> ``[B, H, k]`` -> sum -> ``[B, H]``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from crossfuse.fusion.base import FusionMethod, FusionSpec
from crossfuse.fusion.registry import register_fusion


@register_fusion("mfb")
class MFBFusion(FusionMethod):
    """>>> from crossfuse.fusion.base import example_inputs
    >>> spec, x, present = example_inputs("mfb")
    >>> MFBFusion(spec)(x, present).shape
    torch.Size([2, 16])
    """

    tunable = {"factor": (4, [2, 4, 8])}

    def __init__(self, spec: FusionSpec):
        super().__init__(spec)
        self.k = self.option("factor")
        h = spec.hidden_dim
        self.project = nn.ModuleDict({m: nn.Sequential(nn.LayerNorm(d), nn.Linear(d, self.k * h))
                                      for m, d in spec.dims.items()})
        self.dropout = nn.Dropout(spec.dropout)
        # The normalised output has unit norm; rescale so the linear heads see O(1) values.
        self.scale = nn.Parameter(torch.tensor(float(h) ** 0.5))

    def forward(self, features, present):
        joint = None
        for m in self.modalities:
            p = self.project[m](features[m])
            joint = p if joint is None else joint * p
        pooled = self.dropout(joint).view(len(joint), -1, self.k).sum(-1)          # [B, H]
        pooled = torch.sign(pooled) * torch.sqrt(pooled.abs() + 1e-8)
        return F.normalize(pooled, dim=-1) * self.scale
