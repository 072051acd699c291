"""Shard hash: pgmux's shardhash puts every int8, int4, int2, text and uuid key in the same
partition as PostgreSQL's own PARTITION BY HASH, checked key by key with
satisfies_hash_partition and by routing the keys into a real hash-partitioned table.

The C side runs through tests/tools/shardhash_cli (next to the pgmux under test, or compiled
here from the sources when that one is missing or older than them)."""

import os
import random
import shlex
import shutil
import subprocess
import uuid
from pathlib import Path

import pgharness
from pgharness import ROOT, Skip, timeout

SEED = 20240611  # fixed, so that a failure names keys that fail again
INT64_MIN, INT64_MAX = -(1 << 63), (1 << 63) - 1
INT32_MIN, INT32_MAX = -(1 << 31), (1 << 31) - 1
SOURCES = [ROOT / "src" / "shardhash.c", ROOT / "include" / "shardhash.h",
           ROOT / "tests" / "tools" / "shardhash_cli.c"]


# ----------------------------------------------------------------------------------------------
# the C side

def _cli(env):
    """Path of an up-to-date shardhash_cli: the build's own, else one compiled into env.dir."""
    newest = max(p.stat().st_mtime for p in SOURCES)
    pgmux = Path(os.path.abspath(pgharness.PGMUX_BIN))
    # src/pgmux in a (VPATH) build tree, or a pgmux at the top of one
    for top in (pgmux.parent.parent, pgmux.parent):
        built = top / "tests" / "tools" / "shardhash_cli"
        if built.is_file() and os.access(built, os.X_OK) and built.stat().st_mtime >= newest:
            print(f"shardhash_cli: {built}")
            return built
    cc = shlex.split(os.environ.get("CC", "")) or [shutil.which("gcc") or shutil.which("cc")]
    if not cc[0]:
        raise Skip("tests/tools/shardhash_cli is not built and there is no C compiler")
    out = env.dir / "shardhash_cli"
    cmd = cc + ["-std=gnu11", "-O2", "-D_GNU_SOURCE", "-Wall", "-Wextra",
                "-I", str(ROOT / "include"), str(SOURCES[0]), str(SOURCES[2]), "-o", str(out)]
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                       timeout=120)
    assert r.returncode == 0, f"{' '.join(cmd)} failed:\n{r.stdout}"
    print(f"shardhash_cli: compiled {out}")
    return out


def _cli_remainders(cli, typ, keys, modulus):
    """shardhash's remainder of every key, in order.  Text goes as hex when it holds a line
    break, since the CLI reads one key per line."""
    lines = []
    for k in keys:
        if typ == "text" and ("\n" in k or "\r" in k):
            lines.append(f"texthex {modulus} {k.encode().hex()}")
        else:
            lines.append(f"{typ} {modulus} {k}")
    r = subprocess.run([str(cli)], input=("\n".join(lines) + "\n").encode(),
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60)
    assert r.returncode == 0, f"shardhash_cli failed ({r.returncode}): {r.stderr.decode()}"
    out = [int(x) for x in r.stdout.split()]
    assert len(out) == len(keys), (len(out), len(keys))
    return out


# ----------------------------------------------------------------------------------------------
# the PostgreSQL side

def _hash_parent(env, db, name, typ, modulus=None):
    """A PARTITION BY HASH (k) table of key type typ; with modulus, its partitions name_0 ..."""
    env.sql(db, f"CREATE TABLE {name} (k {typ}, i int) PARTITION BY HASH (k)")
    for r in range(modulus or 0):
        env.sql(db, f"CREATE TABLE {name}_{r} PARTITION OF {name} "
                    f"FOR VALUES WITH (MODULUS {modulus}, REMAINDER {r})")
    return name


def _pg_remainders(env, db, parent, typ, keys, modulus):
    """The one remainder r with satisfies_hash_partition(parent, modulus, r, key), per key: all
    keys go in one array and one statement."""
    rows = env.sql(db, f"SELECT i, r FROM unnest(%s::{typ}[]) WITH ORDINALITY AS t(k, i) "
                       f"CROSS JOIN generate_series(0, {modulus - 1}) AS r "
                       f"WHERE satisfies_hash_partition(%s::regclass, {modulus}, r, k)",
                   (keys, parent))
    got = {}
    for i, r in rows:
        assert i not in got, f"key {keys[i - 1]!r} satisfies two remainders of {modulus}"
        got[i] = r
    missing = [keys[i] for i in range(len(keys)) if i + 1 not in got]
    assert not missing, f"keys in no partition of modulus {modulus}: {missing[:10]!r}"
    return [got[i + 1] for i in range(len(keys))]


def _routed_remainders(env, db, table, typ, keys, modulus):
    """The partition that INSERT routes each key to, in the table made by _hash_parent."""
    env.sql(db, f"INSERT INTO {table} SELECT k, i FROM unnest(%s::{typ}[]) WITH ORDINALITY "
                f"AS t(k, i)", (keys,))
    rows = env.sql(db, f"SELECT i, tableoid::regclass::text FROM {table}")
    assert len(rows) == len(keys), (len(rows), len(keys))
    got = {i: int(part.rsplit("_", 1)[1]) for i, part in rows}
    return [got[i + 1] for i in range(len(keys))]


def _compare(what, keys, want, got, modulus):
    bad = [(k, w, g) for k, w, g in zip(keys, want, got) if w != g]
    assert not bad, (f"{what}, modulus {modulus}: {len(bad)} of {len(keys)} keys differ "
                     f"(key, PostgreSQL, shardhash): {bad[:10]!r}")
    print(f"{what}: {len(keys)} keys agree for modulus {modulus}")


def _check(env, db, cli, typ, keys, moduli, routed_modulus, cli_keys=None, cli_type=None):
    """shardhash against satisfies_hash_partition for every modulus, and against INSERT routing
    for routed_modulus.  cli_keys: the same keys as the CLI should see them (other spellings)."""
    cli_keys = keys if cli_keys is None else cli_keys
    cli_type = cli_type or typ
    parent = _hash_parent(env, db, f"p_{typ}", typ)
    for m in moduli:
        _compare(f"{typ} satisfies_hash_partition", keys,
                 _pg_remainders(env, db, parent, typ, keys, m),
                 _cli_remainders(cli, cli_type, cli_keys, m), m)
    table = _hash_parent(env, db, f"r_{typ}", typ, routed_modulus)
    _compare(f"{typ} routed by INSERT", keys,
             _routed_remainders(env, db, table, typ, keys, routed_modulus),
             _cli_remainders(cli, cli_type, cli_keys, routed_modulus), routed_modulus)


def _unique(seq):
    return list(dict.fromkeys(seq))


# ----------------------------------------------------------------------------------------------
# keys

def _int_edges(bits):
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    ks = [0, 1, -1, 2, -2, 42, -42, lo, lo + 1, hi, hi - 1]
    for b in range(bits - 1):
        ks += [1 << b, (1 << b) - 1, -(1 << b), -(1 << b) - 1, (1 << b) + 1]
    if bits == 64:
        # where the int8 fold to 32 bits changes behaviour
        ks += [INT32_MIN, INT32_MAX, INT32_MIN - 1, INT32_MAX + 1, (1 << 32) - 1, 1 << 32,
               (1 << 32) + 1, -(1 << 32), -(1 << 32) - 1, -(1 << 32) + 1, 32767, -32768]
    return [k for k in _unique(ks) if lo <= k <= hi]


def _int8_keys(rng, n=10000):
    ks = dict.fromkeys(_int_edges(64) + list(range(-200, 201)))
    ranges = [(INT64_MIN, INT64_MAX), (INT32_MIN, INT32_MAX), (-(1 << 40), 1 << 40)]
    while len(ks) < n:
        ks[rng.randint(*rng.choice(ranges))] = None
    return list(ks)


def _text_keys(rng, n=1000):
    pools = [
        "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.@ ",
        "àéîõüßçñøåÅÆŒžźżłć",                 # 2-byte UTF-8
        "αβγδεЖЗИЙКЛ€",                       # 2 and 3 bytes
        "日本語中文한국어テキスト",             # 3 bytes
        "🎉😀🚀👍🏽𝄞",                         # 4 bytes
        "\t\n\r'\"\\%;{}",                    # quoting and line breaks
    ]
    ks = ["", "a", "abc", "user_42", " ", "  trailing  ", "ÿ", "€", "🎉",
          "hello world", "hello world!", "hello world!?",       # 11, 12, 13 bytes
          "abcdefghijklmnopqrstuvw", "abcdefghijklmnopqrstuvwx", "abcdefghijklmnopqrstuvwxy",
          "日本語テ", "日本語テキスト中文", "żółćżółć", "🎉🎉🎉", "🎉🎉🎉🎉🎉🎉",  # 12/24 bytes
          "x" * 35, "x" * 36, "x" * 37, "é" * 500, "y" * 5000]
    ks = dict.fromkeys(ks)
    while len(ks) < n:
        length = rng.choice([rng.randrange(0, 14), rng.randrange(0, 40), rng.randrange(40, 300)])
        pool = rng.choice(pools + ["".join(pools)])
        ks["".join(rng.choice(pool) for _ in range(length))] = None
    return list(ks)


def _uuid_spellings(rng, u):
    """One of the spellings uuid_in accepts, for the CLI; PostgreSQL gets the canonical one."""
    h = u.hex
    form = rng.randrange(5)
    if form == 0:
        return str(u)
    if form == 1:
        return str(u).upper()
    if form == 2:
        return "{" + str(u) + "}"
    if form == 3:
        return h
    return "-".join(h[i:i + 4] for i in range(0, 32, 4))


# ----------------------------------------------------------------------------------------------
# tests

@timeout(180)
def test_shardhash_int8(env):
    """10,000 int8 keys: the extremes, the int4 and power-of-two edges, small and random ones."""
    cli = _cli(env)
    db = env.database()
    keys = _int8_keys(random.Random(SEED))
    assert len(keys) == 10000
    for k in (INT64_MIN, INT64_MAX, 0, 1, -1, INT32_MIN, INT32_MAX, INT32_MIN - 1,
              INT32_MAX + 1):
        assert k in keys
    _check(env, db, cli, "int8", keys, (2, 3, 4, 5, 8), 5)


@timeout(180)
def test_shardhash_int4_int2(env):
    """int4 keys (edges and 5,000 random) and every int2 value: the same shards as int8 has for
    the same numbers, as PostgreSQL's hashint4extended / hashint2extended give."""
    cli = _cli(env)
    db = env.database()
    rng = random.Random(SEED + 4)
    keys = _int_edges(32) + [rng.randint(INT32_MIN, INT32_MAX) for _ in range(5000)]
    keys = _unique(keys)
    _check(env, db, cli, "int4", keys, (2, 4, 5), 5)
    # the int8 code path for int4 values lands on the same shards
    _compare("int4 keys hashed as int8", keys, _cli_remainders(cli, "int4", keys, 7),
             _cli_remainders(cli, "int8", keys, 7), 7)
    int2 = list(range(-32768, 32768))
    _check(env, db, cli, "int2", int2, (4,), 3)


@timeout(120)
def test_shardhash_text(env):
    """1,000 text keys: ASCII and 2/3/4-byte UTF-8, empty, spaces, line breaks, every length
    around the 12-byte blocks, and long ones, in a UTF8 database with collation C."""
    cli = _cli(env)
    db = env.database()
    enc, coll = env.sql(db, "SELECT getdatabaseencoding(), datcollate FROM pg_database "
                            "WHERE datname = current_database()")[0]
    if enc != "UTF8":
        raise Skip(f"database encoding is {enc}; these keys are UTF-8")
    keys = _text_keys(random.Random(SEED + 1))
    # the server holds exactly the bytes the CLI hashes
    want = sum(len(k.encode()) for k in keys)
    got = env.sql1(db, "SELECT sum(octet_length(k)) FROM unnest(%s::text[]) k", (keys,))
    assert got == want, (got, want)
    print(f"text keys: {len(keys)}, collation {coll}")
    _check(env, db, cli, "text", keys, (2, 4, 5, 7), 4)


@timeout(120)
def test_shardhash_uuid(env):
    """1,000 uuids, handed to the CLI in every input spelling uuid_in accepts."""
    cli = _cli(env)
    db = env.database()
    rng = random.Random(SEED + 2)
    us = [uuid.UUID(int=0), uuid.UUID(int=(1 << 128) - 1), uuid.UUID(int=1),
          uuid.UUID("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11")]
    us += [uuid.UUID(int=rng.getrandbits(128)) for _ in range(996)]
    keys = [str(u) for u in us]
    spelled = [_uuid_spellings(rng, u) for u in us]
    _check(env, db, cli, "uuid", keys, (2, 4, 5), 3, cli_keys=spelled)
