"""Property: whatever happens to a dataset's bytes, validate() reports it and never raises,
and every row in is counted as valid or rejected.

Hypothesis mutates a small valid dataset: the manifest's bytes (cut, inserted, replaced,
a line doubled, a quote or comma dropped in) and its media files (truncated, garbage,
deleted, turned into a folder or a symlink loop). The example budget is bounded so the
test stays well under a minute.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crossfuse.data.validation import validate

ROWS = 18  # 3 per class: enough for every check to have something to look at

SPECIAL = [b",", b'"', b"\n", b"\r\n", b"\x00", b"\xff\xfe", b"\xe9", b";", b"\t", b"  "]

manifest_edit = st.one_of(
    st.tuples(st.just("cut"), st.floats(0, 1), st.integers(1, 40)),
    st.tuples(st.just("insert"), st.floats(0, 1), st.one_of(st.sampled_from(SPECIAL),
                                                             st.binary(min_size=1, max_size=8))),
    st.tuples(st.just("replace"), st.floats(0, 1), st.binary(min_size=1, max_size=3)),
    st.tuples(st.just("double line"), st.floats(0, 1), st.just(b"")),
    st.tuples(st.just("truncate"), st.floats(0, 1), st.just(b"")),
)
media_edit = st.tuples(st.sampled_from(["truncate", "garbage", "delete", "folder", "loop",
                                        "empty"]), st.integers(0, ROWS - 1),
                       st.binary(min_size=0, max_size=64))


def edit_manifest(raw: bytes, edit) -> bytes:
    kind, where, arg = edit
    at = int(where * len(raw))
    if kind == "cut":
        return raw[:at] + raw[at + arg:]
    if kind == "insert":
        return raw[:at] + arg + raw[at:]
    if kind == "replace":
        return raw[:at] + arg + raw[at + len(arg):]
    if kind == "double line":
        lines = raw.split(b"\n")
        i = int(where * (len(lines) - 1))
        return b"\n".join(lines[:i + 1] + lines[i:])
    return raw[:at]  # truncate


def edit_media(root: Path, edit) -> None:
    kind, index, data = edit
    images = sorted((root / "images").glob("*.png"))
    if index >= len(images):
        return
    path = images[index]
    if path.is_symlink() or not path.is_file():  # an earlier edit got there first
        return
    if kind == "truncate":
        path.write_bytes(path.read_bytes()[: len(data)])
    elif kind == "garbage":
        path.write_bytes(data or b"\x89PNG")
    elif kind == "delete":
        path.unlink()
    elif kind == "folder":
        path.unlink()
        path.mkdir()
    elif kind == "loop":
        path.unlink()
        os.symlink(path.name, path)
    else:
        path.write_bytes(b"")


@pytest.fixture(scope="module")
def small_dataset(tmp_path_factory) -> Path:
    from crossfuse.data.sample import generate_sample_dataset

    root = tmp_path_factory.mktemp("fuzz") / "base"
    generate_sample_dataset(root, per_class=ROWS // 6)
    return root


@settings(max_examples=30, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(manifest_edits=st.lists(manifest_edit, max_size=3),
       media_edits=st.lists(media_edit, max_size=3))
def test_validate_never_raises_and_counts_add_up(small_dataset, make_config, manifest_edits,
                                                 media_edits):
    with tempfile.TemporaryDirectory() as work:
        root = Path(work) / "ds"
        shutil.copytree(small_dataset, root)
        raw = (root / "manifest.csv").read_bytes()
        for edit in manifest_edits:
            raw = edit_manifest(raw, edit)
        (root / "manifest.csv").write_bytes(raw)
        for edit in media_edits:
            edit_media(root, edit)
        out = Path(work) / "v"
        report = validate(make_config(root), root, out)  # must not raise
        assert report.n_rows == report.n_valid + report.n_rejected
        assert report.n_rejected == len({i.line for i in report.issues})
        assert report.success == (not report.issues and not report.table_failures)
        saved = json.loads((out / "report.json").read_text())
        assert saved["n_rows"] == report.n_rows and (out / "rejects.csv").is_file()
        if report.n_rows == 0:  # an unreadable manifest says why
            assert report.table_failures


share_edit = st.tuples(st.integers(0, ROWS - 1), st.integers(0, 5), st.text(
    alphabet="abcdefgh ", min_size=3, max_size=20))


@settings(max_examples=12, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(shares=st.lists(share_edit, min_size=1, max_size=8),
       media_edits=st.lists(media_edit, max_size=2))
def test_rows_sharing_media_never_cross_splits_and_counts_add_up(small_dataset, make_config,
                                                                 shares, media_edits):
    """Extra rows that show an existing row's picture under any caption and any class (some
    pictures broken too): after validation drops what it must, every picture's rows sit in
    one split, and every row in is either used or rejected."""
    import pandas as pd

    from crossfuse.data.preprocess import preprocess, read_samples

    with tempfile.TemporaryDirectory() as work:
        root = Path(work) / "ds"
        shutil.copytree(small_dataset, root)
        frame = pd.read_csv(root / "manifest.csv", dtype=str, keep_default_na=False)
        labels = sorted(set(frame["label"]))
        extra = pd.DataFrame([{"id": f"share{i}", "image": frame["image"].iloc[row],
                               "text": f"shared {i}: {caption}", "label": labels[label]}
                              for i, (row, label, caption) in enumerate(shares)])
        pd.concat([frame, extra]).to_csv(root / "manifest.csv", index=False)
        for edit in media_edits:
            edit_media(root, edit)
        cfg = make_config(root, "validation.on_error=drop")
        report = validate(cfg, root, Path(work) / "v")
        assert report.n_rows == len(frame) + len(extra) == report.n_valid + report.n_rejected
        if not report.can_continue:
            return
        result = preprocess(cfg, root, Path(work) / "pre", rejected_lines=report.rejected_lines)
        assert result.n_samples + report.n_rejected == report.n_rows
        samples = read_samples(Path(work) / "pre")[0]
        used = pd.read_csv(root / "manifest.csv", dtype=str, keep_default_na=False).set_index(
            "id").loc[samples["id"], "image"].to_numpy()
        assert (samples.assign(source=used).groupby("source")["split"].nunique() == 1).all()
