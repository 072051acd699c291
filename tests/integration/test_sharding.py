"""Sharding: a [database users] section with shard_key = user_id and N shards, each shard a
private primary with one streaming replica (env.shard_topologies).  Rows must land on the shard that
PostgreSQL's own hash partitioning names (satisfies_hash_partition on an int8 HASH-partitioned
parent), whichever way the key reaches pgmux: literals and quoted literals (psql, simple
protocol), $n parameters in text or binary format (psycopg 3, asyncpg's prepared statements),
INSERT ... VALUES by column position, multi-row INSERTs, hint comments and SET pgmux.user_id /
pgmux.shard.  Reads go to the shard's replica, writes to its primary; transactions stay on one
shard; statements without a key follow no_shard_key (error | shard0 | all).

Which server answered is told by inet_server_port(): every server has its own port."""

import contextlib
import os
import random
import subprocess
import threading
import time

import psycopg
from psycopg import pq

from pgharness import TEST_USER, pg_bin, run_async, timeout, wait_for
from test_routing import need_routing

DB = "users"
INSERT = "INSERT INTO accounts (user_id, name) VALUES"
PORT = "SELECT inet_server_port()"


def name_of(k):
    return f"user {k}"


# ----------------------------------------------------------------------------------------------
# setup

class Shards:
    """The shards of one test: topos[i] is shard i (.primary, .replicas[0])."""

    def __init__(self, env, topos):
        self.env = env
        self.topos = topos
        self.n = len(topos)

    def primary(self, s):
        return self.topos[s].primary

    def replica(self, s):
        return self.topos[s].replicas[0]

    def port_names(self):
        out = {}
        for s, t in enumerate(self.topos):
            out[t.primary.port] = f"shard {s} primary"
            for i, r in enumerate(t.replicas):
                out[r.port] = f"shard {s} replica{i}"
        return out

    def where(self, port):
        return self.port_names().get(port, f"unknown port {port}")

    def placement(self, keys):
        """{key: shard} as PostgreSQL's hash partitioning (int8) places each key among n."""
        keys = list(keys)
        with self.primary(0).connect() as c:
            c.execute("CREATE TABLE IF NOT EXISTS pgmux_hash_parent (k int8) "
                      "PARTITION BY HASH (k)")
            rows = c.execute(
                "SELECT k, r FROM unnest(%s::int8[]) k, generate_series(0, %s::int - 1) r "
                "WHERE satisfies_hash_partition('pgmux_hash_parent'::regclass, %s::int, r, k)",
                (keys, self.n, self.n)).fetchall()
        out = dict(rows)
        assert len(out) == len(set(keys)), \
            f"satisfies_hash_partition placed {len(out)} of {len(set(keys))} keys"
        return out

    def rows(self, s):
        """{user_id: name} on shard s's primary (read directly)."""
        with self.primary(s).connect(DB) as c:
            return dict(c.execute("SELECT user_id, name FROM accounts").fetchall())

    def load(self, placement, name=name_of):
        """Puts rows straight onto the shard primaries (COPY), waits for the replicas."""
        for s in range(self.n):
            with self.primary(s).connect(DB) as c:
                with c.cursor().copy("COPY accounts (user_id, name) FROM STDIN") as cp:
                    for k, ks in placement.items():
                        if ks == s:
                            cp.write_row((k, name(k)))
        self.wait_replay()

    def wait_replay(self):
        for t in self.topos:
            t.wait_replay()

    def count_direct(self, k):
        """On which shards (primaries, read directly) user_id k is."""
        return [s for s in range(self.n)
                if self.primary(s).sql1("SELECT count(*) FROM accounts WHERE user_id = %s",
                                        (k,), dbname=DB)]


def shard_backends(px, db=DB):
    return {r["backend"]: r for r in px.show("BACKENDS") if r["database"] == db}


def wait_shards_up(px, n_shards, n_replicas=1, db=DB, timeout=15):
    """Until SHOW BACKENDS lists db/S/primary and db/S/replicaI for every shard, all up and in
    their configured role."""
    want = set()
    for s in range(n_shards):
        want.add(f"{db}/{s}/primary")
        want |= {f"{db}/{s}/replica{i}" for i in range(n_replicas)}
    last = {}

    def ok():
        rows = shard_backends(px, db)
        last["rows"] = rows
        if set(rows) != want:
            return False
        return all(r["state"] == "up" and r["seen_role"] == r["config_role"]
                   for r in rows.values())
    try:
        wait_for(ok, timeout, 0.1)
    except TimeoutError:
        brief = {b: (r.get("shard"), r.get("port"), r.get("config_role"), r.get("seen_role"),
                     r.get("state"), r.get("last_error"))
                 for b, r in last.get("rows", {}).items()}
        raise AssertionError(f"timed out after {timeout}s waiting for backends {sorted(want)} "
                             f"to be up; SHOW BACKENDS has {brief}") from None
    return last["rows"]


def sharded_env(env, n_shards, settings=None, extra_pgmux=(), **section_keys):
    """n_shards private topologies (a primary + one streaming replica each), a database
    `users` with a table accounts(user_id int8 primary key, name text) on every shard, and a
    pgmux with a sharded [database users] section (transaction pooling, monitor_interval 0.2,
    no_shard_key = error unless given); waits until every backend is up.
    extra_pgmux: section-key dicts for more pgmux instances on the same shards.
    Returns (pgmux, Shards), or (pgmux, Shards, [extra pgmuxes]) when extra_pgmux is given."""
    need_routing()
    topos = env.shard_topologies(n_shards, n_replicas=1)
    for t in topos:
        t.primary.create_database(DB, owner=TEST_USER)
        env.sql(DB, "CREATE TABLE accounts (user_id int8 PRIMARY KEY, name text)",
                server=t.primary)
    for t in topos:
        t.wait_replay()
    shards = Shards(env, topos)

    sets = {"pool_mode": "transaction", "monitor_interval": 0.2, "max_client_conn": 200,
            "default_pool_size": 4}
    sets.update(settings or {})

    def start(keys):
        k = {"no_shard_key": "error", "read_routing": "on"}
        k.update(keys)
        px = env.pgmux({}, dict(sets), sections={DB: env.sharded_section(DB, topos, **k)})
        wait_shards_up(px, n_shards)
        return px
    px = start(section_keys)
    if extra_pgmux:
        return px, shards, [start(k) for k in extra_pgmux]
    return px, shards


def make_keys(n, seed):
    """n distinct int8 keys: small and large, positive and negative, and 0."""
    rng = random.Random(seed)
    keys = {0, 1, -1, 42}
    while len(keys) < n:
        x = rng.random()
        if x < 0.45:
            k = rng.randint(1, 1_000_000)
        elif x < 0.6:
            k = rng.randint(-1_000_000, -1)
        elif x < 0.7:
            k = rng.randint(32768, 1 << 31)
        elif x < 0.85:
            k = rng.randint(1 << 31, (1 << 63) - 1)
        else:
            k = rng.randint(-(1 << 63) + 1, -(1 << 31))
        keys.add(k)
    keys = sorted(keys)
    rng.shuffle(keys)
    return keys[:n]


def keys_on(placement, s, count, exclude=()):
    out = [k for k, ks in placement.items() if ks == s and k not in exclude]
    assert len(out) >= count, f"only {len(out)} keys on shard {s}"
    return out[:count]


def fresh_keys(shards, per_shard, seed):
    """{shard: [keys]} with per_shard keys of each shard (none present anywhere yet)."""
    pl = shards.placement(make_keys(per_shard * shards.n * 4 + 50, seed))
    return {s: keys_on(pl, s, per_shard) for s in range(shards.n)}


def run_psql(px, args, check=True, timeout=90, db=DB):
    """psql through pgmux with our own arguments (no -t: footers kept), ON_ERROR_STOP=1 unless
    args say otherwise; returns CompletedProcess."""
    cmd = [pg_bin("psql"), "-X", "-h", "127.0.0.1", "-p", str(px.port), "-U", TEST_USER,
           "-d", db, *args]
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                       timeout=timeout, env=dict(os.environ, PGCONNECT_TIMEOUT="10"))
    if check and r.returncode != 0:
        raise AssertionError(f"psql {' '.join(args)} failed ({r.returncode}):\n"
                             f"{r.stderr[-3000:]}")
    return r


def expect_error(fn, sqlstate, what, contains=()):
    """Runs fn(); it must raise a psycopg error with this SQLSTATE (one of, for a tuple) and a
    message containing every string of contains.  Returns the error."""
    states = (sqlstate,) if isinstance(sqlstate, str) else tuple(sqlstate)
    try:
        v = fn()
    except psycopg.Error as e:
        msg = str(e)
        assert e.sqlstate in states, \
            f"{what}: SQLSTATE {e.sqlstate} (want {'/'.join(states)}): {msg}"
        for c in contains:
            assert c in msg, f"{what}: message {msg!r} does not mention {c!r}"
        return e
    raise AssertionError(f"{what}: no error (want SQLSTATE {'/'.join(states)}); got {v!r}")


def check_placement(shards, expected, source):
    """Every key of expected ({key: shard}) is on exactly its shard (primaries read directly)
    with its name, and nothing else is there.  source: {key: how it was inserted}."""
    on = {}
    extra = []
    total = 0
    for s in range(shards.n):
        rows = shards.rows(s)
        total += len(rows)
        for k, nm in rows.items():
            on.setdefault(k, []).append(s)
            if k not in expected:
                extra.append((s, k))
            elif nm != name_of(k):
                extra.append((s, k, nm))
    dup = {k: v for k, v in on.items() if len(v) > 1}
    missing = [k for k in expected if k not in on]
    wrong = {}
    for k, want in expected.items():
        got = on.get(k)
        if got is not None and got != [want]:
            wrong.setdefault(source.get(k, "?"), []).append((k, want, got))
    problems = []
    if wrong:
        for src, items in sorted(wrong.items()):
            problems.append(f"{len(items)} rows inserted by {src} on the wrong shard, e.g. "
                            + ", ".join(f"user_id {k}: want shard {w}, on {g}"
                                        for k, w, g in items[:5]))
    if dup:
        problems.append(f"{len(dup)} keys on several shards: {list(dup.items())[:5]}")
    if missing:
        by = {}
        for k in missing:
            by.setdefault(source.get(k, "?"), []).append(k)
        problems.append("missing: " + "; ".join(f"{len(v)} from {s} e.g. {v[:5]}"
                                                for s, v in by.items()))
    if extra:
        problems.append(f"unexpected rows: {extra[:5]}")
    if total != len(expected):
        problems.append(f"{total} rows on the shards, want {len(expected)}")
    assert not problems, "placement is wrong:\n  " + "\n  ".join(problems)
    per = [sum(1 for v in expected.values() if v == s) for s in range(shards.n)]
    print(f"placement ok: {len(expected)} rows, per shard {per}")


# ----------------------------------------------------------------------------------------------
# writers

def psql_script_lines(keys, placement):
    """SQL lines inserting keys with literal keys in several forms; returns (lines, source)."""
    lines, source = [], {}
    forms = [
        ("psql literal", lambda k: f"{INSERT} ({k}, '{name_of(k)}');"),
        ("psql literal, key column second",
         lambda k: f"INSERT INTO accounts (name, user_id) VALUES ('{name_of(k)}', {k});"),
        ("psql quoted literal", lambda k: f"{INSERT} ('{k}', '{name_of(k)}');"),
        ("psql schema-qualified table",
         lambda k: f"INSERT INTO public.accounts (user_id, name) VALUES ({k}, '{name_of(k)}');"),
        ("psql ON CONFLICT", lambda k: f"{INSERT} ({k}, '{name_of(k)}') "
                                       f"ON CONFLICT (user_id) DO NOTHING;"),
    ]
    multi = []   # every 6th key: multi-row INSERTs of 3 keys on the same shard
    for i, k in enumerate(keys):
        if i % 6 == 5:
            multi.append(k)
            continue
        src, f = forms[i % len(forms)]
        source[k] = src
        lines.append(f(k))
    by_shard = {}
    for k in multi:
        by_shard.setdefault(placement[k], []).append(k)
    for s, ks in sorted(by_shard.items()):
        for j in range(0, len(ks), 3):
            group = ks[j:j + 3]
            vals = ", ".join(f"({k}, '{name_of(k)}')" for k in group)
            lines.append(f"{INSERT} {vals};")
            for k in group:
                source[k] = "psql multi-row INSERT (one shard)"
    return lines, source


def insert_psql(env, px, keys, placement, tag="psql"):
    lines, source = psql_script_lines(keys, placement)
    path = env.dir / f"{tag}_inserts.sql"
    path.write_text("\n".join(lines) + "\n")
    t0 = time.monotonic()
    r = run_psql(px, ["-q", "-v", "ON_ERROR_STOP=1", "-v", "VERBOSITY=verbose", "-f", str(path)],
                 check=False)
    assert r.returncode == 0, f"psql -f {path.name} ({len(lines)} INSERTs with literal keys) " \
                              f"failed ({r.returncode}): {r.stderr[-2000:]}"
    print(f"psql: {len(keys)} rows in {len(lines)} statements, {time.monotonic() - t0:.1f}s")
    return source


def insert_psycopg(px, keys):
    """psycopg 3, extended protocol: text parameters (%s) and binary ones (%b); the key column
    first or second.  Returns source."""
    source = {}
    t0 = time.monotonic()
    with px.connect(DB) as c, px.connect(DB, prepare_threshold=0) as cp:
        for i, k in enumerate(keys):
            if i % 5 == 4:
                cp.execute(f"{INSERT} (%s, %s)", (k, name_of(k)))
                source[k] = "psycopg prepared statement (prepare_threshold=0)"
            elif i % 4 == 0:
                c.execute(f"{INSERT} (%s, %s)", (k, name_of(k)))
                source[k] = "psycopg text parameter"
            elif i % 4 == 1:
                c.execute("INSERT INTO accounts (name, user_id) VALUES (%s, %s)", (name_of(k), k))
                source[k] = "psycopg text parameter, key column second"
            elif i % 4 == 2:
                c.execute(f"{INSERT} (%b, %b)", (k, name_of(k)))
                width = "int2" if -32768 <= k < 32768 else \
                    "int4" if -(1 << 31) <= k < (1 << 31) else "int8"
                source[k] = f"psycopg binary parameter ({width})"
            else:
                c.execute("INSERT INTO accounts AS a (name, user_id) VALUES (%s, %s)",
                          (name_of(k), k), binary=True)
                source[k] = "psycopg binary (binary=True), alias, key column second"
    print(f"psycopg: {len(keys)} rows, {time.monotonic() - t0:.1f}s")
    return source


def insert_asyncpg(px, keys):
    """asyncpg: named prepared statements, binary int8 parameters."""
    source = {}

    errors = []

    async def go():
        import asyncpg
        conn = await px.aconnect(DB)
        try:
            for i, k in enumerate(keys):
                if i % 2 == 0:
                    sql = "INSERT INTO accounts (user_id, name) VALUES ($1, $2)"
                    args = (k, name_of(k))
                    src = "asyncpg ($1 binary int8)"
                else:
                    sql = "INSERT INTO accounts (name, user_id) VALUES ($1, $2)"
                    args = (name_of(k), k)
                    src = "asyncpg ($2 binary int8, key column second)"
                try:
                    await conn.execute(sql, *args)
                except asyncpg.PostgresError as e:
                    errors.append(f"asyncpg {sql!r} {args}: {e.sqlstate} {e}")
                    if len(errors) >= 3:
                        return
                    continue
                source[k] = src
        finally:
            await conn.close()
    t0 = time.monotonic()
    run_async(go(), timeout=60)
    print(f"asyncpg: {len(source)} of {len(keys)} rows, {time.monotonic() - t0:.1f}s")
    return source, errors


def insert_three_ways(env, px, shards, keys):
    """A third of keys each through psql (literals), psycopg (parameters), asyncpg; returns
    (expected placement of the rows inserted, source, asyncpg's errors)."""
    expected = shards.placement(keys)
    third = len(keys) // 3
    source = {}
    source.update(insert_psql(env, px, keys[:third], expected))
    source.update(insert_psycopg(px, keys[third:2 * third]))
    src, errors = insert_asyncpg(px, keys[2 * third:])
    source.update(src)
    # keys whose INSERT failed are checked elsewhere (errors): not expected on any shard
    expected = {k: v for k, v in expected.items() if k in source}
    return expected, source, errors


# ----------------------------------------------------------------------------------------------
# readers

def read_all(px, keys, nthreads=2):
    """SELECT name ... WHERE user_id = %s through pgmux for every key (nthreads clients);
    returns {key: name or None}, errors."""
    got, errors = {}, []
    lock = threading.Lock()

    def worker(part):
        try:
            with px.connect(DB) as c:
                for k in part:
                    row = c.execute("SELECT name FROM accounts WHERE user_id = %s",
                                    (k,)).fetchone()
                    with lock:
                        got[k] = row[0] if row else None
        except Exception as e:  # noqa: BLE001
            with lock:
                errors.append(repr(e))
    threads = [threading.Thread(target=worker, args=(keys[i::nthreads],))
               for i in range(nthreads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    return got, errors


def check_reads(px, shards, expected, label):
    keys = list(expected)
    t0 = time.monotonic()
    got, errors = read_all(px, keys)
    assert not errors, f"{label}: reads failed: {errors[:3]}"
    bad = [(k, expected[k], got.get(k)) for k in keys if got.get(k) != name_of(k)]
    assert not bad, (f"{label}: {len(bad)} of {len(keys)} keyed reads returned the wrong row "
                     f"(read on the wrong shard?), e.g. " +
                     ", ".join(f"user_id {k} (shard {s}) -> {v!r}" for k, s, v in bad[:5]))
    print(f"{label}: {len(keys)} keyed reads ok in {time.monotonic() - t0:.1f}s")


READ_FORMS = [
    ("simple, literal", lambda c, k: c.execute(
        f"SELECT inet_server_port(), name FROM accounts WHERE user_id = {k}").fetchone()),
    ("simple, quoted literal", lambda c, k: c.execute(
        f"SELECT inet_server_port(), name FROM accounts WHERE user_id = '{k}'").fetchone()),
    ("simple, qualified column", lambda c, k: c.execute(
        f"SELECT inet_server_port(), a.name FROM accounts a WHERE a.user_id = {k}").fetchone()),
    ("simple, IN (one value)", lambda c, k: c.execute(
        f"SELECT inet_server_port(), name FROM accounts WHERE user_id IN ({k})").fetchone()),
    ("simple, key = literal AND more", lambda c, k: c.execute(
        f"SELECT inet_server_port(), name FROM accounts WHERE name LIKE 'user%' "
        f"AND user_id = {k}").fetchone()),
    ("extended, text parameter", lambda c, k: c.execute(
        "SELECT inet_server_port(), name FROM accounts WHERE user_id = %s", (k,)).fetchone()),
    ("extended, binary parameter", lambda c, k: c.execute(
        "SELECT inet_server_port(), name FROM accounts WHERE user_id = %b", (k,)).fetchone()),
    ("extended, literal", lambda c, k: c.execute(
        f"SELECT inet_server_port(), name FROM accounts WHERE user_id = {k}",
        binary=True).fetchone()),
    ("extended, parameter is $2", lambda c, k: c.execute(
        "SELECT inet_server_port(), name FROM accounts WHERE name LIKE %s AND user_id = %s",
        ("user%", k)).fetchone()),
]


def check_read_ports(px, shards, expected, sample, label):
    """Each read form for the sample keys runs on the replica of the key's shard and finds
    the row; also psycopg server-side prepared statements (Parse+Sync, then Bind...)."""
    problems = []
    with px.connect(DB) as c, px.connect(DB, prepare_threshold=0) as cp:
        forms = READ_FORMS + [
            ("psycopg prepared statement (text parameter)", lambda _c, k: cp.execute(
                "SELECT inet_server_port(), name FROM accounts WHERE user_id = %s",
                (k,)).fetchone()),
            ("psycopg prepared statement (binary parameter)", lambda _c, k: cp.execute(
                "SELECT inet_server_port(), name FROM accounts WHERE user_id = %b",
                (k,)).fetchone())]
        for i, k in enumerate(sample):
            form, fn = forms[i % len(forms)]
            want = shards.replica(expected[k]).port
            try:
                row = fn(c, k)
            except psycopg.Error as e:
                problems.append(f"{form} user_id {k}: {e.sqlstate} {e}")
                continue
            if row is None or row[0] != want or row[1] != name_of(k):
                problems.append(f"{form} user_id {k} (shard {expected[k]}): got {row} "
                                f"({shards.where(row[0]) if row else 'no row'}), want port "
                                f"{want} (shard {expected[k]} replica)")
    assert not problems, f"{label}: {len(problems)} of {len(sample)} sampled reads wrong:\n  " \
        + "\n  ".join(problems[:12])
    print(f"{label}: {len(sample)} sampled reads ran on the right replica")


# ----------------------------------------------------------------------------------------------
# 1. placement

@timeout(60)
def test_shard_placement(env):
    """10,000 users inserted through pgmux (a third each with psql literals, psycopg text and
    binary parameters, asyncpg prepared statements) are each on exactly the shard that
    satisfies_hash_partition names, on the shard primaries."""
    px, shards = sharded_env(env, 2)
    rows = shard_backends(px)
    for b, r in rows.items():
        assert str(r["shard"]) == b.split("/")[1], f"SHOW BACKENDS {b}: shard {r['shard']}"

    keys = make_keys(10_000, seed=1)
    expected, source, errors = insert_three_ways(env, px, shards, keys)
    check_placement(shards, expected, source)
    assert not errors, f"{len(errors)} asyncpg INSERTs failed (the other rows are placed " \
                       f"right):\n  " + "\n  ".join(errors)
    rows = shard_backends(px)
    for s in range(2):
        assert int(rows[f"{DB}/{s}/primary"]["writes"]) > 0, \
            f"SHOW BACKENDS: no writes counted on shard {s}'s primary: {rows}"
    pools = {r["database"] for r in px.show("POOLS") if r["user"] == TEST_USER}
    want_pools = {f"{DB}/{s}/primary" for s in range(2)}
    assert want_pools <= pools, f"SHOW POOLS databases {sorted(pools)} lack {want_pools - pools}"


# ----------------------------------------------------------------------------------------------
# 2. reads

@timeout(60)
def test_shard_reads(env):
    """10,000 users put straight onto their shards: every one read back through pgmux by key
    (psycopg parameter) finds its row; sampled reads in every key form (literal, quoted,
    qualified, IN, text/binary parameter, $2, prepared statements) run on the key's shard's
    replica."""
    px, shards = sharded_env(env, 2)
    keys = make_keys(10_000, seed=2)
    expected = shards.placement(keys)
    shards.load(expected)
    check_reads(px, shards, expected, "2 shards")
    check_read_ports(px, shards, expected, keys[:360], "2 shards")
    rows = shard_backends(px)
    for s in range(2):
        assert int(rows[f"{DB}/{s}/replica0"]["reads"]) > 0, f"no reads on shard {s}: {rows}"


# ----------------------------------------------------------------------------------------------
# 3. transactions

def _tx_simple(c, shards, a, k0, k1, label):
    """psycopg without parameters: simple query protocol, explicit BEGIN/COMMIT/ROLLBACK."""
    sa = shards.placement([a])[a]
    c.execute("BEGIN")
    p = c.execute(f"{INSERT} ({a}, 'tx') RETURNING inet_server_port()").fetchone()[0]
    c.execute(f"UPDATE accounts SET name = 'tx updated' WHERE user_id = {a}")
    p2 = c.execute(f"SELECT inet_server_port() FROM accounts WHERE user_id = {a}").fetchone()[0]
    c.execute("COMMIT")
    want = shards.primary(sa).port
    assert (p, p2) == (want, want), \
        f"{label}: transaction for user_id {a} ran on {shards.where(p)} / {shards.where(p2)}, " \
        f"want shard {sa} primary"
    assert shards.count_direct(a) == [sa], f"{label}: user_id {a} is on {shards.count_direct(a)}"
    assert shards.rows(sa)[a] == "tx updated", f"{label}: UPDATE inside the transaction lost"

    # k0 first on its shard, then k1 on the other: refused, the transaction aborted
    s0, s1 = shards.placement([k0, k1])[k0], shards.placement([k0, k1])[k1]
    c.execute("BEGIN")
    c.execute(f"{INSERT} ({k0}, 'tx')")
    expect_error(lambda: c.execute(f"{INSERT} ({k1}, 'tx')"), "0A000",
                 f"{label}: INSERT for shard {s1} inside a transaction on shard {s0}")
    assert c.info.transaction_status == pq.TransactionStatus.INERROR, \
        f"{label}: after the cross-shard error the transaction status is " \
        f"{c.info.transaction_status.name}, want INERROR (aborted)"
    expect_error(lambda: c.execute(f"SELECT 1 FROM accounts WHERE user_id = {k0}"), "25P02",
                 f"{label}: a statement after the cross-shard error")
    c.execute("ROLLBACK")
    assert c.info.transaction_status == pq.TransactionStatus.IDLE
    # the connection works again, on either shard
    for k, s in ((k1, s1), (k0, s0)):
        row = c.execute(f"SELECT inet_server_port(), count(*) FROM accounts "
                        f"WHERE user_id = {k}").fetchone()
        assert row == (shards.replica(s).port, 0), \
            f"{label}: keyed SELECT for user_id {k} after ROLLBACK: {row}, want " \
            f"({shards.replica(s).port}, 0) (shard {s} replica, no row)"
    assert shards.count_direct(k0) == [], f"{label}: the rolled-back INSERT of {k0} committed"
    assert shards.count_direct(k1) == [], f"{label}: the refused INSERT of {k1} committed"


def _tx_extended(px, shards, a, k0, k1, label, begin="driver"):
    """Statements with %s parameters (extended protocol).  begin="driver": autocommit off, so
    psycopg itself sends BEGIN (libpq 15: Parse/Bind/Execute "BEGIN") and COMMIT/ROLLBACK;
    begin="simple": autocommit, BEGIN/COMMIT/ROLLBACK as simple queries."""
    sa = shards.placement([a])[a]
    with px.connect(DB, autocommit=(begin == "simple")) as c:
        def start():
            if begin == "simple":
                c.execute("BEGIN")

        def end(word):
            if begin == "simple":
                c.execute(word)
            elif word == "COMMIT":
                c.commit()
            else:
                c.rollback()
        start()
        p = c.execute(f"{INSERT} (%s, %s) RETURNING inet_server_port()", (a, "tx")).fetchone()[0]
        c.execute("UPDATE accounts SET name = %s WHERE user_id = %s", ("tx updated", a))
        end("COMMIT")
        assert p == shards.primary(sa).port, \
            f"{label}: INSERT for user_id {a} ran on {shards.where(p)}, want shard {sa} primary"
        assert shards.count_direct(a) == [sa]
        assert shards.rows(sa)[a] == "tx updated", f"{label}: UPDATE inside the transaction lost"

        s0, s1 = shards.placement([k0])[k0], shards.placement([k1])[k1]
        start()
        c.execute(f"{INSERT} (%s, %s)", (k0, "tx"))
        e = expect_error(lambda: c.execute(f"{INSERT} (%s, %s)", (k1, "tx")), ("22P02", "0A000"),
                         f"{label}: INSERT for shard {s1} inside a transaction on shard {s0}",
                         contains=("shard",))
        print(f"{label}: cross-shard error: {e.sqlstate} {e}")
        assert e.sqlstate == "22P02", f"{label}: cross-shard error in the extended protocol " \
                                      f"has SQLSTATE {e.sqlstate}; the spec says 22P02"
        assert c.info.transaction_status == pq.TransactionStatus.INERROR, \
            f"{label}: transaction status {c.info.transaction_status.name} after the error"
        expect_error(lambda: c.execute("SELECT 1 FROM accounts WHERE user_id = %s", (k0,)),
                     "25P02", f"{label}: a statement after the cross-shard error")
        end("ROLLBACK")
        for k, s in ((k1, s1), (k0, s0)):
            start()
            row = c.execute("SELECT inet_server_port(), count(*) FROM accounts "
                            "WHERE user_id = %s", (k,)).fetchone()
            end("COMMIT")
            # inside a transaction (BEGIN ... ): the shard's primary
            assert row == (shards.primary(s).port, 0), \
                f"{label}: keyed SELECT for user_id {k} after ROLLBACK: {row}, want " \
                f"({shards.primary(s).port}, 0) (shard {s} primary, no row)"
    assert shards.count_direct(k0) == [], f"{label}: the rolled-back INSERT of {k0} committed"
    assert shards.count_direct(k1) == [], f"{label}: the refused INSERT of {k1} committed"


def _tx_psql(env, px, shards, a, k0, k1):
    """psql -f: every statement its own Query message."""
    s0, s1, sa = (shards.placement([k])[k] for k in (k0, k1, a))
    script = f"""\\set VERBOSITY verbose
\\echo step1
BEGIN;
{INSERT} ({a}, 'psql tx') RETURNING inet_server_port();
UPDATE accounts SET name = 'psql tx updated' WHERE user_id = {a};
COMMIT;
\\echo step2
BEGIN;
{INSERT} ({k0}, 'psql tx') RETURNING inet_server_port();
{INSERT} ({k1}, 'psql tx');
SELECT 1 FROM accounts WHERE user_id = {k0};
ROLLBACK;
\\echo step3
SELECT inet_server_port(), count(*) FROM accounts WHERE user_id = {k0};
SELECT inet_server_port(), count(*) FROM accounts WHERE user_id = {k1};
"""
    path = env.dir / "tx.sql"
    path.write_text(script)
    r = run_psql(px, ["-A", "-t", "-v", "ON_ERROR_STOP=0", "-f", str(path)], check=False)
    out = [l for l in r.stdout.splitlines() if l.strip() and not l.startswith(("INSERT", "UPDATE"))]
    want = ["step1", "BEGIN", str(shards.primary(sa).port), "COMMIT", "step2", "BEGIN",
            str(shards.primary(s0).port), "ROLLBACK", "step3",
            f"{shards.replica(s0).port}|0", f"{shards.replica(s1).port}|0"]
    assert out == want, f"psql transaction script printed {out}, want {want}; stderr:\n{r.stderr}"
    errs = [l for l in r.stderr.splitlines() if l.startswith("psql:") and "ERROR" in l]
    assert len(errs) == 2 and "0A000" in errs[0] and "25P02" in errs[1], \
        f"psql errors {errs}: want 0A000 (cross-shard) then 25P02 (aborted transaction)"
    assert shards.count_direct(a) == [sa] and shards.rows(sa)[a] == "psql tx updated"
    assert shards.count_direct(k0) == [] and shards.count_direct(k1) == []


@timeout(60)
def test_shard_transactions(env):
    """BEGIN; INSERT a; UPDATE a; COMMIT commits on a's shard.  BEGIN; INSERT on one shard;
    INSERT on another -> error (0A000 simple, 22P02 extended), the transaction is aborted
    (25P02), after ROLLBACK the connection works and nothing was committed.  Both orders of
    shards, psycopg simple and extended protocol, and psql."""
    px, shards = sharded_env(env, 2)
    ks = fresh_keys(shards, 12, seed=3)
    failures = []

    def part(fn, *args):
        label = next((a for a in args if isinstance(a, str) and " " in a), fn.__name__)
        try:
            fn(*args)
        except (AssertionError, psycopg.Error) as e:
            failures.append(f"{label}: {type(e).__name__}: {e}")
    with px.connect(DB) as c:
        part(_tx_simple, c, shards, ks[1][0], ks[0][0], ks[1][1], "simple, shard 0 then 1")
    with px.connect(DB) as c:
        part(_tx_simple, c, shards, ks[0][1], ks[1][2], ks[0][2], "simple, shard 1 then 0")
    part(_tx_extended, px, shards, ks[1][3], ks[0][3], ks[1][4],
         "extended + simple BEGIN, shard 0 then 1", "simple")
    part(_tx_extended, px, shards, ks[0][4], ks[1][5], ks[0][5],
         "extended + simple BEGIN, shard 1 then 0", "simple")
    part(_tx_extended, px, shards, ks[1][8], ks[0][8], ks[1][9],
         "psycopg transaction (autocommit off), shard 0 then 1", "driver")
    part(_tx_extended, px, shards, ks[0][9], ks[1][10], ks[0][10],
         "psycopg transaction (autocommit off), shard 1 then 0", "driver")
    part(_tx_psql, env, px, shards, ks[1][6], ks[0][6], ks[1][7])

    def keyless_after_keyed(label):
        # Statements that name no table run on the transaction's shard; a keyless read of a
        # table would see one shard's rows only, so it is refused (the transaction aborts).
        a = ks[1][0]
        with px.connect(DB) as c:
            c.execute("BEGIN")
            c.execute(f"UPDATE accounts SET name = 'again' WHERE user_id = {a}")
            p = c.execute("SELECT inet_server_port()").fetchone()[0]
            expect_error(lambda: c.execute("SELECT count(*) FROM accounts WHERE name = 'again'"),
                         "0A000", "keyless read of a table inside a shard-1 transaction",
                         contains=("shard",))
            c.execute("ROLLBACK")
        assert p == shards.primary(1).port, \
            f"a no-table statement after a shard-1 statement in a transaction ran on " \
            f"{shards.where(p)}; want shard 1 primary"
    part(keyless_after_keyed, "keyless statements in a transaction bound to shard 1")
    assert not failures, f"{len(failures)} transaction checks failed:\n  " + \
        "\n  ".join(failures)


# ----------------------------------------------------------------------------------------------
# 4. hints and session keys

def _forwarded_settings(c, shards):
    """current_setting('pgmux.user_id' / 'pgmux.shard', true) on every shard's replica and
    primary through pgmux (pool_size 1: one server per backend)."""
    seen = {}
    for s in range(shards.n):
        v = c.execute(f"/* pgmux: shard={s} */ SELECT inet_server_port(), "
                      f"current_setting('pgmux.user_id', true), "
                      f"current_setting('pgmux.shard', true)").fetchone()
        seen[shards.where(v[0])] = v[1:]
        v = c.execute(f"/* pgmux: shard={s} */ SELECT inet_server_port(), "
                      f"current_setting('pgmux.user_id', true), "
                      f"current_setting('pgmux.shard', true) FROM accounts LIMIT 1 "
                      f"FOR UPDATE").fetchone()
        if v:
            seen[shards.where(v[0])] = v[1:]
    return seen


@timeout(60)
def test_shard_keys_hints_and_set(env):
    """/* pgmux: user_id=K */ and /* pgmux: shard=N */ route a keyless statement; SET
    pgmux.user_id / pgmux.shard route the session's keyless statements until RESET (then the
    no-key policy, error, applies again); pgmux answers those SETs itself."""
    px, shards = sharded_env(env, 2, pool_size=1)
    pl = shards.placement(make_keys(400, seed=4))
    keys = keys_on(pl, 0, 3) + keys_on(pl, 1, 3) + [k for k in pl if k < 0][:2]
    rep = [shards.replica(s).port for s in range(2)]
    # a row on every shard, for the FOR UPDATE probes below
    shards.load({k: pl[k] for k in keys})
    c = px.connect(DB)
    problems = []

    def expect(sql, want, what, ext=False):
        try:
            cur = c.execute(sql, binary=True) if ext else c.execute(sql)
            got = cur.fetchone()[0]
        except psycopg.Error as e:
            problems.append(f"{what}: {sql!r} failed: {e.sqlstate} {e}")
            return
        if got != want:
            problems.append(f"{what}: {sql!r} ran on {shards.where(got)}, want "
                            f"{shards.where(want)}")

    for k in keys:
        for ext in (False, True):
            expect(f"/* pgmux: user_id={k} */ {PORT}", rep[pl[k]], "user_id hint", ext)
    for s in range(2):
        for ext in (False, True):
            expect(f"/* pgmux: shard={s} */ {PORT}", rep[s], "shard hint", ext)
            expect(f"/* pgmux: shard={s} */ SELECT inet_server_port() FROM accounts "
                   f"LIMIT 1 FOR UPDATE", shards.primary(s).port, "shard hint, FOR UPDATE", ext)
    # the hint does not stick
    expect_error(lambda: c.execute(PORT), "0A000", "keyless SELECT after hints")
    assert not problems, "hints:\n  " + "\n  ".join(problems)

    for k in keys:
        cur = c.execute(f"SET pgmux.user_id = {k}")
        assert cur.statusmessage == "SET", f"SET pgmux.user_id: {cur.statusmessage}"
        for _ in range(2):
            expect(PORT, rep[pl[k]], f"after SET pgmux.user_id = {k}")
            expect(PORT, rep[pl[k]], f"after SET pgmux.user_id = {k} (extended)", ext=True)
        expect(f"{INSERT} ({k}, 'x') ON CONFLICT (user_id) DO UPDATE SET name = 'x' "
               f"RETURNING inet_server_port()", shards.primary(pl[k]).port,
               f"a write after SET pgmux.user_id = {k}")
        seen = _forwarded_settings(c, shards)
        bad = {w: v for w, v in seen.items() if any(x not in (None, "") for x in v)}
        assert not bad, f"SET pgmux.user_id = {k} reached servers: {bad}"
    c.execute(f"SET pgmux.user_id = '{keys[0]}'")
    expect(PORT, rep[pl[keys[0]]], "after SET pgmux.user_id = '<quoted>'")
    assert not problems, "SET pgmux.user_id:\n  " + "\n  ".join(problems)
    assert c.execute("RESET pgmux.user_id").statusmessage == "RESET"
    expect_error(lambda: c.execute(PORT), "0A000", "keyless SELECT after RESET pgmux.user_id")
    expect_error(lambda: c.execute(PORT, binary=True), "0A000",
                 "keyless SELECT (extended) after RESET pgmux.user_id")

    for s in (1, 0, 1):
        assert c.execute(f"SET pgmux.shard = {s}").statusmessage == "SET"
        for _ in range(2):
            expect(PORT, rep[s], f"after SET pgmux.shard = {s}")
            expect(PORT, rep[s], f"after SET pgmux.shard = {s} (extended)", ext=True)
        seen = _forwarded_settings(c, shards)
        bad = {w: v for w, v in seen.items() if any(x not in (None, "") for x in v)}
        assert not bad, f"SET pgmux.shard = {s} reached servers: {bad}"
    assert not problems, "SET pgmux.shard:\n  " + "\n  ".join(problems)
    assert c.execute("RESET pgmux.shard").statusmessage == "RESET"
    expect_error(lambda: c.execute(PORT), "0A000", "keyless SELECT after RESET pgmux.shard")
    expect_error(lambda: c.execute("SET pgmux.shard = 2"), ("22023", "0A000", "22P02"),
                 "SET pgmux.shard = 2 with 2 shards")
    # the setting is per client
    assert c.execute("SET pgmux.shard = 1").statusmessage == "SET"
    with px.connect(DB) as other:
        expect_error(lambda: other.execute(PORT), "0A000",
                     "SET pgmux.shard leaked to another client")
    # no server backend ever ran a SET pgmux.*
    for t in shards.topos:
        for srv in t.servers:
            rows = srv.sql("SELECT query FROM pg_stat_activity WHERE datname = %s AND "
                           "query ILIKE '%%set pgmux.%%'", (DB,))
            assert not rows, f"{srv.name} {srv.port} ran {rows}"
    c.close()


@timeout(60)
def test_shard_key_forms(env):
    """Statements whose keys point to several shards are refused with 0A000 and change nothing
    (multi-statement strings, multi-row INSERTs, IN lists, OR of parameters); several keys on
    one shard are fine; a key that is not an integer is refused; text that only looks like a
    key (in a string, a comment, another column) is no key."""
    px, shards = sharded_env(env, 2)
    ks = fresh_keys(shards, 6, seed=13)
    a0, b0, c0 = ks[0][:3]
    a1, b1, c1 = ks[1][:3]
    failures = []

    def refused(sql, params=None, what="", contains=()):
        try:
            with px.connect(DB) as c:
                e = expect_error(lambda: c.execute(sql, params), "0A000", what or sql,
                                 contains=contains)
                assert c.info.transaction_status == pq.TransactionStatus.IDLE, \
                    f"{what or sql}: {c.info.transaction_status.name} after the error"
                return e
        except AssertionError as e:
            failures.append(str(e))

    def runs_on(sql, want_port, params=None, what=""):
        try:
            with px.connect(DB) as c:
                cur = c.execute(sql, params)
                while cur.nextset():   # the last result of a multi-statement string
                    pass
                got = cur.fetchone()[0] if cur.description else None
            if want_port is not None:
                assert got == want_port, f"{what or sql}: ran on {shards.where(got)}, want " \
                                         f"{shards.where(want_port)}"
        except (AssertionError, psycopg.Error) as e:
            failures.append(f"{what or sql}: {type(e).__name__}: {e}")

    several = ("several shards",)
    refused(f"{INSERT} ({a0}, 'm'); {INSERT} ({a1}, 'm')",
            what="multi-statement string, keys on shards 0 and 1", contains=several)
    # (with literals, outside a transaction block, it is split: test_shard_split)
    refused(f"{INSERT} (%s, 'm'), (%s, 'm')", (c0, c1),
            what="multi-row INSERT over two shards, parameters", contains=several)
    refused(f"SELECT count(*) FROM accounts WHERE user_id IN ({a0}, {a1})",
            what="IN list over two shards", contains=several)
    refused("SELECT count(*) FROM accounts WHERE user_id = %s OR user_id = %s", (a0, a1),
            what="user_id = $1 OR user_id = $2 over two shards", contains=several)
    for k in (a0, a1, b0, b1, c0, c1):
        if shards.count_direct(k):
            failures.append(f"a refused statement inserted user_id {k}")
    # several keys, one shard
    runs_on(f"{INSERT} ({a0}, 'm'); UPDATE accounts SET name = 'm2' WHERE user_id = {a0}; "
            f"SELECT inet_server_port()", shards.primary(0).port,
            what="multi-statement string, one shard")
    runs_on(f"{INSERT} ({a1}, 'm'), ({b1}, 'm') RETURNING inet_server_port()",
            shards.primary(1).port, what="multi-row INSERT, one shard")
    if shards.count_direct(a0) != [0] or shards.count_direct(a1) != [1] or \
            shards.count_direct(b1) != [1]:
        failures.append(f"one-shard multi-key statements: {a0} on {shards.count_direct(a0)}, "
                        f"{a1} on {shards.count_direct(a1)}, {b1} on {shards.count_direct(b1)}")
    shards.wait_replay()
    runs_on(f"SELECT inet_server_port() FROM accounts WHERE user_id = {a1} OR user_id = {b1}",
            shards.replica(1).port, what="two keys of one shard (OR)")
    # not valid keys
    refused("SELECT count(*) FROM accounts WHERE user_id = 'abc'", what="user_id = 'abc'")
    refused("SELECT count(*) FROM accounts WHERE user_id = '99999999999999999999'",
            what="user_id = a literal past int8")
    refused("SELECT count(*) FROM accounts WHERE user_id = %s", ("abc",),
            what="user_id = $1 with 'abc' (text)")
    # no key at all (the no-key error, not a guess)
    # a key OR'ed with another condition may match rows anywhere: no key, not that shard
    refused(f"SELECT count(*) FROM accounts WHERE user_id = {a1} OR name = 'm'",
            what="user_id = k OR another column", contains=("no shard key",))
    for sql in ("SELECT count(*) FROM accounts WHERE name = 'user_id = 5'",
                "SELECT count(*) FROM accounts -- WHERE user_id = 5",
                "SELECT count(*) FROM accounts /* user_id = 5 */",
                "SELECT count(*) FROM accounts WHERE parent_user_id = 5",
                "SELECT count(*) FROM accounts WHERE user_id > 5",
                "SELECT count(*) FROM accounts WHERE user_id = 5 + 1"):
        refused(sql, what=f"no key: {sql}", contains=("no shard key",))
    refused("SELECT count(*) FROM accounts WHERE user_id = %s", (None,),
            what="user_id = $1 with NULL")
    assert not failures, f"{len(failures)} checks failed:\n  " + "\n  ".join(failures)


@timeout(60)
def test_shard_transaction_edges(env):
    """Transaction control on a sharded database: empty BEGIN/COMMIT (END, ROLLBACK, ABORT),
    a keyless statement refused inside a transaction block (PostgreSQL semantics: the block is
    aborted, nothing after it commits), BEGIN/COMMIT sent with the extended protocol (JDBC,
    psycopg with autocommit off), and SET pgmux.user_id before BEGIN."""
    px, shards = sharded_env(env, 2)
    ks = fresh_keys(shards, 4, seed=14)
    failures = []

    def part(what, fn):
        try:
            with px.connect(DB) as c:
                fn(c)
        except (AssertionError, psycopg.Error) as e:
            failures.append(f"{what}: {type(e).__name__}: {getattr(e, 'sqlstate', '') or ''} {e}")

    def empty(c):
        for end in ("COMMIT", "ROLLBACK", "END", "ABORT"):
            tag = c.execute("BEGIN").statusmessage
            st = c.info.transaction_status
            assert tag == "BEGIN" and st == pq.TransactionStatus.INTRANS, \
                f"BEGIN: tag {tag!r}, status {st.name}"
            tag = c.execute(end).statusmessage
            st = c.info.transaction_status
            want = {"END": "COMMIT", "ABORT": "ROLLBACK"}.get(end, end)   # PostgreSQL's tags
            assert tag == want and st == pq.TransactionStatus.IDLE, \
                f"BEGIN; {end}: tag {tag!r} (PostgreSQL: {want!r}), status {st.name}"
        k = ks[1][0]
        row = c.execute(f"SELECT inet_server_port(), count(*) FROM accounts WHERE user_id = {k}"
                        ).fetchone()
        assert row == (shards.replica(1).port, 0), f"keyed read afterwards: {row}"
    part("empty transactions (simple protocol)", empty)

    def keyless_in_tx(c):
        k = ks[0][0]
        c.execute("BEGIN")
        expect_error(lambda: c.execute("UPDATE accounts SET name = 'x'"), "0A000",
                     "keyless UPDATE inside BEGIN")
        status = c.info.transaction_status
        if status == pq.TransactionStatus.INERROR:
            expect_error(lambda: c.execute(f"{INSERT} ({k}, 'x')"), "25P02",
                         "a statement after the refused one")
        else:
            c.execute(f"{INSERT} ({k}, 'x')")
        c.execute("COMMIT")
        assert status == pq.TransactionStatus.INERROR and shards.count_direct(k) == [], \
            f"after a keyless statement was refused inside BEGIN the transaction is " \
            f"{status.name} (PostgreSQL: INERROR, aborted), and a later INSERT of {k} " \
            f"{'committed' if shards.count_direct(k) else 'did not commit'}"
    part("keyless statement refused inside a transaction block", keyless_in_tx)

    def extended_begin(c):
        k = ks[1][1]
        cur = c.execute("BEGIN", binary=True)   # Parse/Bind/Execute "BEGIN"
        assert cur.statusmessage == "BEGIN", cur.statusmessage
        p = c.execute(f"{INSERT} (%s, 'x') RETURNING inet_server_port()", (k,)).fetchone()[0]
        c.execute("COMMIT", binary=True)
        assert p == shards.primary(1).port and shards.count_direct(k) == [1], \
            f"INSERT of {k} ran on {shards.where(p)}; on shards {shards.count_direct(k)}"
    part("BEGIN / COMMIT with the extended protocol", extended_begin)

    def set_then_begin(c):
        k = ks[1][2]
        c.execute(f"SET pgmux.user_id = {k}")
        c.execute("BEGIN")
        p = c.execute("SELECT inet_server_port()").fetchone()[0]
        c.execute(f"{INSERT} ({k}, 'x')")
        c.execute("COMMIT")
        c.execute("RESET pgmux.user_id")
        assert p == shards.primary(1).port and shards.count_direct(k) == [1], \
            f"after SET pgmux.user_id = {k}, BEGIN: ran on {shards.where(p)}, row on " \
            f"{shards.count_direct(k)}"
    part("SET pgmux.user_id, then a transaction", set_then_begin)
    assert not failures, f"{len(failures)} checks failed:\n  " + "\n  ".join(failures)


# ----------------------------------------------------------------------------------------------
# 5-7. no_shard_key

@timeout(60)
def test_no_shard_key_error(env):
    """no_shard_key = error: a keyless statement gets 0A000 with a message saying how to give a
    key, in the simple and the extended protocol; the connection works afterwards."""
    px, shards = sharded_env(env, 2)
    pl = shards.placement(make_keys(200, seed=5))
    shards.load(pl)
    k = next(iter(pl))
    with px.connect(DB) as c:
        for what, fn in [
            ("simple", lambda: c.execute("SELECT count(*) FROM accounts")),
            ("extended", lambda: c.execute("SELECT count(*) FROM accounts", binary=True)),
            ("extended, non-key parameter",
             lambda: c.execute("SELECT count(*) FROM accounts WHERE name = %s", ("x",))),
            ("simple write", lambda: c.execute("UPDATE accounts SET name = name")),
            ("extended write", lambda: c.execute("DELETE FROM accounts WHERE name = %s", ("x",))),
        ]:
            e = expect_error(fn, "0A000", f"no key ({what})", contains=("user_id",))
            assert "pgmux.user_id" in str(e) or "WHERE user_id" in str(e), \
                f"no key ({what}): the message does not say how to supply a key: {e}"
            assert c.info.transaction_status == pq.TransactionStatus.IDLE, \
                f"after the no-key error ({what}): {c.info.transaction_status.name}"
            row = c.execute("SELECT inet_server_port(), name FROM accounts WHERE user_id = %s",
                            (k,)).fetchone()
            assert row == (shards.replica(pl[k]).port, name_of(k)), \
                f"keyed read after the no-key error ({what}): {row}"
            row = c.execute(f"SELECT name FROM accounts WHERE user_id = {k}").fetchone()
            assert row == (name_of(k),), f"simple keyed read after the error ({what}): {row}"
        print(f"no-key error message: {e}")
    r = run_psql(px, ["-A", "-t", "-c", "SELECT count(*) FROM accounts"], check=False)
    assert r.returncode != 0 and "user_id" in r.stderr, f"psql: {r.returncode} {r.stderr}"



@timeout(60)
def test_no_shard_key_shard0(env):
    """no_shard_key = shard0: keyless reads run on shard 0's replica, keyless writes on its
    primary; keyed statements still go to their shard."""
    px, shards = sharded_env(env, 2, no_shard_key="shard0")
    pl = shards.placement(make_keys(300, seed=6))
    shards.load(pl)
    n0 = sum(1 for s in pl.values() if s == 0)
    k1 = keys_on(pl, 1, 1)[0]
    with px.connect(DB) as c:
        for what, q in (("simple", lambda s: c.execute(s)),
                        ("extended", lambda s: c.execute(s, binary=True))):
            row = q("SELECT inet_server_port(), count(*) FROM accounts").fetchone()
            assert row == (shards.replica(0).port, n0), \
                f"keyless SELECT count(*) ({what}): {row} ({shards.where(row[0])}), want " \
                f"({shards.replica(0).port}, {n0}) from shard 0's replica"
            p = q("WITH u AS (UPDATE accounts SET name = name WHERE name = 'nobody' RETURNING 1) "
                  "SELECT inet_server_port()").fetchone()[0]
            assert p == shards.primary(0).port, \
                f"keyless write ({what}) ran on {shards.where(p)}, want shard 0 primary"
            row = q(f"SELECT inet_server_port(), name FROM accounts "
                    f"WHERE user_id = {k1}").fetchone()
            assert row == (shards.replica(1).port, name_of(k1)), \
                f"keyed read for shard 1 ({what}): {row}"
    out = run_psql(px, ["-A", "-t", "-c", "SELECT count(*) FROM accounts"]).stdout.strip()
    assert out == str(n0), f"psql keyless count: {out}, want {n0} (shard 0)"


def _fanout_expect(shards, pl):
    return [k for s in range(shards.n) for k in sorted(k for k, ks in pl.items() if ks == s)]


def check_fanout(px, shards, pl, label):
    """no_shard_key = all checks shared by the 2- and 4-shard tests; every check runs, the
    failures are reported together."""
    want = _fanout_expect(shards, pl)
    want_counts = [sum(1 for v in pl.values() if v == s) for s in range(shards.n)]
    rports = [shards.replica(s).port for s in range(shards.n)]
    # A read whose shards' rows, concatenated, are exactly the answer fans out as it is, so rows
    # are compared as a set, and the order is each shard's rows in shard order.
    sql = "SELECT user_id FROM accounts"
    failures = []

    def check(what, fn):
        try:
            with px.connect(DB) as c:
                fn(c)
        except (AssertionError, psycopg.Error) as e:
            failures.append(f"{what}: {type(e).__name__}: {e}")

    def rows_check(what, run):
        def fn(c):
            cur = run(c)
            got = sorted(r[0] for r in cur.fetchall())
            first_diff = next((i for i, (a, b) in enumerate(zip(got, sorted(want))) if a != b),
                              min(len(got), len(want)))
            assert got == sorted(want), f"{len(got)} rows, want {len(want)} (every shard's rows); " \
                                        f"first difference at row {first_diff}"
            assert cur.rowcount == len(want) and cur.statusmessage == f"SELECT {len(want)}", \
                f"CommandComplete {cur.statusmessage!r} (rowcount {cur.rowcount}), want " \
                f"'SELECT {len(want)}'"
        check(what, fn)

    rows_check("simple", lambda c: c.execute(sql))
    rows_check("extended", lambda c: c.execute(sql, binary=True))
    rows_check("extended, non-key parameter", lambda c: c.execute(
        "SELECT user_id FROM accounts WHERE name LIKE %s", ("user%",)))

    # Reads whose per-shard answers need merging: merged by pgmux, in the simple and the
    # extended protocol (test_shard_merge.py compares many with an unsharded database); refused
    # where pgmux cannot merge (a function), never concatenated.
    merged = (("SELECT count(*)", "SELECT count(*) FROM accounts", [(len(want),)]),
              ("ORDER BY", "SELECT user_id FROM accounts ORDER BY user_id",
               [(k,) for k in sorted(want)]),
              ("LIMIT", "SELECT user_id FROM accounts LIMIT 3", None))
    for what, q, rows in merged:
        for ext in (False, True):
            def answered(c, q=q, rows=rows, ext=ext):
                got = c.execute(q, binary=True).fetchall() if ext else c.execute(q).fetchall()
                if rows is None:
                    assert len(got) == 3 and {r[0] for r in got} <= set(want), f"{got}"
                else:
                    assert got == rows, f"{len(got)} rows, want {len(rows)}"
            check(f"{what} without a key is merged ({'extended' if ext else 'simple'})",
                  answered)
    for ext in (False, True):
        check(f"SELECT inet_server_port() without a key is refused "
              f"({'extended' if ext else 'simple'})",
              lambda c, ext=ext: expect_error(
                  lambda: c.execute(PORT, binary=True) if ext else c.execute(PORT), "0A000", PORT))
    assert want_counts and rports

    def empty(c):
        cur = c.execute("SELECT user_id FROM accounts WHERE name = 'nobody'")
        assert cur.fetchall() == [] and cur.rowcount == 0 and \
            cur.statusmessage == "SELECT 0", f"{cur.statusmessage!r}"
        assert [d.name for d in cur.description] == ["user_id"], cur.description
    check("a fan-out read with no rows anywhere", empty)

    def keyed(c):
        k = want[-1]
        rows = c.execute(f"SELECT inet_server_port() FROM accounts WHERE user_id = {k}").fetchall()
        assert rows == [(shards.replica(pl[k]).port,)], f"{rows}"
        rows = c.execute("SELECT inet_server_port() FROM accounts WHERE user_id = %s",
                         (k,)).fetchall()
        assert rows == [(shards.replica(pl[k]).port,)], f"(extended) {rows}"
    check("keyed reads go to one shard", keyed)

    def writes(c):
        e = expect_error(lambda: c.execute("UPDATE accounts SET name = name"), "0A000",
                         "keyless UPDATE")
        expect_error(lambda: c.execute("DELETE FROM accounts WHERE name = %s", ("x",)), "0A000",
                     "keyless DELETE (extended)")
        print(f"{label}: keyless write refused: {e}")
        got = c.execute(f"SELECT count(*) FROM accounts WHERE user_id = {want[0]}").fetchone()
        assert got == (1,), f"keyed read after the refused writes: {got}"
    check("keyless writes refused", writes)

    def after_error(c):
        # a fan-out read right after an error, and several in a row on one connection
        with contextlib.suppress(psycopg.Error):
            c.execute("UPDATE accounts SET name = name")
        for _ in range(3):
            got = sorted(r[0] for r in c.execute(sql).fetchall())
            assert got == sorted(want), f"{len(got)} rows, want {len(want)}"
    check("fan-out reads repeated on one connection", after_error)

    def psql(_c):
        r = run_psql(px, ["-A", "-c", sql], check=False)
        assert r.returncode == 0, f"psql failed: {r.stderr.strip()}"
        lines = r.stdout.strip().splitlines()
        assert lines and lines[-1] == f"({len(want)} rows)", f"psql footer {lines[-1:]!r}"
        assert lines[0] == "user_id" and sorted(int(x) for x in lines[1:-1]) == sorted(want), \
            "psql fan-out rows differ"
    check("psql", psql)
    assert not failures, f"{label}, no_shard_key = all: {len(failures)} checks failed:\n  " + \
        "\n  ".join(failures)
    print(f"{label}: fan-out of {len(want)} rows ok")


@timeout(60)
def test_no_shard_key_all(env):
    """no_shard_key = all: a keyless read runs on every shard: one RowDescription, every
    shard's rows in shard order, CommandComplete with the total; simple and extended protocol
    and psql; a keyless write is still refused."""
    px, shards = sharded_env(env, 2, no_shard_key="all")
    pl = shards.placement(make_keys(500, seed=7))
    shards.load(pl)
    check_fanout(px, shards, pl, "2 shards")


@timeout(60)
def test_no_shard_key_all_prepared(env):
    """no_shard_key = all with named prepared statements: psycopg prepare_threshold=0 and
    asyncpg (Parse+Describe+Flush first, then Bind+Execute+Sync)."""
    px, shards = sharded_env(env, 2, no_shard_key="all")
    pl = shards.placement(make_keys(200, seed=8))
    shards.load(pl)
    want = _fanout_expect(shards, pl)
    want = sorted(want)
    sql = "SELECT user_id FROM accounts WHERE name LIKE %s"
    with px.connect(DB, prepare_threshold=0) as c:
        for i in range(3):
            try:
                cur = c.execute(sql, ("user%",))
                got = sorted(r[0] for r in cur.fetchall())
            except psycopg.Error as e:
                raise AssertionError(f"psycopg prepared fan-out (run {i}): {e.sqlstate} {e}") \
                    from None
            assert got == want and cur.rowcount == len(want), \
                f"psycopg prepared fan-out (run {i}): {len(got)} rows, rowcount {cur.rowcount}, " \
                f"want {len(want)}"

    async def go():
        conn = await px.aconnect(DB)
        try:
            for i in range(3):
                rows = await conn.fetch("SELECT user_id FROM accounts WHERE name LIKE $1",
                                        "user%")
                got = sorted(r[0] for r in rows)
                assert got == want, \
                    f"asyncpg fan-out (run {i}): {len(got)} rows, want {len(want)}"
        finally:
            await conn.close()
    try:
        run_async(go(), timeout=30)
    except AssertionError:
        raise
    except Exception as e:  # noqa: BLE001
        raise AssertionError(f"asyncpg fan-out failed: {type(e).__name__}: {e}") from None


# ----------------------------------------------------------------------------------------------
# asyncpg

@timeout(60)
def test_shard_asyncpg(env):
    """asyncpg (named prepared statements: Parse+Describe+Flush, then Bind+Execute+Sync with
    binary int8 parameters): keyed INSERTs land on their shard, keyed reads run on the shard's
    replica, a keyless read gets 0A000 and the connection goes on, a transaction
    (conn.transaction(): simple BEGIN) stays on its shard and a cross-shard statement in it is
    refused."""
    import asyncpg
    px, shards = sharded_env(env, 2)
    ks = fresh_keys(shards, 6, seed=12)
    failures = []

    async def step(what, coro):
        try:
            await coro
        except Exception as e:  # noqa: BLE001
            failures.append(f"{what}: {type(e).__name__}: {getattr(e, 'sqlstate', '')} {e}")

    async def go():
        conn = await px.aconnect(DB)
        try:
            async def insert():
                for s in range(2):
                    k = ks[s][0]
                    p = await conn.fetchval(f"{INSERT} ($1, $2) RETURNING inet_server_port()",
                                            k, name_of(k))
                    assert p == shards.primary(s).port, f"INSERT of {k} ran on {shards.where(p)}"
                    assert shards.count_direct(k) == [s], f"{k} on {shards.count_direct(k)}"
            await step("keyed INSERT ($1 binary int8)", insert())

            async def read():
                shards.wait_replay()
                for s in range(2):
                    k = ks[s][0]
                    row = await conn.fetchrow("SELECT inet_server_port() AS p, name FROM "
                                              "accounts WHERE user_id = $1", k)
                    want = (shards.replica(s).port, name_of(k))
                    assert row is not None and tuple(row) == want, \
                        f"read of {k}: {tuple(row) if row else None}, want shard {s} replica"
            await step("keyed read ($1 binary int8)", read())

            async def keyless():
                try:
                    v = await conn.fetchval("SELECT count(*) FROM accounts")
                    raise AssertionError(f"keyless SELECT returned {v}")
                except asyncpg.PostgresError as e:
                    assert e.sqlstate == "0A000", f"keyless SELECT: {e.sqlstate} {e}"
                v = await conn.fetchval("/* pgmux: shard=1 */ SELECT inet_server_port()")
                assert v == shards.replica(1).port, f"hinted read after the error: {v}"
            await step("keyless read refused, connection goes on", keyless())

            async def tx():
                k = ks[1][1]
                async with conn.transaction():
                    await conn.execute(f"{INSERT} ($1, $2)", k, "tx")
                    await conn.execute("UPDATE accounts SET name = $1 WHERE user_id = $2",
                                       name_of(k), k)
                assert shards.count_direct(k) == [1], f"{k} on {shards.count_direct(k)}"
                a, b = ks[0][2], ks[1][2]
                try:
                    async with conn.transaction():
                        await conn.execute(f"{INSERT} ($1, $2)", a, "tx")
                        await conn.execute(f"{INSERT} ($1, $2)", b, "tx")
                    raise AssertionError("a cross-shard transaction committed")
                except asyncpg.PostgresError as e:
                    assert e.sqlstate in ("22P02", "0A000") and "shard" in str(e), \
                        f"cross-shard INSERT: {e.sqlstate} {e}"
                assert shards.count_direct(a) == [] and shards.count_direct(b) == [], \
                    "the cross-shard transaction left rows"
                shards.wait_replay()   # the read goes to the shard's replica
                v = await conn.fetchval("SELECT name FROM accounts WHERE user_id = $1", k)
                assert v == name_of(k), f"keyed read after the rollback: {v!r}"
            await step("transactions", tx())
        finally:
            await conn.close()
    run_async(go(), timeout=40)
    assert not failures, f"asyncpg: {len(failures)} checks failed:\n  " + "\n  ".join(failures)


# ----------------------------------------------------------------------------------------------
# 8. four shards

@timeout(90)
def test_four_shards(env):
    """4 shards: 2,000 users inserted three ways land on their shards, read back by key from
    the right replica; keyless statements: error (one pgmux) and fan-out (another)."""
    px, shards, (px_all,) = sharded_env(env, 4, extra_pgmux=[{"no_shard_key": "all"}])
    keys = make_keys(2_000, seed=9)
    expected, source, errors = insert_three_ways(env, px, shards, keys)
    check_placement(shards, expected, source)
    assert all(sum(1 for v in expected.values() if v == s) > 300 for s in range(4))
    shards.wait_replay()
    check_reads(px, shards, expected, "4 shards")
    check_read_ports(px, shards, expected, keys[:180], "4 shards")
    for s in range(4):
        with px.connect(DB) as c:
            assert c.execute(f"/* pgmux: shard={s} */ {PORT}").fetchone()[0] == \
                shards.replica(s).port
    with px.connect(DB) as c:
        expect_error(lambda: c.execute("SELECT count(*) FROM accounts"), "0A000",
                     "4 shards: keyless SELECT", contains=("user_id",))
        expect_error(lambda: c.execute("SELECT count(*) FROM accounts", binary=True), "0A000",
                     "4 shards: keyless SELECT (extended)", contains=("user_id",))
        k = keys[0]
        assert c.execute("SELECT name FROM accounts WHERE user_id = %s", (k,)).fetchone() == \
            (name_of(k),)
    check_fanout(px_all, shards, expected, "4 shards")
    assert not errors, f"{len(errors)} asyncpg INSERTs failed (the other rows are placed " \
                       f"right):\n  " + "\n  ".join(errors)
