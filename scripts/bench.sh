#!/usr/bin/env bash
# bench.sh: the project's benchmark entry point.  Builds pgmux if needed, then runs
#   1. ../shared/bench/proxybench throughput --proxy src/pgmux   (pgmux vs PgBouncer), when that
#      tool exists next to the tree, and
#   2. tests/bench/routebench.py   (read_routing on/off vs a plain [databases] entry,
#      read_your_writes lsn/off, the SQL classifier micro-benchmark),
# and prints both outputs.  Runs as root (servers then run as user postgres) or as any user.
#
# Usage: [SKIP_DEPS=1] [BENCH_SKIP_BUILD=1] [BENCH_SKIP_PROXYBENCH=1] [PROXYBENCH_ARGS="..."]
#        [BENCH_SKIP_ROUTEBENCH=1] scripts/bench.sh [routebench arguments...]
#   SKIP_DEPS=1               do not install Debian packages (passed to scripts/build.sh)
#   BENCH_SKIP_BUILD=1        use the src/pgmux that is there
#   PROXYBENCH_ARGS           extra arguments for proxybench throughput (e.g. "--clients 50
#                             --modes simple --rounds 1")
#   BENCH_SKIP_PROXYBENCH=1   skip proxybench
#   BENCH_SKIP_ROUTEBENCH=1   skip routebench
# Arguments are passed to routebench.py, e.g. scripts/bench.sh --seconds 5 --rounds 1 --json r.json
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PROXYBENCH=${PROXYBENCH:-$ROOT/../shared/bench/proxybench}

if [ "${BENCH_SKIP_BUILD:-0}" != 1 ]; then
	echo "== build"
	# build.sh configures once and then only runs make; make also builds the classifier
	# micro-benchmark when Makefile.am knows it (tests/bench/bench_sqlscan), ignored if not.
	bash scripts/build.sh || { echo "bench: build failed" >&2; exit 1; }
	if grep -q 'bench_sqlscan' Makefile 2>/dev/null; then
		make -s -j"${MAKE_JOBS:-2}" tests/bench/bench_sqlscan >/dev/null 2>&1 ||
			echo "bench: tests/bench/bench_sqlscan did not build; routebench will skip it"
	fi
fi
[ -x src/pgmux ] || { echo "bench: src/pgmux is missing" >&2; exit 1; }

rc=0
if [ "${BENCH_SKIP_PROXYBENCH:-0}" = 1 ]; then
	echo "== proxybench: skipped (BENCH_SKIP_PROXYBENCH=1)"
elif [ ! -x "$PROXYBENCH" ] && [ ! -f "$PROXYBENCH" ]; then
	echo "== proxybench: skipped ($PROXYBENCH not found)"
else
	echo "== proxybench throughput --proxy src/pgmux ${PROXYBENCH_ARGS:-}"
	read -r -a pb_args <<<"${PROXYBENCH_ARGS:-}"
	/usr/bin/python3 "$PROXYBENCH" throughput --proxy src/pgmux ${pb_args[@]+"${pb_args[@]}"} || {
		echo "bench: proxybench failed ($?)"
		rc=1
	}
fi

if [ "${BENCH_SKIP_ROUTEBENCH:-0}" = 1 ]; then
	echo "== routebench: skipped (BENCH_SKIP_ROUTEBENCH=1)"
else
	echo "== routebench $*"
	/usr/bin/python3 tests/bench/routebench.py --pgmux src/pgmux "$@"
	r=$?
	if [ "$r" != 0 ]; then
		echo "bench: routebench exited with $r"
		rc=$r
	fi
fi
exit "$rc"
