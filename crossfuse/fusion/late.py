"""``late`` — decision-level fusion: one classifier per modality, log-probabilities combined
by learned softmax weights; an absent modality gets weight 0.

See Snoek, Worring & Smeulders, "Early versus late fusion in semantic video analysis",
ACM MM 2005; Baltrušaitis et al., TPAMI 2019, §5 (late fusion).

Shapes: ``{m: [B, D_m]}`` -> per modality ``[B, C]`` -> weighted sum ``[B, C]``, per target.
"""

from __future__ import annotations

import torch
from torch import nn

from crossfuse.fusion.base import FusionMethod, FusionSpec, presence_mask, projector
from crossfuse.fusion.registry import register_fusion


@register_fusion("late")
class LateFusion(FusionMethod):
    """Returns ``{target: logits [B, C]}``: the head adds no target layers (``decides``).

    >>> from crossfuse.fusion.base import example_inputs
    >>> spec, x, present = example_inputs("late")
    >>> LateFusion(spec)(x, present)["label"].shape
    torch.Size([2, 3])
    """

    decides = True

    def __init__(self, spec: FusionSpec):
        super().__init__(spec)
        self.encoders = nn.ModuleDict({m: projector(d, spec.hidden_dim, spec.dropout)
                                       for m, d in spec.dims.items()})
        self.decisions = nn.ModuleDict({
            t: nn.ModuleDict({m: nn.Linear(spec.hidden_dim, n) for m in spec.dims})
            for t, n in spec.targets.items()})
        self.weight_logits = nn.Parameter(torch.zeros(len(self.modalities)))

    def forward(self, features, present):
        hidden = {m: self.encoders[m](features[m]) for m in self.modalities}
        mask = presence_mask(present, self.modalities)                          # [B, M]
        weights = self.weight_logits.expand_as(mask).masked_fill(~mask, float("-inf")).softmax(-1)
        out = {}
        for target, heads in self.decisions.items():
            log_probs = torch.stack([heads[m](hidden[m]).log_softmax(-1) for m in self.modalities],
                                    dim=1)                                          # [B, M, C]
            out[target] = (weights.unsqueeze(-1) * log_probs).sum(dim=1) * len(self.modalities)
        return out
