#!/usr/bin/env python3
# make_stream_corpus.py: writes the seed scripts of fuzz_stream and fuzz_stream_route (tests/fuzz/corpus/stream*/), in stream_peer.c's op encoding.
#
# A seed is a script: an op byte (its value modulo N_OPS picks the op) followed by the op's
# argument bytes.  The numbers below mirror the enums of tests/fuzz/stream_peer.c: change
# both together.  To read a script as ops and messages, run a harness on it with STREAM_DEBUG=1.
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
CORPUS = os.path.join(HERE, "corpus")

OPS = ["OPEN", "QUERY", "PARSE", "BIND", "DESCRIBE", "EXECUTE", "CLOSE", "SYNC",
       "FLUSH", "COPYDATA", "COPYDONE", "COPYFAIL", "TERMINATE", "FUNCCALL", "RAW",
       "BADMSG", "CHUNK", "PUMP", "DISCONNECT", "CANCEL", "CLI_STALL", "SV_ERR",
       "SV_RAW", "SV_LIE", "SV_CLOSE", "SV_STALL", "SV_SIZE", "SV_LOGIN", "SV_ASYNC",
       "BATCH", "REPEAT", "SLEEP"]
OP = {n: i for i, n in enumerate(OPS)}

# gen_text: template | flags
TEXTS = ["select1", "param", "begin", "commit", "rollback", "sleep", "copyin", "copyout",
         "discard", "dealloc", "dealloc_all", "set_app", "set_tz", "err", "empty", "prepare",
         "execute", "insert", "multi", "reset", "literal", "big", "dealloc_learned",
         "shard_select", "pgmux_set", "advisory", "shard_update", "commit_begin", "do",
         "start_ro", "nextval", "end"]
T = {n: i for i, n in enumerate(TEXTS)}
NOTOK, LEAD, LOWER = 32, 64, 128
# templates followed by one more byte (a name choice or a number)
TEXT_ARG = {"dealloc", "prepare", "execute", "set_app", "set_tz", "big", "shard_select",
            "pgmux_set", "shard_update"}

# gen_name (statements) and gen_name(portal=True)
NAMES = ["", "s1", "s2", "s3", "S1", "asyncpg", "n63", "n64", "q16000", "counter", "learned",
         "quote", "refused", "pg3", "r20000", "literal"]
N = {n: i for i, n in enumerate(NAMES)}
PORTAL = {"": 0, "p1": 2, "p2": 3, "p20000": 4, "counter": 5}
SIZES = [0, 1, 10, 100, 1000, 4000, 16379, 16384, 20000, 70000, 300000]


def size(n):
    return SIZES.index(n)


def value(n=None, null=False):
    """A Bind parameter choice: a digit, NULL, or n bytes."""
    if null:
        return 1
    if n is None:
        return 0
    return 8 * size(n) + 2


# OPEN flags
LISTENER, SMALLBUF, SSLREQ, PROTO32, APPNAME, PQOPT, TZ, CHUNK3 = 1, 2, 4, 8, 16, 32, 64, 128
# BATCH kinds
PSQL, ASYNCPG_PREPARE, ASYNCPG_EXEC, PSYCOPG, NAMED, COPY_IN, COPY_FAIL, COPY_EXT, CLOSE_SYNC, DEFECT1 = range(10)
# SV_LOGIN modes
LOGINS = ["ok", "fatal", "cleartext", "md5", "sasl", "garbage", "close", "notice", "nokey",
          "saslfinal", "bigparam", "intx", "lateerror", "negotiate"]


class Script:
    def __init__(self):
        self.b = bytearray()

    def raw(self, *xs):
        for x in xs:
            if isinstance(x, (bytes, bytearray)):
                self.b += x
            else:
                self.b.append(x & 0xff)
        return self

    def op(self, name, *args):
        return self.raw(OP[name], *args)

    def text(self, name, arg=None, flags=0, lit=b""):
        out = [T[name] | flags]
        if name in TEXT_ARG:
            out.append(arg or 0)
        if name == "literal":
            out += [len(lit)] + list(lit)
        return out

    # client messages
    def open(self, k, user=0, db=0, flags=0):
        return self.op("OPEN", k, user, db, flags)

    def query(self, k, *text):
        return self.op("QUERY", k, *text)

    def parse(self, k, name, text, nparams=0):
        return self.op("PARSE", k, name, *text, nparams)

    def bind(self, k, portal, name, *values):
        return self.op("BIND", k, portal, name, len(values), *values)

    def execute(self, k, portal=0, maxrows=0):
        return self.op("EXECUTE", k, portal, maxrows)

    def describe(self, k, kind, name):
        return self.op("DESCRIBE", k, 1 if kind == "P" else 0, name)

    def close(self, k, kind, name):
        return self.op("CLOSE", k, 1 if kind == "P" else 0, name)

    def sync(self, k):
        return self.op("SYNC", k)

    def flush(self, k, b=0):
        return self.op("FLUSH", k, b)

    def pump(self):
        return self.op("PUMP")

    def batch(self, k, kind, *args):
        return self.op("BATCH", k, kind, *args)


def write(harness, name, s):
    d = os.path.join(CORPUS, harness)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(bytes(s.b))


def plain_seeds():
    h = "stream"
    sel = lambda f=0: [T["select1"] | f]
    # psql: simple queries, a transaction, Terminate
    s = Script().open(0).query(0, *sel()).pump()
    s.query(0, T["begin"]).query(0, T["insert"]).query(0, T["commit"]).pump()
    s.op("TERMINATE", 0)
    write(h, "psql_simple", s)
    # asyncpg: Parse/Describe/Flush, then Bind/Execute/Sync, the statement reused
    s = Script().open(0)
    s.batch(0, ASYNCPG_PREPARE, N["asyncpg"], T["param"], 1).pump()
    s.batch(0, ASYNCPG_EXEC, 0, N["asyncpg"], 1, value()).pump()
    s.batch(0, ASYNCPG_EXEC, 0, N["asyncpg"], 1, value(100)).pump()
    write(h, "asyncpg", s)
    # psycopg pipeline mode: unnamed statements, three batches in one write
    s = Script().open(0, 1)
    for _ in range(3):
        s.batch(0, PSYCOPG, *sel(), 0, 0, 0)
    s.pump()
    write(h, "psycopg_pipeline", s)
    # COPY FROM STDIN: done, failed, extended
    write(h, "copy_in", Script().open(0).batch(0, COPY_IN, size(1000)).pump().query(0, *sel()).pump())
    write(h, "copy_fail", Script().open(0).batch(0, COPY_FAIL, size(100)).pump().query(0, *sel()).pump())
    write(h, "copy_extended", Script().open(0).batch(0, COPY_EXT, size(16384)).pump())
    write(h, "copy_out", Script().open(0).op("SV_SIZE", 3).query(0, T["copyout"]).pump())
    # issue 11, defect 2: a Flush flood behind a slow query, another client on the same server
    s = Script().open(0, 0, 1).open(1, 4, 1).query(0, T["sleep"]).flush(0, 255)
    s.query(1, *sel()).pump()
    write(h, "flush_flood", s)
    # issue 11, defect 1: s1 prepared, then the 20,000-byte portal name among Parses
    s = Script().open(0).parse(0, N["s1"], sel(NOTOK)).sync(0).pump()
    s.batch(0, DEFECT1, size(70000)).pump()
    write(h, "defect1_portal", s)
    # named statements reused by two clients sharing one server (pool_size=1)
    s = Script().open(0, 0, 1).open(1, 4, 1)
    for k in (0, 1):
        s.parse(k, N["s1"], sel(NOTOK)).bind(k, 0, N["s1"]).execute(k).sync(k)
    s.pump()
    for k in (0, 1):
        s.bind(k, 0, N["s1"]).execute(k).sync(k)
    s.pump()
    write(h, "named_shared", s)
    # DEALLOCATE by simple query and by unnamed Parse, DEALLOCATE ALL, DISCARD ALL
    s = Script().open(0).parse(0, N["s1"], sel()).parse(0, N["s2"], sel()).sync(0).pump()
    s.query(0, T["dealloc"] | NOTOK, N["s1"]).pump()
    s.parse(0, 0, [T["dealloc"] | NOTOK | LEAD, N["s2"]]).bind(0, 0, 0).execute(0).sync(0).pump()
    s.query(0, T["dealloc_all"]).query(0, T["discard"]).pump()
    s.bind(0, 0, N["s1"]).execute(0).sync(0).pump()
    write(h, "deallocate", s)
    # SQL naming pgmux's own statement: refused (42501)
    s = Script().open(0).parse(0, N["s1"], sel()).sync(0).pump()
    s.query(0, T["dealloc_learned"] | NOTOK).pump()
    s.parse(0, N["s2"], [T["dealloc_learned"]]).sync(0).pump()
    write(h, "own_name_refused", s)
    # oversized Parse (over max_client_memory), oversized Bind, huge portal name
    s = Script().open(0).parse(0, N["s1"], [T["big"], size(300000)]).sync(0).pump()
    s.parse(0, 0, [T["param"]], 1).bind(0, PORTAL["p20000"], 0, value(300000)).execute(0).sync(0).pump()
    s.query(0, *sel()).pump()
    write(h, "oversized", s)
    # 16,000-byte statement names until max_client_memory refuses
    s = Script().open(0).parse(0, N["q16000"], sel()).sync(0).pump()
    s.parse(0, N["counter"], sel()).op("REPEAT", 30).sync(0).pump()
    write(h, "name_flood", s)
    # more statements than max_prepared_statements: the server LRU closes old ones
    s = Script().open(0)
    s.parse(0, N["counter"], [T["literal"], 2, ord("a"), ord("b")]).op("REPEAT", 8).sync(0).pump()
    s.parse(0, N["s1"], sel()).bind(0, 0, N["s1"]).execute(0).sync(0).pump()
    s.parse(0, N["s2"], sel()).bind(0, 0, N["s1"]).execute(0).sync(0).pump()
    write(h, "lru_eviction", s)
    # errors: in a pipeline (skip to Sync), in a transaction, a failing Parse
    s = Script().open(0).parse(0, N["s1"], [T["err"]]).bind(0, 0, N["s1"]).execute(0).sync(0)
    s.query(0, T["begin"]).query(0, T["err"]).query(0, *sel()).query(0, T["rollback"]).pump()
    s.op("SV_ERR", 1).batch(0, NAMED, N["s2"], *sel(), 0).pump()
    write(h, "errors", s)
    # a client that leaves mid-transaction, mid-message, mid-COPY
    s = Script().open(0, 0, 1).query(0, T["begin"]).pump().op("DISCONNECT", 0, 0)
    s.open(1, 4, 1).query(1, *sel()).pump()
    s.query(1, T["copyin"]).op("COPYDATA", 1, size(100)).pump().op("DISCONNECT", 1, 1)
    s.open(2, 0, 1).query(2, *sel()).pump()
    write(h, "disconnects", s)
    # statement pooling refuses transactions; session pooling resets with DISCARD ALL
    write(h, "statement_mode", Script().open(0, 3).query(0, T["begin"]).query(0, *sel()).pump())
    s = Script().open(0, 2).parse(0, N["s1"], sel()).bind(0, 0, N["s1"]).execute(0).sync(0).pump()
    s.op("TERMINATE", 0).pump().open(1, 2).query(1, *sel()).pump()
    write(h, "session_mode", s)
    # split at byte boundaries
    s = Script().open(0, 0, 0, CHUNK3).op("CHUNK", 0, 1)
    s.batch(0, NAMED, N["s1"], T["param"], 1).batch(0, ASYNCPG_EXEC, 0, N["s1"], 1, value(1000)).pump()
    write(h, "chunked", s)
    # a cancel request while a query runs
    s = Script().open(0).pump().op("SV_STALL", 0, 0).query(0, T["sleep"]).pump()
    s.op("CANCEL", 0).pump().op("SV_STALL", 0, 0).pump()
    write(h, "cancel", s)
    # backpressure: a client that does not read a big result, the server that does not read
    s = Script().open(0, 0, 0, SMALLBUF).op("CLI_STALL", 0).op("SV_SIZE", 3 + 5 * 3)
    s.query(0, *sel()).pump().op("CLI_STALL", 0).pump()
    write(h, "client_full", s)
    s = Script().open(0).query(0, *sel()).pump().op("SV_STALL", 0, 1)
    s.op("COPYDATA", 0, size(300000)).query(0, *sel()).pump().op("SV_STALL", 0, 1).pump()
    write(h, "server_full", s)
    # session parameters: startup, SET, server-side ParameterStatus
    s = Script().open(0, 0, 0, APPNAME | TZ | PQOPT | PROTO32 | SSLREQ)
    s.query(0, T["set_app"], 1).query(0, T["set_tz"], 1).pump().open(1, 1, 0, LISTENER).query(1, *sel()).pump()
    s.query(0, *sel()).op("SV_ASYNC", 0, 2).pump()
    write(h, "params", s)
    # console
    s = Script().open(0, 0, 4)
    for cmd in (b"SHOW POOLS", b"SHOW CLIENTS", b"SHOW SERVERS", b"SHOW STATS", b"SHOW CONFIG",
                b"SHOW DATABASES", b"SHOW MEM", b"SHOW LISTS", b"SHOW VERSION", b"PAUSE"):
        s.query(0, T["literal"] | NOTOK, len(cmd), cmd)
    s.pump()
    write(h, "console", s)
    # hostile server: lies, raw bytes, bad logins, a connection cut
    s = Script().open(0).query(0, *sel()).pump().op("SV_LIE", 0, 0).query(0, *sel()).pump()
    write(h, "srv_extra_ready", s)
    s = Script().open(0).query(0, *sel()).pump().op("SV_LIE", 0, 5).op("SV_LIE", 0, 6).pump()
    write(h, "srv_bad_errors", s)
    s = Script().open(0).op("SV_RAW", 0, 7, *b"D\x00\x00\x00\x04ZZ").query(0, *sel()).pump()
    write(h, "srv_raw", s)
    for i, m in enumerate(LOGINS[1:], 1):
        write(h, f"login_{m}", Script().op("SV_LOGIN", i).open(0).query(0, *sel()).pump().open(1).query(1, *sel()).pump())
    s = Script().open(0, 0, 1).open(1, 4, 1).query(0, T["begin"]).pump().op("SV_CLOSE", 0).query(1, *sel()).pump()
    write(h, "srv_close", s)
    # function call, bad messages, raw bytes
    write(h, "funccall", Script().open(0).op("FUNCCALL", 0).pump())
    write(h, "bad_bind", Script().open(0).op("BADMSG", 0, 1, 6, *b"\x00\x00\x00\x05ab").op("SYNC", 0).pump())
    write(h, "raw_client", Script().open(0).op("RAW", 0, 7, *b"Q\x00\x00\x00\x03xx").pump())
    # portals: suspended executes
    s = Script().open(0).op("SV_SIZE", 3).parse(0, 0, sel()).bind(0, PORTAL["p1"], 0)
    s.execute(0, PORTAL["p1"], 1).execute(0, PORTAL["p1"], 2).sync(0).pump()
    write(h, "portal_suspend", s)


def route_seeds():
    h = "stream_route"
    sel = lambda f=0: [T["select1"] | f]
    # users 0 u0 (transaction), 1 s0 (session); dbs 0 r (read routing), 1 s (sharded), 2 plain
    s = Script().open(0, 0, 0).query(0, *sel()).query(0, T["insert"]).pump()
    s.query(0, T["begin"]).query(0, *sel()).query(0, T["insert"]).query(0, T["commit"]).pump()
    write(h, "read_write", s)
    s = Script().open(0, 0, 0).query(0, T["pgmux_set"], 0).query(0, *sel()).query(0, T["pgmux_set"], 1).query(0, *sel()).pump()
    write(h, "role_hint", s)
    s = Script().open(0, 0, 0).query(0, T["advisory"]).query(0, T["nextval"]).query(0, T["start_ro"]).query(0, *sel()).query(0, T["commit"]).pump()
    write(h, "write_functions", s)
    s = Script().open(0, 0, 0).batch(0, ASYNCPG_PREPARE, N["s1"], T["param"], 1).pump()
    s.batch(0, ASYNCPG_EXEC, 0, N["s1"], 1, value()).pump()
    write(h, "routed_asyncpg", s)
    s = Script().open(0, 0, 1).query(0, T["shard_select"], 7).query(0, T["shard_update"], 8).pump()
    s.query(0, *sel()).pump()
    write(h, "sharded", s)
    s = Script().open(0, 0, 1).op("SV_SIZE", 3).query(0, *sel()).pump()
    write(h, "fanout", s)
    s = Script().open(0, 0, 1).query(0, T["begin"]).query(0, T["shard_select"], 7).query(0, T["shard_select"], 8).query(0, T["commit"]).pump()
    write(h, "shard_switch", s)
    s = Script().open(0, 0, 1).query(0, T["pgmux_set"], 3).query(0, *sel()).query(0, T["pgmux_set"], 4).query(0, *sel()).pump()
    write(h, "shard_hints", s)
    s = Script().open(0, 0, 1).parse(0, N["s1"], [T["shard_select"], 3]).sync(0).pump()
    s.bind(0, 0, N["s1"]).execute(0).sync(0).pump()
    write(h, "shard_prepared", s)
    s = Script().open(0, 1, 0).query(0, *sel()).query(0, T["insert"]).pump()
    write(h, "session_routed", s)
    s = Script().open(0, 0, 0).op("SV_LOGIN", 1).query(0, *sel()).pump().query(0, *sel()).pump()
    write(h, "backend_login_fails", s)
    s = Script().open(0, 0, 0).query(0, *sel()).pump().op("SV_CLOSE", 0).query(0, *sel()).pump()
    write(h, "backend_dies", s)
    s = Script().open(0, 0, 0).query(0, T["insert"]).pump().query(0, *sel()).pump()
    s.query(0, T["begin"]).query(0, T["insert"]).query(0, T["commit"]).query(0, *sel()).pump()
    write(h, "read_your_writes", s)
    s = Script().open(0, 0, 0).open(1, 0, 1)
    s.batch(0, PSYCOPG, *sel(), 0, 0, 0).batch(1, PSYCOPG, T["shard_select"], 5, 0, 0, 0).pump()
    write(h, "pipelines", s)
    s = Script().open(0, 0, 1).query(0, T["big"], size(70000)).pump()
    write(h, "big_routed_query", s)


def main():
    plain_seeds()
    route_seeds()
    return 0


if __name__ == "__main__":
    sys.exit(main())
