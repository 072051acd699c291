#!/usr/bin/env bash
# deps.sh: installs the Debian packages pgmux needs to build, run and test (only the missing ones).
# Runs apt-get as root, or through sudo when not root.  Safe to run repeatedly.
set -euo pipefail

PACKAGES=(
	# build
	build-essential autoconf automake libtool pkg-config
	libevent-dev libpq-dev libssl-dev libinih-dev libcmocka-dev
	# systemd's readiness protocol (optional at configure time: --without-systemd)
	libsystemd-dev
	# the Debian package (tests/package/build_deb.sh) and the unit check
	debhelper dh-autoreconf dpkg-dev fakeroot lintian systemd
	# sanitizers and libFuzzer
	clang libclang-rt-14-dev
	# PostgreSQL's own grammar (libpg_query): the shard-key analysis, and the classifier's
	# cross-check; its parse trees come as protobuf-c messages, whose header is in
	# libprotobuf-c-dev (the runtime itself is inside libpg_query)
	libpg-query-dev libprotobuf-c-dev
	# integration tests: PostgreSQL 15, the reference pooler, clients
	postgresql-15 postgresql-contrib postgresql-client-15 pgbouncer
	python3 python3-psycopg python3-asyncpg
	# PgBouncer's own pytest suite (scripts/pgbouncer_suite.sh), its certificates, and the
	# socat relay its server_check_query tests put in front of PostgreSQL
	python3-pytest python3-pytest-asyncio python3-pytest-xdist python3-pytest-timeout
	python3-filelock openssl socat
	# /metrics checked by promtool, scraped by a real Prometheus, and the alerting rules of
	# deploy/prometheus tested (tests/integration/test_prometheus.py)
	prometheus
	# the instruction budget (tests/bench/cgbench.py: callgrind, callgrind_control)
	valgrind
	# tools the scripts use
	curl procps util-linux
)

missing=()
for p in "${PACKAGES[@]}"; do
	status=$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)
	[ "$status" = installed ] || missing+=("$p")
done

if [ ${#missing[@]} -eq 0 ]; then
	echo "deps: all ${#PACKAGES[@]} packages installed"
	exit 0
fi

echo "deps: installing ${missing[*]}"
SUDO=()
if [ "$(id -u)" -ne 0 ]; then
	command -v sudo >/dev/null || { echo "deps: not root and no sudo; install: ${missing[*]}" >&2; exit 1; }
	SUDO=(sudo -n)
fi
export DEBIAN_FRONTEND=noninteractive
"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q
"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
	-o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "${missing[@]}"

# The Debian package creates and starts a default cluster on port 5432; the tests and the demo
# start their own servers, so leave it alone (it does not get in the way: ports are chosen free).
echo "deps: done"
