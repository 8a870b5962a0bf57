"""The encoder interface: a frozen pretrained model that maps a batch of one modality to vectors.

An :class:`Encoder` takes a list of raw items of its modality (``str`` for text,
``PIL.Image`` for images) and returns a float32 tensor of shape ``[batch, dim]``.
Its ``cache_key`` names the exact weights and settings, so cached features are
reused only for the same encoder. :meth:`Encoder.to` runs the network on a GPU;
vectors always come back on the CPU.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import torch


class EncoderUnavailable(RuntimeError):
    """The encoder's model cannot be loaded here; the message says how to provide it."""


def resolve_device(spec: str = "auto") -> torch.device:
    """Where encoders run: ``auto`` is CUDA when torch sees a GPU, else the CPU.

    >>> resolve_device("cpu")
    device(type='cpu')
    """
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(spec)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise EncoderUnavailable(
            f"extract.device={spec!r}, but torch {torch.__version__} sees no GPU here: run in the "
            f"CUDA image (infra/docker/Dockerfile.gpu) on a node with a GPU, or set "
            f"extract.device=auto")
    return device


class Encoder(ABC):
    """A frozen encoder for one modality.

    Attributes
    ----------
    name: the registry name it was built from (``minilm``, ``hf:...``).
    modality: ``"text"`` or ``"image"``.
    dim: length of the output vectors.
    cache_key: identifies weights + preprocessing (+ ``@cuda`` on a GPU); part of every
        cached feature's key.
    device: where the network runs (:meth:`to`); the CPU unless moved.
    """

    name: str
    modality: str
    dim: int
    cache_key: str
    device: torch.device = torch.device("cpu")

    def to(self, device: torch.device | str) -> Encoder:
        """Run the network (``self.model``) on ``device``; inputs follow, outputs return to the CPU.

        A GPU's kernels round differently from the CPU's, so features made there are
        cached under their own key (``<key>@cuda``): a cache never mixes the two.
        """
        self.device = torch.device(device)
        model = getattr(self, "model", None)
        if model is not None:
            model.to(self.device)
        # The key the encoder was built with is the CPU's; a moved encoder derives from it.
        cpu_key = self.__dict__.setdefault("_cpu_cache_key", self.cache_key)
        self.cache_key = cpu_key if self.device.type == "cpu" else f"{cpu_key}@{self.device.type}"
        return self

    @abstractmethod
    def encode(self, items: list[Any]) -> torch.Tensor:
        """Encode a batch: ``len(items)`` items -> float32 tensor ``[len(items), dim]``."""

    def encode_tokens(self, items: list[Any], max_tokens: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Token sequences: ``([B, L, dim] float32, [B, L] bool mask)`` with ``L <= max_tokens``.

        Text tokens are word pieces (truncated), image tokens are patches or a grid of
        feature-map cells. Encoders without a token view raise ``NotImplementedError``.
        """
        raise NotImplementedError(f"encoder {self.name!r} has no token sequences; use pooled "
                                  f"vectors (extract.token_sequences=false)")

    def count_truncated(self, items: list[Any]) -> int:
        """How many of ``items`` the encoder cuts to fit its input length (0: it cuts none)."""
        return 0

    def num_parameters(self) -> int:
        """Weights in the encoder's network (``self.model``), 0 when it has none."""
        model = getattr(self, "model", None)
        return sum(p.numel() for p in model.parameters()) if model is not None else 0

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, modality={self.modality!r}, dim={self.dim})"


def pad_tokens(tokens: torch.Tensor, mask: torch.Tensor, length: int) -> dict[str, torch.Tensor]:
    """Pad/cut ``[B, L, D]`` tokens and ``[B, L]`` mask to exactly ``length`` positions."""
    b, n, d = tokens.shape
    out = torch.zeros(b, length, d)
    keep = torch.zeros(b, length, dtype=torch.bool)
    out[:, :min(n, length)] = tokens[:, :length]
    keep[:, :min(n, length)] = mask[:, :length]
    return {"tokens": out, "mask": keep}
