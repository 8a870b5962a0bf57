"""Any Hugging Face ``transformers`` model as a frozen encoder (``hf:<model id or local path>``).

Text models: ``AutoTokenizer`` + ``AutoModel``, mean of the last hidden state over
non-padding tokens. Image models: ``AutoImageProcessor`` + ``AutoModel``, the
model's ``pooler_output`` when it has one, else the mean over tokens/positions.
Audio models (wav2vec2, HuBERT, AST, Whisper's encoder, CLAP's audio tower, ...):
``AutoFeatureExtractor`` + ``AutoModel`` (the encoder of an encoder-decoder; CLAP's audio
tower), fed waveforms at the extractor's ``sampling_rate``;
``pooler_output`` when there is one, else the mean over time.
Offline by default (``local_files_only``); remote code is never trusted.

Example
-------
>>> enc = HFEncoder("/path/to/bert", modality="text")        # doctest: +SKIP
>>> enc.encode(["a cat", "a dog"]).shape                     # doctest: +SKIP
torch.Size([2, 384])
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from crossfuse.encoders.base import Encoder, EncoderUnavailable
from crossfuse.errors import UserError


def _fingerprint(ref: str) -> str:
    """Identify a local model folder by the content of its files; a hub id by itself.

    Content, not names or sizes: a retrained model with the same shapes must not
    reuse the old model's cached features.
    """
    path = Path(ref)
    if not path.is_dir():
        return ref
    h = hashlib.sha256()
    for f in sorted(path.rglob("*")):
        if f.is_file() and f.suffix in {".json", ".safetensors", ".bin", ".txt", ".model"}:
            h.update(str(f.relative_to(path)).encode())
            with open(f, "rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    h.update(block)
    return f"sha256-{h.hexdigest()[:24]}"


def _unavailable(ref: str, exc: Exception) -> EncoderUnavailable:
    return EncoderUnavailable(
        f"encoder hf:{ref} could not be loaded offline ({type(exc).__name__}: {exc}). Provide it "
        f"as a local folder (hf:/path/to/model, e.g. after `huggingface-cli download {ref} "
        f"--local-dir ...` on a machine with internet), or allow downloads with "
        f"--set extract.hf_offline=false")


class HFEncoder(Encoder):
    """Frozen ``transformers`` model for ``modality`` ("text", "image" or "audio").

    Parameters
    ----------
    ref: hub id or local folder.
    modality: "text", "image" or "audio".
    offline: only use files already on disk (``HF_HUB_OFFLINE`` behaviour).
    max_length: token limit for text; longer texts are truncated.
    normalize: L2-normalise the pooled vectors.
    name: registry name (defaults to ``hf:<ref>``).
    trust_remote_code: allow the model folder's own Python code (off unless asked for).
    """

    def __init__(self, ref: str, modality: str, offline: bool = True, max_length: int = 256,
                 normalize: bool = False, name: str | None = None, trust_remote_code: bool = False):
        from transformers import AutoFeatureExtractor, AutoImageProcessor, AutoModel, AutoTokenizer

        if modality not in ("text", "image", "audio"):
            raise UserError(f"hf encoders support text, image and audio, not {modality!r}")
        self.name = name or f"hf:{ref}"
        self.modality = modality
        self.max_length = max_length
        self.normalize = normalize
        kwargs: dict[str, Any] = {"local_files_only": offline,
                                  "trust_remote_code": trust_remote_code}
        try:
            self.model = AutoModel.from_pretrained(ref, **kwargs).eval()
            if modality == "text":
                self.processor = AutoTokenizer.from_pretrained(ref, **kwargs)
            elif modality == "image":
                self.processor = AutoImageProcessor.from_pretrained(ref, **kwargs)
            else:
                self.processor = AutoFeatureExtractor.from_pretrained(ref, **kwargs)
                self.sample_rate = int(self.processor.sampling_rate)
                if self.model.config.is_encoder_decoder:  # Whisper & co: the audio encoder
                    self.model = self.model.get_encoder()
        except (OSError, ValueError) as exc:
            raise _unavailable(ref, exc) from exc
        for p in self.model.parameters():
            p.requires_grad_(False)
        positions = getattr(self.model.config, "max_position_embeddings", None)
        if modality == "text" and isinstance(positions, int):
            # Longer inputs would overflow the position table: cut at what the model can read.
            self.max_length = min(max_length, positions)
        self.dim = self._infer_dim()
        self.cache_key = (f"hf:{_fingerprint(ref)}:{modality}:len{self.max_length}:"
                          f"norm{int(normalize)}")

    def _infer_dim(self) -> int:
        cfg = self.model.config
        if self.modality == "audio":  # CLAP projects, Whisper's encoder has d_model: ask it
            return int(self.encode([np.zeros(self.sample_rate, dtype=np.float32)]).shape[1])
        for attr in ("hidden_size", "projection_dim", "d_model"):
            if isinstance(getattr(cfg, attr, None), int):
                if self.modality == "image" and hasattr(cfg, "hidden_sizes"):
                    break
                return getattr(cfg, attr)
        if hasattr(cfg, "hidden_sizes"):
            return cfg.hidden_sizes[-1]
        probe = ["probe"] if self.modality == "text" else [_blank_image()]
        return int(self.encode(probe).shape[1])

    def _forward(self, items: list[Any], max_length: int):
        if self.modality == "text":
            batch = self.processor(list(items), padding=True, truncation=True,
                                   max_length=max_length, return_tensors="pt").to(self.device)
            return self.model(**batch), batch["attention_mask"].to(torch.bool)
        if self.modality == "audio":
            batch = self.processor([np.asarray(w, dtype=np.float32) for w in items],
                                   sampling_rate=self.sample_rate, return_tensors="pt")
            inputs = {k: v.to(self.device) for k, v in batch.items()
                      if k in ("input_values", "input_features", "is_longer")}
            if hasattr(self.model, "get_audio_features"):  # CLAP: its audio tower (the pooled
                # vector before the joint projection, so tokens and vectors share one width)
                return self.model.audio_model(**inputs), None
            return self.model(**inputs), None
        batch = self.processor(images=list(items), return_tensors="pt")
        return self.model(pixel_values=batch["pixel_values"].to(self.device)), None

    def count_truncated(self, items: list[Any]) -> int:
        """How many texts are longer than ``max_length`` tokens (the encoder cuts them)."""
        if self.modality != "text" or not items:
            return 0
        ids = self.processor(list(items), truncation=False, verbose=False)["input_ids"]
        return sum(len(i) > self.max_length for i in ids)

    @torch.inference_mode()
    def encode_tokens(self, items: list[Any], max_tokens: int) -> tuple[torch.Tensor, torch.Tensor]:
        out, mask = self._forward(items, max_tokens)
        hidden = out.last_hidden_state
        if hidden.dim() == 4:  # convolutional models: [B, C, H, W] -> cells as tokens
            hidden = hidden.flatten(2).transpose(1, 2)
        hidden = hidden[:, :max_tokens].float().cpu()
        if mask is None:
            mask = torch.ones(hidden.shape[:2], dtype=torch.bool)
        return hidden, mask[:, :max_tokens].cpu()

    @torch.inference_mode()
    def encode(self, items: list[Any]) -> torch.Tensor:
        out, mask = self._forward(items, self.max_length)
        if self.modality == "text":
            weights = mask.unsqueeze(-1).to(out.last_hidden_state.dtype)
            pooled = (out.last_hidden_state * weights).sum(1) / weights.sum(1).clamp(min=1.0)
        else:
            pooled = getattr(out, "pooler_output", None)
            if pooled is None:
                hidden = out.last_hidden_state
                pooled = hidden.mean(dim=1) if hidden.dim() == 3 else hidden.mean(dim=(2, 3))
            pooled = pooled.flatten(1)
        pooled = pooled.float()
        return (F.normalize(pooled, dim=-1) if self.normalize else pooled).cpu()


def _blank_image():
    from PIL import Image

    return Image.new("RGB", (224, 224), (128, 128, 128))
