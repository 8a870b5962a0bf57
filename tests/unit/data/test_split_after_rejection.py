"""Splits are computed on the rows that are used, and rows sharing a picture stay together.

A rejected row never takes its class's only val or test row with it, under ``drop`` or
``fail``; a class that loses every row is named, reaches the run and stops the gate; a
picture shared by rows with different captions (or labels) lands in one split.
"""

from __future__ import annotations

import shutil

import pandas as pd
import pytest

from crossfuse.data.preprocess import preprocess, read_samples
from crossfuse.data.validation import validate
from crossfuse.data.validation.report import CLASSES_LOST_TAG, validation_tags


@pytest.fixture
def dataset(tmp_path, sample_dataset):
    root = tmp_path / "data"
    shutil.copytree(sample_dataset, root)
    return root


def manifest(root) -> pd.DataFrame:
    return pd.read_csv(root / "manifest.csv", dtype=str, keep_default_na=False)


def clean_splits(root, make_config, tmp_path) -> pd.Series:
    preprocess(make_config(root), root, tmp_path / "clean")
    return read_samples(tmp_path / "clean")[0].set_index("id")["split"]


def break_images(root, ids: list[str]) -> None:
    frame = manifest(root).set_index("id")
    for i in ids:
        (root / frame.at[i, "image"]).write_bytes(b"")  # an empty file: a row reject


def test_a_dropped_row_never_takes_its_class_out_of_a_split(dataset, make_config, tmp_path):
    before = clean_splits(dataset, make_config, tmp_path)
    labels = manifest(dataset).set_index("id")["label"]
    cls = labels.iloc[2]
    # Break exactly the rows of one class that held its val and test places.
    gone = [i for i in before.index if labels[i] == cls and before[i] in ("val", "test")]
    assert len(gone) == 4
    break_images(dataset, gone)
    cfg = make_config(dataset, "validation.on_error=drop")
    report = validate(cfg, dataset, tmp_path / "v")
    assert report.can_continue and report.n_rejected == 4 and report.classes_lost == []
    assert not any(i.kind == "class missing from a split" for i in report.issues)
    result = preprocess(cfg, dataset, tmp_path / "pre", rejected_lines=report.rejected_lines)
    samples = read_samples(tmp_path / "pre")[0]
    assert result.n_samples + report.n_rejected == 60
    kept = samples[samples["label"] == cls]
    assert len(kept) == 6 and set(kept["split"]) == {"train", "val", "test"}


def test_a_missing_image_is_the_only_error_under_fail(dataset, make_config, tmp_path):
    before = clean_splits(dataset, make_config, tmp_path)
    labels = manifest(dataset).set_index("id")["label"]
    cls = labels.iloc[0]
    tests = [i for i in before.index if labels[i] == cls and before[i] == "test"]
    break_images(dataset, tests)
    report = validate(make_config(dataset), dataset, tmp_path / "v")
    assert not report.can_continue
    assert report.table_failures == []  # no false "class has no test rows"
    assert {i.id for i in report.issues} == set(tests)


def test_a_class_that_loses_every_row_is_named_and_tagged(dataset, make_config, tmp_path):
    frame = manifest(dataset)
    cls = frame["label"].iloc[1]
    break_images(dataset, frame.loc[frame["label"] == cls, "id"].tolist())
    cfg = make_config(dataset, "validation.on_error=drop")
    report = validate(cfg, dataset, tmp_path / "v")
    assert report.can_continue and report.classes_lost == [cls]
    assert any(w.startswith(f"classes lost: {cls!r} (10 rows)") and "allow_class_loss" in w
               for w in report.warnings)
    assert validation_tags(report)[CLASSES_LOST_TAG] == cls


@pytest.mark.parametrize("strategy", ["stratified", "hash"])
def test_rows_sharing_a_picture_land_in_one_split(strategy, dataset, make_config, tmp_path):
    frame = manifest(dataset)
    shared = frame["image"].iloc[0]
    # Seven more rows show row 0's picture under new captions, some under other labels.
    extra = pd.DataFrame({"id": [f"share{i}" for i in range(7)], "image": shared,
                          "text": [f"Caption number {i} of the same picture." for i in range(7)],
                          "label": [frame["label"].iloc[i % 3] for i in range(7)]})
    pd.concat([frame, extra]).to_csv(dataset / "manifest.csv", index=False)
    cfg = make_config(dataset, f"preprocess.split.strategy={strategy}")
    if strategy == "stratified":  # (hash covers each class only in expectation)
        report = validate(cfg, dataset, tmp_path / "v")
        assert report.success, report.summary()  # a shared picture is no duplicate row
    preprocess(cfg, dataset, tmp_path / "pre")
    samples = read_samples(tmp_path / "pre")[0].set_index("id")
    group = samples.loc[[frame["id"].iloc[0], *extra["id"]], "split"]
    assert group.nunique() == 1, group.value_counts()
