"""README.md's config reference is generated from the config model and cannot drift from it."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from pydantic import BaseModel

from vasrch.config import Config, config_from_dict

# the generator lives in the repository's scripts/ folder, not in the installed package
config_reference = pytest.importorskip(
    "scripts.config_reference", reason="run from the repository root: scripts/ is not installed"
)
README, readme_section, reference = (
    config_reference.README,
    config_reference.readme_section,
    config_reference.reference,
)


def _fields(model: type[BaseModel], path: str = "") -> list[tuple[str, object]]:
    """(dotted name, FieldInfo) of every field, sections and the fields inside them."""
    found = []
    for name, field in model.model_fields.items():
        found.append((f"{path}{name}", field))
        kind = field.annotation
        if isinstance(kind, type) and issubclass(kind, BaseModel):
            found += _fields(kind, f"{path}{name}.")
    return found


def test_every_config_field_has_a_description() -> None:
    assert [name for name, field in _fields(Config) if not field.description] == []


def test_readme_reference_is_the_generated_one() -> None:
    assert readme_section(README.read_text(encoding="utf-8")) == reference(), (
        "README.md's config reference differs from vasrch/config.py: "
        "run `python scripts/config_reference.py`"
    )


def _keys(data: dict, path: str = "") -> list[str]:
    """Dotted names of the keys of a nested mapping, sections and the keys inside them."""
    found = []
    for key, value in data.items():
        found.append(f"{path}{key}")
        if isinstance(value, dict):
            found += _keys(value, f"{path}{key}.")
    return found


def test_reference_is_a_valid_config_listing_every_field_at_its_default(tmp_path: Path) -> None:
    block = reference().split("```yaml\n", 1)[1].split("\n```", 1)[0]
    shown = yaml.safe_load(block)
    assert _keys(shown) == [name for name, _ in _fields(Config)]
    defaults = {"catalog": {"path": "./catalog"}, "workspace": "./workspace"}
    assert config_from_dict(shown, tmp_path) == config_from_dict(defaults, tmp_path)
