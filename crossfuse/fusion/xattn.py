"""``xattn`` — cross-modal attention, MulT-style.

Tsai, Bai, Liang, Kolter, Morency & Salakhutdinov, "Multimodal Transformer for Unaligned
Multimodal Language Sequences", ACL 2019. For every modality, a cross-modal block
lets its tokens (queries) attend to the other modalities' tokens (keys/values), with a
residual and a feed-forward layer; the attended streams are pooled and concatenated.
Here each modality contributes one token (its pooled vector) — with two modalities,
each then reads the other. Absent modalities are masked out as keys.

Shapes: ``{m: [B, D_m]}`` -> tokens ``[B, M, H]`` -> per modality ``[B, H]`` -> concat
``[B, M * H]`` -> ``[B, H]``.
"""

from __future__ import annotations

import torch
from torch import nn

from crossfuse.fusion.base import FusionHead, FusionSpec, presence_mask
from crossfuse.fusion.registry import register_fusion


class CrossModalBlock(nn.Module):
    """Pre-norm cross-attention + feed-forward: queries ``[B, Lq, H]``, context ``[B, Lk, H]``."""

    def __init__(self, h: int, heads: int, dropout: float):
        super().__init__()
        self.norm_q, self.norm_kv, self.norm_ff = nn.LayerNorm(h), nn.LayerNorm(h), nn.LayerNorm(h)
        self.attn = nn.MultiheadAttention(h, heads, dropout=dropout, batch_first=True)
        self.ff = nn.Sequential(nn.Linear(h, 2 * h), nn.GELU(), nn.Dropout(dropout), nn.Linear(2 * h, h))

    def forward(self, queries, context, context_padding):
        kv = self.norm_kv(context)
        attended, _ = self.attn(self.norm_q(queries), kv, kv, key_padding_mask=context_padding)
        x = queries + attended
        return x + self.ff(self.norm_ff(x))


@register_fusion("xattn")
class CrossAttentionFusion(FusionHead):
    """>>> spec = FusionSpec("xattn", {"image": 8, "text": 4}, num_classes=3, hidden_dim=16)
    >>> x = {"image": torch.randn(2, 8), "text": torch.randn(2, 4)}
    >>> CrossAttentionFusion(spec)(x, {m: torch.ones(2, dtype=torch.bool) for m in x}).shape
    torch.Size([2, 3])
    """

    def __init__(self, spec: FusionSpec):
        super().__init__(spec)
        h = spec.hidden_dim
        heads = spec.option("heads", 4)
        if h % heads:
            raise ValueError(f"fusion.hidden_dim={h} must be divisible by the option heads={heads}")
        self.project = nn.ModuleDict({m: nn.Sequential(nn.LayerNorm(d), nn.Linear(d, h))
                                      for m, d in spec.dims.items()})
        self.blocks = nn.ModuleDict({m: CrossModalBlock(h, heads, spec.dropout) for m in spec.dims})
        self.out = nn.Sequential(nn.LayerNorm(len(spec.dims) * h), nn.Linear(len(spec.dims) * h, h),
                                 nn.GELU(), nn.Dropout(spec.dropout))

    def represent(self, features, present):
        tokens = {m: self.project[m](features[m]).unsqueeze(1) for m in self.modalities}
        keep = presence_mask(present, self.modalities)
        streams = []
        for i, m in enumerate(self.modalities):
            others = [j for j in range(len(self.modalities)) if j != i]
            if not others:  # a single modality has nothing to attend to
                streams.append(tokens[m].squeeze(1))
                continue
            context = torch.cat([tokens[self.modalities[j]] for j in others], dim=1)
            padding = ~keep[:, others]
            # A row whose other modalities are all absent attends to them anyway (placeholders)
            # rather than to nothing, which would give NaN.
            padding = padding & ~padding.all(dim=1, keepdim=True)
            streams.append(self.blocks[m](tokens[m], context, padding).squeeze(1))
        return self.out(torch.cat(streams, dim=-1))
