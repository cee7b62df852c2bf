"""Fixtures for the [ldap] / [ldap_assets] tests (imported by tests/sources/test_ldap.py).

``slapd``: one real OpenLDAP server for the test session (plain ``ldap://`` with StartTLS, and
``ldaps://``, certificates from the session's trustme CA), loaded with ``DIRECTORY_LDIF``.
Tests only read it, so it is shared. Without slapd the tests skip locally, and FAIL under CI=true.

``fake_ad``: the wire-level Active Directory lookalike (range retrieval, AD errors), per test.

``samba_dc``: one REAL Samba AD domain controller for the session (tests/fakes/samba_dc.py),
provisioned and loaded with ``populate_dc``; ``samba`` is the same DC with its name resolving for
the test. Without Samba (or root) the tests skip locally, and FAIL under CI=true.
"""

from __future__ import annotations

import base64
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fakes.samba_dc import DOMAIN_DN, SambaDC, checked, samba_missing, utf16_password
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
AD_DOMAIN_SID = "S-1-5-21-1004336348-1177238915-682003330"
AD_BIG_GROUP_RID = 1601
AD_PRIMARY_MEMBER = "staffprimary"  # in All Staff only through primaryGroupID (not in "member")


def ad_user(dn: str, sam: str, primary_group: int = 513) -> dict[str, list[Any]]:
    return {
        "objectClass": ["top", "person", "organizationalPerson", "user"],
        "cn": [dn.split(",", 1)[0][3:]],
        "sAMAccountName": [sam],
        "givenName": [sam.title()],
        "sn": ["Member"],
        "mail": [f"{sam}@corp.test"],
        "distinguishedName": [dn],
        "lastLogonTimestamp": ["134035776000000000"],
        "primaryGroupID": [str(primary_group)],
    }


def ad_entries(members: int = AD_MEMBERS) -> dict[str, dict[str, list[Any]]]:
    """``members`` users listed in All Staff's ``member``, and one more whose primary group it is."""
    entries: dict[str, dict[str, list[Any]]] = {
        AD_SUFFIX: {"objectClass": ["domain"]},
        f"OU=Groups,{AD_SUFFIX}": {"objectClass": ["organizationalUnit"]},
        AD_USERS: {"objectClass": ["organizationalUnit"]},
    }
    dns = []
    for i in range(members):
        dn = f"CN=Staff {i:04d},{AD_USERS}"
        dns.append(dn)
        entries[dn] = ad_user(dn, f"staff{i:04d}")
    primary = f"CN=Staff Primary,{AD_USERS}"
    entries[primary] = ad_user(primary, AD_PRIMARY_MEMBER, primary_group=AD_BIG_GROUP_RID)
    entries[AD_BIG_GROUP] = {
        "objectClass": ["top", "group"],
        "cn": ["All Staff"],
        "objectSid": [_sid_bytes(f"{AD_DOMAIN_SID}-{AD_BIG_GROUP_RID}")],
        "member": dns,
    }
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


# --- a real Samba Active Directory domain controller (tests/fakes/samba_dc.py) ----------------

DC_STAFF = f"OU=Staff,{DOMAIN_DN}"
DC_GROUPS = f"OU=Groups,{DOMAIN_DN}"
DC_WORKSTATIONS = f"OU=Workstations,{DOMAIN_DN}"
DC_SVC_DN = f"CN=svc-oomnitza,OU=Service,{DOMAIN_DN}"
DC_SVC_PASSWORD = "Svc-Oomnitza-Pass-1"
DC_IT = f"CN=IT,{DC_GROUPS}"
DC_HELPDESK = f"CN=Helpdesk,{DC_GROUPS}"
DC_CONTRACTORS = f"CN=Contractors,{DC_GROUPS}"
DC_DOMAIN_USERS = f"CN=Domain Users,CN=Users,{DOMAIN_DN}"
DC_DOMAIN_COMPUTERS = f"CN=Domain Computers,CN=Users,{DOMAIN_DN}"
# Enabled people: computers are objectClass=user too, disabled accounts have bit 2 set.
DC_PEOPLE_FILTER = "(&(objectCategory=person)(objectClass=user)(!(userAccountControl:1.2.840.113556.1.4.803:=2)))"
ALICE_PROXIES = ["smtp:a.fabre@corp.test", "SMTP:alice.fabre@corp.test", "X500:/o=Corp/ou=Staff/cn=alice"]
# sAMAccountName → (givenName, sn, extra attributes); every one has mail <sam>@corp.test.
DC_PEOPLE: dict[str, tuple[str, str, dict[str, Any]]] = {
    "alice": ("Alice", "Fabre", {"proxyAddresses": ALICE_PROXIES, "title": "Designer"}),
    "bob": ("Bob", "Disabled", {"userAccountControl": "514"}),
    "carol": ("Carol", "Mustchange", {}),
    "dave": ("Dave", "Locked", {}),
    "frank": ("Frank", "Expired", {}),
    "grace": ("Grace", "Helpdesk", {}),
    "henry": ("Henry", "Contractor", {}),
    "ivan": ("Ivan", "Contractor", {}),
    "jnunez": ("José", "Núñez", {}),
}
FRANK_EXPIRED = 1764547200  # 2025-12-01T00:00:00Z: accountExpires in the past


def staff_dn(sam: str) -> str:
    given, sn, _ = DC_PEOPLE[sam]
    return f"CN={given} {sn},{DC_STAFF}"


def staff_password(sam: str) -> str:
    return f"Staff-Pass-{sam}-1"


def populate_dc(dc: SambaDC) -> None:
    """The test domain, added over LDAP as Administrator (see DC_PEOPLE and the groups below)."""
    from ldap3 import MODIFY_ADD, MODIFY_REPLACE  # imported late: ldap3 warns on import (pyasn1)

    conn = dc.admin()
    try:
        for ou in ("Staff", "Groups", "Workstations", "Service"):
            conn.add(f"OU={ou},{DOMAIN_DN}", ["top", "organizationalUnit"])
            checked(conn, f"add OU {ou}")
        person_classes = ["top", "person", "organizationalPerson", "user"]
        conn.add(
            DC_SVC_DN,
            person_classes,
            {
                "sAMAccountName": "svc-oomnitza",
                "unicodePwd": utf16_password(DC_SVC_PASSWORD),
                "userAccountControl": "512",
            },
        )
        checked(conn, "add svc-oomnitza")
        for sam, (given, sn, extra) in DC_PEOPLE.items():
            attributes = {
                "sAMAccountName": sam,
                "userPrincipalName": f"{sam}@corp.test",
                "givenName": given,
                "sn": sn,
                "mail": f"{sam}@corp.test",
                "unicodePwd": utf16_password(staff_password(sam)),
                "userAccountControl": "512",
                **extra,
            }
            conn.add(staff_dn(sam), person_classes, attributes)
            checked(conn, f"add {sam}")
        # carol: "User must change password at next logon"; frank: the account has expired.
        conn.modify(staff_dn("carol"), {"pwdLastSet": [(MODIFY_REPLACE, ["0"])]})
        checked(conn, "carol pwdLastSet")
        expires = (FRANK_EXPIRED + 11_644_473_600) * 10_000_000
        conn.modify(staff_dn("frank"), {"accountExpires": [(MODIFY_REPLACE, [str(expires)])]})
        checked(conn, "frank accountExpires")
        group_classes = ["top", "group"]
        conn.add(DC_HELPDESK, group_classes, {"sAMAccountName": "Helpdesk", "member": [staff_dn("grace")]})
        checked(conn, "add Helpdesk")
        conn.add(DC_IT, group_classes, {"sAMAccountName": "IT", "member": [staff_dn("alice"), DC_HELPDESK]})
        checked(conn, "add IT")
        # A cycle: Helpdesk ⊃ IT ⊃ Helpdesk, and alice twice.
        conn.modify(DC_HELPDESK, {"member": [(MODIFY_ADD, [DC_IT, staff_dn("alice")])]})
        checked(conn, "Helpdesk members")
        members = [staff_dn("ivan"), staff_dn("henry")]
        conn.add(DC_CONTRACTORS, group_classes, {"sAMAccountName": "Contractors", "member": members})
        checked(conn, "add Contractors")
        # henry's primary group becomes Contractors: AD then drops him from Contractors' member
        # list and lists him in Domain Users' member instead (his former primary group).
        rid = sid_rid(dc.attribute(DC_CONTRACTORS, "objectSid")[0])
        conn.modify(staff_dn("henry"), {"primaryGroupID": [(MODIFY_REPLACE, [str(rid)])]})
        checked(conn, "henry primaryGroupID")
        for name, uac, os_name in (("WS-0001", "4096", "Windows 11 Enterprise"), ("WS-0002", "4098", "Windows 10 Pro")):
            conn.add(
                f"CN={name},{DC_WORKSTATIONS}",
                [*person_classes, "computer"],
                {
                    "sAMAccountName": f"{name}$",
                    "userAccountControl": uac,
                    "dNSHostName": f"{name.lower()}.corp.test",
                    "operatingSystem": os_name,
                },
            )
            checked(conn, f"add {name}")
        # dave: locked out after three wrong passwords.
        conn.modify(DOMAIN_DN, {"lockoutThreshold": [(MODIFY_REPLACE, ["3"])]})
        checked(conn, "lockoutThreshold")
    finally:
        conn.unbind()
    for _ in range(3):
        wrong = dc.connect(staff_dn("dave"), "not-his-password")
        wrong.bind()
        wrong.unbind()


def sid_rid(raw: bytes) -> int:
    return int.from_bytes(raw[-4:], "little")


def require_samba() -> None:
    """Skip locally without Samba (or root); under CI (CI=true) that is a failure, never a skip."""
    missing = samba_missing()
    require(missing is None, missing or "")


@pytest.fixture(scope="session")
def samba_dc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SambaDC]:
    """One provisioned, populated Samba AD DC for the session."""
    require_samba()
    dc = SambaDC(tmp_path_factory.mktemp("samba-dc"))
    dc.provision()
    dc.start()
    try:
        populate_dc(dc)
        yield dc
    finally:
        dc.stop()


@pytest.fixture
def samba(samba_dc: SambaDC, monkeypatch: pytest.MonkeyPatch) -> SambaDC:
    """The session's DC, with its name (dc1.corp.test) resolving to its loopback address for
    this test, as the site's DNS would resolve it."""
    real = socket.getaddrinfo

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(host, str) and host.lower() == samba_dc.fqdn:
            host = samba_dc.address
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return samba_dc
