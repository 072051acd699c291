"""Sharding on text and uuid keys (shard_key_type = text | uuid): two shard primaries, each with
a database `keyed` holding accounts_t (user_id text) and accounts_u (user_id uuid); one pgmux
with two sharded sections over them, `tkeys` (text) and `ukeys` (uuid).  Rows inserted through
pgmux with literal keys (psql, psycopg's client-side binding) and $n parameters (psycopg text
and binary, asyncpg binary) must each sit on the shard that PostgreSQL's own hash partitioning
names: satisfies_hash_partition on a parent table PARTITION BY HASH of the same key type.

Which server answered is told by inet_server_port(): every server has its own port."""

import hashlib
import os
import random
import time
import uuid

import psycopg
from psycopg import ClientCursor

from pgharness import TEST_USER, run_async, timeout
from test_routing import need_routing
from test_sharding import expect_error, run_psql, wait_shards_up

DB = "keyed"                        # the database on every shard
TDB, UDB = "tkeys", "ukeys"         # the sharded sections clients connect to
PORT = "SELECT inet_server_port()"
TABLE = {TDB: "accounts_t", UDB: "accounts_u"}
KEY_TYPE = {TDB: "text", UDB: "uuid"}


def name_of(k):
    """A plain ASCII name per key, so that the name never needs quoting care."""
    return "r" + hashlib.md5(str(k).encode()).hexdigest()[:16]


# ----------------------------------------------------------------------------------------------
# setup

class Shards:
    def __init__(self, topos):
        self.topos = topos
        self.n = len(topos)

    def port(self, s):
        return self.topos[s].primary.port

    def where(self, port):
        for s in range(self.n):
            if self.port(s) == port:
                return f"shard {s}"
        return f"unknown port {port}"

    def placement(self, typ, keys):
        """{key: shard} as satisfies_hash_partition places each key among n (parent tables
        PARTITION BY HASH of the key's type, on shard 0)."""
        keys = list(keys)
        parent = f"pgmux_hash_{typ}"
        with self.topos[0].primary.connect() as c:
            c.execute(f"CREATE TABLE IF NOT EXISTS {parent} (k {typ}) PARTITION BY HASH (k)")
            rows = c.execute(
                f"SELECT k, r FROM unnest(%s::{typ}[]) k, generate_series(0, %s::int - 1) r "
                f"WHERE satisfies_hash_partition('{parent}'::regclass, %s::int, r, k)",
                ([str(k) for k in keys], self.n, self.n)).fetchall()
        conv = (lambda v: v) if typ == "text" else (lambda v: v if isinstance(v, uuid.UUID)
                                                     else uuid.UUID(str(v)))
        out = {conv(k): r for k, r in rows}
        assert len(out) == len(set(keys)), \
            f"satisfies_hash_partition placed {len(out)} of {len(set(keys))} {typ} keys"
        return out

    def rows(self, s, table):
        with self.topos[s].primary.connect(DB) as c:
            return dict(c.execute(f"SELECT user_id, name FROM {table}").fetchall())


def keys_env(env, n_shards=2, **px_settings):
    """n shard primaries (no replicas: placement is what is checked here), the tables, and a
    pgmux with the text and uuid sections; returns (pgmux, Shards)."""
    need_routing()
    topos = env.shard_topologies(n_shards, n_replicas=0)
    for t in topos:
        t.primary.create_database(DB, owner=TEST_USER)
        env.sql(DB, "CREATE TABLE accounts_t (user_id text PRIMARY KEY, name text)",
                server=t.primary)
        env.sql(DB, "CREATE TABLE accounts_u (user_id uuid PRIMARY KEY, name text)",
                server=t.primary)
    sets = {"pool_mode": "transaction", "monitor_interval": 0.2, "max_client_conn": 200,
            "default_pool_size": 4}
    sets.update(px_settings)
    sections = {db: env.sharded_section(DB, topos, shard_key_type=KEY_TYPE[db],
                                        no_shard_key="error", read_routing="off")
                for db in (TDB, UDB)}
    px = env.pgmux({}, sets, sections=sections)
    for db in (TDB, UDB):
        wait_shards_up(px, n_shards, n_replicas=0, db=db)
    return px, Shards(topos)


def make_text_keys(n, seed):
    """n distinct text keys: ASCII words, quotes, backslashes, spaces, non-ASCII UTF-8, digit
    strings (some inserted as integer literals) and the empty string."""
    rng = random.Random(seed)
    alpha = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-."
    odd = ["'", "''", "\\", " ", "é", "ß", "日本", "😀", "\t", "$", "%"]
    keys = {"", "o'brien", "back\\slash", "tab\there", "ünïcödé", "42", "007", " pad "}
    while len(keys) < n:
        x = rng.random()
        if x < 0.5:
            k = "".join(rng.choice(alpha) for _ in range(rng.randint(1, 30)))
        elif x < 0.75:
            k = "".join(rng.choice(alpha) if rng.random() < 0.7 else rng.choice(odd)
                        for _ in range(rng.randint(1, 20)))
        elif x < 0.9:
            k = str(rng.randint(1, 10 ** 12))
        else:
            k = f"user-{rng.randint(0, 10 ** 9)}@example.com"
        keys.add(k)
    keys = sorted(keys)
    rng.shuffle(keys)
    return keys[:n]


def make_uuid_keys(n, seed):
    rng = random.Random(seed)
    keys = {uuid.UUID(int=rng.getrandbits(128), version=4) for _ in range(n)}
    keys.add(uuid.UUID(int=0))
    return sorted(keys)[:n]


def check_placement(shards, table, expected, source):
    """Every key of expected ({key: shard}) is on exactly its shard with its name, and nothing
    else is on any shard."""
    on, extra = {}, []
    for s in range(shards.n):
        for k, nm in shards.rows(s, table).items():
            on.setdefault(k, []).append(s)
            if k not in expected or nm != name_of(k):
                extra.append((s, k, nm))
    wrong = {}
    for k, want in expected.items():
        got = on.get(k)
        if got != [want]:
            wrong.setdefault(source.get(k, "?"), []).append((k, want, got))
    problems = [f"{len(v)} rows from {src} misplaced, e.g. "
                + ", ".join(f"{k!r}: want shard {w}, on {g}" for k, w, g in v[:4])
                for src, v in sorted(wrong.items())]
    if extra:
        problems.append(f"unexpected rows: {extra[:5]}")
    assert not problems, f"{table}: placement is wrong:\n  " + "\n  ".join(problems)
    per = [sum(1 for v in expected.values() if v == s) for s in range(shards.n)]
    print(f"{table}: placement ok, {len(expected)} rows, per shard {per}, "
          f"{len(set(source.values()))} ways of inserting")


# ----------------------------------------------------------------------------------------------
# literal forms

def sql_plain(k):
    return "'" + str(k).replace("'", "''") + "'"


def sql_e(k):
    return "E'" + str(k).replace("\\", "\\\\").replace("'", "\\'") + "'"


def text_literal_forms(k):
    """(label, literal) choices for a text key in SQL."""
    forms = [("plain literal", sql_plain(k)), ("E'' literal", sql_e(k)),
             ("literal::text", sql_plain(k) + "::text")]
    if "$k$" not in k and not k.endswith("$"):
        forms.append(("dollar-quoted literal", f"$k${k}$k$"))
    if k.isdigit() and not k.startswith("0") and len(k) < 18:
        forms.append(("integer literal (hashed as its digits)", k))
    return forms


def uuid_literal_forms(u):
    s = str(u)
    return [("uuid literal", f"'{s}'"), ("upper-case uuid literal", f"'{s.upper()}'"),
            ("{uuid} literal", "'{" + s + "}'"), ("32-hex uuid literal", f"'{u.hex}'"),
            ("uuid literal::uuid", f"'{s}'::uuid")]


def psql_inserts(env, px, db, keys, placement):
    """INSERTs with literal keys in every form through psql (simple protocol), plus multi-row
    INSERTs whose rows share a shard; returns source."""
    table = TABLE[db]
    forms_of = text_literal_forms if db == TDB else uuid_literal_forms
    lines, source, multi = [], {}, []
    for i, k in enumerate(keys):
        if i % 7 == 6:
            multi.append(k)
            continue
        forms = forms_of(k)
        label, lit = forms[i % len(forms)]
        if i % 2:
            lines.append(f"INSERT INTO {table} (user_id, name) VALUES ({lit}, '{name_of(k)}');")
        else:
            lines.append(f"INSERT INTO {table} (name, user_id) VALUES ('{name_of(k)}', {lit});")
        source[k] = f"psql {label}"
    by_shard = {}
    for k in multi:
        by_shard.setdefault(placement[k], []).append(k)
    for ks in by_shard.values():
        for j in range(0, len(ks), 3):
            group = ks[j:j + 3]
            vals = ", ".join(f"({forms_of(k)[0][1]}, '{name_of(k)}')" for k in group)
            lines.append(f"INSERT INTO {table} (user_id, name) VALUES {vals};")
            for k in group:
                source[k] = "psql multi-row INSERT (one shard)"
    path = env.dir / f"{db}_inserts.sql"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    os.environ["PGCLIENTENCODING"] = "UTF8"   # the bytes hashed are the bytes the server stores
    r = run_psql(px, ["-q", "-v", "ON_ERROR_STOP=1", "-f", str(path)], check=False, db=db)
    assert r.returncode == 0, f"psql -f {path.name} ({len(lines)} INSERTs with literal " \
                              f"{KEY_TYPE[db]} keys) failed: {r.stderr[-2000:]}"
    return source


def psycopg_inserts(px, db, keys):
    """psycopg 3: text parameters (%s), binary ones (%b), server-side prepared statements and
    client-side binding (literals it quotes itself, simple protocol); returns source."""
    table, source = TABLE[db], {}
    ins = f"INSERT INTO {table} (user_id, name) VALUES"
    with px.connect(db) as c, px.connect(db, prepare_threshold=0) as cp, \
            psycopg.connect(px.dsn(db), autocommit=True, cursor_factory=ClientCursor) as cc:
        for i, k in enumerate(keys):
            how = i % 4
            if how == 0:
                c.execute(f"{ins} (%s, %s)", (k, name_of(k)))
                source[k] = "psycopg text parameter"
            elif how == 1:
                c.execute(f"INSERT INTO {table} (name, user_id) VALUES (%b, %b)", (name_of(k), k))
                source[k] = "psycopg binary parameter, key column second"
            elif how == 2:
                cp.execute(f"{ins} (%s, %s)", (k, name_of(k)))
                source[k] = "psycopg prepared statement"
            else:
                cc.execute(f"{ins} (%s, %s)", (k, name_of(k)))
                source[k] = "psycopg client-side binding (literal)"
    return source


def asyncpg_inserts(px, db, keys):
    """asyncpg: named prepared statements, binary parameters; returns source."""
    table, source = TABLE[db], {}

    async def go():
        conn = await px.aconnect(db)
        try:
            for i, k in enumerate(keys):
                if i % 2:
                    await conn.execute(f"INSERT INTO {table} (user_id, name) VALUES ($1, $2)",
                                       k, name_of(k))
                    source[k] = "asyncpg $1 (binary)"
                else:
                    await conn.execute(f"INSERT INTO {table} (name, user_id) VALUES ($1, $2)",
                                       name_of(k), k)
                    source[k] = "asyncpg $2 (binary), key column second"
        finally:
            await conn.close()
    run_async(go(), timeout=60)
    return source


def insert_all_ways(env, px, shards, db, keys):
    typ = KEY_TYPE[db]
    expected = shards.placement(typ, keys)
    third = len(keys) // 3
    t0 = time.monotonic()
    source = psql_inserts(env, px, db, keys[:third], expected)
    source.update(psycopg_inserts(px, db, keys[third:2 * third]))
    source.update(asyncpg_inserts(px, db, keys[2 * third:]))
    print(f"{db}: {len(source)} rows inserted in {time.monotonic() - t0:.1f}s")
    return expected, source


def read_back(px, shards, db, expected):
    """Every key read through pgmux with a parameter; a sample also with literals (simple
    protocol) and binary parameters, each on its shard."""
    table, bad = TABLE[db], []
    q = f"SELECT inet_server_port(), name FROM {table} WHERE user_id = %s"
    keys = list(expected)
    with px.connect(db) as c:
        for k in keys:
            row = c.execute(q, (k,)).fetchone()
            if row != (shards.port(expected[k]), name_of(k)):
                bad.append(("text parameter", k, expected[k], row))
        forms_of = text_literal_forms if db == TDB else uuid_literal_forms
        for i, k in enumerate(keys[:300]):
            # text = integer does not exist in PostgreSQL: integer literals only insert
            forms = [f for f in forms_of(k) if not f[0].startswith("integer")]
            label, lit = forms[i % len(forms)]
            row = c.execute(f"SELECT inet_server_port(), name FROM {table} "
                            f"WHERE user_id = {lit}").fetchone()
            if row != (shards.port(expected[k]), name_of(k)):
                bad.append((label, k, expected[k], row))
            row = c.execute(q.replace("%s", "%b"), (k,)).fetchone()
            if row != (shards.port(expected[k]), name_of(k)):
                bad.append(("binary parameter", k, expected[k], row))
    assert not bad, f"{db}: {len(bad)} reads wrong, e.g. " + "; ".join(
        f"{how} {k!r} (shard {s}) -> {row} ({shards.where(row[0]) if row else 'no row'})"
        for how, k, s, row in bad[:5])
    print(f"{db}: {len(keys)} keyed reads (+300 literal, +300 binary) ok")


# ----------------------------------------------------------------------------------------------
# tests

@timeout(150)
def test_text_and_uuid_placement(env):
    """1,000 text and 1,000 uuid keys inserted through pgmux (psql literals in every form,
    psycopg text/binary/prepared/client-side, asyncpg binary) are each on exactly the shard
    satisfies_hash_partition names and on no other; each reads back through pgmux."""
    px, shards = keys_env(env)
    for db, keys in ((TDB, make_text_keys(1000, seed=11)), (UDB, make_uuid_keys(1000, seed=12))):
        expected, source = insert_all_ways(env, px, shards, db, keys)
        check_placement(shards, TABLE[db], expected, source)
        read_back(px, shards, db, expected)
    # long text keys: as a literal (read from PostgreSQL's parse of the text) and as $1
    long_key = "L" * 1500
    with px.connect(TDB) as c:
        c.execute(f"INSERT INTO accounts_t (user_id, name) VALUES ('{long_key}', "
                  f"'{name_of(long_key)}')")
        long_key2 = "M" * 1500
        c.execute("INSERT INTO accounts_t (user_id, name) VALUES (%s, %s)",
                  (long_key2, name_of(long_key2)))
        want2 = shards.placement("text", [long_key2])[long_key2]
        row = c.execute("SELECT inet_server_port() FROM accounts_t WHERE user_id = %s",
                        (long_key2,)).fetchone()
        assert row == (shards.port(want2),), f"1500-byte key as $1: {row}, want shard {want2}"
        assert [s for s in range(2) if long_key2 in shards.rows(s, "accounts_t")] == [want2]
        want = shards.placement("text", [long_key])[long_key]
        row = c.execute("SELECT inet_server_port() FROM accounts_t WHERE user_id = %s",
                        (long_key,)).fetchone()
        assert row == (shards.port(want),), f"1500-byte key as $1: {row}, want shard {want}"
    assert [s for s in range(2) if long_key in shards.rows(s, "accounts_t")] == [want]


@timeout(90)
def test_text_and_uuid_multi_keys(env):
    """IN lists and multi-row INSERTs with keys on two shards are refused (0A000) and change
    nothing; keys all on one shard run there."""
    px, shards = keys_env(env)
    tpl = shards.placement("text", make_text_keys(60, seed=21))
    upl = shards.placement("uuid", make_uuid_keys(60, seed=22))
    for db, pl in ((TDB, tpl), (UDB, upl)):
        table = TABLE[db]
        a = [k for k, s in pl.items() if s == 0][:2]
        b = [k for k, s in pl.items() if s == 1][:1]
        with px.connect(db) as c:
            # (with literals, outside a transaction block, it is split: test_shard_split)
            expect_error(lambda: c.execute(
                f"INSERT INTO {table} (user_id, name) VALUES (%s, 'x'), (%s, 'y')", (a[0], b[0])),
                "0A000", f"{db}: multi-row INSERT over two shards, parameters",
                contains=("several shards",))
            expect_error(lambda: c.execute(
                f"SELECT * FROM {table} WHERE user_id IN ({sql_plain(a[0])}, {sql_plain(b[0])})"),
                "0A000", f"{db}: IN list over two shards")
            expect_error(lambda: c.execute(
                f"SELECT * FROM {table} WHERE user_id = %s OR user_id = %s", (a[0], b[0])),
                "0A000", f"{db}: two $n keys over two shards")
            c.execute(f"INSERT INTO {table} (user_id, name) VALUES (%s, 'x'), (%s, 'y')",
                      (a[0], a[1]))
            rows = c.execute(f"SELECT inet_server_port(), count(*) FROM {table} WHERE user_id "
                             f"IN ({sql_plain(a[0])}, {sql_plain(a[1])}) GROUP BY 1").fetchall()
            assert rows == [(shards.port(0), 2)], f"{db}: IN list on shard 0: {rows}"
        assert sorted(map(str, shards.rows(0, table))) == sorted(map(str, a)), \
            f"{db}: shard 0 has {shards.rows(0, table)}"
        assert shards.rows(1, table) == {}, f"{db}: shard 1 has {shards.rows(1, table)}"


@timeout(90)
def test_text_and_uuid_session_key(env):
    """SET pgmux.user_id = '<uuid>' / '<text>' routes keyless statements (simple and extended)
    to the key's shard until RESET; a bad uuid in SET gets 22P02 and a bad uuid literal or
    parameter a clear error, and the connection goes on; integer hints on a text key hash as
    their digits."""
    px, shards = keys_env(env)
    upl = shards.placement("uuid", make_uuid_keys(40, seed=31))
    tpl = shards.placement("text", ["o'brien", "ünïcödé", "alice", "bob", "carol", "dave", "42",
                                    "eve", "frank", "grace"])
    problems = []
    for db, pl, quote in ((UDB, upl, lambda k: f"'{str(k).upper()}'"), (TDB, tpl, sql_plain)):
        with px.connect(db) as c:
            for k, s in list(pl.items())[:8]:
                assert c.execute(f"SET pgmux.user_id = {quote(k)}").statusmessage == "SET"
                for ext in (False, True):
                    got = c.execute(PORT, binary=True).fetchone()[0] if ext else \
                        c.execute(PORT).fetchone()[0]
                    if got != shards.port(s):
                        problems.append(f"{db}: after SET pgmux.user_id = {quote(k)} "
                                        f"({'extended' if ext else 'simple'}): ran on "
                                        f"{shards.where(got)}, want shard {s}")
            assert c.execute("RESET pgmux.user_id").statusmessage == "RESET"
            expect_error(lambda: c.execute(PORT), "0A000", f"{db}: keyless after RESET",
                         contains=("no shard key",))
    assert not problems, "\n  ".join(problems)

    with px.connect(TDB) as c:
        got = c.execute(f"/* pgmux: user_id=42 */ {PORT}").fetchone()[0]
        assert got == shards.port(tpl["42"]), f"user_id=42 hint on a text key: {got}"

    u0 = next(iter(upl))
    with px.connect(UDB) as c:
        e = expect_error(lambda: c.execute("SET pgmux.user_id = 'not-a-uuid'"), "22P02",
                         "SET pgmux.user_id to a bad uuid",
                         contains=("invalid input syntax for type uuid",))
        print(f"bad SET: {e}")
        expect_error(lambda: c.execute("SET pgmux.user_id = 'not-a-uuid'", binary=True),
                     "22P02", "SET pgmux.user_id to a bad uuid (extended)")
        e = expect_error(lambda: c.execute(
            "SELECT * FROM accounts_u WHERE user_id = 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd38zz11'"),
            ("0A000", "22P02"), "a bad uuid literal", contains=("user_id",))
        print(f"bad uuid literal: {e}")
        expect_error(lambda: c.execute("SELECT * FROM accounts_u WHERE user_id = %s",
                                       ("nope",)), ("0A000", "22P02"), "a bad uuid parameter")
        expect_error(lambda: c.execute("SELECT * FROM accounts_u WHERE user_id = 42"),
                     ("0A000", "22P02", "42883"), "an integer literal for a uuid key")
        # the connection goes on, and the failed SET left no session key behind
        expect_error(lambda: c.execute(PORT), "0A000", "keyless after the failed SET")
        row = c.execute("SELECT inet_server_port() FROM accounts_u WHERE user_id = %s",
                        (u0,)).fetchone()
        assert row is None or row[0] == shards.port(upl[u0])
        got = c.execute(f"SELECT inet_server_port() FROM accounts_u WHERE user_id = '{u0}'"
                        ).fetchall()
        assert got == [], f"no rows were inserted: {got}"
        assert c.execute(f"SET pgmux.user_id = '{u0}'").statusmessage == "SET"
        assert c.execute(PORT).fetchone()[0] == shards.port(upl[u0])


@timeout(60)
def test_bad_shard_key_type(env):
    """shard_key_type = bogus stops startup with file:line and the key."""
    need_routing()
    sec = env.sharded_section(DB, [], shard_key_type="bogus")
    sec.update({"shards": 2, "shard.0.primary": env.backend_entry(env.pg, DB),
                "shard.1.primary": env.backend_entry(env.pg, DB)})
    px = env.pgmux({}, {}, sections={TDB: sec}, start=False)
    line = px.config_line(r"^shard_key_type = bogus$")
    px.start(wait=False)
    rc = px.wait_exit(10)
    log = px.log_text()
    assert rc is not None and rc != 0, f"pgmux kept running or exited 0 ({rc})"
    assert f"{px.ini}:{line}" in log or f"pgmux.ini:{line}:" in log, \
        f"the error does not name {px.ini.name}:{line}:\n{log[-2000:]}"
    assert "shard_key_type" in log and "expected int, text or uuid" in log, log[-2000:]
    print(f"startup error: {[x for x in log.splitlines() if 'shard_key_type' in x][:1]}")
