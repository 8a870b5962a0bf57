"""Validation: GX suite + media checks report each bad row by line, id, column and reason."""

import shutil

import pytest

from crossfuse.validation import ValidationFailed, ValidationReport, require_valid, validate


@pytest.fixture
def dataset(tmp_path, sample_dataset):
    root = tmp_path / "ds"
    shutil.copytree(sample_dataset, root)
    return root


def rewrite_rows(root, edit):
    lines = (root / "manifest.csv").read_text().splitlines()
    edit(lines)
    (root / "manifest.csv").write_text("\n".join(lines) + "\n")


def test_clean_dataset_passes_and_writes_data_docs(dataset, make_config, tmp_path):
    report = validate(make_config(dataset), dataset, tmp_path / "out")
    assert report.success and report.n_valid == report.n_rows == 60
    assert (tmp_path / "out" / "data_docs" / "index.html").is_file()
    assert ValidationReport.read(tmp_path / "out").to_dict() == report.to_dict()
    require_valid(report)


def test_bad_rows_are_reported_with_line_and_reason(dataset, make_config, tmp_path):
    (dataset / "images" / "s00003.png").write_bytes(b"not a png")
    (dataset / "images" / "s00004.png").unlink()

    def edit(lines):
        lines[2] = lines[1]                              # line 3 duplicates line 2's id
        fields = lines[7].split(",")
        lines[7] = ",".join(fields[:3] + [""])           # line 8: missing label

    rewrite_rows(dataset, edit)
    report = validate(make_config(dataset), dataset, tmp_path / "out")
    assert not report.success
    reasons = {(i.line, i.column): i.reason for i in report.issues}
    assert reasons[(2, "id")] == reasons[(3, "id")] == "duplicate id"
    assert "does not decode" in reasons[(5, "image")]
    assert "not found" in reasons[(6, "image")]
    assert reasons[(8, "label")] == "missing value"
    assert report.n_valid + report.n_rejected == report.n_rows == 60
    assert report.n_rejected == 5
    rejects = (tmp_path / "out" / "rejects.csv").read_text().splitlines()
    assert rejects[0] == "line,id,column,reason" and len(rejects) == 1 + len(report.issues)
    with pytest.raises(ValidationFailed, match="line 5 .* does not decode"):
        require_valid(report)


def test_small_class_and_text_length_fail(dataset, make_config, tmp_path):
    cfg = make_config(dataset, "validation.min_samples_per_class=11",
                      "validation.max_text_chars=20")
    report = validate(cfg, dataset, tmp_path / "out")
    assert any("min_samples_per_class=11" in t for t in report.table_failures)
    assert any(i.column == "text" and "length" in i.reason for i in report.issues)


def test_declared_label_set(dataset, make_config, tmp_path):
    cfg = make_config(dataset, "validation.labels=[circle-day, circle-night]")
    report = validate(cfg, dataset, tmp_path / "out")
    bad = {i.reason for i in report.issues if i.column == "label"}
    assert bad == {"label not in validation.labels"}
    assert report.n_rejected == 40
