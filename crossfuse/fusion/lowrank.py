"""``lowrank`` — Low-rank Multimodal Fusion: tensor fusion without building the tensor.

Liu, Shen, Lakshminarasimhan, Liang, Zadeh & Morency, "Efficient Low-rank Multimodal
Fusion with Modality-Specific Factors", ACL 2018. The weight of the tensor-fusion layer
is factorised into ``rank`` modality-specific factors, so
``h = sum_r prod_m (W_m^r [z_m; 1])`` costs linear, not exponential, time in ``M``.
Option ``rank`` (default 4); ``z_m`` is the LayerNormed input vector.

Shapes: ``{m: [B, D_m]}`` -> per modality ``[B, rank, H]`` -> product over m, sum over
rank -> ``[B, H]``.
"""

from __future__ import annotations

import torch
from torch import nn

from crossfuse.fusion.base import FusionMethod, FusionSpec
from crossfuse.fusion.registry import register_fusion


@register_fusion("lowrank")
class LowRankFusion(FusionMethod):
    """>>> from crossfuse.fusion.base import example_inputs
    >>> spec, x, present = example_inputs("lowrank")
    >>> LowRankFusion(spec)(x, present).shape
    torch.Size([2, 16])
    """

    tunable = {"rank": (4, [2, 4, 8, 16])}

    def __init__(self, spec: FusionSpec):
        super().__init__(spec)
        self.rank = self.option("rank")
        h = spec.hidden_dim
        self.norms = nn.ModuleDict({m: nn.LayerNorm(d) for m, d in spec.dims.items()})
        # Factor of modality m: [d_m + 1, rank * H]; init keeps the product's scale near 1.
        self.factors = nn.ParameterDict({
            m: nn.Parameter(torch.randn(d + 1, self.rank * h) / (d + 1) ** 0.5)
            for m, d in spec.dims.items()})
        self.rank_weights = nn.Parameter(torch.full((self.rank,), 1.0 / self.rank))
        self.bias = nn.Parameter(torch.zeros(h))
        self.out = nn.Sequential(nn.GELU(), nn.Dropout(spec.dropout))

    def forward(self, features, present):
        product = None
        for m in self.modalities:
            z = self.norms[m](features[m])
            z = torch.cat([z, torch.ones_like(z[:, :1])], dim=-1)
            f = (z @ self.factors[m]).view(len(z), self.rank, -1)                 # [B, R, H]
            product = f if product is None else product * f
        fused = torch.einsum("r,brh->bh", self.rank_weights, product) + self.bias
        return self.out(fused)
