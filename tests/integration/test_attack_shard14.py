"""Attack 14: a hostile client against the cross-shard features merged on integ (merged keyless
reads, split writes, PAUSE/park).  Each test compares pgmux with one unsharded reference database
that holds the same rows (merges), or checks placement and pg_prepared_xacts (splits).

Findings it made that were fixed keep their test here ("Found by the attack, fixed").  Two
that are left open are documented limits instead (README, no_shard_key = all): text grouping
under a nondeterministic collation, and floats printed with extra_float_digits below 1."""

import os
import socket
import struct
import time

import psycopg

import rawpg
from pgharness import TEST_USER, timeout, wait_for
from test_routing import need_routing
from test_sharding import wait_shards_up

DB = "mrg"
N_SHARDS = 3

W_SCHEMA = """CREATE TABLE w (user_id int8 PRIMARY KEY, n numeric, f float8, b bpchar,
 c "char", t text, d date, ts timestamp, i int4, big int8)"""

W_ROWS = [
    (1, "1.0", 1.0000002, "a", "a", "a", "2024-01-01", "2024-01-01 00:00:00", 1, 9223372036854775000),
    (2, "1", 1.0000001, "a  ", "\x80", "A", "2024-01-02", "2024-01-01 00:00:00.5", 2, 9223372036854775000),
    (3, "1.00", -0.0, "b", "b", "b", "infinity", "infinity", None, 9223372036854775000),
    (4, "-0", 0.0, None, None, None, "-infinity", "-infinity", 3, -5),
    (5, "NaN", float("nan"), "a ", "z", "é", "10000-01-01", "2024-01-01 00:00:00.25", 4, 7),
    (6, "Infinity", float("inf"), "A", "A", "a ", "0044-03-15", "2024-01-01 00:00:01", 5, 8),
    (7, "-Infinity", float("-inf"), "", "0", "", "2024-01-01", None, 6, 9),
    (8, "0." + "0" * 900 + "1", 1e-300, "a", "a", "a", "2024-01-01", "2024-01-01 00:00:00", 7, 10),
    (9, "9" * 500 + ".5", 5e-324, "a", "a", "a", "2024-01-01", "2024-01-01 00:00:00", 8, 11),
    (10, None, None, "a", "a", "a", None, None, None, None),
    (11, "0.000", 0.1, "c", "c", "c", "2024-01-03", "2024-01-03 00:00:00", 9, 12),
    (12, "-1.5", 0.30000000000000004, "c", "c", "c", "2024-01-03", "2024-01-03 00:00:00", 10, 13),
]


def setup(env, settings=None, rows=W_ROWS, schema=W_SCHEMA, placement=None, extra_sql=(),
          db_settings=""):
    need_routing()
    pg = env.pg
    shard_dbs = [env.database(f"_s{i}", owner=TEST_USER) for i in range(N_SHARDS)]
    ref = env.database("_ref", owner=TEST_USER)
    if db_settings:
        for d in [ref] + shard_dbs:
            pg.sql(f"ALTER DATABASE {d} SET {db_settings}")
    ncol = len(rows[0]) if rows else 0
    ins = f"INSERT INTO w VALUES ({', '.join(['%s'] * ncol)})"
    for d in [ref] + shard_dbs:
        with pg.connect(d, TEST_USER) as c:
            for s in extra_sql:
                c.execute(s)
            c.execute(schema)
    with pg.connect(ref, TEST_USER) as c:
        with c.cursor() as cur:
            if rows:
                cur.executemany(ins, rows)
    for j, r in enumerate(rows):
        s = placement(j) if placement else j % N_SHARDS
        with pg.connect(shard_dbs[s], TEST_USER) as c:
            c.execute(ins, r)
    sec = {"shard_key": "user_id", "shards": N_SHARDS, "no_shard_key": "all",
           "read_routing": "on"}
    for i, d in enumerate(shard_dbs):
        sec[f"shard.{i}.primary"] = env.backend_entry(pg, d)
    sets = {"pool_mode": "transaction", "monitor_interval": 0.2, "default_pool_size": 4,
            "max_client_memory": 131072}
    sets.update(settings or {})
    px = env.pgmux({}, sets, sections={DB: sec})
    wait_shards_up(px, N_SHARDS, n_replicas=0, db=DB)
    return px, ref, shard_dbs


def as_text(conn):
    """Values psycopg cannot load (infinite dates, "char" bytes) come back as text."""
    from psycopg.types.string import TextLoader, TextBinaryLoader
    for oid in (18, 1082, 1114, 1184, 17, 1186):
        conn.adapters.register_loader(oid, TextLoader)
        conn.adapters.register_loader(oid, TextBinaryLoader)
    conn.adapters.register_loader(18, BytesLoader)
    conn.adapters.register_loader(18, BytesBinLoader)


from psycopg.adapt import Loader  # noqa: E402


class BytesLoader(Loader):
    def load(self, data):
        return bytes(data)


class BytesBinLoader(BytesLoader):
    format = psycopg.pq.Format.BINARY


def compare(px, env, ref, cases, pre=(), binary=False):
    """Runs each (query, ordered) through pgmux and on ref; returns the list of differences
    (a refusal with a SQLSTATE is not a difference, it is noted as refused)."""
    diffs, refused = [], []
    with px.connect(DB) as c, env.pg.connect(ref, TEST_USER) as r:
        for conn in (c, r):
            as_text(conn)
        for p in pre:
            c.execute(p)
            r.execute(p)
        for q, ordered in cases:
            try:
                want = r.execute(q, binary=binary)
                w = want.fetchall() if want.description else None
                wtag = want.statusmessage
            except psycopg.Error as e:
                w, wtag = f"ERR {e.sqlstate}", None
            except UnicodeDecodeError:
                continue   # psycopg cannot load a value of the reference's answer
            try:
                got = c.execute(q, binary=binary)
                g = got.fetchall() if got.description else None
                gtag = got.statusmessage
            except psycopg.Error as e:
                if not e.sqlstate:
                    diffs.append(f"{q}: error without SQLSTATE: {e}")
                elif e.sqlstate.startswith("08"):
                    diffs.append(f"{q}: connection error {e.sqlstate}: {e}")
                else:
                    refused.append(f"{q}: {e.sqlstate} {str(e)[:120]}")
                if c.closed or c.broken:
                    diffs.append(f"{q}: connection lost")
                    break
                continue
            if isinstance(w, str):
                diffs.append(f"{q}: reference errs {w} but pgmux answered {g!r:.200}")
                continue
            if not ordered and g is not None:
                g, w = sorted(g, key=repr), sorted(w, key=repr)
            if repr(g) != repr(w) or gtag != wtag:
                diffs.append(f"{q}:\n      got  {gtag} {g!r:.300}\n      want {wtag} {w!r:.300}")
    return diffs, refused


def show(diffs, refused):
    print(f"{len(refused)} refused:")
    for x in refused:
        print("   ", x)
    print(f"{len(diffs)} differ:")
    for x in diffs:
        print("   ", x)


MERGE_CASES = [
    ("SELECT user_id, n FROM w ORDER BY n, user_id", True),
    ("SELECT user_id, n FROM w ORDER BY n DESC NULLS LAST, user_id", True),
    ("SELECT count(*) FROM (SELECT DISTINCT n FROM w) s", True),
    ("SELECT DISTINCT n FROM w ORDER BY n", True),
    ("SELECT n, count(*) FROM w GROUP BY n ORDER BY n", True),
    ("SELECT count(*), sum(n), min(n), max(n) FROM w", True),
    ("SELECT avg(n) FROM w WHERE n <> 'NaN' AND user_id <> 6 AND user_id <> 7", True),
    ("SELECT avg(n) FROM w", True),
    ("SELECT sum(n), avg(n) FROM w WHERE user_id IN (8, 9, 11)", True),
    ("SELECT sum(big), avg(big) FROM w", True),
    ("SELECT sum(i), avg(i), count(i), min(i), max(i) FROM w", True),
    ("SELECT sum(i), avg(i), count(*), min(i) FROM w WHERE false", True),
    ("SELECT sum(i) FROM w WHERE false GROUP BY d", True),
    ("SELECT user_id, f FROM w ORDER BY f, user_id", True),
    ("SELECT user_id, f FROM w ORDER BY f DESC, user_id", True),
    ("SELECT max(f), min(f) FROM w", True),
    ("SELECT max(f), min(f) FROM w WHERE f <> 'NaN'", True),
    ("SELECT user_id, b FROM w ORDER BY b COLLATE \"C\", user_id", True),
    ("SELECT DISTINCT b COLLATE \"C\" FROM w ORDER BY 1", True),
    ("SELECT b COLLATE \"C\", count(*) FROM w GROUP BY 1 ORDER BY 1", True),
    ("SELECT min(b COLLATE \"C\"), max(b COLLATE \"C\") FROM w", True),
    ("SELECT min(c), max(c) FROM w", True),
    ("SELECT user_id, t FROM w ORDER BY t COLLATE \"C\" DESC, user_id", True),
    ("SELECT user_id, d FROM w ORDER BY d, user_id", True),
    ("SELECT min(d), max(d), min(ts), max(ts) FROM w", True),
    ("SELECT user_id, ts FROM w ORDER BY ts, user_id", True),
    ("SELECT user_id, ts FROM w WHERE ts > '2000-01-01' ORDER BY ts DESC, user_id", True),
    ("SELECT DISTINCT ts FROM w ORDER BY ts", True),
    # LIMIT / OFFSET forms
    ("SELECT user_id FROM w ORDER BY user_id LIMIT ALL", True),
    ("SELECT user_id FROM w ORDER BY user_id LIMIT NULL", True),
    ("SELECT user_id FROM w ORDER BY user_id LIMIT 9223372036854775807 OFFSET 3", True),
    ("SELECT user_id FROM w ORDER BY user_id LIMIT 3 OFFSET 9223372036854775807", True),
    ("SELECT user_id FROM w ORDER BY user_id LIMIT 9223372036854775807 OFFSET 9223372036854775807", True),
    ("SELECT user_id FROM w ORDER BY user_id OFFSET 100", True),
    ("SELECT user_id FROM w ORDER BY user_id LIMIT 0", True),
    ("SELECT user_id FROM w ORDER BY user_id LIMIT -1", True),
    ("SELECT user_id FROM w ORDER BY user_id OFFSET -1", True),
    ("SELECT user_id FROM w ORDER BY user_id LIMIT 2.5", True),
    ("SELECT user_id FROM w ORDER BY user_id LIMIT 2.4 OFFSET 1.5", True),
    ("SELECT user_id FROM w ORDER BY user_id LIMIT 1e1", True),
    ("SELECT user_id FROM w ORDER BY user_id LIMIT '3'", True),
    ("SELECT user_id FROM w ORDER BY user_id LIMIT (1+1)", True),
    ("SELECT user_id FROM w ORDER BY user_id LIMIT (SELECT 2)", True),
    ("SELECT user_id FROM w ORDER BY user_id LIMIT +3", True),
    ("SELECT user_id FROM w ORDER BY user_id LIMIT 3::int8", True),
    ("SELECT user_id FROM w ORDER BY user_id LIMIT /* x */ 3 -- y\n", True),
    ("SELECT user_id FROM w ORDER BY user_id OFFSET 2 LIMIT 3", True),
    ("SELECT user_id FROM w ORDER BY user_id OFFSET 2 ROWS FETCH NEXT 3 ROWS ONLY", True),
    ("SELECT user_id FROM w ORDER BY user_id FETCH FIRST ROW ONLY", True),
    ("SELECT user_id FROM w ORDER BY user_id OFFSET 1 ROW FETCH FIRST 2 ROW ONLY", True),
    ("SELECT user_id FROM w ORDER BY user_id FETCH FIRST (2) ROWS ONLY", True),
    ("SELECT user_id FROM w ORDER BY user_id LIMIT 00003", True),
    ("SELECT user_id FROM w ORDER BY user_id LIMIT 3 LIMIT 4", True),
    # aliases and positions
    ("SELECT user_id, i AS big FROM w ORDER BY big, user_id", True),
    ("SELECT user_id AS i, i AS user_id FROM w ORDER BY user_id, i", True),
    ("SELECT user_id, i AS big FROM w ORDER BY big + 0, user_id", True),
    ("SELECT user_id, i FROM w ORDER BY i USING >, user_id", True),
    ("SELECT user_id, i FROM w ORDER BY -i, user_id", True),
    ("SELECT *, i FROM w ORDER BY i NULLS FIRST, user_id", True),
    ("SELECT user_id, user_id FROM w ORDER BY 1 DESC LIMIT 3", True),
    ("SELECT i, count(*) AS i FROM w GROUP BY i ORDER BY 1", True),
    ("SELECT count(*) FILTER (WHERE i > 3), sum(i) FILTER (WHERE i < 5) FROM w", True),
    ("SELECT count(*) AS c FROM w GROUP BY d ORDER BY c, 1", True),
    ("SELECT count(*) FROM w LIMIT 1 OFFSET 1", True),
    ("SELECT count(*) FROM w HAVING count(*) > 100", True),
    ("SELECT sum(i)::text FROM w", True),
    ("SELECT count(*)::int4 FROM w", True),
    ("SELECT max(i) FROM w GROUP BY d ORDER BY max(i)", True),
    ("SELECT DISTINCT i % 2 FROM w ORDER BY 1", True),
    ("SELECT DISTINCT ON (i) i FROM w ORDER BY i", True),
    ("SELECT i FROM w GROUP BY i ORDER BY i", True),
    ("SELECT 1 FROM w ORDER BY count(*)", True),
    ("SELECT count(*) FROM w, w AS w2", True),
    # things that are not a plain fan-out
    ("SELECT count(*) FROM (SELECT 1 FROM w) s", True),
    ("WITH x AS (SELECT count(*) AS c FROM w) SELECT c FROM x", True),
    ("SELECT (SELECT count(*) FROM w)", True),
    ("SELECT * FROM (SELECT user_id FROM w ORDER BY user_id LIMIT 2) s", False),
    ("SELECT user_id FROM w UNION SELECT user_id FROM w", False),
    ("SELECT i FROM w UNION SELECT i FROM w", False),
    ("SELECT i FROM w INTERSECT SELECT i FROM w", False),
    ("SELECT 1", False),
    ("SELECT EXISTS (SELECT 1 FROM w WHERE user_id = 4)", False),
    ("SELECT user_id FROM w WHERE user_id = (SELECT max(user_id) FROM w)", False),
    ("SELECT user_id FROM w WHERE i > (SELECT avg(i) FROM w)", False),
    ("SELECT now() IS NOT NULL", False),
    ("VALUES (1)", False),
    ("TABLE w ORDER BY user_id LIMIT 2", True),
    ("SELECT user_id FROM w ORDER BY random() LIMIT 0", True),
    ("SELECT user_id FROM ONLY w ORDER BY user_id LIMIT 2", True),
]


@timeout(120)
def test_a14_merge_values(env):
    """Merged reads over values that look alike in text but differ, LIMIT forms, aliases,
    subqueries: every answer pgmux gives equals the unsharded database's (refusals are fine)."""
    px, ref, _ = setup(env)
    diffs, refused = compare(px, env, ref, MERGE_CASES)
    show(diffs, refused)
    d2, r2 = compare(px, env, ref, [(q, o) for q, o in MERGE_CASES if "ORDER BY" in q and
                                    "LIMIT" not in q and "*" not in q and "TABLE" not in q][:25], binary=True)
    print("---- binary results")
    show(d2, r2)
    rep = px.sanitizer_report() if hasattr(px, "sanitizer_report") else ""
    assert not rep, rep
    assert not diffs and not d2


SESSION_CASES = [
    ("SELECT user_id, f FROM w ORDER BY f, user_id", True),
    ("SELECT DISTINCT f FROM w ORDER BY f", True),
    ("SELECT max(f), min(f) FROM w WHERE f <> 'NaN'", True),
    ("SELECT user_id, d FROM w ORDER BY d, user_id", True),
    ("SELECT min(d), max(d) FROM w", True),
    ("SELECT user_id, ts FROM w ORDER BY ts, user_id", True),
    ("SELECT d, count(*) FROM w GROUP BY d ORDER BY d", True),
    ("SELECT user_id, n FROM w ORDER BY n, user_id", True),
]


@timeout(120)
def test_a14_merge_session_settings(env):
    """Merged reads under session settings that change the shards' text output: a reduced
    extra_float_digits, DateStyle SQL/German/Postgres, IntervalStyle; each in a fresh
    connection, applied with SET (simple protocol) on pgmux and on the reference."""
    px, ref, _ = setup(env)
    allbad = []
    for pre in (["SET DateStyle = 'SQL, DMY'"], ["SET DateStyle = 'German'"],
                ["SET DateStyle = 'Postgres, MDY'"], ["SET DateStyle = 'ISO, DMY'"],
                ["SET TimeZone = 'America/New_York'"]):
        diffs, refused = compare(px, env, ref, SESSION_CASES, pre=pre)
        print("=====", pre)
        show(diffs, refused)
        allbad += [f"{pre}: {d}" for d in diffs]
    assert not allbad, "\n".join(allbad)


@timeout(60)
def test_a14_merge_char_type(env):
    """Found by the attack, fixed: "char" (OID 18) values at or above 0x80 come out as octal escapes (\\302); pgmux
    orders "char" by its text bytes, so such a value sorts before 'a' where PostgreSQL (which
    compares the byte) puts it after 'z'.  Wrong answer (should refuse ORDER BY / DISTINCT on
    "char", or decode the escape)."""
    px, ref, _ = setup(env)
    q = [("SELECT user_id, c FROM w ORDER BY c, user_id", True),
         ("SELECT DISTINCT c FROM w ORDER BY c", True)]
    diffs, refused = compare(px, env, ref, q)
    show(diffs, refused)
    assert not diffs


# ---- split writes --------------------------------------------------------------------------

from test_sharding import DB as SDB  # noqa: E402
from test_shard_split import INSERT, split_env, check_rows, spanning_keys  # noqa: E402


def key_forms(k):
    """Spellings of int8 key k in a VALUES list that PostgreSQL reads as k."""
    return [f"{k}.0", f"'{k}'", f"({k})", f"+{k}", f"{k}::int8", f"'{k}'::int8", f"0{k}" if k > 0
            else f"-0{-k}", f"{k}::numeric", f"E'{k}'", f"' {k}'", f"{k}e0"]


@timeout(150)
def test_a14_split_keys(env):
    """Spanning INSERTs whose key is spelled as an expression, a string, a numeric, with
    reordered or quoted column lists, DEFAULT VALUES, INSERT ... SELECT, subqueries; then every
    row accepted must be on its hash partition's shard, none lost or doubled, and
    pg_prepared_xacts empty."""
    px, shards = split_env(env, 2)
    keys, ks = spanning_keys(shards, 40, seed=1401)
    want = {}
    results = []
    pool = {0: list(ks[0]), 1: list(ks[1])}

    def run(sql, rows, params=None):
        with px.connect(SDB) as c:
            try:
                cur = c.execute(sql, params)
                results.append(f"OK  {cur.statusmessage}: {sql[:150]}")
                want.update(rows)
            except psycopg.Error as e:
                results.append(f"ERR {e.sqlstate} {str(e)[:110]!r}: {sql[:150]}")
                assert e.sqlstate, f"no SQLSTATE: {e}"
            assert c.execute("SELECT 1").fetchone() == (1,)

    for form_i in range(len(key_forms(1))):
        a, b = pool[0].pop(), pool[1].pop()
        fa, fb = key_forms(a)[form_i], key_forms(b)[form_i]
        run(f"{INSERT} ({fa}, 'f{form_i}'), ({fb}, 'f{form_i}')", {a: f"f{form_i}", b: f"f{form_i}"})
    a, b = pool[0].pop(), pool[1].pop()
    run(f"INSERT INTO accounts (name, user_id) VALUES ('r', {a}), ('r', {b})", {a: "r", b: "r"})
    a, b = pool[0].pop(), pool[1].pop()
    run(f'INSERT INTO accounts ("user_id", "name") VALUES ({a}, \'q\'), ({b}, \'q\')', {a: "q", b: "q"})
    a, b = pool[0].pop(), pool[1].pop()
    run(f'INSERT INTO accounts (USER_ID, NAME) VALUES ({a}, \'u\'), ({b}, \'u\')', {a: "u", b: "u"})
    a, b = pool[0].pop(), pool[1].pop()
    run(f"INSERT INTO accounts VALUES ({a}, 'nl'), ({b}, 'nl')", {a: "nl", b: "nl"})
    a, b = pool[0].pop(), pool[1].pop()
    run(f"INSERT INTO public.accounts AS x (user_id, name) VALUES ({a}, 'al'), ({b}, 'al')",
        {a: "al", b: "al"})
    a, b = pool[0].pop(), pool[1].pop()
    run(f"INSERT INTO accounts (user_id, name) VALUES ({a} + 0, 'e'), ({b} * 1, 'e')", {a: "e", b: "e"})
    a, b = pool[0].pop(), pool[1].pop()
    run(f"INSERT INTO accounts (user_id, name) VALUES ((SELECT {a}), 's'), ((SELECT {b}), 's')",
        {a: "s", b: "s"})
    a, b = pool[0].pop(), pool[1].pop()
    run(f"INSERT INTO accounts (user_id, name) SELECT * FROM (VALUES ({a}::int8, 'sel'), "
        f"({b}::int8, 'sel')) v", {a: "sel", b: "sel"})
    a, b = pool[0].pop(), pool[1].pop()
    run(f"INSERT INTO accounts (user_id, name) VALUES ({a}, 'd'), ({b}, DEFAULT)", {a: "d", b: None})
    run("INSERT INTO accounts DEFAULT VALUES", {})
    run("INSERT INTO accounts (name) VALUES ('nokey'), ('nokey2')", {})
    a, b = pool[0].pop(), pool[1].pop()
    run(f"INSERT INTO accounts (user_id, name) VALUES ({a}, 'n'), (NULL, 'n'), ({b}, 'n')", {})
    a, b = pool[0].pop(), pool[1].pop()
    run(f"INSERT INTO accounts (user_id, name) VALUES ({a}, 'x'), ({b}, 'x'), ('abc', 'x')", {})
    a, b = pool[0].pop(), pool[1].pop()
    run(f"INSERT INTO accounts (user_id, name) VALUES ({a}, 'x'), ({b}, 'x'), "
        f"(9223372036854775808, 'x')", {})
    a, b = pool[0].pop(), pool[1].pop()
    run(f"INSERT INTO accounts (user_id, name, user_id) VALUES ({a}, 'x', {b}), ({b}, 'x', {a})", {})
    a, b = pool[0].pop(), pool[1].pop()
    run(f"INSERT INTO accounts (user_id, name) VALUES ({a}, 'x'), ({b}, 'x') ON CONFLICT (user_id) "
        f"DO UPDATE SET user_id = excluded.user_id + 1", {a: "x", b: "x"})
    a, b = pool[0].pop(), pool[1].pop()
    run(f"INSERT INTO accounts (user_id, name) VALUES ({a}, 'y'), ({b}, 'y') ON CONFLICT (user_id) "
        f"DO UPDATE SET user_id = accounts.user_id + 1", {a: "x+y", b: "x+y"})   # first time no conflict
    # and run it again: now there is a conflict, and the key would change
    run(f"INSERT INTO accounts (user_id, name) VALUES ({a}, 'y'), ({b}, 'y') ON CONFLICT (user_id) "
        f"DO UPDATE SET user_id = accounts.user_id + 1", {})
    a, b = pool[0].pop(), pool[1].pop()
    run(f"WITH z AS (SELECT 1) INSERT INTO accounts (user_id, name) VALUES ({a}, 'w'), ({b}, 'w')",
        {a: "w", b: "w"})
    a, b = pool[0].pop(), pool[1].pop()
    run(f"INSERT INTO accounts (user_id, name) VALUES ({a}, 'semi'), ({b}, 'semi'); "
        f"SELECT 1", {a: "semi", b: "semi"})
    a, b = pool[0].pop(), pool[1].pop()
    run(f"INSERT INTO accounts (user_id, name) VALUES ({a}, $$a'),({b},'z$$), ({b}, 'dq')",
        {a: f"a'),({b},'z", b: "dq"})
    a, b = pool[0].pop(), pool[1].pop()
    run(f"INSERT INTO accounts (user_id, name) VALUES ({a}, E'e\\'), ({b}, \\''), ({b}, 'e2')",
        {a: f"e'), ({b}, '", b: "e2"})
    # the extended protocol with parameters
    a, b = pool[0].pop(), pool[1].pop()
    run(f"{INSERT} (%s, %s), (%s, %s)", {a: "p", b: "p"}, (a, "p", b, "p"))
    a, b = pool[0].pop(), pool[1].pop()
    run(f"{INSERT} (%s, %s), (%s, %s)", {a: "ps", b: "ps"}, (str(a), "ps", str(b), "ps"))
    a, b = pool[0].pop(), pool[1].pop()
    run(f"{INSERT} (%s::int8, 'pc'), (%s::int8, 'pc')", {a: "pc", b: "pc"}, (a, b))
    a, b = pool[0].pop(), pool[1].pop()
    run(f"{INSERT} (%s, 'pn'), (%s, 'pn')", {}, (a, None))
    print("\n".join(results))
    # fix up the ON CONFLICT DO UPDATE rows: whatever PostgreSQL did with them, read back
    for s in range(shards.n):
        for k, v in shards.rows(s).items():
            if v in ("x", "y", "x+y"):
                want.pop(k, None)
                want[k] = v
    for k in [k for k, v in want.items() if v == "x+y"]:
        want.pop(k)
    check_rows(shards, want, "after the key-spelling INSERTs")


def raw_copy(px, header, chunks, end=rawpg.COPY_DONE, timeout=20, split_writes=False, port=None):
    """COPY through pgmux on a raw connection: the Query, the CopyData chunks, then end (CopyDone,
    a CopyFail message, or b"" for nothing).  Returns (messages up to ReadyForQuery, conn)."""
    c = rawpg.RawConn.tcp(port or px.port, SDB, TEST_USER, timeout=timeout)
    c.send(rawpg.query(header))
    first = c.read_msg()
    if first[0] != b"G":
        return [first] + c.read_until_ready(), c
    out = b"".join(rawpg.copy_data(ch) for ch in chunks) + end
    if split_writes:
        for i in range(0, len(out), 7):
            c.send(out[i:i + 7])
    else:
        c.send(out)
    return c.read_until_ready(), c


def bin_hdr():
    return b"PGCOPY\n\xff\r\n\x00" + struct.pack("!ii", 0, 0)


def bin_row(k, name):
    b = name.encode()
    return struct.pack("!h", 2) + struct.pack("!iq", 8, k) + struct.pack("!i", len(b)) + b


@timeout(200)
def test_a14_split_copy_hostile(env):
    """Malformed spanning COPY streams (text, CSV, binary) on raw connections: each gets one
    ErrorResponse with a SQLSTATE (or succeeds like PostgreSQL would), the connection stays
    usable, nothing is written, no prepared transaction is left; a well-formed COPY sent in
    7-byte writes succeeds."""
    px, shards = split_env(env, 2, settings={"max_client_memory": 262144})
    keys, ks = spanning_keys(shards, 30, seed=1402)
    a, b = ks[0], ks[1]
    T = "COPY accounts (user_id, name) FROM STDIN"
    C = T + " (FORMAT csv)"
    B = T + " (FORMAT binary)"
    cases = [
        ("text bad escape", T, [f"{a[0]}\tx\\\n{b[0]}\ty\n".encode()]),
        ("text wrong field count", T, [f"{a[0]}\tx\textra\n{b[0]}\ty\n".encode()]),
        ("text too few fields", T, [f"{a[0]}\n{b[0]}\ty\n".encode()]),
        ("text bad key", T, [f"{a[0]}\tx\nabc\ty\n".encode()]),
        ("text NULL key", T, [f"{a[0]}\tx\n\\N\ty\n".encode()]),
        ("text key overflow", T, [f"{a[0]}\tx\n9223372036854775808\ty\n".encode()]),
        ("text key with escape", T, [f"{a[0]}\tx\n\\061{b[0]}\ty\n".encode()]),
        ("text end marker then data", T, [f"{a[0]}\tx\n\\.\n{b[0]}\ty\n".encode()]),
        ("text no final newline", T, [f"{a[0]}\tx\n{b[0]}\ty".encode()]),
        ("text CR LF", T, [f"{a[0]}\tx\r\n{b[0]}\ty\r\n".encode()]),
        ("text mixed newlines", T, [f"{a[0]}\tx\n{b[0]}\ty\r\n".encode()]),
        ("text invalid utf8", T, [f"{a[0]}\tx\n{b[0]}\t".encode() + b"\xff\xfe\n"]),
        ("text NUL byte", T, [f"{a[0]}\tx\n{b[0]}\ty\0z\n".encode()]),
        ("text duplicate key in stream", T, [f"{a[0]}\tx\n{b[0]}\ty\n{a[0]}\tz\n".encode()]),
        ("csv unterminated quote", C, [f'{a[0]},"x\n{b[0]},y\n'.encode()]),
        ("csv quoted key", C, [f'"{a[0]}",x\n"{b[0]}",y\n'.encode()]),
        ("csv key with spaces", C, [f' {a[0]},x\n{b[0]} ,y\n'.encode()]),
        ("csv empty key", C, [f'{a[0]},x\n,y\n'.encode()]),
        ("csv quoted empty key", C, [f'{a[0]},x\n"",y\n'.encode()]),
        ("csv embedded newline", C, [f'{a[0]},"x\ny"\n{b[0]},"z"\n'.encode()]),
        ("csv \\. inside quotes", C, [f'{a[0]},"\n\\.\n"\n{b[0]},z\n'.encode()]),
        ("bin lying field length", B, [bin_hdr() + bin_row(a[0], "x") + struct.pack("!h", 2) +
                                        struct.pack("!iq", 8, b[0]) + struct.pack("!i", 1000) +
                                        b"short" + struct.pack("!h", -1)]),
        ("bin key length 4", B, [bin_hdr() + bin_row(a[0], "x") + struct.pack("!h", 2) +
                                  struct.pack("!ii", 4, 7) + struct.pack("!i", 1) + b"y" +
                                  struct.pack("!h", -1)]),
        ("bin negative length", B, [bin_hdr() + bin_row(a[0], "x") + struct.pack("!h", 2) +
                                     struct.pack("!iq", 8, b[0]) + struct.pack("!i", -5) +
                                     struct.pack("!h", -1)]),
        ("bin no trailer", B, [bin_hdr() + bin_row(a[0], "x") + bin_row(b[0], "y")]),
        ("bin truncated trailer", B, [bin_hdr() + bin_row(a[0], "x") + bin_row(b[0], "y") + b"\xff"]),
        ("bin data after trailer", B, [bin_hdr() + bin_row(a[0], "x") + bin_row(b[0], "y") +
                                        struct.pack("!h", -1) + b"junk"]),
        ("bin wrong field count", B, [bin_hdr() + bin_row(a[0], "x") + struct.pack("!h", 3) +
                                       struct.pack("!iq", 8, b[0]) + struct.pack("!i", -1) * 2 +
                                       struct.pack("!h", -1)]),
        ("bin bad header", B, [b"PGCOPY\n\xff\r\n\x01" + struct.pack("!ii", 0, 0) +
                                bin_row(a[0], "x") + struct.pack("!h", -1)]),
        ("bin header extension", B, [b"PGCOPY\n\xff\r\n\x00" + struct.pack("!ii", 0, 4) + b"abcd" +
                                      bin_row(a[0], "x") + bin_row(b[0], "y") + struct.pack("!h", -1)]),
        ("bin OIDs flag", B, [b"PGCOPY\n\xff\r\n\x00" + struct.pack("!ii", 1 << 16, 0) +
                               bin_row(a[0], "x") + struct.pack("!h", -1)]),
        ("bin split mid-row", B, [bin_hdr() + bin_row(a[0], "x")[:5], bin_row(a[0], "x")[5:] +
                                   bin_row(b[0], "y") + struct.pack("!h", -1)]),
        ("endless row", T, [f"{b[0]}\t".encode()] + [b"z" * 65536] * 6),
        ("empty CopyData msgs", T, [b"", f"{a[0]}\tx\n".encode(), b"", f"{b[0]}\ty\n".encode(), b""]),
    ]
    results, bad, lenient = [], [], []
    for what, hdr, chunks in cases:
        before = {s: shards.rows(s) for s in range(shards.n)}
        try:
            msgs, c = raw_copy(px, hdr, chunks)
        except Exception as e:  # noqa: BLE001
            bad.append(f"{what}: no answer: {e!r}")
            continue
        errs = rawpg.errors(msgs)
        tags = [bd for t, bd in msgs if t == b"C"]
        if errs:
            results.append(f"{what}: ERR {errs[0].get('C')} {errs[0].get('M', '')[:100]}")
            if not errs[0].get("C"):
                bad.append(f"{what}: error without SQLSTATE")
        else:
            results.append(f"{what}: OK {tags}")
        try:
            if c.query_rows("SELECT 1") != [("1",)]:
                bad.append(f"{what}: connection unusable afterwards")
        except Exception as e:  # noqa: BLE001
            bad.append(f"{what}: connection unusable afterwards: {e!r}")
        c.close()
        after = {s: shards.rows(s) for s in range(shards.n)}
        if errs and after != before:
            bad.append(f"{what}: refused but rows changed: {before} -> {after}")
        for s in range(shards.n):
            left = shards.primary(s).sql("SELECT gid FROM pg_prepared_xacts")
            if left:
                bad.append(f"{what}: prepared left on shard {s}: {left}")
        union = {}
        for s in range(shards.n):
            got = shards.rows(s)
            place = shards.placement(list(got)) if got else {}
            for k in got:
                if place[k] != s:
                    bad.append(f"{what}: key {k} on shard {s}, belongs on {place[k]}")
            union.update(got)
        # the same stream straight into one PostgreSQL (shard 0's server)
        for s in range(shards.n):
            shards.primary(s).sql("DELETE FROM accounts", dbname=SDB)
        dmsgs, dc = raw_copy(px, hdr, chunks, port=shards.primary(0).port)
        dc.close()
        derrs = rawpg.errors(dmsgs)
        direct = shards.rows(0)
        if errs and not derrs:
            results.append("    (stricter than PostgreSQL, which accepts it: fine)")
        elif derrs and not errs:
            lenient.append(f"{what}: pgmux wrote {len(union)} rows where PostgreSQL refuses: "
                           f"{derrs[0].get('C')} {derrs[0].get('M')}")
        elif not errs and direct != union:
            bad.append(f"{what}: differs from PostgreSQL: pgmux "
                       f"{errs[0].get('C') if errs else union} vs PostgreSQL "
                       f"{derrs[0].get('C') + ' ' + derrs[0].get('M') if derrs else direct}"[:300])
        # reset
        for s in range(shards.n):
            shards.primary(s).sql("DELETE FROM accounts", dbname=SDB)
    # well-formed, in 7-byte writes, and CopyFail
    rows = "".join(f"{k}\tn{k}\n" for k in keys).encode()
    msgs, c = raw_copy(px, T, [rows[:100], rows[100:]], split_writes=True)
    tags = [bd for t, bd in msgs if t == b"C"]
    results.append(f"7-byte writes: {tags} {rawpg.errors(msgs)}")
    c.close()
    want = {k: f"n{k}" for k in keys}
    check_rows(shards, want, "COPY in 7-byte writes")
    msgs, c = raw_copy(px, T, [rows[:50]], end=rawpg.message(b"f", b"client says no\0"))
    results.append(f"CopyFail: {[e.get('C') for e in rawpg.errors(msgs)]}")
    c.close()
    check_rows(shards, want, "CopyFail")
    print("\n".join(results))
    print("LENIENT (pgmux accepts what PostgreSQL refuses; see the report):\n  " +
          "\n  ".join(lenient))
    assert not bad, "\n".join(bad)
    rep = px.sanitizer_report()
    assert not rep, rep


def console(px, sql, timeout=10):
    with psycopg.connect(px.dsn("pgmux", "postgres"), autocommit=True,
                         connect_timeout=10) as c:
        cur = c.execute(sql)
        return cur.fetchall() if cur.description else None


def console_async(px, sql):
    """A console command on a raw connection, answer not awaited: (conn)."""
    c = rawpg.RawConn.tcp(px.port, "pgmux", "postgres", timeout=30)
    c.send(rawpg.query(sql))
    return c


def answered(c, wait):
    """The raw connection's answer up to ReadyForQuery within wait seconds, or None."""
    try:
        return c.read_until_ready(timeout=wait)
    except (socket.timeout, TimeoutError):
        return None


def kill_sock(c):
    c.sock.shutdown(socket.SHUT_RDWR)
    c.sock.close()


@timeout(150)
def test_a14_pause_hostile(env):
    """PAUSE against hostile clients: a spanning COPY that stalls (PAUSE waits), then vanishes
    (PAUSE must return); PAUSE/RESUME/PAUSE in quick succession; many parked clients, half of
    which leave; KILL while parked; a global PAUSE; every parked client that stays gets its
    answer after RESUME, nothing prepared is left, rows are where they belong."""
    px, shards = split_env(env, 2)
    keys, ks = spanning_keys(shards, 60, seed=1403)
    notes, bad = [], []
    want = {}
    # 1. a stalled spanning COPY holds the PAUSE
    a = rawpg.RawConn.tcp(px.port, SDB, TEST_USER, timeout=10)
    a.send(rawpg.query("COPY accounts (user_id, name) FROM STDIN"))
    assert a.read_msg()[0] == b"G"
    a.send(rawpg.copy_data(f"{ks[0][0]}\tstall\n{ks[1][0]}\tstall\n".encode()))
    time.sleep(0.3)
    p = console_async(px, f"PAUSE {SDB}")
    r = answered(p, 2.0)
    notes.append(f"PAUSE with a stalled COPY: {'returned' if r else 'waits'}")
    parked = rawpg.RawConn.tcp(px.port, SDB, TEST_USER, timeout=10)
    parked.send(rawpg.query(f"INSERT INTO accounts (user_id, name) VALUES ({ks[0][1]}, 'parked')"))
    # a RESUME while pausing
    try:
        console(px, f"RESUME {SDB}")
        notes.append("RESUME while pausing: accepted")
    except psycopg.Error as e:
        notes.append(f"RESUME while pausing: {e.sqlstate} {e}")
    r2 = answered(parked, 2.0)
    notes.append(f"keyed INSERT after RESUME-while-pausing: {'answered' if r2 else 'still waits'}")
    r = r or answered(p, 0.5)
    notes.append(f"the PAUSE after that RESUME: {'returned ' + rawpg.types(r) if r else 'still waits'}")
    # the COPY client vanishes
    kill_sock(a)
    r = r or answered(p, 10.0)
    notes.append(f"PAUSE after the COPY client vanished: {'returned ' + rawpg.types(r) if r else 'STILL WAITS'}")
    if not r:
        bad.append("PAUSE never returned after the stalled COPY's client vanished")
    p.close()
    try:
        console(px, f"RESUME {SDB}")
    except psycopg.Error as e:
        notes.append(f"RESUME: {e.sqlstate} {e}")
    r2 = r2 or answered(parked, 10.0)
    if not r2:
        bad.append("the keyed INSERT parked behind the PAUSE never got its answer after RESUME")
    elif not rawpg.errors(r2):
        want[ks[0][1]] = "parked"
    parked.close()
    # 2. PAUSE, RESUME, PAUSE quickly; a parked client; RESUME
    for _ in range(5):
        console(px, f"PAUSE {SDB}")
        console(px, f"RESUME {SDB}")
    console(px, f"PAUSE {SDB}")
    many = []
    for i in range(20):
        c = rawpg.RawConn.tcp(px.port, SDB, TEST_USER, timeout=15)
        k = ks[i % 2][2 + i]
        c.send(rawpg.query(f"INSERT INTO accounts (user_id, name) VALUES ({k}, 'm{i}')"))
        many.append((c, k, i))
    # a spanning INSERT parked too
    sp = rawpg.RawConn.tcp(px.port, SDB, TEST_USER, timeout=15)
    sp.send(rawpg.query(f"INSERT INTO accounts (user_id, name) VALUES ({ks[0][40]}, 'sp'), ({ks[1][40]}, 'sp')"))
    time.sleep(0.5)
    for c, k, i in many:
        if c.inq():
            bad.append(f"client {i} answered during the PAUSE")
    # half of them leave while parked
    for c, k, i in many[::2]:
        kill_sock(c)
    time.sleep(0.3)
    console(px, f"RESUME {SDB}")
    for c, k, i in many[1::2]:
        r = answered(c, 10)
        if not r or rawpg.errors(r):
            bad.append(f"parked client {i}: {rawpg.errors(r) if r else 'no answer'}")
        else:
            want[k] = f"m{i}"
        c.close()
    r = answered(sp, 10)
    if not r or rawpg.errors(r):
        bad.append(f"parked spanning INSERT: {rawpg.errors(r) if r else 'no answer'}")
    else:
        want[ks[0][40]] = want[ks[1][40]] = "sp"
    sp.close()
    # the ones that left: pgmux's side must not have run their INSERT on a server half-way;
    # whatever ran, it is on its shard (accounted below by reading back)
    for c, k, i in many[::2]:
        for s in range(shards.n):
            got = shards.rows(s)
            if k in got:
                want[k] = got[k]
                notes.append(f"left-while-parked client {i}: its INSERT ran anyway")
    # 3. KILL while parked
    console(px, f"PAUSE {SDB}")
    kc = rawpg.RawConn.tcp(px.port, SDB, TEST_USER, timeout=15)
    kc.send(rawpg.query(f"INSERT INTO accounts (user_id, name) VALUES ({ks[0][50]}, 'kill')"))
    time.sleep(0.3)
    try:
        console(px, f"KILL {SDB}")
    except psycopg.Error as e:
        notes.append(f"KILL: {e.sqlstate} {e}")
    try:
        out = kc.read_raw(5, stop=lambda b: b"Z" in b or b"E" in b)
        notes.append(f"KILL while parked: the client got {out[:120]!r}")
    except Exception as e:  # noqa: BLE001
        notes.append(f"KILL while parked: {e!r}")
    kc.close()
    try:
        console(px, f"RESUME {SDB}")
    except psycopg.Error as e:
        notes.append(f"RESUME after KILL: {e.sqlstate} {e}")
    # 4. global PAUSE with a parked client, then RESUME
    gp = console_async(px, "PAUSE")
    r = answered(gp, 10)
    notes.append(f"global PAUSE: {rawpg.types(r) if r else 'STILL WAITS'}")
    g = rawpg.RawConn.tcp(px.port, SDB, TEST_USER, timeout=15)
    g.send(rawpg.query(f"INSERT INTO accounts (user_id, name) VALUES ({ks[1][50]}, 'g')"))
    time.sleep(0.3)
    console(px, "RESUME")
    r = answered(g, 10)
    if not r or rawpg.errors(r):
        bad.append(f"client parked by a global PAUSE: {rawpg.errors(r) if r else 'no answer'}")
    else:
        want[ks[1][50]] = "g"
    g.close()
    gp.close()
    print("\n".join(notes))
    # the database works
    with px.connect(SDB) as c:
        c.execute(f"INSERT INTO accounts (user_id, name) VALUES ({ks[0][55]}, 'end'), ({ks[1][55]}, 'end')")
    want[ks[0][55]] = want[ks[1][55]] = "end"
    wait_for(lambda: all(not shards.primary(s).sql("SELECT gid FROM pg_prepared_xacts")
                         for s in range(shards.n)), 10, 0.1, "no prepared transactions")
    check_rows(shards, want, "after the PAUSE attacks")
    rep = px.sanitizer_report()
    assert not rep, rep
    assert not bad, "\n".join(bad)


@timeout(200)
def test_a14_reshard_window(env):
    """The resharding window: pgmux-reshard up to its cutover (2 -> 4 shards), then — before
    unsubscribe/cleanup — the live file's section gets no_shard_key = all and pgmux is
    RELOADed (the tool's plan refuses all, but only in the files it is given, only when it
    runs).  A keyless count(*) through pgmux then counts the moved rows twice: the old
    shards still hold them.  Reports what it sees; fails if the count is wrong."""
    import re as _re
    import test_reshard as TR
    lay, px, new_ini, ledger, keys = TR.setup(env, [0, 1, 1, 0], 2, 200, 2)
    state = env.dir / "reshard.state"
    r = TR.tool(px, new_ini, state, "plan", "schema", "publication", "slot", "subscription",
                "sync", "cutover")
    print(r.stdout[-300:])
    # the same command line again (as after a crash between the cutover and the cleanup)
    r1 = TR.tool(px, new_ini, state, check=False)
    print("resuming after the cutover, same command line:", r1.returncode, r1.stdout[-300:])
    assert r1.returncode == 0, r1.stdout[-600:] + r1.stderr[-600:]
    live = px.ini.read_text()
    sec = _re.search(r"(?ms)^\[database users\].*?(?=^\[|\Z)", live).group(0)
    if "no_shard_key" in sec:
        sec2 = _re.sub(r"(?m)^no_shard_key\s*=.*$", "no_shard_key = all", sec)
    else:
        sec2 = sec.rstrip("\n") + "\nno_shard_key = all\n\n"
    px.ini.write_text(live.replace(sec, sec2))
    console(px, "RELOAD")
    time.sleep(1.0)
    with px.connect(TR.DB) as c:
        try:
            got = c.execute("SELECT count(*) FROM accounts").fetchone()[0]
        except psycopg.Error as e:
            got = f"{e.sqlstate} {e}"
    print(f"count(*) through pgmux in the window: {got}; rows that exist: {len(ledger)}")
    # the tool's next steps, with the live file now saying all
    r2 = TR.tool(px, new_ini, state, "unsubscribe", check=False)
    print("unsubscribe with no_shard_key = all live:", r2.returncode, r2.stdout[-400:])
    restart_ok = r1.returncode == 0
    assert got == len(ledger) and restart_ok, f"restart after cutover rc {r1.returncode}; keyless count(*) in the reshard window: {got} != {len(ledger)}"


@timeout(60)
def test_a14_pause_resumed_while_pausing(env):
    """Found by the attack, fixed: a PAUSE waiting for a spanning COPY ("pausing"), then RESUME (accepted), then
    the COPY ends: the pending PAUSE answers success (CommandComplete) although the database is
    not paused (the next RESUME says 'database users is not paused', and keyed statements run).
    A tool that trusts the PAUSE's success (pgmux-reshard's cutover) would switch shards
    under live traffic.  The PAUSE should fail (cancelled by RESUME) or the database be paused."""
    px, shards = split_env(env, 2)
    keys, ks = spanning_keys(shards, 3, seed=1404)
    a = rawpg.RawConn.tcp(px.port, SDB, TEST_USER, timeout=10)
    a.send(rawpg.query("COPY accounts (user_id, name) FROM STDIN"))
    assert a.read_msg()[0] == b"G"
    a.send(rawpg.copy_data(f"{ks[0][0]}\ts\n{ks[1][0]}\ts\n".encode()))
    time.sleep(0.3)
    p = console_async(px, f"PAUSE {SDB}")
    assert answered(p, 1.5) is None, "PAUSE returned while a spanning COPY was under way"
    console(px, f"RESUME {SDB}")
    a.send(rawpg.COPY_DONE)
    a.read_until_ready()
    a.close()
    r = answered(p, 10)
    assert r is not None, "the PAUSE never answered"
    ok = not rawpg.errors(r)
    t0 = time.monotonic()
    with px.connect(SDB) as c:
        c.execute(f"INSERT INTO accounts (user_id, name) VALUES ({ks[0][1]}, 'x')")
    ran_at_once = time.monotonic() - t0 < 1.0
    print(f"PAUSE answered {'success' if ok else rawpg.errors(r)}; a keyed INSERT right after "
          f"{'ran at once' if ran_at_once else 'waited'}")
    assert not (ok and ran_at_once), "PAUSE reported success but the database is not paused"


def rss_kb(px):
    for line in open(f"/proc/{px.proc.pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def raw_ext(sql, max_rows=0, portal="", name=""):
    return (rawpg.parse(sql, name) + rawpg.bind(portal, name) + rawpg.describe_portal(portal) +
            rawpg.execute(portal, max_rows) + rawpg.SYNC)


@timeout(150)
def test_a14_merge_protocol_hostile(env):
    """Merged reads on raw connections: Execute with a row limit, named portals, a statement in
    1-byte writes, pipelined simple queries, multi-statement queries, an error on one shard
    mid-merge, clients that vanish mid-merge (the next client must get only its own answer),
    a cancel during a slow merge, a merge above max_client_memory repeated (RSS bounded)."""
    rows = [(i, str(i % 7), None, "x", "x", f"t{i}", "2024-01-01", "2024-01-01 00:00:00", i % 5,
             i) for i in range(1, 61)]
    px, ref, shard_dbs = setup(env, rows=rows)
    bad, notes = [], []
    Q = "SELECT user_id, i FROM w ORDER BY i DESC, user_id"
    with env.pg.connect(ref, TEST_USER) as r:
        want = [tuple(str(v) for v in row) for row in r.execute(Q).fetchall()]
        want_cnt = r.execute("SELECT i, count(*) FROM w GROUP BY i ORDER BY i").fetchall()
    want_cnt = [(str(a), str(b)) for a, b in want_cnt]

    def fresh():
        return rawpg.RawConn.tcp(px.port, DB, TEST_USER, timeout=15)

    def usable(c, what):
        try:
            got = c.query_rows(Q)
            if got != want:
                bad.append(f"{what}: the next merged read differs: {got[:3]}")
        except Exception as e:  # noqa: BLE001
            bad.append(f"{what}: connection unusable: {e!r}")

    # Execute with a row limit; a named portal; a named statement
    for what, data in (("row limit", raw_ext(Q, max_rows=5)),
                       ("named portal", raw_ext(Q, portal="p1")),
                       ("named statement", raw_ext(Q, name="s1")),
                       ("row limit 1 twice", rawpg.parse(Q) + rawpg.bind() + rawpg.execute("", 1) +
                        rawpg.execute("", 1) + rawpg.SYNC)):
        c = fresh()
        c.send(data)
        msgs = c.read_until_ready()
        got = rawpg.rows(msgs)
        errs = rawpg.errors(msgs)
        if errs:
            notes.append(f"{what}: {errs[0].get('C')} {errs[0].get('M')[:90]}")
            if not errs[0].get("C"):
                bad.append(f"{what}: error without SQLSTATE")
        else:
            notes.append(f"{what}: answered {len(got)} rows, {rawpg.types(msgs)}")
            if what.startswith("row limit"):
                exp = want[:5] if what == "row limit" else want[:2]
                if got != exp:
                    bad.append(f"{what}: rows {got[:6]} != {exp[:6]}")
            elif got != want:
                bad.append(f"{what}: rows differ")
        usable(c, what)
        c.close()
    # 1-byte writes
    c = fresh()
    data = rawpg.query(Q)
    for i in range(len(data)):
        c.sock.sendall(data[i:i + 1])
        time.sleep(0.001)
    msgs = c.read_until_ready()
    if rawpg.rows(msgs) != want:
        bad.append("1-byte writes: rows differ")
    # the extended protocol in 3-byte writes
    data = raw_ext(Q)
    for i in range(0, len(data), 3):
        c.sock.sendall(data[i:i + 3])
    msgs = c.read_until_ready()
    if rawpg.rows(msgs) != want:
        bad.append(f"extended in 3-byte writes: {rawpg.errors(msgs) or 'rows differ'}")
    # an error on one shard mid-merge (pipelined requests: see test_a14_merge_pipelined_simple)
    c.send(rawpg.query("SELECT user_id, 1 / (i - 3) FROM w ORDER BY user_id"))
    msgs = c.read_until_ready()
    e = rawpg.errors(msgs)
    notes.append(f"error on one shard mid-merge: {e[0].get('C') if e else 'no error'}; "
                 f"{len(rawpg.rows(msgs))} rows before it")
    if not e or e[0].get("C") != "22012" or rawpg.rows(msgs):
        bad.append(f"one shard's error: {e} after {len(rawpg.rows(msgs))} rows")
    # multi-statement simple query
    c.send(rawpg.query(f"{Q}; SELECT i, count(*) FROM w GROUP BY i ORDER BY i"))
    msgs = c.read_until_ready()
    notes.append(f"multi-statement merged query: {rawpg.types(msgs)[:20]}... "
                 f"{[x.get('C') for x in rawpg.errors(msgs)]}")
    if not rawpg.errors(msgs) and rawpg.rows(msgs) != want + want_cnt:
        bad.append("multi-statement merged query: rows differ")
    usable(c, "after the pipeline")
    c.close()
    # clients that vanish mid-merge, then other clients (own answers only)
    for i in range(30):
        v = fresh()
        v.send(rawpg.query(Q) + rawpg.query(Q))
        if i % 3 == 0:
            v.sock.shutdown(socket.SHUT_RDWR)
        v.sock.close()
        if i % 5 == 0:
            c = fresh()
            got = sorted(c.query_rows("SELECT user_id FROM w WHERE i = 3"))
            if got != sorted((str(u),) for u in range(1, 61) if u % 5 == 3):
                bad.append(f"after vanished client {i}: another client got {got[:4]}")
            usable(c, f"after vanished client {i}")
            c.close()
    # cancel during a slow merge
    with px.connect(DB) as pc:
        import threading
        t = threading.Timer(0.7, pc.cancel)
        t.start()
        t0 = time.monotonic()
        try:
            pc.execute("SELECT user_id FROM w WHERE pg_sleep(0.05) IS NOT NULL ORDER BY user_id")
            notes.append(f"cancel: the merge finished anyway ({time.monotonic() - t0:.1f}s)")
        except psycopg.Error as ex:
            notes.append(f"cancel: {ex.sqlstate} after {time.monotonic() - t0:.1f}s")
            if ex.sqlstate != "57014":
                bad.append(f"cancel gave {ex.sqlstate}: {ex}")
        t.join()
        try:
            got = pc.execute(Q).fetchall()
            if [tuple(str(x) for x in g) for g in got] != want:
                bad.append("after cancel: the next merged read differs (a late answer?)")
        except psycopg.Error as ex:
            bad.append(f"after cancel: {ex.sqlstate} {ex}")
    # a merge above max_client_memory, repeated: RSS stays bounded
    for d in shard_dbs:
        env.sql(d, "CREATE TABLE big AS SELECT g AS user_id, g AS k, repeat('y', 40) AS pad "
                "FROM generate_series(1, 20000) g")
    r0 = rss_kb(px)
    errs = set()
    for i in range(25):
        c = fresh()
        c.send(rawpg.query("SELECT k, count(*) FROM big GROUP BY k ORDER BY k"))
        msgs = c.read_until_ready(timeout=30)
        errs.update(x.get("C") for x in rawpg.errors(msgs))
        c.close()
    r1 = rss_kb(px)
    notes.append(f"big GROUP BY x25: {errs}; RSS {r0} kB -> {r1} kB")
    if errs != {"54000"}:
        bad.append(f"big GROUP BY: {errs}")
    if r1 - r0 > 50000:
        bad.append(f"RSS grew {r1 - r0} kB over 25 refused merges")
    print("\n".join(notes))
    rep = px.sanitizer_report()
    assert not rep, rep
    assert px.alive()
    assert not bad, "\n".join(bad)


@timeout(120)
def test_a14_merge_pipelined_simple(env):
    """Simple-protocol Query messages pipelined with a fan-out or merged read (sent in one
    write; legal protocol, what async drivers do).  Found lost (the client hung), mixed (Q;Q gave
    every row twice) and swapped answers on the first merged build.  Each must get its own
    answer, in order; a fan-out read behind requests still unanswered may instead be refused
    with 0A000, as documented (one that starts the pipeline runs)."""
    rows = [(i, str(i % 7), None, "x", "x", f"t{i}", "2024-01-01", "2024-01-01 00:00:00", i % 5,
             i) for i in range(1, 61)]
    px, ref, shard_dbs = setup(env, rows=rows)
    Q = "SELECT user_id, i FROM w ORDER BY i DESC, user_id"
    K = "SELECT i FROM w WHERE user_id = 7"
    G = "SELECT i, count(*) FROM w GROUP BY i ORDER BY i"
    E = "SELECT user_id, 1 / (i - 3) FROM w ORDER BY user_id"
    P = "SELECT user_id FROM w WHERE i = 4"   # plain fan-out
    def alone(q):
        c = rawpg.RawConn.tcp(px.port, DB, TEST_USER, timeout=10)
        msgs = c.query(q)
        c.close()
        errs = rawpg.errors(msgs)
        return ("err", errs[0].get("C")) if errs else ("rows", sorted(rawpg.rows(msgs)))

    with env.pg.connect(ref, TEST_USER) as r:
        def want(q):
            if q == K:   # rows are not placed by hash here: a keyed read's answer is pgmux's
                return alone(K)
            try:
                return ("rows", sorted(tuple(None if v is None else str(v) for v in row)
                                       for row in r.execute(q).fetchall()))
            except psycopg.Error as e:
                return ("err", e.sqlstate)
        combos = [[Q, K], [K, Q], [Q, Q], [Q, G], [G, K], [E, K], [Q, E, Q], [P, K], [P, Q],
                  [K, K, Q], [Q, K, G, E, Q]]
        bad, refused = [], 0
        for combo in combos:
            c = rawpg.RawConn.tcp(px.port, DB, TEST_USER, timeout=10)
            c.send(b"".join(rawpg.query(q) for q in combo))
            for i, q in enumerate(combo):
                try:
                    msgs = c.read_until_ready(timeout=8)
                except (socket.timeout, TimeoutError):
                    bad.append(f"{combo}: answer {i + 1} ({q}) never came")
                    break
                errs = rawpg.errors(msgs)
                got = ("err", errs[0].get("C")) if errs else ("rows", sorted(rawpg.rows(msgs)))
                w = want(q)
                if got == ("err", "0A000") and i > 0 and q != K:
                    refused += 1   # a fan-out behind unanswered requests: documented refusal
                elif got != w:
                    bad.append(f"{[x[:30] for x in combo]}: answer {i + 1} ({q[:40]}): got "
                               f"{str(got)[:120]} want {str(w)[:80]}")
            c.close()
    print("\n".join(bad))
    print(f"{refused} fan-out reads behind unanswered requests refused")
    rep = px.sanitizer_report()
    assert not rep, rep
    assert not bad, f"{len(bad)} wrong answers"


@timeout(120)
def test_a14_split_pipelined(env):
    """Spanning INSERTs pipelined with other simple Query messages (one write): each request
    gets its own answer in order, rows land on their shards, none lost or doubled, no prepared
    transaction left.  Also a spanning INSERT in the extended protocol pipelined behind a keyed
    one, and a spanning INSERT inside BEGIN (refused) followed by COMMIT."""
    px, shards = split_env(env, 2)
    keys, ks = spanning_keys(shards, 40, seed=1405)
    pool = {0: list(ks[0]), 1: list(ks[1])}
    want, bad, notes = {}, [], []

    def span(tag):
        a, b = pool[0].pop(), pool[1].pop()
        return f"{INSERT} ({a}, '{tag}'), ({b}, '{tag}')", {a: tag, b: tag}

    def keyed(tag, s=0):
        a = pool[s].pop()
        return f"{INSERT} ({a}, '{tag}')", {a: tag}

    combos = []
    for i in range(6):
        s1, w1 = span(f"s{i}a")
        s2, w2 = span(f"s{i}b")
        k1, wk = keyed(f"k{i}", i % 2)
        sel = "SELECT count(*) FROM accounts WHERE user_id = %d" % list(w1)[0]
        combos.append([(s1, w1, "INSERT 0 2"), (k1, wk, "INSERT 0 1")])
        combos.append([(k1.replace(f"'k{i}'", f"'k{i}x'") if False else keyed(f"kk{i}")[0], None, "INSERT 0 1"),
                       (s2, w2, "INSERT 0 2")])
        combos.append([(sel, {}, "SELECT 1")])
    for combo in combos:
        c = rawpg.RawConn.tcp(px.port, SDB, TEST_USER, timeout=10)
        c.send(b"".join(rawpg.query(q) for q, _, _ in combo))
        for i, (q, w, tag) in enumerate(combo):
            try:
                msgs = c.read_until_ready(timeout=8)
            except (socket.timeout, TimeoutError):
                bad.append(f"{[x[0][:50] for x in combo]}: answer {i + 1} never came")
                break
            errs = rawpg.errors(msgs)
            tags = [b.rstrip(b"\0").decode() for t, b in msgs if t == b"C"]
            if errs:
                notes.append(f"{q[:60]}: {errs[0].get('C')} {errs[0].get('M')[:80]}")
            elif tags != [tag]:
                bad.append(f"{q[:60]}: tag {tags} (want {tag})")
            if not errs and w:
                want.update(w)
            if not errs and w is None:
                # the keyed row of the second combo: read it back
                pass
        c.close()
    # add the kk rows that were written
    for s in range(shards.n):
        for k, v in shards.rows(s).items():
            if v.startswith("kk"):
                want[k] = v
    print("\n".join(notes + bad))
    check_rows(shards, want, "after pipelined spanning INSERTs")
    rep = px.sanitizer_report()
    assert not rep, rep
    assert not bad, "\n".join(bad)


@timeout(120)
def test_a14_merge_shard_down_and_pause(env):
    """A merged read with one shard refusing connections gets a clear error (SQLSTATE) and the
    client goes on; a client that vanishes in the middle of a slow fan-out read does not hold a
    PAUSE for ever (the database's spanning count goes back to 0)."""
    from pgharness import free_port
    rows = [(i, str(i), None, "x", "x", f"t{i}", "2024-01-01", "2024-01-01 00:00:00", i % 5, i)
            for i in range(1, 13)]
    px, ref, shard_dbs = setup(env, rows=rows)
    notes, bad = [], []
    # a slow fan-out read whose client vanishes; then PAUSE
    v = rawpg.RawConn.tcp(px.port, DB, TEST_USER, timeout=10)
    v.send(rawpg.query("SELECT user_id FROM w WHERE pg_sleep(0.3) IS NOT NULL ORDER BY user_id"))
    time.sleep(0.3)
    kill_sock(v)
    t0 = time.monotonic()
    p = console_async(px, f"PAUSE {DB}")
    r = answered(p, 15)
    notes.append(f"PAUSE after a client vanished mid fan-out: "
                 f"{'returned after %.1fs' % (time.monotonic() - t0) if r else 'STILL WAITS'}")
    if not r:
        bad.append("PAUSE still waits 15 s after the fan-out's client vanished")
    p.close()
    try:
        console(px, f"RESUME {DB}")
    except psycopg.Error as e:
        notes.append(f"RESUME: {e}")
    # a slow merged read, PAUSE during it, then the client cancels
    with px.connect(DB) as c:
        import threading
        res = {}

        def slow():
            try:
                c.execute("SELECT user_id FROM w WHERE pg_sleep(0.3) IS NOT NULL ORDER BY user_id")
                res["ok"] = True
            except psycopg.Error as e:
                res["err"] = e.sqlstate
        t = threading.Thread(target=slow)
        t.start()
        time.sleep(0.4)
        p = console_async(px, f"PAUSE {DB}")
        early = answered(p, 0.3)
        notes.append(f"PAUSE during a slow merged read: {'returned at once (early!)' if early else 'waits'}")
        if early:
            bad.append("PAUSE returned while a merged read was still running on the shards")
        c.cancel()
        t.join(15)
        r = early or answered(p, 15)
        notes.append(f"after cancel: read {res}; PAUSE {'returned' if r else 'STILL WAITS'}")
        if not r:
            bad.append("PAUSE never returned after the merged read was cancelled")
        p.close()
        console(px, f"RESUME {DB}")
        assert c.execute("SELECT count(*) FROM w").fetchone() == (12,)
    px.stop()
    # shard 2 refuses connections
    sec = {"shard_key": "user_id", "shards": N_SHARDS, "no_shard_key": "all", "read_routing": "on"}
    for i, d in enumerate(shard_dbs):
        sec[f"shard.{i}.primary"] = env.backend_entry(env.pg, d)
    sec["shard.2.primary"] = f"host=127.0.0.1 port={free_port()} dbname=x user=postgres"
    px2 = env.pgmux({}, {"pool_mode": "transaction", "monitor_interval": 0.2,
                         "query_wait_timeout": 3}, sections={DB: sec})
    with px2.connect(DB) as c:
        for q in ("SELECT count(*) FROM w", "SELECT user_id FROM w ORDER BY user_id",
                  "SELECT user_id FROM w WHERE i = 1"):
            t0 = time.monotonic()
            try:
                got = c.execute(q).fetchall()
                bad.append(f"shard down: {q} answered {got} (a partial answer?)")
            except psycopg.Error as e:
                notes.append(f"shard down: {q}: {e.sqlstate} after {time.monotonic() - t0:.1f}s: "
                             f"{str(e)[:100]}")
                if not e.sqlstate:
                    bad.append(f"shard down: no SQLSTATE: {e}")
            if c.closed or c.broken:
                c = px2.connect(DB)
    print("\n".join(notes))
    rep = px2.sanitizer_report()
    assert not rep, rep
    assert not bad, "\n".join(bad)


def raw_parse_typed(sql, oids, name=""):
    return rawpg.message(b"P", name.encode() + b"\0" + sql.encode() + b"\0" +
                         struct.pack("!H", len(oids)) + b"".join(struct.pack("!I", o) for o in oids))


def raw_bind_params(params, fmts, result_fmts=(), portal="", name=""):
    body = portal.encode() + b"\0" + name.encode() + b"\0"
    body += struct.pack("!H", len(fmts)) + b"".join(struct.pack("!H", f) for f in fmts)
    body += struct.pack("!H", len(params))
    for p in params:
        body += struct.pack("!i", -1) if p is None else struct.pack("!i", len(p)) + p
    body += struct.pack("!H", len(result_fmts)) + b"".join(struct.pack("!H", f) for f in result_fmts)
    return rawpg.message(b"B", body)


@timeout(120)
def test_a14_merge_limit_params_and_pushdown(env):
    """LIMIT/OFFSET as $n in every encoding (text with spaces/sign, binary int4/int8, int2,
    numeric type), compared with PostgreSQL's own answer to the same bytes; and LIMIT over
    groups ordered by an aggregate (a LIMIT pushed down to the shards would cut groups whose
    counts the other shards still add to)."""
    # shard 0: g=1 x3, g=2 x2; shard 1: g=2 x2, g=3 x1; shard 2: g=4 x1
    rows = [(1, "1", None, "x", "x", "t", "2024-01-01", "2024-01-01", 1, 1),
            (2, "1", None, "x", "x", "t", "2024-01-01", "2024-01-01", 1, 1),
            (3, "1", None, "x", "x", "t", "2024-01-01", "2024-01-01", 1, 1),
            (4, "1", None, "x", "x", "t", "2024-01-01", "2024-01-01", 2, 1),
            (5, "1", None, "x", "x", "t", "2024-01-01", "2024-01-01", 2, 1),
            (6, "1", None, "x", "x", "t", "2024-01-01", "2024-01-01", 2, 1),
            (7, "1", None, "x", "x", "t", "2024-01-01", "2024-01-01", 2, 1),
            (8, "1", None, "x", "x", "t", "2024-01-01", "2024-01-01", 3, 1),
            (9, "1", None, "x", "x", "t", "2024-01-01", "2024-01-01", 4, 1)]
    place = [0, 0, 0, 0, 0, 1, 1, 1, 2]
    px, ref, _ = setup(env, rows=rows, placement=lambda j: place[j])
    cases = [
        ("SELECT i, count(*) FROM w GROUP BY i ORDER BY count(*) DESC, i LIMIT 1", True),
        ("SELECT i, count(*) AS n FROM w GROUP BY i ORDER BY n DESC, i LIMIT 2", True),
        ("SELECT i, sum(big) FROM w GROUP BY i ORDER BY 2 DESC, 1 LIMIT 1", True),
        ("SELECT i, min(user_id) FROM w GROUP BY i ORDER BY max(user_id) DESC LIMIT 1", True),
        ("SELECT i, count(*) FROM w GROUP BY i ORDER BY i OFFSET 1 LIMIT 2", True),
        ("SELECT DISTINCT i FROM w ORDER BY i DESC LIMIT 2 OFFSET 1", True),
        ("SELECT count(*) FROM w GROUP BY i ORDER BY count(*) LIMIT 2", True),
    ]
    diffs, refused = compare(px, env, ref, cases)
    show(diffs, refused)
    bad = list(diffs)
    # $n parameters in raw encodings
    Q = "SELECT user_id FROM w ORDER BY user_id LIMIT $1 OFFSET $2"
    encs = [
        ("text", [0, 0], [b"3", b"1"], [0]),
        ("text spaces", [0, 0], [b" 3 ", b" 1"], [0]),
        ("text plus", [0, 0], [b"+3", b"+1"], [0]),
        ("text leading zeros", [0, 0], [b"0003", b"01"], [0]),
        ("text 3.0", [0, 0], [b"3.0", b"1"], [0]),
        ("text int4 typed", [23, 23], [b"3", b"1"], [0]),
        ("binary int8", [20, 20], [struct.pack("!q", 3), struct.pack("!q", 1)], [1]),
        ("binary int4", [23, 23], [struct.pack("!i", 3), struct.pack("!i", 1)], [1]),
        ("binary int2", [21, 21], [struct.pack("!h", 3), struct.pack("!h", 1)], [1]),
        ("binary untyped 8", [0, 0], [struct.pack("!q", 3), struct.pack("!q", 1)], [1]),
        ("binary int8 short", [20, 20], [struct.pack("!i", 3), struct.pack("!q", 1)], [1]),
        ("numeric typed text", [1700, 1700], [b"2.5", b"0.6"], [0]),
        ("binary huge", [20, 20], [struct.pack("!q", 2**63 - 1), struct.pack("!q", 2**62)], [1]),
        ("text negative", [0, 0], [b"-1", b"0"], [0]),
        ("NULL limit", [0, 0], [None, b"1"], [0]),
        ("NULL offset", [0, 0], [b"2", None], [0]),
    ]
    out = []
    for what, oids, params, fmts in encs:
        answers = []
        for port, db in ((px.port, DB), (env.pg.port, ref)):
            c = rawpg.RawConn.tcp(port, db, TEST_USER, timeout=10)
            c.send(raw_parse_typed(Q, oids) + raw_bind_params(params, fmts) +
                   rawpg.describe_portal() + rawpg.execute() + rawpg.SYNC)
            msgs = c.read_until_ready()
            e = rawpg.errors(msgs)
            answers.append(("err", e[0].get("C")) if e else ("rows", rawpg.rows(msgs)))
            c.close()
        out.append(f"{what}: pgmux {answers[0]} PostgreSQL {answers[1]}")
        if answers[0][0] == "rows" and answers[0] != answers[1]:
            bad.append(f"$n {what}: pgmux {answers[0]} != PostgreSQL {answers[1]}")
        if answers[0][0] == "err" and not answers[0][1]:
            bad.append(f"$n {what}: error without SQLSTATE")
    print("\n".join(out))
    rep = px.sanitizer_report()
    assert not rep, rep
    assert not bad, "\n".join(bad)


@timeout(200)
def test_a14_split_copy_options(env):
    """Spanning COPY with options that change how rows are read: CSV HEADER (each shard's part
    must not lose its first row), HEADER MATCH, custom DELIMITER / NULL / QUOTE / ESCAPE,
    the key not first, ENCODING, FORCE_NULL, WHERE; each compared with the same bytes
    COPYed straight into one PostgreSQL: same outcome, same rows, rows on their shards."""
    px, shards = split_env(env, 2)
    keys, ks = spanning_keys(shards, 10, seed=1406)
    a, b = ks[0], ks[1]
    cases = [
        ("csv header", "(user_id, name) FROM STDIN (FORMAT csv, HEADER true)",
         f"user_id,name\n{a[0]},x\n{b[0]},y\n{a[1]},z\n{b[1]},w\n"),
        ("csv header match", "(user_id, name) FROM STDIN (FORMAT csv, HEADER match)",
         f"user_id,name\n{a[0]},x\n{b[0]},y\n"),
        ("csv header match wrong", "(user_id, name) FROM STDIN (FORMAT csv, HEADER match)",
         f"name,user_id\n{a[0]},x\n{b[0]},y\n"),
        ("text header", "(user_id, name) FROM STDIN (HEADER true)",
         f"user_id\tname\n{a[0]}\tx\n{b[0]}\ty\n"),
        ("text delimiter |", "(user_id, name) FROM STDIN (DELIMITER '|')",
         f"{a[0]}|x\n{b[0]}|y\n"),
        ("text delimiter , key quoted-ish", "(user_id, name) FROM STDIN (DELIMITER ',')",
         f"{a[0]},x\\,1\n{b[0]},y\n"),
        ("text NULL 'nil' key", "(user_id, name) FROM STDIN (NULL 'nil')",
         f"{a[0]}\tnil\nnil\ty\n"),
        ("text NULL '' key", "(user_id, name) FROM STDIN (NULL '')",
         f"{a[0]}\tx\n\ty\n"),
        ("text NULL is a number", f"(user_id, name) FROM STDIN (NULL '{b[0]}')",
         f"{a[0]}\tx\n{b[0]}\ty\n"),
        ("csv quote ' escape \\\\", "(user_id, name) FROM STDIN (FORMAT csv, QUOTE '''', ESCAPE '\\')",
         f"'{a[0]}','x\\'y'\n{b[0]},'z'\n"),
        ("csv delimiter ;", "(user_id, name) FROM STDIN (FORMAT csv, DELIMITER ';')",
         f"{a[0]};\"x;1\"\n{b[0]};y\n"),
        ("key second", "(name, user_id) FROM STDIN", f"x\t{a[0]}\ny\t{b[0]}\n"),
        ("key second csv", "(name, user_id) FROM STDIN (FORMAT csv)", f"\"x,\",{a[0]}\ny,{b[0]}\n"),
        ("no column list", "FROM STDIN", f"{a[0]}\tx\n{b[0]}\ty\n"),
        ("quoted column names", '("user_id", "name") FROM STDIN', f"{a[0]}\tx\n{b[0]}\ty\n"),
        ("encoding latin1", "(user_id, name) FROM STDIN (ENCODING 'LATIN1')",
         f"{a[0]}\tx\n{b[0]}\t\xe9\n"),
        ("csv force_null", "(user_id, name) FROM STDIN (FORMAT csv, FORCE_NULL (name))",
         f'{a[0]},""\n{b[0]},y\n'),
        ("csv force_null key", "(user_id, name) FROM STDIN (FORMAT csv, FORCE_NULL (user_id))",
         f'"",x\n{b[0]},y\n'),
        ("where", f"(user_id, name) FROM STDIN WHERE user_id <> {b[0]}",
         f"{a[0]}\tx\n{b[0]}\ty\n{a[1]}\tz\n"),
        ("old syntax csv header", "(user_id, name) FROM STDIN WITH CSV HEADER",
         f"user_id,name\n{a[0]},x\n{b[0]},y\n"),
        ("freeze", "(user_id, name) FROM STDIN (FREEZE)", f"{a[0]}\tx\n{b[0]}\ty\n"),
        ("default option word as key", "(user_id, name) FROM STDIN (FORMAT text)",
         f"{a[0]}\tx\n\\N\ty\n"),
    ]
    bad, out = [], []
    for what, tail, data in cases:
        hdr = f"COPY accounts {tail}"
        enc = data.encode("latin1") if "latin1" in what else data.encode()
        for s in range(shards.n):
            shards.primary(s).sql("DELETE FROM accounts", dbname=SDB)
        msgs, c = raw_copy(px, hdr, [enc])
        c.close()
        errs = rawpg.errors(msgs)
        tags = [bd.rstrip(b"\0").decode() for t, bd in msgs if t == b"C"]
        union = {}
        for s in range(shards.n):
            got = shards.rows(s)
            place = shards.placement(list(got)) if got else {}
            for k in got:
                if place[k] != s:
                    bad.append(f"{what}: key {k} on shard {s}, belongs on {place[k]}")
            union.update(got)
            if shards.primary(s).sql("SELECT gid FROM pg_prepared_xacts"):
                bad.append(f"{what}: prepared transaction left on shard {s}")
        for s in range(shards.n):
            shards.primary(s).sql("DELETE FROM accounts", dbname=SDB)
        dmsgs, dc = raw_copy(px, hdr, [enc], port=shards.primary(0).port)
        dc.close()
        derrs = rawpg.errors(dmsgs)
        dtags = [bd.rstrip(b"\0").decode() for t, bd in dmsgs if t == b"C"]
        direct = shards.rows(0)
        g = f"ERR {errs[0].get('C')} {errs[0].get('M', '')[:70]}" if errs else f"{tags} {union}"
        w = f"ERR {derrs[0].get('C')} {derrs[0].get('M', '')[:70]}" if derrs else f"{dtags} {direct}"
        out.append(f"{what}: pgmux {g[:160]} | PostgreSQL {w[:160]}")
        if not errs and (derrs or union != direct or tags != dtags):
            bad.append(f"{what}: pgmux {g[:200]} but PostgreSQL {w[:200]}")
    print("\n".join(out))
    rep = px.sanitizer_report()
    assert not rep, rep
    assert not bad, "\n".join(bad)


@timeout(90)
def test_a14_shrink_parked(env):
    """RELOAD from 4 to 2 shards (and then to a non-sharded-looking 1) under a PAUSE while
    clients are parked and one is queued for shard 3's only server; then RESUME: pgmux must
    not crash (a shard index beyond the new count), each client gets an answer, rows land by
    the new count.  Also a spanning INSERT and a fan-out read parked across the RELOAD."""
    import threading
    import test_reshard as TR
    need_routing()
    topos = env.shard_topologies(1, n_replicas=0, extra_conf=TR.PG_EXTRA)
    lay = TR.Layout(env, topos, [0, 0, 0, 0])
    for s in range(4):
        with lay.connect(s) as c:
            c.execute(TR.SCHEMA)
    keys = list(range(1, 400))
    p4 = lay.placement(keys, 4)
    on3 = [k for k in keys if p4[k] == 3][:12]
    on2 = [k for k in keys if p4[k] == 2][:4]
    on0 = [k for k in keys if p4[k] == 0][:4]
    sec = lay.section(4)
    sec["pool_size"] = 1
    px = env.pgmux({}, {"pool_mode": "transaction"}, sections={TR.DB: sec})
    holder = psycopg.connect(px.dsn(TR.DB), autocommit=False, prepare_threshold=None)
    holder.execute("INSERT INTO accounts (user_id, id, val) VALUES (%s, 1, 1)", (on3[0],))
    errors, done = [], []

    def run(sql):
        try:
            with psycopg.connect(px.dsn(TR.DB), autocommit=True, prepare_threshold=None) as c:
                c.execute(sql)
            done.append(sql)
        except Exception as e:  # noqa: BLE001
            errors.append(f"{sql[:70]}: {e!r}"[:200])
    ins = "INSERT INTO accounts (user_id, id, val) VALUES "
    queued = threading.Thread(target=run, args=(f"{ins}({on3[1]}, 1, 1)",))
    queued.start()
    wait_for(lambda: any(r["database"] == f"{TR.DB}/3/primary" and r["cl_waiting"] >= 1
                         for r in px.show("POOLS")), 20, 0.05, "a client queued on shard 3")
    pause = threading.Thread(target=console, args=(px, f"PAUSE {TR.DB}"))
    pause.start()
    time.sleep(0.3)
    holder.commit()
    pause.join(20)
    assert not pause.is_alive()
    threads = []
    for k in on3[2:8] + on2 + on0:
        threads.append(threading.Thread(target=run, args=(f"{ins}({k}, 1, 1)",)))
    threads.append(threading.Thread(target=run, args=(
        f"{ins}({on3[8]}, 1, 1), ({on0[0] + 0}, 2, 2)",)))   # spanning under 4 shards
    for t in threads:
        t.start()
    time.sleep(0.5)
    # some parked clients leave
    raw = []
    for k in on3[9:12]:
        c = rawpg.RawConn.tcp(px.port, TR.DB, TEST_USER, timeout=10)
        c.send(rawpg.query(f"{ins}({k}, 9, 9)"))
        raw.append(c)
    time.sleep(0.2)
    kill_sock(raw[0])
    sec2 = lay.section(2)
    sec2["pool_size"] = 1
    px.ini.write_text(px.render_config(sections={TR.DB: sec2}))
    console(px, "RELOAD")
    time.sleep(0.3)
    console(px, f"RESUME {TR.DB}")
    for t in [queued] + threads:
        t.join(20)
    for c in raw[1:]:
        r = answered(c, 10)
        if not r:
            errors.append("a raw parked client got no answer")
        c.close()
    holder.close()
    assert px.alive(), "pgmux died"
    print("errors:", "\n".join(errors))
    print(f"{len(done)} statements ran")
    # every row is on the shard the 2-count names
    p2 = lay.placement(keys, 2)
    misplaced = []
    for s in range(4):
        with lay.connect(s) as c:
            for (k,) in c.execute("SELECT DISTINCT user_id FROM accounts").fetchall():
                if k == on3[0]:
                    continue   # the holder's row, written under 4 shards
                if s >= 2 or p2[k] != s:
                    misplaced.append((k, s))
    rep = px.sanitizer_report()
    assert not rep, rep
    assert not misplaced, f"rows on the wrong shard after the RELOAD to 2: {misplaced}"
    assert not errors, errors


@timeout(90)
def test_a14_merge_client_encoding(env):
    """FINDING (if it fails): with client_encoding WIN1251 the shards send text in WIN1251,
    whose byte order is not the server's UTF-8 (code point) order ('ё' is 0xB8, below 'а' 0xE0;
    in Unicode U+0451 is above U+0430).  PostgreSQL orders COLLATE "C" by the server's bytes;
    pgmux orders the converted bytes: ORDER BY ... COLLATE "C" and min()/max() differ."""
    rows = [(1, "а"), (2, "ё"), (3, "я"), (4, "Ё"), (5, "б")]
    schema = "CREATE TABLE w (user_id int8 PRIMARY KEY, t text)"
    px, ref, _ = setup(env, rows=rows, schema=schema)
    cases = [('SELECT user_id, t FROM w ORDER BY t COLLATE "C"', True),
             ('SELECT min(t COLLATE "C"), max(t COLLATE "C") FROM w', True),
             ('SELECT DISTINCT t COLLATE "C" FROM w ORDER BY 1', True)]
    bad = []
    for enc in ("UTF8", "WIN1251", "KOI8R", "ISO_8859_5"):
        res = {}
        for name, port, db in (("pgmux", px.port, DB), ("pg", env.pg.port, ref)):
            c = rawpg.RawConn.tcp(port, db, TEST_USER, timeout=10, extra={"client_encoding": enc})
            res[name] = []
            for q, _ in cases:
                msgs = c.query(q)
                e = rawpg.errors(msgs)
                res[name].append(("err", e[0].get("C")) if e else
                                 [tuple(b.hex() if b is not None else None
                                        for b in raw_row(bd)) for t, bd in msgs if t == b"D"])
            c.close()
        for (q, _), g, w in zip(cases, res["pgmux"], res["pg"]):
            if g != w and not (isinstance(g, tuple) and g[0] == "err"):
                bad.append(f"client_encoding {enc}: {q}: pgmux {g} != PostgreSQL {w}")
    print("\n".join(bad))
    assert not bad


def raw_row(body):
    return rawpg.data_row(body, raw=True)


@timeout(90)
def test_a14_shutdown_parked(env):
    """SHUTDOWN on the console while clients are parked behind a PAUSE of a sharded database
    and one is mid spanning COPY: pgmux exits (no crash, no sanitizer report), each parked
    client gets an error or EOF, and no prepared transaction is left on any shard."""
    px, shards = split_env(env, 2)
    keys, ks = spanning_keys(shards, 5, seed=1407)
    a = rawpg.RawConn.tcp(px.port, SDB, TEST_USER, timeout=10)
    a.send(rawpg.query("COPY accounts (user_id, name) FROM STDIN"))
    assert a.read_msg()[0] == b"G"
    a.send(rawpg.copy_data(f"{ks[0][0]}\ts\n{ks[1][0]}\ts\n".encode()))
    pause = console_async(px, f"PAUSE {SDB}")
    time.sleep(0.3)
    parked = []
    for i in range(5):
        c = rawpg.RawConn.tcp(px.port, SDB, TEST_USER, timeout=10)
        c.send(rawpg.query(f"INSERT INTO accounts (user_id, name) VALUES ({ks[i % 2][1 + i // 2]}, 'p')"))
        parked.append(c)
    time.sleep(0.3)
    s = console_async(px, "SHUTDOWN")
    out = s.read_raw(3)
    print("SHUTDOWN answered:", out[:80])
    assert px.wait_exit(20) is not None, "pgmux did not exit"
    pause.close()
    got = []
    for c in parked + [a]:
        try:
            got.append(c.read_raw(2)[:60])
        except Exception as e:  # noqa: BLE001
            got.append(repr(e)[:60])
    print("parked clients got:", got)
    # (cosmetic finding: they get EOF, no ErrorResponse naming the shutdown)
    for s_ in range(shards.n):
        left = shards.primary(s_).sql("SELECT gid FROM pg_prepared_xacts")
        assert not left, f"prepared left on shard {s_}: {left}"
    rep = px.sanitizer_report()
    assert not rep, rep


@timeout(150)
def test_a14_split_copy_protocol(env):
    """Protocol oddities inside a spanning COPY, compared with the same bytes sent straight to
    PostgreSQL: a Query message mid-COPY, Flush and Sync mid-COPY (PostgreSQL ignores them),
    Terminate mid-COPY, a CopyFail after all the data, CopyDone twice; then a big spanning
    multi-row INSERT (about 1 MB) and RSS."""
    px, shards = split_env(env, 2, settings={"max_client_memory": 4 << 20})
    keys, ks = spanning_keys(shards, 300, seed=1408)
    a, b = ks[0], ks[1]
    T = "COPY accounts (user_id, name) FROM STDIN"
    rows = f"{a[0]}\tx\n{b[0]}\ty\n".encode()
    cases = [
        ("Query mid-COPY", [rawpg.copy_data(rows), rawpg.query("SELECT 1"), rawpg.COPY_DONE]),
        ("Flush mid-COPY", [rawpg.copy_data(rows[:9]), rawpg.FLUSH, rawpg.copy_data(rows[9:]),
                            rawpg.COPY_DONE]),
        ("Sync mid-COPY", [rawpg.copy_data(rows), rawpg.SYNC, rawpg.COPY_DONE]),
        ("CopyFail after data", [rawpg.copy_data(rows), rawpg.message(b"f", b"no\0")]),
        ("CopyDone twice", [rawpg.copy_data(rows), rawpg.COPY_DONE, rawpg.COPY_DONE]),
        ("Parse mid-COPY", [rawpg.copy_data(rows), rawpg.parse("SELECT 1"), rawpg.COPY_DONE]),
    ]
    bad, out = [], []
    for what, msgs_out in cases:
        res = []
        for port in (px.port, shards.primary(0).port):
            for s in range(shards.n):
                shards.primary(s).sql("DELETE FROM accounts", dbname=SDB)
            c = rawpg.RawConn.tcp(port, SDB, TEST_USER, timeout=8)
            c.send(rawpg.query(T))
            c.read_msg()
            c.send(b"".join(msgs_out))
            try:
                got = c.read_raw(1)   # the kinds are printed, not asserted: the row counts are
            except Exception as e:  # noqa: BLE001
                got = repr(e).encode()
            kinds = []
            i = 0
            while i + 5 <= len(got):
                ln = struct.unpack("!I", got[i + 1:i + 5])[0]
                kinds.append(chr(got[i]) + (("/" + rawpg.parse_error(got[i + 5:i + 1 + ln]).get("C", ""))
                                           if got[i:i + 1] == b"E" else ""))
                i += 1 + ln
            try:
                after = c.query_rows("SELECT 42")
            except Exception as e:  # noqa: BLE001
                after = repr(e)[:40]
            c.close()
            n = sum(len(shards.rows(s)) for s in range(shards.n))
            res.append((kinds, after, n))
        out.append(f"{what}: pgmux {res[0]} | PostgreSQL {res[1]}")
        if res[0][2] != res[1][2] and res[0][2] != 0:
            bad.append(f"{what}: pgmux wrote {res[0][2]} rows, PostgreSQL {res[1][2]}")
        for s in range(shards.n):
            if shards.primary(s).sql("SELECT gid FROM pg_prepared_xacts"):
                bad.append(f"{what}: prepared left on shard {s}")
    for s in range(shards.n):
        shards.primary(s).sql("DELETE FROM accounts", dbname=SDB)
    # a ~1 MB spanning INSERT
    r0 = rss_kb(px)
    big = [k for pair in zip(a, b) for k in pair]
    sql = f"{INSERT} " + ", ".join(f"({k}, '{'z' * 1500}')" for k in big)
    for i in range(5):
        with px.connect(SDB) as c:
            try:
                cur = c.execute(sql)
                out.append(f"1 MB spanning INSERT: {cur.statusmessage}")
            except psycopg.Error as e:
                out.append(f"1 MB spanning INSERT: {e.sqlstate} {str(e)[:100]}")
        for s in range(shards.n):
            shards.primary(s).sql("DELETE FROM accounts", dbname=SDB)
    out.append(f"RSS {r0} -> {rss_kb(px)} kB over 5 x {len(sql) >> 10} kB spanning INSERTs")
    print("\n".join(out))
    rep = px.sanitizer_report()
    assert not rep, rep
    assert not bad, "\n".join(bad)


@timeout(120)
def test_a14_pipelined_fanout_no_leak(env):
    """(Held.) After a client pipelines two fan-out reads in one write (see
    test_a14_merge_pipelined_simple) and goes away, other clients must get only their own
    answers: a server with an unread answer must not go back to the pool."""
    rows = [(i, str(i % 7), None, "x", "x", f"t{i}", "2024-01-01", "2024-01-01 00:00:00", i % 5,
             i) for i in range(1, 61)]
    px, ref, shard_dbs = setup(env, rows=rows, settings={"default_pool_size": 1})
    Q = "SELECT user_id, i FROM w ORDER BY i DESC, user_id"
    P = "SELECT user_id FROM w WHERE i = 4"
    bad = []
    for rnd in range(6):
        v = rawpg.RawConn.tcp(px.port, DB, TEST_USER, timeout=10)
        v.send(rawpg.query([Q, P][rnd % 2]) + rawpg.query(P) + rawpg.query(Q))
        time.sleep(0.5)
        v.close()
        c = rawpg.RawConn.tcp(px.port, DB, TEST_USER, timeout=10)
        for n in range(1, 13):
            try:
                got = c.query_rows(f"SELECT user_id FROM w WHERE user_id = {n}", timeout=8)
            except Exception as e:  # noqa: BLE001
                bad.append(f"round {rnd}: keyed read {n}: {e!r}"[:200])
                break
            if any(r != (str(n),) for r in got):
                bad.append(f"round {rnd}: keyed read of {n} got another request's rows: {got[:5]}")
        try:
            cnt = c.query_rows("SELECT count(*) FROM w", timeout=8)
            if cnt != [("60",)]:
                bad.append(f"round {rnd}: count(*) got {cnt[:5]}")
        except Exception as e:  # noqa: BLE001
            bad.append(f"round {rnd}: count(*): {e!r}"[:200])
        c.close()
    print("\n".join(bad))
    rep = px.sanitizer_report()
    assert not rep, rep
    assert not bad, f"{len(bad)} wrong answers"


@timeout(120)
def test_a14_split_orphan_no_idle_server(env):
    """FINDING (documented as 'left to the operator', but a plain client can cause it): pool
    size 1; client A's spanning INSERT has prepared on shard 0 while its shard-1 part waits on
    a lock; client B holds shard 0's only server in an open transaction; A vanishes.  pgmux
    finds no idle shard-0 server to ROLLBACK PREPARED and leaves the prepared transaction for
    good: it keeps its row lock, so a later INSERT of that key waits forever."""
    px, shards = split_env(env, 2, settings={"default_pool_size": 1})
    keys, ks = spanning_keys(shards, 4, seed=1409)
    for s in range(shards.n):
        env.sql(SDB, "CREATE FUNCTION wait_lock() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                "IF NEW.name = 'wait' THEN PERFORM pg_advisory_xact_lock(4243); END IF; "
                "RETURN NEW; END $$", server=shards.primary(s))
        env.sql(SDB, "CREATE TRIGGER wait_lock BEFORE INSERT ON accounts FOR EACH ROW "
                "EXECUTE FUNCTION wait_lock()", server=shards.primary(s))
    k0, k1 = ks[0][0], ks[1][0]
    holder = shards.primary(1).connect(SDB)
    holder.execute("SELECT pg_advisory_lock(4243)")
    a = px.connect(SDB)
    a.pgconn.send_query(f"{INSERT} ({k0}, 'x'), ({k1}, 'wait')".encode())

    def prepared_on_0():
        return shards.primary(0).sql1("SELECT count(*) FROM pg_prepared_xacts")
    wait_for(lambda: prepared_on_0() == 1, 30, 0.05)
    # B takes shard 0's only server in a transaction
    b = px.connect(SDB, autocommit=False)
    b.execute(f"INSERT INTO accounts (user_id, name) VALUES ({ks[0][1]}, 'b')")
    s = socket.socket(fileno=os.dup(a.fileno()))
    s.shutdown(socket.SHUT_RDWR)
    s.close()
    time.sleep(1.0)
    holder.execute("SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' "
                   "AND NOT granted")
    holder.execute("SELECT pg_advisory_unlock(4243)")
    holder.close()
    b.commit()
    b.close()
    try:
        a.close()
    except Exception:  # noqa: BLE001
        pass
    time.sleep(3.0)
    left = shards.primary(0).sql("SELECT gid FROM pg_prepared_xacts")
    print("prepared left on shard 0 after 3 s:", left)
    if left:
        # what a later writer of that key sees
        with px.connect(SDB) as c:
            c.execute("SET statement_timeout = '2s'")
            try:
                c.execute(f"INSERT INTO accounts (user_id, name) VALUES ({k0}, 'later')")
                print("later INSERT of the key: ran")
            except psycopg.Error as e:
                print(f"later INSERT of the key: {e.sqlstate} {e}")
        for (gid,) in left:
            shards.primary(0).sql(f"ROLLBACK PREPARED '{gid}'", dbname=SDB)
    assert not left, f"prepared transactions left behind: {left}"
