"""Encoder registry: name -> factory. ``hf:<ref>`` builds any transformers model.

>>> build_encoder("minilm", "text").dim      # doctest: +SKIP
384
"""

from __future__ import annotations

from collections.abc import Callable

from crossfuse.encoders.base import Encoder, EncoderUnavailable

ENCODERS: dict[str, tuple[str, Callable[[], Encoder]]] = {}


def register_encoder(name: str, modality: str, factory: Callable[[], Encoder]) -> None:
    """Make ``factory`` available as encoder ``name`` for ``modality``."""
    ENCODERS[name] = (modality, factory)


def _minilm() -> Encoder:
    from crossfuse.encoders.minilm import MiniLMEncoder

    return MiniLMEncoder()


def _efficientnet_lite0() -> Encoder:
    from crossfuse.encoders.efficientnet import EfficientNetLite0Encoder

    return EfficientNetLite0Encoder()


register_encoder("minilm", "text", _minilm)
register_encoder("efficientnet-lite0", "image", _efficientnet_lite0)


def build_encoder(name: str, modality: str, offline: bool = True) -> Encoder:
    """Build the encoder ``name`` for ``modality``.

    Parameters
    ----------
    name: a registered name, or ``hf:<hub id or local folder>``.
    modality: the manifest column it encodes ("text" or "image").
    offline: for ``hf:`` models, never reach the hub.

    Raises
    ------
    EncoderUnavailable: unknown name, wrong modality, or model files not available.
    """
    if name.startswith("hf:"):
        from crossfuse.encoders.hf import HFEncoder

        return HFEncoder(name[3:], modality=modality, offline=offline)
    if name not in ENCODERS:
        raise EncoderUnavailable(f"unknown encoder {name!r}; known: {sorted(ENCODERS)} or "
                                 f"hf:<model id or local path>")
    expected, factory = ENCODERS[name]
    if expected != modality:
        raise EncoderUnavailable(f"encoder {name!r} encodes {expected}, not {modality}; set "
                                 f"extract.encoders.{modality} to a {modality} encoder")
    return factory()
