#!/usr/bin/env bash
# run.sh: builds the libFuzzer harnesses under ASan+UBSan and runs each for a bounded time.
#
# Usage: tests/fuzz/run.sh [harness ...]     (default: all; names without the fuzz_ prefix)
# Environment:
#   FUZZ_SECONDS  seconds per harness (default 15)
#   FUZZ_CC       compiler (default clang; needs libclang-rt-14-dev for libFuzzer)
#   FUZZ_KEEP=1   keep the work directory (binaries, logs, grown corpora) even when all pass
#   FUZZ_JOBS     compilers run at once (default 2)
# The seed corpus in tests/fuzz/corpus/<harness>/ is copied to a temporary directory first, so
# the repository is never written.  Exit status: 0 when every harness ran clean, 1 when one
# crashed, leaked, timed out or failed to build, 2 when the toolchain is missing.
set -uo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
cd "$root" || exit 2

FUZZ_SECONDS=${FUZZ_SECONDS:-15}
CC=${FUZZ_CC:-clang}

# Every pgmux source but main(), for the harnesses that run the whole worker.  prepared.c is
# not listed: stream_peek.c compiles it with a read-only accessor of its own.  reshard*.c is
# the pgmux-reshard program (a main() of its own), not part of the worker.
WORKER_SRCS=$(ls src/*.c | grep -v -e '^src/main\.c$' -e '^src/prepared\.c$' -e '^src/reshard' | tr '\n' ' ')
WORKER_LIBS="-levent -levent_extra -lpq -lssl -lcrypto -linih -lpg_query -lprotobuf-c"
# configured --with-systemd (the default where libsystemd-dev is installed): sdnotify.c calls it
if grep -q '^#define HAVE_SYSTEMD 1' include/pgmux_config.h 2>/dev/null; then
	WORKER_LIBS+=" -lsystemd"
fi

# harness -> the sources it links, and its libraries.
declare -A SRCS=(
	[startup]="src/proto.c src/log.c"
	[scram_server]="src/scram.c src/pwcrypt.c"
	[scram_client]="src/scram.c src/pwcrypt.c"
	[userlist]="src/userlist.c src/scram.c src/pwcrypt.c"
	[hba]="src/hba.c"
	[secret]="src/userlist.c src/scram.c src/pwcrypt.c"
	[config]="src/config_load.c src/config_values.c src/config_entries.c src/config_cluster.c src/log.c src/sqlscan.c"
	[sqlscan]="src/sqlscan.c"
	[verdict]="src/verdict.c src/sqlscan.c"
	[bind]="src/shardval.c src/shardhash.c"
	[shardsql]="src/shardsql.c src/sqlmask.c"
	[merge]="src/merge.c src/mergeval.c src/mergeplan.c src/proto.c src/log.c"
	[copysplit]="src/copysplit.c src/splitsql.c"
	[stream]="$WORKER_SRCS tests/fuzz/stream_peek.c"
	[stream_route]="$WORKER_SRCS tests/fuzz/stream_peek.c"
)
declare -A LIBS=(
	[startup]=""
	[scram_server]="-lcrypto"
	[scram_client]="-lcrypto"
	[userlist]="-lcrypto"
	[hba]=""
	[secret]="-lcrypto"
	[config]="-linih -lpq"
	[sqlscan]=""
	[verdict]=""
	[bind]=""
	[shardsql]="-lpg_query"
	[merge]="-lpg_query -lprotobuf-c"
	[copysplit]="-lpg_query -lprotobuf-c"
	[stream]="$WORKER_LIBS"
	[stream_route]="$WORKER_LIBS"
)
# Harness helpers built without coverage instrumentation: their branches (the fake peer's)
# are not pgmux's, and would only mislead the fuzzer.
declare -A HELPERS=(
	[stream]="tests/fuzz/stream_peer.c"
	[stream_route]="tests/fuzz/stream_peer.c"
)
ALL=(startup scram_server scram_client userlist secret config sqlscan verdict bind shardsql hba merge copysplit stream stream_route)

# shellcheck disable=SC2054  # the commas belong to -fsanitize=
CFLAGS=(-g -O1 -std=gnu11 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined
	-D_GNU_SOURCE -Iinclude -I/usr/include/postgresql)

if ! command -v "$CC" >/dev/null 2>&1; then
	echo "fuzz: $CC not found; install clang and libclang-rt-14-dev (scripts/deps.sh does)" >&2
	exit 2
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/pgmux-fuzz.XXXXXX") || exit 2
keep=${FUZZ_KEEP:-0}
cleanup() {
	if [ "$keep" = 1 ]; then
		echo "fuzz: work directory kept: $work"
	else
		rm -rf "$work"
	fi
}
trap cleanup EXIT

# pgmux.h includes configure's pgmux_config.h; an unconfigured tree gets a stand-in.
if [ ! -f include/pgmux_config.h ]; then
	mkdir -p "$work/gen"
	printf '#define PACKAGE "pgmux"\n#define PACKAGE_VERSION "fuzz"\n' >"$work/gen/pgmux_config.h"
	CFLAGS+=(-I"$work/gen")
fi

# Each source is compiled once (up to FUZZ_JOBS at a time) and shared by the harnesses that
# link it.  obj_of prints the object of source $1 built as $2: "fuzz" (instrumented) or
# "plain" (a helper, without coverage instrumentation).  build_objects KIND SOURCE... builds
# those missing and fails when a compiler did (OBJECT.log keeps what it said).
obj_of() {
	local src=$1 kind=${2:-fuzz}
	local o="$work/obj/${src//\//_}.$kind.o"
	echo "$o"
}
build_objects() {
	local kind=$1
	shift
	local src o pids=() rc=0
	mkdir -p "$work/obj"
	for src in "$@"; do
		o=$(obj_of "$src" "$kind")
		[ -f "$o" ] && continue
		if [ "$kind" = plain ]; then
			# shellcheck disable=SC2054
			"$CC" "${CFLAGS[@]/-fsanitize=fuzzer,address,undefined/-fsanitize=address,undefined}" \
				-I"$here" -c "$src" -o "$o" >"$o.log" 2>&1 &
		else
			"$CC" "${CFLAGS[@]}" -I"$here" -c "$src" -o "$o" >"$o.log" 2>&1 &
		fi
		pids+=($!)
		if [ "${#pids[@]}" -ge "${FUZZ_JOBS:-2}" ]; then
			wait "${pids[0]}" || rc=1
			pids=("${pids[@]:1}")
		fi
	done
	for pid in "${pids[@]}"; do
		wait "$pid" || rc=1
	done
	return $rc
}

# A one-line program shows whether libFuzzer and the sanitizer runtimes are there at all.
printf 'int LLVMFuzzerTestOneInput(const char *d, unsigned long n) { (void)d; (void)n; return 0; }\n' \
	>"$work/probe.c"
if ! "$CC" "${CFLAGS[@]}" "$work/probe.c" -o "$work/probe" >"$work/probe.log" 2>&1; then
	echo "fuzz: $CC cannot build a libFuzzer binary (is libclang-rt-14-dev installed?):" >&2
	sed 's/^/  /' "$work/probe.log" >&2
	exit 2
fi

if [ $# -gt 0 ]; then
	names=("$@")
else
	names=("${ALL[@]}")
fi

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0:symbolize=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

passed=0
failed=0
for name in "${names[@]}"; do
	if [ -z "${SRCS[$name]+x}" ]; then
		echo "fuzz_$name: FAIL unknown harness (known: ${ALL[*]})"
		failed=$((failed + 1))
		continue
	fi
	bin="$work/fuzz_$name"
	log="$work/fuzz_$name.log"
	objs=()
	helpers=${HELPERS[$name]:-}
	# shellcheck disable=SC2086  # the source and library lists are meant to split
	if build_objects fuzz ${SRCS[$name]} && build_objects plain $helpers; then
		for src in ${SRCS[$name]}; do objs+=("$(obj_of "$src" fuzz)"); done
		for src in $helpers; do objs+=("$(obj_of "$src" plain)"); done
		# shellcheck disable=SC2086
		"$CC" "${CFLAGS[@]}" -I"$here" "$here/fuzz_$name.c" "${objs[@]}" ${LIBS[$name]} \
			-o "$bin" >"$work/fuzz_$name.build.log" 2>&1
		brc=$?
	else
		for src in ${SRCS[$name]}; do cat "$(obj_of "$src" fuzz).log"; done >"$work/fuzz_$name.build.log" 2>/dev/null
		for src in $helpers; do cat "$(obj_of "$src" plain).log"; done >>"$work/fuzz_$name.build.log" 2>/dev/null
		brc=1
	fi
	if [ "$brc" -ne 0 ]; then
		echo "fuzz_$name: FAIL build"
		sed 's/^/  /' "$work/fuzz_$name.build.log" | head -n 60
		failed=$((failed + 1))
		keep=1
		continue
	fi
	# The reproducers of bugs found before (tests/fuzz/crashes/) run first, with the steering
	# around known bugs off: every one of them is fixed, and must stay fixed.
	replay_failed=0
	case $name in
	stream) repros=$(ls "$here"/crashes/stream-* 2>/dev/null | grep -v '/stream-route-') ;;
	stream_route) repros=$(ls "$here"/crashes/stream-route-* 2>/dev/null) ;;
	*) repros= ;;
	esac
	for r in $repros; do
		if ! "$bin" "$r" >"$work/replay.log" 2>&1; then
			echo "fuzz_$name: FAIL reproducer $(basename "$r") fails again:"
			grep -E '(ERROR|SUMMARY|runtime error|invariant failed|Assertion)' "$work/replay.log" |
				head -n 10 | sed 's/^/  /'
			replay_failed=1
		fi
	done
	if [ "$replay_failed" -ne 0 ]; then
		failed=$((failed + 1))
		keep=1
		continue
	fi
	corpus="$work/corpus/$name"
	mkdir -p "$corpus" "$work/artifacts"
	if [ -d "$here/corpus/$name" ]; then
		cp -R "$here/corpus/$name/." "$corpus/"
	fi
	"$bin" -max_total_time="$FUZZ_SECONDS" -rss_limit_mb=2048 -timeout=25 \
		-print_final_stats=1 -artifact_prefix="$work/artifacts/fuzz_$name-" \
		"$corpus" >"$log" 2>&1
	rc=$?
	execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
	rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -n 1)
	cov=$(grep -Eo 'cov: [0-9]+' "$log" | tail -n 1 | grep -Eo '[0-9]+')
	units=$(grep -Eo 'corp: [0-9]+' "$log" | tail -n 1 | grep -Eo '[0-9]+')
	stats="${execs:-?} execs, ${rate:-?}/s, cov ${cov:-?}, corpus ${units:-?}"
	if [ "$rc" -eq 0 ]; then
		echo "fuzz_$name: ok ($stats)"
		passed=$((passed + 1))
	else
		echo "fuzz_$name: FAIL exit $rc ($stats)"
		# The sanitizer's report and the input that triggered it.
		grep -E '^(==[0-9]+==ERROR|SUMMARY:|    #[0-9]+ |.*runtime error:|.*invariant failed:|.*Test unit written to)' \
			"$log" | head -n 40 | sed 's/^/  /'
		for a in "$work/artifacts/fuzz_$name-"*; do
			[ -f "$a" ] || continue
			echo "  input $(basename "$a") ($(wc -c <"$a") bytes, hex):"
			od -An -tx1 -v "$a" | head -n 16 | sed 's/^/   /'
		done
		echo "  full log: $log"
		failed=$((failed + 1))
		keep=1
	fi
done

echo "fuzz: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
