"""The export-file connector (``[managed_reports.<id>]``): download report files Oomnitza produced.

Unlike the reference: file names cannot leave the folder (only a safe base name is used) and are
shortened to what the file system takes, files are written to a temporary name and renamed, a
failed download is retried on the next poll (the watermark only moves past files that arrived), and
the watermark lives in a SQLite file updated in a transaction, so a crash never skips or half-writes
a file. A full or read-only disk stops the run with one line (and one failed report to Oomnitza)
instead of failing every file of the listing.

The listing names the data source's id in its own ``created_by_id`` parameter, not inside
``filter``: the reference moved it out of the filter in 2.3.8 (oomnitza-api spec, corrections);
that the cloud no longer narrows by it inside the filter is an inference.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import os
import re
import sqlite3
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import redact
from ..config import SectionConfig
from ..diskio import describe_os_error, describe_sqlite_error, disk_error, fit_name, name_max
from ..errors import ConnectorError, DiskError
from ..http import Http
from ..ini import truthy
from ..oomnitza.client import OomnitzaClient

log = logging.getLogger(__name__)

STATE_FILE = "state.db"
MAX_LISTINGS = 100  # listings per data source and poll; the next poll goes on from the watermark


class Watermarks:
    """Last fully processed ``creation_date`` per data source, crash-safe (SQLite, one transaction)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise disk_error(exc, path.parent) from None
        self._run(
            "CREATE TABLE IF NOT EXISTS media_storage_state (data_source_type TEXT, data_source_id TEXT, "
            "creation_date INTEGER, PRIMARY KEY (data_source_type, data_source_id))"
        )

    def _run(self, sql: str, args: tuple[Any, ...] = ()) -> list[Any]:
        """One statement in its own transaction; a file that cannot be written is a ``DiskError``."""
        try:
            db = sqlite3.connect(str(self.path))
            try:
                with db:
                    return db.execute(sql, args).fetchall()
            finally:
                db.close()
        except sqlite3.Error as exc:
            raise DiskError(describe_sqlite_error(exc, self.path)) from None

    def get(self, kind: str, ident: str) -> int:
        rows = self._run(
            "SELECT creation_date FROM media_storage_state WHERE data_source_type=? AND data_source_id=?",
            (kind, ident),
        )
        return int(rows[0][0]) if rows else 0

    def set(self, kind: str, ident: str, value: int) -> None:
        self._run(
            "INSERT INTO media_storage_state VALUES (?, ?, ?) ON CONFLICT(data_source_type, data_source_id) "
            "DO UPDATE SET creation_date=excluded.creation_date",
            (kind, ident, value),
        )


def safe_name(filename: Any, fallback: str) -> str:
    """The base name only, without path separators, drive letters or leading dots."""
    name = re.split(r"[\\/]", str(filename or ""))[-1]
    name = re.sub(r"[\x00-\x1f:*?\"<>|]", "_", name).strip().lstrip(".")
    return name or fallback


@dataclass
class ExportResult:
    id: Any
    downloaded: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    error: str | None = None  # the run stopped: the disk (or the state file) cannot be written


async def run_export(
    config: dict[str, Any],
    section: SectionConfig | None,
    oomnitza: OomnitzaClient,
    *,
    workers: int = 2,
    state_dir: Path | None = None,
) -> ExportResult:
    ident = config.get("id")
    result = ExportResult(ident)
    settings = {**config, **(section.settings if section else {})}
    folder = Path(str(config.get("folder_path") or ""))
    if not str(config.get("folder_path") or "").strip():
        log.error("managed_reports.%s: the cloud config has no folder_path", ident)
        return result
    if folder.exists() and not folder.is_dir():
        log.error("managed_reports.%s: %s: the specified folder path is already occupied by a file", ident, folder)
        return result
    configured = str(settings.get("state_dir") or "").strip()
    state = Path(configured).expanduser() if configured else (state_dir or Path.cwd())  # its own, else the shared
    try:
        marks = Watermarks(state / STATE_FILE)
        await _poll(config, settings, folder, marks, oomnitza, workers, result)
    except DiskError as exc:
        result.error = result.error or str(exc)
    if result.error:
        log.error("managed_reports.%s: %s", ident, result.error)
    return result


async def _poll(
    config: dict[str, Any],
    settings: dict[str, Any],
    folder: Path,
    marks: Watermarks,
    oomnitza: OomnitzaClient,
    workers: int,
    result: ExportResult,
) -> None:
    ident = config.get("id")
    overwrite = truthy(settings.get("overwrite_reports"))
    sources = config.get("data_sources") or [{"type": "reports_connectors", "id": ident}]
    async with Http(name=f"[managed_reports.{ident}]") as downloads:
        gate = asyncio.Semaphore(max(1, workers))
        for source in sources:
            kind, source_id = str(source.get("type")), str(source.get("id"))
            # The listing may be paged: ask again from the new watermark until it answers nothing new
            # (the reference read one page per poll, so a backlog took one poll per page).
            for _ in range(MAX_LISTINGS):
                since = marks.get(kind, source_id)
                files = await _listing(oomnitza, ident, kind, source_id, since)
                if not files:
                    break

                async def fetch(item: dict[str, Any]) -> bool:
                    async with gate:
                        if result.error:  # the disk failed for another file: do not try this one
                            return False
                        return await _download(item, folder, overwrite, downloads, oomnitza, ident, result)

                outcomes = await asyncio.gather(*(fetch(f) for f in files))
                # The watermark moves only over the files that arrived in order: a failure is retried next poll.
                for item, ok in zip(files, outcomes, strict=True):
                    if not ok:
                        break
                    marks.set(kind, source_id, int(item.get("creation_date") or 0))
                if result.error or not all(outcomes) or marks.get(kind, source_id) <= since:
                    return


async def _listing(oomnitza: OomnitzaClient, ident: Any, kind: str, source_id: str, since: int) -> list[dict[str, Any]]:
    """The data source's files created after ``since``, oldest first ([] when the listing fails)."""
    query = {
        "filter": f"(creation_date gt {since}) and (created_by_type eq '{kind}')",
        "created_by_id": source_id,
        "sortby": "creation_date asc",
    }
    try:
        files = await oomnitza.call_json("GET", "/api/v3/media_storage", params=query) or []
    except ConnectorError as exc:
        log.error("managed_reports.%s: cannot list the report files: %s", ident, exc)
        return []
    if not isinstance(files, list):
        log.error("managed_reports.%s: the report file listing is not a list", ident)
        return []
    return sorted((f for f in files if isinstance(f, dict)), key=lambda f: int(f.get("creation_date") or 0))


def target_name(item: dict[str, Any], folder: Path, overwrite: bool) -> str:
    """The file name in ``folder``: the report's base name, after its UTC creation time unless
    ``overwrite``; shortened (extension and a hash kept) when the file system cannot take it."""
    uid = str(item.get("uid") or "")
    name = safe_name(item.get("filename"), fallback=f"{uid or 'report'}.csv")
    if not overwrite:
        stamp = dt.datetime.fromtimestamp(int(item.get("creation_date") or 0), dt.UTC).strftime("%Y%m%d%H%M%S")
        name = f"{stamp}_{name}"
    return fit_name(name, name_max(folder))


async def _download(
    item: dict[str, Any],
    folder: Path,
    overwrite: bool,
    http: Http,
    oomnitza: OomnitzaClient,
    ident: Any,
    result: ExportResult,
) -> bool:
    uid = str(item.get("uid") or "")
    name = target_name(item, folder, overwrite)
    target = folder / name
    try:
        response = await http.request("GET", str(item.get("url") or ""))  # pre-signed: no Oomnitza credentials
        _write(folder, target, response.content)
    except DiskError as exc:
        if result.error:  # another download hit the same disk first: that one is reported
            return False
        result.error = str(exc)
        result.failed.append(name)
        await _report(oomnitza, ident, {"correlation_id": uid, "failed": 1, "error_message": str(exc)})
        return False
    except ConnectorError as exc:
        message = redact.scrub(str(exc))
        log.error("managed_reports.%s: download of %s failed: %s", ident, name, message)
        result.failed.append(name)
        await _report(oomnitza, ident, {"correlation_id": uid, "failed": 1, "error_message": message})
        return False
    log.info("managed_reports.%s: saved %s", ident, target)
    result.downloaded.append(name)
    await _report(oomnitza, ident, {"correlation_id": uid, "added": 1})
    return True


def _write(folder: Path, target: Path, content: bytes) -> None:
    """``content`` as ``target``, whole or not at all (a temporary file renamed into place)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise disk_error(exc, folder) from None
    try:
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".part-")
    except OSError as exc:
        raise disk_error(exc, target) from None
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(content)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except OSError as exc:
        raise DiskError(describe_os_error(exc, target)) from None
    finally:
        Path(tmp).unlink(missing_ok=True)


async def _report(oomnitza: OomnitzaClient, ident: Any, body: dict[str, Any]) -> None:
    try:
        await oomnitza.call_json("POST", f"/api/v3/bulk/{ident}/add_ready_portion", json=body)
    except ConnectorError as exc:
        log.error("managed_reports.%s: could not report to Oomnitza: %s", ident, exc)
