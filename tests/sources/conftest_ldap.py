"""Fixtures for the [ldap] / [ldap_assets] tests (imported by tests/sources/test_ldap.py).

``slapd``: one real OpenLDAP server for the test session (plain ``ldap://`` with StartTLS, and
``ldaps://``, certificates from the session's trustme CA), loaded with ``DIRECTORY_LDIF``.
Tests only read it, so it is shared. Without slapd the tests skip locally, and FAIL under CI=true.

``fake_ad``: the wire-level Active Directory lookalike (range retrieval, AD errors), per test.
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fakes.slapd import FakeActiveDirectory, Slapd, slapd_binary
from tests.helpers import require

SUFFIX = "dc=example,dc=test"
PEOPLE = f"ou=people,{SUFFIX}"
GROUPS = f"ou=groups,{SUFFIX}"
WORKSTATIONS = f"ou=Workstations,{SUFFIX}"
READER_DN = f"uid=reader,ou=system,{SUFFIX}"
READER_PASSWORD = "Reader-Pass-42"
COMPUTER_CATEGORY = f"CN=Computer,CN=Schema,CN=Configuration,{SUFFIX}"
# objectGUID / objectSid of WS-0001 as AD stores them (little-endian GUID, binary SID).
WS1_GUID = "6f1a2b3c-4d5e-4f60-8172-8394a5b6c7d8"
WS1_SID = "S-1-5-21-1004336348-1177238915-682003330-1105"
GENERATED_USERS = 6  # user01..user06, besides the fact sheet's three and o(dd*


def _sid_bytes(sid: str) -> bytes:
    parts = sid.split("-")
    subs = [int(p) for p in parts[3:]]
    return (
        bytes([int(parts[1]), len(subs)])
        + int(parts[2]).to_bytes(6, "big")
        + b"".join(s.to_bytes(4, "little") for s in subs)
    )


def ldif_entry(dn: str, attributes: dict[str, list[Any]]) -> str:
    """One LDIF record; non-ASCII and binary values base64-encoded (``attr:: ...``)."""

    def line(name: str, value: Any) -> str:
        raw = value if isinstance(value, bytes) else str(value).encode("utf-8")
        if raw.isascii() and not raw.startswith((b" ", b":", b"<")) and b"\n" not in raw:
            return f"{name}: {raw.decode()}"
        return f"{name}:: {base64.b64encode(raw).decode()}"

    lines = [line("dn", dn)]
    for name, values in attributes.items():
        lines += [line(name, v) for v in values]
    return "\n".join(lines) + "\n"


def person(uid: str, given: str, sn: str, *mails: str, cn: str | None = None, **extra: list[str]) -> dict[str, Any]:
    attrs: dict[str, list[Any]] = {
        "objectClass": ["inetOrgPerson"],
        "cn": [cn or f"{given} {sn}"],
        "uid": [uid],
        "givenName": [given],
        "sn": [sn],
    }
    if mails:
        attrs["mail"] = list(mails)
    attrs.update(extra)
    return attrs


def directory_entries() -> list[tuple[str, dict[str, list[Any]]]]:
    e: list[tuple[str, dict[str, list[Any]]]] = [
        (SUFFIX, {"objectClass": ["dcObject", "organization"], "dc": ["example"], "o": ["Example"]}),
        (f"ou=system,{SUFFIX}", {"objectClass": ["organizationalUnit"], "ou": ["system"]}),
        (
            READER_DN,
            {"objectClass": ["account", "simpleSecurityObject"], "uid": ["reader"], "userPassword": [READER_PASSWORD]},
        ),
        (PEOPLE, {"objectClass": ["organizationalUnit"], "ou": ["people"]}),
        (
            f"uid=afabre,{PEOPLE}",
            person("afabre", "Alice", "Fabre", "alice@example.test", "a.fabre@example.test", title=["Designer"]),
        ),
        (f"cn=José Núñez,{PEOPLE}", person("jnunez", "José", "Núñez", "jose@example.test", cn="José Núñez")),
        (
            f"uid=nomail,{PEOPLE}",
            {"objectClass": ["inetOrgPerson"], "cn": ["No Mail"], "uid": ["nomail"], "sn": ["Nobody"]},
        ),
        (f"uid=o(dd*,{PEOPLE}", person("o(dd*", "Odd", "Name", "odd@example.test")),
    ]
    for i in range(1, GENERATED_USERS + 1):
        e.append((f"uid=user{i:02d},{PEOPLE}", person(f"user{i:02d}", f"User{i}", "Test", f"user{i:02d}@example.test")))
    e += [
        (GROUPS, {"objectClass": ["organizationalUnit"], "ou": ["groups"]}),
        (
            f"cn=it,{GROUPS}",
            {
                "objectClass": ["groupOfNames"],
                "cn": ["it"],
                "member": [f"uid=afabre,{PEOPLE}", f"cn=José Núñez,{PEOPLE}", f"cn=nested,{GROUPS}"],
            },
        ),
        # nested: a user already in "it" (sent once), a new one, and a cycle back to "it".
        (
            f"cn=nested,{GROUPS}",
            {
                "objectClass": ["groupOfNames"],
                "cn": ["nested"],
                "member": [f"uid=user03,{PEOPLE}", f"uid=afabre,{PEOPLE}", f"cn=it,{GROUPS}"],
            },
        ),
        (
            f"cn=posix,{GROUPS}",
            {
                "objectClass": ["posixGroup"],
                "cn": ["posix"],
                "gidNumber": ["5000"],
                "memberUid": ["afabre", "jnunez", "o(dd*", "ghost"],
            },
        ),
        (
            f"cn=stale,{GROUPS}",
            {
                "objectClass": ["groupOfNames"],
                "cn": ["stale"],
                "member": [f"uid=gone,{PEOPLE}", f"uid=user05,{PEOPLE}"],
            },
        ),
        (f"ou=empty,{SUFFIX}", {"objectClass": ["organizationalUnit"], "ou": ["empty"]}),
        (WORKSTATIONS, {"objectClass": ["organizationalUnit"], "ou": ["Workstations"]}),
        (
            f"CN=WS-0001,{WORKSTATIONS}",
            {
                "objectClass": ["top", "computer"],
                "cn": ["WS-0001"],
                "objectCategory": [COMPUTER_CATEGORY],
                "dNSHostName": ["ws-0001.example.test"],
                "sAMAccountName": ["WS-0001$"],
                "operatingSystem": ["Windows 11 Enterprise"],
                "operatingSystemVersion": ["10.0 (22631)"],
                "lastLogonTimestamp": ["134035776000000000"],
                "userAccountControl": ["4096"],
                "serialNumber": ["SN-A1", "SN-A2"],
                "objectGUID": [uuid.UUID(WS1_GUID).bytes_le],
                "objectSid": [_sid_bytes(WS1_SID)],
                "jpegPhoto": [b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01"],
            },
        ),
        (
            f"CN=WS-0002,{WORKSTATIONS}",
            {
                "objectClass": ["top", "computer"],
                "cn": ["WS-0002"],
                "objectCategory": [COMPUTER_CATEGORY],
                "operatingSystem": ["Windows 10 Pro"],
                "userAccountControl": ["4098"],
            },
        ),
        (
            f"CN=WS-0003,{WORKSTATIONS}",
            {
                "objectClass": ["top", "computer"],
                "cn": ["WS-0003"],
                "objectCategory": [COMPUTER_CATEGORY],
                "operatingSystem": ["Ubuntu 24.04"],
                "userAccountControl": ["4096"],
            },
        ),
    ]
    return e


PEOPLE_COUNT = 4 + GENERATED_USERS  # afabre, José, nomail, o(dd*, user01..06


def require_slapd() -> None:
    """Skip locally without slapd; under CI (CI=true) its absence is a failure, never a skip."""
    require(slapd_binary() is not None, "slapd is not installed: apt-get install slapd ldap-utils (see .ci/run)")


@pytest.fixture(scope="session")
def slapd(tmp_path_factory: pytest.TempPathFactory, tls_files: dict[str, str]) -> Iterator[Slapd]:
    require_slapd()
    workdir: Path = tmp_path_factory.mktemp("slapd")
    server = Slapd(workdir, suffix=SUFFIX, tls=tls_files)
    server.load("\n".join(ldif_entry(dn, attrs) for dn, attrs in directory_entries()))
    server.start()
    try:
        yield server
    finally:
        server.stop()


AD_SUFFIX = "DC=corp,DC=test"
AD_USERS = f"OU=Staff,{AD_SUFFIX}"
AD_BIND_DN = f"CN=svc-oomnitza,OU=Service,{AD_SUFFIX}"
AD_PASSWORD = "Svc-Pass-77"
AD_BIG_GROUP = f"CN=All Staff,OU=Groups,{AD_SUFFIX}"
AD_MEMBERS = 1600  # over AD's MaxValRange (1500): "member" comes back as member;range=0-1499


def ad_entries(members: int = AD_MEMBERS) -> dict[str, dict[str, list[Any]]]:
    entries: dict[str, dict[str, list[Any]]] = {
        AD_SUFFIX: {"objectClass": ["domain"]},
        f"OU=Groups,{AD_SUFFIX}": {"objectClass": ["organizationalUnit"]},
        AD_USERS: {"objectClass": ["organizationalUnit"]},
    }
    dns = []
    for i in range(members):
        dn = f"CN=Staff {i:04d},{AD_USERS}"
        dns.append(dn)
        entries[dn] = {
            "objectClass": ["top", "person", "organizationalPerson", "user"],
            "cn": [f"Staff {i:04d}"],
            "sAMAccountName": [f"staff{i:04d}"],
            "givenName": [f"Staff{i}"],
            "sn": ["Member"],
            "mail": [f"staff{i:04d}@corp.test"],
            "distinguishedName": [dn],
            "lastLogonTimestamp": ["134035776000000000"],
        }
    entries[AD_BIG_GROUP] = {"objectClass": ["top", "group"], "cn": ["All Staff"], "member": dns}
    return entries


@pytest.fixture
def fake_ad() -> Iterator[FakeActiveDirectory]:
    fake = FakeActiveDirectory(ad_entries(), bind_dn=AD_BIND_DN, password=AD_PASSWORD)
    with fake.running():
        yield fake


@pytest.fixture(scope="session")
def slapd_mtls(tmp_path_factory: pytest.TempPathFactory, tls_files: dict[str, str]) -> Iterator[Slapd]:
    """A second slapd whose TLS handshake demands a client certificate issued by the CA."""
    require_slapd()
    server = Slapd(
        tmp_path_factory.mktemp("slapd-mtls"), suffix=SUFFIX, tls=tls_files, extra_conf=["TLSVerifyClient demand"]
    )
    server.load("\n".join(ldif_entry(dn, attrs) for dn, attrs in directory_entries()))
    server.start()
    try:
        yield server
    finally:
        server.stop()
