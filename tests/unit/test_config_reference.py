"""docs/config.md is the config's own description, and it is current."""

from pathlib import Path

from pydantic import BaseModel

from crossfuse.config import RunConfig, StageResources, Toleration
from crossfuse.config_reference import config_reference

PAGE = Path(__file__).resolve().parents[2] / "docs" / "config.md"


def test_docs_config_md_is_what_the_code_says():
    assert PAGE.read_text() == config_reference(), \
        "docs/config.md is stale: run `make docs` (crossfuse config --reference > docs/config.md)"


def test_every_key_says_what_it_does():
    undescribed = []

    def walk(model: type[BaseModel], prefix: str) -> None:
        for name, field in model.model_fields.items():
            if not field.description:
                undescribed.append(prefix + name)
            if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
                walk(field.annotation, f"{prefix}{name}.")

    for model, prefix in ((RunConfig, ""), (StageResources, "resources."), (Toleration, "toleration.")):
        walk(model, prefix)
    assert undescribed == [], "give these fields a Field(description=...)"
    page = config_reference()
    assert "| `fusion.auto.ship` | bagged \\| refit | `bagged` |" in page
    assert "| `pipeline.resources.<step>.cpu_request` |" in page
