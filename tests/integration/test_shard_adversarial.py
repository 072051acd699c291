"""Sharding correctness against an unsharded reference: an adversarial corpus (shard_cases.py)
and a differential fuzzer (shardfuzz.py).

Two shard primaries (no replicas: placement is what is checked) each hold a database `adv`
with accounts (int8 key), orders (int8 key) and taccounts (text key); a reference database on
the shared cluster's primary holds every row.  pgmux has four sharded sections over the shards:
advi (int key), advt (text key) with no_shard_key = error, and advia / advta (no_shard_key =
all).  Every case runs twice, with the same client calls: through pgmux, then on the reference,
where the units that pgmux refused (answered with an error) are skipped.  Then:

  - every row on every shard must sit on the shard satisfies_hash_partition names for its key;
  - every unit pgmux answered must have answered what the reference answered (per statement:
    the command tag and the multiset of rows);
  - the union of the shards' rows must equal the reference's rows (so a refused unit left
    nothing applied, and an answered one applied what the reference applied).

A case is `right` when it passed all that with no error, `refused` when it passed with some
unit refused, and `wrong` otherwise (a misplaced row, a wrong answer, a write lost or applied
where it should not be, or no answer at all).  The corpus test fails on any wrong case and on
a positive control that is not right; the fuzz test fails on any wrong case.

Environment: PGMUX_SHARDFUZZ_CASES (default 400), PGMUX_SHARDFUZZ_SEED (default: a fixed
seed; "random" for a fresh one), PGMUX_SHARDFUZZ_ONLY (comma-separated case numbers, to replay
cases of a seed), PGMUX_SHARDCASES (a substring: run only the corpus cases whose id has it).
"""

import asyncio
import contextlib
import os
import re
import signal
import struct
import time
from decimal import Decimal

import psycopg
from psycopg import ClientCursor, pq
from psycopg.types.numeric import Float4, Float8, Int2, Int4, Int8

import rawpg
import shard_cases as SC
import shardfuzz
from pgharness import TEST_USER, timeout
from test_routing import need_routing
from test_sharding import wait_shards_up

DB = "adv"
SECTION = {("int", False): "advi", ("text", False): "advt", ("int", True): "advia",
           ("text", True): "advta"}
CASE_TIMEOUT = 15          # seconds one run of a case may take (pgmux or reference)
OK_SQLSTATES = ("0A000", "54000", "22", "42", "25P02")

SCHEMA = """
CREATE TABLE accounts (user_id int8 PRIMARY KEY, v text, n int);
CREATE TABLE orders (user_id int8 NOT NULL, oid int NOT NULL, amt int);
CREATE TABLE taccounts (user_id text PRIMARY KEY, v text, n int);
"""


class CaseTimeout(Exception):
    pass


def _alarm(signum, frame):
    raise CaseTimeout(f"no answer within {CASE_TIMEOUT}s")


@contextlib.contextmanager
def deadline(seconds):
    old = signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


# ----------------------------------------------------------------------------------------------
# parameters

OIDS = {"int2": 21, "int4": 23, "int8": 20, "float4": 700, "float8": 701, "numeric": 1700,
        "text": 25, "bool": 16, "unknown": 0, "varchar": 1043, "bpchar": 1042}


def pg_value(p):
    """A P as the psycopg object that dumps with its type."""
    t, v = p.type, p.value
    if v is None:
        return None
    return {"int2": Int2, "int4": Int4, "int8": Int8, "float4": Float4, "float8": Float8,
            "numeric": Decimal, "bool": bool}.get(t, str)(v)


def param_spans(sql):
    """(start, end, n) of every $n placeholder of sql, skipping string literals ('', E'' with
    backslash escapes), quoted identifiers, dollar-quoted strings and comments."""
    out, i, n = [], 0, len(sql)
    while i < n:
        ch = sql[i]
        if sql.startswith("--", i):
            j = sql.find("\n", i)
            i = n if j < 0 else j + 1
        elif sql.startswith("/*", i):
            depth, i = 1, i + 2
            while i < n and depth:
                if sql.startswith("/*", i):
                    depth, i = depth + 1, i + 2
                elif sql.startswith("*/", i):
                    depth, i = depth - 1, i + 2
                else:
                    i += 1
        elif ch in "'\"":
            esc = ch == "'" and i > 0 and sql[i - 1] in "eE" and \
                (i < 2 or not (sql[i - 2].isalnum() or sql[i - 2] == "_"))
            i += 1
            while i < n:
                if esc and sql[i] == "\\":
                    i += 2
                elif sql[i] == ch:
                    if i + 1 < n and sql[i + 1] == ch:
                        i += 2
                    else:
                        i += 1
                        break
                else:
                    i += 1
        elif ch == "$":
            m = re.match(r"\$(\d+)", sql[i:])
            if m:
                out.append((i, i + m.end(), int(m.group(1))))
                i += m.end()
                continue
            m = re.match(r"\$([A-Za-z_][A-Za-z_0-9]*)?\$", sql[i:])
            if m and not (i > 0 and (sql[i - 1].isalnum() or sql[i - 1] == "_")):
                end = sql.find(m.group(0), i + m.end())
                i = n if end < 0 else end + m.end()
            else:
                i += 1
        else:
            i += 1
    return out


def pg_query(sql, params):
    """(query, values) for psycopg: $n placeholders -> %t / %b by the parameter's format, the
    values in the order the placeholders appear; % -> %%.  params None: sql as it is (simple
    protocol)."""
    if params is None:
        return sql, None
    out, vals, i = [], [], 0
    for start, end, n in param_spans(sql):
        out.append(sql[i:start].replace("%", "%%"))
        out.append("%b" if params[n - 1].fmt == "b" else "%t")
        vals.append(pg_value(params[n - 1]))
        i = end
    out.append(sql[i:].replace("%", "%%"))
    return "".join(out), vals


def raw_value(p, enc):
    """A P as the bytes of a Bind parameter."""
    v = p.value
    if v is None:
        return None
    if p.fmt == "t":
        if p.type == "bool":
            return b"t" if v else b"f"
        return str(v).encode(enc)
    if p.type in ("text", "unknown", "varchar", "bpchar"):
        return str(v).encode(enc)
    fmt = {"int2": "!h", "int4": "!i", "int8": "!q", "float4": "!f", "float8": "!d"}.get(p.type)
    if fmt:
        return struct.pack(fmt, v)
    if p.type == "bool":
        return b"\x01" if v else b"\x00"
    if p.type == "numeric":
        return numeric_send(Decimal(v))
    raise ValueError(f"no binary encoding for {p.type} here")


def numeric_send(d):
    """PostgreSQL's binary numeric: ndigits, weight, sign, dscale, then base-10000 digits."""
    sign, digits, exp = d.as_tuple()
    dscale = max(0, -exp)
    s = "".join(map(str, digits))
    if exp < 0:
        s = s.zfill(1 - exp)
    intpart, frac = (s[:len(s) + exp], s[len(s) + exp:]) if exp < 0 else (s + "0" * exp, "")
    intpart = intpart.lstrip("0")
    intpart = "0" * (-len(intpart) % 4) + intpart
    frac = frac + "0" * (-len(frac) % 4)
    groups = [int(intpart[i:i + 4]) for i in range(0, len(intpart), 4)] + \
             [int(frac[i:i + 4]) for i in range(0, len(frac), 4)]
    weight = len(intpart) // 4 - 1
    while groups and groups[-1] == 0:
        groups.pop()
    while groups and groups[0] == 0:
        groups.pop(0)
        weight -= 1
    if not groups:
        weight = 0
    return struct.pack("!hhHH", len(groups), weight, 0x4000 if sign else 0, dscale) + \
        b"".join(struct.pack("!H", g) for g in groups)


def raw_parse(sql, name, params, enc):
    body = rawpg._cstr(name) + sql.encode(enc) + b"\0" + struct.pack("!H", len(params))
    body += b"".join(struct.pack("!I", OIDS[p.type]) for p in params)
    return rawpg.message(b"P", body)


def raw_bind(name, params, enc):
    body = rawpg._cstr("") + rawpg._cstr(name) + struct.pack("!H", len(params))
    body += b"".join(struct.pack("!H", 1 if p.fmt == "b" else 0) for p in params)
    body += struct.pack("!H", len(params))
    for p in params:
        v = raw_value(p, enc)
        body += struct.pack("!i", -1) if v is None else struct.pack("!i", len(v)) + v
    body += struct.pack("!H", 0)
    return rawpg.message(b"B", body)


def raw_results(msgs, enc):
    """Backend messages -> ("ok", [(tag, rows)...]) or ("err", sqlstate, message)."""
    res, rows = [], []
    for t, b in msgs:
        if t == b"E":
            f = rawpg.parse_error(b)
            return ("err", f.get("C"), f.get("M", ""))
        if t == b"D":
            rows.append(tuple(repr(x) for x in rawpg.data_row(b)))
        elif t in (b"C", b"I"):
            tag = b.rstrip(b"\0").decode(enc, "replace") if t == b"C" else "EMPTY"
            res.append((tag, sorted(rows)))
            rows = []
    return ("ok", res)


def norm_rows(rows):
    return sorted(tuple(repr(x) for x in r) for r in rows)


# ----------------------------------------------------------------------------------------------
# running a case on one target (pgmux or the reference)

class Target:
    def __init__(self, name, port, dbname_of):
        self.name, self.port, self.dbname_of = name, port, dbname_of


class CaseRun:
    """The client side of one case on one target: connections opened on first use."""

    def __init__(self, target, case):
        self.t, self.case = target, case
        self.conn_opts = case.get("conn") or {}
        self.dbname = target.dbname_of(case)
        self.pg = self.raw = self.aconn = self.loop = None
        self.enc = "latin1" if (self.conn_opts.get("client_encoding") or
                                (self.conn_opts.get("startup") or {}).get("client_encoding")
                                ) == "LATIN1" else "utf-8"

    # -- connections
    def pgconn(self):
        if self.pg is None or self.pg.closed:
            kw = {}
            if self.conn_opts.get("client_encoding"):
                kw["client_encoding"] = self.conn_opts["client_encoding"]
            self.pg = psycopg.connect(host="127.0.0.1", port=self.t.port, dbname=self.dbname,
                                      user=TEST_USER, autocommit=True, connect_timeout=10, **kw)
            self.pg.prepare_threshold = self.conn_opts.get("prepare_threshold")
        return self.pg

    def rawconn(self):
        if self.raw is None:
            self.raw = rawpg.RawConn.tcp(self.t.port, self.dbname, TEST_USER, timeout=10,
                                         extra=self.conn_opts.get("startup"))
        return self.raw

    def arun(self, coro_fn):
        import asyncpg
        if self.loop is None:
            self.loop = asyncio.new_event_loop()

        async def go():
            if self.aconn is None or self.aconn.is_closed():
                self.aconn = await asyncpg.connect(host="127.0.0.1", port=self.t.port,
                                                   database=self.dbname, user=TEST_USER,
                                                   ssl=False, timeout=10)
            return await coro_fn(self.aconn)
        return self.loop.run_until_complete(go())

    def close(self):
        with contextlib.suppress(Exception):
            if self.pg is not None:
                self.pg.close()
        with contextlib.suppress(Exception):
            if self.raw is not None:
                self.raw.close(terminate=True)
        if self.loop is not None:
            with contextlib.suppress(Exception):
                if self.aconn is not None:
                    self.loop.run_until_complete(asyncio.wait_for(self.aconn.close(), 5))
            with contextlib.suppress(Exception):
                self.loop.close()

    # -- units
    def run(self, skip=()):
        out = []
        for i, unit in enumerate(self.case["units"]):
            if i in skip:
                out.append(None)
                continue
            try:
                with deadline(CASE_TIMEOUT):
                    out.append(("ok", self.unit(unit)))
            except CaseTimeout as e:
                out.append(("err", "timeout", str(e)))
                self._recover(dead=True)
            except psycopg.Error as e:
                out.append(("err", e.sqlstate, str(e).splitlines()[0] if str(e) else repr(e)))
                self._recover()
            except rawpg.ServerError as e:
                out.append(("err", e.sqlstate, str(e)))
                self.raw = None
            except (OSError, EOFError) as e:
                out.append(("err", None, f"{type(e).__name__}: {e}"))
                self._recover(dead=True)
            except Exception as e:  # noqa: BLE001  asyncpg's errors
                out.append(("err", getattr(e, "sqlstate", None), f"{type(e).__name__}: {e}"))
                self._recover(dead=not hasattr(e, "sqlstate"))
        return out

    def _recover(self, dead=False):
        """After an error: roll back an open transaction, or drop a broken connection."""
        if self.pg is not None and not self.pg.closed:
            try:
                if dead:
                    raise RuntimeError
                with deadline(5):
                    st = self.pg.info.transaction_status
                    if st in (pq.TransactionStatus.INTRANS, pq.TransactionStatus.INERROR):
                        self.pg.execute("ROLLBACK")
                    elif st != pq.TransactionStatus.IDLE:
                        raise RuntimeError
            except Exception:  # noqa: BLE001
                with contextlib.suppress(Exception):
                    self.pg.close()
                self.pg = None
        if dead:
            with contextlib.suppress(Exception):
                if self.raw is not None:
                    self.raw.close()
            self.raw = None
            if self.aconn is not None:
                with contextlib.suppress(Exception):
                    self.aconn.terminate()
                self.aconn = None
            if self.loop is not None:
                with contextlib.suppress(Exception):
                    self.loop.close()
                self.loop = None

    @staticmethod
    def _collect(cur):
        res = []
        while True:
            rows = norm_rows(cur.fetchall()) if cur.description is not None else None
            res.append((cur.statusmessage, rows))
            if not cur.nextset():
                return res

    def _pg_exec(self, cur, sql, params):
        cur.execute(*pg_query(sql, params))
        return self._collect(cur)

    def unit(self, u):
        kind = u[0]
        if kind == "q":
            return self._pg_exec(self.pgconn().cursor(), u[1], None)
        if kind == "x":
            return self._pg_exec(self.pgconn().cursor(), u[1], u[2])
        if kind == "c":
            return self._pg_exec(ClientCursor(self.pgconn()), u[1], u[2])
        if kind == "pipe":
            conn, curs = self.pgconn(), []
            with conn.pipeline():
                for sql, params in u[1]:
                    cur = conn.cursor()
                    cur.execute(*pg_query(sql, params))
                    curs.append(cur)
            return [self._collect(c) for c in curs]
        if kind == "many":
            cur = self.pgconn().cursor()
            cur.executemany(pg_query(u[1], u[2][0])[0], [pg_query(u[1], ps)[1] for ps in u[2]])
            return [("many", cur.rowcount)]
        if kind == "tx":
            conn = self.pgconn()
            res = [conn.execute("BEGIN").statusmessage]
            for sql, params in u[1]:
                res.append(self._pg_exec(conn.cursor(), sql, params))
            tag = conn.execute("COMMIT").statusmessage
            if tag != "COMMIT":
                raise psycopg.Error(f"COMMIT answered {tag}")
            return res + [tag]
        if kind == "rq":
            c = self.rawconn()
            sql = u[1] if isinstance(u[1], bytes) else u[1].encode(self.enc)
            c.send(rawpg.message(b"Q", sql + b"\0"))
            r = raw_results(c.read_until_ready(), self.enc)
            if r[0] == "err":
                raise rawpg.ServerError({"C": r[1], "M": r[2]})
            return r[1]
        if kind == "rp":
            c, data = self.rawconn(), b""
            for st in u[1]:
                if st[0] == "bind":
                    data += raw_bind(st[1], st[2], self.enc) + rawpg.execute()
                    continue
                sql, params = st
                name = ""
                if ":" in sql.split(" ", 1)[0]:
                    name, sql = sql.split(":", 1)
                data += raw_parse(sql, name, params, self.enc) + \
                    raw_bind(name, params, self.enc) + rawpg.execute()
            c.send(data + rawpg.SYNC)
            r = raw_results(c.read_until_ready(), self.enc)
            if r[0] == "err":
                raise rawpg.ServerError({"C": r[1], "M": r[2]})
            return r[1]
        if kind == "a":
            async def f(conn):
                return norm_rows([tuple(r.values()) for r in await conn.fetch(u[1], *u[2])])
            return [(None, self.arun(f))]
        if kind == "amany":
            async def f(conn):
                await conn.executemany(u[1], [tuple(a) for a in u[2]])
            self.arun(f)
            return [("many", None)]
        if kind == "atx":
            async def f(conn):
                res = []
                async with conn.transaction():
                    for sql, args in u[1]:
                        res.append(norm_rows([tuple(r.values())
                                              for r in await conn.fetch(sql, *args)]))
                return res
            return [(None, self.arun(f))]
        raise ValueError(f"unknown unit kind {kind!r}")


# ----------------------------------------------------------------------------------------------
# the servers, the data and the check

class Lab:
    """Two shards, the reference, a pgmux; the baseline loaded everywhere."""

    def __init__(self, env):
        need_routing()
        t0 = time.monotonic()
        self.env = env
        self.topos = env.shard_topologies(2, n_replicas=0)
        for t in self.topos:
            t.primary.create_database(DB, owner=TEST_USER)
            with t.primary.connect(DB, user=TEST_USER) as c:
                c.execute(SCHEMA)
        self.refdb = env.database("ref")
        with env.pg.connect(self.refdb, user=TEST_USER) as c:
            c.execute(SCHEMA)
        sets = {"pool_mode": "transaction", "monitor_interval": 0.2, "max_client_conn": 200,
                "default_pool_size": 3, "max_client_memory": "1MB"}
        sections = {}
        for (db, fan), name in SECTION.items():
            # read_routing on: pgmux fans out only what it classifies as a read (there are no
            # replicas: reads run on the primaries)
            keys = {"no_shard_key": "all" if fan else "error",
                    "read_routing": "on" if fan else "off"}
            if db == "text":
                keys["shard_key_type"] = "text"
            sections[name] = env.sharded_section(DB, self.topos, **keys)
        self.px = env.pgmux({}, sets, sections=sections)
        for name in SECTION.values():
            wait_shards_up(self.px, 2, n_replicas=0, db=name)
        self.adm = [t.primary.connect(DB) for t in self.topos]
        self.refadm = env.pg.connect(self.refdb)
        for c in self.adm + [self.refadm]:
            c.execute("SET lock_timeout = '5s'")
            c.execute("SET statement_timeout = '20s'")
        with self.adm[0].transaction():
            self.adm[0].execute("CREATE TABLE pgmux_hash_int8 (k int8) PARTITION BY HASH (k)")
            self.adm[0].execute("CREATE TABLE pgmux_hash_text (k text) PARTITION BY HASH (k)")
        self.cache = {"int8": {}, "text": {}}
        self.base = {t: sorted(map(self._norm, rows)) for t, rows in SC.baseline().items()}
        self.base_rows = SC.baseline()
        self.check_traps()
        for i in range(3):
            self.reset(i)
        self.pxt = Target("pgmux", self.px.port,
                          lambda c: SECTION[(c.get("db", "int"), bool(c.get("fanout")))])
        self.reft = Target("reference", env.pg.port, lambda c: self.refdb)
        print(f"lab ready in {time.monotonic() - t0:.1f}s: shards on ports "
              f"{[t.primary.port for t in self.topos]}, reference {self.refdb}, pgmux "
              f"{self.px.port}")

    @staticmethod
    def _norm(row):
        return tuple(repr(x) for x in row)

    # -- placement
    def placement(self, typ, keys):
        """{key: shard} as satisfies_hash_partition places each key (cached)."""
        cache = self.cache[typ]
        want = sorted({k for k in keys if k not in cache}, key=repr)
        if want:
            rows = self.adm[0].execute(
                f"SELECT k, r FROM unnest(%s::{typ}[]) k, generate_series(0, 1) r "
                f"WHERE satisfies_hash_partition('pgmux_hash_{typ}'::regclass, 2, r, k)",
                ([str(k) if typ == "text" else k for k in want],)).fetchall()
            for k, r in rows:
                cache[k] = r
            missing = [k for k in want if k not in cache]
            assert not missing, f"satisfies_hash_partition placed no shard for {missing}"
        return {k: cache[k] for k in keys}

    def check_traps(self):
        bad = []
        for typ, a, b in SC.TRAPS:
            pl = self.placement(typ, [a, b])
            if pl[a] == pl[b]:
                bad.append((typ, a, b, pl[a]))
        pl = self.placement("int8", SC.INT_KEYS)
        on = [sum(1 for s in pl.values() if s == i) for i in range(2)]
        assert not bad and min(on) >= 5, \
            f"the corpus's key pairs are not on different shards: {bad}; baseline {on}"

    # -- data
    def servers(self):
        return self.adm + [self.refadm]

    def reset(self, i):
        """Puts server i (0, 1: shards; 2: the reference) back to the baseline."""
        c = self.servers()[i]
        for attempt in range(2):
            try:
                with c.transaction():
                    for table, rows in self.base_rows.items():
                        c.execute(f"DELETE FROM {table}")
                        if i < 2:
                            typ = SC.KEY_TYPE[table]
                            pl = self.placement(typ, [r[0] for r in rows])
                            rows = [r for r in rows if pl[r[0]] == i]
                        cols = ", ".join(SC.TABLES[table])
                        with c.cursor().copy(f"COPY {table} ({cols}) FROM STDIN") as cp:
                            for r in rows:
                                cp.write_row(r)
                return
            except psycopg.errors.LockNotAvailable:
                if attempt:
                    raise
                # a pgmux server connection still holds a lock: end it
                c.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE "
                          "datname = current_database() AND pid <> pg_backend_pid() AND "
                          "backend_type = 'client backend'")
                time.sleep(0.2)

    def state(self, i):
        """{table: [(row, key)]} on server i, rows normalised, with their raw keys."""
        c = self.servers()[i]
        out = {}
        for table, cols in SC.TABLES.items():
            rows = c.execute(f"SELECT {', '.join(cols)} FROM {table}").fetchall()
            out[table] = rows
        return out

    # -- one case
    def run_case(self, case):
        t0 = time.monotonic()
        pxrun = CaseRun(self.pxt, case)
        try:
            pxout = pxrun.run()
        finally:
            pxrun.close()
        skip = {i for i, o in enumerate(pxout) if o[0] == "err"}
        refrun = CaseRun(self.reft, case)
        try:
            refout = refrun.run(skip)
        finally:
            refrun.close()
        states = [self.state(i) for i in range(3)]
        full = None
        if skip:
            # what the reference says to the units pgmux failed: the same error is no refusal
            self.reset(2)
            fullrun = CaseRun(self.reft, case)
            try:
                full = fullrun.run()
            finally:
                fullrun.close()
            states_ref_dirty = True
        else:
            states_ref_dirty = False
        verdict, reasons = self.classify(case, pxout, refout, states, full)
        for i, st in enumerate(states):
            if (i == 2 and states_ref_dirty) or \
                    any(sorted(map(self._norm, rows)) != self.base[t] for t, rows in st.items()):
                self.reset(i)
        return {"case": case, "outcome": verdict, "reasons": reasons, "px": pxout,
                "ref": refout, "secs": time.monotonic() - t0}

    @staticmethod
    def directed_units(case):
        """Units whose shard the client named itself: a hint comment in the unit, or any unit
        after a SET pgmux.user_id / pgmux.shard.  pgmux runs a keyless statement there on
        purpose, so its answer may be one shard's and is not compared with the unsharded
        reference; where its rows sit still is."""
        out, session = set(), False
        for i, u in enumerate(case["units"]):
            text = repr(u).lower()
            if session or "pgmux:" in text:
                out.add(i)
            if "set pgmux." in text or "set local pgmux." in text:
                session = True
                out.add(i)
        return out

    def classify(self, case, pxout, refout, states, full=None):
        reasons = []
        directed = self.directed_units(case)
        ran_directed = any(i in directed and p[0] != "err" for i, p in enumerate(pxout))
        # 1. placement: every row on its own shard
        for s in range(2):
            for table, rows in states[s].items():
                typ = SC.KEY_TYPE[table]
                pl = self.placement(typ, [r[0] for r in rows])
                wrong = [r[0] for r in rows if pl[r[0]] != s]
                if wrong:
                    reasons.append(f"misplaced: {table} keys {short(wrong[:4], 200)} on shard "
                                   f"{s}, belong on shard {1 - s}")
        # 2. answers
        for i, (p, r) in enumerate(zip(pxout, refout)):
            if i in directed and p[0] != "err":
                continue
            if p[0] == "err":
                if p[1] == "timeout":
                    reasons.append(f"unit {i}: no answer from pgmux within {CASE_TIMEOUT}s")
                continue
            if r[0] == "err":
                reasons.append(f"unit {i}: pgmux answered {short(p[1])}, the reference failed "
                               f"({r[1]} {r[2][:80]})")
            elif p[1] != r[1]:
                reasons.append(f"unit {i}: pgmux answered {short(p[1])}, the reference "
                               f"{short(r[1])}")
        # 3. what is left: the union of the shards equals the reference (not comparable when
        #    a directed unit ran on the shard the client named)
        for table in (() if ran_directed else SC.TABLES):
            union = sorted(self._norm(r) for s in range(2) for r in states[s][table])
            ref = sorted(self._norm(r) for r in states[2][table])
            if union != ref:
                extra = _minus(union, ref)
                missing = _minus(ref, union)
                reasons.append(f"{table} differs from the reference: shards have "
                               f"{len(extra)} rows more {short(extra[:3], 240)}, "
                               f"{len(missing)} fewer {short(missing[:3], 240)}")
        if reasons:
            return "wrong", reasons
        errs = [p for i, p in enumerate(pxout) if p[0] == "err" and
                not (full and full[i][0] == "err" and full[i][1] == p[1])]
        if errs:
            notes = [f"{p[1]} {p[2][:100]}" for p in errs]
            odd = [p for p in errs if not (p[1] or "").startswith(OK_SQLSTATES)]
            if odd:
                notes.append("(not an acceptable refusal SQLSTATE)")
            return "refused", notes
        return "right", []


def _minus(a, b):
    out = list(a)
    for x in b:
        with contextlib.suppress(ValueError):
            out.remove(x)
    return out


def short(v, n=160):
    s = repr(v)
    return s if len(s) <= n else s[:n] + "..."


def describe(case):
    """The case as a one-line reproduction."""
    parts = []
    for u in case["units"]:
        parts.append(repr(u))
    extra = []
    if case.get("fanout"):
        extra.append("no_shard_key=all")
    if case.get("conn"):
        extra.append(f"conn={case['conn']}")
    return " | ".join(parts) + (f"  [{', '.join(extra)}]" if extra else "")


def proto_of(case):
    kinds = [u[0] for u in case["units"]]
    return "+".join(dict.fromkeys(kinds))


def report(results, title, path=None):
    """Prints the table (and writes it to path) and the totals; returns (totals, wrong, bad
    controls)."""
    lines = [f"{title}: {len(results)} cases",
             f"{'outcome':8} {'class':28} {'protocol':10} {'case':46} detail"]
    for r in results:
        c = r["case"]
        detail = "; ".join(r["reasons"])
        lines.append(f"{r['outcome']:8} {c['cls']:28} {proto_of(c):10} {c['id']:46} "
                     f"{detail[:300]}")
        if path and r["outcome"] == "wrong":
            lines.append(f"{'':8} {describe(c)[:600]}")
    totals = {"right": 0, "refused": 0, "wrong": 0}
    by = {}
    for r in results:
        totals[r["outcome"]] += 1
        d = by.setdefault(r["case"]["cls"], {"right": 0, "refused": 0, "wrong": 0})
        d[r["outcome"]] += 1
    lines += ["", f"{'class':28} {'right':>6} {'refused':>8} {'wrong':>6}"]
    for cls, d in by.items():
        lines.append(f"{cls:28} {d['right']:6} {d['refused']:8} {d['wrong']:6}")
    lines += ["", f"{title}: right {totals['right']}, refused {totals['refused']}, "
                  f"wrong {totals['wrong']}"]
    if path:
        path.write_text("\n".join(lines) + "\n")
        print(f"(the table with reproductions of the wrong cases: {path})")
    print("\n".join(lines))
    wrong = [r for r in results if r["outcome"] == "wrong"]
    bad_controls = [r for r in results if r["case"].get("control") and r["outcome"] != "right"]
    return totals, wrong, bad_controls


def wrong_summary(wrong, detailed=12):
    """The wrong cases: every id by class, the first few with their reasons and the case."""
    by = {}
    for r in wrong:
        by.setdefault(r["case"]["cls"], []).append(r["case"]["id"])
    out = [f"{cls} ({len(ids)}): {', '.join(ids)}" for cls, ids in by.items()]
    out += [f"{r['case']['id']}: {'; '.join(r['reasons'])[:400]}\n        "
            f"{describe(r['case'])[:400]}" for r in wrong[:detailed]]
    if len(wrong) > detailed:
        out.append(f"... ({len(wrong) - detailed} more wrong cases detailed in the table)")
    return "\n    ".join(out)


# ----------------------------------------------------------------------------------------------
# tests

@timeout(180)
def test_shard_adversarial_corpus(env):
    """The adversarial corpus (shard_cases.py): every case right or refused, never wrong;
    every positive control right."""
    lab = Lab(env)
    only = os.environ.get("PGMUX_SHARDCASES")
    cases = [c for c in SC.CASES if not only or only in c["id"]]
    t0 = time.monotonic()
    results = [lab.run_case(c) for c in cases]
    secs = time.monotonic() - t0
    totals, wrong, bad_controls = report(results, "corpus", env.dir / "shard_corpus.txt")
    print(f"corpus ran in {secs:.1f}s ({secs / max(1, len(results)) * 1000:.0f} ms a case)")
    slow = sorted(results, key=lambda r: -r["secs"])[:3]
    print("slowest: " + ", ".join(f"{r['case']['id']} {r['secs']:.2f}s" for r in slow))
    problems = []
    if wrong:
        problems.append(f"{len(wrong)} cases wrong:\n    " + wrong_summary(wrong))
    if bad_controls:
        problems.append(f"{len(bad_controls)} positive controls not right (must be routed):"
                        "\n    " + "\n    ".join(
                            f"{r['case']['id']}: {r['outcome']}: {'; '.join(r['reasons'])[:300]}"
                            for r in bad_controls))
    assert not problems, f"corpus: right {totals['right']}, refused {totals['refused']}, " \
                         f"wrong {totals['wrong']}\n  " + "\n  ".join(problems)


FUZZ_CASES = int(os.environ.get("PGMUX_SHARDFUZZ_CASES", "400"))


@timeout(90 + FUZZ_CASES // 5)     # a longer run (PGMUX_SHARDFUZZ_CASES) gets more time
def test_shard_fuzz(env):
    """Differential fuzzing (shardfuzz.py): generated statements around the key, through pgmux
    and on the reference, with the same placement and answer check; no case may be wrong.
    PGMUX_SHARDFUZZ_CASES / _SEED / _ONLY lengthen, vary or replay the run."""
    n = FUZZ_CASES
    seed = os.environ.get("PGMUX_SHARDFUZZ_SEED", "20240611")
    if seed == "random":
        seed = str(int.from_bytes(os.urandom(4), "big"))
    only = os.environ.get("PGMUX_SHARDFUZZ_ONLY")
    which = [int(x) for x in only.split(",")] if only else range(n)
    lab = Lab(env)
    print(f"shardfuzz: seed {seed}, {len(which)} cases "
          f"(replay one: PGMUX_SHARDFUZZ_SEED={seed} PGMUX_SHARDFUZZ_ONLY=<case number>)")
    t0 = time.monotonic()
    results = []
    for i in which:
        case = shardfuzz.generate(seed, i)
        results.append(lab.run_case(case))
    secs = time.monotonic() - t0
    totals, wrong, _ = report(results, f"fuzz (seed {seed})", env.dir / "shard_fuzz.txt")
    print(f"fuzz ran in {secs:.1f}s ({secs / max(1, len(results)) * 1000:.0f} ms a case)")
    assert not wrong, (
        f"shardfuzz seed {seed}: {len(wrong)} of {len(results)} cases wrong (replay with "
        f"PGMUX_SHARDFUZZ_SEED={seed} PGMUX_SHARDFUZZ_ONLY="
        f"{','.join(r['case']['id'].rsplit('-', 1)[1] for r in wrong)}):\n    " +
        wrong_summary(wrong))
