"""The live status page on stats_listen: GET / (HTML, no script, nothing fetched from elsewhere)
and GET /status.json, with a saturated pool, a waiting client, the 15-minute history, a routed
database's backends, and names chosen by a hostile client escaped in both."""

import json
import re
import threading
import time
import urllib.request

import psycopg

from pgharness import TEST_USER, free_port, timeout, wait_for


def get(port, path):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as r:
        return r.status, r.headers.get("Content-Type"), r.read().decode()


def pool_of(doc, db):
    return [p for p in doc["pools"] if p["database"] == db]


@timeout(120)
def test_status_page_saturated_pool(env):
    db = env.database()
    mport = free_port()
    px = env.pgmux([db], {"pool_mode": "transaction", "default_pool_size": 2,
                          "saturation_warn": 0.5, "stats_listen": f"127.0.0.1:{mport}"})
    # two clients hold both servers in open transactions; a third waits for one
    held = [px.connect(db, autocommit=False) for _ in range(2)]
    for c in held:
        c.execute("SELECT 1")
    waiter_done = threading.Event()

    def waiter():
        with px.connect(db) as c:
            c.execute("SELECT 1")
        waiter_done.set()
    t = threading.Thread(target=waiter, daemon=True)
    t.start()
    try:
        wait_for(lambda: pool_of(json.loads(get(mport, "/status.json")[2]), db) and
                 pool_of(json.loads(get(mport, "/status.json")[2]), db)[0]["cl_waiting"] >= 1,
                 10, 0.1, "a waiting client on the status page")
        time.sleep(2.2)   # two one-second samples of the saturated pool
        code, ctype, body = get(mport, "/status.json")
        assert code == 200 and ctype.startswith("application/json"), (code, ctype)
        doc = json.loads(body)
        p = pool_of(doc, db)[0]
        assert p["user"] == TEST_USER and p["pool_mode"] == "transaction"
        assert p["pool_size"] == 2 and p["sv_active"] == 2 and p["saturation"] == 1.0, p
        assert p["cl_waiting"] >= 1 and p["maxwait_seconds"] > 0, p
        assert p["saturated_seconds"] >= 1, p
        hist = p["saturation_history"]
        assert isinstance(hist, list) and len(hist) >= 2 and hist[-1] == 100, hist
        assert doc["history_seconds"] == 900 and doc["saturation_warn"] == 0.5
        assert doc["pools_total"] == len(doc["pools"]) and doc["pools_omitted"] == 0
        assert doc["clients"] >= 3 and doc["servers"] >= 2, doc

        code, ctype, html = get(mport, "/")
        assert code == 200 and ctype.startswith("text/html"), (code, ctype)
        assert html.startswith("<!DOCTYPE html>") and html.rstrip().endswith("</html>")
        assert '<meta http-equiv="refresh"' in html
        # self-contained: no script and nothing loaded from elsewhere
        assert "<script" not in html.lower()
        assert not re.search(r'(src|href)="(https?:)?//', html), "loads something from elsewhere"
        row = re.search(rf"<tr><td class=\"l\">{re.escape(db)}</td>.*?</tr>", html)
        assert row, html[:2000]
        row = row.group(0)
        assert 'class="bar full"' in row and 'title="100%"' in row, row
        assert 'class="mark" style="left:50%"' in row, row   # the saturation_warn mark
        assert "<svg" in row and "<polyline" in row, row
        assert "<td>2/2</td>" in row, row
    finally:
        for c in held:
            c.rollback()
            c.close()
    assert waiter_done.wait(10)


@timeout(90)
def test_status_page_escapes_client_names(env):
    db = env.database()
    mport = free_port()
    # an auto-database: the name a client asks for becomes a pool's name on the page
    px = env.pgmux({"*": env.db_entry(db) + f" dbname={db}"},
                   {"stats_listen": f"127.0.0.1:{mport}", "auth_type": "trust"})
    evil = "<script>alert(1)</script>\"'&x"
    try:
        with psycopg.connect(px.dsn(evil), connect_timeout=10) as c:
            c.execute("SELECT 1")
    except psycopg.Error:
        pass   # whether it logs in or not, the pool exists and must be shown safely
    code, _, html = get(mport, "/")
    assert code == 200
    assert "<script>alert(1)" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;&quot;&#39;&amp;x" in html, html
    doc = json.loads(get(mport, "/status.json")[2])   # still valid JSON, the name intact
    assert evil in {p["database"] for p in doc["pools"]}, doc["pools"]


@timeout(120)
def test_status_page_routed_backends(env):
    from test_routing import routed, shared_setup
    reps, db = shared_setup(env, 1)
    mport = free_port()
    px = routed(env, db, env.pg, reps, settings={"stats_listen": f"127.0.0.1:{mport}"})
    with px.connect(db) as c:
        c.execute("SELECT 1")
    doc = json.loads(get(mport, "/status.json")[2])
    roles = sorted((b["role"], b["health"]) for b in doc["backends"] if b["database"] == db)
    assert roles == [("primary", "up"), ("replica", "up")], doc["backends"]
    assert [s["shard"] for s in doc["shards"] if s["database"] == db] == [0], doc["shards"]
    html = get(mport, "/")[2]
    assert "Backends of routed databases" in html and "<h2>Shards</h2>" in html
    assert '<td class="l up">up</td>' in html
