"""Jinja templates of cloud configs, rendered in Jinja's immutable sandbox everywhere.

Two ways to render, as configs written for the cloud expect (managed-mode.md §6):
- to string (URLs, header/param values, bodies, session results): undefined data renders as "";
- to native (``result``, ``add_if``, ``break_early``, mappings): a single non-string value is kept as
  is; text is read as a Python literal when it is one (``123`` → 123, ``[1]`` → list; ``0123`` and
  ``312-800-9919`` stay text), and ``|as_is`` keeps a value untouched (also inside mixed text).

``import('base64')`` and the other names the cloud's configs use return small read-only shims of
pure functions, never modules: no template can reach ``os`` or the interpreter.
"""

from __future__ import annotations

import ast
import base64
import binascii
import bisect
import calendar
import collections
import datetime
import functools
import hashlib
import hmac
import html
import json
import math
import random
import re
import secrets
import statistics
import string
import struct
import time
import types
import urllib.parse
import uuid
from typing import Any

from jinja2 import TemplateSyntaxError, UndefinedError
from jinja2.nativetypes import NativeCodeGenerator
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError

from ..errors import ConnectorError

MAX_OUTPUT = 1 << 20  # a template that renders more than 1 MiB is a mistake or an attack


class TemplateError(ConnectorError):
    """A template could not be compiled, or tried something the sandbox forbids."""


class AsIs:
    """Marks a value to be kept untouched by native rendering."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value

    def __str__(self) -> str:
        return str(self.value)


def _ns(**members: Any) -> types.SimpleNamespace:
    return types.SimpleNamespace(**members)


SHIMS: dict[str, types.SimpleNamespace] = {
    "base64": _ns(
        b64encode=base64.b64encode,
        b64decode=base64.b64decode,
        urlsafe_b64encode=base64.urlsafe_b64encode,
        urlsafe_b64decode=base64.urlsafe_b64decode,
        b32encode=base64.b32encode,
        b32decode=base64.b32decode,
        b16encode=base64.b16encode,
        b16decode=base64.b16decode,
    ),
    "binascii": _ns(hexlify=binascii.hexlify, unhexlify=binascii.unhexlify, crc32=binascii.crc32),
    "bisect": _ns(bisect=bisect.bisect, bisect_left=bisect.bisect_left, bisect_right=bisect.bisect_right),
    "calendar": _ns(timegm=calendar.timegm, monthrange=calendar.monthrange, isleap=calendar.isleap),
    "collections": _ns(
        OrderedDict=collections.OrderedDict,
        Counter=collections.Counter,
        defaultdict=collections.defaultdict,
        namedtuple=collections.namedtuple,
    ),
    "datetime": _ns(
        datetime=datetime.datetime,
        date=datetime.date,
        time=datetime.time,
        timedelta=datetime.timedelta,
        timezone=datetime.timezone,
    ),
    "hashlib": _ns(
        md5=hashlib.md5,
        sha1=hashlib.sha1,
        sha224=hashlib.sha224,
        sha256=hashlib.sha256,
        sha384=hashlib.sha384,
        sha512=hashlib.sha512,
        new=hashlib.new,
    ),
    "hmac": _ns(new=hmac.new, compare_digest=hmac.compare_digest, digest=hmac.digest),
    "html": _ns(escape=html.escape, unescape=html.unescape),
    "json": _ns(dumps=json.dumps, loads=json.loads),
    "math": _ns(**{name: getattr(math, name) for name in dir(math) if not name.startswith("_")}),
    "random": _ns(random=random.random, randint=random.randint, choice=random.choice, uniform=random.uniform),
    "re": _ns(
        search=re.search,
        match=re.match,
        fullmatch=re.fullmatch,
        sub=re.sub,
        findall=re.findall,
        split=re.split,
        escape=re.escape,
        compile=re.compile,
        IGNORECASE=re.IGNORECASE,
        I=re.I,
    ),
    "secrets": _ns(token_hex=secrets.token_hex, token_urlsafe=secrets.token_urlsafe, token_bytes=secrets.token_bytes),
    "statistics": _ns(mean=statistics.mean, median=statistics.median, mode=statistics.mode),
    "string": _ns(
        ascii_letters=string.ascii_letters,
        ascii_lowercase=string.ascii_lowercase,
        ascii_uppercase=string.ascii_uppercase,
        digits=string.digits,
        hexdigits=string.hexdigits,
        punctuation=string.punctuation,
        capwords=string.capwords,
    ),
    "struct": _ns(pack=struct.pack, unpack=struct.unpack, calcsize=struct.calcsize),
    "time": _ns(time=time.time, gmtime=time.gmtime, strftime=time.strftime, strptime=time.strptime, mktime=time.mktime),
    "urllib.parse": _ns(
        quote=urllib.parse.quote,
        quote_plus=urllib.parse.quote_plus,
        unquote=urllib.parse.unquote,
        unquote_plus=urllib.parse.unquote_plus,
        urlencode=urllib.parse.urlencode,
        urlparse=urllib.parse.urlparse,
        urljoin=urllib.parse.urljoin,
        parse_qs=urllib.parse.parse_qs,
    ),
    "uuid": _ns(
        uuid4=uuid.uuid4,
        uuid5=uuid.uuid5,
        UUID=uuid.UUID,
        NAMESPACE_DNS=uuid.NAMESPACE_DNS,
        NAMESPACE_URL=uuid.NAMESPACE_URL,
    ),
}
SHIMS["urllib"] = _ns(parse=SHIMS["urllib.parse"])


def _import(name: str, *args: Any, **kwargs: Any) -> types.SimpleNamespace:
    shim = SHIMS.get(name) if isinstance(name, str) else None
    if shim is None:
        raise SecurityError(f"{name} is not safely importable")
    return shim


class _StringEnv(ImmutableSandboxedEnvironment):
    pass


class _NativeEnv(ImmutableSandboxedEnvironment):
    code_generator_class = NativeCodeGenerator


def _setup(env: ImmutableSandboxedEnvironment) -> ImmutableSandboxedEnvironment:
    env.globals["import"] = _import
    env.filters["as_is"] = AsIs
    env.filters["b64encode"] = lambda s: base64.b64encode(s.encode() if isinstance(s, str) else s).decode()
    env.filters["b64decode"] = lambda s: base64.b64decode(s).decode()
    env.filters["urlencode_value"] = lambda s: urllib.parse.quote(str(s), safe="")
    env.filters["sha256"] = lambda s: hashlib.sha256(str(s).encode()).hexdigest()
    return env


STRING_ENV = _setup(_StringEnv())
NATIVE_ENV = _setup(_NativeEnv())


@functools.lru_cache(maxsize=2048)
def _compile(env_name: str, source: str) -> Any:
    env = STRING_ENV if env_name == "str" else NATIVE_ENV
    try:
        return env.from_string(source)
    except TemplateSyntaxError as exc:
        raise TemplateError(
            f"Invalid configuration for the managed connector: {exc.message} (in template {source[:80]!r})"
        ) from None


def render_str(template: Any, context: dict[str, Any]) -> str:
    """Render to text; data that is undefined (or an error reaching into it) gives ""."""
    if template is None:
        return ""
    source = template if isinstance(template, str) else str(template)
    if "{" not in source:
        return source
    compiled = _compile("str", source)
    try:
        out = compiled.render(context)
    except UndefinedError:
        return ""
    except SecurityError as exc:
        raise TemplateError(f"template refused by the sandbox: {exc}") from None
    if len(out) > MAX_OUTPUT:
        raise TemplateError("a template rendered more than 1 MiB")
    return out


def render_native(template: Any, context: dict[str, Any], *, strict: bool = False) -> Any:
    """Render to a Python value with the cloud's type guessing; undefined → None. ``strict``: an
    error reaching into undefined data raises (mappings: ``hw.serial`` without ``hw``)."""
    if template is None:
        return None
    if not isinstance(template, str):
        return template
    if template == "":
        return None
    compiled = _compile("native", template)
    try:
        pieces = list(compiled.root_render_func(compiled.new_context(context)))
    except UndefinedError as exc:
        if strict:
            raise TemplateError(str(exc)) from None
        return None
    except SecurityError as exc:
        raise TemplateError(f"template refused by the sandbox: {exc}") from None
    return _concat(pieces)


def _concat(pieces: list[Any]) -> Any:
    from jinja2 import Undefined

    if not pieces:
        return None
    if len(pieces) == 1:
        value = pieces[0]
        if isinstance(value, AsIs):
            return None if isinstance(value.value, Undefined) else value.value
        if isinstance(value, Undefined):
            return None
        if not isinstance(value, str):
            return value
        raw = value
    else:
        raw = "".join(str(p) for p in pieces)
        if any(isinstance(p, AsIs) for p in pieces):
            return raw  # as_is inside text: keep the text, no guessing
    if len(raw) > MAX_OUTPUT:
        raise TemplateError("a template rendered more than 1 MiB")
    try:
        return ast.literal_eval(ast.parse(raw, mode="eval"))
    except (ValueError, SyntaxError, MemoryError, TypeError, RecursionError):
        return raw


_WRAPPERS = ("{{", "}}", "{%", "%}")
# HEAD's renaming of record keys that are not identifiers (managed-mode.md §7.2).
_KEY_CHARS = {
    ".": "_DOT_",
    ":": "_COLON_",
    "-": "_DASH_",
    "#": "_HASH_",
    "$": "_DOLLAR_",
    "@": "_AT_",
    "/": "_SLASH_",
    "*": "_STAR_",
    "!": "_EXCLAIM_",
    "£": "_POUND_",
    "%": "_PERCENT_",
    "^": "_CIRCUM_",
    "?": "_QUES_",
    "=": "_EQUAL_",
    "+": "_PLUS_",
    "&": "_AMPERSAND_",
    "<": "_LESSTHAN_",
    ">": "_GRTRTHAN_",
    "(": "_OPENBRAC_",
    ")": "_CLOSEBRAC_",
    " ": "_SPACE_",
}
_KEY_WORDS = {
    "not": "_NOT_",
    "self": "_SELF_",
    "False": "_FALSE_",
    "false": "_FALSE_",
    "None": "_NONE_",
    "True": "_TRUE_",
    "true": "_TRUE_",
}
_KEY_RE = re.compile("|".join(re.escape(c) for c in _KEY_CHARS))


def mapping_variables(record: dict[str, Any]) -> dict[str, Any]:
    """A record's top-level keys as template variables (awkward keys renamed as the cloud does)."""
    out: dict[str, Any] = {}
    for key, value in record.items():
        name = str(key)
        name = _KEY_WORDS.get(name, name)
        name = _KEY_RE.sub(lambda m: _KEY_CHARS[m.group(0)], name)
        out[name] = value
    return out


def mapping_expression(expr: str) -> str:
    return expr if any(w in expr for w in _WRAPPERS) else "{{ " + expr + " }}"
