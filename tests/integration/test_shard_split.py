"""Writes that span shards (issue 14): a multi-row INSERT whose rows belong to several shards
is split per shard, and COPY FROM STDIN (text, CSV, binary) into a sharded table is split row by
row; each shard's part runs as BEGIN; ...; PREPARE TRANSACTION, and only when every shard has
prepared does pgmux COMMIT PREPARED on each, so the statement succeeds or fails as a whole.
Rows must land on the shard PostgreSQL's own hash partitioning names (satisfies_hash_partition,
as test_sharding checks), the command tag must count every shard's rows, a failure on one shard
must leave nothing anywhere, and pg_prepared_xacts must be empty after every statement.  Refused:
a spanning write inside a transaction block, a spanning INSERT with parameters, a COPY whose
column list lacks the key (without a list pgmux asks the server for the table's columns),
NULL or malformed keys, and an UPDATE that changes the shard key.  A shard with
max_prepared_transactions = 0 makes a spanning write fail with a clear error, writing nothing."""

import os
import time
import socket
import struct

import psycopg
from psycopg import pq

from pgharness import timeout, wait_for
from test_sharding import (DB, Shards, expect_error, fresh_keys, wait_shards_up)
from test_routing import need_routing

INSERT = "INSERT INTO accounts (user_id, name) VALUES"


def split_env(env, n, confs=None, settings=None):
    """n shard primaries (no replicas; confs[i]: extra postgresql.conf keys for shard i), a
    table accounts(user_id int8 primary key, name text) on each, and a pgmux with a sharded
    [database users] section in transaction pooling.  Returns (pgmux, Shards)."""
    need_routing()
    confs = confs or [None] * n
    topos = []
    for i in range(n):
        topos += env.shard_topologies(1, n_replicas=0, extra_conf=confs[i]) if confs[i] \
            else env.shard_topologies(1, n_replicas=0)
    for t in topos:
        t.primary.create_database(DB, owner="app")
        env.sql(DB, "CREATE TABLE accounts (user_id int8 PRIMARY KEY, name text)",
                server=t.primary)
    shards = Shards(env, topos)
    sets = {"pool_mode": "transaction", "monitor_interval": 0.2, "default_pool_size": 4}
    sets.update(settings or {})
    px = env.pgmux({}, sets, sections={DB: env.sharded_section(
        DB, topos, no_shard_key="error", read_routing="off")})
    wait_shards_up(px, n, n_replicas=0)
    return px, shards


def no_prepared(shards, what):
    for s in range(shards.n):
        left = shards.primary(s).sql("SELECT gid FROM pg_prepared_xacts")
        assert not left, f"{what}: prepared transactions left on shard {s}: {left}"


def check_rows(shards, want, what):
    """Every key of want ({key: name}) on exactly its hash partition's shard, nothing else."""
    place = shards.placement(want) if want else {}
    for s in range(shards.n):
        got = shards.rows(s)
        exp = {k: v for k, v in want.items() if place[k] == s}
        assert got == exp, f"{what}: shard {s} has {sorted(got.items())[:8]}..., want " \
                           f"{sorted(exp.items())[:8]}... ({len(got)} vs {len(exp)} rows)"
    no_prepared(shards, what)


def clear(shards):
    for s in range(shards.n):
        shards.primary(s).sql("DELETE FROM accounts", dbname=DB)


def spanning_keys(shards, per_shard, seed):
    ks = fresh_keys(shards, per_shard, seed)
    out = []
    for i in range(per_shard):
        for s in range(shards.n):
            out.append(ks[s][i])
    return out, ks


def values(keys, name=lambda k: f"n{k}"):
    return ", ".join(f"({k}, '{name(k)}')" for k in keys)


def bin_copy(rows):
    """A binary COPY stream of (int8, text) rows, built by hand."""
    out = bytearray(b"PGCOPY\n\xff\r\n\x00" + struct.pack("!ii", 0, 0))
    for k, name in rows:
        out += struct.pack("!h", 2)
        out += struct.pack("!iq", 8, k)
        if name is None:
            out += struct.pack("!i", -1)
        else:
            b = name.encode()
            out += struct.pack("!i", len(b)) + b
    out += struct.pack("!h", -1)
    return bytes(out)


# ----------------------------------------------------------------------------------------------

@timeout(150)
def test_split_insert(env):
    """A multi-row INSERT over two shards: each row on its shard, the tag counts all of them,
    RETURNING gives every shard's rows; a unique violation on one shard writes nothing
    anywhere; refused inside BEGIN and with parameters, and UPDATE of the shard key is refused;
    pg_prepared_xacts stays empty."""
    px, shards = split_env(env, 2)
    keys, ks = spanning_keys(shards, 5, seed=71)
    with px.connect(DB) as c:
        cur = c.execute(f"{INSERT} {values(keys)}")
        assert cur.statusmessage == f"INSERT 0 {len(keys)}", cur.statusmessage
        assert cur.rowcount == len(keys)
        assert c.info.transaction_status == pq.TransactionStatus.IDLE
        # the same connection goes on: a keyed read of each shard
        for k in (ks[0][0], ks[1][0]):
            assert c.execute(f"SELECT name FROM accounts WHERE user_id = {k}").fetchone() == \
                (f"n{k}",)
    want = {k: f"n{k}" for k in keys}
    check_rows(shards, want, "spanning INSERT")

    # ON CONFLICT DO NOTHING: the tag counts the rows written
    more = [ks[0][0], ks[1][0]]   # already there
    extra, ks2 = spanning_keys(shards, 1, seed=72)
    with px.connect(DB) as c:
        cur = c.execute(f"{INSERT} {values(more + extra, lambda k: 'dup')} ON CONFLICT DO NOTHING")
        assert cur.statusmessage == f"INSERT 0 {len(extra)}", cur.statusmessage
    want.update({k: "dup" for k in extra})
    check_rows(shards, want, "ON CONFLICT DO NOTHING")

    # a unique violation on shard 1 only: nothing is written on shard 0 either
    fresh, ks3 = spanning_keys(shards, 2, seed=73)
    dup = ks[1][1]
    with px.connect(DB) as c:
        expect_error(lambda: c.execute(f"{INSERT} {values(fresh + [dup])}"), "23505",
                     "spanning INSERT with a duplicate on one shard")
        assert c.info.transaction_status == pq.TransactionStatus.IDLE
    check_rows(shards, want, "failed spanning INSERT")

    # refusals: inside a transaction block, RETURNING, an UPDATE of the shard key
    with px.connect(DB, autocommit=False) as c:
        expect_error(lambda: c.execute(f"{INSERT} {values(fresh)}"), "0A000",
                     "spanning INSERT inside BEGIN", contains=("transaction block",))
        c.rollback()
    with px.connect(DB) as c:
        # RETURNING: every shard's rows, under one RowDescription
        ret, _ = spanning_keys(shards, 2, seed=74)
        cur = c.execute(f"{INSERT} {values(ret)} RETURNING name, user_id")
        assert [d.name for d in cur.description] == ["name", "user_id"]
        got = cur.fetchall()
        assert sorted(got) == sorted((f"n{k}", k) for k in ret), got
        assert cur.statusmessage == f"INSERT 0 {len(ret)}", cur.statusmessage
        want.update({k: f"n{k}" for k in ret})
        expect_error(lambda: c.execute(f"{INSERT} {values(fresh + [dup])} RETURNING user_id")
                     .fetchall(), "23505", "spanning INSERT ... RETURNING with a duplicate")
        expect_error(lambda: c.execute(
            f"UPDATE accounts SET user_id = {fresh[0]} WHERE user_id = {ks[0][0]}"), "0A000",
            "UPDATE of the shard key", contains=("changes the shard key",))
        expect_error(lambda: c.execute(
            f"UPDATE accounts SET user_id = user_id + 1, name = 'x' WHERE user_id = {ks[1][0]}"),
            "0A000", "UPDATE of the shard key (expression)", contains=("changes the shard key",))
        # parameters (extended protocol) are not split: refused as before
        expect_error(lambda: c.execute(f"{INSERT} (%s, 'p'), (%s, 'p')", (ks3[0][0], ks3[1][0])),
                     "0A000", "spanning INSERT with parameters", contains=("several shards",))
    check_rows(shards, want, "after the refusals")


@timeout(150)
def test_split_copy(env):
    """COPY FROM STDIN over two shards in text, CSV and binary, with escapes, quoted newlines,
    headers and other delimiters, through psycopg and psql's \\copy; CopyFail, a NULL key, a
    malformed key and a table without the key write nothing; with and without a column list."""
    px, shards = split_env(env, 2)
    for s in range(shards.n):
        env.sql(DB, "CREATE TABLE notes (id int, body text)", server=shards.primary(s))
    keys, _ = spanning_keys(shards, 6, seed=81)
    names = {}
    for i, k in enumerate(keys):
        names[k] = ["plain", "tab\there", "new\nline", "back\\slash", 'quote " d', "comma, x"][i % 6]

    def text_escape(s):
        return s.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n")

    # text: psycopg's write_row (its own escaping), then raw text written in odd pieces
    with px.connect(DB) as c:
        with c.cursor() as cur:
            with cur.copy("COPY accounts (user_id, name) FROM STDIN") as cp:
                for k in keys[:6]:
                    cp.write_row((k, names[k]))
            assert cur.rowcount == 6, cur.rowcount
        data = "".join(f"{text_escape(names[k])}|{k}\n" for k in keys[6:])
        with c.cursor() as cur:
            with cur.copy("COPY accounts (name, user_id) FROM STDIN (DELIMITER '|')") as cp:
                for i in range(0, len(data), 7):   # rows cut anywhere
                    cp.write(data[i:i + 7])
            assert cur.statusmessage == f"COPY {len(keys) - 6}", cur.statusmessage
    check_rows(shards, names, "COPY text")
    clear(shards)

    # CSV with a header, quoted newlines and quotes
    csv = "user_id,name\r\n" + "".join(
        f'{k},"{names[k].replace(chr(34), chr(34) * 2)}"\r\n' for k in keys)
    with px.connect(DB) as c:
        with c.cursor() as cur:
            with cur.copy("COPY accounts (user_id, name) FROM STDIN WITH (FORMAT csv, HEADER)") as cp:
                cp.write(csv[:50])
                cp.write(csv[50:])
            assert cur.rowcount == len(keys), cur.rowcount
    check_rows(shards, names, "COPY CSV")
    clear(shards)

    # binary: psycopg's own, then a hand-built stream
    with px.connect(DB) as c:
        with c.cursor() as cur:
            with cur.copy("COPY accounts (user_id, name) FROM STDIN (FORMAT binary)") as cp:
                cp.set_types(["int8", "text"])
                for k in keys[:5]:
                    cp.write_row((k, names[k]))
            assert cur.rowcount == 5, cur.rowcount
            with cur.copy("COPY accounts (user_id, name) FROM STDIN (FORMAT binary)") as cp:
                cp.write(bin_copy([(k, names[k]) for k in keys[5:]]))
            assert cur.rowcount == len(keys) - 5, cur.rowcount
    check_rows(shards, names, "COPY binary")
    clear(shards)

    # no column list: pgmux asks shard 0 for the table's columns (text and binary)
    with px.connect(DB) as c:
        with c.cursor() as cur:
            with cur.copy("COPY accounts FROM STDIN") as cp:
                for k in keys[:6]:
                    cp.write_row((k, names[k]))
            assert cur.rowcount == 6, cur.rowcount
            with cur.copy("COPY public.accounts FROM STDIN (FORMAT binary)") as cp:
                cp.write(bin_copy([(k, names[k]) for k in keys[6:]]))
            assert cur.rowcount == len(keys) - 6, cur.rowcount
    check_rows(shards, names, "COPY without a column list")
    clear(shards)

    # psql \copy, text and CSV
    path = env.dir / "rows.csv"
    path.write_text("".join(f'{k};"{names[k].replace(chr(34), chr(34) * 2)}"\n' for k in keys))
    os.chmod(path, 0o644)
    r = px.psql(DB, f"\\copy accounts (user_id, name) from '{path}' with (format csv, delimiter ';')")
    assert "COPY" in r.stdout or r.returncode == 0, r
    check_rows(shards, names, "psql \\copy CSV")
    clear(shards)
    path = env.dir / "rows.txt"
    path.write_text("".join(f"{k}\t{text_escape(names[k])}\n" for k in keys) + "\\.\n")
    px.psql(DB, f"\\copy accounts (user_id, name) from '{path}'")
    check_rows(shards, names, "psql \\copy text")
    clear(shards)

    # failures write nothing
    with px.connect(DB) as c:
        with c.cursor() as cur:
            class Stop(Exception):
                pass
            try:
                with cur.copy("COPY accounts (user_id, name) FROM STDIN") as cp:
                    for k in keys:
                        cp.write_row((k, "x"))
                    raise Stop()
            except (Stop, psycopg.errors.QueryCanceled):
                pass
        assert c.info.transaction_status == pq.TransactionStatus.IDLE
        for bad, state, what in (
                (f"{keys[0]}\tx\n\\N\ty\n", "22P04", "a NULL key"),
                (f"{keys[0]}\tx\nabc\ty\n", "22P04", "a key that is no integer"),
                (f"{keys[0]}\tx\n{keys[1]}\\", "22P04", "data ending in a backslash")):
            with c.cursor() as cur:
                def run():
                    with cur.copy("COPY accounts (user_id, name) FROM STDIN") as cp:
                        cp.write(bad)
                expect_error(run, state, f"COPY with {what}")
                check_rows(shards, {}, f"COPY with {what}")
        expect_error(lambda: c.execute("COPY accounts (name) FROM STDIN"), "0A000",
                     "COPY without the key", contains=("shard key",))
        expect_error(lambda: c.execute("COPY no_such_table FROM STDIN"), "42P01",
                     "COPY into a table that does not exist")
        expect_error(lambda: c.execute("COPY notes FROM STDIN"), "0A000",
                     "COPY into a table without the key", contains=("has no column user_id",))
        # the last line may lack its newline (PostgreSQL takes it)
        with c.cursor() as cur:
            with cur.copy("COPY accounts (user_id, name) FROM STDIN") as cp:
                cp.write(f"{keys[0]}\tx\n{keys[1]}\ty")
            assert cur.rowcount == 2
    check_rows(shards, {keys[0]: "x", keys[1]: "y"}, "last line without newline")
    clear(shards)

    # inside a transaction block: refused
    with px.connect(DB, autocommit=False) as c:
        with c.cursor() as cur:
            def run():
                with cur.copy("COPY accounts (user_id, name) FROM STDIN") as cp:
                    cp.write_row((keys[0], "x"))
            expect_error(run, "0A000", "COPY inside BEGIN", contains=("transaction block",))
        c.rollback()
    check_rows(shards, {}, "COPY inside BEGIN")


@timeout(150)
def test_split_three_shards(env):
    """Three shards: a spanning INSERT and a CSV COPY place every row on its shard."""
    px, shards = split_env(env, 3)
    keys, _ = spanning_keys(shards, 4, seed=91)
    with px.connect(DB) as c:
        cur = c.execute(f"{INSERT} {values(keys[:6])}")
        assert cur.statusmessage == "INSERT 0 6", cur.statusmessage
        with c.cursor() as cur:
            with cur.copy("COPY accounts (name, user_id) FROM STDIN (FORMAT csv)") as cp:
                for k in keys[6:]:
                    cp.write(f"n{k},{k}\n")
            assert cur.rowcount == len(keys) - 6
    check_rows(shards, {k: f"n{k}" for k in keys}, "three shards")


@timeout(150)
def test_split_prepared_disabled(env):
    """A shard with max_prepared_transactions = 0: a spanning INSERT or COPY fails with a clear
    error naming the setting, and nothing is written on the other shard; single-shard writes
    still work."""
    px, shards = split_env(env, 2, confs=[None, {"max_prepared_transactions": 0}])
    keys, ks = spanning_keys(shards, 2, seed=101)
    with px.connect(DB) as c:
        expect_error(lambda: c.execute(f"{INSERT} {values(keys)}"), "55000",
                     "spanning INSERT, shard 1 without prepared transactions",
                     contains=("max_prepared_transactions", "nothing was written"))
        with c.cursor() as cur:
            def run():
                with cur.copy("COPY accounts (user_id, name) FROM STDIN") as cp:
                    for k in keys:
                        cp.write_row((k, "c"))
            expect_error(run, "55000", "spanning COPY, shard 1 without prepared transactions",
                         contains=("max_prepared_transactions",))
        cur = c.execute(f"{INSERT} ({ks[1][0]}, 'one')")
        assert cur.rowcount == 1
    check_rows(shards, {ks[1][0]: "one"}, "prepared transactions disabled")


@timeout(150)
def test_split_hostile(env):
    """A COPY larger than max_client_memory, malformed binary data, a shard whose connection
    dies in the middle of its part, and a client that vanishes in the middle of its COPY: each
    is refused or dropped with nothing written and no prepared transaction left, while another
    client's writes go on."""
    px, shards = split_env(env, 2, settings={"max_client_memory": 131072})
    keys, ks = spanning_keys(shards, 3, seed=111)
    other = px.connect(DB)
    with px.connect(DB) as c:
        with c.cursor() as cur:
            def big():
                with cur.copy("COPY accounts (user_id, name) FROM STDIN") as cp:
                    for i in range(200):
                        cp.write(f"{keys[i % len(keys)]}\t{'x' * 1000}\n")
            expect_error(big, "54000", "COPY over max_client_memory",
                         contains=("max_client_memory",))
            def garbage():
                with cur.copy("COPY accounts (user_id, name) FROM STDIN (FORMAT binary)") as cp:
                    cp.write(b"PGCOPY\n\xff\r\n\x00" + struct.pack("!ii", 0, 0) +
                             struct.pack("!hi", 2, -7))
            expect_error(garbage, "22P04", "malformed binary COPY")
            def one_row_huge():
                with cur.copy("COPY accounts (user_id, name) FROM STDIN") as cp:
                    cp.write(f"{keys[0]}\t")
                    for _ in range(40):
                        cp.write("y" * 4096)
                    cp.write("\n")
            expect_error(one_row_huge, "54000", "a row larger than max_client_memory")
        assert c.execute(f"SELECT count(*) FROM accounts WHERE user_id = {keys[0]}").fetchone() == (0,)
    check_rows(shards, {}, "refused COPYs")

    # a client that vanishes mid-COPY: its socket is shut, with rows sent and no CopyDone
    c = px.connect(DB)
    cur = c.cursor()
    cp_cm = cur.copy("COPY accounts (user_id, name) FROM STDIN")
    cp = cp_cm.__enter__()
    for k in keys:
        cp.write_row((k, "gone"))
    s = socket.socket(fileno=os.dup(c.fileno()))
    s.shutdown(socket.SHUT_RDWR)
    s.close()
    try:
        cp_cm.__exit__(None, None, None)
    except psycopg.Error:
        pass
    # the other client is not disturbed
    cur2 = other.execute(f"{INSERT} ({ks[0][0]}, 'o'), ({ks[1][0]}, 'o')")
    assert cur2.rowcount == 2
    other.close()
    try:
        c.close()
    except Exception:  # noqa: BLE001
        pass
    check_rows(shards, {ks[0][0]: "o", ks[1][0]: "o"}, "a client gone mid-COPY")

    # a shard's server dies while its part runs (a trigger ends its own backend): what the
    # other shard prepared is rolled back, the client gets 08006 and its connection goes on
    for s in range(shards.n):
        env.sql(DB, "CREATE FUNCTION die() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                "IF NEW.name = 'die' THEN PERFORM pg_terminate_backend(pg_backend_pid()); "
                "END IF; RETURN NEW; END $$", server=shards.primary(s))
        env.sql(DB, "CREATE TRIGGER die BEFORE INSERT ON accounts FOR EACH ROW "
                "EXECUTE FUNCTION die()", server=shards.primary(s))
    k0, k1 = ks[0][1], ks[1][1]
    with px.connect(DB) as c:
        expect_error(lambda: c.execute(f"{INSERT} ({k0}, 'ok'), ({k1}, 'die')"), "08006",
                     "a shard's connection lost mid-write", contains=("rolled back",))
        assert c.execute(f"SELECT name FROM accounts WHERE user_id = {ks[0][0]}").fetchone() == ("o",)
    check_rows(shards, {ks[0][0]: "o", ks[1][0]: "o"}, "a shard lost mid-write")

    # a client that vanishes between the phases: shard 0 has prepared, shard 1's part waits on
    # a lock the test holds; pgmux rolls back what shard 0 prepared on its own
    for s in range(shards.n):
        env.sql(DB, "CREATE FUNCTION wait_lock() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                "IF NEW.name = 'wait' THEN PERFORM pg_advisory_xact_lock(4242); END IF; "
                "RETURN NEW; END $$", server=shards.primary(s))
        env.sql(DB, "CREATE TRIGGER wait_lock BEFORE INSERT ON accounts FOR EACH ROW "
                "EXECUTE FUNCTION wait_lock()", server=shards.primary(s))
    k0, k1 = ks[0][2], ks[1][2]
    holder = shards.primary(1).connect(DB)
    holder.execute("SELECT pg_advisory_lock(4242)")
    c = px.connect(DB)
    c.pgconn.send_query(f"{INSERT} ({k0}, 'x'), ({k1}, 'wait')".encode())

    def prepared_on_0():
        return shards.primary(0).sql1("SELECT count(*) FROM pg_prepared_xacts")
    wait_for(lambda: prepared_on_0() == 1, 30, 0.05)
    s = socket.socket(fileno=os.dup(c.fileno()))
    s.shutdown(socket.SHUT_RDWR)
    s.close()
    wait_for(lambda: prepared_on_0() == 0, 30, 0.05)
    # shard 1's part ends before it could prepare
    holder.execute("SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' "
                   "AND NOT granted")
    holder.execute("SELECT pg_advisory_unlock(4242)")
    holder.close()
    try:
        c.close()
    except Exception:  # noqa: BLE001
        pass
    check_rows(shards, {ks[0][0]: "o", ks[1][0]: "o"}, "a client gone between the phases")


@timeout(90)
def test_pause_waits_for_split(env):
    """A PAUSE of the sharded database while a split COPY is under way waits for it: the COPY
    finishes on every shard (its steps are not stopped between two shards, where a RELOAD
    under the PAUSE would change the shards under it), a keyed statement that arrives
    meanwhile waits unrouted, the PAUSE returns once the COPY is committed, and RESUME lets the
    waiting statement run."""
    import threading
    px, shards = split_env(env, 2)
    keys, _ = spanning_keys(shards, 3, seed=93)
    names = {k: f"p{k}" for k in keys}
    late_key = keys[0] + 1000003
    copying, finish = threading.Event(), threading.Event()
    done, errors = {}, []

    def console(sql):
        with psycopg.connect(px.dsn("pgmux", "postgres"), autocommit=True) as c:
            c.execute(sql)

    def copier():
        try:
            with px.connect(DB) as c, c.cursor() as cur:
                with cur.copy("COPY accounts (user_id, name) FROM STDIN") as cp:
                    for k in keys:
                        cp.write_row((k, names[k]))
                    copying.set()
                    finish.wait(30)
                done["copy"] = cur.rowcount
        except Exception as e:  # noqa: BLE001
            errors.append(repr(e))
            copying.set()

    def pauser():
        console(f"PAUSE {DB}")
        done["pause"] = True

    def late():
        try:
            with px.connect(DB) as c:
                c.execute("INSERT INTO accounts (user_id, name) VALUES (%s, 'late')", (late_key,))
            done["late"] = True
        except Exception as e:  # noqa: BLE001
            errors.append(repr(e))

    t_copy = threading.Thread(target=copier)
    t_copy.start()
    assert copying.wait(30) and not errors, errors
    mark = px.log_mark()
    t_pause = threading.Thread(target=pauser)
    t_pause.start()
    px.wait_log("console: pausing database", mark)
    t_late = threading.Thread(target=late)
    t_late.start()
    t_pause.join(1.0)
    assert "pause" not in done, "PAUSE returned while a split COPY was under way"
    finish.set()
    t_copy.join(30)
    assert not errors and done.get("copy") == len(keys), (errors, done)
    t_pause.join(30)
    assert done.get("pause"), "PAUSE did not return once the split COPY was committed"
    t_late.join(0.5)
    assert "late" not in done, "a keyed INSERT ran during the PAUSE"
    console(f"RESUME {DB}")
    t_late.join(30)
    assert done.get("late") and not errors, (errors, done)
    want = dict(names)
    want[late_key] = "late"
    check_rows(shards, want, "COPY across a PAUSE")


@timeout(150)
def test_split_commit_retry(env):
    """The server running COMMIT PREPARED on a shard is lost (it waits for a synchronous standby
    that does not exist, and the test ends its backend): pgmux runs COMMIT PREPARED again on a
    fresh connection, the client gets its tag, and every row is committed."""
    px, shards = split_env(env, 2)
    keys, ks = spanning_keys(shards, 1, seed=121)
    s0, s1 = shards.primary(0), shards.primary(1)
    # shard 1's part waits on a lock the test holds, so the test can act between the phases
    env.sql(DB, "CREATE FUNCTION wait_lock() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            "IF NEW.name = 'wait' THEN PERFORM pg_advisory_xact_lock(4243); END IF; "
            "RETURN NEW; END $$", server=s1)
    env.sql(DB, "CREATE TRIGGER wait_lock BEFORE INSERT ON accounts FOR EACH ROW "
            "EXECUTE FUNCTION wait_lock()", server=s1)
    holder = s1.connect(DB)
    holder.execute("SELECT pg_advisory_lock(4243)")
    c = px.connect(DB)
    c.pgconn.send_query(f"{INSERT} ({ks[0][0]}, 'a'), ({ks[1][0]}, 'wait')".encode())
    try:
        wait_for(lambda: s0.sql1("SELECT count(*) FROM pg_prepared_xacts") == 1, 30, 0.05)
        # from now on a commit on shard 0 waits for a standby that never comes
        s0.sql("ALTER SYSTEM SET synchronous_standby_names = 'nobody'")
        s0.sql("ALTER SYSTEM SET synchronous_commit = on")
        s0.sql("SELECT pg_reload_conf()")
        wait_for(lambda: s0.sql1("SHOW synchronous_standby_names") == "nobody", 30, 0.05)
        holder.execute("SELECT pg_advisory_unlock(4243)")

        def committing():
            return s0.sql1("SELECT pid FROM pg_stat_activity WHERE wait_event = 'SyncRep' "
                           "AND query LIKE 'COMMIT PREPARED%'")
        wait_for(lambda: committing() is not None, 30, 0.05)
        s0.sql("SELECT pg_terminate_backend(%s)", (committing(),))
        wait_for(lambda: "running it again on another connection" in px.log_text(), 30, 0.05)
        s0.sql("ALTER SYSTEM RESET synchronous_standby_names")
        s0.sql("ALTER SYSTEM RESET synchronous_commit")
        s0.sql("SELECT pg_reload_conf()")
        while c.pgconn.is_busy():
            c.pgconn.consume_input()
            time.sleep(0.01)
        res = c.pgconn.get_result()
        assert res.status == pq.ExecStatus.COMMAND_OK, res.error_message
        assert res.command_status == b"INSERT 0 2", res.command_status
        while c.pgconn.get_result() is not None:
            pass
    finally:
        holder.close()
        c.close()
    check_rows(shards, {ks[0][0]: "a", ks[1][0]: "wait"}, "COMMIT PREPARED run again")

