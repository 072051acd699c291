"""COPY FROM STDIN and COPY TO STDOUT through pgmux (psycopg 3 and psql), in session and
transaction mode, including a COPY the client aborts."""

import os
import subprocess

import psycopg

from pgharness import pg_bin, timeout

ROWS = 50_000


def _copy_roundtrip(env, mode):
    db = env.database()
    px = env.pgmux([db], {"pool_mode": mode, "default_pool_size": 2})
    env.sql(db, "CREATE TABLE items (id int PRIMARY KEY, name text, price numeric)")
    with px.connect(db) as c:
        with c.cursor() as cur:
            with cur.copy("COPY items (id, name, price) FROM STDIN") as cp:
                for i in range(ROWS):
                    cp.write_row((i, f"item-{i}\twith tab", f"{i}.25"))
            assert cur.rowcount == ROWS
        # the data arrived intact (checked directly on the server)
        n, s, sample = env.sql(db, "SELECT count(*), sum(id), (SELECT name FROM items "
                                   "WHERE id = 4242) FROM items")[0]
        assert (n, s, sample) == (ROWS, ROWS * (ROWS - 1) // 2, "item-4242\twith tab")
        # and comes back through COPY TO STDOUT
        got = []
        with c.cursor() as cur:
            with cur.copy("COPY (SELECT id, name, price FROM items ORDER BY id) TO STDOUT") as cp:
                for row in cp.rows():
                    got.append(row)
        assert len(got) == ROWS
        assert got[0] == ("0", "item-0\twith tab", "0.25")
        assert got[-1] == (str(ROWS - 1), f"item-{ROWS - 1}\twith tab", f"{ROWS - 1}.25")
        # raw COPY out in binary-safe text form (blocks of bytes)
        with c.cursor() as cur:
            raw = bytearray()
            with cur.copy("COPY (SELECT id FROM items WHERE id < 1000 ORDER BY id) "
                          "TO STDOUT") as cp:
                for block in cp:
                    raw += block
        assert bytes(raw) == "".join(f"{i}\n" for i in range(1000)).encode()

        # a COPY the client aborts (CopyFail): error, nothing inserted, connection usable
        class Abort(Exception):
            pass
        try:
            with c.cursor() as cur:
                with cur.copy("COPY items (id, name, price) FROM STDIN") as cp:
                    cp.write_row((ROWS + 1, "x", "1"))
                    raise Abort()
        except (Abort, psycopg.errors.QueryCanceled):
            pass
        assert c.execute("SELECT count(*) FROM items").fetchone()[0] == ROWS
        # a COPY the server rejects (duplicate key) then a normal query
        try:
            with c.cursor() as cur:
                with cur.copy("COPY items (id, name, price) FROM STDIN") as cp:
                    cp.write_row((1, "dup", "1"))
            raise AssertionError("duplicate key accepted")
        except psycopg.errors.UniqueViolation:
            pass
        assert c.execute("SELECT count(*), max(id) FROM items").fetchone() == (ROWS, ROWS - 1)


@timeout(90)
def test_copy_session_mode(env):
    _copy_roundtrip(env, "session")


@timeout(90)
def test_copy_transaction_mode(env):
    _copy_roundtrip(env, "transaction")


@timeout(60)
def test_copy_psql(env):
    db = env.database()
    px = env.pgmux([db], {"pool_mode": "transaction", "default_pool_size": 1})
    env.sql(db, "CREATE TABLE t (a int, b text)")
    data = "".join(f"{i}\tv{i}\n" for i in range(5000))
    src = env.dir / "in.tsv"
    src.write_text(data)
    out = env.dir / "out.tsv"
    px.psql(db, f"\\copy t FROM '{src}'")
    px.psql(db, f"\\copy (SELECT * FROM t ORDER BY a) TO '{out}'")
    assert out.read_text() == data
    assert px.psql(db, "SELECT count(*), sum(a) FROM t").stdout.strip() == "5000|12497500"
