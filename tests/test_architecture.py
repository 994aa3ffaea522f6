"""The layering of STYLE.md practice 1: one domain package, two entry points that never meet.

identity/ imports neither Flask nor Celery nor the entry points; api/ never imports
worker/ and worker/ never imports api/. Checked twice: by parsing every import
statement (also the lazy ones inside functions), and by importing every identity
module in a clean interpreter and looking at what got loaded.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# What the domain package must never pull in, directly or through a dependency.
FORBIDDEN_IN_DOMAIN = ("flask", "werkzeug", "celery", "kombu", "billiard", "api", "worker")


def python_files(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def parse_imports(source: str, package: list[str]) -> set[str]:
    """Every module the import statements of ``source`` name, relative ones resolved.

    ``package`` is the dotted package the source lives in, as parts (["api"]).
    """
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)
    return found


def imported_modules(path: Path) -> set[str]:
    package = list(path.relative_to(ROOT).with_suffix("").parts[:-1])
    return parse_imports(path.read_text(), package)


def top_level(modules: set[str]) -> set[str]:
    return {m.split(".")[0] for m in modules if m}


def violations(package: str, forbidden: tuple[str, ...]) -> list[str]:
    problems = []
    for path in python_files(package):
        bad = top_level(imported_modules(path)) & set(forbidden)
        if bad:
            problems.append(f"{path.relative_to(ROOT)} imports {sorted(bad)}")
    return problems


def test_the_import_parser_sees_what_it_must() -> None:
    # The checks below are only as good as this parser: prove it on known files.
    routes = imported_modules(ROOT / "api" / "routes.py")
    assert "flask" in top_level(routes)
    assert "identity" in top_level(routes)
    assert "identity.normalize" in routes


def test_domain_package_imports_no_framework_and_no_entry_point() -> None:
    assert python_files("identity"), "identity/ has no modules?"
    assert violations("identity", FORBIDDEN_IN_DOMAIN) == []


def test_entry_points_never_import_each_other() -> None:
    api_files = python_files("api")
    assert api_files
    problems = violations("api", ("worker",))
    problems += violations("worker", ("api",))  # (an empty list while worker/ does not exist)
    assert problems == []


def test_importing_every_domain_module_loads_no_framework() -> None:
    script = """
import importlib, json, pkgutil, sys
import identity
names = [m.name for m in pkgutil.walk_packages(identity.__path__, "identity.")]
for name in names:
    importlib.import_module(name)
print(json.dumps({"imported": names, "loaded": sorted({m.split(".")[0] for m in sys.modules})}))
"""
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    expected = {
        f"identity.{p.stem}" for p in (ROOT / "identity").glob("*.py") if p.stem != "__init__"
    }
    assert expected <= set(report["imported"])
    loaded = set(report["loaded"])
    assert "identity" in loaded and "sqlalchemy" in loaded  # the probe really ran
    assert loaded.isdisjoint(FORBIDDEN_IN_DOMAIN), sorted(loaded & set(FORBIDDEN_IN_DOMAIN))


def test_the_import_parser_resolves_relative_and_lazy_imports() -> None:
    source = """
from . import tasks
from .app import create_celery
from .. import errors

def later():
    import api.routes
"""
    modules = parse_imports(source, ["worker", "sub"])
    assert {"worker.sub.tasks", "worker.sub.app", "worker.errors", "api.routes"} <= modules
    assert top_level(modules) == {"worker", "api"}
