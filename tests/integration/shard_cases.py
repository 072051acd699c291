"""shard_cases: the adversarial sharding corpus run by test_shard_adversarial.py.

Every case runs through pgmux (2 shards) and, with the same client calls, on an unsharded
reference database holding all rows; then every row on every shard must sit on the shard that
satisfies_hash_partition names, and what pgmux answered and left must match the reference, or
pgmux must have refused (an error, nothing left applied).  See test_shard_adversarial.py.

Tables (on every shard and on the reference):
  accounts  (user_id int8 PRIMARY KEY, v text, n int)   int key, section advi / advia (fan-out)
  orders    (user_id int8, oid int, amt int)            int key, same sections
  taccounts (user_id text PRIMARY KEY, v text, n int)   text key, section advt

Where the key sits on 2 shards (PostgreSQL's hash partitioning; asserted by TRAPS at run time;
keys written with Python's string escapes):
  int  shard 0: 1 2 12 13 14 16 17 18 60 101 102 104 107 108 16777221 16777225
       shard 1: 3..11 15 19 20 103 105 106 109 110 111 16777220 16777224
  text shard 0: bob dave frank ali 'aaa ' bbb 2 5 7 21 new1 new2 EVE 'x\\\\y' zoë(UTF8)
       shard 1: alice carol eve grace aaa aab BOB DAVE 2.00 7.00 021 13 42 new0 new3 'x\\y'
                Åsa(UTF8) déjà(UTF8); in LATIN1 bytes zoë is on shard 1, Åsa and déjà on 0
The case for a trap names keys on different shards, so a guess shows as a row on the wrong
shard or a read that misses rows.

A case is a dict: id, cls (class), db ('int' | 'text'), units, and optional fanout (run on the
no_shard_key = all section), control (a positive control: must be routed and right),
conn ({prepare_threshold, client_encoding, startup}: connection options), note.
A unit is one atomic piece of client work (one Query, one statement, one pipeline up to its
Sync, one transaction, one executemany), a tuple whose first item says how it is sent:
  ("q", sql)                   psycopg, simple query protocol (no parameters; may hold several
                               statements)
  ("c", sql, params)           psycopg ClientCursor: parameters bound client-side, simple protocol
  ("x", sql, params)           psycopg server-side binding (extended protocol)
  ("pipe", [(sql, params)..])  psycopg pipeline mode: Parse/Bind/Execute per statement, one Sync
  ("many", sql, [params..])    psycopg executemany (prepare_threshold from conn)
  ("tx", [(sql, params)..])    psycopg: BEGIN (simple), the statements, COMMIT; ROLLBACK on error
  ("rq", sql)                  rawpg Query message (sql str, or bytes sent as they are)
  ("rp", [(sql, params)..])    rawpg Parse/Bind/Execute per statement, one Sync at the end
                               (sql may start with "name:" for a named statement; a stmt of
                               ("bind", name, params) binds it again)
  ("a", sql, args)             asyncpg fetch
  ("amany", sql, [args..])     asyncpg executemany
  ("atx", [(sql, args)..])     asyncpg transaction
SQL uses $1..$n for parameters; each params entry is a P(type, value, fmt).
"""

from decimal import Decimal


class P:
    """One parameter: PostgreSQL type name (int2 int4 int8 float4 float8 numeric text bool
    unknown), the value, the format ('t' text, 'b' binary)."""

    __slots__ = ("type", "value", "fmt")

    def __init__(self, type, value, fmt="t"):
        self.type, self.value, self.fmt = type, value, fmt

    def __repr__(self):
        return f"{self.type}{'(bin)' if self.fmt == 'b' else ''}:{self.value!r}"


def T(type, value):
    return P(type, value, "t")


def B(type, value):
    return P(type, value, "b")


# ----------------------------------------------------------------------------------------------
# baseline data (the state before every case)

INT_KEYS = list(range(1, 21)) + [60, 16777220]
TEXT_KEYS = ["alice", "bob", "carol", "dave", "eve", "frank", "grace", "ali", "BOB", "aaa",
             "aab", "2.00", "5", "13", "42", "x\\y", "zoë", "déjà"]


def baseline():
    """{table: [rows]} of the baseline state."""
    acc = [(k, f"v{k}", k % 4) for k in INT_KEYS]
    orders = [(k, 1, k * 10) for k in range(1, 21)] + \
             [(k, 2, k * 10 + 1) for k in range(2, 21, 2)]
    tacc = [(k, f"t{i}", i % 4) for i, k in enumerate(TEXT_KEYS)]
    return {"accounts": acc, "orders": orders, "taccounts": tacc}


TABLES = {"accounts": ("user_id", "v", "n"), "orders": ("user_id", "oid", "amt"),
          "taccounts": ("user_id", "v", "n")}
KEY_TYPE = {"accounts": "int8", "orders": "int8", "taccounts": "text"}

# Pairs of keys the corpus relies on being on different shards (checked before the run):
# (type, what a guess reads, what PostgreSQL means).
TRAPS = [
    ("int8", 14, 6), ("int8", 60, 6), ("int8", 16777221, 16777220), ("int8", 3, 1),
    ("int8", 1, 3), ("int8", 2, 3), ("int8", 1100, 12), ("int8", -6, 6),
    ("int8", 17179869190, 6), ("int8", 16777225, 16777224), ("int8", 102, 103),
    ("int8", 1030, 103), ("int8", 5, 12), ("int8", 6, 12), ("int8", 6, 101), ("int8", 6, 102),
    ("int8", 6, 104), ("int8", 103, 104), ("int8", 4618441417868443648, 6),
    ("int8", 1090519040, 8), ("int8", 12595, 13), ("int8", 4636948397587169280, 103),
    ("int8", 6, -6),
    ("text", "aaa ", "aaa"), ("text", "aaaz", "aaa"), ("text", "7", "7.00"),
    ("text", "bbb ", "bbb"), ("text", "bbbz", "bbb"), ("text", "021", "21"),
    ("text", "1e2", "100"), ("text", "bob", "BOB"), ("text", "bob", "bobx"),
    ("text", "dave", "DAVE"), ("text", "x\\\\y", "x\\y"), ("text", "c\\\\w", "c\\w"),
    ("text", "42", "bob"), ("text", "alice", "new1"), ("text", "new0", "new1"),
    ("text", "alice", "bob"),
]

# ----------------------------------------------------------------------------------------------
# building blocks

ACC = "SELECT user_id, v, n FROM accounts"
TACC = "SELECT user_id, v, n FROM taccounts"


def ins(k, v="new", n=0):
    return f"INSERT INTO accounts (user_id, v, n) VALUES ({k}, '{v}', {n})"


def tins(k, v="new", n=0):
    return f"INSERT INTO taccounts (user_id, v, n) VALUES ({k}, '{v}', {n})"


INS1 = "INSERT INTO accounts (user_id, v, n) VALUES ($1, 'new', 0)"
TINS1 = "INSERT INTO taccounts (user_id, v, n) VALUES ($1, 'new', 0)"

CASES = []


def add(id, cls, units, db="int", **kw):
    assert not any(c["id"] == id for c in CASES), f"duplicate case id {id}"
    c = {"id": id, "cls": cls, "db": db, "units": list(units)}
    c.update(kw)
    CASES.append(c)
    return c


def lit_int(k):
    return str(k)


def lit_text(k):
    return "'" + k.replace("'", "''") + "'"


def variants(id, cls, sql, key, db="int", kinds=("lit", "pt", "pb", "a"), **kw):
    """One case per way of sending the key that sits at $1 in sql (its only parameter):
    lit: a literal, simple protocol; pt: a text parameter (psycopg); pb: a binary parameter
    (psycopg: int8 for an int key, text for a text key); a: asyncpg (binary, type inferred);
    rp: rawpg Parse/Bind/Execute/Sync with a binary int8 / text parameter of declared type;
    q: a quoted literal ('6')."""
    typ = "int8" if db == "int" else "text"
    for kind in kinds:
        if kind == "lit":
            u = ("q", sql.replace("$1", lit_int(key) if db == "int" else lit_text(key)))
        elif kind == "q":
            u = ("q", sql.replace("$1", lit_text(str(key))))
        elif kind == "pt":
            u = ("x", sql, [T("unknown" if db == "text" else "int8", key)])
        elif kind == "pb":
            u = ("x", sql, [B(typ, key)])
        elif kind == "a":
            u = ("a", sql, [key])
        elif kind == "rp":
            u = ("rp", [(sql, [B(typ, key)])])
        else:
            raise ValueError(kind)
        add(f"{id}/{kind}", cls, [u], db=db, **kw)


# ----------------------------------------------------------------------------------------------
# 1. positive controls: a plain key, routed to its shard and right

variants("ctl-select-eq", "control", f"{ACC} WHERE user_id = $1", 5,
         kinds=("lit", "q", "pt", "pb", "a", "rp"), control=True)
add("ctl-select-eq/pb-int4", "control", [("x", f"{ACC} WHERE user_id = $1", [B("int4", 5)])],
    control=True)
add("ctl-select-eq/pt-int4", "control", [("x", f"{ACC} WHERE user_id = $1", [T("int4", 5)])],
    control=True)
add("ctl-select-eq/client", "control", [("c", f"{ACC} WHERE user_id = $1", [T("int8", 12)])],
    control=True)
add("ctl-select-and", "control", [("q", f"{ACC} WHERE v <> 'x' AND user_id = 12")],
    control=True)
add("ctl-select-and/pb", "control",
    [("x", f"{ACC} WHERE n >= 0 AND user_id = $1 AND v LIKE 'v%'", [B("int8", 12)])],
    control=True)
variants("ctl-insert", "control", INS1, 103, kinds=("lit", "pt", "pb", "a", "rp"), control=True)
add("ctl-insert/key-second", "control",
    [("q", "INSERT INTO accounts (v, n, user_id) VALUES ('new', 1, 104)")], control=True)
add("ctl-insert-multirow", "control",
    [("q", "INSERT INTO accounts (user_id, v, n) VALUES (103, 'a', 0), (105, 'b', 1), "
           "(106, 'c', 2)")], control=True)
add("ctl-insert-multirow/pb", "control",
    [("x", "INSERT INTO accounts (user_id, v, n) VALUES ($1, 'a', 0), ($2, 'b', 1)",
      [B("int8", 101), B("int8", 102)])], control=True)
add("ctl-insert-multirow/a", "control",
    [("a", "INSERT INTO accounts (user_id, v, n) VALUES ($1, 'a', 0), ($2, 'b', 1)",
      [104, 107])], control=True)
variants("ctl-update", "control", "UPDATE accounts SET v = 'upd' WHERE user_id = $1", 5,
         kinds=("lit", "pt", "pb", "a"), control=True)
variants("ctl-delete", "control", "DELETE FROM accounts WHERE user_id = $1", 12,
         kinds=("lit", "pb"), control=True)
add("ctl-executemany/no-prepare", "control",
    [("many", INS1, [[B("int8", 103)], [B("int8", 105)], [B("int8", 106)]])],
    conn={"prepare_threshold": None}, control=True,
    note="psycopg executemany, prepare_threshold=None: pipelined Parse/Bind/Execute, one Sync")
add("ctl-executemany/default", "control",
    [("many", INS1, [[T("int8", 101)], [T("int8", 102)], [T("int8", 104)]])],
    conn={"prepare_threshold": 5}, control=True,
    note="psycopg executemany with default settings: a named statement, Bind per row")
add("ctl-executemany/asyncpg", "control", [("amany", INS1, [[103], [105], [109]])],
    control=True)
add("ctl-tx/simple", "control",
    [("tx", [(ins(103), None), ("UPDATE accounts SET n = 7 WHERE user_id = 103", None),
             (f"{ACC} WHERE user_id = 103", None)])], control=True)
add("ctl-tx/ext", "control",
    [("tx", [(INS1, [B("int8", 104)]),
             ("UPDATE accounts SET n = 7 WHERE user_id = $1", [T("int8", 104)]),
             (f"{ACC} WHERE user_id = $1", [B("int8", 12)])])], control=True)
add("ctl-tx/asyncpg", "control",
    [("atx", [(INS1, [105]), ("UPDATE accounts SET n = 7 WHERE user_id = $1", [105]),
              (f"{ACC} WHERE user_id = $1", [6])])], control=True)
# text keys
variants("ctl-text-select", "control", f"{TACC} WHERE user_id = $1", "alice", db="text",
         kinds=("lit", "pt", "pb", "a", "rp"), control=True)
add("ctl-text-select/E", "control", [("q", f"{TACC} WHERE user_id = E'x\\\\y'")], db="text",
    control=True, note="E'x\\\\y' is x\\y")
add("ctl-text-select/doubled-quote", "control",
    [("q", f"{TACC} WHERE n >= 0 AND user_id = 'bob'")], db="text", control=True)
variants("ctl-text-insert", "control", TINS1, "new0", db="text",
         kinds=("lit", "pt", "pb", "a"), control=True)
add("ctl-text-insert-multirow", "control",
    [("q", "INSERT INTO taccounts (user_id, v, n) VALUES ('new1', 'a', 0), ('new2', 'b', 1)")],
    db="text", control=True)
add("ctl-text-executemany", "control",
    [("many", TINS1, [[T("unknown", "new1")], [T("unknown", "new2")]])], db="text",
    conn={"prepare_threshold": None}, control=True)
add("ctl-text-tx", "control",
    [("tx", [(tins("'new0'"), None), ("UPDATE taccounts SET n = 9 WHERE user_id = $1",
                                       [T("unknown", "new0")])])], db="text", control=True)

# ----------------------------------------------------------------------------------------------
# 2. the key where it does not restrict the rows (6 is on shard 1, rows on shard 0 match too)

KEY_NOT_RESTRICTING_READS = [
    ("not", f"{ACC} WHERE NOT (user_id = $1)"),
    ("not-noparen", f"{ACC} WHERE NOT user_id = $1"),
    ("is-not-true", f"{ACC} WHERE (user_id = $1) IS NOT TRUE"),
    ("is-not-true-noparen", f"{ACC} WHERE user_id = $1 IS NOT TRUE"),
    ("eq-false", f"{ACC} WHERE (user_id = $1) = false"),
    ("case", f"{ACC} WHERE CASE WHEN n = 1 THEN true ELSE user_id = $1 END"),
    ("select-list", "SELECT user_id = $1 AS is_it, v FROM accounts"),
    ("order-by", "SELECT v FROM accounts ORDER BY user_id = $1, v"),
    ("subquery", "SELECT v FROM accounts WHERE n IN (SELECT n FROM accounts WHERE user_id = $1)"),
    ("exists", "SELECT v FROM accounts WHERE EXISTS (SELECT 1 FROM orders o "
               "WHERE o.user_id = $1)"),
    ("cte", "WITH x AS (SELECT n FROM accounts WHERE user_id = $1) "
            "SELECT a.v FROM accounts a JOIN x ON a.n = x.n"),
    ("left-join-on", "SELECT a.v, o.amt FROM accounts a LEFT JOIN orders o "
                     "ON o.user_id = a.user_id AND a.user_id = $1"),
    ("join-other-table", "SELECT a.v FROM accounts a JOIN orders o ON o.user_id = $1 "
                         "AND o.oid = 1"),
    ("union", f"{ACC} WHERE user_id = $1 UNION ALL {ACC} WHERE n = 0"),
    ("and-or", f"{ACC} WHERE user_id = $1 AND n = 1 OR n = 0"),
    ("or", f"{ACC} WHERE user_id = $1 OR n = 0"),
    ("derived-table", "SELECT s.v FROM (SELECT * FROM accounts) s WHERE s.user_id = $1 "
                      "OR s.n = 2"),
    ("coalesce", f"{ACC} WHERE coalesce(user_id = $1, false) IS FALSE"),
]
for name, sql in KEY_NOT_RESTRICTING_READS:
    variants(f"notkey-{name}", "key-not-restricting", sql, 6)

KEY_NOT_RESTRICTING_WRITES = [
    ("upd-not", "UPDATE accounts SET n = n + 100 WHERE NOT (user_id = $1)"),
    ("del-is-not-true", "DELETE FROM accounts WHERE (user_id = $1) IS NOT TRUE"),
    ("del-case", "DELETE FROM accounts WHERE CASE WHEN n = 1 THEN true ELSE user_id = $1 END"),
    ("upd-subquery", "UPDATE accounts SET v = 'w' WHERE n IN "
                     "(SELECT n FROM accounts WHERE user_id = $1)"),
    ("del-exists", "DELETE FROM accounts WHERE EXISTS "
                   "(SELECT 1 FROM orders o WHERE o.user_id = $1)"),
    ("upd-cte", "WITH x AS (SELECT n FROM accounts WHERE user_id = $1) "
                "UPDATE accounts a SET v = 'w' FROM x WHERE a.n = x.n"),
    ("insert-select", "INSERT INTO accounts (user_id, v, n) "
                      "SELECT user_id + 95, v, n FROM accounts WHERE user_id = $1"),
    ("insert-returning", "INSERT INTO accounts (user_id, v, n) VALUES (104, 'r', 0) "
                         "RETURNING user_id = $1"),
    ("insert-select-returning", "INSERT INTO accounts (user_id, v, n) SELECT 104, 'r', 0 "
                                "RETURNING user_id = $1"),
    ("on-conflict-where", "INSERT INTO accounts (v, n, user_id) SELECT 'c', 0, 104 "
                          "ON CONFLICT (user_id) DO UPDATE SET v = 'y' "
                          "WHERE accounts.user_id = $1"),
    ("upd-or", "UPDATE accounts SET n = 0 WHERE user_id = $1 OR n = 1"),
]
for name, sql in KEY_NOT_RESTRICTING_WRITES:
    variants(f"notkey-{name}", "key-not-restricting", sql, 6)
add("notkey-on-conflict-values/lit", "key-not-restricting",
    [("q", "INSERT INTO accounts (user_id, v, n) VALUES (104, 'c', 0) ON CONFLICT (user_id) "
           "DO UPDATE SET v = 'y' WHERE accounts.user_id = 6")])
add("notkey-returning-values/lit", "key-not-restricting",
    [("q", "INSERT INTO accounts (user_id, v, n) VALUES (103, 'r', 0) RETURNING user_id = 12")])
add("notkey-any-array/lit", "key-not-restricting",
    [("q", f"{ACC} WHERE user_id = ANY ('{{6,12}}')")])
add("notkey-is-distinct/lit", "key-not-restricting",
    [("q", f"{ACC} WHERE user_id IS DISTINCT FROM 6")])
add("notkey-modulo/lit", "key-not-restricting", [("q", f"{ACC} WHERE user_id % 10 = 6")])

KEY_NOT_RESTRICTING_TEXT = [
    ("not", f"{TACC} WHERE NOT (user_id = $1)"),
    ("is-not-true", f"{TACC} WHERE (user_id = $1) IS NOT TRUE"),
    ("case", f"{TACC} WHERE CASE WHEN n = 0 THEN true ELSE user_id = $1 END"),
    ("select-list", "SELECT user_id = $1 AS is_it, v FROM taccounts"),
    ("subquery", "SELECT v FROM taccounts WHERE n IN "
                 "(SELECT n FROM taccounts WHERE user_id = $1)"),
    ("union", f"{TACC} WHERE user_id = $1 UNION ALL {TACC} WHERE n = 0"),
    ("del-not", "DELETE FROM taccounts WHERE NOT (user_id = $1)"),
]
for name, sql in KEY_NOT_RESTRICTING_TEXT:
    variants(f"text-notkey-{name}", "key-not-restricting", sql, "alice", db="text")
variants("text-notkey-insert-select", "key-not-restricting",
         "INSERT INTO taccounts (user_id, v, n) SELECT user_id || 'x', v, n FROM taccounts "
         "WHERE user_id = $1", "bob", db="text")

# ----------------------------------------------------------------------------------------------
# 3. an OR hidden from a quote-counting check (6 on shard 1, v12 on shard 0)

OR_TRAPS = [
    ("line-comment", f"{ACC} WHERE user_id = 6 -- the user's row\n OR v = 'v12'"),
    ("block-comment", f"{ACC} WHERE user_id = 6 /* it's */ OR v = 'v12'"),
    ("comment-no-space", f"{ACC} WHERE user_id = 6 OR/*'*/v = 'v12'"),
    ("E-string", f"{ACC} WHERE user_id = 6 AND v <> E'\\'' OR v = 'v12'"),
    ("E-string-mid", f"{ACC} WHERE v <> E'a\\'b' AND user_id = 6 OR v = 'v12'"),
    ("dollar", f"{ACC} WHERE user_id = 6 AND v <> $q$it's$q$ OR v = 'v12'"),
    ("dollar-empty-tag", f"{ACC} WHERE user_id = 6 AND v <> $$'$$ OR v = 'v12'"),
    ("quoted-ident", "SELECT user_id, v AS \"it's\" FROM accounts WHERE user_id = 6 "
                     "OR v = 'v12'"),
    ("quoted-ident-dq", "SELECT user_id, v AS \"a\"\"b\" FROM accounts WHERE user_id = 6 "
                        "AND v <> '\"' OR v = 'v12'"),
    ("in-list", f"{ACC} WHERE user_id IN (6, 7) OR v = 'v12'"),
    ("two-keys-and", f"{ACC} WHERE user_id = 6 AND user_id = 7 OR v = 'v12'"),
    ("update-comment", "UPDATE accounts SET n = 77 WHERE user_id = 6 -- don't\n OR v = 'v12'"),
    ("delete-comment", "DELETE FROM accounts WHERE user_id = 6 /* ' */ OR v = 'v12'"),
]
for name, sql in OR_TRAPS:
    add(f"or-{name}/lit", "or-quote-trap", [("q", sql)])
add("or-line-comment/pb", "or-quote-trap",
    [("x", f"{ACC} WHERE user_id = $1 -- the user's row\n OR v = 'v12'", [B("int8", 6)])])
add("or-dollar/a", "or-quote-trap",
    [("a", f"{ACC} WHERE user_id = $1 AND v <> $q$it's$q$ OR v = 'v12'", [6])])
add("or-text-comment/lit", "or-quote-trap",
    [("q", f"{TACC} WHERE user_id = 'alice' -- bob's\n OR n = 0")], db="text")
add("or-text-E/pt", "or-quote-trap",
    [("x", f"{TACC} WHERE user_id = $1 AND v <> E'\\'' OR n = 0", [T("unknown", "alice")])],
    db="text")

# ----------------------------------------------------------------------------------------------
# 4. casts and operators that change the value

CAST_READS = [
    ("bit3", "14::bit(3)::int"),                      # 6
    ("varchar1", "'60'::varchar(1)::bigint"),         # 6
    ("float4", "16777221::float4::bigint"),           # 16777220
    ("bool", "3::bool::int"),                         # 1
    ("operator", "1 OPERATOR(pg_catalog.+) 2"),       # 3
    ("div", "12 / 2"),                                # 6
    ("mul", "6 * 2"),                                 # 12
    ("mod", "14 % 8"),                                # 6
    ("round", "2.5::int"),                            # 3
    ("bitstring", "B'1100'::int"),                    # 12
    ("double-minus", "-(-6)"),                        # 6
    ("bit32", "17179869190::bit(32)::int"),           # 6
    ("shift", "12::int8 >> 1"),                       # 6
    ("abs", "abs(-6)"),                               # 6
    ("length", "length('abcdef')"),                   # 6
    ("subselect", "(SELECT 6 + 6)"),                  # 12
    ("minus", "- 6 + 12"),                            # 6
]
for name, expr in CAST_READS:
    add(f"cast-{name}/lit", "value-changing-cast", [("q", f"{ACC} WHERE user_id = {expr}")])
add("cast-bit3/pb", "value-changing-cast",
    [("x", f"{ACC} WHERE user_id = $1::bit(3)::int", [B("int8", 14)])])
add("cast-varchar1/pt", "value-changing-cast",
    [("x", f"{ACC} WHERE user_id = $1::varchar(1)::bigint", [T("unknown", "60")])])
add("cast-float4/a", "value-changing-cast",
    [("a", f"{ACC} WHERE user_id = $1::float4::bigint", [16777221])])
CAST_INSERTS = [
    ("float4", "16777225::float4"),                   # 16777224
    ("numeric-round", "102.5"),                       # 103
    ("varchar3", "'1030'::varchar(3)::int8"),         # 103
    ("operator", "1 OPERATOR(pg_catalog.+) 103"),     # 104
    ("bool", "true::int + 102"),                      # 103
]
for name, expr in CAST_INSERTS:
    add(f"cast-insert-{name}/lit", "value-changing-cast",
        [("q", f"INSERT INTO accounts (user_id, v, n) VALUES ({expr}, 'c', 0)")])
add("cast-insert-float4/pb", "value-changing-cast",
    [("x", "INSERT INTO accounts (user_id, v, n) VALUES ($1::float4, 'c', 0)",
      [B("int8", 16777225)])])
TEXT_CAST_READS = [
    ("char4", "'aaa '::char(4)"),                     # 'aaa'
    ("varchar3", "'aaaz'::varchar(3)"),               # 'aaa'
    ("upper", "upper('bob')"),                        # 'BOB'
    ("concat", "'BO' || 'B'"),                        # 'BOB'
    ("unicode-escape", "U&'\\0061lice'"),             # 'alice'
    ("varchar-trunc", "'alice'::varchar(3)"),         # 'ali'
    ("char-cast-text", "'aaa    '::char(6)::text"),   # 'aaa'
    ("numeric-text", "'2'::numeric(5,2)::text"),      # '2.00'
]
for name, expr in TEXT_CAST_READS:
    add(f"text-cast-{name}/lit", "value-changing-cast",
        [("q", f"{TACC} WHERE user_id = {expr}")], db="text")
TEXT_CAST_INSERTS = [
    ("numeric", "'7'::numeric(5,2)"),                 # '7.00'
    ("char4", "'bbb '::char(4)"),                     # 'bbb'
    ("varchar3", "'bbbz'::varchar(3)"),               # 'bbb'
    ("int-leading-zero", "021"),                      # '21'
    ("numeric-exp", "1e2"),                           # '100'
    ("upper", "upper('dave')"),                       # 'DAVE'
]
for name, expr in TEXT_CAST_INSERTS:
    add(f"text-cast-insert-{name}/lit", "value-changing-cast",
        [("q", f"INSERT INTO taccounts (user_id, v, n) VALUES ({expr}, 'c', 0)")], db="text")
add("text-cast-char4/pt", "value-changing-cast",
    [("x", f"{TACC} WHERE user_id = $1::char(4)", [T("unknown", "aaa ")])], db="text")
add("text-cast-varchar3/a", "value-changing-cast",
    [("a", f"{TACC} WHERE user_id = $1::varchar(3)", ["aaaz"])], db="text")

# ----------------------------------------------------------------------------------------------
# 5. binary parameters of other types: decoded by their type, not their length

BIN = [
    ("float8-cast", f"{ACC} WHERE user_id = $1::bigint", B("float8", 6.0)),
    ("float4-cast", f"{ACC} WHERE user_id = $1::bigint", B("float4", 8.0)),
    ("text-cast", f"{ACC} WHERE user_id = $1::bigint", B("text", "13")),
    ("float8", f"{ACC} WHERE user_id = $1", B("float8", 6.0)),
    ("float4", f"{ACC} WHERE user_id = $1", B("float4", 8.0)),
    ("numeric", f"{ACC} WHERE user_id = $1", B("numeric", Decimal(6))),
    ("bool-cast", f"{ACC} WHERE user_id = $1::int", B("bool", True)),
    ("int2", f"{ACC} WHERE user_id = $1", B("int2", 12)),
    ("float8-text-fmt", f"{ACC} WHERE user_id = $1::bigint", T("float8", 5.5)),
    ("numeric-text-fmt", f"{ACC} WHERE user_id = $1::bigint", T("numeric", Decimal("2.5"))),
    ("insert-float8", "INSERT INTO accounts (user_id, v, n) VALUES ($1, 'b', 0)",
     B("float8", 103.0)),
    ("insert-float4", "INSERT INTO accounts (user_id, v, n) VALUES ($1, 'b', 0)",
     B("float4", 111.0)),
    ("insert-text-cast", "INSERT INTO accounts (user_id, v, n) VALUES ($1::bigint, 'b', 0)",
     B("text", "21")),
    ("insert-numeric", "INSERT INTO accounts (user_id, v, n) VALUES ($1, 'b', 0)",
     B("numeric", Decimal("102.5"))),
]
for name, sql, p in BIN:
    add(f"bin-{name}/x", "binary-param-type", [("x", sql, [p])])
for name in ("float8-cast", "float4-cast", "text-cast", "insert-float8"):
    sql, p = next((s, q) for n, s, q in BIN if n == name)
    add(f"bin-{name}/rp", "binary-param-type", [("rp", [(sql, [p])])])
TEXT_BIN = [
    ("int2-cast", f"{TACC} WHERE user_id = $1::text", B("int2", 42)),
    ("int4-cast", f"{TACC} WHERE user_id = $1::text", B("int4", 42)),
    ("int8-cast", f"{TACC} WHERE user_id = $1::text", B("int8", 42)),
    ("insert-int2", TINS1, B("int2", 70)),
    ("insert-int8", TINS1, B("int8", 77)),
    ("insert-float8", TINS1, B("float8", 1.5)),
    ("numeric-cast", f"{TACC} WHERE user_id = $1::text", B("numeric", Decimal("2.00"))),
]
for name, sql, p in TEXT_BIN:
    add(f"text-bin-{name}/x", "binary-param-type", [("x", sql, [p])], db="text")
for name in ("int2-cast", "insert-int2"):
    sql, p = next((s, q) for n, s, q in TEXT_BIN if n == name)
    add(f"text-bin-{name}/rp", "binary-param-type", [("rp", [(sql, [p])])], db="text")

# ----------------------------------------------------------------------------------------------
# 6. several statements in one Query: every one of them checked

MULTI = [
    ("two-reads", f"{ACC} WHERE user_id = 6; {ACC} WHERE user_id = 12"),
    ("two-inserts", f"{ins(103)}; {ins(104)}"),
    ("insert-delete", f"{ins(103)}; DELETE FROM accounts WHERE user_id = 12"),
    ("update-keyless", "UPDATE accounts SET n = 50 WHERE user_id = 6; "
                       "UPDATE accounts SET n = 50 WHERE n = 0"),
    ("insert-keyless-read", f"{ins(103)}; {ACC}"),
    ("keyless-first", f"SELECT 1; {ins(103)}"),
    ("set-first", f"SET application_name = 'x'; {ins(103)}"),
    ("set-first-read", f"SET search_path = public; {ACC} WHERE user_id = 6"),
    ("set-lower", "set statement_timeout=0;DELETE FROM accounts WHERE user_id = 6"),
    ("set-local-first", f"SET LOCAL statement_timeout = '5s'; {ins(103)}"),
    ("show-first", f"SHOW server_version_num; {ins(103)}"),
    ("set-keyless-update", "SET application_name = 'x'; UPDATE accounts SET n = 9 WHERE n = 1"),
    ("set-keyless-read", f"SET application_name = 'x'; {ACC} WHERE n = 1"),
    ("show-keyless-delete", "SHOW server_version_num; DELETE FROM accounts WHERE n = 1"),
    ("begin-set-local-inside", f"BEGIN; SET LOCAL statement_timeout = '5s'; {ins(103)}; COMMIT"),
    ("semicolon-in-string", f"{ACC} WHERE user_id = 6 AND v <> ';'; {ACC} WHERE user_id = 12"),
    ("semicolon-in-comment", f"{ACC} WHERE user_id = 6 /* ; */; {ACC} WHERE user_id = 12"),
    ("begin-commit-inside", f"BEGIN; {ins(103)}; {ins(104)}; COMMIT"),
    ("same-shard", f"{ins(103)}; UPDATE accounts SET n = 1 WHERE user_id = 105"),
    ("third-statement", f"{ACC} WHERE user_id = 6; {ACC} WHERE user_id = 8; {ins(104)}"),
]
for name, sql in MULTI:
    add(f"multi-{name}/q", "multi-statement", [("q", sql)])
add("multi-two-inserts/rq", "multi-statement", [("rq", f"{ins(103)}; {ins(104)}")])
add("multi-two-reads/rq", "multi-statement",
    [("rq", f"{ACC} WHERE user_id = 6; {ACC} WHERE user_id = 12")])
add("multi-text-two-reads/q", "multi-statement",
    [("q", f"{TACC} WHERE user_id = 'alice'; {TACC} WHERE user_id = 'bob'")], db="text")
add("multi-text-two-inserts/q", "multi-statement",
    [("q", f"{tins(lit_text('new0'))}; {tins(lit_text('new1'))}")], db="text")

# ----------------------------------------------------------------------------------------------
# 7. pipelines: statements up to a Sync are one batch

add("pipe-two-inserts/psycopg", "pipeline",
    [("pipe", [(INS1, [B("int8", 103)]), (INS1, [B("int8", 104)])])])
add("pipe-two-reads/psycopg", "pipeline",
    [("pipe", [(f"{ACC} WHERE user_id = $1", [T("int8", 6)]),
               (f"{ACC} WHERE user_id = $1", [T("int8", 12)])])])
add("pipe-insert-keyless/psycopg", "pipeline",
    [("pipe", [(INS1, [B("int8", 103)]), ("UPDATE accounts SET n = 9 WHERE n = 1", None)])])
add("pipe-read-update/psycopg", "pipeline",
    [("pipe", [(f"{ACC} WHERE user_id = $1", [B("int8", 6)]),
               ("UPDATE accounts SET n = 9 WHERE user_id = $1", [B("int8", 12)])])])
add("pipe-same-shard/psycopg", "pipeline",
    [("pipe", [(INS1, [B("int8", 103)]), (INS1, [B("int8", 105)])])])
add("pipe-text/psycopg", "pipeline",
    [("pipe", [(TINS1, [T("unknown", "new0")]), (TINS1, [T("unknown", "new1")])])], db="text")
add("pipe-two-inserts/raw", "pipeline",
    [("rp", [(INS1, [B("int8", 103)]), (INS1, [B("int8", 104)])])])
add("pipe-two-reads/raw", "pipeline",
    [("rp", [(f"{ACC} WHERE user_id = $1", [B("int8", 6)]),
             (f"{ACC} WHERE user_id = $1", [B("int8", 12)])])])
add("pipe-literals/raw", "pipeline", [("rp", [(ins(103), []), (ins(104), [])])])
add("pipe-set-first/raw", "pipeline",
    [("rp", [("SET application_name = 'p'", []), (ins(103), [])])])
add("pipe-set-keyless/raw", "pipeline",
    [("rp", [("SET application_name = 'p'", []), ("UPDATE accounts SET n = 9 WHERE n = 1", [])])])
add("pipe-named-rebind/raw", "pipeline",
    [("rp", [("s1:" + INS1, [B("int8", 103)]), ("bind", "s1", [B("int8", 104)])])],
    note="Parse s1, Bind/Execute 103, Bind/Execute 104 by name, one Sync")
add("pipe-keyless-first/raw", "pipeline",
    [("rp", [("SELECT 1", []), (INS1, [B("int8", 103)])])])
add("pipe-text/raw", "pipeline",
    [("rp", [(TINS1, [B("text", "new0")]), (TINS1, [B("text", "new1")])])], db="text")
add("pipe-executemany-two-shards/no-prepare", "pipeline",
    [("many", INS1, [[B("int8", 103)], [B("int8", 104)]])], conn={"prepare_threshold": None})
add("pipe-executemany-two-shards/default", "pipeline",
    [("many", INS1, [[T("int8", 103)], [T("int8", 104)]])], conn={"prepare_threshold": 5})
add("pipe-executemany-two-shards/asyncpg", "pipeline",
    [("amany", INS1, [[103], [104]])])
add("pipe-executemany-text/no-prepare", "pipeline",
    [("many", TINS1, [[T("unknown", "new0")], [T("unknown", "new1")]])], db="text",
    conn={"prepare_threshold": None})
add("pipe-prepared-rebind/psycopg", "pipeline",
    [("x", f"{ACC} WHERE user_id = $1", [T("int8", 6)]),
     ("x", f"{ACC} WHERE user_id = $1", [T("int8", 12)])], conn={"prepare_threshold": 0},
    note="psycopg prepare_threshold=0: a named statement bound again with another shard's key")

# ----------------------------------------------------------------------------------------------
# 8. transactions: every statement against the shard the transaction is bound to

add("tx-two-inserts/simple", "transaction", [("tx", [(ins(103), None), (ins(104), None)])])
add("tx-two-reads/simple", "transaction",
    [("tx", [(f"{ACC} WHERE user_id = 6", None), (f"{ACC} WHERE user_id = 12", None)])])
add("tx-set-local-insert/simple", "transaction",
    [("tx", [("SET LOCAL statement_timeout = '5s'", None), (ins(103), None)])])
add("tx-set-local-read/simple", "transaction",
    [("tx", [("SET LOCAL search_path = public", None), (f"{ACC} WHERE user_id = 6", None)])])
add("tx-set-local-update/simple", "transaction",
    [("tx", [("SET LOCAL search_path = public", None),
             ("UPDATE accounts SET n = 9 WHERE user_id = 6", None)])])
add("tx-set-local-insert/ext", "transaction",
    [("tx", [("SET LOCAL statement_timeout = '5s'", None), (INS1, [B("int8", 103)])])])
add("tx-set-local-keyless/simple", "transaction",
    [("tx", [("SET LOCAL statement_timeout = '5s'", None),
             ("UPDATE accounts SET n = 9 WHERE n = 1", None)])])
add("tx-keyed-set-local-other/simple", "transaction",
    [("tx", [(ins(103), None), ("SET LOCAL statement_timeout = '5s'", None),
             (ins(104), None)])])
add("tx-set-local-same-query/simple", "transaction",
    [("tx", [(f"SET LOCAL statement_timeout = '5s'; {ins(103)}", None)])])
add("tx-keyed-then-keyless-update/simple", "transaction",
    [("tx", [("UPDATE accounts SET n = 9 WHERE user_id = 6", None),
             ("UPDATE accounts SET n = 0 WHERE n = 1", None)])])
add("tx-keyed-then-keyless-read/simple", "transaction",
    [("tx", [(f"{ACC} WHERE user_id = 6", None), (f"{ACC} WHERE n = 1", None)])])
add("tx-keyed-then-keyless-delete/ext", "transaction",
    [("tx", [(INS1, [B("int8", 103)]), ("DELETE FROM accounts WHERE n = $1", [B("int4", 1)])])])
add("tx-keyless-first/simple", "transaction",
    [("tx", [("SELECT 1", None), (ins(103), None)])])
add("tx-two-inserts/ext", "transaction",
    [("tx", [(INS1, [B("int8", 103)]), (INS1, [B("int8", 104)])])])
add("tx-two-inserts/asyncpg", "transaction", [("atx", [(INS1, [103]), (INS1, [104])])])
add("tx-savepoint/simple", "transaction",
    [("tx", [("UPDATE accounts SET n = 9 WHERE user_id = 6", None), ("SAVEPOINT s", None),
             (ins(104), None), ("RELEASE s", None)])])
add("tx-hint-then-insert/simple", "transaction",
    [("tx", [("/* pgmux: shard=0 */ SELECT 1", None), (ins(103), None)])])
add("tx-update-then-delete/simple", "transaction",
    [("tx", [("UPDATE accounts SET n = 9 WHERE user_id = 12", None),
             ("DELETE FROM accounts WHERE user_id = 6", None)])])
add("tx-text/simple", "transaction",
    [("tx", [(tins(lit_text("new0")), None), (tins(lit_text("new1")), None)])], db="text")

# ----------------------------------------------------------------------------------------------
# 9. UPDATE of the key

KEY_UPDATES = [
    ("plus", "UPDATE accounts SET user_id = user_id + 95 WHERE user_id = 6"),      # -> 101
    ("row", "UPDATE accounts SET (user_id, v) = (104, 'moved') WHERE user_id = 6"),
    ("row-subselect", "UPDATE accounts SET (user_id, v) = (SELECT 104, 'moved') "
                      "WHERE user_id = 6"),
    ("second-column", "UPDATE accounts SET v = 'm', user_id = user_id * 17 WHERE user_id = 6"),
    ("alias", "UPDATE accounts a SET user_id = a.user_id + 95 WHERE a.user_id = 6"),
    ("quoted-column", "UPDATE accounts SET \"user_id\" = 104 WHERE user_id = 6"),
    ("negate", "UPDATE accounts SET user_id = -user_id WHERE user_id = 6"),
    ("same-shard", "UPDATE accounts SET user_id = 103 WHERE user_id = 6"),
    ("other-shard", "UPDATE accounts SET user_id = 104 WHERE user_id = 6"),
    ("on-conflict", "INSERT INTO accounts (user_id, v, n) VALUES (6, 'x', 0) "
                    "ON CONFLICT (user_id) DO UPDATE SET user_id = excluded.user_id + 95"),
    ("on-conflict-const", "INSERT INTO accounts (user_id, v, n) VALUES (6, 'x', 0) "
                          "ON CONFLICT (user_id) DO UPDATE SET user_id = 104"),
    ("merge", "MERGE INTO accounts a USING (SELECT 6 AS k) s ON a.user_id = s.k "
              "WHEN MATCHED THEN UPDATE SET user_id = a.user_id + 95"),
    ("orders", "UPDATE orders SET user_id = user_id + 98 WHERE user_id = 6"),      # -> 104
]
for name, sql in KEY_UPDATES:
    add(f"keyupd-{name}/lit", "update-of-key", [("q", sql)])
add("keyupd-plus/pb", "update-of-key",
    [("x", "UPDATE accounts SET user_id = user_id + 95 WHERE user_id = $1", [B("int8", 6)])])
add("keyupd-params/pb", "update-of-key",
    [("x", "UPDATE accounts SET user_id = $1 WHERE user_id = $2",
      [B("int8", 104), B("int8", 6)])])
add("keyupd-plus/a", "update-of-key",
    [("a", "UPDATE accounts SET user_id = user_id + 95 WHERE user_id = $1", [6])])
add("keyupd-text-concat/lit", "update-of-key",
    [("q", "UPDATE taccounts SET user_id = user_id || 'x' WHERE user_id = 'bob'")], db="text")
add("keyupd-text-upper/lit", "update-of-key",
    [("q", "UPDATE taccounts SET user_id = upper(user_id) WHERE user_id = 'dave'")], db="text")
add("keyupd-text-upper/pt", "update-of-key",
    [("x", "UPDATE taccounts SET user_id = upper(user_id) WHERE user_id = $1",
      [T("unknown", "dave")])], db="text")

# ----------------------------------------------------------------------------------------------
# 10. a hint or SET pgmux.* that contradicts the statement's own key (5 and 6 on shard 1,
#     12 and 104 on shard 0)

HINTS = [
    ("user-id-read", f"/* pgmux: user_id=5 */ {ACC} WHERE user_id = 12"),
    ("shard-read", f"/* pgmux: shard=1 */ {ACC} WHERE user_id = 12"),
    ("user-id-insert", f"/* pgmux: user_id=5 */ {ins(104)}"),
    ("shard-insert", f"/* pgmux: shard=1 */ {ins(104)}"),
    ("shard-update", "/* pgmux: shard=0 */ UPDATE accounts SET n = 9 WHERE user_id = 6"),
    ("in-string", f"{ACC} WHERE user_id = 12 AND v <> '/* pgmux: shard=1 */'"),
    ("trailing", f"{ACC} WHERE user_id = 12 /* pgmux: shard=1 */"),
    ("second-statement", f"{ACC} WHERE user_id = 12; /* pgmux: shard=1 */ SELECT 1"),
]
for name, sql in HINTS:
    add(f"hint-{name}/lit", "hint-contradiction", [("q", sql)])
add("hint-user-id-read/pb", "hint-contradiction",
    [("x", f"/* pgmux: user_id=5 */ {ACC} WHERE user_id = $1", [B("int8", 12)])])
add("hint-shard-insert/a", "hint-contradiction",
    [("a", f"/* pgmux: shard=1 */ {INS1}", [104])])
add("hint-text/lit", "hint-contradiction",
    [("q", f"/* pgmux: user_id=42 */ {TACC} WHERE user_id = 'bob'")], db="text")
add("hint-agrees/lit", "hint-contradiction",
    [("q", f"/* pgmux: user_id=6 */ {ACC} WHERE user_id = 6")],
    note="agrees with the key: right (or refused)")
add("set-user-id-read/q", "hint-contradiction",
    [("q", "SET pgmux.user_id = 5"), ("q", f"{ACC} WHERE user_id = 12")])
add("set-shard-insert/q", "hint-contradiction",
    [("q", "SET pgmux.shard = 1"), ("q", ins(104))])
add("set-user-id-insert/x", "hint-contradiction",
    [("q", "SET pgmux.user_id = 5"), ("x", INS1, [B("int8", 104)])])
add("set-shard-delete/q", "hint-contradiction",
    [("q", "SET pgmux.shard = 0"), ("q", "DELETE FROM accounts WHERE user_id = 6")])
add("set-user-id-same-query/q", "hint-contradiction",
    [("q", f"SET pgmux.user_id = 5; {ACC} WHERE user_id = 12")])
add("set-user-id-text/q", "hint-contradiction",
    [("q", "SET pgmux.user_id = 'alice'"), ("q", tins(lit_text("new1")))], db="text")
add("set-user-id-agrees/q", "hint-contradiction",
    [("q", "SET pgmux.user_id = 6"), ("q", f"{ACC} WHERE user_id = 6")],
    note="agrees with the key: right (or refused)")

# ----------------------------------------------------------------------------------------------
# 11. standard_conforming_strings = off: 'x\\y' is x\y

SCS_OFF = ("q", "SET standard_conforming_strings = off")
add("scs-off-read/q", "standard-conforming-strings",
    [SCS_OFF, ("q", f"{TACC} WHERE user_id = 'x\\\\y'")], db="text")
add("scs-off-insert/q", "standard-conforming-strings",
    [SCS_OFF, ("q", tins("'c\\\\w'"))], db="text")
add("scs-off-same-query/q", "standard-conforming-strings",
    [("q", f"SET standard_conforming_strings = off; {TACC} WHERE user_id = 'x\\\\y'")],
    db="text")
add("scs-off-set-local/tx", "standard-conforming-strings",
    [("tx", [("SET LOCAL standard_conforming_strings = off", None),
             (tins("'c\\\\w'"), None)])], db="text")
add("scs-off-startup/rq", "standard-conforming-strings",
    [("rq", f"{TACC} WHERE user_id = 'x\\\\y'")], db="text",
    conn={"startup": {"standard_conforming_strings": "off"}})
add("scs-off-hidden-or/q", "standard-conforming-strings",
    [SCS_OFF, ("q", f"{TACC} WHERE user_id = 'alice' AND v <> 'a\\'' OR n = 0")], db="text")
add("scs-off-int-hidden-or/q", "standard-conforming-strings",
    [SCS_OFF, ("q", f"{ACC} WHERE user_id = 6 AND v <> 'a\\'' OR v = 'v12'")])
add("scs-off-E-string/q", "standard-conforming-strings",
    [SCS_OFF, ("q", f"{TACC} WHERE user_id = E'x\\\\y'")], db="text",
    note="E'' means the same either way: right (or refused)")

# ----------------------------------------------------------------------------------------------
# 12. client_encoding LATIN1: the server hashes the UTF8 it converts to

LATIN1 = {"client_encoding": "LATIN1"}
add("latin1-read/q", "client-encoding", [("q", f"{TACC} WHERE user_id = 'zoë'")], db="text",
    conn=LATIN1)
add("latin1-insert/q", "client-encoding", [("q", tins("'Åsa'"))], db="text", conn=LATIN1)
add("latin1-read/pt", "client-encoding",
    [("x", f"{TACC} WHERE user_id = $1", [T("unknown", "déjà")])], db="text", conn=LATIN1)
add("latin1-read/pb", "client-encoding",
    [("x", f"{TACC} WHERE user_id = $1", [B("text", "zoë")])], db="text", conn=LATIN1)
add("latin1-insert/pt", "client-encoding", [("x", TINS1, [T("unknown", "smörgås")])],
    db="text", conn=LATIN1)
add("latin1-set/q", "client-encoding",
    [("q", "SET client_encoding = 'LATIN1'"), ("q", f"{TACC} WHERE user_id = 'déjà'")],
    db="text")
add("latin1-startup/rq", "client-encoding",
    [("rq", f"{TACC} WHERE user_id = 'zoë'".encode("latin1"))], db="text",
    conn={"startup": {"client_encoding": "LATIN1"}})
add("latin1-startup/rp", "client-encoding",
    [("rp", [(TINS1, [B("text", "Åsa")])])], db="text",
    conn={"startup": {"client_encoding": "LATIN1"}})
add("latin1-ascii/q", "client-encoding", [("q", f"{TACC} WHERE user_id = 'alice'")],
    db="text", conn=LATIN1, note="ASCII means the same in both: right (or refused)")
add("utf8-nonascii/q", "client-encoding", [("q", f"{TACC} WHERE user_id = 'zoë'")],
    db="text", note="UTF8 on both sides: right (or refused)")

# ----------------------------------------------------------------------------------------------
# 13. size: a key past what pgmux reads (the lab's max_client_memory is 1MB) is refused
#     (54000) or read right, never guessed

BIG = "x" * (1200 * 1024)
add("size-key-after-1.2MB/q", "size", [("q", f"{ACC} WHERE v <> '{BIG}' AND user_id = 12")])
add("size-update-1.2MB/q", "size",
    [("q", f"UPDATE accounts SET v = '{BIG[:1100 * 1024]}' || v WHERE user_id = 6")])
add("size-insert-1.2MB/x", "size",
    [("x", "INSERT INTO accounts (user_id, v, n) VALUES ($1, $2, 0)",
      [B("int8", 104), T("unknown", BIG)])])
add("size-key-after-200KB/q", "size",
    [("q", f"{ACC} WHERE v <> '{BIG[:200 * 1024]}' AND user_id = 12")])
LONG_TEXT_KEY = "L" * 1500
add("size-long-text-key/q", "size", [("q", tins(lit_text(LONG_TEXT_KEY)))], db="text")
add("size-long-text-key/pb", "size", [("x", TINS1, [B("text", LONG_TEXT_KEY)])], db="text")

# ----------------------------------------------------------------------------------------------
# 14. no_shard_key = all: a keyless read is fanned out, never sent to one guessed shard

FANOUT = ["not", "is-not-true", "case", "select-list", "subquery", "exists", "cte",
          "left-join-on", "union", "or"]
for name in FANOUT:
    sql = dict(KEY_NOT_RESTRICTING_READS)[name]
    variants(f"fanout-{name}", "fanout", sql, 6, kinds=("lit", "pb"), fanout=True)
for name in ("line-comment", "E-string", "in-list"):
    add(f"fanout-or-{name}/lit", "fanout", [("q", dict(OR_TRAPS)[name])], fanout=True)
for name in ("bit3", "float4", "operator"):
    add(f"fanout-cast-{name}/lit", "fanout",
        [("q", f"{ACC} WHERE user_id = {dict(CAST_READS)[name]}")], fanout=True)
add("fanout-keyless/q", "fanout", [("q", f"{ACC} WHERE n = 1")], fanout=True,
    note="keyless read: fanned out (right) or refused")
add("fanout-keyless/pb", "fanout", [("x", f"{ACC} WHERE n = $1", [B("int4", 1)])],
    fanout=True)
add("fanout-keyed/lit", "fanout", [("q", f"{ACC} WHERE user_id = 6")], fanout=True,
    control=True)
add("fanout-keyless-write/q", "fanout", [("q", "UPDATE accounts SET n = 0 WHERE n = 1")],
    fanout=True, note="a write is never fanned out: refused")


def by_class():
    out = {}
    for c in CASES:
        out[c["cls"]] = out.get(c["cls"], 0) + 1
    return out
