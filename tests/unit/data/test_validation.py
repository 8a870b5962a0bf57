"""Bad input: every case is reported with its manifest line, column and reason; counts add up.

One clean copy of the sample dataset (60 rows) per test; each case breaks the row of
``s00003`` (manifest line 5) one way and checks what validation says about it.
"""

import html
import io
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from crossfuse.data.modalities import get_modality
from crossfuse.data.preprocess import preprocess, read_samples
from crossfuse.data.validation import ValidationFailed, ValidationReport, require_valid, validate

ROW, LINE = 3, 5  # s00003 sits on manifest line 5 (line 1 is the header)
GX_NATIVE = {"missing text", "missing label", "label not in validation.labels"}


@pytest.fixture
def dataset(tmp_path, sample_dataset):
    root = tmp_path / "ds"
    shutil.copytree(sample_dataset, root)
    return root


def manifest(root: Path) -> pd.DataFrame:
    return pd.read_csv(root / "manifest.csv", dtype=str, keep_default_na=False)


def write_manifest(root: Path, frame: pd.DataFrame) -> None:
    frame.to_csv(root / "manifest.csv", index=False)


def set_cell(root: Path, column: str, value: str, row: int = ROW) -> None:
    frame = manifest(root)
    frame.loc[row, column] = value
    write_manifest(root, frame)


def image_path(root: Path) -> Path:
    return root / manifest(root).loc[ROW, "image"]


def png_bytes(img: Image.Image, **save) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=save.pop("format", "PNG"), **save)
    return buf.getvalue()


def invalid_utf8_text(root: Path) -> None:
    raw = (root / "manifest.csv").read_bytes()
    text = manifest(root).loc[ROW, "text"].encode()
    (root / "manifest.csv").write_bytes(raw.replace(text, b"caf\xe9 at noon", 1))


def outside_symlink(root: Path) -> None:
    target = root.parent / "outside.png"
    shutil.copy(image_path(root), target)
    image_path(root).unlink()
    os.symlink(target, image_path(root))


def with_split_column(root: Path) -> None:
    """Give every row a split: per class, the first 6 train, then 2 val, then 2 test."""
    frame = manifest(root)
    frame["split"] = [("train", "train", "train", "train", "train", "train", "val", "val",
                       "test", "test")[n] for n in frame.groupby("label").cumcount()]
    write_manifest(root, frame)


def unknown_split(root: Path) -> None:
    with_split_column(root)
    set_cell(root, "split", "TEST")


def extra_unquoted_field(root: Path) -> None:
    lines = (root / "manifest.csv").read_text().splitlines()
    lines[LINE - 1] += ",an extra field"
    (root / "manifest.csv").write_text("\n".join(lines) + "\n")


def symlink_loop(root: Path) -> None:
    image_path(root).unlink()
    os.symlink(image_path(root).name, image_path(root))   # points at itself


# (case, how to break the row, config overrides, column, kind, words in the reason)
ROW_CASES = [
    ("split value not train/val/test", unknown_split, [], "split", "unknown split",
     "split 'TEST' is not one of train, val, test (lowercase, exactly); did you mean 'test'?"),
    ("row with an extra unquoted field", extra_unquoted_field, [], "row", "wrong number of fields",
     "row has 5 fields but the header has 4: a field holding a comma must be quoted"),
    ("image path in a symlink loop", symlink_loop, [], "image", "media path unusable",
     "cannot be resolved"),
    ("image name too long for the filesystem", lambda r: set_cell(r, "image", "x" * 300 + ".png"),
     [], "image", "image unreadable", "cannot be read"),
    ("missing media file", lambda r: image_path(r).unlink(), [], "image", "image not found",
     "not found under"),
    ("image path that is a folder", lambda r: (image_path(r).unlink(), image_path(r).mkdir()), [],
     "image", "image path is a folder", "is a folder, not a file"),
    ("image path with backslashes", lambda r: set_cell(
        r, "image", manifest(r).loc[ROW, "image"].replace("/", "\\")), [], "image",
     "image not found", "write paths with '/', not '\\' (images/s00003.png)"),
    ("image path with a trailing space", lambda r: set_cell(
        r, "image", manifest(r).loc[ROW, "image"] + " "), [], "image", "image not found",
     "'images/s00003.png ' not found under"),
    ("zero-byte image", lambda r: image_path(r).write_bytes(b""), [], "image", "image empty",
     "is empty (0 bytes)"),
    ("truncated image", lambda r: image_path(r).write_bytes(
        (b := image_path(r).read_bytes())[:len(b) // 2]), [],
     "image", "image truncated", "is truncated"),
    ("corrupt image", lambda r: image_path(r).write_bytes(
        image_path(r).read_bytes()[:60] + bytes(range(256)) * 4), [], "image",
     "image does not decode", "does not decode"),
    ("non-image with an image suffix", lambda r: image_path(r).write_text("hello, I am text"), [],
     "image", "not an image", "is not an image PIL can read"),
    ("decompression bomb", lambda r: image_path(r).write_bytes(
        png_bytes(Image.new("L", (4000, 4000)))), ["validation.max_image_pixels=1000000"], "image",
     "image too large", "4000x4000, above validation.max_image_pixels=1000000"),
    ("path with ..", lambda r: set_cell(r, "image", "../outside.png"), [], "image",
     "media path outside the dataset", "leaves the dataset folder"),
    ("absolute path", lambda r: set_cell(r, "image", "/etc/hostname"), [], "image",
     "media path outside the dataset", "is absolute"),
    ("symlink out of the folder", outside_symlink, [], "image",
     "media path outside the dataset", "leaves the dataset folder"),
    ("empty text", lambda r: set_cell(r, "text", ""), [], "text", "missing text", "missing text"),
    ("whitespace-only text", lambda r: set_cell(r, "text", "   \t "), [], "text",
     "text is only whitespace", "text is only whitespace"),
    ("text not valid UTF-8", invalid_utf8_text, [], "text", "not valid UTF-8",
     "byte 0xe9 at character 3"),
    ("label outside the declared set", lambda r: set_cell(r, "label", "hexagon-day"),
     ["validation.labels=[circle-day,circle-night,square-day,square-night,triangle-day,"
      "triangle-night]"], "label", "label not in validation.labels", "not in validation.labels"),
    ("missing label", lambda r: set_cell(r, "label", ""), [], "label", "missing label",
     "missing label"),
]


@pytest.mark.parametrize("case, breaker, overrides, column, kind, words", ROW_CASES,
                         ids=[c[0] for c in ROW_CASES])
def test_bad_row_is_reported(case, breaker, overrides, column, kind, words, dataset, make_config,
                             tmp_path):
    breaker(dataset)
    report = validate(make_config(dataset, *overrides), dataset, tmp_path / "v")
    assert [(i.line, i.id, i.column, i.kind) for i in report.issues] == [
        (LINE, "s00003", column, kind)]
    assert words in report.issues[0].reason
    assert (report.n_rows, report.n_valid, report.n_rejected) == (60, 59, 1)
    rejects = pd.read_csv(tmp_path / "v" / "rejects.csv", dtype=str)
    assert rejects.columns.tolist() == ["line", "id", "column", "kind", "reason"]
    assert rejects.iloc[0].tolist()[:4] == [str(LINE), "s00003", column, kind]
    docs = " ".join(f.read_text() for f in (tmp_path / "v" / "data_docs").rglob("*.html"))
    if kind not in GX_NATIVE:  # checked in Python, shown in Data Docs through one column
        assert html.escape(report.issues[0].reason, quote=False)[:40] in docs
    assert not report.can_continue  # on_error=fail, the default
    with pytest.raises(ValidationFailed, match=f"line {LINE} .*{column}"):
        require_valid(report)
    assert "--set validation.on_error=drop" in report.summary()


def test_duplicate_ids_reject_every_copy(dataset, make_config, tmp_path):
    set_cell(dataset, "id", "s00002")
    report = validate(make_config(dataset), dataset, tmp_path / "v")
    assert [(i.line, i.id, i.reason) for i in report.issues] == [
        (4, "s00002", "duplicate id"), (5, "s00002", "duplicate id")]
    assert report.n_rejected == 2 and report.n_valid == 58


@pytest.mark.parametrize("mode, size", [("CMYK", (40, 30)), ("I;16", (40, 30)), ("P", (40, 30)),
                                        ("RGBA", (40, 30)), ("LA", (40, 30))])
def test_unusual_image_modes_are_converted_not_rejected(mode, size, dataset, make_config, tmp_path):
    img = Image.new("RGB", size, (200, 30, 30)).convert(mode) if mode != "I;16" else \
        Image.new("I;16", size, 40000)
    image_path(dataset).write_bytes(png_bytes(img, format="TIFF" if mode == "CMYK" else "PNG"))
    cfg = make_config(dataset)
    report = validate(cfg, dataset, tmp_path / "v")
    assert report.success, report.summary()
    preprocess(cfg, dataset, tmp_path / "pre")
    samples = read_samples(tmp_path / "pre")[0].set_index("id")
    pixels = get_modality("image").reader(tmp_path / "pre").load([samples.loc["s00003", "image"]])
    assert pixels.shape == (1, 32, 32, 3) and pixels.dtype == np.uint8  # RGB, resized


def test_exif_rotation_is_applied(dataset, make_config, tmp_path):
    img = Image.new("RGB", (60, 20), (0, 0, 255))
    img.paste((255, 0, 0), (0, 0, 30, 20))            # left half red as stored
    exif = Image.Exif()
    exif[0x0112] = 6                                  # orientation: rotate 90° clockwise to view
    image_path(dataset).write_bytes(png_bytes(img, format="JPEG", exif=exif, quality=95))
    cfg = make_config(dataset, "preprocess.image_size=32")
    assert validate(cfg, dataset, tmp_path / "v").success
    from crossfuse.data.images import load_rgb

    viewed = load_rgb(image_path(dataset))
    assert viewed.size == (20, 60)                    # upright: taller than wide
    top, bottom = viewed.getpixel((10, 5)), viewed.getpixel((10, 55))
    assert top[0] > 200 and bottom[2] > 200           # the red half is now on top


def test_bom_crlf_and_quoted_newlines_keep_true_line_numbers(dataset, make_config, tmp_path):
    frame = manifest(dataset)
    frame.loc[1, "text"] = "A town plaza\nappeared at midnight."   # row 2 spans lines 3-4
    frame.loc[ROW, "label"] = ""
    body = frame.to_csv(index=False, lineterminator="\r\n")
    (dataset / "manifest.csv").write_bytes(b"\xef\xbb\xbf" + body.encode())
    report = validate(make_config(dataset), dataset, tmp_path / "v")
    assert [(i.line, i.id, i.kind) for i in report.issues] == [(LINE + 1, "s00003", "missing label")]


@pytest.mark.parametrize("case, content, words", [
    ("empty manifest", "", "is empty"),
    ("UTF-16 manifest", "id,image,text,label\nx,images/s00000.png,hi,a\n".encode("utf-16"),
     "looks like UTF-16 text (by its byte order mark / NUL bytes): save it as UTF-8"),
    ("UTF-16 without a BOM", "id,image,text,label\nx,images/s00000.png,hi,a\n".encode("utf-16-le"),
     "looks like UTF-16"),
    ("semicolon-separated", "id;image;text;label\nx;images/s00000.png;hi;a\n",
     "the file looks semicolon-separated. manifest.csv must be comma-separated"),
    ("duplicated header name", "id,image,text,label,text\nx,images/s00000.png,hi,a,there\n",
     "column 'text' appears twice in the header (columns 3 and 5)"),
    ("header only", "id,image,text,label\n", "has a header but no rows"),
    ("missing column", "id,image,label\nx,images/s00000.png,circle-day\n",
     "missing column(s) ['text']"),
    ("misnamed column", "id,image,caption,label\nx,images/s00000.png,hi,circle-day\n",
     "missing column(s) ['text']"),
])
def test_unreadable_manifest_stops_with_the_fix(case, content, words, dataset, make_config,
                                                tmp_path):
    path = dataset / "manifest.csv"
    path.write_bytes(content) if isinstance(content, bytes) else path.write_text(content)
    report = validate(make_config(dataset), dataset, tmp_path / "v")  # reported, not raised
    assert report.n_rows == report.n_valid == report.n_rejected == 0
    assert len(report.table_failures) == 1 and words in report.table_failures[0]
    assert "manifest.csv" in report.table_failures[0]
    assert (tmp_path / "v" / "report.json").is_file() and (tmp_path / "v" / "rejects.csv").is_file()
    with pytest.raises(ValidationFailed, match=re.escape(words)):
        require_valid(report)


def test_single_class_and_class_too_small(dataset, make_config, tmp_path):
    frame = manifest(dataset)
    write_manifest(dataset, frame[frame["label"] == "circle-day"])
    report = validate(make_config(dataset), dataset, tmp_path / "v")
    assert report.table_failures == ["1 class among the valid rows (circle-day): a classifier "
                                     "needs at least two labels"]
    assert not report.can_continue

    write_manifest(dataset, frame)
    cfg = make_config(dataset, "validation.min_samples_per_class=11", "validation.on_error=drop")
    report = validate(cfg, dataset, tmp_path / "v2")
    assert any("min_samples_per_class=11" in t for t in report.table_failures)
    assert not report.can_continue  # a table failure stops even under on_error=drop


def test_drop_policy_goes_on_and_the_counts_add_up(dataset, make_config, tmp_path):
    image_path(dataset).unlink()
    set_cell(dataset, "text", "  ", row=10)
    set_cell(dataset, "id", "s00020", row=21)                         # duplicate of row 20
    cfg = make_config(dataset, "validation.on_error=drop")
    report = validate(cfg, dataset, tmp_path / "v")
    assert report.can_continue and not report.success
    assert (report.n_rows, report.n_valid, report.n_rejected) == (60, 56, 4)
    assert report.reasons() == {"duplicate id": 2, "text is only whitespace": 1,
                                "image not found": 1}
    assert "60 rows in = 56 valid + 4 rejected (on_error=drop)" in report.summary()
    require_valid(report)                                             # does not raise
    result = preprocess(cfg, dataset, tmp_path / "pre", rejected_lines=report.rejected_lines)
    assert result.n_samples == report.n_valid
    kept = set(read_samples(tmp_path / "pre")[0]["id"])
    assert not kept & {"s00003", "s00010", "s00020"}
    assert ValidationReport.read(tmp_path / "v").to_dict() == report.to_dict()


def test_clean_dataset_passes_and_writes_data_docs(dataset, make_config, tmp_path):
    report = validate(make_config(dataset), dataset, tmp_path / "out")
    assert report.success and report.n_valid == report.n_rows == 60
    assert (tmp_path / "out" / "data_docs" / "index.html").is_file()
    assert ValidationReport.read(tmp_path / "out").to_dict() == report.to_dict()
    require_valid(report)


def test_text_length_limit(dataset, make_config, tmp_path):
    cfg = make_config(dataset, "validation.max_text_chars=20")
    report = validate(cfg, dataset, tmp_path / "out")
    assert report.issues and all(i.column == "text" and "length" in i.reason
                                 for i in report.issues)


def test_a_text_beyond_the_csv_field_limit_is_one_row_reject(dataset, make_config, tmp_path):
    """csv's own limit is 131,072 characters a field: such a row is a long text, not a
    broken file."""
    set_cell(dataset, "text", "word " * 40_000)  # 200,000 characters
    report = validate(make_config(dataset, "validation.on_error=drop"), dataset, tmp_path / "v")
    assert report.can_continue and report.table_failures == []
    assert [(i.line, i.column) for i in report.issues] == [(LINE, "text")]
    assert "max_text_chars" in report.issues[0].reason or "length" in report.issues[0].reason


def test_labels_and_ids_are_trimmed_and_nfc_normalised(dataset, make_config, tmp_path):
    from crossfuse.data.manifest import load_manifest

    frame = manifest(dataset)
    frame.loc[ROW, "label"] = f"  {frame.loc[ROW, 'label']}\t"
    frame.loc[ROW + 1, "label"] = "square-da\u0301y"                     # decomposed accent
    frame.loc[ROW + 2, "label"] = "square-d\u00e1y"                      # the same, composed
    frame.loc[ROW + 3, "id"] = f" {frame.loc[ROW + 4, 'id']}"             # a duplicate id
    write_manifest(dataset, frame)
    loaded = load_manifest(dataset).frame
    assert loaded.loc[ROW, "label"] == frame.loc[ROW, "label"].strip()
    assert loaded.loc[ROW + 1, "label"] == loaded.loc[ROW + 2, "label"] == "square-d\u00e1y"
    report = validate(make_config(dataset, "validation.on_error=drop"), dataset, tmp_path / "v")
    assert not any(i.line == LINE for i in report.issues)  # the padded label is just a label
    assert [i.line for i in report.issues if i.kind == "duplicate id"] == [LINE + 3, LINE + 4]


def test_labels_differing_only_by_case_stop_the_run_or_merge(dataset, make_config, tmp_path):
    frame = manifest(dataset)
    label = frame.loc[ROW, "label"]
    frame.loc[ROW, "label"] = label.capitalize()
    frame.loc[ROW + 6, "label"] = label.upper() if frame.loc[ROW + 6, "label"] == label else \
        frame.loc[ROW + 6, "label"]
    write_manifest(dataset, frame)
    variant_lines = [i + 2 for i in range(len(frame)) if frame.loc[i, "label"] == label.capitalize()]
    report = validate(make_config(dataset), dataset, tmp_path / "v")
    [failure] = [f for f in report.table_failures if "differ only by case" in f]
    assert f"{label.capitalize()!r} on lines {', '.join(map(str, variant_lines))}" in failure
    assert f"{label!r} on lines" in failure and "validation.label_case=fold" in failure
    assert not report.can_continue

    cfg = make_config(dataset, "validation.label_case=fold")
    report = validate(cfg, dataset, tmp_path / "v2")
    assert report.success, report.summary()
    assert any(f"{label.capitalize()!r} -> {label!r}" in w for w in report.warnings)
    preprocess(cfg, dataset, tmp_path / "pre")
    assert len(read_samples(tmp_path / "pre")[1]) == 6


def copy_row(root: Path, row: int, new_id: str, **cells) -> int:
    """Append a copy of ``row`` (same image file bytes, same text) under ``new_id``; its line."""
    frame = manifest(root)
    copy = frame.loc[row].copy()
    image = root / copy["image"]
    copy_image = image.with_name(f"{new_id}.png")
    shutil.copy(image, copy_image)
    copy["id"], copy["image"] = new_id, str(copy_image.relative_to(root))
    for column, value in cells.items():
        copy[column] = value
    write_manifest(root, pd.concat([frame, copy.to_frame().T], ignore_index=True))
    return len(frame) + 2


def test_the_same_sample_in_train_and_test_is_leakage(dataset, make_config, tmp_path):
    with_split_column(dataset)
    frame = manifest(dataset)
    row = int(frame.index[frame["split"] == "test"][0])
    line = copy_row(dataset, row, "copy-of-a-test-row", split="train",
                    text=f"  {frame.loc[row, 'text']} ")            # whitespace does not hide it
    report = validate(make_config(dataset), dataset, tmp_path / "v")
    found = [(i.line, i.id, i.kind) for i in report.issues]
    assert found == [(row + 2, frame.loc[row, "id"], "duplicate across splits"),
                     (line, "copy-of-a-test-row", "duplicate across splits")]
    assert "different splits ['test', 'train'] (test rows seen in training)" in report.issues[0].reason
    assert (report.n_rows, report.n_valid, report.n_rejected) == (61, 59, 2)

    report = validate(make_config(dataset, "validation.duplicates=drop"), dataset, tmp_path / "v2")
    assert [(i.line, i.kind) for i in report.issues] == [(line, "duplicate across splits")]
    assert f"duplicate of line {row + 2} dropped" in report.issues[0].reason

    report = validate(make_config(dataset, "validation.duplicates=keep"), dataset, tmp_path / "v3")
    assert report.success and any("duplicate rows" in w for w in report.warnings)


def test_the_same_sample_with_two_labels_is_a_conflict(dataset, make_config, tmp_path):
    frame = manifest(dataset)
    other = next(lab for lab in frame["label"] if lab != frame.loc[ROW, "label"])
    line = copy_row(dataset, ROW, "relabelled", label=other)
    for policy in ("error", "drop"):  # drop cannot know which label is right: both go
        report = validate(make_config(dataset, f"validation.duplicates={policy}"), dataset,
                          tmp_path / policy)
        assert [(i.line, i.kind) for i in report.issues] == [
            (LINE, "duplicate with conflicting labels"), (line, "duplicate with conflicting labels")]
        assert "with different labels" in report.issues[0].reason


def test_hashed_copies_in_one_split_are_only_a_warning(dataset, make_config, tmp_path):
    copy_row(dataset, ROW, "copy-1")
    report = validate(make_config(dataset), dataset, tmp_path / "v")
    assert report.success and report.n_valid == 61
    assert any("duplicate rows: the same content on lines 5, 62" in w for w in report.warnings)


def test_a_class_without_train_rows_stops_the_run_or_is_dropped(dataset, make_config, tmp_path):
    with_split_column(dataset)
    frame = manifest(dataset)
    label = frame.loc[ROW, "label"]
    frame.loc[frame["label"] == label, "split"] = "test"
    write_manifest(dataset, frame)
    report = validate(make_config(dataset), dataset, tmp_path / "v")
    [failure] = report.table_failures
    assert failure.startswith(f"class {label!r} has no train and no val rows (0 train, 0 val, "
                              f"10 test): the model could never predict it")
    assert not report.can_continue

    cfg = make_config(dataset, "validation.on_error=drop")
    report = validate(cfg, dataset, tmp_path / "v2")
    assert report.can_continue and report.reasons() == {"class missing from a split": 10}
    assert (report.n_rows, report.n_valid, report.n_rejected) == (60, 50, 10)
    assert label not in report.class_counts
    result = preprocess(cfg, dataset, tmp_path / "pre", rejected_lines=report.rejected_lines)
    assert result.n_samples == 50 and label not in result.labels


def test_missing_split_cells_are_rejected_by_row_not_at_preprocess(dataset, make_config, tmp_path):
    with_split_column(dataset)
    set_cell(dataset, "split", "", row=ROW)
    set_cell(dataset, "split", "training", row=ROW + 1)
    cfg = make_config(dataset, "validation.on_error=drop")
    report = validate(cfg, dataset, tmp_path / "v")
    assert [(i.line, i.kind) for i in report.issues] == [(LINE, "unknown split"),
                                                         (LINE + 1, "unknown split")]
    assert "split is empty while other rows set one" in report.issues[0].reason
    assert "did you mean 'train'?" in report.issues[1].reason
    result = preprocess(cfg, dataset, tmp_path / "pre", rejected_lines=report.rejected_lines)
    assert result.n_samples == 58  # everything else goes on


def test_a_manifest_that_is_a_folder_is_called_one(dataset, make_config, tmp_path):
    (dataset / "manifest.csv").unlink()
    (dataset / "manifest.csv").mkdir()
    report = validate(make_config(dataset), dataset, tmp_path / "v")
    assert "manifest.csv is a folder, not a file" in report.table_failures[0]
    assert "its manifest could not be read as a dataset" in report.summary()  # not "0 rows in"


def test_a_thousand_single_row_classes_are_summarised_not_listed(dataset, make_config, tmp_path):
    frame = manifest(dataset)
    frame["label"] = [f"class-{i:04d}" for i in range(len(frame))]
    write_manifest(dataset, frame)
    report = validate(make_config(dataset), dataset, tmp_path / "v")
    summary = report.summary()
    assert not report.can_continue and len(summary.splitlines()) <= 6, summary
    assert "60 classes with fewer than validation.min_samples_per_class=3 samples" in summary
    assert "and 50 more" in summary


def test_tiny_and_extreme_images_are_used_and_counted_in_a_warning(dataset, make_config,
                                                                   tmp_path):
    frame = manifest(dataset)
    for row, size in ((0, (1, 1)), (1, (2000, 10)), (2, (8, 8))):
        Image.new("RGB", size, "red").save(dataset / frame.loc[row, "image"])
    report = validate(make_config(dataset), dataset, tmp_path / "v")
    assert report.success  # used, not rejected
    assert ("3 images have a side under validation.min_image_side=16 px (line 2: 1x1, line 3: "
            "2000x10, line 4: 8x8): they are used, upscaled") in report.warnings[0]
    assert report.warnings[1] == ("1 image is longer than validation.max_aspect_ratio=10 times the "
                                  "other side (line 3: 2000x10): it is used, squashed to 32 px "
                                  "square")
