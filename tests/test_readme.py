"""The README documents every setting and managed property (STYLE §9)."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel

from delivery import config

README = (Path(__file__).parent.parent / "README.md").read_text()


def setting_names() -> list[str]:
    names = []
    for section, info in config.Settings.model_fields.items():
        if section == "source":
            continue
        model = info.annotation
        if isinstance(model, type) and issubclass(model, BaseModel):
            names += [f"{section}.{sub.alias or key}" for key, sub in model.model_fields.items()]
        else:
            names.append(section)
    return names


def test_every_setting_is_in_the_readme() -> None:
    missing = [name for name in setting_names() if f"`{name}`" not in README]
    assert missing == [], f"settings missing from README.md: {missing}"


def test_readme_has_the_two_setup_commands_and_ci_runs_the_test_one() -> None:
    assert "pip install . && delivery serve" in README
    assert "scripts/test" in README
    ci = (Path(__file__).parent.parent / ".ci" / "run").read_text()
    assert "scripts/test" in ci


def test_every_managed_property_is_in_the_readme() -> None:
    from delivery.registry import schema

    missing = [
        f"{spec.name}.{prop}"
        for spec in schema.OBJECT_TYPES
        for prop in sorted(spec.properties)
        if prop != "id" and f"`{prop}`" not in README
    ]
    missing += [spec.name for spec in schema.OBJECT_TYPES if f"### {spec.name}" not in README]
    assert missing == [], f"managed properties missing from README.md: {missing}"
