"""Protocol coverage through pgmux: simple and extended queries, multi-statement strings, empty
queries, NOTICEs, LISTEN/NOTIFY, errors inside transactions, pipelining, psql and asyncpg."""

import datetime
import decimal
import json
import time

import psycopg
from psycopg import pq

from pgharness import run_async, timeout


def _queries(env, mode):
    db = env.database()
    px = env.pgmux([db], {"pool_mode": mode, "default_pool_size": 2})
    env.sql(db, "CREATE TABLE kv (k int PRIMARY KEY, v text)")
    c = px.connect(db)
    # simple query protocol (no parameters)
    assert c.execute("SELECT 'simple', 1::int8").fetchone() == ("simple", 1)
    # extended protocol: typed parameters, text and binary results
    ts = datetime.datetime(2024, 5, 6, 7, 8, 9, tzinfo=datetime.timezone.utc)
    row = c.execute("SELECT %s::int, %s::text, %s::numeric, %s::bytea, %s::timestamptz, "
                    "%s::jsonb, %s::int[], %s::text",
                    (42, "héllo ✓", decimal.Decimal("3.14"), b"\x00\x01\xff", ts,
                     json.dumps({"a": [1, 2]}), [1, 2, 3], None)).fetchone()
    assert row == (42, "héllo ✓", decimal.Decimal("3.14"), b"\x00\x01\xff", ts,
                   {"a": [1, 2]}, [1, 2, 3], None), row
    with c.cursor(binary=True) as cur:
        cur.execute("SELECT %b::int8 * 2, %b::text", (21, "bin"))
        assert cur.fetchone() == (42, "bin")
    # multi-statement simple query: several results in order
    cur = c.execute("INSERT INTO kv VALUES (1, 'one'); INSERT INTO kv VALUES (2, 'two'); "
                    "SELECT v FROM kv ORDER BY k; SELECT count(*) FROM kv")
    results = []
    while True:
        if cur.description:
            results.append(cur.fetchall())
        if not cur.nextset():
            break
    assert results == [[("one",), ("two",)], [(2,)]], results
    # empty queries, simple and extended
    assert c.pgconn.exec_(b"").status == pq.ExecStatus.EMPTY_QUERY
    assert c.pgconn.exec_(b"  ;  ").status == pq.ExecStatus.EMPTY_QUERY
    assert c.pgconn.exec_params(b"", []).status == pq.ExecStatus.EMPTY_QUERY
    assert c.execute("SELECT 'after empty'").fetchone()[0] == "after empty"
    # NOTICE from a DO block
    notices = []
    c.add_notice_handler(lambda d: notices.append((d.severity_nonlocalized, d.message_primary)))
    c.execute("DO $$ BEGIN RAISE NOTICE 'hello %', 6 * 7; END $$")
    assert notices == [("NOTICE", "hello 42")], notices
    # error inside a transaction, then ROLLBACK
    c.execute("BEGIN")
    c.execute("INSERT INTO kv VALUES (3, 'three')")
    try:
        c.execute("SELECT 1 / 0")
        raise AssertionError("division by zero succeeded")
    except psycopg.errors.DivisionByZero as e:
        assert e.sqlstate == "22012"
    try:
        c.execute("SELECT 1")
        raise AssertionError("aborted transaction accepted a query")
    except psycopg.errors.InFailedSqlTransaction:
        pass
    c.execute("ROLLBACK")
    assert c.execute("SELECT count(*) FROM kv").fetchone()[0] == 2
    # savepoints
    c.execute("BEGIN")
    c.execute("INSERT INTO kv VALUES (10, 'a')")
    c.execute("SAVEPOINT s1")
    try:
        c.execute("INSERT INTO kv VALUES (10, 'dup')")
    except psycopg.errors.UniqueViolation:
        c.execute("ROLLBACK TO SAVEPOINT s1")
    c.execute("INSERT INTO kv VALUES (11, 'b')")
    c.execute("COMMIT")
    assert c.execute("SELECT string_agg(v, ',' ORDER BY k) FROM kv WHERE k >= 10"
                     ).fetchone()[0] == "a,b"
    # an error outside a transaction leaves the connection usable
    try:
        c.execute("SELECT * FROM no_such_table")
    except psycopg.errors.UndefinedTable:
        pass
    assert c.execute("SELECT 'usable'").fetchone()[0] == "usable"
    # a syntax error in the extended protocol (Parse fails; Sync recovers)
    try:
        c.execute("SELEC %s", (1,))
    except psycopg.errors.SyntaxError:
        pass
    assert c.execute("SELECT %s::int + 1", (1,)).fetchone()[0] == 2
    # pipeline mode: many extended queries in flight at once
    with c.pipeline():
        curs = [c.execute("SELECT %s::int * 10", (i,)) for i in range(50)]
        c.execute("INSERT INTO kv VALUES (%s, %s)", (100, "piped"))
    assert [cu.fetchone()[0] for cu in curs] == [i * 10 for i in range(50)]
    assert env.sql1(db, "SELECT v FROM kv WHERE k = 100") == "piped"
    # explicit transaction via psycopg's transaction block, committed
    with c.transaction():
        c.execute("UPDATE kv SET v = 'uno' WHERE k = 1")
    assert env.sql1(db, "SELECT v FROM kv WHERE k = 1") == "uno"
    c.close()
    return px, db


@timeout(60)
def test_protocol_session_mode(env):
    _queries(env, "session")


@timeout(60)
def test_protocol_transaction_mode(env):
    _queries(env, "transaction")


@timeout(60)
def test_listen_notify_session_mode(env):
    db = env.database()
    px = env.pgmux([db], {"pool_mode": "session", "default_pool_size": 4})
    listener, sender = px.connect(db), px.connect(db)
    got = []
    listener.add_notify_handler(lambda n: got.append((n.channel, n.payload)))
    listener.execute("LISTEN chan_a")
    sender.execute("NOTIFY chan_a, 'first'")
    sender.execute("SELECT pg_notify('chan_a', 'second')")
    with sender.transaction():
        sender.execute("NOTIFY chan_a, 'third'")
    sender.execute("NOTIFY other_chan, 'ignored'")
    deadline = time.monotonic() + 5
    while len(got) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
        listener.execute("SELECT 1")  # notifications are read with the next result
    assert got == [("chan_a", "first"), ("chan_a", "second"), ("chan_a", "third")], got
    # a notification that arrives while the client is idle is also delivered (with psycopg's
    # notifies() generator blocking on the socket)
    sender.execute("NOTIFY chan_a, 'idle'")
    gen = listener.notifies()
    n = next(gen)
    gen.close()
    assert (n.channel, n.payload) == ("chan_a", "idle")
    listener.execute("UNLISTEN *")
    listener.close()
    sender.close()


@timeout(60)
def test_psql(env):
    db = env.database()
    px = env.pgmux([db], {"pool_mode": "transaction", "default_pool_size": 1})
    r = px.psql(db, "CREATE TABLE p (a int); INSERT INTO p SELECT generate_series(1, 100); "
                    "SELECT count(*), sum(a) FROM p")
    assert r.stdout.strip().splitlines()[-1] == "100|5050", r.stdout
    r = px.psql(db, "SELECT 1/0", check=False)
    assert r.returncode != 0 and "division by zero" in r.stderr
    r = px.psql(db, "DO $$ BEGIN RAISE NOTICE 'from psql'; END $$")
    assert "NOTICE:  from psql" in r.stderr
    r = px.psql(db, "\\echo :SERVER_VERSION_NUM")
    assert r.stdout.strip().startswith("15")


def _asyncpg(env, mode):
    db = env.database()
    # four clients: session mode needs four servers, transaction mode shares two
    px = env.pgmux([db], {"pool_mode": mode,
                          "default_pool_size": 4 if mode == "session" else 2})
    env.sql(db, "CREATE TABLE a (id int PRIMARY KEY, v text)")
    # in transaction mode asyncpg must not keep named statements (the usual pooler setting)
    kw = {"statement_cache_size": 0} if mode == "transaction" else {}

    async def go():
        conns = [await px.aconnect(db, **kw) for _ in range(4)]
        try:
            c = conns[0]
            await c.executemany("INSERT INTO a VALUES ($1, $2)",
                                [(i, f"v{i}") for i in range(200)])
            res = []
            for i, conn in enumerate(conns):
                res.append(await conn.fetchrow("SELECT count(*) AS n, max(v) AS m FROM a "
                                               "WHERE id >= $1", i))
            async with c.transaction():
                await c.execute("UPDATE a SET v = 'x' WHERE id = 0")
            try:
                await c.fetchval("SELECT 1/0")
            except Exception as e:  # noqa: BLE001
                res.append(type(e).__name__)
            res.append(await c.fetchval("SELECT v FROM a WHERE id = $1", 0))
            return res
        finally:
            for conn in conns:
                await conn.close()
    res = run_async(go(), 50)
    assert [tuple(r) for r in res[:4]] == [(200 - i, "v99") for i in range(4)], res
    assert res[4] == "DivisionByZeroError" and res[5] == "x", res


@timeout(60)
def test_asyncpg_session_mode(env):
    _asyncpg(env, "session")


@timeout(60)
def test_asyncpg_transaction_mode(env):
    _asyncpg(env, "transaction")
