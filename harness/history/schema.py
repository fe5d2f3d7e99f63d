"""The history store: its tables, its schema version, and how a ``--db`` becomes a connection.

One database holds every sweep ever ingested (SQLAlchemy Core, no ORM):

- ``history_sweeps``: one row per sweep folder (its env.json and sweep definition as JSON, its
  commit, host and first/last run times); ``uid`` identifies the folder by content (the
  ledger's first row and env.json), so a copy or a re-ingest of the same folder is the same
  sweep, and a folder wiped and run again at the same path is a new one;
- ``history_series``: one row per series (a configuration on a class of machine, see
  :mod:`harness.history.ingest`), keyed by a digest of what defines it;
- ``history_runs``: one row per run (the ledger's latest row per run_id, whole, as JSON),
  unique per (sweep, run_id, started_at): ingesting again adds nothing; a retried point adds
  its new run.

Where: an embedded SQLite file by default (``results/history.db``: a new user needs no
server), or PostgreSQL for a team whose nodes all write to one place
(``postgresql+psycopg://user:password@host/db``); ``--db`` or ``DISTRINEWS_HISTORY_DB`` picks
it. A password in a URL is never printed: every message shows the URL masked
(:func:`mask`).

Two writers at once lose nothing: SQLite writes take the database's write lock up front
(``BEGIN IMMEDIATE``, waiting up to a minute for the other writer), PostgreSQL serialises on
the unique keys (``INSERT ... ON CONFLICT DO NOTHING``) and on an advisory lock while it
creates the tables. The schema is versioned (``history_meta``): a store written by a newer
distrinews is refused, an older one is upgraded by :data:`MIGRATIONS` in the same transaction
or refused when there is no path -- never read as if it were this version.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from distrinews.errors import UserError
from distrinews.files import refuse_symlink
from harness import outputs

#: The schema this code reads and writes.
SCHEMA_VERSION = 1
#: Where the history lives when neither --db nor the environment says.
DEFAULT_DB = Path("results") / "history.db"
#: The environment variable that picks the store (a path or a URL).
ENV_VAR = "DISTRINEWS_HISTORY_DB"
#: Upgrades from an older schema: version -> function(connection) that brings it to version+1.
#: Version 1 is the first; a new version adds its step here and a test that upgrades a store
#: written by the old code.
MIGRATIONS: dict[int, Callable[[Connection], None]] = {}
#: PostgreSQL advisory lock taken while the tables are created (any constant, ours alone).
_PG_LOCK = 0x64697374726E6577

metadata = sa.MetaData()

meta = sa.Table(
    "history_meta",
    metadata,
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
)

sweeps = sa.Table(
    "history_sweeps",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("uid", sa.String(64), nullable=False, unique=True),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("folder", sa.Text, nullable=False),
    sa.Column("git_sha", sa.Text),
    sa.Column("git_dirty", sa.Boolean),
    sa.Column("hostname", sa.Text),
    sa.Column("started_at", sa.String(40), nullable=False),
    sa.Column("finished_at", sa.String(40), nullable=False),
    sa.Column("env", sa.JSON, nullable=False),
    sa.Column("definition", sa.JSON, nullable=False),
    sa.Column("ingested_at", sa.String(40), nullable=False),
)

series = sa.Table(
    "history_series",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("key", sa.String(64), nullable=False, unique=True),
    sa.Column("label", sa.Text, nullable=False),
    sa.Column("world_size", sa.Integer),
    sa.Column("config", sa.JSON, nullable=False),
    sa.Column("machine", sa.JSON, nullable=False),
)

runs = sa.Table(
    "history_runs",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("sweep_id", sa.Integer, sa.ForeignKey("history_sweeps.id"), nullable=False),
    sa.Column("series_id", sa.Integer, sa.ForeignKey("history_series.id"), nullable=False),
    sa.Column("run_id", sa.Text, nullable=False),
    sa.Column("started_at", sa.String(40), nullable=False),
    sa.Column("config_key", sa.Text),
    sa.Column("repeat", sa.Integer),
    sa.Column("status", sa.String(20), nullable=False),
    # The two figures every chart draws, as columns (reading them from the JSON for 200,000
    # runs would cost seconds); any other metric is read from ``row``.
    sa.Column("samples_per_s", sa.Float),
    sa.Column("efficiency", sa.Float),
    sa.Column("row", sa.JSON, nullable=False),
    sa.UniqueConstraint("sweep_id", "run_id", "started_at", name="history_runs_once"),
)
# Covering what `history changes` reads of every run, so its scan never touches the wide rows.
sa.Index(
    "history_runs_by_series",
    runs.c.series_id,
    runs.c.status,
    runs.c.sweep_id,
    runs.c.started_at,
    runs.c.samples_per_s,
    runs.c.efficiency,
)

TABLES = (meta, sweeps, series, runs)


# -- where the store is ----------------------------------------------------------------------


def mask(url: str | sa.URL) -> str:
    """The URL with its password replaced by ``***`` (what every message shows)."""
    if isinstance(url, sa.URL):
        return url.render_as_string(hide_password=True)
    return re.sub(r"(://[^:/@\s]*:)[^@\s]*@", r"\1***@", str(url))


def _scrub(text: str, url: sa.URL | None) -> str:
    """An error text made safe to print: one line, the URL's password nowhere in it."""
    text = " ".join(str(text).split())
    if url is not None and url.password:
        text = text.replace(str(url.password), "***")
    return mask(text)


def resolve(target: str | Path | None) -> sa.URL:
    """The store's URL from ``--db`` (a path or a URL), else ``DISTRINEWS_HISTORY_DB``, else
    ``results/history.db``. A path is an SQLite file; URLs may be ``sqlite:///PATH`` or
    ``postgresql[+psycopg]://...``; anything else is refused (masked, one line)."""
    if target is None or str(target) == "":
        target = os.environ.get(ENV_VAR) or DEFAULT_DB
    text = str(target)
    if "://" not in text:
        return sa.URL.create("sqlite", database=text)
    try:
        url = sa.make_url(text)
    except (sa.exc.ArgumentError, ValueError):
        raise UserError(
            f"history store {mask(text)}: not a database URL; give a file path, "
            "sqlite:///PATH or postgresql+psycopg://USER@HOST/DB"
        ) from None
    backend, _, driver = url.drivername.partition("+")
    if backend == "postgresql" and driver in ("", "psycopg"):
        return url.set(drivername="postgresql+psycopg")
    if backend == "sqlite" and driver in ("", "pysqlite"):
        if not url.database:
            raise UserError(f"history store {mask(url)}: an in-memory SQLite store keeps nothing")
        return url
    raise UserError(
        f"history store {mask(url)}: unsupported database {url.drivername!r}; use a file path, "
        "sqlite:///PATH or postgresql+psycopg://..."
    )


_SQLITE_MAGIC = b"SQLite format 3\x00"


def _check_sqlite_path(path: Path, *, create: bool) -> None:
    """Refuse a file the store must not touch: a symlink, a folder, a results file, a file that
    is not an SQLite database (SQLite would refuse it only after opening it for writing)."""
    refuse_symlink(path, what="history store")
    if path.is_dir():
        raise UserError(f"{path}: is a folder; give the history store's file (e.g. history.db)")
    if outputs.is_protected(path):
        raise UserError(
            f"{path}: is a results file ({path.name}), not a history store; choose another --db"
        )
    if not path.exists():
        if not create:
            raise UserError(f"{path}: no history store here; ingest a sweep first")
        parent = path.parent
        refuse_symlink(parent, what="history store")
        if parent.exists() and not parent.is_dir():
            raise UserError(f"{parent}: is not a folder; cannot create {path.name} in it")
        parent.mkdir(parents=True, exist_ok=True)
        return
    try:
        with open(path, "rb") as fh:
            head = fh.read(len(_SQLITE_MAGIC))
    except OSError as exc:
        raise UserError(f"{path}: cannot read the history store ({exc.strerror})") from None
    if head and head != _SQLITE_MAGIC:
        raise UserError(f"{path}: is not an SQLite database; refusing to use it as the store")


# -- the store -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Store:
    """An open history store: the engine and its URL (shown masked)."""

    engine: Engine
    url: sa.URL

    @property
    def where(self) -> str:
        """The store as a message shows it (password masked)."""
        if self.url.get_backend_name() == "sqlite":
            return str(self.url.database)
        return mask(self.url)

    @property
    def dialect(self) -> str:
        return self.url.get_backend_name()

    @contextlib.contextmanager
    def write(self) -> Iterator[Connection]:
        """A write transaction (SQLite: the write lock from its first statement on)."""
        with self._errors(), self.engine.connect() as conn:
            conn = conn.execution_options(distrinews_write=True)
            with conn.begin():
                yield conn

    @contextlib.contextmanager
    def read(self) -> Iterator[Connection]:
        """A read transaction (one consistent view)."""
        with self._errors(), self.engine.connect() as conn, conn.begin():
            yield conn

    @contextlib.contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except sa.exc.DBAPIError as exc:
            why = (str(exc.orig).strip().splitlines() or [type(exc.orig).__name__])[0]
            raise UserError(f"history store {self.where}: {_scrub(why, self.url)}") from None

    def close(self) -> None:
        self.engine.dispose()


def open_store(target: str | Path | None = None, *, create: bool = False) -> Store:
    """Connect to the store, check its schema version (create or upgrade it when ``create``).

    Every failure is one UserError line with the URL masked: a path that is not a store, an
    unreachable server, a wrong password, a store of a newer schema, a foreign database.
    """
    url = resolve(target)
    if url.get_backend_name() == "sqlite":
        _check_sqlite_path(Path(url.database), create=create)
        engine = sa.create_engine(url, connect_args={"timeout": 60.0}, poolclass=sa.NullPool)
        sa.event.listen(engine, "connect", _sqlite_connect)
        sa.event.listen(engine, "begin", _sqlite_begin)
    else:
        try:
            engine = sa.create_engine(
                url, connect_args={"connect_timeout": 10}, poolclass=sa.NullPool
            )
        except ImportError as exc:  # psycopg missing: a broken install, said plainly
            raise UserError(f"history store {mask(url)}: {exc}") from None
    store = Store(engine=engine, url=url)
    try:
        _ensure_schema(store, create=create)
    except BaseException:
        engine.dispose()
        raise
    return store


def _sqlite_connect(dbapi_conn: Any, _record: Any) -> None:
    # Let SQLAlchemy's "begin" event issue BEGIN itself (pysqlite's own would be deferred).
    dbapi_conn.isolation_level = None
    dbapi_conn.execute("PRAGMA foreign_keys = ON")


def _sqlite_begin(conn: Connection) -> None:
    # A writer takes the write lock at BEGIN: two writers that both read first and then tried
    # to write would deadlock, and SQLite answers that with an immediate "database is locked".
    write = conn.get_execution_options().get("distrinews_write", False)
    conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")


def _ensure_schema(store: Store, *, create: bool) -> None:
    ctx = store.write() if create else store.read()
    with ctx as conn:
        if store.dialect == "postgresql" and create:
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_LOCK})
        names = set(sa.inspect(conn).get_table_names())
        ours = {t.name for t in TABLES}
        if meta.name not in names:
            if names & ours:
                raise UserError(
                    f"history store {store.where}: has history tables but no {meta.name}; "
                    "not a store this distrinews wrote -- use another --db"
                )
            if not create:
                raise UserError(f"history store {store.where}: is empty; ingest a sweep first")
            metadata.create_all(conn)
            conn.execute(sa.insert(meta), [{"key": "schema_version", "value": str(SCHEMA_VERSION)}])
            return
        version = _version(conn, store)
        if version > SCHEMA_VERSION:
            raise UserError(
                f"history store {store.where}: schema version {version} is newer than this "
                f"distrinews-bench reads ({SCHEMA_VERSION}); upgrade distrinews -- the store was "
                "not changed"
            )
        if version < SCHEMA_VERSION:
            missing = [v for v in range(version, SCHEMA_VERSION) if v not in MIGRATIONS]
            if missing or not create:
                how = (
                    "run `distrinews-bench history ingest` to upgrade it"
                    if not missing
                    else (f"no upgrade from version {missing[0]}")
                )
                raise UserError(
                    f"history store {store.where}: schema version {version} is older than this "
                    f"distrinews-bench reads ({SCHEMA_VERSION}); {how} -- the store was not "
                    "changed"
                )
            for v in range(version, SCHEMA_VERSION):
                MIGRATIONS[v](conn)
            conn.execute(
                sa.update(meta)
                .where(meta.c.key == "schema_version")
                .values(value=str(SCHEMA_VERSION))
            )
        missing_tables = ours - names
        if missing_tables:
            raise UserError(
                f"history store {store.where}: tables {', '.join(sorted(missing_tables))} are "
                "missing; the store is damaged"
            )


def _version(conn: Connection, store: Store) -> int:
    value = conn.execute(
        sa.select(meta.c.value).where(meta.c.key == "schema_version")
    ).scalar_one_or_none()
    try:
        version = int(str(value))
    except ValueError:
        version = -1
    if version < 0 or not str(value).isascii():
        raise UserError(
            f"history store {store.where}: schema_version = {value!r} is not a version number; "
            "the store is damaged"
        )
    return version
