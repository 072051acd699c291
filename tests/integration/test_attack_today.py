"""Defects found attacking the pstext branch (DEALLOCATE / DEALLOCATE ALL / DISCARD ALL
tracking in prepared.c + pstext.c, refused batches on sharded databases in route_msg.c).
Each test states PostgreSQL's own behaviour (checked against PostgreSQL 15 directly) and fails
while pgmux differs."""

import re
import struct

import rawpg
from pgharness import TEST_USER, timeout
from test_sharding import DB as SHARD_DB, sharded_env
from test_stream_findings import _alive, _parse, _tcp

TXP = {"pool_mode": "transaction", "default_pool_size": 1, "max_prepared_statements": 100}
INTERNAL = re.compile(rb"pgmux_\d+_\d+")


def _run(c, data, n=1):
    c.send(data)
    return [c.read_until_ready(timeout=10) for _ in range(n)]


def _bx(stmt):
    return rawpg.bind("", stmt) + rawpg.execute() + rawpg.SYNC


def _errs(msgs):
    return [(e.get("C"), e.get("M")) for e in rawpg.errors(msgs)]


def _prepared(px, db, *stmts):
    c = _tcp(px, db, timeout=10)
    for name, sql in stmts:
        assert rawpg.types(_run(c, _parse(name, sql) + rawpg.SYNC)[0]) == "1Z"
        assert rawpg.types(_run(c, _bx(name))[0]) == "2DCZ"   # confirmed on the server
    return c


@timeout(30)
def test_dealloc_all_multi_leaks_name(env):
    """A DEALLOCATE ALL that pgmux does not recognise at send time (inside a multi-statement
    Query, or an unnamed Parse/Bind/Execute) leaves the client's pipelined Bind renamed to
    pgmux's server-side name: the server's 26000 error shows the client pgmux_<token>_<n>.
    PostgreSQL: `prepared statement "s1" does not exist`.
    Code: prepared.c ps_client_message 'Q' (drops_all only for a lone DEALLOCATE ALL) and
    no drops_all for 'P'; the renamed Bind is built in client_uses_stmt before the tag returns."""
    db = env.database()
    px = env.pgmux([db], TXP)
    c = _prepared(px, db, ("s1", "SELECT 11"), ("s2", "SELECT 22"))
    q, b = _run(c, rawpg.query("SELECT 1; DEALLOCATE ALL") + _bx("s1"), 2)
    assert not rawpg.errors(q)
    assert not [m for _, m in q + b if INTERNAL.search(m)], _errs(b)
    assert _errs(b) == [("26000", 'prepared statement "s1" does not exist')], _errs(b)
    c.close()
    c = _prepared(px, db, ("s2", "SELECT 22"))
    x, b = _run(c, rawpg.parse("DEALLOCATE ALL") + rawpg.bind() + rawpg.execute() + rawpg.SYNC +
                _bx("s2"), 2)
    assert not [m for _, m in x + b if INTERNAL.search(m)], _errs(b)
    assert _errs(b) == [("26000", 'prepared statement "s2" does not exist')], _errs(b)
    c.close()
    _alive(px, db)


@timeout(30)
def test_dealloc_all_then_reparse_pipelined(env):
    """Query DEALLOCATE ALL with Parse of the same name pipelined behind it: PostgreSQL drops
    the old statements first, so the new Parse succeeds (answer 3) and the other old name b is
    gone (26000).  pgmux refuses the Parse with 42P05 "already exists" (the client's name is
    dropped only when the answer comes) and still runs b (answers 2).
    Code: prepared.c client_parse checks the name map at send time; drop_upto / cmap_clear_upto
    only act on the CommandComplete."""
    db = env.database()
    px = env.pgmux([db], TXP)
    c = _prepared(px, db, ("a", "SELECT 1"), ("b", "SELECT 2"))
    d, a, b = _run(c, rawpg.query("DEALLOCATE ALL") + _parse("a", "SELECT 3") + _bx("a") +
                   _bx("b"), 3)
    assert rawpg.types(d) == "CZ"
    assert not rawpg.errors(a) and rawpg.rows(a) == [("3",)], _errs(a)
    assert [e for e, _ in _errs(b)] == ["26000"], (rawpg.types(b), rawpg.rows(b))
    c.close()


@timeout(30)
def test_multi_dealloc_all_keeps_later_parse(env):
    """"SELECT 5; DEALLOCATE ALL" followed by a pipelined Parse b: PostgreSQL keeps b (made
    after the DEALLOCATE ALL ran).  pgmux clears every client name when the tag arrives
    (cmap_clear, drop_upto is 0 for a multi-statement Query), so b is reported missing.
    Code: prepared.c ps_server_message case 'C'."""
    db = env.database()
    px = env.pgmux([db], TXP)
    c = _prepared(px, db, ("a", "SELECT 1"))
    _run(c, rawpg.query("SELECT 5; DEALLOCATE ALL") + _parse("b", "SELECT 3") + rawpg.SYNC, 2)
    b = _run(c, _bx("b"))[0]
    assert not rawpg.errors(b) and rawpg.rows(b) == [("3",)], _errs(b)
    c.close()


@timeout(30)
def test_failed_dealloc_keeps_statement(env):
    """DEALLOCATE s6 in an aborted transaction fails (25P02) and, in PostgreSQL, s6 survives
    the ROLLBACK.  pgmux answers 25P02 but has already dropped the client's name
    (client_deallocate: cname_del at send time), so the next Bind gets 26000.
    Code: prepared.c client_deallocate."""
    db = env.database()
    px = env.pgmux([db], TXP)
    c = _prepared(px, db, ("s6", "SELECT 66"))
    assert rawpg.types(c.query("BEGIN")) == "CZ"
    assert [e for e, _ in _errs(c.query("SELECT 1/0"))] == ["22012"]
    assert [e for e, _ in _errs(c.query("DEALLOCATE s6"))] == ["25P02"]
    assert rawpg.types(c.query("ROLLBACK")) == "CZ"
    b = _run(c, _bx("s6"))[0]
    assert not rawpg.errors(b) and rawpg.rows(b) == [("66",)], _errs(b)
    c.close()


@timeout(30)
def test_unnamed_parse_dealloc_not_run(env):
    """An unnamed Parse of "DEALLOCATE a" that never executes (no Bind/Execute, or skipped
    after an earlier error in its batch) drops nothing in PostgreSQL; pgmux drops the client's
    name a when the Parse is sent, so a later Bind of a gets 26000.
    Code: prepared.c client_deallocate ('P' path)."""
    db = env.database()
    px = env.pgmux([db], TXP)
    c = _prepared(px, db, ("a", "SELECT 1"))
    assert rawpg.types(_run(c, rawpg.parse("DEALLOCATE a") + rawpg.SYNC)[0]) == "1Z"
    b = _run(c, _bx("a"))[0]
    assert not rawpg.errors(b) and rawpg.rows(b) == [("1",)], _errs(b)
    m = _run(c, rawpg.parse("SELECT 1/0") + rawpg.bind() + rawpg.execute() +
             rawpg.parse("DEALLOCATE a") + rawpg.bind() + rawpg.execute() + rawpg.SYNC)[0]
    assert [e for e, _ in _errs(m)] == ["22012"]
    b = _run(c, _bx("a"))[0]
    assert not rawpg.errors(b) and rawpg.rows(b) == [("1",)], _errs(b)
    c.close()


@timeout(30)
def test_dealloc_text_forms(env):
    """Texts PostgreSQL accepts as DEALLOCATE of the client's statement but pgmux forwards
    unrenamed (so the server says 26000 and the client's statement stays): a comment between
    the words, and the quoted name "all".  And DEALLOCATE of a statement whose Parse failed
    (pipelined behind its Sync) succeeds through pgmux where PostgreSQL says 26000.
    Code: pstext.c pstext_dealloc_name; prepared.c client_deallocate (hidden PREPARE path)."""
    db = env.database()
    px = env.pgmux([db], TXP)
    c = _prepared(px, db, ("s4", "SELECT 44"), ("all", "SELECT 33"))
    assert _errs(c.query("DEALLOCATE /*x*/ s4")) == []
    assert _errs(c.query('DEALLOCATE "all"')) == []
    m = _run(c, _parse("s5", "SELECT * FROM nosuch") + rawpg.SYNC + rawpg.query("DEALLOCATE s5"), 2)
    assert [e for e, _ in _errs(m[1])] == ["26000"], rawpg.types(m[1])
    c.close()


@timeout(60)
def test_refused_batch_answers_nothing(env):
    """A refused extended batch on a sharded database (no shard key): PostgreSQL, after the
    error, answers nothing until Sync (ErrorResponse, ReadyForQuery).  pgmux's refused batch
    answers the Bind with BindComplete after the ErrorResponse ("E2Z"); Describe/Close/Parse
    likewise get NoData/CloseComplete/ParseComplete.
    Code: route_msg.c rt_fake_message ignores rt_fake_err for 'B', 'D', 'C', 'P'."""
    px, _ = sharded_env(env, 2)
    c = rawpg.RawConn.tcp(px.port, SHARD_DB, TEST_USER, timeout=10)
    m = _run(c, rawpg.parse("SELECT * FROM accounts") + rawpg.bind() + rawpg.execute() + rawpg.SYNC)[0]
    assert rawpg.types(m) == "EZ", rawpg.types(m)
    fc = rawpg.message(b"F", struct.pack("!IHHH", 1598, 0, 0, 0))
    m = _run(c, rawpg.parse("SELECT * FROM accounts") + rawpg.query("SELECT 1") + fc +
             rawpg.bind() + rawpg.describe_portal() + rawpg.execute() + rawpg.SYNC)[0]
    assert rawpg.types(m) == "EZ", rawpg.types(m)
    c.close()
