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
from tests.fakes.server import serve, serving
from tests.fakes.vault import FakeVault

from .helpers import ROOT, CliResult, cheap_keyring_kdf, run_cli
from .sourcekit import STALL_TIMEOUT, STANDARD_FAULTS, assert_accounted, assert_one_line_error, inject_fault

TOKEN = "test-token"  # the fake Oomnitza's API token: it must never show up in output
PROXY_PAGE = "<html><body><h1>Proxy authentication required</h1></body></html>"  # a 200 that is not the vendor


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
    with serving(fake):
        yield fake


def vault_ini(tmp_path: Path, fake: FakeOomnitza, vault: FakeVault, extra: str = "") -> Path:
    lines = f"vault_backend = vault\nvault_keys = api_token\nvault_url = {vault.url}\n{extra}"
    return config(tmp_path, fake, lines)


def upload_once(ini: Path) -> CliResult:
    return run_cli("upload", "csv_assets", "--ini", str(ini))


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
    assert all(r.headers.get("x-vault-request") == "true" for r in vault.requests)  # as Vault's clients send
    if "vault_kv_version" not in setting:  # the mount check asks about the secret's full path, as the CLI does
        assert vault.calls("/v1/sys/internal/ui/mounts/")[0].path == f"/v1/sys/internal/ui/mounts/{mount}/oomnitza"


def test_vault_bootstrap_from_keyring_and_legacy_url(
    tmp_path: Path, vault: FakeVault, keyring_file: Path, fake_oomnitza: FakeOomnitza
) -> None:
    vault.data[("secret", "oomnitza")] = {"api_token": TOKEN}
    store("oomnitza", "vault_url", f"{vault.url}/v1/secret/oomnitza")  # as the seed's docs showed it
    store("oomnitza", "vault_token", vault.token)
    upload_ok(config(tmp_path, fake_oomnitza, "vault_backend = vault\nvault_keys = api_token"), fake_oomnitza)
    assert all(r.headers.get("x-vault-token") == vault.token for r in vault.requests)


def test_vault_namespace_path_and_restricted_policy(
    tmp_path: Path, vault: FakeVault, fake_oomnitza: FakeOomnitza, monkeypatch: pytest.MonkeyPatch
) -> None:
    vault.namespace = "team-it"
    vault.mounts["kv/apps"] = 2  # a nested mount: the longest prefix wins
    vault.data[("kv/apps", "connectors/oomnitza")] = {"api_token": TOKEN}
    vault.policy = {"kv/apps/data/connectors/oomnitza"}  # read on that one secret, as the docs recommend
    monkeypatch.setenv("VAULT_TOKEN", vault.token)
    extra = "vault_namespace = team-it/\nvault_mount = kv/apps\nvault_path = connectors/oomnitza"
    upload_ok(vault_ini(tmp_path, fake_oomnitza, vault, extra), fake_oomnitza)
    assert {r.headers.get("x-vault-namespace") for r in vault.requests} == {"team-it"}


@pytest.mark.parametrize(
    "problem, extra, message",
    [
        ("token", "", "Vault: the token was refused (403 invalid token"),
        (
            "policy",
            "",
            "the token may not read secret/oomnitza (403 permission denied); its policy needs path "
            '"secret/data/oomnitza"',
        ),
        ("mount", "vault_mount = nosuch", "Vault: no mount 'nosuch' that this token may use"),
        ("mount", "vault_mount = nosuch\nvault_kv_version = 2", "Vault: no mount 'nosuch' (404)"),
        ("namespace", "", "Vault: no mount 'secret' that this token may use (403"),
        ("engine", "vault_mount = pki", "the mount 'pki' is a 'pki' secrets engine, not a KV store"),
        ("path", "", "Vault: no secret at secret/oomnitza (KV v2); check vault_path"),
        ("v1-on-v2", "vault_kv_version = 1", "'secret' is a KV version 2 mount; set vault_kv_version = 2"),
        (
            "key",
            "",
            "the secret 'api_token' was not found in Vault: secret/oomnitza (KV v2) has other; add it with: "
            "vault kv patch -mount=secret oomnitza api_token=",
        ),
        (
            "deleted",
            "",
            "the latest version (3) of secret/oomnitza was deleted; restore it: "
            "vault kv undelete -mount=secret -versions=3 oomnitza",
        ),
        ("destroyed", "", "the latest version (3) of secret/oomnitza was destroyed"),
        ("sealed", "", "is sealed (503); unseal it"),
        ("no-leader", "", "has no active node (503 no active Vault instance found)"),
        ("bootstrap", "", "vault_token for the secret backend is not set"),
    ],
)
def test_vault_errors(
    tmp_path: Path,
    vault: FakeVault,
    fake_oomnitza: FakeOomnitza,
    monkeypatch: pytest.MonkeyPatch,
    problem: str,
    extra: str,
    message: str,
) -> None:
    """Each of Vault's refusals is one line naming what to fix; none is retried except a 503."""
    monkeypatch.delenv("VAULT_TOKEN", raising=False)
    monkeypatch.setenv("PYTHON_KEYRING_BACKEND", "keyring.backends.fail.Keyring")
    if problem != "path":
        vault.data[("secret", "oomnitza")] = {"other": "x"} if problem == "key" else {"api_token": TOKEN}
    vault.versions[("secret", "oomnitza")] = 3
    vault.mounts["pki"] = "pki"
    vault.policy = {"secret/data/something-else"} if problem == "policy" else None
    vault.namespace = "team-it" if problem == "namespace" else None
    vault.deleted = {("secret", "oomnitza")} if problem == "deleted" else set()
    vault.destroyed = {("secret", "oomnitza")} if problem == "destroyed" else set()
    vault.sealed = problem == "sealed"
    vault.standby = problem == "no-leader"
    if problem != "bootstrap":
        monkeypatch.setenv("VAULT_TOKEN", "hvs.not-the-token" if problem == "token" else vault.token)
    result = upload_once(vault_ini(tmp_path, fake_oomnitza, vault, extra))
    assert_one_line_error(result, message)
    assert [line for line in result.err.splitlines() if not line.startswith("WARNING")] == [
        line for line in result.err.splitlines() if message in line
    ], result.err  # one error line; retries of a 503 are logged as warnings before it
    assert TOKEN not in result.all and vault.token not in result.all
    expected_calls = {"token": 1, "policy": 2, "path": 2, "deleted": 2, "sealed": 3}  # a refusal is not retried
    if problem in expected_calls:
        assert len(vault.requests) == expected_calls[problem], vault.requests
    assert fake_oomnitza.records("assets") == []


def test_vault_standby_redirects_to_the_active_node(
    tmp_path: Path, vault: FakeVault, fake_oomnitza: FakeOomnitza, monkeypatch: pytest.MonkeyPatch
) -> None:
    vault.data[("secret", "oomnitza")] = {"api_token": TOKEN}
    standby = FakeVault(token=vault.token)
    standby.standby, standby.active_url = True, vault.url
    monkeypatch.setenv("VAULT_TOKEN", vault.token)
    with serve(standby.app) as standby_url:
        standby.url = standby_url
        result = upload_once(vault_ini(tmp_path, fake_oomnitza, standby))
    assert result.code == 0, result.all
    assert len(standby.requests) == 2 and len(vault.requests) == 2  # both calls followed the 307, token and all
    assert all(r.headers.get("x-vault-token") == vault.token for r in vault.requests)


@pytest.mark.parametrize("fault", [*STANDARD_FAULTS, "412_once", "html_once"])
@pytest.mark.parametrize("where", ["/v1/sys/internal/ui/mounts/", "/v1/secret/data/"])
def test_vault_transient_faults(
    tmp_path: Path,
    vault: FakeVault,
    fake_oomnitza: FakeOomnitza,
    monkeypatch: pytest.MonkeyPatch,
    fault: str,
    where: str,
) -> None:
    """A 429, a 5xx, a stall (request_timeout), Vault Enterprise's 412 and a proxy's page are ridden out."""
    vault.data[("secret", "oomnitza")] = {"api_token": TOKEN}
    monkeypatch.setenv("VAULT_TOKEN", vault.token)
    if fault == "412_once":
        vault.fail("GET", where, 412, body={"errors": ["required index state not present"]})
    elif fault == "html_once":
        vault.fail("GET", where, 200, body=PROXY_PAGE, headers={"Content-Type": "text/html"})
    else:
        inject_fault(vault, fault, "GET", where)
    result = upload_once(vault_ini(tmp_path, fake_oomnitza, vault, f"request_timeout = {STALL_TIMEOUT}"))
    assert result.code == 0, result.all
    assert_accounted(result, "csv_assets", pulled=2, sent=2)
    assert len(vault.calls(where)) == 2


def test_vault_proxy_page_is_named(
    tmp_path: Path, vault: FakeVault, fake_oomnitza: FakeOomnitza, monkeypatch: pytest.MonkeyPatch
) -> None:
    vault.data[("secret", "oomnitza")] = {"api_token": TOKEN}
    monkeypatch.setenv("VAULT_TOKEN", vault.token)
    vault.fail("GET", "/v1/", 200, body=PROXY_PAGE, headers={"Content-Type": "text/html"}, times=10)
    result = upload_once(vault_ini(tmp_path, fake_oomnitza, vault))
    assert_one_line_error(result, "did not answer with Vault's JSON (200 text/html, an HTML page); check vault_url")


# -- Conjur ---------------------------------------------------------------------------------------


@pytest.fixture
def conjur_server() -> Iterator[FakeConjur]:
    fake = FakeConjur(account="acme", login="host/oomnitza-connector")
    conjur._tokens.clear()
    with serving(fake):
        yield fake


def conjur_ini(tmp_path: Path, fake: FakeOomnitza, conjur_fake: FakeConjur, extra: str = "") -> Path:
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
                extra,
            ]
        ),
    )


def test_conjur_reads_url_encoded_variables(
    tmp_path: Path, conjur_server: FakeConjur, fake_oomnitza: FakeOomnitza, monkeypatch: pytest.MonkeyPatch
) -> None:
    conjur_server.variables["prod/oomnitza/api_token"] = TOKEN
    monkeypatch.setenv("CONJUR_AUTHN_API_KEY", conjur_server.api_key + "\n")  # a stray newline is not part of it
    output = upload_ok(conjur_ini(tmp_path, fake_oomnitza, conjur_server), fake_oomnitza)
    assert TOKEN not in output and conjur_server.api_key not in output
    assert conjur_server.authentications == 1  # the token is reused while it is fresh (both runs)
    auth = conjur_server.calls("/authn/")[0]
    assert auth.headers.get("accept-encoding") == "base64" and auth.body == conjur_server.api_key.encode()


def test_conjur_refused_token_is_renewed_once(
    tmp_path: Path, conjur_server: FakeConjur, fake_oomnitza: FakeOomnitza, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A token Conjur no longer takes (expired on its clock, or a shorter TTL than it said) costs one
    more authentication, not a failed run."""
    conjur_server.variables["prod/oomnitza/api_token"] = TOKEN
    monkeypatch.setenv("CONJUR_AUTHN_API_KEY", conjur_server.api_key)
    ini = conjur_ini(tmp_path, fake_oomnitza, conjur_server)
    assert upload_once(ini).code == 0
    conjur_server.expire_tokens()  # the cached token is now past its exp on the server
    result = upload_once(ini)
    assert result.code == 0, result.all
    assert conjur_server.authentications == 2
    assert conjur_server.read_statuses == [200, 401, 200]


@pytest.mark.parametrize(
    "problem, message",
    [
        (
            "key",
            "Conjur rejected the API key of 'host/oomnitza-connector' in account 'acme' (401); check "
            "conjur_login and conjur_account",
        ),
        (
            "missing",
            "the secret 'api_token' was not found in Conjur: the variable 'prod/oomnitza/api_token' in "
            "account 'acme' does not exist, has no value yet, or 'host/oomnitza-connector' may not see it (404)",
        ),
        ("empty", "the secret 'api_token' was not found in Conjur: the variable 'prod/oomnitza/api_token'"),
        ("no-read", "the secret 'api_token' was not found in Conjur: the variable 'prod/oomnitza/api_token'"),
        (
            "no-execute",
            "Conjur: 'host/oomnitza-connector' may not read the variable 'prod/oomnitza/api_token' (403); "
            "permit it execute",
        ),
        (
            "restricted",
            "may not connect from this machine (403 IP address rejected); add its address to the login's restricted_to",
        ),
        (
            "always-401",
            "a fresh access token for 'host/oomnitza-connector' was refused (401 Unauthorized: Invalid token)",
        ),
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
    if problem != "missing":
        conjur_server.variables["prod/oomnitza/api_token"] = TOKEN
    if problem == "empty":
        del conjur_server.variables["prod/oomnitza/api_token"]
        conjur_server.empty.add("prod/oomnitza/api_token")
    if problem in ("no-read", "no-execute"):
        conjur_server.roles["host/oomnitza-connector"] = {"read"} if problem == "no-execute" else set()
    conjur_server.restricted = problem == "restricted"
    if problem == "always-401":
        conjur_server.token_ttl = 0  # every token is already expired when Conjur checks it
    monkeypatch.setenv("CONJUR_AUTHN_API_KEY", "wrong-api-key" if problem == "key" else conjur_server.api_key)
    result = upload_once(conjur_ini(tmp_path, fake_oomnitza, conjur_server))
    assert_one_line_error(result, message)
    assert len(result.err.strip().splitlines()) == 1, result.err
    assert TOKEN not in result.all and conjur_server.api_key not in result.all
    if problem == "key":
        assert len(conjur_server.calls("/authn/")) == 1  # a rejected key is not tried again
    assert fake_oomnitza.records("assets") == []


@pytest.mark.parametrize("fault", STANDARD_FAULTS)
@pytest.mark.parametrize("method, where", [("POST", "/authn/"), ("GET", "/secrets/")])
def test_conjur_transient_faults(
    tmp_path: Path,
    conjur_server: FakeConjur,
    fake_oomnitza: FakeOomnitza,
    monkeypatch: pytest.MonkeyPatch,
    fault: str,
    method: str,
    where: str,
) -> None:
    conjur_server.variables["prod/oomnitza/api_token"] = TOKEN
    monkeypatch.setenv("CONJUR_AUTHN_API_KEY", conjur_server.api_key)
    inject_fault(conjur_server, fault, method, where)
    result = upload_once(conjur_ini(tmp_path, fake_oomnitza, conjur_server, f"request_timeout = {STALL_TIMEOUT}"))
    assert result.code == 0, result.all
    assert_accounted(result, "csv_assets", pulled=2, sent=2)
    assert len(conjur_server.calls(where)) == 2


@pytest.mark.parametrize(
    "method, where, message",
    [
        ("POST", "/authn/", "did not answer with an access token (200 text/html, an HTML page); check vault_url"),
        (
            "GET",
            "/secrets/",
            "did not answer with the value of 'prod/oomnitza/api_token' (200 text/html, an HTML page)",
        ),
    ],
)
def test_conjur_proxy_page_is_named(
    tmp_path: Path,
    conjur_server: FakeConjur,
    fake_oomnitza: FakeOomnitza,
    monkeypatch: pytest.MonkeyPatch,
    method: str,
    where: str,
    message: str,
) -> None:
    conjur_server.variables["prod/oomnitza/api_token"] = TOKEN
    monkeypatch.setenv("CONJUR_AUTHN_API_KEY", conjur_server.api_key)
    conjur_server.fail(method, where, 200, body=PROXY_PAGE, headers={"Content-Type": "text/html"}, times=10)
    result = upload_once(conjur_ini(tmp_path, fake_oomnitza, conjur_server))
    assert_one_line_error(result, message)
    assert TOKEN not in result.all
