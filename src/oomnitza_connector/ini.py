"""Reader for the legacy ``config.ini`` dialect (spec: config.md §1).

Hand-written instead of ``configparser`` because the dialect differs from every configparser mode:
no interpolation, ``rem`` comments, a ``;`` inline comment only after whitespace, ``""`` meaning
empty, and continuation lines that keep their indentation (Python bodies in ``[converters]``).
The rules mirror the 2.3.3 reader so existing user files parse unchanged.
"""

from __future__ import annotations

import os
import re
import shlex
from dataclasses import dataclass, field
from typing import Any

from oomnitza_connector.errors import ConfigError

DEFAULT_SECTION = "DEFAULT"

# Like Python's universal newlines; str.splitlines() would also split on \v, \f, \x1c, \u2028...
_LINE_BREAK = re.compile(r"\r\n|\r|\n")
_DELIMITER = re.compile(r"[=:]")
# What is named in a parse error: a setting name (lower case, as every setting is written) or a
# mapping key. Anything else before "=" or ":" may be part of a value (a wrapped token ending in
# "=="), so it is not shown.
_KEY_LIKE = re.compile(r"[a-z][a-z0-9_]{0,39}|mapping\.[A-Za-z0-9_]{1,64}")

_TRUE = frozenset({"1", "yes", "y", "true", "t", "on"})
_FALSE = frozenset({"0", "no", "n", "false", "f", "off"})


@dataclass
class IniSection:
    name: str
    line: int
    values: dict[str, str] = field(default_factory=dict)
    key_lines: dict[str, int] = field(default_factory=dict)

    def get(self, key: str, default: str | None = None) -> str | None:
        return self.values.get(key.lower(), default)


@dataclass
class IniDocument:
    path: str
    sections: dict[str, IniSection] = field(default_factory=dict)
    defaults: dict[str, str] = field(default_factory=dict)

    def __contains__(self, name: object) -> bool:
        return name in self.sections

    def __getitem__(self, name: str) -> IniSection:
        return self.sections[name]

    def names(self) -> list[str]:
        return list(self.sections)


def parse_bool(value: Any, *, setting: str = "", lenient: bool = False) -> bool:
    """The one boolean parser: the union of every word the reference accepted anywhere, any case
    (``1 yes y true t on`` / ``0 no n false f off``); a JSON boolean or number is taken as such.

    Strict (the default) raises a ConfigError naming ``setting`` for anything else; ``lenient``
    reads anything else (an empty value, ``None``, an unknown word) as False, as mapping flags
    (``"required": "True"``) always were."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return value != 0
    word = value.strip().lower() if isinstance(value, str) else None
    if word in _TRUE:
        return True
    if word in _FALSE or lenient:
        return False
    shown = value if isinstance(value, str) else repr(value)
    raise ConfigError(f"{setting or 'a setting'}: '{shown}' is not a boolean (use true or false)")


def truthy(value: Any) -> bool:
    """``parse_bool`` that never fails: anything but a true word or a non-zero number is False."""
    return parse_bool(value, lenient=True)


def read_ini(path: str | os.PathLike[str]) -> IniDocument:
    shown = os.fspath(path)
    if os.path.isdir(shown):  # checked first: Windows reports a directory as "permission denied"
        raise ConfigError(f"cannot open config file '{shown}': it is a directory (give the path of the .ini file)")
    try:
        with open(shown, "rb") as fh:
            data = fh.read()
    except FileNotFoundError:
        raise ConfigError(
            f"cannot open config file '{shown}': no such file "
            f"(create one with: oomnitza-connector generate-ini --ini {shlex.quote(shown)})"
        ) from None
    except PermissionError:
        raise ConfigError(
            f"cannot open config file '{shown}': permission denied (check the file's owner and permissions)"
        ) from None
    except OSError as err:
        raise ConfigError(f"cannot open config file '{shown}': {err.strerror or err}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        good = data[: err.start].decode("utf-8")  # valid by definition: the error is at err.start
        line = len(_LINE_BREAK.split(good))
        raise ConfigError(
            f"cannot read config file '{shown}': line {line} is not valid UTF-8 "
            f"(byte 0x{data[err.start]:02x}); save the file with UTF-8 encoding"
        ) from None
    return parse_ini(text, shown)


def parse_ini(text: str, path: str = "config.ini") -> IniDocument:
    doc = IniDocument(path)
    default = IniSection(DEFAULT_SECTION, 0)
    current: IniSection | None = None
    key: str | None = None  # the key that an indented line continues
    outside: list[str] = []  # content before the first section header
    unparsable: list[str] = []  # neither header, key line, comment nor continuation
    orphans: list[str] = []  # indented, but no key line above to continue

    for lineno, raw in enumerate(_LINE_BREAK.split(text.removeprefix("\ufeff")), start=1):
        line = raw.rstrip()
        if not line.strip() or line[0] in "#;":
            continue  # blank lines and comments never end a multi-line value
        if line[0].isspace():
            if current is not None and key is not None:
                # Kept indented and without the inline-comment rule: Python bodies may contain " ;".
                old = current.values[key]
                current.values[key] = f"{old}\n{line}" if old else line
            elif line.lstrip()[0] not in "#;":  # an indented comment with nothing above is harmless
                (outside if current is None else orphans).append(_describe(lineno, line))
            continue
        if line.split(None, 1)[0].lower() == "rem":  # so a key named "rem" is ignored, as in 2.3.3
            continue
        end = line.rfind("]")
        if line[0] == "[" and end > 1:
            name = line[1:end]  # last "]": "[a]b]" is "a]b"; text after it is ignored
            if name == DEFAULT_SECTION:
                current = default
            else:
                current = doc.sections.setdefault(name, IniSection(name, lineno))  # repeats merge
            key = None
            continue
        if current is None:
            outside.append(_describe(lineno, line))
            continue
        match = _DELIMITER.search(line)
        name = line[: match.start()].strip().lower() if match else ""
        if match is None or not name:
            unparsable.append(_describe(lineno, line))
            continue
        key = name
        current.values[key] = _value(line[match.end() :])
        current.key_lines[key] = lineno

    problems = [
        _problem(outside, "must come after a [section] header"),
        _problem(unparsable, 'expected "key = value" or a [section] header'),
        _problem(orphans, "indented, but no key line above it (remove the leading whitespace)"),
    ]
    if any(problems):
        raise ConfigError(f"{path}: " + "; ".join(p for p in problems if p))

    doc.defaults = dict(default.values)
    for section in doc.sections.values():  # [DEFAULT] applies wherever it sits in the file
        section.values = {**default.values, **section.values}
        section.key_lines = {**default.key_lines, **section.key_lines}
    return doc


def _value(text: str) -> str:
    value = text.strip()
    # As 2.3.3: only the FIRST ";" is looked at, and it is a comment only if whitespace precedes it
    # inside the value, so "a;b ;c" and ";secret" are kept whole.
    pos = value.find(";")
    if pos > 0 and value[pos - 1].isspace():
        value = value[:pos].rstrip()
    return "" if value == '""' else value


def shown_key(key: str) -> str | None:
    """``key`` if it can be printed: a setting name or a mapping key; None when it may be part of a
    value (``Zx9…V4lue==`` read as the key of an "=" line: a wrapped secret)."""
    return key if _KEY_LIKE.fullmatch(key) else None


def _describe(lineno: int, line: str) -> str:
    # Never the text of the line: a line that does not parse is often half of a value (a password
    # wrapped onto two lines, a token pasted without its key). Only the key, when there is one.
    match = _DELIMITER.search(line)
    key = shown_key(line[: match.start()].strip()) if match else None
    return f'line {lineno} (key "{key}")' if key else f"line {lineno}"


def _problem(lines: list[str], hint: str) -> str:
    if not lines:
        return ""
    return f"cannot parse {', '.join(lines)}: {hint}"
