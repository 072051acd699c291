"""pgmux-reshard: doubling a sharded database under live traffic (2 -> 4, then 4 -> 8).

Two private PostgreSQL clusters (no replicas) host every shard database: the tool must work
within one cluster (where CREATE SUBSCRIPTION must not create its slot) and across two.  Two
writer threads insert and update rows for random user_ids (each its own) through pgmux for the
whole procedure, keeping a ledger of what committed.  Afterwards every row sits on the shard
that PostgreSQL's satisfies_hash_partition names for the new modulus, the rows equal the ledger
(nothing lost, nothing doubled, no stale value), the writers saw no error, and no replication
object is left.  Also: --dry-run changes nothing; a run killed during the sync, a cutover that
times out or whose RELOAD fails, and a run stopped after the switch all finish when started
again; a finished reshard refuses to run a second time; a RELOAD under a PAUSE reroutes queued
and paused clients; text keys; the configurations and schemas the tool refuses.  With
no_shard_key = all, reads without a key fanned out over every shard count each row once for
the whole move (the row-level security policy on the old shards, test_reshard_keyless_reads)."""

import os
import random
import re
import signal
import subprocess
import threading
import time

import psycopg

from pgharness import ROOT, timeout, wait_for
from test_routing import need_routing

TOOL = os.environ.get("PGMUX_RESHARD_BIN") or str(ROOT / "pgmux-reshard")
DB = "users"
# room for the slots, walsenders and sync workers of four subscriptions per cluster
PG_EXTRA = {"max_worker_processes": 16, "max_replication_slots": 16, "max_wal_senders": 16,
            "max_logical_replication_workers": 12, "max_sync_workers_per_subscription": 2}
SCHEMA = """
CREATE TABLE accounts (user_id bigint NOT NULL, id bigint NOT NULL, val bigint NOT NULL,
                       PRIMARY KEY (user_id, id));
GRANT ALL ON accounts TO app;
CREATE TABLE accounts_notes (user_id bigint NOT NULL, id bigint NOT NULL, note text,
                             PRIMARY KEY (user_id, id),
                             FOREIGN KEY (user_id, id) REFERENCES accounts (user_id, id));
CREATE TABLE settings (name text PRIMARY KEY, value text);
CREATE SEQUENCE evt_seq;
"""


class Layout:
    """Shard s of the final count lives in database rs_<s> of cluster hosts[s]."""

    def __init__(self, env, clusters, hosts):
        self.env = env
        self.clusters = clusters
        self.hosts = hosts
        self.names = [f"rs_{s}" for s in range(len(hosts))]
        for s, h in enumerate(hosts):
            clusters[h].primary.create_database(self.names[s])

    def server(self, s):
        return self.clusters[self.hosts[s]].primary

    def section(self, n, keyless=False, user="postgres"):
        """keyless: no_shard_key = all (reads without a key fan out over every shard)."""
        sec = {"shard_key": "user_id", "shards": n, "pool_mode": "transaction", "pool_size": 8}
        if keyless:
            sec["no_shard_key"] = "all"
        for s in range(n):
            sec[f"shard.{s}.primary"] = self.env.backend_entry(
                self.server(s), self.names[s]).replace("user=postgres", f"user={user}")
        return sec

    def connect(self, s):
        return self.server(s).connect(self.names[s])

    def placement(self, keys, modulus):
        """{key: shard} by PostgreSQL's own hash partitioning with this modulus."""
        with self.server(0).connect() as c:
            c.execute("CREATE TABLE IF NOT EXISTS reshard_hash_parent (k int8) "
                      "PARTITION BY HASH (k)")
            rows = c.execute(
                "SELECT k, r FROM unnest(%s::int8[]) k, generate_series(0, %s::int - 1) r "
                "WHERE satisfies_hash_partition('reshard_hash_parent'::regclass, %s::int, r, k)",
                (list(keys), modulus, modulus)).fetchall()
        return dict(rows)

    def rows(self, n):
        """[(shard, user_id, id, val)] over shards 0..n-1, read directly."""
        out = []
        for s in range(n):
            with self.connect(s) as c:
                out += [(s,) + r for r in c.execute("SELECT user_id, id, val FROM accounts")]
        return out


def setup(env, hosts, n_old, users, rows_per_user, app=False):
    """app: pgmux logs in to the shards as the ordinary role app, which owns accounts, and
    reads without a key fan out over every shard (no_shard_key = all)."""
    need_routing()
    clusters = env.shard_topologies(2, n_replicas=0, extra_conf=PG_EXTRA)
    lay = Layout(env, clusters, hosts)
    for s in range(n_old):
        with lay.connect(s) as c:
            c.execute(SCHEMA)
            if app:
                # accounts: no RLS, owned by app (FORCE must filter it); accounts_notes: RLS of
                # its own, not forced (the tool's policy must be ANDed, the flags restored)
                c.execute("ALTER TABLE accounts OWNER TO app; "
                          "ALTER TABLE accounts_notes ENABLE ROW LEVEL SECURITY; "
                          "CREATE POLICY notes_all ON accounts_notes USING (true)")
            c.execute("SELECT setval('evt_seq', %s)", (1000 + s,))
    keys = list(range(1, users + 1))
    place = lay.placement(keys, n_old)
    ledger = {}
    for s in range(n_old):
        with lay.connect(s) as c:
            with c.cursor().copy("COPY accounts (user_id, id, val) FROM STDIN") as cp:
                for k in keys:
                    if place[k] == s:
                        for i in range(rows_per_user):
                            cp.write_row((k, i, k * 10 + i))
                            ledger[(k, i)] = k * 10 + i
            # moved with their accounts; the cleanup must delete them first (foreign key)
            c.execute("INSERT INTO accounts_notes SELECT user_id, id, 'note' FROM accounts "
                      "WHERE id = 0")
    user = "app" if app else "postgres"
    px = env.pgmux({}, {"pool_mode": "transaction", "max_client_conn": 200},
                   sections={DB: lay.section(n_old, keyless=app, user=user)})
    new_ini = px.dir / "new.ini"
    new_ini.write_text(px.render_config(sections={
        DB: lay.section(len(hosts), keyless=app, user=user)}))
    return lay, px, new_ini, ledger, keys


class Writer(threading.Thread):
    """Inserts and updates rows for random user_ids through pgmux until stopped; the ledger
    holds exactly what committed, errors every exception seen.  Writers own disjoint user_ids
    (keys), so that the ledger's order of updates to a row is their commit order."""

    def __init__(self, px, ledger, keys, lock, base_id):
        super().__init__(daemon=True)
        self.px, self.ledger, self.keys, self.lock = px, ledger, keys, lock
        own = set(keys)
        self.mine = [key for key in ledger if key[0] in own]
        self.next_id = base_id
        self.stop_ev = threading.Event()
        self.errors, self.inserts, self.updates = [], 0, 0
        self.rng = random.Random(base_id)

    def run(self):
        try:
            conn = psycopg.connect(self.px.dsn(DB), autocommit=True, prepare_threshold=None)
        except Exception as e:  # noqa: BLE001
            self.errors.append(f"connect: {e!r}")
            return
        with conn:
            while not self.stop_ev.is_set():
                k = self.rng.choice(self.keys)
                try:
                    if self.rng.random() < 0.5 or not self.inserts:
                        i = self.next_id
                        self.next_id += 1
                        conn.execute("INSERT INTO accounts (user_id, id, val) VALUES (%s, %s, %s)",
                                     (k, i, i))
                        with self.lock:
                            self.ledger[(k, i)] = i
                        self.mine.append((k, i))
                        self.inserts += 1
                    else:
                        k, i = self.rng.choice(self.mine)
                        v = self.rng.randrange(1 << 40)
                        cur = conn.execute("UPDATE accounts SET val = %s WHERE user_id = %s "
                                           "AND id = %s", (v, k, i))
                        if cur.rowcount != 1:
                            self.errors.append(f"update of ({k}, {i}) touched {cur.rowcount} rows")
                        else:
                            with self.lock:
                                self.ledger[(k, i)] = v
                        self.updates += 1
                except Exception as e:  # noqa: BLE001
                    self.errors.append(f"{type(e).__name__}: {e}")
                    if len(self.errors) > 20:
                        return


def tool(px, new_ini, state, *extra, check=True, popen=False):
    cmd = [TOOL, "--database", DB, "--config", str(px.ini), "--new-config", str(new_ini),
           "--console", f"host=127.0.0.1 port={px.port} dbname=pgbouncer user=postgres",
           "--state", str(state), "--batch-rows", "500", "--batch-sleep-ms", "1"] + list(extra)
    if popen:
        return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                       timeout=240)
    print(r.stdout)
    if check:
        assert r.returncode == 0, f"pgmux-reshard failed ({r.returncode}):\n{r.stdout}"
    return r


def check_result(lay, px, ledger, n, writers):
    for w in writers:
        assert not w.errors, f"the writer saw errors: {w.errors[:5]}"
    rows = lay.rows(n)
    keys = {r[1] for r in rows}
    place = lay.placement(keys, n)
    wrong = [r for r in rows if place[r[1]] != r[0]]
    assert not wrong, f"{len(wrong)} rows on the wrong shard, e.g. {wrong[:5]}"
    seen = {}
    doubled = []
    for s, k, i, v in rows:
        if (k, i) in seen:
            doubled.append((k, i))
        seen[(k, i)] = v
    lost = [key for key in ledger if key not in seen]
    extra = [key for key in seen if key not in ledger]
    changed = [key for key in ledger if key in seen and seen[key] != ledger[key]]
    assert not doubled and not lost and not extra and not changed, \
        f"doubled {doubled[:5]}, lost {lost[:5]}, unknown {extra[:5]}, stale {changed[:5]} " \
        f"({len(doubled)}, {len(lost)}, {len(extra)}, {len(changed)})"
    notes = []
    for s in range(n):
        with lay.connect(s) as c:
            notes += [(s, k) for (k,) in c.execute("SELECT user_id FROM accounts_notes")]
    assert all(place[k] == s for s, k in notes), "notes on the wrong shard"
    assert sorted(k for _, k in notes) == sorted({k for k, i in ledger if i == 0}), \
        "notes lost or doubled"
    shards = [r for r in px.show("SHARDS") if r["database"] == DB]
    assert len(shards) == n, shards
    for s in range(n):
        with lay.connect(s) as c:
            left = c.execute(
                "SELECT (SELECT count(*) FROM pg_publication) + (SELECT count(*) FROM "
                "pg_replication_slots) + (SELECT count(*) FROM pg_subscription) + "
                "(SELECT count(*) FROM pg_namespace WHERE nspname = 'pgmux_reshard')"
            ).fetchone()[0]
            assert left == 0, f"shard {s} keeps replication objects or the helper schema"
            assert c.execute("SELECT last_value FROM evt_seq").fetchone()[0] >= 1000
    return len(rows)


def run_move(env, hosts, n_old, users, rows_per_user, kill_during_sync=False):
    lay, px, new_ini, ledger, keys = setup(env, hosts, n_old, users, rows_per_user)
    n = len(hosts)
    state = env.dir / "reshard.state"
    preloaded = len(ledger)
    before = lay.placement(keys, n_old)
    after = lay.placement(keys, n)
    moving = sum(rows_per_user for k in keys if after[k] != before[k])

    # dry run: prints the plan, changes nothing
    r = tool(px, new_ini, state, "--dry-run")
    assert "CREATE PUBLICATION pgmux_reshard" in r.stdout and "PAUSE users" in r.stdout
    assert "password" not in r.stdout
    assert not state.exists()
    for s in range(n):
        with lay.connect(s) as c:
            assert c.execute("SELECT count(*) FROM pg_publication").fetchone()[0] == 0
            assert c.execute("SELECT to_regclass('accounts')").fetchone()[0] is None or s < n_old

    lock = threading.Lock()
    writers = [Writer(px, ledger, keys[w::2], lock, 10_000_000 * (w + 1)) for w in range(2)]
    for w in writers:
        w.start()
    wait_for(lambda: all(w.inserts + w.updates > 20 for w in writers), 30, 0.05,
             "the writers to get going")
    t0 = time.monotonic()
    if kill_during_sync:
        p = tool(px, new_ini, state, popen=True)
        out = []
        for line in p.stdout:
            out.append(line)
            if line.startswith("step sync"):
                p.send_signal(signal.SIGKILL)
                break
        p.wait(60)
        print("".join(out))
        assert p.returncode == -signal.SIGKILL, "".join(out)
        assert "done=subscription" in state.read_text()
        # one run at a time: the lock is free again once the killed run is gone
    r = tool(px, new_ini, state)
    secs = time.monotonic() - t0
    for w in writers:
        w.stop_ev.set()
    for w in writers:
        w.join(30)
    m = re.search(r"^pause: ([0-9.]+) ms", r.stdout, re.M)
    assert m, r.stdout
    pause_ms = float(m.group(1))
    total = check_result(lay, px, ledger, n, writers)
    again = tool(px, new_ini, state, check=False)
    assert again.returncode == 1 and "refusing to run it again" in again.stdout, again.stdout
    ins = sum(w.inserts for w in writers)
    upd = sum(w.updates for w in writers)
    print(f"reshard {n_old} -> {n}: {preloaded} rows preloaded, {moving} of them moved; "
          f"{ins} inserts and {upd} updates during the move ({secs:.1f} s); pause {pause_ms:.1f} ms; "
          f"{total} rows after, 0 lost, 0 doubled, 0 misplaced, 0 client errors")
    return pause_ms


@timeout(600)
def test_reshard_2_to_4(env):
    # shards 0 and 3 on one cluster, 1 and 2 on the other: both moves cross clusters
    # PGMUX_RESHARD_SCALE=10 moves ten times as many rows (a measurement, not for CI)
    scale = int(os.environ.get("PGMUX_RESHARD_SCALE", "1"))
    run_move(env, hosts=[0, 1, 1, 0], n_old=2, users=4000 * scale, rows_per_user=5)


@timeout(200)
def test_reshard_4_to_8_restarted(env):
    # every new shard in its source's cluster: the slot must exist before CREATE SUBSCRIPTION
    run_move(env, hosts=[0, 1, 0, 1, 0, 1, 0, 1], n_old=4, users=1500, rows_per_user=2,
             kill_during_sync=True)


@timeout(60)
def test_reshard_refusals(env):
    """Configurations the tool must refuse before it touches anything."""
    need_routing()
    clusters = env.shard_topologies(2, n_replicas=0, extra_conf=PG_EXTRA)
    lay = Layout(env, clusters, [0, 1, 0])
    for s in range(2):
        with lay.connect(s) as c:
            c.execute("CREATE TABLE accounts (user_id bigint, id bigint, PRIMARY KEY (id))")
    px = env.pgmux({}, {"pool_mode": "transaction"}, sections={DB: lay.section(2)})
    state = env.dir / "refuse.state"
    bad = px.dir / "bad.ini"
    # 2 -> 3 is no doubling
    bad.write_text(px.render_config(sections={DB: lay.section(3)}))
    r = tool(px, bad, state, check=False)
    assert r.returncode == 1 and "multiple" in r.stdout, r.stdout
    # shard 1 moved elsewhere
    sec = lay.section(2)
    sec["shards"] = 4
    sec["shard.1.primary"] = env.backend_entry(lay.server(2), lay.names[2])
    sec["shard.2.primary"] = env.backend_entry(lay.server(1), lay.names[1])
    sec["shard.3.primary"] = env.backend_entry(lay.server(0), "rs_x")
    bad.write_text(px.render_config(sections={DB: sec}))
    r = tool(px, bad, state, check=False)
    assert r.returncode == 1 and "must stay where they are" in r.stdout, r.stdout
    # replica identity without the key: refused with the reason
    layout4 = Layout.__new__(Layout)
    layout4.env, layout4.clusters, layout4.hosts = env, clusters, [0, 1, 0, 1]
    layout4.names = ["rs_0", "rs_1", "rs_2", "rs_3"]
    clusters[1].primary.create_database("rs_3")
    bad.write_text(px.render_config(sections={DB: layout4.section(4)}))
    r = tool(px, bad, state, check=False)
    assert r.returncode == 1 and "replica identity lacks" in r.stdout, r.stdout
    # a partitioned table: refused, not moved wrong
    for s in range(2):
        with lay.connect(s) as c:
            c.execute("CREATE TABLE parted (user_id bigint, id bigint, PRIMARY KEY (user_id, id)) "
                      "PARTITION BY HASH (user_id)")
    r = tool(px, bad, state, check=False)
    assert r.returncode == 1 and "partitioned table" in r.stdout, r.stdout
    assert not state.exists()


def console(px, sql):
    with psycopg.connect(px.dsn("pgmux", "postgres"), autocommit=True, connect_timeout=10) as c:
        c.execute(sql)


@timeout(60)
def test_reshard_reload_reroutes(env):
    """A RELOAD that changes the shard count under a PAUSE: a client queued for a server of
    its old shard, and one that arrived during the PAUSE, run on the shard the new count
    names (pgmux, without the tool)."""
    need_routing()
    topos = env.shard_topologies(1, n_replicas=0, extra_conf=PG_EXTRA)
    lay = Layout(env, topos, [0, 0, 0, 0])
    for s in range(4):
        with lay.connect(s) as c:
            c.execute(SCHEMA)
    keys = list(range(1, 200))
    p2, p4 = lay.placement(keys, 2), lay.placement(keys, 4)
    a = next(k for k in keys if p2[k] == 0 and p4[k] == 0)
    b, c_ = [k for k in keys if p2[k] == 0 and p4[k] == 2][:2]
    sec = lay.section(2)
    sec["pool_size"] = 1
    px = env.pgmux({}, {"pool_mode": "transaction"}, sections={DB: sec})
    holder = psycopg.connect(px.dsn(DB), autocommit=False, prepare_threshold=None)
    holder.execute("INSERT INTO accounts (user_id, id, val) VALUES (%s, 1, 1)", (a,))   # holds shard 0's server
    errors = []

    def insert(k):
        try:
            with psycopg.connect(px.dsn(DB), autocommit=True, prepare_threshold=None) as c:
                c.execute("INSERT INTO accounts (user_id, id, val) VALUES (%s, 1, 1)", (k,))
        except Exception as e:  # noqa: BLE001
            errors.append(repr(e))
    queued = threading.Thread(target=insert, args=(b,))
    queued.start()
    wait_for(lambda: any(r["database"] == f"{DB}/0/primary" and r["cl_waiting"] >= 1
                         for r in px.show("POOLS")), 20, 0.05, "a client queued on shard 0")
    mark = px.log_mark()
    pause = threading.Thread(target=console, args=(px, f"PAUSE {DB}"))
    pause.start()
    px.wait_log("console: pausing database", mark)
    holder.commit()   # PAUSE returns once this server is back
    pause.join(20)
    assert not pause.is_alive()
    late = threading.Thread(target=insert, args=(c_,))
    late.start()
    wait_for(lambda: any(r["database"] == DB and r["cl_active"] + r["cl_waiting"] >= 1
                         for r in px.show("POOLS")) or True, 5, 0.05)
    px.write_section(DB, **lay.section(4))
    console(px, "RELOAD")
    console(px, f"RESUME {DB}")
    for t in (queued, late):
        t.join(20)
        assert not t.is_alive()
    holder.close()
    assert not errors, errors
    where = {k: [s for s in range(4) if lay.connect(s).execute(
        "SELECT count(*) FROM accounts WHERE user_id = %s", (k,)).fetchone()[0]] for k in (b, c_)}
    assert where == {b: [2], c_: [2]}, where

    # a client held back by a PAUSE still has query_wait_timeout, as a queued one has
    console(px, "SET query_wait_timeout = 1")
    with psycopg.connect(px.dsn(DB), autocommit=True, prepare_threshold=None) as c:
        console(px, f"PAUSE {DB}")
        err = None
        try:
            c.execute("INSERT INTO accounts (user_id, id, val) VALUES (%s, 2, 2)", (b,))
        except psycopg.OperationalError as e:
            err = str(e)
        console(px, f"RESUME {DB}")
    assert err and "query_wait_timeout" in err, err


@timeout(90)
def test_reshard_text_key(env):
    """shard_key_type = text, 2 -> 4 within one cluster, no load: the helper table and the
    filter's cast take the key's type, and pgmux's text hash agrees with the moved rows."""
    need_routing()
    topos = env.shard_topologies(1, n_replicas=0, extra_conf=PG_EXTRA)
    lay = Layout(env, topos, [0, 0, 0, 0])
    keys = [f"user-{k}" for k in range(600)]

    def place(modulus):
        with lay.server(0).connect() as c:
            c.execute("CREATE TABLE IF NOT EXISTS reshard_text_parent (k text) "
                      "PARTITION BY HASH (k)")
            return dict(c.execute(
                "SELECT k, r FROM unnest(%s::text[]) k, generate_series(0, %s::int - 1) r "
                "WHERE satisfies_hash_partition('reshard_text_parent'::regclass, %s::int, r, k)",
                (keys, modulus, modulus)).fetchall())
    p2, p4 = place(2), place(4)
    for s in range(2):
        with lay.connect(s) as c:
            c.execute("CREATE TABLE accounts (user_id varchar(40) NOT NULL, id int NOT NULL, "
                      "PRIMARY KEY (user_id, id)); GRANT ALL ON accounts TO app")
            with c.cursor().copy("COPY accounts (user_id, id) FROM STDIN") as cp:
                for k in keys:
                    if p2[k] == s:
                        cp.write_row((k, 1))

    def section(n):
        sec = lay.section(n)
        sec["shard_key_type"] = "text"
        return sec
    px = env.pgmux({}, {"pool_mode": "transaction"}, sections={DB: section(2)})
    new_ini = px.dir / "new.ini"
    new_ini.write_text(px.render_config(sections={DB: section(4)}))
    tool(px, new_ini, env.dir / "text.state")
    with psycopg.connect(px.dsn(DB), autocommit=True) as c:
        for k in keys[:50]:
            c.execute("INSERT INTO accounts (user_id, id) VALUES (%s, 2)", (k,))
    for s in range(4):
        with lay.connect(s) as c:
            rows = c.execute("SELECT user_id, id FROM accounts").fetchall()
        assert all(p4[k] == s for k, _ in rows), f"shard {s}: misplaced rows"
        assert sorted(r for r in rows if r[1] == 1) == sorted((k, 1) for k in keys if p4[k] == s)
        assert sorted(r for r in rows if r[1] == 2) == sorted((k, 2) for k in keys[:50]
                                                              if p4[k] == s)


@timeout(120)
def test_reshard_cutover_retries(env):
    """The cutover gives up cleanly and runs again: a new shard that does not catch up within
    --cutover-timeout-ms, then a new file that pgmux's RELOAD rejects, each leave pgmux on the
    old configuration and not paused; a run that finds the database already paused (as a
    killed run leaves it) carries on under that PAUSE; a run after the switch finishes."""
    lay, px, new_ini, ledger, keys = setup(env, [0, 1, 1, 0], 2, users=300, rows_per_user=1)
    state = env.dir / "retry.state"
    live = px.ini.read_text()
    tool(px, new_ini, state, "plan", "schema", "publication", "slot", "subscription", "sync")

    def still_old():
        assert px.ini.read_text() == live
        assert len([r for r in px.show("SHARDS") if r["database"] == DB]) == 2
        assert not any(r["name"] == DB and r["paused"] for r in px.show("DATABASES"))
        with psycopg.connect(px.dsn(DB), autocommit=True, prepare_threshold=None) as c:
            k = random.choice(keys)
            i = 1000 + len(ledger)
            c.execute("INSERT INTO accounts (user_id, id, val) VALUES (%s, %s, %s)", (k, i, i))
            ledger[(k, i)] = i

    with lay.connect(2) as c:
        c.execute("ALTER SUBSCRIPTION pgmux_reshard_4_2 DISABLE")
    still_old()   # written while shard 2 does not replicate: must arrive later
    r = tool(px, new_ini, state, "--cutover-timeout-ms", "300", check=False)
    assert r.returncode == 1 and "did not apply" in r.stdout and "abandoned" in r.stdout, r.stdout
    still_old()
    with lay.connect(2) as c:
        c.execute("ALTER SUBSCRIPTION pgmux_reshard_4_2 ENABLE")

    good = new_ini.read_text()
    new_ini.write_text(good.replace(str(px.auth_file), str(px.dir / "no-such-userlist.txt")))
    r = tool(px, new_ini, state, check=False)
    assert r.returncode == 1 and "RELOAD" in r.stdout and "abandoned" in r.stdout, r.stdout
    still_old()

    new_ini.write_text(good)
    console(px, f"PAUSE {DB}")
    r = tool(px, new_ini, state, "cutover")
    assert "paused already" in r.stdout
    # a run stopped after the switch: the live file is the new one, the old shards come
    # from the copy the cutover kept
    r = tool(px, new_ini, state)
    assert "already the new configuration" in r.stdout, r.stdout
    check_result(lay, px, ledger, 4, [])


class Inserter(threading.Thread):
    """Inserts rows for random user_ids through pgmux until stopped.  Under the lock it counts
    an insert as in flight before sending it and moves it to the ledger once it committed, so
    a reader knows the bounds of what a count may see."""

    def __init__(self, px, ledger, keys, lock):
        super().__init__(daemon=True)
        self.px, self.ledger, self.keys, self.lock = px, ledger, keys, lock
        self.stop_ev = threading.Event()
        self.errors, self.inserts, self.inflight = [], 0, 0
        self.rng = random.Random(7)

    def run(self):
        try:
            conn = psycopg.connect(self.px.dsn(DB), autocommit=True, prepare_threshold=None)
        except Exception as e:  # noqa: BLE001
            self.errors.append(f"connect: {e!r}")
            return
        with conn:
            i = 50_000_000
            while not self.stop_ev.is_set():
                k = self.rng.choice(self.keys)
                i += 1
                with self.lock:
                    self.inflight += 1
                try:
                    conn.execute("INSERT INTO accounts (user_id, id, val) VALUES (%s, %s, %s)",
                                 (k, i, i))
                except Exception as e:  # noqa: BLE001 (stays in flight: it may have committed)
                    self.errors.append(f"{type(e).__name__}: {e}")
                    return
                with self.lock:
                    self.ledger[(k, i)] = i
                    self.inflight -= 1
                self.inserts += 1


class Counter(threading.Thread):
    """Runs SELECT count(*) FROM accounts through pgmux (no key: every shard) until stopped;
    each count must lie between the rows committed before it began and those committed or in
    flight when it ended.  Counts per phase, the main thread sets the phase."""

    def __init__(self, px, ledger, writer, lock):
        super().__init__(daemon=True)
        self.px, self.ledger, self.writer, self.lock = px, ledger, writer, lock
        self.stop_ev = threading.Event()
        self.phase = "before"
        self.reads, self.wrong, self.errors = {}, [], []

    def run(self):
        try:
            conn = psycopg.connect(self.px.dsn(DB), autocommit=True, prepare_threshold=None)
        except Exception as e:  # noqa: BLE001
            self.errors.append(f"connect: {e!r}")
            return
        with conn:
            while not self.stop_ev.is_set():
                phase = self.phase
                with self.lock:
                    lo = len(self.ledger)
                try:
                    # pgmux merges the shards' counts; summed here too, should it pass rows through
                    got = sum(r[0] for r in conn.execute("SELECT count(*) FROM accounts"))
                except Exception as e:  # noqa: BLE001
                    self.errors.append(f"{type(e).__name__}: {e}")
                    return
                with self.lock:
                    hi = len(self.ledger) + self.writer.inflight
                if not lo <= got <= hi:
                    self.wrong.append((phase, lo, got, hi))
                self.reads[phase] = self.reads.get(phase, 0) + 1


@timeout(300)
def test_reshard_keyless_reads(env):
    """no_shard_key = all, 2 -> 4, pgmux logging in as the ordinary role app (owner of
    accounts): every count(*) fanned out over the shards, before, during and after the move,
    and between the cutover and the cleanup in particular, counts each row once (the
    row-level security policy on the old shards hides the moved rows from app, FORCE included
    for the owner); the superuser, who bypasses it, still sees them there; the cleanup drops
    the policies and restores the RLS flags, after a cutover abandoned (RELOAD rejected) too; a
    cutover killed after the first policies is finished by the next run.  A configuration whose
    server user is a superuser is refused without --allow-rls-bypass."""
    lay, px, new_ini, ledger, keys = setup(env, [0, 1, 1, 0], 2, users=500, rows_per_user=4,
                                           app=True)
    state = env.dir / "keyless.state"

    # pgmux logging in as a superuser would see every row: refused, nothing touched
    bad_live, bad_new = px.dir / "bad-live.ini", px.dir / "bad-new.ini"
    bad_live.write_text(px.render_config(sections={DB: lay.section(2, keyless=True)}))
    bad_new.write_text(px.render_config(sections={DB: lay.section(4, keyless=True)}))
    r = subprocess.run([TOOL, "--database", DB, "--config", str(bad_live), "--new-config",
                        str(bad_new), "--state", str(env.dir / "bad.state"), "plan"],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=60)
    assert r.returncode == 1 and "bypass row-level security" in r.stdout \
        and "--allow-rls-bypass" in r.stdout, r.stdout
    r = subprocess.run([TOOL, "--database", DB, "--config", str(bad_live), "--new-config",
                        str(bad_new), "--state", str(env.dir / "bad.state"), "--allow-rls-bypass",
                        "plan"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                       timeout=60)
    assert r.returncode == 0 and "warning: " in r.stdout, r.stdout
    # the tool itself as app: forced RLS would hide the moved rows from its cleanup
    r = tool(px, new_ini, env.dir / "app.state", "--user", "app", "plan", check=False)
    assert r.returncode == 1 and "BYPASSRLS role (--user)" in r.stdout, r.stdout

    r = tool(px, new_ini, env.dir / "dry.state", "--user", "postgres", "--dry-run")
    assert "CREATE POLICY pgmux_reshard_keep ON public.accounts" in r.stdout \
        and "DROP POLICY pgmux_reshard_keep" in r.stdout, r.stdout

    lock = threading.Lock()
    writer = Inserter(px, ledger, keys, lock)
    reader = Counter(px, ledger, writer, lock)
    writer.start()
    reader.start()
    wait_for(lambda: writer.inserts > 20 and reader.reads.get("before", 0) > 3, 30, 0.05,
             "the writer and the reader to get going")
    su = ["--user", "postgres"]
    tool(px, new_ini, state, *su, "plan", "schema", "publication", "slot", "subscription", "sync")

    def app_sees_all(s):
        """Whether app, reading old shard s directly, sees every row the superuser sees."""
        with lay.connect(s) as c:
            with c.transaction():
                c.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                every = c.execute("SELECT count(*) FROM accounts").fetchone()[0]
                c.execute("SET LOCAL ROLE app")
                return c.execute("SELECT count(*) FROM accounts").fetchone()[0] == every

    def rls_as_before():
        """The old shards' policies and RLS flags as setup made them."""
        for s in range(2):
            with lay.connect(s) as c:
                assert c.execute("SELECT array_agg(polname) FROM pg_policy").fetchone()[0] \
                    == ["notes_all"]
                flags = c.execute("SELECT relname, relrowsecurity, relforcerowsecurity "
                                  "FROM pg_class WHERE relname LIKE 'accounts%' "
                                  "AND relkind = 'r' ORDER BY 1")
                assert flags.fetchall() == [("accounts", False, False),
                                            ("accounts_notes", True, False)]

    # no policy yet: app sees on the old shards the rows their new shards already hold
    assert app_sees_all(0) and app_sees_all(1)
    # a cutover abandoned after the policies went on (pgmux rejects the new file's RELOAD)
    # takes them off again before the RESUME: on 2 shards the old ones keep every row
    good = new_ini.read_text()
    new_ini.write_text(good.replace(str(px.auth_file), str(px.dir / "no-such-userlist.txt")))
    r = tool(px, new_ini, state, *su, "cutover", check=False)
    assert r.returncode == 1 and "abandoned" in r.stdout and "flags restored" in r.stdout, r.stdout
    new_ini.write_text(good)
    assert app_sees_all(0) and app_sees_all(1)
    rls_as_before()
    # a run killed once the policies of old shard 0 are on (pgmux may stay paused, with or
    # without the new file): the next run finishes the cutover
    p = tool(px, new_ini, state, *su, "cutover", popen=True)
    out = []
    for line in p.stdout:
        out.append(line)
        if "row-level security shows only the rows it keeps" in line:
            p.send_signal(signal.SIGKILL)
            break
    p.wait(60)
    print("".join(out))
    assert p.returncode == -signal.SIGKILL, "".join(out)
    r = tool(px, new_ini, state, *su, "cutover")
    reader.phase = "window"
    wait_for(lambda: reader.reads.get("window", 0) >= 5 or reader.errors, 60, 0.05,
             "counts between the cutover and the cleanup")

    place4 = lay.placement(keys, 4)
    for s in range(2):
        with lay.connect(s) as c:
            pol = c.execute("SELECT polname, polpermissive FROM pg_policy WHERE polrelid = "
                            "'accounts'::regclass").fetchall()
            assert pol == [("pgmux_reshard_keep", True)], pol
            pol = c.execute("SELECT polname, polpermissive FROM pg_policy WHERE polrelid = "
                            "'accounts_notes'::regclass ORDER BY 1").fetchall()
            assert pol == [("notes_all", True), ("pgmux_reshard_keep", False),
                           ("pgmux_reshard_owner", True)], pol
            assert c.execute("SELECT relrowsecurity AND relforcerowsecurity FROM pg_class "
                             "WHERE oid = 'accounts'::regclass").fetchone()[0]
            # one snapshot, two roles: what the policy hides is exactly the moved rows
            with c.transaction():
                c.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                every = [k for (k,) in c.execute("SELECT user_id FROM accounts")]
                c.execute("SET LOCAL ROLE app")
                seen = [k for (k,) in c.execute("SELECT user_id FROM accounts")]
            moved = [k for k in every if place4[k] != s]
            assert moved, "the old shard holds no moved row before the cleanup"
            assert all(place4[k] == s for k in seen), "app sees moved rows on the old shard"
            assert len(every) - len(seen) == len(moved), (len(every), len(seen), len(moved))

    r = tool(px, new_ini, state, *su, "unsubscribe", "cleanup")
    reader.phase = "after"
    wait_for(lambda: reader.reads.get("after", 0) >= 3 or reader.errors, 60, 0.05,
             "counts after the cleanup")
    for t in (writer, reader):
        t.stop_ev.set()
    for t in (writer, reader):
        t.join(30)
    assert not reader.errors, reader.errors[:5]
    assert not reader.wrong, f"{len(reader.wrong)} counts outside the ledger: {reader.wrong[:5]}"
    print(f"keyless counts: {reader.reads}; {writer.inserts} inserts during the move")
    check_result(lay, px, ledger, 4, [writer])
    rls_as_before()
