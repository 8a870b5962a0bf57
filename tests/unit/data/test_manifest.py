"""The dataset contract: columns, encodings, media path confinement."""

import os

import pytest

from crossfuse.data.manifest import ManifestError, load_manifest, resolve_media


def write(root, text, encoding="utf-8"):
    root.mkdir(parents=True, exist_ok=True)
    (root / "manifest.csv").write_bytes(text.encode(encoding))
    return root


def test_missing_columns_are_named(tmp_path):
    root = write(tmp_path / "ds", "id,lable,text\n1,a,hi\n")
    with pytest.raises(ManifestError, match=r"missing column\(s\) \['label'\]"):
        load_manifest(root, ["text"])


def test_missing_folder_and_file(tmp_path):
    with pytest.raises(ManifestError, match="does not exist"):
        load_manifest(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ManifestError, match="manifest.csv not found"):
        load_manifest(tmp_path / "empty")


def test_empty_manifest(tmp_path):
    with pytest.raises(ManifestError, match="is empty"):
        load_manifest(write(tmp_path / "ds", ""))


def test_bom_crlf_and_quoted_newlines_are_read(tmp_path):
    root = write(tmp_path / "ds", '\ufeffid,label,text\r\n1,a,"two\nlines"\r\n2,b,NA\r\n')
    frame = load_manifest(root, ["text"]).frame
    assert list(frame.columns) == ["id", "label", "text"]
    assert frame["text"].tolist() == ["two\nlines", "NA"]  # "NA" stays text


def test_media_paths_are_confined(tmp_path):
    root = tmp_path / "ds"
    (root / "images").mkdir(parents=True)
    (tmp_path / "secret.png").write_bytes(b"x")
    os.symlink(tmp_path / "secret.png", root / "images" / "link.png")
    assert resolve_media(root, "images/a.png") == (root / "images" / "a.png").resolve()
    for bad in ("../secret.png", str(tmp_path / "secret.png"), "images/link.png"):
        with pytest.raises(ManifestError, match="absolute|leaves the dataset folder"):
            resolve_media(root, bad)
