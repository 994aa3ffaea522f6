"""README.md's configuration table and the Settings model say the same (issue 14)."""

from __future__ import annotations

import re
from pathlib import Path

from identity.settings import Secret, Settings, variable_names

README = Path(__file__).resolve().parents[2] / "README.md"
#: In the table but read by gunicorn.conf.py itself, before any Settings exists.
READ_BY_GUNICORN = {"WEB_CONCURRENCY", "WEB_THREADS"}


def table() -> list[tuple[list[str], list[str]]]:
    """(variables, backticked defaults) of each row of the Configuration table."""
    section = README.read_text().split("## Configuration", 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 3 or not cells[0].startswith("`"):
            continue
        rows.append((re.findall(r"`([A-Z0-9_]+)`", cells[0]), re.findall(r"`([^`]*)`", cells[1])))
    return rows


def shown(default: object) -> str:
    if isinstance(default, bool):
        return "on" if default else "off"
    return str(default)


def test_every_variable_read_is_in_the_readme_and_nothing_else() -> None:
    in_readme = {name for names, _ in table() for name in names}
    in_model = {name for field in Settings.model_fields for name in variable_names(field)}
    assert in_model - in_readme == set(), "variables Settings reads that README.md omits"
    assert in_readme - in_model == READ_BY_GUNICORN
    gunicorn_conf = (README.parent / "gunicorn.conf.py").read_text()
    assert all(name in gunicorn_conf for name in READ_BY_GUNICORN)


def test_readme_defaults_are_the_model_defaults() -> None:
    by_variable = {
        name: field.default
        for field_name, field in Settings.model_fields.items()
        for name in variable_names(field_name)
    }
    checked = 0
    for names, defaults in table():
        names = [n for n in names if n in by_variable]
        if len(defaults) != len(names):  # "unset", "cores": said in words, not a value
            continue
        for name, default in zip(names, defaults, strict=True):
            assert not isinstance(by_variable[name], Secret), name
            assert shown(by_variable[name]) == default, name
            checked += 1
    assert checked >= 20


def test_the_example_env_file_is_valid_and_names_only_variables_read() -> None:
    example = README.parent / ".env.example"
    named = set(re.findall(r"^#? ?([A-Z][A-Z0-9_]+)=", example.read_text(), re.MULTILINE))
    in_model = {name for field in Settings.model_fields for name in variable_names(field)}
    assert named - in_model <= READ_BY_GUNICORN
    assert in_model - named <= {"DATABASE_URI"}  # the older name, said in a comment
    settings = Settings.from_env({}, dotenv_path=str(example))
    assert settings.port == 8000 and settings.blocked_defaults
