"""Jinja templates of cloud configs, rendered in Jinja's immutable sandbox everywhere.

Two ways to render, as configs written for the cloud expect (managed-mode.md §6):
- to string (URLs, header/param values, bodies, session results): undefined data renders as "";
- to native (``result``, ``add_if``, ``break_early``, mappings): a single non-string value is kept as
  is; text is read as a Python literal when it is one (``123`` → 123, ``[1]`` → list; ``0123`` and
  ``312-800-9919`` stay text), and ``|as_is`` keeps a value untouched (also inside mixed text).

``import('base64')`` and the other names the cloud's configs use return small read-only shims of
pure functions, never modules: no template can reach ``os`` or the interpreter.

Every render has budgets (``Budget``): its output is counted while it is produced and stopped past
the limit; in a worker process of sandbox.py its CPU time is also limited (a timer signal stops
even a loop that calls nothing) and so is the worker's memory. Any failure of a render, whatever
Python raised, comes out as one ``TemplateError`` line. The ``TASKS`` at the end are what the
engine asks the workers to do, a page of records at a time.
"""

from __future__ import annotations

import ast
import base64
import binascii
import bisect
import calendar
import collections
import contextlib
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
import signal
import statistics
import string
import struct
import time
import types
import urllib.parse
import uuid
from collections.abc import Callable, Iterable, Iterator, MappingView
from dataclasses import dataclass
from typing import Any, Literal, cast

from jinja2 import TemplateSyntaxError, UndefinedError
from jinja2.nativetypes import NativeCodeGenerator
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError

from ..errors import ConnectorError

try:
    import resource
except ImportError:  # not on Windows: no memory budget there
    resource = None  # type: ignore[assignment]

MAX_OUTPUT = 1 << 20  # a template that renders more than 1 MiB is a mistake or an attack
STRIKES = 3  # a template over its CPU budget this many times in a run is not run again in that run


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


# -- budgets ----------------------------------------------------------------------------------------
# A cloud template is code we did not write: each render gets a CPU-time, an output-size and (in a
# worker process) a memory budget. Over budget, that render fails with one line naming the template;
# the caller fails the record or call it belongs to. See sandbox.py for the worker processes.


@dataclass(frozen=True)
class Budget:
    cpu_seconds: float = 2.0
    output_chars: int = MAX_OUTPUT
    memory_mib: int = 1024

    @property
    def wall_seconds(self) -> float:
        """How long a render may hold its worker before it is killed: code stuck in C (a huge
        ``**``) does not see the CPU timer's signal, so the parent enforces this as well."""
        return self.cpu_seconds * 2 + 1.0

    def output_text(self) -> str:
        n = self.output_chars
        if n % (1 << 20) == 0:
            return f"{n >> 20} MiB"
        if n % 1024 == 0:
            return f"{n >> 10} KiB"
        return f"{n} characters"

    def cpu_exceeded(self, label: str) -> str:
        return f"template for {label} exceeded its {self.cpu_seconds:g} s CPU budget"


class TemplateBudgetError(TemplateError):
    """A render went over one of its budgets; ``key`` names the template (for the run's strikes)."""

    def __init__(self, message: str, key: str) -> None:
        super().__init__(message)
        self.key = key


class _CpuSpent(BaseException):
    """Raised by the CPU timer's signal handler. A BaseException, so that no ``except Exception``
    inside Jinja can swallow it."""


class _Guard:
    """Budget state of this process. In a worker (``enter_worker``) renders are timed with
    ITIMER_PROF and their progress is published to the parent; elsewhere only the output budget
    applies (code on the event loop goes through sandbox.Templates instead)."""

    def __init__(self) -> None:
        self.budget = Budget()
        self.progress: Any = None  # sandbox.Progress, in a worker process
        self.armed = False
        self.strikes: dict[str, int] = {}  # this run's budget overruns per template, this batch included
        self.new_strikes: dict[str, int] = {}

    def begin(self, label: str) -> None:
        if self.strikes.get(label, 0) >= STRIKES:
            raise TemplateBudgetError(
                f"{self.budget.cpu_exceeded(label)} {STRIKES} times in this run; it is not run again in this run",
                label,
            )
        if self.progress is None:
            return
        self.progress.render_started(label)
        if _TIMER:
            self.armed = True
            signal.setitimer(signal.ITIMER_PROF, self.budget.cpu_seconds)

    def end(self) -> None:
        if self.progress is None:
            return
        if _TIMER:
            self.armed = False
            signal.setitimer(signal.ITIMER_PROF, 0)
        self.progress.render_ended()

    def strike(self, label: str) -> None:
        self.strikes[label] = self.strikes.get(label, 0) + 1
        self.new_strikes[label] = self.new_strikes.get(label, 0) + 1


_GUARD = _Guard()
_TIMER = hasattr(signal, "setitimer") and hasattr(signal, "SIGPROF")  # not on Windows: the parent's kill only


def _on_sigprof(signum: int, frame: Any) -> None:
    if _GUARD.armed:
        _GUARD.armed = False
        raise _CpuSpent


def enter_worker(progress: Any) -> None:
    """Called once in a worker process: time every render and publish its progress."""
    _GUARD.progress = progress
    if _TIMER:
        signal.signal(signal.SIGPROF, _on_sigprof)


def begin_batch(budget: Budget, strikes: dict[str, int]) -> None:
    _GUARD.budget = budget
    _GUARD.strikes = dict(strikes)
    _GUARD.new_strikes = {}
    if _GUARD.progress is not None and resource is not None:
        with contextlib.suppress(ValueError, OSError):
            _soft, hard = resource.getrlimit(resource.RLIMIT_AS)
            resource.setrlimit(resource.RLIMIT_AS, (budget.memory_mib << 20, hard))


def take_strikes() -> dict[str, int]:
    out, _GUARD.new_strikes = _GUARD.new_strikes, {}
    return out


class _Rendering:
    """One render under budget: quarantine check, CPU timer, and every failure as a TemplateError."""

    __slots__ = ("label",)

    def __init__(self, label: str) -> None:
        self.label = label

    def __enter__(self) -> int:
        _GUARD.begin(self.label)
        return _GUARD.budget.output_chars

    def __exit__(self, typ: Any, exc: BaseException | None, tb: Any) -> Literal[False]:
        _GUARD.end()
        if exc is None or isinstance(exc, TemplateError):
            return False
        budget = _GUARD.budget
        if isinstance(exc, _CpuSpent):
            _GUARD.strike(self.label)
            raise TemplateBudgetError(budget.cpu_exceeded(self.label), self.label) from None
        if isinstance(exc, SecurityError):
            raise TemplateError(f"template refused by the sandbox: {exc}") from None
        if isinstance(exc, MemoryError) and _GUARD.progress is not None:
            raise TemplateBudgetError(
                f"template for {self.label} exceeded its {budget.memory_mib} MiB memory budget", self.label
            ) from None
        if isinstance(exc, Exception):  # TypeError, ZeroDivisionError, RecursionError... from a template
            raise TemplateError(one_line(f"{type(exc).__name__}: {exc}")) from None
        return False


def one_line(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _collect(pieces: Iterator[Any], limit: int, label: str) -> list[Any]:
    """Take a render's pieces as they come and stop past the output budget (a lone non-text
    value, e.g. a whole list, is data passed through, not output)."""
    out: list[Any] = []
    size = 0
    for piece in pieces:
        out.append(piece)
        if isinstance(piece, str):
            size += len(piece)
        elif len(out) > 1 or size:
            size += len(str(piece))
        if len(out) == 2 and not isinstance(out[0], str):
            size += len(str(out[0]))
        if size > limit:
            raise TemplateBudgetError(
                f"template for {label} exceeded its {_GUARD.budget.output_text()} output budget", label
            )
    return out


# -- rendering --------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=2048)
def _compile(env_name: str, source: str) -> Any:
    env = STRING_ENV if env_name == "str" else NATIVE_ENV
    try:
        return env.from_string(source)
    except TemplateSyntaxError as exc:
        raise TemplateError(
            f"Invalid configuration for the managed connector: {exc.message} (in template {source[:80]!r})"
        ) from None


def render_str(template: Any, context: dict[str, Any], *, label: str = "a template") -> str:
    """Render to text; data that is undefined (or an error reaching into it) gives ""."""
    if template is None:
        return ""
    source = template if isinstance(template, str) else str(template)
    if "{" not in source:
        return source
    with _Rendering(label) as limit:
        compiled = _compile("str", source)
        try:
            return "".join(_collect(compiled.root_render_func(compiled.new_context(context)), limit, label))
        except UndefinedError:
            return ""


def render_native(template: Any, context: dict[str, Any], *, strict: bool = False, label: str = "a template") -> Any:
    """Render to a Python value with the cloud's type guessing; undefined → None. ``strict``: an
    error reaching into undefined data raises (mappings: ``hw.serial`` without ``hw``)."""
    if template is None:
        return None
    if not isinstance(template, str):
        return template
    if template == "":
        return None
    with _Rendering(label) as limit:
        compiled = _compile("native", template)
        try:
            pieces = _collect(compiled.root_render_func(compiled.new_context(context)), limit, label)
        except UndefinedError as exc:
            if strict:
                raise TemplateError(str(exc)) from None
            return None
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
        if isinstance(value, Iterator | MappingView):
            return list(cast(Iterable[Any], value))  # ``|map`` and friends: taken while the render's budget still runs
        if not isinstance(value, str):
            return value
        raw = value
    else:
        raw = "".join(str(p) for p in pieces)
        if any(isinstance(p, AsIs) for p in pieces):
            return raw  # as_is inside text: keep the text, no guessing
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


# -- tasks: what a worker process is asked to do (sandbox.py sends them a page at a time) ------------
# Each task takes the batch's shared context (``base``) and its own arguments and returns plain data.


def _pairs(items: Any, context: dict[str, Any], what: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items or []:
        if isinstance(item, dict) and item.get("key"):
            key = str(item["key"])
            out[key] = render_str(item.get("value"), context, label=f"{what} {key}")
    return out


def render_call(spec: dict[str, Any], context: dict[str, Any], what: str) -> dict[str, Any]:
    """A call spec (url, http_method, headers, params, body) rendered into a request's parts."""
    body = spec.get("body")
    return {
        "method": str(spec.get("http_method") or "GET").upper(),
        "url": render_str(spec.get("url"), context, label=f"{what} url"),
        "headers": _pairs(spec.get("headers"), context, f"{what} header"),
        "params": _pairs(spec.get("params"), context, f"{what} param"),
        "body": render_str(body, context, label=f"{what} body") if body not in (None, "") else None,
    }


def _task_native(base: dict[str, Any], template: Any, label: str, overlay: dict[str, Any] | None = None) -> Any:
    return render_native(template, {**base, **(overlay or {})}, label=label)


def _task_text(base: dict[str, Any], template: Any, label: str, overlay: dict[str, Any] | None = None) -> str:
    return render_str(template, {**base, **(overlay or {})}, label=label)


def _task_call(base: dict[str, Any], spec: dict[str, Any], what: str, overlay: dict[str, Any]) -> dict[str, Any]:
    return render_call(spec, {**base, **overlay}, what)


def _task_list_request(base: dict[str, Any], behavior: dict[str, Any], overlay: dict[str, Any]) -> Any:
    """The next list call, or None when ``break_early`` says the list is complete."""
    ctx = {**base, **overlay}
    pagination = behavior.get("pagination") or None
    if pagination and render_native(pagination.get("break_early"), ctx, label="pagination break_early"):
        return None
    request = render_call(behavior, ctx, "list call")
    add_if = pagination.get("add_if") if pagination else None
    if pagination and (add_if in (None, "") or render_native(add_if, ctx, label="pagination add_if")):
        request["headers"].update(_pairs(pagination.get("headers"), ctx, "pagination header"))
        request["params"].update(_pairs(pagination.get("params"), ctx, "pagination param"))
    return request


def _task_pairs(base: dict[str, Any], spec: dict[str, Any], what: str, overlay: dict[str, Any]) -> dict[str, Any]:
    """A session login's result: the headers and params later calls carry."""
    ctx = {**base, **overlay}
    return {
        "headers": _pairs(spec.get("headers"), ctx, f"{what} header"),
        "params": _pairs(spec.get("params"), ctx, f"{what} param"),
    }


def _task_software(base: dict[str, Any], spec: dict[str, Any], overlay: dict[str, Any]) -> list[dict[str, Any]]:
    ctx = {**base, **overlay}
    items = render_native(spec.get("result"), ctx, label="software result") or []
    apps = []
    for item in items if isinstance(items, list) else []:
        item_ctx = {**ctx, "software_response_item": item}
        version = render_native(spec.get("version"), item_ctx, label="software version")
        apps.append(
            {
                "name": render_native(spec.get("name"), item_ctx, label="software name"),
                "version": None
                if version is None
                else render_str(spec.get("version"), item_ctx, label="software version"),
                "path": None,
            }
        )
    return apps


def _task_saas(base: dict[str, Any], spec: dict[str, Any], overlay: dict[str, Any]) -> dict[str, Any]:
    ctx = {**base, **overlay}
    link = {"sync_key": render_str(spec["sync_key"], ctx, label="saas sync_key")}
    if spec.get("name"):
        link["name"] = render_str(spec["name"], ctx, label="saas name")
    return link


def _task_map_record(
    base: dict[str, Any], fields: list[tuple[str, str]], record: dict[str, Any]
) -> tuple[bool, Any, str]:
    """A record's template fields: (True, {field: value}, "") or (False, field, message) for the
    first field that fails (the record fails as a whole, as the cloud expects)."""
    variables = mapping_variables(record)
    values: dict[str, Any] = {}
    for name, expr in fields:
        try:
            values[name] = render_native(expr, variables, strict=True, label=f"field {name}")
        except TemplateError as exc:
            return False, name, str(exc)
    return True, values, ""


TASKS: dict[str, Callable[..., Any]] = {
    "native": _task_native,
    "text": _task_text,
    "call": _task_call,
    "list_request": _task_list_request,
    "pairs": _task_pairs,
    "software": _task_software,
    "saas": _task_saas,
    "map_record": _task_map_record,
}
