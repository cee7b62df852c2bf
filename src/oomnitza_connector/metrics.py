"""Prometheus text exposition format (version 0.0.4): what node_exporter's textfile collector reads
from ``--metrics-file`` and what the webhook server answers on ``/metrics``.

Format: https://prometheus.io/docs/instrumenting/exposition_formats/ (``# HELP``/``# TYPE`` lines,
``name{label="value"} number``, label values escaped: backslash, double quote, line feed).
Textfile collector: https://github.com/prometheus/node_exporter#textfile-collector (only ``*.prom``
files are read; write to a temporary file and rename it, so a half-written file is never read).
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

PREFIX = "oomnitza_connector_"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

Labels = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Family:
    name: str  # without PREFIX
    kind: str  # gauge | counter
    help: str


@dataclass
class Samples:
    """Samples by family and label set, rendered in the families' order."""

    families: list[Family]
    values: dict[str, dict[Labels, float]] = field(default_factory=dict)

    def family(self, name: str) -> Family:
        return next(f for f in self.families if f.name == name)

    def set(self, name: str, value: float, **labels: str) -> None:
        self.values.setdefault(name, {})[_labels(labels)] = float(value)

    def add(self, name: str, value: float, **labels: str) -> None:
        series = self.values.setdefault(name, {})
        key = _labels(labels)
        series[key] = series.get(key, 0.0) + float(value)

    def get(self, name: str, **labels: str) -> float | None:
        return self.values.get(name, {}).get(_labels(labels))

    def drop(self, name: str, **match: str) -> None:
        """Remove the samples of ``name`` whose labels include ``match``."""
        series = self.values.get(name, {})
        for key in [k for k in series if all((lk, lv) in k for lk, lv in match.items())]:
            del series[key]

    def render(self) -> str:
        lines: list[str] = []
        for fam in self.families:
            series = self.values.get(fam.name) or {}
            if not series:
                continue
            full = PREFIX + fam.name
            lines.append(f"# HELP {full} {_escape_help(fam.help)}")
            lines.append(f"# TYPE {full} {fam.kind}")
            for key in sorted(series):
                lines.append(f"{full}{_render_labels(key)} {_number(series[key])}")
        return "\n".join(lines) + "\n" if lines else ""

    def load(self, text: str) -> None:
        """Take the samples of our families from a file this module wrote earlier; lines it does not
        know are dropped (a file of ours is rewritten whole)."""
        known = {f.name for f in self.families}
        for line in text.splitlines():
            parsed = parse_sample(line)
            if parsed is None:
                continue
            name, labels, value = parsed
            if name.startswith(PREFIX) and name[len(PREFIX) :] in known:
                self.values.setdefault(name[len(PREFIX) :], {})[labels] = value


def _labels(labels: dict[str, str]) -> Labels:
    return tuple(sorted((k, str(v)) for k, v in labels.items()))


def _escape_value(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _render_labels(labels: Labels) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{k}="{_escape_value(v)}"' for k, v in labels) + "}"


def _number(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value.is_integer() and abs(value) < 2**53:
        return str(int(value))
    return repr(value)


_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)(\s+-?\d+)?\s*$")
_LABEL = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"\s*,?')


def parse_sample(line: str) -> tuple[str, Labels, float] | None:
    """One sample line (``name{a="b"} 1``) → (name, labels, value); None for comments and junk."""
    if not line or line.startswith("#"):
        return None
    match = _SAMPLE.match(line)
    if match is None:
        return None
    name, _, body, value = match.group(1), match.group(2), match.group(3) or "", match.group(4)
    labels: list[tuple[str, str]] = []
    pos = 0
    while pos < len(body):
        lm = _LABEL.match(body, pos)
        if lm is None or lm.end() == pos:
            return None
        labels.append((lm.group(1), _unescape(lm.group(2))))
        pos = lm.end()
    try:
        number = float(value)
    except ValueError:
        return None
    return name, tuple(sorted(labels)), number


def _unescape(value: str) -> str:
    return re.sub(r"\\(.)", lambda m: "\n" if m.group(1) == "n" else m.group(1), value)


def label_word(text: str) -> str:
    """A status as a label value: "records failed" → "records_failed"."""
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")


def atomic_write(path: Path, text: str, *, mode: int = 0o644) -> None:
    """Write ``text`` to a temporary file beside ``path``, flush it to disk, then rename it over
    ``path``: a reader sees the old file or the new one, never a part. The temporary name does not
    end in ``.prom``, so the textfile collector never reads it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        with contextlib.suppress(OSError):  # mkstemp makes it 0600; a collector may run as another user
            os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def families(items: Iterable[tuple[str, str, str]]) -> list[Family]:
    return [Family(name, kind, help_text) for name, kind, help_text in items]
