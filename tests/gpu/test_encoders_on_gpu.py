"""Encoders on a GPU — what the CUDA image (infra/docker/Dockerfile.gpu) is for.

Skipped where torch sees no GPU (CI, the development machines); on a GPU machine run
``pytest tests/gpu``. The encoders must run on the device, give the CPU's vectors to
float tolerance (cuDNN convolutions use TF32 by default), give the same vectors twice,
and the feature cache must keep GPU and CPU features apart. EfficientNet runs there in
fp16 with channels_last, fed by decode threads: its vectors must still agree with the
CPU's (cosine > 0.999 per image).
"""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from crossfuse.data.preprocess import preprocess
from crossfuse.encoders import build_encoder
from crossfuse.features.extract import extract
from crossfuse.features.store import read_feature_set

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def noise_images(n: int, size: int = 224) -> list[Image.Image]:
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)) for _ in range(n)]


def assert_close(cpu: torch.Tensor, gpu: torch.Tensor) -> None:
    assert gpu.device.type == "cpu" and gpu.shape == cpu.shape  # vectors come back to the CPU
    cosine = F.cosine_similarity(cpu, gpu, dim=1)
    scale = cpu.abs().max()
    print(f"min cosine {cosine.min():.7f}, max |diff| {(cpu - gpu).abs().max():.2e} "
          f"(|cpu| max {scale:.2e})")
    assert cosine.min() > 0.999
    assert (cpu - gpu).abs().max() <= 1e-2 * scale


def test_bundled_image_encoder_in_fp16_matches_the_cpu():
    """EfficientNet-Lite0 on the GPU: fp16, channels_last, fed a pinned uint8 batch."""
    batch = noise_images(16)
    on_cpu = build_encoder("efficientnet-lite0", "image")
    on_gpu = build_encoder("efficientnet-lite0", "image").to("cuda")
    assert on_gpu.cache_key == f"{on_cpu.cache_key}@cuda-fp16"
    prepared = on_gpu.prepare_batch(batch).pin_memory()   # what a decode worker hands over
    first = on_gpu.encode(prepared)
    assert_close(on_cpu.encode(batch), first)
    assert torch.equal(first, on_gpu.encode(batch))


@pytest.mark.parametrize("name, modality, items", [
    ("hf:{text}", "text", lambda: ["a red circle at night", "a blue square by day"] * 8),
    ("hf:{image}", "image", lambda: noise_images(16, 48)),
])
def test_encoder_on_the_gpu_matches_the_cpu(name, modality, items, tiny_text_model,
                                            tiny_image_model):
    name = name.format(text=tiny_text_model, image=tiny_image_model)
    batch = items()
    on_cpu = build_encoder(name, modality)
    on_gpu = build_encoder(name, modality).to("cuda")
    assert next(on_gpu.model.parameters()).device.type == "cuda"
    assert on_gpu.cache_key.startswith(f"{on_cpu.cache_key}@cuda")  # fp16 ones say -fp16
    first = on_gpu.encode(batch)
    assert_close(on_cpu.encode(batch), first)
    assert torch.equal(first, on_gpu.encode(batch))  # same GPU, same input: same vectors


def test_extract_runs_on_the_gpu_and_caches_apart_from_the_cpu(sample_dataset, make_config,
                                                               tmp_path):
    cfg = make_config(sample_dataset)  # extract.device: auto
    preprocess(cfg, sample_dataset, tmp_path / "pre")
    gpu = extract(cfg, tmp_path / "pre", tmp_path / "gpu")
    cpu = extract(make_config(sample_dataset, "extract.device=cpu"), tmp_path / "pre",
                  tmp_path / "cpu")
    assert cpu.cache_hits == {"image": 0, "text": 0}  # none of the GPU's features reused
    assert cpu.encoded == gpu.encoded
    on_gpu, on_cpu = read_feature_set(tmp_path / "gpu"), read_feature_set(tmp_path / "cpu")
    for modality in ("image", "text"):
        assert "@cuda" in on_gpu.encoders[modality]["cache_key"]
        assert_close(on_cpu.vectors[modality], on_gpu.vectors[modality])
    again = extract(cfg, tmp_path / "pre", tmp_path / "gpu-again")
    assert again.encoded == {"image": 0, "text": 0}  # the GPU's own cache
