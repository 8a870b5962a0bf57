"""Drift tests on real embeddings: noise on the images is found, a fair split of one set is not."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from conftest import SHARED_DATASETS
from PIL import Image

from crossfuse.data.images import pixel_noise
from crossfuse.encoders import build_encoder, place_encoder
from crossfuse.monitoring.drift import label_shift, mmd_test

pytestmark = pytest.mark.slow
OPENMOJI = SHARED_DATASETS / "openmoji_unicode14"


@pytest.fixture(scope="module")
def emoji_images() -> list[Image.Image]:
    files = sorted((OPENMOJI / "images").rglob("*.png"))[:160]
    if len(files) < 160:
        pytest.skip(f"the OpenMoji dataset is not at {OPENMOJI}")
    return [Image.open(f).convert("RGB") for f in files]


@pytest.fixture(scope="module")
def image_encoder():
    return place_encoder(build_encoder("efficientnet-lite0", "image"), "cpu", "auto")


def test_noised_images_drift_and_a_fair_split_does_not(emoji_images, image_encoder):
    clean = image_encoder.encode(emoji_images).numpy()
    rng = np.random.default_rng(0)
    noised = image_encoder.encode([pixel_noise(img, 0.3, rng) for img in emoji_images[80:]]).numpy()
    order = np.random.default_rng(1).permutation(len(clean))
    fair = mmd_test(clean[order[:80]], clean[order[80:]], seed=0)
    moved = mmd_test(clean[:80], noised, seed=0)
    assert fair.p_value > 0.05, fair
    assert moved.p_value < 0.01 and moved.mmd2 > 5 * max(fair.mmd2, 1e-6), moved
    assert (fair.n_reference, fair.n_current) == (80, 80)


def test_the_same_call_gives_the_same_answer_and_large_sets_are_capped():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(3000, 16)), rng.normal(size=(2500, 16))
    first, again = mmd_test(a, b, max_samples=300, seed=4), mmd_test(a, b, max_samples=300, seed=4)
    assert first == again and (first.n_reference, first.n_current) == (300, 300)
    with pytest.raises(ValueError, match="2\\+ rows on each side"):
        mmd_test(a[:1], b)


def test_label_shift_reports_both_distributions():
    shift = label_shift(["a"] * 6 + ["b"] * 4, ["a"] * 2 + ["b"] * 8, ["a", "b", "c"])
    assert shift["total_variation"] == pytest.approx(0.4)
    assert shift["reference"] == {"a": 0.6, "b": 0.4, "c": 0.0}
    assert shift["current"] == {"a": 0.2, "b": 0.8, "c": 0.0}


def test_a_noised_copy_drifts_on_images_only_and_the_same_data_not_at_all(
        sample_dataset, make_config, tmp_path):
    """The model's own reference against new data, prepared and encoded as the model was."""
    import torch
    from conftest import trained_model

    from crossfuse.config import RunConfig
    from crossfuse.data.preprocess import preprocess
    from crossfuse.features.extract import extract
    from crossfuse.features.reference import load_reference
    from crossfuse.features.store import read_feature_set
    from crossfuse.fusion import load_fusion_head
    from crossfuse.fusion.model import predict_proba
    from crossfuse.monitoring.drift import assess_drift

    cfg = trained_model(make_config, sample_dataset, tmp_path / "train",
                        "extract.encoders={image: efficientnet-lite0, text: minilm}")
    model = tmp_path / "train" / "model"
    model_cfg = RunConfig.from_json((model / "run_config.json").read_text())
    head, meta = load_fusion_head(model)
    ref = load_reference(model, cfg.extract.cache_dir)

    noised = tmp_path / "noised"
    shutil.copytree(sample_dataset, noised)
    rng = np.random.default_rng(0)
    for path in sorted((noised / "images").iterdir()):
        pixel_noise(Image.open(path).convert("RGB"), 0.5, rng).save(path)

    def drift_of(data):
        out = tmp_path / data.name
        preprocess(model_cfg, data, out / "pre")
        extract(model_cfg, out / "pre", out / "features")
        fs = read_feature_set(out / "features")
        present = {m: fs.present(m) for m in meta["dims"]}
        probs = predict_proba(head, {m: fs.vectors[m] for m in meta["dims"]}, present, None)
        predicted = [meta["labels"][i] for i in torch.as_tensor(probs).argmax(-1).tolist()]
        return assess_drift(ref.vectors, {m: fs.vectors[m][present[m]].numpy() for m in present},
                            ref.present, {m: p.numpy() for m, p in present.items()},
                            ref.labels, predicted, meta["labels"], model_cfg.drift)

    same, moved = drift_of(sample_dataset), drift_of(noised)
    assert same.flagged == [], same.flagged
    assert any(reason.startswith("image embeddings") for reason in moved.flagged), moved.flagged
    assert not any(reason.startswith("text") for reason in moved.flagged), moved.flagged
