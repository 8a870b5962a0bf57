"""Scoring reads a sharded extraction's parts a shard at a time, in manifest order, and keeps a
bounded, seeded sample of vectors for the drift test."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from crossfuse.batch.score import Chunk, DriftSample, feature_chunks
from crossfuse.features.store import write_feature_set


def write_parts(root, n_rows: int, parts: int, shard_size: int):
    """``parts`` partial feature sets of rows ``i::parts``, as the extract step writes them."""
    vectors = torch.arange(n_rows, dtype=torch.float32)[:, None].repeat(1, 3)
    index = pd.DataFrame({"id": [f"r{i}" for i in range(n_rows)], "line": np.arange(2, n_rows + 2),
                          "label": "", "split": "score", "present_text": True})
    folders = []
    for i in range(parts):
        folder = root / f"part-{i}"
        write_feature_set(folder, index.iloc[i::parts].reset_index(drop=True), ["a", "b"],
                          {"text": {"name": "t", "cache_key": "t", "dim": 3}},
                          {"text": vectors[i::parts]}, shard_size)
        folders.append(folder)
    return folders


def test_chunks_come_back_in_manifest_order_with_their_vectors(tmp_path):
    parts = write_parts(tmp_path, n_rows=23, parts=3, shard_size=4)
    chunks = list(feature_chunks(parts, ["text"], shard_size=4))
    assert [len(c.index) for c in chunks] == [12, 11]            # 4 rows from each of 3 parts
    ids = [i for c in chunks for i in c.index["id"]]
    assert ids == [f"r{i}" for i in range(23)]
    vectors = torch.cat([c.vectors["text"] for c in chunks])
    assert torch.equal(vectors[:, 0], torch.arange(23, dtype=torch.float32))


def test_more_parts_than_rows_and_a_wrong_shard_size_are_handled(tmp_path):
    parts = write_parts(tmp_path, n_rows=2, parts=3, shard_size=4)  # part 2 is empty
    (chunk,) = feature_chunks(parts, ["text"], shard_size=4)
    assert chunk.index["id"].tolist() == ["r0", "r1"]
    many = write_parts(tmp_path / "many", n_rows=20, parts=1, shard_size=8)
    try:
        list(feature_chunks(many, ["text"], shard_size=4))
    except ValueError as exc:
        assert "extract.shard_size" in str(exc)
    else:
        raise AssertionError("a shard size other than the features' must be refused")


def chunk_of(start: int, n: int) -> Chunk:
    index = pd.DataFrame({"id": [f"r{i}" for i in range(start, start + n)]})
    return Chunk(index, {"text": torch.arange(start, start + n, dtype=torch.float32)[:, None]},
                 {"text": torch.ones(n, dtype=torch.bool)})


def test_the_drift_sample_is_capped_uniform_and_seeded():
    def draw(seed: int) -> np.ndarray:
        sample = DriftSample(limit=50, seed=seed)
        for start in range(0, 1000, 100):
            sample.add(chunk_of(start, 100))
        assert sample.seen["text"] == 1000 and len(sample.presence()["text"]) == 1000
        return sample.vectors["text"][:, 0]

    first = draw(0)
    assert len(first) == 50 and len(set(first)) == 50
    assert np.array_equal(first, draw(0)) and not np.array_equal(first, draw(1))
    assert first.mean() > 250 and (first >= 500).sum() >= 10   # late rows are drawn too
