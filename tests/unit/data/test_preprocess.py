"""Preprocess: text normalisation, image decoding, a split stable under added rows."""

import shutil

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from crossfuse.config import SplitConfig
from crossfuse.data.images import load_rgb
from crossfuse.data.manifest import ManifestError
from crossfuse.data.modalities import get_modality
from crossfuse.data.preprocess import preprocess, read_samples
from crossfuse.data.splits import assign_split
from crossfuse.data.text import normalise_text


def test_normalise_text():
    assert normalise_text("  ﬁne\u00a0day\t\n ok ") == "fine day ok"
    assert normalise_text("Hello", lowercase=True) == "hello"


def test_split_is_a_function_of_id_only():
    cfg = SplitConfig()
    ids = [f"id{i}" for i in range(3000)]
    first = {i: assign_split(i, cfg) for i in ids}
    # Recomputing (e.g. after more rows were added) gives the same answer per id.
    assert all(assign_split(i, cfg) == s for i, s in first.items())
    counts = {s: list(first.values()).count(s) / len(ids) for s in ("train", "val", "test")}
    assert counts["train"] == pytest.approx(0.70, abs=0.03)
    assert counts["val"] == pytest.approx(0.15, abs=0.03)
    assert assign_split("id1", SplitConfig(salt="other")) in ("train", "val", "test")


def test_alpha_is_composited_on_white(tmp_path):
    Image.new("RGBA", (4, 4), (255, 0, 0, 0)).save(tmp_path / "a.png")
    assert load_rgb(tmp_path / "a.png").getpixel((0, 0)) == (255, 255, 255)


def test_preprocess_writes_samples_and_resized_images(sample_dataset, make_config, tmp_path):
    cfg = make_config(sample_dataset)
    result = preprocess(cfg, sample_dataset, tmp_path / "pre", rejected_lines={2})
    samples, labels, targets = read_samples(tmp_path / "pre")
    assert targets == {}
    assert result.n_samples == len(samples) == 59 and "s00000" not in set(samples["id"])
    assert sum(result.split_counts.values()) == 59
    assert labels == sorted(labels) and len(labels) == 6
    # Decoded once, stored model-ready: 32 px RGB pixels in a shard, each row's own.
    pixels = get_modality("image").reader(tmp_path / "pre").load(samples["image"].tolist())
    assert pixels.shape == (59, 32, 32, 3) and pixels.dtype == np.uint8
    with Image.open(sample_dataset / "images" / "s00001.png") as source:
        first = samples.index[samples["id"] == "s00001"][0]
        expected = np.asarray(source.convert("RGB").resize((32, 32), Image.Resampling.BICUBIC))
    assert (pixels[first] == expected).all()


def _splits_after_adding_a_row(sample_dataset, make_config, tmp_path, *overrides):
    cfg = make_config(sample_dataset, *overrides)
    preprocess(cfg, sample_dataset, tmp_path / "a")
    before = read_samples(tmp_path / "a")[0].set_index("id")
    bigger = tmp_path / "bigger"
    shutil.copytree(sample_dataset, bigger)
    # A new picture: a row that shared one with an existing row would join its group.
    Image.new("RGB", (64, 64), (9, 200, 40)).save(bigger / "images" / "new1.png")
    with open(bigger / "manifest.csv", "a") as f:
        f.write("new1,images/new1.png,A fox waited at noon.,circle-day\n")
    preprocess(make_config(bigger, *overrides), bigger, tmp_path / "b")
    after = read_samples(tmp_path / "b")[0].set_index("id")
    return before, after


def test_hash_split_never_moves_existing_rows(sample_dataset, make_config, tmp_path):
    before, after = _splits_after_adding_a_row(sample_dataset, make_config, tmp_path,
                                               "preprocess.split.strategy=hash")
    assert after.loc[before.index, "split"].equals(before["split"])


def test_stratified_split_covers_every_class_and_moves_only_the_grown_class(
        sample_dataset, make_config, tmp_path):
    before, after = _splits_after_adding_a_row(sample_dataset, make_config, tmp_path)
    per_class = before.groupby(["label", "split"]).size().unstack(fill_value=0)
    assert (per_class[["train", "val", "test"]] > 0).all().all()  # 10 rows a class: all splits
    assert (per_class["train"] >= 6).all()
    moved = before.index[after.loc[before.index, "split"] != before["split"]]
    assert set(before.loc[moved, "label"]) <= {"circle-day"}  # only the class that grew


def test_a_duplicated_sample_lands_in_one_split(sample_dataset, make_config, tmp_path):
    """The same image+text under 12 new ids: every copy shares the original's split."""
    root = tmp_path / "ds"
    shutil.copytree(sample_dataset, root)
    original = pd.read_csv(root / "manifest.csv", dtype=str).iloc[0]
    with open(root / "manifest.csv", "a") as f:
        for i in range(12):
            f.write(f"copy{i},{original['image']},{original['text']},{original['label']}\n")
    for strategy in ("stratified", "hash"):
        cfg = make_config(root, f"preprocess.split.strategy={strategy}")
        preprocess(cfg, root, tmp_path / strategy)
        samples = read_samples(tmp_path / strategy)[0].set_index("id")
        copies = samples.loc[[original["id"], *(f"copy{i}" for i in range(12))], "split"]
        assert copies.nunique() == 1, copies.value_counts()


def test_manifest_split_column_is_used_and_checked(sample_dataset, make_config, tmp_path):
    root = tmp_path / "ds"
    shutil.copytree(sample_dataset, root)
    lines = (root / "manifest.csv").read_text().splitlines()
    out = [lines[0] + ",split"] + [f"{line},{'test' if i % 2 else 'train'}"
                                   for i, line in enumerate(lines[1:])]
    (root / "manifest.csv").write_text("\n".join(out) + "\n")
    result = preprocess(make_config(root), root, tmp_path / "pre")
    # An official train/test split: test stays as given; each class lends 15 / (70 + 15) of
    # its train rows (here the three -day classes, 10 rows each: 2) to validation.
    assert result.split_counts == {"train": 24, "val": 6, "test": 30}
    samples = read_samples(tmp_path / "pre")[0].set_index("id")
    given = dict(zip([line.split(",")[0] for line in out[1:]],
                     [line.rsplit(",", 1)[1] for line in out[1:]], strict=True))
    assert all(samples.at[i, "split"] == "test" for i, s in given.items() if s == "test")
    assert samples[samples["split"] == "val"].groupby("label").size().tolist() == [2] * 3
    out[3] = out[3].rsplit(",", 1)[0] + ",holdout"
    (root / "manifest.csv").write_text("\n".join(out) + "\n")
    with pytest.raises(ManifestError, match="line 4: split 'holdout'"):
        preprocess(make_config(root), root, tmp_path / "pre2")
