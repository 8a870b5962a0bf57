"""Extract + feature store: shards and index written, cache reused, only new items encoded."""

import shutil

import pytest
import torch

from crossfuse.data.preprocess import preprocess
from crossfuse.features.extract import extract
from crossfuse.features.store import read_feature_set


def test_extract_writes_feature_set_and_reuses_cache(sample_dataset, make_config, tmp_path):
    cfg = make_config(sample_dataset, "extract.shard_size=16")
    preprocess(cfg, sample_dataset, tmp_path / "pre")
    first = extract(cfg, tmp_path / "pre", tmp_path / "f1")
    assert first.cache_hits == {"image": 0, "text": 0}
    assert first.encoded["image"] == 60
    fs = read_feature_set(tmp_path / "f1")
    assert fs.vectors["image"].shape == (60, 32) and fs.vectors["text"].shape == (60, 32)
    assert len(list((tmp_path / "f1" / "image").glob("shard-*.safetensors"))) == 4
    assert fs.index["id"].tolist() == sorted(fs.index["id"].tolist())
    assert set(fs.index["split"]) <= {"train", "val", "test"}

    second = extract(cfg, tmp_path / "pre", tmp_path / "f2")
    assert second.cache_hits == {"image": 60, "text": 60}
    assert second.encoded == {"image": 0, "text": 0}
    again = read_feature_set(tmp_path / "f2")
    for m in ("image", "text"):
        assert (again.vectors[m] == fs.vectors[m]).all()


def test_only_new_rows_are_encoded(sample_dataset, make_config, tmp_path):
    cfg = make_config(sample_dataset)
    preprocess(cfg, sample_dataset, tmp_path / "pre")
    extract(cfg, tmp_path / "pre", tmp_path / "f1")
    bigger = tmp_path / "bigger"
    shutil.copytree(sample_dataset, bigger)
    with open(bigger / "manifest.csv", "a") as f:
        f.write("extra1,images/extra.png,A brand new caption at dusk.,circle-night\n")
    from PIL import Image

    Image.new("RGB", (64, 64), (1, 2, 3)).save(bigger / "images" / "extra.png")
    cfg2 = make_config(bigger)
    preprocess(cfg2, bigger, tmp_path / "pre2")
    result = extract(cfg2, tmp_path / "pre2", tmp_path / "f2")
    assert result.encoded == {"image": 1, "text": 1}
    assert result.cache_hits == {"image": 60, "text": 60}


def test_text_beyond_the_encoder_length_is_truncated_and_counted(sample_dataset, make_config,
                                                                 tmp_path):
    import pandas as pd

    root = tmp_path / "long"
    shutil.copytree(sample_dataset, root)
    frame = pd.read_csv(root / "manifest.csv", dtype=str, keep_default_na=False)
    # The tiny test BERT reads 128 positions: the encoder's 256-token default is cut to that.
    frame.loc[0, "text"] = "word " * 400                 # far beyond
    frame.loc[1, "text"] = "word " * 100                 # fits
    frame.to_csv(root / "manifest.csv", index=False)
    cfg = make_config(root, "validation.max_text_chars=5000")
    preprocess(cfg, root, tmp_path / "pre")
    result = extract(cfg, tmp_path / "pre", tmp_path / "f")
    assert result.truncated == {"text": 1}
    assert read_feature_set(tmp_path / "f").vectors["text"].shape[0] == 60  # kept, not rejected


def test_parts_merged_equal_one_extraction(sample_dataset, make_config, tmp_path):
    from crossfuse.features.extract import merge_features

    cfg = make_config(sample_dataset, "extract.shard_size=16")
    preprocess(cfg, sample_dataset, tmp_path / "pre")
    whole = extract(cfg, tmp_path / "pre", tmp_path / "whole")
    parts = []
    for i in range(3):
        extract(cfg, tmp_path / "pre", tmp_path / f"part-{i}", part=(i, 3))
        parts.append(tmp_path / f"part-{i}")
    assert len(read_feature_set(parts[1]).index) == 20  # rows 1, 4, 7, ...
    merged = merge_features(cfg, list(reversed(parts)), tmp_path / "merged")
    assert merged.n_samples == whole.n_samples == 60
    assert merged.cache_hits == {"image": 60, "text": 60}  # the whole run filled the cache
    a, b = read_feature_set(tmp_path / "whole"), read_feature_set(tmp_path / "merged")
    assert a.index.equals(b.index)
    for m in ("image", "text"):
        assert (a.vectors[m] == b.vectors[m]).all()


@pytest.mark.slow
def test_features_of_different_backends_are_never_mixed(sample_dataset, make_config, tmp_path):
    """ONNX Runtime's vectors are close to PyTorch's, not equal: each backend has its cache."""
    cfg = {backend: make_config(sample_dataset, "extract.encoders={image: efficientnet-lite0}",
                                f"extract.backend={backend}")
           for backend in ("torch", "onnxruntime")}
    preprocess(cfg["torch"], sample_dataset, tmp_path / "pre")
    first = extract(cfg["torch"], tmp_path / "pre", tmp_path / "f-torch")
    other = extract(cfg["onnxruntime"], tmp_path / "pre", tmp_path / "f-onnx")
    assert (first.cache_hits, other.cache_hits) == ({"image": 0}, {"image": 0})
    assert other.encoded == {"image": 60} and other.runtime == {"image": "onnxruntime on cpu"}
    again = extract(cfg["torch"], tmp_path / "pre", tmp_path / "f-torch-again")
    assert again.cache_hits == {"image": 60} and again.runtime == {"image": "torch on cpu"}

    torch_fs, onnx_fs = (read_feature_set(tmp_path / f) for f in ("f-torch", "f-onnx"))
    assert onnx_fs.encoders["image"]["cache_key"] == torch_fs.encoders["image"]["cache_key"] + "@onnxruntime"
    assert onnx_fs.encoders["image"]["backend"] == "onnxruntime"
    assert not torch.equal(torch_fs.vectors["image"], onnx_fs.vectors["image"])
    cosine = torch.nn.functional.cosine_similarity(torch_fs.vectors["image"],
                                                   onnx_fs.vectors["image"])
    assert cosine.min() >= 0.999


@pytest.mark.slow
def test_decode_workers_give_the_same_features_in_the_same_order(sample_dataset, make_config,
                                                                 tmp_path):
    """Worker processes only move the decoding: the feature set is the same, row for row."""
    same = ("extract.encoders={image: efficientnet-lite0}", "extract.backend=torch",
            "extract.batch_size=8", "extract.shard_size=20")
    serial_cfg = make_config(sample_dataset, *same, "extract.decode_workers=0")
    workers_cfg = make_config(sample_dataset, *same, "extract.decode_workers=2",
                              f"extract.cache_dir={tmp_path / 'another-cache'}")
    preprocess(serial_cfg, sample_dataset, tmp_path / "pre")
    serial = extract(serial_cfg, tmp_path / "pre", tmp_path / "serial")
    workers = extract(workers_cfg, tmp_path / "pre", tmp_path / "workers")
    assert serial.encoded == workers.encoded == {"image": 60}
    a, b = read_feature_set(tmp_path / "serial"), read_feature_set(tmp_path / "workers")
    assert a.index["hash_image"].tolist() == b.index["hash_image"].tolist()
    assert torch.equal(a.vectors["image"], b.vectors["image"])


def test_extraction_in_blocks_equals_one_block(sample_dataset, make_config, tmp_path):
    """Rows are encoded and written a block (BLOCK_SHARDS shards) at a time, so memory holds
    one block; 60 rows in blocks of 16 give the feature set that one block gives."""
    from crossfuse.features.extract import BLOCK_SHARDS

    small = make_config(sample_dataset, "extract.shard_size=2", "extract.token_sequences=true",
                        "extract.max_tokens=8")
    assert 2 * BLOCK_SHARDS < 60
    one = make_config(sample_dataset, "extract.shard_size=64", "extract.token_sequences=true",
                      "extract.max_tokens=8")
    preprocess(small, sample_dataset, tmp_path / "pre")
    blocks = extract(small, tmp_path / "pre", tmp_path / "blocks")
    shutil.rmtree(small.extract.cache_dir)                     # both encode everything
    whole = extract(one, tmp_path / "pre", tmp_path / "whole")
    # One caption is in two rows: encoded once either way (in blocks, the later copy is a hit).
    assert blocks.encoded == whole.encoded == {"image": 60, "text": 59}
    assert len(list((tmp_path / "blocks" / "image").glob("shard-*.safetensors"))) == 30
    a, b = read_feature_set(tmp_path / "blocks"), read_feature_set(tmp_path / "whole")
    assert a.index.equals(b.index)
    for m in ("image", "text"):
        torch.testing.assert_close(a.vectors[m], b.vectors[m], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(a.tokens[m][0], b.tokens[m][0], rtol=1e-5, atol=1e-6)
        assert torch.equal(a.tokens[m][1], b.tokens[m][1])


def test_the_extract_summary_adds_up_with_copies_and_missing_items(sample_dataset, make_config,
                                                                   tmp_path):
    import pandas as pd

    from crossfuse.stages import extract_lines

    root = tmp_path / "copies"
    shutil.copytree(sample_dataset, root)
    frame = pd.read_csv(root / "manifest.csv", dtype=str, keep_default_na=False)
    frame.loc[1:3, "text"] = frame.loc[0, "text"]      # three copies of row 0's text
    frame.loc[4:5, "text"] = ""                          # two rows without text
    frame.to_csv(root / "manifest.csv", index=False)
    cfg = make_config(root)
    preprocess(cfg, root, tmp_path / "pre")
    first = extract(cfg, tmp_path / "pre", tmp_path / "f1")
    assert first.present["text"] == 58 and first.encoded["text"] == 55  # 58 rows, 55 texts
    text = next(line for line in extract_lines(first) if line.startswith("text:"))
    assert text.startswith("text: 60 rows = 0 from the feature cache + 58 encoded now "
                           "(55 distinct; ") and text.endswith(" + 2 without text")
    second = extract(cfg, tmp_path / "pre", tmp_path / "f2")
    text = next(line for line in extract_lines(second) if line.startswith("text:"))
    assert text.startswith("text: 60 rows = 58 from the feature cache + 0 encoded now")
    assert text.endswith(" + 2 without text")
