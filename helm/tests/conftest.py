"""Shared helpers for the chart's tests: render the chart offline (the Helm
SDK from PyPI, no helm binary, no cluster) and read what sqlgate's own
sources say the chart must match."""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml
from helm_python import chart

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "sqlgate"
KUBE_VERSION = "v1.30.0"
RELEASE = "sqlgate"
NAMESPACE = "apps"

# The values every install must give: a database URL, and a choice about
# exposure (sqlgate refuses a network address with neither TLS nor auth).
BASE: dict[str, Any] = {
    "database": {"url": "postgres://sqlgate:secret@db.apps.svc:5432/app"},
    "insecure": True,
}


def merged(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """`extra` laid over `base`, recursively (as Helm merges --set)."""
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merged(out[key], value)
        else:
            out[key] = value
    return out


def render(values: dict[str, Any], name: str = RELEASE) -> list[dict[str, Any]]:
    """Every manifest the chart renders with `values`, parsed."""
    with chart.Chart.load(CHART) as loaded:
        rendered = loaded.render(values, name=name, namespace=NAMESPACE)
    manifests = []
    for path, text in rendered.items():
        if not path.endswith(".yaml"):
            continue
        manifests.extend(doc for doc in yaml.safe_load_all(text) if doc)
    return manifests


def notes(values: dict[str, Any]) -> str:
    """The chart's NOTES.txt as rendered with `values`."""
    with chart.Chart.load(CHART) as loaded:
        rendered = loaded.render(values, name=RELEASE, namespace=NAMESPACE)
    return next(text for path, text in rendered.items() if path.endswith("NOTES.txt"))


def one(manifests: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    """The single manifest of `kind` (named `name`, if given)."""
    found = [
        m
        for m in manifests
        if m["kind"] == kind and (name is None or m["metadata"]["name"] == name)
    ]
    assert len(found) == 1, f"{len(found)} {kind} {name or ''}: {[m['metadata']['name'] for m in found]}"
    return found[0]


def kinds(manifests: list[dict[str, Any]]) -> list[str]:
    return sorted(m["kind"] for m in manifests)


def container(manifests: list[dict[str, Any]]) -> dict[str, Any]:
    """The Deployment's sqlgate container."""
    spec = one(manifests, "Deployment")["spec"]["template"]["spec"]
    (sqlgate,) = [c for c in spec["containers"] if c["name"] == "sqlgate"]
    return sqlgate


def settings_toml(manifests: list[dict[str, Any]]) -> dict[str, Any]:
    """sqlgate's settings file from the rendered ConfigMap, parsed."""
    config = one(manifests, "ConfigMap")
    return tomllib.loads(config["data"]["sqlgate.toml"])


DURATION = re.compile(r"^(\d+)(ms|s|m|h)$")


def seconds(duration: str) -> float:
    """A humantime duration such as `5s` or `10m`, in seconds."""
    match = DURATION.match(duration)
    assert match, f"not a simple duration: {duration!r}"
    number, unit = int(match.group(1)), match.group(2)
    return number * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[unit]


def health_names() -> tuple[str, list[str]]:
    """The health service names the binary answers, read from its source:
    (liveness, the names that follow readiness)."""
    source = (REPO / "src" / "health.rs").read_text()
    liveness = re.search(r'pub const LIVENESS: &str = "([^"]*)";', source)
    readiness = re.search(r"pub const READINESS_NAMES: \[&str; \d+\] = \[([^\]]*)\];", source)
    assert liveness and readiness, "src/health.rs names its health services"
    return liveness.group(1), re.findall(r'"([^"]*)"', readiness.group(1))


def binary() -> Path:
    """The sqlgate binary built by `cargo build`."""
    target = Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target"))
    return target / "debug" / "sqlgate"


def in_ci() -> bool:
    return os.environ.get("CI") == "true"


def skip_or_fail(why: str) -> None:
    """Skips loudly, or fails under CI=true."""
    if in_ci():
        pytest.fail(f"{why} (CI is set)")
    pytest.skip(f"SKIPPING: {why}")
