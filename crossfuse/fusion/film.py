"""``film`` — Feature-wise Linear Modulation of one modality by the others.

Perez, Strub, de Vries, Dumoulin & Courville, "FiLM: Visual Reasoning with a General
Conditioning Layer", AAAI 2018. The conditioned modality (option ``film_target``,
default: the first, e.g. ``image``) is projected to ``H``; the other modalities, concatenated,
predict a per-unit scale ``gamma`` and shift ``beta``: ``h = (1 + gamma) * proj(x) + beta``.
A missing conditioner contributes its placeholder; the residual ``1 +`` keeps the
unconditioned path when ``gamma`` is small.

Shapes: target ``[B, D_t]`` -> ``[B, H]``; others ``[B, sum D_o]`` -> gamma, beta ``[B, H]``
-> ``[B, H]``.
"""

from __future__ import annotations

import torch
from torch import nn

from crossfuse.errors import UserError
from crossfuse.fusion.base import FusionMethod, FusionSpec
from crossfuse.fusion.registry import register_fusion


@register_fusion("film")
class FiLMFusion(FusionMethod):
    """>>> from crossfuse.fusion.base import example_inputs
    >>> spec, x, present = example_inputs("film")
    >>> FiLMFusion(spec)(x, present).shape
    torch.Size([2, 16])
    """

    def __init__(self, spec: FusionSpec):
        super().__init__(spec)
        self.target = spec.option("film_target", self.modalities[0])
        if self.target not in spec.dims:
            raise UserError(f"fusion option film_target={self.target!r} is not a modality of "
                            f"{self.modalities}")
        h = spec.hidden_dim
        self.conditioners = [m for m in self.modalities if m != self.target]
        self.norms = nn.ModuleDict({m: nn.LayerNorm(d) for m, d in spec.dims.items()})
        self.project = nn.Linear(spec.dims[self.target], h)
        cond_dim = sum(spec.dims[m] for m in self.conditioners)
        self.film = nn.Linear(cond_dim, 2 * h) if cond_dim else None
        self.out = nn.Sequential(nn.GELU(), nn.Dropout(spec.dropout))

    def forward(self, features, present):
        h = self.project(self.norms[self.target](features[self.target]))
        if self.film is not None:
            context = torch.cat([self.norms[m](features[m]) for m in self.conditioners], dim=-1)
            gamma, beta = self.film(context).chunk(2, dim=-1)
            h = (1 + gamma) * h + beta
        return self.out(h)
