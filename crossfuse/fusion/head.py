"""The trainable model: a fusion method composed with placeholders, target heads and aux heads.

``FusionHead(spec)`` builds the registered method ``spec.method`` and wraps it:

- ``placeholders``: one learned vector per modality that stands in for a missing one;
- ``bottleneck`` (``spec.bottleneck`` > 0): per modality ``LayerNorm -> Linear -> GELU`` to a
  common width, applied to pooled vectors and token sequences alike, so 1,280 image
  dimensions cannot swamp 384 text ones; ``spec.input_dropout`` drops input features;
- ``fusion``: the method (:class:`crossfuse.fusion.base.FusionMethod`), ``[B, hidden_dim]`` out;
- ``heads``: one ``Linear(hidden_dim, n)`` per target (none when the method ``decides``);
- ``aux``: with ``spec.aux_heads``, a classifier of the primary target per modality.

Example
-------
>>> spec = FusionSpec("concat", {"image": 8, "text": 4}, num_classes=3, hidden_dim=16)
>>> head = FusionHead(spec)
>>> x = {"image": torch.randn(2, 8), "text": torch.randn(2, 4)}
>>> present = {"image": torch.tensor([True, False]), "text": torch.ones(2, dtype=torch.bool)}
>>> head(x, present).shape
torch.Size([2, 3])
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from crossfuse.fusion.base import FusionSpec, Tokens
from crossfuse.fusion.registry import FUSION_METHODS

# What the head owns; every other weight is the method's.
HEAD_PARTS = ("placeholders", "heads", "aux", "bottleneck", "input_dropout")


class FusionHead(nn.Module):
    """A fusion method plus what all methods share; ``forward`` returns primary-target logits."""

    def __init__(self, spec: FusionSpec):
        super().__init__()
        if spec.method not in FUSION_METHODS:
            raise ValueError(f"unknown fusion method {spec.method!r}; available: "
                             f"{sorted(FUSION_METHODS)}")
        if not spec.dims:
            raise ValueError("a fusion head needs at least one modality")
        method = FUSION_METHODS[spec.method]
        self.spec = spec
        self.modalities = list(spec.dims)
        self.placeholders = nn.ParameterDict(
            {m: nn.Parameter(torch.zeros(d)) for m, d in spec.dims.items()})
        if not method.decides:
            self.heads = nn.ModuleDict({t: nn.Linear(spec.hidden_dim, n)
                                        for t, n in spec.targets.items()})
        if spec.aux_heads:
            self.aux = nn.ModuleDict({m: nn.Sequential(nn.LayerNorm(d), nn.Linear(d, spec.num_classes))
                                      for m, d in spec.dims.items()})
        if spec.bottleneck:
            self.bottleneck = nn.ModuleDict({
                m: nn.Sequential(nn.LayerNorm(d), nn.Linear(d, spec.bottleneck), nn.GELU())
                for m, d in spec.dims.items()})
        self.input_dropout = nn.Dropout(spec.input_dropout)
        self.fusion = method(dataclasses.replace(spec, dims=spec.fused_dims()))

    def fill_missing(self, features: dict[str, torch.Tensor],
                     present: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Replace absent rows by the modality's placeholder: same shapes in and out."""
        filled = {}
        for m in self.modalities:
            x = features[m]
            mask = present[m].to(torch.bool).unsqueeze(-1)
            filled[m] = torch.where(mask, x, self.placeholders[m].to(x.dtype).expand_as(x))
        return filled

    def project(self, modality: str, x: torch.Tensor) -> torch.Tensor:
        """``x`` (``[..., D_m]``) through the modality's bottleneck, when there is one."""
        return self.bottleneck[modality](x) if self.spec.bottleneck else x

    def forward_all(self, features: dict[str, torch.Tensor], present: dict[str, torch.Tensor],
                    tokens: Tokens | None = None) -> dict[str, torch.Tensor]:
        """Logits of every head: ``{target: [B, n_target], "aux:<m>": [B, num_classes]}``."""
        filled = self.fill_missing(features, present)
        inputs = {m: self.project(m, x) for m, x in filled.items()}
        if self.spec.input_dropout:  # p=0 skipped: the RNG stream stays that of a head without it
            inputs = {m: self.input_dropout(x) for m, x in inputs.items()}
        if self.spec.token_inputs:
            if tokens is None:
                raise ValueError(f"this {self.spec.method} head was trained on token sequences; "
                                 f"pass tokens (extract.token_sequences=true)")
            tokens = {m: (self.project(m, t), k) for m, (t, k) in tokens.items()}
            fused = self.fusion(inputs, present, tokens=tokens)
        else:
            fused = self.fusion(inputs, present)
        out = fused if self.fusion.decides else {t: head(fused) for t, head in self.heads.items()}
        if self.spec.aux_heads:
            out.update({f"aux:{m}": self.aux[m](filled[m]) for m in self.modalities})
        return out

    def forward(self, features: dict[str, torch.Tensor], present: dict[str, torch.Tensor],
                tokens: Tokens | None = None) -> torch.Tensor:
        return self.forward_all(features, present, tokens)[self.spec.target]


def upgrade_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map weights saved before the method was a sub-module (``norms.x`` -> ``fusion.norms.x``).

    >>> sorted(upgrade_state_dict({"heads.label.bias": 0, "body.0.weight": 1, "fusion.w": 2}))
    ['fusion.body.0.weight', 'fusion.w', 'heads.label.bias']
    """
    def owner(key: str) -> str:
        return key.split(".", 1)[0]

    return {k if owner(k) in HEAD_PARTS or owner(k) == "fusion" else f"fusion.{k}": v
            for k, v in state.items()}
