"""Secrets end to end: strongbox over a real (encrypted file) keyring, Vault and Conjur fakes over
HTTP, environment variables, and a run whose Oomnitza token lives only in each backend."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from oomnitza_connector.secrets import conjur
from oomnitza_connector.secrets.strongbox import main as strongbox
from tests.fakes.conjur import FakeConjur
from tests.fakes.oomnitza import FakeOomnitza
from tests.fakes.server import serve
from tests.fakes.vault import FakeVault

from .helpers import ROOT, cheap_keyring_kdf, run_cli

TOKEN = "test-token"  # the fake Oomnitza's API token: it must never show up in output


@pytest.fixture
def keyring_file_default_kdf(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The real encrypted-file keyring backend, in a temporary file."""
    path = tmp_path / "keyring.cfg"
    monkeypatch.setenv("OOMNITZA_KEYRING", "cryptfile")
    monkeypatch.setenv("OOMNITZA_KEYRING_PASSWORD", "unlock-me-please")
    monkeypatch.setenv("OOMNITZA_KEYRING_FILE", str(path))
    return path


@pytest.fixture
def keyring_file(keyring_file_default_kdf: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The same with the cheapest key derivation (the default costs seconds per test)."""
    cheap_keyring_kdf(monkeypatch)
    return keyring_file_default_kdf


def store(service: str, key: str, value: str) -> None:
    err = io.StringIO()
    assert (
        strongbox(["--connector", service, "--key", key, "--value", "-"], stdin=io.StringIO(value + "\n"), stderr=err)
        == 0
    ), err.getvalue()


def config(tmp_path: Path, fake: FakeOomnitza, oomnitza_lines: str) -> Path:
    (tmp_path / "a.csv").write_text("serial\nS1\nS2\n", encoding="utf-8")
    text = "\n".join(
        [
            "[oomnitza]",
            f"url = {fake.url}",
            *oomnitza_lines.splitlines(),
            "",
            "[csv_assets]",
            "enable = True",
            f"filename = {tmp_path}/a.csv",
            "sync_field = SERIAL",
            'mapping.SERIAL = {"source": "serial"}',
            "",
        ]
    )
    path = tmp_path / "config.ini"
    path.write_text(text, encoding="utf-8")
    return path


def upload_ok(ini: Path, fake: FakeOomnitza) -> str:
    result = run_cli("upload", "csv_assets", "--ini", str(ini), "--show-mappings")
    assert result.code == 0, result.all
    result2 = run_cli("upload", "csv_assets", "--ini", str(ini), "--debug")
    assert result2.code == 0, result2.all
    assert len(fake.records("assets")) == 2
    return result.all + result2.all


# -- strongbox -------------------------------------------------------------------------------------


def test_strongbox_set_list_delete(keyring_file: Path) -> None:
    store("zendesk.abc", "api_token", "s3cr3t-value")
    store("zendesk.abc", "username", "svc@acme.test")
    out = io.StringIO()
    assert strongbox(["--connector", "zendesk.abc", "--list"], stdout=out) == 0
    assert out.getvalue().split() == ["api_token", "username"]
    assert "s3cr3t-value" not in keyring_file.read_text()  # encrypted at rest
    err = io.StringIO()
    assert strongbox(["--connector", "zendesk.abc", "--key", "api_token", "--delete"], stderr=err) == 0
    out = io.StringIO()
    strongbox(["--connector", "zendesk.abc", "--list"], stdout=out)
    assert out.getvalue().split() == ["username"]
    assert strongbox(["--connector", "zendesk.abc", "--key", "nope", "--delete"], stderr=io.StringIO()) == 1


def test_strongbox_refuses_unsafe_or_empty_values(keyring_file: Path) -> None:
    err = io.StringIO()
    assert strongbox(["--connector", "x", "--key", "k", "--value", "on-the-command-line"], stderr=err) == 2
    assert "shell history" in err.getvalue()
    err = io.StringIO()
    assert strongbox(["--connector", "x", "--key", "k", "--value="], stdin=io.StringIO(""), stderr=err) == 2
    assert "empty" in err.getvalue()


def test_strongbox_version_and_usage() -> None:
    out = io.StringIO()
    assert strongbox(["--version"], stdout=out) == 0 and out.getvalue().startswith("strongbox ")
    with pytest.raises(SystemExit) as exc:
        strongbox(["--key", "k"])
    assert exc.value.code == 2


def test_strongbox_script_and_subcommand(keyring_file_default_kdf: Path) -> None:
    """The script in a process of its own, and the library's own key derivation parameters."""
    env = {**os.environ}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "strongbox.py"), "--connector=oomnitza", "--key=api_token", "--value="],
        input="from-a-pipe\n",
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert "has been saved" in proc.stderr
    result = run_cli("strongbox", "--connector", "oomnitza", "--list")
    assert result.code == 0 and result.out.split() == ["api_token"]


def test_no_usable_keyring_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake_oomnitza: FakeOomnitza
) -> None:
    monkeypatch.delenv("OOMNITZA_KEYRING", raising=False)
    monkeypatch.setenv("PYTHON_KEYRING_BACKEND", "keyring.backends.fail.Keyring")
    result = run_cli("upload", "csv_assets", "--ini", str(config(tmp_path, fake_oomnitza, "vault_keys = api_token")))
    assert result.code == 1
    assert "no usable OS keyring" in result.err and "OOMNITZA_KEYRING=cryptfile" in result.err
    assert "Traceback" not in result.all


# -- keyring backend ---------------------------------------------------------------------------------


def test_oomnitza_token_from_keyring(tmp_path: Path, keyring_file: Path, fake_oomnitza: FakeOomnitza) -> None:
    store("oomnitza", "api_token", TOKEN)
    ini = config(tmp_path, fake_oomnitza, "vault_backend = keyring\nvault_keys = api_token")
    output = upload_ok(ini, fake_oomnitza)
    assert TOKEN not in output


def test_alias_and_comma_separated_keys(tmp_path: Path, keyring_file: Path, fake_oomnitza_factory) -> None:
    fake = fake_oomnitza_factory(username="svc", password="pw-from-keyring")
    store("prod-oomnitza", "username", "svc")
    store("prod-oomnitza", "password", "pw-from-keyring")
    ini = config(tmp_path, fake, "vault_alias = prod-oomnitza\nvault_keys = username, password\npassword = ignored")
    output = upload_ok(ini, fake)
    assert "pw-from-keyring" not in output


def test_missing_secret_names_the_strongbox_command(
    tmp_path: Path, keyring_file: Path, fake_oomnitza: FakeOomnitza
) -> None:
    result = run_cli("upload", "csv_assets", "--ini", str(config(tmp_path, fake_oomnitza, "vault_keys = api_token")))
    assert result.code == 1
    assert result.err.strip().splitlines() == [
        "error: [oomnitza] the secret 'api_token' was not found in the OS keyring; store it with: "
        "python strongbox.py --connector=oomnitza --key=api_token --value="
    ]


def test_wrong_keyring_password(
    tmp_path: Path, keyring_file: Path, fake_oomnitza: FakeOomnitza, monkeypatch: pytest.MonkeyPatch
) -> None:
    store("oomnitza", "api_token", TOKEN)
    monkeypatch.setenv("OOMNITZA_KEYRING_PASSWORD", "not-the-password")
    result = run_cli("upload", "csv_assets", "--ini", str(config(tmp_path, fake_oomnitza, "vault_keys = api_token")))
    assert result.code == 1 and "keyring" in result.err and "Traceback" not in result.all


# -- environment ----------------------------------------------------------------------------------


def test_environment_variables(tmp_path: Path, fake_oomnitza: FakeOomnitza, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OOMNITZA__OOMNITZA__API_TOKEN", TOKEN)
    output = upload_ok(config(tmp_path, fake_oomnitza, "api_token = overridden-by-env"), fake_oomnitza)
    assert TOKEN not in output


def test_backend_wins_over_environment(
    tmp_path: Path, keyring_file: Path, fake_oomnitza: FakeOomnitza, monkeypatch: pytest.MonkeyPatch
) -> None:
    store("oomnitza", "api_token", TOKEN)
    monkeypatch.setenv("OOMNITZA__OOMNITZA__API_TOKEN", "wrong-from-env")
    upload_ok(config(tmp_path, fake_oomnitza, "vault_keys = api_token"), fake_oomnitza)


# -- Vault ----------------------------------------------------------------------------------------


@pytest.fixture
def vault() -> Iterator[FakeVault]:
    fake = FakeVault()
    with serve(fake.app) as url:
        fake.url = url
        yield fake


@pytest.mark.parametrize(
    "mount, setting",
    [
        ("secret", ""),
        ("kv1", "vault_mount = kv1"),
        ("secret", "vault_kv_version = 2"),
        ("kv1", "vault_mount = kv1\nvault_kv_version = 1"),
    ],
)
def test_vault_kv_versions(
    tmp_path: Path,
    vault: FakeVault,
    fake_oomnitza: FakeOomnitza,
    monkeypatch: pytest.MonkeyPatch,
    mount: str,
    setting: str,
) -> None:
    vault.data[(mount, "oomnitza")] = {"api_token": TOKEN}
    monkeypatch.setenv("VAULT_ADDR", vault.url)
    monkeypatch.setenv("VAULT_TOKEN", vault.token)
    ini = config(tmp_path, fake_oomnitza, f"vault_backend = vault\nvault_keys = api_token\n{setting}")
    output = upload_ok(ini, fake_oomnitza)
    assert TOKEN not in output and vault.token not in output


def test_vault_bootstrap_from_keyring_and_legacy_url(
    tmp_path: Path, vault: FakeVault, keyring_file: Path, fake_oomnitza: FakeOomnitza
) -> None:
    vault.data[("secret", "oomnitza")] = {"api_token": TOKEN}
    store("oomnitza", "vault_url", f"{vault.url}/v1/secret/oomnitza")  # as the seed's docs showed it
    store("oomnitza", "vault_token", vault.token)
    upload_ok(config(tmp_path, fake_oomnitza, "vault_backend = vault\nvault_keys = api_token"), fake_oomnitza)
    assert all(r.headers.get("x-vault-token") == vault.token for r in vault.requests)


def test_vault_namespace_and_path(
    tmp_path: Path, vault: FakeVault, fake_oomnitza: FakeOomnitza, monkeypatch: pytest.MonkeyPatch
) -> None:
    vault.namespace = "team-it"
    vault.data[("secret", "connectors/oomnitza")] = {"api_token": TOKEN}
    monkeypatch.setenv("VAULT_TOKEN", vault.token)
    ini = config(
        tmp_path,
        fake_oomnitza,
        f"vault_backend = vault\nvault_keys = api_token\nvault_url = {vault.url}\n"
        "vault_namespace = team-it\nvault_path = connectors/oomnitza",
    )
    upload_ok(ini, fake_oomnitza)


@pytest.mark.parametrize(
    "problem, message",
    [
        ("token", "Vault refused to read secret/oomnitza (403)"),
        ("path", "Vault has no secret at secret/oomnitza (KV v2)"),
        ("key", "the secret 'api_token' was not found in Vault"),
        ("bootstrap", "vault_token for the secret backend is not set"),
    ],
)
def test_vault_errors(
    tmp_path: Path,
    vault: FakeVault,
    fake_oomnitza: FakeOomnitza,
    monkeypatch: pytest.MonkeyPatch,
    problem: str,
    message: str,
) -> None:
    monkeypatch.delenv("VAULT_TOKEN", raising=False)
    monkeypatch.setenv("PYTHON_KEYRING_BACKEND", "keyring.backends.fail.Keyring")
    if problem != "path":
        vault.data[("secret", "oomnitza")] = {"other": "x"} if problem == "key" else {"api_token": TOKEN}
    if problem != "bootstrap":
        monkeypatch.setenv("VAULT_TOKEN", "wrong" if problem == "token" else vault.token)
    ini = config(tmp_path, fake_oomnitza, f"vault_backend = vault\nvault_keys = api_token\nvault_url = {vault.url}")
    result = run_cli("upload", "csv_assets", "--ini", str(ini))
    assert result.code == 1
    assert message in result.err, result.err
    assert len(result.err.strip().splitlines()) == 1 and "Traceback" not in result.all


# -- Conjur ---------------------------------------------------------------------------------------


@pytest.fixture
def conjur_server() -> Iterator[FakeConjur]:
    fake = FakeConjur(account="acme", login="host/oomnitza-connector")
    conjur._tokens.clear()
    with serve(fake.app) as url:
        fake.url = url
        yield fake


def conjur_ini(tmp_path: Path, fake: FakeOomnitza, conjur_fake: FakeConjur) -> Path:
    return config(
        tmp_path,
        fake,
        "\n".join(
            [
                "vault_backend = cyberark",
                "vault_keys = api_token",
                f"vault_url = {conjur_fake.url}",
                "conjur_account = acme",
                "conjur_login = host/oomnitza-connector",
                "conjur_variable_prefix = prod/oomnitza/",
            ]
        ),
    )


def test_conjur_reads_url_encoded_variables(
    tmp_path: Path, conjur_server: FakeConjur, fake_oomnitza: FakeOomnitza, monkeypatch: pytest.MonkeyPatch
) -> None:
    conjur_server.variables["prod/oomnitza/api_token"] = TOKEN
    monkeypatch.setenv("CONJUR_AUTHN_API_KEY", conjur_server.api_key)
    output = upload_ok(conjur_ini(tmp_path, fake_oomnitza, conjur_server), fake_oomnitza)
    assert TOKEN not in output and conjur_server.api_key not in output
    assert conjur_server.authentications == 1  # the token is reused until it expires
    auth = conjur_server.calls("/authn/")[0]
    assert auth.path == "/authn/acme/host/oomnitza-connector/authenticate" or "%2F" in auth.path


def test_conjur_expired_token_is_refreshed(
    tmp_path: Path, conjur_server: FakeConjur, fake_oomnitza: FakeOomnitza, monkeypatch: pytest.MonkeyPatch
) -> None:
    conjur_server.variables["prod/oomnitza/api_token"] = TOKEN
    conjur_server.uses_per_token = 1
    monkeypatch.setenv("CONJUR_AUTHN_API_KEY", conjur_server.api_key)
    upload_ok(conjur_ini(tmp_path, fake_oomnitza, conjur_server), fake_oomnitza)
    assert conjur_server.authentications >= 2


@pytest.mark.parametrize(
    "problem, message",
    [
        ("key", "Conjur rejected the API key of 'host/oomnitza-connector' in account 'acme' (401)"),
        ("missing", "the secret 'api_token' was not found in Conjur"),
    ],
)
def test_conjur_errors(
    tmp_path: Path,
    conjur_server: FakeConjur,
    fake_oomnitza: FakeOomnitza,
    monkeypatch: pytest.MonkeyPatch,
    problem: str,
    message: str,
) -> None:
    monkeypatch.setenv("CONJUR_AUTHN_API_KEY", "wrong" if problem == "key" else conjur_server.api_key)
    result = run_cli("upload", "csv_assets", "--ini", str(conjur_ini(tmp_path, fake_oomnitza, conjur_server)))
    assert result.code == 1
    assert message in result.err and "Traceback" not in result.all
