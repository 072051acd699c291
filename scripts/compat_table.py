#!/usr/bin/python3
"""compat_table.py: writes doc/pgbouncer-reference.md, every PgBouncer 1.25 key, console command,
option and signal with its status in pgmux, read from pgmux's own tables so that it cannot drift.

What it reads (regular expressions over the C sources, so a row added to any table shows up):
  * include/config.h     CONFIG_KEYS: the general keys pgmux implements;
  * src/config_load.c    later_keys[]: PgBouncer general keys pgmux accepts with a warning and no
                         effect (a check function beside one means some values are refused);
  * src/config_entries.c db_keys[] and user_keys[]: [databases] / [users] keys; EK_LATER rows are
                         accepted with a warning and no effect;
  * src/admin_show.c, src/admin_cmd.c: the console's SHOW and control commands;
  * src/main.c           long options.
The PgBouncer side (names and groups only) is data below, taken from PgBouncer 1.25's
doc/config.md and doc/usage.md.

  /usr/bin/python3 scripts/compat_table.py            print the document
  /usr/bin/python3 scripts/compat_table.py --write    write doc/pgbouncer-reference.md
  /usr/bin/python3 scripts/compat_table.py --check    exit 1 when that file is out of date
"""

import os
import re
import sys

TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(TOP, "doc", "pgbouncer-reference.md")

# PgBouncer 1.25's [pgbouncer] keys, in its documentation's groups.
PGB_GENERAL = [
    ("Generic settings", """logfile pidfile listen_addr listen_port unix_socket_dir
        unix_socket_mode unix_socket_group user pool_mode max_client_conn default_pool_size
        min_pool_size reserve_pool_size reserve_pool_timeout max_db_connections
        max_db_client_connections max_user_connections max_user_client_connections
        server_round_robin track_extra_parameters ignore_startup_parameters peer_id
        disable_pqexec application_name_add_host conffile service_name job_name stats_period
        max_prepared_statements scram_iterations"""),
    ("Authentication settings", """auth_type auth_hba_file auth_ident_file auth_file auth_user
        auth_query auth_dbname auth_ldap_options"""),
    ("Log settings", """syslog syslog_ident syslog_facility log_connections log_disconnections
        log_pooler_errors log_stats verbose"""),
    ("Console access control", "admin_users stats_users"),
    ("Connection sanity checks, timeouts", """server_reset_query server_reset_query_always
        server_check_delay server_check_query server_fast_close server_lifetime
        server_idle_timeout server_connect_timeout server_login_retry client_login_timeout
        autodb_idle_timeout pool_idle_timeout dns_max_ttl dns_nxdomain_ttl
        dns_zone_check_period resolv_conf query_wait_notify login_notify_message"""),
    ("TLS settings", """client_tls_sslmode client_tls_key_file client_tls_cert_file
        client_tls_ca_file client_tls_protocols client_tls_ciphers client_tls13_ciphers
        client_tls_ecdhcurve client_tls_dheparams server_tls_sslmode server_tls_ca_file
        server_tls_key_file server_tls_cert_file server_tls_protocols server_tls_ciphers
        server_tls13_ciphers"""),
    ("Dangerous timeouts", """query_timeout query_wait_timeout cancel_wait_timeout
        client_idle_timeout idle_transaction_timeout transaction_timeout"""),
    ("Low-level network settings", """pkt_buf max_packet_size listen_backlog sbuf_loopcnt
        so_reuseport tcp_defer_accept tcp_socket_buffer tcp_keepalive tcp_keepcnt tcp_keepidle
        tcp_keepintvl tcp_user_timeout"""),
]

PGB_DB_KEYS = """dbname host port user password auth_user auth_query auth_dbname pool_size
    min_pool_size reserve_pool_size connect_query pool_mode query_wait_timeout
    load_balance_hosts target_session_attrs max_db_connections max_db_client_connections
    server_lifetime client_encoding datestyle timezone""".split()

PGB_USER_KEYS = """pool_size reserve_pool_size pool_mode max_user_connections query_timeout
    query_wait_timeout idle_transaction_timeout transaction_timeout client_idle_timeout
    max_user_client_connections""".split()

PGB_SHOW = """STATS STATS_TOTALS STATS_AVERAGES TOTALS SERVERS CLIENTS POOLS PEER_POOLS LISTS
    USERS DATABASES PEERS FDS SOCKETS ACTIVE_SOCKETS CONFIG MEM DNS_HOSTS DNS_ZONES VERSION
    STATE HELP""".split()

PGB_COMMANDS = """PAUSE DISABLE ENABLE RECONNECT KILL KILL_CLIENT SUSPEND RESUME SHUTDOWN RELOAD
    WAIT_CLOSE SET""".split()

PGB_OPTIONS = [("-d", "--daemon"), ("-R", "--reboot"), ("-u", "--user"), ("-v", "--verbose"),
               ("-q", "--quiet"), ("-V", "--version"), ("-h", "--help")]

# Why a command or option pgmux lacks is absent (statuses read from the sources say the rest).
NOTES = {
    "SHOW FDS": "online restart's fd list; PgBouncer removed it on its master in 2026",
    "SUSPEND": "online restart; PgBouncer removed it on its master in 2026",
    "-R": "online restart; PgBouncer removed it on its master in 2026",
}


def read(rel):
    with open(os.path.join(TOP, rel)) as f:
        return f.read()


def table_body(text, start):
    """The text of the brace-initialised table that starts at regex `start`."""
    m = re.search(start, text)
    if not m:
        return ""
    i = text.index("{", m.end() - 1)
    depth = 0
    for j in range(i, len(text)):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return text[i:j]
    return text[i:]


def general_status():
    keys = set(re.findall(r"X\(CF_\w+,\s*(\w+),", read("include/config.h")))
    later = {}
    body = table_body(read("src/config_load.c"), r"later_keys\[\]\s*=\s*{")
    for name, check in re.findall(r'{\s*"(\w+)",\s*(\w+)\s*}', body):
        later[name] = check != "NULL"
    return keys, later


def entry_status(table):
    body = table_body(read("src/config_entries.c"), table + r"\[\]\s*=\s*{")
    return {name: kind for name, kind in re.findall(r'{\s*"(\w+)",\s*(EK_\w+)', body)}


def console_commands():
    show = set(re.findall(r'SHOW\("(\w+)"', read("src/admin_show.c")))
    ctl = {}
    for name, fn, help_ in re.findall(r'CTRL\("(\w+)",\s*\w+,\s*"[^"]*",\s*(\w+),\s*"([^"]*)"',
                                      read("src/admin_cmd.c")):
        ctl[name] = help_
    return show, ctl


def options():
    src = read("src/main.c")
    longs = set(re.findall(r'{\s*"([\w-]+)",\s*\w+_argument', src))
    return longs


def status_general(name, keys, later):
    if name in keys:
        return "supported"
    if name in later:
        if later[name]:
            return "accepted, no effect yet (warning); values that would weaken security are refused"
        return "accepted, no effect yet (warning)"
    return "not recognised: refused as an unknown key"


def status_entry(name, kinds):
    kind = kinds.get(name)
    if kind is None:
        return "not recognised: refused"
    if kind == "EK_LATER":
        return "accepted, no effect yet (warning)"
    return "supported"


def render():
    keys, later = general_status()
    dbk, usk = entry_status("db_keys"), entry_status("user_keys")
    show, ctl = console_commands()
    longs = options()
    out = ["# PgBouncer reference: every key, command, option and signal, and pgmux's status", "",
           "Generated by `/usr/bin/python3 scripts/compat_table.py --write` from pgmux's own "
           "tables (include/config.h, src/config_load.c, src/config_entries.c, src/admin_show.c, "
           "src/admin_cmd.c, src/main.c); do not edit by hand. `--check` fails when this file is "
           "out of date. PgBouncer's side is its 1.25 documentation (doc/config.md, "
           "doc/usage.md). How pgmux does on PgBouncer's own test suite is in "
           "doc/pgbouncer-compat.md.", ""]
    counts = {}

    def row(section, name, st):
        kind = re.split(r"[:,(]", st)[0].strip()
        counts.setdefault(section, {}).setdefault(kind, 0)
        counts[section][kind] += 1
        out.append(f"| `{name}` | {st} |")

    out += ["## General keys (`[pgbouncer]`, also read as `[pgmux]`)", ""]
    for group, names in PGB_GENERAL:
        out += [f"### {group}", "", "| key | pgmux |", "|---|---|"]
        for n in names.split():
            row("general", n, status_general(n, keys, later))
        out.append("")
    extra = sorted(keys - {n for _, g in PGB_GENERAL for n in g.split()})
    out += ["### pgmux's own general keys (not in PgBouncer)", "",
            ", ".join(f"`{k}`" for k in extra), ""]

    out += ["## `[databases]` entry keys", "", "| key | pgmux |", "|---|---|"]
    for n in PGB_DB_KEYS:
        st = status_entry(n, dbk)
        if n == "target_session_attrs" and n not in dbk:
            st += " (pgmux's `[database X]` sections route by role instead)"
        row("databases", n, st)
    own = sorted(k for k in dbk if k not in PGB_DB_KEYS)
    out += ["", "pgmux's own entry keys: " + (", ".join(f"`{k}`" for k in own) or "none"), ""]

    out += ["## `[users]` keys", "", "| key | pgmux |", "|---|---|"]
    for n in PGB_USER_KEYS:
        row("users", n, status_entry(n, usk))
    out.append("")

    out += ["## Console commands", "", "| command | pgmux |", "|---|---|"]
    for n in PGB_SHOW:
        name = f"SHOW {n}"
        st = "supported" if n in show else "not supported"
        if name in NOTES:
            st += f" ({NOTES[name]})"
        row("console", name, st)
    for n in PGB_COMMANDS:
        if n not in ctl:
            st = "not supported"
        elif ctl[n].startswith("not supported"):
            st = "accepted, answers with an error"
        else:
            st = "supported"
        if n in NOTES:
            st += f" ({NOTES[n]})"
        row("console", n, st)
    own = sorted(s for s in show if s not in PGB_SHOW)
    out += ["", "pgmux's own SHOW commands: " + ", ".join(f"`SHOW {s}`" for s in own), ""]

    out += ["## Command-line options", "", "| option | pgmux |", "|---|---|"]
    for short, long_ in PGB_OPTIONS:
        st = "supported" if long_[2:] in longs else "not supported"
        if short in NOTES:
            st += f" ({NOTES[short]})"
        row("options", f"{short}, {long_}", st)
    own = sorted(l for l in longs if f"--{l}" not in {o[1] for o in PGB_OPTIONS})
    out += ["", "pgmux's own options: " + ", ".join(f"`--{l}`" for l in own), ""]

    out += ["## Signals", "", "| signal | PgBouncer | pgmux |", "|---|---|---|",
            "| SIGHUP | reload | the same (a bad file keeps the old configuration) |",
            "| SIGTERM | stop listening, wait for clients (repeat: exit) | see man/pgmux.1, SIGNALS |",
            "| SIGINT | wait for servers to be released (repeat: exit) | see man/pgmux.1, SIGNALS |",
            "| SIGQUIT | exit at once | the same |",
            "| SIGUSR1 | PAUSE | the same |",
            "| SIGUSR2 | RESUME | the same |", ""]

    out += ["## Counts", "", "| section | status | count |", "|---|---|---:|"]
    for section, c in counts.items():
        for st, n in sorted(c.items()):
            out.append(f"| {section} | {st} | {n} |")
    out.append("")
    return "\n".join(out)


def main():
    text = render()
    if "--check" in sys.argv:
        try:
            have = open(OUT).read()
        except OSError:
            have = ""
        if have != text:
            print(f"{OUT} is out of date: run /usr/bin/python3 scripts/compat_table.py --write",
                  file=sys.stderr)
            return 1
        return 0
    if "--write" in sys.argv:
        with open(OUT, "w") as f:
            f.write(text)
        return 0
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
