"""A REAL Samba Active Directory domain controller for the [ldap] / [ldap_assets] tests.

Not a fake: Samba's own AD DC (Debian packages ``samba samba-ad-dc samba-ad-provision``; .ci/run
installs them), provisioned once per test session in a temp dir and started for the session.

- **Provision**: ``samba-tool domain provision --targetdir=<tmp>`` (realm ``CORP.TEST``, NetBIOS
  domain ``CORP``, DC ``DC1``, no DNS backend), about 10 s. It is given an empty ``-s`` config:
  without it samba-tool loads the machine's own smb.conf and copies its non-default ``[global]``
  values into the new one (samba/provision/__init__.py ``make_smbconf``). Every path (private
  dir, state, cache, lock, pid directory, logs) is inside the temp dir: nothing system-wide.
- **Start**: ``samba -i -M single -s <the provisioned smb.conf>`` with ``server services = ldap``
  (only the LDAP server: no SMB, RPC, KDC, DNS, NBT). Samba's LDAP server has no port option: it
  binds 389 and 636 (and the Global Catalog, 3268 and 3269) on each interface
  (source4/ldap_server/ldap_server.c ``add_socket``). So the DC gets a loopback address of its own,
  a random ``127.x.y.z`` whose ports are free (``x`` differs per pytest-xdist worker;
  ``interfaces = 127.x.y.z/8``, ``bind interfaces only = yes``; Linux routes all of 127.0.0.0/8 to
  ``lo``). Binding ports
  below 1024 needs root: without root the tests skip locally and fail under CI (CI runs as root).
- **TLS**: at its first start Samba generates its own CA (``private/tls/ca.pem``) and a host
  certificate for ``DC1.corp.test`` signed by it, with the FQDN as the subject's CN and no
  subjectAltName (source4/lib/tls/tlscert.c), as every Samba DC has until an admin installs
  another one. ``ldap server require strong auth = yes`` (the default) refuses a simple bind over
  plain ``ldap://`` with 8 strongerAuthRequired ("BindSimple: Transport encryption required.").
- **Content** is added over LDAPS as Administrator (``admin()``), as an admin would with LDAP
  tools: users, groups and computers get Samba's own defaults (objectSid, primaryGroupID 513 /
  515, lastLogon 0, accountExpires 9223372036854775807, whenCreated …).

The DC's host name does not resolve on the test machine: tests that connect by name map
``dc1.corp.test`` to the DC's address in ``socket.getaddrinfo`` (see conftest_ldap.py), as a DNS
server would.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import socket
import ssl
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REALM = "CORP.TEST"
NETBIOS_DOMAIN = "CORP"
DC_NAME = "DC1"
DOMAIN_DN = "DC=corp,DC=test"
LDAP_PORTS = (389, 636, 3268, 3269)


def samba_missing() -> str | None:
    """Why a Samba DC cannot run here (None when it can)."""
    if shutil.which("samba-tool") is None or _samba_binary() is None:
        return "Samba AD DC is not installed: apt-get install samba samba-ad-dc samba-ad-provision (see .ci/run)"
    if os.geteuid() != 0:
        return "the Samba AD DC tests need root (Samba's LDAP server binds ports 389/636)"
    return None


def _samba_binary() -> str | None:
    return shutil.which("samba") or next((p for p in ("/usr/sbin/samba",) if os.path.exists(p)), None)


def _ports_free(address: str) -> bool:
    for port in LDAP_PORTS:
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind((address, port))
            except OSError:
                return False
    return True


def _second_octet() -> int:
    """Each pytest-xdist worker (PYTEST_XDIST_WORKER ``gw0``, ``gw1``…) picks the DC's address in a
    /16 of its own, so two workers' DCs never try the same fixed ports on one address."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    index = int(worker[2:]) if worker.startswith("gw") and worker[2:].isdigit() else -1
    return 1 + (index + 1) % 254


def utf16_password(password: str) -> bytes:
    """AD's ``unicodePwd`` value: the password in double quotes, UTF-16LE (MS-ADTS 3.1.1.3.1.5.1)."""
    return f'"{password}"'.encode("utf-16-le")


@dataclass
class SambaDC:
    """A provisioned Samba AD DC in ``workdir``. ``provision()``, ``start()``, ``stop()``."""

    workdir: Path
    admin_password: str = "Admin-Pass-123!"
    address: str = ""
    proc: subprocess.Popen[bytes] | None = None

    @property
    def fqdn(self) -> str:
        return f"{DC_NAME}.{REALM}".lower()

    @property
    def domain_dn(self) -> str:
        return DOMAIN_DN

    @property
    def admin_dn(self) -> str:
        return f"CN=Administrator,CN=Users,{DOMAIN_DN}"

    @property
    def ca_file(self) -> str:
        """Samba's self-generated CA: what an admin copies to the connector host for cacert_file."""
        return str(self.workdir / "dc" / "private" / "tls" / "ca.pem")

    @property
    def smb_conf(self) -> Path:
        return self.workdir / "dc" / "etc" / "smb.conf"

    @property
    def log_path(self) -> Path:
        return self.workdir / "samba.log"

    def provision(self) -> None:
        empty = self.workdir / "empty.conf"
        empty.write_text("", encoding="utf-8")
        (self.workdir / "run").mkdir(parents=True, exist_ok=True)
        done = subprocess.run(
            [
                "samba-tool",
                "domain",
                "provision",
                "-s",
                str(empty),
                f"--targetdir={self.workdir / 'dc'}",
                f"--realm={REALM}",
                f"--domain={NETBIOS_DOMAIN}",
                f"--host-name={DC_NAME.lower()}",
                "--server-role=dc",
                "--dns-backend=NONE",
                f"--adminpass={self.admin_password}",
                f"--option=pid directory = {self.workdir / 'run'}",
                f"--option=log file = {self.workdir / 'log.%m'}",
                "--option=server services = ldap",
                "--option=panic action = ",
            ],
            capture_output=True,
            text=True,
            timeout=300,
        )
        if done.returncode != 0:
            raise RuntimeError(f"samba-tool domain provision failed: {(done.stdout + done.stderr)[-3000:]}")

    def start(self) -> None:
        binary = _samba_binary()
        if binary is None:
            raise RuntimeError("samba is not installed")
        for _ in range(10):
            address = f"127.{_second_octet()}.{random.randint(0, 255)}.{random.randint(1, 254)}"
            if _ports_free(address):
                break
        else:
            raise RuntimeError("no loopback address with free LDAP ports")
        self.address = address
        log = open(self.log_path, "wb")
        # -i: stay in the foreground, log to stdout, and stop when stdin closes.
        self.proc = subprocess.Popen(
            [
                binary,
                "-i",
                "-M",
                "single",
                "-s",
                str(self.smb_conf),
                f"--option=interfaces = {address}/8",
                "--option=bind interfaces only = yes",
            ],
            stdin=subprocess.PIPE,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        if not self._wait_ready():
            self.stop()
            raise RuntimeError(f"samba did not start: {self.log_path.read_text(errors='replace')[-3000:]}")

    def _wait_ready(self) -> bool:
        # LDAPS comes up once Samba has generated its certificates (a few seconds, RSA 4096).
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                return False
            with contextlib.suppress(OSError), socket.create_connection((self.address, 636), timeout=0.5):
                return True
            time.sleep(0.1)
        return False

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        if self.proc.stdin:
            self.proc.stdin.close()
        self.proc = None

    # talking to it ----------------------------------------------------------------------------

    def connect(self, user: str, password: str) -> Any:
        """An ldap3 connection over LDAPS (certificate not checked: test set-up only), not bound."""
        import ldap3

        server = ldap3.Server(self.address, port=636, use_ssl=True, tls=ldap3.Tls(validate=ssl.CERT_NONE))
        return ldap3.Connection(server, user, password, raise_exceptions=False)

    def admin(self) -> Any:
        conn = self.connect(self.admin_dn, self.admin_password)
        if not conn.bind():
            raise RuntimeError(f"Administrator bind failed: {conn.result}")
        return conn

    def attribute(self, dn: str, name: str) -> list[bytes]:
        """The raw values of one attribute of one entry, read as Administrator."""
        import ldap3

        conn = self.admin()
        try:
            conn.search(dn, "(objectClass=*)", ldap3.BASE, attributes=[name])
            entries = [e for e in conn.response or [] if e.get("type") == "searchResEntry"]
            return list(entries[0]["raw_attributes"].get(name, [])) if entries else []
        finally:
            conn.unbind()


def checked(conn: Any, what: str) -> None:
    """Raise when the last operation on ``conn`` failed (test set-up must not half-succeed)."""
    if conn.result.get("result") != 0:
        raise RuntimeError(f"{what}: {conn.result.get('description')} {conn.result.get('message')}")
