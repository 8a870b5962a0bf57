"""A weighted average of fusion heads' class probabilities: bagged fold models, ensembles.

``FusionEnsemble(members, weights)`` behaves like one :class:`FusionHead`: ``forward``
returns ``log(sum_i w_i * softmax(head_i))`` (so a softmax gives back the averaged
probabilities exactly), ``forward_all`` does so for every target, and ``spec`` covers
the union of the members' modalities. A member that reads fewer modalities (a unimodal
head) is given only its own. Caruana et al., "Ensemble selection from libraries of
models", ICML 2004; bagging: Breiman, Machine Learning 1996.

Example
-------
>>> from crossfuse.fusion.base import example_inputs
>>> from crossfuse.fusion.head import FusionHead
>>> spec, x, present = example_inputs("concat")
>>> text_only = FusionSpec("late", {"text": 4}, num_classes=3, hidden_dim=16)
>>> ensemble = FusionEnsemble([FusionHead(spec), FusionHead(text_only)], [3, 1])
>>> torch.allclose(ensemble(x, present).softmax(-1).sum(-1), torch.ones(2))
True
>>> ensemble.spec.dims, ensemble.weights.tolist()
({'image': 8, 'text': 4}, [0.75, 0.25])
"""

from __future__ import annotations

import torch
from torch import nn

from crossfuse.fusion.base import FusionSpec, Tokens
from crossfuse.fusion.head import FusionHead

ENSEMBLE = "ensemble"


class FusionEnsemble(nn.Module):
    """Members' probabilities averaged with ``weights`` (normalised to sum to 1)."""

    def __init__(self, members: list[FusionHead], weights: list[float]):
        super().__init__()
        if not members or len(members) != len(weights) or min(weights) < 0 or sum(weights) <= 0:
            raise ValueError(f"an ensemble needs members and as many non-negative weights with a "
                             f"positive sum; got {len(members)} members, weights {weights}")
        first = members[0].spec
        if any(m.spec.targets != first.targets for m in members):
            raise ValueError("ensemble members must predict the same targets and classes")
        self.members = nn.ModuleList(members)
        self.register_buffer("weights", torch.tensor(weights, dtype=torch.float32) / sum(weights))
        dims: dict[str, int] = {}
        for member in members:
            dims.update({m: d for m, d in member.spec.dims.items() if m not in dims})
        self.spec = FusionSpec(method=ENSEMBLE, dims=dims, num_classes=first.num_classes,
                               hidden_dim=first.hidden_dim, target=first.target,
                               extra_targets=dict(first.extra_targets),
                               token_inputs=any(m.spec.token_inputs for m in members))
        self.modalities = list(dims)

    def forward_all(self, features: dict[str, torch.Tensor], present: dict[str, torch.Tensor],
                    tokens: Tokens | None = None) -> dict[str, torch.Tensor]:
        """Log of the weighted mean probabilities, ``{target: [B, n_target]}``."""
        mean: dict[str, torch.Tensor] = {}
        for weight, member in zip(self.weights, self.members, strict=True):
            own = member.modalities
            out = member.forward_all({m: features[m] for m in own}, {m: present[m] for m in own},
                                     {m: tokens[m] for m in own} if member.spec.token_inputs else None)
            for target in member.spec.targets:
                probs = weight * out[target].softmax(-1)
                mean[target] = probs if target not in mean else mean[target] + probs
        return {t: p.clamp_min(1e-12).log() for t, p in mean.items()}

    def forward(self, features: dict[str, torch.Tensor], present: dict[str, torch.Tensor],
                tokens: Tokens | None = None) -> torch.Tensor:
        return self.forward_all(features, present, tokens)[self.spec.target]
