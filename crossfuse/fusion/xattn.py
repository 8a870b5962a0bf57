"""``xattn`` — cross-modal attention, MulT-style.

Tsai, Bai, Liang, Kolter, Morency & Salakhutdinov, "Multimodal Transformer for Unaligned
Multimodal Language Sequences", ACL 2019. For every modality, a cross-modal block
lets its tokens (queries) attend to the other modalities' tokens (keys/values), with a
residual and a feed-forward layer; the attended streams are pooled and concatenated.
With token sequences (``extract.token_sequences``: word pieces, image patches or
feature-map cells) each modality is its sequence, as in MulT; without them each
modality is one token, its pooled vector. Absent modalities are masked out as keys; an
absent modality's own stream is its placeholder.

Shapes: tokens ``{m: [B, L_m, D_m]}`` (or ``[B, 1, D_m]``) -> ``[B, L_m, H]`` -> cross-attended,
mean-pooled per modality ``[B, H]`` -> concat ``[B, M * H]`` -> ``[B, H]``.
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
class CrossAttentionFusion(FusionMethod):
    """>>> from crossfuse.fusion.base import example_inputs
    >>> spec, x, present = example_inputs("xattn")
    >>> CrossAttentionFusion(spec)(x, present).shape
    torch.Size([2, 16])
    """

    def __init__(self, spec: FusionSpec):
        super().__init__(spec)
        h = spec.hidden_dim
        heads = attention_heads(spec)
        self.project = linear_projections(spec)
        self.blocks = nn.ModuleDict({m: CrossModalBlock(h, heads, spec.dropout) for m in spec.dims})
        self.out = nn.Sequential(nn.LayerNorm(len(spec.dims) * h), nn.Linear(len(spec.dims) * h, h),
                                 nn.GELU(), nn.Dropout(spec.dropout))

    uses_tokens = True

    def sequences(self, features, present, tokens=None) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """``{m: (projected tokens [B, L, H], valid [B, L])}``; an absent row is its placeholder.

        ``features`` are already placeholder-filled, so an absent row's pooled vector
        is the placeholder; it becomes that row's only valid token.
        """
        out = {}
        for m in self.modalities:
            pooled = features[m].unsqueeze(1)                                    # [B, 1, D]
            if tokens is None:
                seq, valid = pooled, torch.ones(pooled.shape[:2], dtype=torch.bool)
            else:
                seq, valid = tokens[m]
                here = present[m].to(torch.bool)
                first = torch.arange(seq.shape[1]) == 0
                seq = torch.where(here[:, None, None], seq,
                                  torch.where(first[None, :, None], pooled, torch.zeros_like(pooled)))
                valid = torch.where(here[:, None], valid, first[None, :])
                valid = valid | (first[None, :] & ~valid.any(1, keepdim=True))  # empty text
            out[m] = (self.project[m](seq), valid)
        return out

    def forward(self, features, present, tokens=None):
        seqs = self.sequences(features, present, tokens)
        keep = presence_mask(present, self.modalities)                           # [B, M]
        streams = []
        for i, m in enumerate(self.modalities):
            queries, q_valid = seqs[m]
            others = [j for j in range(len(self.modalities)) if j != i]
            if others:
                context = torch.cat([seqs[self.modalities[j]][0] for j in others], dim=1)
                valid = torch.cat([seqs[self.modalities[j]][1] & keep[:, j:j + 1] for j in others], 1)
                # With every other modality absent, attend to their placeholders rather than to
                # nothing (which gives NaN).
                fallback = torch.cat([seqs[self.modalities[j]][1] for j in others], 1)
                valid = torch.where(valid.any(1, keepdim=True), valid, fallback)
                queries = self.blocks[m](queries, context, ~valid)
            weights = q_valid.unsqueeze(-1).to(queries.dtype)
            streams.append((queries * weights).sum(1) / weights.sum(1).clamp(min=1.0))
        return self.out(torch.cat(streams, dim=-1))
