#!/usr/bin/env bash
# demo.sh: builds pgmux, starts a throwaway PostgreSQL 15 primary with two streaming replicas and
# pgmux in front of them (reads routed to the replicas, writes to the primary), and prints how to
# connect.  Ctrl-C stops everything and removes every file the demo made.
# Usage: scripts/demo.sh [--check]     (--check: run a few queries through pgmux and exit 0 or 1)
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
NREPLICAS=2

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
# A directory the PostgreSQL programs may write to (they run as postgres when we are root).
pg_mkdir() {
	mkdir -p "$1"
	if [ "$(id -u)" -eq 0 ]; then chown postgres:postgres "$1"; fi
}
# wait_ready SOCKDIR PORT NAME: until the server accepts connections (up to 30 s)
wait_ready() {
	for _ in $(seq 300); do
		"$PG_BINDIR/pg_isready" -q -h "$1" -p "$2" -t 1 && return 0
		sleep 0.1
	done
	echo "demo: $3 (port $2) is not accepting connections" >&2
	return 1
}

WORK=$(mktemp -d "${TMPDIR:-/tmp}/pgmux-demo.XXXXXX")
chmod 755 "$WORK"
if [ "$(id -u)" -eq 0 ]; then chown postgres:postgres "$WORK"; fi
# The primary; the replicas are REPLICA_DATA[i] with REPLICA_SOCK[i] and REPLICA_PORT[i].
PGDATA=$WORK/primary
PGSOCK=$WORK/primary.sock
pg_mkdir "$PGSOCK"
REPLICA_DATA=()
REPLICA_SOCK=()
REPLICA_PORT=()
PGMUX_PID=""
TAIL_PID=""

# pg_stop DATADIR: stops the server running there, if any
pg_stop() {
	if [ -f "$1/postmaster.pid" ]; then
		as_pg "$PG_BINDIR/pg_ctl" -D "$1" -m fast -w stop >/dev/null 2>&1 || true
	fi
}
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
	local d
	for d in ${REPLICA_DATA[@]+"${REPLICA_DATA[@]}"}; do pg_stop "$d"; done
	pg_stop "$PGDATA"
	rm -rf "$WORK"
	echo "demo: removed $WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# -- PostgreSQL: the primary --------------------------------------------------------------------
PGPORT=$(free_port 15432)
echo "demo: starting PostgreSQL 15 primary on 127.0.0.1:$PGPORT (data in $PGDATA)"
(cd "$WORK" && as_pg "$PG_BINDIR/initdb" --nosync -A trust -U postgres -E UTF8 --locale=C \
	-D "$PGDATA" >"$WORK/initdb.log") || { cat "$WORK/initdb.log"; exit 1; }
cat >>"$PGDATA/postgresql.conf" <<EOF
listen_addresses = '127.0.0.1'
port = $PGPORT
unix_socket_directories = '$PGSOCK'
fsync = off
max_connections = 200
wal_level = replica
max_wal_senders = 10
wal_keep_size = 256MB
hot_standby = on
EOF
# local socket: trusted (for this script); TCP: the demo user logs in with SCRAM, and the
# replicas stream from the primary as postgres
cat >"$PGDATA/pg_hba.conf" <<EOF
local all         all                   trust
host  replication postgres 127.0.0.1/32 trust
host  all         all      127.0.0.1/32 scram-sha-256
EOF
(cd "$WORK" && as_pg "$PG_BINDIR/pg_ctl" -D "$PGDATA" -l "$WORK/primary.log" -w start >/dev/null)
wait_ready "$PGSOCK" "$PGPORT" primary

psql_pg() { "$PG_BINDIR/psql" -X -q -v ON_ERROR_STOP=1 -h "$PGSOCK" -p "$PGPORT" -U postgres "$@"; }
psql_pg -d postgres -c "SET password_encryption = 'scram-sha-256'" \
	-c "CREATE ROLE $DEMO_USER LOGIN PASSWORD '$DEMO_PASSWORD'" \
	-c "CREATE DATABASE $DEMO_DB OWNER $DEMO_USER"
psql_pg -d "$DEMO_DB" -U "$DEMO_USER" -c "
	CREATE TABLE greetings (id serial PRIMARY KEY, lang text, text text);
	INSERT INTO greetings (lang, text) VALUES ('en', 'hello'), ('fr', 'bonjour'), ('de', 'hallo');"

# -- PostgreSQL: the streaming replicas ---------------------------------------------------------
# Each is a base backup of the primary (-R writes primary_conninfo and standby.signal) with its
# own data directory, port and socket directory.
next=$((PGPORT + 1))
for i in $(seq 0 $((NREPLICAS - 1))); do
	data=$WORK/replica$i
	sock=$WORK/replica$i.sock
	port=$(free_port "$next")
	next=$((port + 1))
	REPLICA_DATA+=("$data")
	REPLICA_SOCK+=("$sock")
	REPLICA_PORT+=("$port")
	pg_mkdir "$sock"
	echo "demo: starting replica$i on 127.0.0.1:$port (data in $data)"
	(cd "$WORK" && as_pg "$PG_BINDIR/pg_basebackup" -h 127.0.0.1 -p "$PGPORT" -U postgres \
		-D "$data" -R -X stream -c fast >"$WORK/basebackup$i.log" 2>&1) ||
		{ cat "$WORK/basebackup$i.log"; exit 1; }
	cat >>"$data/postgresql.conf" <<EOF
port = $port
unix_socket_directories = '$sock'
EOF
	(cd "$WORK" && as_pg "$PG_BINDIR/pg_ctl" -D "$data" -l "$WORK/replica$i.log" -w start \
		>/dev/null) || { cat "$WORK/replica$i.log"; exit 1; }
	wait_ready "$sock" "$port" "replica$i"
done

# -- pgmux --------------------------------------------------------------------------------------
PORT=${PGMUX_PORT:-$(free_port 6432)}
cat >"$WORK/userlist.txt" <<EOF
"$DEMO_USER" "$DEMO_PASSWORD"
EOF
{
	cat <<EOF
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
; the monitor polls each backend's role and WAL position every second, logging in as the demo user
monitor_interval = 1
monitor_user = $DEMO_USER
monitor_password = $DEMO_PASSWORD

[databases]
; a plain PgBouncer-style entry: always the primary
${DEMO_DB}_primary = host=127.0.0.1 port=$PGPORT dbname=$DEMO_DB

; one name for the primary and its replicas: reads go to a replica, everything else to the primary
[database $DEMO_DB]
primary = host=127.0.0.1 port=$PGPORT dbname=$DEMO_DB
EOF
	for port in "${REPLICA_PORT[@]}"; do
		echo "replica = host=127.0.0.1 port=$port dbname=$DEMO_DB"
	done
	cat <<EOF
read_routing = on
max_replica_lag = 1MB
read_your_writes = lsn
EOF
} >"$WORK/pgmux.ini"

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
ADMIN_CONN="host=127.0.0.1 port=$PORT dbname=pgmux user=$DEMO_USER password=$DEMO_PASSWORD"
psql_mux() { "$PG_BINDIR/psql" -X -q -A -t -v ON_ERROR_STOP=1 "$CONN" "$@"; }

# --check: a read, a read that must land on a replica, and a write that must land on the primary
check() {
	local out ok=0 port written read
	out=$(psql_mux -c "SELECT string_agg(text, ' ' ORDER BY id) FROM greetings") || out="(failed)"
	echo "demo: query through pgmux returned: $out"
	[ "$out" = "hello bonjour hallo" ] || return 1

	# the monitor needs a moment to see the replicas; until then reads go to the primary
	for _ in $(seq 25); do
		port=$(psql_mux -c "SELECT inet_server_port()") || port="(failed)"
		if [ "$port" = "${REPLICA_PORT[0]}" ] || [ "$port" = "${REPLICA_PORT[1]}" ]; then
			ok=1
			break
		fi
		sleep 0.2
	done
	echo "demo: SELECT inet_server_port() through pgmux: $port" \
		"(replicas: ${REPLICA_PORT[*]})"
	[ "$ok" = 1 ] || return 1

	# a write, then (same session, read_your_writes = lsn) a read that must see it
	out=$(psql_mux -F ' ' -c "INSERT INTO greetings (lang, text) VALUES ('es', 'hola')
			RETURNING inet_server_port()" \
		-c "SELECT text, inet_server_port() FROM greetings WHERE lang = 'es'") || out=""
	written=$(echo "$out" | sed -n 1p)
	read=$(echo "$out" | sed -n 2p)
	echo "demo: INSERT ... RETURNING inet_server_port() through pgmux: ${written:-(failed)}" \
		"(primary: $PGPORT)"
	echo "demo: then SELECT text, inet_server_port() in the same session: ${read:-(failed)}"
	[ "$written" = "$PGPORT" ] && [ "${read%% *}" = "hola" ]
}
if [ "$CHECK" = 1 ]; then
	if check; then
		echo "demo: check passed"
		exit 0
	fi
	echo "demo: check FAILED; pgmux log:"
	tail -n 30 "$WORK/pgmux.log" 2>/dev/null || true
	exit 1
fi

cat <<EOF

pgmux is running (pid $PGMUX_PID) in front of PostgreSQL 15:
    primary   127.0.0.1:$PGPORT
    replica0  127.0.0.1:${REPLICA_PORT[0]}
    replica1  127.0.0.1:${REPLICA_PORT[1]}
Connect through pgmux with:

    psql "$CONN"

then try:
    SELECT inet_server_port();             -- a replica: ${REPLICA_PORT[0]} or ${REPLICA_PORT[1]}; run it twice
    /* pgmux: role=primary */ SELECT inet_server_port();       -- the primary: $PGPORT
    INSERT INTO greetings (lang, text) VALUES ('es', 'hola');  -- a write: the primary
    SELECT *, inet_server_port() FROM greetings;
        -- read-your-writes: sees 'hola', from a replica that has replayed it or the primary
Admin console (demo is in admin_users):

    psql "$ADMIN_CONN"

then try:  SHOW BACKENDS;   SHOW POOLS;
The primary alone, as a plain [databases] entry: dbname=${DEMO_DB}_primary
Load test: PGPASSWORD=$DEMO_PASSWORD $PG_BINDIR/pgbench -n -S -c 50 -T 10 -h 127.0.0.1 -p $PORT -U $DEMO_USER $DEMO_DB
           (after: $PG_BINDIR/pgbench -i -h $PGSOCK -p $PGPORT -U $DEMO_USER $DEMO_DB)
pgmux log: $WORK/pgmux.log     config: $WORK/pgmux.ini

Press Ctrl-C to stop pgmux and the three PostgreSQL servers and delete $WORK.
EOF
tail -n 0 -f "$WORK/pgmux.log" &
TAIL_PID=$!
wait "$PGMUX_PID" || true
PGMUX_PID=""
echo "demo: pgmux exited"
