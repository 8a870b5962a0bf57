"""``tensor`` — Tensor Fusion Network: the outer product of the modalities' embeddings.

Zadeh, Chen, Poria, Cambria & Morency, "Tensor Fusion Network for Multimodal Sentiment
Analysis", EMNLP 2017. Each modality is projected to a small ``d`` (option
``tensor_dim``, default 16) and a constant 1 is appended, so the outer product holds
every unimodal, bimodal, ..., M-modal interaction term.

Shapes: ``{m: [B, D_m]}`` -> ``[B, d + 1]`` each -> outer product ``[B, (d + 1)^M]`` -> ``[B, H]``.
"""

from __future__ import annotations

import torch
from torch import nn

from crossfuse.fusion.base import FusionMethod, FusionSpec
from crossfuse.fusion.registry import register_fusion


@register_fusion("tensor")
class TensorFusion(FusionMethod):
    """>>> from crossfuse.fusion.base import example_inputs
    >>> spec, x, present = example_inputs("tensor")
    >>> TensorFusion(spec)(x, present).shape
    torch.Size([2, 16])
    """

    tunable = {"tensor_dim": (16, [8, 16, 32])}

    def __init__(self, spec: FusionSpec):
        super().__init__(spec)
        d = self.option("tensor_dim")
        self.project = nn.ModuleDict({m: nn.Sequential(nn.LayerNorm(k), nn.Linear(k, d), nn.Tanh())
                                      for m, k in spec.dims.items()})
        self.body = nn.Sequential(nn.Dropout(spec.dropout), nn.Linear((d + 1) ** len(spec.dims),
                                                                      spec.hidden_dim),
                                  nn.GELU(), nn.Dropout(spec.dropout))

    def forward(self, features, present):
        joint = None
        for m in self.modalities:
            z = self.project[m](features[m])
            z = torch.cat([z, torch.ones_like(z[:, :1])], dim=-1)                 # [B, d + 1]
            joint = z if joint is None else torch.einsum("bi,bj->bij", joint, z).flatten(1)
        return self.body(joint)
