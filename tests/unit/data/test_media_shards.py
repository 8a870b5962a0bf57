"""Media decoded once into shard files: read back exactly, hashed without reading pixels,
and a folder in the older one-file-per-item layout still read, never misread."""

import numpy as np
import pytest
import torch

from crossfuse.bench.perf import file_layout_copy
from crossfuse.data.media_shards import MediaReader, ShardWriter, item_hash
from crossfuse.data.modalities import get_modality
from crossfuse.data.preprocess import preprocess, read_samples
from crossfuse.features.extract import extract
from crossfuse.features.store import read_feature_set


def test_items_come_back_in_the_cells_order_across_shards(tmp_path):
    rng = np.random.default_rng(0)
    items = [rng.integers(0, 256, (5, 5, 3), dtype=np.uint8) for _ in range(7)]
    writer = ShardWriter(tmp_path, "images", shard_items=3)
    cells = [writer.add(item) for item in items]
    writer.close()
    assert len(list((tmp_path / "images").glob("shard-*.npy"))) == 3
    reader = MediaReader(tmp_path, load_file=None)
    order = [6, 0, 4, 3, 1]  # rows of three shards, out of order, in one read
    read = reader.read([cells[i] for i in order])
    assert read.shape == (5, 5, 5, 3) and read.dtype == np.uint8
    for got, i in zip(read, order, strict=True):
        assert (got == items[i]).all()
    assert reader.hashes(cells) == [item_hash(item) for item in items]


def test_a_different_shape_is_refused_not_padded(tmp_path):
    writer = ShardWriter(tmp_path, "audio")
    writer.add(np.zeros(16, np.float32))
    with pytest.raises(ValueError, match="one shape per modality"):
        writer.add(np.zeros(17, np.float32))


def test_an_old_layout_folder_gives_the_features_of_the_shards(sample_dataset, make_config,
                                                                tmp_path):
    """A folder preprocessed before shards (one PNG per image, cells naming the files) is
    read through the PNGs, item for item the same pixels, so the same features."""
    cfg = make_config(sample_dataset)
    preprocess(cfg, sample_dataset, tmp_path / "pre")
    old = file_layout_copy(tmp_path / "pre", tmp_path / "old")
    samples = read_samples(old)[0]
    assert samples["image"].str.endswith(".png").all()
    assert not list((old / "images").glob("shard-*"))
    image = get_modality("image")
    new_pixels = image.reader(tmp_path / "pre").load(read_samples(tmp_path / "pre")[0]["image"].tolist())
    old_pixels = image.reader(old).load(samples["image"].tolist())
    assert isinstance(old_pixels, list) and (np.stack(old_pixels) == new_pixels).all()

    extract(cfg, tmp_path / "pre", tmp_path / "f-new")
    old_run = extract(cfg, old, tmp_path / "f-old")  # the same feature cache
    assert old_run.encoded["image"] == 60  # decoded from the PNGs and encoded, not looked up
    new_fs, old_fs = read_feature_set(tmp_path / "f-new"), read_feature_set(tmp_path / "f-old")
    assert torch.equal(new_fs.vectors["image"], old_fs.vectors["image"])
    # Old cells are hashed by their file bytes, new by their pixels: never the same key.
    assert not set(new_fs.index["hash_image"]) & set(old_fs.index["hash_image"])
