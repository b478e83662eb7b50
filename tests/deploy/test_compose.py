"""docker-compose.yml, the Dockerfile and .env.example, checked offline (no Docker engine)."""

from __future__ import annotations

import fnmatch
import json
import re
import shutil
import subprocess
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jsonschema  # type: ignore[import-untyped]
import yaml

from cli.main import build_parser
from shared.pipeline import STAGES
from shared.settings import Settings
from tests.deploy.catalogue import PROMETHEUS_DIR, REPO, tool

COMPOSE = yaml.safe_load((REPO / "docker-compose.yml").read_text())
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]
ENV_EXAMPLE = REPO / ".env.example"
#: FACEVAL_SECRETS_DIR is read by shared/settings.py itself, not a field.
SETTINGS_ENV = {f"FACEVAL_{name.upper()}" for name in Settings.model_fields} | {
    "FACEVAL_SECRETS_DIR"
}
WORKERS = {name: s for name, s in SERVICES.items() if s.get("command", [""])[0] == "worker"}
#: Environment variables the third-party images read.
THIRD_PARTY_ENV = {
    "mongodb": {"MONGO_INITDB_ROOT_USERNAME", "MONGO_INITDB_ROOT_PASSWORD_FILE"},
    "postgres": {"POSTGRES_USER", "POSTGRES_DB", "POSTGRES_PASSWORD_FILE"},
    "etl": {"MPLCONFIGDIR"},
    "grafana": {
        "GF_SECURITY_ADMIN_USER", "GF_SECURITY_ADMIN_PASSWORD__FILE", "GF_USERS_ALLOW_SIGN_UP",
        "GF_AUTH_ANONYMOUS_ENABLED", "GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH",
    },
}  # fmt: skip
#: Which backend a FaceVal secret URL must name, and on which port.
SECRET_URLS = {
    "faceval_broker_url": ("rabbitmq", 5672),
    "faceval_redis_url": ("redis", 6379),
    "faceval_mongo_url": ("mongodb", 27017),
    "faceval_etl_postgres_url": ("postgres", 5432),
}
#: Backends a FaceVal service may use, and the services that use each beyond the core three.
CORE_BACKENDS = {"rabbitmq", "redis", "mongodb"}
VECTOR_USERS = {"gateway", "identity"}


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


def _secret_names(service: dict[str, Any]) -> set[str]:
    return {s if isinstance(s, str) else s["source"] for s in service.get("secrets", [])}


@cache
def _generated_secrets() -> dict[str, str]:
    """What scripts/compose-secrets.sh writes, in a scratch directory."""
    target = Path(subprocess.run(["mktemp", "-d"], capture_output=True, text=True,
                                 check=True).stdout.strip()) / "secrets"  # fmt: skip
    try:
        subprocess.run(["bash", str(REPO / "scripts/compose-secrets.sh"), str(target)],
                       check=True, capture_output=True, timeout=60)  # fmt: skip
        return {p.name: p.read_text() for p in target.iterdir()}
    finally:
        shutil.rmtree(target.parent)


def test_compose_file_validates_against_the_compose_specification() -> None:
    schema = json.loads((REPO / "tests/deploy/schemas/compose-spec.json").read_text())
    validator = jsonschema.Draft201909Validator(schema)
    errors = [f"{e.json_path}: {e.message}" for e in validator.iter_errors(COMPOSE)]
    assert errors == []


def test_docker_compose_itself_accepts_the_file(tmp_path: Path) -> None:
    """docker-compose 1.29 (Debian's) resolves anchors, secrets and profiles like a deploy."""
    compose = tool("docker-compose")  # scripts/ensure-tools.sh installs it
    shutil.copy(REPO / "docker-compose.yml", tmp_path)
    for path in ("deploy/prometheus", "deploy/grafana/provisioning", "deploy/grafana/dashboards"):
        (tmp_path / path).mkdir(parents=True)
    (tmp_path / "deploy/rabbitmq").mkdir()
    (tmp_path / "deploy/rabbitmq/enabled_plugins").write_text("")
    subprocess.run(["bash", str(REPO / "scripts/compose-secrets.sh"), str(tmp_path / "secrets")],
                   check=True, capture_output=True, timeout=60)  # fmt: skip
    for profile in ([], ["--profile", "etl"]):
        done = subprocess.run([compose, "--compatibility", *profile, "config", "-q"],
                              cwd=tmp_path, capture_output=True, text=True, timeout=60)  # fmt: skip
        assert done.returncode == 0, done.stderr


def test_the_whole_stack_is_there() -> None:
    assert {"rabbitmq", "redis", "mongodb", "qdrant", "gateway", "prometheus", "grafana",
            "postgres", "etl"} <= set(SERVICES)  # fmt: skip
    assert sorted(s["command"][1] for s in WORKERS.values()) == sorted(STAGES)


def test_every_service_has_an_image_a_restart_policy_a_health_check_and_bounded_logs() -> None:
    for name, service in SERVICES.items():
        assert "image" in service or "build" in service, name
        assert service["logging"]["driver"] == "json-file", name
        assert {"max-size", "max-file"} <= set(service["logging"]["options"]), name
        if name == "etl":
            continue  # a one-off job
        assert service["restart"] in {"unless-stopped", "always", "on-failure"}, name
        assert service["healthcheck"]["test"][0] in {"CMD", "CMD-SHELL"}, name


def test_third_party_images_are_pinned_by_tag_or_digest() -> None:
    for name, service in SERVICES.items():
        if "build" in service:
            continue
        image = service["image"]
        reference, _, digest = image.partition("@")
        assert digest == "" or re.fullmatch(r"sha256:[0-9a-f]{64}", digest), name
        repository, _, tag = reference.rpartition(":")
        assert repository and "/" not in tag, f"{name}: {image} has no tag"
        assert tag not in {"latest", "stable"}, f"{name}: {image} floats"


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


def test_worker_health_checks_use_the_broker_url_and_the_heartbeat() -> None:
    for name, service in WORKERS.items():
        check = " ".join(service["healthcheck"]["test"][1:])
        assert "shared.probes ready" in check and "shared.probes alive" in check, name
        assert "5672" not in check, f"{name}: the port comes from FACEVAL_BROKER_URL"


def test_faceval_environment_names_are_real_settings() -> None:
    for name, service in SERVICES.items():
        env = service.get("environment", {})
        assert isinstance(env, dict), f"{name}: use a mapping"
        for key in env:
            if key.startswith("FACEVAL_"):
                assert key in SETTINGS_ENV, f"{name}: {key} is no field of shared/settings.py"
            else:
                assert key in THIRD_PARTY_ENV.get(name, set()), f"{name}: unexpected {key}"


def test_faceval_services_read_their_secrets_from_files_naming_the_real_backends() -> None:
    generated = _generated_secrets()
    for name, service in SERVICES.items():
        if "build" not in service:
            continue
        env = service["environment"]
        assert env["FACEVAL_EMBEDDED_MONGO"] == "false", name
        assert env["FACEVAL_SECRETS_DIR"] == "/run/secrets", name
        secrets = _secret_names(service)
        assert {"faceval_mongo_url", "faceval_pseudonym_secret"} <= secrets, name
        if name != "etl":
            assert {"faceval_broker_url", "faceval_redis_url"} <= secrets, name
        for secret in secrets:
            # pydantic-settings matches a file to the setting of the same name.
            assert secret.upper() in SETTINGS_ENV, f"{name}: {secret} is no setting"
    assert "faceval_etl_postgres_url" in _secret_names(SERVICES["etl"])
    for secret, (host, port) in SECRET_URLS.items():
        url = urlsplit(generated[secret])
        assert (url.hostname, url.port) == (host, port), secret
        assert url.password, f"{secret}: the backend requires a password"
    broker = urlsplit(generated["faceval_broker_url"]).password
    assert f"default_pass = {broker}" in generated["rabbitmq.conf"]
    redis = urlsplit(generated["faceval_redis_url"]).password
    assert generated["redis.conf"].strip() == f"requirepass {redis}"
    assert generated["redis_password"] == redis
    assert urlsplit(generated["faceval_mongo_url"]).password == generated["mongo_password"]
    postgres = urlsplit(generated["faceval_etl_postgres_url"]).password
    assert postgres == generated["postgres_password"]


def test_secrets_are_files_never_environment_values() -> None:
    declared = COMPOSE["secrets"]
    generated = _generated_secrets()
    for secret, spec in declared.items():
        assert spec["file"] == f"./secrets/{secret}", secret
        assert secret in generated, f"scripts/compose-secrets.sh does not make {secret}"
    for name, service in SERVICES.items():
        assert _secret_names(service) <= set(declared), name
        for key, value in service.get("environment", {}).items():
            if re.search(r"PASSWORD|PASS$|SECRET|_URL$", key) and not key.endswith("_FILE"):
                assert "@" not in str(value) and "${" not in str(value), f"{name}: {key}"
                assert key in {"FACEVAL_QDRANT_URL", "FACEVAL_SECRETS_DIR"}, f"{name}: {key}"
    assert SERVICES["redis"]["command"][1] == "/run/secrets/redis.conf"
    assert "redis_password" in _secret_names(SERVICES["redis"])


def test_dependencies_exist_and_wait_for_health() -> None:
    for name, service in SERVICES.items():
        for target, condition in service.get("depends_on", {}).items():
            assert target in SERVICES, f"{name} depends on unknown {target}"
            assert condition["condition"] in {"service_healthy", "service_started"}
            if condition["condition"] == "service_healthy":
                assert "healthcheck" in SERVICES[target], f"{target} has no health check"
    for name, service in {**WORKERS, "gateway": SERVICES["gateway"]}.items():
        expected = CORE_BACKENDS | ({"qdrant"} if name in VECTOR_USERS else set())
        assert set(service["depends_on"]) == expected, name
    assert set(SERVICES["etl"]["depends_on"]) == {"mongodb", "postgres"}
    assert SERVICES["postgres"]["profiles"] == SERVICES["etl"]["profiles"]


def test_the_vector_engine_is_qdrant_on_the_compose_network() -> None:
    assert SERVICES["qdrant"]["image"].startswith("qdrant/qdrant:")
    assert "ports" not in SERVICES["qdrant"], "templates are reached on the compose network"
    for name in VECTOR_USERS:
        env = SERVICES[name]["environment"]
        assert env["FACEVAL_VECTOR_ENGINE"] == "qdrant", name
        assert urlsplit(env["FACEVAL_QDRANT_URL"]).netloc == "qdrant:6333", name


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
    for stateful in ("rabbitmq", "mongodb", "qdrant", "postgres", "prometheus", "grafana"):
        assert any(not v.startswith("./") for v in SERVICES[stateful]["volumes"]), stateful


def test_every_variable_is_in_env_example_and_none_is_a_secret() -> None:
    text = (REPO / "docker-compose.yml").read_text()
    variables = set(re.findall(r"\$\{([A-Z_][A-Z0-9_]*)", text))
    example = _env_example()
    assert variables - set(example) == set(), "variables missing from .env.example"
    for key in set(example) | variables:
        assert not re.search(r"PASSWORD|SECRET", key), f"{key}: a secret belongs in ./secrets"
    assert "scripts/compose-secrets.sh" in ENV_EXAMPLE.read_text()


def test_the_secrets_directory_is_never_committed_or_sent_to_a_build() -> None:
    assert "/secrets/" in (REPO / ".gitignore").read_text().splitlines()
    assert "secrets" in (REPO / ".dockerignore").read_text().splitlines()


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
    assert "pip install --no-deps --require-hashes -r requirements/image.txt" in build
    assert any(r.startswith("pip install --no-deps . ") for r in build), "no extras, no deps"
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


def test_qdrant_requires_the_api_key_only_its_clients_are_given() -> None:
    generated = _generated_secrets()
    key = generated["faceval_qdrant_api_key"]
    assert len(key) >= 32
    # Qdrant merges config/local.yaml (relative to its working directory /qdrant).
    assert yaml.safe_load(generated["qdrant.yaml"]) == {"service": {"api_key": key}}
    [mount] = [s for s in SERVICES["qdrant"]["secrets"] if not isinstance(s, str)]
    assert mount == {"source": "qdrant.yaml", "target": "/qdrant/config/local.yaml"}
    for name, service in SERVICES.items():
        if service.get("image", "").startswith("faceval:"):
            given = "faceval_qdrant_api_key" in _secret_names(service)
            assert given == (name in VECTOR_USERS), name
