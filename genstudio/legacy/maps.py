"""The operator's map files: who owns migrated jobs (`--user-map`) and which workflow made them
(`--workflow-map`). Both are CSV with a header line; a malformed file is rejected whole, with
the line that is wrong, before anything is written.

User map — columns `user_id` and either `user_ip`, or `legacy_table` + `legacy_id`:

    user_ip,legacy_table,legacy_id,user_id
    10.0.0.1,,,6f1c…            every style transfer / edit from this IP
    ,multitalk_jobs,abc-123,6f1c…    one legacy row (wins over its IP)

Status map — not a file but `--status-map queued=pending,NULL=failed`: statuses rule 4 does not
know (`NULL` for a missing one) and the status to migrate them with.

Workflow map — `legacy_table,column,pattern,workflow_name`; `pattern` is a PostgreSQL regular
expression matched against the legacy column's text; the first matching line wins:

    legacy_table,column,pattern,workflow_name
    multitalk_jobs,filename,^multi_,lipsync-multi
    style_transfers,workflow_name,^StyleTransferV2$,style-transfer-v2
"""

from __future__ import annotations

import csv
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from genstudio.legacy.install import SOURCES, LegacyError

# The legacy statuses rule 4 maps by itself (genstudio_legacy.job_status): not for a status map.
KNOWN_LEGACY_STATUSES = {"submitted": "pending", "pending": "pending", "processing": "processing",
                         "completed": "completed", "error": "failed", "failed": "failed", "cancelled": "cancelled"}
STATUSES = tuple(dict.fromkeys(KNOWN_LEGACY_STATUSES.values()))  # the job statuses


class MapFileError(LegacyError):
    """A map file that cannot be used; the message names the file and line."""


@dataclass
class UserMap:
    by_key: dict[tuple[str, str], uuid.UUID] = field(default_factory=dict)
    by_ip: dict[str, uuid.UUID] = field(default_factory=dict)


@dataclass(frozen=True)
class WorkflowRule:
    legacy_table: str
    column: str
    pattern: str
    workflow_name: str


def _rows(path: Path, required: set[str], allowed: set[str]) -> list[tuple[int, dict[str, str]]]:
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            header = [h.strip() for h in (reader.fieldnames or [])]
            if not header:
                raise MapFileError(f"{path}: empty file; expected a header line")
            unknown = set(header) - allowed
            if unknown:
                raise MapFileError(f"{path}: unknown column(s) {', '.join(sorted(unknown))}; "
                                   f"allowed: {', '.join(sorted(allowed))}")
            if not required <= set(header):
                raise MapFileError(f"{path}: missing column(s) {', '.join(sorted(required - set(header)))}")
            rows = []
            for row in reader:
                if None in row:
                    raise MapFileError(f"{path}:{reader.line_num}: more fields than the header has")
                cleaned = {k.strip(): (v or "").strip() for k, v in row.items()}
                if any(cleaned.values()):
                    rows.append((reader.line_num, cleaned))
            return rows
    except OSError as exc:
        raise MapFileError(f"{path}: {exc.strerror or exc}") from None
    except (UnicodeDecodeError, csv.Error) as exc:
        raise MapFileError(f"{path}: not a UTF-8 CSV file ({exc})") from None


def read_user_map(path: Path) -> UserMap:
    result = UserMap()
    for line, row in _rows(path, {"user_id"}, {"user_ip", "legacy_table", "legacy_id", "user_id"}):
        try:
            user_id = uuid.UUID(row["user_id"])
        except ValueError:
            raise MapFileError(f"{path}:{line}: user_id {row['user_id']!r} is not a UUID") from None
        ip, table, legacy_id = row.get("user_ip", ""), row.get("legacy_table", ""), row.get("legacy_id", "")
        if ip and (table or legacy_id):
            raise MapFileError(f"{path}:{line}: give either user_ip or legacy_table + legacy_id, not both")
        if ip:
            if result.by_ip.setdefault(ip, user_id) != user_id:
                raise MapFileError(f"{path}:{line}: user_ip {ip} is mapped to two different users")
        elif table and legacy_id:
            if table not in SOURCES:
                raise MapFileError(f"{path}:{line}: legacy_table {table!r} is not one of {', '.join(SOURCES)}")
            if result.by_key.setdefault((table, legacy_id), user_id) != user_id:
                raise MapFileError(f"{path}:{line}: {table} {legacy_id} is mapped to two different users")
        else:
            raise MapFileError(f"{path}:{line}: needs user_ip, or legacy_table and legacy_id")
    return result


def read_workflow_map(path: Path) -> list[WorkflowRule]:
    columns = {"legacy_table", "column", "pattern", "workflow_name"}
    rules = []
    for line, row in _rows(path, columns, columns):
        if row["legacy_table"] not in SOURCES:
            raise MapFileError(f"{path}:{line}: legacy_table {row['legacy_table']!r} is not one of {', '.join(SOURCES)}")
        for name in ("column", "pattern", "workflow_name"):
            if not row[name]:
                raise MapFileError(f"{path}:{line}: {name} is empty")
        rules.append(WorkflowRule(row["legacy_table"], row["column"], row["pattern"], row["workflow_name"]))
    return rules


def parse_status_map(text: str) -> dict[str | None, str]:
    """`queued=pending,NULL=failed` -> {"queued": "pending", None: "failed"}."""
    result: dict[str | None, str] = {}
    for item in text.split(","):
        legacy, equals, status = (part.strip() for part in item.partition("="))
        if not equals:
            raise MapFileError(f"--status-map: {item.strip()!r} is not LEGACY=STATUS (e.g. queued=pending)")
        if status not in STATUSES:
            raise MapFileError(f"--status-map: {status!r} is not a job status ({', '.join(STATUSES)})")
        key = None if legacy == "NULL" else legacy
        if key in KNOWN_LEGACY_STATUSES:
            raise MapFileError(f"--status-map: {legacy!r} needs no mapping, it becomes "
                               f"{KNOWN_LEGACY_STATUSES[key]!r} (docs/legacy-migration.md, rule 4)")
        if result.setdefault(key, status) != status:
            raise MapFileError(f"--status-map: {legacy} is mapped twice")
    return result
