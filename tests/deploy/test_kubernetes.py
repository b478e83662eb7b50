"""deploy/k8s: each overlay renders, validates against the Kubernetes and KEDA schemas, and
its cross-references hold (selectors, ConfigMaps and Secrets, scale targets, queues)."""

from __future__ import annotations

import base64
import re
import subprocess
from collections.abc import Iterator
from functools import cache
from typing import Any
from urllib.parse import urlsplit

import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml
from cloudcoil.models.keda import v1alpha1 as keda
from cloudcoil.models.prometheus_operator import v1 as monitoring

from shared.pipeline import STAGES, queue_name
from shared.settings import Settings
from tests.deploy.catalogue import (
    K8S_DIR,
    PROMETHEUS_DIR,
    load_catalogue,
    metric_names,
    queryable_names,
    tool,
)

Obj = dict[str, Any]
OVERLAYS = ["dev", "prod"]
#: The cluster version the manifests are validated against.
KUBERNETES_VERSION = "1.32.0"
KEDA_KINDS = {
    "ScaledObject": keda.ScaledObject,
    "TriggerAuthentication": keda.TriggerAuthentication,
}
#: Prometheus Operator kinds (prod), validated with models generated from its CRDs.
MONITORING_KINDS = {
    "PodMonitor": monitoring.PodMonitor,
    "PrometheusRule": monitoring.PrometheusRule,
}
CRD_KINDS = {**KEDA_KINDS, **MONITORING_KINDS}
WORKLOADS = {"Deployment", "StatefulSet", "CronJob"}
#: Created outside the repository in production (prod/kustomization.yaml says how).
EXTERNAL_SECRETS = {"prod": {"faceval-secrets"}, "dev": set()}
SETTINGS_ENV = {f"FACEVAL_{name.upper()}" for name in Settings.model_fields}
BACKEND_PORTS = {"rabbitmq": {5672, 5671}, "redis": {6379}, "mongodb": {27017}}


@cache
def render(overlay: str) -> tuple[Obj, ...]:
    done = subprocess.run(
        [tool("kubectl", installed_by_ci=False), "kustomize", str(K8S_DIR / "overlays" / overlay)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return tuple(doc for doc in yaml.safe_load_all(done.stdout) if doc)


def of_kind(objects: tuple[Obj, ...], *kinds: str) -> list[Obj]:
    return [o for o in objects if o["kind"] in kinds]


def named(objects: tuple[Obj, ...], kind: str, name: str) -> Obj:
    found = [o for o in of_kind(objects, kind) if o["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} found"
    return found[0]


def pod_template(workload: Obj) -> Obj:
    spec = workload["spec"]
    if workload["kind"] == "CronJob":
        spec = spec["jobTemplate"]["spec"]
    template: Obj = spec["template"]
    return template


def faceval_pods(objects: tuple[Obj, ...]) -> Iterator[tuple[Obj, Obj]]:
    """(workload, pod template) of FaceVal's own workloads (not the dev backends)."""
    for workload in of_kind(objects, *WORKLOADS):
        template = pod_template(workload)
        if template["metadata"]["labels"].get("app.kubernetes.io/part-of") == "faceval":
            yield workload, template


def matches(selector: Obj, labels: dict[str, str]) -> bool:
    assert set(selector) <= {"matchLabels", "matchExpressions"}
    assert "matchExpressions" not in selector, "extend this test for matchExpressions"
    return all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items())


def worker_stage(deployment: Obj) -> str:
    args = pod_template(deployment)["spec"]["containers"][0]["args"]
    assert args[0] == "worker" and len(args) == 2, args
    stage: str = args[1]
    return stage


def config_value(objects: tuple[Obj, ...], key: str) -> str:
    configs = [c for c in of_kind(objects, "ConfigMap") if c["metadata"]["name"].startswith(
        "faceval-config")]  # fmt: skip
    assert len(configs) == 1
    value: str = configs[0]["data"][key]
    return value


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_object_validates_against_the_kubernetes_schemas(overlay: str) -> None:
    objects = render(overlay)
    checked = 0
    for obj in objects:
        if obj["kind"] in CRD_KINDS:
            continue
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
        checked += 1
    assert checked >= 20


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_keda_objects_validate_against_their_crd_models(overlay: str) -> None:
    objects = of_kind(render(overlay), *KEDA_KINDS)
    assert len(objects) == len(STAGES) + 1
    for obj in objects:
        model = KEDA_KINDS[obj["kind"]].model_validate(obj)
        # The models ignore unknown fields: a round trip that loses one reveals it.
        back = model.model_dump(by_alias=True, exclude_unset=True, mode="json")
        assert back == obj, f"{obj['kind']}/{obj['metadata']['name']} has unknown fields"


def test_prometheus_operator_objects_validate_against_their_crd_models() -> None:
    objects = of_kind(render("prod"), *MONITORING_KINDS)
    assert sorted(o["kind"] for o in objects) == ["PodMonitor"] * 3 + ["PrometheusRule"]
    for obj in objects:
        model = MONITORING_KINDS[obj["kind"]].model_validate(obj)
        back = model.model_dump(by_alias=True, exclude_unset=True, mode="json")
        assert back == obj, f"{obj['kind']}/{obj['metadata']['name']} has unknown fields"


def test_pod_monitors_name_their_jobs_as_the_rules_and_dashboards_do() -> None:
    objects = render("prod")
    pods = [t for _, t in faceval_pods(objects)]
    expected = ["faceval-gateway", "faceval-workers", "rabbitmq", "rabbitmq-queues"]
    jobs: list[str] = []
    for monitor in of_kind(objects, "PodMonitor"):
        selector = monitor["spec"]["selector"]
        for endpoint in monitor["spec"]["podMetricsEndpoints"]:
            job = [r["replacement"] for r in endpoint["relabelings"] if r["targetLabel"] == "job"]
            assert len(job) == 1, monitor["metadata"]["name"]
            jobs += job
            if selector["matchLabels"].get("faceval.io/backend") == "rabbitmq":
                continue  # the operator's pods, outside this repository
            chosen = [t for t in pods if matches(selector, t["metadata"]["labels"])]
            assert chosen, monitor["metadata"]["name"]
            for template in chosen:
                ports = {p["name"] for p in template["spec"]["containers"][0]["ports"]}
                assert endpoint["port"] in ports, monitor["metadata"]["name"]
    assert sorted(jobs) == expected
    compose = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())
    assert [j["job_name"] for j in compose["scrape_configs"]] == expected


def test_the_prometheus_rule_is_the_rule_files_rendered() -> None:
    from scripts.render_prometheusrule import TARGET
    from scripts.render_prometheusrule import render as render_rule

    assert TARGET.read_text() == render_rule(), "run scripts/render_prometheusrule.py"
    rule = named(render("prod"), "PrometheusRule", "faceval")
    groups = [g["name"] for g in rule["spec"]["groups"]]
    assert len(groups) == len(set(groups)) > 0


def test_keda_latency_triggers_fail_on_a_missing_metric_instead_of_reading_zero() -> None:
    for obj in of_kind(render("prod"), "ScaledObject"):
        for trigger in obj["spec"]["triggers"]:
            if trigger["type"] != "prometheus":
                continue
            assert trigger["metadata"]["ignoreNullValues"] == "false"
            query = trigger["metadata"]["query"]
            assert "vector(" not in query, "vector(0) would turn a missing series into 0"
            assert trigger["metadata"]["serverAddress"].startswith("http://prometheus-operated.")


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_ingress_publishes_only_the_api_and_the_demo_in_development(overlay: str) -> None:
    ingress = named(render(overlay), "Ingress", "faceval-gateway")
    paths = {p["path"] for rule in ingress["spec"]["rules"] for p in rule["http"]["paths"]}
    assert paths == ({"/v1/", "/demo"} if overlay == "dev" else {"/v1/"})
    for path in paths:
        for private in ("/metrics", "/docs", "/openapi.json", "/healthz", "/readyz"):
            assert not private.startswith(path), f"{path} would publish {private}"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_pod_disruption_budgets_never_block_a_drain(overlay: str) -> None:
    objects = render(overlay)
    replicas = {d["metadata"]["name"]: d["spec"]["replicas"]
                for d in of_kind(objects, "Deployment")}  # fmt: skip
    minimum = {h["spec"]["scaleTargetRef"]["name"]: h["spec"]["minReplicas"]
               for h in of_kind(objects, "HorizontalPodAutoscaler")}  # fmt: skip
    for budget in of_kind(objects, "PodDisruptionBudget"):
        name = budget["metadata"]["name"]
        if "maxUnavailable" in budget["spec"]:
            assert budget["spec"]["maxUnavailable"] >= 1, name
            continue
        floor = min(replicas.get(name, 1), minimum.get(name, replicas.get(name, 1)))
        assert budget["spec"]["minAvailable"] < floor, f"{name}: minAvailable blocks drains"


def test_generated_config_and_secrets_get_content_hashes_so_changes_roll_pods() -> None:
    objects = render("dev")
    for obj in of_kind(objects, "ConfigMap", "Secret"):
        name = obj["metadata"]["name"]
        if name.startswith("faceval-"):
            assert re.search(r"-[a-z0-9]{10}$", name), f"{name} has no content hash"
    secrets = {s["metadata"]["name"] for s in of_kind(objects, "Secret")}
    assert any(n.startswith("faceval-secrets-") for n in secrets)
    auth = named(objects, "TriggerAuthentication", "faceval-rabbitmq")
    assert {r["name"] for r in auth["spec"]["secretTargetRef"]} <= secrets


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_everything_lands_in_one_namespace(overlay: str) -> None:
    objects = render(overlay)
    assert [n["metadata"]["name"] for n in of_kind(objects, "Namespace")] == ["faceval"]
    for obj in objects:
        if obj["kind"] != "Namespace":
            assert obj["metadata"]["namespace"] == "faceval", obj["metadata"]["name"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_selectors_match_their_pods(overlay: str) -> None:
    objects = render(overlay)
    pods = [pod_template(w)["metadata"]["labels"] for w in of_kind(objects, *WORKLOADS)]
    for workload in of_kind(objects, "Deployment", "StatefulSet"):
        assert matches(workload["spec"]["selector"], pod_template(workload)["metadata"]["labels"])
    for service in of_kind(objects, "Service"):
        selector = {"matchLabels": service["spec"]["selector"]}
        assert any(matches(selector, p) for p in pods), service["metadata"]["name"]
    for budget in of_kind(objects, "PodDisruptionBudget"):
        chosen = [p for p in pods if matches(budget["spec"]["selector"], p)]
        assert len(chosen) == 1, budget["metadata"]["name"]
    for policy in of_kind(objects, "NetworkPolicy"):
        assert any(matches(policy["spec"]["podSelector"], p) for p in pods), policy


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_config_maps_and_secrets_referenced_exist(overlay: str) -> None:
    objects = render(overlay)
    config_maps = {c["metadata"]["name"] for c in of_kind(objects, "ConfigMap")}
    secrets = {s["metadata"]["name"] for s in of_kind(objects, "Secret")}
    secrets |= EXTERNAL_SECRETS[overlay]
    claims = {c["metadata"]["name"] for c in of_kind(objects, "PersistentVolumeClaim")}
    referenced: set[str] = set()
    for workload in of_kind(objects, *WORKLOADS):
        spec = pod_template(workload)["spec"]
        for container in spec["containers"]:
            for source in container.get("envFrom", []):
                if "configMapRef" in source:
                    assert source["configMapRef"]["name"] in config_maps
                if "secretRef" in source:
                    referenced.add(source["secretRef"]["name"])
        for volume in spec.get("volumes", []):
            if "configMap" in volume:
                assert volume["configMap"]["name"] in config_maps
            if "persistentVolumeClaim" in volume:
                assert volume["persistentVolumeClaim"]["claimName"] in claims
    for auth in of_kind(objects, "TriggerAuthentication"):
        referenced |= {ref["name"] for ref in auth["spec"]["secretTargetRef"]}
    assert any(name.startswith("faceval-secrets") for name in referenced)
    assert referenced <= secrets


def test_production_commits_no_secret_and_dev_secrets_say_so() -> None:
    assert of_kind(render("prod"), "Secret") == []
    checked = 0
    for secret in of_kind(render("dev"), "Secret"):
        for key, value in secret["data"].items():
            text = base64.b64decode(value).decode()
            if re.search(r"SECRET|PASS", key) or "@" in text:
                assert "dev-only" in text, f"{key}: a dev placeholder must say dev-only"
                checked += 1
    assert checked >= 6


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_stage_has_a_worker_scaled_on_its_real_queue(overlay: str) -> None:
    objects = render(overlay)
    prefix = config_value(objects, "FACEVAL_QUEUE_PREFIX")
    workers = {
        d["metadata"]["name"]: worker_stage(d)
        for d in of_kind(objects, "Deployment")
        if d["metadata"]["labels"].get("app.kubernetes.io/component") == "worker"
    }
    assert sorted(workers.values()) == sorted(STAGES)
    auths = {a["metadata"]["name"] for a in of_kind(objects, "TriggerAuthentication")}
    scaled = of_kind(objects, "ScaledObject")
    assert sorted(s["spec"]["scaleTargetRef"]["name"] for s in scaled) == sorted(workers)
    for obj in scaled:
        stage = workers[obj["spec"]["scaleTargetRef"]["name"]]
        triggers = {t["type"]: t for t in obj["spec"]["triggers"]}
        assert set(triggers) == {"rabbitmq", "prometheus"}
        rabbit = triggers["rabbitmq"]
        assert rabbit["metadata"]["queueName"] == queue_name(stage, prefix)  # type: ignore[arg-type]
        assert rabbit["metadata"]["mode"] == "QueueLength"
        assert rabbit["authenticationRef"]["name"] in auths
        latency = triggers["prometheus"]
        assert f'stage="{stage}"' in latency["metadata"]["query"]
        assert obj["spec"]["minReplicaCount"] >= 1, "zero consumers stop the pipeline"


def test_scaled_object_queues_are_the_queues_celery_routes_to() -> None:
    from shared.messaging import make_celery

    app = make_celery(Settings(queue_prefix="faceval"))
    routed = {route["queue"] for route in app.conf.task_routes.values()}
    scaled = {
        t["metadata"]["queueName"]
        for s in of_kind(render("prod"), "ScaledObject")
        for t in s["spec"]["triggers"]
        if t["type"] == "rabbitmq"
    }
    assert scaled == routed


def test_latency_triggers_query_catalogued_series() -> None:
    allowed = queryable_names(load_catalogue())
    for obj in of_kind(render("prod"), "ScaledObject"):
        for trigger in obj["spec"]["triggers"]:
            if trigger["type"] == "prometheus":
                used = metric_names(trigger["metadata"]["query"])
                assert used and used <= allowed, used - allowed


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_scale_targets_exist(overlay: str) -> None:
    objects = render(overlay)
    for obj in of_kind(objects, "ScaledObject", "HorizontalPodAutoscaler"):
        named(objects, "Deployment", obj["spec"]["scaleTargetRef"]["name"])
    for ingress in of_kind(objects, "Ingress"):
        for rule in ingress["spec"]["rules"]:
            for path in rule["http"]["paths"]:
                backend = path["backend"]["service"]
                service = named(objects, "Service", backend["name"])
                assert backend["port"]["name"] in {p["name"] for p in service["spec"]["ports"]}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_faceval_containers_are_locked_down_and_sized(overlay: str) -> None:
    pods = list(faceval_pods(render(overlay)))
    assert len(pods) == len(STAGES) + 3  # workers, gateway, ETL, Qdrant
    for workload, template in pods:
        spec = template["spec"]
        name = workload["metadata"]["name"]
        assert spec["securityContext"]["runAsNonRoot"] is True, name
        assert spec["securityContext"]["runAsUser"] != 0, name
        assert spec["automountServiceAccountToken"] is False, name
        for container in spec["containers"]:
            context = container["securityContext"]
            assert context["allowPrivilegeEscalation"] is False, name
            assert context["readOnlyRootFilesystem"] is True, name
            assert context["capabilities"]["drop"] == ["ALL"], name
            resources = container["resources"]
            assert {"cpu", "memory"} <= set(resources["requests"]), name
            assert {"cpu", "memory"} <= set(resources["limits"]), name
            mounts = {m["mountPath"] for m in container.get("volumeMounts", [])}
            assert "/tmp" in mounts, f"{name}: a read-only root needs a writable /tmp"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_long_running_containers_have_probes_on_declared_ports(overlay: str) -> None:
    for workload, template in faceval_pods(render(overlay)):
        if workload["kind"] == "CronJob":
            continue
        for container in template["spec"]["containers"]:
            ports = {p["name"] for p in container["ports"]}
            for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
                check = container[probe]
                if "httpGet" in check:
                    assert check["httpGet"]["port"] in ports
                else:
                    command = check["exec"]["command"]
                    assert command[:3] == ["python", "-m", "shared.probes"], command
                    assert command[3] in {"ready", "alive"}
                    assert "5672" not in " ".join(command), "the port comes from the URL"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_workers_shut_down_gracefully_and_expose_metrics(overlay: str) -> None:
    for _, template in faceval_pods(render(overlay)):
        if template["metadata"]["labels"]["app.kubernetes.io/component"] != "worker":
            continue
        spec = template["spec"]
        assert spec["terminationGracePeriodSeconds"] >= 30
        container = spec["containers"][0]
        env = {e["name"]: e.get("value") for e in container["env"]}
        port = next(p["containerPort"] for p in container["ports"] if p["name"] == "metrics")
        assert env["FACEVAL_METRICS_PORT"] == str(port)
        assert template["metadata"]["annotations"]["prometheus.io/port"] == str(port)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_faceval_environment_names_are_real_settings(overlay: str) -> None:
    objects = render(overlay)
    names = set(next(c for c in of_kind(objects, "ConfigMap") if c["metadata"]["name"]
                     .startswith("faceval-config"))["data"])  # fmt: skip
    for secret in of_kind(objects, "Secret"):
        if secret["metadata"]["name"].startswith("faceval-secrets"):
            names |= set(secret["data"])
    for workload, template in faceval_pods(objects):
        if workload["metadata"]["name"] == "qdrant":
            continue  # a third-party server: its own QDRANT__* settings
        for container in template["spec"]["containers"]:
            names |= {e["name"] for e in container.get("env", [])}
    faceval = {n for n in names if n.startswith("FACEVAL_")}
    assert faceval - SETTINGS_ENV == set()
    assert names - faceval <= {"HOME", "MPLCONFIGDIR"}


def test_network_policies_let_workers_reach_only_the_backends_and_dns() -> None:
    objects = render("dev")
    policies = {p["metadata"]["name"]: p["spec"] for p in of_kind(objects, "NetworkPolicy")}
    assert policies["faceval-default-deny"]["policyTypes"] == ["Ingress", "Egress"]
    assert "egress" not in policies["faceval-default-deny"]
    workers = policies["faceval-workers"]
    reached = {
        rule["to"][0]["podSelector"]["matchLabels"]["faceval.io/backend"]:
            {p["port"] for p in rule["ports"]}
        for rule in workers["egress"]
    }  # fmt: skip
    assert reached == BACKEND_PORTS
    dns_ports = {p["port"] for p in policies["faceval-allow-dns"]["egress"][0]["ports"]}
    assert dns_ports == {53}
    # Each backend the policies name is a real pod of the dev overlay, on that port.
    for backend, ports in BACKEND_PORTS.items():
        pods = [
            t for w in of_kind(objects, "StatefulSet")
            if (t := pod_template(w))["metadata"]["labels"].get("faceval.io/backend") == backend
        ]  # fmt: skip
        assert len(pods) == 1, backend
        served = {p["containerPort"] for p in pods[0]["spec"]["containers"][0]["ports"]}
        assert served & ports


def test_the_etl_may_reach_exactly_mongodb_and_postgres() -> None:
    objects = render("dev")
    policy = named(objects, "NetworkPolicy", "faceval-etl")["spec"]
    reached = {
        rule["to"][0]["podSelector"]["matchLabels"]["faceval.io/backend"]:
            {p["port"] for p in rule["ports"]}
        for rule in policy["egress"]
    }  # fmt: skip
    assert reached == {"mongodb": {27017}, "postgres": {5432}}
    assert "ingress" not in policy and "Ingress" in policy["policyTypes"]
    cron = named(objects, "CronJob", "faceval-etl")
    assert matches(policy["podSelector"], pod_template(cron)["metadata"]["labels"])
    postgres = [t for w in of_kind(objects, "StatefulSet")
                if (t := pod_template(w))["metadata"]["labels"].get("faceval.io/backend")
                == "postgres"]  # fmt: skip
    assert len(postgres) == 1
    assert "FACEVAL_ETL_POSTGRES_URL" in named(objects, "Secret", dev_secret(objects))["data"]


def test_only_the_gateway_and_identity_workers_reach_qdrant() -> None:
    objects = render("prod")
    policies = {p["metadata"]["name"]: p["spec"] for p in of_kind(objects, "NetworkPolicy")}
    pods = {w["metadata"]["name"]: pod_template(w)["metadata"]["labels"]
            for w in of_kind(objects, *WORKLOADS)}  # fmt: skip
    clients = policies["faceval-vector-clients"]
    chosen = {n for n, labels in pods.items() if matches(clients["podSelector"], labels)}
    assert chosen == {"faceval-gateway", "faceval-identity"}
    assert {p["port"] for p in clients["egress"][0]["ports"]} == {6333, 6334}
    store = policies["faceval-qdrant"]
    assert matches(store["podSelector"], pods["qdrant"])
    sources = store["ingress"][0]["from"]
    admitted = {n for n, labels in pods.items()
                if any(matches(f["podSelector"], labels) for f in sources)}  # fmt: skip
    assert admitted == {"faceval-gateway", "faceval-identity"}
    service = named(objects, "Service", "qdrant")
    assert {p["port"] for p in service["spec"]["ports"]} == {6333, 6334}
    url = urlsplit(config_value(objects, "FACEVAL_QDRANT_URL"))
    assert (url.hostname, url.port) == ("qdrant", 6333)
    assert config_value(objects, "FACEVAL_VECTOR_ENGINE") == "qdrant"


def dev_secret(objects: tuple[Obj, ...]) -> str:
    names = [s["metadata"]["name"] for s in of_kind(objects, "Secret")
             if s["metadata"]["name"].startswith("faceval-secrets")]  # fmt: skip
    assert len(names) == 1
    return names[0]


def test_dev_urls_point_at_the_dev_backend_services() -> None:
    objects = render("dev")
    secret = named(objects, "Secret", dev_secret(objects))
    services = {s["metadata"]["name"]: s for s in of_kind(objects, "Service")}
    for key, backend in [("FACEVAL_BROKER_URL", "rabbitmq"), ("FACEVAL_REDIS_URL", "redis"),
                         ("FACEVAL_MONGO_URL", "mongodb"),
                         ("FACEVAL_ETL_POSTGRES_URL", "postgres")]:  # fmt: skip
        url = urlsplit(base64.b64decode(secret["data"][key]).decode())
        # KEDA resolves the broker from its own namespace: only the FQDN works there.
        fqdn = f"{backend}.faceval.svc.cluster.local"
        assert url.hostname == (fqdn if key == "FACEVAL_BROKER_URL" else backend), key
        assert url.password and "dev-only" in url.password, key
        assert url.port in {p["port"] for p in services[backend]["spec"]["ports"]}, key


def test_the_etl_cron_job_runs_the_etl_once_at_a_time() -> None:
    from cli.main import build_parser

    cron = named(render("prod"), "CronJob", "faceval-etl")
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"
    container = pod_template(cron)["spec"]["containers"][0]
    assert container["args"][:3] == ["etl", "run", "--out"]
    assert container["image"].endswith("faceval-etl:0.1.0")
    parsed = build_parser().parse_args(container["args"])
    assert parsed.out == container["args"][3]


def test_the_kubernetes_scrape_config_finds_the_pods_the_manifests_define() -> None:
    config = yaml.safe_load((PROMETHEUS_DIR / "prometheus-k8s.yml").read_text())
    objects = render("prod")
    for job in config["scrape_configs"][:2]:
        keeps = {
            tuple(r["source_labels"]): r["regex"]
            for r in job["relabel_configs"]
            if r.get("action") == "keep"
        }
        component = keeps[("__meta_kubernetes_pod_label_app_kubernetes_io_component",)]
        port_name = keeps[("__meta_kubernetes_pod_container_port_name",)]
        chosen = [
            t for _, t in faceval_pods(objects)
            if t["metadata"]["labels"]["app.kubernetes.io/component"] == component
        ]  # fmt: skip
        assert chosen, job["job_name"]
        for template in chosen:
            ports = {p["name"] for p in template["spec"]["containers"][0]["ports"]}
            assert port_name in ports, job["job_name"]
        namespaces = job["kubernetes_sd_configs"][0]["namespaces"]["names"]
        assert namespaces == ["faceval"]


def test_qdrant_requires_the_api_key_its_clients_read_from_the_same_secret() -> None:
    for overlay in OVERLAYS:
        objects = render(overlay)
        qdrant = pod_template(named(objects, "StatefulSet", "qdrant"))["spec"]["containers"][0]
        env = {e["name"]: e for e in qdrant["env"]}
        ref = env["QDRANT__SERVICE__API_KEY"]["valueFrom"]["secretKeyRef"]
        assert ref["key"] == "FACEVAL_QDRANT_API_KEY"
        assert ref["name"].startswith("faceval-secrets")
        for _, pod in faceval_pods(objects):
            sources = [s["secretRef"]["name"] for c in pod["spec"]["containers"]
                       for s in c.get("envFrom", []) if "secretRef" in s]  # fmt: skip
            if sources:
                assert ref["name"] in sources
    dev = render("dev")
    assert "FACEVAL_QDRANT_API_KEY" in named(dev, "Secret", dev_secret(dev))["data"]
