"""Timeouts as PgBouncer documents them: transaction_timeout and pool_idle_timeout, the [users]
and [databases] overrides (query_timeout, query_wait_timeout, idle_transaction_timeout,
transaction_timeout, client_idle_timeout; server_lifetime and query_wait_timeout per database),
query_timeout for a client still waiting for a server, server_connect_timeout and
server_login_retry against a server that cannot be reached, server_check_query run before a
used server is handed out again, and server_tls_sslmode (set in the file or by SET).  Each timeout closes the client with a FATAL error, SQLSTATE
08P01, whose message names it."""

import socket
import threading
import time

import psycopg

from pgharness import TEST_USER, timeout, wait_for


def _fails(conn, sql, word):
    """Runs sql on conn and returns the error it must raise, naming `word`."""
    try:
        conn.execute(sql)
    except psycopg.Error as e:
        assert word in str(e), f"wanted an error naming {word!r}, got {e!r}"
        sqlstate = getattr(e, "sqlstate", None)
        assert sqlstate in (None, "08P01"), f"SQLSTATE {sqlstate!r} (want 08P01): {e!r}"
        return e
    raise AssertionError(f"{sql!r} ran although {word} should have closed the client")


def _console(px, sql):
    with psycopg.connect(px.dsn("pgmux", "postgres"), autocommit=True, connect_timeout=10) as c:
        c.execute(sql)


class _Forwarder:
    """A TCP port that forwards to PostgreSQL once started: before that, connects are refused."""

    def __init__(self, target_port):
        self.target = target_port
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        self.port = probe.getsockname()[1]
        probe.close()
        self.sock = None
        self.stop = threading.Event()

    def start(self):
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", self.port))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.stop.is_set():
            try:
                a, _ = self.sock.accept()
            except OSError:
                continue
            b = socket.create_connection(("127.0.0.1", self.target))
            for x, y in ((a, b), (b, a)):
                threading.Thread(target=self._pump, args=(x, y), daemon=True).start()

    @staticmethod
    def _pump(src, dst):
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def close(self):
        self.stop.set()
        if self.sock:
            self.sock.close()


class _Silent:
    """A TCP server that accepts and never answers: a login that hangs."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.held = []
        self.stop = threading.Event()
        self.sock.settimeout(0.2)
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.stop.is_set():
            try:
                self.held.append(self.sock.accept()[0])
            except OSError:
                continue

    def close(self):
        self.stop.set()
        for s in self.held:
            s.close()
        self.sock.close()


@timeout(60)
def test_transaction_timeout(env):
    """transaction_timeout counts from the transaction's first statement, busy or idle; a
    client between transactions is not affected.  SET changes it at run time."""
    db = env.database()
    px = env.pgmux([db], {"pool_mode": "transaction", "default_pool_size": 2,
                          "transaction_timeout": 2})
    c = px.connect(db)
    c.execute("BEGIN")
    time.sleep(1)
    assert c.execute("SELECT 'inside'").fetchone()[0] == "inside"
    time.sleep(1.8)
    _fails(c, "SELECT 'too late'", "transaction timeout")
    assert "transaction timeout" in px.log_text()
    # autocommit statements spread over longer than the timeout are fine
    with px.connect(db) as ok:
        for _ in range(3):
            assert ok.execute("SELECT 1").fetchone()[0] == 1
            time.sleep(1)
    _console(px, "SET transaction_timeout = 0")
    with px.connect(db) as ok:
        ok.execute("BEGIN")
        time.sleep(2.5)
        assert ok.execute("SELECT 'no limit'").fetchone()[0] == "no limit"
        ok.execute("COMMIT")


@timeout(60)
def test_user_timeouts_override_general(env):
    """[users] query_timeout, idle_transaction_timeout, transaction_timeout and
    client_idle_timeout apply to that user's clients only, over the general keys."""
    db = env.database()
    px = env.pgmux([db], {"pool_mode": "transaction", "default_pool_size": 3,
                          "query_timeout": 100, "idle_transaction_timeout": 100},
                   user_settings={TEST_USER: "query_timeout=1 idle_transaction_timeout=1"})
    with px.connect(db) as c:
        _fails(c, "SELECT pg_sleep(4)", "query timeout")
    with px.connect(db, user="postgres") as c:   # no [users] entry: the general 100 s
        c.execute("SELECT pg_sleep(2)")
    with px.connect(db) as c:
        c.execute("BEGIN")
        time.sleep(2.5)
        _fails(c, "SELECT 1", "idle transaction timeout")
    with px.connect(db, user="postgres") as c:
        c.execute("BEGIN")
        time.sleep(2)
        assert c.execute("SELECT 'fine'").fetchone()[0] == "fine"
        c.execute("COMMIT")

    px2 = env.pgmux([db], {"pool_mode": "transaction", "client_idle_timeout": 1000,
                           "transaction_timeout": 1000},
                    user_settings={TEST_USER: "client_idle_timeout=2 transaction_timeout=1.5"})
    with px2.connect(db) as c:
        c.execute("SELECT 1")
        time.sleep(3)
        _fails(c, "SELECT 1", "client_idle_timeout")
    with px2.connect(db) as c:
        c.execute("BEGIN")
        c.execute("SELECT pg_sleep(0.5)")
        time.sleep(1.5)
        _fails(c, "SELECT 1", "transaction timeout")
    with px2.connect(db, user="postgres") as c:
        c.execute("SELECT 1")
        time.sleep(2.5)
        assert c.execute("SELECT 'alive'").fetchone()[0] == "alive"


@timeout(60)
def test_query_wait_timeout_database_and_user(env):
    """A database entry's query_wait_timeout overrides the general one, and a [users] entry's
    wins over both."""
    db = env.database()
    entry = env.db_entry(db, pool_size=1, query_wait_timeout=1)

    def waited(px):
        holder = px.connect(db)
        holder.execute("BEGIN")
        holder.execute("SELECT 1")   # holds the only server
        t0 = time.monotonic()
        with px.connect(db) as waiter:
            _fails(waiter, "SELECT 'queued'", "query_wait_timeout")
        elapsed = time.monotonic() - t0
        holder.execute("COMMIT")
        holder.close()
        return elapsed

    px = env.pgmux({db: entry}, {"pool_mode": "transaction", "query_wait_timeout": 100})
    elapsed = waited(px)
    assert 0.8 <= elapsed <= 2.5, f"database query_wait_timeout = 1 fired after {elapsed:.1f}s"
    px2 = env.pgmux({db: entry}, {"pool_mode": "transaction", "query_wait_timeout": 100},
                    user_settings={TEST_USER: "query_wait_timeout=3"})
    elapsed = waited(px2)
    assert 2.7 <= elapsed <= 4.5, f"user query_wait_timeout = 3 fired after {elapsed:.1f}s"


@timeout(60)
def test_server_lifetime_per_database(env):
    """A database entry's server_lifetime closes its idle servers, the general one stays."""
    short, long_ = env.database("s"), env.database("l")
    px = env.pgmux({short: env.db_entry(short, server_lifetime=1), long_: env.db_entry(long_)},
                   {"pool_mode": "transaction", "server_lifetime": 3600})
    for d in (short, long_):
        with px.connect(d) as c:
            c.execute("SELECT 1")
    assert env.pg.backends(short) == 1 and env.pg.backends(long_) == 1
    wait_for(lambda: env.pg.backends(short) == 0, 5, what="the short-lived server to close")
    assert env.pg.backends(long_) == 1
    assert "server lifetime over" in px.log_text()


@timeout(60)
def test_pool_idle_timeout(env):
    """A pool with no client and no server for pool_idle_timeout leaves SHOW POOLS; the next
    login makes it again."""
    db = env.database()
    px = env.pgmux([db], {"pool_mode": "transaction", "pool_idle_timeout": 1,
                          "server_idle_timeout": 1})
    with px.connect(db) as c:
        c.execute("SELECT 1")
    assert any(r["database"] == db for r in px.show("POOLS"))
    wait_for(lambda: not any(r["database"] == db for r in px.show("POOLS")), 8,
             what="the idle pool to be freed")
    assert "cleaning up idle pool" in px.log_text()
    assert env.pg.backends(db) == 0
    assert any(r["name"] == db for r in px.show("DATABASES")), "the database went with its pool"
    with px.connect(db) as c:
        assert c.execute("SELECT 'again'").fetchone()[0] == "again"
    assert any(r["database"] == db for r in px.show("POOLS"))


@timeout(60)
def test_pool_idle_timeout_keeps_min_pool_size(env):
    """A pool that keeps min_pool_size servers is never freed for being idle."""
    db = env.database()
    px = env.pgmux({db: env.db_entry(db, min_pool_size=1)},
                   {"pool_mode": "transaction", "pool_idle_timeout": 1})
    with px.connect(db) as c:
        c.execute("SELECT 1")
    time.sleep(3)
    assert any(r["database"] == db for r in px.show("POOLS"))
    assert "cleaning up idle pool" not in px.log_text()


@timeout(60)
def test_connect_timeout_then_query_timeout(env):
    """A login that hangs is closed after server_connect_timeout ("connect timeout"); the client
    keeps waiting for the retry, and query_timeout ends its wait ("query_timeout")."""
    silent = _Silent()
    env.on_cleanup(silent.close)
    px = env.pgmux({"hang": f"host=127.0.0.1 port={silent.port} dbname=x"},
                   {"server_connect_timeout": 1, "query_timeout": 2.5,
                    "server_login_retry": 30})
    t0 = time.monotonic()
    try:
        px.connect("hang", connect_timeout=10).close()
        raise AssertionError("a client got in through a server that never answers")
    except psycopg.OperationalError as e:
        assert "query_timeout" in str(e), repr(e)
    elapsed = time.monotonic() - t0
    assert 2 <= elapsed <= 5, f"query_timeout = 2.5 fired after {elapsed:.1f}s"
    log = px.log_text()
    assert "closing because: connect timeout" in log, log[-2000:]


@timeout(60)
def test_unreachable_server_is_retried(env):
    """A server that refuses connections is tried again after server_login_retry; the client
    that was waiting gets in once it is back, while a client arriving during the retry wait is
    refused at once."""
    fwd = _Forwarder(env.pg.port)
    env.on_cleanup(fwd.close)
    db = env.database()
    px = env.pgmux({db: f"host=127.0.0.1 port={fwd.port} dbname={db}"},
                   {"server_login_retry": 2, "query_timeout": 20})
    result = {}

    def first():
        t0 = time.monotonic()
        try:
            with px.connect(db, connect_timeout=15) as c:
                result["value"] = c.execute("SELECT 'through'").fetchone()[0]
        except psycopg.Error as e:
            result["error"] = e
        result["elapsed"] = time.monotonic() - t0

    t = threading.Thread(target=first)
    t.start()
    px.wait_log("connect failed", timeout=10)
    try:   # during the retry wait a new client fails fast
        px.connect(db, connect_timeout=10).close()
        raise AssertionError("a client got in while no server could be reached")
    except psycopg.OperationalError as e:
        assert "server_login_retry" in str(e), repr(e)
    fwd.start()
    t.join(20)
    assert result.get("value") == "through", result
    assert result["elapsed"] <= 8, result


@timeout(60)
def test_server_check_query_before_reuse(env):
    """server_check_delay = 0: a used server runs server_check_query before each reuse, a fresh
    one does not; one that fails the check is replaced without the client seeing an error."""
    db = env.database()
    with env.pg.connect(db) as c:
        c.execute("CREATE SEQUENCE chk")
        c.execute("GRANT ALL ON SEQUENCE chk TO PUBLIC")

    def checks():
        with env.pg.connect(db) as c:
            return c.execute("SELECT last_value, is_called FROM chk").fetchone()

    px = env.pgmux({db: env.db_entry(db, pool_size=1)},
                   {"pool_mode": "transaction", "server_check_delay": 0,
                    "server_check_query": "SELECT nextval('chk')"})
    with px.connect(db) as c:
        pid = c.execute("SELECT pg_backend_pid()").fetchone()[0]
    assert checks() == (1, False), "a fresh server was checked"
    with px.connect(db) as c:
        assert c.execute("SELECT pg_backend_pid()").fetchone()[0] == pid
    assert checks() == (1, True), "the used server was not checked once before reuse"
    # the server dies while idle: the check fails, the client gets a new server, no error
    env.pg.sql("SELECT pg_terminate_backend(%s)", [pid])
    time.sleep(0.5)
    with px.connect(db) as c:
        new = c.execute("SELECT pg_backend_pid()").fetchone()[0]
    assert new != pid

    # a long delay: reused at once without a check
    px2 = env.pgmux({db: env.db_entry(db, pool_size=1)},
                    {"pool_mode": "transaction", "server_check_delay": 30,
                     "server_check_query": "SELECT nextval('chk')"})
    before = checks()
    for _ in range(3):
        with px2.connect(db) as c:
            c.execute("SELECT 1")
    assert checks() == before


@timeout(60)
def test_server_tls_sslmode(env):
    """server_tls_sslmode is the sslmode of entries without their own: require against a server
    without TLS refuses the login, an entry's own sslmode wins, and SET back to disable lets the
    next client in at once (no server_login_retry wait)."""
    db = env.database()
    px = env.pgmux({db: env.db_entry(db), "own": env.db_entry(db, sslmode="disable")},
                   {"server_tls_sslmode": "require", "server_login_retry": 30})
    try:
        px.connect(db).close()
        raise AssertionError("a login without TLS got through under server_tls_sslmode=require")
    except psycopg.OperationalError as e:
        assert "SSL" in str(e), repr(e)
    with px.connect("own") as c:
        assert c.execute("SELECT 'own sslmode'").fetchone()[0] == "own sslmode"
    _console(px, "SET server_tls_sslmode = disable")
    with px.connect(db) as c:
        assert c.execute("SELECT 'plain'").fetchone()[0] == "plain"
