"""The container and Kubernetes files: the Dockerfile lints clean, the Helm chart renders, and every
command they run is one the connector's own parsers accept (a typo there would only show up as a
crash loop in someone's cluster)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from oomnitza_connector.cli import build_parser
from oomnitza_connector.server.cli import build_parser as build_server_parser
from tests.helpers import ROOT, require

yaml = pytest.importorskip("yaml")

CHART = ROOT / "deploy" / "helm" / "oomnitza-connector"
VALUES = {
    "sections": [
        {"name": "csv_assets", "schedule": "0 2 * * *", "args": ["--workers", "4"]},
        {"name": "ldap.Contractors", "schedule": "30 2 * * *"},
    ],
    "managed": {"enabled": True, "args": ["--poll-interval", "30"]},
    "webhooks": {"enabled": True},
    "secretEnv": ["oomnitza-secrets"],
}


def parse_command(args: list[str]) -> Any:
    """Parse a container's arguments exactly as ``connector.py`` would (SystemExit on a bad one)."""
    if args[:1] == ["server"]:
        return build_server_parser().parse_args(args[1:])
    return build_parser().parse_args(args)


def _tool(name: str) -> str:
    path = shutil.which(name) or str(Path(__file__).resolve().parents[1] / ".venv" / "bin" / name)
    require(Path(path).exists(), f"{name} is not installed (pip install '.[dev]' on x86_64 Linux installs it)")
    return path


def render(tmp_path: Path, values: dict[str, Any]) -> list[dict[str, Any]]:
    file = tmp_path / "values.yaml"
    file.write_text(json.dumps(values), encoding="utf-8")  # JSON is YAML
    out = subprocess.run(
        [_tool("helm"), "template", "rel", str(CHART), "-f", str(file)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def pod_spec(doc: dict[str, Any]) -> dict[str, Any]:
    if doc["kind"] == "CronJob":
        return doc["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    return doc["spec"]["template"]["spec"]


def test_chart_lints() -> None:
    result = subprocess.run([_tool("helm"), "lint", str(CHART)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_chart_runs_one_cronjob_per_section_and_every_command_parses(tmp_path: Path) -> None:
    docs = render(tmp_path, VALUES)
    workloads = [d for d in docs if d["kind"] in ("CronJob", "Deployment")]
    cronjobs = {d["metadata"]["name"]: d for d in docs if d["kind"] == "CronJob"}
    assert set(cronjobs) == {"rel-oomnitza-connector-csv-assets", "rel-oomnitza-connector-ldap-contractors"}
    uploads = []
    log_dirs: list[str] = []
    for doc in workloads:
        spec = pod_spec(doc)
        assert spec["securityContext"]["runAsNonRoot"] is True
        for container in spec["containers"]:
            parsed = parse_command(container["args"])  # raises SystemExit on anything the CLI refuses
            assert container["resources"]["limits"], doc["metadata"]["name"]
            assert container["securityContext"]["readOnlyRootFilesystem"] is True
            assert container["envFrom"] == [{"secretRef": {"name": "oomnitza-secrets"}}]
            mounts = {m["mountPath"] for m in container["volumeMounts"]}
            assert {"/config", "/data", "/tmp"} <= mounts
            (log_dir,) = [e["value"] for e in container["env"] if e["name"] == "OOMNITZA_LOG_DIR"]
            log_dirs.append(log_dir)
            if getattr(parsed, "mode", None) == "upload":
                uploads.append((parsed.connectors, parsed.workers))
    assert sorted(uploads) == [(["csv_assets"], 4), (["ldap.Contractors"], 2)]
    assert sorted(log_dirs) == [  # on the state volume, one folder per workload
        "/data/logs/managed",
        "/data/logs/upload-csv-assets",
        "/data/logs/upload-ldap-contractors",
        "/data/logs/webhooks",
    ]
    for job in cronjobs.values():
        assert job["spec"]["concurrencyPolicy"] == "Forbid"  # two runs of one section never overlap
    deployments = [d for d in docs if d["kind"] == "Deployment"]
    assert {d["spec"]["replicas"] for d in deployments} == {1}
    modes = sorted(pod_spec(d)["containers"][0]["args"][0] for d in deployments)
    assert modes == ["managed", "server"]


def test_chart_config_map_carries_the_ini(tmp_path: Path) -> None:
    ini = "[oomnitza]\nurl = https://acme.oomnitza.com\n\n[csv_assets]\nenable = True\n"
    docs = render(tmp_path, {**VALUES, "config": ini})
    (config_map,) = [d for d in docs if d["kind"] == "ConfigMap"]
    assert config_map["data"]["config.ini"].strip() == ini.strip()


def test_chart_without_sections_renders_no_cronjob(tmp_path: Path) -> None:
    docs = render(tmp_path, {})
    assert not [d for d in docs if d["kind"] in ("CronJob", "Deployment")]


def test_compose_commands_parse() -> None:
    compose = yaml.safe_load((ROOT / "deploy" / "compose.yaml").read_text(encoding="utf-8"))
    for name, service in compose["services"].items():
        parse_command(service["command"])
        assert "/config" in " ".join(service["volumes"]), name


def _dockerfile_json(instruction: str) -> list[str]:
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    match = re.search(rf"^{instruction} (\[.*\])$", text, re.M)
    assert match, instruction
    return json.loads(match.group(1))


def test_dockerfile_runs_connector_py_as_a_non_root_user() -> None:
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    assert _dockerfile_json("ENTRYPOINT") == ["python", "/opt/connector/connector.py"]
    parse_command(_dockerfile_json("CMD"))
    user = re.findall(r"^USER (\S+)$", text, re.M)
    assert user and not user[-1].startswith(("root", "0")), user


def test_dockerfile_keeps_logs_on_the_state_volume() -> None:
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    assert re.search(r"^\s+OOMNITZA_LOG_DIR=/data/logs$", text, re.M)  # /opt/connector is read-only
    assert re.search(r"^WORKDIR /data$", text, re.M)  # the state directory's default


def test_dockerfile_lints_clean() -> None:
    result = subprocess.run([_tool("hadolint"), str(ROOT / "Dockerfile")], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_missing_extra_is_one_line_naming_the_pip_install(tmp_path: Path) -> None:
    """A lean install (no ldap3) with an [ldap] section: one line that names the extra to install."""
    ini = tmp_path / "config.ini"
    ini.write_text(
        "[oomnitza]\nurl = sqlite:///./store.db\n\n[ldap]\nenable = True\nurl = ldap://127.0.0.1:1\n"
        "username = cn=x\npassword = y\nbase_dn = dc=x\nfilter = (objectClass=*)\n",
        encoding="utf-8",
    )
    # Hide ldap3 from this interpreter only, as if it were not installed.
    script = (
        "import sys, importlib.abc\n"
        "class Hide(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] == 'ldap3': raise ModuleNotFoundError(name=name)\n"
        "sys.meta_path.insert(0, Hide())\n"
        "from oomnitza_connector.cli import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, "upload", "ldap", "--ini", str(ini)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert "pip install 'oomnitza-connector[ldap]'" in result.stderr, result.stderr
