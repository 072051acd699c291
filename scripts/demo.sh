#!/usr/bin/env bash
# demo.sh: builds pgmux, starts a throwaway PostgreSQL 15 and pgmux in front of it, and prints how
# to connect.  Ctrl-C stops both and removes every file the demo made.
# Usage: scripts/demo.sh [--check]     (--check: run one query through pgmux and exit)
# Environment: PGMUX_PORT (default 6432, or the next free port), PG_BINDIR, SKIP_BUILD=1.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
CHECK=0
[ "${1:-}" = "--check" ] && CHECK=1

PG_BINDIR=${PG_BINDIR:-/usr/lib/postgresql/15/bin}
DEMO_USER=demo
DEMO_PASSWORD=demo
DEMO_DB=demo

if [ "${SKIP_BUILD:-0}" != 1 ]; then
	bash scripts/build.sh
fi
PGMUX=$ROOT/src/pgmux
[ -x "$PGMUX" ] || { echo "demo: $PGMUX was not built" >&2; exit 1; }

# -- helpers ------------------------------------------------------------------------------------
port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
free_port() {
	local p=$1
	while port_in_use "$p"; do p=$((p + 1)); done
	echo "$p"
}
# PostgreSQL refuses to run as root: run its programs as the postgres user then.
as_pg() {
	if [ "$(id -u)" -eq 0 ]; then
		setpriv --reuid=postgres --regid=postgres --init-groups -- "$@"
	else
		"$@"
	fi
}

WORK=$(mktemp -d "${TMPDIR:-/tmp}/pgmux-demo.XXXXXX")
chmod 755 "$WORK"
PGDATA=$WORK/pgdata
PGSOCK=$WORK/pgsock
mkdir -p "$PGSOCK"
[ "$(id -u)" -eq 0 ] && chown postgres:postgres "$WORK" "$PGSOCK"
PGMUX_PID=""
TAIL_PID=""

cleanup() {
	trap - EXIT INT TERM
	echo
	echo "demo: stopping"
	[ -n "$TAIL_PID" ] && kill "$TAIL_PID" 2>/dev/null
	TAIL_PID=""
	if [ -n "$PGMUX_PID" ] && kill -0 "$PGMUX_PID" 2>/dev/null; then
		kill -INT "$PGMUX_PID" 2>/dev/null || true
		for _ in $(seq 50); do kill -0 "$PGMUX_PID" 2>/dev/null || break; sleep 0.1; done
		kill -KILL "$PGMUX_PID" 2>/dev/null || true
		wait "$PGMUX_PID" 2>/dev/null || true
	fi
	if [ -f "$PGDATA/postmaster.pid" ]; then
		as_pg "$PG_BINDIR/pg_ctl" -D "$PGDATA" -m fast -w stop >/dev/null 2>&1 || true
	fi
	rm -rf "$WORK"
	echo "demo: removed $WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# -- PostgreSQL ---------------------------------------------------------------------------------
PGPORT=$(free_port 15432)
echo "demo: starting PostgreSQL 15 on 127.0.0.1:$PGPORT (data in $PGDATA)"
(cd "$WORK" && as_pg "$PG_BINDIR/initdb" --nosync -A trust -U postgres -E UTF8 --locale=C \
	-D "$PGDATA" >"$WORK/initdb.log") || { cat "$WORK/initdb.log"; exit 1; }
cat >>"$PGDATA/postgresql.conf" <<EOF
listen_addresses = '127.0.0.1'
port = $PGPORT
unix_socket_directories = '$PGSOCK'
fsync = off
max_connections = 200
EOF
# local socket: trusted (for this script); TCP: the demo user logs in with SCRAM
cat >"$PGDATA/pg_hba.conf" <<EOF
local all all trust
host  all all 127.0.0.1/32 scram-sha-256
EOF
(cd "$WORK" && as_pg "$PG_BINDIR/pg_ctl" -D "$PGDATA" -l "$WORK/postgres.log" -w start >/dev/null)

psql_pg() { "$PG_BINDIR/psql" -X -q -v ON_ERROR_STOP=1 -h "$PGSOCK" -p "$PGPORT" -U postgres "$@"; }
psql_pg -d postgres -c "SET password_encryption = 'scram-sha-256'" \
	-c "CREATE ROLE $DEMO_USER LOGIN PASSWORD '$DEMO_PASSWORD'" \
	-c "CREATE DATABASE $DEMO_DB OWNER $DEMO_USER"
psql_pg -d "$DEMO_DB" -U "$DEMO_USER" -c "
	CREATE TABLE greetings (id serial PRIMARY KEY, lang text, text text);
	INSERT INTO greetings (lang, text) VALUES ('en', 'hello'), ('fr', 'bonjour'), ('de', 'hallo');"

# -- pgmux --------------------------------------------------------------------------------------
PORT=${PGMUX_PORT:-$(free_port 6432)}
cat >"$WORK/userlist.txt" <<EOF
"$DEMO_USER" "$DEMO_PASSWORD"
EOF
cat >"$WORK/pgmux.ini" <<EOF
[databases]
$DEMO_DB = host=127.0.0.1 port=$PGPORT dbname=$DEMO_DB

[pgmux]
listen_addr = 127.0.0.1
listen_port = $PORT
unix_socket_dir = $WORK
auth_type = scram-sha-256
auth_file = $WORK/userlist.txt
admin_users = $DEMO_USER
pool_mode = transaction
default_pool_size = 10
max_client_conn = 1000
logfile = $WORK/pgmux.log
pidfile = $WORK/pgmux.pid
EOF

echo "demo: starting pgmux on 127.0.0.1:$PORT (config $WORK/pgmux.ini)"
"$PGMUX" "$WORK/pgmux.ini" >"$WORK/pgmux.out" 2>&1 &
PGMUX_PID=$!
for _ in $(seq 100); do
	port_in_use "$PORT" && break
	kill -0 "$PGMUX_PID" 2>/dev/null || { echo "demo: pgmux exited:"; cat "$WORK/pgmux.out"; exit 1; }
	sleep 0.1
done
port_in_use "$PORT" || { echo "demo: pgmux is not listening:"; cat "$WORK/pgmux.out"; exit 1; }

CONN="host=127.0.0.1 port=$PORT dbname=$DEMO_DB user=$DEMO_USER password=$DEMO_PASSWORD"
if [ "$CHECK" = 1 ]; then
	out=$("$PG_BINDIR/psql" -X -A -t "$CONN" -c "SELECT string_agg(text, ' ' ORDER BY id) FROM greetings")
	echo "demo: query through pgmux returned: $out"
	[ "$out" = "hello bonjour hallo" ]
	exit $?
fi

cat <<EOF

pgmux is running (pid $PGMUX_PID) in front of PostgreSQL 15 (127.0.0.1:$PGPORT).
Connect through pgmux with:

    psql "$CONN"

then try:  SELECT * FROM greetings;   SELECT pg_backend_pid();  (pool_mode = transaction)
Load test: PGPASSWORD=$DEMO_PASSWORD $PG_BINDIR/pgbench -n -S -c 50 -T 10 -h 127.0.0.1 -p $PORT -U $DEMO_USER $DEMO_DB
           (after: $PG_BINDIR/pgbench -i -h $PGSOCK -p $PGPORT -U $DEMO_USER $DEMO_DB)
pgmux log: $WORK/pgmux.log     config: $WORK/pgmux.ini

Press Ctrl-C to stop pgmux and PostgreSQL and delete $WORK.
EOF
tail -n 0 -f "$WORK/pgmux.log" &
TAIL_PID=$!
wait "$PGMUX_PID" || true
PGMUX_PID=""
echo "demo: pgmux exited"
