"""``[ldap]`` (users) and ``[ldap_assets]`` (assets): LDAP v3 / Active Directory with ``ldap3``.

Connection: ``ldap://`` (optionally upgraded with StartTLS, ``start_tls = true``) or ``ldaps://``,
TLS options applied per connection from the section's ``verify_ssl`` / ``cacert_file`` /
``cacert_dir`` / ``user_pem_file``; a simple bind with ``username``/``password`` or an anonymous
bind (``username = anonymous``). Referrals are not followed.

Search mode (no group configured): one subtree search of ``base_dn`` with ``filter``, read with the
RFC 2696 Simple Paged Results control ``page_size`` entries at a time. Each page is fetched in a
worker thread (``asyncio.to_thread``) only when the pipeline asks for it, so memory holds one page
and ``--record-count`` ends the search early. Servers that do not advertise the control (and
``protocol_version = 2``) get one unpaged search.

Group mode (``groups_dn`` > ``group_dn``): the members of each group are read (with Active
Directory range retrieval, ``member;range=0-1499`` …), nested groups are expanded (visited-set) and
each member entry is read (base search at its DN with ``filter``, or a ``group_member_filter``
lookup under ``base_dn`` with the member value RFC 4515-escaped). On AD, the entries whose
``primaryGroupID`` is the group's RID are members too (a paged search of the group's domain).
Users are de-duplicated by DN.

Attributes requested: ``attributes`` (default ``*``) plus, by name, every attribute the merged
mapping names (operational and AD constructed attributes come only when named).

Record shape: a flat dict; see ``entry_record``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import re
import ssl
import time
import uuid
import warnings
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterable, Iterator
from typing import Any, ClassVar
from urllib.parse import unquote, urlsplit

from ..converters.registry import parse_converter_spec
from ..errors import ConfigError, SourceError
from ..settings import BOOL, Float, Int, List, Setting
from .base import Page, Source, UsersSource

with warnings.catch_warnings():
    # ldap3 2.9 imports names pyasn1 0.6 deprecated; users should not see that on every run.
    warnings.simplefilter("ignore", DeprecationWarning)
    import ldap3
    from ldap3.core.exceptions import LDAPCommunicationError, LDAPException, LDAPInvalidFilterError
    from ldap3.operation.search import parse_filter
    from ldap3.utils import asn1 as _ldap3_asn1  # noqa: F401 - the module that warns, imported here
    from ldap3.utils.dn import to_dn


log = logging.getLogger(__name__)

PAGED_RESULTS_OID = "1.2.840.113556.1.4.319"
# objectClass values (lower case) whose members are expanded instead of the entry being sent.
GROUP_CLASSES = frozenset({"group", "groupofnames", "groupofuniquenames"})
GROUP_FILTER = "(|(objectClass=group)(objectClass=groupOfNames)(objectClass=groupOfUniqueNames))"
BINARY = "*BINARY*"
LIST_SUFFIX = "*"  # "mail*" is the list of every value of "mail"
SID_ATTRIBUTES = frozenset({"objectsid", "sidhistory", "tokengroups", "securityidentifier"})
LISTS_ALWAYS = frozenset({"memberof"})  # kept as a list under the plain name too (as the old connector)
_ATTR_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9-]*(;[A-Za-z0-9=-]+)*$|^[0-9]+(\.[0-9]+)+$")
_RANGE = re.compile(r";range=(\d+)-(\d+|\*)$", re.IGNORECASE)
CONNECT_ATTEMPTS = 3
SEARCH_RESTARTS = 3  # a search-mode run survives this many lost connections
RETRIED_REASONS = frozenset({"connection refused", "connection reset"})  # a restarting server; not TLS, not DNS


# --- values and records ------------------------------------------------------------------------


def escape_filter_value(value: str) -> str:
    """RFC 4515 escaping of a value substituted into a filter (``*``, ``(``, ``)``, ``\\``, NUL)."""
    out = []
    for ch in value:
        if ch in "*()\\\x00":
            out.append(f"\\{ord(ch):02x}")
        else:
            out.append(ch)
    return "".join(out)


def sid_string(raw: bytes) -> str | None:
    """A binary Windows SID as ``S-1-5-21-…`` (None when it is not a SID)."""
    if len(raw) < 8 or raw[0] != 1 or len(raw) != 8 + 4 * raw[1]:
        return None
    authority = int.from_bytes(raw[2:8], "big")
    subs = [int.from_bytes(raw[8 + 4 * i : 12 + 4 * i], "little") for i in range(raw[1])]
    return "-".join(["S", str(raw[0]), str(authority), *map(str, subs)])


def decode_value(name: str, raw: bytes | str) -> str:
    """One attribute value as text: UTF-8; AD's binary GUIDs and SIDs in their usual string forms;
    any other binary value (photos, certificates) as ``*BINARY*``."""
    if isinstance(raw, str):
        return raw
    attr = name.split(";", 1)[0].lower()
    if attr.endswith("guid") and len(raw) == 16:
        return str(uuid.UUID(bytes_le=bytes(raw)))
    if attr in SID_ATTRIBUTES:
        sid = sid_string(bytes(raw))
        if sid:
            return sid
    try:
        return bytes(raw).decode("utf-8")
    except UnicodeDecodeError:
        return BINARY


class LdapRecord(dict[str, Any]):
    """A record whose keys keep the server's spelling (``sAMAccountName``) but are looked up
    case-insensitively, as LDAP attribute names are (``samaccountname`` finds it too)."""

    __slots__ = ("_folded",)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._folded: dict[str, str] | None = None

    def _key(self, key: Any) -> Any:
        if dict.__contains__(self, key) or not isinstance(key, str):
            return key
        if self._folded is None:
            self._folded = {k.lower(): k for k in self if isinstance(k, str)}
        return self._folded.get(key.lower(), key)

    def __setitem__(self, key: Any, value: Any) -> None:
        self._folded = None
        super().__setitem__(key, value)

    def __getitem__(self, key: Any) -> Any:
        return super().__getitem__(self._key(key))

    def __contains__(self, key: object) -> bool:
        return super().__contains__(self._key(key))

    def get(self, key: Any, default: Any = None) -> Any:
        return super().get(self._key(key), default)


def entry_record(dn: str, attributes: dict[str, list[bytes]]) -> LdapRecord:
    """The record a mapping sees for one entry.

    - ``dn``: the entry's DN (also ``distinguishedName`` when the server has no such attribute);
    - ``<attr>``: the attribute's **first** value as text, except ``memberOf``, which is the list
      of all values (as in the old connector); an attribute the entry does not have is absent, so
      a mapping of it gives null (LDAP never sends an attribute without values);
    - ``<attr>*``: the list of **all** values, in server order (``mail*.1`` is the second ``mail``);
      that order is the server's, not a ranking (``proxyAddresses``' primary ``SMTP:`` value is
      not reliably first: use the ``primary_smtp_address`` converter);
    - values are UTF-8; ``objectGUID`` (any 16-byte ``*GUID``) → ``xxxxxxxx-xxxx-…``; ``objectSid``
      → ``S-1-5-…``; other binary values → ``*BINARY*``;
    - keys keep the server's spelling and are matched case-insensitively.
    """
    record = LdapRecord(dn=dn)
    for name, values in attributes.items():
        key = _RANGE.sub("", name)
        texts = [decode_value(key, v) for v in values]
        record[key] = texts if key.lower() in LISTS_ALWAYS else (texts[0] if texts else "")
        record[key + LIST_SUFFIX] = texts
    if "distinguishedName" not in record:
        record["distinguishedName"] = dn
    return record


def range_key(attributes: dict[str, Any], attr: str) -> tuple[str | None, int | None]:
    """Where ``attr``'s values are in an entry: ``(key, next_low)``.

    ``key`` is the plain attribute or AD's ranged form ``attr;range=LOW-HIGH`` (None when absent);
    ``next_low`` is ``HIGH + 1`` when more values remain, None when this is the last range
    (``HIGH`` is ``*``) or the attribute was not ranged.
    """
    lowered = attr.lower()
    prefix = lowered + ";range="
    for key in attributes:
        k = key.lower()
        if k == lowered:
            return key, None
        if k.startswith(prefix):
            match = _RANGE.search(key)
            if match is None or match.group(2) == "*":
                return key, None
            return key, int(match.group(2)) + 1
    return None, None


# --- settings ----------------------------------------------------------------------------------

S_URL = Setting(
    "url",
    None,
    example="ldaps://ldap.example.com:636",
    help=(
        "`ldap://host[:port]` (port 389; add `start_tls = true`) or `ldaps://host[:port]` (port "
        "636; the old README's `ldaps://…:389` is wrong)"
    ),
)
S_USERNAME = Setting(
    "username",
    None,
    example="cn=reader,dc=example,dc=com",
    help=(
        "the bind DN, e.g. `cn=reader,dc=example,dc=com` (on AD also `reader@example.com` or "
        "`EXAMPLE\\reader`); `anonymous` (any case) makes an anonymous bind"
    ),
)
S_PASSWORD = Setting(
    "password",
    "",
    secret=True,
    help=(
        "the bind password, required unless `username = anonymous`: with an empty password many "
        "servers make an unauthenticated bind (RFC 4513) and show little or nothing, so the "
        "connector refuses to start"
    ),
)
S_BASE_DN = Setting(
    "base_dn",
    None,
    example="ou=people,dc=example,dc=com",
    help="the search base; group mode needs it too (`group_member_filter` lookups search under it)",
)
S_GROUP_DN = Setting("group_dn", "", help="legacy: one group whose members are synced")
S_GROUPS_DN = Setting(
    "groups_dn",
    "[]",
    help=(
        "a JSON array of group DNs whose members are synced, e.g. "
        '`["cn=it,ou=groups,dc=example,dc=com"]` (double quotes); it wins over `group_dn`'
    ),
)
S_MEMBERS_ATTR = Setting(
    "group_members_attr",
    "member",
    help=(
        "the group attribute that lists the members: `member` (AD, `groupOfNames`), "
        "`uniqueMember`, or `memberUid` (`posixGroup`)"
    ),
)
S_MEMBER_FILTER = Setting(
    "group_member_filter",
    "",
    help=(
        "find each member by a search under `base_dn` instead of reading the member value as a "
        "DN; `{}` stands for the member value, e.g. `(uid={})` with `memberUid`. The value is "
        "escaped (RFC 4515), so `*`, `(`, `)` and `\\` in it match only themselves"
    ),
)
S_PROTOCOL = Setting("protocol_version", "3", help="`3`, or `2` (no paging); any other value logs a warning and uses 3")
S_FILTER = Setting(
    "filter",
    "(objectClass=*)",
    help=(
        "the search filter, also applied to each group member; an invalid filter stops the run at"
        " startup. For AD computers: `(objectCategory=computer)`, and add "
        "`(!(userAccountControl:1.2.840.113556.1.4.803:=2))` to leave out disabled ones"
    ),
)
S_PAGE_CRITERIUM = Setting("page_criterium", "", help="accepted for compatibility; no effect")
EXTRA_SETTINGS = (
    Setting(
        "start_tls",
        "false",
        kind=BOOL,
        help="upgrade an `ldap://` connection with StartTLS before the bind (not with `ldaps://`)",
    ),
    Setting(
        "page_size",
        "500",
        kind=Int(1, 100000),
        help=(
            "entries per page (RFC 2696 paged results), at or below the server's limit (AD "
            "`MaxPageSize`: 1000); in group mode, members per page"
        ),
    ),
    Setting(
        "nested_groups",
        "true",
        kind=BOOL,
        help=(
            "in group mode, a member that is itself a group (`group`, `groupOfNames`, "
            "`groupOfUniqueNames`) is expanded rather than sent"
        ),
    ),
    Setting(
        "attributes",
        "*",
        kind=List(),
        help=(
            "the attributes to request: `*` = all user attributes; add operational attributes by name"
            " (`*,modifyTimestamp`) or `+` for all of them. Every attribute a mapping names (INI, the"
            " Oomnitza server mapping or the defaults, `concat`/`first_field` parameters included) is"
            " requested by name automatically"
        ),
    ),
    Setting("timeout", "30", kind=Float(above=0), help="seconds to wait to connect and for each answer"),
)


# --- the blocking side (runs in worker threads) ------------------------------------------------


class LdapFailure(Exception):
    """An LDAP operation did not succeed; ``code``/``text`` come from the server's result."""

    def __init__(self, code: int, description: str, message: str) -> None:
        super().__init__(f"{code} {description}" + (f": {message}" if message else ""))
        self.code = code
        self.description = description
        self.message = message


class Directory:
    """One bound ldap3 connection and the reads the source needs. Blocking: call every method
    through ``asyncio.to_thread``, one at a time."""

    def __init__(self, conn: Any, attributes: list[str], page_size: int, paged: bool, name: str = "ldap") -> None:
        self.name = name  # the section, for log lines
        self.conn = conn
        self.attributes = attributes
        self.page_size = page_size
        self.paged = paged

    def close(self) -> None:
        try:
            self.conn.unbind()
        except Exception as exc:  # closing must not hide what happened before
            log.debug("unbind failed: %s", exc)

    # search mode -------------------------------------------------------------------------------

    def search_pages(self, base: str, search_filter: str) -> Callable[[], list[LdapRecord] | None]:
        """A function returning the next page of records (None when the search is complete)."""
        state: dict[str, Any] = {"cookie": None, "done": False}

        def next_page() -> list[LdapRecord] | None:
            if state["done"]:
                return None
            kwargs: dict[str, Any] = {}
            if self.paged:
                kwargs = {"paged_size": self.page_size, "paged_cookie": state["cookie"], "paged_criticality": False}
            self.conn.search(base, search_filter, ldap3.SUBTREE, attributes=self.attributes, **kwargs)
            result = self.conn.result or {}
            code = int(result.get("result", 80))
            if code == 4:
                log.warning(
                    "[%s] the LDAP server's size limit cut the search short (4 sizeLimitExceeded): "
                    "only part of the entries are synced; use paging (protocol_version = 3) "
                    "or raise the server's limit",
                    self.name,
                )
            elif code != 0:
                raise _failure(result)
            cookie = ((result.get("controls") or {}).get(PAGED_RESULTS_OID) or {}).get("value", {}).get("cookie")
            state["cookie"] = cookie
            state["done"] = not (self.paged and cookie)
            return [self.record(e["dn"], e["raw_attributes"]) for e in self._entries()]

        return next_page

    def _entries(self) -> list[dict[str, Any]]:
        # Continuation references (other naming contexts) are not followed.
        return [e for e in (self.conn.response or []) if e.get("type") == "searchResEntry" and e.get("dn")]

    def record(self, dn: str, raw: dict[str, list[bytes]]) -> LdapRecord:
        attributes = dict(raw)
        for key in [k for k in attributes if _RANGE.search(k)]:  # AD range retrieval on any attribute
            base_attr = _RANGE.sub("", key)
            attributes.pop(key)
            attributes[base_attr] = self.all_values(dn, {key: raw[key]}, base_attr)
        return entry_record(dn, attributes)

    # group mode --------------------------------------------------------------------------------

    def read(self, dn: str, search_filter: str, attributes: list[str]) -> tuple[str, dict[str, list[bytes]]] | None:
        """The entry at ``dn`` if it matches ``search_filter``; None when it does not; LdapFailure
        (32 noSuchObject) when it does not exist."""
        self.conn.search(dn, search_filter, ldap3.BASE, attributes=attributes)
        result = self.conn.result or {}
        if int(result.get("result", 80)) != 0:
            raise _failure(result)
        entries = self._entries()
        return (entries[0]["dn"], entries[0]["raw_attributes"]) if entries else None

    def find(self, base: str, search_filter: str) -> list[tuple[str, dict[str, list[bytes]]]]:
        self.conn.search(base, search_filter, ldap3.SUBTREE, attributes=self.attributes)
        result = self.conn.result or {}
        if int(result.get("result", 80)) not in (0, 4):
            raise _failure(result)
        return [(e["dn"], e["raw_attributes"]) for e in self._entries()]

    def all_values(self, dn: str, attributes: dict[str, list[bytes]], attr: str) -> list[bytes]:
        """Every value of ``attr``, following AD range retrieval (``attr;range=0-1499`` then
        ``attr;range=1500-*`` … until a range ends in ``*``)."""
        values: list[bytes] = []
        current = attributes
        seen_lows: set[int] = set()
        while True:
            key, next_low = range_key(current, attr)
            if key is None:
                return values
            values.extend(current[key])
            if next_low is None or next_low in seen_lows:
                return values
            seen_lows.add(next_low)
            found = self.read(dn, "(objectClass=*)", [f"{attr};range={next_low}-*"])
            if found is None:
                return values
            current = found[1]


def _failure(result: dict[str, Any]) -> LdapFailure:
    return LdapFailure(
        int(result.get("result", 80)),
        str(result.get("description") or "error"),
        str(result.get("message") or "").strip(),
    )


class GroupWalker:
    """Resolves the members of the configured groups into records, one page at a time.

    A group's members are the values of its member attribute and, on Active Directory, the
    entries whose ``primaryGroupID`` is the group's RID: AD lists no one in ``member`` of their
    primary group (every user's ``Domain Users``, every computer's ``Domain Computers``; MS-ADA3
    2.120 primaryGroupID). Those are found with a paged ``(primaryGroupID=<RID>)`` search of the
    group's domain.
    """

    def __init__(
        self,
        directory: Directory,
        *,
        groups: list[str],
        members_attr: str,
        search_filter: str,
        member_filter: str,
        base_dn: str,
        nested: bool,
    ) -> None:
        self.d = directory
        self.members_attr = members_attr
        self.filter = search_filter
        self.member_filter = member_filter
        self.base_dn = base_dn
        self.nested = nested and not member_filter
        self.pending_groups = deque(groups)
        self.visited_groups: set[str] = set()
        self.members: deque[str] = deque()
        self.primary_searches: deque[tuple[str, str]] = deque()  # (base, filter) still to run
        self.primary_pages: Callable[[], list[LdapRecord] | None] | None = None
        self.found: deque[LdapRecord] = deque()  # records from a primary-group page, not yet sent
        self.seen: set[str] = set()
        self.skipped = 0
        # A member read asks for the member attribute and objectSid too, so that a nested group
        # needs no second read.
        self.group_attrs = ["objectClass", "objectSid", members_attr]
        self.member_attrs = [*directory.attributes, *self.group_attrs]
        self.read_filter = f"(|{search_filter}{GROUP_FILTER})" if self.nested else search_filter

    def next_page(self) -> list[LdapRecord] | None:
        page: list[LdapRecord] = []
        while len(page) < self.d.page_size:
            record = self._next_record()
            if record is None:
                break
            page.append(record)
        if not page and self._exhausted():
            return None
        return page

    def _exhausted(self) -> bool:
        return not (self.found or self.members or self.primary_pages or self.primary_searches or self.pending_groups)

    def _next_record(self) -> LdapRecord | None:
        """The next new member (None when every group is done), reading what is needed for it."""
        while True:
            if self.found:
                record = self.found.popleft()
                if record["dn"].lower() not in self.seen:
                    self.seen.add(record["dn"].lower())
                    return record
            elif self.members:
                resolved = self._resolve(self.members.popleft())
                if resolved is not None:
                    return resolved
            elif self.primary_pages is not None:
                batch = self.primary_pages()
                if batch is None:
                    self.primary_pages = None
                else:
                    self.found.extend(batch)
            elif self.primary_searches:
                self.primary_pages = self.d.search_pages(*self.primary_searches.popleft())
            elif self.pending_groups:
                self._open_group(self.pending_groups.popleft())
            else:
                return None

    def _open_group(self, dn: str) -> None:
        if dn.lower() in self.visited_groups:
            return
        self.visited_groups.add(dn.lower())
        try:
            found = self.d.read(dn, "(objectClass=*)", self.group_attrs)
        except LdapFailure as exc:
            if exc.code == 32:
                raise SourceError(f"the group {dn!r} does not exist on the LDAP server (32 noSuchObject)") from None
            raise
        if found is None:
            return
        self._add_members(found[0], found[1])

    def _add_members(self, dn: str, attributes: dict[str, list[bytes]]) -> None:
        values = self.d.all_values(dn, attributes, self.members_attr)
        log.debug("group %s: %d member value(s)", dn, len(values))
        self.members.extend(decode_value(self.members_attr, v) for v in values)
        rid = _group_rid(attributes)
        if rid is not None:
            domain = _domain_of(dn) or self.base_dn
            self.primary_searches.append((domain, f"(&(primaryGroupID={rid}){self.filter})"))

    def _resolve(self, member: str) -> LdapRecord | None:
        if self.member_filter:
            query = f"(&{self.filter}{self.member_filter.replace('{}', escape_filter_value(member))})"
            hits = self.d.find(self.base_dn, query)
            if not hits:
                self._skip(f"no entry under base_dn matches {query}")
                return None
            dn, attributes = hits[0]
        else:
            if member.lower() in self.seen:
                return None
            try:
                found = self.d.read(member, self.read_filter, self.member_attrs)
            except LdapFailure as exc:
                if exc.code in (32, 34):  # noSuchObject, invalidDNSyntax
                    self._skip(f"member {member!r} cannot be read ({exc})")
                    return None
                raise
            if found is None:
                log.debug("member %s does not match the filter; skipped", member)
                return None
            dn, attributes = found
            if self.nested and _is_group(attributes):
                if dn.lower() not in self.visited_groups:
                    self.visited_groups.add(dn.lower())
                    self._add_members(dn, attributes)
                return None
        if dn.lower() in self.seen:
            return None
        self.seen.add(dn.lower())
        return self.d.record(dn, _without_helpers(attributes, self.d.attributes, self.group_attrs))

    def _skip(self, message: str) -> None:
        self.skipped += 1
        if self.skipped <= 20:
            log.warning("[%s] %s; skipped", self.d.name, message)


def _is_group(attributes: dict[str, list[bytes]]) -> bool:
    for key, values in attributes.items():
        if key.lower() == "objectclass":
            return any(decode_value(key, v).lower() in GROUP_CLASSES for v in values)
    return False


def _group_rid(attributes: dict[str, list[bytes]]) -> int | None:
    """The RID (last sub-authority of ``objectSid``) of an AD group; None elsewhere."""
    for key, values in attributes.items():
        if key.lower() == "objectsid" and values:
            sid = sid_string(bytes(values[0])) if isinstance(values[0], bytes | bytearray) else None
            if sid and sid.count("-") >= 3:
                return int(sid.rsplit("-", 1)[1])
    return None


def _domain_of(dn: str) -> str:
    """The domain naming context of a DN: its trailing ``DC=`` components ("" when it has none)."""
    try:
        parts = to_dn(dn)
    except (LDAPException, ValueError, IndexError):
        return ""
    tail: list[str] = []
    for part in reversed(parts):
        if not part.lower().startswith("dc="):
            break
        tail.insert(0, part)
    return ",".join(tail)


def _without_helpers(
    attributes: dict[str, list[bytes]], requested: list[str], helpers: list[str]
) -> dict[str, list[bytes]]:
    """Drop the attributes fetched only to expand nested groups, unless they were asked for."""
    wanted = {a.lower() for a in requested}
    if "*" in wanted:
        return attributes
    unwanted = {h.lower() for h in helpers} - wanted
    return {k: v for k, v in attributes.items() if _RANGE.sub("", k).lower() not in unwanted}


# --- the source --------------------------------------------------------------------------------


class _LdapBase(Source):
    """Everything [ldap] and [ldap_assets] share."""

    extra_attributes: ClassVar[tuple[str, ...]] = ()

    def validate(self) -> None:
        where = f"[{self.name}]"
        self._endpoint()
        if self.anonymous and self.setting("password"):
            log.warning("%s username = anonymous: the password is not used", where)
        if not self.anonymous and not self.setting("password"):
            raise ConfigError(
                f"{where} password is empty: an empty password makes many servers bind anonymously "
                "(RFC 4513 unauthenticated bind); set it, or set username = anonymous"
            )
        self._groups()
        self._check_filter("filter", self.setting("filter") or "(objectClass=*)")
        if self.setting("group_member_filter"):
            self._check_filter("group_member_filter", self.setting("group_member_filter").replace("{}", "x"))

    def _check_filter(self, key: str, text: str) -> None:
        try:
            parse_filter(text, None, auto_escape=False, auto_encode=True, validator=None, check_names=False)
        except LDAPInvalidFilterError as exc:
            raise ConfigError(
                f"[{self.name}] {key} {text!r} is not a valid LDAP filter ({exc}); "
                "write it like (&(objectClass=person)(mail=*))"
            ) from None

    @property
    def anonymous(self) -> bool:
        return self.setting("username").strip().lower() == "anonymous"

    @functools.cached_property
    def protocol(self) -> int:
        value = self.setting("protocol_version").strip()
        if value in ("2", "3"):
            return int(value)
        if value:
            log.warning("[%s] protocol_version = %s is not 2 or 3; using 3", self.name, value)
        return 3

    def _endpoint(self) -> tuple[str, int, bool]:
        """(host, port, ldaps) from ``url``."""
        url = self.setting("url").strip()
        where = f"[{self.name}] url"
        parts = urlsplit(url if "://" in url else f"ldap://{url}")
        scheme = parts.scheme.lower()
        if scheme not in ("ldap", "ldaps"):
            raise ConfigError(f"{where} {url!r} must start with ldap:// or ldaps://")
        try:
            port = parts.port
        except ValueError:
            raise ConfigError(f"{where} {url!r} has an invalid port") from None
        host = unquote(parts.hostname or "")
        if not host:
            raise ConfigError(f"{where} {url!r} names no host")
        ldaps = scheme == "ldaps"
        if ldaps and self.value("start_tls"):
            raise ConfigError(f"[{self.name}] start_tls = true needs an ldap:// url (ldaps:// is already TLS)")
        return host, port or (636 if ldaps else 389), ldaps

    def _groups(self) -> list[str]:
        text = self.setting("groups_dn").strip()
        groups: list[str] = []
        if text and text != "[]":
            try:
                value = json.loads(text)
            except ValueError:
                raise ConfigError(
                    f"[{self.name}] groups_dn must be a JSON array of DNs, e.g. "
                    '["cn=it,ou=groups,dc=example,dc=com"] (double quotes)'
                ) from None
            if isinstance(value, str):
                value = [value]
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise ConfigError(f"[{self.name}] groups_dn must be a JSON array of DN strings")
            groups = [v.strip() for v in value if v.strip()]
        if not groups and self.setting("group_dn").strip():
            groups = [self.setting("group_dn").strip()]
        return groups

    def _attributes(self) -> list[str]:
        """``attributes`` plus every attribute the merged mapping (defaults + Oomnitza server
        mapping + INI) names, by name: ``*`` returns user attributes only, while operational and
        constructed ones (``modifyTimestamp``, ``memberOf`` from OpenLDAP's memberof overlay, AD's
        ``canonicalName``, ``msDS-UserPasswordExpiryTimeComputed``) come only when named
        (RFC 4511 §4.5.1.8; AD: "constructed attributes")."""
        wanted = [a.strip() for a in self.setting("attributes").split(",") if a.strip()] or ["*"]
        names = list(wanted)
        for name in [*self.extra_attributes, *self._mapped_attributes()]:
            if name.lower() in ("dn", "distinguishedname") and name != "distinguishedName":
                continue
            if _ATTR_NAME.match(name) and name.lower() not in {n.lower() for n in names}:
                names.append(name)
        return names

    def _mapped_attributes(self) -> list[str]:
        """The attribute at the head of each mapped source path (``mail*.1`` → ``mail``), and the
        record keys that ``concat`` / ``first_field`` converters read."""
        names = [path.split(".", 1)[0].removesuffix(LIST_SUFFIX) for path in self.mapped_sources()]
        specs = self.ctx.mapping
        for spec in specs.values():
            converter = spec.get("converter")
            if not isinstance(converter, str):
                continue
            name, params = parse_converter_spec(converter)
            if name.lower() in ("concat", "first_field"):
                listed = params.get("values" if name.lower() == "concat" else "fields")
                if isinstance(listed, str):
                    names += [item.strip() for item in listed.split(",") if item.strip()[:1] not in ("'", '"')]
        return names

    # connecting ----------------------------------------------------------------------------------

    def _tls(self, host: str) -> Any:
        tls = self.section.tls()
        if not tls.verify:
            log.warning("[%s] verify_ssl = false: the LDAP server's certificate is not checked", self.name)
        return ldap3.Tls(
            validate=ssl.CERT_REQUIRED if tls.verify else ssl.CERT_NONE,
            # A plain client context rather than ssl.create_default_context(): Python 3.13 added
            # VERIFY_X509_STRICT to the latter, which rejects certificates without an Authority
            # Key Identifier, such as the one a Samba DC generates for itself. The chain, expiry
            # and host name are still checked.
            version=ssl.PROTOCOL_TLS_CLIENT,
            ca_certs_file=tls.cacert_file or None,
            ca_certs_path=tls.cacert_dir or None,
            local_certificate_file=tls.client_cert or None,
            local_private_key_file=tls.client_cert or None,
            sni=host,
        )

    def _connect(self) -> Directory:
        """Open, secure and bind (blocking). Raises SourceError with one clear line."""
        host, port, ldaps = self._endpoint()
        start_tls = self.value("start_tls")
        timeout = float(self.setting("timeout"))
        url = f"{'ldaps' if ldaps else 'ldap'}://{host}:{port}"
        try:
            tls = self._tls(host) if (ldaps or start_tls) else None
        except LDAPException as exc:
            raise SourceError(f"[{self.name}] the TLS settings cannot be used: {exc}") from None

        def connection() -> Any:
            # A fresh Server each attempt: ldap3 remembers an address that failed as unusable.
            server = ldap3.Server(host, port=port, use_ssl=ldaps, tls=tls, get_info=ldap3.DSA, connect_timeout=timeout)
            return ldap3.Connection(
                server,
                user=None if self.anonymous else self.setting("username"),
                password=None if self.anonymous else self.setting("password"),
                authentication=ldap3.ANONYMOUS if self.anonymous else ldap3.SIMPLE,
                version=self.protocol,
                auto_bind=ldap3.AUTO_BIND_NONE,
                raise_exceptions=False,
                auto_referrals=False,
                auto_range=False,  # done here, explicitly (see Directory.all_values)
                read_only=True,
                return_empty_attributes=False,
                receive_timeout=max(1, int(timeout)),  # ldap3 packs it as an integer
                check_names=False,
            )

        for attempt in range(1, CONNECT_ATTEMPTS + 1):
            conn = connection()
            try:
                with _quiet_ldap3():
                    conn.open()
                break
            except LDAPException as exc:
                text = _socket_reason(exc, tls=ldaps)
                if text not in RETRIED_REASONS or attempt == CONNECT_ATTEMPTS:
                    raise SourceError(f"[{self.name}] cannot reach {url}: {text}") from None
                log.info("[%s] cannot reach %s (%s); retrying", self.name, url, text)
                time.sleep(0.5 * 2 ** (attempt - 1))
        try:
            with _quiet_ldap3():
                tls_refused = start_tls and not conn.start_tls()
            if tls_refused:
                raise SourceError(f"[{self.name}] StartTLS was refused by {url} ({_failure(conn.result or {})})")
            if not conn.bind():
                raise self._bind_error(_failure(conn.result or {}))
        except LDAPException as exc:
            _quiet_close(conn)
            raise SourceError(
                f"[{self.name}] {'StartTLS' if start_tls else 'bind'} with {url} failed: "
                f"{_socket_reason(exc, tls=ldaps or start_tls)}"
            ) from None
        except SourceError:
            _quiet_close(conn)
            raise
        paged = self.protocol == 3 and _supports_paging(conn.server)
        if self.protocol == 3 and not paged:
            log.warning(
                "[%s] %s does not offer paged results (RFC 2696): one unpaged search is made, "
                "which the server may cut at its size limit",
                self.name,
                url,
            )
        log.info(
            "[%s] bound to %s as %s%s",
            self.name,
            url,
            "anonymous" if self.anonymous else self.setting("username"),
            " (StartTLS)" if start_tls else "",
        )
        return Directory(conn, self._attributes(), int(self.setting("page_size")), paged, self.name)

    def _bind_error(self, failure: LdapFailure) -> SourceError:
        who = "anonymous bind" if self.anonymous else "the credentials"
        if failure.code == 49:
            cause = ad_bind_cause(failure.message)
            if cause and not self.anonymous:
                return SourceError(f"[{self.name}] the LDAP server rejected {who} ({failure}): {cause}")
            return SourceError(f"[{self.name}] the LDAP server rejected {who} ({failure}): check username and password")
        if failure.code == 8 or failure.code == 13:
            return SourceError(
                f"[{self.name}] the LDAP server requires a protected connection for this bind "
                f"({failure}): use an ldaps:// url or start_tls = true"
            )
        return SourceError(f"[{self.name}] the LDAP server refused the bind ({failure})")

    async def check(self) -> None:
        directory = await asyncio.to_thread(self._connect)
        await asyncio.to_thread(directory.close)

    # reading -------------------------------------------------------------------------------------

    async def pages(self) -> AsyncIterator[Page]:
        search_filter = self.setting("filter") or "(objectClass=*)"
        groups = self._groups()
        reader = self._group_pages(groups, search_filter) if groups else self._search_pages(search_filter)
        async with contextlib.aclosing(reader) as pages:
            async for page in pages:
                yield page

    async def _group_pages(self, groups: list[str], search_filter: str) -> AsyncGenerator[Page, None]:
        directory = await asyncio.to_thread(self._connect)
        try:
            walker = GroupWalker(
                directory,
                groups=groups,
                members_attr=self.setting("group_members_attr") or "member",
                search_filter=search_filter,
                member_filter=self.setting("group_member_filter"),
                base_dn=self.setting("base_dn"),
                nested=self.value("nested_groups"),
            )
            while (page := await self._call(walker.next_page)) is not None:
                if page:
                    yield list(page)
            if walker.skipped:
                log.warning("[%s] %d group member(s) could not be read", self.name, walker.skipped)
        finally:
            directory.close()

    async def _search_pages(self, search_filter: str) -> AsyncGenerator[Page, None]:
        """Search mode, page by page. A connection lost between pages is re-opened and the search
        restarted (a paging cookie is only valid on its own connection); entries already read are
        skipped by DN, so each entry is still pulled once."""
        base = self.setting("base_dn")
        directory = await asyncio.to_thread(self._connect)
        next_page = directory.search_pages(base, search_filter)
        seen: set[str] = set()
        restarts = count = 0
        try:
            while True:
                try:
                    page = await self._call(next_page, lost=True)
                except _ConnectionLost as exc:
                    if restarts == SEARCH_RESTARTS:
                        raise SourceError(
                            f"[{self.name}] the connection to the LDAP server was lost "
                            f"{restarts + 1} times; last: {exc.reason}"
                        ) from None
                    restarts += 1
                    log.warning(
                        "[%s] the connection to the LDAP server was lost (%s): reconnecting and "
                        "restarting the search; the %d entries already read are not sent again",
                        self.name,
                        exc.reason,
                        len(seen),
                    )
                    directory.close()
                    directory = await asyncio.to_thread(self._connect)
                    next_page = directory.search_pages(base, search_filter)
                    continue
                if page is None:
                    return
                count += 1
                log.debug("[%s] page %d: %d entries", self.name, count, len(page))
                fresh = [r for r in page if r["dn"].lower() not in seen]
                seen.update(r["dn"].lower() for r in fresh)
                if fresh:  # a paged search may answer an empty page with a cookie: ask on
                    yield fresh
        finally:
            directory.close()

    async def _call(self, fn: Callable[[], Any], *, lost: bool = False) -> Any:
        try:
            return await asyncio.to_thread(fn)
        except LDAPCommunicationError as exc:
            if lost:
                raise _ConnectionLost(_socket_reason(exc)) from None
            raise SourceError(f"[{self.name}] reading from the LDAP server failed: {_socket_reason(exc)}") from None
        except LdapFailure as exc:
            raise self._search_error(exc) from None
        except SourceError as exc:
            raise SourceError(f"[{self.name}] {exc}") from None
        except LDAPException as exc:
            raise SourceError(f"[{self.name}] reading from the LDAP server failed: {_socket_reason(exc)}") from None

    def _search_error(self, failure: LdapFailure) -> SourceError:
        if failure.code == 32:
            return SourceError(
                f"[{self.name}] base_dn {self.setting('base_dn')!r} does not exist on the LDAP server ({failure})"
            )
        if failure.code == 10:
            return SourceError(
                f"[{self.name}] the LDAP server referred the search elsewhere ({failure}); "
                "referrals are not followed: point url and base_dn at the server holding them"
            )
        if failure.code == 87 or (failure.code == 2 and "filter" in failure.message.lower()):
            return SourceError(f"[{self.name}] the LDAP server rejected the filter ({failure})")
        return SourceError(f"[{self.name}] the LDAP search failed ({failure})")


class _ConnectionLost(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# Active Directory's invalidCredentials (49) text carries the Win32 error of the logon as
# "data <hex>" ("80090308: LdapErr: DSID-…, comment: AcceptSecurityContext error, data 533, v…").
# Codes: learn.microsoft.com/windows/win32/debug/system-error-codes--1300-1699- (0x52E = 1326
# ERROR_LOGON_FAILURE, 0x533 = 1331 ERROR_ACCOUNT_DISABLED …) and --1700-3999- (0x773 = 1907,
# 0x775 = 1909); Samba's DC sends the same texts (checked against Samba 4.17).
AD_BIND_CAUSES = {
    "525": "the account in username does not exist: check username",
    "52e": "wrong password or unknown account: check username and password",
    "530": "the account may not log on at this time: allow it in its logon hours",
    "531": "the account may not log on from this computer: allow it under 'Log On To'",
    "532": "the account's password has expired: set a new password and update password",
    "533": "the account is disabled: enable it in Active Directory",
    "701": "the account has expired: extend its expiry date in Active Directory",
    "773": "the account must change its password at next logon: "
    "set a new password (or clear that option) and update password",
    "775": "the account is locked out: unlock it in Active Directory, or wait for the lockout to end",
}
_AD_DATA = re.compile(r"\bdata ([0-9a-f]+)\b", re.IGNORECASE)


def ad_bind_cause(message: str) -> str | None:
    """What AD's sub-code in a result-49 message means, and what to do (None without one)."""
    match = _AD_DATA.search(message or "")
    if match is None:
        return None
    return AD_BIND_CAUSES.get(match.group(1).lower())


def _supports_paging(server: Any) -> bool:
    info = getattr(server, "info", None)
    controls = getattr(info, "supported_controls", None) if info is not None else None
    if not controls:
        return True  # root DSE not readable: assume the common case
    return any((c[0] if isinstance(c, tuple) else c) == PAGED_RESULTS_OID for c in controls)


def _socket_reason(exc: BaseException, *, tls: bool = False) -> str:
    text = str(exc) or type(exc).__name__
    lowered = text.lower()
    if tls and "session terminated by server" in lowered:
        # TLS 1.3 completes the client's side of the handshake before the server checks the client's
        # certificate: a refusal then shows up as a closed session on the first read, not as an alert.
        lowered = "eof occurred in violation of protocol"
    if "certificate verify failed" in lowered or "certificate_verify_failed" in lowered:
        return "TLS certificate not trusted; set cacert_file (or cacert_dir) to its CA, or verify_ssl = false"
    if "doesn't match any name" in lowered:
        names = _certificate_names(text)
        if names:
            return (
                f"the server's TLS certificate is issued to {', '.join(names)}, not to the host in url: "
                "put that name in url (it must resolve to the server)"
            )
        return "the server's TLS certificate does not match its host name"
    if "eof occurred in violation of protocol" in lowered or ("alert" in lowered and "ssl" in lowered):
        return (
            "the server ended the TLS handshake (it may demand a client certificate: set user_pem_file; "
            "or the port does not speak TLS)"
        )
    for pattern, reason in (
        ("connection refused", "connection refused"),
        ("connection reset", "connection reset"),
        ("timed out", "connection timed out"),
        ("name or service not known", "unknown host"),
        ("temporary failure in name resolution", "unknown host"),
    ):
        if pattern in lowered:
            return reason
    text = re.sub(r"^\(['\"](.*)['\"],\)$", r"\1", text.strip())  # ldap3 wraps some messages in a tuple repr
    return re.sub(r"\s+", " ", text)[:300]


def _certificate_names(text: str) -> list[str]:
    """The DNS names of the certificate in ldap3's "certificate {...} doesn't match" text: the
    subjectAltName DNS entries, else the subject's commonName (as a Samba DC's own self-signed
    certificate has: CN=<DC's FQDN>, no subjectAltName)."""
    names = re.findall(r"\('DNS', '([^']+)'\)", text)
    return names or re.findall(r"\('commonName', '([^']+)'\)", text)


@contextlib.contextmanager
def _quiet_ldap3() -> Iterator[None]:
    """ldap3 checks certificate host names with ssl.match_hostname: deprecated since Python 3.7 but
    correct; its DeprecationWarning would reach the user's log on every run."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"ssl\.match_hostname", category=DeprecationWarning)
        yield


def _quiet_close(conn: Any) -> None:
    try:
        conn.unbind()
    except Exception as exc:
        log.debug("unbind failed: %s", exc)


def _settings(order: Iterable[Setting]) -> tuple[Setting, ...]:
    return (*order, *EXTRA_SETTINGS)


class Ldap(_LdapBase, UsersSource):
    module = "ldap"
    mapping_name = "LDAP"
    summary = "LDAP / Active Directory users"
    settings = _settings(
        (
            S_URL,
            S_USERNAME,
            S_PASSWORD,
            S_BASE_DN,
            S_GROUP_DN,
            S_GROUPS_DN,
            S_MEMBERS_ATTR,
            S_MEMBER_FILTER,
            S_PROTOCOL,
            S_FILTER,
            S_PAGE_CRITERIUM,
            *UsersSource.role_settings,
        )
    )
    default_mappings = {
        "USER": {"source": "uid", "required": True, "converter": "ldap_user_field"},
        "FIRST_NAME": {"source": "givenName"},
        "LAST_NAME": {"source": "sn"},
        "EMAIL": {"source": "mail", "required": True},
        "PERMISSIONS_ID": {"setting": "default_role"},
    }
    extra_attributes = ("sAMAccountName",)


class LdapAssets(_LdapBase):
    module = "ldap_assets"
    mapping_name = "LDAP_assets"
    record_type = "assets"
    summary = "LDAP / Active Directory entries as assets (e.g. AD computers)"
    settings = _settings(
        (
            S_URL,
            S_USERNAME,
            S_PASSWORD,
            S_BASE_DN,
            S_GROUP_DN,
            S_PROTOCOL,
            S_FILTER,
            S_PAGE_CRITERIUM,
            S_GROUPS_DN,
            S_MEMBERS_ATTR,
            S_MEMBER_FILTER,
            Setting(
                "sync_field",
                None,
                example="24DCF85294E411E38A52066B556BA4EE",
                kind=List(),
                help="the Oomnitza field id(s) that identify an asset, comma-separated",
            ),
        )
    )
