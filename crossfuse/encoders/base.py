"""The encoder interface: a frozen pretrained model that maps a batch of one modality to vectors.

An :class:`Encoder` takes a list of raw items of its modality (``str`` for text,
``PIL.Image`` for images) and returns a float32 tensor of shape ``[batch, dim]``.
Its ``cache_key`` names the exact weights and settings, so cached features are
reused only for the same encoder. :meth:`Encoder.to` runs the network on a GPU,
:meth:`Encoder.use_backend` on a faster CPU runtime (ONNX Runtime), and
:func:`place_encoder` picks both from the config; vectors always come back on the CPU.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

import torch

from crossfuse.encoders.errors import EncoderUnavailable
from crossfuse.errors import UserError

log = logging.getLogger(__name__)

BACKENDS = ("auto", "torch", "onnxruntime")


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
    cache_key: identifies weights + preprocessing (+ ``@cuda`` on a GPU, ``@onnxruntime`` on
        ONNX Runtime); part of every cached feature's key.
    device: where the network runs (:meth:`to`); the CPU unless moved.
    backend: what runs it: ``torch`` unless :meth:`use_backend` chose another of ``backends``.
    """

    name: str
    modality: str
    dim: int
    cache_key: str
    device: torch.device = torch.device("cpu")
    backend: str = "torch"
    backends: tuple[str, ...] = ("torch",)

    def to(self, device: torch.device | str) -> Encoder:
        """Run the network (``self.model``) on ``device``; inputs follow, outputs return to the CPU.

        A GPU's kernels round differently from the CPU's, so features made there are
        cached under their own key (``<key>@cuda``): a cache never mixes the two.
        """
        self.device = torch.device(device)
        model = getattr(self, "model", None)
        if model is not None:
            model.to(self.device)
        self._derive_cache_key()
        return self

    def use_backend(self, backend: str, export_dir: Path | None = None) -> Encoder:
        """Run the network on ``backend`` (one of ``backends``); ``export_dir`` keeps exports.

        Features from another runtime are close to PyTorch's but not bit-identical, so
        they are cached under their own key (``<key>@<backend>``).
        """
        if backend not in self.backends:
            raise EncoderUnavailable(f"encoder {self.name!r} runs on {list(self.backends)}, not "
                                     f"{backend!r}; set extract.backend=auto")
        self.backend = backend
        self._derive_cache_key()
        return self

    def key_suffix(self) -> str:
        """What the device and backend add to the CPU/PyTorch key (``""`` there)."""
        suffix = "" if self.device.type == "cpu" else f"@{self.device.type}"
        return suffix + ("" if self.backend == "torch" else f"@{self.backend}")

    def _derive_cache_key(self) -> None:
        # The key the encoder was built with is the CPU/PyTorch one; the others derive from it.
        base = self.__dict__.setdefault("_cpu_cache_key", self.cache_key)
        self.cache_key = base + self.key_suffix()

    def prepare_batch(self, items: list[Any]) -> Any:
        """A batch's work before the network (decode, resize, stack), run in decode workers
        that overlap the network; :meth:`encode` takes the result as well as raw items. The
        items themselves by default."""
        return list(items)

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


def choose_backend(spec: str, encoder: Encoder) -> str:
    """The runtime for ``encoder`` under ``extract.backend`` = ``spec``.

    ``auto`` is ONNX Runtime on the CPU for encoders that support it (when it is
    installed), else PyTorch; on a GPU it is PyTorch.

    >>> class Plain(Encoder):
    ...     name, modality, dim, cache_key = "plain", "text", 1, "plain"
    ...     def encode(self, items): ...
    >>> choose_backend("auto", Plain())
    'torch'
    """
    from crossfuse.encoders.onnx_backend import onnxruntime_available

    if spec not in BACKENDS:
        raise UserError(f"extract.backend={spec!r}; choose one of {list(BACKENDS)}")
    if spec == "auto":
        usable = (encoder.device.type == "cpu" and "onnxruntime" in encoder.backends
                  and onnxruntime_available())
        return "onnxruntime" if usable else "torch"
    if spec == "onnxruntime" and encoder.device.type != "cpu":
        raise EncoderUnavailable(f"extract.backend=onnxruntime runs on the CPU, but the encoders "
                                 f"are on {encoder.device}; set extract.device=cpu or "
                                 f"extract.backend=auto")
    if spec == "onnxruntime" and not onnxruntime_available():
        raise EncoderUnavailable("extract.backend=onnxruntime, but onnxruntime or onnx is not "
                                 "installed: pip install -e . installs both")
    return spec


def place_encoder(encoder: Encoder, device: str = "auto", backend: str = "auto",
                  export_dir: Path | None = None) -> Encoder:
    """Move ``encoder`` to ``device`` and onto ``backend`` (config values); returns it.

    With ``auto``, an export that disagrees with PyTorch (or fails) leaves the encoder on
    PyTorch, with a warning in the log; an explicit backend raises instead.
    """
    encoder.to(resolve_device(device))
    chosen = choose_backend(backend, encoder)
    if chosen == encoder.backend:
        return encoder
    try:
        return encoder.use_backend(chosen, export_dir)
    except RuntimeError as exc:  # ExportMismatch, ONNX Runtime's own errors
        if backend != "auto":
            raise
        log.warning("encoder %s stays on PyTorch: %s", encoder.name, exc)
        return encoder


def pad_tokens(tokens: torch.Tensor, mask: torch.Tensor, length: int) -> dict[str, torch.Tensor]:
    """Pad/cut ``[B, L, D]`` tokens and ``[B, L]`` mask to exactly ``length`` positions."""
    b, n, d = tokens.shape
    out = torch.zeros(b, length, d)
    keep = torch.zeros(b, length, dtype=torch.bool)
    out[:, :min(n, length)] = tokens[:, :length]
    keep[:, :min(n, length)] = mask[:, :length]
    return {"tokens": out, "mask": keep}
