"""`genstudio legacy …`: plan, run, verify, archive, rollback and follow, over the SQL mapping.

The mapping rules live in SQL (`schema.sql`, `sources.sql`); this module only sequences them:
batches and their transactions, lock-timeout retries, the operator's maps, and reports.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TypeVar

import psycopg
from psycopg import errors, sql
from tqdm import tqdm

from genstudio.legacy import install as inst
from genstudio.legacy.install import (
    FOLLOW_TRIGGER,
    FOLLOWED_TABLES,
    KEY_COLUMNS,
    SOURCES,
    TARGETS,
    LegacyError,
    SourceTable,
)
from genstudio.legacy.maps import UserMap, WorkflowRule

T = TypeVar("T")

# A statement waiting this long for a lock gives up and is retried, so the live studio's
# writes to the same tables never queue behind the migration for longer.
LOCK_TIMEOUT = "2s"
RETRIES = 20
# Rows per batch (one transaction each). Bigger batches mean fewer statements to plan and
# commits to make; a kill loses at most one batch of work, which the next run redoes.
BATCH_SIZE = 20000
# Connections `run` copies on at once, where the copy order allows it (see _copy_all): the work
# is in the server, where the insert's index maintenance keeps one core busy per connection.
COPY_CONNECTIONS = 2
# Transient failures worth retrying: a lock not granted in time, a deadlock, and a native job
# that claimed a ComfyUI prompt id between the collision check and the insert.
_TRANSIENT = (errors.LockNotAvailable, errors.DeadlockDetected, errors.SerializationFailure, errors.UniqueViolation)


@dataclass
class Anomaly:
    source: str
    key: str
    kind: str
    reason: str


@dataclass
class SourcePlan:
    source: str
    table: str
    archived: bool
    rows: int
    targets: dict[str, int]
    not_migrated: int
    already_copied: int


@dataclass
class Plan:
    sources: list[SourcePlan]
    absent: list[str]
    followed_tables: list[str]
    anomalies: list[Anomaly]
    # The operator's status map in effect: (legacy status or None for a missing one, status, rows it maps)
    status_map: list[tuple[str | None, str, int]] = field(default_factory=list)

    def as_json(self) -> dict:
        return {
            "sources": [vars(s) for s in self.sources],
            "absent": self.absent,
            "followed_tables": self.followed_tables,
            "status_map": [{"legacy_status": legacy, "status": status, "rows": rows}
                           for legacy, status, rows in self.status_map],
            "anomalies": [vars(a) for a in self.anomalies],
        }


@dataclass
class RunReport:
    dry_run: bool
    copied: dict[tuple[str, str], int]  # (source, target) -> rows inserted
    not_migrated: dict[str, int]
    resynced: int = 0


@dataclass
class CountRow:
    source: str
    legacy_status: str | None
    target: str | None
    status: str | None
    legacy_rows: int
    found: int | None  # target rows of that source and status (None: not migrated)


@dataclass
class VerifyReport:
    problem_count: int
    problems: list[tuple[str, str, str, str | None, str | None]]  # kind, source, key, target, detail
    counts: list[CountRow] = field(default_factory=list)
    totals: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.problem_count == 0


class LegacyMigration:
    def __init__(self, conninfo: str):
        self.conninfo = conninfo

    # ---- plumbing ---------------------------------------------------------------------

    @contextmanager
    def _connect(self, exclusive: bool = False) -> Iterator[psycopg.Connection]:
        """A connection in autocommit mode: every change happens in an explicit transaction.
        `exclusive` takes the session advisory lock that keeps two mutating commands apart."""
        try:
            conn = psycopg.connect(self.conninfo, autocommit=True, application_name="genstudio legacy")
        except psycopg.OperationalError as exc:
            raise LegacyError(f"cannot reach the database: {' '.join(str(exc).split())}") from None
        with conn:
            conn.execute(f"SET lock_timeout = '{LOCK_TIMEOUT}'")
            conn.execute("SET timezone = 'UTC'")
            if not exclusive:
                yield conn
                return
            got = conn.execute("SELECT pg_try_advisory_lock(%s)", (inst.ADVISORY_LOCK_KEY,)).fetchone()[0]
            if not got:
                raise LegacyError("another `genstudio legacy` command is changing this database; try again when it ends")
            try:
                yield conn
            finally:
                # Closing the connection frees the lock only once the server's backend has
                # exited, which can be after the next command already asked for it: free it now.
                if conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE:
                    conn.execute("SELECT pg_advisory_unlock(%s)", (inst.ADVISORY_LOCK_KEY,))

    @staticmethod
    def _retrying(conn: psycopg.Connection, work: Callable[[], T]) -> T:
        """Run `work` in a transaction (a savepoint inside an outer one), again on transient errors."""
        for attempt in range(RETRIES):
            try:
                with conn.transaction():
                    return work()
            except _TRANSIENT:
                if attempt == RETRIES - 1:
                    raise
                time.sleep(min(0.05 * 2 ** attempt, 2.0))
        raise AssertionError("unreachable")

    @staticmethod
    def _sources(conn: psycopg.Connection, *, live_only: bool = False) -> dict[str, SourceTable]:
        sources = inst.find_sources(conn)
        if not sources:
            raise LegacyError(f"no legacy tables found (looked for {', '.join(SOURCES)} and data)")
        if live_only:
            archived = [s.source for s in sources.values() if s.archived]
            if archived:
                raise LegacyError(f"{', '.join(archived)} archived; run `genstudio legacy unarchive` first")
        return sources

    # ---- plan -------------------------------------------------------------------------

    def plan(self, expiry_window: str = "7 days", status_map: dict[str | None, str] | None = None) -> Plan:
        """What `run` would do; with `status_map`, as if `run --status-map` had stored it."""
        with self._connect() as conn, conn.transaction(force_rollback=True):
            # Read-only: the mapping is installed in this transaction if it is not yet, and
            # rolled back with it (as is a status map given to preview).
            sources = self._sources(conn)
            inst.install(conn, sources)
            if status_map is not None:
                self._store_status_map(conn, status_map)
            try:
                conn.execute("SELECT set_config('genstudio_legacy.expiry_window', %s, true), %s::interval",
                             (expiry_window, expiry_window))
            except psycopg.DataError:
                raise LegacyError(f"--expiring-within {expiry_window!r} is not an interval") from None
            plans = []
            for source in (s for s in SOURCES if s in sources):
                st = sources[source]
                counts = dict(conn.execute(sql.SQL(
                    "SELECT coalesce(target_table, ''), count(*) FROM genstudio_legacy.{} GROUP BY 1"
                ).format(sql.Identifier(f"{source}_mapped"))).fetchall())
                already = sum(
                    conn.execute(sql.SQL("SELECT count(*) FROM public.{} WHERE legacy_table = %s").format(
                        sql.Identifier(t)), (source,)).fetchone()[0]
                    for t in TARGETS
                )
                plans.append(SourcePlan(
                    source, st.table, st.archived, sum(counts.values()),
                    {t: n for t, n in counts.items() if t}, counts.get("", 0), already,
                ))
            anomalies = []
            for source in (s for s in SOURCES if s in sources):
                anomalies += [Anomaly(*r) for r in conn.execute(sql.SQL(
                    "SELECT source, legacy_id, kind, reason FROM genstudio_legacy.{}"
                ).format(sql.Identifier(f"{source}_anomalies")))]
            anomalies += [
                Anomaly(source, key, "comfy_id_collision", detail)
                for source, key, _target, detail in conn.execute(
                    "SELECT source, legacy_id, target, detail FROM genstudio_legacy.comfy_collisions()")
            ]
            for table, columns in inst.unknown_columns(conn, sources):
                anomalies.append(Anomaly(table, table, "unknown_columns",
                                         f"columns the mapping does not know: {', '.join(columns)} "
                                         "(kept under parameters.legacy, not mapped to a column)"))
            kinds = ["unknown_status", "unknown_columns", "completed_without_output", "completed_before_submitted",
                     "comfy_id_collision",
                     "image_in_multitalk", "empty_url", "signed_url", "missing_created_at"]
            anomalies.sort(key=lambda a: (kinds.index(a.kind) if a.kind in kinds else len(kinds), a.source, a.key))
            return Plan(plans, [s for s in SOURCES if s not in sources], inst.followed_tables(conn), anomalies,
                        self._status_map_use(conn, sources))

    # ---- run --------------------------------------------------------------------------

    def run(
        self,
        *,
        batch_size: int = BATCH_SIZE,
        user_map: UserMap | None = None,
        workflow_map: list[WorkflowRule] | None = None,
        style_transfer_comfy_url: str | None = None,
        status_map: dict[str | None, str] | None = None,
        dry_run: bool = False,
        progress: bool = True,
    ) -> RunReport:
        if batch_size < 1:
            raise LegacyError("--batch-size must be at least 1")
        with self._connect(exclusive=True) as conn, conn.transaction(force_rollback=True) if dry_run else _nothing():
            sources = self._sources(conn, live_only=True)

            def prepare() -> None:
                inst.install(conn, sources)
                self._store_maps(conn, sources, user_map, workflow_map, style_transfer_comfy_url)
                if status_map is not None:
                    self._store_status_map(conn, status_map)

            self._retrying(conn, prepare)
            before = self._copied_counts(conn)
            resynced = self._resync_follow_errors(conn)
            totals = {s: conn.execute(sql.SQL("SELECT count(*) FROM public.{}").format(
                sql.Identifier(sources[s].table))).fetchone()[0] for s in SOURCES if s in sources}
            bar = tqdm(total=sum(totals.values()), unit=" rows", unit_scale=True, file=sys.stderr,
                       disable=not progress, desc="dry run" if dry_run else "copying", dynamic_ncols=True)
            with bar:
                self._copy_all(conn, sources, batch_size, bar, dry_run)
            # The batches committed without waiting for their WAL flush: a transaction that has
            # an id commits synchronously and so flushes them all before `run` reports them.
            conn.execute("SELECT pg_current_xact_id()")
            after = self._copied_counts(conn)
            not_migrated = {
                s: conn.execute(sql.SQL("SELECT count(*) FROM genstudio_legacy.{} WHERE target_table IS NULL").format(
                    sql.Identifier(f"{s}_mapped"))).fetchone()[0]
                for s in SOURCES if s in sources
            }
            return RunReport(
                dry_run,
                {k: after.get(k, 0) - before.get(k, 0) for k in after if after.get(k, 0) != before.get(k, 0)},
                {s: n for s, n in not_migrated.items() if n},
                resynced,
            )

    def _copy_all(self, conn: psycopg.Connection, sources: dict[str, SourceTable], batch_size: int,
                  bar: tqdm, dry_run: bool) -> None:
        """Copy every source, on COPY_CONNECTIONS connections where the rules allow it.

        Order matters only for ComfyUI prompt ids: the first row to claim one in copy order keeps
        it (rule 11). A multitalk row's prompt id is its own key, so no two multitalk rows claim
        the same one and its key ranges can be copied side by side. A style transfer may claim an
        id a multitalk img2img row or an earlier style transfer holds, so style_transfers follows
        all of multitalk, in key order, on one connection. edited_images and datasets claim none.
        A dry run is one transaction, so it copies everything on `conn`, in order."""
        present = [s for s in SOURCES if s in sources]
        if dry_run or COPY_CONNECTIONS < 2:
            for source in present:
                self._copy_source(conn, sources[source], batch_size, bar.update)
            return
        phases: list[list[list[tuple[SourceTable, str | None, str | None]]]] = []
        if "multitalk_jobs" in sources:
            multitalk = sources["multitalk_jobs"]
            bounds = [None, *self._split_keys(conn, multitalk, COPY_CONNECTIONS), None]
            phases.append([[(multitalk, lo, hi)] for lo, hi in zip(bounds, bounds[1:])])
        lanes = [[(sources[s], None, None) for s in lane if s in sources]
                 for lane in (("style_transfers",), ("edited_images", "datasets"))]
        phases.append([lane for lane in lanes if lane])
        lock = threading.Lock()

        def advance(n: int) -> None:
            with lock:
                bar.update(n)

        def copy_lane(lane: list[tuple[SourceTable, str | None, str | None]]) -> None:
            with self._connect() as lane_conn:
                for source, after, upto in lane:
                    self._copy_source(lane_conn, source, batch_size, advance, after, upto)

        with ThreadPoolExecutor(max_workers=COPY_CONNECTIONS) as pool:
            for phase in phases:
                for done in [pool.submit(copy_lane, lane) for lane in phase]:
                    done.result()

    @staticmethod
    def _split_keys(conn: psycopg.Connection, source: SourceTable, parts: int) -> list[str]:
        """Keys that cut the source into `parts` ranges of about equal size (fewer if it is small)."""
        key = sql.Identifier(KEY_COLUMNS[source.source])
        rows = conn.execute(sql.SQL(
            "SELECT max(k)::text FROM (SELECT {key} AS k, ntile(%s) OVER (ORDER BY {key}) AS part FROM public.{table}) t "
            "GROUP BY part ORDER BY part"
        ).format(key=key, table=sql.Identifier(source.table)), (parts,)).fetchall()
        return [r[0] for r in rows[:-1]]

    def _copy_source(self, conn: psycopg.Connection, source: SourceTable, batch_size: int,
                     advance: Callable[[int], object], after: str | None = None, upto: str | None = None) -> None:
        """Key-ordered batches of the keys in (after, upto], one transaction each: a kill loses at
        most the batch in flight, and the next run skips every row already copied (the copy is
        keyed on legacy_id)."""
        key = sql.Identifier(KEY_COLUMNS[source.source])
        key_type = sql.SQL(conn.execute("SELECT key_type FROM genstudio_legacy.routes WHERE source = %s LIMIT 1",
                                        (source.source,)).fetchone()[0])
        conditions = [sql.SQL("{} <= %(upto)s::{}").format(key, key_type)] if upto is not None else []
        # The batch's upper key and the copy of the batch, in one statement (one round trip).
        first, following = (
            sql.SQL(
                "SELECT b.k::text, b.n, genstudio_legacy.copy_range(%(source)s::text, %(after)s::text, b.k::text) "
                "FROM (SELECT k, count(*) OVER () AS n FROM (SELECT {key} AS k FROM public.{table} {where} "
                "ORDER BY {key} LIMIT %(n)s) b ORDER BY k DESC LIMIT 1) b"
            ).format(key=key, table=sql.Identifier(source.table),
                     where=sql.SQL("WHERE ") + sql.SQL(" AND ").join(where) if where else sql.SQL(""))
            for where in (conditions, [sql.SQL("{} > %(after)s::{}").format(key, key_type), *conditions])
        )
        while True:
            def batch() -> tuple[str | None, int]:
                # An acknowledged commit that a server crash then loses costs nothing here: the
                # copy is idempotent and keyed, so the next `run` copies those rows again. So the
                # batches do not wait for their WAL flush; `run` flushes them all at its end.
                conn.execute("SET LOCAL synchronous_commit = off")
                last, n, _ = conn.execute(
                    first if after is None else following,
                    {"source": source.source, "after": after, "upto": upto, "n": batch_size},
                ).fetchone() or (None, 0, 0)
                return last, n

            last, n = self._retrying(conn, batch)
            if last is None:
                return
            advance(n)
            after = last

    @staticmethod
    def _copied_counts(conn: psycopg.Connection) -> dict[tuple[str, str], int]:
        counts = {}
        for target in TARGETS:
            for legacy_table, n in conn.execute(sql.SQL(
                "SELECT legacy_table, count(*) FROM public.{} WHERE legacy_table IS NOT NULL GROUP BY 1"
            ).format(sql.Identifier(target))):
                counts[(legacy_table, target)] = n
        return counts

    def _resync_follow_errors(self, conn: psycopg.Connection) -> int:
        """Keys a follow trigger could not sync (recorded, not raised) are synced again here."""
        keys = conn.execute("SELECT source, legacy_id FROM genstudio_legacy.follow_errors ORDER BY at").fetchall()
        for source, legacy_id in keys:
            def sync() -> None:
                conn.execute("SELECT genstudio_legacy.sync_key(%s, %s)", (source, legacy_id))
                conn.execute("DELETE FROM genstudio_legacy.follow_errors WHERE source = %s AND legacy_id = %s",
                             (source, legacy_id))
            self._retrying(conn, sync)
        return len(keys)

    @staticmethod
    def _store_maps(
        conn: psycopg.Connection,
        sources: dict[str, SourceTable],
        user_map: UserMap | None,
        workflow_map: list[WorkflowRule] | None,
        comfy_url: str | None,
    ) -> None:
        """Maps given on the command line replace the stored ones; without them the stored maps
        stay, so a resumed run maps exactly as the interrupted one did."""
        if user_map is not None:
            conn.execute("DELETE FROM genstudio_legacy.user_map_key")
            conn.execute("DELETE FROM genstudio_legacy.user_map_ip")
            with conn.cursor() as cur:
                cur.executemany("INSERT INTO genstudio_legacy.user_map_key VALUES (%s, %s, %s)",
                                [(t, i, u) for (t, i), u in user_map.by_key.items()])
                cur.executemany("INSERT INTO genstudio_legacy.user_map_ip VALUES (%s, %s)",
                                list(user_map.by_ip.items()))
            unknown = [str(r[0]) for r in conn.execute(
                "SELECT DISTINCT user_id FROM (SELECT user_id FROM genstudio_legacy.user_map_key "
                "UNION ALL SELECT user_id FROM genstudio_legacy.user_map_ip) m "
                "WHERE NOT EXISTS (SELECT 1 FROM auth.users u WHERE u.id = m.user_id) ORDER BY 1 LIMIT 5")]
            if unknown:
                raise LegacyError(f"--user-map names users that do not exist in auth.users: {', '.join(unknown)}")
        if workflow_map is not None:
            conn.execute("DELETE FROM genstudio_legacy.workflow_map")
            for position, rule in enumerate(workflow_map, start=1):
                if rule.legacy_table not in sources:
                    raise LegacyError(f"--workflow-map: legacy table {rule.legacy_table} does not exist")
                has_column = conn.execute(
                    "SELECT 1 FROM information_schema.columns WHERE table_schema = 'public' "
                    "AND table_name = %s AND column_name = %s",
                    (sources[rule.legacy_table].table, rule.column)).fetchone()
                if not has_column:
                    raise LegacyError(f"--workflow-map: {rule.legacy_table} has no column {rule.column!r}")
                try:
                    with conn.transaction():
                        conn.execute("SELECT '' ~ %s", (rule.pattern,))
                except psycopg.errors.InvalidRegularExpression as exc:
                    raise LegacyError(f"--workflow-map: pattern {rule.pattern!r}: {exc.diag.message_primary}") from None
                conn.execute("INSERT INTO genstudio_legacy.workflow_map VALUES (%s, %s, %s, %s, %s)",
                             (position, rule.legacy_table, rule.column, rule.pattern, rule.workflow_name))
        if comfy_url is not None:
            conn.execute(
                "INSERT INTO genstudio_legacy.options VALUES ('style_transfers_comfy_url', %s) "
                "ON CONFLICT (name) DO UPDATE SET value = EXCLUDED.value", (comfy_url,))

    @staticmethod
    def _store_status_map(conn: psycopg.Connection, status_map: dict[str | None, str]) -> None:
        """Replaces the stored map; the mapping views (so run, follow and verify) read it."""
        conn.execute("DELETE FROM genstudio_legacy.status_map")
        with conn.cursor() as cur:
            cur.executemany("INSERT INTO genstudio_legacy.status_map VALUES (%s, %s)", list(status_map.items()))

    @staticmethod
    def _status_map_use(conn: psycopg.Connection, sources: dict[str, SourceTable]) -> list[tuple[str | None, str, int]]:
        """Each stored status-map entry with the number of legacy rows it maps."""
        counted = " UNION ALL ".join(
            f"SELECT legacy_status::text FROM genstudio_legacy.{source}_mapped"
            for source in SOURCES if source in sources and source != "datasets")
        return [(legacy, status, rows) for legacy, status, rows in conn.execute(
            "SELECT m.legacy_status, m.status, "
            f"(SELECT count(*) FROM ({counted or 'SELECT NULL::text AS legacy_status WHERE false'}) r "
            "  WHERE r.legacy_status IS NOT DISTINCT FROM m.legacy_status) "
            "FROM genstudio_legacy.status_map m ORDER BY m.legacy_status NULLS LAST")]

    # ---- verify -----------------------------------------------------------------------

    def verify(self, limit: int = 20) -> VerifyReport:
        with self._connect() as conn, conn.transaction(force_rollback=True):
            sources = self._sources(conn)
            inst.install(conn, sources)
            rows = conn.execute(
                "SELECT count(*) OVER (), kind, source, legacy_id, target, detail "
                "FROM genstudio_legacy.problems() LIMIT %s", (limit,)).fetchall()
            report = VerifyReport(rows[0][0] if rows else 0, [tuple(r[1:]) for r in rows])
            # One scan per table for the whole count table: each target's rows grouped by
            # source (NULL: native jobs) and status, each mapping view's by legacy status, target
            # and status (a view has one row per legacy row, so its total is the table's count).
            found = {}
            for target in TARGETS:
                total = migrated = 0
                for legacy_table, status, n in conn.execute(sql.SQL(
                    "SELECT legacy_table, status, count(*) FROM public.{} GROUP BY 1, 2"
                ).format(sql.Identifier(target))):
                    total += n
                    if legacy_table is not None:
                        migrated += n
                        found[(legacy_table, target, status)] = n
                report.totals[f"{target}_count"] = total
                report.totals[f"{target}_migrated"] = migrated
            for source in (s for s in SOURCES if s in sources):
                legacy_rows = 0
                for legacy_status, target, status, n in conn.execute(sql.SQL(
                    "SELECT legacy_status, target_table, status, count(*) FROM genstudio_legacy.{} "
                    "GROUP BY 1, 2, 3 ORDER BY 2 NULLS LAST, 3, 1 NULLS FIRST"
                ).format(sql.Identifier(f"{source}_mapped"))):
                    legacy_rows += n
                    report.counts.append(CountRow(source, legacy_status, target, status, n,
                                                  found.get((source, target, status)) if target else None))
                report.totals[f"old_{source}_count"] = legacy_rows
            return report

    # ---- archive / unarchive ----------------------------------------------------------

    def archive(self, *, force: bool = False) -> list[str]:
        if not force:
            report = self.verify(limit=1)
            if not report.ok:
                raise LegacyError(
                    f"verify found {report.problem_count} problem(s); archive refused "
                    "(see `genstudio legacy verify`, or pass --force)")
        with self._connect(exclusive=True) as conn:
            sources = self._sources(conn, live_only=True)

            def rename() -> list[str]:
                inst.drop_follow_triggers(conn, sources) if inst.schema_installed(conn) else None
                done = []
                for source in sources.values():
                    for table in source.tables:
                        target = inst.ARCHIVE_PREFIX + table
                        conn.execute(sql.SQL("ALTER TABLE public.{} RENAME TO {}").format(
                            sql.Identifier(table), sql.Identifier(target)))
                        done.append(f"{table} -> {target}")
                return done

            return self._retrying(conn, rename)

    def unarchive(self) -> list[str]:
        with self._connect(exclusive=True) as conn:
            sources = self._sources(conn)
            archived = [s for s in sources.values() if s.archived]
            if not archived:
                raise LegacyError("no archived legacy tables to restore")

            def rename() -> list[str]:
                done = []
                for source in archived:
                    for table in source.tables:
                        original = table.removeprefix(inst.ARCHIVE_PREFIX)
                        conn.execute(sql.SQL("ALTER TABLE public.{} RENAME TO {}").format(
                            sql.Identifier(table), sql.Identifier(original)))
                        done.append(f"{table} -> {original}")
                return done

            return self._retrying(conn, rename)

    # ---- rollback ---------------------------------------------------------------------

    def rollback(self, *, drop_tables: bool = False) -> dict[str, int]:
        """Delete exactly the rows the migration wrote (they name their legacy row) and the
        genstudio_legacy schema. With drop_tables, then the guide's Step 7 — only when no job
        remains that the migration did not write."""
        with self._connect(exclusive=True) as conn:
            present = [t for t in TARGETS if conn.execute("SELECT to_regclass(%s)", (f"public.{t}",)).fetchone()[0]]
            if drop_tables:
                native = {t: conn.execute(sql.SQL("SELECT count(*) FROM public.{} WHERE legacy_table IS NULL").format(
                    sql.Identifier(t))).fetchone()[0] for t in present}
                if any(native.values()):
                    held = ", ".join(f"{t}: {n}" for t, n in native.items() if n)
                    raise LegacyError(f"refusing to drop the job tables: they hold jobs the migration did not write ({held})")

            def remove() -> dict[str, int]:
                try:
                    sources = inst.find_sources(conn)
                except LegacyError:
                    sources = {}
                inst.drop_follow_triggers(conn, sources)
                deleted = {}
                for t in present:
                    cur = conn.execute(sql.SQL("DELETE FROM public.{} WHERE legacy_table = ANY(%s)").format(
                        sql.Identifier(t)), (list(SOURCES),))
                    deleted[t] = cur.rowcount
                conn.execute("DROP SCHEMA IF EXISTS genstudio_legacy CASCADE")
                return deleted

            deleted = self._retrying(conn, remove)
        if drop_tables:
            from genstudio.db.migrator import Migrator

            Migrator(self.conninfo).downgrade(1)
        return deleted

    # ---- follow -----------------------------------------------------------------------

    def follow(self) -> list[str]:
        with self._connect(exclusive=True) as conn:
            sources = self._sources(conn, live_only=True)

            def create() -> list[str]:
                inst.install(conn, sources)
                made = []
                for source in sources.values():
                    for table, key_column in FOLLOWED_TABLES[source.source]:
                        conn.execute(sql.SQL(
                            "CREATE OR REPLACE TRIGGER {trigger} AFTER INSERT OR UPDATE OR DELETE ON public.{table} "
                            "FOR EACH ROW EXECUTE FUNCTION genstudio_legacy.follow({source}, {key})"
                        ).format(trigger=sql.Identifier(FOLLOW_TRIGGER), table=sql.Identifier(table),
                                 source=sql.Literal(source.source), key=sql.Literal(key_column)))
                        made.append(table)
                return made

            return self._retrying(conn, create)

    def unfollow(self) -> int:
        with self._connect(exclusive=True) as conn:
            sources = self._sources(conn)
            return self._retrying(conn, lambda: inst.drop_follow_triggers(conn, sources))


@contextmanager
def _nothing() -> Iterator[None]:
    yield None
