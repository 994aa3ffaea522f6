"""docker-compose.yml and the Dockerfile, checked by their structure (no Docker engine here):
every command names a real entry point, and compose runs what `make run` runs."""

from __future__ import annotations

import importlib
import importlib.util
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from identity.settings import Settings
from worker.partition import worker_argv
from worker.procfile import procfile

ROOT = Path(__file__).resolve().parents[2]
APP_SERVICES = {"migrate", "api", "relay", "bridge", "flower"}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())  # type: ignore[no-any-return]


def workers(compose: dict[str, Any]) -> dict[str, Any]:
    return {n: s for n, s in compose["services"].items() if re.fullmatch(r"worker\d+", n)}


def check_entry_point(argv: list[str]) -> None:
    """The command would start something that exists in this repository."""
    program, args = argv[0], argv[1:]
    if program == "python":
        assert args[0] == "-m"
        assert importlib.util.find_spec(args[1]) is not None, args[1]
        module = importlib.import_module(args[1])
        assert hasattr(module, "main"), f"{args[1]} has no main()"
    elif program == "celery":
        assert args[:2] == ["-A", "worker"] and args[2] in {"worker", "flower"}
        assert importlib.import_module("worker").app.main == "identity"
        for option in args[3:]:
            if option.startswith("--conf="):
                assert (ROOT / option.split("=", 1)[1]).is_file()
    elif program == "gunicorn":
        assert args[:2] == ["-c", "gunicorn.conf.py"] and (ROOT / args[1]).is_file()
        module, _, factory = args[2].partition(":")
        assert callable(getattr(importlib.import_module(module), factory.removesuffix("()")))
    elif program == "alembic":
        assert args == ["upgrade", "head"] and (ROOT / "alembic.ini").is_file()
    else:
        raise AssertionError(f"unknown entry point {argv}")


def test_services_and_health_checks(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert {"db", "redis"} | APP_SERVICES <= set(services)
    for name in ("db", "redis"):
        assert services[name]["healthcheck"]["test"], name
    migrate = services["migrate"]
    assert migrate["depends_on"] == {"db": {"condition": "service_healthy"}}
    assert migrate["restart"] == "no"  # one-shot
    for name in APP_SERVICES - {"migrate"} | set(workers(compose)):
        depends = services[name]["depends_on"]
        assert depends["db"]["condition"] == "service_healthy"
        assert depends["redis"]["condition"] == "service_healthy"
        assert depends["migrate"]["condition"] == "service_completed_successfully"


def test_one_image_for_every_application_service(compose: dict[str, Any]) -> None:
    services = compose["services"]
    app = APP_SERVICES | set(workers(compose))
    assert {services[n]["image"] for n in app} == {"identity-reconciliation:latest"}
    assert {services[n]["build"] for n in app} == {"."}
    dockerfile = (ROOT / "Dockerfile").read_text()
    for line in dockerfile.splitlines():
        if line.startswith("COPY "):
            for source in line.split()[1:-1]:
                assert (ROOT / source).exists(), f"Dockerfile copies missing {source}"


def test_every_command_names_a_real_entry_point(compose: dict[str, Any]) -> None:
    commands = [s["command"] for s in compose["services"].values() if "command" in s]
    assert len(commands) >= len(APP_SERVICES) + 2
    for argv in commands:
        if argv[0] == "redis-server":
            continue
        check_entry_point(argv)
    dockerfile_cmd = re.search(r"^CMD (.+)$", (ROOT / "Dockerfile").read_text(), re.M)
    assert dockerfile_cmd is not None
    check_entry_point(yaml.safe_load(dockerfile_cmd.group(1)))


def test_one_worker_per_partition_as_in_make_run(compose: dict[str, Any]) -> None:
    env = compose["services"]["api"]["environment"]
    partitions = int(env["IDENTITY_PARTITIONS"])
    services = workers(compose)
    assert sorted(int(s["command"][-1]) for s in services.values()) == list(range(partitions))
    for service in services.values():
        assert service["environment"]["IDENTITY_PARTITIONS"] == str(partitions)
        assert service["environment"]["REDIS_URL"].startswith("redis://redis:")
    # The generated Procfile of `make run` runs the same modules.
    settings = Settings(identity_partitions=partitions)
    lines = procfile(settings, python="python").splitlines()
    compose_commands = {" ".join(s["command"]) for s in compose["services"].values()
                        if "command" in s}  # fmt: skip
    for line in lines:
        command = line.split(": ", 1)[1]
        if command.startswith("python -m gunicorn"):
            command = command.replace("python -m gunicorn", "gunicorn").replace("'", "")
        command = command.replace("python -m celery", "celery")
        assert command in compose_commands, command
    assert worker_argv(0, settings)[:3] == ["-A", "worker", "worker"]


def test_flower_needs_basic_auth_from_the_environment(compose: dict[str, Any]) -> None:
    flower = compose["services"]["flower"]
    assert flower["environment"]["FLOWER_BASIC_AUTH"].startswith("${FLOWER_BASIC_AUTH:?")
    assert (
        flower["environment"]["REDIS_URL"] == compose["services"]["api"]["environment"]["REDIS_URL"]
    )


def test_services_listening_beyond_loopback_require_keys(compose: dict[str, Any]) -> None:
    """SPEC "Access": a deployment that binds 0.0.0.0 sets keys; compose refuses to start
    without them (``${VAR:?message}``) rather than serve in open development mode."""
    for name, service in compose["services"].items():
        env = service.get("environment") or {}
        if env.get("BIND_HOST") not in (None, "127.0.0.1", "localhost", "::1"):
            for key in ("API_KEYS", "ADMIN_API_KEYS"):
                assert re.fullmatch(r"\$\{" + key + r":\?.+\}", str(env.get(key, ""))), (name, key)
