#!/usr/bin/env bash
# coverage.sh: line and branch coverage of pgmux's sources by a stream harness's corpus (clang source-based coverage).
#
# Usage: tests/fuzz/coverage.sh stream|stream_route CORPUS_DIR [OUT_DIR]
# Builds the harness with -fprofile-instr-generate -fcoverage-mapping (no sanitizers, so it
# is quick), runs every input of CORPUS_DIR once, and prints llvm-cov's report for src/*.c
# (OUT_DIR, default a temporary directory, keeps the build, the profile and report.txt).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
name=${1:?usage: coverage.sh stream|stream_route CORPUS_DIR [OUT_DIR]}
corpus=$(cd "${2:?corpus directory}" && pwd)
out=${3:-$(mktemp -d "${TMPDIR:-/tmp}/pgmux-cov.XXXXXX")}
mkdir -p "$out/obj"
cd "$root"

CC=${FUZZ_CC:-clang}
CFLAGS=(-g -O1 -std=gnu11 -D_GNU_SOURCE -Iinclude -I/usr/include/postgresql -I"$here")
if [ ! -f include/pgmux_config.h ]; then
	printf '#define PACKAGE "pgmux"\n#define PACKAGE_VERSION "fuzz"\n' >"$out/pgmux_config.h"
	CFLAGS+=(-I"$out")
fi
COV=(-fprofile-instr-generate -fcoverage-mapping)

objs=()
pids=()
for src in $(ls src/*.c | grep -v -e '^src/main\.c$' -e '^src/prepared\.c$') tests/fuzz/stream_peek.c; do
	o="$out/obj/$(basename "$src" .c).o"
	objs+=("$o")
	"$CC" "${CFLAGS[@]}" "${COV[@]}" -fsanitize=fuzzer-no-link -c "$src" -o "$o" &
	pids+=($!)
	if [ "${#pids[@]}" -ge "${FUZZ_JOBS:-2}" ]; then
		wait "${pids[0]}"
		pids=("${pids[@]:1}")
	fi
done
for pid in "${pids[@]}"; do wait "$pid"; done
# the peer itself is not measured
"$CC" "${CFLAGS[@]}" -c tests/fuzz/stream_peer.c -o "$out/obj/stream_peer.o"
"$CC" "${CFLAGS[@]}" "${COV[@]}" -fsanitize=fuzzer "$here/fuzz_$name.c" "${objs[@]}" \
	"$out/obj/stream_peer.o" -levent -levent_extra -lpq -lssl -lcrypto -linih -o "$out/fuzz_$name"

LLVM_PROFILE_FILE="$out/run.profraw" "$out/fuzz_$name" -runs=0 "$corpus" >"$out/run.log" 2>&1
llvm-profdata merge -sparse "$out/run.profraw" -o "$out/run.profdata"
llvm-cov report "$out/fuzz_$name" -instr-profile="$out/run.profdata" \
	$(ls src/*.c | grep -v '^src/main\.c$') >"$out/report.txt"
cat "$out/report.txt"
echo "coverage: $out"
