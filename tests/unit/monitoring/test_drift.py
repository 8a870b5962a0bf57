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
    """A batch scored with the registered model, against the model's own training rows."""
    from conftest import batch_config, trained_model

    from crossfuse.batch.stages import run_batch_in_process

    cfg = trained_model(make_config, sample_dataset, tmp_path / "train",
                        "extract.encoders={image: efficientnet-lite0, text: minilm}")
    noised = tmp_path / "noised"
    shutil.copytree(sample_dataset, noised)
    rng = np.random.default_rng(0)
    for path in sorted((noised / "images").iterdir()):
        pixel_noise(Image.open(path).convert("RGB"), 0.5, rng).save(path)

    def drift_of(data):
        result = run_batch_in_process(batch_config(cfg, data), tmp_path / f"{data.name}-scored")
        assert result.drift_checked and result.rows_scored == 60
        return result.flagged

    same, moved = drift_of(sample_dataset), drift_of(noised)
    assert same == [], same
    assert any(reason.startswith("image embeddings") for reason in moved), moved
    assert not any(reason.startswith("text") for reason in moved), moved

    # Without the training vectors (another machine's empty feature cache) the embeddings
    # cannot be compared: the verdict says so, never "none". (The noised copy: scoring the
    # training data itself would put its vectors back into the empty cache.)
    elsewhere = batch_config(cfg, noised).model_copy(deep=True)
    elsewhere.extract.cache_dir = str(tmp_path / "empty-cache")
    result = run_batch_in_process(elsewhere, tmp_path / "elsewhere-scored")
    assert result.flagged == [] and not result.drift_checked
    assert result.drift_verdict == "not checked"
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    run = client.get_run(result.run_id)
    assert run.data.tags["crossfuse.drift"] == "not checked"
    assert "embedding drift not checked" in run.data.tags["crossfuse.drift.reasons"]
    version = client.get_model_version(result.model, result.version)
    assert version.tags["crossfuse.batch.last_drift"] == "not checked"
