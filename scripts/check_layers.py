#!/usr/bin/python3
"""check_layers.py: the one rule between pgmux's layers, held by CI: a file never includes the
header of a higher layer (doc/architecture.md, "Layers").

Layers, lowest first:
  leaf    pure modules: parsers, hashing, config text, the lexer; no connection, no event loop
  base    the object model (model.h), the worker's services, bytes in and out (sbuf, tls)
  engine  the data path: logins, clients, servers, pools, prepared statements, routing
  ops     what watches and steers the engine: statistics, the janitor, the console, /metrics
  daemon  the process: start-up, listeners, signals, reload (pgmux.c, main.c)
  tool    programs beside pgmux that reuse its lower layers (pgmux-reshard: reshard*.c)

A module is a file's name without its extension; route_topo.c, route_int.h and the other
route_* files belong to module "route", admin_* to "admin", config_* to "config", reshard_* to
"reshard".  A file of a
module no table names fails the check: every new module says where it stands.

Usage: scripts/check_layers.py [ROOT]   (exit 1 and one line per breach when the rule breaks)
"""

import re
import sys
from pathlib import Path

LAYERS = [
    ("leaf", """log proto hist pwcrypt txtrack sqlscan sqlmask shardsql shardhash namehash verdict
             mergeplan merge mergeval scram userlist config list freelist stats_fields pgmux_config pstext pshash hba sdnotify
             splitsql copysplit"""),
    ("base", "model worker sbuf tls pqev"),
    ("engine", "auth auth_query client server repl pool pool_info prepared route shard shardval shardplan monitor"),
    ("ops", "stats janitor admin prom statuspage"),
    ("daemon", "pgmux main"),
    ("tool", "reshard"),
]
LEVEL = {}
for i, (_, mods) in enumerate(LAYERS):
    for m in mods.split():
        LEVEL[m] = i
FAMILIES = ("route", "admin", "config", "reshard")
INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"', re.M)


def module(path):
    stem = Path(path).stem
    for fam in FAMILIES:
        if stem == fam or stem.startswith(fam + "_"):
            return fam
    return stem


def main():
    root = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).resolve().parent.parent)
    files = sorted(list((root / "src").glob("*.c")) + list((root / "include").glob("*.h")))
    breaches, unknown = [], set()
    for f in files:
        mod = module(f)
        if mod not in LEVEL:
            unknown.add(f"{f.relative_to(root)} (module {mod})")
            continue
        for inc in INCLUDE.findall(f.read_text()):
            imod = module(inc)
            if imod not in LEVEL:
                unknown.add(f"{inc} (included by {f.relative_to(root)})")
                continue
            if LEVEL[imod] > LEVEL[mod]:
                breaches.append(f"{f.relative_to(root)} ({LAYERS[LEVEL[mod]][0]}) includes {inc} "
                                f"({LAYERS[LEVEL[imod]][0]})")
    for u in sorted(unknown):
        print(f"check_layers: no layer for {u}: add its module to LAYERS in scripts/check_layers.py")
    for b in breaches:
        print(f"check_layers: a lower layer includes a higher one: {b}")
    n = len(files)
    if breaches or unknown:
        print(f"check_layers: {len(breaches)} breach(es), {len(unknown)} unplaced, over {n} files")
        return 1
    print(f"check_layers: ok ({n} files, {len(LAYERS)} layers)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
