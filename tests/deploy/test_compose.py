"""docker-compose.yml, the Dockerfile and .env.example, checked offline (no Docker engine)."""

from __future__ import annotations

import fnmatch
import json
import re
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import pytest
import yaml

from cli.main import build_parser
from shared.pipeline import STAGES
from shared.settings import Settings
from tests.deploy.catalogue import PROMETHEUS_DIR, REPO

COMPOSE = yaml.safe_load((REPO / "docker-compose.yml").read_text())
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]
ENV_EXAMPLE = REPO / ".env.example"
SETTINGS_ENV = {f"FACEVAL_{name.upper()}" for name in Settings.model_fields}
WORKERS = {name: s for name, s in SERVICES.items() if s.get("command", [""])[0] == "worker"}
#: Environment variables the third-party images read.
THIRD_PARTY_ENV = {
    "rabbitmq": {"RABBITMQ_DEFAULT_USER", "RABBITMQ_DEFAULT_PASS"},
    "mongodb": {"MONGO_INITDB_ROOT_USERNAME", "MONGO_INITDB_ROOT_PASSWORD"},
    "etl": {"MPLCONFIGDIR"},
    "grafana": {
        "GF_SECURITY_ADMIN_USER", "GF_SECURITY_ADMIN_PASSWORD", "GF_USERS_ALLOW_SIGN_UP",
        "GF_AUTH_ANONYMOUS_ENABLED", "GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH",
    },
}  # fmt: skip


def _env_example() -> dict[str, str]:
    values: dict[str, str] = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            key, _, value = line.partition("=")
            values[key] = value
    return values


def _subcommands() -> set[str]:
    parser = build_parser()
    action = next(a for a in parser._actions if a.dest == "command")
    return set(action.choices)  # type: ignore[arg-type]


def test_compose_file_validates_against_the_compose_specification() -> None:
    schema = json.loads((REPO / "tests/deploy/schemas/compose-spec.json").read_text())
    validator = jsonschema.Draft201909Validator(schema)
    errors = [f"{e.json_path}: {e.message}" for e in validator.iter_errors(COMPOSE)]
    assert errors == []


def test_the_whole_stack_is_there() -> None:
    assert {"rabbitmq", "redis", "mongodb", "gateway", "prometheus", "grafana"} <= set(SERVICES)
    assert sorted(s["command"][1] for s in WORKERS.values()) == sorted(STAGES)


def test_every_service_has_an_image_a_restart_policy_and_a_health_check() -> None:
    for name, service in SERVICES.items():
        assert "image" in service or "build" in service, name
        if "etl" in service.get("profiles", []):
            continue  # a one-off job
        assert service["restart"] in {"unless-stopped", "always", "on-failure"}, name
        assert service["healthcheck"]["test"][0] in {"CMD", "CMD-SHELL"}, name


def test_faceval_services_run_the_projects_image_and_real_commands() -> None:
    commands = _subcommands()
    for name, service in SERVICES.items():
        if "build" not in service:
            continue
        assert service["build"]["context"] == "."
        assert service["build"]["dockerfile"] == "Dockerfile"
        assert service["command"][0] in commands, name
    assert SERVICES["gateway"]["command"] == ["gateway"]
    assert SERVICES["etl"]["command"][:2] == ["etl", "run"]


def test_workers_can_be_scaled() -> None:
    for name, service in WORKERS.items():
        assert "container_name" not in service, f"{name}: --scale needs no fixed name"
        assert "ports" not in service, f"{name}: --scale needs no host port"
        assert int(service["stop_grace_period"].rstrip("s")) >= 30, name


def test_faceval_environment_names_are_real_settings() -> None:
    for name, service in SERVICES.items():
        env = service.get("environment", {})
        assert isinstance(env, dict), f"{name}: use a mapping"
        for key in env:
            if key.startswith("FACEVAL_"):
                assert key in SETTINGS_ENV, f"{name}: {key} is no field of shared/settings.py"
            else:
                assert key in THIRD_PARTY_ENV.get(name, set()), f"{name}: unexpected {key}"


def test_faceval_services_use_the_real_backends() -> None:
    for name, service in SERVICES.items():
        env = service.get("environment", {})
        if "build" not in service:
            continue
        assert env["FACEVAL_EMBEDDED_MONGO"] == "false", name
        assert "@rabbitmq:5672/" in env["FACEVAL_BROKER_URL"], name
        assert env["FACEVAL_REDIS_URL"].startswith("redis://redis:6379/"), name
        assert "@mongodb:27017/" in env["FACEVAL_MONGO_URL"], name
        assert env["FACEVAL_PSEUDONYM_SECRET"].startswith("${"), name


def test_dependencies_exist_and_wait_for_health() -> None:
    for name, service in SERVICES.items():
        for target, condition in service.get("depends_on", {}).items():
            assert target in SERVICES, f"{name} depends on unknown {target}"
            assert condition["condition"] in {"service_healthy", "service_started"}
            if condition["condition"] == "service_healthy":
                assert "healthcheck" in SERVICES[target], f"{target} has no health check"
    for name, service in {**WORKERS, "gateway": SERVICES["gateway"]}.items():
        assert set(service["depends_on"]) == {"rabbitmq", "redis", "mongodb"}, name


def test_volumes_are_named_or_files_of_this_repository() -> None:
    declared = set(COMPOSE["volumes"])
    used: set[str] = set()
    for name, service in SERVICES.items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (REPO / source).exists(), f"{name}: {source} is not in the repository"
            else:
                assert source in declared, f"{name}: volume {source} is not declared"
                used.add(source)
    assert used == declared
    for stateful in ("rabbitmq", "mongodb", "prometheus", "grafana"):
        assert any(not v.startswith("./") for v in SERVICES[stateful]["volumes"]), stateful


def test_no_secret_is_committed_and_every_variable_is_in_env_example() -> None:
    text = (REPO / "docker-compose.yml").read_text()
    variables = set(re.findall(r"\$\{([A-Z_][A-Z0-9_]*)", text))
    example = _env_example()
    assert variables - set(example) == set(), "variables missing from .env.example"
    for key, value in example.items():
        if re.search(r"PASSWORD|SECRET", key):
            assert value == "", f".env.example must not hold a value for {key}"
            assert re.search(r"\$\{" + key + r":\?", text), f"{key} must be required"
    for service in SERVICES.values():
        for key, value in service.get("environment", {}).items():
            if re.search(r"PASSWORD|PASS$|SECRET", key):
                assert str(value).startswith("${"), f"{key} is set literally"


def test_prometheus_finds_every_worker_service_and_the_gateway() -> None:
    config = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    workers = jobs["faceval-workers"]["dns_sd_configs"][0]
    assert sorted(workers["names"]) == sorted(WORKERS)
    for service in WORKERS.values():
        assert service["environment"]["FACEVAL_METRICS_PORT"] == str(workers["port"])
    gateway = jobs["faceval-gateway"]["dns_sd_configs"][0]
    assert gateway["names"] == ["gateway"]
    assert SERVICES["gateway"]["environment"]["FACEVAL_PORT"] == str(gateway["port"])
    for job in ("rabbitmq", "rabbitmq-queues"):
        assert jobs[job]["static_configs"][0]["targets"] == ["rabbitmq:15692"]
    mounts = SERVICES["prometheus"]["volumes"]
    assert "./deploy/prometheus:/etc/prometheus:ro" in mounts


def test_rabbitmq_enables_its_prometheus_plugin() -> None:
    plugins = (REPO / "deploy/rabbitmq/enabled_plugins").read_text()
    assert re.fullmatch(r"\[rabbitmq_management,rabbitmq_prometheus\]\.\n", plugins)


# --- the Dockerfile ----------------------------------------------------------------------


def _dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments), continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n\s*", " ", (REPO / "Dockerfile").read_text())
    steps = []
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            instruction, _, rest = line.strip().partition(" ")
            steps.append((instruction.upper(), rest.strip()))
    return steps


def _stages() -> dict[str, list[tuple[str, str]]]:
    stages: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] = []
    for instruction, rest in _dockerfile():
        if instruction == "FROM":
            current = []
            stages[rest.split(" AS ")[-1].strip()] = current
        current.append((instruction, rest))
    return stages


def test_dockerfile_is_multi_stage_and_runs_as_a_non_root_user() -> None:
    stages = _stages()
    assert list(stages)[-1] == "runtime", "the default target is the runtime image"
    for final in ("runtime", "etl"):
        users = [rest for ins, rest in stages[final] if ins == "USER"]
        assert users and users[-1].split(":")[0] not in {"root", "0"}, final
        copies = [rest for ins, rest in stages[final] if ins == "COPY"]
        assert all(c.startswith("--from=") for c in copies), f"{final}: built elsewhere"
    runtime = dict(stages["runtime"])
    assert "HEALTHCHECK" in runtime
    assert json.loads(runtime["ENTRYPOINT"]) == ["faceval"]
    assert json.loads(runtime["CMD"])[0] in _subcommands()


def test_dockerfile_installs_without_dev_extras_and_pulls_models_at_build_time() -> None:
    build = [rest for ins, rest in _stages()["build"] if ins == "RUN"]
    assert "pip install ." in build, "the runtime gets the package alone, no extras"
    assert not any("[dev]" in r or "[embedded]" in r for _, r in _dockerfile())
    assert any(r.startswith("faceval models pull") for r in build)
    assert "models" in _subcommands()
    assert "etl" in _subcommands()


def _dockerignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parents wins."""
    parts = path.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    ignored = False
    for pattern in patterns:
        negated = pattern.startswith("!")
        glob = pattern.lstrip("!").removeprefix("**/")
        if any(fnmatch.fnmatchcase(c, glob) for c in candidates):
            ignored = not negated
    return ignored


def test_dockerfile_copies_only_what_the_context_sends() -> None:
    patterns = [
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    for secret_or_bulky in (".git", ".venv", ".env", ".faceval", "models/retinaface.onnx"):
        assert _dockerignored(secret_or_bulky, patterns), secret_or_bulky
    sources = [
        rest.split()[:-1]
        for ins, rest in _dockerfile()
        if ins == "COPY" and not rest.startswith("--from=")
    ]
    assert sources
    for paths in sources:
        for source in paths:
            assert (REPO / source).exists(), f"COPY {source}: not in the repository"
            assert not _dockerignored(source, patterns), f"COPY {source}: .dockerignore drops it"


@pytest.mark.parametrize("key", ["FACEVAL_PSEUDONYM_SECRET", "RABBITMQ_PASSWORD"])
def test_env_example_documents_how_to_fill_secrets(key: str) -> None:
    assert key in _env_example()
    assert "openssl rand" in ENV_EXAMPLE.read_text()
