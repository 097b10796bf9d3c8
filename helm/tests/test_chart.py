"""The chart lints and renders with its variants; every manifest validates
against the Kubernetes 1.30 schemas (strict); and what the chart says
matches what the binary does (health service names, port, grace period)."""

from __future__ import annotations

import re
from typing import Any

import kubernetes_validate
import pytest
from helm_python import chart
from helm_python.errors import HelmError

from conftest import (
    BASE,
    CHART,
    KUBE_VERSION,
    RELEASE,
    REPO,
    container,
    health_names,
    kinds,
    merged,
    notes,
    one,
    render,
    seconds,
    settings_toml,
)

VARIANTS: dict[str, dict[str, Any]] = {
    "default": {},
    "tls": {
        "insecure": False,
        "tls": {"enabled": True, "secretName": "sqlgate-tls", "clientAuth": "required"},
        "settings": {"auth": {"client_certificates": {"default_role": "reader"}}},
    },
    "existing-secret": {
        "database": {"url": "", "existingSecret": "app-db", "existingSecretKey": "url"},
    },
    "hpa-off": {"autoscaling": {"enabled": False}, "replicaCount": 3},
    "headless": {"service": {"headless": True}},
    "auth-tokens": {
        "insecure": False,
        "settings": {"auth": {"tokens": ["billing:writer:" + "0" * 64]}},
    },
    "metrics": {"metrics": {"enabled": True, "serviceMonitor": {"enabled": True}}},
    "network-policy": {
        "networkPolicy": {
            "enabled": True,
            "allowFrom": [{"podSelector": {"matchLabels": {"sqlgate-client": "true"}}}],
        }
    },
}


def values_of(variant: str) -> dict[str, Any]:
    return merged(BASE, VARIANTS[variant])


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_lints_strictly(variant: str) -> None:
    report = chart.lint(CHART, values_of(variant), strict=True, kube_version=KUBE_VERSION)
    assert report["errors"] == [], report
    serious = [m for m in report["messages"] if m["severity"] >= 2]
    assert serious == [], serious


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_every_manifest_validates_against_kubernetes_1_30(variant: str) -> None:
    manifests = render(values_of(variant))
    assert manifests
    for manifest in manifests:
        if manifest["apiVersion"].startswith("monitoring.coreos.com/"):
            # A Prometheus Operator CRD: no schema in Kubernetes' own.
            continue
        kubernetes_validate.validate(manifest, KUBE_VERSION, strict=True)


def test_default_install_has_every_part() -> None:
    manifests = render(values_of("default"))
    assert kinds(manifests) == sorted(
        [
            "ConfigMap",
            "Deployment",
            "HorizontalPodAutoscaler",
            "PodDisruptionBudget",
            "Secret",
            "Service",
            "ServiceAccount",
        ]
    )
    service = one(manifests, "Service", RELEASE)
    (port,) = service["spec"]["ports"]
    assert port["appProtocol"] == "kubernetes.io/h2c"
    assert port["targetPort"] == "grpc"


def test_probes_ask_the_health_services_the_binary_answers() -> None:
    liveness, readiness_names = health_names()
    manifests = render(values_of("default"))
    sqlgate = container(manifests)
    (grpc_port,) = [p for p in sqlgate["ports"] if p["name"] == "grpc"]
    listen = settings_toml(manifests)["listen"]
    assert listen == f"0.0.0.0:{grpc_port['containerPort']}"
    for probe, service in [
        ("startupProbe", liveness),
        ("livenessProbe", liveness),
        ("readinessProbe", "readiness"),
    ]:
        grpc = sqlgate[probe]["grpc"]
        assert grpc["service"] == service, probe
        assert grpc["port"] == grpc_port["containerPort"], probe
    assert "readiness" in readiness_names


def test_the_grace_period_covers_delay_drain_and_cleanup() -> None:
    for extra in [{}, {"shutdown": {"delaySeconds": 15, "drainTimeoutSeconds": 40, "cleanupSeconds": 5}}]:
        manifests = render(merged(BASE, extra))
        settings = settings_toml(manifests)["shutdown"]
        grace = one(manifests, "Deployment")["spec"]["template"]["spec"][
            "terminationGracePeriodSeconds"
        ]
        needed = seconds(settings["delay"]) + seconds(settings["drain_timeout"])
        # Rolling back the sessions and closing the pool take a few seconds more.
        assert grace >= needed + 3, (grace, settings)


def test_the_database_url_is_in_a_secret_never_in_the_configmap() -> None:
    manifests = render(values_of("default"))
    url = BASE["database"]["url"]
    assert url not in str(one(manifests, "ConfigMap"))
    assert "database_url" not in settings_toml(manifests)
    secret = one(manifests, "Secret")
    assert secret["stringData"]["database-url"] == url
    env = {e["name"]: e for e in container(manifests)["env"]}
    ref = env["SQLGATE_DATABASE_URL"]["valueFrom"]["secretKeyRef"]
    assert (ref["name"], ref["key"]) == (secret["metadata"]["name"], "database-url")


def test_an_existing_secret_is_used_and_none_is_created() -> None:
    manifests = render(values_of("existing-secret"))
    assert "Secret" not in kinds(manifests)
    env = {e["name"]: e for e in container(manifests)["env"]}
    assert env["SQLGATE_DATABASE_URL"]["valueFrom"]["secretKeyRef"] == {"name": "app-db", "key": "url"}


def test_tls_mounts_the_secret_and_probes_over_tls_with_the_binary() -> None:
    liveness, _ = health_names()
    manifests = render(values_of("tls"))
    sqlgate = container(manifests)
    tls = settings_toml(manifests)["tls"]
    mount = next(m for m in sqlgate["volumeMounts"] if m["name"] == "tls")["mountPath"]
    assert tls["cert_file"] == f"{mount}/tls.crt"
    assert tls["key_file"] == f"{mount}/tls.key"
    assert tls["client_ca_file"] == f"{mount}/ca.crt"
    assert tls["client_auth"] == "required"
    volumes = one(manifests, "Deployment")["spec"]["template"]["spec"]["volumes"]
    assert {"name": "tls", "secret": {"secretName": "sqlgate-tls"}} in volumes
    # The kubelet's gRPC probes cannot speak TLS: `sqlgate health` does.
    port = settings_toml(manifests)["listen"].rsplit(":", 1)[1]
    for probe, service in [
        ("startupProbe", liveness),
        ("livenessProbe", liveness),
        ("readinessProbe", "readiness"),
    ]:
        command = sqlgate[probe]["exec"]["command"]
        assert command[:4] == ["/usr/local/bin/sqlgate", "health", "--service", service], probe
        options = dict(zip(command[4::2], command[5::2]))
        assert options["--addr"] == f"127.0.0.1:{port}"
        assert options["--tls-ca"] == f"{mount}/ca.crt"
        assert options["--tls-server-name"] == f"{RELEASE}.apps.svc"
        # mTLS: the pod's own certificate is the probe's.
        assert options["--tls-cert"] == tls["cert_file"]
        assert options["--tls-key"] == tls["key_file"]
        assert options["--timeout"] == f"{sqlgate[probe]['timeoutSeconds']}s"
    assert "--insecure" not in sqlgate["args"]
    # The path the image installs the binary at.
    entrypoint = re.search(r'^ENTRYPOINT \["([^"]+)"\]', (REPO / "Dockerfile").read_text(), re.M)
    assert entrypoint and entrypoint.group(1) == "/usr/local/bin/sqlgate"


def test_hpa_off_sets_replicas() -> None:
    manifests = render(values_of("hpa-off"))
    assert "HorizontalPodAutoscaler" not in kinds(manifests)
    assert one(manifests, "Deployment")["spec"]["replicas"] == 3
    # With the HPA on, it owns the replica count.
    assert "replicas" not in one(render(values_of("default")), "Deployment")["spec"]


def test_headless_service_lists_pods_for_client_side_balancing() -> None:
    manifests = render(values_of("headless"))
    headless = one(manifests, "Service", f"{RELEASE}-headless")
    assert headless["spec"]["clusterIP"] == "None"
    assert headless["spec"]["selector"] == one(manifests, "Service", RELEASE)["spec"]["selector"]
    assert f"dns:///{RELEASE}-headless" in notes(values_of("headless"))


def test_metrics_port_and_service_monitor() -> None:
    manifests = render(values_of("metrics"))
    assert settings_toml(manifests)["metrics"]["listen"] == "0.0.0.0:9464"
    ports = {p["name"]: p["containerPort"] for p in container(manifests)["ports"]}
    assert ports["metrics"] == 9464
    monitor = one(manifests, "ServiceMonitor")
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"
    assert monitor["spec"]["endpoints"][0]["path"] == "/metrics"
    # Off by default: the binary is not told of a metrics listener.
    assert "metrics" not in settings_toml(render(values_of("default")))


def test_the_pod_is_locked_down() -> None:
    manifests = render(values_of("default"))
    pod = one(manifests, "Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    security = container(manifests)["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    assert "limits" in container(manifests)["resources"]
    assert pod["topologySpreadConstraints"]


def test_integers_reach_the_settings_as_integers() -> None:
    manifests = render(merged(BASE, {"settings": {"pool": {"max_connections": 24}, "sessions": {"max_pool_share": 0.5}}}))
    settings = settings_toml(manifests)
    assert settings["pool"]["max_connections"] == 24
    assert isinstance(settings["pool"]["max_connections"], int)
    assert settings["sessions"]["max_pool_share"] == 0.5


@pytest.mark.parametrize(
    "values, says",
    [
        ({"insecure": True}, "database.url"),
        ({"database": {"url": "postgres://u@db/x"}}, "neither TLS nor authentication"),
        (merged(BASE, {"tls": {"enabled": True}}), "tls.secretName"),
        (merged(BASE, {"settings": {"listen": "0.0.0.0:1"}}), "settings"),
        (merged(BASE, {"database": {"url": "oracle://db"}}), "url"),
        (merged(BASE, {"shutdown": {"delaySeconds": -1}}), "delaySeconds"),
        (merged(BASE, {"replicas": 3}), "replicas"),
    ],
    ids=["no-database", "exposed", "tls-without-secret", "listen-in-settings", "bad-scheme", "negative-delay", "unknown-key"],
)
def test_careless_values_are_refused_saying_why(values: dict[str, Any], says: str) -> None:
    with pytest.raises(HelmError) as refused:
        render(values)
    assert says in str(refused.value)


def test_notes_show_a_grpcurl_line_and_the_connection_budget() -> None:
    text = notes(values_of("hpa-off"))
    assert f"grpcurl -plaintext -d '{{\"sql\": \"SELECT 1\"}}' localhost:50051 sqlgate.v1.Query/Execute" in text
    assert "up to 72 with 3 replicas" in text  # (3 + 1 in a rollout) x (16 + 2)
    assert "WARNING: insecure=true" in text
