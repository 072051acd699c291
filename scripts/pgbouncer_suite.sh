#!/usr/bin/env bash
# pgbouncer_suite.sh: runs PgBouncer's own pytest suite (../shared/pgbouncer-tests, the drop-in
# yardstick of doc/pgbouncer-compat.md) against a pgmux binary, and fails when a test listed in
# tests/pgbouncer/expected-pass.txt does not pass.  Tests not listed may fail: the list only
# grows, so a drop-in behaviour that worked cannot silently stop working.
# usage: scripts/pgbouncer_suite.sh BINARY [--update]
#   --update   rewrite the list with the tests that passed in this run (after a full run that
#              passed twice in a row; see doc/pgbouncer-compat.md)
# Environment: PGBOUNCER_TESTS=DIR (default ../shared/pgbouncer-tests beside the checkout);
#   PGBOUNCER_TESTS_ARGS="test_admin.py" runs part of the suite (for trying the script).
# Exit: 0 ok, 1 an expected test failed (after one rerun of the failures), 77 no suite found.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=$(readlink -f "$1")
LIST="$ROOT/tests/pgbouncer/expected-pass.txt"
SUITE=${PGBOUNCER_TESTS:-$ROOT/../shared/pgbouncer-tests}
if [ ! -x "$SUITE/run" ]; then
	echo "pgbouncer suite: none at $SUITE: skipped"
	exit 77
fi
# The shared snapshot is read-only, and the suite writes its certificates into its own tree:
# run a writable copy.
work=$(mktemp -d /tmp/pgmux-pgbt.XXXXXX)
trap 'rm -rf "$work"' EXIT
cp -r "$SUITE" "$work/suite"
chmod -R u+w "$work/suite"

# run [pytest args...]: one run; prints its summary line; leaves the passed tests in $work/passed
run() {
	local out log
	out=$("$work/suite/run" "$BIN" tls=yes -rA "$@" 2>/dev/null)
	log=$(printf '%s\n' "$out" | sed -n 's/^log: //p' | head -1)
	printf '%s\n' "$out" | tail -1
	grep -E '^PASSED ' "$log" 2>/dev/null | sed 's/^PASSED //; s/ - .*//' | sort -u >"$work/passed"
	# what did not pass, one line each (the reasons are in doc/pgbouncer-compat.md)
	grep -E '^(FAILED|ERROR) ' "$log" 2>/dev/null | cut -c1-200 | sort -u | sed 's/^/  /' >&2
	cp "$log" "$work/last.log" 2>/dev/null || true
	rm -rf "${log%.log}" "$log" "${log%.log}.failed"
}

# shellcheck disable=SC2086
line=$(run ${PGBOUNCER_TESTS_ARGS:-.})
echo "pgbouncer suite: $line"
sort -u "$work/passed" >"$work/all_passed"
if [ "${2:-}" = --update ]; then
	{ echo "# PgBouncer suite tests pgmux passes (scripts/pgbouncer_suite.sh --update); one per line"
	  cat "$work/all_passed"; } >"$LIST"
	echo "pgbouncer suite: wrote $(wc -l <"$work/all_passed") tests to ${LIST#"$ROOT"/}"
	exit 0
fi
grep -v '^#' "$LIST" | sort -u >"$work/expected"
comm -23 "$work/expected" "$work/all_passed" >"$work/missing"
if [ -s "$work/missing" ]; then
	# One rerun of just those, so that a test that lost a race with the 2-core machine once is
	# told apart from one that is broken; every rerun is named in the log.
	echo "pgbouncer suite: $(wc -l <"$work/missing") expected tests did not pass; rerunning them once:"
	sed 's/^/  /' "$work/missing"
	# shellcheck disable=SC2046
	echo "pgbouncer suite (rerun): $(run $(cat "$work/missing"))"
	comm -23 "$work/missing" "$work/passed" >"$work/still"
	if [ -s "$work/still" ]; then
		echo "pgbouncer suite: FAILED, expected to pass:"
		sed 's/^/  /' "$work/still"
		grep -E '^(FAILED|ERROR) ' "$work/last.log" | head -40
		exit 1
	fi
fi
echo "pgbouncer suite: all $(wc -l <"$work/expected") expected tests passed"
exit 0
