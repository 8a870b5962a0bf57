"""``transformer`` — a Transformer encoder over one token per modality plus a [CLS] token.

Vaswani et al., "Attention Is All You Need", NeurIPS 2017; the single-stream
multimodal encoder with a classification token follows e.g. VisualBERT (Li et al., 2019)
and the fusion transformer of AutoGluon's multimodal predictor. Absent modalities are
masked out of attention (``src_key_padding_mask``). Options ``layers`` (default 2) and
``heads`` (default 4).

Shapes: ``{m: [B, D_m]}`` -> tokens ``[B, 1 + M, H]`` -> encoder -> [CLS] ``[B, H]``.
"""

from __future__ import annotations

import torch
from torch import nn

from crossfuse.fusion.base import (
    FusionMethod,
    FusionSpec,
    attention_heads,
    linear_projections,
    presence_mask,
)
from crossfuse.fusion.registry import register_fusion


@register_fusion("transformer")
class TransformerFusion(FusionMethod):
    """>>> from crossfuse.fusion.base import example_inputs
    >>> spec, x, present = example_inputs("transformer")
    >>> TransformerFusion(spec)(x, present).shape
    torch.Size([2, 16])
    """

    tunable = {"layers": (2, [1, 2, 3])}

    def __init__(self, spec: FusionSpec):
        super().__init__(spec)
        h = spec.hidden_dim
        self.project = linear_projections(spec)
        self.modality_embedding = nn.Parameter(torch.randn(len(spec.dims), h) * 0.02)
        self.cls = nn.Parameter(torch.randn(1, 1, h) * 0.02)
        layer = nn.TransformerEncoderLayer(h, attention_heads(spec), dim_feedforward=2 * h,
                                           dropout=spec.dropout, batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, self.option("layers"),
                                             enable_nested_tensor=False)
        self.norm = nn.LayerNorm(h)

    def forward(self, features, present):
        tokens = torch.stack([self.project[m](features[m]) for m in self.modalities], dim=1)
        tokens = tokens + self.modality_embedding
        tokens = torch.cat([self.cls.expand(len(tokens), -1, -1), tokens], dim=1)
        keep = presence_mask(present, self.modalities)
        padding = torch.cat([torch.zeros_like(keep[:, :1]), ~keep], dim=1)        # CLS never masked
        return self.norm(self.encoder(tokens, src_key_padding_mask=padding)[:, 0])
