"""Issue 11: hostile clients, listeners and servers must not crash pgmux or cross its clients."""

import base64
import contextlib
import hashlib
import hmac
import os
import re
import resource
import select
import socket
import struct
import threading
import time

import psycopg

import rawpg
from pgharness import Skip, TEST_USER, free_port, run_async, scram_secret, timeout, wait_for

TX1 = {"pool_mode": "transaction", "default_pool_size": 1}


# ----------------------------------------------------------------------------------------------
# the pgmux process seen from /proc

def _proc_status(px, key):
    """A field of /proc/<pid>/status in kB (VmRSS, VmHWM)."""
    with open(f"/proc/{px.proc.pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise LookupError(key)


def _rss_mb(px):
    return _proc_status(px, "VmRSS") / 1024


def _nfds(px):
    return len(os.listdir(f"/proc/{px.proc.pid}/fd"))


def _cpu_s(px):
    """User + system CPU seconds pgmux has used so far."""
    with open(f"/proc/{px.proc.pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _assert_alive(px, db, tag="alive"):
    """pgmux runs and a fresh client gets its own answer."""
    assert px.alive(), f"pgmux died (exit status {px.proc.poll()})"
    with _tcp(px, db, timeout=10) as c:
        assert c.query_rows(f"SELECT '{tag}'", timeout=10) == [(tag,)]


def _tcp(px, db, user=TEST_USER, **kw):
    return rawpg.RawConn.tcp(px.port, db, user, **kw)


# ----------------------------------------------------------------------------------------------
# frontend messages rawpg does not build

def _cstr(s):
    return (s.encode() if isinstance(s, str) else s) + b"\0"


def _parse(name, sql, oids=()):
    return rawpg.message(b"P", _cstr(name) + _cstr(sql) + struct.pack("!H", len(oids)) +
                         b"".join(struct.pack("!I", o) for o in oids))


def _bind(portal, stmt, params=()):
    """Bind with text parameters (bytes or str; None is NULL) and text results."""
    body = _cstr(portal) + _cstr(stmt) + struct.pack("!HH", 0, len(params))
    for p in params:
        if p is None:
            body += struct.pack("!i", -1)
        else:
            p = p.encode() if isinstance(p, str) else p
            body += struct.pack("!i", len(p)) + p
    return rawpg.message(b"B", body + struct.pack("!H", 0))


def _execute(portal=""):
    return rawpg.message(b"E", _cstr(portal) + struct.pack("!I", 0))


def _sqlstates(msgs):
    return [e.get("C") for e in rawpg.errors(msgs)]


def _short(errs, n=200):
    """ErrorResponse fields with long texts cut, for assertion messages."""
    return [{k: (v if len(v) <= n else v[:n] + f"...({len(v)} bytes)") for k, v in e.items()}
            for e in errs]


def _closed_or_error(conn, timeout=5.0):
    """What a connection gets after a hostile message: ('closed', errors) when pgmux closed it
    (after zero or more ErrorResponses), ('open', errors) when it answered and kept it.  A
    pooler that says nothing and keeps waiting fails here (socket.timeout)."""
    errs = []
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise socket.timeout("pgmux neither answered nor closed the connection")
        try:
            t, b = conn.read_msg(left)
        except (EOFError, ConnectionResetError):
            return "closed", errs
        if t == b"E":
            errs.append(rawpg.parse_error(b))
        elif t == b"Z":
            return "open", errs


# ----------------------------------------------------------------------------------------------
# authentication over a raw socket (rawpg does trust only): cleartext, md5 and SCRAM-SHA-256

def _password_msg(data):
    return rawpg.message(b"p", data)


def _sasl_initial(client_first, mech="SCRAM-SHA-256"):
    data = client_first.encode() if isinstance(client_first, str) else client_first
    return rawpg.message(b"p", _cstr(mech) + struct.pack("!i", len(data)) + data)


def _auth_code(body):
    return struct.unpack("!I", body[:4])[0]


def _scram_proof(password, salt, iterations, auth_message):
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    stored_key = hashlib.sha256(client_key).digest()
    sig = hmac.new(stored_key, auth_message.encode(), hashlib.sha256).digest()
    return base64.b64encode(bytes(a ^ b for a, b in zip(client_key, sig))).decode()


class Login:
    """A login over a raw socket that answers whichever password request pgmux makes.

    .server_first is the SCRAM server-first-message when SCRAM was used; .result is 'ok'
    (AuthenticationOk), or the ErrorResponse fields dict, or 'closed'."""

    def __init__(self, port, db, user, password, timeout=10.0, stop_at_server_first=False,
                 client_nonce=None):
        self.conn = rawpg.RawConn.tcp(port, db, user, timeout=timeout, login=False)
        self.server_first = None
        self.result = None
        self.conn.send(rawpg.startup_packet({"user": user, "database": db}))
        client_nonce = client_nonce or base64.b64encode(os.urandom(18)).decode()
        first_bare = None
        try:
            while self.result is None:
                t, b = self.conn.read_msg()
                if t == b"E":
                    self.result = rawpg.parse_error(b)
                elif t == b"R":
                    code = _auth_code(b)
                    if code == 0:
                        self.result = "ok"
                    elif code == 3:
                        self.conn.send(_password_msg(_cstr(password)))
                    elif code == 5:
                        inner = hashlib.md5((password + user).encode()).hexdigest()
                        outer = hashlib.md5(inner.encode() + b[4:8]).hexdigest()
                        self.conn.send(_password_msg(_cstr("md5" + outer)))
                    elif code == 10:
                        first_bare = f"n=,r={client_nonce}"
                        self.conn.send(_sasl_initial("n,," + first_bare))
                    elif code == 11:
                        self.server_first = b[4:].decode()
                        if stop_at_server_first:
                            return
                        attrs = dict(kv.split("=", 1) for kv in self.server_first.split(","))
                        final_bare = f"c=biws,r={attrs['r']}"
                        auth_message = f"{first_bare},{self.server_first},{final_bare}"
                        proof = _scram_proof(password, base64.b64decode(attrs["s"]),
                                             int(attrs["i"]), auth_message)
                        self.conn.send(_password_msg(f"{final_bare},p={proof}".encode()))
                    elif code == 12:
                        pass  # SASLFinal; AuthenticationOk follows
                    else:
                        raise AssertionError(f"unexpected authentication request {code}")
        except (EOFError, ConnectionResetError):
            self.result = "closed"

    @property
    def salt_and_iterations(self):
        attrs = dict(kv.split("=", 1) for kv in self.server_first.split(","))
        return attrs["s"], int(attrs["i"])

    def close(self):
        self.conn.close()


def _assert_28p01(login, what):
    assert login.result != "ok", f"{what}: login succeeded"
    assert isinstance(login.result, dict), f"{what}: no ErrorResponse ({login.result!r})"
    assert login.result.get("C") == "28P01", f"{what}: wrong error {login.result!r}"


# ----------------------------------------------------------------------------------------------
# defect 1: a Bind whose portal name does not fit the receive buffer

@timeout(60)
def test_long_portal_bind_dup_parse(env):
    """Defect 1 (spec 1): Bind with a 20,000-byte portal name and a 100 kB parameter, then a
    duplicate named Parse: pgmux crashed (sbuf_replace underflow).  It must answer with the
    server's whole error and ReadyForQuery, and keep serving."""
    db = env.database()
    px = env.pgmux([db], {"pool_mode": "transaction", "default_pool_size": 1,
                          "max_prepared_statements": 200})
    a = _tcp(px, db, timeout=15)
    a.send(_parse("s1", "SELECT 2") + rawpg.SYNC)
    msgs = a.read_until_ready()
    assert rawpg.types(msgs) == "1Z", rawpg.types(msgs)
    param = "x" * 100_000
    a.send(_parse("", "SELECT $1::int") + _bind("p" * 20_000, "", [param]) +
           _parse("s1", "SELECT 2") + rawpg.SYNC)
    try:
        msgs = a.read_until_ready(timeout=15)
    except (EOFError, ConnectionResetError, socket.timeout) as e:
        raise AssertionError(f"no ReadyForQuery after the long-portal Bind: {e!r} "
                             f"(pgmux alive: {px.alive()})") from None
    assert msgs[-1][0] == b"Z", rawpg.types(msgs)
    errs = rawpg.errors(msgs)
    assert errs, f"no ErrorResponse: {rawpg.types(msgs)}"
    assert {e.get("C") for e in errs} <= {"22P02", "42P05"}, _short(errs)
    bind_err = [e for e in errs if e.get("C") == "22P02"]
    assert bind_err, f"the server's error for the Bind did not reach the client: {_short(errs)}"
    # the server's error (> 16 KiB: it quotes the 100 kB value) arrives whole
    assert param in bind_err[0].get("M", ""), \
        f"the server's error was cut: message of {len(bind_err[0].get('M', ''))} bytes"
    # the same client, and a second one, keep working
    assert a.query_rows("SELECT 'a again'") == [("a again",)]
    a.send(_bind("", "s1") + _execute() + rawpg.SYNC)
    msgs = a.read_until_ready()
    assert rawpg.rows(msgs) == [("2",)], msgs
    a.close()
    _assert_alive(px, db, "second client")


@timeout(60)
def test_long_portal_bind_named_stmt(env):
    """Defect 1 (spec 1): a Bind of a named prepared statement with a 20,000-byte portal name
    works: pgmux renames the statement and forwards it."""
    db = env.database()
    px = env.pgmux([db], {"pool_mode": "transaction", "default_pool_size": 1,
                          "max_prepared_statements": 200})
    a = _tcp(px, db, timeout=15)
    a.send(_parse("s2", "SELECT length($1::text)") + rawpg.SYNC)
    assert rawpg.types(a.read_until_ready()) == "1Z"
    portal = "q" * 20_000
    # PostgreSQL caps Execute at 10,000 bytes but keys portals by their first 63 bytes
    # (NAMEDATALEN - 1): the Execute names the portal by those
    a.send(_bind(portal, "s2", ["abcde"]) + _execute(portal[:63]) + rawpg.SYNC)
    try:
        msgs = a.read_until_ready(timeout=15)
    except (EOFError, ConnectionResetError, socket.timeout) as e:
        raise AssertionError(f"no answer to the long-portal Bind: {e!r} "
                             f"(pgmux alive: {px.alive()})") from None
    assert not rawpg.errors(msgs), _short(rawpg.errors(msgs))
    assert rawpg.rows(msgs) == [("5",)], msgs
    assert rawpg.types(msgs) == "2DCZ", rawpg.types(msgs)
    # and once more with a parameter bigger than the receive buffer
    a.send(_bind(portal, "s2", ["y" * 100_000]) + _execute(portal[:63]) + rawpg.SYNC)
    msgs = a.read_until_ready(timeout=15)
    assert not rawpg.errors(msgs), _short(rawpg.errors(msgs))
    assert rawpg.rows(msgs) == [("100000",)], rawpg.types(msgs)
    a.close()
    _assert_alive(px, db)


# ----------------------------------------------------------------------------------------------
# defect 2: a server goes back to the pool while the client still has bytes for it

def _pg_log_mark(env):
    return len(env.pg.log_text())


def _pg_log_since(env, mark):
    return env.pg.log_text()[mark:]


def _wait_running(env, db, needle, timeout=10):
    """Waits until a backend of db runs a query containing needle (direct, not via pgmux)."""
    q = ("SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND state = 'active' "
         "AND query LIKE %s")
    wait_for(lambda: env.pg.sql1(q, (db, f"%{needle}%")), timeout, 0.02,
             f"a backend of {db} to run {needle!r}")


class _Sender(threading.Thread):
    """Writes payload to a socket in a thread, recording progress (bytes sent) and errors."""

    def __init__(self, sock, payload, timeout=20.0):
        super().__init__(daemon=True)
        self.sock, self.payload, self.deadline = sock, memoryview(payload), timeout
        self.sent, self.error = 0, None
        self.start()

    def run(self):
        end = time.monotonic() + self.deadline
        try:
            while self.sent < len(self.payload):
                left = end - time.monotonic()
                if left <= 0:
                    raise socket.timeout("peer stopped reading")
                self.sock.settimeout(left)
                self.sent += self.sock.send(self.payload[self.sent:self.sent + 262144])
        except OSError as e:
            self.error = e

    def finish(self, what):
        self.join(self.deadline + 5)
        assert not self.is_alive() and self.error is None, \
            f"pgmux stopped reading {what}: {self.sent} of {len(self.payload)} bytes taken " \
            f"({self.error!r})"


@timeout(60)
def test_flush_flood_next_client(env):
    """Defect 2 (spec 2): pool_size = 1, Query('SELECT pg_sleep(1.5)') + 2,000,000 Flush in one
    write; the next client's SELECT 'victim' must return 'victim', PostgreSQL must not log
    "invalid message length", and the flooding client's stream is not left stranded."""
    db = env.database()
    px = env.pgmux([db], TX1)
    mark = _pg_log_mark(env)
    a = _tcp(px, db, timeout=20)
    flood = _Sender(a.sock, rawpg.query("SELECT pg_sleep(1.5)") + rawpg.FLUSH * 2_000_000)
    _wait_running(env, db, "pg_sleep(1.5)")
    with _tcp(px, db, timeout=20) as b:
        msgs = b.query("SELECT 'victim'", timeout=20)
        assert not rawpg.errors(msgs), f"the victim got an error: {_short(rawpg.errors(msgs))}"
        assert rawpg.rows(msgs) == [("victim",)], rawpg.rows(msgs)
    flood.finish("the flooding client's Flush messages")
    msgs = a.read_until_ready(timeout=20)
    assert not rawpg.errors(msgs), _short(rawpg.errors(msgs))
    assert rawpg.rows(msgs) == [("",)], rawpg.rows(msgs)
    assert a.query_rows("SELECT 'a again'", timeout=20) == [("a again",)]
    a.close()
    log = _pg_log_since(env, mark)
    assert "invalid message length" not in log, \
        "PostgreSQL saw a corrupted stream:\n" + "\n".join(
            l for l in log.splitlines() if "invalid message" in l)[:2000]
    _assert_alive(px, db)


@timeout(60)
def test_failed_copy_data_in_flight(env):
    """Defect 2 (spec 2): a COPY FROM STDIN that fails while the client still sends CopyData
    (then CopyDone or CopyFail) must not hand the server to the next client mid-message."""
    db = env.database()
    env.sql(db, "CREATE TABLE t (a int)")
    px = env.pgmux([db], TX1)
    mark = _pg_log_mark(env)
    chunk = rawpg.copy_data(b"1\n" * 4000)          # 8 kB of good rows
    for end in (rawpg.COPY_DONE, rawpg.message(b"f", _cstr("client gives up"))):
        a = _tcp(px, db, timeout=20)
        # 24 MB of CopyData still on its way after the first row's error
        flood = _Sender(a.sock, rawpg.query("COPY t FROM STDIN") +
                        rawpg.copy_data(b"not-an-int\n") + chunk * 3000 + end)
        msgs = a.read_until_ready(timeout=20)
        assert [e.get("C") for e in rawpg.errors(msgs)] == ["22P02"], _short(rawpg.errors(msgs))
        # the server is idle now, with A's CopyData still arriving: B must get clean answers
        victims = 0
        with _tcp(px, db, timeout=20) as b:
            while (flood.is_alive() or victims < 3) and victims < 500:
                tag = f"victim{victims}"
                try:
                    msgs = b.query(f"SELECT '{tag}'", timeout=20)
                except (socket.timeout, EOFError, ConnectionResetError) as e:
                    raise AssertionError(
                        f"the victim got no answer ({e!r}); the failed COPY's client had sent "
                        f"{flood.sent} of {len(flood.payload)} bytes") from None
                assert not rawpg.errors(msgs), \
                    f"the victim got an error: {_short(rawpg.errors(msgs))}"
                assert rawpg.rows(msgs) == [(tag,)], rawpg.rows(msgs)
                victims += 1
        flood.finish("the failed COPY's CopyData")
        # A's stray CopyData / CopyDone / CopyFail are dropped; A keeps working
        rows = a.query_rows("SELECT 'a after copy'", timeout=20)
        assert rows == [("a after copy",)], rows
        a.close()
    assert env.sql1(db, "SELECT count(*) FROM t") == 0
    log = _pg_log_since(env, mark)
    assert "invalid message length" not in log and "unexpected message type" not in log, \
        "PostgreSQL saw a corrupted stream:\n" + log[-2000:]
    _assert_alive(px, db)


# ----------------------------------------------------------------------------------------------
# defect 3: a client's prepared statements (and messages pgmux reads whole) are bounded in bytes

@timeout(90)
def test_parse_name_flood_memory_bounded(env):
    """Defect 3 (spec 3, max_client_memory): 8,000 named Parses with 16,000-byte names on one
    connection grew RSS by 124 MB; with max_client_memory = 1MB pgmux must stay within ~20 MB,
    answer only 42P05 / 54000, and keep the connection usable."""
    db = env.database()
    px = env.pgmux([db], {"pool_mode": "transaction", "default_pool_size": 1,
                          "max_prepared_statements": 200, "max_client_memory": "1MB"})
    a = _tcp(px, db, timeout=20)
    assert a.query_rows("SELECT 'warm'") == [("warm",)]
    rss0 = _rss_mb(px)
    codes = {}
    ok = 0
    batch = 100
    for first in range(0, 8000, batch):
        # names differ in their first bytes (PostgreSQL compares the first 63)
        a.send(b"".join(_parse(f"{i:06d}" + "n" * 15_994, "SELECT 1")
                        for i in range(first, first + batch)) + rawpg.SYNC)
        try:
            msgs = a.read_until_ready(timeout=20)
        except (socket.timeout, EOFError, ConnectionResetError) as e:
            raise AssertionError(f"no answer to Parse batch {first // batch} ({e!r}); RSS grew "
                                 f"{_rss_mb(px) - rss0:.0f} MB") from None
        ok += sum(1 for t, _ in msgs if t == b"1")
        for e in rawpg.errors(msgs):
            codes[e.get("C")] = codes.get(e.get("C"), 0) + 1
            if e.get("C") == "54000":
                assert "max_client_memory" in e.get("M", ""), _short([e])
    grown = _rss_mb(px) - rss0
    print(f"{ok} Parses accepted, errors {codes}, RSS +{grown:.1f} MB")
    assert set(codes) <= {"42P05", "54000"}, codes
    assert grown < 20, f"RSS grew by {grown:.0f} MB with max_client_memory = 1MB ({ok} accepted)"
    # the connection is still usable, and so is the pool
    assert a.query_rows("SELECT 'still here'") == [("still here",)]
    a.send(_parse("", "SELECT 'unnamed'") + _bind("", "") + _execute() + rawpg.SYNC)
    assert rawpg.rows(a.read_until_ready()) == [("unnamed",)]
    a.close()
    _assert_alive(px, db)


@timeout(60)
def test_statement_names_compare_63_bytes(env):
    """Defect 3 (spec 3): prepared-statement names compare as PostgreSQL compares them, on
    their first 63 bytes (NAMEDATALEN - 1): a name that differs only later is the same name."""
    db = env.database()
    px = env.pgmux([db], {"pool_mode": "transaction", "default_pool_size": 2,
                          "max_prepared_statements": 200})
    a = _tcp(px, db, timeout=10)
    base = "n" * 63

    def batch(msg):
        a.send(msg + rawpg.SYNC)
        return a.read_until_ready()
    assert rawpg.types(batch(_parse(base + "X", "SELECT 1"))) == "1Z"
    msgs = batch(_parse(base + "Y", "SELECT 2"))
    assert _sqlstates(msgs) == ["42P05"], _short(rawpg.errors(msgs))
    msgs = batch(_bind("", base + "Z") + _execute())
    assert rawpg.rows(msgs) == [("1",)], (rawpg.types(msgs), _short(rawpg.errors(msgs)))
    msgs = batch(rawpg.message(b"C", b"S" + _cstr(base + "W")))
    assert rawpg.types(msgs) == "3Z", (rawpg.types(msgs), _short(rawpg.errors(msgs)))
    msgs = batch(_bind("", base + "X") + _execute())
    assert _sqlstates(msgs) == ["26000"], _short(rawpg.errors(msgs))
    assert rawpg.types(batch(_parse(base, "SELECT 3"))) == "1Z"
    assert rawpg.rows(batch(_bind("", base + "tail") + _execute())) == [("3",)]
    a.close()
    _assert_alive(px, db)


@timeout(60)
def test_parse_over_max_client_memory(env):
    """Defect 3 (spec: max_client_memory): a named Parse whose text is larger than the limit is
    refused with 54000 naming max_client_memory; the connection stays usable."""
    db = env.database()
    px = env.pgmux([db], {"pool_mode": "transaction", "default_pool_size": 1,
                          "max_prepared_statements": 200, "max_client_memory": "1MB"})
    a = _tcp(px, db, timeout=20)
    big = "SELECT 1 /* " + "x" * 1_200_000 + " */"
    a.send(_parse("huge", big) + rawpg.SYNC)
    try:
        msgs = a.read_until_ready(timeout=20)
    except (socket.timeout, EOFError, ConnectionResetError) as e:
        raise AssertionError(f"no answer to a 1.2 MB named Parse: {e!r}") from None
    errs = rawpg.errors(msgs)
    assert [e.get("C") for e in errs] == ["54000"], _short(errs)
    assert "max_client_memory" in errs[0].get("M", ""), _short(errs)
    assert msgs[-1][0] == b"Z", rawpg.types(msgs)
    # the refused statement does not exist; the connection and a small statement work
    a.send(_parse("small", "SELECT 'small'") + _bind("", "small") + _execute() + rawpg.SYNC)
    msgs = a.read_until_ready()
    assert rawpg.rows(msgs) == [("small",)], _short(rawpg.errors(msgs))
    a.send(_bind("", "huge") + _execute() + rawpg.SYNC)
    msgs = a.read_until_ready()
    assert [e.get("C") for e in rawpg.errors(msgs)] == ["26000"], _short(rawpg.errors(msgs))
    assert a.query_rows("SELECT 'usable'") == [("usable",)]
    a.close()
    _assert_alive(px, db)


@timeout(90)
def test_large_parse_and_bind_prepared(env):
    """Defect 3 / issue "the cause": a 1 MB Parse text and a 50 MB Bind parameter work end to
    end in transaction mode with prepared statements tracked, through psycopg and asyncpg."""
    db = env.database()
    px = env.pgmux([db], {"pool_mode": "transaction", "default_pool_size": 2,
                          "max_prepared_statements": 200})
    comment = "/* " + "c" * 1_000_000 + " */ "
    text = "t" * 50_000_000
    blob = b"\x01\x02" * 25_000_000
    with px.connect(db, prepare_threshold=0) as c:      # every statement is a named Parse
        for _ in range(2):                               # prepare, then reuse
            assert c.execute(comment + "SELECT %s::int + 1", (41,)).fetchone()[0] == 42
            assert c.execute("SELECT length(%s::text)", (text,)).fetchone()[0] == len(text)
            assert c.execute(comment + "SELECT length(%s::bytea)", (blob,)).fetchone()[0] == \
                len(blob)

    async def go():
        # asyncpg prepares statements of up to 15 kB by name unless told otherwise
        conn = await px.aconnect(db, timeout=30, max_cacheable_statement_size=4 << 20)
        try:
            for _ in range(2):
                assert await conn.fetchval(comment + "SELECT $1::int + 1", 41) == 42
                assert await conn.fetchval("SELECT length($1::text)", text) == len(text)
                assert await conn.fetchval(comment + "SELECT length($1::bytea)", blob) == \
                    len(blob)
        finally:
            await conn.close()
    run_async(go(), 60)
    _assert_alive(px, db)


# ----------------------------------------------------------------------------------------------
# defect 4: listeners: stats_listen cap, EMFILE, max_client_conn at accept

def _peer_closed(s):
    """True when the peer closed (or reset) socket s: it is readable with nothing to read.
    Data counts as not closed."""
    r, _, _ = select.select([s], [], [], 0)
    if not r:
        return False
    try:
        return s.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True


def _readable(s):
    return bool(select.select([s], [], [], 0)[0])


def _http_get(port, path="/metrics", timeout=5):
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(f"GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n".encode())
        out = b""
        while True:
            d = s.recv(65536)
            if not d:
                return out
            out += d


def _close_all(socks):
    for s in socks:
        with contextlib.suppress(OSError):
            s.close()


@timeout(60)
def test_stats_listen_connection_cap(env):
    """Defect 4 (spec 4): the stats_listen (Prometheus) listener keeps at most 64 connections;
    200 idle TCP connections must neither pile up nor lock PostgreSQL clients out."""
    db = env.database()
    mport = free_port()
    px = env.pgmux([db], {"pool_mode": "transaction", "stats_listen": f"127.0.0.1:{mport}"})
    assert b" 200 " in _http_get(mport).split(b"\r\n", 1)[0]
    fd0 = _nfds(px)
    mark = px.log_mark()
    socks = [socket.create_connection(("127.0.0.1", mport), timeout=5) for _ in range(200)]
    env.on_cleanup(lambda: _close_all(socks))
    try:
        wait_for(lambda: sum(map(_peer_closed, socks)) >= 200 - 64, 5, 0.05)
    except TimeoutError:
        raise AssertionError(
            f"pgmux keeps {200 - sum(map(_peer_closed, socks))} of 200 stats connections open "
            f"(want at most 64); it holds {_nfds(px) - fd0} more descriptors") from None
    assert _nfds(px) - fd0 <= 64 + 2, f"{_nfds(px) - fd0} more descriptors"
    # a PostgreSQL client is served promptly meanwhile
    t0 = time.monotonic()
    with px.connect(db, connect_timeout=5) as c:
        assert c.execute("SELECT 'pg client'").fetchone()[0] == "pg client"
    assert time.monotonic() - t0 < 3, f"a PostgreSQL client waited {time.monotonic() - t0:.1f}s"
    lines = px.log_since(mark).count("\n")
    assert lines < 400, f"{lines} log lines for 200 stats connections"
    _close_all(socks)
    # the endpoint still answers once they are gone
    wait_for(lambda: b" 200 " in _http_get(mport).split(b"\r\n", 1)[0], 10, 0.1,
             "the metrics endpoint to answer again")
    _assert_alive(px, db)


@timeout(60)
def test_stats_listen_emfile_does_not_spin(env):
    """Defect 4 (spec 4): when accept() on stats_listen fails with EMFILE pgmux pauses instead
    of spinning: no flood of accept errors in the log, no busy CPU, and it recovers."""
    db = env.database()
    mport = free_port()
    px = env.pgmux([db], {"pool_mode": "transaction", "stats_listen": f"127.0.0.1:{mport}"})
    _assert_alive(px, db, "before")
    pid = px.proc.pid
    soft, hard = resource.prlimit(pid, resource.RLIMIT_NOFILE)
    resource.prlimit(pid, resource.RLIMIT_NOFILE, (_nfds(px) + 4, hard))
    env.on_cleanup(lambda: px.alive() and resource.prlimit(pid, resource.RLIMIT_NOFILE,
                                                           (soft, hard)))
    mark = px.log_mark()
    cpu0, t0 = _cpu_s(px), time.monotonic()
    socks = [socket.create_connection(("127.0.0.1", mport), timeout=5) for _ in range(100)]
    env.on_cleanup(lambda: _close_all(socks))
    # an observation window: what pgmux does while the backlog waits and descriptors are out
    time.sleep(2.5)
    cpu, wall = _cpu_s(px) - cpu0, time.monotonic() - t0
    log = px.log_since(mark)
    accept_lines = [l for l in log.splitlines() if "accept" in l.lower()]
    print(f"{len(accept_lines)} accept lines, {cpu:.2f}s CPU in {wall:.2f}s")
    assert px.alive(), "pgmux died when descriptors ran out"
    assert len(accept_lines) <= 20, \
        f"{len(accept_lines)} accept error lines in {wall:.1f}s:\n" + "\n".join(accept_lines[:5])
    assert cpu < 0.4 * wall, f"pgmux spun: {cpu:.2f}s CPU in {wall:.2f}s"
    _close_all(socks)
    resource.prlimit(pid, resource.RLIMIT_NOFILE, (soft, hard))

    def served():
        with contextlib.suppress(psycopg.Error):
            with px.connect(db, connect_timeout=3) as c:
                return c.execute("SELECT 'after'").fetchone()[0] == "after"
        return False
    wait_for(served, 15, 0.2, "a PostgreSQL client to be served again")
    _assert_alive(px, db)


@timeout(60)
def test_max_client_conn_enforced_at_accept(env):
    """Defect 4 (spec 4): with max_client_conn = 20, 100 TCP connections that never send a
    startup packet: pgmux keeps at most 36 (20 + 16) and refuses the rest at once with FATAL
    53300; a real client gets in once they are gone; descriptors stay bounded."""
    db = env.database()
    px = env.pgmux([db], {"pool_mode": "transaction", "max_client_conn": 20,
                          "client_login_timeout": 60})
    fd0 = _nfds(px)
    socks = [socket.create_connection(("127.0.0.1", px.port), timeout=5) for _ in range(100)]
    env.on_cleanup(lambda: _close_all(socks))
    try:
        wait_for(lambda: sum(map(_readable, socks)) >= 100 - 36, 5, 0.05)
    except TimeoutError:
        raise AssertionError(
            f"only {sum(map(_readable, socks))} of 100 silent connections were refused at "
            f"accept (want at least 64); pgmux holds {_nfds(px) - fd0} more descriptors") from None
    refused = [s for s in socks if _readable(s)]
    kept = 100 - len(refused)
    assert 20 <= kept <= 36, f"pgmux kept {kept} silent connections (want 20..36)"
    assert _nfds(px) - fd0 <= 36 + 2, f"{_nfds(px) - fd0} more descriptors"
    for s in refused[:10]:
        c = rawpg.RawConn(s, timeout=5)
        t, b = c.read_msg()
        assert t == b"E", (t, b[:200])
        fields = rawpg.parse_error(b)
        assert fields.get("C") == "53300" and "max_client_conn" in fields.get("M", ""), fields
        assert fields.get("S") == "FATAL", fields
        with contextlib.suppress(OSError):
            assert c.read_raw(5) == b"", "more after the FATAL error"
    _close_all(socks)

    def served():
        with contextlib.suppress(psycopg.Error):
            with px.connect(db, connect_timeout=3) as c:
                return c.execute("SELECT 'real client'").fetchone()[0] == "real client"
        return False
    wait_for(served, 10, 0.1, "a real client to get in")
    wait_for(lambda: _nfds(px) <= fd0 + 3, 10, 0.1, "pgmux to close the silent sockets")
    _assert_alive(px, db)


# ----------------------------------------------------------------------------------------------
# defect 5: an empty auth_file secret

@timeout(60)
def test_empty_secret_never_authenticates(env):
    """Defect 5 (spec 5): an empty auth_file secret never authenticates, under scram-sha-256,
    md5 and plain: an empty password gets 28P01 (a real password still works)."""
    db = env.database()
    empty = env.role("au_empty")
    real = env.role("au_real")
    for auth_type in ("scram-sha-256", "md5", "plain"):
        px = env.pgmux([db], {"auth_type": auth_type}, users={empty: "", real: "Real-pw1"})
        # the raw login speaks each method correctly: a real password gets in
        ok = Login(px.port, db, real, "Real-pw1")
        assert ok.result == "ok", f"{auth_type}: {real} with its password: {ok.result!r}"
        ok.close()
        bad = Login(px.port, db, real, "wrong")
        _assert_28p01(bad, f"{auth_type}: wrong password")
        bad.close()
        for pw in ("", "anything"):
            lg = Login(px.port, db, empty, pw)
            _assert_28p01(lg, f"{auth_type}: user with an empty secret, password {pw!r}")
            lg.close()

        # asyncpg sends an empty password (libpq refuses to)
        async def empty_login():
            try:
                conn = await px.aconnect(db, empty, "")
            except Exception as e:  # noqa: BLE001
                return e
            await conn.close()
            return None
        err = run_async(empty_login(), 30)
        assert err is not None, f"{auth_type}: asyncpg logged in with an empty password"
        assert getattr(err, "sqlstate", None) == "28P01", f"{auth_type}: {err!r}"
        assert px.alive()


# ----------------------------------------------------------------------------------------------
# defect 6: autodb_idle_timeout

@timeout(90)
def test_autodb_idle_timeout_removes_databases(env):
    """Defect 6 (spec 6): databases made from the `*` entry whose pools have had no clients and
    no servers for autodb_idle_timeout disappear from SHOW DATABASES and SHOW POOLS."""
    names = [f"t_autodb_{os.getpid()}_{i}" for i in range(30)]
    for n in names:
        env.pg.create_database(n)

    def drop():
        with env.pg.connect() as conn:
            for n in names:
                conn.execute(f'DROP DATABASE IF EXISTS "{n}" WITH (FORCE)')
    env.on_cleanup(drop)
    px = env.pgmux({"*": f"host={env.pg.host} port={env.pg.port}"},
                   {"pool_mode": "transaction", "autodb_idle_timeout": 1,
                    "server_idle_timeout": 1})
    for n in names:
        with px.connect(n) as c:
            assert c.execute("SELECT current_database()").fetchone()[0] == n
    listed = {r["name"] for r in px.show("DATABASES")}
    assert set(names) <= listed, sorted(set(names) - listed)[:5]

    def left():
        dbs = {r["name"] for r in px.show("DATABASES")}
        pools = {r["database"] for r in px.show("POOLS")}
        return set(names) & (dbs | pools)
    try:
        wait_for(lambda: not left(), 20, 0.25)
    except TimeoutError:
        raise AssertionError(f"{len(left())} of 30 idle auto-databases still listed 20s after "
                             f"autodb_idle_timeout = 1s") from None
    # a name comes back on demand
    with px.connect(names[0]) as c:
        assert c.execute("SELECT current_database()").fetchone()[0] == names[0]
    assert names[0] in {r["name"] for r in px.show("DATABASES")}


# ----------------------------------------------------------------------------------------------
# defect 7: SCRAM must not tell which users exist

@timeout(60)
def test_scram_unknown_user_salt_is_stable(env):
    """Defect 7 (spec 7): an unknown user gets the same salt and 4096 iterations on every try,
    like a known user, and fails at the proof with 28P01, like a wrong password."""
    db = env.database()
    known = env.role("au_known")
    secret = scram_secret("Known-pw1")
    px = env.pgmux([db], {"auth_type": "scram-sha-256"}, users={known: secret})

    def first(user):
        lg = Login(px.port, db, user, "x", stop_at_server_first=True)
        assert lg.server_first, f"{user}: no SCRAM server-first-message ({lg.result!r})"
        lg.close()
        return lg.salt_and_iterations
    want_salt = secret.split("$")[1].split(":")[1]
    k1, k2 = first(known), first(known)
    assert k1 == k2 == (want_salt, 4096), (k1, k2)
    g1, g2, g3 = first("ghost_user_a"), first("ghost_user_a"), first("ghost_user_b")
    assert g1 == g2, f"an unknown user gets a new salt per try: {g1} then {g2}"
    assert g1[1] == 4096, g1
    assert len(base64.b64decode(g1[0])) == len(base64.b64decode(want_salt)), g1
    assert g1[0] != g3[0], "two unknown users share one salt"
    assert g1[0] != k1[0]
    # the full exchange: unknown user and wrong password fail alike; the right one works
    for user, pw in (("ghost_user_a", "Known-pw1"), (known, "wrong-pw")):
        lg = Login(px.port, db, user, pw)
        _assert_28p01(lg, f"{user} / {pw}")
        lg.close()
    lg = Login(px.port, db, known, "Known-pw1")
    assert lg.result == "ok", lg.result
    lg.close()


# ----------------------------------------------------------------------------------------------
# defect 8: pgmux's server-side statement names

@timeout(60)
def test_statement_names_cannot_be_hijacked(env):
    """Defect 8 (spec 8): another client of the same pool reads pgmux's statement names from
    pg_prepared_statements and tries DEALLOCATE / PREPARE / EXECUTE of them: each gets 42501,
    the names are pgmux_<20 digits>_<n>, and the victim's statement keeps its answer."""
    db = env.database()
    env.sql(db, "CREATE TABLE accounts (id int PRIMARY KEY, balance int)")
    env.sql(db, "INSERT INTO accounts VALUES (7, 700), (8, 800)")
    px = env.pgmux([db], {"pool_mode": "transaction", "default_pool_size": 1,
                          "max_prepared_statements": 200})
    victim = _tcp(px, db, timeout=10)

    def balance(acct):
        victim.send(_bind("", "get_balance", [str(acct)]) + _execute() + rawpg.SYNC)
        msgs = victim.read_until_ready()
        assert not rawpg.errors(msgs), _short(rawpg.errors(msgs))
        return rawpg.rows(msgs)
    victim.send(_parse("get_balance", "SELECT balance FROM accounts WHERE id = $1", [23]) +
                rawpg.SYNC)
    assert rawpg.types(victim.read_until_ready()) == "1Z"
    assert balance(7) == [("700",)]

    attacker = px.connect(db)
    names = [r[0] for r in attacker.execute(
        "SELECT name FROM pg_prepared_statements").fetchall()]
    assert names, "the victim's statement is not on the (only) server"
    raw = _tcp(px, db, timeout=10)
    for name in names:
        attacks = [f"DEALLOCATE {name}", f"PREPARE {name}(int) AS SELECT 999999",
                   f"EXECUTE {name}(7)", f"DEALLOCATE {name.upper()}",
                   f"DEALLOCATE ALL; PREPARE {name}(int) AS SELECT 999999"]
        for sql in attacks:
            # through the extended protocol (the text is in a Parse) ...
            try:
                attacker.execute(sql)
                raise AssertionError(f"{sql!r} of pgmux's own statement was allowed")
            except psycopg.Error as e:
                assert e.sqlstate == "42501", f"{sql!r}: {e.sqlstate} {e}"
            # ... and as a simple Query
            msgs = raw.query(sql)
            assert _sqlstates(msgs) == ["42501"], f"{sql!r} (simple): {_short(rawpg.errors(msgs))}"
        assert balance(7) == [("700",)], "the victim's statement was replaced"
    assert balance(8) == [("800",)]
    for name in names:
        assert not re.fullmatch(r"pgmux_\d+", name), f"guessable statement name {name!r}"
        assert re.fullmatch(r"pgmux_\d{20}_\d+", name), f"unexpected statement name {name!r}"
    # the attacker's connection and other prepared statements still work
    assert attacker.execute("SELECT %s::int * 2", (21,)).fetchone()[0] == 42
    attacker.close()
    raw.close()
    victim.close()


# ----------------------------------------------------------------------------------------------
# console: SHOW with thousands of rows, and control commands from non-admins

def _login_many(port, db, n, app_name, batch=250):
    """n trust logins over raw sockets, pipelined in batches; returns the sockets."""
    socks = []
    pkt = rawpg.startup_packet({"user": TEST_USER, "database": db,
                                "application_name": app_name})
    for first in range(0, n, batch):
        group = []
        for _ in range(min(batch, n - first)):
            s = socket.create_connection(("127.0.0.1", port), timeout=20)
            s.sendall(pkt)
            group.append(s)
        for s in group:
            c = rawpg.RawConn(s, timeout=20)
            msgs = c.read_until_ready()
            assert not rawpg.errors(msgs), _short(rawpg.errors(msgs))
        socks += group
    return socks


@timeout(120)
def test_show_clients_with_5000_clients(env):
    """Spec 9 (console 1 MiB cap): SHOW CLIENTS streams its rows; an admin sees all 5,000
    clients instead of being dropped."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)   # raised by pgharness
    if soft < 11_000:
        raise Skip(f"RLIMIT_NOFILE is {soft}: 5,000 clients need about 10,100 descriptors")
    db = env.database()
    px = env.pgmux([db], {"pool_mode": "transaction", "default_pool_size": 2,
                          "max_client_conn": 6000})
    app = "hardening-show-clients-" + "a" * 40
    # connected first: libpq's descriptor must stay below 1024 (psycopg waits with select())
    admin = psycopg.connect(px.dsn("pgmux", "postgres"), autocommit=True, connect_timeout=10)
    env.on_cleanup(admin.close)
    socks = []
    env.on_cleanup(lambda: _close_all(socks))
    socks += _login_many(px.port, db, 5000, app)
    try:
        cur = admin.execute("SHOW CLIENTS")
        names = [d.name for d in cur.description]
        rows = [dict(zip(names, r)) for r in cur.fetchall()]
    except psycopg.Error as e:
        raise AssertionError(f"SHOW CLIENTS with 5,000 clients failed: {e!r}") from None
    mine = [r for r in rows if r.get("database") == db and r.get("application_name") == app]
    assert len(mine) == 5000, f"SHOW CLIENTS listed {len(mine)} of 5,000 clients"
    # the clients are still fine
    c = rawpg.RawConn(socks[-1], timeout=10)
    assert c.query_rows("SELECT 'client 5000'") == [("client 5000",)]
    _close_all(socks)
    _assert_alive(px, db)


@timeout(60)
def test_console_control_needs_admin(env):
    """Spec 10 (PgBouncer CVE class: console commands from a non-admin): stats_users get SHOW
    only, 42501 for PAUSE, KILL, RELOAD, SET, SHUTDOWN...; other users cannot use the console;
    none of the refused commands takes effect."""
    db = env.database()
    px = env.pgmux([db], {"pool_mode": "transaction", "default_pool_size": 3,
                          "admin_users": "postgres", "stats_users": "statsu"},
                   users={TEST_USER: "", "statsu": "", "plainu": ""})
    commands = ["PAUSE", f"PAUSE {db}", f"KILL {db}", "RELOAD", "SUSPEND", f"DISABLE {db}",
                f"RECONNECT {db}", "SET default_pool_size = 7", "SHUTDOWN",
                "SHUTDOWN WAIT_FOR_CLIENTS"]
    with psycopg.connect(px.dsn("pgmux", "statsu"), autocommit=True, connect_timeout=10) as c:
        assert c.execute("SHOW VERSION").fetchall(), "a stats user cannot run SHOW"
        for cmd in commands:
            try:
                c.execute(cmd)
                raise AssertionError(f"stats user ran {cmd!r}")
            except psycopg.Error as e:
                assert e.sqlstate == "42501", f"{cmd!r}: {e.sqlstate} {e}"
        assert c.execute("SHOW POOLS").fetchall() is not None
    # a user in neither list cannot reach the console at all
    try:
        psycopg.connect(px.dsn("pgmux", "plainu"), autocommit=True, connect_timeout=10).close()
        raise AssertionError("a user in neither admin_users nor stats_users reached the console")
    except psycopg.OperationalError:
        pass
    lg = _tcp(px, "pgmux", "plainu", login=False)
    lg.send(rawpg.startup_packet({"user": "plainu", "database": "pgmux"}))
    state, errs = _closed_or_error(lg)
    assert errs and errs[0].get("C") == "42501", errs
    lg.close()
    # nothing took effect: pgmux runs, is not paused, the setting is unchanged
    assert px.alive()
    t0 = time.monotonic()
    _assert_alive(px, db, "not paused")
    assert time.monotonic() - t0 < 3
    cfg = {r["key"]: r["value"] for r in px.show("CONFIG")}
    assert cfg.get("default_pool_size") == "3", cfg.get("default_pool_size")
    # the commands are real: the admin may run one
    with psycopg.connect(px.dsn("pgmux", "postgres"), autocommit=True, connect_timeout=10) as c:
        c.execute("RELOAD")


# ----------------------------------------------------------------------------------------------
# PgBouncer's CVE classes: packet-length overflow, oversized SCRAM fields, bytes stuffed after
# SSLRequest (client and server side), an ErrorResponse without SQLSTATE

@timeout(60)
def test_bad_packet_lengths(env):
    """CVE class (packet-length overflow): lengths 0xFFFFFFFF, 0x80000000 and 3 in a startup
    packet, from an idle client and from a client inside a transaction: pgmux answers 08P01 or
    closes, stays up, and the single server is not handed on mid-message."""
    db = env.database()
    px = env.pgmux([db], TX1)
    for ln in (0xFFFFFFFF, 0x80000000, 3):
        bad = b"Q" + struct.pack("!I", ln) + b"SELECT 1\0"
        # an idle client (no server linked)
        c = _tcp(px, db)
        c.send(bad)
        state, errs = _closed_or_error(c)
        assert {e.get("C") for e in errs} <= {"08P01"}, (hex(ln), _short(errs))
        assert state == "closed" or errs, f"{ln:#x}: a bogus length was accepted silently"
        c.close()
        # a client inside a transaction (its server linked)
        c = _tcp(px, db)
        assert not rawpg.errors(c.query("BEGIN"))
        assert c.query_rows("SELECT 'in tx'") == [("in tx",)]
        c.send(bad)
        state, errs = _closed_or_error(c)
        assert {e.get("C") for e in errs} <= {"08P01"}, (hex(ln), _short(errs))
        assert state == "closed" or errs, f"{ln:#x}: a bogus length was accepted silently"
        c.close()
        _assert_alive(px, db, f"after {ln:#x}")
        # a startup packet
        s = socket.create_connection(("127.0.0.1", px.port), timeout=5)
        s.sendall(struct.pack("!II", ln, rawpg.PROTOCOL_V3) + _cstr("user") + _cstr(TEST_USER) +
                  _cstr("database") + _cstr(db) + b"\0")
        state, errs = _closed_or_error(rawpg.RawConn(s, timeout=5))
        assert state == "closed", f"startup length {ln:#x}: still open"
        assert {e.get("C") for e in errs} <= {"08P01"}, (hex(ln), _short(errs))
        s.close()
        _assert_alive(px, db, f"after startup {ln:#x}")


def _login_refused(conn, timeout=5.0):
    """Reads until pgmux closes a login; fails if it got further than SCRAM's first step."""
    msgs = []
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError("pgmux neither refused nor closed the login: "
                                 f"{[(t, b[:40]) for t, b in msgs]}")
        try:
            t, b = conn.read_msg(left)
        except (EOFError, ConnectionResetError):
            break
        msgs.append((t, b))
        if t == b"R":
            assert _auth_code(b) not in (0, 12), f"the oversized login went on: {b[:40]!r}"
    return rawpg.errors(msgs)


@timeout(60)
def test_oversized_scram_fields(env):
    """CVE class (oversized SCRAM fields): a client-first-message with a 100 kB nonce, and a
    client-final-message with a 100 kB proof, are refused cleanly; pgmux stays up and a real
    SCRAM login works."""
    db = env.database()
    user = env.role("au_scram_big")
    px = env.pgmux([db], {"auth_type": "scram-sha-256"}, users={user: scram_secret("Big-pw1")})
    # client-first with a 100 kB nonce
    c = _tcp(px, db, user, login=False)
    c.send(rawpg.startup_packet({"user": user, "database": db}))
    t, b = c.read_msg()
    assert t == b"R" and _auth_code(b) == 10, (t, b)
    c.send(_sasl_initial("n,,n=,r=" + "A" * 100_000))
    errs = _login_refused(c)
    assert {e.get("C") for e in errs} <= {"08P01", "28000", "28P01", "54000"}, _short(errs)
    c.close()
    # a normal client-first, then a client-final with a 100 kB proof
    lg = Login(px.port, db, user, "Big-pw1", stop_at_server_first=True)
    attrs = dict(kv.split("=", 1) for kv in lg.server_first.split(","))
    lg.conn.send(_password_msg(f"c=biws,r={attrs['r']},p={'B' * 100_000}".encode()))
    errs = _login_refused(lg.conn)
    assert {e.get("C") for e in errs} <= {"08P01", "28000", "28P01", "54000"}, _short(errs)
    lg.close()
    assert px.alive()
    ok = Login(px.port, db, user, "Big-pw1")
    assert ok.result == "ok", ok.result
    ok.close()


@timeout(60)
def test_ssl_request_with_stuffed_bytes(env):
    """CVE class (CVE-2021-23214, client side): plaintext stuffed after SSLRequest in the same
    write is refused with 08P01, never answered 'S'; TLS logins still work."""
    from test_client_tls import SSL_REQUEST, Pki, tls_settings
    pki = Pki(env.dir)
    db = env.database()
    px = env.pgmux([db], tls_settings(pki, "prefer"))
    s = socket.create_connection(("127.0.0.1", px.port), timeout=5)
    s.sendall(SSL_REQUEST + rawpg.startup_packet({"user": TEST_USER, "database": db}) +
              rawpg.query("SELECT 'stuffed'"))
    c = rawpg.RawConn(s, timeout=5)
    c._fill(1, time.monotonic() + 5)
    assert bytes(c.buf[:1]) != b"S", "pgmux answered S with plaintext queued behind it"
    state, errs = _closed_or_error(c)
    assert state == "closed" and [e.get("C") for e in errs] == ["08P01"], (state, errs)
    s.close()
    with psycopg.connect(px.dsn(db, sslmode="require", sslrootcert=pki.ca_crt),
                         autocommit=True, connect_timeout=10) as conn:
        assert conn.execute("SELECT 'tls ok'").fetchone()[0] == "tls ok"
    _assert_alive(px, db)


class FakeServer:
    """A hostile PostgreSQL server: a listening socket whose connections (from pgmux) are each
    handled by handler(sock) in a thread."""

    def __init__(self, handler):
        self.lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(16)
        self.port = self.lsock.getsockname()[1]
        self.handler = handler
        self.connections = 0
        self.errors = []
        self.socks = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                s, _ = self.lsock.accept()
            except OSError:
                return
            self.connections += 1
            self.socks.append(s)
            threading.Thread(target=self._run, args=(s,), daemon=True).start()

    def _run(self, s):
        s.settimeout(20)
        try:
            self.handler(s)
        except (OSError, EOFError) as e:
            self.errors.append(e)
        finally:
            with contextlib.suppress(OSError):
                s.close()

    def close(self):
        with contextlib.suppress(OSError):
            self.lsock.close()
        _close_all(self.socks)


def _recv_exact(s, n):
    out = b""
    while len(out) < n:
        d = s.recv(n - len(out))
        if not d:
            raise EOFError("pgmux closed the server connection")
        out += d
    return out


def _fake_read_startup(s):
    """Reads pgmux's startup packet (answering an SSLRequest with 'N'); returns its params."""
    while True:
        ln = struct.unpack("!I", _recv_exact(s, 4))[0]
        body = _recv_exact(s, ln - 4)
        if struct.unpack("!I", body[:4])[0] == 80877103:
            s.sendall(b"N")
            continue
        parts = body[4:].split(b"\0")
        return dict(zip(parts[0::2], parts[1::2]))


def _fake_read_msg(s):
    t = _recv_exact(s, 1)
    ln = struct.unpack("!I", _recv_exact(s, 4))[0]
    return t, _recv_exact(s, ln - 4)


def _backend(kind, body=b""):
    return kind + struct.pack("!I", len(body) + 4) + body


def _fake_login_ok(s):
    out = _backend(b"R", struct.pack("!I", 0))
    for k, v in (("server_version", "15.0"), ("server_encoding", "UTF8"),
                 ("client_encoding", "UTF8"), ("DateStyle", "ISO, MDY"),
                 ("integer_datetimes", "on"), ("standard_conforming_strings", "on"),
                 ("TimeZone", "UTC"), ("IntervalStyle", "postgres"),
                 ("application_name", ""), ("is_superuser", "off")):
        out += _backend(b"S", _cstr(k) + _cstr(v))
    out += _backend(b"K", struct.pack("!II", 4242, 1234)) + _backend(b"Z", b"I")
    s.sendall(out)


# ErrorResponse bodies a hostile server may send: no SQLSTATE, unterminated fields, nothing
HOSTILE_ERRORS = [
    b"SERROR\0MHostile error without SQLSTATE\0\0",
    b"SERROR\0MHostile unterminated",
    b"C08P01",
    b"",
    b"\0",
    b"S" + b"E" * 40_000,             # longer than the receive buffer, unterminated
]


def _fake_query_errors(s):
    """Logs pgmux in, then answers every Query with the next hostile ErrorResponse and
    ReadyForQuery (Terminate ends it)."""
    _fake_read_startup(s)
    _fake_login_ok(s)
    n = 0
    while True:
        t, _ = _fake_read_msg(s)
        if t == b"X":
            return
        if t in (b"Q", b"S"):
            s.sendall(_backend(b"E", HOSTILE_ERRORS[n % len(HOSTILE_ERRORS)]) +
                      _backend(b"Z", b"I"))
            n += 1


def _fake_login_error(body):
    def handler(s):
        _fake_read_startup(s)
        s.sendall(_backend(b"E", body))
        with contextlib.suppress(OSError, EOFError):
            _recv_exact(s, 1)        # until pgmux closes
    return handler


def _fake_ssl_stuffed(s):
    ln = struct.unpack("!I", _recv_exact(s, 4))[0]
    body = _recv_exact(s, ln - 4)
    assert struct.unpack("!I", body[:4])[0] == 80877103, "pgmux sent no SSLRequest"
    # 'S' and, in the same write, bytes that would be read as if they came through TLS
    s.sendall(b"S" + _backend(b"R", struct.pack("!I", 0)) + _backend(b"Z", b"I"))
    with contextlib.suppress(OSError, EOFError):
        _recv_exact(s, 1)


@timeout(60)
def test_hostile_server_messages(env):
    """CVE classes (server side): a server that answers queries with ErrorResponses without
    SQLSTATE or with unterminated fields, fails logins that way, or stuffs bytes after its 'S'
    to SSLRequest (CVE-2021-23222): the client gets an error, pgmux logs why and never
    crashes, and other databases keep working."""
    db = env.database()
    fakes = {"fk_query": FakeServer(_fake_query_errors),
             "fk_ssl": FakeServer(_fake_ssl_stuffed)}
    for i, body in enumerate(HOSTILE_ERRORS):
        fakes[f"fk_login{i}"] = FakeServer(_fake_login_error(
            b"SFATAL\0MHostile login failure\0\0" if i == 0 else body))
    for f in fakes.values():
        env.on_cleanup(f.close)
    dbs = {db: env.db_entry(db)}
    for name, f in fakes.items():
        extra = " sslmode=require" if name == "fk_ssl" else ""
        dbs[name] = f"host=127.0.0.1 port={f.port} dbname=fake user=fake{extra}"
    px = env.pgmux(dbs, {"pool_mode": "transaction", "default_pool_size": 1,
                         "max_prepared_statements": 200, "server_login_retry": 1,
                         "query_wait_timeout": 10},
                   users={TEST_USER: "", "fake": ""})

    # errors without SQLSTATE / with unterminated fields after login
    c = _tcp(px, "fk_query", timeout=10)
    for i in range(len(HOSTILE_ERRORS) * 2):
        try:
            msgs = c.query(f"SELECT {i}", timeout=10)
        except (EOFError, ConnectionResetError):
            break                    # pgmux may drop a server that breaks the protocol
        assert rawpg.errors(msgs), f"query {i}: no error reached the client: {rawpg.types(msgs)}"
        assert msgs[-1][0] == b"Z"
        assert px.alive(), f"pgmux died on hostile error {i}"
    c.close()
    # the same through the extended protocol with tracked prepared statements, where pgmux
    # reads the server's errors to match them to its own requests
    c = _tcp(px, "fk_query", timeout=10)
    for i in range(len(HOSTILE_ERRORS) * 2):
        try:
            c.send(_parse(f"s{i % 3}", "SELECT 1") + _bind("", f"s{i % 3}") + _execute() +
                   rawpg.SYNC)
            msgs = c.read_until_ready(timeout=10)
        except (EOFError, ConnectionResetError):
            break
        assert rawpg.errors(msgs), f"batch {i}: no error reached the client: {rawpg.types(msgs)}"
        assert px.alive(), f"pgmux died on hostile error {i} (extended protocol)"
    c.close()
    _assert_alive(px, db, "after hostile errors")

    # a login failure with such an error reaches the client as an error, and is logged
    problems = []
    for name in [n for n in fakes if n.startswith("fk_login")] + ["fk_ssl"]:
        mark = px.log_mark()
        c = _tcp(px, name, timeout=15, login=False)
        c.send(rawpg.startup_packet({"user": TEST_USER, "database": name}))
        try:
            state, errs = _closed_or_error(c, timeout=15)
        except socket.timeout:
            raise AssertionError(f"{name}: the client got nothing for a failed server login "
                                 f"(pgmux alive: {px.alive()})") from None
        c.close()
        assert px.alive(), f"pgmux died on {name}"
        assert fakes[name].connections >= 1, f"{name}: pgmux never connected"
        assert errs, f"{name}: the client got no error ({state})"
        log = px.log_since(mark)
        lines = [l for l in log.splitlines() if name in l]
        if not errs[0].get("M", "").strip():
            problems.append(f"{name}: the client's error says nothing: {_short(errs)}")
        if not any(re.search(r"fail|error|invalid|refus", l, re.I) for l in lines):
            problems.append(f"{name}: the failure is not logged: {lines}")
        if name == "fk_ssl":
            if not re.search(r"unencrypted|after SSL", log, re.I):
                problems.append(f"{name}: the stuffed bytes are not named in the log: {lines}")
            if not all(e.get("C") for e in errs):
                problems.append(f"{name}: an error without SQLSTATE: {errs}")
        elif name == "fk_login0" and "Hostile login failure" not in log:
            problems.append(f"{name}: the server's message is not logged: {lines}")
    assert not problems, "\n".join(problems)
    _assert_alive(px, db, "after hostile logins")
