"""The SQLAlchemy handle, Flask-Migrate, and per-backend connection settings.

SQLite is the embedded default: WAL mode lets readers run beside the writer, and
every write transaction starts with BEGIN IMMEDIATE so that two requests never both
read and then fail to upgrade to a write lock (SQLITE_BUSY mid-transaction);
read-only requests (``mark_read_only``) use a deferred BEGIN.
Write transactions also queue before BEGIN IMMEDIATE (``WriteQueue``): on a thread
lock within the process, then on an flock(2) of ``<database>-writelock`` across
processes (gunicorn workers). A waiting writer wakes the moment the previous one
commits, instead of sleeping in SQLite's busy handler, whose back-off (1, 2, 5, ...
up to 100 ms a sleep) dominated the tail latency under load and, once one process
queued its own writers, starved the other worker's. The queue only orders writers;
SQLite's own locking still guarantees correctness, and writers that do not queue
(the CLI, migrations, other tools) still meet through busy_timeout.
Every wait is bounded: a writer that cannot get into the queue (thread lock and flock)
within the busy timeout (10 s) gets ``OperationalError('database is locked')``, which
the app answers 503 ``database_busy`` with Retry-After, as SQLite's own busy timeout.
On PostgreSQL, write paths lock the participant's session row (FOR UPDATE); every
connection sets ``lock_timeout`` (``PG_LOCK_TIMEOUT_MS``, as SQLite's busy timeout) and
``statement_timeout`` (``PG_STATEMENT_TIMEOUT_MS``), so a lock held by someone else or
a runaway statement ends in SQLSTATE 55P03/57014, answered 503 too, instead of a hang.

PostgreSQL round trips (issue 18): under load an answer's latency is mostly waits for
the server, one per statement, so the answer path batches them with psycopg's
pipeline mode (https://www.psycopg.org/psycopg3/docs/advanced/pipeline.html):
``pg_pipeline_fetch`` sends several statements and reads all their rows in one round
trip, and ``defer_write`` keeps the request's writes until ``commit`` sends them with
the COMMIT in one more. Any other use of the request's connection (``connection()``)
first sends the deferred writes, so reads and undeferred writes see them in order.
On SQLite (in-process, no round trips) ``defer_write`` executes at once.

Per-statement CPU (issue 18): the answer path's statements are compiled once
(``_prepared``) and, inside the request's transaction, sent straight to the driver:
psycopg's pipeline on PostgreSQL, sqlite3's cursor on SQLite (``execute_write``,
``fetch_all``), with SQLAlchemy's ``before_cursor_execute`` listeners run and its errors
raised as usual. Where something set up needs SQLAlchemy's own execution of each
statement (statement logging, ``after_cursor_execute`` listeners such as
Flask-SQLAlchemy's ``SQLALCHEMY_RECORD_QUERIES``, ``handle_error`` hooks:
``_needs_sqlalchemy_execution``), every statement goes through SQLAlchemy instead, in
the same order and transaction (on PostgreSQL a round trip each).
"""

from __future__ import annotations

import fcntl
import itertools
import os
import sqlite3
import threading
import time
import urllib.parse
import weakref
from typing import TYPE_CHECKING, Any, NamedTuple

from flask import Flask, g, has_app_context
from flask_migrate import Migrate
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import event
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Dialect, Engine
from sqlalchemy.orm import DeclarativeBase

from . import schema
from .config import DEFAULT_DATABASE_POOL_SIZE, ConfigError


class Base(DeclarativeBase):
    metadata = schema.metadata  # the tables of listening_test.schema (its naming convention)


# expire_on_commit=False: a handler builds its reply from objects it just committed,
# without reloading them (on SQLite that reload would take the write lock again).
db = SQLAlchemy(model_class=Base, session_options={"expire_on_commit": False})
# The base class of models.py. Flask-SQLAlchemy builds ``db.Model`` at run time from
# ``Base`` (adding its query property and bind mixins); a base class held in an attribute
# is invisible to type checkers (python/mypy#8603), so they are shown ``Base`` itself.
if TYPE_CHECKING:
    Model = Base
else:
    Model = db.Model
migrate = Migrate()

SQLITE_BUSY_TIMEOUT_MS = 10_000
PG_LOCK_TIMEOUT_MS = SQLITE_BUSY_TIMEOUT_MS  # a lock wait longer than this: 503, retry
PG_STATEMENT_TIMEOUT_MS = 60_000  # a backstop for any one statement (exports included)
# WAL checkpoints: SQLite's automatic one runs inside the COMMIT call of whichever
# writer crosses 1000 WAL pages, after SQLite has released the write lock but before
# our WriteQueue could release the queue, so it would stall every queued writer behind
# its fsync. Instead a PASSIVE checkpoint (which never blocks writers) runs every this
# many write commits per process, on a thread of its own (``WalCheckpointer``): run
# inline it cost the request whose commit it followed ~5 ms, 1 % of all answers (the
# p99 of benchmarks/listening_load.py on SQLite).
SQLITE_CHECKPOINT_EVERY = 100
SQLITE_CHECKPOINT_IDLE_S = 30.0  # a checkpointer's thread ends after this long without a request


def _sqlite_on_connect(dbapi_connection, _record) -> None:
    # Let SQLAlchemy's "begin" hook emit BEGIN itself (pysqlite's implicit BEGIN is deferred).
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA synchronous=NORMAL")  # safe in WAL mode, far fewer fsyncs
    cursor.execute("PRAGMA wal_autocheckpoint=0")  # see SQLITE_CHECKPOINT_EVERY
    cursor.close()


def _raw(connection):
    # The dialect's do_commit/do_rollback get the pool's proxy; do_close the DBAPI connection.
    return getattr(connection, "dbapi_connection", connection)


class WriteQueue:
    """SQLite writers one at a time, held from BEGIN IMMEDIATE to COMMIT/ROLLBACK.

    A thread lock orders one process's writers; with ``lock_path``, an exclusive
    flock(2) on that file (kernel-queued, released by the kernel if the process
    dies) orders the processes. Keyed by the DBAPI connection that holds it. A thread
    that already holds it and opens a second write transaction (another connection)
    does not wait for itself: it goes straight to SQLite, as it would without the
    queue; so does a writer that waited longer than the busy timeout for the thread lock.
    """

    def __init__(self, timeout_s: float, lock_path: str | None = None):
        self._lock = threading.Lock()
        self._timeout_s = timeout_s
        self._lock_path = lock_path
        self._fd: tuple[int, int] | None = None  # (pid, file descriptor): reopened after a fork
        self._holder: tuple[int, int, bool] | None = None  # (id(dbapi connection), thread id, flocked)

    def _file(self) -> int | None:
        if self._lock_path is None:
            return None
        if self._fd is None or self._fd[0] != os.getpid():
            try:
                fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            except OSError:
                self._lock_path = None  # a read-only folder: the thread lock alone
                return None
            self._fd = (os.getpid(), fd)
        return self._fd[1]

    def acquire(self, dbapi_connection) -> None:
        """Wait (at most the busy timeout in all) for this process's queue and the flock.

        Raises:
            sqlalchemy.exc.OperationalError: 'database is locked' when the wait timed out
                (answered 503 ``database_busy``); nothing is held then.
        """
        dbapi_connection = _raw(dbapi_connection)
        holder, me = self._holder, threading.get_ident()
        if holder is not None and holder[1] == me:
            return
        deadline = time.monotonic() + self._timeout_s
        if not self._lock.acquire(timeout=self._timeout_s):
            raise _queue_timeout(self._timeout_s)
        fd, flocked = self._file(), False
        if fd is not None:
            got = self._flock_until(fd, deadline)
            if got is None:  # timed out; the waiting thread releases the queue when it ends
                raise _queue_timeout(self._timeout_s)
            flocked = got
        self._holder = (id(dbapi_connection), me, flocked)

    def _flock_until(self, fd: int, deadline: float) -> bool | None:
        """The flock, waited for until ``deadline``: True held, False unavailable (an
        OSError: go on without it), None timed out. An uncontended flock is taken at once;
        a contended one is waited for in a helper thread (flock(2) has no timeout), which
        wakes the moment the other process unlocks. When the wait times out the helper is
        left to finish it: it then unlocks at once and releases ``self._lock``, which the
        caller leaves held so that no second wait starts on the same descriptor meanwhile."""
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            pass
        except OSError:
            return False
        done, guard, state = threading.Event(), threading.Lock(), {"abandoned": False, "ok": False}

        def wait() -> None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)  # blocks without the GIL until the other process commits
                ok = True
            except OSError:
                ok = False
            with guard:
                if state["abandoned"]:
                    if ok:
                        fcntl.flock(fd, fcntl.LOCK_UN)
                    self._lock.release()
                    return
                state["ok"] = ok
                done.set()

        threading.Thread(target=wait, name="jndlab-writelock-wait", daemon=True).start()
        done.wait(max(0.0, deadline - time.monotonic()))
        with guard:
            if done.is_set():
                return bool(state["ok"])
            state["abandoned"] = True
            return None

    def release(self, dbapi_connection) -> bool:
        """Leave the queue if ``dbapi_connection`` holds it; say whether it did."""
        dbapi_connection = _raw(dbapi_connection)
        holder = self._holder
        if holder is not None and holder[0] == id(dbapi_connection):
            self._holder = None
            if holder[2] and self._fd is not None:  # flocked: the file is open
                fcntl.flock(self._fd[1], fcntl.LOCK_UN)
            self._lock.release()
            return True
        return False

    @property
    def held(self) -> bool:
        return self._holder is not None


class WalCheckpointer:
    """PASSIVE WAL checkpoints of one SQLite database file, off the request path.

    ``request()`` wakes a daemon thread of this process, which opens its own connection,
    runs ``PRAGMA wal_checkpoint(PASSIVE)`` and closes it again (an open connection
    would keep SQLite from checkpointing and removing the WAL when the app's last
    connection closes). Requests made while one runs are merged into the next run.
    The connection never creates the file (``mode=rw``): a database deleted while the
    app runs is not replaced by an empty one. The thread ends after
    ``SQLITE_CHECKPOINT_IDLE_S`` without a request (the next request starts another), so
    an engine that is no longer used (tests and scripts create many) leaves no thread
    behind; a forked process (a gunicorn worker) starts its own on its first request.
    ``wait_idle()`` waits for a requested or running checkpoint to end (``configure_engine``
    calls it when the engine is disposed, so that a copy of the file taken after
    ``dispose()`` holds every commit).
    """

    def __init__(self, database: str):
        self._database = database
        self._uri = "file:" + urllib.parse.quote(database) + "?mode=rw"
        self._pid: int | None = None
        self._state = threading.Condition()
        self._pending = False  # a request not yet taken by the thread
        self._running = False  # the thread is checkpointing now
        self._thread: threading.Thread | None = None
        self.completed = 0  # checkpoints run by this process (tests wait on it)

    def _reset_after_fork(self) -> None:
        # Threads (and a Condition's lock, if held at fork) do not survive fork(): start afresh.
        self._pid, self._state = os.getpid(), threading.Condition()
        self._pending = self._running = False
        self._thread = None

    def request(self) -> None:
        """Ask for a checkpoint soon (returns at once)."""
        if self._pid != os.getpid():
            self._reset_after_fork()
        with self._state:
            self._pending = True
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="jndlab-wal-checkpoint", daemon=True)
                self._thread.start()
            self._state.notify_all()

    def wait_idle(self, timeout_s: float = SQLITE_BUSY_TIMEOUT_MS / 1000) -> bool:
        """Wait until no checkpoint is requested or running in this process; False on timeout."""
        if self._pid != os.getpid():
            return True  # nothing of this process's own
        with self._state:
            return self._state.wait_for(lambda: not (self._pending or self._running), timeout_s)

    def _run(self) -> None:
        state = self._state
        while True:
            with state:
                if not state.wait_for(lambda: self._pending, SQLITE_CHECKPOINT_IDLE_S):
                    if self._thread is threading.current_thread():
                        self._thread = None  # idle: end; a later request starts a new thread
                    return
                self._pending, self._running = False, True
            try:
                self._checkpoint()
            finally:
                with state:
                    self._running = False
                    self.completed += 1
                    state.notify_all()

    def _checkpoint(self) -> None:
        try:
            connection = sqlite3.connect(self._uri, timeout=0, uri=True)
            try:
                connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
            finally:
                connection.close()
        except sqlite3.Error:  # housekeeping (the file is gone, a read-only folder): the next request retries
            pass


def _queue_timeout(timeout_s: float) -> sa_exc.OperationalError:
    return sa_exc.OperationalError(
        "BEGIN IMMEDIATE",
        None,
        sqlite3.OperationalError(f"database is locked (another writer held it for over {timeout_s:g} s)"),
    )


_WRITE_QUEUES: weakref.WeakKeyDictionary[Dialect, WriteQueue] = weakref.WeakKeyDictionary()


_CHECKPOINTERS: weakref.WeakKeyDictionary[Dialect, WalCheckpointer | None] = weakref.WeakKeyDictionary()


def wal_checkpointer(engine: Engine) -> WalCheckpointer | None:
    """The WAL checkpointer of ``engine`` (None: not SQLite on a file, or not set up by ``configure_engine``)."""
    return _CHECKPOINTERS.get(engine.dialect)


def write_queue(engine: Engine) -> WriteQueue | None:
    """The SQLite write queue of ``engine`` (None: not SQLite, or not set up by ``configure_engine``)."""
    return _WRITE_QUEUES.get(engine.dialect)


def _sqlite_on_begin(connection) -> None:
    # Read-only requests (mark_read_only) take a deferred BEGIN: in WAL mode they read
    # a snapshot beside the writer instead of queueing for the single write lock.
    if has_app_context() and g.get("jndlab_read_only"):
        connection.exec_driver_sql("BEGIN")
        return
    queue = write_queue(connection.engine)
    if queue is None:  # an engine configure_engine did not set up: SQLite's own locking
        connection.exec_driver_sql("BEGIN IMMEDIATE")
        return
    dbapi_connection = connection.connection.dbapi_connection
    queue.acquire(dbapi_connection)
    try:
        connection.exec_driver_sql("BEGIN IMMEDIATE")
    except BaseException:
        queue.release(dbapi_connection)
        raise


def _install_write_queue(engine: Engine) -> None:
    """Release the queue after the DBAPI COMMIT/ROLLBACK (Core has no after-commit event)."""
    dialect = engine.dialect
    database = engine.url.database
    lock_path = (
        f"{database}-writelock" if database and database != ":memory:" and not database.startswith("file:") else None
    )
    queue = _WRITE_QUEUES[dialect] = WriteQueue(SQLITE_BUSY_TIMEOUT_MS / 1000, lock_path)
    checkpointer = _CHECKPOINTERS[dialect] = WalCheckpointer(database) if database and lock_path else None
    do_commit, do_rollback, do_close = dialect.do_commit, dialect.do_rollback, dialect.do_close

    commits = itertools.count(1)

    def commit(dbapi_connection):
        try:
            do_commit(dbapi_connection)
        finally:
            wrote = queue.release(dbapi_connection)
        if wrote and next(commits) % SQLITE_CHECKPOINT_EVERY == 0:
            if checkpointer is not None:
                checkpointer.request()
                return
            try:  # no file path (in-memory, URI): here, outside the queue
                _raw(dbapi_connection).execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
            except Exception:  # noqa: BLE001, S110 - a checkpoint is housekeeping; the next one retries
                pass

    def rollback(dbapi_connection):
        try:
            do_rollback(dbapi_connection)
        finally:
            queue.release(dbapi_connection)

    def close(dbapi_connection):
        try:
            do_close(dbapi_connection)
        finally:
            queue.release(dbapi_connection)

    # This engine's dialect only: its bound methods replaced on the instance.
    for name, wrapped in (("do_commit", commit), ("do_rollback", rollback), ("do_close", close)):
        setattr(dialect, name, wrapped)


def mark_read_only() -> None:
    """This request only reads: on SQLite its transactions do not take the write lock;
    on PostgreSQL ``connection()`` runs it in autocommit."""
    g.jndlab_read_only = True


def _pg_on_connect(dbapi_connection, _record) -> None:
    # Session-level settings (SQLAlchemy's pool resets with ROLLBACK, which keeps them).
    autocommit = dbapi_connection.autocommit
    dbapi_connection.autocommit = True
    try:
        with dbapi_connection.cursor() as cursor:
            cursor.execute(f"SET lock_timeout = {int(PG_LOCK_TIMEOUT_MS)}")
            cursor.execute(f"SET statement_timeout = {int(PG_STATEMENT_TIMEOUT_MS)}")
    finally:
        dbapi_connection.autocommit = autocommit


def _sqlite_on_dispose(engine: Engine) -> None:
    # A checkpoint in flight keeps its connection open, so the pool's last close neither
    # checkpoints nor removes the WAL; once it ends, its own close does. Callers copy the
    # file right after dispose() (tests/listening_test/conftest.py, backups).
    checkpointer = wal_checkpointer(engine)
    if checkpointer is not None:
        checkpointer.wait_idle()


def configure_engine(engine: Engine) -> None:
    """Attach the backend-specific hooks to ``engine`` (idempotent)."""
    if engine.dialect.name == "postgresql":
        if not event.contains(engine, "connect", _pg_on_connect):
            event.listen(engine, "connect", _pg_on_connect)
            engine.dispose()  # connections opened before the hook lack the settings
        return
    if engine.dialect.name != "sqlite":
        return
    if not event.contains(engine, "connect", _sqlite_on_connect):
        _install_write_queue(engine)
        event.listen(engine, "connect", _sqlite_on_connect)
        event.listen(engine, "begin", _sqlite_on_begin)
        event.listen(engine, "engine_disposed", _sqlite_on_dispose)
        engine.dispose()  # connections opened before the hook lack the pragmas


def _end_request(_error=None) -> None:
    # A request's read-only mark and cached connection end with it, even when the app
    # context outlives the request (a test that pushed one): a later write must not run
    # on a read-only (SQLite: deferred; PostgreSQL: autocommit) connection.
    # Writes still deferred here were never committed (an error came first): dropped.
    g.pop("jndlab_conn", None)
    g.pop("jndlab_deferred", None)
    if g.pop("jndlab_read_only", False):
        db.session.remove()


def _before_commit(_session) -> None:
    # A plain db.session.commit() still sends the deferred writes, in its transaction.
    if has_app_context() and g.get("jndlab_deferred"):
        _send_deferred(commit=False)


def pool_options(url: str, pool_size: int, poolclass: type | None = None) -> dict[str, int]:
    """Connection-pool settings for ``url``: ``pool_size`` kept-open connections per
    process, as many again allowed beyond them. Empty where SQLAlchemy would not use a
    QueuePool (an in-memory SQLite database keeps one connection per thread), or where
    ``poolclass`` (an app's own choice) is not one (NullPool, StaticPool: they take no sizes).

    SQLAlchemy's default (5, and 10 more that are closed after use) is smaller than a
    gunicorn worker's threads (``serve``: 8): at 6-8 requests at once a thread finds the
    pool empty, opens a connection (on PostgreSQL a new server process plus our
    session settings, several ms on that answer's path) and closes it after the request.
    Keep ``DATABASE_POOL_SIZE`` at least the threads per worker; a connection opens
    only when a thread first needs it, so a larger pool costs nothing when idle.

    Raises:
        ConfigError: ``url`` is not a database URL, or names a database SQLAlchemy does not know
            (the message names ``DATABASE_URL`` and never includes a password).
    """
    from sqlalchemy.engine import make_url
    from sqlalchemy.pool import QueuePool

    try:
        parsed = make_url(url)
    except sa_exc.ArgumentError:
        raise ConfigError(
            "DATABASE_URL is not a database URL: expected sqlite:////absolute/path.sqlite "
            "or postgresql+psycopg://user:password@host/database"
        ) from None
    try:
        dialect = parsed.get_dialect()
    except sa_exc.NoSuchModuleError:
        hint = " (PostgreSQL is postgresql+psycopg://)" if parsed.drivername.startswith("postgres") else ""
        raise ConfigError(f"DATABASE_URL names an unknown database {parsed.drivername!r}{hint}") from None
    if poolclass is None:
        get_pool_class = getattr(dialect, "get_pool_class", None)  # DefaultDialect's classmethod
        poolclass = get_pool_class(parsed) if get_pool_class is not None else None
    if poolclass is None or not issubclass(poolclass, QueuePool):
        return {}
    return {"pool_size": pool_size, "max_overflow": pool_size}


def init_db(app: Flask) -> None:
    """Set up ``db`` and Flask-Migrate on ``app`` and configure its engine.

    Raises:
        ConfigError: the database URL is not usable (``pool_options``).
    """
    from sqlalchemy.orm import Session as OrmSession

    if not event.contains(OrmSession, "before_commit", _before_commit):
        event.listen(OrmSession, "before_commit", _before_commit)
    options = dict(app.config.get("SQLALCHEMY_ENGINE_OPTIONS") or {})
    pool_size = app.config.get("DATABASE_POOL_SIZE", DEFAULT_DATABASE_POOL_SIZE)
    sizes = pool_options(app.config["SQLALCHEMY_DATABASE_URI"], pool_size, options.get("poolclass"))
    if "pool" not in options and "creator" not in options:  # an app's own pool or connections: its own sizes
        for key, value in sizes.items():
            options.setdefault(key, value)  # an app's own engine options win
    app.config["SQLALCHEMY_ENGINE_OPTIONS"] = options
    db.init_app(app)
    app.teardown_request(_end_request)
    migrate.init_app(app, db, directory=app.config["MIGRATIONS_DIR"])
    with app.app_context():
        configure_engine(db.engine)


def is_postgres() -> bool:
    return db.engine.dialect.name == "postgresql"


def connection():
    """The request's connection (``db.session.connection()``), looked up once per transaction.

    The hot path runs Core statements on it; after a commit or rollback the session
    closes it, and the next call opens the session's new transaction. Writes deferred
    with ``defer_write`` are sent first (one round trip), so whatever runs next sees them.
    """
    if g.get("jndlab_deferred"):
        _send_deferred(commit=False)
    return _connection()


def _connection():
    conn = g.get("jndlab_conn")
    if conn is None or conn.closed:
        if g.get("jndlab_read_only") and db.engine.dialect.name == "postgresql":
            # A read-only request on PostgreSQL: autocommit, each statement its own
            # snapshot, no BEGIN/ROLLBACK round trips (the GET is a single SELECT).
            conn = db.session.connection(execution_options={"isolation_level": "AUTOCOMMIT"})
        else:
            conn = db.session.connection()
        g.jndlab_conn = conn
    return conn


# --- PostgreSQL round trips (issue 18) ---------------------------------------------------


def _wrap_driver_error(
    conn, error: Exception, statement: str, params, ismulti: bool | None = None
) -> sa_exc.StatementError:
    """The SQLAlchemy exception SQLAlchemy itself would raise for a driver (psycopg, sqlite3)
    ``error`` (IntegrityError, OperationalError, ...), its parameters shown or hidden as the
    engine's ``hide_parameters`` says; a lost connection is invalidated, so that
    ``security.transient_database_fault`` answers 503 and the pool drops it."""
    dialect = conn.dialect
    try:
        invalidated = bool(dialect.is_disconnect(error, conn.connection.dbapi_connection, None))
    except Exception:  # noqa: BLE001 - classification only; keep the original error
        invalidated = False
    wrapped = sa_exc.DBAPIError.instance(
        statement,
        params,
        error,
        dialect.loaded_dbapi.Error,
        hide_parameters=conn.engine.hide_parameters,  # an engine's hide_parameters=True keeps values out of logs
        connection_invalidated=invalidated,
        dialect=dialect,
        ismulti=ismulti,
    )
    if invalidated:
        conn.invalidate(error)
    return wrapped


_BEGIN = "BEGIN ISOLATION LEVEL READ COMMITTED"


def pg_pipeline_fetch(*statements_and_params, commit: bool = False) -> list[list[tuple]]:
    """PostgreSQL: run SELECTs (``(statement, params)`` pairs; module-level Core
    statements, compiled once by ``_prepared`` as the writes are) in one round trip, in
    order, each in its own snapshot;
    return each one's rows as tuples. Columns must need no SQLAlchemy result processing
    (integers, text, booleans, floats, JSON: psycopg decodes these itself).

    Where something set up needs SQLAlchemy's execution of each statement
    (``_needs_sqlalchemy_execution``: query recording, statement logging) they run through
    ``Connection.execute`` one by one instead, in the request's transaction.

    As the request's first statements they also open its transaction, with a BEGIN that
    travels in the same round trip: psycopg's own implicit BEGIN would wait for its reply
    (a round trip of its own), so the connection is checked out in psycopg's autocommit
    mode and the BEGIN (READ COMMITTED) is ours. The transaction ends as any other:
    ``commit()``, or the rollback when the request ends without one; ``commit=True``
    ends it with these reads (a request that turned out to write nothing).

    Raises:
        sqlalchemy.exc.DBAPIError: as ``Connection.execute`` would.
        sqlalchemy.exc.StatementError: a missing parameter.
        ValueError: a SELECT that needs SQLAlchemy's own execution (expanding parameters,
            text columns: ``_prepared``); none of the answer path's does.
    """
    import psycopg

    if _needs_sqlalchemy_execution(db.engine):
        # Something set up needs SQLAlchemy's execution of every statement (query recording,
        # logging): the same statements in the same order and transaction, a round trip each.
        conn = connection()
        rows = [[tuple(row) for row in conn.execute(statement, params)] for statement, params in statements_and_params]
        if commit:
            db.session.commit()
        return rows
    conn = g.get("jndlab_conn")
    begin = (conn is None or conn.closed) and not db.session().in_transaction() and not g.get("jndlab_read_only")
    if begin:
        conn = g.jndlab_conn = db.session.connection(execution_options={"isolation_level": "AUTOCOMMIT"})
    else:
        conn = connection()
    raw = conn.connection.driver_connection
    cursors, text = [], ""
    try:
        with raw.pipeline():
            if begin:
                text = _BEGIN
                raw.cursor().execute(_BEGIN)
            for statement, params in statements_and_params:
                prepared = _prepared(statement, conn.dialect, tuple(params), False)
                if prepared is None:
                    raise ValueError(f"pg_pipeline_fetch cannot send this SELECT itself (see _prepared): {statement}")
                text = prepared.sql
                cursor = raw.cursor()
                cursor.execute(text, _driver_params(prepared, params))
                cursors.append(cursor)
            if commit:
                text = "COMMIT"
                raw.cursor().execute("COMMIT")
        return [cursor.fetchall() for cursor in cursors]
    except psycopg.Error as error:
        raise _wrap_driver_error(conn, error, text, None) from error
    finally:
        for cursor in cursors:
            cursor.close()


# --- writes without SQLAlchemy's per-statement compile step (issue 18) --------------------


class _Prepared(NamedTuple):
    """A Core INSERT/UPDATE/SELECT compiled once for a dialect and a set of parameter names."""

    sql: str
    compiled: Any
    processors: dict[str, Any]  # bind name -> the type's bind processor (JSON, datetime, bool)
    positions: tuple[str, ...] | None  # qmark/numeric dialects: bind names in order; None: by name
    defaults: tuple[tuple[str, Any], ...]  # (bind name, scalar value or zero-argument callable)
    results: tuple[Any, ...] = ()  # a SELECT: each column's result processor (JSON, bool, datetime) or None


# (id(statement), id(dialect), keys, executemany) -> (statement, dialect, prepared or None).
# The entry holds the statement and the dialect (an engine's: its JSON serializer shapes
# the bind processors), so neither id can be reused by another object while cached;
# bounded, for callers that build statements (or engines) per call.
_PREPARED: dict[tuple[int, int, tuple[str, ...], bool], tuple[Any, Dialect, _Prepared | None]] = {}
_PREPARED_MAX = 512


def _prepared(statement, dialect: Dialect, keys: tuple[str, ...], many: bool) -> _Prepared | None:
    """``statement`` (an INSERT, UPDATE or SELECT) compiled for ``dialect`` with parameters
    ``keys``, as SQLAlchemy compiles it at execution, kept per statement object; None where
    SQLAlchemy's own execution is needed (expanding or literal parameters, RETURNING,
    SQL-expression or context-taking Python defaults; a SELECT whose result columns are not
    the cursor's one for one)."""
    key = (id(statement), id(dialect), keys, many)
    found = _PREPARED.get(key)
    if found is not None and found[0] is statement and found[1] is dialect:
        return found[2]
    compiled = statement.compile(dialect=dialect, column_keys=list(keys), for_executemany=many)
    prepared: _Prepared | None = None
    supported = not (compiled.literal_execute_params or compiled.post_compile_params or compiled.effective_returning)
    defaults: list[tuple[str, Any]] = []
    for column, default in [(c, c.default) for c in compiled.insert_prefetch] + [
        (c, c.onupdate) for c in compiled.update_prefetch
    ]:
        if default is not None and default.is_scalar:
            defaults.append((compiled._within_exec_param_key_getter(column), default.arg))
        elif default is not None and default.is_callable and default.arg is not default._fn:
            # SQLAlchemy wraps a zero-argument callable (utcnow, dict, list) so; one that
            # takes the execution context needs SQLAlchemy's execution.
            defaults.append((compiled._within_exec_param_key_getter(column), default._fn))
        else:
            supported = False
    if supported:
        positions = tuple(compiled.positiontup) if compiled.positional else None
        results = ()
        if getattr(statement, "is_select", False):
            # What SQLAlchemy's result applies to each column, by the column's type, in the
            # compiled statement's result columns (SQLAlchemy's own map). Only where they are
            # the cursor's columns one for one: a "*" or text() column makes SQLAlchemy match
            # the cursor's columns by name instead (``fetch_all`` then hands it the SELECT).
            # Only SQLite's rows are processed here (``fetch_all``): psycopg decodes its own
            # (``pg_pipeline_fetch``), and PostgreSQL's processors need the cursor's column types.
            if not compiled._ordered_columns or (
                compiled._textual_ordered_columns or compiled._loose_column_name_matching
            ):
                supported = False
            elif dialect.name == "sqlite":
                results = tuple(
                    entry.type.dialect_impl(dialect).result_processor(dialect, None)
                    for entry in compiled._result_columns
                )
    if supported:
        prepared = _Prepared(
            str(compiled), compiled, dict(compiled._bind_processors), positions, tuple(defaults), results
        )
    if len(_PREPARED) >= _PREPARED_MAX:
        _PREPARED.clear()
    _PREPARED[key] = (statement, dialect, prepared)
    return prepared


def _driver_params(prepared: _Prepared, params: dict[str, Any]) -> Any:
    """What the driver takes for one row of ``params``: SQLAlchemy's own steps (bound
    names, Python-side defaults, bind processors), without its per-execution objects.

    Raises:
        sqlalchemy.exc.StatementError: a value a bind processor refuses (a Boolean 2, a set
            for JSON) or a missing parameter, wrapped as SQLAlchemy wraps them.
    """
    try:
        values = prepared.compiled.construct_params(params)
        for name, default in prepared.defaults:
            values[name] = default() if callable(default) else default
        for name, process in prepared.processors.items():
            if name in values:
                values[name] = process(values[name])
    except Exception as error:  # noqa: BLE001 - re-raised as SQLAlchemy's own execution raises it
        raise sa_exc.StatementError(str(error), prepared.sql, params, error) from error
    if prepared.positions is None:
        return values
    return tuple(values[name] for name in prepared.positions)


def _rows_params(prepared: _Prepared, rows: list[dict[str, Any]]) -> Any:
    """``_driver_params`` of one row, or a list of them (executemany)."""
    if len(rows) == 1:
        return _driver_params(prepared, rows[0])
    return [_driver_params(prepared, row) for row in rows]


class WriteResult(NamedTuple):
    """What ``execute_write`` returns where it ran the write on the driver itself (SQLite):
    the DBAPI cursor's ``rowcount`` and ``lastrowid``, as ``CursorResult`` has them."""

    rowcount: int
    lastrowid: int | None


def execute_write(statement, params, conn=None):
    """Run a Core INSERT/UPDATE (no RETURNING) on ``conn`` (default: the request's
    connection, as ``connection()``) and return its ``rowcount`` and, on SQLite,
    ``lastrowid`` (a ``CursorResult``, or a ``WriteResult`` where the write went to the
    driver). ``params``: a dict, or a non-empty list of dicts with the same keys
    (executemany).

    Same SQL, parameters, defaults, ``before_cursor_execute`` listeners and errors as
    ``conn.execute`` (SQLAlchemy compiles the statement the same way; driver errors come
    back wrapped, e.g. IntegrityError), but compiled once per statement and key set
    instead of SQLAlchemy's cache-key walk on every execution: about half of Core's
    per-statement CPU on the answer path (benchmarks/answer_path_cpu.py). On SQLite in
    a begun transaction the write goes straight to sqlite3's cursor unless something set
    up needs SQLAlchemy's execution (``_straight_to_sqlite``); otherwise through
    ``exec_driver_sql``. Statements that need more of SQLAlchemy (see ``_prepared``) go
    through ``conn.execute``.

    Raises:
        sqlalchemy.exc.DBAPIError: a driver error (IntegrityError, ...), as ``Connection.execute`` raises it.
        sqlalchemy.exc.StatementError: a value the column's type refuses, or a missing parameter.
        sqlalchemy.exc.PendingRollbackError: SQLite rolled the transaction back itself after an
            earlier error (interrupted, disk full), where ``conn.execute`` would have committed
            this write on its own (the engine's ``isolation_level = None``).
        ValueError: ``params`` is an empty list.
    """
    if conn is None:
        conn = connection()
    rows = params if isinstance(params, list) else [params]
    if not rows:
        raise ValueError("execute_write needs at least one row of parameters (got an empty list)")
    many = len(rows) > 1
    prepared = _prepared(statement, conn.dialect, tuple(rows[0]), many)
    if prepared is None:
        return conn.execute(statement, params)
    driver_params = _rows_params(prepared, rows)
    if not _straight_to_sqlite(conn, many):
        # Not SQLite, no transaction begun yet (SQLAlchemy begins one), or someone
        # listening needs SQLAlchemy's execution (_straight_to_sqlite).
        return conn.exec_driver_sql(prepared.sql, driver_params)
    # SQLite inside the request's transaction: straight to sqlite3, as the PostgreSQL
    # writes go straight to psycopg. SQLAlchemy's execution context around a write cost
    # about twice sqlite3's own work (issue 18: 31 against 9 us a statement under
    # cProfile, benchmarks/answer_path_cpu.py); listeners and errors are kept (_announce,
    # _wrap_driver_error).
    raw = conn.connection.driver_connection
    if raw.isolation_level is None and not raw.in_transaction and not conn._is_autocommit_isolation():
        # SQLAlchemy's transaction is open but SQLite's is not: SQLite rolled it back itself
        # on an earlier error (an interrupted write, a full disk). This write would commit
        # on its own (autocommit) and outlive the request's rollback.
        raise sa_exc.PendingRollbackError(
            "SQLite rolled back this transaction after an earlier error; roll back before writing again"
        )
    cursor = raw.cursor()
    try:
        sql, driver_params = _announce(conn, cursor, prepared.sql, driver_params, many)
        try:
            if many:
                cursor.executemany(sql, driver_params)
            else:
                cursor.execute(sql, driver_params)
        except sqlite3.Error as error:
            raise _wrap_driver_error(conn, error, sql, driver_params, many) from error
        return WriteResult(cursor.rowcount, cursor.lastrowid)
    finally:
        cursor.close()


def _needs_sqlalchemy_execution(bind, many: bool | None = None) -> bool:
    """Whether something set up on ``bind`` (an Engine or a Connection) needs SQLAlchemy's
    own execution of each statement, so that no statement may go straight to the driver
    (the SQLite driver path, PostgreSQL's pipeline): statement logging (``echo``, the
    ``sqlalchemy.engine`` logger at INFO), ``after_cursor_execute`` listeners, or the
    dialect's ``handle_error`` and ``do_execute``/``do_executemany`` hooks (``many``: which
    of the two; None: either). ``before_cursor_execute`` listeners alone are run for the
    driver path (``_announce``, with ``context`` None), but one paired with an
    ``after_cursor_execute`` listener keeps its state on the execution context
    (Flask-SQLAlchemy's ``SQLALCHEMY_RECORD_QUERIES``, tracing integrations): given None it
    raised AttributeError on every statement. The app's own engines have none of these."""
    echo = bind._echo if hasattr(bind, "_echo") else bind._should_log_info()
    hooks = bind.dialect.dispatch
    if many is None:
        execute_hooks = hooks.do_execute or hooks.do_executemany
    else:
        execute_hooks = hooks.do_executemany if many else hooks.do_execute
    return bool(echo or bind.dispatch.after_cursor_execute or hooks.handle_error or execute_hooks)


def _straight_to_sqlite(conn, many: bool) -> bool:
    """Whether ``execute_write`` and ``fetch_all`` may send a statement on ``conn`` straight
    to sqlite3: SQLite, in a begun transaction, and nothing set up that needs SQLAlchemy's
    execution (``_needs_sqlalchemy_execution``). The checks cost about 0.7 us a statement
    (timeit: a one-row UPDATE 4.06 -> 4.74 us, the answer's SELECT 9.23 -> 9.97 us),
    against the 0.15 ms an answer that the driver path saves (d51a36e)."""
    if conn.dialect.name != "sqlite" or not conn.in_transaction():
        return False
    return not _needs_sqlalchemy_execution(conn, many)


def fetch_all(statement, params: dict[str, Any], conn=None) -> list[tuple]:
    """The rows of a Core SELECT on ``conn`` (default: the request's connection, as
    ``connection()``), as tuples of the values ``Connection.execute`` would give (each
    column's type processes it: JSON decoded, SQLite's 0/1 as booleans).

    On SQLite in a begun transaction the SELECT goes straight to sqlite3's cursor,
    compiled once (as ``execute_write``): SQLAlchemy's execution and result objects cost
    about as much CPU as the answer's whole read otherwise (issue 18). Elsewhere, where
    something set up needs SQLAlchemy's execution (``_straight_to_sqlite``), and for
    statements that need it (see ``_prepared``), ``conn.execute``.

    Raises:
        sqlalchemy.exc.DBAPIError: a driver error, as ``Connection.execute`` raises it.
        sqlalchemy.exc.StatementError: a missing parameter.
    """
    if conn is None:
        conn = connection()
    prepared = None
    if _straight_to_sqlite(conn, False):
        prepared = _prepared(statement, conn.dialect, tuple(params), False)
    if prepared is None:
        return [tuple(row) for row in conn.execute(statement, params)]
    cursor = conn.connection.driver_connection.cursor()
    try:
        sql, driver_params = _announce(conn, cursor, prepared.sql, _driver_params(prepared, params), False)
        try:
            rows = cursor.execute(sql, driver_params).fetchall()
        except sqlite3.Error as error:
            raise _wrap_driver_error(conn, error, sql, driver_params, False) from error
    finally:
        cursor.close()
    processors = prepared.results
    if not any(processors):
        return rows
    if rows and len(rows[0]) != len(processors):
        # A literal_column("a, b") is one result column to the compiler but two to the
        # cursor; SQLAlchemy then matches the columns by name: let it (the same snapshot).
        return [tuple(row) for row in conn.execute(statement, params)]
    return [
        tuple(value if process is None else process(value) for process, value in zip(processors, row, strict=True))
        for row in rows
    ]


def insert_row_id(statement, values: dict[str, Any]) -> int:
    """INSERT one row on the request's connection and return its new integer primary key
    (SQLite: the cursor's lastrowid, as SQLAlchemy itself reads it there; elsewhere
    ``inserted_primary_key``, which needs SQLAlchemy's RETURNING)."""
    conn = connection()
    if conn.dialect.name == "sqlite":
        return int(execute_write(statement, values, conn).lastrowid)
    return int(conn.execute(statement, values).inserted_primary_key[0])


def defers_writes() -> bool:
    """Whether ``defer_write`` keeps writes back (PostgreSQL) or runs them at once (SQLite)."""
    return is_postgres()


def defer_write(statement, params) -> None:
    """Run a write (INSERT/UPDATE without RETURNING) in this request's transaction; on
    PostgreSQL not now but with the next ``connection()`` use or ``commit()``, in one
    pipeline. Its errors (IntegrityError, ...) are raised there. ``params``: a dict, or
    a list of dicts (executemany; an empty list writes nothing)."""
    if isinstance(params, list) and not params:
        return
    if not defers_writes():
        execute_write(statement, params, _connection())
        return
    g.setdefault("jndlab_deferred", []).append((statement, params))


def _announce(conn, cursor, sql: str, params: Any, many: bool) -> tuple[str, Any]:
    """Run SQLAlchemy's ``before_cursor_execute`` listeners (statement counts, tracing) for a
    statement sent straight to the driver (psycopg, sqlite3), as ``Connection.execute`` would, and return the
    statement and parameters they hand back (listeners with ``retval=True`` may change
    them; SQLAlchemy wraps the others to return them unchanged). ``context`` is None."""
    for listener in conn.dispatch.before_cursor_execute:
        sql, params = listener(conn, cursor, sql, params, None, many)
    return sql, params


def _send_deferred(*, commit: bool) -> None:
    import psycopg

    writes = g.pop("jndlab_deferred", None) or []
    conn = _connection()
    if _needs_sqlalchemy_execution(conn):
        # As in pg_pipeline_fetch: SQLAlchemy executes each write, a round trip each; the
        # caller's Session.commit (commit()) then sends the COMMIT.
        for statement, params in writes:
            conn.execute(statement, params)
        return
    raw = conn.connection.driver_connection
    statement = None
    try:
        with raw.pipeline():
            for statement, params in writes:
                rows = params if isinstance(params, list) else [params]
                prepared = _prepared(statement, conn.dialect, tuple(rows[0]), len(rows) > 1)
                if prepared is None:
                    conn.execute(statement, params)
                    continue
                # Straight to psycopg, as pg_pipeline_fetch's reads: SQLAlchemy's execution
                # context around each write cost as much CPU as psycopg's own work (issue 18).
                # Errors still come back as SQLAlchemy's (below).
                cursor = raw.cursor()
                sql, driver_params = _announce(conn, cursor, prepared.sql, _rows_params(prepared, rows), len(rows) > 1)
                if len(rows) > 1:
                    cursor.executemany(sql, driver_params)
                else:
                    cursor.execute(sql, driver_params)
            if commit:
                # A statement, not raw.commit(), which in a pipeline waits for its own reply;
                # SQLAlchemy's commit then finds the connection idle and sends nothing.
                statement = "COMMIT"
                raw.cursor().execute("COMMIT")
    except psycopg.Error as error:
        raise _wrap_driver_error(conn, error, str(statement), None) from error


def commit() -> None:
    """Commit the request's transaction; on PostgreSQL with its deferred writes, in one round trip.

    Raises:
        sqlalchemy.exc.IntegrityError: a deferred write broke a constraint (nothing is stored).
        sqlalchemy.exc.DBAPIError: other database errors, as ``Session.commit`` raises them.
    """
    if g.get("jndlab_deferred"):
        if db.session.new or db.session.dirty or db.session.deleted:
            db.session.flush()  # ORM changes join the same transaction, before the COMMIT
        _send_deferred(commit=True)
    db.session.commit()
