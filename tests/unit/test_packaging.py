"""Pins, lock file, image and IR agree with each other."""

import os
import re
import tomllib
from pathlib import Path

from components.image import BASE_IMAGE

REPO = Path(__file__).resolve().parents[2]


def pyproject():
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def lock() -> dict[str, str]:
    pins = {}
    for line in (REPO / "requirements.lock").read_text().splitlines():
        if line and not line.startswith("#"):
            name, version = line.split("==")
            pins[re.sub(r"[-_.]+", "-", name).lower()] = version
    return pins


def test_direct_dependencies_are_pinned_and_locked():
    locked = lock()
    deps = pyproject()["project"]["dependencies"]
    for dep in deps:
        name, version = dep.split("==")
        assert locked[re.sub(r"[-_.]+", "-", name).lower()] == version, dep
    banned = {"torchvision", "timm"}
    assert not banned & set(locked), "torchvision/timm break transformers next to torch 2.13 CPU"


def test_image_tag_is_the_package_version():
    version = pyproject()["project"]["version"]
    assert os.environ.get("CROSSFUSE_IMAGE", f"ghcr.io/crossfuse/crossfuse:{version}") == BASE_IMAGE
