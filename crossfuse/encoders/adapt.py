"""Fine-tuning an encoder's top: split it into a frozen bottom and a trainable top.

``fusion.finetune`` names how (:class:`FinetuneSpec`): ``top:<n>`` unfreezes the last ``n``
blocks, ``lora:<rank>`` (or ``lora:<rank>:<n>``) puts LoRA adapters of that rank
(`peft <https://github.com/huggingface/peft>`_) on the linear and convolution layers of the
last ``n`` blocks (default: half of them) and trains only those. Everything below the
adapted blocks stays frozen, so its output (:meth:`EncoderSplit.bottom`) is computed once per
item and cached by content; each epoch runs only :attr:`EncoderSplit.top`.

A split is trusted only after it reproduces the frozen encoder: ``top(bottom(x))`` must
match ``encoder.encode(x)`` on probe items (:meth:`EncoderSplit.verify`), so an
architecture the split does not understand is refused, not fine-tuned wrongly.

After training, :meth:`EncoderSplit.save` merges any adapters into the weights and writes the
whole adapted encoder into the model folder (``encoders/<modality>/``);
:func:`load_adapted_encoder` builds it back as an ordinary :class:`Encoder` (a
``transformers`` folder, or EfficientNet-Lite0 with its adapted weights), so serving, batch
scoring and the ONNX export (keyed by a hash of the weights) run it like any other.

Example
-------
>>> FinetuneSpec.parse("lora:8")
FinetuneSpec(how='lora', n=8, blocks=None)
>>> FinetuneSpec.parse("top:1").describe()
'top:1'
"""

from __future__ import annotations

import copy
import logging
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from crossfuse.config import FINETUNE_PATTERN
from crossfuse.encoders.base import Encoder
from crossfuse.errors import UserError

log = logging.getLogger(__name__)

ADAPTED_DIR = "encoders"  # in a model folder: encoders/<modality>/ holds an adapted encoder
VERIFY_ATOL = 1e-4  # top(bottom(x)) against the frozen encoder's vector, largest difference


@dataclass(frozen=True)
class FinetuneSpec:
    """How an encoder is adapted: ``how`` = ``none``, ``top`` (``n`` blocks) or ``lora`` (rank
    ``n`` on the last ``blocks`` blocks; None = half of them)."""

    how: str
    n: int = 0
    blocks: int | None = None

    @classmethod
    def parse(cls, text: str) -> FinetuneSpec:
        if not re.match(FINETUNE_PATTERN, text or ""):
            raise UserError(f"fusion.finetune={text!r}: use none, top:<n> (unfreeze the last n "
                            f"blocks) or lora:<rank> (LoRA adapters, optionally lora:<rank>:<n> "
                            f"on the last n blocks)")
        parts = text.split(":")
        if parts[0] == "none":
            return cls("none")
        return cls(parts[0], int(parts[1]), int(parts[2]) if len(parts) > 2 else None)

    @property
    def active(self) -> bool:
        return self.how != "none"

    def top_blocks(self, total: int) -> int:
        """How many of ``total`` blocks are adapted (the rest stay frozen below the cut)."""
        n = self.n if self.how == "top" else (self.blocks or max(1, total // 2))
        if n > total:
            raise UserError(f"fusion.finetune={self.describe()}: the encoder has {total} blocks; "
                            f"adapt at most {total}")
        return n

    def describe(self) -> str:
        if self.how == "none":
            return "none"
        return f"{self.how}:{self.n}" + (f":{self.blocks}" if self.blocks else "")


class _StopForward(Exception):
    """Raised by the hook at the cut: the blocks above it are not run for the bottom."""


class EncoderSplit:
    """One encoder cut below its last ``k`` blocks: a cached bottom and a trainable top.

    Subclasses fill :meth:`bottom` (items -> named tensors, row-aligned, fixed shapes so
    they cache and stack) and :attr:`top` (an ``nn.Module``: those tensors -> ``[B, dim]``).
    """

    encoder: Encoder
    spec: FinetuneSpec
    top: nn.Module
    cut: int  # blocks below the cut (frozen); the top holds the rest

    @property
    def cache_key(self) -> str:
        """Identifies the bottom's outputs: the encoder's weights and settings, and the cut."""
        return f"{self.encoder.cache_key}:bottom{self.cut}:{self.bottom_settings()}"

    def bottom_settings(self) -> str:
        return ""

    def bottom(self, items: list[Any]) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def adapt(self) -> int:
        """Make the top trainable as the spec says; returns the number of trainable weights."""
        for p in self.top.parameters():
            p.requires_grad_(False)
        if self.spec.how == "lora":
            from peft import LoraConfig, inject_adapter_in_model

            targets = [name for name, m in self.top.named_modules()
                       if isinstance(m, (nn.Linear, nn.Conv2d)) and name]
            inject_adapter_in_model(LoraConfig(r=self.spec.n, lora_alpha=2 * self.spec.n,
                                               lora_dropout=0.0, target_modules=targets), self.top)
            for name, p in self.top.named_parameters():
                p.requires_grad_("lora_" in name)
        else:
            for p in self.top.parameters():
                p.requires_grad_(True)
        return sum(p.numel() for p in self.top.parameters() if p.requires_grad)

    def merge(self) -> None:
        """Fold LoRA adapters into the weights they adapt and drop them (no-op without)."""
        from peft.tuners.lora import LoraLayer

        for name, module in list(self.top.named_modules()):
            if isinstance(module, LoraLayer):
                module.merge()
                parent = self.top.get_submodule(name.rsplit(".", 1)[0]) if "." in name else self.top
                setattr(parent, name.rsplit(".", 1)[-1], module.get_base_layer())

    @torch.no_grad()
    def verify(self, items: list[Any]) -> float:
        """Largest difference between ``top(bottom(items))`` and the frozen vectors; raises
        :class:`UserError` above :data:`VERIFY_ATOL` (the split misreads this architecture)."""
        self.top.eval()
        try:
            split = self.top(self.bottom(items))
            diff = float((split - self.encoder.encode(items)).abs().max())
        except (TypeError, ValueError, RuntimeError, KeyError, AttributeError):
            # The blocks want more than the hidden states and a mask: not a stack we can cut.
            log.debug("split of %s failed", self.encoder.name, exc_info=True)
            diff = float("inf")
        if not diff <= VERIFY_ATOL:
            raise UserError(f"fusion.finetune={self.spec.describe()}: encoder "
                            f"{self.encoder.name} cannot be split for fine-tuning here (its top "
                            f"blocks alone differ from the whole encoder by {diff:.2g}); set "
                            f"fusion.finetune=none, or use another {self.encoder.modality} "
                            f"encoder")
        return diff

    def save(self, folder: Path) -> dict:
        """Write the adapted encoder to ``folder``; returns what the model's spec records."""
        raise NotImplementedError


_BLOCKS_NAME = re.compile(r"(^|\.)(layer|layers|blocks?)$")


def _block_list(model: nn.Module) -> tuple[str, nn.ModuleList]:
    """The model's stack of transformer blocks: the longest ModuleList of one module type named
    like one (``encoder.layer``, ``encoder.layers``, ``blocks``), else the longest of any name."""
    lists = [(name, m) for name, m in model.named_modules()
             if isinstance(m, nn.ModuleList) and len(m) and len({type(c) for c in m}) == 1]
    named = [(n, m) for n, m in lists if _BLOCKS_NAME.search(n) and "conv" not in n]
    if not (named or lists):
        raise UserError(f"{type(model).__name__} has no stack of blocks to fine-tune")
    return max(named or lists, key=lambda item: len(item[1]))


class _HFTop(nn.Module):
    """The last blocks of a ``transformers`` encoder, then its pooling: cached hidden states
    ``[B, L, D]`` (+ ``mask`` ``[B, L]``) -> ``[B, dim]``."""

    def __init__(self, blocks: list[nn.Module], modality: str, normalize: bool,
                 final_norm: nn.Module | None, pooler: nn.Module | None, mask_kind: str):
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.modality, self.normalize, self.mask_kind = modality, normalize, mask_kind
        self.final_norm, self.pooler = final_norm, pooler

    def forward(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        hidden, mask = inputs["hidden"], inputs.get("mask")
        attend = None
        if mask is not None and self.mask_kind != "none":
            length = hidden.shape[1]
            attend = mask[:, None, None, :].expand(-1, 1, length, -1)
            if self.mask_kind == "additive":
                attend = (~attend).to(hidden.dtype) * torch.finfo(hidden.dtype).min
        for block in self.blocks:
            out = block(hidden, attention_mask=attend)
            hidden = out[0] if isinstance(out, tuple) else out
        if self.final_norm is not None:
            hidden = self.final_norm(hidden)
        if self.modality == "text":
            weights = mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1.0)
        elif self.pooler is not None:
            pooled = self.pooler(hidden)
        else:
            pooled = hidden.mean(dim=1)
        pooled = pooled.flatten(1).float()
        return F.normalize(pooled, dim=-1) if self.normalize else pooled


class HFSplit(EncoderSplit):
    """A ``transformers`` encoder (:class:`crossfuse.encoders.hf.HFEncoder`) cut below its last
    blocks. Text is padded or cut to ``max_tokens`` so every item's bottom has one shape."""

    def __init__(self, encoder, spec: FinetuneSpec, max_tokens: int):
        self.encoder, self.spec = encoder, spec
        self.max_tokens = min(max_tokens, encoder.max_length)
        model = encoder.model
        self.blocks_name, blocks = _block_list(model)
        k = spec.top_blocks(len(blocks))
        self.cut = len(blocks) - k
        self._captured: dict[str, Any] = {}
        blocks[self.cut].register_forward_pre_hook(self._capture, with_kwargs=True)
        probe = self._probe_items()
        mask_kind = self._mask_kind(probe)
        cfg = model.config
        # The norm after the last block, where the architecture has one: ViT-style
        # ``layernorm``, Whisper's encoder ``layer_norm``, wav2vec2's stable-layer-norm variant.
        final_norm = getattr(model, "layernorm", None) or getattr(model, "layer_norm", None)
        if final_norm is None and getattr(cfg, "do_stable_layer_norm", False):
            final_norm = getattr(model.encoder, "layer_norm", None)
        pooler = getattr(model, "pooler", None) if encoder.modality == "image" else None
        self.top = _HFTop(list(blocks)[self.cut:], encoder.modality, encoder.normalize,
                          final_norm, pooler, mask_kind)
        self.verify(probe)

    def bottom_settings(self) -> str:
        return f"tok{self.max_tokens}" if self.encoder.modality == "text" else ""

    def _probe_items(self) -> list:
        if self.encoder.modality == "text":
            return ["a short text", "a somewhat longer text to pad the other one against"]
        if self.encoder.modality == "audio":
            rng = np.random.default_rng(0)
            return [rng.standard_normal(self.encoder.sample_rate).astype(np.float32) * 0.1] * 2
        from PIL import Image

        return [Image.new("RGB", (224, 224), (128, 64, 32)), Image.new("RGB", (224, 224), (9, 99, 199))]

    def _capture(self, module, args, kwargs):
        if not self._captured.get("listen"):  # the top's own forward passes run this block too
            return
        self._captured["hidden"] = args[0] if args else kwargs["hidden_states"]
        mask = kwargs.get("attention_mask", args[1] if len(args) > 1 else None)
        # A block whose second argument is not a mask (Swin's sizes) fails verification.
        self._captured["attention_mask"] = mask if isinstance(mask, torch.Tensor) else None
        if self._captured.get("stop"):
            raise _StopForward

    def _mask_kind(self, probe: list) -> str:
        self._captured.update(stop=False, listen=True)
        try:
            self.encoder.encode(probe)
        finally:
            self._captured["listen"] = False
        mask = self._captured.get("attention_mask")
        if mask is None:
            return "none"
        return "bool" if mask.dtype == torch.bool else "additive"

    def _inputs(self, items: list) -> tuple[dict, torch.Tensor | None]:
        enc = self.encoder
        if enc.modality == "text":
            batch = enc.processor(list(items), padding="max_length", truncation=True,
                                  max_length=self.max_tokens, return_tensors="pt")
            return dict(batch), batch["attention_mask"].to(torch.bool)
        if enc.modality == "audio":
            batch = enc.processor([np.asarray(w, dtype=np.float32) for w in items],
                                  sampling_rate=enc.sample_rate, return_tensors="pt")
            return {k: v for k, v in batch.items() if k in ("input_values", "input_features")}, None
        return {"pixel_values": enc.processor(images=list(items), return_tensors="pt")["pixel_values"]}, None

    @torch.no_grad()
    def bottom(self, items: list) -> dict[str, torch.Tensor]:
        """Items -> ``{"hidden": [B, L, D], "mask": [B, L] bool}``: what enters the top blocks."""
        inputs, mask = self._inputs(items)
        self._captured.update(stop=True, listen=True)
        try:
            self.encoder.model(**inputs)
        except _StopForward:
            pass
        finally:
            self._captured.update(stop=False, listen=False)
        hidden = self._captured["hidden"].float()
        if mask is None:
            mask = torch.ones(hidden.shape[:2], dtype=torch.bool)
        return {"hidden": hidden.contiguous(), "mask": mask}

    @torch.no_grad()
    def verify(self, items: list) -> float:
        if self.encoder.modality != "text":
            return super().verify(items)
        # Text is cut at max_tokens here; the frozen encoder is compared at that length too.
        saved, self.encoder.max_length = self.encoder.max_length, self.max_tokens
        try:
            return super().verify(items)
        finally:
            self.encoder.max_length = saved

    def save(self, folder: Path) -> dict:
        self.merge()
        blocks = self.encoder.model.get_submodule(self.blocks_name)
        for i, block in enumerate(self.top.blocks):
            blocks[self.cut + i] = block
        folder = Path(folder)
        if folder.exists():
            shutil.rmtree(folder)
        self.encoder.model.save_pretrained(folder)
        self.encoder.processor.save_pretrained(folder)
        return {"how": self.spec.describe(), "blocks": len(self.top.blocks), "kind": "hf",
                "normalize": bool(self.encoder.normalize), "max_length": self.max_tokens}


class _EfficientNetTop(nn.Module):
    """EfficientNet-Lite0's last MBConv blocks and head: ``[B, C, 7, 7]`` -> ``[B, 1280]``.

    BatchNorm keeps its ImageNet statistics while the top trains (a few hundred images
    would make them noise), so ``train()`` leaves the BatchNorm layers in eval mode.
    """

    def __init__(self, model: nn.Module, first: int):
        super().__init__()
        self.first, self.total = first, len(model._blocks)
        self.blocks = nn.ModuleList(list(model._blocks)[first:])
        self.conv_head, self.bn1, self.act = model._conv_head, model._bn1, model._swish
        self.drop_connect_rate = model._global_params.drop_connect_rate

    def train(self, mode: bool = True) -> _EfficientNetTop:
        super().train(mode)
        for m in self.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.eval()
        return self

    def forward(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        x = inputs["feature_map"]
        for i, block in enumerate(self.blocks):
            rate = self.drop_connect_rate
            if rate:
                rate *= float(self.first + i) / self.total
            x = block(x, drop_connect_rate=rate)
        return self.act(self.bn1(self.conv_head(x))).mean(dim=(2, 3))


class EfficientNetSplit(EncoderSplit):
    """EfficientNet-Lite0 (:class:`crossfuse.encoders.efficientnet.EfficientNetLite0Encoder`) cut
    below its last MBConv blocks; the bottom is the feature map entering them."""

    def __init__(self, encoder, spec: FinetuneSpec):
        self.encoder, self.spec = encoder, spec
        model = encoder.model
        k = spec.top_blocks(len(model._blocks))
        self.cut = len(model._blocks) - k
        self.top = _EfficientNetTop(model, self.cut)
        from PIL import Image

        self.verify([Image.new("RGB", (224, 224), (128, 64, 32)),
                     Image.new("RGB", (100, 160), (9, 99, 199))])

    @torch.no_grad()
    def bottom(self, items: list) -> dict[str, torch.Tensor]:
        """Images -> ``{"feature_map": [B, C, H, W]}``, what enters the top blocks."""
        from crossfuse.encoders.efficientnet import _scale, _stacked

        model = self.encoder.model
        x = _scale(_stacked(items).permute(0, 3, 1, 2).float())
        x = model._swish(model._bn0(model._conv_stem(x)))
        for idx, block in enumerate(list(model._blocks)[:self.cut]):
            rate = model._global_params.drop_connect_rate
            if rate:
                rate *= float(idx) / len(model._blocks)
            x = block(x, drop_connect_rate=rate)
        return {"feature_map": x.contiguous()}

    def save(self, folder: Path) -> dict:
        from safetensors.torch import save_file

        self.merge()
        model = self.encoder.model
        for i, block in enumerate(self.top.blocks):
            model._blocks[self.cut + i] = block
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in model.state_dict().items()},
                  str(folder / EFFICIENTNET_WEIGHTS))
        return {"how": self.spec.describe(), "blocks": len(self.top.blocks), "kind": "efficientnet"}


EFFICIENTNET_WEIGHTS = "efficientnet-lite0.safetensors"


def split_encoder(encoder: Encoder, spec: FinetuneSpec, max_tokens: int = 64) -> EncoderSplit:
    """The split of ``encoder`` for ``spec`` (its own copy of the network: ``encoder`` stays frozen).

    Raises :class:`UserError` for an encoder that cannot be fine-tuned (no blocks, or a
    split that does not reproduce it).
    """
    from crossfuse.encoders.efficientnet import EfficientNetLite0Encoder
    from crossfuse.encoders.hf import HFEncoder

    own = copy.copy(encoder)
    if hasattr(encoder, "model"):
        own.model = copy.deepcopy(encoder.model).cpu().eval()
        own.device, own.backend = torch.device("cpu"), "torch"
        if hasattr(own, "onnx"):
            own.onnx = None
    if isinstance(encoder, HFEncoder):
        return HFSplit(own, spec, max_tokens)
    if isinstance(encoder, EfficientNetLite0Encoder):
        if spec.how == "lora":
            raise UserError(f"fusion.finetune={spec.describe()}: LoRA adapts transformer "
                            f"encoders; fine-tune {encoder.name} with top:<n>")
        return EfficientNetSplit(own, spec)
    raise UserError(f"fusion.finetune={spec.describe()}: encoder {encoder.name} "
                    f"({encoder.modality}) has no blocks to fine-tune; fine-tune a transformers "
                    f"encoder (minilm, hf:<model>) or efficientnet-lite0")


def can_finetune(encoder_name: str, spec: FinetuneSpec) -> bool:
    """Whether the encoder named ``encoder_name`` can be adapted as ``spec`` says (without
    loading it): transformers encoders take ``top`` and ``lora``, EfficientNet-Lite0 ``top``.

    >>> lora = FinetuneSpec.parse("lora:8")
    >>> can_finetune("minilm", lora), can_finetune("efficientnet-lite0", lora), can_finetune("logmel", lora)
    (True, False, False)
    """
    if encoder_name.startswith("hf:") or encoder_name == "minilm":
        return spec.active
    return encoder_name == "efficientnet-lite0" and spec.how == "top"


def load_adapted_encoder(entry: dict, model_dir: Path, modality: str) -> Encoder:
    """The adapted encoder a model folder keeps for ``modality`` (its spec's ``encoders`` entry
    with an ``adapted`` record), built as an ordinary frozen :class:`Encoder`."""
    adapted = entry["adapted"]
    folder = Path(model_dir) / adapted["folder"]
    if adapted["kind"] == "efficientnet":
        from crossfuse.encoders.efficientnet import EfficientNetLite0Encoder

        return EfficientNetLite0Encoder(weights=folder / EFFICIENTNET_WEIGHTS)
    from crossfuse.encoders.hf import HFEncoder

    return HFEncoder(str(folder), modality=modality, offline=True, max_length=adapted["max_length"],
                     normalize=adapted["normalize"], name=entry["name"])


def model_encoder(entry: dict, modality: str, model_dir: Path, offline: bool = True,
                  trust_remote_code: bool = False) -> Encoder:
    """The encoder a saved model reads ``modality`` with: its adapted one when it was
    fine-tuned (``entry["adapted"]``), else the pretrained encoder ``entry["name"]``."""
    if "adapted" in entry:
        return load_adapted_encoder(entry, model_dir, modality)
    from crossfuse.encoders.registry import build_encoder

    return build_encoder(entry["name"], modality, offline=offline,
                         trust_remote_code=trust_remote_code)
