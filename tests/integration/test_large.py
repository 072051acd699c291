"""Large results and large parameters: 10 MB in one result, in one value and in one request."""

import hashlib

from pgharness import run_async, timeout

MB = 1024 * 1024


def _large(env, mode):
    db = env.database()
    px = env.pgmux([db], {"pool_mode": mode, "default_pool_size": 2})
    with px.connect(db) as c:
        # 100 rows of 100 kB: 10 MB in one result set
        rows = c.execute("SELECT g, repeat(md5(g::text), 3200) FROM generate_series(1, 100) g"
                         ).fetchall()
        assert len(rows) == 100
        assert sum(len(r[1]) for r in rows) == 100 * 3200 * 32
        for g, v in (rows[0], rows[57], rows[-1]):
            assert v == hashlib.md5(str(g).encode()).hexdigest() * 3200
        # one 10 MB value (a single DataRow larger than any buffer)
        big = c.execute("SELECT repeat('ab', 5 * 1024 * 1024)").fetchone()[0]
        assert len(big) == 10 * MB and big[:4] == "abab" and big[-2:] == "ab"
        # 200,000 small rows (~10 MB on the wire)
        cnt, total = 0, 0
        with c.cursor() as cur:
            cur.execute("SELECT g, md5(g::text) FROM generate_series(1, 200000) g")
            for g, h in cur:
                cnt += 1
                total += g
                if g == 123456:
                    assert h == hashlib.md5(b"123456").hexdigest()
        assert (cnt, total) == (200000, 200000 * 200001 // 2)
        # a 10 MB parameter travels to the server intact
        payload = ("0123456789abcdef" * (10 * MB // 16))
        n, h = c.execute("SELECT length(x), md5(x) FROM (SELECT %s::text AS x) s",
                         (payload,)).fetchone()
        assert (n, h) == (len(payload), hashlib.md5(payload.encode()).hexdigest())
        # and the connection is still in step afterwards
        assert c.execute("SELECT 'after'").fetchone()[0] == "after"


@timeout(120)
def test_large_session_mode(env):
    _large(env, "session")


@timeout(120)
def test_large_transaction_mode(env):
    _large(env, "transaction")


@timeout(60)
def test_large_asyncpg(env):
    db = env.database()
    px = env.pgmux([db], {"pool_mode": "session"})

    async def go():
        conn = await px.aconnect(db)
        try:
            v = await conn.fetchval("SELECT repeat('xyz', 4 * 1024 * 1024)")
            rows = await conn.fetch("SELECT g, repeat('r', 1000) FROM generate_series(1, 10000) g")
            return len(v), len(rows), sum(r[0] for r in rows), rows[-1][1]
        finally:
            await conn.close()
    n, nrows, total, last = run_async(go(), 50)
    assert n == 12 * MB
    assert (nrows, total, last) == (10000, 10000 * 10001 // 2, "r" * 1000)
