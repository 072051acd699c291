"""Regression tests for the core review's findings (items 1-4, 6, 7, 9 and 14 of the review):
deferred release after client backpressure, the pipeline counter wrapping, extended-protocol
COPY, a bare Flush from an idle client, query_timeout at the start of an extended batch, SET
literals with backslashes, server reuse in session mode, and late server messages after the
releasing ReadyForQuery.

Unless stated otherwise every test runs in transaction mode with one server in the pool, so a
server that is never released, or that carries one client's bytes to the next, shows at once.
Every read has a deadline: a regression fails the test, it never hangs it."""

import asyncio
import shutil
import socket
import tempfile
import threading
import time
from pathlib import Path

import rawpg
from pgharness import Skip, TEST_USER, run_async, timeout, wait_for

TX1 = {"pool_mode": "transaction", "default_pool_size": 1}

READY_IDLE = b"Z\x00\x00\x00\x05I"


def _unix_path(px):
    """The pooler's Unix socket (the harness puts it in the instance's directory); through a
    short symlink when the path is too long for sun_path."""
    path = Path(px.dir) / f".s.PGSQL.{px.port}"
    wait_for(path.exists, 10, what=f"Unix socket {path}")
    if len(str(path)) <= 100:
        return str(path)
    if not getattr(px, "_rr_link", None):
        tmp = Path(tempfile.mkdtemp(prefix="rr"))
        (tmp / "d").symlink_to(px.dir)
        px._rr_link = tmp
    return str(px._rr_link / "d" / path.name)


def _unix(px, db, **kw):
    return rawpg.RawConn.unix(_unix_path(px), db, TEST_USER, **kw)


def _pgmux(env, db, settings=None):
    px = env.pgmux([db], settings or TX1)
    env.on_cleanup(lambda: getattr(px, "_rr_link", None) and shutil.rmtree(px._rr_link))
    return px


def _tcp(px, db, **kw):
    return rawpg.RawConn.tcp(px.port, db, TEST_USER, **kw)


def _served(px, db, tag, wait=3.0):
    """A fresh client runs one query; returns its rows (raises socket.timeout if no server)."""
    with _tcp(px, db) as b:
        msgs = b.query(f"select '{tag}'", timeout=wait)
        assert not rawpg.errors(msgs), rawpg.errors(msgs)
        return rawpg.rows(msgs)


def _assert_served(px, db, tag, wait=3.0, why=""):
    try:
        got = _served(px, db, tag, wait)
    except socket.timeout:
        raise AssertionError(f"B got no server within {wait}s: {why}") from None
    assert got == [(tag,)], f"B did not get its own result: {got!r}"


# ----------------------------------------------------------------------------------------------
# 1. Deferred release after client backpressure
#
# The state that needs care: the pooler has parsed the server's releasing ReadyForQuery, but
# could not pass it on because the client's socket was full.  To get there, client A (on the
# Unix socket, whose buffer is a fixed size) sends one simple query whose first part (50 KB of
# rows plus one row of `k` bytes) is flushed by the server at a NOTICE, and whose small tail
# (with the ReadyForQuery) comes 0.25 s later; A reads nothing.  Then A's socket holds
#   everything:                  k is too small (the tail fitted),
#   all but the tail:            the state we want (the tail met a full socket),
#   less than the first part:    k is too large (the first part already overflowed).
# A binary search over k finds the middle case in a few tries.

def _phased_sql(k):
    return ("select repeat('x', 1000) from generate_series(1, 50); "
            f"select repeat('z', {k}) || ' A-BIG-ROW'; "
            "do $$ begin raise notice 'first part done'; perform pg_sleep(0.25); end $$; "
            "select 'A-tail'")


def _check_phased(msgs, k):
    assert not rawpg.errors(msgs), rawpg.errors(msgs)
    got = rawpg.rows(msgs)
    assert len(got) == 52 and got[0] == ("x" * 1000,) and got[50] == ("z" * k + " A-BIG-ROW",) \
        and got[51] == ("A-tail",), f"A's result is wrong: {len(got)} rows"
    assert msgs[-1] == (b"Z", b"I"), msgs[-1]


def _stable_inq(a, settle=0.15, limit=3.0):
    deadline = time.monotonic() + limit
    last = a.inq()
    while time.monotonic() < deadline:
        time.sleep(settle)
        now = a.inq()
        if now == last:
            return now
        last = now
    return last


def _reach_unflushed_ready(px, db, probes=16):
    """Returns (A, k): A on the Unix socket, with its result sent except the tail, which the
    pooler holds (parsed, ReadyForQuery included) because A's socket is full."""
    a = _unix(px, db)
    k0 = 1000
    before = a.nread
    msgs = a.query(_phased_sql(k0), timeout=10)
    _check_phased(msgs, k0)
    total0 = a.nread - before
    notice = max(i for i, (t, _) in enumerate(msgs) if t == b"N")
    tail_len = sum(5 + len(b) for _, b in msgs[notice + 1:])
    lo, hi = 0, 400_000
    for _ in range(probes):
        k = (lo + hi) // 2
        total = total0 + k - k0
        a.send(rawpg.query(_phased_sql(k)))
        time.sleep(0.45)
        undelivered = total - _stable_inq(a)
        if undelivered == tail_len:
            return a, k
        _check_phased(a.read_until_ready(timeout=10), k)
        if undelivered == 0:
            lo = k
        else:
            hi = k
    a.close()
    raise Skip("could not make the tail of a result meet a full Unix socket "
               f"(searched k in [{lo}, {hi}])")


@timeout(40)
def test_release_after_backpressure(env):
    db = env.database()
    px = _pgmux(env, db)
    a, k = _reach_unflushed_ready(px, db)
    # A now drains its result and stays idle, outside any transaction
    _check_phased(a.read_until_ready(timeout=5), k)
    time.sleep(0.2)
    _assert_served(px, db, "B-own-row", why="idle client A still holds the only server")
    # and A is still a working client
    assert a.query_rows("select 'A-again'") == [("A-again",)]
    a.close()


@timeout(40)
def test_release_after_backpressure_disconnect(env):
    db = env.database()
    px = _pgmux(env, db)
    a, _ = _reach_unflushed_ready(px, db)
    a.close()   # A leaves without reading the end of its result
    time.sleep(0.3)
    _assert_served(px, db, "B-own-row",
                   why="the server of a client that left with unread bytes was lost")
    _assert_served(px, db, "B-again")


@timeout(40)
def test_release_after_backpressure_no_leak(env):
    db = env.database()
    px = _pgmux(env, db)
    a, k = _reach_unflushed_ready(px, db)
    _check_phased(a.read_until_ready(timeout=5), k)
    time.sleep(0.1)
    probe_ok = True
    with _tcp(px, db) as probe:
        try:
            probe.query("select 'probe'", timeout=1)
        except socket.timeout:
            probe_ok = False
    time.sleep(0.1)
    a.close()
    time.sleep(0.3)
    # C4 streams a result; C5 queues behind it and must get only its own rows.
    c4 = _unix(px, db)
    c5 = _unix(px, db)
    c4.send(rawpg.query("select repeat('4', 100) from generate_series(1, 300) union all "
                        "select 'C4-SECRET-' || pg_sleep(1)::text"))
    time.sleep(0.3)
    c5.send(rawpg.query("select 'C5-own-result'"))
    raw5 = c5.read_raw(6, stop=lambda d: d.endswith(READY_IDLE))
    try:
        msgs4 = c4.read_until_ready(timeout=5)
        c4_error = None
    except (socket.timeout, EOFError) as e:
        msgs4, c4_error = [], e
    assert b"C4-SECRET" not in raw5 and b"4444" not in raw5, \
        f"C4's rows were delivered to C5: {raw5[:80]!r}"
    assert b"C5-own-result" in raw5 and raw5.endswith(READY_IDLE), \
        f"C5 did not get its own result: {raw5[:80]!r}"
    assert c4_error is None, f"C4's result was cut off: {c4_error!r}"
    got4 = rawpg.rows(msgs4)
    assert len(got4) == 301 and got4[0] == ("4" * 100,) and got4[-1] == ("C4-SECRET-",), \
        f"C4 got {len(got4)} rows, last {got4[-1:]!r}"
    assert probe_ok, "a probe client got no server while A was idle"
    c4.close()
    c5.close()


# ----------------------------------------------------------------------------------------------
# 2. The in-flight request count must not wrap

@timeout(40)
def test_pipeline_count_does_not_wrap(env):
    db = env.database()
    px = _pgmux(env, db)
    a = _tcp(px, db, timeout=20)
    b = _tcp(px, db)
    n_sync = 65534   # with the two Queries: 65536 answers owed, 2**16
    payload = (rawpg.query("select pg_sleep(1)") + rawpg.query("select 'A-SECRET'")
               + rawpg.SYNC * n_sync)
    a_result = {}

    def a_side():
        # A sends its pipeline and reads all its answers (so that nothing backs up).
        try:
            a.send(payload)
            msgs = a.read_until_ready(count=n_sync + 2, timeout=20)
            a_result["rows"] = rawpg.rows(msgs)
            a_result["z"] = sum(1 for t, _ in msgs if t == b"Z")
        except Exception as e:  # noqa: BLE001
            a_result["error"] = e

    t = threading.Thread(target=a_side, daemon=True)
    t.start()
    time.sleep(0.2)
    b.send(rawpg.query("select 'B-own-row'"))
    raw = b.read_raw(8, stop=lambda d: b"B-own-row" in d and d.endswith(READY_IDLE))
    assert b"A-SECRET" not in raw, f"A's result was delivered to B: {raw[:120]!r}"
    assert b"B-own-row" in raw and raw.endswith(READY_IDLE), \
        f"B did not get its own result: {raw[:120]!r}"
    t.join(25)
    assert not t.is_alive(), "A's pipeline was not answered within 20s"
    err = a_result.get("error")
    if err is not None:
        # refusing a huge pipeline is acceptable; handing its answers to others is not
        assert isinstance(err, (EOFError, ConnectionError)), repr(err)
    else:
        assert a_result["z"] == n_sync + 2
        assert ("A-SECRET",) in a_result["rows"]
    a.close()
    b.close()


# ----------------------------------------------------------------------------------------------
# 3. COPY FROM STDIN over the extended protocol releases the server

@timeout(40)
def test_extended_copy_releases_server(env):
    db = env.database()
    env.sql(db, "CREATE TABLE copy_t (x int)")
    px = _pgmux(env, db)
    a = _tcp(px, db)
    assert a.query("begin")[-1] == (b"Z", b"T")
    # as libpq's PQexecParams sends it: Parse/Bind/Execute/Sync, data, CopyDone, Sync
    a.send(rawpg.parse("COPY copy_t FROM STDIN") + rawpg.bind() + rawpg.execute()
           + rawpg.SYNC)
    msgs = a.read_until(b"G")
    assert not rawpg.errors(msgs), rawpg.errors(msgs)
    a.send(rawpg.copy_data(b"1\n2\n3\n") + rawpg.COPY_DONE + rawpg.SYNC)
    msgs = a.read_until_ready()
    assert (b"C", b"COPY 3\0") in msgs and msgs[-1] == (b"Z", b"T"), msgs
    assert a.query("commit")[-1] == (b"Z", b"I")
    time.sleep(0.2)
    _assert_served(px, db, "B-after-copy",
                   why="a client idle after an extended-protocol COPY still holds the server")
    assert env.sql(db, "SELECT array_agg(x ORDER BY x) FROM copy_t")[0][0] == [1, 2, 3]
    assert a.query_rows("select 'A-again'") == [("A-again",)]
    a.close()


@timeout(40)
def test_asyncpg_copy_releases_server(env):
    db = env.database()
    env.sql(db, "CREATE TABLE copy_a (x int, t text)")
    px = _pgmux(env, db)
    records = [(i, f"r{i}") for i in range(1, 101)]

    async def main():
        c = await px.aconnect(db, statement_cache_size=0)
        try:
            async with c.transaction():
                await c.copy_records_to_table("copy_a", records=records)
            await asyncio.sleep(0.2)
            _assert_served(px, db, "B-after-asyncpg-copy",
                           why="an idle asyncpg connection still holds the server after COPY")
            # the asyncpg connection itself still works (simple protocol)
            await c.execute("select 1")
        finally:
            await c.close()

    run_async(main(), 30)
    assert env.sql(db, "SELECT count(*), sum(x) FROM copy_a")[0] == (100, 5050)


# ----------------------------------------------------------------------------------------------
# 4. A bare Flush from an idle client does not take a server

@timeout(30)
def test_idle_flush_does_not_pin_server(env):
    db = env.database()
    px = _pgmux(env, db)
    a = _tcp(px, db)
    a.send(rawpg.FLUSH)
    time.sleep(0.3)
    _assert_served(px, db, "B-after-flush",
                   why="a bare Flush from idle client A pinned the only server")
    # A is unaffected
    assert a.query_rows("select 'A-after-flush'") == [("A-after-flush",)]
    a.close()


# ----------------------------------------------------------------------------------------------
# 5. query_timeout counts from the start of an extended-protocol batch

@timeout(30)
def test_query_timeout_starts_at_extended_batch(env):
    db = env.database()
    px = _pgmux(env, db, dict(TX1, query_timeout=2))
    a = _tcp(px, db)
    assert a.query("begin")[-1] == (b"Z", b"T")
    assert a.query_rows("select 1") == [("1",)]
    time.sleep(3)    # idle in the transaction (no idle_transaction_timeout set)
    a.send(rawpg.parse("select 2") + rawpg.bind() + rawpg.execute() + rawpg.FLUSH)
    time.sleep(0.6)  # a pipelining driver: more work before its Sync
    a.send(rawpg.SYNC)
    try:
        msgs = a.read_until_ready(timeout=5)
    except (EOFError, ConnectionError) as e:
        raise AssertionError(f"client closed 0.6s into a batch with query_timeout = 2: {e!r}"
                             ) from None
    assert not rawpg.errors(msgs), rawpg.errors(msgs)
    assert rawpg.rows(msgs) == [("2",)] and msgs[-1] == (b"Z", b"T"), msgs
    assert a.query("commit")[-1] == (b"Z", b"I")
    a.close()


# ----------------------------------------------------------------------------------------------
# 6. Startup values with backslashes cannot escape pgmux's SET literals

@timeout(30)
def test_startup_value_with_backslash(env):
    db = env.database()
    px = _pgmux(env, db)
    scs_off = {"standard_conforming_strings": "off"}
    # a first client leaves the (only) server with standard_conforming_strings = off
    with _tcp(px, db, extra=dict(scs_off, application_name="plain")) as c1:
        assert c1.query_rows("show standard_conforming_strings") == [("off",)]
    evil = "x\\'; select 1; --"
    for name in (evil, "a\\b\\\\c'd"):
        with _tcp(px, db, extra=dict(scs_off, application_name=name)) as c2:
            assert c2.query_rows("select 'still-ok'") == [("still-ok",)]
            got = c2.query_rows("show application_name")
            assert got == [(name,)], f"application_name {name!r} became {got!r}"
            assert c2.query_rows("show standard_conforming_strings") == [("off",)]
    # with the server's default (on) as well
    with _tcp(px, db, extra={"application_name": evil}) as c3:
        got = c3.query_rows("show application_name")
        assert got == [(evil,)], f"application_name {evil!r} became {got!r}"
        assert c3.query_rows("show standard_conforming_strings") == [("on",)]


# ----------------------------------------------------------------------------------------------
# 7. Session mode: a normal disconnect returns the server to the pool, reset

@timeout(40)
def test_session_server_reused_and_reset(env):
    db = env.database()
    px = _pgmux(env, db, {"pool_mode": "session", "default_pool_size": 1})
    out = px.psql(db, "create temp table rr_tmp (x int); select pg_backend_pid()", timeout=10)
    pid1 = int(out.stdout.strip().splitlines()[-1])
    out = px.psql(db, "select pg_backend_pid() || ',' || (select count(*) from pg_class "
                      "where relname = 'rr_tmp' and relpersistence = 't')", timeout=10)
    pid2, temp_tables = map(int, out.stdout.strip().split(","))
    with px.connect(db) as c:
        pid3 = c.execute("select pg_backend_pid()").fetchone()[0]
    assert pid1 == pid2 == pid3, f"a new server for each session: {pid1}, {pid2}, {pid3}"
    assert temp_tables == 0, "the temp table of the first session survived into the second"


# ----------------------------------------------------------------------------------------------
# 8. A message the server sends after the releasing ReadyForQuery stays with nobody

@timeout(40)
def test_late_notification_not_forwarded(env):
    db = env.database()
    px = _pgmux(env, db)
    a = _unix(px, db)
    pid = int(a.query_rows("select pg_backend_pid()")[0][0])
    a.query_rows("listen rr_chan")   # the only server session now listens
    # A's result (300 KB, more than its socket holds) backs up in the pooler, which stops
    # reading the server; the backend still gets it all out into TCP and waits, idle, for
    # the next query, its ReadyForQuery unread by the pooler ...
    rows = 300
    a.send(rawpg.query(f"select repeat('x', 1000) || ' row ' || g "
                       f"from generate_series(1, {rows}) g; select 'A-tail'"))
    wait_for(lambda: env.pg.sql("select state, wait_event from pg_stat_activity "
                                "where pid = %s", (pid,)) == [("idle", "ClientRead")],
             10, what="the backend to finish sending A's result")
    # ... and is then sent a notification: on the wire it follows that ReadyForQuery, and
    # the pooler reads both at once when A drains its result
    env.sql(db, "select pg_notify('rr_chan', 'LATE-NOTE')")
    time.sleep(0.3)
    msgs = a.read_until_ready(timeout=5)
    assert len(rawpg.rows(msgs)) == rows + 1 and msgs[-1] == (b"Z", b"I")
    time.sleep(0.3)
    with _tcp(px, db) as b:
        b.send(rawpg.query("select 'B-own-row'"))
        raw = b.read_raw(4, stop=lambda d: d.endswith(READY_IDLE))
    assert b"LATE-NOTE" not in raw, f"another session's notification reached B: {raw[:120]!r}"
    assert b"B-own-row" in raw and raw.endswith(READY_IDLE), f"B's result: {raw[:120]!r}"
    a.close()
