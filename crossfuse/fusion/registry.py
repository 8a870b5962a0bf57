"""Fusion method registry: ``name -> FusionMethod subclass``.

New methods register themselves with ``@register_fusion("name")`` in their own
module and are imported by ``crossfuse.fusion``.
"""

from __future__ import annotations

from collections.abc import Callable

FUSION_METHODS: dict[str, type] = {}


def register_fusion(name: str) -> Callable[[type], type]:
    def decorate(cls: type) -> type:
        if name in FUSION_METHODS:
            raise ValueError(f"fusion method {name!r} is registered twice")
        FUSION_METHODS[name] = cls
        return cls

    return decorate
