"""Merged reads over every shard (no_shard_key = all): ORDER BY, LIMIT/OFFSET, count/sum/min/max/
avg, GROUP BY and DISTINCT, compared query by query with the same query on one unsharded database
that holds all the rows.

Topology (small on purpose): three shard databases and one reference database, all on the
session's shared primary (one database per shard; no new servers).  Rows are spread over the
shards by a fixed random choice; a merged answer does not depend on where a row lies, only on
each row lying on exactly one shard.  Every query of the corpus runs through pgmux and directly on
the reference database, through psql (whose text output must match byte for byte: numeric scales,
avg's division scale, NULLs) and through psycopg (simple protocol: rows as Python values and the
CommandComplete).  Queries with a full ORDER BY are compared in order, the others as multisets.
Then the queries pgmux must refuse (0A000, naming the unsupported part), the extended protocol's
refusal, and a result larger than max_client_memory (54000, pgmux healthy afterwards)."""

import random
import subprocess
from datetime import date, datetime, timedelta

import psycopg

import rawpg
from pgharness import TEST_USER, pg_bin, timeout
from test_routing import need_routing
from test_sharding import expect_error, wait_shards_up

DB = "mrg"
N_SHARDS = 3
N_ROWS = 240
MAX_CLIENT_MEMORY = 131072

SCHEMA = ("CREATE TABLE items (user_id int8 PRIMARY KEY, g int4, v int4, big int8, "
          "amount numeric(12,2), name text, day date, ts timestamp, f float8)")
BIG_SCHEMA = "CREATE TABLE bulk (user_id int8 PRIMARY KEY, pad text)"

# (query, ordered): ordered queries have an ORDER BY that fixes every row's place.
CORPUS = [
    ("SELECT user_id, v FROM items ORDER BY user_id", True),
    ("SELECT user_id FROM items ORDER BY user_id DESC", True),
    ("SELECT user_id, v FROM items ORDER BY v, user_id", True),
    ("SELECT user_id, v FROM items ORDER BY v DESC, user_id", True),
    ("SELECT user_id, v FROM items ORDER BY v NULLS FIRST, user_id", True),
    ("SELECT user_id, v FROM items ORDER BY v DESC NULLS LAST, user_id DESC", True),
    ("SELECT user_id, g, v FROM items ORDER BY g, v DESC, user_id", True),
    ("SELECT user_id FROM items ORDER BY user_id LIMIT 10", True),
    ("SELECT user_id FROM items ORDER BY user_id LIMIT 10 OFFSET 25", True),
    ("SELECT user_id FROM items ORDER BY user_id OFFSET 230", True),
    ("SELECT user_id, v FROM items ORDER BY v DESC NULLS LAST, user_id LIMIT 7 OFFSET 3", True),
    ("SELECT user_id, v FROM items ORDER BY v, user_id FETCH FIRST 4 ROWS ONLY", True),
    ("SELECT user_id, amount FROM items ORDER BY amount, user_id LIMIT 20", True),
    ("SELECT user_id, big FROM items ORDER BY big DESC, user_id LIMIT 15", True),
    ("SELECT user_id, day FROM items ORDER BY day, user_id LIMIT 30", True),
    ("SELECT user_id, ts FROM items ORDER BY ts DESC, user_id", True),
    ('SELECT user_id, name FROM items ORDER BY name COLLATE "C", user_id', True),
    ("SELECT user_id, f FROM items ORDER BY f, user_id", True),
    ("SELECT * FROM items ORDER BY user_id LIMIT 5", True),
    ("SELECT name, v FROM items ORDER BY user_id LIMIT 12", True),
    ("SELECT user_id AS k, v AS val FROM items ORDER BY val, k", True),
    ("SELECT user_id, v FROM items WHERE g = 3 ORDER BY 2 DESC, 1", True),
    ("SELECT user_id FROM items WHERE v > 50 ORDER BY user_id LIMIT 5", True),
    ("SELECT user_id, v FROM items WHERE name LIKE 'n1%'", False),
    ("SELECT count(*) FROM items", True),
    ("SELECT count(v), sum(v), min(v), max(v) FROM items", True),
    ("SELECT avg(v) FROM items", True),
    ("SELECT sum(big), avg(big) FROM items", True),
    ("SELECT sum(amount), avg(amount), min(amount), max(amount) FROM items", True),
    ("SELECT min(day), max(day), min(ts), max(ts) FROM items", True),
    ('SELECT min(name COLLATE "C"), max(name COLLATE "C") FROM items', True),
    ("SELECT max(f), min(f) FROM items", True),
    ("SELECT count(*), sum(v), avg(v), min(v) FROM items WHERE g = 1000", True),
    ("SELECT g, count(*) FROM items GROUP BY g", False),
    ("SELECT g, count(*), sum(v), avg(v) FROM items GROUP BY g ORDER BY g", True),
    ("SELECT g, avg(v) AS a FROM items GROUP BY g ORDER BY a DESC NULLS LAST, g", True),
    ("SELECT g, avg(v % 2) AS a FROM items GROUP BY g ORDER BY a, g", True),   # ties in 0.x
    ("SELECT day > '2021-01-01' AS late, avg(amount), avg(v) FROM items GROUP BY 1 ORDER BY 3, 2",
     True),
    ("SELECT g, min(v), max(v) FROM items GROUP BY g ORDER BY g DESC NULLS LAST", True),
    ("SELECT g, avg(amount) FROM items GROUP BY 1 ORDER BY 1", True),
    ("SELECT g, avg(big), sum(big) FROM items GROUP BY g ORDER BY g", True),
    ("SELECT g, count(*) FROM items GROUP BY g ORDER BY count(*) DESC, g", True),
    ("SELECT g, count(*) AS n FROM items WHERE v IS NOT NULL GROUP BY g ORDER BY n DESC, g", True),
    ("SELECT count(*) AS c, g FROM items GROUP BY g ORDER BY g NULLS FIRST", True),
    ("SELECT sum(v) FROM items GROUP BY g", False),
    ("SELECT g, sum(v) FROM items GROUP BY g ORDER BY g LIMIT 3 OFFSET 1", True),
    ("SELECT day, count(*) FROM items GROUP BY day ORDER BY day LIMIT 10", True),
    ('SELECT name, count(*) FROM items GROUP BY name ORDER BY name COLLATE "C"', True),
    ("SELECT g, v > 50 AS high, count(*) FROM items GROUP BY g, v > 50 ORDER BY 1, 2", True),
    ("SELECT DISTINCT g FROM items", False),
    ("SELECT DISTINCT g FROM items ORDER BY g", True),
    ("SELECT DISTINCT g, v > 50 FROM items ORDER BY 1, 2", True),
    ("SELECT DISTINCT day FROM items ORDER BY day DESC LIMIT 5", True),
    ("SELECT DISTINCT amount FROM items ORDER BY amount NULLS FIRST LIMIT 10", True),
    ("SELECT DISTINCT g FROM items WHERE v < 30 ORDER BY g OFFSET 2", True),
]

# (query, words the 0A000 message must contain)
REFUSED = [
    ("SELECT count(DISTINCT g) FROM items", "DISTINCT values"),
    ("SELECT user_id, row_number() OVER (ORDER BY user_id) FROM items", "window function"),
    ("SELECT DISTINCT ON (g) g, v FROM items ORDER BY g, v", "DISTINCT ON"),
    ("SELECT g, count(*) FROM items GROUP BY g HAVING count(*) > 2", "HAVING"),
    ("SELECT string_agg(name, ',') FROM items", "function other than"),
    ("SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY v) FROM items", "function other than"),
    ("SELECT count(*) + 1 FROM items", "expression over an aggregate"),
    ("SELECT sum(f) FROM items", "float"),
    ("SELECT avg(f) FROM items", "float"),
    ("SELECT user_id, name FROM items ORDER BY name", 'COLLATE "C"'),
    ("SELECT min(name) FROM items", 'COLLATE "C"'),
    ("SELECT g, count(*) FROM items GROUP BY ROLLUP (g)", "ROLLUP"),
    ("SELECT user_id FROM items ORDER BY user_id FETCH FIRST 2 ROWS WITH TIES", "WITH TIES"),
    ("SELECT f, count(*) FROM items GROUP BY f", "group or de-duplicate"),
    ("SELECT g FROM items GROUP BY g ORDER BY avg(v)", "avg"),
]


def make_rows(n, seed):
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        uid = rng.randint(-(1 << 40), 1 << 40) * 1000 + i   # unique
        g = None if rng.random() < 0.08 else rng.randint(0, 6)
        v = None if rng.random() < 0.12 else rng.randint(-20, 100)
        big = rng.choice([rng.randint(-(1 << 62), 1 << 62), rng.randint(-1000, 1000)])
        amount = None if rng.random() < 0.1 else f"{rng.randint(-99999, 999999) / 100:.2f}"
        name = None if rng.random() < 0.1 else rng.choice(["n", "N", "a", "Z", "é", "n1"]) + \
            str(rng.randint(0, 40))
        day = date(2020, 1, 1) + timedelta(days=rng.randint(-800, 2000))
        ts = None if rng.random() < 0.1 else datetime(2024, 5, 1) + \
            timedelta(seconds=rng.randint(-10**7, 10**7), microseconds=rng.choice([0, 500000, 123]))
        f = rng.choice([rng.uniform(-1e6, 1e6), 0.0, -0.0, float("inf"), 1e-300,
                        float(rng.randint(0, 9))])
        rows.append((uid, g, v, big, amount, name, day, ts, f))
    return rows


def setup(env, settings=None):
    """Three shard databases and the reference one on the shared primary; a pgmux with a
    3-shard [database mrg] section, no_shard_key = all."""
    need_routing()
    pg = env.pg
    shard_dbs = [env.database(f"_s{i}", owner=TEST_USER) for i in range(N_SHARDS)]
    ref = env.database("_ref", owner=TEST_USER)
    rows = make_rows(N_ROWS, seed=14)
    rng = random.Random(99)
    placed = {d: [] for d in shard_dbs}
    for r in rows:
        placed[rng.choice(shard_dbs)].append(r)
    bulk = [(i, "x" * 60) for i in range(3000)]
    ins = "INSERT INTO items VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)"
    for d, rs in [(ref, rows)] + list(placed.items()):
        with pg.connect(d, TEST_USER) as c:
            c.execute(SCHEMA)
            c.execute(BIG_SCHEMA)
            with c.cursor() as cur:
                cur.executemany(ins, rs)
                part = bulk if d == ref else bulk[shard_dbs.index(d)::N_SHARDS]
                cur.executemany("INSERT INTO bulk VALUES (%s, %s)", part)
    sec = {"shard_key": "user_id", "shards": N_SHARDS, "no_shard_key": "all",
           "read_routing": "on"}
    for i, d in enumerate(shard_dbs):
        sec[f"shard.{i}.primary"] = env.backend_entry(pg, d)
    sets = {"pool_mode": "transaction", "monitor_interval": 0.2, "default_pool_size": 4,
            "max_client_memory": MAX_CLIENT_MEMORY}
    sets.update(settings or {})
    px = env.pgmux({}, sets, sections={DB: sec})
    wait_shards_up(px, N_SHARDS, n_replicas=0, db=DB)
    return px, ref


def psql_direct(pg, dbname, sql):
    cmd = [pg_bin("psql"), "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h", str(pg.sockdir),
           "-p", str(pg.port), "-U", TEST_USER, "-d", dbname, "-c", sql]
    return subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          timeout=60)


def norm(rows, ordered):
    return rows if ordered else sorted(rows, key=repr)


@timeout(120)
def test_merge_corpus(env):
    """Every corpus query: pgmux's merged answer equals the unsharded database's, through psql
    (exact text) and psycopg (values, column names, CommandComplete)."""
    px, ref = setup(env)
    assert len(CORPUS) >= 40
    failures = []
    with px.connect(DB) as c, env.pg.connect(ref, TEST_USER) as r:
        for q, ordered in CORPUS:
            try:
                got = c.execute(q)
                g_rows, g_cols, g_tag = got.fetchall(), [d.name for d in got.description], \
                    got.statusmessage
                want = r.execute(q)
                w_rows, w_cols, w_tag = want.fetchall(), [d.name for d in want.description], \
                    want.statusmessage
                if norm(g_rows, ordered) != norm(w_rows, ordered):
                    failures.append(f"psycopg rows differ: {q}\n    got  {g_rows[:6]}...\n"
                                    f"    want {w_rows[:6]}...")
                if g_cols != w_cols or g_tag != w_tag:
                    failures.append(f"psycopg columns/tag differ: {q}: {g_cols} {g_tag!r} != "
                                    f"{w_cols} {w_tag!r}")
                got_types = [d.type_code for d in got.description]
                want_types = [d.type_code for d in want.description]
                if got_types != want_types:
                    failures.append(f"column types differ: {q}: {got_types} != {want_types}")
            except psycopg.Error as e:
                failures.append(f"psycopg error: {q}: {e.sqlstate} {e}")
    for q, ordered in CORPUS:
        p = px.psql(DB, q, check=False)
        d = psql_direct(env.pg, ref, q)
        if p.returncode != 0 or d.returncode != 0:
            failures.append(f"psql failed: {q}: {p.stderr.strip()} {d.stderr.strip()}")
            continue
        pl, dl = p.stdout.splitlines(), d.stdout.splitlines()
        if norm(pl, ordered) != norm(dl, ordered):
            diff = next((f"{a!r} != {b!r}" for a, b in zip(norm(pl, ordered), norm(dl, ordered))
                         if a != b), f"{len(pl)} lines != {len(dl)}")
            failures.append(f"psql text differs: {q}: {diff}")
    assert not failures, f"{len(failures)} of {len(CORPUS)} queries differ:\n  " + \
        "\n  ".join(failures)
    # the shards' servers go back to the pool after each fan-out read, not closed
    opened = open(px.logfile).read().count("new connection to server")
    assert opened <= 2 * N_SHARDS, f"{opened} server connections for {2 * len(CORPUS)} reads"
    print(f"{len(CORPUS)} merged queries equal the unsharded answers (psycopg and psql)")


# The extended protocol (psycopg with parameters: one unnamed Parse/Bind/Describe/Execute/Sync
# batch, text results): (query, parameters, ordered).
EXTENDED = [
    ("SELECT user_id, v FROM items WHERE v > %s ORDER BY v, user_id LIMIT %s OFFSET %s",
     (10, 7, 3), True),
    ("SELECT g, count(*), avg(v) FROM items WHERE v > %s GROUP BY g ORDER BY g", (0,), True),
    ("SELECT DISTINCT g FROM items WHERE name LIKE %s ORDER BY g", ("n%",), True),
    ("SELECT user_id FROM items WHERE g = %s ORDER BY user_id DESC LIMIT %s", (2, 4), True),
    ("SELECT count(*), sum(amount), min(day), avg(big) FROM items WHERE big > %s", (0,), True),
    ("SELECT user_id FROM items ORDER BY user_id OFFSET %s", (200,), True),
    ("SELECT g, sum(v) FROM items GROUP BY g ORDER BY g LIMIT %s OFFSET %s", (2, 1), True),
    ("SELECT user_id FROM items ORDER BY user_id LIMIT %s", (None,), True),
    ("SELECT user_id, name FROM items WHERE v < %s ORDER BY name COLLATE \"C\", user_id LIMIT 9",
     (40,), True),
    ("SELECT g, count(*) FROM items WHERE v <> %s GROUP BY g", (7,), False),
]


@timeout(90)
def test_merge_extended(env):
    """Merged reads in the extended protocol (psycopg, parameters, LIMIT/OFFSET as $n), with text
    and binary results, and the whole corpus with binary results, equal the unsharded answers."""
    px, ref = setup(env)
    failures = []
    with px.connect(DB) as c, env.pg.connect(ref, TEST_USER) as r:
        runs = [(e, False) for e in EXTENDED] + [(e, True) for e in EXTENDED] + \
            [((q, None, o), True) for q, o in CORPUS]   # the corpus, in binary
        for (q, params, ordered), binary in runs:
            try:
                got = c.execute(q, params, binary=binary)
                # repr: a Decimal's scale and a float's every bit count
                g = (repr(norm(got.fetchall(), ordered)), [d.name for d in got.description],
                     [d.type_code for d in got.description], got.statusmessage)
                want = r.execute(q, params, binary=binary)
                w = (repr(norm(want.fetchall(), ordered)), [d.name for d in want.description],
                     [d.type_code for d in want.description], want.statusmessage)
                if g != w:
                    failures.append(f"differs (binary {binary}): {q} {params}:\n    got  {str(g)[:300]}\n"
                                    f"    want {str(w)[:300]}")
            except psycopg.Error as e:
                failures.append(f"psycopg error: {q} {params}: {e.sqlstate} {e}")
    assert not failures, f"{len(failures)} of {len(runs)} differ:\n  " + "\n  ".join(failures)
    print(f"{len(runs)} merged extended-protocol reads equal the unsharded answers (text and "
          "binary results)")


@timeout(60)
def test_merge_pipelined(env):
    """Fan-out reads pipelined with other requests (psycopg pipeline mode): each one that starts
    the pipeline, or follows another fan-out, runs on every shard while the requests behind it
    wait, then those run in order."""
    px, ref = setup(env)
    steps = [("SELECT g, count(*), avg(v) FROM items WHERE v > %s GROUP BY g ORDER BY g", (0,)),
             ("SELECT user_id, v FROM items WHERE v > %s ORDER BY v DESC, user_id LIMIT 5", (20,)),
             ("SELECT user_id FROM items WHERE v > %s", (90,)),   # plain fan-out
             ("SELECT DISTINCT g FROM items WHERE v < %s ORDER BY g", (10,)),
             ("SELECT count(*) FROM items WHERE user_id = %s", (5,))]   # keyed, last
    with px.connect(DB) as c:
        for rnd in range(2):
            with c.pipeline() as p:
                curs = []
                for q, params in steps:
                    curs.append(c.cursor().execute(q, params))
                    p.sync()
            for (q, params), cur in zip(steps, curs):
                got = cur.fetchall()
                want = env.sql(ref, q, params)
                if "ORDER BY" not in q:
                    got, want = sorted(got, key=repr), sorted(want, key=repr)
                assert got == want, f"round {rnd}, pipelined {q}: {got[:5]} != {want[:5]}"
        # and a simple-protocol fan-out right after, on the same connection
        assert c.execute("SELECT count(*) FROM items").fetchone() == (N_ROWS,)


@timeout(90)
def test_merge_behind_big_answer(env):
    """A query sent while a large merged read runs (the client reads nothing for a while, so
    the merged answer fills the sockets) waits for it and then runs on its own."""
    px, ref = setup(env, {"max_client_memory": 8_000_000})
    q = "SELECT user_id, pad FROM bulk ORDER BY user_id DESC"
    with rawpg.RawConn.tcp(px.port, DB, TEST_USER, timeout=30) as c:
        for rnd in range(2):
            c.send(rawpg.query(q))
            c.send(rawpg.query("SELECT count(*) FROM bulk WHERE user_id < 10"))
            c.send(rawpg.query("SELECT 'third'"))
            first = c.read_until_ready(timeout=60)
            assert not rawpg.errors(first), rawpg.errors(first)
            rows = rawpg.rows(first)
            assert len(rows) == 3000 and rows[0][0] == "2999" and rows[-1][0] == "0", \
                (rnd, len(rows), rows[:1], rows[-1:])
            second = c.read_until_ready(timeout=30)
            assert rawpg.rows(second) == [("10",)], (rnd, rawpg.rows(second), rawpg.errors(second))
            third = c.read_until_ready(timeout=30)
            assert rawpg.rows(third) == [("third",)], (rnd, rawpg.rows(third))


@timeout(90)
def test_merge_refusals(env):
    """What pgmux cannot merge exactly is refused with 0A000 naming it; a LIMIT without ORDER BY
    gives that many of the rows; the extended protocol is refused; a merged answer larger than
    max_client_memory is refused with 54000 and pgmux serves the next reads."""
    px, ref = setup(env)
    failures = []
    with px.connect(DB) as c:
        for q, words in REFUSED:
            try:
                expect_error(lambda q=q: c.execute(q), "0A000", q, (words,))
            except AssertionError as e:
                failures.append(str(e))
        # the connection still works after every refusal
        assert c.execute("SELECT count(*) FROM items").fetchone() == (N_ROWS,)
        # LIMIT without ORDER BY: any 5 of the rows
        ids = {r[0] for r in c.execute("SELECT user_id FROM items").fetchall()}
        some = c.execute("SELECT user_id FROM items LIMIT 5").fetchall()
        assert len(some) == 5 and {r[0] for r in some} <= ids, some
        # the extended protocol: binary results and named prepared statements are refused
        q = "SELECT user_id FROM items WHERE v > %s ORDER BY user_id"
        for what, run, words in (
                ("binary timestamptz", lambda: c.execute(
                    "SELECT user_id, ts::timestamptz FROM items WHERE v > %s ORDER BY user_id",
                    (3,), binary=True), "in binary"),
                        ("negative LIMIT", lambda: c.execute(q + " LIMIT %s", (3, -1)), "negative")):
            try:
                expect_error(run, ("0A000", "2201W"), what, (words,))
            except AssertionError as e:
                failures.append(str(e))
        # a merged answer above max_client_memory: 54000 naming the cap
        try:
            expect_error(lambda: c.execute("SELECT user_id, pad FROM bulk ORDER BY user_id"),
                         "54000", "big merge", ("max_client_memory", str(MAX_CLIENT_MEMORY)))
        except AssertionError as e:
            failures.append(str(e))
        # ... with LIMIT pushed down it fits, and equals the reference
        q = "SELECT user_id, pad FROM bulk ORDER BY user_id DESC LIMIT 20 OFFSET 100"
        got = c.execute(q).fetchall()
        want = env.sql(ref, q)
        if got != want:
            failures.append(f"bulk with LIMIT differs: {got[:3]} != {want[:3]}")
        assert c.execute("SELECT count(*) FROM bulk").fetchone() == (3000,)
    # a named prepared statement (psycopg prepare_threshold=0) is refused at its Parse
    with px.connect(DB, prepare_threshold=0) as c3:
        try:
            expect_error(lambda: c3.execute("SELECT user_id FROM items WHERE v > %s ORDER BY "
                                            "user_id", (3,)), "0A000", "named statement",
                         ("prepared statement",))
        except AssertionError as e:
            failures.append(str(e))
        # ... while a plain fan-out read (nothing to merge) runs as a named statement
        assert len(c3.execute("SELECT user_id FROM items WHERE v > %s", (3,)).fetchall()) > 0
    # another client is served normally; the plain fan-out still works
    with px.connect(DB) as c2:
        assert c2.execute("SELECT count(*), max(user_id) FROM bulk").fetchone() == (3000, 2999)
        assert len(c2.execute("SELECT user_id FROM bulk").fetchall()) == 3000
    p = px.psql(DB, "SELECT g, count(*) FROM items GROUP BY g ORDER BY count(*) DESC, g LIMIT 1",
                check=False)
    assert p.returncode == 0 and p.stdout.strip(), p.stderr
    assert not failures, f"{len(failures)} checks failed:\n  " + "\n  ".join(failures)


def random_queries(n, seed):
    """n random merged reads whose answers are fully ordered (so they compare row by row):
    rows ordered by random keys with user_id last, aggregates ordered by every group key,
    DISTINCT ordered by every column."""
    rng = random.Random(seed)
    cols = ["g", "v", "big", "amount", "name", "day", "ts", "f"]
    sortable = {"name": 'name COLLATE "C"'}
    filters = ["", "WHERE v > 40", "WHERE g = 3", "WHERE amount < 100", "WHERE day > '2021-06-01'",
               "WHERE name LIKE 'n%'", "WHERE ts IS NULL", "WHERE g IS NOT NULL AND v < 10",
               "WHERE big > 0"]

    def key(expr):
        d = rng.choice(["", " ASC", " DESC"])
        nl = rng.choice(["", "", " NULLS FIRST", " NULLS LAST"])
        return expr + d + nl

    def limit():
        r = rng.random()
        if r < 0.4:
            return ""
        if r < 0.6:
            return f" LIMIT {rng.randint(0, 30)}"
        if r < 0.8:
            return f" LIMIT {rng.randint(1, 30)} OFFSET {rng.randint(0, 60)}"
        return f" OFFSET {rng.randint(0, 250)}"

    out = []
    for _ in range(n):
        kind = rng.random()
        where = rng.choice(filters)
        if kind < 0.45:
            sel = rng.sample(cols, rng.randint(1, 3))
            if rng.random() < 0.5:
                sel.append("user_id")
            keys = [key(sortable.get(c, c)) for c in rng.sample(cols, rng.randint(1, 2))]
            keys.append("user_id" + rng.choice(["", " DESC"]))
            out.append(f"SELECT {', '.join(sel)} FROM items {where} ORDER BY {', '.join(keys)}"
                       + limit())
        elif kind < 0.85:
            groups = rng.sample(["g", "day", "v > 50", "name"], rng.randint(0, 2))
            aggs = []
            for _ in range(rng.randint(1, 3)):
                a = rng.choice(["count(*)", "count(v)", "sum(v)", "sum(big)", "sum(amount)",
                                "avg(v)", "avg(big)", "avg(amount)", "min(v)", "max(amount)",
                                "min(day)", "max(ts)", 'max(name COLLATE "C")', "min(big)",
                                "max(f)"])
                aggs.append(a)
            shown = [gr for gr in groups if rng.random() < 0.7]
            sel = shown + aggs
            order = [key(sortable.get(gr, gr)) for gr in groups]
            if groups and rng.random() < 0.4:
                # an aggregate first (by its position), the group keys break its ties
                order.insert(0, key(str(len(shown) + rng.randint(1, len(aggs)))))
            q = f"SELECT {', '.join(sel)} FROM items {where}"
            if groups:
                q += f" GROUP BY {', '.join(groups)} ORDER BY {', '.join(order)}"
            out.append(q + limit())
        else:
            sel = rng.sample(["g", "v", "day", "amount", "name", "big"], rng.randint(1, 2))
            if "name" in sel:
                sel = ['name COLLATE "C"' if c == "name" else c for c in sel]
                order = [key(str(i + 1)) for i in range(len(sel))]
            else:
                order = [key(c) for c in sel]
            out.append(f"SELECT DISTINCT {', '.join(sel)} FROM items {where} ORDER BY "
                       f"{', '.join(order)}" + limit())
    return out


@timeout(120)
def test_merge_random(env):
    """120 random merged reads (fixed seed; fully ordered) equal the unsharded answers, as
    psycopg values and as psql's text."""
    px, ref = setup(env)
    qs = random_queries(120, seed=2026)
    failures = []
    with px.connect(DB) as c, env.pg.connect(ref, TEST_USER) as r:
        for q in qs:
            try:
                want = r.execute(q).fetchall()
            except psycopg.Error as e:
                failures.append(f"the reference refuses its own query: {q}: {e}")
                continue
            try:
                got = c.execute(q).fetchall()
            except psycopg.Error as e:
                failures.append(f"pgmux: {q}: {e.sqlstate} {e}")
                continue
            if got != want:
                failures.append(f"differs: {q}\n    got  {got[:4]}\n    want {want[:4]}")
    for q in qs[::3]:
        p, d = px.psql(DB, q, check=False), psql_direct(env.pg, ref, q)
        if p.returncode or d.returncode or p.stdout != d.stdout:
            failures.append(f"psql text differs: {q}: {p.stderr.strip()[:200]}")
    assert not failures, f"{len(failures)} of {len(qs)} random queries:\n  " + \
        "\n  ".join(failures[:15])
    print(f"{len(qs)} random merged reads equal the unsharded answers")
