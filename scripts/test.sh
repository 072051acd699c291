#!/usr/bin/env bash
# test.sh: the whole test suite, as CI runs it.
#   1. dependencies (scripts/deps.sh)
#   2. the normal build in the source tree (scripts/build.sh): src/pgmux
#   3. an ASan+UBSan build in build-asan/ (a copy of the tracked sources, built incrementally)
#   4. the cmocka unit tests (make check) on the ASan build
#      (and doc/pgbouncer-reference.md against the tables it is generated from)
#   5. the instruction budget: tests/bench/cgbench.py --check on src/pgmux (callgrind
#      instructions per transaction against tests/bench/cg_budget.json; fails above +5%)
#   6. the libFuzzer harnesses (tests/fuzz/run.sh), FUZZ_SECONDS each
#   7. the Debian package (tests/package/build_deb.sh: dpkg-buildpackage in a copy of the tree,
#      dpkg-deb -c/-I checks, lintian without errors; about 1.5 minutes)
#   8. the integration tests (tests/integration/run.py) against the ASan pgmux (and pgmux-reshard)
#   9. PgBouncer's own suite (scripts/pgbouncer_suite.sh) against the normal build: the tests
#      listed in tests/pgbouncer/expected-pass.txt must pass
# The last line printed is "N passed, N failed" over all stages; the exit code is non-zero when
# anything failed.
#
# Environment:
#   PGMUX_TEST_ASAN=0      skip the ASan build: unit and integration tests use the normal build
#   FUZZ_SECONDS=7         time per fuzz harness (0 skips fuzzing; 15 harnesses: longer runs
#                          belong outside the 30-minute CI, e.g. FUZZ_SECONDS=600)
#   PGMUX_TEST_ARGS="..."  extra arguments for run.py (e.g. "-k test_auth" or "-x")
#   PGMUX_TEST_CGBENCH=0   skip the instruction budget (about 1.5 minutes)
#   PGMUX_TEST_PGBOUNCER=0 skip PgBouncer's own suite (about 9 minutes)
#   PGMUX_TEST_DEB=0       skip the Debian package build
#   PGMUX_CGBENCH_ARGS="..." extra arguments for cgbench.py (e.g. "--configs 'plain/*'")
#   CONFIGURE_ARGS="..."   extra configure arguments for both builds
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

ASAN=${PGMUX_TEST_ASAN:-1}
FUZZ_SECONDS=${FUZZ_SECONDS:-7}
ASAN_DIR="$ROOT/build-asan"    # in .gitignore
PY=/usr/bin/python3   # Debian's python: psycopg and asyncpg are installed for it only

passed=0
failed=0
skipped=0
summary=()
T_START=$(date +%s)

stage() { echo; echo "=== $* (at $(( $(date +%s) - T_START ))s) ==="; }
ok() { passed=$((passed + ${2:-1})); summary+=("ok    $1"); }
bad() { failed=$((failed + ${2:-1})); summary+=("FAIL  $1"); }
finish() {
	echo
	echo "=== summary ($(( $(date +%s) - T_START ))s) ==="
	for s in "${summary[@]}"; do echo "  $s"; done
	if [ "$skipped" -gt 0 ]; then
		echo "$passed passed, $failed failed, $skipped skipped"
	else
		echo "$passed passed, $failed failed"
	fi
	[ "$failed" -eq 0 ]
	exit $?
}

# ---------------------------------------------------------------------------------------------
stage "dependencies"
if ! bash scripts/deps.sh; then
	bad "deps.sh"
	finish
fi

stage "build (normal)"
t0=$(date +%s)
if SKIP_DEPS=1 bash scripts/build.sh; then
	ok "build: src/pgmux ($(( $(date +%s) - t0 ))s)"
else
	bad "build"
	finish
fi

# ---------------------------------------------------------------------------------------------
# The ASan tree: the tracked (and untracked, not ignored) files copied into build-asan/, only the
# ones whose content changed, so that make rebuilds incrementally.  A VPATH build cannot be used
# while the source tree itself is configured.
BUILD_DIR="$ROOT"
if [ "$ASAN" = 1 ]; then
	stage "build (ASan + UBSan) in build-asan/"
	t0=$(date +%s)
	# The sources: git's list in a checkout; in a release tarball or a `git archive` (no .git),
	# what `make dist` ships, listed by `make distdir` in the tree build.sh just configured.
	src_list=$(mktemp)
	if git -C "$ROOT" rev-parse --git-dir >/dev/null 2>&1; then
		git -C "$ROOT" ls-files -z -c -o --exclude-standard >"$src_list"
	else
		dist_tmp=$(mktemp -d)
		if ! make -s -C "$ROOT" distdir distdir="$dist_tmp/t" >/dev/null; then
			echo "not a git checkout, and make distdir failed: cannot list sources for build-asan/" >&2
			rm -rf "$dist_tmp" "$src_list"
			bad "build (ASan)"
			finish
		fi
		(cd "$dist_tmp/t" && find . -type f -printf '%P\0') >"$src_list"
		rm -rf "$dist_tmp"
	fi
	mkdir -p "$ASAN_DIR"
	copied=0
	while IFS= read -r -d '' f; do
		[ -f "$f" ] || continue
		if ! cmp -s "$f" "$ASAN_DIR/$f"; then
			mkdir -p "$ASAN_DIR/$(dirname "$f")"
			cp "$f" "$ASAN_DIR/$f"
			copied=$((copied + 1))
		fi
	done <"$src_list"
	rm -f "$src_list"
	echo "copied $copied changed files"
	if (cd "$ASAN_DIR" && CONFIGURE_ARGS="--enable-asan ${CONFIGURE_ARGS:-}" SKIP_DEPS=1 \
		bash scripts/build.sh); then
		ok "build (ASan): build-asan/src/pgmux ($(( $(date +%s) - t0 ))s)"
		BUILD_DIR="$ASAN_DIR"
	else
		bad "build (ASan)"
		finish
	fi
fi

# ---------------------------------------------------------------------------------------------
stage "unit tests (make check in ${BUILD_DIR#"$ROOT"/})"
t0=$(date +%s)
check_log=$(mktemp)
(cd "$BUILD_DIR" && ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1}" make -j2 check) 2>&1 | tee "$check_log"
check_rc=${PIPESTATUS[0]}
u_pass=$(sed -n 's/^# PASS: *\([0-9]*\).*/\1/p' "$check_log" | tail -1)
u_fail=$(sed -n 's/^# FAIL: *\([0-9]*\).*/\1/p' "$check_log" | tail -1)
u_err=$(sed -n 's/^# ERROR: *\([0-9]*\).*/\1/p' "$check_log" | tail -1)
u_xpass=$(sed -n 's/^# XPASS: *\([0-9]*\).*/\1/p' "$check_log" | tail -1)
u_bad=$(( ${u_fail:-0} + ${u_err:-0} + ${u_xpass:-0} ))
if [ "$check_rc" -ne 0 ]; then
	echo "--- unit test logs ---"
	for log in "$BUILD_DIR"/tests/unit/*.log; do
		[ -f "$log" ] || continue
		echo "----- ${log#"$BUILD_DIR"/} -----"
		cat "$log"
	done
	[ "$u_bad" -gt 0 ] || u_bad=1   # the build of the tests failed, or no summary
fi
if [ -z "$u_pass" ] && [ "$check_rc" -eq 0 ]; then
	# no test harness summary (no cmocka?): count make check as one test
	u_pass=1
fi
rm -f "$check_log"
passed=$((passed + ${u_pass:-0}))
failed=$((failed + u_bad))
if [ "$u_bad" -eq 0 ]; then
	summary+=("ok    unit tests: ${u_pass:-0} programs ($(( $(date +%s) - t0 ))s)")
else
	summary+=("FAIL  unit tests: ${u_pass:-0} passed, $u_bad failed")
fi

# ---------------------------------------------------------------------------------------------
# The layering rule of doc/architecture.md: no file includes a higher layer's header.
stage "layers (scripts/check_layers.py)"
if /usr/bin/python3 "$ROOT/scripts/check_layers.py" "$ROOT"; then
	ok "layers: no lower layer includes a higher one"
else
	bad "layers: scripts/check_layers.py found a breach"
fi

# doc/pgbouncer-reference.md is generated from the key, entry and command tables: a key added
# without regenerating it fails here rather than leaving the reference wrong.
stage "PgBouncer reference (scripts/compat_table.py --check)"
if /usr/bin/python3 "$ROOT/scripts/compat_table.py" --check; then
	ok "doc/pgbouncer-reference.md matches the key and command tables"
else
	bad "doc/pgbouncer-reference.md is out of date (scripts/compat_table.py --write)"
fi

# ---------------------------------------------------------------------------------------------
# The classifier's verdicts against libpg_query's parse trees, on the same corpus.
stage "classifier cross-check against libpg_query (tests/unit/sqlscan_pgquery.c)"
if [ -f /usr/include/pg_query.h ]; then
	qbin=$(mktemp)
	if gcc -std=gnu11 -O2 -Iinclude src/sqlscan.c tests/unit/sqlscan_pgquery.c -lpg_query \
		-o "$qbin" && "$qbin" tests/unit/data/sqlscan_corpus.txt; then
		ok "classifier cross-check against libpg_query"
	else
		bad "classifier cross-check against libpg_query"
	fi
	rm -f "$qbin"
else
	echo "(libpg-query-dev not installed: cross-check skipped)"
fi

# ---------------------------------------------------------------------------------------------
# Instructions per transaction under callgrind (deterministic, unlike timings) for the normal
# -O2 build, every configuration of tests/bench/cg_budget.json; exit 1: over budget by more
# than 5%, 2: a run failed, 3: valgrind missing.
if [ "${PGMUX_TEST_CGBENCH:-1}" = 0 ]; then
	echo; echo "(PGMUX_TEST_CGBENCH=0: instruction budget skipped)"
else
	stage "instruction budget (tests/bench/cgbench.py --check, src/pgmux under callgrind)"
	t0=$(date +%s)
	# shellcheck disable=SC2086
	"$PY" tests/bench/cgbench.py --check --pgmux src/pgmux ${PGMUX_CGBENCH_ARGS:-}
	cg_rc=$?
	case "$cg_rc" in
	0) ok "instruction budget ($(( $(date +%s) - t0 ))s)" ;;
	1) bad "instruction budget: over budget, see the table above ($(( $(date +%s) - t0 ))s)" ;;
	3) bad "instruction budget: valgrind not installed" ;;
	*) bad "instruction budget: cgbench failed (exit $cg_rc, $(( $(date +%s) - t0 ))s)" ;;
	esac
fi

# ---------------------------------------------------------------------------------------------
# Fuzzing: tests/fuzz/run.sh builds each libFuzzer harness (clang, ASan+UBSan) with the sources
# it needs and runs it for FUZZ_SECONDS; its last line is "fuzz: N passed, N failed".
shopt -s nullglob
harnesses=(tests/fuzz/fuzz_*.c)
shopt -u nullglob
if [ "$FUZZ_SECONDS" = 0 ]; then
	echo; echo "(FUZZ_SECONDS=0: fuzzing skipped)"
elif [ -f tests/fuzz/run.sh ]; then
	stage "fuzzing: ${#harnesses[@]} harnesses, ${FUZZ_SECONDS}s each (tests/fuzz/run.sh)"
	t0=$(date +%s)
	fuzz_log=$(mktemp)
	FUZZ_SECONDS=$FUZZ_SECONDS bash tests/fuzz/run.sh 2>&1 | tee "$fuzz_log"
	fuzz_rc=${PIPESTATUS[0]}
	fline=$(grep -E '^fuzz: [0-9]+ passed, [0-9]+ failed' "$fuzz_log" | tail -1)
	rm -f "$fuzz_log"
	f_pass=$(echo "$fline" | sed -n 's/^fuzz: \([0-9]*\) passed.*/\1/p')
	f_fail=$(echo "$fline" | sed -n 's/^fuzz: [0-9]* passed, \([0-9]*\) failed.*/\1/p')
	f_pass=${f_pass:-0}
	f_fail=${f_fail:-0}
	if [ "$fuzz_rc" -ne 0 ] && [ "$f_fail" -eq 0 ]; then f_fail=1; fi
	passed=$((passed + f_pass))
	failed=$((failed + f_fail))
	if [ "$f_fail" -eq 0 ]; then
		summary+=("ok    fuzzing: $f_pass harnesses ($(( $(date +%s) - t0 ))s)")
	else
		summary+=("FAIL  fuzzing: $f_pass passed, $f_fail failed (exit $fuzz_rc)")
	fi
elif [ "${#harnesses[@]}" -gt 0 ]; then
	bad "fuzzing: tests/fuzz/ has harnesses but no run.sh"
else
	echo; echo "(no fuzz harnesses in tests/fuzz/: fuzzing skipped)"
fi

# ---------------------------------------------------------------------------------------------
# The Debian package, built from a scratch copy (the tree's own build stays as it is).
if [ "${PGMUX_TEST_DEB:-1}" = 0 ]; then
	echo; echo "(PGMUX_TEST_DEB=0: Debian package skipped)"
elif ! command -v dpkg-buildpackage >/dev/null; then
	echo; echo "(dpkg-buildpackage not installed: Debian package skipped)"
	skipped=$((skipped + 1))
else
	stage "Debian package (tests/package/build_deb.sh)"
	t0=$(date +%s)
	if bash tests/package/build_deb.sh; then
		ok "Debian package: builds, contents, lintian ($(( $(date +%s) - t0 ))s)"
	else
		bad "Debian package ($(( $(date +%s) - t0 ))s)"
	fi
fi

# ---------------------------------------------------------------------------------------------
stage "integration tests (${BUILD_DIR#"$ROOT"/}/src/pgmux)"
t0=$(date +%s)
it_log=$(mktemp)
# shellcheck disable=SC2086
PGMUX_BIN="$BUILD_DIR/src/pgmux" PGMUX_RESHARD_BIN="$BUILD_DIR/pgmux-reshard" ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1}" \
	"$PY" tests/integration/run.py ${PGMUX_TEST_ARGS:-} 2>&1 | tee "$it_log"
it_rc=${PIPESTATUS[0]}
line=$(grep -E '^[0-9]+ passed, [0-9]+ failed' "$it_log" | tail -1)
rm -f "$it_log"
i_pass=$(echo "$line" | sed -n 's/^\([0-9]*\) passed.*/\1/p')
i_fail=$(echo "$line" | sed -n 's/^[0-9]* passed, \([0-9]*\) failed.*/\1/p')
i_skip=$(echo "$line" | sed -n 's/.* failed, \([0-9]*\) skipped.*/\1/p')
skipped=$((skipped + ${i_skip:-0}))
if [ -z "$line" ]; then
	i_pass=0
	i_fail=1
elif [ "$it_rc" -ne 0 ] && [ "${i_fail:-0}" -eq 0 ]; then
	i_fail=1
fi
passed=$((passed + i_pass))
failed=$((failed + i_fail))
if [ "$i_fail" -eq 0 ]; then
	summary+=("ok    integration tests: $i_pass passed, ${i_skip:-0} skipped ($(( $(date +%s) - t0 ))s)")
else
	summary+=("FAIL  integration tests: $i_pass passed, $i_fail failed ($(( $(date +%s) - t0 ))s)")
fi

# ---------------------------------------------------------------------------------------------
# PgBouncer's own suite (../shared/pgbouncer-tests) against the normal build: every test in
# tests/pgbouncer/expected-pass.txt must pass (doc/pgbouncer-compat.md).
if [ "${PGMUX_TEST_PGBOUNCER:-1}" = 1 ]; then
	stage "PgBouncer's own test suite (scripts/pgbouncer_suite.sh src/pgmux)"
	t0=$(date +%s)
	pgb_log=$(mktemp)
	bash scripts/pgbouncer_suite.sh "$ROOT/src/pgmux" 2>&1 | tee "$pgb_log"
	pgb_rc=${PIPESTATUS[0]}
	pgb_line=$(sed -n 's/^pgbouncer suite: \([0-9].*\)/\1/p' "$pgb_log" | head -1)
	rm -f "$pgb_log"
	if [ "$pgb_rc" -eq 0 ]; then
		ok "PgBouncer's suite: $pgb_line; every expected test passed ($(( $(date +%s) - t0 ))s)"
	elif [ "$pgb_rc" -eq 77 ]; then
		skipped=$((skipped + 1))
		summary+=("skip  PgBouncer's suite: ../shared/pgbouncer-tests not found")
	else
		bad "PgBouncer's suite: $pgb_line; an expected test failed"
	fi
fi

finish
