"""The config reference (``docs/config.md``), written from the pydantic models' fields.

Every key's type, default and description come from :mod:`crossfuse.config`, so the
page cannot drift from the code: ``crossfuse config --reference > docs/config.md``
(``make docs``) rewrites it and ``tests/unit/test_config_reference.py`` fails when it is stale.

Example
-------
>>> page = config_reference()
>>> "| `fusion.method` | str | `auto` |" in page
True
"""

from __future__ import annotations

import json
import types
import typing
from typing import Any, Literal

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from crossfuse.config import RunConfig, StageResources, Toleration

HEADER = """# Configuration reference

Generated from `crossfuse/config.py` by `crossfuse config --reference > docs/config.md`
(`make docs`); a test fails when this page and the code disagree. Every key can be set in a
YAML file (`--config configs/my.yaml`) or on the command line (`--set section.key=value`);
`crossfuse config` prints the resolved result. A bad key stops the run at load, one line per
key, naming the valid choices.
"""


def _type_name(annotation: Any) -> str:
    """A reader's name for a field's type.

    >>> _type_name(Literal["fail", "drop"]), _type_name(int | None), _type_name(dict[str, float])
    ('fail \\\\| drop', 'int or null', 'map of str to float')
    """
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is Literal:
        return " \\| ".join(str(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        named = [_type_name(a) for a in args if a is not type(None)]
        return " or ".join(named) + (" or null" if type(None) in args else "")
    if origin is dict:
        return f"map of {_type_name(args[0])} to {_type_name(args[1])}"
    if origin is list:
        return f"list of {_type_name(args[0])}"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "section"
    return getattr(annotation, "__name__", str(annotation))


def _range(field) -> str:
    """The bounds a numeric field's schema sets, in words.

    >>> from pydantic import Field, BaseModel
    >>> class M(BaseModel):
    ...     a: int = Field(1, ge=1)
    ...     b: float = Field(0.2, ge=0, lt=1)
    >>> _range(M.model_fields["a"]), _range(M.model_fields["b"])
    (' ≥ 1', ' in [0, 1)')
    """
    bounds = {type(m).__name__: getattr(m, type(m).__name__.lower()) for m in field.metadata
              if type(m).__name__ in ("Ge", "Gt", "Le", "Lt")}
    low = next(((k, v) for k, v in bounds.items() if k in ("Ge", "Gt")), None)
    high = next(((k, v) for k, v in bounds.items() if k in ("Le", "Lt")), None)
    if low and high:
        return (f" in {'[' if low[0] == 'Ge' else '('}{low[1]}, "
                f"{high[1]}{']' if high[0] == 'Le' else ')'}")
    if low:
        return f" {'≥' if low[0] == 'Ge' else '>'} {low[1]}"
    if high:
        return f" {'≤' if high[0] == 'Le' else '<'} {high[1]}"
    return ""


def _default(field) -> str:
    if field.default_factory is not None:
        value = field.default_factory()
    elif field.default is PydanticUndefined:
        return "required"
    else:
        value = field.default
    if isinstance(value, BaseModel):
        value = value.model_dump()
    if isinstance(value, dict):
        value = {k: (v.model_dump(exclude_defaults=True) if isinstance(v, BaseModel) else v)
                 for k, v in value.items()}
    text = json.dumps(value, ensure_ascii=False) if not isinstance(value, str) else value
    return f"`{text}`".replace("|", "\\|")


def _rows(model: type[BaseModel], prefix: str) -> tuple[list[str], list[tuple[type[BaseModel], str]]]:
    rows, nested = [], []
    for name, field in model.model_fields.items():
        key = f"{prefix}{name}"
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            nested.append((annotation, f"{key}."))
            continue
        description = (field.description or "").replace("|", "\\|").replace("\n", " ")
        rows.append(f"| `{key}` | {_type_name(annotation)}{_range(field)} | {_default(field)} | "
                    f"{description} |")
    return rows, nested


def _section(model: type[BaseModel], prefix: str, title: str, blurb: str = "") -> list[str]:
    rows, nested = _rows(model, prefix)
    lines = [f"## `{title}`", ""]
    if blurb:
        lines += [blurb, ""]
    if rows:
        lines += ["| key | type | default | what it does |", "|---|---|---|---|", *rows, ""]
    for sub, sub_prefix in nested:
        lines += _section(sub, sub_prefix, sub_prefix.rstrip("."),
                          _nested_description(model, sub_prefix))
    return lines


def _nested_description(parent: type[BaseModel], prefix: str) -> str:
    name = prefix.rstrip(".").split(".")[-1]
    return parent.model_fields[name].description or ""


def config_reference() -> str:
    """The whole reference page as Markdown: one section per config section."""
    lines = [HEADER, "| key | type | default | what it does |", "|---|---|---|---|"]
    top_rows, sections = _rows(RunConfig, "")
    lines += [*top_rows, ""]
    for model, prefix in sections:
        lines += _section(model, prefix, prefix.rstrip("."),
                          RunConfig.model_fields[prefix.rstrip(".")].description or "")
    lines += _section(StageResources, "pipeline.resources.<step>.", "pipeline.resources.<step>",
                      StageResources.__doc__.strip() + " Steps: validate, preprocess, extract, "
                      "merge_features, train, evaluate, register.")
    lines += _section(Toleration, "pipeline.resources.<step>.tolerations[].",
                      "pipeline.resources.<step>.tolerations[]", Toleration.__doc__.strip())
    return "\n".join(lines).rstrip() + "\n"
