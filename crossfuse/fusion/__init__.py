"""Fusion methods behind one interface (see :mod:`crossfuse.fusion.base`), by name.

>>> sorted(FUSION_METHODS)
['attention', 'concat', 'film', 'gmu', 'late', 'linear', 'lowrank', 'mfb', 'tensor', 'transformer', 'xattn']
"""

from crossfuse.fusion import (  # noqa: F401  (importing a method's module registers it)
    attention,
    concat,
    film,
    gmu,
    late,
    linear,
    lowrank,
    mfb,
    tensor,
    transformer,
    xattn,
)
from crossfuse.fusion.base import FusionMethod, FusionSpec
from crossfuse.fusion.ensemble import FusionEnsemble
from crossfuse.fusion.head import FusionHead
from crossfuse.fusion.model import build_fusion_head, load_fusion_head, predict_proba, save_fusion_head
from crossfuse.fusion.registry import FUSION_METHODS, register_fusion

__all__ = ["FUSION_METHODS", "FusionEnsemble", "FusionHead", "FusionMethod", "FusionSpec",
           "build_fusion_head", "load_fusion_head", "predict_proba", "register_fusion",
           "save_fusion_head"]
