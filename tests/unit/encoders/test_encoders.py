"""Encoders: the registry, any HF model from a local folder, the real bundled models."""

import pytest
import torch
from PIL import Image

from crossfuse.encoders import EncoderUnavailable, build_encoder, resolve_device


def test_hf_text_and_image_encoders_from_local_folders(tiny_text_model, tiny_image_model):
    text = build_encoder(f"hf:{tiny_text_model}", "text")
    vecs = text.encode(["a fox at midnight", "a longer sentence about a cafe at noon"])
    assert vecs.shape == (2, text.dim) == (2, 32) and vecs.dtype == torch.float32
    # Padding must not leak into the pooled vector: a text alone equals itself in a batch.
    alone = text.encode(["a fox at midnight"])
    assert torch.allclose(alone[0], vecs[0], atol=1e-5)
    image = build_encoder(f"hf:{tiny_image_model}", "image")
    assert image.encode([Image.new("RGB", (50, 40), (200, 0, 0))] * 3).shape == (3, 32)


def test_cache_key_follows_weights_content(tiny_text_model, tmp_path):
    import shutil

    copy = tmp_path / "text"
    shutil.copytree(tiny_text_model, copy)
    same = build_encoder(f"hf:{copy}", "text").cache_key
    assert same == build_encoder(f"hf:{tiny_text_model}", "text").cache_key
    (copy / "config.json").write_text((copy / "config.json").read_text().replace("gelu", "relu"))
    assert build_encoder(f"hf:{copy}", "text").cache_key != same


def test_unavailable_model_names_itself_and_the_fix():
    with pytest.raises(EncoderUnavailable, match=r"(?s)hf:nobody/missing-model.*local folder"):
        build_encoder("hf:nobody/missing-model", "text")


def test_unknown_name_and_wrong_modality():
    with pytest.raises(EncoderUnavailable, match="unknown encoder 'clip'"):
        build_encoder("clip", "image")
    with pytest.raises(EncoderUnavailable, match="encodes text, not image"):
        build_encoder("minilm", "image")


@pytest.mark.slow
def test_real_bundled_encoders_on_a_few_samples(sample_dataset):
    """The shipped pretrained weights load offline and give meaningful vectors."""
    text = build_encoder("minilm", "text")
    v = text.encode(["A fox rested at midnight.", "A fox rested late at night.",
                     "Quarterly revenue grew by four percent."])
    assert v.shape == (3, 384)
    assert torch.allclose(v.norm(dim=1), torch.ones(3), atol=1e-4)
    assert float(v[0] @ v[1]) > float(v[0] @ v[2]) + 0.2   # paraphrase closer than unrelated

    image = build_encoder("efficientnet-lite0", "image")
    imgs = [Image.open(sample_dataset / "images" / f"s{i:05d}.png").convert("RGB")
            for i in (0, 1, 2)]
    f = image.encode(imgs)
    assert f.shape == (3, 1280) and torch.isfinite(f).all() and float(f.std()) > 0


def test_features_from_another_device_get_their_own_cache_key(tiny_text_model):
    """A GPU rounds differently: its features must never be served from the CPU's cache."""
    text = build_encoder(f"hf:{tiny_text_model}", "text")
    cpu_key = text.cache_key
    # The key logic without a GPU: "meta" stands in for "cuda" (no model to move).
    keyed = build_encoder(f"hf:{tiny_text_model}", "text")
    del keyed.model
    assert keyed.to("meta").cache_key == f"{cpu_key}@meta"
    assert keyed.to("meta").cache_key == f"{cpu_key}@meta"  # not suffixed twice
    assert keyed.to("cpu").cache_key == cpu_key
    # On the CPU, encode() is unchanged by .to() and returns CPU tensors.
    before = text.encode(["a fox at midnight"])
    assert text.to("cpu") is text and text.encode(["a fox at midnight"]).device.type == "cpu"
    assert torch.equal(before, text.encode(["a fox at midnight"]))


@pytest.mark.skipif(torch.cuda.is_available(), reason="asks for a GPU that is not there")
def test_asking_for_a_gpu_that_is_not_there_names_the_fix():
    assert resolve_device("auto") == torch.device("cpu")
    with pytest.raises(EncoderUnavailable, match=r"sees no GPU here: run in the CUDA image"):
        resolve_device("cuda")


def test_the_device_setting_is_checked_when_the_config_loads():
    from crossfuse.config import load_config

    assert load_config(None, ["extract.device=cuda:1"], env={}).extract.device == "cuda:1"
    with pytest.raises(ValueError, match="extract.device"):
        load_config(None, ["extract.device=gpu"], env={})
