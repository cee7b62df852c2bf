"""Shared pytest fixtures."""

from __future__ import annotations

import os
import ssl
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fakes.oomnitza import FakeOomnitza
from tests.fakes.saas import FakeSaas
from tests.fakes.server import close_shared_servers, serve, serving

# Test files whose session fixtures start a real server in a subprocess (slapd, the Samba DC: seconds
# of CPU each). Under ``--dist loadgroup`` (`make test`) each such file runs on one pytest-xdist worker,
# which starts them once; every other test is balanced on its own.
ONE_WORKER_FILES = frozenset({"tests/sources/test_ldap.py"})


def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """``loadgroup`` whose groups are files of ONE_WORKER_FILES. (pytest-xdist groups the tests marked
    ``xdist_group`` by renaming their node ids, which pytest 9.2 no longer lets it do.)"""
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadGroupScheduling

    class FileGroups(LoadGroupScheduling):
        def _split_scope(self, nodeid: str) -> str:
            path = nodeid.split("::", 1)[0]
            return path if path in ONE_WORKER_FILES else super()._split_scope(nodeid)

    return FileGroups(config, log)


@pytest.fixture(scope="session", autouse=True)
def _small_trust_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Verifying TLS contexts trust one unrelated CA rather than the machine's bundle (OpenSSL's
    SSL_CERT_FILE / SSL_CERT_DIR; subprocesses inherit them). Loading ~150 system roots costs
    ~35 ms of CPU per context, a few contexts per run, a thousand runs; no test reaches a public
    host, and a fake's certificate is still trusted only through cacert_file / cacert_dir."""
    import trustme

    folder = tmp_path_factory.mktemp("trust-store")
    (folder / "certs").mkdir()
    trustme.CA().cert_pem.write_to_path(str(folder / "unrelated-ca.pem"))
    saved = {name: os.environ.get(name) for name in ("SSL_CERT_FILE", "SSL_CERT_DIR")}
    os.environ["SSL_CERT_FILE"] = str(folder / "unrelated-ca.pem")
    os.environ["SSL_CERT_DIR"] = str(folder / "certs")
    yield
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@pytest.fixture(scope="session", autouse=True)
def _shared_fake_servers() -> Iterator[None]:
    """The loopback servers tests.fakes.server.serve lends to fakes live for the session."""
    yield
    close_shared_servers()


@pytest.fixture(autouse=True)
def _no_machine_keyring(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test reaches the machine's own keyring: the keyring library's default is its "fail"
    backend (subprocesses inherit it), and the backend it caches at first use is dropped after each
    test, so a test that sets PYTHON_KEYRING_BACKEND gets that one whatever ran before it in the
    process (with keyrings.cryptfile installed, the library's own pick would prompt for a password)."""
    import keyring.core

    monkeypatch.setenv("PYTHON_KEYRING_BACKEND", "keyring.backends.fail.Keyring")
    monkeypatch.setattr(keyring.core, "_keyring_backend", None)


@pytest.fixture(autouse=True)
def _own_state_and_log_dirs(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test keeps its locks, queue and log files in folders of its own (never in the
    checkout, never shared with another test); subprocesses inherit the variables."""
    base = tmp_path_factory.mktemp("state")
    monkeypatch.setenv("OOMNITZA_STATE_DIR", str(base))
    monkeypatch.setenv("OOMNITZA_LOG_DIR", str(base / "logs"))
    monkeypatch.delenv("OOMNITZA_LOG_FORMAT", raising=False)


class _Switch:
    """ASGI app forwarding to whichever fake the current test installed, so one loopback server
    serves the whole session (starting uvicorn per test would cost ~0.2 s each)."""

    def __init__(self) -> None:
        self.target: Any = None

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        await self.target(scope, receive, send)


@pytest.fixture(scope="session")
def _oomnitza_server() -> Iterator[tuple[_Switch, str]]:
    switch = _Switch()
    with serve(switch) as url:
        yield switch, url


@pytest.fixture
def fake_oomnitza_factory(_oomnitza_server: tuple[_Switch, str]) -> Callable[..., FakeOomnitza]:
    """`make(**FakeOomnitza kwargs)` → a fresh fake, served (replacing the previous one) at `.url`."""
    switch, url = _oomnitza_server

    def make(**kwargs: Any) -> FakeOomnitza:
        fake = FakeOomnitza(**kwargs)
        fake.url = url
        switch.target = fake.app
        return fake

    return make


@pytest.fixture
def fake_oomnitza(fake_oomnitza_factory: Callable[..., FakeOomnitza]) -> FakeOomnitza:
    """A fresh FakeOomnitza (token "test-token") on loopback; base URL in `fake_oomnitza.url`."""
    return fake_oomnitza_factory()


@pytest.fixture(scope="session")
def tls_ca() -> Any:
    import trustme

    return trustme.CA()


@pytest.fixture(scope="session")
def tls_files(tls_ca: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """PEM files: `ca` (trust this), `server_cert`/`server_key` (127.0.0.1, localhost) and
    `client_pem` (client certificate + unencrypted key in one file, like `user_pem_file`)."""
    d: Path = tmp_path_factory.mktemp("tls")
    server = tls_ca.issue_cert("127.0.0.1", "localhost")
    client = tls_ca.issue_cert("connector@example.com")
    files = {
        "ca": d / "ca.pem",
        "server_cert": d / "server.pem",
        "server_key": d / "server.key",
        "client_pem": d / "client.pem",
    }
    tls_ca.cert_pem.write_to_path(str(files["ca"]))
    server.cert_chain_pems[0].write_to_path(str(files["server_cert"]))
    for extra in server.cert_chain_pems[1:]:
        extra.write_to_path(str(files["server_cert"]), append=True)
    server.private_key_pem.write_to_path(str(files["server_key"]))
    client.private_key_and_cert_chain_pem.write_to_path(str(files["client_pem"]))
    return {k: str(v) for k, v in files.items()}


@pytest.fixture
def fake_oomnitza_tls(tls_files: dict[str, str]) -> Iterator[FakeOomnitza]:
    """FakeOomnitza over https (server cert signed by `tls_files["ca"]`); `.url`, `.ca_file`."""
    fake = FakeOomnitza()
    with serve(fake.app, ssl_certfile=tls_files["server_cert"], ssl_keyfile=tls_files["server_key"]) as url:
        fake.url = url
        fake.ca_file = tls_files["ca"]  # type: ignore[attr-defined]
        yield fake


@pytest.fixture
def fake_oomnitza_mtls(tls_files: dict[str, str]) -> Iterator[FakeOomnitza]:
    """Like fake_oomnitza_tls but the TLS handshake requires a client certificate issued by the
    CA (`.client_pem`), and request_token accepts empty login/password (§2 mode 3)."""
    fake = FakeOomnitza(require_client_cert=True)
    with serve(
        fake.app,
        ssl_certfile=tls_files["server_cert"],
        ssl_keyfile=tls_files["server_key"],
        ssl_ca_certs=tls_files["ca"],
        ssl_cert_reqs=ssl.CERT_REQUIRED,
    ) as url:
        fake.url = url
        fake.ca_file = tls_files["ca"]  # type: ignore[attr-defined]
        fake.client_pem = tls_files["client_pem"]  # type: ignore[attr-defined]
        yield fake


@pytest.fixture
def saas() -> Iterator[FakeSaas]:
    """The SaaS a managed integration's templates call (tests/fakes/saas.py), on loopback."""
    fake = FakeSaas()
    with serving(fake):
        yield fake
