"""Render → run: the rendered Deployment's container args, env and mounted
ConfigMap run the real binary, with the service-link variables Kubernetes
injects for the rendered Service, against the test PostgreSQL; the
kubelet's own probe calls (grpc.health.v1 Check with the probe's service
name, within its timeout) see it start, turn ready, and, on SIGTERM, turn
not ready and exit 0 within the grace period."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from conftest import (
    NAMESPACE,
    RELEASE,
    binary,
    container,
    merged,
    one,
    render,
    skip_or_fail,
)

POSTGRES_URL = os.environ.get(
    "SQLGATE_TEST_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/postgres"
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def postgres_reachable() -> bool:
    host_port = POSTGRES_URL.split("@", 1)[-1].split("/", 1)[0]
    host, _, port = host_port.partition(":")
    try:
        socket.create_connection((host, int(port or 5432)), timeout=2).close()
        return True
    except OSError:
        return False


def service_links(service: dict[str, Any], cluster_ip: str) -> dict[str, str]:
    """The variables the kubelet injects into every pod of the namespace for
    `service` (docker-link style, as pkg/kubelet/envvars builds them)."""
    prefix = service["metadata"]["name"].upper().replace("-", "_")
    ports = service["spec"]["ports"]
    first = ports[0]
    env = {
        f"{prefix}_SERVICE_HOST": cluster_ip,
        f"{prefix}_SERVICE_PORT": str(first["port"]),
        f"{prefix}_PORT": f"tcp://{cluster_ip}:{first['port']}",
    }
    for port in ports:
        number, proto = port["port"], port.get("protocol", "TCP")
        if port.get("name"):
            env[f"{prefix}_SERVICE_PORT_{port['name'].upper().replace('-', '_')}"] = str(number)
        base = f"{prefix}_PORT_{number}_{proto}"
        env[base] = f"{proto.lower()}://{cluster_ip}:{number}"
        env[f"{base}_PROTO"] = proto.lower()
        env[f"{base}_PORT"] = str(number)
        env[f"{base}_ADDR"] = cluster_ip
    return env


class Pod:
    """The rendered container, run as a process: the ConfigMap's files in a
    directory standing for its mount, env from the rendered Secret."""

    def __init__(
        self,
        manifests: list[dict[str, Any]],
        root: Path,
        secrets: dict[str, dict[str, str]] | None = None,
    ) -> None:
        """`secrets`: the files of Secrets the cluster would hold (by name)."""
        self.manifests = manifests
        sqlgate = container(manifests)
        pod = one(manifests, "Deployment")["spec"]["template"]["spec"]
        volumes = {v["name"]: v for v in pod["volumes"]}
        self.mounts: dict[str, str] = {}
        for mount in sqlgate["volumeMounts"]:
            name = mount.get("subPath")
            local = root / mount["name"]
            self.mounts[mount["mountPath"]] = str(local / name) if name else str(local)
        # The files, with the paths they name inside the container mapped
        # as the mounts are (the settings file names the TLS files).
        for mount in sqlgate["volumeMounts"]:
            volume = volumes[mount["name"]]
            if "configMap" in volume:
                files = one(manifests, "ConfigMap", volume["configMap"]["name"])["data"]
            else:
                files = (secrets or {})[volume["secret"]["secretName"]]
            local = root / mount["name"]
            local.mkdir(exist_ok=True)
            name = mount.get("subPath")
            for key, text in files.items():
                if name is None or key == name:
                    for mounted, here in self.mounts.items():
                        text = text.replace(f'"{mounted}/', f'"{here}/')
                    (local / key).write_text(text)
        args = [self.local(a) for a in sqlgate["args"]]
        env = {k: v for k, v in os.environ.items() if not k.startswith("SQLGATE_")}
        for var in sqlgate.get("env", []):
            if "value" in var:
                env[var["name"]] = var["value"]
                continue
            ref = var["valueFrom"]["secretKeyRef"]
            secret = one(manifests, "Secret", ref["name"])
            env[var["name"]] = secret["stringData"][ref["key"]]
        # Every Service of the release, as the kubelet would inject them
        # (headless ones get none).
        for service in [m for m in manifests if m["kind"] == "Service"]:
            if service["spec"].get("clusterIP") != "None":
                env.update(service_links(service, "10.96.0.12"))
        self.env = env
        self.args = args
        self.container = sqlgate
        self.grace = pod["terminationGracePeriodSeconds"]
        self.process = subprocess.Popen(
            [str(binary()), *args],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )

    def local(self, path: str) -> str:
        """`path` as seen in the container, mapped to where its volume is here."""
        for mounted, local in self.mounts.items():
            if path == mounted or path.startswith(mounted + "/"):
                return local + path[len(mounted):]
        return path

    def output(self) -> str:
        if self.process.poll() is None:
            self.process.kill()
        out, _ = self.process.communicate(timeout=10)
        return out or ""

    def probe(self, name: str) -> str:
        """One kubelet gRPC probe: Check(service) on the probe's port with its
        timeout; the status name, or why it failed. An exec probe runs its
        command (the binary at the image's path is this build's)."""
        spec = self.container[name]
        if "exec" in spec:
            command = [self.local(part) for part in spec["exec"]["command"]]
            assert command[0] == "/usr/local/bin/sqlgate", command
            ran = subprocess.run(
                [str(binary()), *command[1:]],
                capture_output=True,
                text=True,
                timeout=spec.get("timeoutSeconds", 1) + 5,
            )
            return "SERVING" if ran.returncode == 0 else f"exit {ran.returncode}: {ran.stderr.strip()}"
        grpc_probe = spec["grpc"]
        with grpc.insecure_channel(f"127.0.0.1:{grpc_probe['port']}") as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            try:
                answer = stub.Check(
                    health_pb2.HealthCheckRequest(service=grpc_probe.get("service", "")),
                    timeout=spec.get("timeoutSeconds", 1),
                )
            except grpc.RpcError as err:
                return f"error: {err.code().name}"
        return health_pb2.HealthCheckResponse.ServingStatus.Name(answer.status)

    def until(self, name: str, wanted: str, attempts: int) -> None:
        """Probes every periodSeconds (at most `attempts` times) until `wanted`."""
        period = self.container[name].get("periodSeconds", 10)
        seen = []
        for _ in range(attempts):
            assert self.process.poll() is None, f"sqlgate exited: {self.output()}"
            seen.append(self.probe(name))
            if seen[-1] == wanted:
                return
            time.sleep(min(period, 1))
        pytest.fail(f"{name} never {wanted}: {seen}\n{self.output()}")


@pytest.fixture()
def pod(tmp_path: Path):
    if not binary().exists():
        skip_or_fail(f"no sqlgate binary at {binary()}: run cargo build first")
    if not postgres_reachable():
        skip_or_fail("the test PostgreSQL is unreachable")
    port = free_port()
    values = merged(
        {"database": {"url": POSTGRES_URL}, "insecure": True},
        {"port": port, "service": {"headless": True}, "shutdown": {"delaySeconds": 1, "drainTimeoutSeconds": 2}},
    )
    manifests = render(values)
    running = Pod(manifests, tmp_path)
    yield running
    if running.process.poll() is None:
        running.process.kill()
        running.process.wait()


def test_the_rendered_pod_starts_turns_ready_and_stops_within_its_grace(pod: Pod) -> None:
    # The service links are there, and name a setting-like prefix.
    assert pod.env["SQLGATE_PORT"].startswith("tcp://")
    assert "SQLGATE_SERVICE_HOST" in pod.env
    startup = pod.container["startupProbe"]
    pod.until("startupProbe", "SERVING", startup["failureThreshold"])
    pod.until("livenessProbe", "SERVING", 1)
    pod.until("readinessProbe", "SERVING", 20)

    pod.process.send_signal(signal.SIGTERM)
    signalled = time.monotonic()
    # Readiness goes at once, while the pod still answers (the delay).
    seen = []
    while time.monotonic() - signalled < 0.8:
        seen.append(pod.probe("readinessProbe"))
        if seen[-1] == "NOT_SERVING":
            break
        time.sleep(0.05)
    assert seen[-1] == "NOT_SERVING", seen
    assert pod.probe("livenessProbe") == "SERVING"
    code = pod.process.wait(timeout=pod.grace)
    out = pod.output()
    assert code == 0, out
    assert "INSECURE" in out


def test_the_rendered_pod_with_its_database_down_is_live_not_ready(tmp_path: Path) -> None:
    if not binary().exists():
        skip_or_fail(f"no sqlgate binary at {binary()}: run cargo build first")
    nothing = free_port()
    values = {
        "database": {"url": f"postgres://postgres@127.0.0.1:{nothing}/postgres"},
        "insecure": True,
        "port": free_port(),
    }
    pod = Pod(render(values), tmp_path)
    try:
        pod.until("startupProbe", "SERVING", pod.container["startupProbe"]["failureThreshold"])
        assert pod.probe("livenessProbe") == "SERVING"
        assert pod.probe("readinessProbe") == "NOT_SERVING"
    finally:
        pod.process.kill()
        pod.process.wait()


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def tls_secret(directory: Path, names: list[str]) -> dict[str, str]:
    """A kubernetes.io/tls Secret's files as cert-manager writes them: a
    certificate for `names` (server and client use), its key, and the CA."""
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", "ca.key", "-out", "ca.crt", "-days", "2", "-subj", "/CN=test CA", cwd=directory)
    openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", "tls.key", "-out", "tls.csr", "-subj", f"/CN={names[0]}", cwd=directory)
    (directory / "ext.cnf").write_text(
        "subjectAltName=" + ",".join(f"DNS:{n}" for n in names) + "\n"
        "extendedKeyUsage=serverAuth,clientAuth\n"
    )
    openssl("x509", "-req", "-in", "tls.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", "tls.crt", "-days", "2", "-extfile", "ext.cnf", cwd=directory)
    return {name: (directory / name).read_text() for name in ["tls.crt", "tls.key", "ca.crt"]}


def test_the_rendered_pod_with_mtls_is_probed_over_tls_by_its_own_binary(tmp_path: Path) -> None:
    if not binary().exists():
        skip_or_fail(f"no sqlgate binary at {binary()}: run cargo build first")
    if not postgres_reachable():
        skip_or_fail("the test PostgreSQL is unreachable")
    certs = tmp_path / "certs"
    certs.mkdir()
    secret = tls_secret(certs, [f"{RELEASE}.{NAMESPACE}.svc", f"{RELEASE}.{NAMESPACE}.svc.cluster.local"])
    values = {
        "database": {"url": POSTGRES_URL},
        "port": free_port(),
        "tls": {"enabled": True, "secretName": "sqlgate-tls", "clientAuth": "required"},
        "settings": {"auth": {"client_certificates": {"default_role": "reader"}}},
    }
    pod = Pod(render(values), tmp_path, secrets={"sqlgate-tls": secret})
    try:
        assert "--insecure" not in pod.args
        pod.until("startupProbe", "SERVING", pod.container["startupProbe"]["failureThreshold"])
        pod.until("readinessProbe", "SERVING", 20)
        # Plaintext, as the kubelet's own gRPC probe would ask: refused.
        plain = pod.container["readinessProbe"]
        port = values["port"]
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            with pytest.raises(grpc.RpcError):
                health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(service="readiness"),
                    timeout=plain["timeoutSeconds"],
                )
    finally:
        pod.process.kill()
        pod.process.wait()
