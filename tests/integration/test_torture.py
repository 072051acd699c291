"""Protocol torture test (issue 11): hostile clients attack pgmux while honest clients check
that they get exactly their own answers.

Four variants, each against a private PostgreSQL 15 topology of its own (never a mock; private
so that its log can name the client behind every line: log_line_prefix has %a, the
application_name pgmux sets on a server for the client it serves):
  * transaction mode, default_pool_size = 4, max_prepared_statements = 200: two dozen attackers
    and eight honest clients take turns on the same four server connections;
  * session mode (4 + 8 servers: the honest clients hold one each while connected, every
    client reconnects often, servers go from attacker to honest client after DISCARD ALL);
  * statement mode (pool 4; the honest clients run no transactions);
  * a routed [database X] section (primary + one streaming replica, transaction mode,
    pool_size = 4): reads go to the replica, transactions to the primary.

Attackers (PGMUX_TORTURE_ATTACKERS, 24) log in for real, then run random scenarios from a
seeded generator, a few per connection, thinking up to PGMUX_TORTURE_THINK (0.6) seconds
between them (holding no server: the honest clients must keep getting turns):
  pipelined Parse/Bind/Describe/Execute/Close/Sync/Flush/Query with unnamed, named, duplicate,
  nonexistent, 63-byte-prefix-equal and long names, malformed bodies (consistent lengths);
  multi-statement simple Queries with errors, DISCARD ALL, DEALLOCATE, RESET ALL, half-open
  transactions; COPY FROM STDIN ended by CopyFail, by a dropped connection, by bad data with
  CopyData still streaming after the error, in both protocols, pipelined, stray copy messages;
  Flush floods (up to 2,000,000 behind a pg_sleep: issue 11 defect 2); oversized Query, Parse,
  Bind and CopyData (up to 3 MB; defect 1's shape: a 20,000-byte portal name, a 100 kB
  parameter, a duplicate named Parse); lengths < 4, beyond max_packet_size, or beyond what is
  sent before a disconnect; unknown message types; truncated messages then disconnect;
  Terminate in the middle of a stream; floods of 250 named statements (the server's LRU turns
  over); real CancelRequests with the BackendKeyData pgmux gave (whole or byte by byte), and
  wrong keys; slow readers that stop reading a huge result, then vanish or cancel.  Every
  stream goes whole, in random chunks, or in 1-7 byte sends; disconnects (FIN, RST, Terminate)
  come at random byte offsets.  An attacker that gets no answer within a few seconds drops its
  connection.  Each attacker also checks what it receives: a well-formed backend stream (known
  types, sane lengths) that never contains an honest client's token.

Honest clients (8: psycopg 3 with prepare_threshold=0 incl. pipeline mode and binary results,
asyncpg with and without its statement cache, and a raw wire client with named statements,
pipelined batches and an error in mid-pipeline) run before, during and after the attack; every
answer carries a per-client token and sequence number and must be exactly its own (rows, and
for the raw client the exact message sequence).  Any error on an honest client fails the test:
none is expected, because the attackers take no action that legitimately reaches another
session of a transaction pooler (no session SET, no DDL, no locks, no LISTEN; their cancel
requests carry their own keys, or wrong and random ones).

Invariants checked:
  * pgmux alive the whole time (checked every 0.1 s); a sanitizer report fails the test through
    the harness's cleanup (the CI runs the ASan build);
  * every honest answer correct; every honest client makes progress before, during and after
    the attack;
  * PostgreSQL's logs (primary and replica):
      - no protocol-error line (invalid message length/format, unexpected or invalid message
        type, insufficient data, incomplete message, EOF within the length word) attributed to
        an honest client: they send nothing malformed, so such a line means bytes of another
        client reached their server;
      - through pgmux, no "invalid message length" and no "invalid frontend message type" at
        all, whoever the line is attributed to.  The attackers cannot cause either one
        legitimately: pgmux refuses unknown types and lengths < 4 or > max_packet_size itself
        (256 MB here, under PostgreSQL's 1 GB), and the attackers keep the messages PostgreSQL
        limits to 10,000 bytes (Sync, Flush, Describe, Execute, Close, CopyDone, CopyFail)
        below that.  Such a line means a server was given bytes that were not at a message
        boundary: a server reused in mid-message (defect 2 shows up exactly so, attributed to
        the attacker whose half-sent message the next client's bytes completed), or pgmux
        writing its own bytes (a Terminate, a SET) into a message a client left unfinished.
    The attackers' malformed bodies and disconnects legitimately produce the other lines on
    their own servers: counted and printed, not failed.  (ERRORs are not logged at all,
    log_min_messages = log: an ERROR reaches the client that caused it, and an honest client
    fails on it itself.)
  * no client or server left behind: with every client gone, RECONNECT + WAIT_CLOSE on the
    console return, and PostgreSQL has no backend of pgmux's left;
  * pgmux's RSS (VmRSS), measured with every client gone and every server closed, within 8 MB
    of the same measure before the attack (glibc told to mmap large blocks, so that it gives
    them back; under ASan a 16 MB quarantine, allowed on top).

Self-check: PGMUX_TORTURE_DIRECT=1 points every client at PostgreSQL directly; the honest
clients and the checks that apply (answers, honest-attributed log lines, attacker stream
checks) must pass there too.

Reproducing, narrowing down, soaking: the seed is printed; PGMUX_TORTURE_SEED=N replays the
same attack streams (interleavings still vary); PGMUX_TORTURE_SECONDS (20; the other variants
run half as long) lengthens the attack; PGMUX_TORTURE_ONLY / PGMUX_TORTURE_SKIP take
comma-separated scenario names (pipeline, copy, ...), and SKIP also variants and features
(copy_extended, oversized_issue1, mangleP: malformed Parse bodies, longportal: portal names
over 16 KiB); PGMUX_TORTURE_RECORD=DIR writes every attacker connection's bytes and a log of
its scenarios (with byte offsets) to DIR; PGMUX_TORTURE_DEBUG=1 prints SHOW SERVERS and
SHOW CLIENTS twice a second; PGMUX_TORTURE_VERBOSE=N runs pgmux with -v N times.
"""

import asyncio
import collections
import contextlib
import os
import random
import re
import socket
import struct
import time
from pathlib import Path

import asyncpg
import psycopg

from pgharness import PGMUX_BIN, PGMUX_SECTION, TEST_USER, Skip, conninfo, timeout

SEED = int(os.environ.get("PGMUX_TORTURE_SEED") or random.SystemRandom().randrange(1, 2**31))
SECONDS = float(os.environ.get("PGMUX_TORTURE_SECONDS", "20"))
N_ATTACKERS = int(os.environ.get("PGMUX_TORTURE_ATTACKERS", "24"))
DIRECT = os.environ.get("PGMUX_TORTURE_DIRECT", "") not in ("", "0")
RECORD = os.environ.get("PGMUX_TORTURE_RECORD", "")
N_HONEST = 8
POOL = 4
MAX_PACKET = 256 * 1024 * 1024
SMALL_LIMIT = 9000          # body bytes of PostgreSQL's "small" messages stay under 10,000
HONEST_MARK = b"h0nest"     # in every honest token; never sent by an attacker
EVIL_APP = "torture_evil_"
HONEST_APP = "torture_honest_"
OP_TIMEOUT = 60             # one honest operation; generous: attackers hold a server < 3 s
RSS_SLACK_KB = 8 * 1024     # allowed growth of pgmux's RSS (plus 16 MB of quarantine under ASan)
# attackers think (up to THINK seconds, holding no server) between scenarios and connections:
# two dozen of them share four servers with the honest clients, who must keep getting turns
THINK = float(os.environ.get("PGMUX_TORTURE_THINK", "0.6"))
# PGMUX_TORTURE_ONLY / PGMUX_TORTURE_SKIP: comma-separated scenario names (pipeline, copy...),
# to narrow a failure down
ONLY = {s.strip() for s in os.environ.get("PGMUX_TORTURE_ONLY", "").split(",") if s.strip()}
SKIP = {s.strip() for s in os.environ.get("PGMUX_TORTURE_SKIP", "").split(",") if s.strip()}


def scenario_enabled(name):
    short = name[3:]
    return (not ONLY or short in ONLY) and short not in SKIP


def feature_enabled(name):
    """Variants (copy_fail, oversized_issue1...) and features (mangleP: malformed Parse
    bodies, longportal: portal names over 16 KiB) that PGMUX_TORTURE_SKIP can leave out."""
    return name not in SKIP

PROTOCOL_V3 = 196608
CANCEL_CODE = 80877102
BACKEND_TYPES = frozenset(b"RKSZTDCEN123tnsIGHWdcAVv")


def _is_asan(path):
    with contextlib.suppress(OSError):
        with open(path, "rb") as f:
            return b"__asan_init" in f.read()
    return False


# ----------------------------------------------------------------------------------------------
# frontend messages

def msg(kind, body=b""):
    return kind + struct.pack("!I", len(body) + 4) + body


def cstr(s):
    return (s.encode() if isinstance(s, str) else s) + b"\0"


def startup_packet(params):
    body = struct.pack("!I", PROTOCOL_V3)
    for k, v in params.items():
        body += cstr(k) + cstr(v)
    body += b"\0"
    return struct.pack("!I", len(body) + 4) + body


def Q(sql):
    return msg(b"Q", cstr(sql))


def P(sql, name=b"", oids=()):
    return msg(b"P", cstr(name) + cstr(sql) + struct.pack("!H", len(oids)) +
               b"".join(struct.pack("!I", o) for o in oids))


def B(params=(), portal=b"", stmt=b"", fmts=(), rfmts=()):
    body = cstr(portal) + cstr(stmt) + struct.pack("!H", len(fmts))
    body += b"".join(struct.pack("!H", f) for f in fmts)
    body += struct.pack("!H", len(params))
    for p in params:
        if p is None:
            body += struct.pack("!i", -1)
        else:
            p = p.encode() if isinstance(p, str) else p
            body += struct.pack("!i", len(p)) + p
    body += struct.pack("!H", len(rfmts)) + b"".join(struct.pack("!H", f) for f in rfmts)
    return msg(b"B", body)


def E(portal=b"", max_rows=0):
    return msg(b"E", cstr(portal) + struct.pack("!I", max_rows))


def D(kind=b"P", name=b""):
    return msg(b"D", kind + cstr(name))


def C(kind=b"S", name=b""):
    return msg(b"C", kind + cstr(name))


SYNC = msg(b"S")
FLUSH = msg(b"H")
TERMINATE = msg(b"X")
COPY_DONE = msg(b"c")


def copy_data(data):
    return msg(b"d", data)


def copy_fail(why=b"ev1l abort"):
    return msg(b"f", cstr(why))


def cancel_packet(pid, key):
    return struct.pack("!IIII", 16, CANCEL_CODE, pid, key)


# ----------------------------------------------------------------------------------------------
# backend stream: a checker that never buffers more than a header and a small body

def _fields(body):
    out = {}
    for part in body.split(b"\0"):
        if part:
            out[chr(part[0])] = part[1:].decode(errors="replace")
    return out


def _data_row(body):
    n = struct.unpack("!H", body[:2])[0]
    pos, out = 2, []
    for _ in range(n):
        ln = struct.unpack("!i", body[pos:pos + 4])[0]
        pos += 4
        if ln < 0:
            out.append(None)
        else:
            out.append(body[pos:pos + ln].decode(errors="replace"))
            pos += ln
    return tuple(out)


class Inbox:
    """What one connection received: message counts, the last errors, and the first anomaly
    (a type byte no backend sends, a length < 4, or an honest token on an attacker's
    connection).  keep=True keeps every message (honest raw client)."""

    def __init__(self, keep=False, scan_mark=True):
        self.keep = keep
        self.scan_mark = scan_mark
        self.msgs = collections.deque()
        self.hdr = bytearray()
        self.body = bytearray()
        self.kind = None
        self.left = 0
        self.big = False
        self.counts = collections.Counter()
        self.z = 0
        self.errors = collections.deque(maxlen=8)
        self.key = None
        self.anomaly = None
        self.tail = b""
        self.nbytes = 0
        self.last = 0.0
        self.eof = False
        self.changed = asyncio.Event()

    def feed(self, data):
        self.nbytes += len(data)
        self.last = time.monotonic()
        if self.scan_mark and self.anomaly is None:
            s = self.tail + data[:len(HONEST_MARK)]   # a token split between two reads
            if HONEST_MARK in s or HONEST_MARK in data:
                i = data.find(HONEST_MARK)
                ctx = data[max(0, i - 60):i + 60] if i >= 0 else s
                self.anomaly = f"received an honest client's token: {bytes(ctx)!r}"
            keep = len(HONEST_MARK) - 1
            self.tail = bytes(data[-keep:]) if len(data) >= keep else (self.tail + data)[-keep:]
        if self.anomaly is None:
            self._parse(memoryview(data))
        self.changed.set()

    def _parse(self, mv):
        pos, n = 0, len(mv)
        while pos < n and self.anomaly is None:
            if self.kind is None:
                need = 5 - len(self.hdr)
                take = mv[pos:pos + need]
                self.hdr += take
                pos += len(take)
                if len(self.hdr) < 5:
                    return
                kind = self.hdr[0]
                ln = struct.unpack("!I", self.hdr[1:5])[0]
                self.hdr.clear()
                if kind not in BACKEND_TYPES:
                    self.anomaly = f"backend message type {bytes([kind])!r} (0x{kind:02x}) does " \
                                   f"not exist (length field {ln})"
                    return
                if ln < 4 or ln > 0x40000000:
                    self.anomaly = f"backend message {chr(kind)!r} with length {ln}"
                    return
                self.kind = kind
                self.left = ln - 4
                self.big = self.left > 65536 and not self.keep
                self.body.clear()
                if self.left == 0:
                    self._done()
                continue
            take = mv[pos:pos + self.left]
            if not self.big:
                self.body += take
            pos += len(take)
            self.left -= len(take)
            if self.left == 0:
                self._done()

    def _done(self):
        kind, body = self.kind, bytes(self.body)
        self.kind = None
        self.counts[kind] += 1
        if kind == 0x5A:  # Z
            self.z += 1
        elif kind == 0x45 and not self.big:  # E
            f = _fields(body)
            self.errors.append((f.get("C"), f.get("M", "")[:200]))
        elif kind == 0x4B and len(body) >= 8:  # K
            self.key = struct.unpack("!II", body[:8])
        if self.keep:
            self.msgs.append((bytes([kind]), body))

    async def wait(self, pred, timeout, tick=None):
        """Until pred() (checked on every arrival, and every tick seconds if given)."""
        deadline = time.monotonic() + timeout
        while not pred():
            if self.eof or self.anomaly:
                return pred()
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self.changed.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.changed.wait(), min(left, tick or left))
        return True


class NoHog(Exception):
    """Another attacker is holding a server for long already: skip this scenario."""


class Gone(Exception):
    """This connection is over (closed by us or by the peer)."""


class WireConn:
    """A raw protocol connection on asyncio streams: a reader task feeds an Inbox (it can be
    paused to play a slow reader); sends can be split at any byte."""

    def __init__(self, reader, writer, inbox):
        self.reader, self.writer, self.inbox = reader, writer, inbox
        self.reading = asyncio.Event()
        self.reading.set()
        self.task = None
        self.closed = False
        self.sent = 0
        self.record = None

    @classmethod
    async def open(cls, host, port, params, keep=False, scan_mark=True, login=True,
                   timeout=15):
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        c = cls(reader, writer, Inbox(keep=keep, scan_mark=scan_mark))
        c.task = asyncio.ensure_future(c._read_loop())
        if login:
            try:
                c.writer.write(startup_packet(params))
                ok = await c.inbox.wait(lambda: c.inbox.z >= 1 or c.inbox.counts[ord("E")],
                                        timeout)
                if not ok or c.inbox.z < 1:
                    raise ConnectionError(f"login failed: {list(c.inbox.errors)} "
                                          f"anomaly={c.inbox.anomaly} eof={c.inbox.eof}")
            except BaseException:
                c.abort()
                raise
            if keep:
                c.inbox.msgs.clear()
        return c

    async def _read_loop(self):
        try:
            while True:
                await self.reading.wait()
                data = await self.reader.read(65536)
                if not data:
                    break
                self.inbox.feed(data)
        except (ConnectionError, OSError):
            pass
        finally:
            self.inbox.eof = True
            self.inbox.changed.set()

    def write(self, data):
        if self.closed or self.writer.is_closing():
            raise Gone("closed")
        self.writer.write(data)
        self.sent += len(data)
        if self.record is not None:
            self.record.write(data)

    async def send(self, data, rng=None, mode="whole"):
        """mode: whole, chunks (random 1..8192-byte sends) or tiny (1..7-byte sends)."""
        try:
            if mode == "whole" or rng is None:
                self.write(data)
                await self.writer.drain()
                return
            i = 0
            while i < len(data):
                n = rng.randint(1, 7) if mode == "tiny" else rng.randint(1, 8192)
                self.write(data[i:i + n])
                i += n
                await self.writer.drain()
                if mode == "tiny" or rng.random() < 0.05:
                    await asyncio.sleep(0)
        except (ConnectionError, OSError) as e:
            raise Gone(repr(e)) from None

    def close(self, how="fin"):
        """how: terminate (X then FIN), fin, rst (SO_LINGER 0: the peer sees a reset)."""
        if self.closed:
            return
        self.closed = True
        with contextlib.suppress(Exception):
            if how == "terminate" and not self.writer.is_closing():
                self.writer.write(TERMINATE)
            if how == "rst":
                sock = self.writer.get_extra_info("socket")
                if sock is not None:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                self.writer.transport.abort()
            else:
                self.writer.close()
        if self.task:
            self.task.cancel()
        if self.record is not None:
            with contextlib.suppress(Exception):
                self.record.close()

    def abort(self):
        self.close("rst")


# ----------------------------------------------------------------------------------------------
# the run's shared state

class Run:
    def __init__(self, name, host, port, dbname, px=None, statement_mode=False,
                 transactions=True, seed=SEED):
        self.name = name
        self.host, self.port, self.dbname = host, port, dbname
        self.px = px
        self.statement_mode = statement_mode
        self.transactions = transactions
        self.seed = seed
        self.t0 = time.monotonic()
        self.stop_attack = asyncio.Event()
        self.stop_honest = asyncio.Event()
        self.failures = []
        self.hogs = asyncio.Semaphore(1)   # one attacker at a time may hold a server long
        self.stats = collections.Counter()
        self.scenarios = collections.Counter()
        self.sc_time = collections.Counter()
        self.sc_bytes = collections.Counter()
        self.honest_ops = collections.Counter()
        self.honest_kinds = collections.Counter()
        self.active = {}                   # attacker -> (t, scenario, conn number, details)
        self.recent = collections.deque(maxlen=400)
        self.died_at = None
        self.active_at_death = None
        self.max_rss = 0
        self.loop_lag = 0.0

    def now(self):
        return time.monotonic() - self.t0

    def fail(self, what):
        if len(self.failures) < 200:
            self.failures.append(f"[{self.now():7.2f}s] {what}")
        print(f"FAILURE [{self.now():.2f}s] {what}", flush=True)

    def pid_alive(self):
        return self.px is None or self.px.alive()


# ----------------------------------------------------------------------------------------------
# attackers

SQLS = [
    (b"SELECT 1", 0), (b"SELECT $1::int", 1), (b"SELECT 'ev1l-' || $1::text", 1),
    (b"SELECT generate_series(1, $1::int)", 1), (b"SELEC broken", 0), (b"SELECT 1/0", 0),
    (b"SELECT pg_sleep(0.01)", 0), (b"BEGIN", 0), (b"COMMIT", 0), (b"ROLLBACK", 0),
    (b"SELECT a, b FROM evil LIMIT 3", 0), (b"INSERT INTO evil VALUES ($1::int, 'p')", 1),
    (b"", 0), (b"SELECT 1; SELECT 2", 0), (b"COPY evil FROM STDIN", 0),
    (b"COPY (SELECT 'ev1l', g FROM generate_series(1, 50) g) TO STDOUT", 0),
    (b"SELECT $1, $2", 2), (b"SELECT repeat('ev1l', 5000)", 0), (b"SAVEPOINT sp", 0),
    (b"DEALLOCATE ALL", 0), (b"DISCARD ALL", 0), (b"DEALLOCATE s1", 0),
    (b"SELECT $1::int / 0", 1), (b"SELECT * FROM no_such_table", 0),
    (b"PREPARE evilp AS SELECT 1", 0), (b"EXECUTE evilp", 0),
]

SIMPLE_PARTS = [
    "SELECT 1", "SELECT 'ev1l'", "SELECT 1/0", "SELEC x", "", "BEGIN", "COMMIT", "ROLLBACK",
    "SELECT pg_sleep(0.02)", "SELECT generate_series(1, 2000)", "INSERT INTO evil VALUES (1, 'q')",
    "SHOW server_version", "SELECT repeat('ev1l', 20000)", "SELECT * FROM no_such_table",
    "DO $$BEGIN RAISE NOTICE 'ev1l notice'; END$$", "DEALLOCATE ALL", "DISCARD ALL",
    "RESET ALL", "SET LOCAL statement_timeout = '1ms'", "SAVEPOINT a", "ROLLBACK TO SAVEPOINT a",
    "SELECT 'ev1l';;", "DEALLOCATE nope", "PREPARE evilq(int) AS SELECT $1",
    "EXECUTE evilq(1)", "SELECT count(*) FROM evil",
]

STMT_NAMES = [b"s1", b"s2", b"s3", b"evil", b"S1"]
BIG_NAMED_TEXTS = [b"SELECT 'ev1l-big-1' /* " + b"a" * 1_000_000 + b" */",
                   b"SELECT 'ev1l-big-2' /* " + b"b" * 1_000_000 + b" */"]
BOGUS_TYPES = [b"z", b"\x00", b"p", b"\xff", b"A", b"Y", b"!", b"a", b"e", b"T", b"1"]


def stmt_name(rng):
    r = rng.random()
    if r < 0.35:
        return b""
    if r < 0.75:
        return rng.choice(STMT_NAMES)
    if r < 0.85:
        return b"x" * 63 + rng.choice([b"a", b"b", b""])   # equal in PostgreSQL's 63 bytes
    if r < 0.95:
        return b"nope_" + str(rng.randint(0, 9)).encode()
    return b"n" * rng.choice([64, 200, 1000, 8000])


def portal_name(rng, big_ok=False):
    r = rng.random()
    if r < 0.6:
        return b""
    if r < 0.85:
        return rng.choice([b"p1", b"p2", b"P1"])
    if r < 0.95 or not big_ok or not feature_enabled("longportal"):
        return b"q" * rng.choice([63, 64, 500, 8000])
    return b"p" * 20000


def param_value(rng):
    r = rng.random()
    if r < 0.35:
        return str(rng.randint(-5, 100000)).encode()
    if r < 0.5:
        return b"ev1l"
    if r < 0.6:
        return None
    if r < 0.9:
        return rng.randbytes(rng.randint(0, 16))
    return b"v" * rng.choice([10_000, 100_000, 300_000])


def mangle(rng, m):
    """A message with the same type and a consistent length but a broken body."""
    kind, body = m[:1], m[5:]
    if not feature_enabled("mangle" + kind.decode()):
        return m
    r = rng.random()
    if r < 0.4 and body:
        body = body[:rng.randrange(len(body))]
    elif r < 0.7:
        body = body + rng.randbytes(rng.randint(1, 20))
    else:
        body = rng.randbytes(rng.randint(0, 40))
    if kind in b"SHDECcf" and len(body) > SMALL_LIMIT:
        body = body[:SMALL_LIMIT]
    return msg(kind, body)


def gen_extended(rng, invalid_p=0.1):
    """A random pipelined extended-protocol batch; returns (bytes, number of Syncs)."""
    out, nsync = [], 0
    for _ in range(rng.randint(1, 40)):
        k = rng.choices("PBDEHSCdQ", weights=[6, 6, 2, 6, 2, 3, 2, 1, 1])[0]
        if k == "P":
            sql, n = rng.choice(SQLS)
            oids = rng.choice([(), (), (23,), (25, 23), (0,), (999999,)])
            m = P(sql, stmt_name(rng), oids)
        elif k == "B":
            n = rng.choice([0, 1, 1, 2, 3])
            fmts = rng.choice([(), (), (0,), (1,), (0, 1)])
            m = B([param_value(rng) for _ in range(n)], portal_name(rng, True), stmt_name(rng),
                  fmts, rng.choice([(), (0,), (1,)]))
        elif k == "D":
            m = D(rng.choice([b"S", b"P", b"P", b"X"]), rng.choice([stmt_name, portal_name])(rng))
        elif k == "E":
            m = E(portal_name(rng), rng.choice([0, 0, 1, 2]))
        elif k == "H":
            m = FLUSH
        elif k == "S":
            m = SYNC
            nsync += 1
        elif k == "C":
            m = C(rng.choice([b"S", b"P", b"Z"]), rng.choice([stmt_name, portal_name])(rng))
        elif k == "d":
            m = copy_data(b"1\tev1l\n")
        else:
            m = Q(rng.choice(SIMPLE_PARTS))
            nsync += 1
        if rng.random() < invalid_p and k not in "SHQ":
            m = mangle(rng, m)
        out.append(m)
    if rng.random() < 0.8:
        out.append(SYNC)
        nsync += 1
    return b"".join(out), nsync


class Attacker:
    def __init__(self, run, idx, rng):
        self.run, self.idx, self.rng = run, idx, rng
        self.conn = None
        self.conn_no = 0
        self.z0 = 0
        self.log = None

    # -- helpers ----------------------------------------------------------------------------------
    def note(self, scenario, detail=""):
        rec = (round(self.run.now(), 2), self.idx, self.conn_no, scenario, detail)
        self.run.active[self.idx] = rec
        self.run.recent.append(rec)
        if self.log:
            self.log.write(f"{rec[0]} conn {self.conn_no} @{self.conn.sent} {scenario} {detail}\n")

    @contextlib.asynccontextmanager
    async def hog(self):
        """For scenarios that hold a server long: one attacker at a time.  Never waits (the
        attacker may hold a server already): when another attacker is hogging, the scenario
        is skipped."""
        if self.run.hogs.locked():
            self.run.stats["hogging scenarios skipped"] += 1
            raise NoHog()
        async with self.run.hogs:
            yield

    def pick(self, group, options):
        """A random variant of a scenario, leaving out those PGMUX_TORTURE_SKIP names as
        GROUP_VARIANT (e.g. oversized_issue1)."""
        ok = [o for o in options if feature_enabled(f"{group}_{o}")]
        return self.rng.choice(ok or options)

    def mode(self, data):
        m = self.rng.choices(["whole", "chunks", "tiny"], weights=[6, 3, 1])[0]
        if m == "tiny" and len(data) > 3000:
            m = "chunks"
        if m == "chunks" and len(data) > 4_000_000:
            m = "whole"
        return m

    async def send(self, data, cut_p=0.1, mode=None):
        """Sends data (split as the generator says); with probability cut_p only a random
        prefix of it, then drops the connection (FIN or RST)."""
        rng = self.rng
        if data and rng.random() < cut_p:
            cut = rng.randrange(len(data))
            self.note("cut", f"after {cut} of {len(data)} bytes")
            await self.conn.send(data[:cut], rng, mode or self.mode(data[:cut]))
            if rng.random() < 0.5:
                await asyncio.sleep(rng.uniform(0, 0.05))
            self.conn.close(rng.choice(["fin", "rst"]))
            raise Gone("cut")
        await self.conn.send(data, rng, mode or self.mode(data))

    async def wait_z(self, n, timeout=2.0, give_up=True):
        """Waits for n more ReadyForQuery.  An attacker that does not get them in time (its
        stream left the server in COPY, or waiting for a Sync, or it is still queued for a
        server) gives up and drops the connection: attackers never hold a server for long."""
        inbox = self.conn.inbox
        want, since = inbox.z + n, inbox.nbytes
        # Done when n ReadyForQuery came, or when answers came and then nothing for 0.3 s:
        # the attackers' guesses of what comes back are rough (after an error PostgreSQL skips
        # everything up to the next Sync, simple Queries included; COPY ignores Syncs).
        ok = await inbox.wait(lambda: inbox.z >= want or (
            inbox.nbytes > since and time.monotonic() - inbox.last > 0.3), timeout, tick=0.1)
        if not ok and not inbox.eof:
            self.run.stats["attacker waits for ReadyForQuery timed out"] += 1
            self.note("wait_z timed out", f"{self.conn.inbox.z} of {want}")
            if give_up:
                self.conn.close(self.rng.choice(["fin", "rst", "terminate"]))
                raise Gone("gave up waiting")
        return ok

    async def wait_kind(self, kinds, timeout=3.0):
        base = {k: self.conn.inbox.counts[ord(k)] for k in kinds}
        return await self.conn.inbox.wait(
            lambda: any(self.conn.inbox.counts[ord(k)] > base[k] for k in kinds), timeout)

    # -- scenarios --------------------------------------------------------------------------------
    async def sc_pipeline(self):
        data, nsync = gen_extended(self.rng, invalid_p=self.rng.choice([0, 0.05, 0.3]))
        self.note("pipeline", f"{len(data)} bytes, {nsync} syncs")
        await self.send(data)
        if nsync and self.rng.random() < 0.8:
            await self.wait_z(nsync)

    async def sc_simple(self):
        rng = self.rng
        sql = "; ".join(rng.choice(SIMPLE_PARTS) for _ in range(rng.randint(1, 6)))
        n = rng.randint(1, 4)
        self.note("simple", f"{n} x {sql[:120]!r}")
        await self.send(Q(sql) * n)
        await self.wait_z(n)
        if rng.random() < 0.3:
            await self.send(Q("ROLLBACK"))
            await self.wait_z(1)

    async def sc_copy(self):
        rng = self.rng
        v = self.pick("copy", ["fail", "drop", "bad_then_data", "extended", "pipelined",
                                "big", "out", "no_server"])
        rows = b"".join(b"%d\tev1l\n" % i for i in range(rng.randint(1, 200)))
        self.note("copy", v)
        if v == "no_server":
            # copy messages with no COPY running (pgmux drops them with no server linked)
            await self.send(copy_data(rows) * rng.randint(1, 50) +
                            rng.choice([COPY_DONE, copy_fail(), b""]) +
                            Q("SELECT 'ev1l-after-stray-copy'"))
            await self.wait_z(1)
            return
        if v == "out":
            await self.send(Q("COPY (SELECT 'ev1l', g FROM generate_series(1, 20000) g) TO STDOUT"))
            if rng.random() < 0.5:
                await asyncio.sleep(rng.uniform(0, 0.02))
                raise Gone(self.conn.close(rng.choice(["fin", "rst"])))
            await self.wait_z(1)
            return
        if v == "extended":
            head = P(b"COPY evil FROM STDIN") + B() + E()
        else:
            head = Q("COPY evil FROM STDIN")
        if v == "pipelined":
            tail = rng.choice([COPY_DONE, copy_fail()]) + (SYNC if rng.random() < 0.5 else b"")
            await self.send(head + copy_data(rows) + tail + Q("SELECT 'ev1l-after-copy'"))
            await self.wait_z(2, 5)
            return
        await self.send(head + (FLUSH if v == "extended" else b""))
        await self.wait_kind("GE")
        if v == "big":
            chunk = b"".join(b"%d\tev1l-%s\n" % (i, b"z" * 1000) for i in range(2000))  # ~2 MB
            await self.send(copy_data(chunk), cut_p=0.3)
            await self.send(rng.choice([COPY_DONE, copy_fail()]) + SYNC)
            await self.wait_z(1, 5)
            return
        await self.send(copy_data(rows) * rng.randint(1, 5))
        if v == "fail":
            await self.send(copy_fail() + (SYNC if v == "extended" else b""))
        elif v == "drop":
            await self.send(copy_data(rows)[:rng.randint(1, 10)], cut_p=0)
            raise Gone(self.conn.close(rng.choice(["fin", "rst"])))
        else:  # bad row: the server fails the COPY while CopyData keeps streaming
            bad = copy_data(b"not_an_int\tev1l\n")
            more = copy_data(rows) * rng.choice([10, 300, 1000])
            await self.send(bad + more + rng.choice([COPY_DONE, copy_fail(), b""]) + SYNC
                            + Q("SELECT 'ev1l-after-bad-copy'"))
        await self.wait_z(1, 5)

    async def sc_flush_flood(self):
        rng = self.rng
        sleepy = rng.random() < 0.5
        # issue 11 defect 2: a server asleep while the flood fills every buffer on the way
        n = rng.choice([300_000, 300_000, 2_000_000] if sleepy else [1000, 50_000, 300_000])
        pre = Q("SELECT pg_sleep(0.3)") if sleepy else rng.choice(
            [Q("SELECT 1"), P(b"SELECT 'ev1l'") + B() + E(), b""])
        post = rng.choice([SYNC, Q("SELECT 'ev1l-after-flood'"), b""])
        self.note("flush_flood", f"{n} flushes, sleepy={sleepy}")
        data = pre + FLUSH * n + post
        if sleepy:
            async with self.hog():
                await self.send(data, cut_p=0.2, mode="whole")
                await self.wait_z(2, 5)
        else:
            await self.send(data, cut_p=0.2, mode="whole")
            await self.wait_z(1, 5)

    async def sc_oversized(self):
        rng = self.rng
        big = rng.choice([300_000, 1_000_000, 3_000_000])
        v = self.pick("oversized", ["query", "comment", "parse", "named_parse", "bind", "issue1",
                                     "issue1", "portal"])
        self.note("oversized", f"{v} {big}")
        if v == "query":
            data = Q(b"SELECT length('" + b"x" * big + b"')")
        elif v == "comment":
            data = Q(b"/* " + b"e" * big + b" */ SELECT 'ev1l'")
        elif v == "parse":
            data = P(b"SELECT 'ev1l' /* " + b"t" * big + b" */") + B() + E() + SYNC
        elif v == "named_parse":
            name = rng.choice([b"big1", b"big2", b"s1"])
            data = P(rng.choice(BIG_NAMED_TEXTS), name) + SYNC + B(stmt=name) + E() + SYNC
        elif v == "bind":
            data = P(b"SELECT length($1::text)") + B([b"y" * big]) + E() + SYNC
        elif v == "portal":
            portal = b"p" * rng.choice([16_000, 20_000, 70_000])
            data = (P(b"SELECT $1::text", b"s2") + B([b"ev1l"], portal, b"s2") +
                    D(b"P", portal[:SMALL_LIMIT]) + E(portal[:SMALL_LIMIT]) + SYNC)
        else:
            # issue 11 defect 1: a Bind with a 20,000-byte portal name, then a duplicate Parse
            data = (P(b"SELECT 2", b"s1") + SYNC + P(b"SELECT $1::int") +
                    B([b"v" * 100_000], b"p" * 20_000) + P(b"SELECT 2", b"s1") + SYNC)
        await self.send(data, cut_p=0.15)
        await self.wait_z(data.count(SYNC) or 1, 5)

    async def sc_bogus_length(self):
        rng = self.rng
        v = self.pick("bogus_length", ["short", "huge", "partial"])
        pre = rng.choice([b"", Q("SELECT 1"), P(b"SELECT 1") + B()])
        if v == "short":
            data = (rng.choice(b"QPBDESHCdcfX").to_bytes(1, "big") +
                    struct.pack("!I", rng.randint(0, 3)))
            data += rng.randbytes(rng.randint(0, 8))
        elif v == "huge":
            data = rng.choice([b"Q", b"P", b"B", b"S", b"H"]) + struct.pack(
                "!I", rng.choice([0xffffffff, 0x80000000, 0x7fffffff, MAX_PACKET + 5]))
            data += rng.randbytes(rng.randint(0, 100))
        else:
            # a length pgmux accepts, but only part of the body: then a disconnect
            ln = rng.choice([100_000, 5_000_000, 100_000_000])
            data = rng.choice([b"Q", b"P", b"B", b"d"]) + struct.pack("!I", ln)
            data += b"SELECT 'ev1l' " + b"-" * rng.randint(0, 50_000)
        self.note("bogus_length", v)
        await self.send(pre + data, cut_p=0)
        if v != "partial":
            await self.conn.inbox.wait(lambda: False, rng.uniform(0, 0.5))
        else:
            await asyncio.sleep(rng.uniform(0, THINK))
        raise Gone(self.conn.close(rng.choice(["fin", "rst", "terminate"])))

    async def sc_unknown_type(self):
        rng = self.rng
        pre = rng.choice([b"", Q("SELECT 1"), P(b"SELECT 1") + B() + E(), FLUSH * 10])
        t = rng.choice(BOGUS_TYPES)
        self.note("unknown_type", repr(t))
        data = pre + msg(t, rng.randbytes(rng.randint(0, 100))) + Q("SELECT 'ev1l'")
        await self.send(data, cut_p=0)
        await self.conn.inbox.wait(lambda: False, rng.uniform(0, 0.3))
        raise Gone(self.conn.close(rng.choice(["fin", "rst"])))

    async def sc_truncate(self):
        rng = self.rng
        data, _ = gen_extended(rng, 0.05)
        if rng.random() < 0.5:
            data += Q("SELECT 'ev1l' /* " + "w" * rng.randint(0, 100_000) + " */")
        cut = rng.randrange(max(1, len(data)))
        self.note("truncate", f"{cut} of {len(data)}")
        await self.send(data[:cut], cut_p=0)
        await asyncio.sleep(rng.uniform(0, 0.1))
        raise Gone(self.conn.close(rng.choice(["fin", "rst", "terminate"])))

    async def cancel(self, pid, key, split=False, extra=b""):
        try:
            r, w = await asyncio.wait_for(asyncio.open_connection(self.run.host, self.run.port), 5)
        except (OSError, asyncio.TimeoutError):
            return
        try:
            pkt = cancel_packet(pid, key) + extra
            if split:
                for i in range(len(pkt)):
                    w.write(pkt[i:i + 1])
                    await w.drain()
            else:
                w.write(pkt)
                await w.drain()
            with contextlib.suppress(asyncio.TimeoutError, OSError, ConnectionError):
                await asyncio.wait_for(r.read(1000), 3)
        except (OSError, ConnectionError):
            pass
        finally:
            w.close()

    async def sc_cancel(self):
        rng = self.rng
        key = self.conn.inbox.key or (0, 0)
        q = rng.choice(["SELECT pg_sleep(0.4)", "SELECT count(*) FROM generate_series(1, 2000000)",
                        "SELECT pg_sleep(0.2); SELECT 'ev1l'", None])
        self.note("cancel", str(q))
        async with self.hog():
            if q is None:
                data = P(b"SELECT pg_sleep(0.3)") + B() + E() + rng.choice([SYNC, FLUSH])
            else:
                data = Q(q)
            await self.send(data, cut_p=0.05)
            await asyncio.sleep(rng.uniform(0, 0.25))
            r = rng.random()
            if r < 0.7:
                await self.cancel(*key, split=rng.random() < 0.3)
            elif r < 0.85:
                await self.cancel(key[0], key[1] ^ 0x5a5a, split=False)         # wrong key
            else:
                await self.cancel(rng.getrandbits(32), rng.getrandbits(32), extra=b"junk")
            await self.wait_z(1, 4)
            if data.endswith(FLUSH):
                await self.send(SYNC)
                await self.wait_z(1, 4)

    async def sc_slow_reader(self):
        rng = self.rng
        q = rng.choice(["SELECT repeat('ev1l', 2500) FROM generate_series(1, 200000)",
                        "COPY (SELECT repeat('ev1l', 2000) FROM generate_series(1, 200000)) "
                        "TO STDOUT"])
        self.note("slow_reader", q[:40])
        async with self.hog():
            await self.send(Q(q), cut_p=0)
            await asyncio.sleep(rng.uniform(0, 0.05))
            self.conn.reading.clear()
            await asyncio.sleep(rng.uniform(0.2, 0.8))
            end = rng.choice(["rst", "fin", "more", "cancel"])
            self.note("slow_reader_end", end)
            if end == "more":
                # pipeline more work behind the stuck result, then vanish
                await self.send(Q("SELECT 'ev1l-more'") + FLUSH * 1000, cut_p=0)
                await asyncio.sleep(rng.uniform(0, THINK))
                raise Gone(self.conn.close("rst"))
            if end == "cancel":
                await self.cancel(*(self.conn.inbox.key or (0, 0)))
                self.conn.reading.set()
                await self.wait_z(1, 1.5)   # PostgreSQL may see the cancel only rows later
                return
            raise Gone(self.conn.close(end))

    async def sc_transaction(self):
        rng = self.rng
        v = self.pick("transaction", ["open", "failed", "extended_open", "savepoint"])
        self.note("transaction", v)
        if v == "open":
            await self.send(Q("BEGIN; INSERT INTO evil VALUES (2, 'tx'); SELECT 'ev1l'"))
        elif v == "failed":
            await self.send(Q("BEGIN") + Q("SELECT 1/0") + Q("SELECT 'ev1l'"))
        elif v == "extended_open":
            await self.send(P(b"BEGIN") + B() + E() + P(b"SELECT 'ev1l'") + B() + E() + SYNC)
        else:
            await self.send(Q("BEGIN; SAVEPOINT a; SELECT 1/0") + Q("ROLLBACK TO SAVEPOINT a"))
        await self.wait_z(1, 3)
        end = rng.choice(["commit", "idle", "drop"])
        if end == "commit":
            await self.send(Q("COMMIT"))
            await self.wait_z(1)
        elif end == "idle":
            await asyncio.sleep(rng.uniform(0, 0.3))
            await self.send(Q("ROLLBACK"))
            await self.wait_z(1)
        else:
            raise Gone(self.conn.close(rng.choice(["fin", "rst", "terminate"])))

    async def sc_many_names(self):
        rng = self.rng
        n = rng.choice([50, 250])
        base = rng.randint(0, 10**6)
        names = [b"ev%d_%d" % (base, i) for i in range(n)]
        data = b"".join(P(b"SELECT %d" % (i % 300), nm) for i, nm in enumerate(names)) + SYNC
        data += b"".join(B(stmt=nm) + E() for nm in names[::7]) + SYNC
        if rng.random() < 0.5:
            data += b"".join(C(b"S", nm) for nm in names) + SYNC
        self.note("many_names", str(n))
        await self.send(data, cut_p=0.1)
        await self.wait_z(data.count(SYNC), 5)

    async def sc_terminate_mid(self):
        rng = self.rng
        data, _ = gen_extended(rng, 0)
        cut = rng.randint(0, len(data))
        self.note("terminate_mid", f"X at {cut}")
        await self.send(data[:cut] + TERMINATE + data[cut:] + Q("SELECT 'ev1l'"), cut_p=0)
        await asyncio.sleep(rng.uniform(0, 0.1))
        raise Gone(self.conn.close(rng.choice(["fin", "rst"])))

    SCENARIOS = [("sc_pipeline", 10), ("sc_simple", 6), ("sc_copy", 5), ("sc_flush_flood", 2),
                 ("sc_oversized", 3), ("sc_bogus_length", 2), ("sc_unknown_type", 2),
                 ("sc_truncate", 3), ("sc_cancel", 2), ("sc_slow_reader", 1),
                 ("sc_transaction", 3), ("sc_many_names", 1), ("sc_terminate_mid", 1)]

    async def run_forever(self):
        run, rng = self.run, self.rng
        names = [s for s, _ in self.SCENARIOS if scenario_enabled(s)]
        weights = [w for s, w in self.SCENARIOS if scenario_enabled(s)]
        while not run.stop_attack.is_set():
            self.conn_no += 1
            try:
                self.conn = await WireConn.open(run.host, run.port, {
                    "user": TEST_USER, "database": run.dbname,
                    "application_name": f"{EVIL_APP}{self.idx}"}, timeout=20)
            except (OSError, ConnectionError, asyncio.TimeoutError) as e:
                run.stats["attacker login failed"] += 1
                if run.stats["attacker login failed"] <= 3:
                    print(f"attacker {self.idx}: login failed: {e!r}")
                await asyncio.sleep(0.1)
                continue
            if RECORD:
                d = Path(RECORD)
                d.mkdir(parents=True, exist_ok=True)
                self.conn.record = open(d / f"{run.name}_a{self.idx}_c{self.conn_no}.bin", "wb")
                if self.log is None:
                    self.log = open(d / f"{run.name}_a{self.idx}.log", "w", buffering=1)
            sc = None
            try:
                for _ in range(rng.randint(1, 6)):
                    if run.stop_attack.is_set() or self.conn.inbox.eof:
                        break
                    await asyncio.sleep(rng.uniform(0, THINK))
                    sc = rng.choices(names, weights)[0]
                    run.scenarios[sc] += 1
                    t_sc, b_sc = time.monotonic(), self.conn.inbox.nbytes
                    try:
                        await asyncio.wait_for(getattr(self, sc)(), 20)
                    except NoHog:
                        pass
                    finally:
                        run.sc_time[sc] += time.monotonic() - t_sc
                        run.sc_bytes[sc] += self.conn.inbox.nbytes - b_sc
                    sc = None
                self.conn.close(rng.choice(["terminate", "terminate", "fin", "rst"]))
                run.stats["attacker connections ended by the attacker"] += 1
            except Gone:
                run.stats["attacker connections dropped mid-stream"] += 1
            except asyncio.TimeoutError:
                run.stats[f"attacker scenario timeouts ({sc})"] += 1
            except (OSError, ConnectionError, RuntimeError) as e:
                run.stats[f"attacker {type(e).__name__}"] += 1
            finally:
                self.conn.close("rst")
                run.active.pop(self.idx, None)
                inbox = self.conn.inbox
                if inbox.anomaly:
                    run.fail(f"attacker {self.idx} connection {self.conn_no}: {inbox.anomaly}; "
                             f"its recent scenarios: {self.recent_scenarios()}")
                run.stats["attacker bytes received"] += inbox.nbytes
                run.stats["attacker bytes sent"] += self.conn.sent
            # paced: the attackers share four servers with the honest clients, which must keep
            # getting their turn
            await asyncio.sleep(rng.uniform(0, THINK))

    def recent_scenarios(self):
        return [r for r in self.run.recent if r[1] == self.idx][-6:]


# ----------------------------------------------------------------------------------------------
# honest clients

class Honest:
    def __init__(self, run, idx, kind, rng):
        self.run, self.idx, self.kind, self.rng = run, idx, kind, rng
        self.n = 0
        self.app = f"{HONEST_APP}{idx}"

    def token(self):
        self.n += 1
        return f"{HONEST_MARK.decode()}-{self.run.seed}-{self.idx}-{self.n}", self.n

    def check(self, what, got, want):
        if got != want:
            self.run.fail(f"honest {self.idx} ({self.kind}) {what}: got {got!r}, want {want!r}")
            return False
        return True

    async def run_forever(self):
        run = self.run
        while not run.stop_honest.is_set():
            try:
                conn = await asyncio.wait_for(self.connect(), OP_TIMEOUT)
            except Exception as e:  # noqa: BLE001
                run.fail(f"honest {self.idx} ({self.kind}) could not connect: {e!r}")
                await asyncio.sleep(0.2)
                continue
            try:
                for _ in range(self.rng.randint(10, 40)):
                    if run.stop_honest.is_set():
                        break
                    op = await asyncio.wait_for(self.one_op(conn), OP_TIMEOUT)
                    run.honest_ops[self.idx] += 1
                    run.honest_kinds[f"{self.kind}:{op}"] += 1
            except asyncio.TimeoutError:
                run.fail(f"honest {self.idx} ({self.kind}) operation {self.n} took over "
                         f"{OP_TIMEOUT}s")
            except Exception as e:  # noqa: BLE001
                run.fail(f"honest {self.idx} ({self.kind}) operation {self.n} failed: {e!r}")
            finally:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(self.disconnect(conn), 10)


class HonestPsycopg(Honest):
    async def connect(self):
        dsn = conninfo(host=self.run.host, port=self.run.port, dbname=self.run.dbname,
                       user=TEST_USER, application_name=self.app, connect_timeout=20)
        return await psycopg.AsyncConnection.connect(dsn, autocommit=True, prepare_threshold=0)

    async def disconnect(self, conn):
        await conn.close()

    async def one_op(self, conn):
        rng, run = self.rng, self.run
        r = rng.random()
        tok, n = self.token()
        if r < 0.35:
            cur = await conn.execute("SELECT %s::text AS tok, %s::int AS n", (tok, n))
            self.check("SELECT token", await cur.fetchall(), [(tok, n)])
            return "select"
        if r < 0.5:
            m = rng.randint(1, 30)
            cur = await conn.execute(
                "SELECT %s::text || '-' || g FROM generate_series(1, %s::int) g", (tok, m))
            self.check("rows", await cur.fetchall(), [(f"{tok}-{g}",) for g in range(1, m + 1)])
            return "rows"
        if r < 0.65 and run.transactions:
            async with conn.transaction():
                await conn.execute("INSERT INTO honest_log VALUES (%s, %s, %s)", (self.idx, n, tok))
                cur = await conn.execute(
                    "SELECT token FROM honest_log WHERE client = %s AND n = %s", (self.idx, n))
                self.check("transaction", await cur.fetchall(), [(tok,)])
            return "transaction"
        if r < 0.85:
            curs = []
            async with conn.pipeline():
                for j in range(rng.randint(2, 6)):
                    curs.append((j, await conn.execute("SELECT %s::text, %s::int",
                                                       (f"{tok}.{j}", j))))
            for j, cur in curs:
                self.check("pipeline", await cur.fetchall(), [(f"{tok}.{j}", j)])
            return "pipeline"
        cur = conn.cursor(binary=True)
        await cur.execute("SELECT %s::text, %s::int8 * 2", (tok, n))
        self.check("binary", await cur.fetchall(), [(tok, 2 * n)])
        return "binary"


class HonestAsyncpg(Honest):
    async def connect(self):
        kw = {"statement_cache_size": 0} if self.idx % 2 else {}
        return await asyncpg.connect(host=self.run.host, port=self.run.port, user=TEST_USER,
                                     database=self.run.dbname, ssl=False, timeout=20,
                                     server_settings={"application_name": self.app}, **kw)

    async def disconnect(self, conn):
        await conn.close()

    async def one_op(self, conn):
        rng, run = self.rng, self.run
        r = rng.random()
        tok, n = self.token()
        if r < 0.35:
            row = await conn.fetchrow("SELECT $1::text AS tok, $2::int AS n", tok, n)
            self.check("fetchrow", tuple(row), (tok, n))
            return "fetchrow"
        if r < 0.55:
            m = rng.randint(1, 30)
            rows = await conn.fetch(
                "SELECT $1::text || '-' || g FROM generate_series(1, $2::int) g", tok, m)
            self.check("fetch", [tuple(x) for x in rows],
                       [(f"{tok}-{g}",) for g in range(1, m + 1)])
            return "fetch"
        if r < 0.7 and run.transactions:
            async with conn.transaction():
                await conn.execute("INSERT INTO honest_log VALUES ($1, $2, $3)", self.idx, n, tok)
                v = await conn.fetchval("SELECT token FROM honest_log WHERE client = $1 AND n = $2",
                                        self.idx, n)
                self.check("transaction", v, tok)
            return "transaction"
        ps = await conn.prepare("SELECT $1::text || '#' || $2::int")
        self.check("prepared", await ps.fetchval(tok, n), f"{tok}#{n}")
        return "prepared"


class HonestRaw(Honest):
    """A raw wire client: exact message sequences, named statements, pipelined batches."""

    async def connect(self):
        c = await WireConn.open(self.run.host, self.run.port, {
            "user": TEST_USER, "database": self.run.dbname, "application_name": self.app},
            keep=True, scan_mark=False, timeout=20)
        c.prepared = set()
        return c

    async def disconnect(self, conn):
        conn.close("terminate")

    async def exchange(self, conn, data, nz):
        conn.inbox.msgs.clear()
        want = conn.inbox.z + nz
        await conn.send(data)
        ok = await conn.inbox.wait(lambda: conn.inbox.z >= want, OP_TIMEOUT)
        if conn.inbox.anomaly:
            raise AssertionError(f"malformed stream: {conn.inbox.anomaly}")
        if not ok:
            raise AssertionError(f"no ReadyForQuery (eof={conn.inbox.eof}); got "
                                 f"{[(t, b[:80]) for t, b in conn.inbox.msgs]}")
        # ParameterStatus and notices may come at any time: not part of the answer
        return [(t, b) for t, b in conn.inbox.msgs if t not in (b"S", b"N")]

    def expect(self, what, msgs, types, rows):
        got_types = b"".join(t for t, _ in msgs)
        got_rows = [_data_row(b) for t, b in msgs if t == b"D"]
        errs = [_fields(b) for t, b in msgs if t == b"E"]
        ok = self.check(f"{what} message types", got_types, types)
        ok = ok and self.check(f"{what} rows", got_rows, rows)
        return ok, errs

    async def one_op(self, conn):
        rng = self.rng
        r = rng.random()
        tok, n = self.token()
        if r < 0.25:
            msgs = await self.exchange(conn, Q(f"SELECT '{tok}.a'; SELECT '{tok}.b', {n}"), 1)
            self.expect("multi-statement", msgs, b"TDCTDCZ", [(f"{tok}.a",), (f"{tok}.b", str(n))])
            return "simple"
        if r < 0.6:
            # named statements, prepared once per connection, reused in a pipelined batch
            name = f"h{self.idx}_{rng.randint(0, 3)}".encode()
            data = b""
            types = b""
            if name not in conn.prepared:
                data += P(b"SELECT $1::text || '!'", name) + SYNC
                types += b"1Z"
                conn.prepared.add(name)
            k = rng.randint(1, 4)
            for j in range(k):
                data += B([f"{tok}.{j}"], stmt=name) + E() + SYNC
            types += b"2DCZ" * k
            msgs = await self.exchange(conn, data, types.count(b"Z"))
            self.expect("named batch", msgs, types, [(f"{tok}.{j}!",) for j in range(k)])
            return "named"
        if r < 0.85:
            data = (P(b"SELECT $1::text, $2::int") + B([tok, str(n)]) + D(b"P") + E() + SYNC)
            msgs = await self.exchange(conn, data, 1)
            self.expect("unnamed", msgs, b"12TDCZ", [(tok, str(n))])
            return "unnamed"
        # an error in the middle of a pipeline: the rest of its sync block is skipped, the next
        # block runs
        data = (P(b"SELECT 1 / (g - g) FROM generate_series(1, 1) g") + B() + E() +
                P(b"SELECT 'skipped'") + B() + E() + SYNC +
                Q(f"SELECT '{tok}'"))
        msgs = await self.exchange(conn, data, 2)
        ok, errs = self.expect("error recovery", msgs, b"12EZTDCZ", [(tok,)])
        if ok:
            self.check("error recovery SQLSTATE", [e.get("C") for e in errs], ["22012"])
        return "error"


# ----------------------------------------------------------------------------------------------
# the orchestration

def rss_kb(pid):
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return None


async def console(px, *commands, timeout=30):
    """Runs console commands (simple protocol); returns the errors."""
    admin_db = "pgbouncer" if px.section == "pgbouncer" else "pgmux"
    c = await WireConn.open("127.0.0.1", px.port, {"user": "postgres", "database": admin_db},
                            keep=True, scan_mark=False, timeout=timeout)
    try:
        errs = []
        for cmd in commands:
            want = c.inbox.z + 1
            await c.send(Q(cmd))
            if not await c.inbox.wait(lambda: c.inbox.z >= want, timeout):
                raise AssertionError(f"console {cmd} did not answer within {timeout}s")
            errs += [_fields(b) for t, b in c.inbox.msgs if t == b"E"]
            c.inbox.msgs.clear()
        return errs
    finally:
        c.close("terminate")


async def close_servers(run):
    """RECONNECT + WAIT_CLOSE with no client left: pgmux closes every server.  A server that
    does not close is stuck (linked to a client that is gone, or never released)."""
    try:
        errs = await console(run.px, "RECONNECT", "WAIT_CLOSE", timeout=20)
        if errs:
            run.fail(f"console RECONNECT/WAIT_CLOSE failed: {errs}")
        return True
    except (AssertionError, OSError, ConnectionError, asyncio.TimeoutError) as e:
        detail = ""
        with contextlib.suppress(Exception):
            clients = [c for c in await show(run.px, "CLIENTS") if c.get("application_name")]
            detail = f"; SHOW SERVERS: {await show(run.px, 'SERVERS')}; SHOW CLIENTS: {clients}"
        run.fail(f"with every client gone, pgmux did not close its servers ({e}){detail}")
        return False


async def show(px, what):
    """SHOW <what> on the console as a list of dicts (for the debug output)."""
    admin_db = "pgbouncer" if px.section == "pgbouncer" else "pgmux"
    c = await WireConn.open("127.0.0.1", px.port, {"user": "postgres", "database": admin_db},
                            keep=True, scan_mark=False, timeout=10)
    try:
        want = c.inbox.z + 1
        await c.send(Q(f"SHOW {what}"))
        await c.inbox.wait(lambda: c.inbox.z >= want, 10)
        cols, out = [], []
        for t, b in c.inbox.msgs:
            if t == b"T":
                n = struct.unpack("!H", b[:2])[0]
                pos = 2
                for _ in range(n):
                    e = b.index(b"\0", pos)
                    cols.append(b[pos:e].decode())
                    pos = e + 1 + 18
            elif t == b"D":
                out.append(dict(zip(cols, _data_row(b))))
        return out
    finally:
        c.close("terminate")


async def debug_dump(run):
    """PGMUX_TORTURE_DEBUG=1: what pgmux's servers and clients are doing, every 2 s."""
    while True:
        await asyncio.sleep(0.5)
        with contextlib.suppress(Exception):
            for r in await show(run.px, "SERVERS"):
                app = r.get("application_name") or ""
                doing = run.active.get(int(app[len(EVIL_APP):])) if app.startswith(EVIL_APP) else ""
                print(f"[{run.now():.1f}s] server", {k: r.get(k) for k in (
                    "state", "application_name", "remote_pid")}, doing)
            cls = await show(run.px, "CLIENTS")
            print(f"[{run.now():.1f}s] clients by state:",
                  collections.Counter((r.get("state"), (r.get("application_name") or "")[:10])
                                      for r in cls))


async def monitor(run):
    if os.environ.get("PGMUX_TORTURE_DEBUG") and run.px is not None:
        asyncio.ensure_future(debug_dump(run))
    while True:
        if not run.pid_alive():
            if run.died_at is None:
                run.died_at = run.now()
                run.active_at_death = dict(run.active)
                run.fail(f"pgmux died (exit status {run.px.proc.poll()}); attacker scenarios "
                         f"in flight: {sorted(run.active_at_death.values())}")
                run.stop_attack.set()
                run.stop_honest.set()
            return
        if run.px is not None:
            v = rss_kb(run.px.proc.pid)
            if v:
                run.max_rss = max(run.max_rss, v)
        t = time.monotonic()
        await asyncio.sleep(0.1)
        run.loop_lag = max(run.loop_lag, time.monotonic() - t - 0.1)


def honest_clients(run):
    kinds = [HonestPsycopg, HonestPsycopg, HonestPsycopg, HonestAsyncpg, HonestAsyncpg,
             HonestAsyncpg, HonestRaw, HonestRaw]
    return [k(run, i, k.__name__[6:].lower(), random.Random(f"{run.seed}:{run.name}:honest:{i}"))
            for i, k in enumerate(kinds[:N_HONEST])]


async def torture(run, seconds):
    """Warm-up with the honest clients, baseline RSS, the attack, the post-attack check, the
    final RSS.  Failures go to run.failures."""
    rss = {}
    mon = asyncio.ensure_future(monitor(run))
    honest = honest_clients(run)
    try:
        # phase 1: honest clients alone (warm-up), then every client and server closed: the
        # RSS baseline
        tasks = [asyncio.ensure_future(h.run_forever()) for h in honest]
        if not await wait_progress(run, {h.idx: 3 for h in honest}, 60):
            run.fail(f"honest clients made no progress before the attack: {dict(run.honest_ops)}")
        run.stop_honest.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        if run.px is not None and run.pid_alive():
            await close_servers(run)
            await asyncio.sleep(1.0)
            rss["baseline"] = rss_kb(run.px.proc.pid)
            print(f"[{run.now():.1f}s] RSS baseline {rss['baseline']} kB")
        if run.failures:
            return rss
        run.stop_honest.clear()

        # phase 2: the attack, honest clients throughout
        htasks = [asyncio.ensure_future(h.run_forever()) for h in honest]
        attackers = [Attacker(run, i, random.Random(f"{run.seed}:{run.name}:evil:{i}"))
                     for i in range(N_ATTACKERS)]
        atasks = [asyncio.ensure_future(a.run_forever()) for a in attackers]
        t_attack = time.monotonic()
        ops_at_start = sum(run.honest_ops.values())
        print(f"[{run.now():.1f}s] attack: {N_ATTACKERS} attackers, {len(honest)} honest "
              f"clients, {seconds:g}s")
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(run.stop_attack.wait(), seconds)
        run.stop_attack.set()
        print(f"[{run.now():.1f}s] stopping the attackers; honest operations during the attack: "
              f"{sum(run.honest_ops.values()) - ops_at_start}")
        # attackers still inside a scenario after 2 s are cancelled: one more disconnect at a
        # random point
        done, pending = await asyncio.wait(atasks, timeout=2)
        for t in pending:
            t.cancel()
        await asyncio.wait(atasks, timeout=10)
        for a in attackers:
            if a.conn is not None:
                a.conn.close("rst")
        run.stats["attackers cancelled at the end"] = len(pending)
        for t in done:
            if t.exception() is not None:
                run.fail(f"attacker task raised (a bug in the test?): {t.exception()!r}")
        ops_at_stop = dict(run.honest_ops)
        print(f"[{run.now():.1f}s] attack over after {time.monotonic() - t_attack:.1f}s; honest "
              f"operations so far {sum(ops_at_stop.values())}")

        # phase 3: every honest client must still work after the attack
        stalled = False
        if run.died_at is None:
            want = {h.idx: ops_at_stop.get(h.idx, 0) + 3 for h in honest}
            if not await wait_progress(run, want, 30):
                stalled = True
                run.fail(f"honest clients stalled after the attack (servers lost to the "
                         f"attackers?): operations before {ops_at_stop}, 30 s later "
                         f"{dict(run.honest_ops)}")
        run.stop_honest.set()
        await asyncio.wait(htasks, timeout=10)
        for t in htasks:
            if not t.done():
                t.cancel()
                if not stalled:
                    stalled = True
                    run.fail("an honest client was still waiting for an answer 10 s after "
                             "the attack ended")
            elif t.exception() is not None:
                run.fail(f"honest task raised (a bug in the test?): {t.exception()!r}")
        await asyncio.sleep(0)
        if run.px is not None and run.pid_alive():
            await close_servers(run)
            await asyncio.sleep(1.5)
            rss["final"] = rss_kb(run.px.proc.pid)
            rss["max"] = run.max_rss
            print(f"[{run.now():.1f}s] RSS final {rss['final']} kB (peak {run.max_rss} kB)")
        return rss
    finally:
        mon.cancel()


async def wait_progress(run, want, timeout_s):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if all(run.honest_ops.get(i, 0) >= n for i, n in want.items()):
            return True
        if run.died_at is not None:
            return False
        await asyncio.sleep(0.1)
    return False


# ----------------------------------------------------------------------------------------------
# PostgreSQL's log

PROTO_ERRORS = re.compile(
    r"invalid message length|invalid frontend message type|unexpected message type|"
    r"insufficient data left in message|invalid message format|invalid string in message|"
    r"incomplete message from client|unexpected EOF within message length word")
NEVER_THROUGH_PGMUX = re.compile(r"invalid message length|invalid frontend message type")
LINE_APP = re.compile(r"^\S+ \S+ \S+ \[(\d+)\] app=(\S*) ")


def check_pg_logs(run, servers, marks):
    counted = collections.Counter()
    for srv in servers:
        with open(srv.logfile, "rb") as f:
            f.seek(marks[srv.name])
            text = f.read().decode(errors="replace")
        for line in text.splitlines():
            m = PROTO_ERRORS.search(line)
            if not m:
                continue
            lm = LINE_APP.match(line)
            app = lm.group(2) if lm else "?"
            who = "honest" if app.startswith(HONEST_APP) else (
                "attacker" if app.startswith(EVIL_APP) else app or "(none)")
            counted[f"{m.group(0)} [{who}]"] += 1
            if who == "honest":
                run.fail(f"PostgreSQL {srv.name} logged a protocol error for an honest client "
                         f"(bytes of another client on its server?): {line[:300]}")
            elif run.px is not None and NEVER_THROUGH_PGMUX.search(line):
                run.fail(f"PostgreSQL {srv.name} logged {m.group(0)!r} (app {app}): a server got "
                         f"bytes that were not at a message boundary (a server reused in "
                         f"mid-message, or pgmux's own bytes, such as the Terminate it sends "
                         f"when it closes a server, written into a message the client left "
                         f"unfinished): {line[:300]}")
    print("PostgreSQL protocol-error lines (attributed by application_name): "
          f"{dict(counted) or 'none'}")


# ----------------------------------------------------------------------------------------------
# the test body

PG_CONF = {
    "log_line_prefix": "'%m [%p] app=%a %q%u@%d '",
    "log_min_error_statement": "panic",    # no multi-megabyte statements in the log
    # LOG and FATAL, not ERROR: the protocol errors that matter are COMMERRORs (logged as LOG)
    # and FATALs; an ERROR reaches the client that caused it (an honest client fails on it
    # itself), and the attackers' ERRORs echo megabytes of their parameters
    "log_min_messages": "log",
    "max_connections": 200,
}


def _run_variant(env, name, mode, seconds, routed=False, statement_mode=False):
    seed = SEED
    # session mode: the honest clients hold a server each while connected; four more servers
    # for the attackers, whose servers are reset (DISCARD ALL) and passed on as they leave
    pool = POOL + N_HONEST if mode == "session" else POOL
    print(f"torture {name}: PGMUX_TORTURE_SEED={seed} PGMUX_TORTURE_SECONDS={SECONDS:g} "
          f"attackers={N_ATTACKERS} direct={DIRECT} binary={PGMUX_BIN}")
    if routed and (PGMUX_SECTION == "pgbouncer"):
        raise Skip("PgBouncer has no [database X] sections")
    topo = env.topology(n_replicas=1 if routed else 0, max_connections=200,
                        extra_conf=dict(PG_CONF))
    primary = topo.primary
    db = topo.database(f"torture_{name}")
    for sql in ("CREATE TABLE honest_log (client int, n int, token text, PRIMARY KEY (client, n))",
                "CREATE TABLE evil (a int, b text)"):
        env.sql(db, sql, server=primary)
    topo.wait_replay()
    servers = topo.servers
    marks = {s.name: s.logfile.stat().st_size for s in servers}

    px = None
    if DIRECT:
        host, port = primary.host, primary.port
    else:
        asan = _is_asan(PGMUX_BIN)
        settings = {"pool_mode": mode, "default_pool_size": pool, "max_client_conn": 400,
                    "max_packet_size": MAX_PACKET, "log_connections": 0,
                    "log_disconnections": 0}
        if PGMUX_SECTION == "pgmux":
            settings.update(max_prepared_statements=200, monitor_interval=0.2)
        kw = {"verbose": int(os.environ.get("PGMUX_TORTURE_VERBOSE", "0")),
              # glibc: large blocks always mmap'ed and given back when freed, so that the RSS
              # check sees leaks and not the allocator's caching
              "env": {"MALLOC_MMAP_THRESHOLD_": "131072", "MALLOC_TRIM_THRESHOLD_": "131072"}}
        if asan:
            # a small quarantine, so that freed memory goes back and the RSS check means
            # something under ASan too (the default 256 MB quarantine hides everything)
            kw["env"]["ASAN_OPTIONS"] = ("detect_leaks=1:quarantine_size_mb=16:"
                                         "allocator_release_to_os_interval_ms=100")
        if routed:
            from test_routing import wait_ready
            px = env.pgmux({}, settings, sections={db: env.routing_section(
                db, primary, topo.replicas, pool_mode=mode, pool_size=pool)}, **kw)
            wait_ready(px, db, len(topo.replicas))
        else:
            px = env.pgmux({db: env.db_entry(db, server=primary, pool_size=pool)}, settings, **kw)
        host, port = "127.0.0.1", px.port

    run = Run(name, host, port, db, px=px, statement_mode=statement_mode,
              transactions=not statement_mode, seed=seed)
    t0 = time.monotonic()
    rss = asyncio.run(torture(run, seconds))
    elapsed = time.monotonic() - t0

    print("scenarios run (count, seconds): " + ", ".join(
        f"{k[3:]} {v} {run.sc_time[k]:.1f}s {run.sc_bytes[k] >> 10}kB"
        for k, v in sorted(run.scenarios.items())))
    print(f"attacker outcomes: {dict(sorted(run.stats.items()))}")
    print(f"event loop: longest extra delay of a 0.1 s sleep {run.loop_lag:.2f}s")
    print(f"honest operations: {sum(run.honest_ops.values())} "
          f"({dict(sorted(run.honest_kinds.items()))})")

    if px is not None:
        if not px.alive():
            run.fail(f"pgmux is not running (exit status {px.proc.poll()})")
        else:
            # no server connection left behind (PostgreSQL side)
            q = ("SELECT pid, application_name, state, left(query, 80) FROM pg_stat_activity "
                 "WHERE datname = %s AND backend_type = 'client backend' AND "
                 "pid <> pg_backend_pid() AND application_name <> 'pgmux monitor'")
            deadline = time.monotonic() + 10
            while True:
                left = {s.name: s.sql(q, (db,)) for s in servers}
                left = {k: v for k, v in left.items() if v}
                if not left or time.monotonic() > deadline:
                    break
                time.sleep(0.1)
            if left:
                run.fail(f"server connections still open on PostgreSQL after RECONNECT and "
                         f"WAIT_CLOSE: {left}")
            base, final = rss.get("baseline"), rss.get("final")
            if base and final:
                slack = RSS_SLACK_KB + (16 * 1024 if _is_asan(PGMUX_BIN) else 0)
                print(f"RSS: baseline {base} kB, peak {rss.get('max')} kB, after {final} kB "
                      f"(allowed {base + slack} kB)")
                if final > base + slack:
                    run.fail(f"pgmux RSS did not return to its baseline: {base} kB before the "
                             f"attack, {final} kB after (peak {rss.get('max')} kB)")
    check_pg_logs(run, servers, marks)
    print(f"torture {name} took {elapsed:.1f}s")
    if run.failures:
        # pgmux's death first: the honest clients' failures that follow it are its echo
        failures = sorted(run.failures, key=lambda f: "pgmux died" not in f)
        shown = "\n  ".join(failures[:40])
        raise AssertionError(
            f"{len(run.failures)} failures in torture {name} (replay with "
            f"PGMUX_TORTURE_SEED={seed}):\n  {shown}")


@timeout(SECONDS + 130)
def test_torture_transaction_mode(env):
    _run_variant(env, "transaction", "transaction", SECONDS)


@timeout(SECONDS / 2 + 120)
def test_torture_session_mode(env):
    _run_variant(env, "session", "session", SECONDS / 2)


@timeout(SECONDS / 2 + 120)
def test_torture_statement_mode(env):
    _run_variant(env, "statement", "statement", SECONDS / 2, statement_mode=True)


@timeout(SECONDS / 2 + 130)
def test_torture_routed_replicas(env):
    _run_variant(env, "routed", "transaction", SECONDS / 2, routed=True)
