"""[ldap] and [ldap_assets] end to end through the CLI.

Against a REAL OpenLDAP slapd (tests/fakes/slapd.py, fixtures in conftest_ldap.py): paging across
several pages (the slapd log shows each page), LDAPS and StartTLS with the trustme CA, bind
failures, anonymous bind, empty results, group mode with nested groups and memberUid lookups, UTF-8,
multi-valued attributes, AD-shaped computer entries for [ldap_assets].

Against the wire-level Active Directory lookalike (slapd cannot do these): range retrieval of a
1600-member group (``member;range=0-1499`` then ``member;range=1500-*``), AD's bind error texts,
and a server without the paged-results control.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.fakes.oomnitza import FakeOomnitza
from tests.fakes.proxy import DroppingProxy
from tests.fakes.samba_dc import DOMAIN_DN, SambaDC
from tests.fakes.slapd import FakeActiveDirectory, Slapd, free_port
from tests.helpers import CliResult
from tests.sourcekit import assert_accounted, assert_one_line_error, forget_sync_state, upload, write_config
from tests.sources import conftest_ldap
from tests.sources.conftest_ldap import (
    AD_BIG_GROUP,
    AD_BIND_DN,
    AD_MEMBERS,
    AD_PASSWORD,
    AD_PRIMARY_MEMBER,
    AD_SUFFIX,
    AD_USERS,
    ALICE_PROXIES,
    COMPUTER_CATEGORY,
    DC_CONTRACTORS,
    DC_DOMAIN_COMPUTERS,
    DC_DOMAIN_USERS,
    DC_HELPDESK,
    DC_IT,
    DC_PEOPLE,
    DC_PEOPLE_FILTER,
    DC_STAFF,
    DC_SVC_DN,
    DC_SVC_PASSWORD,
    DC_WORKSTATIONS,
    FRANK_EXPIRED,
    GROUPS,
    PEOPLE,
    PEOPLE_COUNT,
    READER_DN,
    READER_PASSWORD,
    SUFFIX,
    WORKSTATIONS,
    WS1_GUID,
    WS1_SID,
    ad_entries,
    staff_dn,
    staff_password,
)

# The fixtures (a real slapd for the session, the AD lookalike per test).
slapd = conftest_ldap.slapd
slapd_mtls = conftest_ldap.slapd_mtls
fake_ad = conftest_ldap.fake_ad
samba_dc = conftest_ldap.samba_dc
samba = conftest_ldap.samba

USERS_FILTER = "(objectClass=inetOrgPerson)"


def users(server: Slapd, **extra: str) -> dict[str, str]:
    settings = {
        "url": server.url,
        "username": READER_DN,
        "password": READER_PASSWORD,
        "base_dn": PEOPLE,
        "filter": USERS_FILTER,
        "default_role": "25",
        "default_position": "Employee",
        "sync_field": "USER",
        "page_size": "3",
    }
    settings.update(extra)
    return settings


def run(
    tmp_path: Path,
    oomnitza: FakeOomnitza,
    settings: dict[str, str],
    section: str = "ldap",
    mappings: dict[str, str] | None = None,
    *args: str,
) -> CliResult:
    return upload(write_config(tmp_path, oomnitza, section, settings, mappings), section, *args)


# --- search mode against slapd -----------------------------------------------------------------


def test_several_pages_default_mappings_utf8(tmp_path: Path, slapd: Slapd, fake_oomnitza: FakeOomnitza) -> None:
    mark = slapd.mark()
    result = run(tmp_path, fake_oomnitza, users(slapd))
    assert result.code == 0, result.all
    # nomail has no mail: EMAIL is required, so it is skipped, not sent.
    counts = assert_accounted(result, "ldap", pulled=PEOPLE_COUNT, sent=PEOPLE_COUNT - 1)
    assert counts["missing_required"] == 1
    # Paged results, page size 3: four searches really reached slapd (3 + 3 + 3 + 1).
    assert slapd.searches(PEOPLE, since=mark) == [3, 3, 3, 1]
    assert fake_oomnitza.record("users", USER="afabre") == {
        "USER": "afabre",
        "FIRST_NAME": "Alice",
        "LAST_NAME": "Fabre",
        "EMAIL": "alice@example.test",  # the first of two mail values
        "PERMISSIONS_ID": "25",
        "POSITION": "Employee",
    }
    jose = fake_oomnitza.record("users", USER="jnunez")
    assert (jose["FIRST_NAME"], jose["LAST_NAME"]) == ("José", "Núñez")
    assert fake_oomnitza.record("users", USER="o(dd*")["EMAIL"] == "odd@example.test"
    assert fake_oomnitza.bulk_payloads[0]["connector_name"] == "LDAP"
    assert any("err=0" in line for line in slapd.binds(since=mark))


def test_multi_valued_dn_and_case_insensitive_mappings(
    tmp_path: Path, slapd: Slapd, fake_oomnitza: FakeOomnitza
) -> None:
    mappings = {
        "ALL_EMAILS": '{"source": "mail*"}',
        "SECOND_EMAIL": '{"source": "mail*.1"}',
        "DN": '{"source": "dn"}',
        "DISTINGUISHED": '{"source": "distinguishedName"}',
        "GIVEN_LOWER": '{"source": "givenname"}',
        "TITLE": '{"source": "title"}',
    }
    result = run(tmp_path, fake_oomnitza, users(slapd, base_dn=SUFFIX, filter="(uid=afabre)"), mappings=mappings)
    assert result.code == 0, result.all
    assert_accounted(result, "ldap", pulled=1, sent=1)
    rec = fake_oomnitza.record("users", USER="afabre")
    assert rec["EMAIL"] == "alice@example.test"
    assert rec["ALL_EMAILS"] == ["alice@example.test", "a.fabre@example.test"]
    assert rec["SECOND_EMAIL"] == "a.fabre@example.test"
    assert rec["DN"] == rec["DISTINGUISHED"] == f"uid=afabre,{PEOPLE}"
    assert rec["GIVEN_LOWER"] == "Alice"
    assert rec["TITLE"] == "Designer"


def test_mapped_operational_attribute_is_requested(tmp_path: Path, slapd: Slapd, fake_oomnitza: FakeOomnitza) -> None:
    # "*" returns user attributes only; an operational one named in an INI mapping is asked for too.
    mappings = {"MODIFIED": '{"source": "modifyTimestamp"}', "UUID": '{"source": "entryUUID"}'}
    result = run(tmp_path, fake_oomnitza, users(slapd, filter="(uid=user01)"), mappings=mappings)
    assert result.code == 0, result.all
    assert_accounted(result, "ldap", pulled=1, sent=1)
    rec = fake_oomnitza.record("users", USER="user01")
    assert rec["MODIFIED"].endswith("Z") and len(rec["MODIFIED"]) == 15  # GeneralizedTime, as the server sends it
    assert len(rec["UUID"]) == 36


def test_record_count_stops_the_paged_search(tmp_path: Path, slapd: Slapd, fake_oomnitza: FakeOomnitza) -> None:
    mark = slapd.mark()
    result = run(tmp_path, fake_oomnitza, users(slapd), "ldap", None, "--record-count", "4")
    assert result.code == 0, result.all
    counts = assert_accounted(result, "ldap", pulled=4)
    assert len(fake_oomnitza.records("users")) == counts["sent"] == 4 - counts["missing_required"]
    # Pages are fetched one at a time as the pipeline asks: two of the four pages were read.
    assert slapd.searches(PEOPLE, since=mark) == [3, 3]


def test_ldaps_with_cacert_file(
    tmp_path: Path, slapd: Slapd, fake_oomnitza: FakeOomnitza, tls_files: dict[str, str]
) -> None:
    result = run(tmp_path, fake_oomnitza, users(slapd, url=slapd.ldaps_url, cacert_file=tls_files["ca"]))
    assert result.code == 0, result.all
    assert_accounted(result, "ldap", pulled=PEOPLE_COUNT, sent=PEOPLE_COUNT - 1)


def test_ldaps_untrusted_certificate(tmp_path: Path, slapd: Slapd, fake_oomnitza: FakeOomnitza) -> None:
    result = run(tmp_path, fake_oomnitza, users(slapd, url=slapd.ldaps_url))
    assert_one_line_error(result, f"cannot reach {slapd.ldaps_url}", "TLS certificate not trusted", "cacert_file")
    assert fake_oomnitza.records("users") == []


def test_ldaps_verify_ssl_false(tmp_path: Path, slapd: Slapd, fake_oomnitza: FakeOomnitza) -> None:
    result = run(tmp_path, fake_oomnitza, users(slapd, url=slapd.ldaps_url, verify_ssl="false"))
    assert result.code == 0, result.all
    assert "verify_ssl = false" in result.err
    assert_accounted(result, "ldap", pulled=PEOPLE_COUNT, sent=PEOPLE_COUNT - 1)


def test_starttls(tmp_path: Path, slapd: Slapd, fake_oomnitza: FakeOomnitza, tls_files: dict[str, str]) -> None:
    result = run(
        tmp_path,
        fake_oomnitza,
        users(slapd, start_tls="true", cacert_dir=str(Path(tls_files["ca"]).parent), cacert_file=tls_files["ca"]),
    )
    assert result.code == 0, result.all
    assert "(StartTLS)" in result.err
    assert_accounted(result, "ldap", pulled=PEOPLE_COUNT, sent=PEOPLE_COUNT - 1)


def test_starttls_untrusted(tmp_path: Path, slapd: Slapd, fake_oomnitza: FakeOomnitza) -> None:
    result = run(tmp_path, fake_oomnitza, users(slapd, start_tls="true"))
    assert_one_line_error(result, "TLS certificate not trusted")
    assert fake_oomnitza.records("users") == []


def test_client_certificate(
    tmp_path: Path, slapd_mtls: Slapd, fake_oomnitza: FakeOomnitza, tls_files: dict[str, str]
) -> None:
    settings = users(slapd_mtls, url=slapd_mtls.ldaps_url, cacert_file=tls_files["ca"])
    result = run(tmp_path, fake_oomnitza, settings)
    assert_one_line_error(
        result, f"cannot reach {slapd_mtls.ldaps_url}: the server ended the TLS handshake", "set user_pem_file"
    )
    result = run(tmp_path, fake_oomnitza, {**settings, "user_pem_file": tls_files["client_pem"]})
    assert result.code == 0, result.all
    assert_accounted(result, "ldap", pulled=PEOPLE_COUNT, sent=PEOPLE_COUNT - 1)


def test_bad_password(tmp_path: Path, slapd: Slapd, fake_oomnitza: FakeOomnitza) -> None:
    mark = slapd.mark()
    result = run(tmp_path, fake_oomnitza, users(slapd, password="Wrong-Secret-913"))
    assert_one_line_error(
        result, "[ldap] the LDAP server rejected the credentials (49 invalidCredentials", "check username and password"
    )
    assert "Wrong-Secret-913" not in result.all
    assert len([line for line in slapd.binds(since=mark) if "err=49" in line]) == 1  # not retried
    assert fake_oomnitza.records("users") == []


def test_anonymous_bind(tmp_path: Path, slapd: Slapd, fake_oomnitza: FakeOomnitza) -> None:
    result = run(tmp_path, fake_oomnitza, users(slapd, username="Anonymous", password=""))
    assert result.code == 0, result.all
    assert "as anonymous" in result.err
    assert_accounted(result, "ldap", pulled=PEOPLE_COUNT, sent=PEOPLE_COUNT - 1)


def test_empty_password_is_refused(tmp_path: Path, slapd: Slapd, fake_oomnitza: FakeOomnitza) -> None:
    mark = slapd.mark()
    result = run(tmp_path, fake_oomnitza, users(slapd, password=""))
    assert_one_line_error(result, "password is empty", "username = anonymous")
    assert slapd.binds(since=mark) == []  # refused before any connection
    assert fake_oomnitza.records("users") == []


def test_empty_result(tmp_path: Path, slapd: Slapd, fake_oomnitza: FakeOomnitza) -> None:
    result = run(tmp_path, fake_oomnitza, users(slapd, base_dn=f"ou=empty,{SUFFIX}"))
    assert result.code == 0, result.all
    assert_accounted(result, "ldap", pulled=0)
    assert next(iter(fake_oomnitza.portions.values())).finalized


def test_filter_matching_nothing(tmp_path: Path, slapd: Slapd, fake_oomnitza: FakeOomnitza) -> None:
    result = run(tmp_path, fake_oomnitza, users(slapd, filter="(uid=nobody-has-this)"))
    assert result.code == 0, result.all
    assert_accounted(result, "ldap", pulled=0)


def test_missing_base_dn(tmp_path: Path, slapd: Slapd, fake_oomnitza: FakeOomnitza) -> None:
    result = run(tmp_path, fake_oomnitza, users(slapd, base_dn=f"ou=nowhere,{SUFFIX}"))
    assert_one_line_error(result, f"base_dn 'ou=nowhere,{SUFFIX}' does not exist", "32 noSuchObject")
    assert fake_oomnitza.records("users") == []


def test_unreachable_server(tmp_path: Path, slapd: Slapd, fake_oomnitza: FakeOomnitza) -> None:
    url = f"ldap://127.0.0.1:{free_port()}"
    result = run(tmp_path, fake_oomnitza, users(slapd, url=url))
    assert_one_line_error(result, f"cannot reach {url}: connection refused")
    assert fake_oomnitza.records("users") == []


# --- group mode against slapd ------------------------------------------------------------------


def test_groups_dn_nested_and_deduplicated(tmp_path: Path, slapd: Slapd, fake_oomnitza: FakeOomnitza) -> None:
    settings = users(slapd, groups_dn=f'["cn=it,{GROUPS}"]', page_size="2", filter="(objectClass=*)")
    result = run(tmp_path, fake_oomnitza, settings)
    assert result.code == 0, result.all
    # it = afabre, José, nested; nested = user03, afabre (again), it (a cycle): three people, once each.
    assert_accounted(result, "ldap", pulled=3, sent=3)
    assert sorted(r["USER"] for r in fake_oomnitza.records("users")) == ["afabre", "jnunez", "user03"]


def test_nested_groups_off(tmp_path: Path, slapd: Slapd, fake_oomnitza: FakeOomnitza) -> None:
    settings = users(slapd, groups_dn=f'["cn=it,{GROUPS}"]', nested_groups="false")
    result = run(tmp_path, fake_oomnitza, settings)
    assert result.code == 0, result.all
    # The nested group is not expanded and does not match the inetOrgPerson filter.
    assert_accounted(result, "ldap", pulled=2, sent=2)


def test_groups_dn_wins_over_group_dn(tmp_path: Path, slapd: Slapd, fake_oomnitza: FakeOomnitza) -> None:
    settings = users(slapd, group_dn=f"cn=stale,{GROUPS}", groups_dn=f'["cn=nested,{GROUPS}"]')
    result = run(tmp_path, fake_oomnitza, settings)
    assert result.code == 0, result.all
    # nested = user03, afabre, it → (afabre, José, nested again): user03, afabre, jnunez
    assert sorted(r["USER"] for r in fake_oomnitza.records("users")) == ["afabre", "jnunez", "user03"]


def test_group_dn_alone_and_a_missing_member(tmp_path: Path, slapd: Slapd, fake_oomnitza: FakeOomnitza) -> None:
    result = run(tmp_path, fake_oomnitza, users(slapd, group_dn=f"cn=stale,{GROUPS}"))
    assert result.code == 0, result.all
    assert_accounted(result, "ldap", pulled=1, sent=1)
    assert fake_oomnitza.records("users")[0]["USER"] == "user05"
    assert f"uid=gone,{PEOPLE}" in result.err  # the member that does not exist is named


def test_memberuid_with_group_member_filter_escaped(tmp_path: Path, slapd: Slapd, fake_oomnitza: FakeOomnitza) -> None:
    settings = users(
        slapd,
        base_dn=SUFFIX,
        group_dn=f"cn=posix,{GROUPS}",
        group_members_attr="memberUid",
        group_member_filter="(uid={})",
    )
    result = run(tmp_path, fake_oomnitza, settings)
    assert result.code == 0, result.all
    # "o(dd*" is escaped (uid=o\28dd\2a): it matches only itself; "ghost" matches nobody.
    assert_accounted(result, "ldap", pulled=3, sent=3)
    assert sorted(r["USER"] for r in fake_oomnitza.records("users")) == ["afabre", "jnunez", "o(dd*"]
    assert "(uid=ghost)" in result.err


def test_missing_group(tmp_path: Path, slapd: Slapd, fake_oomnitza: FakeOomnitza) -> None:
    result = run(tmp_path, fake_oomnitza, users(slapd, groups_dn=f'["cn=nope,{GROUPS}"]'))
    assert_one_line_error(result, f"the group 'cn=nope,{GROUPS}' does not exist", "32 noSuchObject")


# --- [ldap_assets] against slapd ---------------------------------------------------------------


def assets(server: Slapd, **extra: str) -> dict[str, str]:
    settings = {
        "url": server.url,
        "username": READER_DN,
        "password": READER_PASSWORD,
        "base_dn": WORKSTATIONS,
        "filter": f"(&(objectCategory={COMPUTER_CATEGORY})(!(userAccountControl:1.2.840.113556.1.4.803:=2)))",
        "sync_field": "24DCF85294E411E38A52066B556BA4EE",
    }
    settings.update(extra)
    return settings


ASSET_MAPPINGS = {
    "24DCF85294E411E38A52066B556BA4EE": '{"source": "cn", "required": true}',
    "OS_NAME": '{"source": "operatingSystem"}',
    "HOSTNAME": '{"source": "dNSHostName"}',
    "LAST_SEEN": '{"source": "lastLogonTimestamp", "converter": "ldap_timestamp"}',
    "GUID": '{"source": "objectGUID"}',
    "SID": '{"source": "objectSid"}',
    "SERIAL": '{"source": "serialNumber"}',
    "SERIALS": '{"source": "serialNumber*"}',
    "PHOTO": '{"source": "jpegPhoto"}',
    "DN": '{"source": "dn"}',
}


def test_assets_ad_computers(tmp_path: Path, slapd: Slapd, fake_oomnitza: FakeOomnitza) -> None:
    result = run(tmp_path, fake_oomnitza, assets(slapd), "ldap_assets", ASSET_MAPPINGS)
    assert result.code == 0, result.all
    # WS-0002 is disabled (userAccountControl 4098 = 4096 + 2) and filtered out by the server.
    assert_accounted(result, "ldap_assets", pulled=2, sent=2)
    ws1 = fake_oomnitza.record("assets", **{"24DCF85294E411E38A52066B556BA4EE": "WS-0001"})
    assert ws1 == {
        "24DCF85294E411E38A52066B556BA4EE": "WS-0001",
        "OS_NAME": "Windows 11 Enterprise",
        "HOSTNAME": "ws-0001.example.test",
        "LAST_SEEN": 1759104000,
        "GUID": WS1_GUID,
        "SID": WS1_SID,
        "SERIAL": "SN-A1",
        "SERIALS": ["SN-A1", "SN-A2"],
        "PHOTO": "*BINARY*",
        "DN": f"cn=WS-0001,{WORKSTATIONS}",
    }
    payload = fake_oomnitza.bulk_payloads[0]
    assert payload["connector_name"] == "LDAP_assets"
    assert payload["sync_field"] == ["24DCF85294E411E38A52066B556BA4EE"]
    # No default mappings and no implicit POSITION / PERMISSIONS_ID for assets.
    ws3 = fake_oomnitza.record("assets", **{"24DCF85294E411E38A52066B556BA4EE": "WS-0003"})
    assert "POSITION" not in ws3 and ws3["HOSTNAME"] is None


def test_assets_sync_field_source_required(tmp_path: Path, slapd: Slapd, fake_oomnitza: FakeOomnitza) -> None:
    mappings = {"24DCF85294E411E38A52066B556BA4EE": '{"source": "dNSHostName", "required": true}'}
    result = run(tmp_path, fake_oomnitza, assets(slapd), "ldap_assets", mappings)
    assert result.code == 0, result.all
    counts = assert_accounted(result, "ldap_assets", pulled=2, sent=1)
    assert counts["missing_required"] == 1  # WS-0003 has no dNSHostName


def test_assets_sync_field_is_required(tmp_path: Path, slapd: Slapd, fake_oomnitza: FakeOomnitza) -> None:
    settings = assets(slapd)
    del settings["sync_field"]
    result = run(tmp_path, fake_oomnitza, settings, "ldap_assets", ASSET_MAPPINGS)
    assert_one_line_error(result, "sync_field")
    assert fake_oomnitza.records("assets") == []


# --- configuration errors ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        ({"groups_dn": "['cn=it,ou=groups,dc=example,dc=test']"}, "groups_dn must be a JSON array"),
        ({"filter": "uid=afabre)("}, "is not a valid LDAP filter"),
        ({"url": "https://ldap.example.test"}, "must start with ldap:// or ldaps://"),
        ({"url": "ldaps://ldap.example.test:636", "start_tls": "true"}, "start_tls = true needs an ldap:// url"),
        ({"page_size": "0"}, "page_size = '0' must be a whole number from 1 to 100000"),
        ({"nested_groups": "sometimes"}, "nested_groups = 'sometimes' must be true or false"),
        ({"timeout": "0"}, "timeout = '0' must be a number above 0"),
    ],
)
def test_config_errors(
    tmp_path: Path, slapd: Slapd, fake_oomnitza: FakeOomnitza, extra: dict[str, str], needle: str
) -> None:
    result = run(tmp_path, fake_oomnitza, users(slapd, **extra))
    assert_one_line_error(result, needle)
    assert fake_oomnitza.records("users") == []


# --- Active Directory behaviours, against the wire-level fake ---------------------------------


def ad(fake: FakeActiveDirectory, **extra: str) -> dict[str, str]:
    settings = {
        "url": fake.url,
        "username": AD_BIND_DN,
        "password": AD_PASSWORD,
        "base_dn": AD_SUFFIX,
        "groups_dn": f'["{AD_BIG_GROUP}"]',
        "filter": "(&(objectClass=user)(objectClass=person))",
        "default_role": "25",
        "default_position": "Employee",
        "sync_field": "USER",
        "page_size": "500",
    }
    settings.update(extra)
    return settings


def test_ad_range_retrieval_of_a_large_group(
    tmp_path: Path, fake_ad: FakeActiveDirectory, fake_oomnitza: FakeOomnitza
) -> None:
    mappings = {"LAST_SEEN": '{"source": "lastLogonTimestamp", "converter": "ldap_timestamp"}'}
    result = run(tmp_path, fake_oomnitza, ad(fake_ad), "ldap", mappings)
    assert result.code == 0, result.all
    # The members listed in "member", and the one whose primaryGroupID is the group's RID.
    assert_accounted(result, "ldap", pulled=AD_MEMBERS + 1, sent=AD_MEMBERS + 1)
    assert fake_oomnitza.record("users", USER=AD_PRIMARY_MEMBER) is not None
    # The group answered member;range=0-1499, so the rest was asked for as member;range=1500-*.
    ranged = [r for r in fake_ad.searches("member;range=") if r["base"] == AD_BIG_GROUP]
    assert [r["attributes"] for r in ranged] == [["member;range=1500-*"]]
    # The primary-group search: paged, under the group's domain.
    primary = [r for r in fake_ad.requests if r["base"] == AD_SUFFIX and r["scope"] == 2]
    assert [(r["paged"], r["sent"]) for r in primary] == [(True, 1)]
    # No uid on AD users: ldap_user_field falls back to sAMAccountName.
    last = fake_oomnitza.record("users", USER="staff1599")
    assert last["EMAIL"] == "staff1599@corp.test"
    assert last["LAST_SEEN"] == 1759104000


def test_ad_small_ranges(tmp_path: Path, fake_oomnitza: FakeOomnitza) -> None:
    fake = FakeActiveDirectory(ad_entries(25), bind_dn=AD_BIND_DN, password=AD_PASSWORD, max_values=10)
    with fake.running():
        result = run(tmp_path, fake_oomnitza, ad(fake, page_size="7"))
    assert result.code == 0, result.all
    assert_accounted(result, "ldap", pulled=26, sent=26)
    ranged = [r["attributes"] for r in fake.searches("member;range=") if r["base"] == AD_BIG_GROUP]
    assert ranged == [["member;range=10-*"], ["member;range=20-*"]]


def test_ad_bad_password(tmp_path: Path, fake_ad: FakeActiveDirectory, fake_oomnitza: FakeOomnitza) -> None:
    result = run(tmp_path, fake_oomnitza, ad(fake_ad, password="Not-The-Password-1"))
    assert_one_line_error(result, "rejected the credentials (49 invalidCredentials: 80090308: LdapErr:", "data 52e")
    assert "Not-The-Password-1" not in result.all
    assert fake_oomnitza.records("users") == []


def test_ad_requires_signing(tmp_path: Path, fake_oomnitza: FakeOomnitza) -> None:
    fake = FakeActiveDirectory(ad_entries(3), bind_dn=AD_BIND_DN, password=AD_PASSWORD, require_signing=True)
    with fake.running():
        result = run(tmp_path, fake_oomnitza, ad(fake))
    assert_one_line_error(result, "8 strongerAuthRequired", "use an ldaps:// url or start_tls = true")
    assert fake_oomnitza.records("users") == []


def test_ad_without_paged_results_control(tmp_path: Path, fake_oomnitza: FakeOomnitza) -> None:
    fake = FakeActiveDirectory(ad_entries(5), bind_dn=AD_BIND_DN, password=AD_PASSWORD, paging=False)
    with fake.running():
        result = run(tmp_path, fake_oomnitza, ad(fake, groups_dn="[]", base_dn=AD_USERS, page_size="2"))
    assert result.code == 0, result.all
    assert_accounted(result, "ldap", pulled=6, sent=6)
    searches = [r for r in fake.requests if r["base"] == AD_USERS]
    assert len(searches) == 1 and not searches[0]["paged"]
    assert "does not offer paged results" in result.err


def test_protocol_version_2_searches_unpaged(tmp_path: Path, fake_oomnitza: FakeOomnitza) -> None:
    fake = FakeActiveDirectory(ad_entries(4), bind_dn=AD_BIND_DN, password=AD_PASSWORD)
    with fake.running():
        result = run(tmp_path, fake_oomnitza, ad(fake, groups_dn="[]", base_dn=AD_USERS, protocol_version="2"))
    assert result.code == 0, result.all
    assert_accounted(result, "ldap", pulled=5, sent=5)
    assert [r["paged"] for r in fake.requests if r["base"] == AD_USERS] == [False]


def test_ad_size_limit_on_an_unpaged_search(tmp_path: Path, fake_oomnitza: FakeOomnitza) -> None:
    fake = FakeActiveDirectory(ad_entries(5), bind_dn=AD_BIND_DN, password=AD_PASSWORD, paging=False, size_limit=3)
    with fake.running():
        result = run(tmp_path, fake_oomnitza, ad(fake, groups_dn="[]", base_dn=AD_USERS))
    assert result.code == 0, result.all
    # 4 sizeLimitExceeded: the partial result is synced and the cut is logged.
    assert_accounted(result, "ldap", pulled=3, sent=3)
    assert "4 sizeLimitExceeded" in result.err


def test_ad_max_page_size_caps_every_page(
    tmp_path: Path, fake_ad: FakeActiveDirectory, fake_oomnitza: FakeOomnitza
) -> None:
    # page_size above AD's MaxPageSize (1000): AD answers 1000 entries a page with a cookie.
    result = run(tmp_path, fake_oomnitza, ad(fake_ad, groups_dn="[]", base_dn=AD_USERS, page_size="1500"))
    assert result.code == 0, result.all
    assert_accounted(result, "ldap", pulled=AD_MEMBERS + 1, sent=AD_MEMBERS + 1)
    assert [r["sent"] for r in fake_ad.requests if r["base"] == AD_USERS] == [1000, AD_MEMBERS + 1 - 1000]


def test_lost_connection_restarts_the_search_without_duplicates(
    tmp_path: Path, slapd: Slapd, fake_oomnitza: FakeOomnitza
) -> None:
    # Client messages on a connection: bind, two reads of the server's info, then the pages;
    # the first connection is cut when the client asks for page 2.
    with DroppingProxy(slapd.port, drop_at=5).serve() as proxy:
        mark = slapd.mark()
        result = run(tmp_path, fake_oomnitza, users(slapd, url=f"ldap://127.0.0.1:{proxy.port}"))
    assert result.code == 0, result.all
    assert proxy.dropped and proxy.connections == 2
    assert "connection to the LDAP server was lost" in result.err and "the 3 entries already read" in result.err
    # The search ran again from the start on the new connection; nothing was pulled twice.
    assert slapd.searches(PEOPLE, since=mark) == [3, 3, 3, 3, 1]
    assert_accounted(result, "ldap", pulled=PEOPLE_COUNT, sent=PEOPLE_COUNT - 1)
    assert len(fake_oomnitza.records("users")) == PEOPLE_COUNT - 1


def test_a_connection_that_keeps_dropping_fails_the_run(
    tmp_path: Path, slapd: Slapd, fake_oomnitza: FakeOomnitza
) -> None:
    # Every connection binds, then is cut when the client asks for page 1.
    with DroppingProxy(slapd.port, drop_at=4, every=True).serve() as proxy:
        result = run(tmp_path, fake_oomnitza, users(slapd, url=f"ldap://127.0.0.1:{proxy.port}"))
    assert_one_line_error(result, "[ldap] the connection to the LDAP server was lost 4 times; last: ")
    assert proxy.connections == 4  # the first one and three restarts, then it gives up
    assert fake_oomnitza.records("users") == []


# --- the merged mapping decides what is requested ----------------------------------------------


def test_server_mapping_names_an_operational_attribute(
    tmp_path: Path, slapd: Slapd, fake_oomnitza: FakeOomnitza
) -> None:
    # "*" returns user attributes only: modifyTimestamp / entryUUID arrive only when named, here
    # by the mapping stored in Oomnitza (no INI mapping names them).
    fake_oomnitza.set_mapping("LDAP", {"modifyTimestamp": "MODIFIED", "entryUUID": "UUID"})
    mark = slapd.mark()
    mappings = {"MODIFIED_AT": '{"source": "modifyTimestamp", "converter": "ldap_generalized_time"}'}
    result = run(tmp_path, fake_oomnitza, users(slapd, filter="(uid=user01)"), mappings=mappings)
    assert result.code == 0, result.all
    assert_accounted(result, "ldap", pulled=1, sent=1)
    rec = fake_oomnitza.record("users", USER="user01")
    assert rec["MODIFIED"].endswith("Z") and len(rec["MODIFIED"]) == 15  # GeneralizedTime as sent
    assert isinstance(rec["MODIFIED_AT"], int) and rec["MODIFIED_AT"] > 1_700_000_000
    assert len(rec["UUID"]) == 36
    assert any("modifyTimestamp" in line and "entryUUID" in line for line in slapd.search_attributes(since=mark))


# --- a real Samba Active Directory domain controller -------------------------------------------


def dc_settings(dc: SambaDC, **extra: str) -> dict[str, str]:
    settings = {
        "url": f"ldaps://{dc.fqdn}",
        "cacert_file": dc.ca_file,
        "username": DC_SVC_DN,
        "password": DC_SVC_PASSWORD,
        "base_dn": DC_STAFF,
        "filter": DC_PEOPLE_FILTER,
        "default_role": "25",
        "default_position": "Employee",
        "sync_field": "USER",
        "page_size": "3",
    }
    settings.update(extra)
    return settings


def test_dc_users_over_ldaps(tmp_path: Path, samba: SambaDC, fake_oomnitza: FakeOomnitza) -> None:
    # Constructed attributes (canonicalName, msDS-UserPasswordExpiryTimeComputed) come only when
    # named: here only the Oomnitza server mapping names them.
    fake_oomnitza.set_mapping("LDAP", {"canonicalName": "CANONICAL", "msDS-UserPasswordExpiryTimeComputed": "PWD"})
    mappings = {
        "FIRST_PROXY": '{"source": "proxyAddresses"}',
        "PRIMARY_SMTP": '{"source": "proxyAddresses*", "converter": "primary_smtp_address"}',
        "CREATED": '{"source": "whenCreated", "converter": "ldap_generalized_time"}',
        "LAST_LOGON": '{"source": "lastLogon", "converter": "ldap_timestamp"}',
        "EXPIRES": '{"source": "accountExpires", "converter": "ldap_timestamp"}',
        "GROUPS": '{"source": "memberOf"}',
        "GUID": '{"source": "objectGUID"}',
        "SID": '{"source": "objectSid"}',
        "NICKNAME": '{"source": "displayNamePrintable"}',
    }
    result = run(tmp_path, fake_oomnitza, dc_settings(samba), mappings=mappings)
    assert result.code == 0, result.all
    # bob is disabled: the filter leaves him out.
    enabled = sorted(sam for sam in DC_PEOPLE if sam != "bob")
    assert_accounted(result, "ldap", pulled=len(enabled), sent=len(enabled))
    assert sorted(r["USER"] for r in fake_oomnitza.records("users")) == enabled
    alice = fake_oomnitza.record("users", USER="alice")
    assert alice["EMAIL"] == "alice@corp.test"
    assert alice["CANONICAL"] == "corp.test/Staff/Alice Fabre"
    assert int(alice["PWD"]) > 0  # FILETIME, as AD sends it
    # The first value of a multi-valued attribute is the server's order, not the primary address.
    assert alice["FIRST_PROXY"] == ALICE_PROXIES[0]
    assert alice["PRIMARY_SMTP"] == "alice.fabre@corp.test"
    assert isinstance(alice["CREATED"], int) and alice["CREATED"] > 1_700_000_000
    assert alice["LAST_LOGON"] is None  # lastLogon: 0 = never
    assert alice["EXPIRES"] is None  # accountExpires: 9223372036854775807 = never
    assert alice["GROUPS"] == [DC_IT] or sorted(alice["GROUPS"]) == sorted([DC_IT, DC_HELPDESK])
    assert len(alice["GUID"]) == 36 and alice["SID"].startswith("S-1-5-21-")
    assert alice["NICKNAME"] is None  # an attribute the entry does not have arrives as null
    assert fake_oomnitza.record("users", USER="frank")["EXPIRES"] == FRANK_EXPIRED
    jose = fake_oomnitza.record("users", USER="jnunez")
    assert (jose["FIRST_NAME"], jose["LAST_NAME"]) == ("José", "Núñez")


def test_dc_starttls(tmp_path: Path, samba: SambaDC, fake_oomnitza: FakeOomnitza) -> None:
    settings = dc_settings(samba, url=f"ldap://{samba.fqdn}", start_tls="true", filter="(sAMAccountName=alice)")
    result = run(tmp_path, fake_oomnitza, settings)
    assert result.code == 0, result.all
    assert "(StartTLS)" in result.err
    assert_accounted(result, "ldap", pulled=1, sent=1)


def test_dc_refuses_a_simple_bind_without_tls(tmp_path: Path, samba: SambaDC, fake_oomnitza: FakeOomnitza) -> None:
    result = run(tmp_path, fake_oomnitza, dc_settings(samba, url=f"ldap://{samba.fqdn}"))
    assert_one_line_error(result, "8 strongerAuthRequired", "use an ldaps:// url or start_tls = true")
    assert fake_oomnitza.records("users") == []


def test_dc_certificate_names_the_dc(tmp_path: Path, samba: SambaDC, fake_oomnitza: FakeOomnitza) -> None:
    # Samba's own certificate: CN=DC1.corp.test, no subjectAltName. By address it cannot match.
    url = f"ldaps://{samba.address}"
    result = run(tmp_path, fake_oomnitza, dc_settings(samba, url=url))
    assert_one_line_error(
        result, f"cannot reach {url}:636", "certificate is issued to DC1.corp.test", "put that name in url"
    )
    # Without cacert_file the system's CAs do not know Samba's own CA.
    result = run(tmp_path, fake_oomnitza, {k: v for k, v in dc_settings(samba).items() if k != "cacert_file"})
    assert_one_line_error(result, "TLS certificate not trusted; set cacert_file")
    assert fake_oomnitza.records("users") == []


def test_dc_certificate_passes_python_313_strict_checks(
    tmp_path: Path, samba: SambaDC, fake_oomnitza: FakeOomnitza, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Python 3.13's ssl.create_default_context() adds VERIFY_X509_STRICT, which refuses Samba's own
    # certificate (it has no Authority Key Identifier). Simulated here for older Pythons; ldap3
    # imported the function by name.
    import ssl

    import ldap3.core.tls

    real = ssl.create_default_context

    def strict(*args: Any, **kwargs: Any) -> ssl.SSLContext:
        context = real(*args, **kwargs)
        context.verify_flags |= ssl.VERIFY_X509_STRICT
        return context

    monkeypatch.setattr(ssl, "create_default_context", strict)
    monkeypatch.setattr(ldap3.core.tls, "create_default_context", strict)
    result = run(tmp_path, fake_oomnitza, dc_settings(samba, filter="(sAMAccountName=alice)"))
    assert result.code == 0, result.all
    assert_accounted(result, "ldap", pulled=1, sent=1)


@pytest.mark.parametrize(
    ("user", "password", "cause"),
    [
        ("bob", None, "data 533, v1db1): the account is disabled: enable it"),
        ("carol", None, "data 773, v1db1): the account must change its password at next logon"),
        ("dave", None, "data 775, v1db1): the account is locked out"),
        ("frank", None, "data 701, v1db1): the account has expired"),
        ("alice", "Not-Her-Password-1", "data 52e, v1db1): wrong password or unknown account"),
    ],
)
def test_dc_bind_failures_name_the_cause(
    tmp_path: Path, samba: SambaDC, fake_oomnitza: FakeOomnitza, user: str, password: str | None, cause: str
) -> None:
    before = samba.attribute(staff_dn(user), "badPwdCount")
    settings = dc_settings(samba, username=f"{user}@corp.test", password=password or staff_password(user))
    result = run(tmp_path, fake_oomnitza, settings)
    assert_one_line_error(result, "[ldap] the LDAP server rejected the credentials (49 invalidCredentials: ", cause)
    assert staff_password(user) not in result.all
    if password:  # one wrong password, one bad attempt on the DC: not retried
        assert int(samba.attribute(staff_dn(user), "badPwdCount")[0]) == int(before[0]) + 1
    assert fake_oomnitza.records("users") == []


def test_dc_group_mode_domain_users(tmp_path: Path, samba: SambaDC, fake_oomnitza: FakeOomnitza) -> None:
    # AD lists nobody in "member" of a primary group: Domain Users' members are the users whose
    # primaryGroupID is its RID (513), plus henry, who AD listed there when his primary group
    # became Contractors.
    settings = dc_settings(samba, base_dn=DOMAIN_DN, group_dn=DC_DOMAIN_USERS)
    result = run(tmp_path, fake_oomnitza, settings)
    assert result.code == 0, result.all
    # Administrator, dns-dc1 and svc-oomnitza have no mail: missing required. bob and krbtgt are disabled.
    counts = assert_accounted(result, "ldap", pulled=11, sent=8)
    assert counts["missing_required"] == 3
    expected = sorted(sam for sam in DC_PEOPLE if sam != "bob")
    assert sorted(r["USER"] for r in fake_oomnitza.records("users")) == expected


def test_dc_group_mode_nested_and_primary(tmp_path: Path, samba: SambaDC, fake_oomnitza: FakeOomnitza) -> None:
    # IT = alice + Helpdesk (grace, alice, IT again); Contractors = ivan + henry (his primary group).
    settings = dc_settings(samba, groups_dn=f'["{DC_IT}", "{DC_CONTRACTORS}"]', page_size="2")
    result = run(tmp_path, fake_oomnitza, settings)
    assert result.code == 0, result.all
    assert_accounted(result, "ldap", pulled=4, sent=4)
    assert sorted(r["USER"] for r in fake_oomnitza.records("users")) == ["alice", "grace", "henry", "ivan"]


def test_dc_computers_as_assets(tmp_path: Path, samba: SambaDC, fake_oomnitza: FakeOomnitza) -> None:
    mappings = {
        "24DCF85294E411E38A52066B556BA4EE": '{"source": "objectGUID", "required": true}',
        "NAME": '{"source": "cn"}',
        "HOSTNAME": '{"source": "dNSHostName"}',
        "OS_NAME": '{"source": "operatingSystem"}',
        "LAST_SEEN": '{"source": "lastLogonTimestamp", "converter": "ldap_timestamp"}',
    }
    settings = {
        **dc_settings(samba, base_dn=DC_WORKSTATIONS, sync_field="24DCF85294E411E38A52066B556BA4EE"),
        "filter": "(&(objectCategory=computer)(!(userAccountControl:1.2.840.113556.1.4.803:=2)))",
    }
    for key in ("default_role", "default_position"):
        del settings[key]
    result = run(tmp_path, fake_oomnitza, settings, "ldap_assets", mappings)
    assert result.code == 0, result.all
    assert_accounted(result, "ldap_assets", pulled=1, sent=1)
    ws1 = fake_oomnitza.records("assets")[0]
    assert (ws1["NAME"], ws1["HOSTNAME"], ws1["OS_NAME"]) == ("WS-0001", "ws-0001.corp.test", "Windows 11 Enterprise")
    assert ws1["LAST_SEEN"] is None and len(ws1["24DCF85294E411E38A52066B556BA4EE"]) == 36
    # Group mode: Domain Computers lists its members only through their primaryGroupID (515).
    fake_oomnitza.reset()
    forget_sync_state()  # a new Oomnitza: send everything again
    group_mode = {**settings, "base_dn": DOMAIN_DN, "group_dn": DC_DOMAIN_COMPUTERS}
    result = run(tmp_path, fake_oomnitza, group_mode, "ldap_assets", mappings)
    assert result.code == 0, result.all
    assert_accounted(result, "ldap_assets", pulled=1, sent=1)
