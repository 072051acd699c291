"""shardfuzz: generates statements around the shard key for test_shard_adversarial.test_shard_fuzz.

A small grammar: a key constant (literals in every quoting, casts that keep or change the value,
operators, scalar subqueries, $n parameters of every integer, float and text type in text or
binary format), predicates over it (AND / OR / NOT / IS [NOT] TRUE / = false / CASE /
coalesce, IN, ANY, EXISTS and IN subqueries), statements (SELECT with joins, UNION, CTEs,
derived tables, ORDER BY; UPDATE, also of the key; DELETE; INSERT ... VALUES / SELECT / ON
CONFLICT / RETURNING), decoration that fools a lexer (comments and strings with quote
characters, dollar quotes, quoted identifiers, hint comments), and batches (multi-statement
Query, pipelines, transactions).  Each case is a dict in shard_cases.py's format; case i of a
seed is generated from random.Random(f"{seed}:{i}") alone, so it can be replayed by itself.

Run it by hand to see what it makes:  /usr/bin/python3 tests/integration/shardfuzz.py SEED N
"""

import random
import re
import sys
from decimal import Decimal

from shard_cases import INT_KEYS, TEXT_KEYS, B, T

# keys the statements name: baseline keys (rows exist), fresh ones for inserts
INT_POOL = INT_KEYS + [0, -6, 101, 102, 103, 104, 105, 106, 107, 108, 16777221, 16777225]
FRESH_INT = [101, 102, 103, 104, 105, 106, 107, 108, 109, 110, 111, 112]
TEXT_POOL = TEXT_KEYS + ["aaa ", "aaaz", "new0", "new1", "BOB", "Alice", "x\\\\y", ""]
FRESH_TEXT = ["new0", "new1", "new2", "new3", "new4", "new5", "new6", "new7"]

# strings and comments that hold quote characters and words a naive scanner misreads
TRICKY_STRINGS = ["'it''s'", "E'\\''", "E'a\\'b'", "$q$it's$q$", "$$'$$", "'\"'",
                  "'user_id = 5'", "'OR'", "'; SELECT 1'", "'/* pgmux: shard=1 */'",
                  "'--'", "U&'\\0027'", "'\\'"]
TRICKY_COMMENTS = ["/* it's */", "-- the user's row\n", "/* \" */", "/* OR user_id = 5 */",
                   "-- ; \n", "/* /* nested ' */ */", "/* pgmux: shard=1 */",
                   "/* pgmux: user_id=5 */", "/* $q$ */", "--'\n"]


class Gen:
    def __init__(self, rng, db):
        self.r = rng
        self.db = db
        self.params = []          # P objects for $1..$n
        self.param_ok = True      # whether parameters may be used (False: simple protocol)
        self.asyncpg = False      # parameters typed for asyncpg (explicit casts)

    def chance(self, p):
        return self.r.random() < p

    def pick(self, seq):
        return self.r.choice(seq)

    # -- decoration
    def deco(self, s):
        """Sometimes a comment before or after a fragment."""
        if self.chance(0.12):
            c = self.pick(TRICKY_COMMENTS)
            return f"{c} {s}" if self.chance(0.5) else f"{s} {c}"
        return s

    # -- the key constant
    def param(self, typ, value, fmt, cast=None):
        """A $n placeholder for a new parameter (numbered again by finalize()).  For asyncpg,
        which types parameters by what the server infers, the placeholder says its type."""
        self.params.append((B if fmt == "b" else T)(typ, value))
        s = f"\x01{len(self.params)}\x02"     # $n once finalize() has numbered them
        if self.asyncpg:
            s += "::" + {"unknown": "text"}.get(typ, typ)
        return s + (f"::{cast}" if cast else "")

    def int_const(self, k=None):
        """An expression for an int8 key value: (sql, the value PostgreSQL sees or None)."""
        r = self.r
        k = self.pick(INT_POOL) if k is None else k
        x = r.random()
        if self.param_ok and x < 0.35:
            typ = self.pick(["int2", "int4", "int8", "int8", "float4", "float8", "numeric",
                             "text", "unknown", "bool"])
            fmt = "t" if typ in ("unknown",) or (typ == "numeric" and self.asyncpg) \
                else self.pick("tb")
            if typ == "int2" and not -32768 <= k < 32768:
                typ = "int8"
            if typ == "int4" and not -2**31 <= k < 2**31:
                typ = "int8"
            if typ == "bool":
                return self.param("bool", bool(k), fmt, cast="int"), int(bool(k))
            if typ in ("text", "unknown"):
                return self.param(typ, str(k), fmt, cast="bigint" if typ == "text" or
                                  self.asyncpg or self.chance(0.5) else None), k
            if typ in ("float4", "float8"):
                val = float(k) + self.pick([0.0, 0.0, 0.4, 0.5, 0.6])
                cast = self.pick([None, "bigint", "int4"])
                return self.param(typ, val, fmt, cast=cast), None
            if typ == "numeric":
                val = Decimal(k) + self.pick([Decimal(0), Decimal("0.5"), Decimal("0.00")])
                return self.param(typ, val, fmt, cast=self.pick([None, "bigint"])), None
            return self.param(typ, k, fmt, cast=self.pick([None, None, "bigint", "int8"])), k
        forms = [
            (f"{k}", k), (f"'{k}'", k), (f"{k}::int8", k), (f"{k}::bigint", k),
            (f"CAST({k} AS bigint)", k), (f"({k})", k), (f"'{k}'::int8", k),
            (f"{k}.0", k), (f"{k}::numeric", k), (f"{k}::float8", k), (f"'0{k}'", k),
            (f"{k}::bit(3)::int", None), (f"'{k}'::varchar(1)::bigint", None),
            (f"{k}::float4::bigint", None), (f"{k}::bool::int", None),
            (f"{k} OPERATOR(pg_catalog.+) 1", k + 1), (f"{k} + 0", k), (f"{k} * 2", 2 * k),
            (f"{k} / 2", k // 2 if k >= 0 else None), (f"-{k}", -k), (f"- -{k}", k),
            (f"(SELECT {k})", k), (f"abs({k})", abs(k)), (f"{k}::int2", k),
            (f"{k} # 1", k ^ 1), (f"{k}.5::int", None), (f"B'110'::int + {k}", k + 6),
        ]
        if not -32768 <= k < 32768:
            forms = [f for f in forms if "::int2" not in f[0]]
        return self.pick(forms)

    def text_const(self, k=None):
        r = self.r
        k = self.pick(TEXT_POOL) if k is None else k
        q = "'" + k.replace("'", "''") + "'"
        if self.param_ok and r.random() < 0.35:
            typ = self.pick(["text", "unknown", "unknown", "varchar", "bpchar", "int2", "int4",
                             "int8", "float8"])
            fmt = "t" if typ == "unknown" else self.pick("tb")
            if typ in ("int2", "int4", "int8", "float8"):
                v = self.pick([42, 13, 5, 70, 77])
                if typ == "float8":
                    v = float(v) + self.pick([0.0, 0.5])
                return self.param(typ, v, fmt, cast="text"), None
            if typ == "bpchar":
                return self.param(typ, k + self.pick(["", " "]), fmt,
                                  cast=self.pick(["text", None])), None
            if typ == "varchar":
                return self.param(typ, k, fmt, cast=self.pick([None, "varchar(3)", "text"])), \
                    None
            return self.param(typ, k, fmt, cast=self.pick([None, "text"])), k
        forms = [(q, k), (f"{q}::text", k), (f"E{q.replace(chr(92), chr(92) * 2)}", k),
                 (f"$k${k}$k$" if "$" not in k else q, k), (f"{q}::varchar(3)", None),
                 (f"{q}::char(4)", None), (f"upper({q})", k.upper()),
                 (f"lower({q})", k.lower()), (f"{q} || ''", k), (f"{q} || 'x'", k + "x"),
                 (f"({q})", k), (f"{q} COLLATE \"C\"", k), (f"(SELECT {q})", k),
                 (f"U&{q}", None), (f"{q}::name::text", None), (f"{q}::varchar", k)]
        return self.pick(forms)

    def const(self, k=None):
        return self.int_const(k) if self.db == "int" else self.text_const(k)

    # -- predicates
    def col(self, alias):
        return f"{alias}.user_id" if alias else self.pick(["user_id", "user_id", "\"user_id\""])

    def key_eq(self, alias=None):
        c, _ = self.const()
        col = self.col(alias)
        return self.deco(f"{col} = {c}" if self.chance(0.8) else f"{c} = {col}")

    def atom(self, alias=None, depth=0):
        r = self.r
        table = "accounts" if self.db == "int" else "taccounts"
        a = f"{alias}." if alias else ""
        x = r.random()
        if x < 0.40:
            return self.key_eq(alias)
        if x < 0.48:
            return f"{a}n = {r.randint(0, 3)}"
        if x < 0.53:
            return f"{a}v <> {self.pick(TRICKY_STRINGS)}"
        if x < 0.58:
            ks = ", ".join(self.const()[0] for _ in range(r.randint(1, 3)))
            return f"{a}user_id IN ({ks})"
        if x < 0.62:
            return f"{a}user_id = ANY (ARRAY[{self.const()[0]}, {self.const()[0]}])"
        if x < 0.66:
            op = self.pick(["<", ">", "<>", ">=", "IS DISTINCT FROM"])
            return f"{a}user_id {op} {self.const()[0]}"
        if x < 0.70 and self.db == "int":
            return f"EXISTS (SELECT 1 FROM orders o WHERE o.user_id = {self.const()[0]})"
        if x < 0.74:
            return f"{a}n IN (SELECT n FROM {table} WHERE user_id = {self.const()[0]})"
        if x < 0.77:
            return f"{a}user_id = (SELECT max(user_id) FROM {table} WHERE user_id = " \
                   f"{self.const()[0]})"
        if x < 0.80:
            return self.pick(["true", "false", f"{a}user_id IS NOT NULL"])
        if x < 0.83:
            return f"{a}v = 'v{self.pick(INT_KEYS)}'" if self.db == "int" else \
                f"{a}v = 't{r.randint(0, len(TEXT_KEYS) - 1)}'"
        return self.key_eq(alias)

    def pred(self, alias=None, depth=0):
        r = self.r
        if depth >= 3 or r.random() < 0.35:
            return self.atom(alias, depth)
        x = r.random()
        sub = lambda: self.pred(alias, depth + 1)  # noqa: E731
        if x < 0.35:
            return f"{sub()} AND {sub()}"
        if x < 0.55:
            return f"{sub()} OR {sub()}"
        if x < 0.63:
            return f"({sub()}) {self.pick(['OR', 'AND'])} ({sub()})"
        if x < 0.70:
            return f"NOT ({sub()})"
        if x < 0.75:
            return f"NOT {self.atom(alias)}"
        if x < 0.80:
            return f"({sub()}) IS {self.pick(['NOT TRUE', 'TRUE', 'NOT FALSE', 'FALSE'])}"
        if x < 0.84:
            return f"{self.atom(alias)} IS NOT TRUE"
        if x < 0.88:
            return f"({sub()}) = {self.pick(['false', 'true'])}"
        if x < 0.94:
            return f"CASE WHEN {sub()} THEN {sub()} ELSE {sub()} END"
        return f"coalesce({sub()}, {self.pick(['false', 'true'])})"

    # -- statements
    def select(self):
        r = self.r
        t = "accounts" if self.db == "int" else "taccounts"
        cols = self.pick(["user_id, v, n", "v", "user_id, n", "*"])
        x = r.random()
        if x < 0.45:
            sql = f"SELECT {cols} FROM {t} WHERE {self.pred()}"
        elif x < 0.55:
            sql = f"SELECT a.user_id, a.v FROM {t} a WHERE {self.pred('a')}"
        elif x < 0.62:
            sql = f"SELECT {self.key_eq()} AS k, v FROM {t}" + \
                (f" WHERE {self.pred()}" if self.chance(0.5) else "")
        elif x < 0.68:
            sql = f"SELECT v FROM {t} WHERE {self.pred()} ORDER BY {self.key_eq()}, v"
        elif x < 0.76:
            sql = f"SELECT {cols} FROM {t} WHERE {self.pred()} UNION ALL " \
                  f"SELECT {cols} FROM {t} WHERE {self.pred()}"
        elif x < 0.84:
            sql = f"WITH c AS (SELECT * FROM {t} WHERE {self.pred()}) " \
                  f"SELECT user_id, v FROM c" + \
                  (f" WHERE {self.pred()}" if self.chance(0.5) else "")
        elif x < 0.90:
            sql = f"SELECT s.v FROM (SELECT * FROM {t} WHERE {self.pred()}) s " \
                  f"WHERE {self.pred('s')}"
        elif self.db == "int":
            on = self.pick(["o.user_id = a.user_id", f"o.user_id = {self.const()[0]}",
                            f"o.user_id = a.user_id AND {self.key_eq('a')}"])
            sql = f"SELECT a.v, o.amt FROM accounts a {self.pick(['LEFT JOIN', 'JOIN'])} " \
                  f"orders o ON {on}" + (f" WHERE {self.pred('a')}" if self.chance(0.6) else "")
        else:
            sql = f"SELECT {cols} FROM {t} WHERE {self.pred()}"
        return sql

    def update(self):
        t = "accounts" if self.db == "int" else "taccounts"
        sets = ["n = n + 1", "v = 'upd'", "n = 0"]
        s = self.pick(sets)
        if self.chance(0.25):
            if self.db == "int":
                s += ", " + self.pick(["user_id = user_id + 95", f"user_id = {self.const()[0]}",
                                       "user_id = -user_id", "user_id = user_id"])
            else:
                s += ", " + self.pick(["user_id = user_id || 'x'", "user_id = upper(user_id)",
                                       f"user_id = {self.const()[0]}", "user_id = user_id"])
        if self.chance(0.15):
            return f"UPDATE {t} a SET {s} WHERE {self.pred('a')}"
        return f"UPDATE {t} SET {s} WHERE {self.pred()}"

    def delete(self):
        t = "accounts" if self.db == "int" else "taccounts"
        return f"DELETE FROM {t} WHERE {self.pred()}"

    def insert(self):
        r = self.r
        t = "accounts" if self.db == "int" else "taccounts"
        fresh = FRESH_INT if self.db == "int" else FRESH_TEXT
        x = r.random()
        if x < 0.7:
            nrows = self.pick([1, 1, 1, 2, 3])
            ks = r.sample(fresh, nrows)
            order = self.pick([("user_id", "v", "n"), ("v", "n", "user_id"),
                               ("n", "user_id", "v")])
            rows = []
            for k in ks:
                vals = {"user_id": self.const(k)[0], "v": self.deco("'ins'"),
                        "n": str(r.randint(0, 3))}
                rows.append("(" + ", ".join(vals[c] for c in order) + ")")
            sql = f"INSERT INTO {t} ({', '.join(order)}) VALUES {', '.join(rows)}"
        else:
            k = self.const()[0]
            expr = self.pick(["user_id + 95", "user_id * 17", "-user_id"]) \
                if self.db == "int" else self.pick(["user_id || 'x'", "upper(user_id)",
                                                    "'k' || user_id"])
            sql = f"INSERT INTO {t} (user_id, v, n) SELECT {expr}, v, n FROM {t} " \
                  f"WHERE user_id = {k}"
        y = r.random()
        if y < 0.15:
            sql += " ON CONFLICT (user_id) DO NOTHING"
        elif y < 0.25:
            sql += f" ON CONFLICT (user_id) DO UPDATE SET v = 'conflict' WHERE " \
                   f"{t}.user_id = {self.const()[0]}"
        elif y < 0.3:
            sql += " ON CONFLICT (user_id) DO UPDATE SET user_id = excluded.user_id " + \
                ("+ 95" if self.db == "int" else "|| 'y'")
        if self.chance(0.2):
            sql += f" RETURNING {self.pick(['user_id', 'v', self.key_eq()])}"
        return sql

    def statement(self):
        x = self.r.random()
        body = self.select() if x < 0.5 else self.update() if x < 0.65 else \
            self.delete() if x < 0.75 else self.insert()
        if self.chance(0.08):
            k = self.pick(INT_POOL) if self.db == "int" else self.pick([5, 13, 42])
            body = self.pick([f"/* pgmux: user_id={k} */ ", f"/* pgmux: shard={k % 2} */ "]) \
                + body
        return body


def finalize(sql, params):
    """Numbers the placeholders $1..$n in the order they appear in sql, keeping only the
    parameters it uses."""
    used = []

    def sub(m):
        used.append(params[int(m.group(1)) - 1])
        return f"${len(used)}"
    sql = re.sub("\x01(\\d+)\x02", sub, sql)
    return sql, used


def generate(seed, i):
    """Case i of seed: a dict in shard_cases.py's format."""
    r = random.Random(f"{seed}:{i}")
    db = "int" if r.random() < 0.7 else "text"
    g = Gen(r, db)
    x = r.random()
    fanout = False
    # the protocol first: it decides whether parameters may appear
    if x < 0.30:
        proto = "q"
    elif x < 0.52:
        proto = "x"
    elif x < 0.62:
        proto = "rp"
    elif x < 0.72:
        proto = "a"
    elif x < 0.80:
        proto = "multi"
    elif x < 0.87:
        proto = "pipe"
    elif x < 0.93:
        proto = "tx"
    else:
        proto = "fanout"
    g.param_ok = proto in ("x", "rp", "a", "pipe", "tx")
    g.asyncpg = proto == "a"
    if proto in ("q", "x", "rp", "a", "fanout"):
        if proto == "fanout":
            db, fanout = "int", True
            g.db, g.param_ok = "int", r.random() < 0.5
            proto = "x" if g.param_ok else "q"
            sql = g.select()
        else:
            sql = g.statement()
        sql, params = finalize(sql, g.params)
        if proto == "q" or (proto == "x" and not params):
            unit = ("q", sql)
        elif proto == "x":
            unit = ("x", sql, params)
        elif proto == "rp":
            unit = ("rp", [(sql, params)])
        else:
            unit = ("a", sql, [p.value for p in params])
        units = [unit]
    elif proto == "multi":
        units = [("q", "; ".join(g.statement() for _ in range(r.choice([2, 2, 3]))))]
    else:
        stmts = []
        for _ in range(r.choice([2, 2, 3])):
            g.params = []
            sql, params = finalize(g.statement(), g.params)
            stmts.append((sql, params or (None if proto == "tx" else [])))
        if proto == "pipe" and r.random() < 0.5:
            units = [("rp", [(s, p or []) for s, p in stmts])]
        elif proto == "pipe":
            units = [("pipe", [(s, p or None) for s, p in stmts])]
        else:
            units = [("tx", stmts)]
    return {"id": f"fuzz-{seed}-{i}", "cls": f"fuzz-{proto if not fanout else 'fanout'}",
            "db": db, "units": units, "fanout": fanout}


if __name__ == "__main__":
    seed = sys.argv[1] if len(sys.argv) > 1 else "1"
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 20
    for i in range(n):
        c = generate(seed, i)
        print(c["id"], c["cls"], c["db"], c["units"])
