"""The interface every fusion method implements, and what they all share.

``forward(features, present) -> logits``:

- ``features``: ``{modality: Tensor[B, D_m]}``, one pooled vector per sample and modality;
- ``present``: ``{modality: BoolTensor[B]}``, False where the sample lacks that modality;
- returns ``Tensor[B, num_classes]``: logits of the primary target.

``forward_all(features, present)`` returns ``{name: logits}`` for every head: the
primary target (``spec.target``), each extra target (multi-task), and, when
``spec.aux_heads`` is on, ``aux:<modality>`` — a per-modality classifier of the
primary target used as an auxiliary training loss.

A method is a :class:`FusionMethod`: ``forward(features, present) -> Tensor[B, hidden_dim]``.
:class:`crossfuse.fusion.head.FusionHead` composes it with what every method shares:
learned placeholders for missing modalities, one linear head per target and the
optional auxiliary heads. A missing modality never reaches the arithmetic: the head
swaps its rows for the placeholder first, and methods that weigh modalities also mask it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from crossfuse.errors import UserError


@dataclass(frozen=True)
class FusionSpec:
    """Everything needed to rebuild a fusion head (stored next to its weights).

    ``num_classes`` is the primary target's class count; ``extra_targets`` maps other
    target names to theirs.
    """

    method: str
    dims: dict[str, int]
    num_classes: int
    hidden_dim: int = 256
    dropout: float = 0.2
    target: str = "label"
    extra_targets: dict[str, int] = field(default_factory=dict)
    aux_heads: bool = False
    options: dict[str, int | float | str] = field(default_factory=dict)
    token_inputs: bool = False  # the head reads token sequences (methods with uses_tokens)
    bottleneck: int = 0  # per-modality projection width before the method; 0 = none
    input_dropout: float = 0.0  # dropout on each modality's input features while training

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def targets(self) -> dict[str, int]:
        """All targets, primary first: ``{name: num_classes}``."""
        return {self.target: self.num_classes, **self.extra_targets}

    def fused_dims(self) -> dict[str, int]:
        """The widths the method sees: ``bottleneck`` for every modality when it is on."""
        return {m: self.bottleneck for m in self.dims} if self.bottleneck else dict(self.dims)

    def option(self, name: str, default):
        return type(default)(self.options.get(name, default))


Tokens = dict[str, tuple[torch.Tensor, torch.Tensor]]  # {modality: ([B, L, D_m], [B, L] mask)}


class FusionMethod(nn.Module):
    """Base class of a fusion method: complete features in, one fused representation out.

    ``forward(features, present) -> Tensor[B, hidden_dim]``. ``features`` arrive with
    missing rows already replaced by placeholders (:class:`crossfuse.fusion.head.FusionHead`
    does that); ``present`` tells which rows are real, for methods that weigh modalities.

    Class attributes a method may set:

    - ``uses_tokens``: it can read token sequences; its ``forward`` then takes
      ``tokens=`` (passed only when ``spec.token_inputs``);
    - ``decides``: decision-level fusion — ``forward`` returns ``{target: logits}`` itself,
      and the head adds no per-target linear layers on top;
    - ``tunable``: its own knobs in ``fusion.options``, ``{name: (default, choices)}``; the
      hyper-parameter search draws from ``choices`` and tries ``default`` first.
    """

    uses_tokens = False
    decides = False
    tunable: dict[str, tuple[int, list[int]]] = {}

    def option(self, name: str) -> int:
        """The tunable knob ``name`` from ``fusion.options``, or its declared default."""
        return self.spec.option(name, self.tunable[name][0])

    def __init__(self, spec: FusionSpec):
        super().__init__()
        if not spec.dims:
            raise ValueError("a fusion method needs at least one modality")
        self.spec = spec
        self.modalities = list(spec.dims)


def presence_mask(present: dict[str, torch.Tensor], modalities: list[str]) -> torch.Tensor:
    """``[B, M]`` bool mask of present modalities; rows with none present count all as present.

    Methods that weigh modalities use it to give absent ones weight 0; the fallback keeps
    an all-missing row finite (it then sees only placeholders).
    """
    mask = torch.stack([present[m].to(torch.bool) for m in modalities], dim=1)
    return mask | ~mask.any(dim=1, keepdim=True)


def mlp(in_dim: int, hidden_dim: int, out_dim: int, dropout: float) -> nn.Sequential:
    """``Linear -> GELU -> Dropout -> Linear``."""
    return nn.Sequential(nn.Linear(in_dim, hidden_dim), nn.GELU(), nn.Dropout(dropout),
                         nn.Linear(hidden_dim, out_dim))


def projector(in_dim: int, out_dim: int, dropout: float) -> nn.Sequential:
    """``LayerNorm -> Linear -> GELU -> Dropout``: one modality's vector into the shared width."""
    return nn.Sequential(nn.LayerNorm(in_dim), nn.Linear(in_dim, out_dim), nn.GELU(),
                         nn.Dropout(dropout))


def attention_heads(spec: FusionSpec) -> int:
    """The ``heads`` option (default 4), checked to divide ``hidden_dim``."""
    heads = spec.option("heads", 4)
    if spec.hidden_dim % heads:
        raise UserError(f"fusion.hidden_dim={spec.hidden_dim} must be divisible by the option "
                        f"heads={heads}")
    return heads


def linear_projections(spec: FusionSpec) -> nn.ModuleDict:
    """Per modality ``LayerNorm -> Linear`` into ``hidden_dim``: token embeddings for attention."""
    return nn.ModuleDict({m: nn.Sequential(nn.LayerNorm(d), nn.Linear(d, spec.hidden_dim))
                          for m, d in spec.dims.items()})


def example_inputs(method: str, batch: int = 2
                   ) -> tuple[FusionSpec, dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """``(spec, features, present)``: a toy image (8-d) + text (4-d) batch, 3 classes, width 16.

    The inputs of the methods' docstring examples.

    >>> spec, x, present = example_inputs("concat")
    >>> {m: tuple(v.shape) for m, v in x.items()}, spec.hidden_dim
    ({'image': (2, 8), 'text': (2, 4)}, 16)
    """
    spec = FusionSpec(method, {"image": 8, "text": 4}, num_classes=3, hidden_dim=16)
    features = {m: torch.randn(batch, d) for m, d in spec.dims.items()}
    return spec, features, {m: torch.ones(batch, dtype=torch.bool) for m in features}
