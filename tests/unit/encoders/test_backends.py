"""Encoder backends: ONNX Runtime agrees with PyTorch, exports are cached, caches never mix.

The bundled image encoder on real images (OpenMoji, MNIST from ../shared/datasets), with
the real exporter and ONNX Runtime.
"""

from __future__ import annotations

import pytest
import torch
from conftest import SHARED_DATASETS
from PIL import Image

from crossfuse.encoders import EncoderUnavailable, build_encoder, choose_backend, onnx_backend, place_encoder
from crossfuse.encoders.onnx_backend import min_cosine

pytestmark = pytest.mark.slow


def real_images(n_each: int = 8) -> list[Image.Image]:
    """Colour emoji (128 px) and grey digits (28 px): two sizes, two kinds of picture."""
    files = (sorted((SHARED_DATASETS / "openmoji_unicode14").rglob("*.png"))[:n_each]
             + sorted((SHARED_DATASETS / "fsdd_mnist_av").rglob("*.png"))[:n_each])
    if len(files) < 2 * n_each:
        pytest.skip(f"the real datasets are not at {SHARED_DATASETS}")
    return [Image.open(f).convert("RGB") for f in files]


@pytest.fixture(scope="module")
def images():
    return real_images()


@pytest.fixture(scope="module")
def reference(images):
    encoder = build_encoder("efficientnet-lite0", "image")
    return encoder.encode(images), encoder.encode_tokens(images, 16)[0]


def test_onnxruntime_vectors_and_tokens_match_pytorch_per_image(images, reference, tmp_path):
    encoder = place_encoder(build_encoder("efficientnet-lite0", "image"), "cpu", "onnxruntime",
                            tmp_path)
    assert encoder.backend == "onnxruntime"
    vectors, tokens = encoder.encode(images), encoder.encode_tokens(images, 16)[0]
    assert vectors.dtype == torch.float32 and vectors.shape == reference[0].shape
    per_image = torch.nn.functional.cosine_similarity(vectors, reference[0])
    assert per_image.min() >= 0.999, per_image
    assert min_cosine(tokens.numpy(), reference[1].numpy()) >= 0.999


def test_auto_picks_onnxruntime_on_the_cpu_and_keys_its_features_apart(tmp_path):
    torch_encoder = build_encoder("efficientnet-lite0", "image")
    onnx_encoder = place_encoder(build_encoder("efficientnet-lite0", "image"), "cpu", "auto",
                                 tmp_path)
    assert onnx_encoder.backend == "onnxruntime"
    assert onnx_encoder.cache_key == f"{torch_encoder.cache_key}@onnxruntime"
    back = place_encoder(onnx_encoder, "cpu", "torch")
    assert back.backend == "torch" and back.cache_key == torch_encoder.cache_key
    assert back.onnx is None


def test_the_export_is_made_once_per_weights_and_reused(tmp_path):
    place_encoder(build_encoder("efficientnet-lite0", "image"), "cpu", "onnxruntime", tmp_path)
    exports = list(tmp_path.glob("*.onnx"))
    assert len(exports) == 1 and exports[0].name.startswith("efficientnet-lite0-")
    made = exports[0].stat().st_mtime_ns
    place_encoder(build_encoder("efficientnet-lite0", "image"), "cpu", "onnxruntime", tmp_path)
    assert [p.stat().st_mtime_ns for p in tmp_path.glob("*.onnx")] == [made]

    changed = build_encoder("efficientnet-lite0", "image")
    with torch.no_grad():
        next(changed.model.parameters()).add_(0.01)        # other weights: another export
    place_encoder(changed, "cpu", "onnxruntime", tmp_path)
    assert len(list(tmp_path.glob("*.onnx"))) == 2


def test_an_export_that_disagrees_is_deleted_and_auto_stays_on_pytorch(tmp_path, monkeypatch,
                                                                         caplog):
    monkeypatch.setattr(onnx_backend, "MIN_COSINE", 1.5)   # no export can agree this well
    with pytest.raises(onnx_backend.ExportMismatch, match="extract.backend=torch"):
        place_encoder(build_encoder("efficientnet-lite0", "image"), "cpu", "onnxruntime",
                      tmp_path)
    assert not list(tmp_path.iterdir())                    # nothing half-trusted is kept
    encoder = place_encoder(build_encoder("efficientnet-lite0", "image"), "cpu", "auto", tmp_path)
    assert encoder.backend == "torch" and "@" not in encoder.cache_key
    assert "stays on PyTorch" in caplog.text


def test_encoders_without_an_export_stay_on_pytorch(tiny_text_model):
    encoder = build_encoder(f"hf:{tiny_text_model}", "text")
    assert choose_backend("auto", encoder) == "torch"
    with pytest.raises(EncoderUnavailable, match="runs on \\['torch'\\], not 'onnxruntime'"):
        place_encoder(encoder, "cpu", "onnxruntime")


def test_a_prepared_batch_gives_the_same_vectors_as_the_images(images):
    encoder = build_encoder("efficientnet-lite0", "image")
    prepared = encoder.prepare_batch(images[:4])      # what a decode worker hands over
    assert prepared.dtype == torch.uint8 and prepared.shape == (4, 224, 224, 3)
    assert torch.equal(encoder.encode(prepared), encoder.encode(images[:4]))
