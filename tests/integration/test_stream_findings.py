"""The pgmux bugs the stream fuzzers found (doc/reliability.md, findings 1-13), each replayed
against a real PostgreSQL through raw sockets.  tests/fuzz/crashes/ holds the fuzzers' own
reproducers (run by tests/fuzz/run.sh); these show the same defects with real servers."""

import socket
import struct
import threading
import time

import rawpg
from pgharness import TEST_USER, timeout, wait_for
from test_routing import routed, shared_setup
from test_sharding import DB as SHARD_DB, sharded_env

TX1 = {"pool_mode": "transaction", "default_pool_size": 1}


def _cstr(s):
    return (s.encode() if isinstance(s, str) else s) + b"\0"


def _parse(name, sql, oids=()):
    return rawpg.message(b"P", _cstr(name) + _cstr(sql) + struct.pack("!H", len(oids)) +
                         b"".join(struct.pack("!I", o) for o in oids))


def _close_stmt(name):
    return rawpg.message(b"C", b"S" + _cstr(name))


def _tcp(px, db, user=TEST_USER, **kw):
    return rawpg.RawConn.tcp(px.port, db, user, **kw)


def _alive(px, db, tag="alive"):
    assert px.alive(), f"pgmux died (exit status {px.proc.poll()})"
    with _tcp(px, db, timeout=10) as c:
        assert c.query_rows(f"SELECT '{tag}'", timeout=10) == [(tag,)]


def _read_all(sock, timeout_s):
    """Every byte until the peer closes (or timeout_s passes: then what came)."""
    out = bytearray()
    sock.settimeout(timeout_s)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(1 << 20)
        except socket.timeout:
            break
        except ConnectionResetError:
            break
        if not chunk:
            break
        out += chunk
    return bytes(out)


def _split(data):
    """Backend messages in data: (list of (type, body), rest that is not a whole message)."""
    msgs, off = [], 0
    while off + 5 <= len(data):
        t = data[off:off + 1]
        n = struct.unpack("!I", data[off + 1:off + 5])[0]
        if n < 4 or off + 1 + n > len(data):
            break
        msgs.append((t, data[off + 5:off + 1 + n]))
        off += 1 + n
    return msgs, data[off:]


# ----------------------------------------------------------------------------------------------
# findings 1 and 2: the console

@timeout(30)
def test_console_query_with_login(env):
    """Finding 1: a console client that pipelines a query behind its startup packet got no
    answer until it sent more."""
    db = env.database()
    px = env.pgmux([db], {"admin_users": TEST_USER})
    s = socket.create_connection(("127.0.0.1", px.port), timeout=10)
    s.sendall(rawpg.startup_packet({"user": TEST_USER, "database": "pgmux"}) +
              rawpg.query("SHOW VERSION"))
    c = rawpg.RawConn(s, timeout=10)
    c.read_until_ready()                   # the login
    msgs = c.read_until_ready()            # the query's answer, without sending anything more
    assert b"D" in [t for t, _ in msgs] and not rawpg.errors(msgs), rawpg.types(msgs)
    c.close()


@timeout(30)
def test_console_function_call(env):
    """Finding 2: FunctionCall on the console got an error and no ReadyForQuery (PostgreSQL
    answers one with ReadyForQuery, so the client waited for ever)."""
    db = env.database()
    px = env.pgmux([db], {"admin_users": TEST_USER})
    c = _tcp(px, "pgmux", timeout=10)
    # FunctionCall: oid, 0 argument formats, 0 arguments, text result
    c.send(rawpg.message(b"F", struct.pack("!IHHH", 1598, 0, 0, 0)))
    msgs = c.read_until_ready()
    errs = rawpg.errors(msgs)
    assert [e.get("C") for e in errs] == ["0A000"], errs
    assert c.query_rows("SHOW VERSION")  # the session goes on
    c.close()


# ----------------------------------------------------------------------------------------------
# finding 3: pgmux's own query finishing hands the server to a client with a synthesized answer

@timeout(60)
def test_connect_query_close(env):
    """Finding 3: with connect_query, a client whose first message is a Close of a statement
    pgmux answers itself made pgmux abort (an insert into the buffer its loop was walking)."""
    db = env.database()
    entry = env.db_entry(db, connect_query="'SELECT 1'")
    px = env.pgmux({db: entry}, dict(TX1, max_prepared_statements=10))
    for i in range(3):
        c = _tcp(px, db, timeout=10)
        c.send(_close_stmt(f"s{i}") + rawpg.SYNC)
        msgs = c.read_until_ready()
        assert rawpg.types(msgs) == "3Z", rawpg.types(msgs)
        c.close()
        # a new server each time: the connect_query runs before the Close is answered
        env.pg.sql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s "
                   "AND usename = %s", (db, TEST_USER))
        wait_for(lambda: not env.pg.backends(db, TEST_USER), 10, what="server connection gone")
    _alive(px, db)


# ----------------------------------------------------------------------------------------------
# finding 4: a refused session parameter and the next client of the pool

@timeout(60)
def test_refused_set_rows(env):
    """Finding 4: when the server refused the SET that brings a client's startup parameter to
    it, the answers to that client's query could reach the next client of the pool."""
    db = env.database()
    px = env.pgmux([db], TX1)
    for _ in range(3):
        a = _tcp(px, db, timeout=10, extra={"TimeZone": "No/Such_Zone"})
        b = _tcp(px, db, timeout=10)
        a.send(rawpg.query("SELECT 'rows of a' FROM generate_series(1, 50)"))
        b.send(rawpg.query("SELECT 'b'"))
        state, errs = "open", []
        try:
            msgs = a.read_until_ready(timeout=10)
            errs = rawpg.errors(msgs)
        except (EOFError, ConnectionResetError) as e:
            state = f"closed ({e!r})"
        # a gets the server's refusal (or its rows, were the zone accepted), never silence
        assert errs or state != "open", (state, errs)
        msgs = b.read_until_ready(timeout=10)
        assert rawpg.rows(msgs) == [("b",)], f"b got {rawpg.rows(msgs)[:3]} {rawpg.errors(msgs)}"
        a.close()
        b.close()
    _alive(px, db)


# ----------------------------------------------------------------------------------------------
# finding 7: a request pipelined behind a fan-out read

@timeout(240)
def test_behind_fanout(env):
    """Finding 7: a query sent while a keyless read fanned out over the shards was lost (sent to
    shard 0's server, which was then released) or ran on the last shard alone.  Shard 0's part
    is large and the client reads nothing for a while, so the second query surely arrives while
    the fan-out runs."""
    px, shards = sharded_env(env, 2, no_shard_key="all")
    n = 40_000
    for s in range(2):
        env.sql(SHARD_DB, "INSERT INTO accounts (user_id, name) SELECT g * 2 + %s, "
                "repeat('x', 200) FROM generate_series(1, %s) g", (s, n),
                server=shards.primary(s))
    for t in shards.topos:
        t.wait_replay()   # the reads go to the replicas
    with _tcp(px, SHARD_DB, timeout=30) as c:
        for _ in range(2):
            c.send(rawpg.query("SELECT user_id, name FROM accounts"))
            time.sleep(0.5)   # shard 0's rows fill the sockets: the fan-out is under way
            c.send(rawpg.query("SELECT 'second'"))
            first = c.read_until_ready(timeout=60)
            assert not rawpg.errors(first), rawpg.errors(first)
            assert len(rawpg.rows(first)) == 2 * n, (len(rawpg.rows(first)), first[-2:])
            second = c.read_until_ready(timeout=30)
            assert rawpg.rows(second) == [("second",)], (rawpg.types(second), rawpg.errors(second))


# ----------------------------------------------------------------------------------------------
# finding 8: a BEGIN parsed with parameter types on a routed database

@timeout(120)
def test_typed_begin_routed(env):
    """Finding 8: a Parse of BEGIN with parameter types was replayed as a Query that carried
    the types after its text: PostgreSQL answered 08P01 and the client was closed."""
    reps, db = shared_setup(env, 1)
    px = routed(env, db, env.pg, reps)
    with _tcp(px, db, timeout=10) as c:
        c.send(_parse("", "BEGIN", [23]) + rawpg.bind() + rawpg.execute() + rawpg.SYNC)
        msgs = c.read_until_ready()
        assert not rawpg.errors(msgs), rawpg.errors(msgs)
        assert msgs[-1] == (b"Z", b"T"), msgs[-1]
        assert c.query_rows("SELECT 'in the transaction'") == [("in the transaction",)]
        c.query("COMMIT")


# ----------------------------------------------------------------------------------------------
# finding 10: a statement re-parsed behind an error stays usable

@timeout(60)
def test_skipped_reparse(env):
    """Finding 10: Parse(s1) Sync Parse(bad) Bind(s1) ... Sync made pgmux close and re-parse
    s1 where PostgreSQL skipped both; pgmux then believed the server lacked s1 and every later
    use failed with 42P05 on that server."""
    db = env.database()
    px = env.pgmux([db], dict(TX1, max_prepared_statements=10))
    with _tcp(px, db, timeout=10) as c:
        c.send(_parse("s1", "SELECT 41 + 1") + rawpg.SYNC +
               _parse("", "SELEC broken") + rawpg.bind("", "s1") + rawpg.execute() + rawpg.SYNC)
        c.read_until_ready()
        msgs = c.read_until_ready()
        assert [e.get("C") for e in rawpg.errors(msgs)] == ["42601"], rawpg.errors(msgs)
        for _ in range(3):
            c.send(rawpg.bind("", "s1") + rawpg.execute() + rawpg.SYNC)
            msgs = c.read_until_ready()
            assert not rawpg.errors(msgs), rawpg.errors(msgs)
            assert rawpg.rows(msgs) == [("42",)], rawpg.types(msgs)
    with _tcp(px, db, timeout=10) as d:   # another client on the same server
        d.send(_parse("t1", "SELECT 41 + 1") + rawpg.bind("", "t1") + rawpg.execute() +
               rawpg.SYNC)
        msgs = d.read_until_ready()
        assert not rawpg.errors(msgs) and rawpg.rows(msgs) == [("42",)], rawpg.errors(msgs)


# ----------------------------------------------------------------------------------------------
# finding 11: a server that dies in the middle of a message

@timeout(120)
def test_server_gone_mid_msg(env):
    """Finding 11: when the server connection failed while the client had received part of a
    message, pgmux appended its FATAL, which the client read as the rest of that message."""
    db = env.database()
    px = env.pgmux([db], TX1)
    s = socket.create_connection(("127.0.0.1", px.port), timeout=10)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    c = rawpg.RawConn(s, timeout=10)
    c.startup(db, TEST_USER)
    c.send(rawpg.query("SELECT repeat('x', 64 * 1024 * 1024)"))
    head = s.recv(65536)   # part of the row; the rest waits in the socket buffers
    assert head[:1] == b"T", head[:16]
    pids = [r[0] for r in env.pg.sql("SELECT pid FROM pg_stat_activity WHERE datname = %s AND "
                                     "usename = %s AND query LIKE 'SELECT repeat%%'",
                                     (db, TEST_USER))]
    assert len(pids) == 1, pids
    env.pg.sql("SELECT pg_terminate_backend(%s)", (pids[0],))
    data = head + _read_all(s, 30)
    msgs, rest = _split(data)
    assert [t for t, _ in msgs] == [b"T"], [t for t, _ in msgs][:5]
    # what follows RowDescription is the row, cut where the server died: nothing else in it
    assert rest[:1] == b"D", rest[:16]
    body = rest[5 + 2 + 4:]
    assert body.strip(b"x") == b"", f"bytes other than the row's inside it: {body.strip(b'x')[:80]!r}"
    s.close()
    _alive(px, db)


# ----------------------------------------------------------------------------------------------
# finding 14: a DEALLOCATE in an aborted transaction

@timeout(60)
def test_dealloc_aborted_tx(env):
    """Finding 14: to rename `DEALLOCATE s1` pgmux first re-prepared s1 on a server that
    lacked it; in an aborted transaction that Parse failed, PostgreSQL skipped to a Sync and
    the DEALLOCATE with it: the client never got its ReadyForQuery and pinned the server."""
    db = env.database()
    px = env.pgmux([db], dict(TX1, max_prepared_statements=10))
    with _tcp(px, db, timeout=10) as c:
        for name in ("s1", "s2"):
            c.send(_parse(name, "SELECT 41 + 1") + rawpg.SYNC)
            c.read_until_ready()
        # the server that holds s1 and s2 goes: the next one holds neither
        env.pg.sql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                   "WHERE datname = %s AND pid <> pg_backend_pid()", (db,))
        wait_for(lambda: not env.pg.sql("SELECT 1 FROM pg_stat_activity WHERE datname = %s "
                                        "AND pid <> pg_backend_pid()", (db,)), 10, 0.1,
                 "the server backend to go")
        assert not rawpg.errors(c.query("BEGIN"))
        msgs = c.query("SELECT 1/0")
        assert [e.get("C") for e in rawpg.errors(msgs)] == ["22012"], msgs
        # in the aborted transaction: PostgreSQL's own answer, at once
        c.send(rawpg.query("DEALLOCATE s1"))
        msgs = c.read_until_ready(timeout=5)
        assert [e.get("C") for e in rawpg.errors(msgs)] == ["25P02"], rawpg.types(msgs)
        assert msgs[-1] == (b"Z", b"E"), msgs[-1]
        msgs = c.query("ROLLBACK")
        assert msgs[-1] == (b"Z", b"I") and not rawpg.errors(msgs), msgs
        # in a live transaction and outside one: success, with PostgreSQL's tag only
        msgs = c.query("BEGIN")
        c.send(rawpg.query("DEALLOCATE s2"))
        msgs = c.read_until_ready(timeout=5)
        assert rawpg.types(msgs) == "CZ" and msgs[0][1] == b"DEALLOCATE\0", msgs
        assert msgs[-1] == (b"Z", b"T"), msgs[-1]
        c.query("COMMIT")
        # s2 is gone for the client, as in PostgreSQL
        c.send(rawpg.bind("", "s2") + rawpg.execute() + rawpg.SYNC)
        msgs = c.read_until_ready(timeout=5)
        assert [e.get("C") for e in rawpg.errors(msgs)] == ["26000"], msgs
    _alive(px, db)   # the only server went back to the pool


# ----------------------------------------------------------------------------------------------
# finding 15: an SQL-level PREPARE outlives the transaction on a pooled server

@timeout(60)
def test_sql_prepare_not_shared(env):
    """Finding 15: in transaction pooling a client's `PREPARE s1 AS ...` stayed on the server
    after its transaction, and the next client on that server could EXECUTE it (rows built
    from another client's text).  Such a server is now closed when released."""
    db = env.database()
    px = env.pgmux([db], TX1)
    mark = px.log_mark()
    with _tcp(px, db, timeout=10) as a, _tcp(px, db, timeout=10) as b:
        # within one transaction, PREPARE and EXECUTE work as in PostgreSQL
        assert not rawpg.errors(a.query("BEGIN"))
        assert not rawpg.errors(a.query("PREPARE s1 AS SELECT 'secret of a'"))
        assert a.query_rows("EXECUTE s1") == [("secret of a",)]
        assert not rawpg.errors(a.query("COMMIT"))
        # the only server went back: b never sees a's statement
        msgs = b.query("EXECUTE s1")
        assert [e.get("C") for e in rawpg.errors(msgs)] == ["26000"], rawpg.rows(msgs)
        assert b.query_rows("SELECT 'b'") == [("b",)]
    px.wait_log(r"SQL PREPARE in transaction pooling: closing this server once released",
                mark, timeout=5)


# ----------------------------------------------------------------------------------------------
# finding 16: a FunctionCall refused on a sharded database

@timeout(120)
def test_sharded_function_call(env):
    """Finding 16: on a sharded database pgmux refuses a FunctionCall (no shard key can be
    proved for it), but answered it like an extended batch: an ErrorResponse and no
    ReadyForQuery, so the client hung.  Inside a transaction too (the BEGIN pgmux holds back)."""
    px, _shards = sharded_env(env, 2)
    fcall = rawpg.message(b"F", struct.pack("!IHHH", 1598, 0, 0, 0))   # random()
    with _tcp(px, SHARD_DB, timeout=10) as c:
        c.send(fcall)
        msgs = c.read_until_ready(timeout=5)
        assert [e.get("C") for e in rawpg.errors(msgs)] == ["0A000"], rawpg.types(msgs)
        assert msgs[-1] == (b"Z", b"I"), msgs[-1]
        assert c.query("BEGIN")[-1] == (b"Z", b"T")
        c.send(fcall)
        msgs = c.read_until_ready(timeout=5)
        assert [e.get("C") for e in rawpg.errors(msgs)] == ["0A000"], rawpg.types(msgs)
        assert msgs[-1] == (b"Z", b"E"), msgs[-1]
        assert c.query("ROLLBACK")[-1] == (b"Z", b"I")
        assert c.query_rows("SELECT 7 /* pgmux: shard=1 */") == [("7",)]


# ----------------------------------------------------------------------------------------------
# finding 17: a statement used behind a pipelined DEALLOCATE ALL

@timeout(60)
def test_pipelined_deallocate_all(env):
    """Finding 17: a Bind pipelined behind `DEALLOCATE ALL` was renamed to pgmux's statement,
    which the DEALLOCATE ALL dropped first: the client got 26000 naming pgmux's internal
    statement.  Now the server's copies are untrusted from the moment it is sent (the Bind
    re-prepares first: pgmux answers it where PostgreSQL would say 26000), the client's names
    go once it succeeds, and names made behind it survive its answer."""
    db = env.database()
    px = env.pgmux([db], dict(TX1, max_prepared_statements=10))
    with _tcp(px, db, timeout=10) as c:
        c.send(_parse("s1", "SELECT 41 + 1") + rawpg.SYNC)
        c.read_until_ready()
        c.send(rawpg.query("DEALLOCATE ALL /* comment */") + rawpg.bind("", "s1") +
               rawpg.execute() + rawpg.SYNC)
        first = c.read_until_ready(timeout=5)
        assert rawpg.types(first) == "CZ" and first[0][1] == b"DEALLOCATE ALL\0", first
        msgs = c.read_until_ready(timeout=5)
        for e in rawpg.errors(msgs):
            assert "pgmux_" not in e.get("M", ""), e   # never pgmux's own name
        assert rawpg.rows(msgs) == [("42",)], msgs
        # gone once the DEALLOCATE ALL ran
        c.send(rawpg.bind("", "s1") + rawpg.execute() + rawpg.SYNC)
        errs = rawpg.errors(c.read_until_ready(timeout=5))
        assert [e.get("C") for e in errs] == ["26000"] and '"s1"' in errs[0]["M"], errs
        # prepared behind a DISCARD ALL, in the same write: it survives the answer
        c.send(_parse("s1", "SELECT 4") + rawpg.SYNC + rawpg.query("DISCARD ALL") +
               _parse("s2", "SELECT 5") + rawpg.SYNC)
        c.read_until_ready(count=3, timeout=5)
        for _ in range(2):
            c.send(rawpg.bind("", "s2") + rawpg.execute() + rawpg.SYNC)
            msgs = c.read_until_ready(timeout=5)
            assert not rawpg.errors(msgs) and rawpg.rows(msgs) == [("5",)], msgs
        c.send(rawpg.bind("", "s1") + rawpg.execute() + rawpg.SYNC)
        errs = rawpg.errors(c.read_until_ready(timeout=5))
        assert [e.get("C") for e in errs] == ["26000"], errs
    _alive(px, db)
